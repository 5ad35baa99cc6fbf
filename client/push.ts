import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { readImageMetadata } from "../image/metadata.js";
import { distroArch } from "../simplestreams/arch.js";
import type { ImageMetadata, PublishableFtype } from "../simplestreams/types.js";
import { isValidVersionKey, versionFromDate } from "../simplestreams/version.js";
import { HttpClient, HttpError, describeConnectionError, encodePath, isTransient } from "./http.js";

/**
 * `lxhub push`: publish a distrobuilder output folder to an lxhub server through its publish API
 * (openapi.yaml): hash each file, skip blobs the server already has, upload the rest in resumable
 * chunks, then create the version from the digests. The server re-hashes every byte, checks
 * metadata.yaml against the product and computes the image fingerprints itself.
 */

/** Files distrobuilder writes, by name, and the ftype each is published as (simplestreams.md §3.1). */
const METADATA_NAMES = ["lxd.tar.xz", "incus.tar.xz", "meta.tar.xz"] as const;
const ROOT_FILES: ReadonlyArray<readonly [string, PublishableFtype]> = [
  ["rootfs.squashfs", "squashfs"],
  ["rootfs.tar.xz", "root.tar.xz"],
  ["disk.qcow2", "disk-kvm.img"],
];
const VM_FTYPES: ReadonlySet<string> = new Set(["disk-kvm.img", "disk1.img", "uefi1.img"]);

const MiB = 1024 * 1024;
/**
 * Bytes per PATCH. The server fsyncs at the end of each, and the client waits for that answer
 * before the next chunk, so fewer, larger chunks overlap network and disk better (1 GiB on
 * loopback: 4.56 s with 32 MiB chunks, 4.09 s with 256 MiB). A dropped chunk is not resent whole:
 * the client asks the server's offset and goes on from there.
 */
const DEFAULT_CHUNK = 256 * MiB;
const PUBLISH_TIMEOUT_MS = 15 * 60 * 1000;

export interface ImageFile {
  /** Name in the folder, kept as the published file name. */
  name: string;
  ftype: PublishableFtype;
  path: string;
  size: number;
}

export interface Product {
  os: string;
  release: string;
  /** Debian-style, as published (e.g. `amd64`). */
  arch: string;
  variant: string;
}

export type PushProgress =
  | { phase: "hash"; file: string; done: number; total: number }
  | { phase: "skip"; file: string; size: number }
  /** `done` counts bytes the server holds, so it starts at the resumed offset. */
  | { phase: "upload"; file: string; done: number; total: number }
  | { phase: "publish" };

export interface PushOptions {
  /** Server root URL, e.g. `https://localhost:8443`. */
  server: string;
  /** Folder holding the metadata tarball and root file(s). */
  dir: string;
  /** Bearer token with a `push:` scope matching the product (or `admin`). */
  token: string;
  /** PEM to pin the server's certificate. */
  ca?: string | Buffer;
  /** Extra aliases besides the defaults (`<os>/<release>/<variant>`, and `<os>/<release>` for `default`). */
  aliases?: string[];
  /** Version key; default: metadata.yaml's creation_date as `YYYYMMDD_HHMM` (UTC). */
  version?: string;
  onProgress?: (p: PushProgress) => void;
  /** Where open upload sessions are remembered; default `$XDG_CACHE_HOME/lxhub/uploads`. */
  stateDir?: string;
  /** Bytes per PATCH; default 256 MiB. */
  chunkSize?: number;
  /** Retries of a transient failure (also: attempts to resume a chunk without progress); default 4. */
  retries?: number;
  /** First backoff delay (ms); default 250. */
  retryBaseMs?: number;
  userAgent?: string;
}

export interface PushedFile {
  name: string;
  ftype: PublishableFtype;
  digest: string;
  size: number;
  /** false when the server already had the blob. */
  uploaded: boolean;
}

