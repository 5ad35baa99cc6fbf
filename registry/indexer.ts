import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { buildDocuments } from "../simplestreams/builder.js";
import { productKey } from "../simplestreams/validate.js";
import type { StreamProduct, StreamFile, PublishableFtype, RootFtype } from "../simplestreams/types.js";
import type { StreamValidationError } from "../simplestreams/errors.js";
import { signStatement } from "../signing/statement.js";
import type { Keyring } from "../signing/keyring.js";
import type { OpenPgpSigner } from "../signing/openpgp.js";
import type { Catalog, CatalogState, StoredGeneration, Tx } from "../storage/catalog/catalog.js";
import { imageFilePath, productId } from "./paths.js";
import { openPgpDocuments } from "./openpgp-documents.js";

/** A document served from memory, with everything a response needs precomputed. */
export interface ServedDocument {
  body: Buffer;
  /** gzip of body, served when the client asks for it (never forced: pitfall 14). */
  gzip: Buffer;
  /** Strong ETag: the quoted sha256 of body. */
  etag: string;
  sha256: string;
  contentType: string;
}

/** One published generation: swapped in as a whole, so readers see the old one or the new one. */
export interface Generation {
  serial: number;
  builtAt: Date;
  /** Path relative to the mirror root → document (index, products, statement, JWKS). */
  documents: Map<string, ServedDocument>;
  /** Path of every image file ever published (deleted versions included: pitfall 18) → blob. */
  files: Map<string, { digest: string; size: number }>;
}

export const INDEX_PATH = "streams/v1/index.json";
export const PRODUCTS_PATH = "streams/v1/images.json";
export const STATEMENT_PATH = "streams/v1/statement.jws";
export const JWKS_PATH = ".well-known/lxhub/jwks.json";
/**
 * The endorsements of newer keys by older ones still kept (signing/endorsement.ts), as
 * `{"endorsements": [compact JWS, …]}`: what lets a client that pinned an older key follow a
 * rotation. Not in the statement: each endorsement is signed on its own.
 */
export const ENDORSEMENTS_PATH = ".well-known/lxhub/endorsements.json";

/** The LXC download index is plain text (simplestreams.md §7.2); every other built document JSON. */
function contentTypeOf(path: string): string {
  return path.startsWith("meta/") ? "text/plain; charset=utf-8" : "application/json";
}

/** A document with its gzip form and strong ETag, computed once. */
export function servedDocument(body: Buffer, contentType: string): ServedDocument {
  const sha256 = createHash("sha256").update(body).digest("hex");
  return { body, gzip: gzipSync(body, { level: 9 }), etag: `"${sha256}"`, sha256, contentType };
}

export type { CatalogState };

/** A write to the catalog that goes through the publish pipeline (see IndexService.change). */
export interface CatalogChange<T> {
  /** The catalog as it will be once `commit` ran, from the catalog as it is. */
  apply(state: CatalogState): CatalogState;
  /** What the change publishes: any rule broken there refuses the change (validate.ts `blame`). */
  blame?: { product: string; version?: string };
  /**
   * Writes the change within `tx`, which also stores the new generation and moves the pointer to
   * it: the change and the documents that show it commit together. Runs only once they built.
   */
  commit(tx: Tx): Promise<T>;
}

/** A served file path (deleted versions included: pitfall 18) → blob. */
export type FileMap = Map<string, { digest: string; size: number }>;

/**
 * Products served beside the catalog's in every build (publish, rebuild, re-signing): the
 * pull-through cache's upstream products (registry/pull-through.ts). They come after the
 * catalog's, so on any clash the catalog's win.
 */
export interface ExtraProducts {
  /** The products to add; `localKeys` are the catalog's product keys (those are left out). */
  extraProducts(localKeys: ReadonlySet<string>): StreamProduct[];
  /** The files a stored generation's documents serve beyond the catalog's (a replica loading it). */
  extraFiles(documents: ReadonlyMap<string, Buffer>): FileMap;
  /** Told about an extra product, version or alias the build left out. */
  onExtraDrop?(problem: StreamValidationError): void;
}

/**
 * The catalog as the document builder takes it: live versions only, and no delta whose base
 * version was deleted (deleting a base takes its deltas out of the documents; the versions keep
 * their full files). A delta naming a version that never existed stays, for the validator. Records every file path ever published into `files`.
 */
