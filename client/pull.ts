/**
 * `lxhub pull`: resolve an alias on a remote, fetch the image through the verified chain
 * (client/verify.ts) and the local cache (client/cache.ts), and put the result at DEST only after
 * every check passed.
 *
 * Formats:
 *
 * - `rootfs` (default): the container's root file system, unpacked into DEST.
 *   - Choice of file: the alias resolves as LXD does (squashfs preferred, simplestreams.md §4.3),
 *     but when the same version also offers a `root.tar.xz` with the same metadata file, that one
 *     is taken: a tarball is decompressed and unpacked in the same pass as its download (HTTP
 *     body → sha256 → cache file and decompressor → `TarUnpacker` staging directory), with no
 *     temporary copy and no second read, and it is renamed to DEST once the file's sha256 and the
 *     image fingerprint matched. Its compression (xz, zstd, gzip) is recognised by magic bytes,
 *     as LXD does. On a cache hit it is unpacked from the cache file the same way.
 *   - A squashfs-only image is downloaded into the cache (hashing as it goes), verified, then
 *     unpacked with `unsquashfs` (image/squashfs.ts) into a staging directory beside DEST and
 *     renamed into place.
 * - `lxd`: DEST receives the verified metadata file as `lxd.tar.xz` and the root file as
 *   `rootfs.squashfs`, `rootfs.tar.xz` or `disk.qcow2` (a unified image: `image.tar.gz`), ready for
 *   `lxc image import DEST/lxd.tar.xz DEST/rootfs.squashfs`.
 *
 * DEST must be absent or an empty directory. Staging directories are `<DEST>.lxhub-partial-*`
 * beside it (one file system, so the final move is one rename) and are removed on any failure,
 * including an abort through `signal` (the CLI wires SIGINT/SIGTERM to it) or the overall
 * deadline; an interrupted download stays in the cache as `<sha256>.part` and is resumed next time.
 *
 * Limits (client/settings.ts): the whole pull has a deadline (`deadlineMs`), each download a
 * stall timeout (`stallMs`: no bytes for that long, and the connection is dropped and resumed,
 * then given up with "stalled: no data for N s from <url>"), and a tarball unpacked while it
 * downloads may not decompress to more than `maxRatio` times its signed size (at least
 * `MIN_DECOMPRESSED_LIMIT`): the bytes are unverified until the download ends, so without that
 * bound a small hostile file could fill the disk under the staging directory before its hash
 * is checked.
 */
import { chmod, copyFile, constants as fsConstants, mkdtemp } from "node:fs/promises";
import path from "node:path";
import type { StreamImage } from "../simplestreams/index.js";
import {
  checkDestination,
  moveIntoPlace,
  removeTree,
  TarUnpacker,
  UnpackError,
  type UnpackOptions,
  type UnpackStats,
} from "../image/unpack.js";
import { unsquashfs } from "../image/squashfs.js";
import { BlobCache, VerificationError, type FetchProgress, type FetchResult } from "./cache.js";
import { rebuildFromDelta, type DeltaUse } from "./delta.js";
import { pruneCache, type PruneReport } from "./cache-prune.js";
import { bytes, fraction, StatusLine } from "./progress.js";
import { DEFAULT_LIMITS, formatDuration, LIMIT_ENV, type PullLimits } from "./settings.js";
import type { SerialStore } from "./remotes.js";
import {
  describeError,
  fetchImage,
  fileName,
  findImage,
  openStream,
  tarballSibling,
  type FetchedImage,
  type FindImageOptions,
  type OpenedStream,
  type RemoteTarget,
} from "./verify.js";

export { describeError as describePullError } from "./verify.js";

export type PullFormat = "rootfs" | "lxd";

export type PullProgress =
  ({ phase: "fetch" } & FetchProgress) | { phase: "unsquashfs"; file: string } | { phase: "done" };

export interface PullOptions extends FindImageOptions {
  target: RemoteTarget;
  alias: string;
  dest: string;
  /** Default `rootfs`. */
  format?: PullFormat;
  /** Default `$XDG_CACHE_HOME/lxhub`. */
  cacheDir?: string;
  serials?: SerialStore;
  onProgress?: (p: PullProgress) => void;
  signal?: AbortSignal;
  retries?: number;
  retryBaseMs?: number;
  /**
   * Limits and ownership rules of the tar unpacker (image/unpack.ts). A `maxBytes` given here
   * lowers the decompressed limit further; it never raises it past `maxRatio`.
   */
  unpack?: Omit<UnpackOptions, "onEntry">;
  /**
   * Deadline, stall timeout, decompression ratio, and the cache's size cap, kept after each
   * successful pull (client/cache-prune.ts); defaults `DEFAULT_LIMITS`.
   */
  limits?: Partial<PullLimits>;
}

