import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { HttpClient, HttpError, encodePath, isTransient } from "./http.js";

/**
 * The `Publisher` port: how images are published, whatever the target. `lxhub push` and the
 * mirror hash files, then hand them to a Publisher: `HttpPublisher` (here) speaks the publish API
 * (openapi.yaml) of a remote server; the direct one (`cli/direct-publisher.ts`) writes into a
 * registry opened on this machine. Either way the target re-hashes every byte, checks
 * metadata.yaml against the product and computes the image fingerprints itself.
 */

/** A product as published (arch in its Debian spelling, e.g. `amd64`). */
export interface Product {
  os: string;
  release: string;
  arch: string;
  variant: string;
}

/** A file to publish: where its bytes are, its published name and ftype, its size. */
export interface PublishFile {
  path: string;
  name: string;
  ftype: string;
  size: number;
}

/** A version to create from blobs the target already holds. */
export interface PublishRequest {
  /** `deltaBase`: delta files only, the version the delta applies to. */
  files: { name: string; ftype: string; digest: string; deltaBase?: string }[];
  aliases: string[];
  releaseTitle: string;
  /** Default: the product's current ones (none for a new product). */
  requirements?: Record<string, string>;
}

/** A live version as the target holds it. */
export interface HeldVersion {
  files: { name: string; ftype: string; digest: string }[];
  /** Image fingerprints by root ftype. */
  fingerprints: Record<string, string>;
}

export interface PublishOutcome {
  /** false when the target already had this version with these files. */
  created: boolean;
  /** Image fingerprints by root ftype, as the target computed them. */
  fingerprints: Record<string, string>;
}

/** What a Publisher reports while it moves a file's bytes. */
export type PutProgress =
  | { phase: "skip"; file: string; size: number }
  /** `done` counts bytes the target holds, so it starts at a resumed offset. */
  | { phase: "upload"; file: string; done: number; total: number };

export interface Publisher {
  /** Whether the target holds the blob `digest` (`sha256:<hex>`). */
  hasBlob(digest: string): Promise<boolean>;
  /**
   * Makes sure the target holds the file's bytes as blob `digest`; returns whether bytes were sent
   * (false when it already had them). With `prefix` (the metadata tarball's digest, uploaded
   * first), the target hashes prefix ‖ bytes as they pass, so the image fingerprint needs no
   * second read. Resumable where the adapter can be.
   */
  putFile(file: PublishFile, digest: string, prefix?: string): Promise<boolean>;
  /** Creates `version` of `product` from blobs the target holds (idempotent for the same files). */
  publishVersion(product: Product, version: string, req: PublishRequest): Promise<PublishOutcome>;
  /** The product's live versions by name (empty when the target has no such product). */
  versions(product: Product): Promise<Map<string, HeldVersion>>;
  /** Withdraws a live version from the target's documents (its name is never reused). */
  deleteVersion(product: Product, version: string): Promise<void>;
  /** Bytes sent so far, including any sent again after a dropped connection. */
  readonly bytesUploaded: number;
  /** Bytes not sent: blobs the target had, and what resumed sessions already held. */
  readonly bytesSkipped: number;
  close(): void | Promise<void>;
}

const MiB = 1024 * 1024;
/**
 * Bytes per PATCH. The server fsyncs at the end of each, and the client waits for that answer
 * before the next chunk, so fewer, larger chunks overlap network and disk better (1 GiB on
 * loopback: 4.56 s with 32 MiB chunks, 4.09 s with 256 MiB). A dropped chunk is not resent whole:
 * the client asks the server's offset and goes on from there.
 */
const DEFAULT_CHUNK = 256 * MiB;
const PUBLISH_TIMEOUT_MS = 15 * 60 * 1000;

/** Default folder of upload-session records: `$XDG_CACHE_HOME/lxhub/uploads` (or `~/.cache/…`). */
export function defaultStateDir(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  const base = xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".cache");
  return path.join(base, "lxhub", "uploads");
}

