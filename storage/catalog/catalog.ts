import knexFactory, { type Knex } from "knex";
import pg from "pg";
import { KnexAuditLog, KnexCounters, type AuditLog, type Counters } from "./audit.js";
import { KnexGenerationRecords, type GenerationRecords } from "./generations.js";
import { KnexImageRecords, type ImageRecords } from "./images.js";
import { LocalLocks, PgLocks, type Locks } from "./locks.js";
import { migrationSource } from "./migrations.js";
import { KnexSecretRecords, type SecretRecords } from "./secrets.js";
import { KnexMirrorStatusRecords, type MirrorStatusRecords } from "./mirror-status.js";
import { KnexTokenRecords, type TokenRecords } from "./tokens.js";
import { KnexUploadRecords, type UploadRecords } from "./uploads.js";
import type { Tx } from "./knex-util.js";

export type { AuditEntry, AuditLog, Counters } from "./audit.js";
export type { GenerationRecords, StoredDocument, StoredGeneration } from "./generations.js";
export type {
  CatalogState,
  ImageRecords,
  ItemRecord,
  ProductKey,
  ProductRecord,
  VersionRecord,
} from "./images.js";
export type { Locks } from "./locks.js";
export type { SecretRecords } from "./secrets.js";
export type { MirrorStatusRecord, MirrorStatusRecords, MirrorRunOutcome } from "./mirror-status.js";
export type { TokenRecord, TokenRecords } from "./tokens.js";
export type { UploadRecords, UploadSessionRecord } from "./uploads.js";
export type { Tx } from "./knex-util.js";

export type CatalogConfig = { client: "sqlite"; filename: string } | { client: "pg"; connection: string };

/** Channel on which a replica that moved the generation pointer tells the others (PostgreSQL). */
export const GENERATION_CHANNEL = "lxhub_generation";

/**
 * `--db` / LXHUB_DB: `postgres://user:pass@host:port/db` (or `postgresql://`), `sqlite:FILE`, or
 * nothing for `<data>/catalog.sqlite`. Throws a clear error for anything else.
 */
export function catalogConfigFromUrl(url: string | undefined, defaultSqliteFile: string): CatalogConfig {
  if (url === undefined || url === "") return { client: "sqlite", filename: defaultSqliteFile };
  if (/^postgres(ql)?:\/\//.test(url)) {
    try {
      new URL(url);
    } catch {
      throw new Error(`--db: not a valid PostgreSQL URL: ${describeCatalogUrl(url)}`);
    }
    return { client: "pg", connection: url };
  }
  if (url.startsWith("sqlite:")) {
    const filename = url.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
    if (!filename) throw new Error("--db: sqlite: needs a file name (sqlite:/var/lib/lxhub/catalog.sqlite)");
    return { client: "sqlite", filename };
  }
  throw new Error(
    `--db: expected postgres://… or sqlite:FILE, got ${JSON.stringify(describeCatalogUrl(url))}`,
  );
}

/** The URL with any password replaced, for logs and errors. */
export function describeCatalogUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ":***@");
  }
}

/**
 * The catalog of records over knex: SQLite by default (one process owns it), PostgreSQL when
 * replicas share the work (`shared`). It stores and fetches records, split by table group behind
 * one interface each; it builds no documents and no HTTP answers. Every group runs unchanged on
 * both databases (test/storage/catalog-conformance.ts).
 */
export class Catalog {
  readonly images: ImageRecords;
  readonly uploads: UploadRecords;
  readonly tokens: TokenRecords;
  readonly audit: AuditLog;
  readonly counters: Counters;
  readonly generations: GenerationRecords;
  readonly secrets: SecretRecords;
  readonly mirrors: MirrorStatusRecords;
  /** Mutual exclusion among every process of this catalog. */
  readonly locks: Locks;
  /** true when other processes may write the same catalog (PostgreSQL). */
  readonly shared: boolean;
  private listener: Listener | null = null;

  private constructor(
    readonly db: Knex,
    private readonly config: CatalogConfig,
  ) {
    this.images = new KnexImageRecords(db);
    this.uploads = new KnexUploadRecords(db);
    this.tokens = new KnexTokenRecords(db);
    this.audit = new KnexAuditLog(db);
    this.counters = new KnexCounters(db);
    this.generations = new KnexGenerationRecords(db);
    this.secrets = new KnexSecretRecords(db);
    this.mirrors = new KnexMirrorStatusRecords(db);
    this.shared = config.client === "pg";
    this.locks = config.client === "pg" ? new PgLocks(config.connection) : new LocalLocks();
  }

  get dialect(): "sqlite" | "pg" {
    return this.config.client;
  }

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
        : knexFactory({
            client: "pg",
            connection: config.connection,
            // Fail fast when the database is unreachable: /readyz answers, cached documents are served.
            acquireConnectionTimeout: 10_000,
            pool: { min: 0, max: 10 },
          });
    const catalog = new Catalog(db, config);
    try {
      // Replicas starting together migrate one at a time.
      await catalog.locks.withLock("lxhub:migrate", () => db.migrate.latest({ migrationSource }));
    } catch (err) {
      await catalog.close();
      throw err;
    }
    return catalog;
  }

  async close(): Promise<void> {
    await this.listener?.close();
    this.listener = null;
    await this.locks.close();
    await this.db.destroy();
  }

  /** Run `fn` in one transaction; everything it writes lands together or not at all. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.transaction(fn);
  }

  async ping(): Promise<void> {
    await this.db.raw("select 1");
  }

  /**
   * Within `tx`, tell every replica listening (`onGeneration`) once `tx` commits. PostgreSQL
   * delivers a NOTIFY at commit and drops it on rollback; with SQLite there is no one to tell.
   */
  async notifyGeneration(tx: Tx, serial: number): Promise<void> {
    if (this.config.client === "pg")
      await tx.raw("select pg_notify(?, ?)", [GENERATION_CHANNEL, String(serial)]);
  }

  /**
   * Call `fn` with the serial of each generation another replica publishes (PostgreSQL LISTEN,
   * reconnecting after a lost connection; `fn(null)` after a reconnect, when notices may have been
   * missed). No-op for SQLite.
   */
  onGeneration(fn: (serial: number | null) => void): void {
    if (this.config.client !== "pg" || this.listener) return;
    this.listener = new Listener(this.config.connection, GENERATION_CHANNEL, fn);
    this.listener.start();
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

/** A LISTEN connection that comes back after the database does. */
class Listener {
  private client: pg.Client | null = null;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly connection: string,
    private readonly channel: string,
    private readonly fn: (serial: number | null) => void,
  ) {}

  start(): void {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.connection });
    this.client = client;
    const retry = (): void => {
      if (this.closed || this.client !== client) return;
      this.client = null;
      client.end().catch(() => undefined);
      this.timer = setTimeout(() => this.start(), 1000);
      this.timer.unref();
    };
    client.on("error", retry);
    client.on("end", retry);
    client.on("notification", (n) => {
      if (n.channel !== this.channel) return;
      const serial = Number(n.payload);
      this.fn(Number.isSafeInteger(serial) ? serial : null);
    });
    client
      .connect()
      .then(() => client.query(`LISTEN ${this.channel}`))
      .then(() => this.fn(null))
      .catch(retry);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    const c = this.client;
    this.client = null;
    await c?.end().catch(() => undefined);
  }
}
