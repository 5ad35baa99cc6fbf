import { createHash, randomBytes, type Hash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { link, mkdir, open, readdir, rename, rm, stat, type FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";

import { dataPath } from "../layout.js";
import { KeyedQueue } from "../queue.js";
import { randomId, toBuffer } from "./bytes.js";
import {
  assertDigest,
  BlobNotFoundError,
  DigestMismatchError,
  TooLargeError,
  UploadNotFoundError,
  UploadOffsetError,
  type BlobInfo,
  type BlobStore,
  type ByteRange,
  type UploadState,
} from "./store.js";

/** Write and hash granularity: 1 MiB streams measured ~2× faster than the 64 KiB default (decisions.md). */
const CHUNK = 1 << 20;
/**
 * Read granularity for serving: each download holds about two chunks in memory (one being sent,
 * one read ahead), so 16 concurrent downloads cost ~16 MiB at 512 KiB against ~32 MiB at 1 MiB,
 * at the same throughput on loopback (bench/run.sh).
 */
const READ_CHUNK = 512 * 1024;
const HEX_RE = /^[0-9a-f]{64}$/;
const PREFIX_RE = /^[0-9a-f]{2}$/;

/** In-memory sha256 state of an upload session; valid only while `size` equals the file's size. */
interface Session {
  hash: Hash | null;
  size: number;
}

/**
 * `BlobStore` on a local data folder (layout in storage/layout.ts).
 *
 * - Whole-stream puts are written to `tmp/` while hashed, fsynced, made read-only (0444) and
 *   hard-linked to `blobs/sha256/<aa>/<hex>` only after the digest is known (and matched);
 *   `link` never replaces an existing blob, so a second copy of the same bytes is simply dropped.
 * - Upload sessions live in `uploads/<id>`; their sha256 state is kept in memory per session, so
 *   committing does not reread the bytes unless the process restarted since they were written.
 * - Appends, commits of one session are serialized in this process (across processes sharing
 *   the folder, by the caller's catalog lock). Each instance puts through its own folder under
 *   `tmp/`, so `open` in one process never removes another live process's temp files.
 */
export class FsBlobStore implements BlobStore {
  private readonly sessions = new Map<string, Session>();
  /** Appends and commits of one session run one after another. */
  private readonly queue = new KeyedQueue();
  private readonly uploadsDir: string;

  private constructor(
    private readonly dataDir: string,
    /** This instance's own folder under `tmp/`; no other process writes or removes it. */
    private readonly tmpDir: string,
  ) {
    this.uploadsDir = dataPath(dataDir, { kind: "uploadsRoot" });
  }

  /**
   * Create `blobs/`, `uploads/`, `tmp/` as needed, and this instance's own temp folder
   * `tmp/<hostname>-<pid>-<random>/`. Several processes may share a data folder, so only the
   * leftovers of dead writers are removed: folders of this host whose process is gone, any folder
   * untouched for a day, and loose entries of older versions.
   */
  static async open(dataDir: string): Promise<FsBlobStore> {
    const root = path.resolve(dataDir);
    const tmpRoot = dataPath(root, { kind: "tmp" });
    const own = `${HOST}-${process.pid}-${randomBytes(6).toString("hex")}`;
    const store = new FsBlobStore(root, dataPath(root, { kind: "tmpEntry", name: own }));
    const blobsRoot = dataPath(store.dataDir, { kind: "blobsRoot" });
    for (const dir of [blobsRoot, store.uploadsDir, tmpRoot]) {
      const created = await mkdir(dir, { recursive: true });
      // A fresh folder must survive a crash before the first blob's own fsync counts.
      if (created !== undefined) {
        for (let d = dir; d.length >= created.length; d = path.dirname(d)) await fsyncDir(path.dirname(d));
      }
    }
    for (const name of await readdir(tmpRoot)) {
      if (await isAbandoned(path.join(tmpRoot, name), name)) {
        await rm(path.join(tmpRoot, name), { recursive: true, force: true });
      }
    }
    await mkdir(store.tmpDir);
    return store;
  }

  /** Resolves when the data folder is there and readable. */
  async ping(): Promise<void> {
    await readdir(this.uploadsDir);
  }

  async stat(digest: string): Promise<BlobInfo | null> {
    try {
      const st = await stat(this.blobPath(digest));
      return { digest, size: st.size };
    } catch (err) {
      if (isCode(err, "ENOENT")) return null;
      throw err;
    }
  }

  /**
   * The blob's bytes; `range` is inclusive, its end is clamped to the last byte (as HTTP does).
   * A range that starts past the end, or ends before it starts, is a RangeError.
   */
  async read(digest: string, range?: ByteRange): Promise<Readable> {
    const file = this.blobPath(digest);
    let fh: FileHandle;
    try {
      fh = await open(file, "r");
    } catch (err) {
      if (isCode(err, "ENOENT")) throw new BlobNotFoundError(digest);
      throw err;
    }
    try {
      let start = 0;
      let end: number | undefined;
      if (range !== undefined) {
        const { size } = await fh.stat();
        if (
          !Number.isSafeInteger(range.start) ||
          !Number.isSafeInteger(range.end) ||
          range.start < 0 ||
          range.end < range.start ||
          range.start >= size
        ) {
          throw new RangeError(`range ${range.start}-${range.end} not satisfiable for ${size} bytes`);
        }
        start = range.start;
        end = Math.min(range.end, size - 1);
      }
      // The stream owns (and closes) the already-open handle, so a concurrent delete cannot
      // turn a found blob into a failed stream.
      return createReadStream(file, { fd: fh, start, end, highWaterMark: READ_CHUNK });
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async put(source: Readable, expectedDigest?: string): Promise<BlobInfo> {
    if (expectedDigest !== undefined) assertDigest(expectedDigest);
    const tmp = path.join(this.tmpDir, `put-${randomId()}`);
    try {
      const sink: Session = { hash: createHash("sha256"), size: 0 };
      // Recreated if another process removed it as abandoned (idle for more than a day).
      await mkdir(this.tmpDir, { recursive: true });
      const fh = await open(tmp, "wx", 0o600);
      try {
        await copyInto(source, fh, sink);
        await fh.sync();
        await fh.chmod(0o444);
      } finally {
        await fh.close();
      }
      if (sink.hash === null) throw new Error("hash state lost during put"); // copyInto only clears it when it throws
      const actual = `sha256:${sink.hash.digest("hex")}`;
      if (expectedDigest !== undefined && actual !== expectedDigest) {
        throw new DigestMismatchError(expectedDigest, actual, sink.size);
      }
      return await this.publish(tmp, actual, sink.size);
    } finally {
      // After a successful publish this only drops the temp name; the blob keeps its own link.
      await rm(tmp, { force: true });
    }
  }

  async *list(): AsyncIterable<BlobInfo> {
    const root = dataPath(this.dataDir, { kind: "blobsRoot" });
    for (const prefix of await readdirOrEmpty(root)) {
      if (!PREFIX_RE.test(prefix)) continue;
      for (const name of await readdirOrEmpty(path.join(root, prefix))) {
        if (!HEX_RE.test(name) || !name.startsWith(prefix)) continue;
        try {
          const st = await stat(path.join(root, prefix, name));
          if (st.isFile()) yield { digest: `sha256:${name}`, size: st.size };
        } catch (err) {
          if (!isCode(err, "ENOENT")) throw err; // deleted while listing
        }
      }
    }
  }

  async delete(digest: string): Promise<boolean> {
    try {
      await rm(this.blobPath(digest));
      return true;
    } catch (err) {
      if (isCode(err, "ENOENT")) return false;
      throw err;
    }
  }

  async createUpload(): Promise<UploadState> {
    const id = randomId();
    const file = this.uploadPath(id);
    const fh = await open(file, "wx", 0o600);
    let updatedAt: Date;
    try {
      updatedAt = (await fh.stat()).mtime;
    } finally {
      await fh.close();
    }
    await fsyncDir(this.uploadsDir);
    this.sessions.set(id, { hash: createHash("sha256"), size: 0 });
    return { id, offset: 0, updatedAt };
  }

  async uploadState(id: string): Promise<UploadState | null> {
    try {
      const st = await stat(this.uploadPath(id));
      return { id, offset: st.size, updatedAt: st.mtime };
    } catch (err) {
      if (!isCode(err, "ENOENT")) throw err;
      this.sessions.delete(id);
      return null;
    }
  }

  /**
   * Appends arrive in up-to-1-MiB writes, each hashed while the write is in flight. When the
   * source fails, the bytes already received are written and fsynced, then the source's error is
   * rethrown; the session's offset is the file's size. Past `maxBytes` the whole call is undone
   * (the session is back at `offset`), TooLargeError is thrown, and the rest of the source is left
   * unread and undestroyed for the caller to dispose of.
   */
  async append(id: string, offset: number, source: Readable, maxBytes?: number): Promise<UploadState> {
    const file = this.uploadPath(id);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new TypeError(`bad offset ${offset}`);
    if (maxBytes !== undefined && (!Number.isSafeInteger(maxBytes) || maxBytes < 0)) {
      throw new TypeError(`bad maxBytes ${maxBytes}`);
    }
    return this.serialized(id, async () => {
      const fh = await this.openUpload(id, file, "r+");
      try {
        const size = (await fh.stat()).size;
        if (offset !== size) throw new UploadOffsetError(id, size, offset);
        let session = this.sessions.get(id);
        if (session === undefined || session.size !== size) {
          // Restarted (or the file changed behind us): the hash cannot continue; commit rehashes.
          session = { hash: size === 0 ? createHash("sha256") : null, size };
          this.sessions.set(id, session);
        }
        const before = { size, hash: session.hash?.copy() ?? null };
        let failure: unknown = null;
        try {
          await copyInto(source, fh, session, maxBytes);
        } catch (err) {
          failure = err;
        }
        if (failure instanceof TooLargeError) {
          await fh.truncate(before.size);
          session.size = before.size;
          session.hash = before.hash;
        }
        await fh.sync();
        const st = await fh.stat();
        if (st.size !== session.size) {
          session.hash = null;
          session.size = st.size;
        }
        if (st.nlink === 0) {
          // Cancelled while we were writing: the bytes went to an unlinked file.
          this.sessions.delete(id);
          throw new UploadNotFoundError(id);
        }
        if (failure !== null) throw failure;
        return { id, offset: st.size, updatedAt: st.mtime };
      } finally {
        await fh.close();
      }
    });
  }

  async commitUpload(id: string, expectedDigest: string): Promise<BlobInfo> {
    const file = this.uploadPath(id);
    assertDigest(expectedDigest);
    return this.serialized(id, async () => {
      const fh = await this.openUpload(id, file, "r");
      let actual: string;
      let size: number;
      try {
        size = (await fh.stat()).size;
        const session = this.sessions.get(id);
        if (session?.hash && session.size === size) {
          actual = `sha256:${session.hash.copy().digest("hex")}`;
        } else {
          ({ digest: actual, size } = await hashFile(fh));
        }
        if (actual === expectedDigest) {
          await fh.sync();
          await fh.chmod(0o444);
        }
      } finally {
        await fh.close();
      }
      if (actual !== expectedDigest) {
        this.sessions.delete(id);
        await rm(file, { force: true });
        throw new DigestMismatchError(expectedDigest, actual, size);
      }
      let info: BlobInfo;
      try {
        info = await this.publish(file, actual, size);
      } catch (err) {
        if (isCode(err, "ENOENT") && !existsSync(file)) throw new UploadNotFoundError(id); // cancelled meanwhile
        throw err;
      }
      this.sessions.delete(id);
      await rm(file, { force: true });
      return info;
    });
  }

  /** Not queued behind a running append (a stalled client must not block expiry); that append then fails. */
  async cancelUpload(id: string): Promise<void> {
    const file = this.uploadPath(id);
    this.sessions.delete(id);
    await rm(file, { force: true });
  }

  async *listUploads(): AsyncIterable<UploadState> {
    for (const name of await readdirOrEmpty(this.uploadsDir)) {
      let file: string;
      try {
        file = this.uploadPath(name);
      } catch {
        continue; // not a session file
      }
      try {
        const st = await stat(file);
        if (st.isFile()) yield { id: name, offset: st.size, updatedAt: st.mtime };
      } catch (err) {
        if (!isCode(err, "ENOENT")) throw err;
      }
    }
  }

  localPath(digest: string): string | null {
    const file = this.blobPath(digest);
    return existsSync(file) ? file : null;
  }

  private blobPath(digest: string): string {
    assertDigest(digest);
    return dataPath(this.dataDir, { kind: "blob", hex: digest.slice("sha256:".length) });
  }

  /** Throws TypeError for an id the layout does not allow. */
  private uploadPath(id: string): string {
    return dataPath(this.dataDir, { kind: "upload", id });
  }

  private async openUpload(id: string, file: string, flags: "r" | "r+"): Promise<FileHandle> {
    try {
      return await open(file, flags);
    } catch (err) {
      if (!isCode(err, "ENOENT")) throw err;
      this.sessions.delete(id);
      throw new UploadNotFoundError(id);
    }
  }

  /**
   * Give a verified, fsynced, read-only file its content address. `link` fails when the address
   * is taken, so an existing blob is never replaced (dedupe); the caller removes `src`.
   */
  private async publish(src: string, digest: string, size: number): Promise<BlobInfo> {
    const dest = this.blobPath(digest);
    const dir = path.dirname(dest);
    for (let attempt = 0; ; attempt++) {
      if ((await mkdir(dir, { recursive: true })) !== undefined) await fsyncDir(path.dirname(dir));
      try {
        await linkOrRename(src, dest);
        await fsyncDir(dir);
        return { digest, size };
      } catch (err) {
        if (!isCode(err, "EEXIST")) throw err;
      }
      const existing = await this.stat(digest);
      if (existing !== null) return existing;
      if (attempt >= 2) throw new Error(`blob ${digest} keeps appearing and vanishing`); // racing deletes
    }
  }

  private serialized<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.queue.run(id, fn);
  }
}

/**
 * Write `source` at `sink.size` onward, coalescing small chunks into ~1 MiB writes and hashing
 * each batch while its write runs on the thread pool. `sink.size` counts bytes known written;
 * `sink.hash` is cleared when it may no longer match the file (a failed write). When the source
 * fails, what it delivered is still written before its error is rethrown.
 */
async function copyInto(source: Readable, fh: FileHandle, sink: Session, maxBytes?: number): Promise<void> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let received = 0;
  const flush = async (): Promise<void> => {
    if (pendingBytes === 0) return;
    const batch = pending;
    const n = pendingBytes;
    pending = [];
    pendingBytes = 0;
    const written = writeAll(fh, batch, sink.size);
    if (sink.hash) for (const b of batch) sink.hash.update(b);
    try {
      await written;
    } catch (err) {
      sink.hash = null;
      throw err;
    }
    sink.size += n;
  };
  try {
    // destroyOnReturn: false — on TooLargeError the caller still owns the (unread) rest.
    for await (const chunk of source.iterator({ destroyOnReturn: false }) as AsyncIterable<unknown>) {
      const buf = toBuffer(chunk);
      received += buf.length;
      if (maxBytes !== undefined && received > maxBytes) throw new TooLargeError(maxBytes);
      pending.push(buf);
      pendingBytes += buf.length;
      if (pendingBytes >= CHUNK) await flush();
    }
  } catch (err) {
    if (!(err instanceof TooLargeError)) {
      try {
        await flush();
      } catch {
        // the source's error is the one to report; the caller re-reads the size from the file
      }
    }
    throw err;
  }
  await flush();
}

async function writeAll(fh: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let bufs = buffers;
  let pos = position;
  let left = bufs.reduce((n, b) => n + b.length, 0);
  while (left > 0) {
    const { bytesWritten } = await fh.writev(bufs, pos);
    if (bytesWritten === 0) throw new Error("short write to blob file");
    pos += bytesWritten;
    left -= bytesWritten;
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const b of bufs) {
      if (skip >= b.length) skip -= b.length;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    bufs = rest;
  }
}

/** `<hostname>-<pid>-<12 hex>`; the host part is the sanitized hostname. */
const TMP_OWNER_RE = /^(.+)-([0-9]+)-[0-9a-f]{12}$/;
const HOST = os.hostname().replace(/[^A-Za-z0-9.-]/g, "_") || "host";
const ABANDONED_AFTER_MS = 24 * 3600 * 1000;

/**
 * Whether an entry of `tmp/` belongs to no live writer: a folder of this host whose process is
 * gone, anything untouched for a day (a pid can be reused), or a loose entry (older versions put
 * temp files directly in `tmp/`).
 */
async function isAbandoned(file: string, name: string): Promise<boolean> {
  const owner = TMP_OWNER_RE.exec(name);
  if (owner === null) return true;
  let mtimeMs: number;
  try {
    mtimeMs = (await stat(file)).mtimeMs;
  } catch (err) {
    if (isCode(err, "ENOENT")) return false; // its owner removed it meanwhile
    throw err;
  }
  if (Date.now() - mtimeMs > ABANDONED_AFTER_MS) return true;
  return owner[1] === HOST && !processAlive(Number(owner[2]));
}

function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isCode(err, "EPERM"); // alive, owned by another user
  }
}

/** sha256 and length of a whole file, read once in 1 MiB chunks (the handle stays open). */
async function hashFile(fh: FileHandle): Promise<BlobInfo> {
  const hash = createHash("sha256");
  let size = 0;
  const stream = createReadStream("", { fd: fh, autoClose: false, start: 0, highWaterMark: CHUNK });
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

/** `link` where the file system has hard links; otherwise a rename that still refuses to replace. */
async function linkOrRename(src: string, dest: string): Promise<void> {
  try {
    await link(src, dest);
  } catch (err) {
    if (!isCode(err, "EPERM") && !isCode(err, "ENOTSUP") && !isCode(err, "ENOSYS")) throw err;
    if (existsSync(dest)) throw Object.assign(new Error(`${dest} exists`), { code: "EEXIST" });
    await rename(src, dest);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if (isCode(err, "ENOENT")) return [];
    throw err;
  }
}

function isCode(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}
