import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { buildDocuments } from "../simplestreams/builder.js";
import type { StreamProduct, StreamFile, PublishableFtype, RootFtype } from "../simplestreams/types.js";
import type { StreamValidationError } from "../simplestreams/errors.js";
import { signStatement } from "../signing/statement.js";
import type { Keyring } from "../signing/keyring.js";
import type { Catalog } from "../storage/catalog/catalog.js";
import { imageFilePath, productId } from "./paths.js";

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

function served(body: Buffer, contentType: string): ServedDocument {
  const sha256 = createHash("sha256").update(body).digest("hex");
  return { body, gzip: gzipSync(body, { level: 9 }), etag: `"${sha256}"`, sha256, contentType };
}

/** The catalog's records as the documents are built from them (Catalog.snapshot). */
export type CatalogState = Awaited<ReturnType<Catalog["snapshot"]>>;

/** A write to the catalog that goes through the publish pipeline (see IndexService.change). */
export interface CatalogChange<T> {
  /** The catalog as it will be once `commit` ran, from the catalog as it is. */
  apply(state: CatalogState): CatalogState;
  /** What the change publishes: any rule broken there refuses the change (validate.ts `blame`). */
  blame?: { product: string; version?: string };
  /** Writes the change in one transaction; runs only once the new documents built. */
  commit(): Promise<T>;
}

/** A served file path (deleted versions included: pitfall 18) → blob. */
type FileMap = Map<string, { digest: string; size: number }>;

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

/**
 * The publish pipeline's last three steps and the documents it serves. Every write to what the
 * documents show goes through `change`: **build** the documents from the catalog as it will be
 * (one rule set, validate.ts), refuse the change if it breaks a rule, **commit** it, then sign and
 * **swap** the new generation in as a whole, so readers see the old one or the new one and never
 * an index that names a missing file (files are in the blob store before the catalog names them).
 *
 * Builds are lenient about what is already in the catalog: a record that today's rules refuse
 * (written by an older version, or by hand) is left out of the documents and reported through
 * `problems()`, so start-up and re-signing never depend on catalog content.
 */
export class IndexService {
  private current: Generation | null = null;
  private lock: Promise<unknown> = Promise.resolve();
  private currentProblems: string[] = [];

  constructor(
    private readonly catalog: Catalog,
    private readonly keyring: Keyring,
    private readonly opts: {
      statementTtlSeconds: number;
      issuer: string;
      /** Told once about each record a build leaves out (until it is fixed). */
      onProblem?: (problem: string) => void;
    },
  ) {}

  generation(): Generation | null {
    return this.current;
  }

  /** Records the last build left out, in words; empty when the whole catalog is served. */
  problems(): readonly string[] {
    return this.currentProblems;
  }

  /** Builds, changes and swaps run one at a time, so a generation never goes back in time. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  /** Rebuild and re-sign from the catalog as it is (start-up, re-signing timer). */
  rebuild(): Promise<Generation> {
    return this.exclusive(async () => {
      const built = this.build(await this.catalog.snapshot());
      return this.swap(built);
    });
  }

  /**
   * Build → commit → swap. Throws the `StreamValidationError` of a rule the change breaks
   * (nothing is committed then); otherwise commits, swaps in the new generation and returns
   * what `commit` returned.
   */
  change<T>(c: CatalogChange<T>): Promise<T> {
    return this.exclusive(async () => {
      const built = this.build(c.apply(await this.catalog.snapshot()), c.blame);
      const refused = built.dropped.find(
        (d) =>
          c.blame !== undefined &&
          d.location.product === c.blame.product &&
          (d.location.version === undefined || d.location.version === c.blame.version),
      );
      if (refused) throw refused;
      const result = await c.commit();
      await this.swap(built);
      return result;
    });
  }

  private build(
    state: CatalogState,
    blame?: { product: string; version?: string },
  ): { docs: Map<string, Buffer>; files: FileMap; dropped: StreamValidationError[]; builtAt: Date } {
    const files: FileMap = new Map();
    const dropped: StreamValidationError[] = [];
    const builtAt = new Date();
    const docs = buildDocuments(streamProducts(state, files, blame), {
      updated: builtAt,
      onDrop: (p) => dropped.push(p),
      blame,
    });
    return { docs: docs.files, files, dropped, builtAt };
  }

  private async swap(built: {
    docs: Map<string, Buffer>;
    files: FileMap;
    dropped: StreamValidationError[];
    builtAt: Date;
  }): Promise<Generation> {
    const documents = new Map<string, ServedDocument>();
    for (const [p, body] of built.docs) documents.set(p, served(body, "application/json"));
    const serial = await this.catalog.nextCounter("statement_serial");
    const jws = await signStatement(this.keyring, {
      documents: [...documents.entries()].map(([p, d]) => ({
        path: p,
        sha256: d.sha256,
        size: d.body.length,
      })),
      serial,
      issuedAt: built.builtAt,
      ttlSeconds: this.opts.statementTtlSeconds,
      issuer: this.opts.issuer,
    });
    documents.set(STATEMENT_PATH, served(Buffer.from(jws + "\n"), "application/jose"));
    documents.set(
      JWKS_PATH,
      served(Buffer.from(JSON.stringify(this.keyring.jwks(), null, 1) + "\n"), "application/json"),
    );
    const gen: Generation = { serial, builtAt: built.builtAt, documents, files: built.files };
    this.current = gen; // the swap: one reference assignment
    const problems = built.dropped.map((d) => d.message);
    const known = new Set(this.currentProblems);
    for (const p of problems) if (!known.has(p)) this.opts.onProblem?.(p);
    this.currentProblems = problems;
    return gen;
  }
}
