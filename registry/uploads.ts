import { createHash, type Hash } from "node:crypto";
import type { RegistryStats } from "./stats.js";
import { createSHA256, type IHasher } from "hash-wasm";
import { Transform, type Readable } from "node:stream";
import {
  DigestMismatchError,
  TooLargeError,
  UploadNotFoundError,
  UploadOffsetError,
  DIGEST_RE,
  type BlobInfo,
  type BlobStore,
  type UploadState,
} from "../storage/blobs/store.js";
import type { Catalog } from "../storage/catalog/catalog.js";
import { LxhubError } from "./errors.js";

export interface UploadView {
  id: string;
  offset: number;
  expiresAt: string;
}

/**
 * Resumable upload sessions: the blob store holds the bytes (two-phase), the catalog holds
 * who opened the session and when it expires. A session untouched for `ttlSeconds` expires
 * and its bytes are dropped by `sweep()`.
 */
/** Metadata tarballs are small; a larger prefix is not worth hashing ahead (publish computes it). */
const MAX_PREFIX_BYTES = 64 * 1024 * 1024;

/** sha256(prefix ‖ bytes so far) of a session opened with a prefix blob (a metadata tarball). */
interface PrefixState {
  prefix: string;
  hash: RunningHash;
  /** Session bytes fed to `hash`; the state is dropped when this stops matching the session offset. */
  bytes: number;
}

/** A sha256 in progress; `save` only where the state must outlive the process (replicas). */
interface RunningHash {
  update(chunk: Buffer): void;
  hex(): string;
  save?(): string;
}

/** Node's native sha256 (one process: the state stays in memory). */
function nativeHash(h: Hash = createHash("sha256")): RunningHash {
  return { update: (c) => void h.update(c), hex: () => h.copy().digest("hex") };
}

/** hash-wasm's sha256, whose state can be saved and loaded again on another replica. */
function savableHash(h: IHasher): RunningHash {
  return {
    update: (c) => void h.update(c),
    hex: () => {
      const state = h.save();
      const hex = h.digest("hex");
      h.load(state);
      return hex;
    },
    save: () => Buffer.from(h.save()).toString("base64"),
  };
}

/** What the catalog keeps of a prefix state (upload_sessions.prefix_state). */
interface SavedPrefix {
  prefix: string;
  bytes: number;
  /** hash-wasm sha256 state, base64. */
  state: string;
}

/** What one token may hold in open upload sessions (docs/limits.md). */
export interface UploadQuota {
  /** Open sessions at once (LXHUB_MAX_UPLOADS_PER_TOKEN). */
  maxSessionsPerToken: number;
  /** Bytes in all its open sessions together (LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN). */
  maxSessionBytesPerToken: number;
}

export const UPLOAD_QUOTA_DEFAULTS: UploadQuota = {
  maxSessionsPerToken: 16,
  maxSessionBytesPerToken: 128 * 1024 ** 3,
};

/**
 * Held by a garbage collection while it checks and deletes a batch of blobs, and by whatever marks
 * a stored blob as used (a commit that finds it already there, a client asking for it), so a blob
 * is never deleted between being found and being marked (registry/gc.ts).
 */
export const GC_SWEEP_LOCK = "lxhub:gc-sweep";

export class UploadService {
  /**
   * One process: in memory only (after a restart the state is gone and publishing computes the
   * hash itself). With replicas (a shared catalog) each append also saves it in the session's
   * catalog row, so the next chunk, or the commit, may land on another replica.
   */
  private readonly prefixed = new Map<string, PrefixState>();
  private readonly quota: UploadQuota;

  constructor(
    private readonly blobs: BlobStore,
    private readonly catalog: Catalog,
    private readonly opts: {
      ttlSeconds: number;
      maxBlobBytes: number;
      stats?: RegistryStats;
    } & Partial<UploadQuota>,
  ) {
    this.quota = {
      maxSessionsPerToken: opts.maxSessionsPerToken ?? UPLOAD_QUOTA_DEFAULTS.maxSessionsPerToken,
      maxSessionBytesPerToken: opts.maxSessionBytesPerToken ?? UPLOAD_QUOTA_DEFAULTS.maxSessionBytesPerToken,
    };
  }

  /** Bytes held by the open sessions of `owner` (what their files hold now). */
  private async heldBy(owner: string): Promise<{ sessions: number; bytes: number }> {
    const ids = await this.catalog.uploads.openOf(owner, new Date());
    let bytes = 0;
    for (const id of ids) bytes += (await this.blobs.uploadState(id).catch(() => null))?.offset ?? 0;
    return { sessions: ids.length, bytes };
  }

