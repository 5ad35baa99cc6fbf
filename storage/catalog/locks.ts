import pg from "pg";
import { KeyedQueue } from "../queue.js";

/**
 * Named mutual exclusion among every process that shares the catalog. With SQLite one process
 * owns the catalog, so an in-process queue is enough; with PostgreSQL a session advisory lock,
 * held on a connection of its own, spans replicas and is released by the server when the holder's
 * connection ends (a killed replica never leaves a lock behind).
 */
export interface Locks {
  /** Run `fn` holding `name`; waits for the holder. */
  withLock<T>(name: string, fn: () => Promise<T>): Promise<T>;
  /** Run `fn` holding `name` if it is free now; `{ held: true }` without running it otherwise. */
  tryLock<T>(name: string, fn: () => Promise<T>): Promise<{ held: false; value: T } | { held: true }>;
  close(): Promise<void>;
}

/** FIFO queue per name, in this process. */
export class LocalLocks implements Locks {
  private readonly queue = new KeyedQueue();

  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.queue.run(name, fn);
  }

  async tryLock<T>(name: string, fn: () => Promise<T>): Promise<{ held: false; value: T } | { held: true }> {
    if (this.queue.busy(name)) return { held: true };
    return { held: false, value: await this.withLock(name, fn) };
  }

  async close(): Promise<void> {}
}

/**
 * PostgreSQL session advisory locks (`pg_advisory_lock(hashtextextended(name, 0))`), layered on
 * the in-process queue so waiters of one process hold one connection between them. Locks named
 * `lxhub:…` (publish, index, keys, migrations) take their connections from a pool of their own,
 * so many long-held locks of other names (one per upload being written) never starve them.
 * Connections per replica: `system` + `others` (+ knex's pool and one LISTEN connection).
 */
export class PgLocks implements Locks {
  private readonly local = new LocalLocks();
  private readonly systemPool: pg.Pool;
  private readonly otherPool: pg.Pool;

  constructor(
    connectionString: string,
    sizes: { system: number; others: number } = { system: 4, others: 16 },
  ) {
    const make = (max: number): pg.Pool => {
      const pool = new pg.Pool({ connectionString, max, idleTimeoutMillis: 30_000 });
      // A connection that dies while idle must not crash the process; the next lock opens a new one.
      pool.on("error", () => undefined);
      return pool;
    };
    this.systemPool = make(sizes.system);
    this.otherPool = make(sizes.others);
  }

  private poolFor(name: string): pg.Pool {
    return name.startsWith("lxhub:") ? this.systemPool : this.otherPool;
  }

  withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.local.withLock(name, async () => {
      const got = await this.holding(name, "select pg_advisory_lock(hashtextextended($1, 0)) as ok", fn);
      if (got.held) throw new Error(`advisory lock ${name} was not granted`); // pg_advisory_lock waits: never
      return got.value;
    });
  }

  async tryLock<T>(name: string, fn: () => Promise<T>): Promise<{ held: false; value: T } | { held: true }> {
    const local = await this.local.tryLock(name, () =>
      this.holding(name, "select pg_try_advisory_lock(hashtextextended($1, 0)) as ok", fn),
    );
    return local.held ? local : local.value;
  }

  /**
   * On a connection of its own: take the lock with `take` (which answers `ok`), run `fn`, unlock.
   * A connection whose unlock failed (or that errored) is closed rather than pooled: ending the
   * session releases whatever it held.
   */
  private async holding<T>(
    name: string,
    take: string,
    fn: () => Promise<T>,
  ): Promise<{ held: false; value: T } | { held: true }> {
    const conn = await this.poolFor(name).connect();
    let broken = false;
    const onError = (): void => {
      broken = true;
    };
    conn.on("error", onError);
    try {
      const r = await conn.query<{ ok: boolean | null }>(take, [name]);
      // pg_advisory_lock returns void (null); pg_try_advisory_lock returns whether it got it.
      if (r.rows[0]?.ok === false) return { held: true };
      try {
        return { held: false, value: await fn() };
      } finally {
        await conn.query("select pg_advisory_unlock(hashtextextended($1, 0))", [name]).catch(() => {
          broken = true;
        });
      }
    } finally {
      conn.off("error", onError);
      conn.release(broken ? true : undefined);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.systemPool.end(), this.otherPool.end()]);
  }
}
