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

/**
 * A request that could not be completed for a reason below HTTP (connection, DNS, TLS, a stall,
 * a refused redirect). The message is a sentence naming the host; `code` keeps node's code (e.g.
 * `ECONNRESET`) for retry decisions (`isTransient`), and `cause` the original error.
 */
export class NetworkError extends Error {
  override readonly name: string = "NetworkError";
  constructor(
    /** node's code, or one of ours (`ETIMEDOUT` for a stall, `REDIRECT_REFUSED`). */
    readonly code: string | undefined,
    message: string,
    /** The URL of the request that failed. */
    readonly url: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** No bytes arrived for the client's stall timeout: `stalled: no data for N s from <url>`. */
export class TimeoutError extends NetworkError {
  override readonly name = "TimeoutError";
  constructor(
    url: string,
    /** The stall timeout, in ms. */
    readonly timeoutMs: number,
  ) {
    super("ETIMEDOUT", `stalled: no data for ${seconds(timeoutMs)} s from ${url}`, url);
  }
}

function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
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
  /**
   * Stall timeout: a request fails with `TimeoutError` when no data moves on its connection for
   * this long (ms), while connecting, waiting for the answer or reading its body; default 60000.
   */
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
  /**
   * The body's chunks, for `for await`: a failure of the body (reset, stall) is thrown as a
   * `NetworkError` naming the host; errors thrown by the loop's own body pass unchanged.
   */
  chunks(): AsyncIterable<Buffer>;
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
          if (hop >= MAX_REDIRECTS) {
            throw new NetworkError(
              "REDIRECT_REFUSED",
              `refused: more than ${MAX_REDIRECTS} redirects, starting at ${first.href}`,
              url.href,
            );
          }
          url = redirectTarget(location, url);
          continue;
        }
        const status = res.statusCode ?? 0;
        if ((status < 200 || status > 299) && !go.accept?.includes(status)) {
          const body = await readBody(res, MAX_BUFFERED_BODY, url);
          throw toHttpError("GET", url, status, res.headers, body);
        }
        const at = url;
        return { status, headers: res.headers, body: res, url: at.href, chunks: () => chunksOf(res, at) };
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
    const body = await readBody(res, MAX_BUFFERED_BODY, url);
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
      let response: IncomingMessage | undefined;
      const fail = (err: Error) => {
        source?.destroy();
        if (!settled) {
          settled = true;
          // An abort is reported with the caller's reason (e.g. "interrupted (SIGINT)…").
          const reason = ro.signal?.aborted ? (ro.signal.reason as unknown) : undefined;
          reject(reason instanceof Error ? reason : networkError(err, url));
        }
      };
      const req = lib.request(url, { method, headers, agent, signal: ro.signal }, (res) => {
        if (settled) {
          res.resume();
          return;
        }
        settled = true;
        response = res;
        resolve(res);
      });
      const timeout = ro.timeoutMs ?? this.timeoutMs;
      req.setTimeout(timeout, () => {
        const err = new TimeoutError(url.href, timeout);
        // Once the answer has begun, its reader must learn why (node would say a bare "aborted").
        if (response && !response.complete) response.destroy(err);
        req.destroy(err);
      });
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

function readBody(res: IncomingMessage, limit: number, url: URL): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        res.destroy(
          new NetworkError(
            "BODY_TOO_LARGE",
            `refused: the answer from ${url.href} is larger than ${limit} bytes`,
            url.href,
          ),
        );
        return;
      }
      chunks.push(chunk);
    });
    res.on("end", () => resolve(Buffer.concat(chunks)));
    res.on("error", (err) => reject(networkError(err, url)));
    // A connection closed before the body ended (a promise settles once, so a double report is harmless).
    res.on("close", () => {
      if (!res.complete)
        reject(networkError(Object.assign(new Error("aborted"), { code: "ECONNRESET" }), url));
    });
  });
}

async function* chunksOf(res: IncomingMessage, url: URL): AsyncGenerator<Buffer> {
  const it = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let ended = false;
  try {
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await it.next();
      } catch (err) {
        ended = true;
        throw networkError(err, url);
      }
      if (next.done) {
        ended = true;
        return;
      }
      yield next.value;
    }
  } finally {
    // The consumer stopped early (break or throw): release the body.
    if (!ended) await it.return?.();
  }
}

