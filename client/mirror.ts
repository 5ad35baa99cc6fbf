import { productFields, versionFiles, type PickedFile } from "../simplestreams/upstream.js";
import { selectProducts, type Filter } from "../simplestreams/filters.js";
import { compareVersionKeys } from "../simplestreams/version.js";
import type { ProductDoc, ProductsDoc } from "../simplestreams/types.js";
import { BlobCache, fetchFile, HashChain, VerificationError, type FetchProgress } from "./cache.js";
import type { HeldVersion, Product, Publisher } from "./publisher.js";
import { fraction, StatusLine } from "./progress.js";
import type { OpenedStream } from "./verify.js";
import { describeError } from "./verify.js";

/**
 * `lxhub mirror`: make a target registry hold what an upstream simplestreams server holds, as
 * filtered, through a `Publisher` (the target's publish API, or its storage directly).
 *
 * 1. **Plan** from the upstream's verified documents (`openStream`) and the target's live
 *    versions: the filters and `keep` select versions (simplestreams/filters.ts); each selected
 *    version the target lacks is added, with the files `versionFiles` picks; versions of a
 *    selected product that the selection no longer holds are retired (the mirror owns the
 *    products it selects), but only once the product keeps a live version. A delta stays only if
 *    its base version will be on the target. Nothing is fetched for a version the target holds,
 *    so a re-run against an unchanged upstream moves no image bytes.
 * 2. **Copy** each added version, several at a time (`jobs`): its files into the local download
 *    cache (client/cache.ts: resumed from a `.part`, verified against the upstream's size and
 *    sha256), the roots hashed after the metadata on the way so the image fingerprint is checked
 *    against the upstream's combined hash before anything is published, then into the target
 *    (a blob the target holds is neither fetched nor sent; its fingerprint is checked against
 *    what the target computes). A file that fails verification fails its version only: it is not
 *    published, the rest goes on, and the report names it.
 * 3. **Publish** each version, oldest first within a product (a delta's base is published before
 *    it), through `Publisher.publishVersion`, the code path of `lxhub push`: atomic, immutable.
 * 4. **Retire** what the plan retires, through `Publisher.deleteVersion`, as a local delete.
 */

export interface MirrorOptions {
  publisher: Publisher;
  /** Download cache; default the user's (`lxhub pull`'s). Files leave it once the target holds them. */
  cache?: BlobCache;
  filters?: readonly Filter[];
  /** Newest versions kept per product. */
  keep?: number;
  /** Plan only: nothing is fetched, sent, published or retired. */
  dryRun?: boolean;
  /** Versions copied at the same time; default 4. */
  jobs?: number;
  onEvent?: (e: MirrorEvent) => void;
  signal?: AbortSignal;
  retries?: number;
  retryBaseMs?: number;
}

/** One version the plan adds or retires. */
export interface PlannedVersion {
  product: Product;
  /** The upstream's product key. */
  productKey: string;
  version: string;
  /** Added versions: bytes the target lacks (each blob counted once). */
  bytes: number;
  files: { name: string; ftype: string; size: number }[];
}

export interface MirrorPlan {
  add: PlannedVersion[];
  retire: PlannedVersion[];
  /** Selected versions the target already holds. */
  present: number;
  /** What the upstream has that lxhub leaves out, and why. */
  skipped: { what: string; reason: string }[];
  /** Bytes the added versions need to move (blobs the target lacks, each once). */
  bytes: number;
}

export type MirrorEvent =
  | { kind: "plan"; plan: MirrorPlan }
  | { kind: "file"; product: string; version: string; progress: FetchProgress }
  | { kind: "published"; product: string; version: string; created: boolean }
  | { kind: "retired"; product: string; version: string }
  | { kind: "failed"; product: string; version: string; error: string };

export interface MirrorReport {
  upstream: string;
  dryRun: boolean;
  plan: MirrorPlan;
  added: { product: string; version: string; fingerprints: Record<string, string> }[];
  retired: { product: string; version: string }[];
  failed: { product: string; version: string; error: string }[];
  /** Bytes received from the upstream (retries included). */
  bytesDownloaded: number;
  /** Bytes sent to the target, and bytes it already held. */
  bytesUploaded: number;
  bytesSkipped: number;
}

/** `os/release/arch/variant`, as lxhub names a product in messages. */
export function productLabel(p: Product): string {
  return `${p.os}/${p.release}/${p.arch}/${p.variant}`;
}

