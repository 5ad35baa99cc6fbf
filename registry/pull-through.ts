import { createHash } from "node:crypto";
import { PassThrough, type Readable, type Writable } from "node:stream";
import {
  decodeJson,
  nameProblem,
  parseProducts,
  productFields,
  productKey,
  versionFiles,
  isSafeRelativePath,
  type ProductsDoc,
  type RootFtype,
  type StreamFile,
  type StreamProduct,
  type StreamValidationError,
} from "../simplestreams/index.js";
import type { BlobStore } from "../storage/blobs/store.js";
import type { Catalog } from "../storage/catalog/catalog.js";
import { LxhubError } from "./errors.js";
import { PRODUCTS_PATH, type ExtraProducts, type FileMap } from "./indexer.js";

/**
 * The pull-through cache (issue 8): a server configured with an upstream serves the union of its
 * own products and the upstream's, fetches an upstream file on its first request and serves it
 * from its blob store afterwards.
 *
 * - **Products**: refreshed from the upstream on start and every `refreshSeconds`; the last good
 *   copy stays in memory and, across restarts, is read back from the generation the catalog
 *   serves (its products whose files are under `upstream/`), so a restart with the upstream down
 *   still lists what was cached. A refresh that changes them rebuilds the documents.
 * - **Paths**: an upstream file is served at `upstream/images/<os>/<release>/<arch>/<variant>/
 *   <version>/<file>`, built only from names that pass lxhub's grammar (simplestreams/names.ts),
 *   never from the upstream's path: the upstream cannot make the cache serve or write anything
 *   outside that tree. The upstream's own path is kept aside (it must be a safe relative path) and
 *   used only as the path of the request to the upstream.
 * - **Own products win**: an upstream product whose key a local product has is left out; the
 *   upstream's products come after the catalog's in every build, so the builder's lenient mode
 *   drops the upstream side of any other clash (alias, duplicate image) — never a local product.
 * - **Single flight**: one upstream GET per digest at a time. Its bytes are hashed and counted as
 *   they pass to the first client and into the blob store (`put` with the expected digest, so a
 *   mismatch stores nothing); the first client's response is cut (never cleanly ended) when the
 *   hash or size is wrong. Concurrent requests wait for that fetch and are served from the store.
 * - **Failures** (unreachable, timeout, rate limit, bad answer, wrong bytes) are counted by kind
 *   and logged (rate-limited); content already held is always served. A missing file whose fetch
 *   fails answers 502 `UPSTREAM_UNAVAILABLE` or 504 `UPSTREAM_TIMEOUT`.
 * - **Replicas**: every replica refreshes its view of the upstream, but only the holder of the
 *   `lxhub:upstream` lock rebuilds the documents at a time; the others follow the generation.
 */

/** The port the cache reads its upstream through (client/upstream-source.ts over HTTP). */
export interface UpstreamSource {
  /** Where the upstream is, for logs and the status answer. */
  readonly label: string;
  /** The upstream's products documents, checked as its trust settings say (signature or none). */
  fetchProducts(): Promise<ProductsDoc[]>;
  /** The bytes of the file at `path` (a safe relative path below the upstream's root). */
  open(path: string): Promise<Readable>;
  /** What kind of failure `err` is, in words fit for a log line. */
  classify(err: unknown): { kind: UpstreamFailureKind; message: string };
  close?(): void;
}

export type UpstreamFailureKind =
  "unreachable" | "timeout" | "rate-limited" | "http" | "verification" | "digest-mismatch" | "other";

/** Served path prefix of every upstream file. */
export const UPSTREAM_PREFIX = "upstream/";

/** A first client that takes longer than this to accept a chunk is cut off; the store fill goes on. */
const CLIENT_DRAIN_MS = 10_000;
/** A file known only from a stored generation refreshes the upstream products at most this often. */
const ON_DEMAND_REFRESH_MS = 10_000;
/** The same failure is logged at most this often. */
const LOG_EVERY_MS = 60_000;

export interface UpstreamStatus {
  upstream: string;
  refreshSeconds: number;
  products: number;
  files: number;
  lastRefresh: { at: string; ok: boolean; error?: string } | null;
  lastSuccess: string | null;
  counters: {
    upstreamRequests: number;
    upstreamBytes: number;
    cacheHits: number;
    cacheMisses: number;
    /** Requests that waited on a fetch another request started. */
    coalesced: number;
    failures: Record<UpstreamFailureKind, number>;
  };
  /** Upstream products or versions left out, with the reason (first 50). */
  skipped: string[];
}

