import { createReadStream } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import { Readable } from "node:stream";

/**
 * HTTP access to one lxhub server (or any simplestreams remote), over node:http/node:https.
 *
 * - TLS is 1.3 only, as LXD/Incus require of an image remote (simplestreams.md §1.2, pitfall 11).
 *   A `ca` PEM pins the server: it replaces the system roots for this client, so a self-signed
 *   certificate (lxhub's default, SANs `localhost` and 127.0.0.1) is trusted and nothing else is.
 * - Connections are kept alive and reused.
 * - Transient failures (connection reset/refused, timeouts, 5xx, 429) are retried with
 *   exponential backoff and jitter; other 4xx never are. Requests whose body is a stream are
 *   only retried when the caller can recreate the body (`BodySource`).
 * - Error responses become `HttpError`s carrying the server's error code (openapi.yaml, Error).
 */

/** A non-2xx answer, with the server's catalog code when its body was the JSON error shape. */
export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly status: number,
    /** The server's error code (e.g. `DIGEST_MISMATCH`), or `HTTP_<status>` when it sent none. */
    readonly code: string,
    message: string,
    readonly detail?: Record<string, unknown>,
    /** `METHOD url` of the request, for messages. */
    readonly request?: string,
    /** Seconds the server asked us to wait (Retry-After), when given. */
    readonly retryAfter?: number,
  ) {
    super(message);
  }
}

/** The socket was idle for longer than the client's timeout. */
export class TimeoutError extends Error {
  override readonly name = "TimeoutError";
  readonly code = "ETIMEDOUT";
}

/** Socket error codes after which the same request may well succeed. */
const TRANSIENT_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/**
 * Whether a failure is worth retrying: a dropped or refused connection, a timeout, a 5xx or a 429.
 * Certificate errors and every other 4xx are final.
 */
export function isTransient(err: unknown): boolean {
  if (err instanceof HttpError) return err.status >= 500 || err.status === 429;
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== undefined) return TRANSIENT_CODES.has(code);
    // node reports a response cut short as a plain Error("aborted") without a code.
    return err.message === "aborted" || err.message === "socket hang up";
  }
  return false;
}

/** A request body that can be produced again for a retry. */
export interface BodySource {
  /** Exact byte length (sent as Content-Length). */
  length: number;
  open(): Readable;
}

export interface HttpClientOptions {
  /** PEM certificate(s) to trust instead of the system roots (pinning a self-signed server). */
  ca?: string | Buffer;
  /** Bearer token sent as `Authorization` to this server's origin (never to a redirect target elsewhere). */
  token?: string;
  userAgent?: string;
  /** Retries after the first attempt for transient failures; default 4. */
  retries?: number;
  /** First backoff delay in ms (doubled each retry, jittered); default 250. */
  retryBaseMs?: number;
  /** Longest single wait in ms, also the cap on a server's Retry-After; default 15000. */
  retryMaxMs?: number;
  /** A request fails with TimeoutError when its socket is idle this long (ms); default 60000. */
  timeoutMs?: number;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  query?: Record<string, string>;
  /** A Buffer/string, or a BodySource for a streamed body that can be reopened for a retry. */
  body?: Buffer | string | BodySource;
  /** Non-2xx statuses answered as results instead of thrown as HttpError (e.g. 404 for HEAD). */
  accept?: number[];
  /** Overrides the client's retry count for this call. */
  retries?: number;
  signal?: AbortSignal;
  /** Called with the number of body bytes handed to the socket so far, as they go. */
  onUploadProgress?: (sent: number) => void;
  /** Idle timeout for this call (ms), e.g. longer for a request the server answers after heavy work. */
  timeoutMs?: number;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface JsonResponse<T> {
  status: number;
  headers: IncomingHttpHeaders;
  data: T;
}

export interface StreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The response body; the caller must consume or destroy it. */
  body: IncomingMessage;
  /** Final URL after redirects. */
  url: string;
}

