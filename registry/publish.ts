import { createHash, type Hash } from "node:crypto";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { canonicalArch } from "../simplestreams/arch.js";
import { StreamValidationError, type StreamRule } from "../simplestreams/errors.js";
import { DIGEST_PATTERN, nameProblem } from "../simplestreams/names.js";
import { META_FTYPES, ROOT_FTYPES, type PublishableFtype, type RootFtype } from "../simplestreams/types.js";
import { checkProductFields, checkVersionShape } from "../simplestreams/validate.js";
import { readImageMetadata } from "../image/metadata.js";
import type { BlobStore } from "../storage/blobs/store.js";
import type {
  Catalog,
  ItemRecord,
  ProductKey,
  ProductRecord,
  VersionRecord,
} from "../storage/catalog/catalog.js";
import { LxhubError, type ErrorCode } from "./errors.js";
import type { IndexService } from "./indexer.js";
import { imageFilePath, productId, productTarget } from "./paths.js";
import { allows } from "./tokens.js";

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
  /** Admin only: take aliases that other products of the same architecture hold (audited). */
  moveAliases?: boolean;
}

/** Who publishes: the token's subject (for the audit log) and its scopes (for aliases). */
export interface Actor {
  subject: string;
  scopes: string[];
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

/** Metadata tarballs are small (LXD caps metadata.yaml at 1 MiB); a bigger one is refused. */
const MAX_META_BYTES = 64 * 1024 * 1024;

/** The API's code for each rule of the one rule set (simplestreams/validate.ts). */
const RULE_CODES: Record<StreamRule, ErrorCode> = {
  name: "INVALID_NAME",
  text: "INVALID_TEXT",
  alias: "INVALID_ALIAS",
  "alias-conflict": "ALIAS_CONFLICT",
  requirement: "INVALID_REQUIREMENT",
  file: "INVALID_FILES",
  delta: "INVALID_DELTA",
  "duplicate-image": "DUPLICATE_IMAGE",
  options: "INTERNAL",
};

/** A broken rule as the API answers it: the rule's code and the validator's words. */
export function ruleError(err: StreamValidationError): LxhubError {
  return new LxhubError(RULE_CODES[err.rule], err.message, { rule: err.rule });
}

/** Run a check of the rule set; a broken rule becomes the API error naming it. */
function checked<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw err instanceof StreamValidationError ? ruleError(err) : err;
  }
}

/** Validate a product key from a request with the name grammar; the arch must be one LXD 5.0.2 knows (pitfall 9). */
export function checkProductKey(p: ProductKey): void {
  for (const part of ["os", "release", "variant"] as const) {
    const problem = nameProblem(part, p[part]);
    if (problem) throw new LxhubError("INVALID_PRODUCT", `product ${problem}`);
  }
  const archProblem = nameProblem("arch", p.arch);
  if (archProblem) throw new LxhubError("UNKNOWN_ARCH", archProblem);
}