export function streamProducts(
  state: CatalogState,
  files: FileMap,
  /** The version being published keeps every delta it names, so the validator sees them all. */
  blame?: { product: string; version?: string },
): StreamProduct[] {
  const products: StreamProduct[] = [];
  for (const { product, versions } of state) {
    const deleted = new Set(versions.filter((v) => v.deletedAt).map((v) => v.name));
    const blamed = blame?.product === productId(product) ? blame.version : undefined;
    const live: StreamProduct["versions"] = [];
    for (const v of versions) {
      const streamFiles: StreamFile[] = [];
      for (const i of v.items) {
        const path = imageFilePath(product, v.name, i.name);
        files.set(path, { digest: i.digest, size: i.size });
        if (i.deltaBase && deleted.has(i.deltaBase) && v.name !== blamed) continue;
        const f: StreamFile = {
          name: i.name,
          ftype: i.ftype as PublishableFtype,
          path,
          sha256: i.digest.slice("sha256:".length),
          size: i.size,
        };
        if (i.combined && Object.keys(i.combined).length)
          f.combined = i.combined as Partial<Record<RootFtype, string>>;
        if (i.deltaBase) f.deltaBase = i.deltaBase;
        streamFiles.push(f);
      }
      if (!v.deletedAt) live.push({ name: v.name, files: streamFiles });
    }
    if (!live.length) continue;
    products.push({
      os: product.os,
      release: product.release,
      arch: product.arch,
      variant: product.variant,
      releaseTitle: product.releaseTitle,
      aliases: product.aliases,
      requirements: product.requirements,
      versions: live,
    });
  }
  return products;
}

/** How many generations the catalog keeps (the current one and a few before it, for a look back). */
const KEEP_GENERATIONS = 8;
/** A replica that hears nothing still looks for a newer generation this often (missed notices). */
const FOLLOW_POLL_MS = 5_000;
/** Longest a document request waits on the catalog before it is answered from what this replica has. */
const FRESH_WAIT_MS = 2_000;

/**
 * The publish pipeline's last three steps and the documents it serves. Every write to what the
 * documents show goes through `change`: **build** the documents from the catalog as it will be
 * (one rule set, validate.ts), refuse the change if it breaks a rule, **commit** it together with
 * the signed generation (its documents and the pointer to it, in one transaction), then **swap**
 * the new generation in as a whole, so readers see the old one or the new one and never an index
 * that names a missing file (files are in the blob store before the catalog names them).
 *
 * Changes run one at a time among every process of the catalog (`locks`), so serials only grow.
 * When the catalog is shared (PostgreSQL replicas), each replica follows the pointer: it loads a
 * newer generation when told (LISTEN/NOTIFY), every few seconds in case a notice was missed, and
 * before it answers a document request (`fresh`), so no replica serves an older serial than one
 * a publish already returned; if the catalog is unreachable it keeps serving what it has.
 *
 * Builds are lenient about what is already in the catalog: a record that today's rules refuse
 * (written by an older version, or by hand) is left out of the documents and reported through
 * `problems()`, so start-up and re-signing never depend on catalog content.
 */
export class IndexService {
  private current: Generation | null = null;
  private currentProblems: string[] = [];
  /** Single-flight loads: requests that arrive while one runs wait for the next, which starts after them. */
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private poll: NodeJS.Timeout | null = null;
  private lastSyncError: Error | null = null;

  constructor(
    private readonly catalog: Catalog,
    private readonly keyring: Keyring,
    private readonly opts: {
      statementTtlSeconds: number;
      issuer: string;
      /** Signs the `.sjson`/`.json.gpg` forms of each generation's documents (openpgp-documents.ts). */
      openpgp?: OpenPgpSigner;
      /** Told once about each record a build leaves out (until it is fixed). */
      onProblem?: (problem: string) => void;
      /** Told when following the catalog fails (the replica keeps serving what it has). */
      onSyncError?: (err: Error) => void;
      /** Told how long each build → sign → commit of a generation took (metrics). */
      onSealed?: (seconds: number) => void;
      /** Products served beside the catalog's (the pull-through cache). */
      extra?: ExtraProducts;
    },
  ) {}

  generation(): Generation | null {
    return this.current;
  }

  /** Records the last build left out, in words; empty when the whole catalog is served. */
  problems(): readonly string[] {
    return this.currentProblems;
  }

  /** true when other processes publish to the same catalog: documents are checked before serving. */
  get shared(): boolean {
    return this.catalog.shared;
  }

  /** The last failure to follow the catalog, cleared by the next success. */
  syncError(): Error | null {
    return this.lastSyncError;
  }

