import { readFile } from "node:fs/promises";
import { Readable } from "node:stream";
import type { ProductsDoc } from "../simplestreams/index.js";
import { VerificationError } from "./cache.js";
import {
  encodePath,
  HttpClient,
  HttpError,
  NetworkError,
  TimeoutError,
  describeConnectionError,
} from "./http.js";
import { keysForThumbprints, normalizeUrl, SerialStore } from "./remotes.js";
import { openStream, type RemoteTarget } from "./verify.js";

/**
 * The upstream of a pull-through cache over HTTP: the server side's `UpstreamSource` port
 * (registry/pull-through.ts, matched by shape: `client/` does not import `registry/`).
 *
 * Products are read with the pull chain (client/verify.ts `openStream`): with a pinned key the
 * signed statement is required and the documents are checked against it, serials kept in the
 * cache's data folder (`stateDir`) so a replayed older index is refused, and a rotation the
 * upstream announces is followed in memory (as `--key` with a URL; the configured key stays the
 * one trusted after a restart); with `noSignature` a
 * plain simplestreams server is read as it is (the cache still checks every file's sha256).
 * Files are streamed with one retry; a stall fails the fetch after `stallMs`.
 */
export interface HttpUpstreamOptions {
  url: string;
  /** JWK thumbprint of the upstream's statement key; null for `--upstream-no-signature`. */
  key: string | null;
  /** PEM file to trust for HTTPS instead of the system roots. */
  caFile?: string;
  /** Where the highest accepted serial is kept (`<data>/upstream`). */
  stateDir: string;
  /** No byte for this long (ms) fails a request as a timeout; default 30 s. */
  stallMs?: number;
}

export type UpstreamFailureKind =
  "unreachable" | "timeout" | "rate-limited" | "http" | "verification" | "digest-mismatch" | "other";

export class HttpUpstreamSource {
  readonly label: string;
  private target: RemoteTarget | null = null;
  private http: Promise<HttpClient> | null = null;
  private readonly serials: SerialStore;

  constructor(private readonly opts: HttpUpstreamOptions) {
    // Logged and shown in the status answer: never with credentials.
    const u = new URL(opts.url);
    u.username = "";
    u.password = "";
    this.label = u.href.replace(/\/+$/, "");
    this.serials = new SerialStore(opts.stateDir);
  }

  private client(): Promise<HttpClient> {
    this.http ??= (async () =>
      new HttpClient(this.opts.url, {
        ca: this.opts.caFile ? await readFile(this.opts.caFile) : undefined,
        userAgent: "lxhub-pull-through",
        retries: 1,
        // A client is waiting: a 429's Retry-After is honoured for 2 s at most before the one retry.
        retryMaxMs: 2_000,
        timeoutMs: this.opts.stallMs ?? 30_000,
      }))();
    return this.http;
  }

  /**
   * The pinned key is looked up in the upstream's JWKS on the first refresh that reaches it (as
   * `lxhub pull --key` does, but with one retry: a cache asks again at its next refresh).
   */
  private async resolve(): Promise<RemoteTarget> {
    if (!this.target) {
      const http = await this.client();
      const url = normalizeUrl(this.opts.url);
      const ca = this.opts.caFile ? await readFile(this.opts.caFile) : undefined;
      const keys = this.opts.key === null ? null : await keysForThumbprints(http, [this.opts.key]);
      this.target = { label: url, url, keys, ca };
    }
    return this.target;
  }

  async fetchProducts(): Promise<ProductsDoc[]> {
    const stream = await openStream(await this.resolve(), {
      serials: this.serials,
      retries: 1,
      stallMs: this.opts.stallMs ?? 30_000,
    });
    stream.close();
    return stream.products;
  }

  async open(path: string): Promise<Readable> {
    const res = await (await this.client()).getStream(encodePath(...path.split("/")));
    return Readable.from(res.chunks(), { objectMode: false });
  }

  classify(err: unknown): { kind: UpstreamFailureKind; message: string } {
    const message = describeConnectionError(err) ?? (err instanceof Error ? err.message : String(err));
    if (err instanceof TimeoutError) return { kind: "timeout", message };
    if (err instanceof HttpError) {
      if (err.status === 429)
        return { kind: "rate-limited", message: `${err.request ?? ""} ${message}`.trim() };
      if (err.status === 504) return { kind: "timeout", message: `${err.request ?? ""} ${message}`.trim() };
      return { kind: "http", message: `${err.request ?? ""} answered ${err.status}: ${message}`.trim() };
    }
    if (err instanceof VerificationError) return { kind: "verification", message };
    if (err instanceof NetworkError)
      return { kind: err.code === "ETIMEDOUT" ? "timeout" : "unreachable", message };
    return { kind: "other", message };
  }

  close(): void {
    void this.http?.then((h) => h.close());
  }
}