/** A version the plan adds, with what copying it needs. */
interface AddTask extends PlannedVersion {
  meta: PickedFile;
  roots: PickedFile[];
  deltas: PickedFile[];
  aliases: string[];
  releaseTitle: string;
  requirements: Record<string, string>;
}

interface ProductPlan {
  key: string;
  product: Product;
  doc: ProductDoc;
  fields: { aliases: string[]; releaseTitle: string; requirements: Record<string, string> };
  held: Map<string, HeldVersion>;
}

const EMPTY_DOC: Omit<ProductsDoc, "products"> = {
  contentId: "",
  datatype: "",
  format: "",
  license: "",
  updated: "",
};

/** Works out what a sync does; reads the target, changes nothing. */
async function plan(
  stream: OpenedStream,
  publisher: Publisher,
  filters: readonly Filter[],
  keep: number | undefined,
): Promise<{ plan: MirrorPlan; tasks: AddTask[]; selected: Map<string, Set<string>> }> {
  const skipped: MirrorPlan["skipped"] = [];
  const products: ProductPlan[] = [];
  const seen = new Set<string>();
  for (const doc of stream.products) {
    const selected = selectProducts({ ...EMPTY_DOC, ...doc }, filters, keep);
    for (const [key, p] of [...selected.products].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const f = productFields(p);
      if (!f.ok) {
        skipped.push({ what: `product ${key}`, reason: f.reason });
        continue;
      }
      const product: Product = {
        os: f.fields.os,
        release: f.fields.release,
        arch: f.fields.arch,
        variant: f.fields.variant,
      };
      const label = productLabel(product);
      if (seen.has(label)) {
        skipped.push({ what: `product ${key}`, reason: `another upstream product is also ${label}` });
        continue;
      }
      seen.add(label);
      for (const a of f.droppedAliases) {
        skipped.push({
          what: `alias ${JSON.stringify(a)} of ${key}`,
          reason: "not a valid lxhub alias, or repeated",
        });
      }
      products.push({ key, product, doc: p, fields: f.fields, held: await publisher.versions(product) });
    }
  }

  const tasks: AddTask[] = [];
  const retire: PlannedVersion[] = [];
  let present = 0;
  const counted = new Set<string>();
  let bytes = 0;
  /** Names of the versions the selection keeps, by product label. */
  const selected = new Map<string, Set<string>>();
  for (const pp of products) {
    const names = [...pp.doc.versions.keys()].sort(compareVersionKeys);
    const picked = new Map<string, ReturnType<typeof versionFiles>>();
    for (const name of names) {
      const vf = versionFiles(pp.doc.versions.get(name)!);
      for (const s of vf.skipped) skipped.push({ what: `${pp.key} ${name} item ${s.key}`, reason: s.reason });
      if (!vf.meta) {
        skipped.push({
          what: `${pp.key} ${name}`,
          reason: "no metadata tarball with a root file lxhub publishes",
        });
        continue;
      }
      picked.set(name, vf);
    }
    // Versions that will be live on the target once the sync is done (delta bases must be).
    const live = new Set([...picked.keys(), ...pp.held.keys()]);
    for (const [name, vf] of picked) {
      if (pp.held.has(name)) {
        present++;
        continue;
      }
      const deltas = vf.deltas.filter((d) => {
        if (live.has(d.deltaBase as string)) return true;
        skipped.push({
          what: `${pp.key} ${name} item ${d.key}`,
          reason: `its base version ${d.deltaBase} is not mirrored`,
        });
        return false;
      });
      const files = [vf.meta!, ...vf.roots, ...deltas];
      let need = 0;
      for (const f of files) {
        const digest = `sha256:${f.item.sha256}`;
        if (counted.has(digest)) continue;
        counted.add(digest);
        if (!(await publisher.hasBlob(digest))) need += f.item.size;
      }
      bytes += need;
      tasks.push({
        product: pp.product,
        productKey: pp.key,
        version: name,
        bytes: need,
        files: files.map((f) => ({ name: f.name, ftype: f.ftype, size: f.item.size })),
        meta: vf.meta!,
        roots: vf.roots,
        deltas,
        aliases: pp.fields.aliases,
        releaseTitle: pp.fields.releaseTitle,
        requirements: pp.fields.requirements,
      });
    }
    if (picked.size === 0) continue;
    selected.set(productLabel(pp.product), new Set(picked.keys()));
    for (const [name, held] of pp.held) {
      if (picked.has(name)) continue;
      retire.push({
        product: pp.product,
        productKey: pp.key,
        version: name,
        bytes: 0,
        files: held.files.map((f) => ({ name: f.name, ftype: f.ftype, size: 0 })),
      });
    }
  }
  const add = tasks.map(({ product, productKey, version, bytes: b, files }) => ({
    product,
    productKey,
    version,
    bytes: b,
    files,
  }));
  return { plan: { add, retire, present, skipped, bytes }, tasks, selected };
}

