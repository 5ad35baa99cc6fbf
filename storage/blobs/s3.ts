import { createHash } from "node:crypto";
import { pipeline, Readable, Transform } from "node:stream";

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  type CompletedPart,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { createSHA256, type IHasher } from "hash-wasm";
import { z } from "zod";

import { storageKey, type StorageKey } from "../layout.js";
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

const MiB = 1024 * 1024;
/** S3's floor for every part but the last. */
const MIN_PART = 5 * MiB;
/** S3's ceiling for a single CopyObject (and for one part). */
const MAX_SINGLE_COPY = 5 * 1024 * MiB;
const MAX_PARTS = 10_000;
/** Tail segments a session may collect before an append merges them into one. */
const MAX_TAILS = 64;
const HEX_RE = /^[0-9a-f]{64}$/;

export interface S3BlobStoreOptions {
  bucket: string;
  /** Key prefix inside the bucket ("" or ending in "/"; a missing "/" is added). */
  prefix?: string;
  /** e.g. `http://127.0.0.1:8000` for Ceph RGW or MinIO; AWS when absent. */
  endpoint?: string;
  region?: string;
  /** `http://host/bucket/key` instead of `http://bucket.host/key` (RGW, MinIO). */
  forcePathStyle?: boolean;
  /** Static credentials; the SDK's default chain (environment, profile, instance role) when absent. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /**
   * Size of the parts upload sessions and puts send (default 8 MiB, at least 5 MiB). A session
   * holds at most one part (plus the chunk being read) in memory; parts × 10 000 caps a blob.
   */
  partSize?: number;
  /** Keys per ListObjectsV2 page (default 1000, S3's maximum). */
  listPageSize?: number;
  /** Objects larger than this are copied with UploadPartCopy instead of CopyObject (default 5 GiB). */
  maxSingleCopyBytes?: number;
  /** Attempts per request, counting the first (default 5); the SDK backs off between them. */
  maxAttempts?: number;
}

/** One session's state object (`uploads/<id>/state.json`); writing it is an append's commit point. */
const SessionSchema = z.object({
  v: z.literal(1),
  offset: z.number().int().nonnegative(),
  /** The multipart upload at `uploads/<id>/data`, created with the first full part. */
  uploadId: z.string().min(1).nullable(),
  parts: z.array(
    z.object({
      PartNumber: z.number().int().positive(),
      ETag: z.string(),
      size: z.number().int().positive(),
    }),
  ),
  /**
   * Bytes past the last full part, in order, in `uploads/<id>/tail-<n>` objects (together
   * < partSize). Small appends add a segment each instead of rewriting one growing tail.
   */
  tails: z.array(z.object({ n: z.number().int().positive(), size: z.number().int().positive() })),
  /** The highest tail number used so far (names are never reused). */
  tailSeq: z.number().int().nonnegative(),
  /** hash-wasm sha256 state (`save()`), base64, covering all `offset` bytes. */
  hash: z.string(),
  updatedAt: z.string(),
});
type Session = z.infer<typeof SessionSchema>;

