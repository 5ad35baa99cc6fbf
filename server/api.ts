import express, { type NextFunction, type Request, type Response } from "express";
import { LxhubError } from "../registry/errors.js";
import { renderError, RETRY_AFTER_SECONDS } from "./errors.js";
import { blobRoutes } from "./routes/blobs.js";
import { healthRoutes } from "./routes/health.js";
import { mirrorRoutes } from "./routes/mirrors.js";
import { lifecycleRoutes } from "./routes/lifecycle.js";
import { productRoutes } from "./routes/products.js";
import { publicRoutes } from "./routes/public.js";
import {
  authenticate,
  authorizeRoute,
  parseParams,
  routeMethods,
  type ApiDeps,
  type Route,
} from "./routes/route.js";
import { tokenRoutes } from "./routes/tokens.js";
import { uploadRoutes } from "./routes/uploads.js";
import { upstreamRoutes } from "./routes/upstream.js";

export type { ApiDeps } from "./routes/route.js";

/** Every route the API serves, one table per resource. */
export const API_ROUTES: readonly Route[] = [
  ...healthRoutes,
  ...uploadRoutes,
  ...blobRoutes,
  ...productRoutes,
  ...tokenRoutes,
  ...upstreamRoutes,
  ...mirrorRoutes,
  ...lifecycleRoutes,
];

/** Every route the server answers: the API's and the read path's (the contract openapi.yaml describes). */
export const ALL_ROUTES: readonly Route[] = [...publicRoutes, ...API_ROUTES];

/** `Allow` for a path: the methods its routes answer. */
function allowOf(routes: readonly Route[]): string {
  return [...new Set(routes.flatMap(routeMethods))].join(", ");
}

/** Authenticate → check parameters → authorize → the route's handler (body → one registry call → answer). */
async function run(route: Route, req: Request, res: Response, deps: ApiDeps): Promise<void> {
  const principal = route.auth === "none" ? null : await authenticate(req, deps);
  const params = parseParams(route, req.params as Record<string, string>);
  if (principal) await authorizeRoute(route, principal, params, deps);
  await route.handle!({ req, res, params, principal, deps });
}

/** The publish/admin API on express, composed from the route tables; errors become answers at one boundary. */
export function createApi(deps: ApiDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  // Answer exactly the documented paths: no case folding, no trailing-slash twins.
  app.set("case sensitive routing", true);
  app.set("strict routing", true);

  const byPath = new Map<string, Route[]>();
  for (const r of API_ROUTES) byPath.set(r.path, [...(byPath.get(r.path) ?? []), r]);
  for (const [path, routes] of byPath) {
    const allow = allowOf(routes);
    app.all(path, async (req: Request, res: Response) => {
      const method = req.method === "HEAD" && !routes.some((r) => r.method === "HEAD") ? "GET" : req.method;
      const route = routes.find((r) => r.method === method);
      if (!route) {
        res.set("allow", allow);
        throw new LxhubError(
          "METHOD_NOT_ALLOWED",
          `${req.method} is not allowed on ${req.path}; use ${allow}`,
        );
      }
      await run(route, req, res, deps);
    });
  }
  app.use((req: Request) => {
    throw new LxhubError("NOT_FOUND", `no route ${req.method} ${req.path}`);
  });
  // The one boundary where errors become answers.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const { status, body } = renderError(err);
    if (status === 500) deps.onInternalError?.(err);
    deps.metrics?.observeError(String(body.error.code));
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // RFC 9110 §11.6.1: a 401 names the scheme it wants.
    if (status === 401) res.set("www-authenticate", 'Bearer realm="lxhub"');
    if (status === 503) res.set("retry-after", String(RETRY_AFTER_SECONDS));
    res.status(status).json(body);
  });
  return app;
}
