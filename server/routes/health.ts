import type { Route } from "./route.js";

/** Liveness and readiness for load balancers and orchestrators. */
export const healthRoutes: readonly Route[] = [
  {
    method: "GET",
    path: "/healthz",
    operationId: "healthz",
    auth: "none",
    body: "none",
    answers: [200],
    errors: [],
    headers: [],
    async handle({ res }) {
      res.json({ status: "ok" });
    },
  },
  {
    method: "GET",
    path: "/readyz",
    operationId: "readyz",
    auth: "none",
    body: "none",
    answers: [200, 503],
    errors: [],
    headers: [],
    async handle({ res, deps }) {
      try {
        // Both stores must answer: a replica that cannot reach them is taken out of rotation
        // (it still serves what it has to whoever reaches it).
        await Promise.all([
          deps.catalog.ping().catch((err: Error) => {
            throw new Error(`catalog unreachable: ${err.message}`);
          }),
          deps.blobs.ping().catch((err: Error) => {
            throw new Error(`blob store unreachable: ${err.message}`);
          }),
        ]);
        const gen = deps.index.generation();
        if (!gen) throw new Error("documents not built");
        // Catalog rows today's rules refuse are left out of the documents and listed here.
        const problems = deps.index.problems();
        res.json({ status: "ready", serial: gen.serial, ...(problems.length ? { problems } : {}) });
      } catch (err) {
        res.status(503).json({ status: "not ready", reason: (err as Error).message });
      }
    },
  },
];
