import knexFactory, { type Knex } from "knex";
import { migrationSource } from "./migrations.js";

/** Identity of a product: the four parts of its key `os:release:arch:variant`. */
export interface ProductKey {
  os: string;
  release: string;
  arch: string;
  variant: string;
}

export interface ProductRecord extends ProductKey {
  id: number;
  releaseTitle: string;
  aliases: string[];
  requirements: Record<string, string>;
  createdAt: string;
  updatedAt: string;
}

export interface ItemRecord {
  name: string;
  ftype: string;
  digest: string;
  size: number;
  combined: Record<string, string>;
  deltaBase: string | null;
}

export interface VersionRecord {
  id: number;
  productId: number;
  name: string;
  createdAt: string;
  createdBy: string;
  deletedAt: string | null;
  contentDigest: string;
  items: ItemRecord[];
}

export interface TokenRecord {
  id: string;
  subject: string;
  scopes: string[];
  createdAt: string;
  expiresAt: string;
  revokedAt: string | null;
}

export interface UploadSessionRecord {
  id: string;
  createdAt: string;
  createdBy: string;
  expiresAt: string;
}

export interface AuditEntry {
  actor: string;
  action: string;
  target: string;
  detail?: Record<string, unknown>;
}

export type CatalogConfig =
  { client: "sqlite"; filename: string } | { client: "pg"; connection: string | Knex.PgConnectionConfig };

/** A unit of work: every method of Catalog that writes takes one, so callers compose them atomically. */
export type Tx = Knex.Transaction;

const now = (): string => new Date().toISOString();

interface ProductRow {
  id: number;
  os: string;
  release: string;
  arch: string;
  variant: string;
  release_title: string;
  aliases: string;
  requirements: string;
  created_at: string;
  updated_at: string;
}
interface VersionRow {
  id: number;
  product_id: number;
  name: string;
  created_at: string;
  created_by: string;
  deleted_at: string | null;
  content_digest: string;
}
interface ItemRow {
  version_id: number;
  name: string;
  ftype: string;
  blob_digest: string;
  size: number | string;
  combined: string;
  delta_base: string | null;
}

/**
 * A JSON column as stored. A value that does not parse (written by hand or by an older version)
 * comes back as its raw text: the publish validator then leaves the record out of the documents
 * instead of a parse error stopping the server (registry/indexer.ts).
 */