export interface PullThroughOptions {
  refreshSeconds: number;
  /** Upstream versions with a file larger than this are left out (the server's --max-blob-bytes). */
  maxFileBytes?: number;
  /** One line per failure kind and message, at most once a minute each (the caller logs it). */
  onFailure?: (f: { kind: UpstreamFailureKind; message: string; suppressed: number }) => void;
  /** Told after each refresh that changed the upstream products. */
  onRefresh?: (info: { products: number; files: number }) => void;
}

/** Where the first client of a fetch gets its bytes; `begin` runs once the upstream answered. */
export interface FetchListener {
  begin(): Writable;
}

interface Source {
  digest: string;
  size: number;
  /** Path on the upstream; null when known only from a stored generation (fetch refreshes first). */
  upstreamPath: string | null;
}

interface Converted {
  products: StreamProduct[];
  sources: Map<string, Source>;
  skipped: string[];
}

const HEX64 = /^[0-9a-f]{64}$/;

function servedPath(
  p: { os: string; release: string; arch: string; variant: string },
  version: string,
  file: string,
) {
  return `${UPSTREAM_PREFIX}images/${p.os}/${p.release}/${p.arch}/${p.variant}/${version}/${file}`;
}

/**
 * Upstream products documents → lxhub products served under `upstream/` (versionFiles and
 * productFields decide what is taken). `served`: the documents are lxhub's own stored ones (a
 * seed), so only products whose files are already under `upstream/` are taken, and the upstream
 * path is unknown.
 */
export function convertProducts(
  docs: ProductsDoc[],
  opts: { served?: boolean; maxFileBytes?: number } = {},
): Converted {
  const served = opts.served ?? false;
  const maxFileBytes = opts.maxFileBytes ?? Number.MAX_SAFE_INTEGER;
  const products: StreamProduct[] = [];
  const sources = new Map<string, Source>();
  const skipped: string[] = [];
  const keys = new Set<string>();
  for (const doc of docs) {
    for (const [key, product] of [...doc.products].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const pf = productFields(product);
      if (!pf.ok) {
        if (!served) skipped.push(`product ${key}: ${pf.reason}`);
        continue;
      }
      const fields = pf.fields;
      const k = productKey(fields);
      if (keys.has(k)) continue;
      const versions: StreamProduct["versions"] = [];
      const names = [...product.versions.keys()].sort();
      for (const vname of names) {
        const version = product.versions.get(vname)!;
        const problem = nameProblem("version", vname);
        if (problem) {
          if (!served) skipped.push(`product ${key} version ${vname}: ${problem}`);
          continue;
        }
        const picked = versionFiles(version);
        if (!picked.meta) continue;
        const all = [picked.meta, ...picked.roots, ...picked.deltas];
        const unsafe = all.find(
          (f) =>
            (served ? !f.item.path.startsWith(UPSTREAM_PREFIX) : !isSafeRelativePath(f.item.path)) ||
            !HEX64.test(f.item.sha256) ||
            !Number.isSafeInteger(f.item.size) ||
            f.item.size < 0,
        );
        if (unsafe) {
          if (!served)
            skipped.push(`product ${key} version ${vname}: item ${unsafe.key} has an unsafe path or size`);
          continue;
        }
        const large = all.find((f) => f.item.size > maxFileBytes);
        if (large) {
          skipped.push(
            `product ${key} version ${vname}: item ${large.key} is larger than the largest blob accepted (${maxFileBytes} bytes)`,
          );
          continue;
        }
        const files: StreamFile[] = [];
        const combined: Partial<Record<RootFtype, string>> = {};
        for (const r of picked.roots) combined[r.ftype as RootFtype] = r.fingerprint as string;
        for (const f of all) {
          const path = servedPath(fields, vname, f.name);
          if (served && path !== f.item.path) continue;
          const file: StreamFile = {
            name: f.name,
            ftype: f === picked.meta ? "lxd.tar.xz" : (f.ftype as StreamFile["ftype"]),
            path,
            sha256: f.item.sha256,
            size: f.item.size,
          };
          if (f === picked.meta) file.combined = combined;
          if (f.deltaBase) file.deltaBase = f.deltaBase;
          files.push(file);
          sources.set(path, {
            digest: `sha256:${f.item.sha256}`,
            size: f.item.size,
            upstreamPath: served ? null : f.item.path,
          });
        }
        versions.push({ name: vname, files });
      }
      // A delta is kept only when the version it applies to is taken too.
      const taken = new Set(versions.map((v) => v.name));
      for (const v of versions) v.files = v.files.filter((f) => !f.deltaBase || taken.has(f.deltaBase));
      if (!versions.length) continue;
      keys.add(k);
      products.push({ ...fields, versions });
    }
  }
  return { products, sources, skipped };
}

