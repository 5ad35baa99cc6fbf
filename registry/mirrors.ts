import type { Catalog, MirrorRunOutcome, MirrorStatusRecord } from "../storage/catalog/catalog.js";

/** A scheduled mirror's status as the API and the metrics show it. */
export interface MirrorStatus extends MirrorStatusRecord {
  /** Seconds since the last successful run (null: none yet): how far behind the upstream the copy may be. */
  lagSeconds: number | null;
}

/**
 * Status of the mirrors `lxhub serve --mirrors` runs on a schedule, kept in the catalog so every
 * replica reports the same (the run itself is the client's `mirror`, wired in `cli/`).
 */
export class MirrorStatusService {
  constructor(private readonly catalog: Catalog) {}

  started(name: string, upstream: string, at = new Date()): Promise<void> {
    return this.catalog.mirrors.started(name, upstream, at.toISOString());
  }

  finished(name: string, outcome: MirrorRunOutcome): Promise<void> {
    return this.catalog.mirrors.finished(name, outcome);
  }

  async list(now = new Date()): Promise<MirrorStatus[]> {
    return (await this.catalog.mirrors.list()).map((r) => ({
      ...r,
      lagSeconds: r.lastSuccessAt
        ? Math.max(0, Math.round((now.getTime() - Date.parse(r.lastSuccessAt)) / 1000))
        : null,
    }));
  }
}
