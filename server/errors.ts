import type { ServerResponse } from "node:http";
import { ERROR_CATALOG, LxhubError } from "../registry/errors.js";
import { isNoSpace } from "../registry/uploads.js";

/**
 * The one boundary where errors become answers: the status comes from the error catalog
 * (registry/errors.ts). Any thrown value becomes the JSON error body; a full disk or database
 * anywhere (publish, tokens, uploads) is INSUFFICIENT_STORAGE; other errors that are not
 * LxhubErrors become INTERNAL without leaking detail.
 */
export function renderError(err: unknown): { status: number; body: { error: Record<string, unknown> } } {
  if (isNoSpace(err)) {
    err = new LxhubError(
      "INSUFFICIENT_STORAGE",
      "the server's storage is full; nothing was kept; try again once the operator has made room",
    );
  }
  if (err instanceof LxhubError) {
    const error: Record<string, unknown> = { code: err.code, message: err.message };
    if (err.detail) error.detail = err.detail;
    return { status: ERROR_CATALOG[err.code].status, body: { error } };
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