  /** Builds, changes and swaps run one at a time among every process of the catalog. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.catalog.locks.withLock("lxhub:index", fn);
  }

  /** Rebuild and re-sign from the catalog as it is (start-up, re-signing timer). */
  rebuild(): Promise<Generation> {
    return this.exclusive(async () => {
      const built = this.build(await this.catalog.images.snapshot());
      return (await this.seal(built, async () => undefined)).gen;
    });
  }

  /**
   * Re-sign when the generation served is older than `maxAgeMs` (the re-signing timer; `Infinity`:
   * only for a key change, the server's minute check), or when
   * the key store changed since it was signed (`lxhub key rotate|retire` from another process, an
   * overlap that ended). With replicas, the first one due re-signs and the others load its
   * generation instead.
   */
  resignIfDue(maxAgeMs: number): Promise<Generation | null> {
    return this.exclusive(async () => {
      if (this.catalog.shared) await this.load();
      await this.keyring.reload();
      const keysChanged = [...this.keyDocuments()].some(
        ([p, d]) => this.current?.documents.get(p)?.sha256 !== d.sha256,
      );
      if (this.current && !keysChanged && Date.now() - this.current.builtAt.getTime() < maxAgeMs) return null;
      const built = this.build(await this.catalog.images.snapshot());
      return (await this.seal(built, async () => undefined)).gen;
    });
  }

  /**
   * Build → commit with the signed generation → swap. Throws the `StreamValidationError` of a
   * rule the change breaks (nothing is committed then); otherwise returns what `commit` returned.
   */
  change<T>(c: CatalogChange<T>): Promise<T> {
    return this.exclusive(async () => {
      const built = this.build(c.apply(await this.catalog.images.snapshot()), c.blame);
      const refused = built.dropped.find(
        (d) =>
          c.blame !== undefined &&
          d.location.product === c.blame.product &&
          (d.location.version === undefined || d.location.version === c.blame.version),
      );
      if (refused) throw refused;
      return (await this.seal(built, (tx) => c.commit(tx))).result;
    });
  }

  /**
   * Follow the catalog: load newer generations when another replica announces one, and every
   * few seconds. No-op unless the catalog is shared.
   */
  follow(): void {
    if (!this.catalog.shared || this.poll) return;
    this.catalog.onGeneration((serial) => {
      if (serial === null || serial > (this.current?.serial ?? 0)) void this.sync();
    });
    this.poll = setInterval(() => void this.sync(), FOLLOW_POLL_MS);
    this.poll.unref();
  }

  stop(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
  }

