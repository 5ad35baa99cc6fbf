import type { Knex } from "knex";
import { now, type Tx } from "./knex-util.js";

export interface AuditEntry {
  actor: string;
  action: string;
  target: string;
  detail?: Record<string, unknown>;
}

/** Who did what, appended in the transaction of the change it records when there is one. */
export interface AuditLog {
  record(e: AuditEntry, tx?: Tx): Promise<void>;
  /** Newest first. */
  recent(limit?: number): Promise<(AuditEntry & { at: string })[]>;
}

/** Named counters that several processes may increment at once without losing a step. */
export interface Counters {
  /** Increment a named counter and return its new value, in one statement (e.g. the statement serial). */
  next(name: string, tx?: Tx): Promise<number>;
  /** Current value (0 when never incremented). */
  get(name: string, tx?: Tx): Promise<number>;
}

export class KnexAuditLog implements AuditLog {
  constructor(private readonly db: Knex) {}

  async record(e: AuditEntry, tx: Knex = this.db): Promise<void> {
    await tx("audit_log").insert({
      at: now(),
      actor: e.actor,
      action: e.action,
      target: e.target,
      detail: JSON.stringify(e.detail ?? {}),
    });
  }

  async recent(limit = 100): Promise<(AuditEntry & { at: string })[]> {
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
}

export class KnexCounters implements Counters {
  constructor(private readonly db: Knex) {}

  async next(name: string, tx: Knex = this.db): Promise<number> {
    // One upsert: the row lock (PostgreSQL) or the write lock (SQLite) orders concurrent callers,
    // so two processes never get the same value.
    const rows = (await tx("counters")
      .insert({ name, value: 1 })
      .onConflict("name")
      .merge({ value: tx.raw("?? + 1", ["counters.value"]) })
      .returning("value")) as { value: number | string }[];
    const v = rows[0]?.value;
    if (v === undefined) throw new Error(`counter ${name} returned no value`);
    return Number(v);
  }

  async get(name: string, tx: Knex = this.db): Promise<number> {
    const row = (await tx("counters").where({ name }).first("value")) as
      { value: number | string } | undefined;
    return row ? Number(row.value) : 0;
  }
}