export interface PushResult {
  product: Product;
  version: string;
  /** true when the server created the version (201), false when it already had it (200). */
  created: boolean;
  aliases: string[];
  files: PushedFile[];
  /** Image fingerprints by root ftype, as the server computed them. */
  fingerprints: Record<string, string>;
  /** Whether every root file is a VM disk (then `lxc launch --vm`). */
  vm: boolean;
  /** Bytes sent in request bodies, including any sent again after a dropped connection. */
  bytesUploaded: number;
  /** Bytes not sent: blobs the server had, and what resumed sessions already held. */
  bytesSkipped: number;
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

/** Finds the metadata tarball and root files in a distrobuilder output folder. */
export async function findImageFiles(dir: string): Promise<ImageFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new Error(`cannot read image folder ${dir}: ${(err as Error).message}`);
  }
  const present = new Set(names);
  const metaName = METADATA_NAMES.find((n) => present.has(n));
  if (!metaName) {
    throw new Error(`no metadata tarball in ${dir} (expected one of ${METADATA_NAMES.join(", ")})`);
  }
  // distrobuilder writes `lxd.tar.xz`/`incus.tar.xz`/`meta.tar.xz`; the server publishes any metadata
  // file under both lxd.tar.xz and incus.tar.xz (simplestreams.md §0.1), so one ftype is enough.
  const picked: Array<[string, PublishableFtype]> = [[metaName, "lxd.tar.xz"]];
  for (const [name, ftype] of ROOT_FILES) if (present.has(name)) picked.push([name, ftype]);
  if (picked.length === 1) {
    throw new Error(
      `no root file in ${dir} (expected ${ROOT_FILES.map(([n]) => n).join(", ")} beside ${metaName})`,
    );
  }
  const files: ImageFile[] = [];
  for (const [name, ftype] of picked) {
    const p = path.join(dir, name);
    const st = await stat(p);
    if (!st.isFile()) throw new Error(`${p} is not a regular file`);
    files.push({ name, ftype, path: p, size: st.size });
  }
  return files;
}

/**
 * Product of an image from its metadata.yaml: os/release/variant from `properties` (variant
 * `default` when absent), arch from `properties.architecture`, else the top-level `architecture`,
 * published in its Debian spelling (simplestreams.md §4.6).
 */
export function productFromMetadata(meta: ImageMetadata): Product {
  const props = meta.properties;
  const os_ = props.os?.trim();
  const release = props.release?.trim();
  if (!os_ || !release) {
    throw new Error("metadata.yaml lacks properties.os or properties.release; cannot name the product");
  }
  const variant = props.variant?.trim() || "default";
  const raw = props.architecture?.trim() || meta.architecture;
  const arch = distroArch(raw);
  if (!arch)
    throw new Error(`metadata.yaml names architecture ${JSON.stringify(raw)}, which LXD does not know`);
  return { os: os_, release, arch, variant };
}

/**
 * Aliases as images.linuxcontainers.org names them (simplestreams.md §4.5): `<os>/<release>/<variant>`
 * with the os lower-cased, plus `<os>/<release>` for the `default` variant, then `extra`.
 * Aliases are joined with commas in the products file, so none may hold a comma or white space (pitfall 7).
 */
export function defaultAliases(product: Product, extra: string[] = []): string[] {
  const osName = product.os.toLowerCase();
  const out = [`${osName}/${product.release}/${product.variant}`];
  if (product.variant === "default") out.push(`${osName}/${product.release}`);
  for (const a of extra) {
    if (!a || /[\s,]/.test(a))
      throw new Error(`invalid alias ${JSON.stringify(a)}: empty, or holds a comma or white space`);
    out.push(a);
  }
  return [...new Set(out)];
}

/** sha256 of a file as `sha256:<hex>`, read in 1 MiB chunks. */
export async function hashFile(file: string, onBytes?: (done: number) => void): Promise<string> {
  const hash = createHash("sha256");
  let done = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: MiB })) {
    hash.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    onBytes?.(done);
  }
  return `sha256:${hash.digest("hex")}`;
}

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

