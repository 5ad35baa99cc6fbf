/**
 * Behaviour every `BlobStore` backend must show (storage/blobs/store.ts), registered as node:test
 * cases. A backend's test file calls `blobStoreConformance("fs", make)`; `make` returns a fresh,
 * empty store and a cleanup for it. Every case starts from an empty store.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, it } from "node:test";

import {
  BlobNotFoundError,
  DigestMismatchError,
  TooLargeError,
  UploadNotFoundError,
  UploadOffsetError,
  type BlobInfo,
  type BlobStore,
} from "../../storage/blobs/store.js";

export interface BlobStoreFixture {
  store: BlobStore;
  cleanup: () => Promise<void>;
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Collects a (small, test-sized) stream. */
export async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) parts.push(chunk);
  return Buffer.concat(parts);
}

export async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/**
 * A byte stream that hands out `chunks` strictly on demand (no read-ahead), then ends as `end`
 * says: normally (null), failing with an error, or destroyed without one ("abort", as an aborted
 * request is). Every chunk it emitted was taken by the consumer before the failure. With `pause`
 * it yields to the event loop between chunks, so that two consumers really run at the same time.
 */
export function pacedSource(chunks: Buffer[], end: Error | "abort" | null = null, pause = false): Readable {
  let i = 0;
  return new Readable({
    highWaterMark: 0,
    read() {
      const next = (): void => {
        if (i < chunks.length) this.push(chunks[i++]);
        else if (end === "abort") this.destroy();
        else if (end) this.destroy(end);
        else this.push(null);
      };
      if (pause) setImmediate(next);
      else next();
    },
  });
}

