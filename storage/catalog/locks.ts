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
      const conn = await this.poolFor(name).connect();
      let broken = false;
      const onError = (): void => {
        broken = true;
      };
      conn.on("error", onError);
      try {
        await conn.query("select pg_advisory_lock(hashtextextended($1, 0))", [name]);
        try {
          return await fn();
        } finally {
          await conn.query("select pg_advisory_unlock(hashtextextended($1, 0))", [name]).catch(() => {
            broken = true;
          });
        }
      } finally {
        conn.off("error", onError);
        // A connection whose unlock failed is closed: ending the session releases the lock.
        conn.release(broken ? true : undefined);
      }
    });
  }

  async tryLock<T>(name: string, fn: () => Promise<T>): Promise<{ held: false; value: T } | { held: true }> {
    const local = await this.local.tryLock(name, async () => {
      const conn = await this.poolFor(name).connect();
      let broken = false;
      conn.on("error", () => (broken = true));
      try {
        const r = await conn.query<{ ok: boolean }>(
          "select pg_try_advisory_lock(hashtextextended($1, 0)) as ok",
          [name],
        );
        if (!r.rows[0]?.ok) return { held: true as const };
        try {
          return { held: false as const, value: await fn() };
        } finally {
          await conn.query("select pg_advisory_unlock(hashtextextended($1, 0))", [name]).catch(() => {
            broken = true;
          });
        }
      } finally {
        conn.release(broken ? true : undefined);
      }
    });
    return local.held ? local : local.value;
  }

  async close(): Promise<void> {
    await Promise.all([this.systemPool.end(), this.otherPool.end()]);
  }
}
