/**
 * Unpacking a (root file system) tar archive into a directory, safely, for `lxhub pull`.
 *
 * The archive is untrusted until its hash has been checked, and `pull` unpacks while it downloads,
 * so everything here assumes a hostile archive. The contract:
 *
 * - **One place is written**: a staging directory, created private (mode 0700) beside the
 *   destination so that moving it into place is one `rename(2)` on one file system. Nothing is
 *   visible at the destination before the whole archive succeeded; on any failure the staging
 *   directory is removed and the destination is left as it was. The destination must be absent
 *   or an empty directory.
 * - **Names**: absolute names, `..` components and NUL bytes are refused (with the entry named);
 *   `./` prefixes, repeated and trailing slashes are normalised away; `.` is the root itself.
 * - **Nothing is written through a symbolic link**: every parent of an entry must be a real
 *   directory of the tree (a symlink met on the way, one made earlier by the same archive
 *   included, is refused), and the entry itself is created with `O_EXCL`/`O_NOFOLLOW` after
 *   removing whatever non-directory held its name, so an old symlink there is replaced, never
 *   followed. Symlink targets are stored as written: they may point anywhere.
 * - **Hard links** must name, relative to the archive's root, a regular file already unpacked
 *   (not absolute, no `..`, no symlink on the way).
 * - **Device nodes and FIFOs** are created only as root (through `mknod` from coreutils, since
 *   Node cannot call mknod(2)) and refused otherwise; `specialFiles` changes that.
 * - **Owners and special bits**: with `preserveOwnership` (the default as root) uid/gid are
 *   restored numerically, as `tar --numeric-owner` does, and setuid/setgid/sticky bits are kept;
 *   without it owners are ignored and those bits stripped, so no setuid file ends up owned by the
 *   unpacking user. Permission bits are restored exactly (the umask is not applied), mtimes on
 *   files, symlinks and directories (directories last, after their contents). Directories the
 *   archive only implies get 0755, as does the root unless the archive has a `.`/`./` entry.
 * - **Limits**: the decompressed tar stream may not pass `maxBytes`, nor the archive hold more
 *   than `maxEntries` entries; an entry's data may not exceed its declared size. Pax headers and
 *   GNU long names are tar-stream's business; sparse files and unknown entry types are refused.
 *
 * The guarantees rest on the staging directory being private to one unpacker while it works
 * (it is created 0700, and nobody else should write there).
 *
 * Speed: most rootfs entries are small, and one async call chain per file costs ~150 µs where
 * synchronous calls reach 14k–34k files/s (decisions.md, tar), so small files are written with
 * synchronous calls; files above `SYNC_WRITE_MAX` are streamed with async writes, so memory
 * stays flat and the event loop stays free for the download feeding us.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  write as fsWrite,
  writeSync,
} from "node:fs";
import { readdir, rename, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Writable, type Duplex, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract as tarExtract, type Extract, type ExtractEvents, type Header } from "tar-stream";
import {
  CodecUnavailableError,
  decompressStream,
  detectCompression,
  MAGIC_LENGTH,
  type Compression,
} from "./codec.js";
import { ImageFormatError } from "./errors.js";

/** Default `maxBytes`: 64 GiB of decompressed tar stream. */
export const DEFAULT_MAX_BYTES = 64 * 1024 ** 3;
/** Default `maxEntries`; real root file systems hold 10k–500k. */
export const DEFAULT_MAX_ENTRIES = 10_000_000;
/** Files up to this size are written with synchronous calls; larger ones stream asynchronously. */
export const SYNC_WRITE_MAX = 1024 * 1024;

const isRoot = (): boolean => process.getuid?.() === 0;

/** The kinds of entry that end up in the tree. */
export type UnpackedType =
  "file" | "directory" | "symlink" | "hardlink" | "character-device" | "block-device" | "fifo";

/** One entry as unpacked, given to `onEntry`. */
export interface UnpackedEntry {
  /** Normalised path relative to the tree's root (`.` for the root itself). */
  path: string;
  type: UnpackedType;
  /** Bytes of data (regular files), else 0. */
  size: number;
}

export interface UnpackOptions {
  /** Limit on the decompressed tar stream, headers included; default `DEFAULT_MAX_BYTES`. */
  maxBytes?: number;
  /** Limit on the number of entries (pax and long-name headers not counted); default `DEFAULT_MAX_ENTRIES`. */
  maxEntries?: number;
  /**
   * Restore numeric uid/gid and keep setuid/setgid/sticky bits. Default: running as root.
   * As non-root, `true` fails on the first entry owned by someone else (chown is refused).
   */
  preserveOwnership?: boolean;
  /**
   * Character/block devices and FIFOs: `create` them (with `mknod`), or `refuse` the archive.
   * Default: `create` as root, `refuse` otherwise.
   */
  specialFiles?: "create" | "refuse";
  /** Called after each entry has been written; throwing aborts the unpack with that error. */
  onEntry?: (entry: UnpackedEntry) => void;
}