/** What is remembered of an open upload session so that a later run can resume it. */
export interface UploadRecord {
  server: string;
  digest: string;
  id: string;
  size: number;
  file: string;
  createdAt: string;
}

/**
 * Open upload sessions, one small JSON file each, keyed by server + digest. Best effort: a
 * record that cannot be written only costs a restart from zero next time, so write errors are
 * ignored rather than failing a push.
 */
export class UploadStateStore {
  constructor(readonly dir: string = defaultStateDir()) {}

  private fileFor(server: string, digest: string): string {
    const key = createHash("sha256").update(`${server}\n${digest}`).digest("hex");
    return path.join(this.dir, `${key}.json`);
  }

  async get(server: string, digest: string): Promise<UploadRecord | null> {
    try {
      const rec = JSON.parse(await readFile(this.fileFor(server, digest), "utf8")) as Partial<UploadRecord>;
      if (rec.server !== server || rec.digest !== digest || typeof rec.id !== "string" || !rec.id)
        return null;
      return rec as UploadRecord;
    } catch {
      return null;
    }
  }

  async put(rec: UploadRecord): Promise<void> {
    const file = this.fileFor(rec.server, rec.digest);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await writeFile(tmp, JSON.stringify(rec) + "\n", { mode: 0o600 });
      await rename(tmp, file);
    } catch {
      await rm(tmp, { force: true }).catch(() => undefined);
    }
  }

  async delete(server: string, digest: string): Promise<void> {
    await rm(this.fileFor(server, digest), { force: true }).catch(() => undefined);
  }
}

export interface HttpPublisherOptions {
  /** Server root URL, e.g. `https://localhost:8443`. */
  server: string;
  /** Bearer token with a `push:` scope matching the product (or `admin`). */
  token: string;
  /** PEM to pin the server's certificate. */
  ca?: string | Buffer;
  /** Where open upload sessions are remembered; default `$XDG_CACHE_HOME/lxhub/uploads`. */
  stateDir?: string;
  /** Bytes per PATCH; default 256 MiB. */
  chunkSize?: number;
  /** Retries of a transient failure (also: attempts to resume a chunk without progress); default 4. */
  retries?: number;
  /** First backoff delay (ms); default 250. */
  retryBaseMs?: number;
  userAgent?: string;
  onProgress?: (p: PutProgress) => void;
}

/** Version as the server answers it (openapi.yaml, Version). */
interface VersionResponse {
  product?: string;
  version?: string;
  fingerprints?: Record<string, string>;
}

interface UploadResponse {
  id?: string;
  offset?: number;
}

/**
 * The Publisher over a server's publish API: blobs through resumable upload sessions
 * (openapi.yaml /api/v1/uploads), remembered in an UploadStateStore so that a later run resumes
 * them, one at a time; versions by PUT.
 */
export class HttpPublisher implements Publisher {
  bytesUploaded = 0;
  bytesSkipped = 0;
  private readonly http: HttpClient;
  /** The server's identity in upload records: its base URL without a trailing slash. */
  private readonly server: string;
  private readonly state: UploadStateStore;
  private readonly chunk: number;
  private readonly retries: number;
  private readonly retryBaseMs: number;

  constructor(private readonly opts: HttpPublisherOptions) {
    this.http = new HttpClient(opts.server, {
      ca: opts.ca,
      token: opts.token,
      userAgent: opts.userAgent ?? "lxhub-push",
      retries: opts.retries,
      retryBaseMs: opts.retryBaseMs,
    });
    this.server = this.http.baseUrl.href.replace(/\/+$/, "");
    this.state = new UploadStateStore(opts.stateDir);
    this.chunk = opts.chunkSize ?? DEFAULT_CHUNK;
    this.retries = opts.retries ?? 4;
    this.retryBaseMs = opts.retryBaseMs ?? 250;
  }

