/**
 * S3BlobStore against a real Ceph RADOS Gateway (test/support/rgw.ts): the shared conformance
 * suite, then what only an object store has — pages, replicas, parts, presigned URLs, and a
 * gateway that goes away.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes, type Hash } from "node:crypto";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";

import { ListMultipartUploadsCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";

import { S3BlobStore, type S3BlobStoreOptions } from "../../storage/blobs/s3.js";
import { DigestMismatchError, UploadNotFoundError } from "../../storage/blobs/store.js";
import { createTestBucket, ensureRgw, s3ClientFor, stopRgw, type Rgw } from "../support/rgw.js";
import { all, blobStoreConformance, collect, pacedSource, sha256 } from "../storage/blobstore-conformance.js";

const MiB = 1024 * 1024;

after(() => stopRgw());

async function makeStore(rgw: Rgw, extra: Partial<S3BlobStoreOptions> = {}): Promise<S3BlobStore> {
  return new S3BlobStore({
    bucket: extra.bucket ?? (await createTestBucket(rgw)),
    prefix: "lxhub/",
    endpoint: rgw.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    ...extra,
  });
}

/** Every key in the bucket (to prove nothing is left behind or half-visible). */
async function keys(rgw: Rgw, bucket: string): Promise<string[]> {
  const client = s3ClientFor(rgw);
  try {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort();
  } finally {
    client.destroy();
  }
}

