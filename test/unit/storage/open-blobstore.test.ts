import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";

import { FsBlobStore } from "../../../storage/blobs/fs.js";
import { BlobStoreUrlError, describeBlobStore, openBlobStore } from "../../../storage/blobs/open.js";
import { S3BlobStore } from "../../../storage/blobs/s3.js";

describe("openBlobStore", () => {
  it("opens the filesystem store for no URL and for file://DIR", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "lxhub-open-"));
    try {
      assert.ok((await openBlobStore(undefined, dir)) instanceof FsBlobStore);
      const other = path.join(dir, "other");
      const store = await openBlobStore(`file://${other}`, dir);
      assert.ok(store instanceof FsBlobStore);
      await store.ping();
      assert.equal(describeBlobStore(`file://${other}`), `filesystem ${other}`);
      assert.equal(describeBlobStore(undefined, dir), `filesystem ${dir}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("opens an S3 store without contacting it", async () => {
    const url = "s3://my-bucket/some/prefix?endpoint=http://127.0.0.1:9&region=eu-west-1&forcePathStyle=true";
    const store = await openBlobStore(url, "/nonexistent");
    assert.ok(store instanceof S3BlobStore);
    assert.equal(store.bucket, "my-bucket");
    assert.equal(store.prefix, "some/prefix/");
    await store.close?.();
    assert.equal(
      describeBlobStore(url),
      's3 bucket my-bucket, prefix "some/prefix" at http://127.0.0.1:9 (path-style)',
    );
    const bare = await openBlobStore("s3://bucket-only", "/nonexistent");
    assert.ok(bare instanceof S3BlobStore);
    assert.equal(bare.prefix, "");
    await bare.close?.();
  });

  it("refuses malformed URLs with a message that names the problem", async () => {
    const cases: [string, RegExp][] = [
      ["ftp://host/x", /unknown blob store URL scheme "ftp"/],
      ["/just/a/path", /unknown blob store URL scheme/],
      ["file:relative", /file:\/\/DIR/],
      ["file://", /needs a folder/],
      ["s3:///prefix", /without a bucket/],
      ["s3://key:secret@bucket/p", /must not hold credentials/],
      ["s3://bucket/p?endpoint=ftp://x", /endpoint must be http/],
      ["s3://bucket/p?color=blue", /unknown s3:\/\/ parameter "color"/],
      ["s3://bucket/p?forcePathStyle=maybe", /forcePathStyle must be true or false/],
      ["s3://bucket/p?partSize=1024", /partSize must be between/],
      ["s3://Bad_Bucket/p", /bad S3 bucket name/],
    ];
    for (const [url, message] of cases) {
      await assert.rejects(openBlobStore(url, "/nonexistent"), (err: unknown) => {
        assert.ok(err instanceof BlobStoreUrlError, `${url}: ${String(err)}`);
        assert.match(err.message, message, url);
        assert.ok(!err.message.includes("secret"), "the message leaks a credential");
        return true;
      });
    }
  });
});