  private expiry(): string {
    return new Date(Date.now() + this.opts.ttlSeconds * 1000).toISOString();
  }

  /**
   * Open a session. With `prefix` (the digest of the metadata tarball this file will be published
   * with), the server also hashes prefix ‖ bytes as they arrive, and records the image
   * fingerprint at commit: publishing then needs no second read of a large root file.
   */
  /** `owner` is the id of the token that opens it (see checkOwner). */
  /**
   * Whether the store holds `digest` — asked by a client deciding to skip an upload. A blob
   * found is marked used now, so garbage collection spares it through its grace period while the
   * client goes on to publish it (registry/gc.ts).
   */
  async wanted(digest: string): Promise<BlobInfo | null> {
    return this.catalog.locks.withLock(GC_SWEEP_LOCK, async () => {
      const info = await this.blobs.stat(digest);
      if (info) await this.catalog.images.touchBlobs([digest]);
      return info;
    });
  }

  /**
   * Digests of the metadata blobs open sessions hash as their prefix: a garbage collection keeps
   * them, or the version those sessions' root files are for could not be published.
   */
  async openPrefixes(at = new Date()): Promise<Set<string>> {
    const out = new Set<string>();
    for (const p of this.prefixed.values()) out.add(p.prefix);
    for (const saved of await this.catalog.uploads.prefixStates(at)) {
      try {
        const prefix = (JSON.parse(saved) as Partial<SavedPrefix>).prefix;
        if (typeof prefix === "string") out.add(prefix);
      } catch {
        // A state that does not parse names no blob.
      }
    }
    return out;
  }

  async open(owner: string, prefix?: string): Promise<UploadView> {
    let prefixState: PrefixState | null = null;
    if (prefix !== undefined) {
      if (!DIGEST_RE.test(prefix)) {
        throw new LxhubError(
          "BAD_REQUEST",
          `prefix must be sha256:<64 lower-case hex>, got ${JSON.stringify(prefix)}`,
        );
      }
      const info = await this.blobs.stat(prefix);
      if (!info)
        throw new LxhubError("BLOB_UNKNOWN", `prefix blob ${prefix} was never uploaded`, { digest: prefix });
      if (info.size <= MAX_PREFIX_BYTES) {
        const hash = this.catalog.shared ? savableHash(await createSHA256()) : nativeHash();
        for await (const chunk of await this.blobs.read(prefix)) hash.update(chunk as Buffer);
        prefixState = { prefix, hash, bytes: 0 };
      }
    }
    const open = (await this.catalog.uploads.openOf(owner, new Date())).length;
    if (open >= this.quota.maxSessionsPerToken) {
      throw new LxhubError(
        "QUOTA_EXCEEDED",
        `this token already holds ${open} open upload sessions; the limit is ${this.quota.maxSessionsPerToken} ` +
          "per token (LXHUB_MAX_UPLOADS_PER_TOKEN): commit or cancel one first",
        { limit: "max_uploads_per_token", value: this.quota.maxSessionsPerToken },
      );
    }
    const state = await this.blobs.createUpload().catch((err: unknown) => {
      throw mapStoreError(err);
    });
    const expiresAt = this.expiry();
    try {
      await this.catalog.uploads.create({
        id: state.id,
        createdAt: new Date().toISOString(),
        createdBy: owner,
        expiresAt,
        prefixState: prefixState ? savedPrefix(prefixState) : null,
      });
    } catch (err) {
      // No session file without its record (a full disk fails the insert).
      await this.blobs.cancelUpload(state.id).catch(() => undefined);
      throw mapStoreError(err);
    }
    if (prefixState) this.prefixed.set(state.id, prefixState);
    return { id: state.id, offset: 0, expiresAt };
  }

  /**
   * Only the token that opened a session may use it (admin tokens may use any): another
   * maintainer's token cannot append to, commit or cancel someone else's upload.
   */
  async checkOwner(id: string, tokenId: string, admin: boolean): Promise<void> {
    const rec = await this.catalog.uploads.get(id).catch(() => null);
    if (!rec) throw new LxhubError("UPLOAD_NOT_FOUND", `no open upload session ${id}`);
    if (!admin && rec.createdBy !== tokenId) {
      throw new LxhubError("FORBIDDEN", `upload session ${id} was opened with another token`);
    }
  }

