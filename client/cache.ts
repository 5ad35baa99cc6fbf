/**
 * The client's content-addressed cache of image files, and the one function that puts a file
 * there: `fetchFile` downloads (or reads from the cache) while hashing, resumes with `Range`,
 * retries transient failures, and can hand the same bytes, in order, to a sink such as a
 * `TarUnpacker` so a rootfs is unpacked in the same pass as its download.
 *
 * Layout:
 *
 *     $XDG_CACHE_HOME/lxhub/blobs/sha256/<hex>        a verified file (sha256 and size matched)
 *     $XDG_CACHE_HOME/lxhub/blobs/sha256/<hex>.part   a download in progress or interrupted
 *     $XDG_CACHE_HOME/lxhub/blobs/sha256/<hex>.lock   held (pid inside) while a process writes .part
 *
 * A verified file's mtime is its last use (set again on every cache hit), for the size cap's
 * least-recently-used eviction and the removal of abandoned `.part` files (client/cache-prune.ts).
 *
 * Only verified bytes ever get a `<hex>` name, and only through a rename. A `.part` is resumed:
 * its bytes are read once (hashed, and fed to the sink) and the rest is asked for with `Range`.
 * Cached files are hashed again as they are read, so a file damaged on disk is noticed, evicted,
 * and reported (`CACHE_CORRUPT`) instead of being trusted.
 */
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rename, rm, stat, utimes, type FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Writable } from "node:stream";
import { encodePath, HttpError, isTransient, NetworkError, type HttpClient } from "./http.js";

const MiB = 1024 * 1024;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Why a verification step refused; stable names for messages and tests. */
export type VerificationCode =
  /** The remote serves no signed statement, but one is required. */
  | "NO_STATEMENT"
  /** The statement is signed by a key that is not pinned. */
  | "UNTRUSTED_KEY"
  /** The statement does not verify (signature, expiry, replay, shape): see `detail`. */
  | "BAD_STATEMENT"
  /** An index document differs from the statement (or is not listed in it). */
  | "DOCUMENT_MISMATCH"
  /** A downloaded file's size or sha256 differs from the products file. */
  | "FILE_MISMATCH"
  /** sha256(meta ‖ root) differs from the image's fingerprint. */
  | "FINGERPRINT_MISMATCH"
  /** A cached file no longer matches its name (damaged on disk); it was removed. */
  | "CACHE_CORRUPT"
  /** A document or the index is malformed, or names an unsafe path. */
  | "BAD_DOCUMENT";

/** One step of the trust chain failed; the message names what and why, for a user. */
export class VerificationError extends Error {
  override name = "VerificationError";
  constructor(
    readonly code: VerificationCode,
    message: string,
    /** For FILE_MISMATCH: whether the bytes included a `.part` left by an earlier run. */
    readonly resumed = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** `$XDG_CACHE_HOME/lxhub` (or `~/.cache/lxhub`). */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".cache"), "lxhub");
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Whether a process of this pid exists (one of another user counts). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errno(err) === "EPERM";
  }
}

/** The blob folder; see the module comment. */
export class BlobCache {
  /** `<cache dir>/blobs/sha256`. */
  readonly dir: string;

  constructor(cacheDir: string = defaultCacheDir()) {
    this.dir = path.join(cacheDir, "blobs", "sha256");
  }

  private check(hex: string): string {
    // The digest comes from a remote's document: it becomes a file name only when it is plain hex.
    if (!SHA256_HEX.test(hex)) throw new Error(`not a sha256 digest: ${JSON.stringify(hex)}`);
    return hex;
  }

  path(hex: string): string {
    return path.join(this.dir, this.check(hex));
  }

  partPath(hex: string): string {
    return `${this.path(hex)}.part`;
  }

  /** Whether a verified file of this digest and size is cached. */
  async has(hex: string, size: number): Promise<boolean> {
    const st = await stat(this.path(hex)).catch(() => undefined);
    return st !== undefined && st.isFile() && st.size === size;
  }

