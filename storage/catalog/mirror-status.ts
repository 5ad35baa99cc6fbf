import type { Knex } from "knex";

/**
 * The state of each scheduled mirror (`lxhub serve --mirrors`), one row per mirror name, shared by
 * every replica of the catalog: the last run's start, end and outcome, the last success, totals.
 */
export interface MirrorStatusRecord {
  name: string;
  upstream: string;
  running: boolean;
  lastStartedAt: string | null;
  lastFinishedAt: string | null;
  lastSuccessAt: string | null;
  lastError: string | null;
  lastErrorAt: string | null;
  /** Versions the last finished run added, retired, failed. */
  lastAdded: number;
  lastRetired: number;
  lastFailed: number;
  /** Bytes the last finished run downloaded from the upstream. */
  lastBytes: number;
  /** Live versions of the mirrored products after the last finished run. */
  versions: number;
  runsTotal: number;
  failuresTotal: number;
  bytesTotal: number;
}

/** What a finished run reports. */
export interface MirrorRunOutcome {
  at: string;
  /** null: the run succeeded (versions that failed verification are `failed`, not an error). */
  error: string | null;
  added: number;
  retired: number;
  failed: number;
  bytes: number;
  versions: number;
}

export interface MirrorStatusRecords {
  started(name: string, upstream: string, at: string): Promise<void>;
  finished(name: string, outcome: MirrorRunOutcome): Promise<void>;
  list(): Promise<MirrorStatusRecord[]>;
}

interface Row {
  name: string;
  upstream: string;
  running: number | boolean;
  last_started_at: string | null;
  last_finished_at: string | null;
  last_success_at: string | null;
  last_error: string | null;
  last_error_at: string | null;
  last_added: number;
  last_retired: number;
  last_failed: number;
  last_bytes: number | string;
  versions: number;
  runs_total: number;
  failures_total: number;
  bytes_total: number | string;
}

export class KnexMirrorStatusRecords implements MirrorStatusRecords {
  constructor(private readonly db: Knex) {}

  async started(name: string, upstream: string, at: string): Promise<void> {
    await this.db("mirror_status")
      .insert({ name, upstream, running: true, last_started_at: at })
      .onConflict("name")
      .merge({ upstream, running: true, last_started_at: at });
  }

  async finished(name: string, o: MirrorRunOutcome): Promise<void> {
    const failed = o.error !== null || o.failed > 0;
    await this.db("mirror_status")
      .where({ name })
      .update({
        running: false,
        last_finished_at: o.at,
        ...(o.error === null ? { last_success_at: o.at } : {}),
        ...(failed
          ? { last_error: o.error ?? `${o.failed} version(s) not mirrored`, last_error_at: o.at }
          : { last_error: null }),
        last_added: o.added,
        last_retired: o.retired,
        last_failed: o.failed,
        last_bytes: o.bytes,
        ...(o.error === null ? { versions: o.versions } : {}),
        runs_total: this.db.raw("runs_total + 1"),
        failures_total: this.db.raw(`failures_total + ${failed ? 1 : 0}`),
        bytes_total: this.db.raw("bytes_total + ?", [o.bytes]),
      });
  }

  async list(): Promise<MirrorStatusRecord[]> {
    const rows = (await this.db("mirror_status").orderBy("name")) as Row[];
    return rows.map((r) => ({
      name: r.name,
      upstream: r.upstream,
      running: Boolean(r.running),
      lastStartedAt: r.last_started_at,
      lastFinishedAt: r.last_finished_at,
      lastSuccessAt: r.last_success_at,
      lastError: r.last_error,
      lastErrorAt: r.last_error_at,
      lastAdded: r.last_added,
      lastRetired: r.last_retired,
      lastFailed: r.last_failed,
      lastBytes: Number(r.last_bytes),
      versions: r.versions,
      runsTotal: r.runs_total,
      failuresTotal: r.failures_total,
      bytesTotal: Number(r.bytes_total),
    }));
  }
}
