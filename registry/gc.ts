import type { BlobStore } from "../storage/blobs/store.js";
import type { Catalog } from "../storage/catalog/catalog.js";
import type { RegistryStats } from "./stats.js";
import { GC_SWEEP_LOCK } from "./uploads.js";

/** What one collection found and did. */
export interface GcReport {
  dryRun: boolean;
  graceSeconds: number;
  /** Blobs in the store when the run started. */
  scanned: number;
  /** Blobs kept because something needs them (see `GarbageCollector`). */
  kept: number;
  /** Blobs removed (or, in a dry run, that would be). */
  freed: { digest: string; size: number }[];
  freedBytes: number;
}

/** Blobs deleted per turn of the publish lock: publishes wait for one batch at most. */
const BATCH = 64;

/**
 * Online garbage collection of the blob store (any backend, either catalog): **mark** what is
 * needed — every blob named by a live version, by a version retired or deleted less than `grace`
 * ago (its files stay downloadable that long, so clients holding an older index get no 404), by
 * a delta, or used less than `grace` ago (committed by an upload, asked for with HEAD before a
 * push skipped its upload, published), plus what `extraNeeded` names (blobs the server holds for
 * other reasons: the metadata blobs open upload sessions hash as their prefix, a pull-through
 * cache's files) — then **sweep** the rest.
 *
 * It runs while pushes go on. The sweep takes the publish lock and the sweep lock one batch at a
 * time and checks each blob again under them before deleting: a publish either committed before
 * (its version names the blob, which is kept) or runs after (it finds the blob gone and is refused
 * with BLOB_UNKNOWN, publishing nothing), so no version ever names a collected blob. Uploads in
 * progress are not blobs yet; one that commits, or a client asking whether a blob is there before
 * skipping its upload, marks the blob used under the sweep lock, so it is young before any batch
 * can see it.
 */
export class GarbageCollector {
  constructor(
    private readonly catalog: Catalog,
    private readonly blobs: BlobStore,
    private readonly opts: {
      extraNeeded?: () => Set<string> | Promise<Set<string>>;
      stats?: RegistryStats;
    } = {},
  ) {}

  async run(o: { graceSeconds: number; dryRun?: boolean; now?: Date }): Promise<GcReport> {
    if (!Number.isFinite(o.graceSeconds) || o.graceSeconds < 0) {
      throw new RangeError(`grace must be a non-negative number of seconds (got ${o.graceSeconds})`);
    }
    const cutoff = (): string =>
      new Date((o.now ?? new Date()).getTime() - o.graceSeconds * 1000).toISOString();
    const report: GcReport = {
      dryRun: o.dryRun === true,
      graceSeconds: o.graceSeconds,
      scanned: 0,
      kept: 0,
      freed: [],
      freedBytes: 0,
    };
    const needed = await this.catalog.images.neededBlobs(cutoff());
    const extra = async (): Promise<Set<string>> => (await this.opts.extraNeeded?.()) ?? new Set<string>();
    const extraAtStart = await extra();
    const candidates: { digest: string; size: number }[] = [];
    for await (const b of this.blobs.list()) {
      report.scanned++;
      if (needed.has(b.digest) || extraAtStart.has(b.digest)) report.kept++;
      else candidates.push(b);
    }
    for (let i = 0; i < candidates.length; i += BATCH) {
      const batch = candidates.slice(i, i + BATCH);
      const freed = o.dryRun
        ? batch
        : await this.catalog.locks.withLock("lxhub:publish", () =>
            this.catalog.locks.withLock(GC_SWEEP_LOCK, async () => {
              // Under the lock no publish runs: what it committed is visible now, and the next one
              // checks the store after this batch is gone.
              const still = await this.catalog.images.neededBlobs(
                cutoff(),
                batch.map((b) => b.digest),
              );
              const more = await extra();
              const out: typeof batch = [];
              for (const b of batch) {
                if (still.has(b.digest) || more.has(b.digest)) continue;
                if (await this.blobs.delete(b.digest)) out.push(b);
              }
              return out;
            }),
          );
      report.kept += batch.length - freed.length;
      for (const b of freed) {
        report.freed.push(b);
        report.freedBytes += b.size;
      }
    }
    const stats = this.opts.stats;
    if (stats && !report.dryRun) {
      stats.gcRuns++;
      stats.gcFreedBlobs += report.freed.length;
      stats.gcFreedBytes += report.freedBytes;
      stats.lastGcAt = Date.now();
    }
    return report;
  }
}