  /**
   * Marks a verified file as just used: its mtime is its last use for least-recently-used
   * eviction (client/cache-prune.ts). A file gone meanwhile is not an error.
   */
  async touch(hex: string): Promise<void> {
    const now = new Date();
    await utimes(this.path(hex), now, now).catch(() => undefined);
  }

  async evict(hex: string): Promise<void> {
    await rm(this.path(hex), { force: true });
  }

  /**
   * Takes the write lock of a digest (its `.part`), so two pulls never append to the same file.
   * A lock whose process is gone is taken over. Returns the release function.
   */
  async lock(hex: string, what: string): Promise<() => Promise<void>> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = `${this.path(hex)}.lock`;
    for (let attempt = 0; ; attempt++) {
      try {
        const fh = await open(file, "wx", 0o600);
        await fh.writeFile(String(process.pid));
        await fh.close();
        return () => rm(file, { force: true });
      } catch (err) {
        if (errno(err) !== "EEXIST" || attempt > 0) throw err;
      }
      const pid = Number((await readFile(file, "utf8").catch(() => "")).trim());
      if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new Error(
          `another lxhub process (pid ${pid}) is downloading ${what}; wait for it, or remove ${file} if it is stale`,
        );
      }
      await rm(file, { force: true });
    }
  }
}

/**
 * A sha256 that callers share across files (the image fingerprint: meta then root), held in a
 * box so that `fetchFile` can roll it back with `Hash.copy()` when a cached file turns out bad.
 */
export class HashChain {
  constructor(public hash: Hash = createHash("sha256")) {}

  digest(): string {
    return this.hash.digest("hex");
  }
}

/** A file to fetch, as the products file describes it. */
export interface FileRef {
  /** Name for messages, e.g. `rootfs.squashfs`. */
  name: string;
  /** Path relative to the mirror root. */
  path: string;
  /** 64 lower-case hex. */
  sha256: string;
  size: number;
}

export interface FetchProgress {
  file: string;
  /** Bytes of the file passed on so far (from the cache, a resumed part or the network). */
  done: number;
  total: number;
  /** Where the bytes come from right now. */
  source: "cache" | "part" | "network";
}

export interface FetchOptions {
  http: HttpClient;
  cache: BlobCache;
  /** Hash continued with this file's bytes (the image fingerprint). */
  chain?: HashChain;
  /**
   * Receives the file's bytes in order, with backpressure (e.g. `TarUnpacker.writable()`); it is
   * not ended here. If it fails, it gets no more bytes, but the download goes on so the file is
   * still verified (a hash mismatch is the more useful report) and cached.
   */
  sink?: Writable;
  onProgress?: (p: FetchProgress) => void;
  signal?: AbortSignal;
  /** Attempts after a transient failure without progress; default 4. */
  retries?: number;
  /** First backoff delay (ms); default 250. */
  retryBaseMs?: number;
}

export interface FetchResult {
  /** The verified file in the cache. */
  file: string;
  /** Bytes received from the network for this file (0 on a cache hit). */
  downloaded: number;
  /** Bytes taken from a `.part` of an earlier run. */
  resumedFrom: number;
  cached: boolean;
}

/** `path` (relative to the mirror root, as in a products file) as a request path. */
export function requestPath(rel: string): string {
  const segments = rel.split("/").filter((s) => s !== "");
  if (segments.length === 0 || segments.some((s) => s === "." || s === ".." || s.includes("\0"))) {
    throw new VerificationError("BAD_DOCUMENT", `unsafe path ${JSON.stringify(rel)} in the products file`);
  }
  return encodePath(...segments);
}

/** Writes to the sink with backpressure; a failed or closed sink is skipped. */
async function feed(sink: Writable | undefined, chunk: Buffer): Promise<void> {
  if (!sink || sink.destroyed || sink.writableEnded) return;
  if (sink.write(chunk)) return;
  if (sink.destroyed) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      sink.off("drain", done);
      sink.off("close", done);
      sink.off("error", done);
      resolve();
    };
    sink.on("drain", done);
    sink.on("close", done);
    sink.on("error", done);
  });
}