/** The decompressed limit of a tarball is never below this, so tiny images (mostly tar padding) pass. */
export const MIN_DECOMPRESSED_LIMIT = 1024 * 1024;

/** Bytes a tarball of `size` signed (compressed) bytes may decompress to at `ratio`. */
export function decompressedLimit(size: number, ratio: number): number {
  return Math.max(MIN_DECOMPRESSED_LIMIT, Math.floor(size * ratio));
}

/** The pull ran past its overall deadline. */
export class DeadlineError extends Error {
  override name = "DeadlineError";
  constructor(readonly deadlineMs: number) {
    super(
      `deadline: the pull did not finish within ${formatDuration(deadlineMs)} ` +
        `(--timeout or ${LIMIT_ENV.deadlineMs} sets it); the unfinished download is kept in the cache and resumes next time`,
    );
  }
}

/** `outer`, or an abort after `ms` (with a `DeadlineError`) as well; `clear` stops the timer. */
function withDeadline(ms: number, outer?: AbortSignal): { signal?: AbortSignal; clear: () => void } {
  if (!(ms > 0) || !Number.isFinite(ms)) return { signal: outer, clear: () => undefined };
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new DeadlineError(ms)), ms);
  return {
    signal: outer ? AbortSignal.any([outer, ac.signal]) : ac.signal,
    clear: () => clearTimeout(timer),
  };
}

export interface PulledFile {
  name: string;
  ftype: string;
  sha256: string;
  size: number;
  /** Bytes received from the network. */
  downloaded: number;
  /** Bytes reused from an interrupted earlier download. */
  resumedFrom: number;
  cached: boolean;
}

export interface PullResult {
  /** The image pulled: the alias' image, or its `root.tar.xz` sibling for `--format rootfs`. */
  image: StreamImage;
  /** The image the alias resolved to as LXD would pick it. */
  resolved: StreamImage;
  format: PullFormat;
  /** Absolute. */
  dest: string;
  /** How DEST was made. */
  method: "tar-single-pass" | "unsquashfs" | "files";
  fingerprint: string;
  files: PulledFile[];
  /** Bytes received from the network for image files. */
  bytesDownloaded: number;
  /** The statement the documents were checked against; `null` without signature checks. */
  statement: { kid: string; serial: number } | null;
  /** Tar unpacks only. */
  unpacked?: UnpackStats;
  /** Set when the root was rebuilt from a delta of a cached version instead of downloaded whole. */
  delta?: DeltaUse;
  /** The cache prune run after the pull (client/cache-prune.ts). */
  pruned?: PruneReport;
  /** Why that prune failed, when it did (the pull itself succeeded). */
  pruneFailure?: string;
}

/** Name of the root file in a `--format lxd` folder, by ftype. */
export function lxdRootName(ftype: string): string {
  if (ftype === "squashfs") return "rootfs.squashfs";
  if (ftype === "root.tar.xz") return "rootfs.tar.xz";
  return "disk.qcow2";
}

function pulledFiles(image: StreamImage, got: FetchedImage): PulledFile[] {
  const out: PulledFile[] = [];
  for (const [ref, r] of [
    [image.meta, got.meta],
    [image.root, got.root],
  ] as const) {
    if (!ref || !r) continue;
    out.push({
      name: fileName(ref.path),
      ftype: ref.ftype,
      sha256: ref.sha256,
      size: ref.size,
      downloaded: r.downloaded,
      resumedFrom: r.resumedFrom,
      cached: r.cached,
    });
  }
  return out;
}

/** Pulls one image; see the module comment. */
export async function pull(opts: PullOptions): Promise<PullResult> {
  const format = opts.format ?? "rootfs";
  if (format !== "rootfs" && format !== "lxd")
    throw new Error(`unknown format ${String(format)} (rootfs or lxd)`);
  const dest = path.resolve(opts.dest);
  // Refused before any download: DEST must be absent or an empty directory.
  await checkDestination(dest);
  const limits: PullLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const deadline = withDeadline(limits.deadlineMs, opts.signal);
  let result: PullResult;
  try {
    result = await pullWithin(opts, format, dest, limits, deadline.signal);
  } finally {
    deadline.clear();
  }
  // The cap is kept after each pull; DEST is in place by now, so a failure here is only a warning.
  try {
    result.pruned = await pruneCache(opts.cacheDir, { maxBytes: limits.cacheMaxBytes });
  } catch (err) {
    result.pruneFailure = `could not prune the cache: ${describeError(err)}`;
  }
  return result;
}