/** Where a redirect leads; refuses anything but an http(s) URL. */
function redirectTarget(location: string, from: URL): URL {
  const shown = location.length > 200 ? `${location.slice(0, 200)}…` : location;
  let to: URL;
  try {
    to = new URL(location, from);
  } catch {
    throw new NetworkError(
      "REDIRECT_REFUSED",
      `refused: redirect to an invalid URL (${JSON.stringify(shown)}) from ${from.href}`,
      from.href,
    );
  }
  if (to.protocol !== "http:" && to.protocol !== "https:") {
    throw new NetworkError(
      "REDIRECT_REFUSED",
      `refused: redirect to a non-HTTP URL (${shown}) from ${from.href}`,
      from.href,
    );
  }
  return to;
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

const UNTRUSTED_CERT = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_REJECTED",
]);
const NO_TLS13 = new Set([
  "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION",
  "ERR_SSL_UNSUPPORTED_PROTOCOL",
  "ERR_SSL_NO_PROTOCOLS_AVAILABLE",
  "ERR_SSL_TLSV1_ALERT_INSUFFICIENT_SECURITY",
]);

/**
 * What went wrong below HTTP, as a sentence naming the host, from node's error code (socket,
 * DNS, TLS and HTTP parser errors); the code itself is added only for kinds not named here.
 */
function socketFailure(err: Error, url: URL): string {
  const code = (err as NodeJS.ErrnoException).code;
  const host = url.host;
  const name = url.hostname;
  const pin = "; pin the server's certificate with --ca FILE";
  switch (code) {
    case "ECONNREFUSED":
      return `cannot connect to ${host}: the connection was refused (is the server running, and on that port?)`;
    case "ECONNRESET":
      if (err.message === "socket hang up") return `${host} closed the connection without answering`;
      if (err.message === "aborted") return `${host} closed the connection before the answer was complete`;
      return `the connection to ${host} was reset (closed by the server or by something in between)`;
    case "EPIPE":
      return `${host} closed the connection while the request was being sent`;
    case "ECONNABORTED":
      return `the connection to ${host} was aborted`;
    case "ETIMEDOUT":
      return `connecting to ${host} timed out (no answer from the machine)`;
    case "EHOSTUNREACH":
    case "EHOSTDOWN":
      return `${host} is unreachable (no route to that host)`;
    case "ENETUNREACH":
    case "ENETDOWN":
      return `${host} is unreachable (this machine's network is down or has no route there)`;
    case "ENOTFOUND":
      return `no such host: ${name} (the DNS lookup found no address for it)`;
    case "EAI_AGAIN":
      return `the DNS lookup of ${name} failed for now (the name server did not answer); try again`;
    case "CERT_HAS_EXPIRED":
      return `the TLS certificate of ${host} has expired`;
    case "CERT_NOT_YET_VALID":
      return `the TLS certificate of ${host} is not valid yet (is this machine's clock right?)`;
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `the TLS certificate of ${host} is for other host names, not ${name}${pin} if it is the right server`;
  }
  if (code && UNTRUSTED_CERT.has(code)) {
    return `the TLS certificate of ${host} is not trusted (self-signed, or from an unknown authority)${pin}`;
  }
  // OpenSSL's reason often arrives only in the message, under the generic EPROTO.
  const reason = err.message.toLowerCase();
  if (
    code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    (code === "EPROTO" && reason.includes("wrong version number"))
  ) {
    return `${host} does not answer TLS on this port (a plain http:// server?)`;
  }
  if (
    (code && NO_TLS13.has(code)) ||
    (code === "EPROTO" && /protocol version|unsupported protocol|no protocols available/.test(reason))
  ) {
    return `${host} does not offer TLS 1.3, which LXD and Incus require of an image server`;
  }
  if (code?.startsWith("HPE_")) {
    return `${host} answered with something that is not HTTP (an https:// server addressed as http://?)`;
  }
  if (code === "EPROTO" || code?.startsWith("ERR_SSL_") || code?.startsWith("ERR_TLS_")) {
    return `the TLS handshake with ${host} failed (${code})`;
  }
  return `the connection to ${host} failed (${code ?? err.message})`;
}

/**
 * `err` as a `NetworkError` for a request to `url`: node's socket, DNS, TLS and parser errors
 * get a sentence naming the host (`code` and `cause` keep the original); a `NetworkError`, a
 * file-system error (reading an upload's body: it names its `path`), and anything that is not
 * an `Error`, are returned as they are.
 */
export function networkError(err: unknown, url: URL | string): unknown {
  if (!(err instanceof Error) || err instanceof NetworkError) return err;
  if ((err as NodeJS.ErrnoException).path !== undefined) return err;
  const u = typeof url === "string" ? new URL(url) : url;
  const code = (err as NodeJS.ErrnoException).code;
  return new NetworkError(code, socketFailure(err, u), u.href, { cause: err });
}

/**
 * A plain-words message for a failure to reach a server (`NetworkError`: refused or reset
 * connection, DNS, TLS with the flag that pins a certificate, a stall, a refused redirect);
 * null for anything else.
 */
export function describeConnectionError(err: unknown): string | null {
  return err instanceof NetworkError ? err.message : null;
}