/** Appends to a `.part` in 1 MiB writes. */
class PartWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly fh: FileHandle) {}

  async write(chunk: Buffer): Promise<void> {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= MiB) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const buf = this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    let off = 0;
    while (off < buf.length) off += (await this.fh.write(buf, off, buf.length - off)).bytesWritten;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function mismatch(ref: FileRef, got: string, resumed: boolean): VerificationError {
  return new VerificationError(
    "FILE_MISMATCH",
    `${ref.name} (${ref.path}) has sha256 ${got}, but the products file says ${ref.sha256}` +
      (resumed ? " (the download resumed a partial file of an earlier run, which was removed)" : ""),
    resumed,
  );
}

/**
 * Makes sure the verified file is in the cache, passing its bytes in order through `chain` and
 * `sink` on the way: read from the cache on a hit, otherwise downloaded into `<hex>.part`
 * (resumed from an earlier run's part, retried from where it broke off after a dropped
 * connection) and renamed to `<hex>` once its size and sha256 matched.
 *
 * Throws `VerificationError` FILE_MISMATCH (the `.part` is removed) or CACHE_CORRUPT (the
 * cached file is removed; with a sink the caller must start over, without one the file was
 * downloaded again instead), the HTTP error after the retries, or the signal's reason.
 */
export async function fetchFile(ref: FileRef, opts: FetchOptions): Promise<FetchResult> {
  const { cache, chain, sink } = opts;
  if (!SHA256_HEX.test(ref.sha256)) {
    // LXD compares lower-case hex strings: anything else is a mismatch (pitfall 5).
    throw new VerificationError(
      "BAD_DOCUMENT",
      `${ref.name} (${ref.path}): sha256 ${JSON.stringify(ref.sha256)} is not 64 lower-case hex`,
    );
  }
  if (!Number.isSafeInteger(ref.size) || ref.size < 0) {
    throw new VerificationError("BAD_DOCUMENT", `${ref.name} (${ref.path}): invalid size ${ref.size}`);
  }
  sink?.on("error", () => undefined);
  const progress = (done: number, source: FetchProgress["source"]): void =>
    opts.onProgress?.({ file: ref.name, done, total: ref.size, source });

  if (await cache.has(ref.sha256, ref.size)) {
    const saved = chain?.hash.copy();
    const hash = createHash("sha256");
    let done = 0;
    for await (const data of createReadStream(cache.path(ref.sha256), { highWaterMark: MiB })) {
      const chunk = data as Buffer;
      hash.update(chunk);
      chain?.hash.update(chunk);
      await feed(sink, chunk);
      done += chunk.length;
      progress(done, "cache");
      opts.signal?.throwIfAborted();
    }
    const got = hash.digest("hex");
    if (got === ref.sha256) {
      await cache.touch(ref.sha256);
      return { file: cache.path(ref.sha256), downloaded: 0, resumedFrom: 0, cached: true };
    }
    await cache.evict(ref.sha256);
    if (sink) {
      throw new VerificationError(
        "CACHE_CORRUPT",
        `the cached copy of ${ref.name} (${cache.path(ref.sha256)}) was damaged (sha256 ${got}); it was removed`,
      );
    }
    if (chain && saved) chain.hash = saved;
  }

  const release = await cache.lock(ref.sha256, ref.name);
  try {
    return await download(ref, opts, progress);
  } finally {
    await release();
  }
}