  close(): void {
    this.http.close();
  }

  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.http.request("HEAD", encodePath("api", "v1", "blobs", digest), { accept: [404] });
    return res.status === 200;
  }

  async putFile(file: PublishFile, digest: string, prefix?: string): Promise<boolean> {
    if (await this.hasBlob(digest)) {
      this.bytesSkipped += file.size;
      this.opts.onProgress?.({ phase: "skip", file: file.name, size: file.size });
      await this.state.delete(this.server, digest);
      return false;
    }
    await this.upload(file, digest, prefix);
    return true;
  }

  async publishVersion(product: Product, version: string, req: PublishRequest): Promise<PublishOutcome> {
    const res = await this.http.json<VersionResponse>(
      "PUT",
      productPath(product, version),
      {
        files: req.files.map((f) => ({
          name: f.name,
          ftype: f.ftype,
          digest: f.digest,
          ...(f.deltaBase !== undefined ? { delta_base: f.deltaBase } : {}),
        })),
        aliases: req.aliases,
        release_title: req.releaseTitle,
        ...(req.requirements ? { requirements: req.requirements } : {}),
      },
      // A server that lost the upload-time fingerprints (restart) reads every file again first.
      { timeoutMs: PUBLISH_TIMEOUT_MS },
    );
    return { created: res.status === 201, fingerprints: res.data?.fingerprints ?? {} };
  }

  async versions(product: Product): Promise<Map<string, HeldVersion>> {
    const res = await this.http.json<{ versions?: (HeldVersion & { version?: string })[] }>(
      "GET",
      productPath(product),
      undefined,
      { accept: [404] },
    );
    const out = new Map<string, HeldVersion>();
    if (res.status === 404) return out;
    for (const v of res.data?.versions ?? []) {
      if (typeof v.version !== "string" || !Array.isArray(v.files)) continue;
      out.set(v.version, { files: v.files, fingerprints: v.fingerprints ?? {} });
    }
    return out;
  }

  async deleteVersion(product: Product, version: string): Promise<void> {
    await this.http.request("DELETE", productPath(product, version));
  }

  /** A remembered session with its offset, or null when there is none or the server forgot it. */
  private async resume(digest: string, size: number): Promise<{ id: string; offset: number } | null> {
    const rec = await this.state.get(this.server, digest);
    if (!rec || rec.size !== size) return null;
    try {
      const offset = await this.offset(rec.id);
      if (offset > size) throw new Error(`upload session ${rec.id} holds ${offset} bytes, more than ${size}`);
      return { id: rec.id, offset };
    } catch (err) {
      // 404: expired or committed; 403: opened with another token. Either way, start afresh.
      if (err instanceof HttpError && (err.status === 404 || err.status === 403)) {
        await this.state.delete(this.server, digest);
        return null;
      }
      throw err;
    }
  }

  private async open(
    file: PublishFile,
    digest: string,
    prefix?: string,
  ): Promise<{ id: string; offset: number }> {
    const res = await this.http.json<UploadResponse>(
      "POST",
      "/api/v1/uploads",
      undefined,
      prefix ? { query: { prefix } } : {},
    );
    const id = res.data?.id;
    if (typeof id !== "string" || !id) throw new Error("the server opened an upload session without an id");
    await this.state.put({
      server: this.server,
      digest,
      id,
      size: file.size,
      file: path.resolve(file.path),
      createdAt: new Date().toISOString(),
    });
    return { id, offset: offsetOf(res.headers, res.data) ?? 0 };
  }

  private async offset(id: string): Promise<number> {
    const res = await this.http.json<UploadResponse>("GET", encodePath("api", "v1", "uploads", id));
    const offset = offsetOf(res.headers, res.data);
    if (offset === null) throw new Error(`the server did not say how far upload ${id} got`);
    return offset;
  }

  private async upload(file: PublishFile, digest: string, prefix?: string): Promise<void> {
    let session = await this.resume(digest, file.size);
    if (session) this.bytesSkipped += session.offset;
    else session = await this.open(file, digest, prefix);
    const report = (done: number) =>
      this.opts.onProgress?.({ phase: "upload", file: file.name, done, total: file.size });
    report(session.offset);

    let failures = 0;
    let restarts = 0;
    while (session.offset < file.size) {
      const start = session.offset;
      const end = Math.min(start + this.chunk, file.size) - 1;
      let sent = 0;
      try {
        const res = await this.http.uploadFileRange(
          "PATCH",
          encodePath("api", "v1", "uploads", session.id),
          file.path,
          start,
          end,
          {
            headers: { "content-range": `bytes ${start}-${end}/${file.size}` },
            onUploadProgress: (n) => {
              sent = n;
              report(start + n);
            },
          },
        );
        this.bytesUploaded += sent;
        const next = offsetOf(res.headers, parseJson<UploadResponse>(res.body)) ?? end + 1;
        if (next > file.size)
          throw new Error(`the server claims ${next} bytes of ${file.name}, more than its size`);
        if (next > start) failures = 0;
        session.offset = next;
        continue;
      } catch (err) {
        this.bytesUploaded += sent;
        const mismatch =
          err instanceof HttpError && (err.status === 416 || err.code === "UPLOAD_OFFSET_MISMATCH");
        const gone = err instanceof HttpError && err.status === 404;
        if (gone) {
          // The session expired (or was cancelled) under us: its bytes are gone, start a new one.
          await this.state.delete(this.server, digest);
          if (++restarts > 2) throw err;
          session = await this.open(file, digest, prefix);
          continue;
        }
        if (!mismatch && !isTransient(err)) throw err;
        if (++failures > this.retries) throw err;
        if (!mismatch) await delay(this.backoff(failures));
      }
      // The server keeps what arrived before a failure (openapi.yaml PATCH): ask, and go on from there.
      try {
        session.offset = await this.offset(session.id);
        if (session.offset > file.size) {
          throw new Error(`the server claims ${session.offset} bytes of ${file.name}, more than its size`);
        }
        if (session.offset > start) failures = 0;
      } catch (err) {
        if (!(err instanceof HttpError && err.status === 404)) throw err;
        await this.state.delete(this.server, digest);
        if (++restarts > 2) throw err;
        session = await this.open(file, digest, prefix);
      }
      report(session.offset);
    }

    await this.commit(session.id, file, digest);
    await this.state.delete(this.server, digest);
  }

  private async commit(id: string, file: PublishFile, digest: string): Promise<void> {
    try {
      await this.http.request("PUT", encodePath("api", "v1", "uploads", id), { query: { digest } });
    } catch (err) {
      if (err instanceof HttpError && err.code === "DIGEST_MISMATCH") {
        await this.state.delete(this.server, digest);
        throw new Error(
          `the server computed a different sha256 for ${file.path} than ${digest} (did the file change while uploading?)`,
        );
      }
      // A retried commit whose first attempt went through finds the session gone: check the blob.
      if (err instanceof HttpError && err.status === 404 && (await this.hasBlob(digest))) return;
      throw err;
    }
  }

  private backoff(n: number): number {
    const cap = Math.min(15_000, this.retryBaseMs * 2 ** (n - 1));
    return cap / 2 + Math.random() * (cap / 2);
  }
}

/** `/api/v1/products/{os}/{release}/{arch}/{variant}[/versions/{version}]`. */
function productPath(p: Product, version?: string): string {
  const base = ["api", "v1", "products", p.os, p.release, p.arch, p.variant];
  return encodePath(...base, ...(version === undefined ? [] : ["versions", version]));
}

function offsetOf(
  headers: Record<string, string | string[] | undefined>,
  body: UploadResponse | null,
): number | null {
  const h = headers["upload-offset"];
  if (typeof h === "string" && /^\d+$/.test(h)) return Number(h);
  return typeof body?.offset === "number" ? body.offset : null;
}

function parseJson<T>(body: Buffer): T | null {
  try {
    return body.length ? (JSON.parse(body.toString("utf8")) as T) : null;
  } catch {
    return null;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
