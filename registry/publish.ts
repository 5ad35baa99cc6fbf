import { createHash, type Hash } from "node:crypto";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { canonicalArch } from "../simplestreams/arch.js";
import { isValidVersionKey } from "../simplestreams/version.js";
import {
  META_FTYPES,
  PUBLISHABLE_FTYPES,
  ROOT_FTYPES,
  type PublishableFtype,
  type RootFtype,
} from "../simplestreams/types.js";
import { readImageMetadata } from "../image/metadata.js";
import type { BlobStore } from "../storage/blobs/store.js";
import type { Catalog, ItemRecord, ProductKey, VersionRecord } from "../storage/catalog/catalog.js";
import { LxhubError } from "./errors.js";
import type { IndexService } from "./indexer.js";
import { imageFilePath, productId } from "./paths.js";

export interface FileSpec {
  name: string;
  ftype: string;
  digest: string;
  deltaBase?: string;
}

export interface VersionRequest {
  files: FileSpec[];
  aliases?: string[];
  releaseTitle?: string;
  requirements?: Record<string, string>;
  /** An admin takes aliases another product holds, explicitly (`move_aliases` in the API). */
  moveAliases?: boolean;
}

export interface PublishedVersion {
  product: ProductKey;
  version: string;
  createdAt: string;
  deletedAt: string | null;
  files: { name: string; ftype: string; digest: string; size: number; path: string }[];
  /** Image fingerprints by root ftype (combined sha256 of metadata ‖ root). */
  fingerprints: Record<string, string>;
}

const SEGMENT_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;
const FILE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ALIAS_RE = /^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$/;
/** Metadata tarballs are small (LXD caps metadata.yaml at 1 MiB); a bigger one is refused. */
const MAX_META_BYTES = 64 * 1024 * 1024;

/** Validate a product key from a request; the arch must be one LXD 5.0.2 knows (pitfall 9). */
export function checkProductKey(p: ProductKey): void {
  for (const part of ["os", "release", "variant"] as const) {
    if (!SEGMENT_RE.test(p[part])) {
      throw new LxhubError(
        "INVALID_PRODUCT",
        `product ${part} ${JSON.stringify(p[part])} must match ${SEGMENT_RE}`,
      );
    }
  }
  if (!SEGMENT_RE.test(p.arch) || !canonicalArch(p.arch)) {
    throw new LxhubError(
      "UNKNOWN_ARCH",
      `unknown architecture ${JSON.stringify(p.arch)} (use e.g. amd64, arm64)`,
    );
  }
}

export function toView(product: ProductKey, v: VersionRecord): PublishedVersion {
  const meta = v.items.find((i) => (META_FTYPES as readonly string[]).includes(i.ftype));
  return {
    product: { os: product.os, release: product.release, arch: product.arch, variant: product.variant },
    version: v.name,
    createdAt: v.createdAt,
    deletedAt: v.deletedAt,
    files: v.items.map((i) => ({
      name: i.name,
      ftype: i.ftype,
      digest: i.digest,
      size: i.size,
      path: imageFilePath(product, v.name, i.name),
    })),
    fingerprints: meta?.combined ?? {},
  };
}

/**
 * Publishing: validate a version, record it in one transaction and swap in new documents.
 * Versions are immutable; the same (metadata, root) pair is never published twice (pitfall 29).
 */