function jsonColumn(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function toProduct(r: ProductRow): ProductRecord {
  return {
    id: r.id,
    os: r.os,
    release: r.release,
    arch: r.arch,
    variant: r.variant,
    releaseTitle: r.release_title,
    aliases: jsonColumn(r.aliases) as string[],
    requirements: jsonColumn(r.requirements) as Record<string, string>,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function toItem(r: ItemRow): ItemRecord {
  return {
    name: r.name,
    ftype: r.ftype,
    digest: r.blob_digest,
    size: Number(r.size),
    combined: jsonColumn(r.combined) as Record<string, string>,
    deltaBase: r.delta_base,
  };
}

/**
 * The catalog of records (products, versions, items, blobs in use, upload sessions, tokens,
 * audit log) over knex: SQLite by default, PostgreSQL when replicas share the work.
 * It stores and fetches records; it builds no documents and no HTTP answers.
 */
export class Catalog {
  private constructor(readonly db: Knex) {}

  static async open(config: CatalogConfig): Promise<Catalog> {
    const db =
      config.client === "sqlite"
        ? knexFactory({
            client: "better-sqlite3",
            connection: { filename: config.filename },
            useNullAsDefault: true,
            pool: {
              min: 1,
              max: 1,
              afterCreate(conn: { pragma(s: string): unknown }, done: (err: Error | null) => void) {
                // WAL: readers never block the writer; FULL sync: a committed publish survives a crash.
                conn.pragma("journal_mode = WAL");
                conn.pragma("synchronous = FULL");
                conn.pragma("foreign_keys = ON");
                conn.pragma("busy_timeout = 5000");
                done(null);
              },
            },
          })
        : knexFactory({ client: "pg", connection: config.connection, pool: { min: 0, max: 10 } });
    await db.migrate.latest({ migrationSource });
    return new Catalog(db);
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  /** Run `fn` in one transaction; everything it writes lands together or not at all. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(fn);
  }

  async ping(): Promise<void> {
    await this.db.raw("select 1");
  }

  // --- products -------------------------------------------------------------------------------

  async getProduct(key: ProductKey, tx: Knex = this.db): Promise<ProductRecord | null> {
    const row = (await tx<ProductRow>("products")
      .where({ os: key.os, release: key.release, arch: key.arch, variant: key.variant })
      .first()) as ProductRow | undefined;
    return row ? toProduct(row) : null;
  }

  async listProducts(): Promise<ProductRecord[]> {
    const rows = (await this.db<ProductRow>("products").orderBy([
      "os",
      "release",
      "arch",
      "variant",
    ])) as ProductRow[];
    return rows.map(toProduct);
  }

  /** Create the product or update its descriptive fields; returns its id. */
  async upsertProduct(
    tx: Tx,
    p: ProductKey & { releaseTitle: string; aliases: string[]; requirements: Record<string, string> },
  ): Promise<number> {
    const existing = await this.getProduct(p, tx);
    const fields = {
      release_title: p.releaseTitle,
      aliases: JSON.stringify(p.aliases),
      requirements: JSON.stringify(p.requirements),
      updated_at: now(),
    };
    if (existing) {
      await tx("products").where({ id: existing.id }).update(fields);
      return existing.id;
    }
    const [row] = (await tx("products")
      .insert({
        os: p.os,
        release: p.release,
        arch: p.arch,
        variant: p.variant,
        ...fields,
        created_at: now(),
      })
      .returning("id")) as { id: number }[];
    if (!row) throw new Error("insert into products returned no id");
    return row.id;
  }

  /** Replace a product's aliases (an admin moving an alias to another product). */
  async setProductAliases(tx: Tx, productId: number, aliases: string[]): Promise<void> {
    await tx("products")
      .where({ id: productId })
      .update({ aliases: JSON.stringify(aliases), updated_at: now() });
  }

  // --- versions -------------------------------------------------------------------------------

  async getVersion(productId: number, name: string, tx: Knex = this.db): Promise<VersionRecord | null> {
    const row = (await tx<VersionRow>("versions").where({ product_id: productId, name }).first()) as
      VersionRow | undefined;
    if (!row) return null;
    const items = (await tx<ItemRow>("items").where({ version_id: row.id }).orderBy("name")) as ItemRow[];
    return this.toVersion(row, items);
  }

  async listVersions(productId: number, includeDeleted = false): Promise<VersionRecord[]> {
    const q = this.db<VersionRow>("versions").where({ product_id: productId }).orderBy("name");
    if (!includeDeleted) q.whereNull("deleted_at");
    const rows = (await q) as VersionRow[];
    const items = rows.length
      ? ((await this.db<ItemRow>("items")
          .whereIn(
            "version_id",
            rows.map((r) => r.id),
          )
          .orderBy("name")) as ItemRow[])
      : [];
    return rows.map((r) =>
      this.toVersion(
        r,
        items.filter((i) => i.version_id === r.id),
      ),
    );
  }

  private toVersion(row: VersionRow, items: ItemRow[]): VersionRecord {
    return {
      id: row.id,
      productId: row.product_id,
      name: row.name,
      createdAt: row.created_at,
      createdBy: row.created_by,
      deletedAt: row.deleted_at,
      contentDigest: row.content_digest,
      items: items.map(toItem),
    };
  }

  async insertVersion(
    tx: Tx,
    v: { productId: number; name: string; createdBy: string; contentDigest: string; items: ItemRecord[] },
  ): Promise<number> {
    const [row] = (await tx("versions")
      .insert({
        product_id: v.productId,
        name: v.name,
        created_at: now(),
        created_by: v.createdBy,
        content_digest: v.contentDigest,
      })
      .returning("id")) as { id: number }[];
    if (!row) throw new Error("insert into versions returned no id");
    await tx("items").insert(
      v.items.map((i) => ({
        version_id: row.id,
        name: i.name,
        ftype: i.ftype,
        blob_digest: i.digest,
        size: i.size,
        combined: JSON.stringify(i.combined),
        delta_base: i.deltaBase,
      })),
    );
    return row.id;
  }

  async markVersionDeleted(tx: Tx, versionId: number, by: string): Promise<void> {
    await tx("versions").where({ id: versionId }).update({ deleted_at: now(), deleted_by: by });
    // The pair may be published again elsewhere once this version left the documents.
    await tx("image_pairs").where({ version_id: versionId }).delete();
  }

  // --- image pairs ----------------------------------------------------------------------------

  async findPair(
    fingerprint: string,
    tx: Knex = this.db,
  ): Promise<{ versionId: number; product: ProductKey; version: string } | null> {
    const row = (await tx("image_pairs")
      .join("versions", "versions.id", "image_pairs.version_id")
      .join("products", "products.id", "versions.product_id")
      .where("image_pairs.fingerprint", fingerprint)
      .first(
        "image_pairs.version_id as version_id",
        "products.os as os",
        "products.release as release",
        "products.arch as arch",
        "products.variant as variant",
        "versions.name as name",
      )) as
      | { version_id: number; os: string; release: string; arch: string; variant: string; name: string }
      | undefined;
    if (!row) return null;
    return {
      versionId: row.version_id,
      product: { os: row.os, release: row.release, arch: row.arch, variant: row.variant },
      version: row.name,
    };
  }

  async insertPairs(
    tx: Tx,
    versionId: number,
    pairs: { fingerprint: string; metaDigest: string; rootDigest: string; rootFtype: string }[],
  ): Promise<void> {
    if (!pairs.length) return;
    await tx("image_pairs").insert(
      pairs.map((p) => ({
        fingerprint: p.fingerprint,
        version_id: versionId,
        meta_digest: p.metaDigest,
        root_digest: p.rootDigest,
        root_ftype: p.rootFtype,
      })),
    );
  }

  // --- blobs ----------------------------------------------------------------------------------

  async recordBlob(digest: string, size: number, tx: Knex = this.db): Promise<void> {
    await tx("blobs").insert({ digest, size, created_at: now() }).onConflict("digest").ignore();
  }

  async getBlob(digest: string, tx: Knex = this.db): Promise<{ digest: string; size: number } | null> {
    const row = (await tx("blobs").where({ digest }).first()) as
      { digest: string; size: number | string } | undefined;
    return row ? { digest: row.digest, size: Number(row.size) } : null;
  }

  /** Remember sha256(meta ‖ root), computed by the server while the root was uploaded. */
  async recordCombined(metaDigest: string, rootDigest: string, sha256: string): Promise<void> {
    await this.db("combined_hashes")
      .insert({ meta_digest: metaDigest, root_digest: rootDigest, sha256 })
      .onConflict(["meta_digest", "root_digest"])
      .ignore();
  }

  async getCombined(metaDigest: string, rootDigest: string): Promise<string | null> {
    const row = (await this.db("combined_hashes")
      .where({ meta_digest: metaDigest, root_digest: rootDigest })
      .first("sha256")) as { sha256: string } | undefined;
    return row?.sha256 ?? null;
  }

  // --- stream snapshot --------------------------------------------------------------------------

  /** Every product with every version (deleted ones flagged) and its items, in one consistent read. */
  async snapshot(): Promise<{ product: ProductRecord; versions: VersionRecord[] }[]> {
    return this.db.transaction(async (tx) => {
      const products = ((await tx<ProductRow>("products").orderBy("id")) as ProductRow[]).map(toProduct);
      const versions = (await tx<VersionRow>("versions").orderBy("name")) as VersionRow[];
      const items = (await tx<ItemRow>("items").orderBy("name")) as ItemRow[];
      const itemsBy = new Map<number, ItemRow[]>();
      for (const i of items) {
        const list = itemsBy.get(i.version_id) ?? [];
        list.push(i);
        itemsBy.set(i.version_id, list);
      }
      return products.map((product) => ({
        product,
        versions: versions
          .filter((v) => v.product_id === product.id)
          .map((v) => this.toVersion(v, itemsBy.get(v.id) ?? [])),
      }));
    });
  }

  // --- upload sessions ------------------------------------------------------------------------

  async createUploadSession(s: UploadSessionRecord): Promise<void> {
    await this.db("upload_sessions").insert({
      id: s.id,
      created_at: s.createdAt,
      created_by: s.createdBy,
      expires_at: s.expiresAt,
    });
  }

  async getUploadSession(id: string): Promise<UploadSessionRecord | null> {
    const row = (await this.db("upload_sessions").where({ id }).first()) as
      { id: string; created_at: string; created_by: string; expires_at: string } | undefined;
    return row
      ? { id: row.id, createdAt: row.created_at, createdBy: row.created_by, expiresAt: row.expires_at }
      : null;
  }

  async touchUploadSession(id: string, expiresAt: string): Promise<void> {
    await this.db("upload_sessions").where({ id }).update({ expires_at: expiresAt });
  }

  async deleteUploadSession(id: string): Promise<void> {
    await this.db("upload_sessions").where({ id }).delete();
  }

  /** Ids of the sessions `owner` opened that have not expired at `at`. */
  async openUploadSessionsOf(owner: string, at: Date): Promise<string[]> {
    const rows = (await this.db("upload_sessions")
      .where({ created_by: owner })
      .andWhere("expires_at", ">", at.toISOString())
      .select("id")) as { id: string }[];
    return rows.map((r) => r.id);
  }

  async expiredUploadSessions(at: Date): Promise<string[]> {
    const rows = (await this.db("upload_sessions")
      .where("expires_at", "<", at.toISOString())
      .select("id")) as {
      id: string;
    }[];
    return rows.map((r) => r.id);
  }

  // --- tokens ---------------------------------------------------------------------------------

  async insertToken(t: TokenRecord): Promise<void> {
    await this.db("tokens").insert({
      id: t.id,
      subject: t.subject,
      scopes: JSON.stringify(t.scopes),
      created_at: t.createdAt,
      expires_at: t.expiresAt,
      revoked_at: t.revokedAt,
    });
  }

  async getToken(id: string): Promise<TokenRecord | null> {
    const row = (await this.db("tokens").where({ id }).first()) as
      | {
          id: string;
          subject: string;
          scopes: string;
          created_at: string;
          expires_at: string;
          revoked_at: string | null;
        }
      | undefined;
    return row
      ? {
          id: row.id,
          subject: row.subject,
          scopes: JSON.parse(row.scopes) as string[],
          createdAt: row.created_at,
          expiresAt: row.expires_at,
          revokedAt: row.revoked_at,
        }
      : null;
  }

  async revokeToken(id: string): Promise<boolean> {
    const n = await this.db("tokens").where({ id }).whereNull("revoked_at").update({ revoked_at: now() });
    return n > 0;
  }

  // --- audit log and counters -----------------------------------------------------------------

  async audit(e: AuditEntry, tx: Knex = this.db): Promise<void> {
    await tx("audit_log").insert({
      at: now(),
      actor: e.actor,
      action: e.action,
      target: e.target,
      detail: JSON.stringify(e.detail ?? {}),
    });
  }

  async auditLog(limit = 100): Promise<(AuditEntry & { at: string })[]> {
    const rows = (await this.db("audit_log").orderBy("id", "desc").limit(limit)) as {
      at: string;
      actor: string;
      action: string;
      target: string;
      detail: string;
    }[];
    return rows.map((r) => ({
      at: r.at,
      actor: r.actor,
      action: r.action,
      target: r.target,
      detail: JSON.parse(r.detail) as Record<string, unknown>,
    }));
  }

  /** Increment a named counter and return its new value (e.g. the statement serial). */
  async nextCounter(name: string, tx?: Tx): Promise<number> {
    const run = async (t: Knex): Promise<number> => {
      const row = (await t("counters").where({ name }).first()) as { value: number | string } | undefined;
      const value = (row ? Number(row.value) : 0) + 1;
      if (row) await t("counters").where({ name }).update({ value });
      else await t("counters").insert({ name, value });
      return value;
    };
    return tx ? run(tx) : this.db.transaction(run);
  }

  /** Count rows of the tables that record content (for tests that check nothing changed). */
  async counts(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const t of ["products", "versions", "items", "blobs", "image_pairs", "tokens"]) {
      const row = (await this.db(t).count({ n: "*" }).first()) as { n: number | string } | undefined;
      out[t] = Number(row?.n ?? 0);
    }
    return out;
  }
}