export interface TarUnpackerOptions extends UnpackOptions {
  /**
   * What `writable()` receives: `none` (plain tar, the default), a given compression, or `auto`
   * to detect it from the first bytes (any of codec.ts's formats).
   */
  compression?: Compression | "auto";
}

export interface UnpackStats {
  /** Entries unpacked, of every kind. */
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** Device nodes and FIFOs. */
  devices: number;
  /** Bytes of regular-file data written. */
  bytes: number;
  /** Bytes of the (decompressed) tar stream read. */
  archiveBytes: number;
}

/** Why an archive was refused; stable names a caller can map to its own error catalog. */
export type UnpackErrorReason =
  /** An entry's name (or a hard link's target) is absolute, has a `..` component, a NUL, or is empty. */
  | "UNSAFE_PATH"
  /** An entry would be written through a symbolic link. */
  | "THROUGH_SYMLINK"
  /** A parent of an entry is a file, not a directory. */
  | "NOT_A_DIRECTORY"
  /** A non-directory entry would replace a directory. */
  | "REPLACES_DIRECTORY"
  /** A hard link whose target is not a regular file already in the tree. */
  | "UNSAFE_HARDLINK"
  /** A device node or FIFO, and `specialFiles` is `refuse`. */
  | "SPECIAL_FILE"
  /** A sparse file or an entry type this unpacker does not know. */
  | "UNSUPPORTED_ENTRY"
  /** The decompressed archive passes `maxBytes`. */
  | "TOO_LARGE"
  /** The archive has more than `maxEntries` entries. */
  | "TOO_MANY_ENTRIES"
  /** An entry's data is longer or shorter than its declared size. */
  | "ENTRY_SIZE"
  /** Writing to the staging directory failed (disk full, permission, …). */
  | "WRITE_FAILED"
  /** The destination (or a caller-given staging directory) exists and is not an empty directory. */
  | "DEST_EXISTS"
  /** The staging directory and the destination are on different file systems. */
  | "CROSS_DEVICE"
  /** `abort()` was called before the unpack finished. */
  | "ABORTED";