/** Validate a version key from a request with the name grammar. */
export function checkVersionKey(version: string): void {
  const problem = nameProblem("version", version);
  if (problem) throw new LxhubError("INVALID_VERSION", problem);
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
 * Publishing, one pipeline for every write the documents show: **validate** the request with
 * the one rule set (simplestreams/validate.ts) before any blob is read, **build** the documents
 * from the catalog as it will be, **commit** in one transaction, **swap** in the signed documents
 * (IndexService.change). A request that breaks a rule is answered with the rule's code and
 * changes nothing. Versions are immutable; the same (metadata, root) pair is never published
 * twice (pitfall 29), deleted versions included.
 */
export class PublishService {
  constructor(
    private readonly catalog: Catalog,
    private readonly blobs: BlobStore,
    private readonly index: IndexService,
    private readonly opts: { maxMetadataBytes?: number } = {},
  ) {}

  /**
   * Publishes run one at a time among every process of the catalog (a PostgreSQL advisory lock
   * with replicas), so the checks below and the inserts see each other.
   */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.catalog.locks.withLock("lxhub:publish", fn);
  }

  /**
   * Runs after each version a publish created, outside the publish lock (the server's retention
   * policies); its failure is reported to `onError` and never fails the publish, which committed.
   */
  onPublished(
    fn: (key: ProductKey, version: string) => Promise<void>,
    onError: (err: unknown) => void,
  ): void {
    this.afterPublish.push({ fn, onError });
  }

  private readonly afterPublish: {
    fn: (key: ProductKey, version: string) => Promise<void>;
    onError: (err: unknown) => void;
  }[] = [];

  async putVersion(
    actor: Actor,
    key: ProductKey,
    version: string,
    req: VersionRequest,
  ): Promise<{ created: boolean; version: PublishedVersion }> {
    const r = await this.putVersionOnce(actor, key, version, req);
    if (r.created) for (const { fn, onError } of this.afterPublish) await fn(key, version).catch(onError);
    return r;
  }

  private async putVersionOnce(
    actor: Actor,
    key: ProductKey,
    version: string,
    req: VersionRequest,
  ): Promise<{ created: boolean; version: PublishedVersion }> {
    // 1. Validate the request on its own: names, file shapes, aliases, requirements, title.
    checkProductKey(key);
    checkVersionKey(version);
    const files = this.checkFiles(req.files);
    const pid = productId(key);
    checked(() =>
      checkProductFields({
        ...key,
        releaseTitle: req.releaseTitle ?? key.release,
        aliases: req.aliases ?? [],
        requirements: req.requirements ?? {},
      }),
    );
    if (req.moveAliases && !actor.scopes.includes("admin")) {
      throw new LxhubError("FORBIDDEN", "only an admin token may move aliases between products");
    }
    const contentDigest =
      "sha256:" +
      createHash("sha256")
        .update(JSON.stringify(files.map((f) => [f.name, f.ftype, f.digest, f.deltaBase ?? null])))
        .digest("hex");

    return this.serial(async () => {
      const product = await this.catalog.images.getProduct(key);
      if (product) {
        const existing = await this.catalog.images.getVersion(product.id, version);
        if (existing) {
          if (existing.deletedAt) {
            throw new LxhubError(
              "VERSION_DELETED",
              `version ${version} of ${pid} was deleted; names are never reused`,
            );
          }
          if (existing.contentDigest === contentDigest)
            return { created: false, version: toView(product, existing) };
          throw new LxhubError(
            "VERSION_CONFLICT",
            `version ${version} of ${pid} is already published with other files; versions are immutable`,
          );
        }
      }
      const aliases = req.aliases ?? (product ? product.aliases : []);
      this.checkAliasAuthority(actor, key, aliases, product?.aliases ?? []);

      // 2. What the request names must exist and agree with the product.
      const items = await this.resolveItems(files);
      const meta = items.find((i) => (META_FTYPES as readonly string[]).includes(i.ftype)) as ItemRecord;
      await this.checkMetadata(meta, key);
      const roots = items.filter((i) => (ROOT_FTYPES as readonly string[]).includes(i.ftype));
      meta.combined = await this.fingerprints(meta, roots);
      const pairs = roots.map((r) => ({
        fingerprint: meta.combined[r.ftype] as string,
        metaDigest: meta.digest,
        rootDigest: r.digest,
        rootFtype: r.ftype,
      }));
      for (const p of pairs) {
        const other = await this.catalog.images.findPair(p.fingerprint);
        if (other) {
          throw new LxhubError(
            "DUPLICATE_IMAGE",
            `this metadata + ${p.rootFtype} pair is already published as ${productId(other.product)} version ${other.version}; LXD would fail with "more than one match"`,
            { fingerprint: p.fingerprint, product: productId(other.product), version: other.version },
          );
        }
      }

      const fields = {
        releaseTitle: req.releaseTitle ?? product?.releaseTitle ?? key.release,
        aliases,
        requirements: req.requirements ?? product?.requirements ?? {},
      };
      const createdAt = new Date().toISOString();
      const held = await this.aliasHolders(key, aliases);
      if (held.length && !req.moveAliases) {
        const first = held[0]!;
        throw new LxhubError(
          "ALIAS_CONFLICT",
          `alias ${first.taken.map((a) => JSON.stringify(a)).join(", ")} already belongs to product ${JSON.stringify(productId(first.product))} for the same architecture; only an admin moves an alias (move_aliases)`,
          { product: productId(first.product), aliases: first.taken },
        );
      }
      const moved = held;

      // 3–5. Build the documents as they will be, commit, swap.
      try {
        await this.index.change({
          blame: { product: pid, version },
          apply: (state) => {
            const next = state.map((e) => {
              const move = moved.find((m) => m.product.id === e.product.id);
              return move ? { ...e, product: { ...e.product, aliases: move.keep } } : e;
            });
            const draft = {
              id: -1,
              productId: product?.id ?? -1,
              name: version,
              createdAt,
              createdBy: actor.subject,
              deletedAt: null,
              contentDigest,
              items,
            };
            const at = next.findIndex((e) => productId(e.product) === pid);
            if (at >= 0) {
              const e = next[at]!;
              next[at] = { product: { ...e.product, ...fields }, versions: [...e.versions, draft] };
            } else {
              const record = { id: -1, ...key, ...fields, createdAt, updatedAt: createdAt };
              next.push({ product: record, versions: [draft] });
            }
            return next;
          },
          commit: async (tx) => {
            for (const m of moved) {
              await this.catalog.images.setProductAliases(tx, m.product.id, m.keep);
              await this.catalog.audit.record(
                {
                  actor: actor.subject,
                  action: "alias.move",
                  target: pid,
                  detail: { from: productId(m.product), aliases: m.taken },
                },
                tx,
              );
            }
            const productIdNum = await this.catalog.images.upsertProduct(tx, { ...key, ...fields });
            for (const i of items) await this.catalog.images.recordBlob(i.digest, i.size, tx);
            const versionId = await this.catalog.images.insertVersion(tx, {
              productId: productIdNum,
              name: version,
              createdBy: actor.subject,
              contentDigest,
              items,
            });
            await this.catalog.images.insertPairs(tx, versionId, pairs);
            await this.catalog.audit.record(
              {
                actor: actor.subject,
                action: "version.publish",
                target: `${pid}@${version}`,
                detail: {
                  files: items.map((i) => ({ name: i.name, digest: i.digest })),
                  fingerprints: meta.combined,
                },
              },
              tx,
            );
          },
        });
      } catch (err) {
        throw err instanceof StreamValidationError ? ruleError(err) : err;
      }
      const saved = await this.catalog.images.getVersion(
        (await this.catalog.images.getProduct(key))!.id,
        version,
      );
      if (!saved) throw new LxhubError("INTERNAL", "version vanished after publishing");
      return { created: true, version: toView(key, saved) };
    });
  }

  /** Withdraw a version from the documents, through the same pipeline (deltas based on it leave with it). */
  async deleteVersion(actor: Actor, key: ProductKey, version: string): Promise<void> {
    checkProductKey(key);
    checkVersionKey(version);
    return this.serial(async () => {
      const product = await this.catalog.images.getProduct(key);
      const v = product ? await this.catalog.images.getVersion(product.id, version) : null;
      if (!product || !v || v.deletedAt) {
        throw new LxhubError("NOT_FOUND", `no version ${version} of ${productId(key)}`);
      }
      await this.withdraw(
        actor,
        [{ id: v.id, productId: product.id, target: `${productId(key)}@${version}` }],
        {
          action: "version.delete",
        },
      );
    });
  }

  /**
   * Adds a delta the server made to a live version (registry/deltas.ts), through the pipeline:
   * the documents list it from the next generation on. Refused (false) when the version or its
   * base left meanwhile, or the version already has a delta of that ftype or a file of that name.
   */
  async addDelta(
    actor: Actor,
    key: ProductKey,
    version: string,
    delta: { name: string; ftype: string; digest: string; size: number; deltaBase: string },
  ): Promise<boolean> {
    return this.serial(async () => {
      const product = await this.catalog.images.getProduct(key);
      const v = product ? await this.catalog.images.getVersion(product.id, version) : null;
      const base = product ? await this.catalog.images.getVersion(product.id, delta.deltaBase) : null;
      if (!product || !v || v.deletedAt || !base || base.deletedAt) return false;
      if (v.items.some((i) => i.ftype === delta.ftype || i.name === delta.name)) return false;
      if (!(await this.blobs.stat(delta.digest))) return false;
      const item: ItemRecord = { ...delta, combined: {} };
      await this.index.change({
        blame: { product: productId(key), version },
        apply: (state) =>
          state.map((e) =>
            e.product.id !== product.id
              ? e
              : {
                  ...e,
                  versions: e.versions.map((x) => (x.id === v.id ? { ...x, items: [...x.items, item] } : x)),
                },
          ),
        commit: async (tx) => {
          await this.catalog.images.recordBlob(delta.digest, delta.size, tx);
          await this.catalog.images.insertItem(tx, v.id, item);
          await this.catalog.audit.record(
            {
              actor: actor.subject,
              action: "version.delta",
              target: `${productId(key)}@${version}`,
              detail: { name: delta.name, digest: delta.digest, size: delta.size, base: delta.deltaBase },
            },
            tx,
          );
        },
      });
      return true;
    });
  }

  /**
   * Retention: withdraw several versions in one change of the documents, each recorded in the
   * audit log with the rule that retired it. Versions already gone are skipped.
   */
  async retireVersions(
    actor: Actor,
    versions: { product: ProductKey; version: string; reason: string }[],
  ): Promise<number> {
    return this.serial(async () => {
      const found: { id: number; productId: number; target: string; reason: string }[] = [];
      for (const r of versions) {
        const product = await this.catalog.images.getProduct(r.product);
        const v = product ? await this.catalog.images.getVersion(product.id, r.version) : null;
        if (product && v && !v.deletedAt) {
          found.push({
            id: v.id,
            productId: product.id,
            target: `${productId(r.product)}@${r.version}`,
            reason: r.reason,
          });
        }
      }
      if (found.length) await this.withdraw(actor, found, { action: "version.retire" });
      return found.length;
    });
  }

  /** Marks versions deleted and swaps in documents without them, in one change (inside `serial`). */
  private async withdraw(
    actor: Actor,
    versions: { id: number; productId: number; target: string; reason?: string }[],
    o: { action: string },
  ): Promise<void> {
    const deletedAt = new Date().toISOString();
    const ids = new Set(versions.map((v) => v.id));
    const products = new Set(versions.map((v) => v.productId));
    await this.index.change({
      apply: (state) =>
        state.map((e) =>
          !products.has(e.product.id)
            ? e
            : { ...e, versions: e.versions.map((x) => (ids.has(x.id) ? { ...x, deletedAt } : x)) },
        ),
      commit: async (tx) => {
        for (const v of versions) {
          await this.catalog.images.markVersionDeleted(tx, v.id, actor.subject);
          await this.catalog.audit.record(
            {
              actor: actor.subject,
              action: o.action,
              target: v.target,
              ...(v.reason ? { detail: { reason: v.reason } } : {}),
            },
            tx,
          );
        }
      },
    });
  }

  /**
   * Aliases are authority: a token may add only aliases that its push scopes cover, matched as
   * the product path is (registry/tokens.ts `allows`); aliases the product already holds stay.
   */
  private checkAliasAuthority(actor: Actor, key: ProductKey, aliases: string[], held: string[]): void {
    const outside = aliases.filter((a) => !held.includes(a) && !allows(actor.scopes, "push", a));
    if (outside.length) {
      throw new LxhubError(
        "ALIAS_FORBIDDEN",
        `token scopes ${actor.scopes.join(" ")} do not cover alias ${outside.map((a) => JSON.stringify(a)).join(", ")} of ${productTarget(key)}: an alias must match a push scope pattern as a product path does`,
        { aliases: outside },
      );
    }
  }

  /**
   * Products of the same architecture that hold any of `aliases` in the catalog (whether or not
   * they have a live version: an alias keeps its owner while its versions come and go), with
   * what they would keep if an admin moved them. `A` clashes with `A` and, as LXD registers
   * `A/<arch>` too, with `A/<arch>` either way round.
   */
  private async aliasHolders(
    key: ProductKey,
    aliases: string[],
  ): Promise<{ product: ProductRecord; keep: string[]; taken: string[] }[]> {
    const arch = canonicalArch(key.arch);
    const out: { product: ProductRecord; keep: string[]; taken: string[] }[] = [];
    for (const other of await this.catalog.images.listProducts()) {
      if (productId(other) === productId(key) || canonicalArch(other.arch) !== arch) continue;
      if (!Array.isArray(other.aliases)) continue;
      const taken = other.aliases.filter((held) =>
        aliases.some((a) => a === held || a === `${held}/${other.arch}` || held === `${a}/${key.arch}`),
      );
      if (taken.length)
        out.push({ product: other, keep: other.aliases.filter((a) => !taken.includes(a)), taken });
    }
    return out;
  }

  /** The files by shape (validate.ts), plus publishing's own rule: a metadata tarball and a root file. */
  private checkFiles(files: FileSpec[]): (FileSpec & { ftype: PublishableFtype })[] {
    if (!Array.isArray(files) || files.length < 2) {
      throw new LxhubError("INVALID_FILES", "a version needs a metadata tarball and at least one root file");
    }
    checked(() => checkVersionShape({}, files));
    for (const f of files) {
      if (typeof f.digest !== "string" || !DIGEST_PATTERN.test(f.digest)) {
        throw new LxhubError("INVALID_FILES", `file ${f.name}: digest must be sha256:<64 lower-case hex>`);
      }
    }
    if (!files.some((f) => (META_FTYPES as readonly string[]).includes(f.ftype)))
      throw new LxhubError("INVALID_FILES", "a version needs a metadata tarball (ftype lxd.tar.xz)");
    if (!files.some((f) => (ROOT_FTYPES as readonly string[]).includes(f.ftype))) {
      throw new LxhubError("INVALID_FILES", `a version needs a root file (one of ${ROOT_FTYPES.join(", ")})`);
    }
    return [...files]
      .map((f) => ({ ...f, ftype: f.ftype as PublishableFtype }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
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
      const known = await this.catalog.images.getCombined(meta.digest, r.digest);
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
}

function hashSink(h: Hash): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      cb();
    },
  });
}
