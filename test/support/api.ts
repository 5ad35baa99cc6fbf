import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { checkAnswer } from "./openapi.js";

/**
 * Small helpers over the publish API (openapi.yaml) for integration tests: plain fetch, loopback
 * only. Every answer is checked against openapi.yaml (documented status, JSON body matching its
 * schema), so each test that uses `api` also tests the contract.
 */

export function sha256Hex(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}

export function digestOf(buf: Buffer): string {
  return `sha256:${sha256Hex(buf)}`;
}

export interface ApiResponse {
  status: number;
  headers: Headers;
  json: Record<string, unknown> | null;
  text: string;
}

export async function api(
  base: string,
  method: string,
  path: string,
  opts: { token?: string; body?: Buffer | string; headers?: Record<string, string> } = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const body =
    typeof opts.body === "string" || opts.body === undefined ? opts.body : new Uint8Array(opts.body);
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let json: Record<string, unknown> | null = null;
  try {
    json = text ? (JSON.parse(text) as Record<string, unknown>) : null;
  } catch {
    json = null;
  }
  checkAnswer(method, path, { status: res.status, contentType: res.headers.get("content-type"), json });
  return { status: res.status, headers: res.headers, json, text };
}

/** The error code of a JSON error body. */
export function errorCode(r: ApiResponse): string | undefined {
  const e = r.json?.error as { code?: string } | undefined;
  return e?.code;
}

/** Upload bytes as one blob through a session (open, one PATCH, commit); returns the commit response. */
export async function uploadBlob(
  base: string,
  token: string,
  bytes: Buffer,
  digest = digestOf(bytes),
): Promise<ApiResponse> {
  const open = await api(base, "POST", "/api/v1/uploads", { token });
  if (open.status !== 201) throw new Error(`open upload: ${open.status} ${open.text}`);
  const location = String(open.json?.location);
  if (bytes.length) {
    const patch = await api(base, "PATCH", location, {
      token,
      body: bytes,
      headers: { "content-range": `bytes 0-${bytes.length - 1}/${bytes.length}` },
    });
    if (patch.status !== 202) throw new Error(`patch: ${patch.status} ${patch.text}`);
  }
  return api(base, "PUT", `${location}?digest=${digest}`, { token });
}

export async function uploadFile(base: string, token: string, file: string): Promise<string> {
  const bytes = await readFile(file);
  const r = await uploadBlob(base, token, bytes);
  if (r.status !== 201) throw new Error(`upload ${file}: ${r.status} ${r.text}`);
  return digestOf(bytes);
}

/**
 * Send `declared` bytes' worth of Content-Length but only `sent` bytes, then cut the
 * connection: a truncated upload as a dropped network leaves it.
 */
export function truncatedPatch(
  base: string,
  token: string,
  location: string,
  bytes: Buffer,
  sent: number,
  /** Called with the request still open instead of dropping it (e.g. to kill the server then). */
  whileOpen?: () => void,
): Promise<void> {
  const url = new URL(base + location);
  return new Promise((resolve) => {
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: "PATCH",
      headers: {
        authorization: `Bearer ${token}`,
        "content-length": String(bytes.length),
        "content-range": `bytes 0-${bytes.length - 1}/${bytes.length}`,
      },
    });
    req.on("error", () => resolve());
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve());
    });
    req.write(bytes.subarray(0, sent), () => {
      // Give the server a moment to take the bytes in, then drop the connection.
      setTimeout(() => {
        if (whileOpen) whileOpen();
        else req.destroy();
        resolve();
      }, 200);
    });
  });
}

export function versionPath(
  p: { os: string; release: string; arch: string; variant: string },
  version: string,
): string {
  return `/api/v1/products/${p.os}/${p.release}/${p.arch}/${p.variant}/versions/${encodeURIComponent(version)}`;
}

/**
 * The offset of an upload session once the server has finished the append a dropped connection
 * left behind: it may still be writing the bytes that arrived when the client already asks.
 * Polls until two answers 100 ms apart agree (at most ~3 s).
 */
export async function settledOffset(base: string, token: string, location: string): Promise<number> {
  let last = -1;
  for (let i = 0; i < 30; i++) {
    const r = await api(base, "GET", location, { token });
    if (r.status !== 200) throw new Error(`GET ${location}: ${r.status} ${r.text}`);
    const offset = Number(r.json?.offset);
    if (offset === last) return offset;
    last = offset;
    await new Promise((res) => setTimeout(res, 100));
  }
  return last;
}