export interface GetStreamOptions {
  /** `{start, end?}` (inclusive) or a raw `Range` header value, e.g. to resume a download. */
  range?: { start: number; end?: number } | string;
  headers?: Record<string, string>;
  /** Non-2xx statuses returned instead of thrown (e.g. 304, 416). */
  accept?: number[];
  retries?: number;
  signal?: AbortSignal;
}

/** Buffered bodies are for JSON and error documents, never image bytes. */
const MAX_BUFFERED_BODY = 64 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const READ_CHUNK = 1024 * 1024;

/**
 * Joins percent-encoded path segments into a path, e.g. `encodePath("api", "v1", "blobs", "sha256:ab")`
 * → `/api/v1/blobs/sha256:ab`. `:` and `@` stay literal: RFC 3986 allows them in a segment, and
 * digests and version keys (`20240101_22:10`) read better and match routes that do not decode.
 */
export function encodePath(...segments: string[]): string {
  return (
    "/" + segments.map((s) => encodeURIComponent(s).replace(/%3A/gi, ":").replace(/%40/gi, "@")).join("/")
  );
}

export class HttpClient {
  readonly baseUrl: URL;
  /** The base URL's path without a trailing `/` (empty at the root). */
  private readonly prefix: string;
  private readonly agent: http.Agent;
  private readonly retries: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly timeoutMs: number;

  /**
   * @param baseUrl the server's root, `http(s)://host[:port][/prefix]`; request paths are appended
   *   to its path (a trailing `/` is ignored).
   */
  constructor(
    baseUrl: string,
    private readonly opts: HttpClientOptions = {},
  ) {
    const url = new URL(baseUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new Error(`unsupported URL scheme ${url.protocol} in ${baseUrl} (want https:// or http://)`);
    }
    this.prefix = url.pathname.replace(/\/+$/, "");
    url.pathname = this.prefix || "/";
    url.search = "";
    url.hash = "";
    this.baseUrl = url;
    this.retries = opts.retries ?? 4;
    this.retryBaseMs = opts.retryBaseMs ?? 250;
    this.retryMaxMs = opts.retryMaxMs ?? 15_000;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.agent =
      url.protocol === "https:"
        ? new https.Agent({ keepAlive: true, minVersion: "TLSv1.3", ca: opts.ca, maxSockets: 8 })
        : new http.Agent({ keepAlive: true, maxSockets: 8 });
  }

  /** Closes idle kept-alive connections so the process can exit. */
  close(): void {
    this.agent.destroy();
  }

  /** Absolute URL of a path below the base (path starts with `/`). */
  url(path: string, query?: Record<string, string>): URL {
    const u = new URL(this.baseUrl.href);
    u.pathname = this.prefix + path;
    if (query) u.search = new URLSearchParams(query).toString();
    return u;
  }

  /** A request whose (small) response body is buffered. Retries transient failures. */
  async request(method: string, path: string, ro: RequestOptions = {}): Promise<HttpResponse> {
    const url = this.url(path, ro.query);
    return this.withRetries(ro.retries, ro.signal, () => this.once(method, url, ro));
  }

  /** Sends `body` as JSON (when given) and parses a JSON answer (`null` for an empty body). */
  async json<T>(
    method: string,
    path: string,
    body?: unknown,
    ro: RequestOptions = {},
  ): Promise<JsonResponse<T>> {
    const headers: Record<string, string> = { accept: "application/json", ...ro.headers };
    let payload: Buffer | undefined;
    if (body !== undefined) {
      payload = Buffer.from(JSON.stringify(body));
      headers["content-type"] = "application/json";
    }
    const res = await this.request(method, path, { ...ro, headers, body: payload ?? ro.body });
    const text = res.body.toString("utf8");
    let data: T;
    try {
      data = (text.length ? JSON.parse(text) : null) as T;
    } catch {
      throw new Error(`${method} ${this.url(path).href}: answer is not JSON (status ${res.status})`);
    }
    return { status: res.status, headers: res.headers, data };
  }

