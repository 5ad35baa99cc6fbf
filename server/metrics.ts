import { Counter, Gauge, Registry as PromRegistry } from "prom-client";
import type { MirrorStatus, MirrorStatusService } from "../registry/mirrors.js";

/**
 * The process's Prometheus metrics (`GET /metrics`, text format, through prom-client). Mirror
 * figures are read from the catalog when scraped, so every replica reports the same; nothing here
 * runs on the read path.
 */
export interface Metrics {
  registry: PromRegistry;
}

export function createMetrics(deps: { mirrors: MirrorStatusService }): Metrics {
  const registry = new PromRegistry();
  let snapshot: Promise<MirrorStatus[]> | null = null;
  // One catalog read per scrape, shared by every mirror metric.
  const statuses = (): Promise<MirrorStatus[]> => {
    snapshot ??= deps.mirrors.list().finally(() => setImmediate(() => (snapshot = null)));
    return snapshot;
  };
  const labelNames = ["mirror"] as const;
  const gauge = (name: string, help: string, value: (s: MirrorStatus) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        this.reset();
        for (const s of await statuses()) {
          const v = value(s);
          if (v !== null) this.set({ mirror: s.name }, v);
        }
      },
    });
  const counter = (name: string, help: string, value: (s: MirrorStatus) => number) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        this.reset();
        for (const s of await statuses()) this.inc({ mirror: s.name }, value(s));
      },
    });
  const seconds = (iso: string | null) => (iso ? Date.parse(iso) / 1000 : null);

  gauge(
    "lxhub_mirror_last_success_timestamp_seconds",
    "End of the mirror's last successful run (Unix time)",
    (s) => seconds(s.lastSuccessAt),
  );
  gauge("lxhub_mirror_lag_seconds", "Seconds since the mirror's last successful run", (s) => s.lagSeconds);
  gauge("lxhub_mirror_last_run_ok", "1 when the mirror's last finished run succeeded, else 0", (s) =>
    s.lastFinishedAt === null ? null : s.lastError === null ? 1 : 0,
  );
  gauge("lxhub_mirror_running", "1 while a run of the mirror is in progress", (s) => (s.running ? 1 : 0));
  gauge(
    "lxhub_mirror_versions",
    "Live versions of the mirrored products after the last successful run",
    (s) => s.versions,
  );
  gauge("lxhub_mirror_last_run_added_versions", "Versions the last finished run added", (s) => s.lastAdded);
  gauge(
    "lxhub_mirror_last_run_failed_versions",
    "Versions the last finished run could not mirror",
    (s) => s.lastFailed,
  );
  counter("lxhub_mirror_runs_total", "Finished runs of the mirror", (s) => s.runsTotal);
  counter("lxhub_mirror_failures_total", "Runs that failed or left versions out", (s) => s.failuresTotal);
  counter(
    "lxhub_mirror_downloaded_bytes_total",
    "Bytes the mirror downloaded from its upstream",
    (s) => s.bytesTotal,
  );
  return { registry };
}