/** The error code an adapter's error carries (HTTP answers and registry errors alike). */
function codeOf(err: unknown): string | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/** Runs `fn` over `items` with at most `n` at a time, in order of start. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(n, items.length)) }, worker));
}

/** Syncs the target with `stream` (see the module comment). */
export async function mirror(stream: OpenedStream, opts: MirrorOptions): Promise<MirrorReport> {
  const publisher = opts.publisher;
  const cache = opts.cache ?? new BlobCache();
  const emit = (e: MirrorEvent): void => opts.onEvent?.(e);
  const { plan: p, tasks, selected } = await plan(stream, publisher, opts.filters ?? [], opts.keep);
  emit({ kind: "plan", plan: p });
  const report: MirrorReport = {
    upstream: stream.target.url,
    dryRun: opts.dryRun === true,
    plan: p,
    added: [],
    retired: [],
    failed: [],
    bytesDownloaded: 0,
    bytesUploaded: 0,
    bytesSkipped: 0,
  };
  if (opts.dryRun) return report;

  // One download and one upload per digest at a time, shared by the versions that name it.
  const fetching = new Map<string, Promise<unknown>>();
  const putting = new Map<string, Promise<void>>();
  // Publishes of one product in version order: each waits for the one before it.
  const lastPublish = new Map<string, Promise<unknown>>();
  const failedProducts = new Map<string, Set<string>>();

  const fetchInto = async (t: AddTask, f: PickedFile, chain?: HashChain): Promise<string> => {
    const hex = f.item.sha256;
    // Two versions naming one file never write its `.part` at the same time: the second one
    // waits, then finds the file in the cache (or the target holding it).
    for (let busy = fetching.get(hex); busy; busy = fetching.get(hex)) await busy.catch(() => undefined);
    const got = fetchFile(
      { name: f.name, path: f.item.path, sha256: hex, size: f.item.size },
      {
        http: stream.http,
        cache,
        chain,
        signal: opts.signal,
        retries: opts.retries,
        retryBaseMs: opts.retryBaseMs,
        onProgress: (progress) =>
          emit({ kind: "file", product: productLabel(t.product), version: t.version, progress }),
      },
    );
    fetching.set(hex, got);
    try {
      const r = await got;
      report.bytesDownloaded += r.downloaded;
      return r.file;
    } finally {
      if (fetching.get(hex) === got) fetching.delete(hex);
    }
  };

  const put = (f: PickedFile, path: string, prefix?: string): Promise<void> => {
    const digest = `sha256:${f.item.sha256}`;
    let p = putting.get(digest);
    if (!p) {
      p = publisher
        .putFile({ path, name: f.name, ftype: f.ftype, size: f.item.size }, digest, prefix)
        .then(() => undefined);
      putting.set(digest, p);
      p.catch(() => putting.delete(digest));
    }
    return p;
  };

  const copy = async (t: AddTask): Promise<Record<string, string>> => {
    opts.signal?.throwIfAborted();
    const metaDigest = `sha256:${t.meta.item.sha256}`;
    // The metadata is small: always fetched, so the roots' fingerprints can be checked.
    const metaChain = new HashChain();
    const metaPath = await fetchInto(t, t.meta, metaChain);
    await put(t.meta, metaPath);
    const checked = new Set<string>();
    for (const r of t.roots) {
      const digest = `sha256:${r.item.sha256}`;
      if (await publisher.hasBlob(digest)) continue; // checked against the target's fingerprint
      const chain = new HashChain(metaChain.hash.copy());
      const path = await fetchInto(t, r, chain);
      const got = chain.digest();
      if (got !== r.fingerprint) {
        throw new VerificationError(
          "FINGERPRINT_MISMATCH",
          `${r.name}: sha256(${t.meta.name} ‖ ${r.name}) is ${got}, but the upstream's combined hash says ${r.fingerprint}`,
        );
      }
      checked.add(r.ftype);
      await put(r, path, metaDigest);
      await cache.evict(r.item.sha256);
    }
    for (const d of t.deltas) {
      const digest = `sha256:${d.item.sha256}`;
      if (await publisher.hasBlob(digest)) continue;
      await put(d, await fetchInto(t, d));
      await cache.evict(d.item.sha256);
    }
    await cache.evict(t.meta.item.sha256);
    return Object.fromEntries(
      t.roots.filter((r) => !checked.has(r.ftype)).map((r) => [r.ftype, r.fingerprint!]),
    );
  };

  await pool(tasks, opts.jobs ?? 4, async (t) => {
    const label = productLabel(t.product);
    const before = lastPublish.get(label) ?? Promise.resolve();
    const done = (async () => {
      let unchecked: Record<string, string>;
      try {
        unchecked = await copy(t);
      } catch (err) {
        await before.catch(() => undefined);
        throw err;
      }
      await before.catch(() => undefined);
      opts.signal?.throwIfAborted();
      const failedBases = failedProducts.get(label);
      const deltas = t.deltas.filter((d) => !failedBases?.has(d.deltaBase as string));
      const out = await publisher.publishVersion(t.product, t.version, {
        files: [t.meta, ...t.roots, ...deltas].map((f) => ({
          name: f.name,
          ftype: f.ftype,
          digest: `sha256:${f.item.sha256}`,
          ...(f.deltaBase !== undefined ? { deltaBase: f.deltaBase } : {}),
        })),
        aliases: t.aliases,
        releaseTitle: t.releaseTitle,
        requirements: t.requirements,
      });
      for (const [ftype, fp] of Object.entries(unchecked)) {
        if (out.fingerprints[ftype] !== fp) {
          throw new VerificationError(
            "FINGERPRINT_MISMATCH",
            `the target computed the ${ftype} fingerprint ${out.fingerprints[ftype] ?? "(none)"}, but the upstream's combined hash says ${fp}`,
          );
        }
      }
      report.added.push({ product: label, version: t.version, fingerprints: out.fingerprints });
      emit({ kind: "published", product: label, version: t.version, created: out.created });
    })();
    lastPublish.set(label, done);
    try {
      await done;
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      const deleted = codeOf(err) === "VERSION_DELETED";
      const error = deleted
        ? "deleted on the target: a deleted version is not published again"
        : describeError(err);
      if (!deleted) {
        const set = failedProducts.get(label) ?? new Set<string>();
        set.add(t.version);
        failedProducts.set(label, set);
      }
      report.failed.push({ product: label, version: t.version, error });
      emit({ kind: "failed", product: label, version: t.version, error });
    }
  });

  // Retire only where the product keeps a live version of the selection.
  for (const r of p.retire) {
    const label = productLabel(r.product);
    const held = await publisher.versions(r.product);
    if (![...held.keys()].some((v) => selected.get(label)?.has(v))) {
      report.failed.push({
        product: label,
        version: r.version,
        error: "not retired: no version of the selection is live on the target yet",
      });
      continue;
    }
    try {
      await publisher.deleteVersion(r.product, r.version);
      report.retired.push({ product: label, version: r.version });
      emit({ kind: "retired", product: label, version: r.version });
    } catch (err) {
      report.failed.push({ product: label, version: r.version, error: `not retired: ${describeError(err)}` });
    }
  }
  report.bytesUploaded = publisher.bytesUploaded;
  report.bytesSkipped = publisher.bytesSkipped;
  return report;
}

/** Progress of `lxhub mirror` on a terminal: one line per version done, a redrawn line for bytes. */
export class MirrorProgressLine extends StatusLine {
  private total = 0;
  private versions = 0;
  private done = 0;

  readonly event = (e: MirrorEvent): void => {
    switch (e.kind) {
      case "plan":
        this.total = e.plan.add.length;
        break;
      case "file": {
        const p = e.progress;
        this.draw(
          `[${this.done}/${this.total}] ${e.product} ${e.version}: ${p.file}  ${fraction(p.done, p.total)}${this.rate(`${e.version}/${p.file}`, p.done)}`,
          p.done === p.total,
        );
        break;
      }
      case "published":
        this.versions++;
        this.done++;
        this.line(`+ ${e.product} ${e.version}${e.created ? "" : " (already there)"}`);
        break;
      case "retired":
        this.line(`- ${e.product} ${e.version}`);
        break;
      case "failed":
        this.done++;
        this.line(`! ${e.product} ${e.version}: ${e.error}`);
        break;
    }
  };
}