async function pullWithin(
  opts: PullOptions,
  format: PullFormat,
  dest: string,
  limits: PullLimits,
  signal: AbortSignal | undefined,
): Promise<PullResult> {
  const stream = await openStream(opts.target, {
    serials: opts.serials,
    signal,
    retries: opts.retries,
    retryBaseMs: opts.retryBaseMs,
    stallMs: limits.stallMs,
  });
  try {
    const found = findImage(stream, opts.alias, opts);
    const resolved = found.image;
    let image = resolved;
    if (format === "rootfs") {
      if (resolved.type !== "container") {
        throw new Error(
          `${opts.alias} is a virtual-machine image: it has no root file system tree; use --format lxd`,
        );
      }
      image = tarballSibling(found.images, resolved) ?? resolved;
      if (!image.root || (image.rootType !== "squashfs" && image.rootType !== "root.tar.xz")) {
        throw new Error(
          `${opts.alias} is a ${image.rootType} image, which --format rootfs cannot unpack; use --format lxd`,
        );
      }
    }
    const cache = new BlobCache(opts.cacheDir);
    const ctx: Ctx = { opts, stream, cache, dest, image, limits, signal };
    // A cached file damaged on disk, or a resumed part that turns out corrupt, costs one retry
    // from scratch (both were removed); anything else is final.
    for (let attempt = 0; ; attempt++) {
      try {
        let r: Omit<PullResult, "image" | "resolved" | "format" | "dest" | "statement">;
        if (format === "lxd") r = await pullFiles(ctx);
        else if (image.rootType === "root.tar.xz") r = await pullTarball(ctx);
        else r = await pullSquashfs(ctx);
        opts.onProgress?.({ phase: "done" });
        const st = stream.statement;
        return {
          ...r,
          image,
          resolved,
          format,
          dest,
          statement: st ? { kid: st.kid, serial: st.serial } : null,
        };
      } catch (err) {
        const retry =
          attempt === 0 &&
          err instanceof VerificationError &&
          (err.code === "CACHE_CORRUPT" || (err.code === "FILE_MISMATCH" && err.resumed));
        if (!retry) throw err;
      }
    }
  } finally {
    stream.close();
  }
}

interface Ctx {
  opts: PullOptions;
  stream: OpenedStream;
  cache: BlobCache;
  dest: string;
  image: StreamImage;
  limits: PullLimits;
  /** The caller's signal joined with the deadline's. */
  signal: AbortSignal | undefined;
}

function fetchOpts(ctx: Ctx) {
  const { opts } = ctx;
  return {
    cache: ctx.cache,
    signal: ctx.signal,
    retries: opts.retries,
    retryBaseMs: opts.retryBaseMs,
    onProgress: opts.onProgress
      ? (p: FetchProgress) => opts.onProgress?.({ phase: "fetch", ...p })
      : undefined,
  };
}

function downloadedOf(got: FetchedImage): number {
  return got.meta.downloaded + (got.root?.downloaded ?? 0);
}

/**
 * Single pass: download → hash → cache and decompress → unpack into staging; commit after the
 * checks. The decompressed bytes are bounded by the signed size (see the module comment).
 */
