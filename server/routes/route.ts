import type { Request, Response } from "express";
import type { z } from "zod";
import { ERROR_CATALOG, LxhubError, type ErrorCode } from "../../registry/errors.js";
import type { Registry } from "../../registry/registry.js";
import type { Metrics } from "../metrics.js";
import { authorize, TOKEN_ID_PATTERN, type Principal } from "../../registry/tokens.js";
import { productTarget } from "../../registry/paths.js";
import type { ProductKey } from "../../storage/catalog/catalog.js";
import { UPLOAD_ID_RE } from "../../storage/layout.js";
import { DIGEST_PATTERN, nameProblem, type NameKind } from "../../simplestreams/names.js";
import { canonicalArch } from "../../simplestreams/arch.js";

/**
 * Routes as data: each resource module (uploads, blobs, products, tokens, health, public) exports
 * a table of these; `server/api.ts` composes them, `openapi.yaml` documents them and
 * test/contract checks the two agree (every method, every status, every header).
 */

export type Method = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";

/**
 * Who may call a route. `push-any`: a token with any `push:` scope (or admin); `push-product` /
 * `delete-product`: a scope whose pattern matches the product in the path; `upload-owner`: the
 * token that opened the session `:id` (any admin token too).
 */
export type AuthRule = "none" | "push-any" | "push-product" | "delete-product" | "admin" | "upload-owner";

/** The services a handler may call. */
export type ApiDeps = Pick<
  Registry,
  | "blobs"
  | "tokens"
  | "uploads"
  | "publish"
  | "products"
  | "index"
  | "catalog"
  | "limits"
  | "mirrors"
  | "pullThrough"
  | "retention"
  | "gc"
> & {
  /** Default grace period of a garbage collection asked for through the API (--gc-grace). */
  gcGraceSeconds?: number;
  /** Prometheus metrics of this process (server/metrics.ts). */
  metrics?: Metrics;
  /** Where errors that are not LxhubErrors (bugs, I/O failures) are reported. */
  onInternalError?: (err: unknown) => void;
};

/** Path parameters after the boundary checks (only those the route's path names are set). */
export interface Params {
  os: string;
  release: string;
  arch: string;
  variant: string;
  version: string;
  /** An upload session id. */
  id: string;
  tokenId: string;
  digest: string;
}

export interface Call {
  req: Request;
  res: Response;
  params: Params;
  /** The caller's verified token; null on routes with auth `none`. */
  principal: Principal | null;
  deps: ApiDeps;
}

export interface Route {
  method: Method;
  /** Express path; `:name` parameters are checked by PARAM_RULES. */
  path: string;
  /** Also the operationId in openapi.yaml. */
  operationId: string;
  auth: AuthRule;
  /** What the body is: none is read, a JSON document (1 MiB at most) or image bytes. */
  body: "none" | "json" | "bytes";
  /** The JSON body's schema (body `json`), also the request schema in openapi.yaml. */
  schema?: z.ZodType;
  /** Statuses the handler answers with itself (success, and answers that are not errors). */
  answers: readonly number[];
  /** Error codes the registry call or handler may throw beyond those implied (see routeErrors). */
  errors: readonly ErrorCode[];
  /** Headers the route sets on its successful answers (lower case). */
  headers: readonly string[];
  /**
   * Body → one registry call → answer. Parameters are checked and the token authorized before it
   * runs. Absent for public routes, which the read path (server/read-path.ts) serves.
   */
  handle?: (call: Call) => Promise<void>;
}

/** The most a JSON request body may hold. */
export const MAX_JSON_BYTES = 1024 * 1024;

interface ParamRule {
  /** What is wrong with the value, or null. */
  problem(value: string): string | null;
  code: ErrorCode | ((value: string) => ErrorCode);
}

const nameRule = (kind: NameKind, code: ErrorCode): ParamRule => ({
  problem: (v) => nameProblem(kind, v),
  code,
});
const patternRule = (what: string, pattern: RegExp, hint: string): ParamRule => ({
  problem: (v) => (pattern.test(v) ? null : `${what} ${JSON.stringify(v.slice(0, 80))} must be ${hint}`),
  code: "INVALID_NAME",
});

/** The check of every path parameter, by name: a value that breaks it gets 400, never a 5xx. */
export const PARAM_RULES: Record<keyof Params, ParamRule> = {
  os: nameRule("os", "INVALID_PRODUCT"),
  release: nameRule("release", "INVALID_PRODUCT"),
  // A well-formed name LXD does not know is UNKNOWN_ARCH; anything else is not a product name.
  arch: {
    problem: (v) => nameProblem("arch", v),
    code: (v) =>
      nameProblem("os", v) === null && canonicalArch(v) === null ? "UNKNOWN_ARCH" : "INVALID_PRODUCT",
  },
  variant: nameRule("variant", "INVALID_PRODUCT"),
  version: nameRule("version", "INVALID_VERSION"),
  id: patternRule("upload id", UPLOAD_ID_RE, "8 to 64 letters, digits, _ or -"),
  tokenId: patternRule("token id", TOKEN_ID_PATTERN, "a token id (a UUID)"),
  digest: patternRule("digest", DIGEST_PATTERN, "sha256:<64 lower-case hex>"),
};

