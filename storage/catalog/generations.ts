import type { Knex } from "knex";
import { jsonColumn, type Tx } from "./knex-util.js";

/** One served document of a generation (index, products, signed statement, JWKS). */
export interface StoredDocument {
  /** Path relative to the mirror root, e.g. `streams/v1/index.json`. */
  path: string;
  /** Hex sha256 of body: documents are stored once by content. */
  sha256: string;
  contentType: string;
  body: Buffer;
}

/** A signed set of documents, as every replica serves it. */
export interface StoredGeneration {
  serial: number;
  builtAt: string;
  /** Catalog records the build left out, in words. */
  problems: string[];
  documents: StoredDocument[];
}

/**
 * The published generations: their documents stored by content, and one pointer to the current
 * one. The pointer moves in the transaction that commits the change the generation shows, so a
 * generation is current exactly when its records are committed; replicas load it from here.
 */
export interface GenerationRecords {
  /** Store `gen` and point at it, within `tx`; keeps the newest `keep` generations. */
  save(tx: Tx, gen: StoredGeneration, keep: number): Promise<void>;
  /** Serial of the current generation (0 when none was saved). */
  currentSerial(tx?: Tx): Promise<number>;
  /** The current generation with its documents, or null. */
  current(): Promise<StoredGeneration | null>;
}

export class KnexGenerationRecords implements GenerationRecords {
  constructor(private readonly db: Knex) {}

  async save(tx: Tx, gen: StoredGeneration, keep: number): Promise<void> {
    for (const d of gen.documents) {
      await tx("documents")
        .insert({ sha256: d.sha256, content_type: d.contentType, body: d.body })
        .onConflict("sha256")
        .ignore();
    }
    await tx("generations").insert({
      serial: gen.serial,
      built_at: gen.builtAt,
      problems: JSON.stringify(gen.problems),
    });
    await tx("generation_documents").insert(
      gen.documents.map((d) => ({ serial: gen.serial, path: d.path, sha256: d.sha256 })),
    );
    await tx("generation_pointer").insert({ id: 1, serial: gen.serial }).onConflict("id").merge();
    // Older generations go, and the documents only they named.
    const old = tx("generations")
      .where("serial", "<=", gen.serial - keep)
      .select("serial");
    await tx("generation_documents").whereIn("serial", old).delete();
    await tx("generations")
      .where("serial", "<=", gen.serial - keep)
      .delete();
    await tx("documents").whereNotIn("sha256", tx("generation_documents").distinct("sha256")).delete();
  }

  async currentSerial(tx: Knex = this.db): Promise<number> {
    const row = (await tx("generation_pointer").where({ id: 1 }).first("serial")) as
      { serial: number | string } | undefined;
    return row ? Number(row.serial) : 0;
  }

  async current(): Promise<StoredGeneration | null> {
    const client = (this.db.client as { config: { client: string } }).config.client;
    const read = async (tx: Tx): Promise<StoredGeneration | null> => {
      const serial = await this.currentSerial(tx);
      if (serial === 0) return null;
      const gen = (await tx("generations").where({ serial }).first()) as
        { serial: number | string; built_at: string; problems: string } | undefined;
      if (!gen) throw new Error(`the generation pointer names serial ${serial}, which is not stored`);
      const docs = (await tx("generation_documents as g")
        .join("documents as d", "d.sha256", "g.sha256")
        .where("g.serial", serial)
        .orderBy("g.path")
        .select(
          "g.path as path",
          "d.sha256 as sha256",
          "d.content_type as content_type",
          "d.body as body",
        )) as {
        path: string;
        sha256: string;
        content_type: string;
        body: Buffer;
      }[];
      const problems = jsonColumn(gen.problems);
      return {
        serial,
        builtAt: gen.built_at,
        problems: Array.isArray(problems) ? problems.map(String) : [],
        documents: docs.map((d) => ({
          path: d.path,
          sha256: d.sha256,
          contentType: d.content_type,
          body: Buffer.from(d.body),
        })),
      };
    };
    return client === "pg"
      ? this.db.transaction(read, { isolationLevel: "repeatable read", readOnly: true })
      : this.db.transaction(read);
  }
}