/** The archive (or the destination) was refused; `entry` names the offending entry as written. */
export class UnpackError extends Error {
  override name = "UnpackError";
  constructor(
    readonly reason: UnpackErrorReason,
    message: string,
    readonly entry?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const show = (name: string): string => JSON.stringify(name);

function refuse(reason: UnpackErrorReason, entry: string, why: string): UnpackError {
  return new UnpackError(reason, `refusing tar entry ${show(entry)}: ${why}`, entry);
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * `name` as a path relative to the tree's root ("" for the root). `what` says whose name it is
 * in the error message, `reason` which refusal an unsafe one is.
 */
function relativeName(name: string, entry: string, what: string, reason: UnpackErrorReason): string {
  if (name.includes("\0")) throw refuse(reason, entry, `${what} contains a NUL byte`);
  if (name.startsWith("/")) throw refuse(reason, entry, `${what} is absolute`);
  const parts: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") throw refuse(reason, entry, `${what} has a ".." component`);
    parts.push(part);
  }
  return parts.join("/");
}

const depth = (rel: string): number => (rel === "" ? 0 : rel.split("/").length);

interface DirMeta {
  mode: number;
  uid?: number;
  gid?: number;
  mtime?: Date | number;
}

/**
 * An entry's mtime: the pax `mtime` record when there is one (it carries the fraction of a
 * second GNU tar writes and restores), else the header's whole seconds. Seconds as a number
 * keep about a microsecond of precision at today's dates.
 */
function entryMtime(
  header: Header,
  pax: Record<string, string> | null | undefined,
): Date | number | undefined {
  const text = pax?.mtime;
  if (text !== undefined && /^-?\d+(\.\d+)?$/.test(text)) {
    const seconds = Number(text);
    if (Number.isFinite(seconds)) return seconds;
  }
  return header.mtime;
}

/**
 * The tree under construction. Every directory it has seen is cached, so the common case (the
 * parent was made by an earlier entry) costs one set lookup; anything not cached is checked on
 * disk with lstat. A cached directory stays a directory: replacing one is refused.
 */
class Tree {
  readonly #dirs = new Set<string>([""]);
  /** Directory metadata applied at the end, deepest first (so read-only modes come last). */
  readonly meta = new Map<string, DirMeta>();

  constructor(readonly root: string) {}

  abs(rel: string): string {
    return rel === "" ? this.root : `${this.root}/${rel}`;
  }

  /** Makes every parent of `rel` a real directory, creating missing ones (mode 0755 in the end). */
  ensureParents(rel: string, entry: string): void {
    const slash = rel.lastIndexOf("/");
    if (slash < 0 || this.#dirs.has(rel.slice(0, slash))) return;
    this.#walk(rel.slice(0, slash), entry, true);
  }

  /** Checks that every parent of `rel` is a real directory of the tree, creating nothing. */
  checkParents(rel: string, entry: string): boolean {
    const slash = rel.lastIndexOf("/");
    if (slash < 0 || this.#dirs.has(rel.slice(0, slash))) return true;
    return this.#walk(rel.slice(0, slash), entry, false);
  }

  #walk(dir: string, entry: string, create: boolean): boolean {
    let at = 0;
    for (;;) {
      const next = dir.indexOf("/", at);
      const prefix = next < 0 ? dir : dir.slice(0, next);
      if (!this.#dirs.has(prefix)) {
        const st = lstatSync(this.abs(prefix), { throwIfNoEntry: false });
        if (st === undefined) {
          if (!create) return false;
          mkdirSync(this.abs(prefix), 0o700);
          this.meta.set(prefix, { mode: 0o755 });
        } else if (st.isSymbolicLink()) {
          throw refuse("THROUGH_SYMLINK", entry, `${show(prefix)} is a symbolic link in the archive`);
        } else if (!st.isDirectory()) {
          throw refuse("NOT_A_DIRECTORY", entry, `${show(prefix)} is not a directory`);
        }
        this.#dirs.add(prefix);
      }
      if (next < 0) return true;
      at = next + 1;
    }
  }

  /** Creates or keeps the directory `rel` (its parents must be ready). */
  makeDir(rel: string): void {
    if (this.#dirs.has(rel)) return;
    const abs = this.abs(rel);
    try {
      mkdirSync(abs, 0o700);
    } catch (err) {
      if (errnoOf(err) !== "EEXIST") throw err;
      if (!lstatSync(abs).isDirectory()) {
        // A symlink or file of the same name: replaced, never followed.
        unlinkSync(abs);
        mkdirSync(abs, 0o700);
      }
    }
    this.#dirs.add(rel);
  }

  /**
   * Creates the non-directory `rel` with `make`, which must fail with EEXIST rather than follow
   * or reuse anything already there; an existing non-directory is removed first (later entries
   * win, as with tar).
   */
  create<T>(rel: string, entry: string, make: (abs: string) => T): T {
    if (rel === "") throw refuse("UNSAFE_PATH", entry, "only a directory can be the root");
    const abs = this.abs(rel);
    if (this.#dirs.has(rel)) throw refuse("REPLACES_DIRECTORY", entry, "it would replace a directory");
    try {
      return make(abs);
    } catch (err) {
      if (errnoOf(err) !== "EEXIST") throw err;
    }
    if (lstatSync(abs).isDirectory())
      throw refuse("REPLACES_DIRECTORY", entry, "it would replace a directory");
    unlinkSync(abs);
    return make(abs);
  }
}

/** Writes all of `buf` at the file's current position. */
function writeAllSync(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
}

/**
 * Removes a tree, also when (as non-root) read-only directories block it: those are made
 * writable first. Symlinks are removed, never followed.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
    return;
  } catch (err) {
    const code = errnoOf(err);
    if (code !== "EACCES" && code !== "EPERM") throw err;
  }
  const unlock = (dir: string): void => {
    try {
      chmodSync(dir, 0o700);
      for (const e of readdirSync(dir, { withFileTypes: true }))
        if (e.isDirectory()) unlock(join(dir, e.name));
    } catch {
      // Best effort: rm reports whatever is still in the way.
    }
  };
  if (lstatSync(path, { throwIfNoEntry: false })?.isDirectory()) unlock(path);
  await rm(path, { recursive: true, force: true });
}

/** Refuses a destination that exists and is not an empty directory (symlinks included). */
export async function checkDestination(dest: string): Promise<void> {
  const st = lstatSync(dest, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (!st.isDirectory()) {
    throw new UnpackError("DEST_EXISTS", `the destination ${dest} exists and is not a directory`);
  }
  if ((await readdir(dest)).length > 0) {
    throw new UnpackError("DEST_EXISTS", `the destination ${dest} is not empty`);
  }
}

/** Moves a finished tree to `dest` (absent or an empty directory) in one rename. */
export async function moveIntoPlace(from: string, dest: string): Promise<void> {
  try {
    await rename(from, dest);
  } catch (err) {
    const code = errnoOf(err);
    if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOTDIR" || code === "EISDIR") {
      throw new UnpackError(
        "DEST_EXISTS",
        `the destination ${dest} exists and is not an empty directory`,
        undefined,
        {
          cause: err,
        },
      );
    }
    if (code === "EXDEV") {
      throw new UnpackError("CROSS_DEVICE", `${from} and ${dest} are on different file systems`, undefined, {
        cause: err,
      });
    }
    throw err;
  }
}

type Stage = "source" | "codec" | "tar" | "write";

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

type State = "open" | "done" | "failed" | "committed";

/**
 * Unpacks one tar archive into a caller-given staging directory, fed through `writable()`, so
 * `pull` can unpack while it downloads and hashes, then move the tree into place only after the
 * hashes matched:
 *
 * ```ts
 * const unpacker = TarUnpacker.beside(dest, { compression: "auto" });
 * try {
 *   await pipeline(download, tee(hasher, unpacker.writable()));
 *   const stats = await unpacker.finish();
 *   if (!hashesMatch) throw …;
 *   await unpacker.commit(dest);
 * } catch (err) { await unpacker.abort(); throw err; }
 * ```
 *
 * The writable's `finish` (and `pipeline`'s resolution) means the whole tree is written,
 * directory modes and times included. On any failure (a refused entry, corrupt data, an error of
 * the stream feeding it) the writable is destroyed with the error, the staging directory is
 * removed, and `finish()` rejects with that first error once the removal is done.
 */
export class TarUnpacker {
  /** Absolute path of the staging directory. */
  readonly staging: string;
  readonly #tree: Tree;
  readonly #maxBytes: number;
  readonly #maxEntries: number;
  readonly #preserve: boolean;
  /** Owner a newly created file gets without any chown (see the constructor). */
  readonly #ownUid: number;
  readonly #ownGid: number;
  readonly #specialBits: number;
  readonly #createSpecial: boolean;
  readonly #onEntry: ((entry: UnpackedEntry) => void) | undefined;
  readonly #compression: Compression | "auto";
  readonly #extract: Extract;
  readonly #input: Writable;
  readonly #stats: UnpackStats = {
    entries: 0,
    files: 0,
    dirs: 0,
    symlinks: 0,
    hardlinks: 0,
    devices: 0,
    bytes: 0,
    archiveBytes: 0,
  };
  #state: State = "open";
  #failure: Error | undefined;
  readonly #complete = deferred<void>();
  #cleanup: Promise<void> = Promise.resolve();

  /** First bytes held back until the compression is known (`auto` only). */
  #head: Buffer[] | undefined;
  #headLength = 0;
  #kind: Compression | undefined;
  #codec: Duplex | undefined;
  /** The input's write callback waiting for a drain. */
  #waitingWrite: ((err?: Error | null) => void) | undefined;
  #inputDone = false;

  /** The entry being unpacked (its name as written), for error messages. */
  #current: string | undefined;
  #lastDone: string | undefined;
  #entryBusy = false;
  #extractFinished = false;
  /** The open file of the entry being written, -1 if none. */
  #fd = -1;
  /** Asynchronous writes in flight (0 or 1). */
  #pendingIo = 0;
  #idle: (() => void) | undefined;

  /**
   * `staging` must not exist (it is created, mode 0700) or be an empty directory; its parent
   * should be on the file system of the final destination. Throws `UnpackError` (DEST_EXISTS)
   * otherwise.
   */
  constructor(staging: string, opts: TarUnpackerOptions = {}) {
    this.staging = resolve(staging);
    try {
      mkdirSync(this.staging, 0o700);
    } catch (err) {
      if (errnoOf(err) !== "EEXIST") throw err;
      const st = lstatSync(this.staging);
      if (!st.isDirectory() || readdirSync(this.staging).length > 0) {
        throw new UnpackError(
          "DEST_EXISTS",
          `the staging directory ${this.staging} is not an empty directory`,
        );
      }
      chmodSync(this.staging, 0o700);
    }
    this.#tree = new Tree(this.staging);
    // New files belong to this process's user and group, or to the staging folder's group when
    // it inherited the setgid bit (then every folder made inside it carries the bit too).
    const root = lstatSync(this.staging);
    this.#ownUid = process.geteuid?.() ?? -1;
    this.#ownGid = root.mode & 0o2000 ? root.gid : (process.getegid?.() ?? -1);
    this.#maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.#maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.#preserve = opts.preserveOwnership ?? isRoot();
    this.#specialBits = this.#preserve ? 0o7777 : 0o777;
    this.#createSpecial = (opts.specialFiles ?? (isRoot() ? "create" : "refuse")) === "create";
    this.#onEntry = opts.onEntry;
    this.#compression = opts.compression ?? "none";
    if (this.#compression === "auto") this.#head = [];

    this.#extract = tarExtract();
    this.#extract.on("entry", (header, stream, next) => this.#entry(header, stream, next));
    this.#extract.on("error", (err) => this.#fail(err, "tar"));
    this.#extract.on("drain", () => this.#tarDrained());
    this.#extract.on("finish", () => {
      this.#extractFinished = true;
      this.#maybeComplete();
    });

    this.#input = new Writable({
      highWaterMark: 1024 * 1024,
      write: (chunk: Buffer, _enc, cb) => this.#write(chunk, cb),
      final: (cb) => this.#final(cb),
      destroy: (err, cb) => {
        if (err) this.#fail(err, "source");
        else if (!this.#inputDone)
          this.#fail(new UnpackError("ABORTED", "the archive stream was closed early"), "source");
        cb(err);
      },
    });
    // Failures are reported by finish() (and by pipeline, which listens itself); without a
    // listener an 'error' event would crash a caller that only awaits finish().
    this.#input.on("error", () => undefined);
  }

  /**
   * An unpacker whose staging directory is a new `<dest>.lxhub-partial-<random>` beside `dest`
   * (same file system, so `commit` is one rename).
   */
  static beside(dest: string, opts: TarUnpackerOptions = {}): TarUnpacker {
    const target = resolve(dest);
    const staging = mkdtempSync(`${target}.lxhub-partial-`);
    return new TarUnpacker(staging, opts);
  }

  /** Where to write the archive's bytes (compressed as `compression` says). Always the same stream. */
  writable(): Writable {
    return this.#input;
  }

  /** The first error that failed this unpack, if any. */
  get error(): Error | undefined {
    return this.#failure;
  }

  /**
   * Resolves with the statistics once the writable has ended and the whole tree is written;
   * rejects with the first failure after the staging directory has been removed. It never
   * settles if the writable is neither ended nor destroyed.
   */
  async finish(): Promise<UnpackStats> {
    try {
      await this.#complete.promise;
    } catch (err) {
      await this.#cleanup;
      throw err;
    }
    return { ...this.#stats };
  }

  /**
   * Stops the unpack if it is still running and removes the staging directory (also after a
   * successful `finish()`, e.g. when a hash did not match). Does nothing after `commit()`.
   */
  async abort(): Promise<void> {
    if (this.#state === "committed") return;
    if (this.#state !== "failed") this.#fail(new UnpackError("ABORTED", "the unpack was aborted"), "source");
    await this.#cleanup;
  }

  /**
   * Renames the finished tree to `dest`, which must be absent or an empty directory (refused
   * with DEST_EXISTS otherwise, leaving the staging directory for `abort()`).
   */
  async commit(dest: string): Promise<void> {
    if (this.#state !== "done") {
      throw new Error(
        `commit() needs a finished unpack (this one is ${this.#state === "open" ? "running" : this.#state})`,
      );
    }
    await moveIntoPlace(this.staging, resolve(dest));
    this.#state = "committed";
  }

  // ---- input side -------------------------------------------------------------------------

  #write(chunk: Buffer, cb: (err?: Error | null) => void): void {
    if (this.#failure) return cb(this.#failure);
    if (this.#head) {
      this.#head.push(chunk);
      this.#headLength += chunk.length;
      if (this.#headLength < MAGIC_LENGTH) return cb();
      chunk = this.#startCodec();
    } else if (this.#kind === undefined) {
      this.#startCodec();
    }
    const codec = this.#codec;
    const more = codec ? codec.write(chunk) : this.#feedTar(chunk);
    if (this.#failure) return cb(this.#failure);
    if (more) return cb();
    this.#waitingWrite = cb;
    if (codec) codec.once("drain", () => this.#releaseWrite());
  }

  /** Decides the compression (from the held-back head when `auto`); returns the head. */
  #startCodec(): Buffer {
    const head = this.#head ? Buffer.concat(this.#head) : Buffer.alloc(0);
    this.#head = undefined;
    const kind = this.#compression === "auto" ? detectCompression(head) : this.#compression;
    this.#kind = kind;
    if (kind === "none") return head;
    const codec = decompressStream(kind);
    this.#codec = codec;
    codec.on("data", (data: Buffer) => {
      if (!this.#feedTar(data)) codec.pause();
    });
    codec.on("end", () => {
      if (!this.#failure) this.#extract.end(undefined);
    });
    codec.on("error", (err: Error) => this.#fail(err, "codec"));
    return head;
  }

  #feedTar(chunk: Buffer): boolean {
    if (this.#failure) return true;
    this.#stats.archiveBytes += chunk.length;
    if (this.#stats.archiveBytes > this.#maxBytes) {
      this.#fail(
        new UnpackError(
          "TOO_LARGE",
          `the archive is larger than the limit of ${this.#maxBytes} bytes (decompressed)`,
          this.#current,
        ),
        "tar",
      );
      return true;
    }
    return this.#extract.write(chunk);
  }

  #tarDrained(): void {
    if (this.#codec) this.#codec.resume();
    else this.#releaseWrite();
  }

  #releaseWrite(err?: Error): void {
    const cb = this.#waitingWrite;
    this.#waitingWrite = undefined;
    cb?.(err ?? this.#failure);
  }

  #final(cb: (err?: Error | null) => void): void {
    if (this.#failure) return cb(this.#failure);
    if (this.#head !== undefined) {
      if (this.#headLength === 0) {
        this.#fail(new ImageFormatError("EMPTY", "the archive is empty"), "source");
        return cb(this.#failure);
      }
      const head = this.#startCodec();
      if (this.#codec) this.#codec.write(head);
      else this.#feedTar(head);
    } else if (this.#kind === undefined) {
      this.#fail(new ImageFormatError("EMPTY", "the archive is empty"), "source");
      return cb(this.#failure);
    }
    if (this.#codec) this.#codec.end();
    else if (!this.#failure) this.#extract.end(undefined);
    this.#complete.promise.then(
      () => {
        this.#inputDone = true;
        cb();
      },
      (err: Error) => cb(err),
    );
  }

  // ---- failure and completion -------------------------------------------------------------

  #fail(err: Error, stage: Stage): void {
    if (this.#failure) return;
    const error = this.#classify(err, stage);
    this.#failure = error;
    const wasDone = this.#state === "done";
    this.#state = "failed";
    this.#codec?.destroy();
    this.#extract.destroy(error);
    if (this.#pendingIo === 0) this.#closeFile();
    this.#releaseWrite(error);
    this.#complete.reject(error);
    if (!this.#input.destroyed) process.nextTick(() => this.#input.destroy(wasDone ? undefined : error));
    this.#cleanup = this.#whenIdle().then(() => removeTree(this.staging));
    this.#cleanup.catch(() => undefined);
  }

  #classify(err: Error, stage: Stage): Error {
    if (
      err instanceof UnpackError ||
      err instanceof ImageFormatError ||
      err instanceof CodecUnavailableError
    ) {
      return err;
    }
    if (stage === "source") return err;
    if (stage === "codec") {
      return new ImageFormatError(
        "CORRUPT_COMPRESSION",
        `corrupt or truncated ${this.#kind ?? ""} data: ${err.message}`,
        {
          cause: err,
        },
      );
    }
    if (stage === "tar") {
      const where =
        this.#current !== undefined
          ? ` (in entry ${show(this.#current)})`
          : this.#lastDone !== undefined
            ? ` (after entry ${show(this.#lastDone)})`
            : " (at its start)";
      const what = /unexpected end/i.test(err.message) ? "truncated tar archive" : "corrupt tar archive";
      return new ImageFormatError("NOT_TAR", `${what}${where}: ${err.message}`, { cause: err });
    }
    const entry = this.#current;
    return new UnpackError(
      "WRITE_FAILED",
      `cannot write${entry !== undefined ? ` tar entry ${show(entry)}` : ""}: ${err.message}`,
      entry,
      { cause: err },
    );
  }

  #closeFile(): void {
    if (this.#fd < 0) return;
    try {
      closeSync(this.#fd);
    } catch {
      // Already failing: the first error is the one reported.
    }
    this.#fd = -1;
  }

  #whenIdle(): Promise<void> {
    if (this.#pendingIo === 0) return Promise.resolve();
    return new Promise((res) => (this.#idle = res));
  }

  #maybeComplete(): void {
    if (this.#state !== "open" || !this.#extractFinished || this.#entryBusy) return;
    try {
      this.#applyDirMeta();
    } catch (err) {
      this.#fail(err as Error, "write");
      return;
    }
    this.#state = "done";
    this.#complete.resolve();
  }

  /** Directory modes, owners and times, deepest first, after everything inside them is written. */
  #applyDirMeta(): void {
    const tree = this.#tree;
    if (!tree.meta.has("")) tree.meta.set("", { mode: 0o755 });
    const dirs = [...tree.meta.keys()].map((rel) => ({ rel, d: depth(rel) }));
    dirs.sort((a, b) => b.d - a.d);
    for (const { rel } of dirs) {
      const m = tree.meta.get(rel) as DirMeta;
      const abs = tree.abs(rel);
      this.#current = rel === "" ? "." : rel;
      if (this.#preserve && m.uid !== undefined && m.gid !== undefined) lchownSync(abs, m.uid, m.gid);
      chmodSync(abs, m.mode);
      if (m.mtime) utimesSync(abs, m.mtime, m.mtime);
    }
    this.#current = undefined;
  }

  // ---- entries ----------------------------------------------------------------------------

  #entry(header: Header, stream: EntryStream, next: (err?: Error | null) => void): void {
    // Errors surface through the extractor; an unheard 'error' here would crash the process.
    stream.on("error", () => undefined);
    if (this.#failure) return;
    this.#entryBusy = true;
    this.#current = header.name;
    const done = (entry: UnpackedEntry): void => {
      this.#stats.entries++;
      try {
        this.#onEntry?.(entry);
      } catch (err) {
        return this.#fail(err as Error, "source");
      }
      this.#lastDone = header.name;
      this.#current = undefined;
      this.#entryBusy = false;
      // Deferred: calling next() inside tar-stream's own call stack would recurse once per entry.
      process.nextTick(next);
      this.#maybeComplete();
    };
    try {
      this.#unpackEntry(header, stream, done);
    } catch (err) {
      this.#fail(err as Error, "write");
    }
  }

  #unpackEntry(header: Header, stream: EntryStream, done: (entry: UnpackedEntry) => void): void {
    const name = header.name;
    if (this.#stats.entries >= this.#maxEntries) {
      throw new UnpackError(
        "TOO_MANY_ENTRIES",
        `the archive has more than the limit of ${this.#maxEntries} entries (at ${show(name)})`,
        name,
      );
    }
    const size = header.size ?? 0;
    const byteOffset = (header as Header & { byteOffset?: number }).byteOffset ?? 0;
    if (byteOffset + size > this.#maxBytes) {
      throw new UnpackError(
        "TOO_LARGE",
        `refusing tar entry ${show(name)}: its ${size} bytes pass the limit of ${this.#maxBytes} bytes`,
        name,
      );
    }
    const rel = relativeName(name, name, "its name", "UNSAFE_PATH");
    const tree = this.#tree;
    const type = header.type as string | null;
    const mode = (header.mode ?? 0o644) & this.#specialBits;
    const uid = header.uid ?? 0;
    const gid = header.gid ?? 0;
    const shown = rel === "" ? "." : rel;

    const pax = header.pax as Record<string, string> | null | undefined;
    const mtime = entryMtime(header, pax);
    if (pax && ("GNU.sparse.major" in pax || "GNU.sparse.map" in pax || "GNU.sparse.size" in pax)) {
      throw refuse("UNSUPPORTED_ENTRY", name, "sparse files are not supported");
    }

    // Entries other than files may still carry data (pax allows it for links); it is skipped.
    const skipData = (entry: UnpackedEntry): void => {
      if (size === 0) return done(entry);
      stream.on("end", () => done(entry));
      stream.resume();
    };

    switch (type) {
      case "directory": {
        if (rel !== "") {
          tree.ensureParents(rel, name);
          tree.makeDir(rel);
        }
        tree.meta.set(rel, { mode, uid, gid, mtime });
        this.#stats.dirs++;
        // tar-stream hands a directory's data (if any) to no stream: nothing to wait for.
        return done({ path: shown, type: "directory", size: 0 });
      }
      case "file":
      case "contiguous-file": {
        tree.ensureParents(rel, name);
        const flags =
          fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
        this.#fd = tree.create(rel, name, (abs) => openSync(abs, flags, 0o600));
        this.#writeFile(stream, size, () => {
          const fd = this.#fd;
          // A new file already belongs to this process: chown only when the archive says otherwise.
          if (this.#preserve && (uid !== this.#ownUid || gid !== this.#ownGid)) fchownSync(fd, uid, gid);
          fchmodSync(fd, mode);
          if (mtime) futimesSync(fd, mtime, mtime);
          this.#fd = -1;
          closeSync(fd);
          this.#stats.files++;
          done({ path: shown, type: "file", size });
        });
        return;
      }
      case "symlink": {
        const target = header.linkname ?? "";
        if (target === "") throw refuse("UNSAFE_PATH", name, "the symbolic link has no target");
        if (target.includes("\0"))
          throw refuse("UNSAFE_PATH", name, "the symbolic link's target contains a NUL byte");
        tree.ensureParents(rel, name);
        tree.create(rel, name, (abs) => symlinkSync(target, abs));
        const abs = tree.abs(rel);
        if (this.#preserve) lchownSync(abs, uid, gid);
        if (mtime) lutimesSync(abs, mtime, mtime);
        this.#stats.symlinks++;
        return skipData({ path: shown, type: "symlink", size: 0 });
      }
      case "link": {
        const linkname = header.linkname ?? "";
        const target = relativeName(
          linkname,
          name,
          `the hard link's target ${show(linkname)}`,
          "UNSAFE_HARDLINK",
        );
        const bad = (why: string) =>
          refuse("UNSAFE_HARDLINK", name, `the hard link's target ${show(target)} ${why}`);
        if (target === "") throw refuse("UNSAFE_HARDLINK", name, "the hard link has no target");
        if (target === rel) throw bad("is the link itself");
        if (!tree.checkParents(target, name)) throw bad("does not exist in the archive");
        const st = lstatSync(tree.abs(target), { throwIfNoEntry: false });
        if (st === undefined) throw bad("does not exist in the archive");
        if (!st.isFile()) throw bad("is not a regular file");
        tree.ensureParents(rel, name);
        tree.create(rel, name, (abs) => linkSync(tree.abs(target), abs));
        this.#stats.hardlinks++;
        return skipData({ path: shown, type: "hardlink", size: 0 });
      }
      case "character-device":
      case "block-device":
      case "fifo": {
        if (!this.#createSpecial) {
          const what = type === "fifo" ? "a FIFO" : `a ${type.replace("-", " ")}`;
          throw refuse("SPECIAL_FILE", name, `it is ${what}, created only when unpacking as root`);
        }
        tree.ensureParents(rel, name);
        tree.create(rel, name, (abs) => mknod(abs, type, mode, header.devmajor ?? 0, header.devminor ?? 0));
        const abs = tree.abs(rel);
        if (this.#preserve) lchownSync(abs, uid, gid);
        chmodSync(abs, mode);
        if (mtime) utimesSync(abs, mtime, mtime);
        this.#stats.devices++;
        return skipData({ path: shown, type, size: 0 });
      }
      default:
        throw refuse("UNSUPPORTED_ENTRY", name, `its type (${type ?? "unknown"}) is not supported`);
    }
  }

  /** Streams the entry's data into `this.#fd`: synchronous writes when small, async when large. */
  #writeFile(stream: EntryStream, size: number, close: () => void): void {
    let received = 0;
    const finish = (): void => {
      if (this.#failure) return;
      try {
        if (received !== size) {
          throw refuse(
            "ENTRY_SIZE",
            this.#current ?? "",
            `it holds ${received} bytes, not the ${size} declared`,
          );
        }
        close();
      } catch (err) {
        this.#fail(err as Error, "write");
      }
    };
    const account = (chunk: Buffer): boolean => {
      received += chunk.length;
      this.#stats.bytes += chunk.length;
      if (received <= size) return true;
      const name = this.#current ?? "";
      this.#fail(refuse("ENTRY_SIZE", name, `its data runs past the ${size} bytes declared`), "write");
      return false;
    };
    if (size === 0) return finish();

    if (size <= SYNC_WRITE_MAX) {
      stream.on("data", (data) => {
        const chunk = data as Buffer;
        if (this.#failure || !account(chunk)) return;
        try {
          writeAllSync(this.#fd, chunk);
        } catch (err) {
          this.#fail(err as Error, "write");
        }
      });
      stream.on("end", finish);
      return;
    }

    let ended = false;
    const writeAll = (buf: Buffer): void => {
      fsWrite(this.#fd, buf, 0, buf.length, null, (err, written) => {
        if (!err && !this.#failure && written < buf.length) return writeAll(buf.subarray(written));
        this.#pendingIo--;
        if (this.#failure) {
          this.#closeFile();
          const idle = this.#idle;
          this.#idle = undefined;
          idle?.();
          return;
        }
        if (err) return this.#fail(err, "write");
        if (ended) finish();
        else stream.resume();
      });
    };
    stream.on("data", (data) => {
      const chunk = data as Buffer;
      if (this.#failure || !account(chunk)) return;
      stream.pause();
      this.#pendingIo++;
      writeAll(chunk);
    });
    stream.on("end", () => {
      ended = true;
      if (this.#pendingIo === 0) finish();
    });
  }
}

/** The entry stream tar-stream hands out (a streamx Readable). */
type EntryStream = ExtractEvents["entry"][1];

/**
 * Creates a device node or FIFO with coreutils `mknod` (Node has no mknod(2)); it fails with
 * EEXIST rather than touch an existing name, like the other creators.
 */
function mknod(
  abs: string,
  type: "character-device" | "block-device" | "fifo",
  mode: number,
  major: number,
  minor: number,
): void {
  const args = ["-m", (mode & 0o7777).toString(8), "--", abs];
  if (type === "fifo") args.push("p");
  else args.push(type === "character-device" ? "c" : "b", String(major), String(minor));
  // LC_ALL=C: the "File exists" message is matched below.
  const r = spawnSync("mknod", args, { encoding: "utf8", env: { ...process.env, LC_ALL: "C" } });
  if (r.error) {
    const code = errnoOf(r.error);
    throw new Error(code === "ENOENT" ? "mknod not found: apt-get install coreutils" : r.error.message);
  }
  if (r.status !== 0) {
    const said = r.stderr.trim();
    if (/file exists/i.test(said)) throw Object.assign(new Error(said), { code: "EEXIST" });
    throw new Error(`mknod failed: ${said || `exit status ${String(r.status)}`}`);
  }
}

async function unpackWith(
  source: Readable,
  dest: string,
  opts: UnpackOptions,
  compression: Compression | "auto",
): Promise<UnpackStats> {
  const target = resolve(dest);
  await checkDestination(target);
  const unpacker = TarUnpacker.beside(target, { ...opts, compression });
  try {
    await pipeline(source, unpacker.writable());
    const stats = await unpacker.finish();
    await unpacker.commit(target);
    return stats;
  } catch (err) {
    await unpacker.abort();
    throw unpacker.error && !(unpacker.error instanceof UnpackError && unpacker.error.reason === "ABORTED")
      ? unpacker.error
      : err;
  }
}

/**
 * Unpacks the plain (uncompressed) tar bytes of `source` into `dest`, which must be absent or
 * an empty directory: into a new `<dest>.lxhub-partial-<random>` first, renamed to `dest` only
 * when the whole archive succeeded (see the module comment for every rule). On failure nothing
 * is left behind and `dest` is as it was. Errors: `UnpackError` for a refused archive or
 * destination, `ImageFormatError` (NOT_TAR, EMPTY) for bytes that are not a tar archive, the
 * source's own error otherwise.
 */
export function unpackTar(source: Readable, dest: string, opts: UnpackOptions = {}): Promise<UnpackStats> {
  return unpackWith(source, dest, opts, "none");
}

/**
 * `unpackTar` for a tarball in any compression codec.ts knows (detected from its first bytes, as
 * LXD does), decompressed on the fly; `maxBytes` limits the decompressed bytes. Corrupt or
 * truncated compressed data gives `ImageFormatError` (CORRUPT_COMPRESSION); a missing
 * decompressor `CodecUnavailableError`.
 */
export function unpackTarball(
  source: Readable,
  dest: string,
  opts: UnpackOptions = {},
): Promise<UnpackStats> {
  return unpackWith(source, dest, opts, "auto");
}