/**
 * `BlobStore` on an S3 bucket (AWS, Ceph RGW, MinIO...), keys as in storage/layout.ts below a prefix.
 *
 * - put: the stream goes to `tmp/put-<random>` (multipart through lib-storage, bounded buffers)
 *   while node:crypto hashes it; only after the digest is known (and matched) is the object
 *   copied server-side to `blobs/sha256/<aa>/<hex>`, unless that key already exists. Copies are
 *   atomic in S3, so a content address never shows partial bytes. The temp key is always deleted.
 * - Upload sessions are objects, so any replica can continue one: `uploads/<id>/state.json` holds
 *   the offset, the multipart upload with its full parts, the tail segments holding the bytes
 *   past the last full part (`tail-<n>` objects, < partSize together), and the serialized sha256
 *   state (hash-wasm). An append writes its bytes as a new tail segment; once the segments and the
 *   new bytes reach a part, it reads the segments back and sends full parts with UploadPart. Then
 *   it replaces state.json (the commit point) and deletes the segments no longer referenced.
 *   Parts or segments written by an append that did not reach its commit point are unreferenced
 *   and later overwritten, discarded at completion, or deleted.
 * - commitUpload checks the saved hash state, sends the tail as the last part (one segment with
 *   UploadPartCopy, no bytes through this process; several read back and sent), completes the
 *   multipart upload at `uploads/<id>/data` and copies that to the content address.
 * - Appends and commits of one session are serialized in this process; across replicas the
 *   caller's catalog lock does it. A cancel racing an append on another replica is caught just
 *   before the append's commit point (the state object is gone), not atomically.
 * - Leftovers: a failed put retries aborting its multipart upload in the background for about a
 *   minute; removing a session aborts every multipart upload at its data key. What a killed
 *   process leaves (an unfinished multipart upload, a `tmp/` object) is for a bucket lifecycle
 *   rule (`AbortIncompleteMultipartUpload`, expiry of `tmp/`); it is never visible as a blob.
 */
