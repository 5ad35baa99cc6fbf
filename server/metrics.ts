import { Counter, Gauge, Registry as PromRegistry } from "prom-client";
import type { MirrorStatus, MirrorStatusService } from "../registry/mirrors.js";
import type { PullThroughService, UpstreamStatus } from "../registry/pull-through.js";
import type { Generation } from "../registry/indexer.js";
import type { RegistryStats } from "../registry/stats.js";

/**
 * The process's Prometheus metrics (`GET /metrics`, text format, through prom-client). Mirror
 * figures are read from the catalog when scraped, so every replica reports the same. On the read
 * path only `observeRequest` runs, once per answer after it finished: two map updates; prom-client
 * sees the numbers only when scraped.
 */
export interface Metrics {
  registry: PromRegistry;
  /** Counts a finished request (called from the access log's finish handler: a map update, no more). */
  observeRequest(url: string, status: number, bytes: number): void;
  /** Counts an API error answer by its code. */
  observeError(code: string): void;
}

/**
 * The route a request path belongs to, from a fixed set (a bounded label): documents, files,
 * each API resource, the operators' endpoints.
 */
export function routeOf(url: string): string {
  // The common paths by prefix, without a regular expression or an allocation.
  if (url.startsWith("/streams/") || url.startsWith("/.well-known/") || url.startsWith("/meta/")) {
    return "documents";
  }
  if (url.startsWith("/images/")) return url.length === 8 || url[8] === "?" ? "catalog" : "files";
  if (url.startsWith("/blobs/")) return "blobs";
  if (url.startsWith("/upstream/")) return "upstream";
  if (url.startsWith("/api/v1/")) {
    const end = url.slice(8).search(/[/?]/);
    const resource = end < 0 ? url.slice(8) : url.slice(8, 8 + end);
    return API_RESOURCES.has(resource) ? `api_${resource}` : "other";
  }
  // Anything else (rare: doubled slashes, the catalog, health, metrics) the slow way.
  const p = url.replace(/[?#].*$/, "").replace(/\/{2,}/g, "/");
  if (p === "/" || p === "/images" || p === "/images/") return "catalog";
  if (p !== url) return routeOf(p);
  const m = /^\/(healthz|readyz|metrics|catalog\.css|catalog\.js)$/.exec(p);
  return m ? (m[1] as string).replace(".", "_") : "other";
}

/** API resources, the second segment of `/api/v1/…` (a closed set: labels stay bounded). */
const API_RESOURCES = new Set([
  "uploads",
  "blobs",
  "products",
  "tokens",
  "mirrors",
  "upstream",
  "prune",
  "gc",
]);

export function createMetrics(deps: {
  mirrors: MirrorStatusService;
  pullThrough?: PullThroughService;
  stats?: RegistryStats;
  /** The generation served now and the statement's lifetime, for the serial and expiry gauges. */
  index?: { generation(): Generation | null };
  statementTtlSeconds?: number;
}): Metrics {
  const registry = new PromRegistry();
  /** route → status → count: two lookups per answer, no string built. */
  const requests = new Map<string, Map<number, number>>();
  const bytesByRoute = new Map<string, number>();
  const errors = new Map<string, number>();
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
  new Counter({
    name: "lxhub_http_requests_total",
    help: "Requests answered, by route and status",
    labelNames: ["route", "status"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [route, byStatus] of requests) {
        for (const [status, n] of byStatus) this.inc({ route, status: String(status) }, n);
      }
    },
  });
  new Counter({
    name: "lxhub_http_response_bytes_total",
    help: "Bytes sent in answers (headers included), by route",
    labelNames: ["route"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [route, n] of bytesByRoute) this.inc({ route }, n);
    },
  });
  new Counter({
    name: "lxhub_api_errors_total",
    help: "API answers with an error, by its code (refusals: 4xx; failures: 5xx)",
    labelNames: ["code"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [code, n] of errors) this.inc({ code }, n);
    },
  });
  if (deps.stats) statsMetrics(registry, deps.stats);
  if (deps.index) {
    const index = deps.index;
    const ttl = deps.statementTtlSeconds ?? 0;
    new Gauge({
      name: "lxhub_index_serial",
      help: "Serial of the signed generation served",
      registers: [registry],
      collect() {
        this.reset();
        const g = index.generation();
        if (g) this.set(g.serial);
      },
    });
    new Gauge({
      name: "lxhub_statement_expiry_timestamp_seconds",
      help: "When the served signed statement expires (Unix time); it is re-signed at a quarter of its life",
      registers: [registry],
      collect() {
        this.reset();
        const g = index.generation();
        if (g) this.set(g.builtAt.getTime() / 1000 + ttl);
      },
    });
    new Gauge({
      name: "lxhub_served_bytes",
      help: "Bytes of every file the served documents name (each blob once), retired versions' included",
      registers: [registry],
      collect() {
        this.reset();
        const g = index.generation();
        if (!g) return;
        const seen = new Map<string, number>();
        for (const f of g.files.values()) seen.set(f.digest, f.size);
        let total = 0;
        for (const n of seen.values()) total += n;
        this.set(total);
      },
    });
  }
  return {
    registry,
    observeRequest(url, status, bytes) {
      const route = routeOf(url);
      let byStatus = requests.get(route);
      if (!byStatus) requests.set(route, (byStatus = new Map()));
      byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
      bytesByRoute.set(route, (bytesByRoute.get(route) ?? 0) + bytes);
    },
    observeError(code) {
      errors.set(code, (errors.get(code) ?? 0) + 1);
    },
  };
}

/** The registry's counters (registry/stats.ts): publishes, index builds, uploads, deltas, GC. */
function statsMetrics(registry: PromRegistry, stats: RegistryStats): void {
  const counters: [string, string, () => number][] = [
    ["lxhub_publishes_total", "Versions published", () => stats.published],
    ["lxhub_index_builds_total", "Generations built, signed and swapped in", () => stats.indexBuilds],
    [
      "lxhub_index_build_seconds_total",
      "Time spent building, signing and committing generations",
      () => stats.indexBuildSeconds,
    ],
    ["lxhub_upload_bytes_total", "Bytes written into upload sessions", () => stats.uploadBytes],
    [
      "lxhub_upload_sessions_committed_total",
      "Upload sessions committed into blobs",
      () => stats.uploadCommits,
    ],
    ["lxhub_deltas_total", "Deltas made and listed", () => stats.deltas],
    ["lxhub_gc_runs_total", "Garbage collections finished", () => stats.gcRuns],
    ["lxhub_gc_freed_blobs_total", "Blobs garbage collection deleted", () => stats.gcFreedBlobs],
    ["lxhub_gc_freed_bytes_total", "Bytes garbage collection freed", () => stats.gcFreedBytes],
  ];
  for (const [name, help, read] of counters) {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }
  const gauges: [string, string, () => number | null][] = [
    [
      "lxhub_index_last_build_seconds",
      "Time the last generation took to build, sign and commit",
      () => stats.lastIndexBuildSeconds,
    ],
    [
      "lxhub_gc_last_run_timestamp_seconds",
      "End of the last garbage collection (Unix time)",
      () => (stats.lastGcAt === null ? null : stats.lastGcAt / 1000),
    ],
  ];
  for (const [name, help, read] of gauges) {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        const v = read();
        if (v !== null) this.set(v);
      },
    });
  }
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
