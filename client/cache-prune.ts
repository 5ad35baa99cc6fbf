/**
 * Keeping the download cache (client/cache.ts) in bounds: `lxhub cache list`, `lxhub cache
 * prune`, and the prune `lxhub pull` runs after each successful pull.
 *
 * - **Size cap, least recently used first.** A verified file's mtime is its last use: set when
 *   it was downloaded and again on every cache hit (`BlobCache.touch`; atime is not used, since
 *   most file systems mount `relatime` or `noatime`). Over the cap, verified files are removed
 *   oldest first until the cache (verified files and the partial downloads kept) fits.
 * - **Abandoned partial downloads.** A `<hex>.part` not written for `partGraceMs` (default 24 h)
 *   is removed; younger ones are kept for a resume, and count towards the size. A part whose
 *   `.lock` names a live process is never touched, nor is a verified file while its digest is
 *   locked (a pull is writing or about to read it). A `.lock` whose process is gone is removed.
 *
 * Another process may be reading a verified file when it is removed: on POSIX file systems an
 * open file stays readable, and a pull that finds it gone downloads it again.
 */
import { readdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { BlobCache, isAlive } from "./cache.js";

/** Partial downloads untouched for this long are abandoned. */
export const DEFAULT_PART_GRACE_MS = 24 * 3600 * 1000;

/** A lock file without a pid younger than this is taken as being written. */
const FRESH_LOCK_MS = 60_000;

const SHA256_NAME = /^([0-9a-f]{64})(\.part|\.lock)?$/;

export interface CacheEntry {
  /** 64 hex. */
  sha256: string;
  /** A verified file, or a partial download. */
  kind: "file" | "part";
  size: number;
  /** Last use (verified files) or last write (parts). */
  lastUsed: Date;
  /** A live process holds the digest's lock (downloading it now). */
  locked: boolean;
}

export interface CacheListing {
  /** The blob folder. */
  dir: string;
  /** Most recently used first. */
  entries: CacheEntry[];
  totalBytes: number;
}

/** Lock files by digest, with whether their process is alive. */
async function locks(
  dir: string,
  names: string[],
  now: number,
): Promise<Map<string, { file: string; live: boolean }>> {
  const out = new Map<string, { file: string; live: boolean }>();
  for (const name of names) {
    const m = SHA256_NAME.exec(name);
    if (!m || m[2] !== ".lock") continue;
    const file = path.join(dir, name);
    const pid = Number((await readFile(file, "utf8").catch(() => "")).trim());
    let live: boolean;
    if (Number.isSafeInteger(pid) && pid > 0) live = isAlive(pid);
    else {
      // Without a pid it may be being written right now (`BlobCache.lock` creates, then writes).
      const st = await stat(file).catch(() => undefined);
      live = st !== undefined && now - st.mtime.getTime() < FRESH_LOCK_MS;
    }
    out.set(m[1] as string, { file, live });
  }
  return out;
}

async function scan(cache: BlobCache, now: number) {
  const names = await readdir(cache.dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [] as string[];
    throw err;
  });
  const held = await locks(cache.dir, names, now);
  const entries: CacheEntry[] = [];
  for (const name of names) {
    const m = SHA256_NAME.exec(name);
    if (!m || m[2] === ".lock") continue;
    const st = await stat(path.join(cache.dir, name)).catch(() => undefined);
    if (!st?.isFile()) continue;
    const sha256 = m[1] as string;
    entries.push({
      sha256,
      kind: m[2] === ".part" ? "part" : "file",
      size: st.size,
      lastUsed: st.mtime,
      locked: held.get(sha256)?.live ?? false,
    });
  }
  entries.sort((a, b) => b.lastUsed.getTime() - a.lastUsed.getTime());
  return { entries, held };
}

/** What the cache holds, most recently used first. */
export async function listCache(cacheDir?: string): Promise<CacheListing> {
  const cache = new BlobCache(cacheDir);
  const { entries } = await scan(cache, Date.now());
  return { dir: cache.dir, entries, totalBytes: entries.reduce((n, e) => n + e.size, 0) };
}

export interface PruneOptions {
  /** Size cap in bytes (verified files and kept parts together). */
  maxBytes: number;
  /** Parts not written for this long are removed; default `DEFAULT_PART_GRACE_MS`. */
  partGraceMs?: number;
  /** Default now (for tests). */
  now?: Date;
}

export interface PruneReport {
  /** What was removed and why: `lru` (over the cap), `abandoned` (an old part). */
  removed: (CacheEntry & { why: "lru" | "abandoned" })[];
  /** Lock files of processes that are gone. */
  staleLocks: number;
  /** Bytes left in the cache. */
  totalBytes: number;
  /** Bytes still over the cap (parts in use or kept for a resume cannot be evicted); 0 normally. */
  overBy: number;
}

/** Applies the cap and the grace period; see the module comment. */
export async function pruneCache(cacheDir: string | undefined, opts: PruneOptions): Promise<PruneReport> {
  const cache = new BlobCache(cacheDir);
  const now = (opts.now ?? new Date()).getTime();
  const grace = opts.partGraceMs ?? DEFAULT_PART_GRACE_MS;
  const { entries, held } = await scan(cache, now);
  const removed: PruneReport["removed"] = [];
  const drop = async (e: CacheEntry, why: "lru" | "abandoned"): Promise<void> => {
    await rm(path.join(cache.dir, e.kind === "part" ? `${e.sha256}.part` : e.sha256), { force: true });
    removed.push({ ...e, why });
  };

  let staleLocks = 0;
  for (const lock of held.values()) {
    if (lock.live) continue;
    await rm(lock.file, { force: true });
    staleLocks++;
  }
  const kept: CacheEntry[] = [];
  for (const e of entries) {
    if (e.kind === "part" && !e.locked && now - e.lastUsed.getTime() > grace) await drop(e, "abandoned");
    else kept.push(e);
  }
  let total = kept.reduce((n, e) => n + e.size, 0);
  // Least recently used first: `kept` is sorted newest first.
  for (let i = kept.length - 1; i >= 0 && total > opts.maxBytes; i--) {
    const e = kept[i] as CacheEntry;
    if (e.kind !== "file" || e.locked) continue;
    await drop(e, "lru");
    total -= e.size;
  }
  return { removed, staleLocks, totalBytes: total, overBy: Math.max(0, total - opts.maxBytes) };
}