/** Names of the `:params` in an express path. */
export function pathParams(path: string): (keyof Params)[] {
  return [...path.matchAll(/:([A-Za-z]+)/g)].map((m) => m[1] as keyof Params);
}

/** Check the route's path parameters (express has decoded them) against PARAM_RULES. */
export function parseParams(route: Route, raw: Record<string, string | undefined>): Params {
  const out: Params = {
    os: "",
    release: "",
    arch: "",
    variant: "",
    version: "",
    id: "",
    tokenId: "",
    digest: "",
  };
  for (const name of pathParams(route.path)) {
    const value = String(raw[name] ?? "");
    const rule = PARAM_RULES[name];
    const problem = rule.problem(value);
    if (problem !== null)
      throw new LxhubError(typeof rule.code === "function" ? rule.code(value) : rule.code, problem);
    out[name] = value;
  }
  return out;
}

export function productKey(p: Params): ProductKey {
  return { os: p.os, release: p.release, arch: p.arch, variant: p.variant };
}

/** Throw FORBIDDEN (or UPLOAD_NOT_FOUND) unless the principal passes the route's rule. */
export async function authorizeRoute(route: Route, who: Principal, p: Params, deps: ApiDeps): Promise<void> {
  switch (route.auth) {
    case "none":
      return;
    case "push-any":
      return authorize(who, "push", "*");
    case "push-product":
      return authorize(who, "push", productTarget(productKey(p)));
    case "delete-product":
      return authorize(who, "delete", productTarget(productKey(p)));
    case "admin":
      return authorize(who, "admin", "*");
    case "upload-owner":
      authorize(who, "push", "*");
      return deps.uploads.checkOwner(p.id, who.tokenId, who.scopes.includes("admin"));
  }
}

/** The bearer token's principal; UNAUTHORIZED without a valid one. */
export async function authenticate(req: Request, deps: ApiDeps): Promise<Principal> {
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(\S+)$/i.exec(h) : null;
  if (!m?.[1])
    throw new LxhubError("UNAUTHORIZED", "this request needs a token: Authorization: Bearer <token>");
  return deps.tokens.verify(m[1]);
}

/**
 * Every error code a route can answer with: its own, plus those its auth rule, path parameters
 * and body imply, plus INTERNAL.
 */
export function routeErrors(route: Route): ErrorCode[] {
  const codes = new Set<ErrorCode>(route.errors);
  if (route.auth !== "none") codes.add("UNAUTHORIZED").add("FORBIDDEN");
  // A write carrying a token over plain HTTP, unless the server allows it (server/app.ts).
  if (route.auth !== "none" && route.method !== "GET" && route.method !== "HEAD")
    codes.add("INSECURE_TRANSPORT");
  if (route.auth === "upload-owner") codes.add("UPLOAD_NOT_FOUND");
  // A body that stalls or takes too long is cut (server/request-body.ts).
  if (route.body !== "none") codes.add("REQUEST_TIMEOUT");
  // Every token is checked against the catalog, which may not answer (server/errors.ts).
  if (route.auth !== "none") codes.add("STORAGE_UNAVAILABLE");
  // A write to the catalog or the blob store may find the disk full (server/errors.ts).
  if (route.auth !== "none" && route.method !== "GET" && route.method !== "HEAD")
    codes.add("INSUFFICIENT_STORAGE");
  if (route.body === "json") codes.add("BAD_REQUEST").add("MALFORMED_JSON").add("TOO_LARGE");
  if (route.body === "bytes") codes.add("BAD_REQUEST").add("TOO_LARGE");
  // Routes served by the API (not the read path) check their parameters and may fail unexpectedly.
  if (route.handle) {
    for (const name of pathParams(route.path)) {
      const code = PARAM_RULES[name].code;
      if (typeof code === "function") codes.add("INVALID_PRODUCT").add("UNKNOWN_ARCH");
      else codes.add(code);
    }
    codes.add("INTERNAL");
  }
  return [...codes];
}

/** Every status a route can answer with, ascending. */
export function routeStatuses(route: Route): number[] {
  const all = new Set<number>(route.answers);
  for (const code of routeErrors(route)) all.add(ERROR_CATALOG[code].status);
  return [...all].sort((a, b) => a - b);
}

/** Methods a route answers: a GET route answers HEAD too (RFC 9110 §9.3.2). */
export function routeMethods(route: Route): Method[] {
  return route.method === "GET" ? ["GET", "HEAD"] : [route.method];
}
