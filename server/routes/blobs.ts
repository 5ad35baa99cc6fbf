import type { Route } from "./route.js";

/** Whether the server has a blob, so a client skips bytes already there (and GC spares it a while). */
export const blobRoutes: readonly Route[] = [
  {
    method: "HEAD",
    path: "/api/v1/blobs/:digest",
    operationId: "headBlob",
    auth: "none",
    body: "none",
    answers: [200, 404],
    errors: ["STORAGE_UNAVAILABLE"],
    headers: ["content-length", "docker-content-digest"],
    async handle({ res, params, deps }) {
      const info = await deps.uploads.wanted(params.digest);
      if (!info) res.status(404).end();
      else
        res
          .status(200)
          .set({ "content-length": String(info.size), "docker-content-digest": info.digest })
          .end();
    },
  },
];