export class S3BlobStore implements BlobStore {
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly partSize: number;
  private readonly listPageSize: number;
  private readonly maxSingleCopyBytes: number;
  private readonly queue = new KeyedQueue();
  /** Retries of failed cleanups (see abortUploadsAt), cancelled by close(). */
  private readonly cleanups = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(opts: S3BlobStoreOptions) {
    const checked = checkS3Options(opts);
    this.partSize = checked.partSize;
    this.listPageSize = checked.listPageSize;
    this.maxSingleCopyBytes = checked.maxSingleCopyBytes;
    this.bucket = opts.bucket;
    this.prefix = checked.prefix;
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region ?? "us-east-1",
      forcePathStyle: opts.forcePathStyle ?? false,
      credentials: opts.credentials,
      maxAttempts: opts.maxAttempts ?? 5,
      // Checksums only where S3 requires them: older gateways (Ceph 16, older MinIO) refuse the
      // trailing-checksum uploads the SDK sends by default. Parts carry Content-MD5 instead.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // A gateway that accepts the connection and then stalls must not hang a request forever.
      requestHandler: { connectionTimeout: 5000, requestTimeout: 120_000 },
    });
  }

  async ping(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
  }

  /** Stops background cleanups too (their leftovers are then the lifecycle rule's). */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.cleanups) clearTimeout(timer);
    this.cleanups.clear();
    this.client.destroy();
  }

  async stat(digest: string): Promise<BlobInfo | null> {
    const size = await this.head(this.blobKey(digest));
    return size === null ? null : { digest, size };
  }

  /**
   * GetObject with a Range header; S3 clamps an end past the last byte, and answers 416 for a
   * start past it. The stream fails if the connection ends before Content-Length bytes came.
   */
  async read(digest: string, range?: ByteRange): Promise<Readable> {
    const key = this.blobKey(digest);
    let header: string | undefined;
    if (range !== undefined) {
      const { start, end } = range;
      if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
        const size = await this.head(key);
        if (size === null) throw new BlobNotFoundError(digest);
        throw new RangeError(`range ${start}-${end} not satisfiable for ${size} bytes`);
      }
      header = `bytes=${start}-${end}`;
    }
    let res;
    try {
      res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: header }));
    } catch (err) {
      if (status(err) === 404) throw new BlobNotFoundError(digest);
      if (status(err) === 416 && range !== undefined) {
        throw new RangeError(`range ${range.start}-${range.end} not satisfiable for ${digest}`);
      }
      throw err;
    }
    const body = res.Body;
    if (!(body instanceof Readable)) throw new Error("S3 GetObject returned no Node.js stream");
    return lengthChecked(body, res.ContentLength ?? 0);
  }

  async put(source: Readable, expectedDigest?: string): Promise<BlobInfo> {
    if (expectedDigest !== undefined) assertDigest(expectedDigest);
    const tmp = this.key({ kind: "tmpEntry", name: `put-${randomId()}` });
    const hash = createHash("sha256");
    let size = 0;
    let sourceError: { err: unknown } | null = null;
    async function* hashed(): AsyncGenerator<Buffer> {
      try {
        for await (const chunk of source as AsyncIterable<unknown>) {
          const buf = toBuffer(chunk);
          hash.update(buf);
          size += buf.length;
          yield buf;
        }
      } catch (err) {
        sourceError = { err };
        throw err;
      }
    }
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: tmp, Body: Readable.from(hashed(), { objectMode: false }) },
      partSize: this.partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    try {
      try {
        await upload.done();
      } catch (err) {
        // lib-storage aborts its multipart upload on failure, but that abort can itself fail
        // (a gateway restarting) and then hides the first error: look for leftovers once more.
        await this.abortUploadsAt(tmp);
        // The source's own error is the one to report (the SDK may wrap or replace it).
        throw sourceError !== null ? (sourceError as { err: unknown }).err : err;
      }
      const actual = `sha256:${hash.digest("hex")}`;
      if (expectedDigest !== undefined && actual !== expectedDigest) {
        throw new DigestMismatchError(expectedDigest, actual, size);
      }
      return await this.publish(tmp, actual, size);
    } finally {
      await this.deleteQuietly(tmp);
    }
  }

  async *list(): AsyncIterable<BlobInfo> {
    const root = `${this.key({ kind: "blobsRoot" })}/`;
    for await (const obj of this.listKeys(root)) {
      const rest = obj.key.slice(root.length);
      const [aa, hex, more] = rest.split("/");
      if (more !== undefined || hex === undefined || !HEX_RE.test(hex) || !hex.startsWith(aa ?? "-"))
        continue;
      yield { digest: `sha256:${hex}`, size: obj.size };
    }
  }

  async delete(digest: string): Promise<boolean> {
    const key = this.blobKey(digest);
    if ((await this.head(key)) === null) return false;
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    return true;
  }

  /** A presigned GetObject URL for a committed blob, or null when it does not exist. */
  async presignedUrl(digest: string, ttlSeconds: number): Promise<string | null> {
    const key = this.blobKey(digest);
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > 7 * 24 * 3600) {
      throw new TypeError(`bad presigned URL lifetime ${ttlSeconds}`);
    }
    if ((await this.head(key)) === null) return null;
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), {
      expiresIn: ttlSeconds,
    });
  }

  async createUpload(): Promise<UploadState> {
    const id = randomId();
    const hasher = await createSHA256();
    hasher.init();
    const session: Session = {
      v: 1,
      offset: 0,
      uploadId: null,
      parts: [],
      tails: [],
      tailSeq: 0,
      hash: Buffer.from(hasher.save()).toString("base64"),
      updatedAt: new Date().toISOString(),
    };
    await this.writeSession(id, session);
    return publicState(id, session);
  }

  async uploadState(id: string): Promise<UploadState | null> {
    const session = await this.readSession(id);
    return session === null ? null : publicState(id, session);
  }

  /**
   * Bytes are hashed as they arrive and cut into parts of `partSize`; each full part is sent
   * before more of the source is read. When the source fails, what it delivered is still stored
   * (parts and a tail) and the state written before its error is rethrown. Past `maxBytes`, or
   * when S3 fails, the state is not written: the session stays where it was.
   */
  async append(id: string, offset: number, source: Readable, maxBytes?: number): Promise<UploadState> {
    this.key({ kind: "upload", id });
    if (!Number.isSafeInteger(offset) || offset < 0) throw new TypeError(`bad offset ${offset}`);
    if (maxBytes !== undefined && (!Number.isSafeInteger(maxBytes) || maxBytes < 0)) {
      throw new TypeError(`bad maxBytes ${maxBytes}`);
    }
    return this.serialized(id, async () => {
      const old = await this.readSession(id);
      if (old === null) throw new UploadNotFoundError(id);
      if (offset !== old.offset) throw new UploadOffsetError(id, old.offset, offset);
      const hasher = await loadHasher(old.hash);
      const dataKey = this.key({ kind: "uploadData", id });
      let uploadId = old.uploadId;
      let createdUpload = false;
      const parts = [...old.parts];
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      /** The old tail segments not yet read back (they stay as they are unless a part needs them). */
      let oldTails = old.tails;
      const oldTailBytes = old.tails.reduce((n, t) => n + t.size, 0);
      const takeOldTails = async (): Promise<void> => {
        if (oldTails.length === 0) return;
        const bytes = await this.readTails(id, oldTails);
        pending.unshift(bytes);
        pendingBytes += bytes.length;
        oldTails = [];
      };
      const sendPart = async (bytes: Buffer): Promise<void> => {
        if (uploadId === null) {
          const created = await this.client.send(
            new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: dataKey }),
          );
          if (!created.UploadId) throw new Error("S3 CreateMultipartUpload returned no UploadId");
          uploadId = created.UploadId;
          createdUpload = true;
        }
        const PartNumber = parts.length + 1;
        if (PartNumber > MAX_PARTS) throw new TooLargeError(MAX_PARTS * this.partSize);
        const sent = await this.client.send(
          new UploadPartCommand({
            Bucket: this.bucket,
            Key: dataKey,
            UploadId: uploadId,
            PartNumber,
            Body: bytes,
            ContentLength: bytes.length,
            ContentMD5: md5(bytes),
          }),
        );
        if (!sent.ETag) throw new Error("S3 UploadPart returned no ETag");
        parts.push({ PartNumber, ETag: sent.ETag, size: bytes.length });
      };

      let received = 0;
      let sourceFailure: { err: unknown } | null = null;
      let storeFailed = false;
      let newTail: { n: number; size: number } | null = null;
      try {
        try {
          // destroyOnReturn: false — on TooLargeError the caller still owns the (unread) rest.
          for await (const chunk of source.iterator({ destroyOnReturn: false }) as AsyncIterable<unknown>) {
            const buf = toBuffer(chunk);
            if (maxBytes !== undefined && received + buf.length > maxBytes) throw new TooLargeError(maxBytes);
            received += buf.length;
            hasher.update(buf);
            pending.push(buf);
            pendingBytes += buf.length;
            try {
              if (oldTails.length > 0 && oldTailBytes + pendingBytes >= this.partSize) await takeOldTails();
              while (pendingBytes >= this.partSize) {
                const all = Buffer.concat(pending, pendingBytes);
                pending = [all.subarray(this.partSize)];
                pendingBytes -= this.partSize;
                await sendPart(all.subarray(0, this.partSize));
              }
            } catch (err) {
              storeFailed = true;
              throw err;
            }
          }
        } catch (err) {
          // Only a failing source keeps what arrived; a failed part or limit undoes the call.
          if (storeFailed || err instanceof TooLargeError || !isSourceError(err, source)) throw err;
          sourceFailure = { err }; // keep what arrived, then rethrow
        }
        if (received === 0) {
          if (sourceFailure !== null) throw sourceFailure.err;
          return publicState(id, old);
        }
        // Too many small segments: merge them with the new bytes into one.
        if (oldTails.length >= MAX_TAILS) await takeOldTails();
        let tailSeq = old.tailSeq;
        if (pendingBytes > 0) {
          newTail = { n: ++tailSeq, size: pendingBytes };
          const bytes = Buffer.concat(pending, pendingBytes);
          await this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: this.key({ kind: "uploadTail", id, n: newTail.n }),
              Body: bytes,
              ContentLength: bytes.length,
              ContentMD5: md5(bytes),
            }),
          );
        }
        const next: Session = {
          v: 1,
          offset: old.offset + received,
          uploadId,
          parts,
          tails: newTail === null ? oldTails : [...oldTails, newTail],
          tailSeq,
          hash: Buffer.from(hasher.save()).toString("base64"),
          updatedAt: new Date().toISOString(),
        };
        const stored =
          next.parts.reduce((n, p) => n + p.size, 0) + next.tails.reduce((n, t) => n + t.size, 0);
        if (stored !== next.offset)
          throw new Error(`upload ${id}: ${stored} bytes stored for offset ${next.offset}`);
        // Cancelled (on any replica) while this append ran: do not bring the session back.
        if ((await this.head(this.key({ kind: "uploadState", id }))) === null) {
          throw new UploadNotFoundError(id);
        }
        await this.writeSession(id, next);
        // Segments read back into parts or the merged tail are no longer referenced.
        const kept = new Set(next.tails.map((t) => t.n));
        for (const t of old.tails) {
          if (!kept.has(t.n)) await this.deleteQuietly(this.key({ kind: "uploadTail", id, n: t.n }));
        }
        if (sourceFailure !== null) throw sourceFailure.err;
        return publicState(id, next);
      } catch (err) {
        if (sourceFailure === null || err !== sourceFailure.err) {
          // Not committed: drop what this call made; the session is where it was.
          if (newTail !== null) await this.deleteQuietly(this.key({ kind: "uploadTail", id, n: newTail.n }));
          if (createdUpload && uploadId !== null) await this.abortQuietly(dataKey, uploadId);
        }
        if (status(err) === 404 && errorName(err) === "NoSuchUpload") throw new UploadNotFoundError(id);
        throw err;
      }
    });
  }

  async commitUpload(id: string, expectedDigest: string): Promise<BlobInfo> {
    this.key({ kind: "upload", id });
    assertDigest(expectedDigest);
    return this.serialized(id, async () => {
      const session = await this.readSession(id);
      if (session === null) throw new UploadNotFoundError(id);
      const actual = `sha256:${(await loadHasher(session.hash)).digest("hex")}`;
      if (actual !== expectedDigest) {
        await this.removeSession(id, session);
        throw new DigestMismatchError(expectedDigest, actual, session.offset);
      }
      const dest = this.blobKey(actual);
      const existing = await this.head(dest);
      if (existing === null) {
        const only = session.tails.length === 1 ? session.tails[0] : undefined;
        const onlyKey = only && this.key({ kind: "uploadTail", id, n: only.n });
        if (session.uploadId === null) {
          // Smaller than one part: the tail segments are the whole blob.
          if (onlyKey) await this.copy(onlyKey, dest, session.offset);
          else await this.putSmall(dest, await this.readTails(id, session.tails));
        } else {
          const dataKey = this.key({ kind: "uploadData", id });
          const parts: CompletedPart[] = session.parts.map(({ PartNumber, ETag }) => ({ PartNumber, ETag }));
          const PartNumber = parts.length + 1;
          if (onlyKey) {
            // One segment: the last part is copied inside the store, no bytes pass through here.
            const copied = await this.client.send(
              new UploadPartCopyCommand({
                Bucket: this.bucket,
                Key: dataKey,
                UploadId: session.uploadId,
                PartNumber,
                CopySource: this.copySource(onlyKey),
              }),
            );
            const ETag = copied.CopyPartResult?.ETag;
            if (!ETag) throw new Error("S3 UploadPartCopy returned no ETag");
            parts.push({ PartNumber, ETag });
          } else if (session.tails.length > 1) {
            const bytes = await this.readTails(id, session.tails);
            const sent = await this.client.send(
              new UploadPartCommand({
                Bucket: this.bucket,
                Key: dataKey,
                UploadId: session.uploadId,
                PartNumber,
                Body: bytes,
                ContentLength: bytes.length,
                ContentMD5: md5(bytes),
              }),
            );
            if (!sent.ETag) throw new Error("S3 UploadPart returned no ETag");
            parts.push({ PartNumber, ETag: sent.ETag });
          }
          try {
            await this.client.send(
              new CompleteMultipartUploadCommand({
                Bucket: this.bucket,
                Key: dataKey,
                UploadId: session.uploadId,
                MultipartUpload: { Parts: parts },
              }),
            );
          } catch (err) {
            // A retried Complete whose first attempt succeeded finds no upload: fine if the object is whole.
            if (!(errorName(err) === "NoSuchUpload" && (await this.head(dataKey)) === session.offset))
              throw err;
          }
          const size = await this.head(dataKey);
          if (size !== session.offset) {
            throw new Error(`upload ${id}: completed object holds ${size} bytes, not ${session.offset}`);
          }
          await this.copy(dataKey, dest, session.offset);
        }
      }
      await this.removeSession(id, session);
      return { digest: actual, size: existing ?? session.offset };
    });
  }

  /** Not queued behind a running append (a stalled client must not block expiry); that append then fails. */
  async cancelUpload(id: string): Promise<void> {
    this.key({ kind: "upload", id });
    await this.removeSession(id, await this.readSession(id));
  }

  async *listUploads(): AsyncIterable<UploadState> {
    const root = `${this.key({ kind: "uploadsRoot" })}/`;
    for await (const obj of this.listKeys(root)) {
      const [id, name, more] = obj.key.slice(root.length).split("/");
      if (name !== "state.json" || more !== undefined || id === undefined) continue;
      let session: Session | null;
      try {
        session = await this.readSession(id);
      } catch (err) {
        if (err instanceof TypeError) continue; // not a session of ours
        throw err;
      }
      if (session !== null) yield publicState(id, session);
    }
  }

  /** Abort the multipart uploads, delete the state object (the session is gone), then its other objects. */
  private async removeSession(id: string, session: Session | null): Promise<void> {
    const dataKey = this.key({ kind: "uploadData", id });
    if (session?.uploadId) await this.abortQuietly(dataKey, session.uploadId, true);
    // Also multipart uploads of appends that failed and could not abort theirs.
    const stray = await this.client.send(
      new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: dataKey }),
    );
    for (const u of stray.Uploads ?? []) {
      if (u.Key === dataKey && u.UploadId) await this.abortQuietly(dataKey, u.UploadId, true);
    }
    const stateKey = this.key({ kind: "uploadState", id });
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: stateKey }));
    for await (const obj of this.listKeys(`${this.key({ kind: "upload", id })}/`)) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: obj.key }));
    }
  }

  /** Give verified bytes at `src` their content address, unless it is taken (dedupe). */
  private async publish(src: string, digest: string, size: number): Promise<BlobInfo> {
    const dest = this.blobKey(digest);
    const existing = await this.head(dest);
    if (existing !== null) return { digest, size: existing };
    await this.copy(src, dest, size);
    return { digest, size };
  }

  /** Server-side copy; above `maxSingleCopyBytes` as a multipart upload of UploadPartCopy ranges. */
  private async copy(src: string, dest: string, size: number): Promise<void> {
    const CopySource = this.copySource(src);
    if (size <= this.maxSingleCopyBytes) {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: dest, CopySource }));
      return;
    }
    const partSize = Math.max(MIN_PART, Math.min(this.maxSingleCopyBytes, Math.ceil(size / MAX_PARTS)));
    const created = await this.client.send(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: dest }),
    );
    const UploadId = created.UploadId;
    if (!UploadId) throw new Error("S3 CreateMultipartUpload returned no UploadId");
    try {
      const parts: CompletedPart[] = [];
      for (let start = 0, PartNumber = 1; start < size; start += partSize, PartNumber++) {
        const end = Math.min(start + partSize, size) - 1;
        const r = await this.client.send(
          new UploadPartCopyCommand({
            Bucket: this.bucket,
            Key: dest,
            UploadId,
            PartNumber,
            CopySource,
            CopySourceRange: `bytes=${start}-${end}`,
          }),
        );
        const ETag = r.CopyPartResult?.ETag;
        if (!ETag) throw new Error("S3 UploadPartCopy returned no ETag");
        parts.push({ PartNumber, ETag });
      }
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: dest,
          UploadId,
          MultipartUpload: { Parts: parts },
        }),
      );
    } catch (err) {
      await this.abortQuietly(dest, UploadId);
      throw err;
    }
  }

  private copySource(key: string): string {
    return `${this.bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;
  }

  private async readSession(id: string): Promise<Session | null> {
    const bytes = await this.getBytes(this.key({ kind: "uploadState", id }));
    if (bytes === null) return null;
    return SessionSchema.parse(JSON.parse(bytes.toString("utf8")));
  }

  private async writeSession(id: string, session: Session): Promise<void> {
    const body = Buffer.from(JSON.stringify(session));
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.key({ kind: "uploadState", id }),
        Body: body,
        ContentLength: body.length,
        ContentType: "application/json",
        ContentMD5: md5(body),
      }),
    );
  }

  /** The tail segments' bytes, concatenated (less than one part). */
  private async readTails(id: string, tails: readonly { n: number; size: number }[]): Promise<Buffer> {
    const out: Buffer[] = [];
    for (const t of tails) {
      const bytes = await this.getBytes(this.key({ kind: "uploadTail", id, n: t.n }));
      if (bytes === null && (await this.head(this.key({ kind: "uploadState", id }))) === null) {
        throw new UploadNotFoundError(id); // cancelled meanwhile
      }
      if (bytes === null || bytes.length !== t.size) {
        throw new Error(`upload ${id}: tail segment ${t.n} lost`);
      }
      out.push(bytes);
    }
    return Buffer.concat(out);
  }

  private async putSmall(key: string, bytes: Buffer): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: bytes,
        ContentLength: bytes.length,
        ContentMD5: md5(bytes),
      }),
    );
  }

  /** A small object's bytes (state, tail), or null when absent. */
  private async getBytes(key: string): Promise<Buffer | null> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      if (!res.Body) throw new Error(`S3 GetObject ${key} returned no body`);
      const bytes = Buffer.from(await res.Body.transformToByteArray());
      if (res.ContentLength !== undefined && bytes.length !== res.ContentLength) {
        throw new Error(`S3 GetObject ${key}: ${bytes.length} of ${res.ContentLength} bytes`);
      }
      return bytes;
    } catch (err) {
      if (status(err) === 404) return null;
      throw err;
    }
  }

  /** Size of an object, or null when absent. */
  private async head(key: string): Promise<number | null> {
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return res.ContentLength ?? 0;
    } catch (err) {
      if (status(err) === 404) return null;
      throw err;
    }
  }

  private async *listKeys(prefix: string): AsyncGenerator<{ key: string; size: number }> {
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          MaxKeys: this.listPageSize,
          ContinuationToken: token,
        }),
      );
      for (const obj of page.Contents ?? []) {
        if (obj.Key !== undefined) yield { key: obj.Key, size: obj.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** Cleanup that must not hide the error being reported (leftovers are garbage under tmp/ or uploads/). */
  private async deleteQuietly(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch {
      // see the class comment: a lifecycle rule reclaims it
    }
  }

  /**
   * Abort every unfinished multipart upload of `key`. When the store cannot be reached (the very
   * failure that ended the put, often) it is tried again in the background for about a minute;
   * after that a lifecycle rule reclaims it (see the class comment).
   */
  private async abortUploadsAt(key: string, attempt = 0): Promise<void> {
    try {
      const found = await this.client.send(
        new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: key }),
      );
      for (const u of found.Uploads ?? []) {
        if (u.Key === key && u.UploadId) {
          await this.client.send(
            new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: u.UploadId }),
          );
        }
      }
    } catch {
      if (this.closed || attempt >= 6) return;
      const timer = setTimeout(
        () => {
          this.cleanups.delete(timer);
          void this.abortUploadsAt(key, attempt + 1);
        },
        1000 * 2 ** attempt,
      );
      timer.unref();
      this.cleanups.add(timer);
    }
  }

  private async abortQuietly(key: string, uploadId: string, mustSucceed = false): Promise<void> {
    try {
      await this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }),
      );
    } catch (err) {
      if (mustSucceed && errorName(err) !== "NoSuchUpload" && status(err) !== 404) throw err;
    }
  }

  private blobKey(digest: string): string {
    assertDigest(digest);
    return this.key({ kind: "blob", hex: digest.slice("sha256:".length) });
  }

  /** Throws TypeError for a name the layout does not allow. */
  private key(k: StorageKey): string {
    return this.prefix + storageKey(k);
  }

  private serialized<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.queue.run(id, fn);
  }
}

/** The options' values with defaults applied; a TypeError names the first bad one. */
export function checkS3Options(opts: S3BlobStoreOptions): {
  prefix: string;
  partSize: number;
  listPageSize: number;
  maxSingleCopyBytes: number;
} {
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(opts.bucket)) {
    throw new TypeError(`bad S3 bucket name ${JSON.stringify(opts.bucket)}`);
  }
  let prefix = opts.prefix ?? "";
  if (prefix !== "" && !prefix.endsWith("/")) prefix += "/";
  if (prefix.startsWith("/") || prefix.includes("//")) {
    throw new TypeError(`bad S3 key prefix ${JSON.stringify(opts.prefix)}`);
  }
  const partSize = opts.partSize ?? 8 * MiB;
  if (!Number.isSafeInteger(partSize) || partSize < MIN_PART || partSize > MAX_SINGLE_COPY) {
    throw new TypeError(`partSize must be between 5 MiB and 5 GiB, not ${opts.partSize}`);
  }
  const listPageSize = opts.listPageSize ?? 1000;
  if (!Number.isSafeInteger(listPageSize) || listPageSize < 1 || listPageSize > 1000) {
    throw new TypeError(`listPageSize must be 1..1000, not ${opts.listPageSize}`);
  }
  const maxSingleCopyBytes = Math.min(opts.maxSingleCopyBytes ?? MAX_SINGLE_COPY, MAX_SINGLE_COPY);
  if (!Number.isSafeInteger(maxSingleCopyBytes) || maxSingleCopyBytes < MIN_PART) {
    throw new TypeError(`maxSingleCopyBytes must be at least 5 MiB, not ${opts.maxSingleCopyBytes}`);
  }
  return { prefix, partSize, listPageSize, maxSingleCopyBytes };
}

function publicState(id: string, session: Session): UploadState {
  return { id, offset: session.offset, updatedAt: new Date(session.updatedAt) };
}

async function loadHasher(saved: string): Promise<IHasher> {
  const hasher = await createSHA256();
  hasher.load(new Uint8Array(Buffer.from(saved, "base64")));
  return hasher;
}

function md5(bytes: Buffer): string {
  return createHash("md5").update(bytes).digest("base64");
}

/**
 * A stream of `body` that fails unless exactly `expected` bytes pass: a connection cut mid-body
 * must be an error for the reader, not a short blob.
 */
function lengthChecked(body: Readable, expected: number): Readable {
  let seen = 0;
  const checked = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      done(seen === expected ? null : new Error(`S3 object body ended after ${seen} of ${expected} bytes`));
    },
  });
  pipeline(body, checked, () => {
    // errors reach the reader through `checked`
  });
  return checked;
}

/** True when the iteration failed because the source did (not because of S3 or our own checks). */
function isSourceError(err: unknown, source: Readable): boolean {
  return source.destroyed || source.errored !== null || err === source.errored;
}

function status(err: unknown): number | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function errorName(err: unknown): string | undefined {
  return typeof err === "object" && err !== null ? (err as { name?: string }).name : undefined;
}
