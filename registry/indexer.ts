import { createHash } from "node:crypto";
import { gzipSync } from "node:zlib";
import { buildDocuments } from "../simplestreams/builder.js";
import type { StreamProduct, StreamFile, PublishableFtype, RootFtype } from "../simplestreams/types.js";
import { signStatement } from "../signing/statement.js";
import type { Keyring } from "../signing/keyring.js";
import type { Catalog } from "../storage/catalog/catalog.js";
import { imageFilePath } from "./paths.js";

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

/**
 * Builds the simplestreams documents from the catalog, signs a statement over them and swaps
 * the whole generation in at once. Files are always in the blob store before the catalog names
 * them, so a generation never names a missing file.
 */
export class IndexService {
  private current: Generation | null = null;
  private building: Promise<Generation> | null = null;

  constructor(
    private readonly catalog: Catalog,
    private readonly keyring: Keyring,
    private readonly opts: { statementTtlSeconds: number; issuer: string },
  ) {}

  generation(): Generation | null {
    return this.current;
  }

  /**
   * Rebuild from the catalog. Concurrent callers share one build; a call made while a build
   * runs triggers exactly one more, so every committed change is in the generation it awaits.
   */
  async rebuild(): Promise<Generation> {
    if (this.building) {
      await this.building.catch(() => undefined);
      return this.rebuild();
    }
    this.building = this.build();
    try {
      return await this.building;
    } finally {
      this.building = null;
    }
  }

  private async build(): Promise<Generation> {
    const snapshot = await this.catalog.snapshot();
    const products: StreamProduct[] = [];
    const files = new Map<string, { digest: string; size: number }>();
    for (const { product, versions } of snapshot) {
      const live: StreamProduct["versions"] = [];
      for (const v of versions) {
        const streamFiles: StreamFile[] = v.items.map((i) => {
          const path = imageFilePath(product, v.name, i.name);
          files.set(path, { digest: i.digest, size: i.size });
          const f: StreamFile = {
            name: i.name,
            ftype: i.ftype as PublishableFtype,
            path,
            sha256: i.digest.slice("sha256:".length),
            size: i.size,
          };
          if (Object.keys(i.combined).length) f.combined = i.combined as Partial<Record<RootFtype, string>>;
          if (i.deltaBase) f.deltaBase = i.deltaBase;
          return f;
        });
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
    const now = new Date();
    const docs = buildDocuments(products, { updated: now });
    const documents = new Map<string, ServedDocument>();
    for (const [p, body] of docs.files) documents.set(p, served(body, "application/json"));
    const serial = await this.catalog.nextCounter("statement_serial");
    const jws = await signStatement(this.keyring, {
      documents: [...documents.entries()].map(([p, d]) => ({
        path: p,
        sha256: d.sha256,
        size: d.body.length,
      })),
      serial,
      issuedAt: now,
      ttlSeconds: this.opts.statementTtlSeconds,
      issuer: this.opts.issuer,
    });
    documents.set(STATEMENT_PATH, served(Buffer.from(jws + "\n"), "application/jose"));
    documents.set(
      JWKS_PATH,
      served(Buffer.from(JSON.stringify(this.keyring.jwks(), null, 1) + "\n"), "application/json"),
    );
    const gen: Generation = { serial, builtAt: now, documents, files };
    this.current = gen; // the swap: one reference assignment
    return gen;
  }
}