async function multipartUploads(rgw: Rgw, bucket: string): Promise<number> {
  const client = s3ClientFor(rgw);
  try {
    return (await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads?.length ?? 0;
  } finally {
    client.destroy();
  }
}

blobStoreConformance("s3 (radosgw)", async () => {
  const rgw = await ensureRgw();
  const store = await makeStore(rgw);
  return { store, cleanup: () => store.close() };
});

describe("S3BlobStore on radosgw", () => {
  let rgw: Rgw;
  before(async () => {
    rgw = await ensureRgw();
  });

  it("lists over several pages", async () => {
    const store = await makeStore(rgw, { listPageSize: 2 });
    try {
      const infos = [];
      for (let i = 0; i < 7; i++) infos.push(await store.put(Readable.from([Buffer.from(`blob ${i}`)])));
      const listed = await all(store.list());
      const byDigest = (a: { digest: string }, b: { digest: string }): number =>
        a.digest.localeCompare(b.digest);
      assert.deepEqual(listed.sort(byDigest), infos.sort(byDigest));
      const sessions = [];
      for (let i = 0; i < 5; i++) sessions.push((await store.createUpload()).id);
      assert.deepEqual((await all(store.listUploads())).map((u) => u.id).sort(), sessions.sort());
    } finally {
      await store.close();
    }
  });

  it("a session started on one replica is continued and committed on another", async () => {
    const a = await makeStore(rgw);
    const b = await makeStore(rgw, { bucket: a.bucket });
    try {
      const data = randomBytes(13 * MiB + 12_345);
      const up = await a.createUpload();
      await a.append(up.id, 0, Readable.from([data.subarray(0, 3 * MiB)]));
      assert.equal((await b.uploadState(up.id))?.offset, 3 * MiB);
      await b.append(up.id, 3 * MiB, Readable.from([data.subarray(3 * MiB, 9 * MiB)]));
      await a.append(up.id, 9 * MiB, Readable.from([data.subarray(9 * MiB)]));
      assert.equal(await a.stat(sha256(data)), null);
      assert.deepEqual(await b.commitUpload(up.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
      assert.ok((await collect(await a.read(sha256(data)))).equals(data));
      assert.deepEqual(await all(a.listUploads()), []);
      const hex = sha256(data).slice("sha256:".length);
      assert.deepEqual(await keys(rgw, a.bucket), [`lxhub/blobs/sha256/${hex.slice(0, 2)}/${hex}`]);
      assert.equal(await multipartUploads(rgw, a.bucket), 0);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("a session cancelled on one replica while another appends stays cancelled", async () => {
    const a = await makeStore(rgw, { partSize: 5 * MiB });
    const b = await makeStore(rgw, { bucket: a.bucket });
    try {
      const up = await a.createUpload();
      await a.append(up.id, 0, Readable.from([randomBytes(6 * MiB)]));
      const chunks = Array.from({ length: 8 }, () => randomBytes(MiB));
      let sent = 0;
      const slow = new Readable({
        highWaterMark: 0,
        read() {
          if (sent === 3) void b.cancelUpload(up.id).then(() => this.push(chunks[sent++]));
          else this.push(sent < chunks.length ? chunks[sent++] : null);
        },
      });
      await assert.rejects(a.append(up.id, 6 * MiB, slow), UploadNotFoundError);
      assert.equal(await a.uploadState(up.id), null);
      assert.deepEqual(await all(b.listUploads()), []);
      assert.deepEqual(await keys(rgw, a.bucket), []);
      assert.equal(await multipartUploads(rgw, a.bucket), 0);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("leaves no object behind after failed puts, a wrong digest or a cancel", async () => {
    const store = await makeStore(rgw, { partSize: 5 * MiB });
    try {
      const big = randomBytes(12 * MiB);
      await assert.rejects(
        store.put(Readable.from([big]), sha256(Buffer.from("other"))),
        DigestMismatchError,
      );
      const boom = new Error("source broke");
      await assert.rejects(store.put(pacedSource([big.subarray(0, 6 * MiB), big.subarray(6 * MiB)], boom)));
      const wrong = await store.createUpload();
      await store.append(wrong.id, 0, Readable.from([big]));
      await assert.rejects(store.commitUpload(wrong.id, sha256(Buffer.from("other"))), DigestMismatchError);
      const cancelled = await store.createUpload();
      await store.append(cancelled.id, 0, Readable.from([big]));
      await store.cancelUpload(cancelled.id);
      assert.deepEqual(await keys(rgw, store.bucket), []);
      assert.equal(await multipartUploads(rgw, store.bucket), 0);
    } finally {
      await store.close();
    }
  });

  it("appends of tiny chunks add up to more than one part", async () => {
    const store = await makeStore(rgw, { partSize: 5 * MiB });
    try {
      const up = await store.createUpload();
      const pieces: Buffer[] = [];
      let offset = 0;
      const push = async (piece: Buffer): Promise<void> => {
        pieces.push(piece);
        offset = (await store.append(up.id, offset, Readable.from([piece]))).offset;
      };
      for (let i = 0; i < 70; i++) await push(randomBytes(1)); // past the segment limit: merged
      // 100 KiB at a time, sometimes as many little chunks in one call
      while (offset < 6 * MiB) await push(randomBytes(100 * 1024));
      const many = Array.from({ length: 50 }, () => randomBytes(1));
      pieces.push(...many);
      offset = (await store.append(up.id, offset, Readable.from(many))).offset;
      const data = Buffer.concat(pieces);
      assert.equal(offset, data.length);
      assert.deepEqual(await store.commitUpload(up.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
      assert.ok((await collect(await store.read(sha256(data)))).equals(data));
      const mid = await collect(await store.read(sha256(data), { start: 5 * MiB - 3, end: 5 * MiB + 3 }));
      assert.ok(mid.equals(data.subarray(5 * MiB - 3, 5 * MiB + 4)));
    } finally {
      await store.close();
    }
  });

  it("puts and appends 200 MiB streams without holding them in memory", async (t) => {
    const store = await makeStore(rgw);
    try {
      const blocks = 200;
      const stream = (hash: Hash): Readable => {
        let i = 0;
        return new Readable({
          read() {
            peak = Math.max(peak, process.memoryUsage.rss());
            if (i === blocks) return void this.push(null);
            const b = Buffer.allocUnsafe(MiB).fill(i & 0xff);
            b.writeUInt32BE(i++, 0);
            hash.update(b);
            this.push(b);
          },
        });
      };
      const baseline = process.memoryUsage.rss();
      let peak = baseline;
      const putHash = createHash("sha256");
      const started = Date.now();
      const info = await store.put(stream(putHash));
      const putMs = Date.now() - started;
      assert.deepEqual(info, { digest: `sha256:${putHash.digest("hex")}`, size: blocks * MiB });
      const appendHash = createHash("sha256");
      const up = await store.createUpload();
      const appendStarted = Date.now();
      await store.append(up.id, 0, stream(appendHash));
      const appendMs = Date.now() - appendStarted;
      await store.cancelUpload(up.id);
      peak = Math.max(peak, process.memoryUsage.rss());
      const growth = peak - baseline;
      t.diagnostic(
        `RSS +${(growth / MiB).toFixed(1)} MiB; put ${((blocks / putMs) * 1000).toFixed(0)} MiB/s, ` +
          `append ${((blocks / appendMs) * 1000).toFixed(0)} MiB/s`,
      );
      // Parts of 8 MiB, two in flight, plus garbage not yet collected: measured +70-99 MiB for
      // 200 and 600 MiB puts alike, so the bound is below the size of one stream, not near zero.
      assert.ok(
        growth < 128 * MiB,
        `RSS grew by ${(growth / MiB).toFixed(1)} MiB while storing 200 MiB twice`,
      );
      assert.equal(await store.delete(info.digest), true);
    } finally {
      await store.close();
    }
  });

  it("copies objects above the single-copy limit part by part", async () => {
    const store = await makeStore(rgw, { maxSingleCopyBytes: 5 * MiB, partSize: 5 * MiB });
    try {
      const data = randomBytes(12 * MiB + 1);
      const info = await store.put(Readable.from([data]));
      assert.ok((await collect(await store.read(info.digest))).equals(data));
      const up = await store.createUpload();
      const other = randomBytes(11 * MiB);
      await store.append(up.id, 0, Readable.from([other]));
      await store.commitUpload(up.id, sha256(other));
      assert.ok((await collect(await store.read(sha256(other)))).equals(other));
      assert.equal(await multipartUploads(rgw, store.bucket), 0);
    } finally {
      await store.close();
    }
  });

  it("presigns a GET that plain fetch can use, until it expires", async () => {
    const store = await makeStore(rgw);
    try {
      const data = randomBytes(70_000);
      const info = await store.put(Readable.from([data]));
      const url = await store.presignedUrl(info.digest, 2);
      assert.ok(url);
      const res = await fetch(url);
      assert.equal(res.status, 200);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(data));
      const ranged = await fetch(url, { headers: { range: "bytes=10-19" } });
      assert.equal(ranged.status, 206);
      assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(data.subarray(10, 20)));
      assert.equal(await store.presignedUrl(sha256(Buffer.from("absent")), 60), null);
      await sleep(3500);
      const expired = await fetch(url);
      await expired.arrayBuffer();
      assert.equal(expired.status, 403);
    } finally {
      await store.close();
    }
  });

  it("ping fails while the gateway is down and recovers after it restarts", async () => {
    const store = await makeStore(rgw, { maxAttempts: 1 });
    try {
      await store.ping();
      await rgw.stopGateway();
      try {
        await assert.rejects(store.ping());
      } finally {
        await rgw.startGateway();
      }
      await store.ping();
    } finally {
      await store.close();
    }
  });

  it("a gateway restart during a put: the put fails cleanly or succeeds, nothing is half-visible", async (t) => {
    const store = await makeStore(rgw, { partSize: 5 * MiB });
    try {
      const data = randomBytes(30 * MiB);
      const chunks = Array.from({ length: 30 }, (_, i) => data.subarray(i * MiB, (i + 1) * MiB));
      const putting = store.put(pacedSource(chunks, null, true)).then(
        (info) => ({ ok: true as const, info }),
        (err: unknown) => ({ ok: false as const, err }),
      );
      await sleep(150);
      await rgw.restartGateway();
      const result = await putting;
      t.diagnostic(result.ok ? "the put succeeded" : `the put failed: ${String(result.err)}`);
      const listed = await all(store.list());
      if (result.ok) {
        assert.deepEqual(result.info, { digest: sha256(data), size: data.length });
        assert.deepEqual(listed, [result.info]);
        assert.ok((await collect(await store.read(sha256(data)))).equals(data));
      } else {
        assert.deepEqual(listed, []);
        assert.equal(await store.stat(sha256(data)), null);
      }
      // Whatever happened, no blob other than the whole one and no temp object remains.
      const left = (await keys(rgw, store.bucket)).filter((k) => !k.startsWith("lxhub/blobs/"));
      assert.deepEqual(left, []);
      // A multipart upload the failed put could not abort while the gateway was down is aborted
      // in the background once it is back (not visible as an object in the meantime).
      for (let i = 0; (await multipartUploads(rgw, store.bucket)) > 0; i++) {
        assert.ok(i < 300, "the failed put's multipart upload was never aborted");
        await sleep(100);
      }
    } finally {
      await store.close();
    }
  });

  it("a gateway restart during an append leaves the session at a consistent offset", async (t) => {
    const store = await makeStore(rgw, { partSize: 5 * MiB });
    try {
      const data = randomBytes(24 * MiB);
      const up = await store.createUpload();
      await store.append(up.id, 0, Readable.from([data.subarray(0, 2 * MiB)]));
      const chunks = Array.from({ length: 20 }, (_, i) => data.subarray((2 + i) * MiB, (3 + i) * MiB));
      const appending = store.append(up.id, 2 * MiB, pacedSource(chunks, null, true)).then(
        () => "the append succeeded",
        (err: unknown) => `the append failed: ${String(err)}`,
      );
      await sleep(150);
      await rgw.restartGateway();
      t.diagnostic(await appending);
      const offset = (await store.uploadState(up.id))?.offset;
      assert.ok(offset === 2 * MiB || offset === 22 * MiB, `offset ${offset}`);
      await store.append(up.id, offset, Readable.from([data.subarray(offset)]));
      assert.deepEqual(await store.commitUpload(up.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
      assert.ok((await collect(await store.read(sha256(data)))).equals(data));
      // A multipart upload the failed append could not abort went with the session.
      assert.equal(await multipartUploads(rgw, store.bucket), 0);
      const left = (await keys(rgw, store.bucket)).filter((k) => !k.startsWith("lxhub/blobs/"));
      assert.deepEqual(left, []);
    } finally {
      await store.close();
    }
  });

  it("a read cut by a gateway stop fails instead of returning short bytes", async () => {
    const store = await makeStore(rgw);
    try {
      const data = randomBytes(64 * MiB);
      const info = await store.put(Readable.from([data]));
      const stream = await store.read(info.digest);
      let got = 0;
      let firstChunk = (): void => {};
      const started = new Promise<void>((resolve) => (firstChunk = resolve));
      let resume = (): void => {};
      const gate = new Promise<void>((resolve) => (resume = resolve));
      const reading = (async () => {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          got += chunk.length;
          if (got === chunk.length) {
            firstChunk();
            await gate; // hold the body open while the gateway goes away
          }
        }
      })();
      await started;
      await rgw.stopGateway();
      resume();
      try {
        await assert.rejects(reading);
        assert.ok(got < data.length, `read all ${got} bytes`);
      } finally {
        await rgw.startGateway();
      }
    } finally {
      await store.close();
    }
  });
});