async function pullTarball(ctx: Ctx) {
  const { image, dest } = ctx;
  const name = image.root ? fileName(image.root.path) : "the root file";
  const signedSize = image.root?.size ?? 0;
  const ratio = ctx.limits.maxRatio;
  const byRatio = decompressedLimit(signedSize, ratio);
  const maxBytes = Math.min(byRatio, ctx.opts.unpack?.maxBytes ?? Infinity);
  const unpacker = TarUnpacker.beside(dest, { ...ctx.opts.unpack, maxBytes, compression: "auto" });
  /** Set when the unpacker stopped the archive at `maxBytes`. */
  const tooLarge = (): string | null => {
    const e = unpacker.error;
    if (!(e instanceof UnpackError) || e.reason !== "TOO_LARGE") return null;
    const why =
      maxBytes === Math.floor(signedSize * ratio)
        ? `${ratio}× its signed size of ${bytes(signedSize)}`
        : `the limit for a file of ${bytes(signedSize)}`;
    return `${name} decompresses to more than ${bytes(maxBytes)} (${why})`;
  };
  try {
    const got = await fetchImage(ctx.stream, image, { ...fetchOpts(ctx), rootSink: unpacker.writable() });
    const sink = unpacker.writable();
    if (!sink.destroyed) sink.end();
    let unpacked: UnpackStats;
    try {
      unpacked = await unpacker.finish();
    } catch (err) {
      // The file is authentic (its hash matched), but the archive itself is refused.
      const bomb = tooLarge();
      if (bomb) {
        throw new UnpackError(
          "TOO_LARGE",
          `refused: ${bomb}; the partial unpack was removed and nothing was written to ${dest}. ` +
            `If the image is genuine, allow a higher ratio with --max-ratio N or ${LIMIT_ENV.maxRatio}`,
          unpacker.error instanceof UnpackError ? unpacker.error.entry : undefined,
          { cause: err },
        );
      }
      if (err instanceof Error) err.message = `${name}: ${err.message}`;
      throw err;
    }
    await unpacker.commit(dest);
    return {
      method: "tar-single-pass" as const,
      fingerprint: got.fingerprint,
      files: pulledFiles(image, got),
      bytesDownloaded: downloadedOf(got),
      unpacked,
    };
  } catch (err) {
    await unpacker.abort();
    // A forged file that was also a decompression bomb: the hash is the verdict, the bomb a fact worth saying.
    const bomb = tooLarge();
    if (bomb && err instanceof VerificationError && !err.message.includes(bomb)) {
      err.message += `; its content was refused as well while unpacking: ${bomb}`;
    }
    throw err;
  }
}

/** Download and verify into the cache, then `unsquashfs` (image/squashfs.ts) into place. */
async function pullSquashfs(ctx: Ctx) {
  const { image, dest } = ctx;
  const delta = await rebuildFromDelta(ctx.stream, image, ctx.cache, fetchOpts(ctx));
  const got = await fetchImage(ctx.stream, image, fetchOpts(ctx));
  const root = got.root as FetchResult;
  ctx.opts.onProgress?.({ phase: "unsquashfs", file: image.root ? fileName(image.root.path) : "" });
  const signal = ctx.signal;
  try {
    await unsquashfs(root.file, dest, { signal });
  } catch (err) {
    if (signal?.aborted) throw signal.reason as Error;
    throw err;
  }
  return {
    method: "unsquashfs" as const,
    fingerprint: got.fingerprint,
    files: pulledFiles(image, got),
    bytesDownloaded: downloadedOf(got) + (delta?.downloaded ?? 0),
    ...(delta ? { delta } : {}),
  };
}

/** `--format lxd`: the verified files, copied from the cache under the names `lxc image import` users expect. */
async function pullFiles(ctx: Ctx) {
  const { image, dest } = ctx;
  const delta = await rebuildFromDelta(ctx.stream, image, ctx.cache, fetchOpts(ctx));
  const got = await fetchImage(ctx.stream, image, fetchOpts(ctx));
  const staging = await mkdtemp(`${dest}.lxhub-partial-`);
  try {
    const copies: [string, string][] = image.root
      ? [
          [got.meta.file, "lxd.tar.xz"],
          [(got.root as FetchResult).file, lxdRootName(image.root.ftype)],
        ]
      : [[got.meta.file, "image.tar.gz"]];
    for (const [from, name] of copies) {
      const to = path.join(staging, name);
      // A clone where the file system can (no extra space), a copy otherwise; never a hard link,
      // so editing DEST cannot change the cache.
      await copyFile(from, to, fsConstants.COPYFILE_FICLONE);
      await chmod(to, 0o644);
    }
    await chmod(staging, 0o755);
    await moveIntoPlace(staging, dest);
  } catch (err) {
    await removeTree(staging);
    throw err;
  }
  return {
    method: "files" as const,
    fingerprint: got.fingerprint,
    files: pulledFiles(image, got),
    bytesDownloaded: downloadedOf(got) + (delta?.downloaded ?? 0),
    ...(delta ? { delta } : {}),
  };
}

/**
 * A one-line progress display for `lxhub pull` on a terminal (stderr), redrawn at most ten
 * times a second; callers skip it when stderr is not a TTY.
 */
export class PullProgressLine extends StatusLine {
  readonly onProgress = (p: PullProgress): void => {
    if (p.phase === "done") return this.finish();
    if (p.phase === "unsquashfs") {
      this.line(`unpacking ${p.file} with unsquashfs…`);
      return;
    }
    const verb = p.source === "network" ? "downloading" : p.source === "part" ? "resuming" : "cached";
    const rate = this.rate(`${p.file}\u0000${p.source}`, p.done);
    this.draw(`${verb} ${p.file}  ${fraction(p.done, p.total)}${rate}`, p.done === p.total);
  };
}
