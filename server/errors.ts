import type { ServerResponse } from "node:http";
import { ERROR_CATALOG, LxhubError } from "../registry/errors.js";
import { isNoSpace } from "../registry/uploads.js";

/**
 * The one boundary where errors become answers: the status comes from the error catalog
 * (registry/errors.ts). Any thrown value becomes the JSON error body; a full disk or database
 * anywhere (publish, tokens, uploads) is INSUFFICIENT_STORAGE; a catalog or blob store that
 * does not answer (connection refused or cut, timeout, an object store's 5xx) is
 * STORAGE_UNAVAILABLE, so clients and load balancers retry; other errors that are not
 * LxhubErrors become INTERNAL without leaking detail.
 */
export function renderError(err: unknown): { status: number; body: { error: Record<string, unknown> } } {
  if (isNoSpace(err)) {
    err = new LxhubError(
      "INSUFFICIENT_STORAGE",
      "the server's storage is full; nothing was kept; try again once the operator has made room",
    );
  }
  if (isUnavailable(err)) {
    err = new LxhubError(
      "STORAGE_UNAVAILABLE",
      "the server's storage does not answer right now; nothing was changed; retry shortly",
    );
  }
  if (err instanceof LxhubError) {
    const error: Record<string, unknown> = { code: err.code, message: err.message };
    if (err.detail) error.detail = err.detail;
    return { status: ERROR_CATALOG[err.code].status, body: { error } };
  }
  return { status: 500, body: { error: { code: "INTERNAL", message: "internal error" } } };
}

/** What a 503 (STORAGE_UNAVAILABLE) asks clients to wait before they retry. */
export const RETRY_AFTER_SECONDS = 2;

export function sendError(res: ServerResponse, err: unknown): void {
  const { status, body } = renderError(err);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body) + "\n";
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...(status === 503 ? { "retry-after": String(RETRY_AFTER_SECONDS) } : {}),
  });
  res.end(text);
}

const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ENOTFOUND",
  "57P01", // PostgreSQL: admin_shutdown (terminating connection)
  "57P03", // PostgreSQL: cannot_connect_now (starting up or shutting down)
]);

/** A storage failure that will likely pass: the server is fine, a store it needs is not answering. */
export function isUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && typeof e === "object" && depth < 4; depth++) {
    const o = e as {
      code?: unknown;
      name?: unknown;
      message?: unknown;
      $metadata?: { httpStatusCode?: number };
      cause?: unknown;
    };
    if (typeof o.code === "string" && UNREACHABLE_CODES.has(o.code)) return true;
    // knex: no pooled connection could be had; pg: the connection went away under the query.
    if (o.name === "KnexTimeoutError") return true;
    if (typeof o.message === "string" && /^Connection terminated/.test(o.message)) return true;
    // AWS SDK: a timeout, or the object store answering 5xx after the SDK's own retries.
    if (o.name === "TimeoutError") return true;
    const status = o.$metadata?.httpStatusCode;
    if (typeof status === "number" && status >= 500 && status !== 501) return true;
    e = o.cause;
  }
  return false;
}
