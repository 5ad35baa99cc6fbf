import type { Knex } from "knex";

/**
 * Catalog schema, one migration per step, applied in order by knex (never edit a released
 * step: add a new one). Works on SQLite and PostgreSQL.
 */
interface Migration {
  name: string;
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

const initial: Migration = {
  name: "0001_initial",
  async up(knex) {
    await knex.schema.createTable("products", (t) => {
      t.increments("id").primary();
      t.string("os", 128).notNullable();
      t.string("release", 128).notNullable();
      t.string("arch", 32).notNullable();
      t.string("variant", 128).notNullable();
      t.string("release_title", 256).notNullable();
      t.text("aliases").notNullable().defaultTo("[]"); // JSON array of strings
      t.text("requirements").notNullable().defaultTo("{}"); // JSON object string → string
      t.string("created_at", 32).notNullable();
      t.string("updated_at", 32).notNullable();
      t.unique(["os", "release", "arch", "variant"]);
    });
    await knex.schema.createTable("blobs", (t) => {
      t.string("digest", 71).primary(); // sha256:<hex>
      t.bigInteger("size").notNullable();
      t.string("created_at", 32).notNullable();
    });
    await knex.schema.createTable("versions", (t) => {
      t.increments("id").primary();
      t.integer("product_id").notNullable().references("products.id");
      t.string("name", 64).notNullable();
      t.string("created_at", 32).notNullable();
      t.string("created_by", 128).notNullable();
      t.string("deleted_at", 32).nullable();
      t.string("deleted_by", 128).nullable();
      t.string("content_digest", 71).notNullable(); // sha256 over the sorted (name, ftype, digest) list
      t.unique(["product_id", "name"]);
    });
    await knex.schema.createTable("items", (t) => {
      t.increments("id").primary();
      t.integer("version_id").notNullable().references("versions.id");
      t.string("name", 128).notNullable();
      t.string("ftype", 32).notNullable();
      t.string("blob_digest", 71).notNullable().references("blobs.digest");
      t.bigInteger("size").notNullable();
      t.text("combined").notNullable().defaultTo("{}"); // JSON: root ftype → hex
      t.string("delta_base", 64).nullable();
      t.unique(["version_id", "name"]);
      t.index(["blob_digest"]);
    });
    await knex.schema.createTable("image_pairs", (t) => {
      // Every (metadata, root) pair published anywhere: LXD fails on a fingerprint listed twice.
      t.string("fingerprint", 64).primary();
      t.integer("version_id").notNullable().references("versions.id");
      t.string("meta_digest", 71).notNullable();
      t.string("root_digest", 71).notNullable();
      t.string("root_ftype", 32).notNullable();
    });
    await knex.schema.createTable("upload_sessions", (t) => {
      t.string("id", 64).primary();
      t.string("created_at", 32).notNullable();
      t.string("created_by", 128).notNullable();
      t.string("expires_at", 32).notNullable();
    });
    await knex.schema.createTable("tokens", (t) => {
      t.string("id", 64).primary(); // the JWT's jti
      t.string("subject", 128).notNullable();
      t.text("scopes").notNullable(); // JSON array
      t.string("created_at", 32).notNullable();
      t.string("expires_at", 32).notNullable();
      t.string("revoked_at", 32).nullable();
    });
    await knex.schema.createTable("audit_log", (t) => {
      t.increments("id").primary();
      t.string("at", 32).notNullable();
      t.string("actor", 128).notNullable();
      t.string("action", 64).notNullable();
      t.string("target", 512).notNullable();
      t.text("detail").notNullable().defaultTo("{}");
    });
    await knex.schema.createTable("counters", (t) => {
      t.string("name", 64).primary();
      t.bigInteger("value").notNullable();
    });
  },
  async down(knex) {
    for (const t of [
      "counters",
      "audit_log",
      "tokens",
      "upload_sessions",
      "image_pairs",
      "items",
      "versions",
      "blobs",
      "products",
    ]) {
      await knex.schema.dropTableIfExists(t);
    }
  },
};

const combinedHashes: Migration = {
  name: "0002_combined_hashes",
  async up(knex) {
    // sha256(meta ‖ root) computed while the root file was uploaded, so publishing need not read it again.
    await knex.schema.createTable("combined_hashes", (t) => {
      t.string("meta_digest", 71).notNullable();
      t.string("root_digest", 71).notNullable();
      t.string("sha256", 64).notNullable();
      t.primary(["meta_digest", "root_digest"]);
    });
  },
  async down(knex) {
    await knex.schema.dropTableIfExists("combined_hashes");
  },
};

const sharedState: Migration = {
  name: "0003_shared_state",
  async up(knex) {
    // What replicas sharing one catalog must agree on: secrets (token secret, signing keys) and
    // the published generations (documents by content, one pointer to the current one).
    await knex.schema.createTable("secrets", (t) => {
      t.string("name", 128).primary();
      t.text("value").notNullable();
      t.string("created_at", 32).notNullable();
    });
    await knex.schema.createTable("documents", (t) => {
      t.string("sha256", 64).primary();
      t.string("content_type", 64).notNullable();
      t.binary("body").notNullable();
    });
    await knex.schema.createTable("generations", (t) => {
      t.bigInteger("serial").primary();
      t.string("built_at", 32).notNullable();
      t.text("problems").notNullable().defaultTo("[]");
    });
    await knex.schema.createTable("generation_documents", (t) => {
      t.bigInteger("serial").notNullable().references("generations.serial");
      t.string("path", 256).notNullable();
      t.string("sha256", 64).notNullable().references("documents.sha256");
      t.primary(["serial", "path"]);
      t.index(["sha256"]);
    });
    await knex.schema.createTable("generation_pointer", (t) => {
      t.integer("id").primary(); // always 1: one row
      t.bigInteger("serial").notNullable();
    });
  },
  async down(knex) {
    for (const t of ["generation_pointer", "generation_documents", "generations", "documents", "secrets"]) {
      await knex.schema.dropTableIfExists(t);
    }
  },
};

const prefixState: Migration = {
  name: "0004_upload_prefix_state",
  async up(knex) {
    // With replicas, the running sha256(prefix ‖ bytes so far) of a session opened with a prefix,
    // saved after each append so the next chunk may land on another replica (JSON, or null).
    await knex.schema.alterTable("upload_sessions", (t) => {
      t.text("prefix_state").nullable();
    });
  },
  async down(knex) {
    await knex.schema.alterTable("upload_sessions", (t) => {
      t.dropColumn("prefix_state");
    });
  },
};

const mirrorStatus: Migration = {
  name: "0005_mirror_status",
  async up(knex) {
    // One row per scheduled mirror (lxhub serve --mirrors): its last run and totals.
    await knex.schema.createTable("mirror_status", (t) => {
      t.string("name", 64).primary();
      t.text("upstream").notNullable();
      t.boolean("running").notNullable().defaultTo(false);
      t.string("last_started_at", 32).nullable();
      t.string("last_finished_at", 32).nullable();
      t.string("last_success_at", 32).nullable();
      t.text("last_error").nullable();
      t.string("last_error_at", 32).nullable();
      t.integer("last_added").notNullable().defaultTo(0);
      t.integer("last_retired").notNullable().defaultTo(0);
      t.integer("last_failed").notNullable().defaultTo(0);
      t.bigInteger("last_bytes").notNullable().defaultTo(0);
      t.integer("versions").notNullable().defaultTo(0);
      t.integer("runs_total").notNullable().defaultTo(0);
      t.integer("failures_total").notNullable().defaultTo(0);
      t.bigInteger("bytes_total").notNullable().defaultTo(0);
    });
  },
  async down(knex) {
    await knex.schema.dropTable("mirror_status");
  },
};

const blobUse: Migration = {
  name: "0006_blob_used_at",
  async up(knex) {
    // When a blob was last committed, asked for (HEAD before a push skips its upload) or
    // published: garbage collection spares blobs used within its grace period.
    await knex.schema.alterTable("blobs", (t) => {
      t.string("used_at", 32).nullable();
    });
    await knex("blobs").update({ used_at: knex.ref("created_at") });
  },
  async down(knex) {
    await knex.schema.alterTable("blobs", (t) => {
      t.dropColumn("used_at");
    });
  },
};

const MIGRATIONS: Migration[] = [initial, combinedHashes, sharedState, prefixState, mirrorStatus, blobUse];

/** knex migration source over the steps above (no files on disk to go missing). */
export const migrationSource: Knex.MigrationSource<Migration> = {
  async getMigrations() {
    return MIGRATIONS;
  },
  getMigrationName(m) {
    return m.name;
  },
  async getMigration(m) {
    return { up: m.up, down: m.down };
  },
};