/** The upstream products of a stored or served generation's documents (a restart's seed). */
export function productsOfDocuments(documents: ReadonlyMap<string, Buffer>): Converted {
  const body = documents.get(PRODUCTS_PATH);
  if (!body) return { products: [], sources: new Map(), skipped: [] };
  return convertProducts([parseProducts(decodeJson(body))], { served: true });
}

export class PullThroughService implements ExtraProducts {
  private products: StreamProduct[] = [];
  private sources = new Map<string, Source>();
  private skipped: string[] = [];
  /** JSON of the products the last rebuild of this process was asked for (a refresh compares). */
  private builtSignature: string | null = null;
  private refreshing: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly inflight = new Map<string, Promise<void>>();
  private lastRefresh: UpstreamStatus["lastRefresh"] = null;
  private lastSuccess: Date | null = null;
  private rebuild: (() => Promise<unknown>) | null = null;
  private readonly logged = new Map<string, { at: number; suppressed: number }>();
  private readonly counters: UpstreamStatus["counters"] = {
    upstreamRequests: 0,
    upstreamBytes: 0,
    cacheHits: 0,
    cacheMisses: 0,
    coalesced: 0,
    failures: {
      unreachable: 0,
      timeout: 0,
      "rate-limited": 0,
      http: 0,
      verification: 0,
      "digest-mismatch": 0,
      other: 0,
    },
  };

  constructor(
    private readonly source: UpstreamSource,
    private readonly blobs: BlobStore,
    private readonly catalog: Catalog,
    private readonly opts: PullThroughOptions,
  ) {}

  /** How to rebuild the documents (the index service; set once both exist). */
  attach(rebuild: () => Promise<unknown>): void {
    this.rebuild = rebuild;
  }

  /** The last good copy from the generation the catalog serves, before the first build. */
  async seed(): Promise<void> {
    const stored = await this.catalog.generations.current();
    if (!stored) return;
    const docs = new Map(stored.documents.map((d) => [d.path, d.body]));
    try {
      const c = productsOfDocuments(docs);
      this.products = c.products;
      this.sources = c.sources;
    } catch {
      // A stored document this version cannot read: start empty, the first refresh fills it.
    }
  }

