import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { sha256Hex } from "../support/api.js";
import { publishTinyImage } from "../support/tiny-image.js";
import { rawGet } from "../support/raw-http.js";

describe("conditional requests on documents, image files and blobs", () => {
  let s: RunningServer;
  let work: string;
  let rootDigest: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-cond-"));
    s = await startServer();
    const admin = await createToken(s.dataDir, "admin");
    rootDigest = (await publishTinyImage(s.httpUrl, admin, path.join(work, "img"))).digests.root;
  });
  after(async () => {
    await s?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("documents: the gzip and identity forms have distinct ETags, and either revalidates to 304", async () => {
    const url = `${s.httpUrl}/streams/v1/images.json`;
    const plain = await rawGet(url, { "accept-encoding": "identity" });
    const gz = await rawGet(url, { "accept-encoding": "gzip" });
    assert.equal(plain.headers.etag, `"${sha256Hex(plain.body)}"`);
    assert.equal(gz.headers["content-encoding"], "gzip");
    assert.notEqual(gz.headers.etag, plain.headers.etag);

    const again = await rawGet(url, { "accept-encoding": "gzip", "if-none-match": String(gz.headers.etag) });
    assert.equal(again.status, 304);
    assert.equal(again.headers.etag, gz.headers.etag);
    assert.equal(again.body.length, 0);
    // A client holding the other form still has a fresh copy: the 304 names the tag it holds.
    const cross = await rawGet(url, {
      "accept-encoding": "gzip",
      "if-none-match": String(plain.headers.etag),
    });
    assert.equal(cross.status, 304);
    assert.equal(cross.headers.etag, plain.headers.etag);
    const cross2 = await rawGet(url, { "if-none-match": String(gz.headers.etag) });
    assert.equal(cross2.status, 304);
    assert.equal(cross2.headers.etag, gz.headers.etag);
    // A tag of another generation's document is not fresh.
    const stale = await rawGet(url, {
      "accept-encoding": "gzip",
      "if-none-match": `"${"0".repeat(64)}-gzip"`,
    });
    assert.equal(stale.status, 200);
  });

  it("documents: a weak tag (as a compressing proxy passes it on) matches: 304", async () => {
    const url = `${s.httpUrl}/streams/v1/index.json`;
    const first = await rawGet(url, {});
    const weak = `W/${String(first.headers.etag)}`;
    const r = await rawGet(url, { "if-none-match": weak });
    assert.equal(r.status, 304);
    const other = await rawGet(url, { "if-none-match": 'W/"0000"' });
    assert.equal(other.status, 200);
  });

  it("documents: Last-Modified is the generation's build time; If-Modified-Since gives 304", async () => {
    const url = `${s.httpUrl}/streams/v1/index.json`;
    const first = await rawGet(url, {});
    const lm = String(first.headers["last-modified"]);
    assert.ok(Number.isFinite(Date.parse(lm)), lm);
    assert.ok(Math.abs(Date.now() - Date.parse(lm)) < 600_000, `${lm} is not recent`);
    assert.equal((await rawGet(url, { "if-modified-since": lm })).status, 304);
    const earlier = new Date(Date.parse(lm) - 1000).toUTCString();
    assert.equal((await rawGet(url, { "if-modified-since": earlier })).status, 200);
    // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    const both = await rawGet(url, { "if-modified-since": lm, "if-none-match": '"other"' });
    assert.equal(both.status, 200);
  });

  it("image files and blobs: ETag, and 304 on If-None-Match, weak or strong, also for HEAD", async () => {
    const hex = rootDigest.slice("sha256:".length);
    const urls = [
      `${s.httpUrl}/images/tiny/1/amd64/default/20240101_0000/rootfs.tar.xz`,
      `${s.httpUrl}/blobs/sha256/${hex}`,
    ];
    const bytes = await readFile(path.join(work, "img", "rootfs.tar.xz"));
    for (const url of urls) {
      const r = await rawGet(url, {});
      assert.equal(r.status, 200, url);
      assert.equal(r.headers.etag, `"${hex}"`);
      assert.deepEqual(r.body, bytes);
      for (const tag of [`"${hex}"`, `W/"${hex}"`]) {
        const c = await rawGet(url, { "if-none-match": tag });
        assert.equal(c.status, 304, `${url} ${tag}`);
        assert.equal(c.headers.etag, `"${hex}"`);
        assert.equal(c.body.length, 0);
      }
      const head = await fetch(url, { method: "HEAD", headers: { "if-none-match": `"${hex}"` } });
      assert.equal(head.status, 304);
      assert.equal((await rawGet(url, { "if-none-match": '"nope"' })).status, 200);
    }
  });

  it("If-Range still needs the strong tag: a weak one gets the whole file", async () => {
    const hex = rootDigest.slice("sha256:".length);
    const url = `${s.httpUrl}/blobs/sha256/${hex}`;
    const strong = await rawGet(url, { range: "bytes=0-9", "if-range": `"${hex}"` });
    assert.equal(strong.status, 206);
    const weak = await rawGet(url, { range: "bytes=0-9", "if-range": `W/"${hex}"` });
    assert.equal(weak.status, 200);
  });
});