async function download(
  ref: FileRef,
  opts: FetchOptions,
  progress: (done: number, source: FetchProgress["source"]) => void,
): Promise<FetchResult> {
  const { cache, chain, sink, http, signal } = opts;
  const part = cache.partPath(ref.sha256);
  const hash = createHash("sha256");
  let offset = 0;

  const existing = await stat(part).catch(() => undefined);
  if (existing && (!existing.isFile() || existing.size > ref.size)) await rm(part, { force: true });
  else if (existing && existing.size > 0) {
    // Rehash the bytes of the earlier run once (and feed them on), then ask only for the rest.
    for await (const data of createReadStream(part, { highWaterMark: MiB, end: existing.size - 1 })) {
      const chunk = data as Buffer;
      hash.update(chunk);
      chain?.hash.update(chunk);
      await feed(sink, chunk);
      offset += chunk.length;
      progress(offset, "part");
      signal?.throwIfAborted();
    }
  }
  const resumedFrom = offset;

  const fh = await open(part, "a", 0o600);
  const writer = new PartWriter(fh);
  let downloaded = 0;
  try {
    const retries = opts.retries ?? 4;
    const base = opts.retryBaseMs ?? 250;
    let failures = 0;
    const reqPath = requestPath(ref.path);
    while (offset < ref.size) {
      const start = offset;
      try {
        const res = await http.getStream(reqPath, {
          range: offset > 0 ? { start: offset } : undefined,
          signal,
          retries: 0,
        });
        let skip = 0;
        if (offset > 0 && res.status === 206) {
          const m = /^bytes (\d+)-/.exec(String(res.headers["content-range"] ?? ""));
          if (!m || Number(m[1]) !== offset) {
            res.body.destroy();
            throw new Error(
              `${res.url}: asked to resume from byte ${offset}, the server sent the range ` +
                `${JSON.stringify(res.headers["content-range"] ?? "(none)")}`,
            );
          }
        } else if (offset > 0) {
          // The server ignored Range: drop what the part already holds (the content is immutable).
          skip = offset;
        }
        try {
          for await (const data of res.chunks()) {
            let chunk = data;
            downloaded += chunk.length;
            if (skip > 0) {
              if (chunk.length <= skip) {
                skip -= chunk.length;
                continue;
              }
              chunk = chunk.subarray(skip);
              skip = 0;
            }
            if (offset + chunk.length > ref.size) {
              throw new VerificationError(
                "FILE_MISMATCH",
                `${ref.name} (${ref.path}) is longer than the ${ref.size} bytes the products file says`,
              );
            }
            hash.update(chunk);
            chain?.hash.update(chunk);
            await writer.write(chunk);
            await feed(sink, chunk);
            offset += chunk.length;
            progress(offset, "network");
          }
        } finally {
          res.body.destroy();
        }
        if (offset < ref.size) {
          throw new NetworkError(
            "ECONNRESET",
            `${new URL(res.url).host} ended the answer after ${offset} of the ${ref.size} bytes of ${res.url}`,
            res.url,
          );
        }
      } catch (err) {
        if (err instanceof VerificationError) {
          await rm(part, { force: true });
          throw err;
        }
        if (signal?.aborted) throw signal.reason as Error;
        if (err instanceof HttpError && err.status === 416) {
          await rm(part, { force: true });
          throw new VerificationError(
            "FILE_MISMATCH",
            `${ref.name} (${ref.path}) on the server is shorter than the ${ref.size} bytes the products file says`,
          );
        }
        if (!isTransient(err)) throw err;
        if (offset > start) failures = 0;
        if (++failures > retries) throw err;
        await writer.flush();
        const cap = Math.min(15_000, base * 2 ** (failures - 1));
        await sleep(cap / 2 + Math.random() * (cap / 2), signal);
      }
    }
    await writer.flush();
    await fh.sync();
  } finally {
    // Keep what arrived for the next run (unless it was removed above as corrupt).
    await writer.flush().catch(() => undefined);
    await fh.close();
  }

  const got = hash.digest("hex");
  if (got !== ref.sha256) {
    await rm(part, { force: true });
    throw mismatch(ref, got, resumedFrom > 0);
  }
  await rename(part, cache.path(ref.sha256));
  return { file: cache.path(ref.sha256), downloaded, resumedFrom, cached: false };
}
