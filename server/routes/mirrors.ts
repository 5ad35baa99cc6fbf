import type { MirrorStatus } from "../../registry/mirrors.js";
import type { Route } from "./route.js";

function statusJson(s: MirrorStatus): Record<string, unknown> {
  return {
    name: s.name,
    upstream: s.upstream,
    running: s.running,
    last_started_at: s.lastStartedAt,
    last_finished_at: s.lastFinishedAt,
    last_success_at: s.lastSuccessAt,
    last_error: s.lastError,
    last_error_at: s.lastErrorAt,
    lag_seconds: s.lagSeconds,
    last_run: { added: s.lastAdded, retired: s.lastRetired, failed: s.lastFailed, bytes: s.lastBytes },
    versions: s.versions,
    runs_total: s.runsTotal,
    failures_total: s.failuresTotal,
    bytes_total: s.bytesTotal,
  };
}

/** What operators watch: the scheduled mirrors' status, and the Prometheus metrics. */
export const mirrorRoutes: readonly Route[] = [
  {
    method: "GET",
    path: "/api/v1/mirrors",
    operationId: "listMirrors",
    auth: "none",
    body: "none",
    answers: [200],
    errors: ["STORAGE_UNAVAILABLE"],
    headers: [],
    async handle({ res, deps }) {
      res.json({ mirrors: (await deps.mirrors.list()).map(statusJson) });
    },
  },
  {
    method: "GET",
    path: "/metrics",
    operationId: "metrics",
    auth: "none",
    body: "none",
    answers: [200],
    errors: ["STORAGE_UNAVAILABLE"],
    headers: [],
    async handle({ res, deps }) {
      const m = deps.metrics;
      const body = m ? await m.registry.metrics() : "";
      res.type(m?.registry.contentType ?? "text/plain; version=0.0.4; charset=utf-8").send(body);
    },
  },
];