  /** Refresh now (not awaited: the upstream may be slow or down) and every `refreshSeconds`. */
  start(): void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshSeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.source.close?.();
  }

  // ExtraProducts (registry/indexer.ts) -------------------------------------------------------

  extraProducts(localKeys: ReadonlySet<string>): StreamProduct[] {
    this.builtSignature = JSON.stringify(this.products);
    return this.products.filter((p) => !localKeys.has(productKey(p)));
  }

  extraFiles(documents: ReadonlyMap<string, Buffer>): FileMap {
    const files: FileMap = new Map();
    let c: Converted;
    try {
      c = productsOfDocuments(documents);
    } catch {
      return files;
    }
    for (const [path, s] of c.sources) {
      files.set(path, { digest: s.digest, size: s.size });
      if (!this.sources.has(path)) this.sources.set(path, s);
    }
    // Another replica built this generation from its refresh: adopt its products as this
    // replica's last good copy, so its own next refresh finds nothing new to rebuild.
    this.products = c.products;
    this.builtSignature = JSON.stringify(c.products);
    return files;
  }

  onExtraDrop(problem: StreamValidationError): void {
    if (this.skipped.length < 50 && !this.skipped.includes(problem.message))
      this.skipped.push(problem.message);
  }

  // Refresh ------------------------------------------------------------------------------------

  /** Single flight: a call while one runs waits for it. Never throws. */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    const at = new Date().toISOString();
    let docs: ProductsDoc[];
    try {
      this.counters.upstreamRequests++;
      docs = await this.source.fetchProducts();
    } catch (err) {
      const f = this.failed(err);
      this.lastRefresh = { at, ok: false, error: f.message };
      return;
    }
    const c = convertProducts(docs, { maxFileBytes: this.opts.maxFileBytes });
    this.lastRefresh = { at, ok: true };
    this.lastSuccess = new Date();
    // Upstream paths are known now; entries of a seed the upstream no longer lists keep serving
    // what is held (the generation still names them until the rebuild below).
    for (const [path, s] of this.sources) if (!c.sources.has(path)) c.sources.set(path, s);
    this.sources = c.sources;
    const signature = JSON.stringify(c.products);
    if (signature === this.builtSignature) return;
    this.products = c.products;
    this.skipped = c.skipped.slice(0, 50);
    if (!this.rebuild) return;
    try {
      const r = await this.catalog.locks.tryLock("lxhub:upstream", async () => {
        await this.rebuild!();
      });
      if (!r.held) this.opts.onRefresh?.({ products: c.products.length, files: c.sources.size });
    } catch (err) {
      this.failed(err, "other");
    }
  }

  /**
   * Blobs the garbage collector must keep (registry/gc.ts `extraNeeded`): every file of the
   * upstream products served now. A file the upstream withdrew becomes collectable once a refresh
   * took it out of the last good copy.
   */
  neededBlobs(): Set<string> {
    const needed = new Set<string>();
    for (const p of this.products)
      for (const v of p.versions) for (const f of v.files) needed.add(`sha256:${f.sha256}`);
    return needed;
  }

  // Files --------------------------------------------------------------------------------------

  /** Whether `path` is an upstream file path (the read path asks before serving it). */
  owns(path: string): boolean {
    return path.startsWith(UPSTREAM_PREFIX);
  }

  hit(): void {
    this.counters.cacheHits++;
  }

  miss(): void {
    this.counters.cacheMisses++;
  }

  /**
   * Fetch the missing blob `digest` (size `size`) served at `path` into the store. The first
   * caller for a digest starts the upstream GET and, when it passes a listener, gets the bytes
   * as they arrive ("served"); a caller arriving while it runs waits for it ("stored": serve it
   * from the store). Rejects with an `LxhubError` (`UPSTREAM_UNAVAILABLE`/`UPSTREAM_TIMEOUT`).
   */
  async fetch(
    path: string,
    blob: { digest: string; size: number },
    listener?: FetchListener,
  ): Promise<"served" | "stored"> {
    const running = this.inflight.get(blob.digest);
    if (running) {
      this.counters.coalesced++;
      await running;
      return "stored";
    }
    let served = false;
    const p = this.fill(path, blob, listener, () => (served = true)).finally(() =>
      this.inflight.delete(blob.digest),
    );
    this.inflight.set(blob.digest, p);
    await p;
    return served ? "served" : "stored";
  }

  private async upstreamPathOf(path: string, digest: string): Promise<string> {
    let s = this.sources.get(path);
    if (!s?.upstreamPath) {
      // Known only from a stored generation: ask the upstream again, unless it was asked moments
      // ago (a request per uncached file must not become a refresh each while it is down).
      const last = this.lastRefresh ? Date.parse(this.lastRefresh.at) : 0;
      if (this.refreshing || Date.now() - last >= ON_DEMAND_REFRESH_MS) await this.refresh();
      s = this.sources.get(path);
    }
    if (!s?.upstreamPath || s.digest !== digest) {
      throw new LxhubError(
        "UPSTREAM_UNAVAILABLE",
        `/${path} is not held here and the upstream ${this.source.label} does not list it now` +
          (this.lastRefresh && !this.lastRefresh.ok
            ? ` (last refresh failed: ${this.lastRefresh.error})`
            : ""),
      );
    }
    return s.upstreamPath;
  }

  private async fill(
    path: string,
    blob: { digest: string; size: number },
    listener: FetchListener | undefined,
    onServe: () => void,
  ): Promise<void> {
    // Stored between the caller's look and this fetch's start (a fetch that just ended): no GET.
    if (await this.blobs.stat(blob.digest)) return;
    const upstreamPath = await this.upstreamPathOf(path, blob.digest);
    let body: Readable;
    try {
      this.counters.upstreamRequests++;
      body = await this.source.open(upstreamPath);
    } catch (err) {
      throw this.asPublic(err, path);
    }
    const store = new PassThrough({ highWaterMark: 1024 * 1024 });
    // Its failure is reported through `stored`; an 'error' event without a listener would crash.
    store.on("error", () => undefined);
    const stored = this.blobs.put(store, blob.digest);
    stored.catch(() => undefined);
    let client: Writable | null = null;
    if (listener) {
      client = listener.begin();
      onServe();
      client.once("close", () => (client = null));
    }
    const hash = createHash("sha256");
    let size = 0;
    let held: Buffer | null = null;
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > blob.size) {
          throw Object.assign(
            new Error(`the upstream sent more than the ${blob.size} bytes listed for /${upstreamPath}`),
            {
              upstreamKind: "digest-mismatch",
            },
          );
        }
        hash.update(chunk);
        this.counters.upstreamBytes += chunk.length;
        if (store.destroyed) {
          await stored;
          throw new Error("the blob store stopped taking the bytes");
        }
        const waits: Promise<unknown>[] = [];
        if (!store.write(chunk)) waits.push(drained(store));
        // The first client gets each chunk once the next one arrived and the last one only after
        // the hash matched: a wrong file never reaches it as a complete body.
        const c = client as Writable | null;
        const prev = held;
        held = chunk;
        if (c && prev && !c.write(prev)) {
          waits.push(
            drained(c, CLIENT_DRAIN_MS).then((ok) => {
              // A first client this slow would hold every other request back: cut it off.
              if (!ok) c.destroy();
            }),
          );
        }
        await Promise.all(waits);
      }
      const actual = `sha256:${hash.digest("hex")}`;
      if (actual !== blob.digest || size !== blob.size) {
        throw Object.assign(
          new Error(
            `the upstream's /${upstreamPath} is ${actual} over ${size} bytes, not ${blob.digest} over ${blob.size} as listed: nothing was stored`,
          ),
          { upstreamKind: "digest-mismatch" },
        );
      }
      store.end();
      await stored;
      const c = client as Writable | null;
      if (c && held) c.end(held);
      else c?.end();
    } catch (err) {
      body.destroy();
      store.destroy(err instanceof Error ? err : new Error(String(err)));
      await stored.catch(() => undefined);
      (client as Writable | null)?.destroy();
      throw this.asPublic(err, path);
    }
  }

  /** Count and log a failure (rate-limited), and give the public error for it. */
  private asPublic(err: unknown, path: string): LxhubError {
    if (err instanceof LxhubError) return err;
    const f = this.failed(err);
    return new LxhubError(
      f.kind === "timeout" ? "UPSTREAM_TIMEOUT" : "UPSTREAM_UNAVAILABLE",
      `/${path} is not held here and fetching it from the upstream failed (${f.kind}): ${f.message}`,
    );
  }

  private failed(err: unknown, kind?: UpstreamFailureKind): { kind: UpstreamFailureKind; message: string } {
    const own = (err as { upstreamKind?: UpstreamFailureKind } | null)?.upstreamKind;
    const f = own
      ? { kind: own, message: (err as Error).message }
      : kind
        ? { kind, message: err instanceof Error ? err.message : String(err) }
        : this.source.classify(err);
    this.counters.failures[f.kind]++;
    const key = `${f.kind}\u0000${f.message}`;
    const now = Date.now();
    const seen = this.logged.get(key);
    if (!seen || now - seen.at >= LOG_EVERY_MS) {
      this.opts.onFailure?.({ ...f, suppressed: seen?.suppressed ?? 0 });
      this.logged.set(key, { at: now, suppressed: 0 });
      if (this.logged.size > 1000) this.logged.clear();
    } else {
      seen.suppressed++;
    }
    return f;
  }

  status(): UpstreamStatus {
    return {
      upstream: this.source.label,
      refreshSeconds: this.opts.refreshSeconds,
      products: this.products.length,
      files: this.sources.size,
      lastRefresh: this.lastRefresh,
      lastSuccess: this.lastSuccess?.toISOString() ?? null,
      counters: structuredClone(this.counters),
      skipped: this.skipped,
    };
  }
}

/** Resolves true once `w` drains, false when it closes first or `ms` passes. */
function drained(w: Writable, ms?: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = ms === undefined ? undefined : setTimeout(() => done(false), ms);
    const onDrain = () => done(true);
    const onClose = () => done(false);
    function done(ok: boolean) {
      clearTimeout(timer);
      w.off("drain", onDrain).off("close", onClose);
      resolve(ok);
    }
    w.once("drain", onDrain).once("close", onClose);
  });
}
