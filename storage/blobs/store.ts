import type { Readable } from "node:stream";
import { DIGEST_PATTERN } from "../../simplestreams/names.js";

/** A blob's identity: `sha256:<64 lower-case hex>` and its exact byte length. */
export interface BlobInfo {
  digest: string;
  size: number;
}

/** An inclusive byte range, as HTTP `Range: bytes=start-end` names it. */
export interface ByteRange {
  start: number;
  end: number;
}

/** State of a resumable upload session's bytes (the catalog keeps who owns it and when it expires). */
export interface UploadState {
  id: string;
  /** Bytes received and durably written so far; the next append must start here. */
  offset: number;
  /** Last time bytes were appended (or the session was created). */
  updatedAt: Date;
}

/**
 * Content-addressed, immutable byte store (see storage/layout.ts for the key tree).
 *
 * Contract, shared by every backend and checked by test/storage/blobstore-conformance.ts:
 * - a blob is visible at its address only after its bytes were hashed and the digest matched
 *   (two-phase: temp → hash while writing → fsync → atomic rename / conditional create);
 * - identical content is stored once: putting bytes that already exist is a no-op that
 *   returns the existing BlobInfo;
 * - uploads are resumable: `append` continues at `offset`, `commitUpload` verifies the digest
 *   and, on mismatch, throws `DigestMismatchError` and removes the session's bytes;
 * - every byte is hashed as it passes; a backend rereads stored bytes only when it lost the
 *   in-memory hash state (after a restart).
 * - malformed digests (DIGEST_RE) and upload ids the layout refuses (storage/layout.ts) are a
 *   TypeError.
 */
export interface BlobStore {
  /** Size of a committed blob, or null. */
  stat(digest: string): Promise<BlobInfo | null>;
  /**
   * A stream of a committed blob's bytes, whole or one inclusive range. Throws BlobNotFoundError.
   * A range end past the last byte is clamped to it; a start past the last byte, or an end before
   * the start, is a RangeError.
   */
  read(digest: string, range?: ByteRange): Promise<Readable>;
  /** Store a whole stream; if `expectedDigest` is given and differs, nothing is stored (DigestMismatchError). */
  put(source: Readable, expectedDigest?: string): Promise<BlobInfo>;
  /** Every committed blob (order unspecified). */
  list(): AsyncIterable<BlobInfo>;
  /** Remove a committed blob; false when it did not exist. */
  delete(digest: string): Promise<boolean>;

  /** Start an upload session with a fresh random id. */
  createUpload(): Promise<UploadState>;
  /** Current state of a session, or null when it does not exist. */
  uploadState(id: string): Promise<UploadState | null>;
  /**
   * Append bytes at `offset` (must equal the session's offset, else UploadOffsetError).
   * Bytes received before the source ends or fails are kept, so a client can resume after a
   * dropped connection; the returned/observable offset counts only bytes written to the file.
   * `maxBytes` caps what one call may add: past it the whole call is undone (the session stays
   * at `offset`) and TooLargeError is thrown; the rest of `source` is left unread for the caller.
   */
  append(id: string, offset: number, source: Readable, maxBytes?: number): Promise<UploadState>;
  /** Verify and publish the session's bytes at their content address; the session is gone afterwards. */
  commitUpload(id: string, expectedDigest: string): Promise<BlobInfo>;
  /** Drop a session and its bytes (no-op when absent). */
  cancelUpload(id: string): Promise<void>;
  /** Every open session (for expiry). */
  listUploads(): AsyncIterable<UploadState>;

  /** A local file path for a committed blob when the backend has one (lets the server stream it directly). */
  localPath?(digest: string): string | null;
  /**
   * A time-limited URL that serves a committed blob's bytes without this server (object stores),
   * or null when the blob does not exist. Backends without such URLs leave it out.
   */
  presignedUrl?(digest: string, ttlSeconds: number): Promise<string | null>;

  /** Resolves when the store answers (readiness checks); throws when it is unreachable. */
  ping(): Promise<void>;
  /** Release connections and timers; the store is unusable afterwards. */
  close?(): Promise<void>;
}

export class BlobNotFoundError extends Error {
  constructor(readonly digest: string) {
    super(`blob ${digest} not found`);
    this.name = "BlobNotFoundError";
  }
}

export class DigestMismatchError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
    readonly size: number,
  ) {
    super(`digest mismatch: expected ${expected}, got ${actual} over ${size} bytes`);
    this.name = "DigestMismatchError";
  }
}

export class UploadNotFoundError extends Error {
  constructor(readonly id: string) {
    super(`upload session ${id} not found`);
    this.name = "UploadNotFoundError";
  }
}

export class UploadOffsetError extends Error {
  constructor(
    readonly id: string,
    readonly expected: number,
    readonly given: number,
  ) {
    super(`upload ${id} is at offset ${expected}, not ${given}`);
    this.name = "UploadOffsetError";
  }
}

export class TooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`more than ${limit} bytes`);
    this.name = "TooLargeError";
  }
}

/** `sha256:<64 lower-case hex>` */
export const DIGEST_RE = DIGEST_PATTERN;

export function assertDigest(digest: string): void {
  if (!DIGEST_RE.test(digest)) throw new TypeError(`not a sha256 digest: ${JSON.stringify(digest)}`);
}
