import type { ServerResponse } from "node:http";
import { LxhubError, type ErrorCode } from "../registry/errors.js";

/** The public error catalog: every code the API returns, with its HTTP status (openapi.yaml lists the same). */
export const ERROR_STATUS: Record<ErrorCode, number> = {
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  BAD_REQUEST: 400,
  MALFORMED_JSON: 400,
  NOT_FOUND: 404,
  UPLOAD_NOT_FOUND: 404,
  UPLOAD_OFFSET_MISMATCH: 416,
  DIGEST_MISMATCH: 400,
  TOO_LARGE: 413,
  BLOB_UNKNOWN: 400,
  INVALID_PRODUCT: 400,
  INVALID_VERSION: 400,
  INVALID_FILES: 400,
  INVALID_METADATA: 400,
  ARCH_MISMATCH: 400,
  UNKNOWN_ARCH: 400,
  VERSION_CONFLICT: 409,
  VERSION_DELETED: 409,
  DUPLICATE_IMAGE: 409,
  ALIAS_CONFLICT: 409,
  ALIAS_FORBIDDEN: 403,
  INVALID_NAME: 400,
  INVALID_ALIAS: 400,
  INVALID_REQUIREMENT: 400,
  INVALID_TEXT: 400,
  INVALID_DELTA: 400,
  METHOD_NOT_ALLOWED: 405,
  INSECURE_TRANSPORT: 403,
  QUOTA_EXCEEDED: 429,
  INSUFFICIENT_STORAGE: 507,
  INTERNAL: 500,
};

/** Render any thrown value as the JSON error body; unknown errors become INTERNAL without leaking detail. */
export function renderError(err: unknown): { status: number; body: { error: Record<string, unknown> } } {
  if (err instanceof LxhubError) {
    const error: Record<string, unknown> = { code: err.code, message: err.message };
    if (err.detail) error.detail = err.detail;
    return { status: ERROR_STATUS[err.code], body: { error } };
  }
  return { status: 500, body: { error: { code: "INTERNAL", message: "internal error" } } };
}

export function sendError(res: ServerResponse, err: unknown): void {
  const { status, body } = renderError(err);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body) + "\n";
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