export function blobStoreConformance(name: string, make: () => Promise<BlobStoreFixture>): void {
  describe(`BlobStore conformance: ${name}`, () => {
    let fx: BlobStoreFixture;
    let store: BlobStore;
    beforeEach(async () => {
      fx = await make();
      store = fx.store;
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    it("put stores bytes at their sha256; stat and read (whole and ranged) return them", async () => {
      const data = randomBytes(3 * 1024 * 1024 + 17);
      const info = await store.put(Readable.from([data.subarray(0, 1000), data.subarray(1000)]));
      assert.deepEqual(info, { digest: sha256(data), size: data.length });
      assert.deepEqual(await store.stat(info.digest), info);
      assert.ok((await collect(await store.read(info.digest))).equals(data));
      const ranged = await collect(await store.read(info.digest, { start: 1_048_570, end: 1_048_600 }));
      assert.ok(ranged.equals(data.subarray(1_048_570, 1_048_601)));
      const last = await collect(
        await store.read(info.digest, { start: data.length - 1, end: data.length - 1 }),
      );
      assert.ok(last.equals(data.subarray(data.length - 1)));
      // An end past the last byte is clamped (as HTTP ranges are); a start past it is refused.
      const tail = await collect(
        await store.read(info.digest, { start: data.length - 3, end: data.length + 99 }),
      );
      assert.ok(tail.equals(data.subarray(data.length - 3)));
      await assert.rejects(store.read(info.digest, { start: data.length, end: data.length + 1 }), RangeError);
      await assert.rejects(store.read(info.digest, { start: 5, end: 4 }), RangeError);
      assert.deepEqual(await all(store.list()), [info]);
    });

    it("put with the right expected digest stores the blob; an empty blob works too", async () => {
      const data = randomBytes(5000);
      assert.deepEqual(await store.put(Readable.from([data]), sha256(data)), {
        digest: sha256(data),
        size: 5000,
      });
      const empty = await store.put(Readable.from([]), sha256(Buffer.alloc(0)));
      assert.deepEqual(empty, { digest: sha256(Buffer.alloc(0)), size: 0 });
      assert.equal((await collect(await store.read(empty.digest))).length, 0);
    });

    it("stores the same content once", async () => {
      const data = randomBytes(100_000);
      const a = await store.put(Readable.from([data]));
      const b = await store.put(Readable.from([data.subarray(0, 10), data.subarray(10)]));
      assert.deepEqual(a, b);
      const up = await store.createUpload();
      await store.append(up.id, 0, Readable.from([data]));
      assert.deepEqual(await store.commitUpload(up.id, a.digest), a);
      assert.deepEqual(await all(store.list()), [a]);
      assert.ok((await collect(await store.read(a.digest))).equals(data));
    });

    it("put with a wrong expected digest stores nothing", async () => {
      const data = randomBytes(70_000);
      const wrong = sha256(Buffer.from("something else"));
      await assert.rejects(store.put(Readable.from([data]), wrong), (err: unknown) => {
        assert.ok(err instanceof DigestMismatchError);
        assert.equal(err.expected, wrong);
        assert.equal(err.actual, sha256(data));
        assert.equal(err.size, data.length);
        return true;
      });
      assert.equal(await store.stat(sha256(data)), null);
      assert.equal(await store.stat(wrong), null);
      assert.deepEqual(await all(store.list()), []);
    });

    it("put of a source that fails stores nothing and rethrows the source's error", async () => {
      const chunks = [randomBytes(1000), randomBytes(1000)];
      const boom = new Error("source broke");
      await assert.rejects(store.put(pacedSource(chunks, boom)), (err) => err === boom);
      assert.deepEqual(await all(store.list()), []);
    });

    it("upload in three chunks, then commit", async () => {
      const chunks = [randomBytes(1_500_000), randomBytes(10), randomBytes(700_000)];
      const data = Buffer.concat(chunks);
      const up = await store.createUpload();
      assert.equal(up.offset, 0);
      assert.ok(up.updatedAt instanceof Date);
      let offset = 0;
      for (const c of chunks) {
        const st = await store.append(up.id, offset, Readable.from([c]));
        offset += c.length;
        assert.equal(st.id, up.id);
        assert.equal(st.offset, offset);
        assert.equal((await store.uploadState(up.id))?.offset, offset);
      }
      assert.deepEqual(
        (await all(store.listUploads())).map((u) => [u.id, u.offset]),
        [[up.id, data.length]],
      );
      const info = await store.commitUpload(up.id, sha256(data));
      assert.deepEqual(info, { digest: sha256(data), size: data.length });
      assert.ok((await collect(await store.read(info.digest))).equals(data));
      assert.equal(await store.uploadState(up.id), null);
      assert.deepEqual(await all(store.listUploads()), []);
    });

    it("rejects an append at the wrong offset and leaves the session unchanged", async () => {
      const first = randomBytes(1000);
      const up = await store.createUpload();
      await store.append(up.id, 0, Readable.from([first]));
      for (const bad of [0, 999, 1001]) {
        await assert.rejects(store.append(up.id, bad, Readable.from([randomBytes(50)])), (err: unknown) => {
          assert.ok(err instanceof UploadOffsetError);
          assert.equal(err.expected, 1000);
          assert.equal(err.given, bad);
          return true;
        });
      }
      assert.equal((await store.uploadState(up.id))?.offset, 1000);
      const second = randomBytes(234);
      await store.append(up.id, 1000, Readable.from([second]));
      const data = Buffer.concat([first, second]);
      assert.deepEqual(await store.commitUpload(up.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
    });

    it("keeps the bytes received before a source fails, and resumes from there", async () => {
      const data = randomBytes(3 * 1024 * 1024 + 5);
      const sent = [data.subarray(0, 100_000), data.subarray(100_000, 1_300_000)];
      const boom = new Error("connection reset");
      const up = await store.createUpload();
      await assert.rejects(store.append(up.id, 0, pacedSource(sent, boom)), (err) => err === boom);
      const state = await store.uploadState(up.id);
      assert.equal(state?.offset, 1_300_000);
      // A source destroyed without an error (an aborted request) is a failure too.
      const aborted = pacedSource([data.subarray(1_300_000, 2_000_000)], "abort");
      await assert.rejects(store.append(up.id, 1_300_000, aborted));
      const after = (await store.uploadState(up.id))?.offset;
      assert.equal(after, 2_000_000);
      await store.append(up.id, after, Readable.from([data.subarray(after)]));
      assert.deepEqual(await store.commitUpload(up.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
      assert.ok((await collect(await store.read(sha256(data)))).equals(data));
    });

    it("commit with a wrong digest fails, removes the session and stores nothing", async () => {
      const data = randomBytes(4096);
      const wrong = sha256(Buffer.from("not it"));
      const up = await store.createUpload();
      await store.append(up.id, 0, Readable.from([data]));
      await assert.rejects(store.commitUpload(up.id, wrong), (err: unknown) => {
        assert.ok(err instanceof DigestMismatchError);
        assert.equal(err.actual, sha256(data));
        assert.equal(err.size, data.length);
        return true;
      });
      assert.equal(await store.uploadState(up.id), null);
      assert.deepEqual(await all(store.listUploads()), []);
      assert.deepEqual(await all(store.list()), []);
      assert.equal(await store.stat(sha256(data)), null);
      await assert.rejects(store.commitUpload(up.id, sha256(data)), UploadNotFoundError);
      await assert.rejects(store.append(up.id, 0, Readable.from([data])), UploadNotFoundError);
    });

    it("cancel drops the session and its bytes; cancelling twice is a no-op", async () => {
      const data = randomBytes(2048);
      const up = await store.createUpload();
      await store.append(up.id, 0, Readable.from([data]));
      await store.cancelUpload(up.id);
      assert.equal(await store.uploadState(up.id), null);
      assert.deepEqual(await all(store.listUploads()), []);
      await store.cancelUpload(up.id);
      await assert.rejects(store.commitUpload(up.id, sha256(data)), UploadNotFoundError);
      assert.deepEqual(await all(store.list()), []);
    });

    it("sessions are independent and get distinct ids", async () => {
      const a = await store.createUpload();
      const b = await store.createUpload();
      assert.notEqual(a.id, b.id);
      const da = randomBytes(300);
      const db = randomBytes(500);
      await store.append(a.id, 0, Readable.from([da]));
      await store.append(b.id, 0, Readable.from([db]));
      const states = new Map((await all(store.listUploads())).map((u) => [u.id, u.offset]));
      assert.deepEqual(
        states,
        new Map([
          [a.id, 300],
          [b.id, 500],
        ]),
      );
      await store.cancelUpload(a.id);
      assert.deepEqual(await store.commitUpload(b.id, sha256(db)), { digest: sha256(db), size: 500 });
    });

    it("reading a missing blob throws BlobNotFoundError; stat says null", async () => {
      const missing = sha256(Buffer.from("never stored"));
      await assert.rejects(store.read(missing), (err: unknown) => {
        assert.ok(err instanceof BlobNotFoundError);
        assert.equal(err.digest, missing);
        return true;
      });
      await assert.rejects(store.read(missing, { start: 0, end: 1 }), BlobNotFoundError);
      assert.equal(await store.stat(missing), null);
    });

    it("rejects malformed digests and upload ids", async () => {
      for (const id of ["../../etc/passwd", "short", "has space in it", "x".repeat(65)]) {
        await assert.rejects(store.uploadState(id), TypeError);
        await assert.rejects(store.append(id, 0, Readable.from([Buffer.from("x")])), TypeError);
        await assert.rejects(store.commitUpload(id, sha256(Buffer.from("x"))), TypeError);
        await assert.rejects(store.cancelUpload(id), TypeError);
      }
      await assert.rejects(store.stat("sha256:ABC"), TypeError);
      await assert.rejects(store.read("md5:00"), TypeError);
      await assert.rejects(store.put(Readable.from([Buffer.from("x")]), "sha256:zz"), TypeError);
      await assert.rejects(store.delete(`sha256:${"0".repeat(63)}`), TypeError);
    });

    it("delete removes a blob and reports whether it existed", async () => {
      const keep = await store.put(Readable.from([randomBytes(100)]));
      const gone = await store.put(Readable.from([randomBytes(100)]));
      assert.equal(await store.delete(gone.digest), true);
      assert.equal(await store.stat(gone.digest), null);
      await assert.rejects(store.read(gone.digest), BlobNotFoundError);
      assert.equal(await store.delete(gone.digest), false);
      assert.deepEqual(await all(store.list()), [keep]);
      // Content can come back after a delete.
      const again = await store.put(Readable.from([Buffer.from("again")]));
      assert.equal(await store.delete(again.digest), true);
      assert.deepEqual(await store.put(Readable.from([Buffer.from("again")])), again);
    });

    it("a blob is not visible while its upload is open", async () => {
      const data = randomBytes(200_000);
      const digest = sha256(data);
      const up = await store.createUpload();
      await store.append(up.id, 0, Readable.from([data]));
      assert.equal(await store.stat(digest), null);
      assert.deepEqual(await all(store.list()), []);
      await assert.rejects(store.read(digest), BlobNotFoundError);
      assert.equal(store.localPath?.(digest) ?? null, null);
      await store.commitUpload(up.id, digest);
      assert.deepEqual(await store.stat(digest), { digest, size: data.length });
    });

    it("enforces maxBytes per append: past it the call fails and the session keeps its offset", async () => {
      const MiB = 1024 * 1024;
      const limit = 2 * MiB + 100;
      const head = randomBytes(100);
      const up = await store.createUpload();
      await store.append(up.id, 0, Readable.from([head]), limit);
      // Large enough that a backend has written part of it before the limit is crossed.
      const tooBig = [randomBytes(MiB), randomBytes(MiB), randomBytes(MiB)];
      await assert.rejects(store.append(up.id, 100, Readable.from(tooBig), limit), (err: unknown) => {
        assert.ok(err instanceof TooLargeError);
        assert.equal(err.limit, limit);
        return true;
      });
      assert.equal((await store.uploadState(up.id))?.offset, 100);
      const tail = randomBytes(limit);
      assert.equal((await store.append(up.id, 100, Readable.from([tail]), limit)).offset, 100 + limit);
      const data = Buffer.concat([head, tail]);
      assert.deepEqual(await store.commitUpload(up.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
    });

    it("ping answers for a working store", async () => {
      await store.ping();
    });

    it("concurrent puts of the same bytes all succeed and store one blob", async () => {
      const data = randomBytes(300_000);
      const info = { digest: sha256(data), size: data.length };
      const results = await Promise.all(
        Array.from({ length: 4 }, () =>
          store.put(pacedSource([data.subarray(0, 100_000), data.subarray(100_000)], null, true)),
        ),
      );
      for (const r of results) assert.deepEqual(r, info);
      assert.deepEqual(await all(store.list()), [info]);
      assert.ok((await collect(await store.read(info.digest))).equals(data));
    });

    it("lists many blobs, each once", async () => {
      const infos: BlobInfo[] = [];
      for (let i = 0; i < 40; i++) infos.push(await store.put(Readable.from([Buffer.from(`many ${i}`)])));
      const byDigest = (a: BlobInfo, b: BlobInfo): number => a.digest.localeCompare(b.digest);
      assert.deepEqual((await all(store.list())).sort(byDigest), infos.sort(byDigest));
    });

    it("concurrent appends to one session do not interleave", async () => {
      const a = Array.from({ length: 8 }, () => Buffer.alloc(64 * 1024, 0xaa));
      const b = Array.from({ length: 8 }, () => Buffer.alloc(64 * 1024, 0xbb));
      const up = await store.createUpload();
      const results = await Promise.allSettled([
        store.append(up.id, 0, pacedSource(a, null, true)),
        store.append(up.id, 0, pacedSource(b, null, true)),
      ]);
      const ok = results.filter((r) => r.status === "fulfilled");
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      assert.equal(ok.length, 1);
      assert.equal(failed.length, 1);
      assert.ok(failed[0]?.reason instanceof UploadOffsetError);
      const winner = results[0]?.status === "fulfilled" ? Buffer.concat(a) : Buffer.concat(b);
      assert.equal((await store.uploadState(up.id))?.offset, winner.length);
      const info: BlobInfo = await store.commitUpload(up.id, sha256(winner));
      assert.ok((await collect(await store.read(info.digest))).equals(winner));
    });
  });
}