  /**
   * Sends bytes `start..end` (inclusive) of a file as the request body, read with 1 MiB buffers.
   * Not retried unless `ro.retries` says so: after a partial transfer the server may already hold
   * part of the range, so the caller should ask it how far it got instead (resumable uploads).
   */
  async uploadFileRange(
    method: string,
    path: string,
    file: string,
    start: number,
    end: number,
    ro: Omit<RequestOptions, "body"> = {},
  ): Promise<HttpResponse> {
    const length = end - start + 1;
    if (length < 0) throw new RangeError(`invalid range ${start}-${end}`);
    const body: BodySource = {
      length,
      open: () =>
        length === 0 ? Readable.from([]) : createReadStream(file, { start, end, highWaterMark: READ_CHUNK }),
    };
    return this.request(method, path, {
      ...ro,
      headers: { "content-type": "application/octet-stream", ...ro.headers },
      body,
      retries: ro.retries ?? 0,
    });
  }

  /**
   * GET with a streamed response (image files, resumable with `range`). Follows redirects
   * (e.g. to a presigned object-store URL), sending the token only to this server's origin.
   * Retries transient failures up to the point the response headers arrive; after that, a
   * broken body stream is the caller's to resume with a new `range`.
   */
  async getStream(path: string, go: GetStreamOptions = {}): Promise<StreamResponse> {
    const headers: Record<string, string> = { ...go.headers };
    if (go.range !== undefined) {
      headers.range =
        typeof go.range === "string" ? go.range : `bytes=${go.range.start}-${go.range.end ?? ""}`;
    }
    const first = this.url(path);
    return this.withRetries(go.retries, go.signal, async () => {
      let url = first;
      for (let hop = 0; ; hop++) {
        const res = await this.open("GET", url, { headers, signal: go.signal });
        const location = res.headers.location;
        if ([301, 302, 303, 307, 308].includes(res.statusCode ?? 0) && location) {
          res.resume();
          if (hop >= MAX_REDIRECTS) throw new Error(`GET ${first.href}: too many redirects`);
          url = new URL(location, url);
          continue;
        }
        const status = res.statusCode ?? 0;
        if ((status < 200 || status > 299) && !go.accept?.includes(status)) {
          const body = await readBody(res, MAX_BUFFERED_BODY);
          throw toHttpError("GET", url, status, res.headers, body);
        }
        return { status, headers: res.headers, body: res, url: url.href };
      }
    });
  }