export class PublishService {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly catalog: Catalog,
    private readonly blobs: BlobStore,
    private readonly index: IndexService,
  ) {}

  /** Publishes run one at a time in this process, so checks and inserts see each other. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  async putVersion(
    actor: string,
    key: ProductKey,
    version: string,
    req: VersionRequest,
  ): Promise<{ created: boolean; version: PublishedVersion }> {
    checkProductKey(key);
    if (!isValidVersionKey(version)) {
      throw new LxhubError(
        "INVALID_VERSION",
        `version ${JSON.stringify(version)} must start with a date YYYYMMDD (e.g. 20240101_0000) and use [0-9A-Za-z_.:-]`,
      );
    }
    const files = this.checkFiles(req.files);
    const aliases = req.aliases ?? [];
    for (const a of aliases) {
      if (!ALIAS_RE.test(a)) {
        throw new LxhubError(
          "BAD_REQUEST",
          `alias ${JSON.stringify(a)} must match ${ALIAS_RE} (no commas or spaces)`,
        );
      }
    }
    const requirements = req.requirements ?? {};
    for (const [k, v] of Object.entries(requirements)) {
      if (typeof v !== "string") throw new LxhubError("BAD_REQUEST", `requirement ${k} must be a string`);
    }
    const contentDigest =
      "sha256:" +
      createHash("sha256")
        .update(JSON.stringify(files.map((f) => [f.name, f.ftype, f.digest, f.deltaBase ?? null])))
        .digest("hex");

    return this.serial(async () => {
      const product = await this.catalog.getProduct(key);
      if (product) {
        const existing = await this.catalog.getVersion(product.id, version);
        if (existing) {
          if (existing.deletedAt) {
            throw new LxhubError(
              "VERSION_DELETED",
              `version ${version} of ${productId(key)} was deleted; names are never reused`,
            );
          }
          if (existing.contentDigest === contentDigest)
            return { created: false, version: toView(product, existing) };
          throw new LxhubError(
            "VERSION_CONFLICT",
            `version ${version} of ${productId(key)} is already published with other files; versions are immutable`,
          );
        }
      }
      const items = await this.resolveItems(files);
      const meta = items.find((i) => (META_FTYPES as readonly string[]).includes(i.ftype));
      if (!meta)
        throw new LxhubError("INVALID_FILES", "a version needs a metadata tarball (ftype lxd.tar.xz)");
      await this.checkMetadata(meta, key);
      for (const d of items.filter((i) => i.deltaBase)) {
        const base = product ? await this.catalog.getVersion(product.id, d.deltaBase ?? "") : null;
        if (!base || base.deletedAt) {
          throw new LxhubError(
            "INVALID_FILES",
            `delta ${d.name} names base version ${d.deltaBase}, which is not published`,
          );
        }
      }
      const roots = items.filter((i) => (ROOT_FTYPES as readonly string[]).includes(i.ftype));
      meta.combined = await this.fingerprints(meta, roots);
      const pairs = roots.map((r) => ({
        fingerprint: meta.combined[r.ftype] as string,
        metaDigest: meta.digest,
        rootDigest: r.digest,
        rootFtype: r.ftype,
      }));
      for (const p of pairs) {
        const other = await this.catalog.findPair(p.fingerprint);
        if (other) {
          throw new LxhubError(
            "DUPLICATE_IMAGE",
            `this metadata + ${p.rootFtype} pair is already published as ${productId(other.product)} version ${other.version}; LXD would fail with "more than one match"`,
            { fingerprint: p.fingerprint, product: productId(other.product), version: other.version },
          );
        }
      }
      await this.checkAliases(key, aliases);

      await this.catalog.transaction(async (tx) => {
        const productIdNum = await this.catalog.upsertProduct(tx, {
          ...key,
          releaseTitle: req.releaseTitle ?? product?.releaseTitle ?? key.release,
          aliases: req.aliases ?? product?.aliases ?? [],
          requirements: req.requirements ?? product?.requirements ?? {},
        });
        for (const i of items) await this.catalog.recordBlob(i.digest, i.size, tx);
        const versionId = await this.catalog.insertVersion(tx, {
          productId: productIdNum,
          name: version,
          createdBy: actor,
          contentDigest,
          items,
        });
        await this.catalog.insertPairs(tx, versionId, pairs);
        await this.catalog.audit(
          {
            actor,
            action: "version.publish",
            target: `${productId(key)}@${version}`,
            detail: {
              files: items.map((i) => ({ name: i.name, digest: i.digest })),
              fingerprints: meta.combined,
            },
          },
          tx,
        );
      });
      await this.index.rebuild();
      const saved = await this.catalog.getVersion((await this.catalog.getProduct(key))!.id, version);
      if (!saved) throw new LxhubError("INTERNAL", "version vanished after publishing");
      return { created: true, version: toView(key, saved) };
    });
  }

  async deleteVersion(actor: string, key: ProductKey, version: string): Promise<void> {
    return this.serial(async () => {
      const product = await this.catalog.getProduct(key);
      const v = product ? await this.catalog.getVersion(product.id, version) : null;
      if (!product || !v || v.deletedAt) {
        throw new LxhubError("NOT_FOUND", `no version ${version} of ${productId(key)}`);
      }
      await this.catalog.transaction(async (tx) => {
        await this.catalog.markVersionDeleted(tx, v.id, actor);
        await this.catalog.audit(
          { actor, action: "version.delete", target: `${productId(key)}@${version}` },
          tx,
        );
      });
      await this.index.rebuild();
    });
  }

  private checkFiles(files: FileSpec[]): (FileSpec & { ftype: PublishableFtype })[] {
    if (!Array.isArray(files) || files.length < 2) {
      throw new LxhubError("INVALID_FILES", "a version needs a metadata tarball and at least one root file");
    }
    const names = new Set<string>();
    const ftypes = new Set<string>();
    const out: (FileSpec & { ftype: PublishableFtype })[] = [];
    for (const f of files) {
      if (typeof f?.name !== "string" || !FILE_NAME_RE.test(f.name)) {
        throw new LxhubError(
          "INVALID_FILES",
          `file name ${JSON.stringify(f?.name)} must match ${FILE_NAME_RE}`,
        );
      }
      if (!(PUBLISHABLE_FTYPES as readonly string[]).includes(f.ftype)) {
        throw new LxhubError(
          "INVALID_FILES",
          `file ${f.name}: unknown ftype ${JSON.stringify(f.ftype)} (known: ${PUBLISHABLE_FTYPES.join(", ")})`,
        );
      }
      if (typeof f.digest !== "string" || !/^sha256:[0-9a-f]{64}$/.test(f.digest)) {
        throw new LxhubError("INVALID_FILES", `file ${f.name}: digest must be sha256:<64 lower-case hex>`);
      }
      const isDelta = f.ftype.endsWith(".vcdiff");
      if (isDelta !== (typeof f.deltaBase === "string")) {
        throw new LxhubError("INVALID_FILES", `file ${f.name}: delta files, and only they, need delta_base`);
      }
      if (f.deltaBase !== undefined && !isValidVersionKey(f.deltaBase)) {
        throw new LxhubError(
          "INVALID_FILES",
          `file ${f.name}: delta_base ${JSON.stringify(f.deltaBase)} is not a version key`,
        );
      }
      if (names.has(f.name)) throw new LxhubError("INVALID_FILES", `file name ${f.name} given twice`);
      const role = (META_FTYPES as readonly string[]).includes(f.ftype) ? "metadata" : f.ftype;
      if (ftypes.has(role))
        throw new LxhubError("INVALID_FILES", `more than one ${role} file in one version`);
      names.add(f.name);
      ftypes.add(role);
      out.push({ ...f, ftype: f.ftype as PublishableFtype });
    }
    if (!ftypes.has("metadata"))
      throw new LxhubError("INVALID_FILES", "a version needs a metadata tarball (ftype lxd.tar.xz)");
    if (!ROOT_FTYPES.some((r) => ftypes.has(r))) {
      throw new LxhubError("INVALID_FILES", `a version needs a root file (one of ${ROOT_FTYPES.join(", ")})`);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private async resolveItems(files: (FileSpec & { ftype: PublishableFtype })[]): Promise<ItemRecord[]> {
    const items: ItemRecord[] = [];
    for (const f of files) {
      const info = await this.blobs.stat(f.digest);
      if (!info) {
        throw new LxhubError("BLOB_UNKNOWN", `file ${f.name}: blob ${f.digest} was never uploaded`, {
          digest: f.digest,
        });
      }
      items.push({
        name: f.name,
        ftype: f.ftype,
        digest: f.digest,
        size: info.size,
        combined: {},
        deltaBase: f.deltaBase ?? null,
      });
    }
    return items;
  }

  private async checkMetadata(meta: ItemRecord, key: ProductKey): Promise<void> {
    if (meta.size > MAX_META_BYTES) {
      throw new LxhubError(
        "INVALID_METADATA",
        `metadata tarball ${meta.name} is ${meta.size} bytes; the limit is ${MAX_META_BYTES}`,
      );
    }
    let md;
    try {
      md = await readImageMetadata(await this.blobs.read(meta.digest));
    } catch (err) {
      throw new LxhubError("INVALID_METADATA", `metadata tarball ${meta.name}: ${(err as Error).message}`);
    }
    const metaArch = canonicalArch(md.architecture);
    if (!metaArch) {
      throw new LxhubError(
        "INVALID_METADATA",
        `metadata.yaml architecture ${JSON.stringify(md.architecture)} is unknown`,
      );
    }
    if (metaArch !== canonicalArch(key.arch)) {
      throw new LxhubError(
        "ARCH_MISMATCH",
        `metadata.yaml says architecture ${md.architecture} (${metaArch}) but the product is ${key.arch} (${canonicalArch(key.arch)})`,
      );
    }
  }

  /**
   * sha256(meta ‖ root) for every root file: taken from what the upload computed when the root
   * was uploaded with the metadata as prefix; otherwise the metadata is hashed once and its state
   * copied per root that still needs reading.
   */
  private async fingerprints(meta: ItemRecord, roots: ItemRecord[]): Promise<Record<string, string>> {
    const out: Partial<Record<RootFtype, string>> = {};
    const missing: ItemRecord[] = [];
    for (const r of roots) {
      const known = await this.catalog.getCombined(meta.digest, r.digest);
      if (known) out[r.ftype as RootFtype] = known;
      else missing.push(r);
    }
    if (!missing.length) return out;
    const metaHash = createHash("sha256");
    await pipeline(await this.blobs.read(meta.digest), hashSink(metaHash));
    for (const r of missing) {
      const h = metaHash.copy();
      await pipeline(await this.blobs.read(r.digest), hashSink(h));
      out[r.ftype as RootFtype] = h.digest("hex");
    }
    return out;
  }

  private async checkAliases(key: ProductKey, aliases: string[]): Promise<void> {
    if (!aliases.length) return;
    const arch = canonicalArch(key.arch);
    for (const other of await this.catalog.listProducts()) {
      if (productId(other) === productId(key) || canonicalArch(other.arch) !== arch) continue;
      const clash = other.aliases.filter((a) => aliases.includes(a));
      if (clash.length) {
        throw new LxhubError(
          "ALIAS_CONFLICT",
          `alias ${clash.join(", ")} already belongs to ${productId(other)} for the same architecture`,
          { product: productId(other), aliases: clash },
        );
      }
    }
  }
}

function hashSink(h: Hash): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      cb();
    },
  });
}
