import { Counter, Gauge, Registry as PromRegistry } from "prom-client";
import type { MirrorStatus, MirrorStatusService } from "../registry/mirrors.js";
import type { PullThroughService, UpstreamStatus } from "../registry/pull-through.js";

/**
 * The process's Prometheus metrics (`GET /metrics`, text format, through prom-client). Mirror
 * figures are read from the catalog when scraped, so every replica reports the same; nothing here
 * runs on the read path.
 */
export interface Metrics {
  registry: PromRegistry;
}

export function createMetrics(deps: {
  mirrors: MirrorStatusService;
  pullThrough?: PullThroughService;
}): Metrics {
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
  if (deps.pullThrough) upstreamMetrics(registry, deps.pullThrough);
  return { registry };
}

/** The pull-through cache's counters (registry/pull-through.ts), this process's since it started. */
function upstreamMetrics(registry: PromRegistry, pt: PullThroughService): void {
  type Read = (s: UpstreamStatus) => number | null;
  const counters: [string, string, Read][] = [
    ["requests", "Requests made to the upstream", (s) => s.counters.upstreamRequests],
    ["bytes", "File bytes fetched from the upstream", (s) => s.counters.upstreamBytes],
    ["cache_hits", "Upstream files served from the store", (s) => s.counters.cacheHits],
    ["cache_misses", "Requests for upstream files not held yet", (s) => s.counters.cacheMisses],
    [
      "coalesced",
      "Requests that waited on an upstream fetch another request started",
      (s) => s.counters.coalesced,
    ],
  ];
  for (const [name, help, read] of counters) {
    new Counter({
      name: `lxhub_upstream_${name}_total`,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read(pt.status()) ?? 0);
      },
    });
  }
  new Counter({
    name: "lxhub_upstream_failures_total",
    help: "Upstream failures by kind",
    labelNames: ["kind"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [kind, n] of Object.entries(pt.status().counters.failures)) this.inc({ kind }, n);
    },
  });
  const gauges: [string, string, Read][] = [
    [
      "last_refresh_ok",
      "1 when the last refresh of the upstream products succeeded",
      (s) => (s.lastRefresh === null ? null : s.lastRefresh.ok ? 1 : 0),
    ],
    [
      "last_success_timestamp_seconds",
      "Last successful refresh of the upstream products (Unix time)",
      (s) => (s.lastSuccess ? Date.parse(s.lastSuccess) / 1000 : null),
    ],
    ["products", "Upstream products in the last good copy", (s) => s.products],
  ];
  for (const [name, help, read] of gauges) {
    new Gauge({
      name: `lxhub_upstream_${name}`,
      help,
      registers: [registry],
      collect() {
        this.reset();
        const v = read(pt.status());
        if (v !== null) this.set(v);
      },
    });
  }
}
