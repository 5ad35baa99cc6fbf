import type { Knex } from "knex";
import { jsonColumn, now, type Tx } from "./knex-util.js";

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

/** Every product with every version (deleted ones flagged) and its items, as one consistent read. */
export type CatalogState = { product: ProductRecord; versions: VersionRecord[] }[];

/**
 * The image records: products, versions and their items, image pairs (one fingerprint is
 * published once), blobs in use and the combined hashes computed at upload.
 */
export interface ImageRecords {
  getProduct(key: ProductKey, tx?: Tx): Promise<ProductRecord | null>;
  listProducts(): Promise<ProductRecord[]>;
  /** Create the product or update its descriptive fields; returns its id. */
  upsertProduct(
    tx: Tx,
    p: ProductKey & { releaseTitle: string; aliases: string[]; requirements: Record<string, string> },
  ): Promise<number>;
  /** Replace a product's aliases (an admin moving an alias to another product). */
  setProductAliases(tx: Tx, productId: number, aliases: string[]): Promise<void>;

  getVersion(productId: number, name: string, tx?: Tx): Promise<VersionRecord | null>;
  listVersions(productId: number, includeDeleted?: boolean): Promise<VersionRecord[]>;
  insertVersion(
    tx: Tx,
    v: { productId: number; name: string; createdBy: string; contentDigest: string; items: ItemRecord[] },
  ): Promise<number>;
  markVersionDeleted(tx: Tx, versionId: number, by: string): Promise<void>;
  /** Adds a file to a published version (a delta the server made; the version's own files never change). */
  insertItem(tx: Tx, versionId: number, item: ItemRecord): Promise<void>;

  findPair(
    fingerprint: string,
    tx?: Tx,
  ): Promise<{ versionId: number; product: ProductKey; version: string } | null>;
  insertPairs(
    tx: Tx,
    versionId: number,
    pairs: { fingerprint: string; metaDigest: string; rootDigest: string; rootFtype: string }[],
  ): Promise<void>;

  /** Record a committed or published blob, marking it used now. */
  recordBlob(digest: string, size: number, tx?: Tx): Promise<void>;
  /** Mark blobs as used now (a client asked for them before publishing); unknown ones are skipped. */
  touchBlobs(digests: string[]): Promise<void>;
  /**
   * Of `digests` (every blob when undefined), those still needed: named by an item of a live
   * version, or of a version deleted after `cutoff`, or used (committed, asked for, published)
   * after `cutoff`. ISO times compare as strings.
   */
  neededBlobs(cutoff: string, digests?: string[]): Promise<Set<string>>;
  getBlob(digest: string, tx?: Tx): Promise<{ digest: string; size: number } | null>;
  /** Remember sha256(meta ‖ root), computed by the server while the root was uploaded. */
  recordCombined(metaDigest: string, rootDigest: string, sha256: string): Promise<void>;
  getCombined(metaDigest: string, rootDigest: string): Promise<string | null>;

  /** Every product with every version and its items, in one consistent read (inside `tx` if given). */
  snapshot(tx?: Tx): Promise<CatalogState>;
}

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

function toVersion(row: VersionRow, items: ItemRow[]): VersionRecord {
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

/** `ImageRecords` over knex (SQLite and PostgreSQL alike). */
export class KnexImageRecords implements ImageRecords {
  constructor(private readonly db: Knex) {}

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

  async setProductAliases(tx: Tx, productId: number, aliases: string[]): Promise<void> {
    await tx("products")
      .where({ id: productId })
      .update({ aliases: JSON.stringify(aliases), updated_at: now() });
  }

  async getVersion(productId: number, name: string, tx: Knex = this.db): Promise<VersionRecord | null> {
    const row = (await tx<VersionRow>("versions").where({ product_id: productId, name }).first()) as
      VersionRow | undefined;
    if (!row) return null;
    const items = (await tx<ItemRow>("items").where({ version_id: row.id }).orderBy("name")) as ItemRow[];
    return toVersion(row, items);
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
      toVersion(
        r,
        items.filter((i) => i.version_id === r.id),
      ),
    );
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
    if (v.items.length) {
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
    }
    return row.id;
  }

  async insertItem(tx: Tx, versionId: number, i: ItemRecord): Promise<void> {
    await tx("items").insert({
      version_id: versionId,
      name: i.name,
      ftype: i.ftype,
      blob_digest: i.digest,
      size: i.size,
      combined: JSON.stringify(i.combined),
      delta_base: i.deltaBase,
    });
  }

  async markVersionDeleted(tx: Tx, versionId: number, by: string): Promise<void> {
    await tx("versions").where({ id: versionId }).update({ deleted_at: now(), deleted_by: by });
    // The pair may be published again elsewhere once this version left the documents.
    await tx("image_pairs").where({ version_id: versionId }).delete();
  }

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

  async recordBlob(digest: string, size: number, tx: Knex = this.db): Promise<void> {
    const at = now();
    await tx("blobs")
      .insert({ digest, size, created_at: at, used_at: at })
      .onConflict("digest")
      .merge({ used_at: at });
  }

  async touchBlobs(digests: string[]): Promise<void> {
    if (digests.length) await this.db("blobs").whereIn("digest", digests).update({ used_at: now() });
  }

  async neededBlobs(cutoff: string, digests?: string[]): Promise<Set<string>> {
    const named = this.db("items")
      .join("versions", "versions.id", "items.version_id")
      .where((q) => q.whereNull("versions.deleted_at").orWhere("versions.deleted_at", ">", cutoff))
      .distinct("items.blob_digest as digest");
    const used = this.db("blobs").where("used_at", ">", cutoff).select("digest");
    if (digests) {
      named.whereIn("items.blob_digest", digests);
      used.whereIn("digest", digests);
    }
    const rows = [...((await named) as { digest: string }[]), ...((await used) as { digest: string }[])];
    return new Set(rows.map((r) => r.digest));
  }

  async getBlob(digest: string, tx: Knex = this.db): Promise<{ digest: string; size: number } | null> {
    const row = (await tx("blobs").where({ digest }).first()) as
      { digest: string; size: number | string } | undefined;
    return row ? { digest: row.digest, size: Number(row.size) } : null;
  }

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

  async snapshot(tx?: Tx): Promise<CatalogState> {
    const read = async (t: Knex): Promise<CatalogState> => {
      const products = ((await t<ProductRow>("products").orderBy("id")) as ProductRow[]).map(toProduct);
      const versions = (await t<VersionRow>("versions").orderBy("name")) as VersionRow[];
      const items = (await t<ItemRow>("items").orderBy("name")) as ItemRow[];
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
          .map((v) => toVersion(v, itemsBy.get(v.id) ?? [])),
      }));
    };
    // PostgreSQL's default isolation (read committed) would let each query see a different
    // commit: read the three tables in one repeatable-read snapshot.
    if (tx) return read(tx);
    const client = (this.db.client as { config: { client: string } }).config.client;
    if (client === "pg") {
      return this.db.transaction(read, { isolationLevel: "repeatable read", readOnly: true });
    }
    return this.db.transaction(read);
  }
}
