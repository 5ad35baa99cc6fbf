import { LxhubError } from "../../registry/errors.js";
import type { Route } from "./route.js";

/** The pull-through cache's state and counters (registry/pull-through.ts), for operators and monitoring. */
export const upstreamRoutes: readonly Route[] = [
  {
    method: "GET",
    path: "/api/v1/upstream",
    operationId: "getUpstreamStatus",
    auth: "none",
    body: "none",
    answers: [200],
    errors: ["NOT_FOUND"],
    headers: [],
    async handle({ res, deps }) {
      if (!deps.pullThrough) throw new LxhubError("NOT_FOUND", "this server has no upstream (--upstream)");
      res.set("cache-control", "no-store");
      res.json(deps.pullThrough.status());
    },
  },
];