  private async live(id: string): Promise<{ state: UploadState; expiresAt: string; owner: string }> {
    const rec = await this.catalog.uploads.get(id).catch(() => null);
    const state = rec ? await this.blobs.uploadState(id).catch(() => null) : null;
    if (!rec || !state || Date.parse(rec.expiresAt) <= Date.now()) {
      throw new LxhubError("UPLOAD_NOT_FOUND", `no open upload session ${id}`);
    }
    return { state, expiresAt: rec.expiresAt, owner: rec.createdBy };
  }

  async state(id: string): Promise<UploadView> {
    const { state, expiresAt } = await this.live(id);
    return { id, offset: state.offset, expiresAt };
  }

  /**
   * With replicas, one append or commit of a session at a time among all of them: a client that
   * retries through another replica while the first still writes waits, then gets the offset
   * check. (One process alone is serialized by the blob store.) Cancel never waits: a stalled
   * client must not hold up expiry.
   */
  private oneAtATime<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.catalog.shared ? this.catalog.locks.withLock(`upload:${id}`, fn) : fn();
  }

  /** Append at `offset`; bytes that arrived before a dropped connection stay (see BlobStore.append). */
  append(id: string, offset: number, body: Readable): Promise<UploadView> {
    return this.oneAtATime(id, () => this.appendNow(id, offset, body));
  }

  private async appendNow(id: string, offset: number, body: Readable): Promise<UploadView> {
    const { state, owner } = await this.live(id);
    const blobRoom = this.opts.maxBlobBytes - state.offset;
    // Concurrent appends of one token's sessions each see the others' bytes written so far, so
    // together they may pass the quota by what is in flight at once.
    const held = await this.heldBy(owner);
    const quotaRoom = this.quota.maxSessionBytesPerToken - held.bytes;
    const overQuota = (): LxhubError =>
      new LxhubError(
        "QUOTA_EXCEEDED",
        `the token's open upload sessions would hold more than ${this.quota.maxSessionBytesPerToken} bytes, ` +
          `the limit per token (LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN); they hold ${held.bytes} bytes in ` +
          `${held.sessions} sessions: commit or cancel some first`,
        { limit: "max_upload_bytes_per_token", value: this.quota.maxSessionBytesPerToken },
      );
    if (quotaRoom <= 0) throw overQuota();
    const room = Math.min(blobRoom, quotaRoom);
    const pre = await this.prefixOf(id, offset);
    let source: Readable = body;
    if (pre && pre.bytes === offset) {
      const tap = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          pre.hash.update(chunk);
          pre.bytes += chunk.length;
          cb(null, chunk);
        },
      });
      body.on("error", (err) => tap.destroy(err));
      // A dropped connection must end the append (with the bytes so far kept), never leave it waiting.
      body.on("close", () => {
        if (!body.readableEnded) {
          tap.destroy(Object.assign(new Error("the request body was cut off"), { code: "ECONNRESET" }));
        }
      });
      source = body.pipe(tap);
    }
    try {
      const next = await this.blobs.append(id, offset, source, room).finally(async () => {
        if (!pre) return;
        // Bytes that passed the tap but were not written (a failed append) spoil the hash.
        const kept = pre.bytes === (await this.blobs.uploadState(id).catch(() => null))?.offset;
        if (!kept) this.prefixed.delete(id);
        if (this.catalog.shared) {
          await this.catalog.uploads.savePrefixState(id, kept ? savedPrefix(pre) : null).catch(() => {
            this.prefixed.delete(id);
          });
        }
      });
      if (this.opts.stats) this.opts.stats.uploadBytes += next.offset - offset;
      const expiresAt = this.expiry();
      await this.catalog.uploads.touch(id, expiresAt);
      return { id, offset: next.offset, expiresAt };
    } catch (err) {
      if (err instanceof TooLargeError && quotaRoom < blobRoom) throw overQuota();
      if (isNoSpace(err)) {
        // Keeping a half-written session would keep the disk full for every other write: drop it.
        await this.cancel(id).catch(() => undefined);
        throw new LxhubError(
          "INSUFFICIENT_STORAGE",
          `the server's storage is full: upload session ${id} could not be written and was dropped ` +
            "to free its space; start the upload again once the operator has made room",
        );
      }
      throw mapStoreError(err);
    }
  }

  /** Verify the digest and publish the bytes at their address; on mismatch nothing is kept. */
  async commit(id: string, digest: string, actor: string): Promise<BlobInfo> {
    return this.oneAtATime(id, () => this.commitNow(id, digest, actor));
  }

  private async commitNow(id: string, digest: string, actor: string): Promise<BlobInfo> {
    if (!DIGEST_RE.test(digest)) {
      throw new LxhubError(
        "BAD_REQUEST",
        `digest must be sha256:<64 lower-case hex>, got ${JSON.stringify(digest)}`,
      );
    }
    await this.live(id);
    let info: BlobInfo;
    try {
      // With the GC's sweep lock: a commit that finds the blob already stored (and drops its own
      // copy) marks it used before a collection could take it (registry/gc.ts).
      info = await this.catalog.locks.withLock(GC_SWEEP_LOCK, async () => {
        const committed = await this.blobs.commitUpload(id, digest);
        await this.catalog.images.recordBlob(committed.digest, committed.size);
        return committed;
      });
    } catch (err) {
      this.prefixed.delete(id);
      if (err instanceof DigestMismatchError) await this.catalog.uploads.delete(id);
      throw mapStoreError(err);
    }
    if (this.opts.stats) this.opts.stats.uploadCommits++;
    const pre = await this.prefixOf(id, info.size).catch(() => null);
    this.prefixed.delete(id);
    try {
      if (pre) await this.catalog.images.recordCombined(pre.prefix, info.digest, pre.hash.hex());
      await this.catalog.uploads.delete(id);
      await this.catalog.audit.record({
        actor,
        action: "blob.commit",
        target: info.digest,
        detail: { size: info.size },
      });
    } catch (err) {
      throw mapStoreError(err);
    }
    return info;
  }

  /**
   * The session's prefix hash when it covers exactly `offset` bytes: this process's, or, with
   * replicas, the one the last append saved in the catalog (from whichever replica took it).
   */
  private async prefixOf(id: string, offset: number): Promise<PrefixState | null> {
    const here = this.prefixed.get(id);
    if (here && here.bytes === offset) return here;
    if (!this.catalog.shared) return null;
    const text = (await this.catalog.uploads.get(id))?.prefixState;
    if (!text) return null;
    let saved: SavedPrefix;
    try {
      saved = JSON.parse(text) as SavedPrefix;
    } catch {
      return null; // not ours to trust: publishing computes the hash itself
    }
    if (saved.bytes !== offset || typeof saved.state !== "string" || !DIGEST_RE.test(saved.prefix))
      return null;
    const hasher = await createSHA256();
    try {
      hasher.load(new Uint8Array(Buffer.from(saved.state, "base64")));
    } catch {
      return null;
    }
    const state: PrefixState = { prefix: saved.prefix, hash: savableHash(hasher), bytes: saved.bytes };
    this.prefixed.set(id, state);
    return state;
  }

  async cancel(id: string): Promise<void> {
    this.prefixed.delete(id);
    await this.blobs.cancelUpload(id);
    await this.catalog.uploads.delete(id);
  }

  /** Drop expired sessions and session bytes that no catalog record owns (left by a crash). */
  async sweep(at = new Date()): Promise<number> {
    let n = 0;
    for (const id of await this.catalog.uploads.expired(at)) {
      await this.cancel(id);
      n++;
    }
    for await (const u of this.blobs.listUploads()) {
      if (!(await this.catalog.uploads.get(u.id)) && at.getTime() - u.updatedAt.getTime() > 60_000) {
        await this.blobs.cancelUpload(u.id);
        n++;
      }
    }
    return n;
  }
}