  private async withRetries<T>(
    retries: number | undefined,
    signal: AbortSignal | undefined,
    attempt: () => Promise<T>,
  ): Promise<T> {
    const max = retries ?? this.retries;
    for (let n = 0; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (n >= max || !isTransient(err) || signal?.aborted) throw err;
        await sleep(this.backoff(n, err), signal);
      }
    }
  }

  /** Delay before retry `n` (0-based): doubling from the base, capped, with jitter over its upper half. */
  backoff(n: number, err?: unknown): number {
    if (err instanceof HttpError && err.retryAfter !== undefined) {
      return Math.min(err.retryAfter * 1000, this.retryMaxMs);
    }
    const cap = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** n);
    return cap / 2 + Math.random() * (cap / 2);
  }

  /** One attempt of `request`: send, buffer the answer, turn non-accepted statuses into HttpError. */
  private async once(method: string, url: URL, ro: RequestOptions): Promise<HttpResponse> {
    const res = await this.open(method, url, ro);
    const body = await readBody(res, MAX_BUFFERED_BODY);
    const status = res.statusCode ?? 0;
    if ((status < 200 || status > 299) && !ro.accept?.includes(status)) {
      throw toHttpError(method, url, status, res.headers, body);
    }
    return { status, headers: res.headers, body };
  }

  /** Sends one request and resolves when the response headers arrived. */
  private open(method: string, url: URL, ro: RequestOptions): Promise<IncomingMessage> {
    const sameOrigin = url.origin === this.baseUrl.origin;
    const headers: Record<string, string> = { ...ro.headers };
    if (this.opts.userAgent) headers["user-agent"] = this.opts.userAgent;
    if (this.opts.token && sameOrigin) headers.authorization = `Bearer ${this.opts.token}`;
    let source: Readable | undefined;
    let fixed: Buffer | undefined;
    if (typeof ro.body === "string" || Buffer.isBuffer(ro.body)) {
      fixed = Buffer.from(ro.body);
      headers["content-length"] = String(fixed.length);
    } else if (ro.body) {
      headers["content-length"] = String(ro.body.length);
      source = ro.body.open();
    } else if (method !== "GET" && method !== "HEAD") {
      headers["content-length"] = "0";
    }

    const lib = url.protocol === "https:" ? https : http;
    // A redirect to another origin (an object store) gets the platform's default agent and trust.
    const agent = sameOrigin ? this.agent : undefined;

    return new Promise<IncomingMessage>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        source?.destroy();
        if (!settled) {
          settled = true;
          reject(err);
        }
      };
      const req = lib.request(url, { method, headers, agent, signal: ro.signal }, (res) => {
        if (settled) {
          res.resume();
          return;
        }
        settled = true;
        resolve(res);
      });
      const timeout = ro.timeoutMs ?? this.timeoutMs;
      req.setTimeout(timeout, () =>
        req.destroy(new TimeoutError(`${method} ${url.href}: no activity for ${timeout} ms`)),
      );
      req.on("error", fail);
      if (fixed) {
        req.end(fixed);
      } else if (source) {
        let sent = 0;
        const progress = ro.onUploadProgress;
        if (progress) {
          source.on("data", (chunk: Buffer) => {
            sent += chunk.length;
            progress(sent);
          });
        }
        source.on("error", (err) => req.destroy(err));
        req.on("close", () => source?.destroy());
        source.pipe(req);
      } else {
        req.end();
      }
    });
  }
}

function readBody(res: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        res.destroy(new Error(`response body larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    res.on("end", () => resolve(Buffer.concat(chunks)));
    res.on("error", reject);
    // A connection closed before the body ended (a promise settles once, so a double report is harmless).
    res.on("close", () => {
      if (!res.complete) reject(Object.assign(new Error("aborted"), { code: "ECONNRESET" }));
    });
  });
}

/** Builds an HttpError from the server's `{"error": {code, message, detail}}` body, or from the status. */
function toHttpError(
  method: string,
  url: URL,
  status: number,
  headers: IncomingHttpHeaders,
  body: Buffer,
): HttpError {
  let code = `HTTP_${status}`;
  let message = `${status} ${http.STATUS_CODES[status] ?? "error"}`;
  let detail: Record<string, unknown> | undefined;
  const text = body.toString("utf8");
  try {
    const parsed = JSON.parse(text) as unknown;
    const e = (parsed as { error?: unknown }).error;
    if (e && typeof e === "object") {
      const { code: c, message: m, detail: d } = e as Record<string, unknown>;
      if (typeof c === "string") code = c;
      if (typeof m === "string") message = m;
      if (d && typeof d === "object") detail = d as Record<string, unknown>;
    }
  } catch {
    const snippet = text.trim().slice(0, 200);
    if (snippet) message += `: ${snippet}`;
  }
  return new HttpError(status, code, message, detail, `${method} ${url.href}`, parseRetryAfter(headers));
}

function parseRetryAfter(headers: IncomingHttpHeaders): number | undefined {
  const v = headers["retry-after"];
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, (t - Date.now()) / 1000);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * A plain-words message for a failure to reach a server: refused connection, or a certificate
 * that is not trusted (with the flag that pins one); null for anything else.
 */
export function describeConnectionError(err: unknown): string | null {
  if (!(err instanceof Error)) return null;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ECONNREFUSED") return `cannot connect to the server (${err.message})`;
  if (code && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return `TLS: the server's certificate is not trusted (${code}: ${err.message}); pin it with --ca FILE`;
  }
  return null;
}