/** Publishes the image in `opts.dir`; see the module comment for the steps. */
export async function pushImage(opts: PushOptions): Promise<PushResult> {
  const files = await findImageFiles(opts.dir);
  const meta = files[0] as ImageFile;
  let metadata: ImageMetadata;
  try {
    metadata = await readImageMetadata(meta.path);
  } catch (err) {
    throw new Error(`cannot read metadata.yaml from ${meta.path}: ${(err as Error).message}`);
  }
  const product = productFromMetadata(metadata);
  const version = opts.version ?? versionFromDate(new Date(metadata.creationDate * 1000));
  if (!isValidVersionKey(version)) {
    throw new Error(
      `invalid version ${JSON.stringify(version)}: it must start with a date YYYYMMDD and use only [0-9A-Za-z_.:-]`,
    );
  }
  const aliases = defaultAliases(product, opts.aliases);

  const http = new HttpClient(opts.server, {
    ca: opts.ca,
    token: opts.token,
    userAgent: opts.userAgent ?? "lxhub-push",
    retries: opts.retries,
    retryBaseMs: opts.retryBaseMs,
  });
  const uploader = new BlobUploader(http, serverKey(http), new UploadStateStore(opts.stateDir), opts);
  try {
    const pushed: PushedFile[] = [];
    const digests: string[] = [];
    for (const f of files) {
      const digest = await hashFile(f.path, (done) =>
        opts.onProgress?.({ phase: "hash", file: f.name, done, total: f.size }),
      );
      digests.push(digest);
    }
    // The metadata file goes first; each root file is then uploaded with it as prefix, so the
    // server computes the image fingerprint while the bytes pass instead of reading them again.
    const metaDigest = digests[files.findIndex((f) => f.ftype === "lxd.tar.xz")];
    for (const [i, f] of files.entries()) {
      const digest = digests[i] as string;
      const uploaded = await uploader.ensure(f, digest, f.ftype === "lxd.tar.xz" ? undefined : metaDigest);
      pushed.push({ name: f.name, ftype: f.ftype, digest, size: f.size, uploaded });
    }

    opts.onProgress?.({ phase: "publish" });
    const res = await http.json<VersionResponse>(
      "PUT",
      encodePath(
        "api",
        "v1",
        "products",
        product.os,
        product.release,
        product.arch,
        product.variant,
        "versions",
        version,
      ),
      {
        files: pushed.map((f) => ({ name: f.name, ftype: f.ftype, digest: f.digest })),
        aliases,
        release_title: product.release,
      },
      // A server that lost the upload-time fingerprints (restart) reads every file again first.
      { timeoutMs: PUBLISH_TIMEOUT_MS },
    );
    return {
      product,
      version,
      created: res.status === 201,
      aliases,
      files: pushed,
      fingerprints: res.data?.fingerprints ?? {},
      vm: files.slice(1).every((f) => VM_FTYPES.has(f.ftype)),
      bytesUploaded: uploader.bytesUploaded,
      bytesSkipped: uploader.bytesSkipped,
    };
  } finally {
    http.close();
  }
}

/** The server's identity in upload records: its base URL without a trailing slash. */
function serverKey(http: HttpClient): string {
  return http.baseUrl.href.replace(/\/+$/, "");
}

function offsetOf(
  headers: Record<string, string | string[] | undefined>,
  body: UploadResponse | null,
): number | null {
  const h = headers["upload-offset"];
  if (typeof h === "string" && /^\d+$/.test(h)) return Number(h);
  return typeof body?.offset === "number" ? body.offset : null;
}

/** Uploads one blob at a time through resumable sessions (openapi.yaml /api/v1/uploads). */
class BlobUploader {
  bytesUploaded = 0;
  bytesSkipped = 0;
  private readonly chunk: number;
  private readonly retries: number;
  private readonly retryBaseMs: number;

  constructor(
    private readonly http: HttpClient,
    private readonly server: string,
    private readonly state: UploadStateStore,
    private readonly opts: PushOptions,
  ) {
    this.chunk = opts.chunkSize ?? DEFAULT_CHUNK;
    this.retries = opts.retries ?? 4;
    this.retryBaseMs = opts.retryBaseMs ?? 250;
  }

  /** Makes sure the server has the blob; returns false when it already did. */
  async ensure(file: ImageFile, digest: string, prefix?: string): Promise<boolean> {
    if (await this.exists(digest)) {
      this.bytesSkipped += file.size;
      this.opts.onProgress?.({ phase: "skip", file: file.name, size: file.size });
      await this.state.delete(this.server, digest);
      return false;
    }
    await this.upload(file, digest, prefix);
    return true;
  }

  private async exists(digest: string): Promise<boolean> {
    const res = await this.http.request("HEAD", encodePath("api", "v1", "blobs", digest), { accept: [404] });
    return res.status === 200;
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
    file: ImageFile,
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

  private async upload(file: ImageFile, digest: string, prefix?: string): Promise<void> {
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

  private async commit(id: string, file: ImageFile, digest: string): Promise<void> {
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
      if (err instanceof HttpError && err.status === 404 && (await this.exists(digest))) return;
      throw err;
    }
  }

  private backoff(n: number): number {
    const cap = Math.min(15_000, this.retryBaseMs * 2 ** (n - 1));
    return cap / 2 + Math.random() * (cap / 2);
  }
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

/**
 * A one-line explanation of a push failure for a terminal: names a refused token as such, and
 * otherwise gives the server's code and message.
 */
export function describePushError(err: unknown): string {
  if (err instanceof HttpError) {
    // A bodiless answer (HEAD) has only the synthetic HTTP_<status> code: nothing more to quote.
    const says = err.code.startsWith("HTTP_") ? "" : ` (${err.code}: ${err.message})`;
    if (err.status === 401) return `the server rejected the token${says}; check --token or LXHUB_TOKEN`;
    if (err.status === 403) return `the token is not allowed to push this image${says}`;
    return `${err.request ?? "request"} failed: ${err.status} ${err.code}: ${err.message}`;
  }
  return describeConnectionError(err) ?? (err instanceof Error ? err.message : String(err));
}