function savedPrefix(p: PrefixState): string | null {
  const state = p.hash.save?.();
  return state === undefined
    ? null
    : JSON.stringify({ prefix: p.prefix, bytes: p.bytes, state } satisfies SavedPrefix);
}

/** The data folder's storage is full: no space (ENOSPC), over a disk quota (EDQUOT), or SQLite could not grow. */
export function isNoSpace(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT" || code === "SQLITE_FULL";
}

export function mapStoreError(err: unknown): unknown {
  if (isNoSpace(err)) {
    return new LxhubError(
      "INSUFFICIENT_STORAGE",
      "the server's storage is full; try again once the operator has made room",
    );
  }
  if (err instanceof DigestMismatchError) {
    return new LxhubError("DIGEST_MISMATCH", err.message, {
      expected: err.expected,
      actual: err.actual,
      size: err.size,
    });
  }
  if (err instanceof UploadOffsetError) {
    return new LxhubError("UPLOAD_OFFSET_MISMATCH", err.message, { offset: err.expected });
  }
  if (err instanceof UploadNotFoundError) return new LxhubError("UPLOAD_NOT_FOUND", err.message);
  if (err instanceof TooLargeError) return new LxhubError("TOO_LARGE", `upload exceeds ${err.limit} bytes`);
  return err;
}