  /**
   * Resolves once this replica serves the newest generation committed before the call (a load
   * that starts after it), or once the attempt failed or took over 2 s: then the generation it has
   * stays served.
   * Immediate when the catalog is not shared.
   */
  fresh(): Promise<void> {
    if (!this.catalog.shared) return Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, FRESH_WAIT_MS)));
    return Promise.race([this.sync(), late]).finally(() => clearTimeout(timer));
  }

  private sync(): Promise<void> {
    if (!this.running) {
      this.running = this.load().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    // A load is running but may have read the pointer before this call: wait for one more.
    if (!this.queued) {
      this.queued = this.running.then(() => {
        this.queued = null;
        return this.sync();
      });
    }
    return this.queued;
  }

  /** Load the catalog's current generation when it is newer than the one served; never throws. */
  private async load(): Promise<void> {
    try {
      const serial = await this.catalog.generations.currentSerial();
      if (serial > (this.current?.serial ?? 0)) {
        const stored = await this.catalog.generations.current();
        if (stored && stored.serial > (this.current?.serial ?? 0)) {
          const files: FileMap = new Map();
          streamProducts(await this.catalog.images.snapshot(), files);
          if (this.opts.extra) {
            const docs = new Map(stored.documents.map((d) => [d.path, d.body]));
            for (const [p, f] of this.opts.extra.extraFiles(docs)) if (!files.has(p)) files.set(p, f);
          }
          this.install(fromStored(stored, files), stored.problems);
        }
      }
      this.lastSyncError = null;
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      if (this.lastSyncError === null) this.opts.onSyncError?.(e);
      this.lastSyncError = e;
    }
  }

  private build(
    state: CatalogState,
    blame?: { product: string; version?: string },
  ): { docs: Map<string, Buffer>; files: FileMap; dropped: StreamValidationError[]; builtAt: Date } {
    const files: FileMap = new Map();
    const dropped: StreamValidationError[] = [];
    const builtAt = new Date();
    const local = streamProducts(state, files, blame);
    let docs = buildDocuments(local, { updated: builtAt, onDrop: (p) => dropped.push(p), blame });
    const extra = this.opts.extra?.extraProducts(new Set(local.map(productKey))) ?? [];
    if (extra.length) {
      // The catalog's products alone decide what is refused and what is a catalog problem (above);
      // the served documents add the extra products after them, without blame, so the builder's
      // lenient mode drops the extra side of any clash and never a catalog product.
      const extraKeys = new Set(extra.map(productKey));
      for (const p of extra)
        for (const v of p.versions)
          for (const f of v.files)
            if (!files.has(f.path)) files.set(f.path, { digest: `sha256:${f.sha256}`, size: f.size });
      docs = buildDocuments([...local, ...extra], {
        updated: builtAt,
        onDrop: (p) => {
          if (p.location.product !== undefined && extraKeys.has(p.location.product))
            this.opts.extra?.onExtraDrop?.(p);
        },
      });
    }
    return { docs: docs.files, files, dropped, builtAt };
  }

  /**
   * Commit `commit`'s writes, the next serial, the signed statement and the generation's
   * documents with the pointer to them in one transaction, then swap the generation in.
   */
  private async seal<T>(
    built: { docs: Map<string, Buffer>; files: FileMap; dropped: StreamValidationError[]; builtAt: Date },
    commit: (tx: Tx) => Promise<T>,
  ): Promise<{ result: T; gen: Generation }> {
    // Sign with the newest key in the store, which another process may have rotated.
    await this.keyring.reload();
    const documents = new Map<string, ServedDocument>();
    for (const [p, body] of built.docs) documents.set(p, servedDocument(body, contentTypeOf(p)));
    for (const [p, d] of this.keyDocuments()) documents.set(p, d);
    if (this.opts.openpgp) {
      for (const [p, d] of await openPgpDocuments(this.opts.openpgp, built.docs)) {
        documents.set(p, servedDocument(d.body, d.contentType));
      }
    }
    const problems = built.dropped.map((d) => d.message);
    const { result, gen } = await this.catalog.transaction(async (tx) => {
      const r = await commit(tx);
      const serial = await this.catalog.counters.next("statement_serial", tx);
      const jws = await signStatement(this.keyring, {
        documents: [...built.docs.keys()].map((p) => {
          const d = documents.get(p)!;
          return { path: p, sha256: d.sha256, size: d.body.length };
        }),
        serial,
        issuedAt: built.builtAt,
        ttlSeconds: this.opts.statementTtlSeconds,
        issuer: this.opts.issuer,
      });
      const all = new Map(documents);
      all.set(STATEMENT_PATH, servedDocument(Buffer.from(jws + "\n"), "application/jose"));
      await this.catalog.generations.save(
        tx,
        {
          serial,
          builtAt: built.builtAt.toISOString(),
          problems,
          documents: [...all].map(([path, d]) => ({
            path,
            sha256: d.sha256,
            contentType: d.contentType,
            body: d.body,
          })),
        },
        KEEP_GENERATIONS,
      );
      await this.catalog.notifyGeneration(tx, serial);
      const sealed: Generation = { serial, builtAt: built.builtAt, documents: all, files: built.files };
      return { result: r, gen: sealed };
    });
    this.install(gen, problems);
    // From the build's start (builtAt) to the swap: what a publish waits for the documents.
    this.opts.onSealed?.((Date.now() - built.builtAt.getTime()) / 1000);
    return { result, gen };
  }

  /** The public keys and the endorsements still due, as the keyring holds them now. */
  private keyDocuments(): Map<string, ServedDocument> {
    const json = (v: unknown) =>
      servedDocument(Buffer.from(JSON.stringify(v, null, 1) + "\n"), "application/json");
    return new Map([
      [JWKS_PATH, json(this.keyring.jwks())],
      [ENDORSEMENTS_PATH, json({ endorsements: this.keyring.endorsements() })],
    ]);
  }

  /** The swap: one reference assignment, never to an older serial. */
  private install(gen: Generation, problems: string[]): void {
    if (this.current && gen.serial <= this.current.serial) return;
    this.current = gen;
    const known = new Set(this.currentProblems);
    for (const p of problems) if (!known.has(p)) this.opts.onProblem?.(p);
    this.currentProblems = problems;
  }
}

/** A stored generation as served; the file map comes from the catalog's records. */
function fromStored(stored: StoredGeneration, files: FileMap): Generation {
  const documents = new Map<string, ServedDocument>();
  for (const d of stored.documents) documents.set(d.path, servedDocument(d.body, d.contentType));
  return { serial: stored.serial, builtAt: new Date(stored.builtAt), documents, files };
}
