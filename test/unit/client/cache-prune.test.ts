import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { BlobCache, fetchFile } from "../../../client/cache.js";
import { listCache, pruneCache } from "../../../client/cache-prune.js";
import { HttpClient } from "../../../client/http.js";

const HOUR = 3600_000;
const now = new Date("2026-01-10T12:00:00Z");

/** A digest-like name for a test file (the content is not checked by prune). */
const hex = (label: string): string => createHash("sha256").update(label).digest("hex");

describe("cache prune", () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lxhub-cache-prune-"));
  });
  after(() => rm(root, { recursive: true, force: true }));

  /** A fresh cache folder holding `files`: name → [size, hours before `now`]. */
  async function cacheWith(files: Record<string, [number, number]>, locks: Record<string, number> = {}) {
    const dir = await mkdtemp(path.join(root, "c-"));
    const blobs = new BlobCache(dir).dir;
    await mkdir(blobs, { recursive: true });
    for (const [name, [size, hoursAgo]] of Object.entries(files)) {
      const file = path.join(blobs, name);
      await writeFile(file, Buffer.alloc(size));
      const t = new Date(now.getTime() - hoursAgo * HOUR);
      await utimes(file, t, t);
    }
    for (const [name, pid] of Object.entries(locks)) await writeFile(path.join(blobs, name), String(pid));
    return { dir, blobs };
  }

  test("over the cap, verified files go least recently used first, until the rest fits", async () => {
    const [a, b, c] = [hex("a"), hex("b"), hex("c")];
    const { dir, blobs } = await cacheWith({ [a]: [1000, 3], [b]: [2000, 2], [c]: [3000, 1] });
    const listed = await listCache(dir);
    assert.deepEqual(
      listed.entries.map((e) => e.sha256),
      [c, b, a],
      "most recently used first",
    );
    assert.equal(listed.totalBytes, 6000);
    const report = await pruneCache(dir, { maxBytes: 4000, now });
    assert.deepEqual(
      report.removed.map((e) => [e.sha256, e.why]),
      [
        [a, "lru"],
        [b, "lru"],
      ],
    );
    assert.equal(report.totalBytes, 3000);
    assert.equal(report.overBy, 0);
    assert.deepEqual(await readdir(blobs), [c]);
    const again = await pruneCache(dir, { maxBytes: 4000, now });
    assert.deepEqual(again.removed, [], "under the cap nothing goes");
  });

  test("abandoned parts go after the grace period; fresh or locked ones stay; dead locks are removed", async () => {
    const [old, fresh, busy, verified] = [hex("old"), hex("fresh"), hex("busy"), hex("v")];
    // A pid that existed and is gone.
    const gone = spawnSync(process.execPath, ["-e", ""]).pid as number;
    const { dir, blobs } = await cacheWith(
      {
        [`${old}.part`]: [500, 25],
        [`${fresh}.part`]: [600, 23],
        [`${busy}.part`]: [700, 48],
        [verified]: [100, 0],
      },
      { [`${busy}.lock`]: process.pid, [`${old}.lock`]: gone },
    );
    const listed = await listCache(dir);
    assert.equal(listed.entries.find((e) => e.sha256 === busy)?.locked, true);
    assert.equal(listed.entries.find((e) => e.sha256 === old)?.locked, false);
    const report = await pruneCache(dir, { maxBytes: 10_000, now });
    assert.deepEqual(
      report.removed.map((e) => [e.sha256, e.kind, e.why]),
      [[old, "part", "abandoned"]],
    );
    assert.equal(report.staleLocks, 1);
    assert.deepEqual(
      (await readdir(blobs)).sort(),
      [`${busy}.lock`, `${busy}.part`, `${fresh}.part`, verified].sort(),
    );

    // A cap of 0 evicts every verified file, but parts kept for a resume stay (and are reported).
    const all = await pruneCache(dir, { maxBytes: 0, now });
    assert.deepEqual(
      all.removed.map((e) => e.sha256),
      [verified],
    );
    assert.equal(all.overBy, 1300);
    const short = await pruneCache(dir, { maxBytes: 0, now, partGraceMs: HOUR });
    assert.deepEqual(
      short.removed.map((e) => e.sha256),
      [fresh],
      "a shorter grace period takes the fresh part too; the locked one stays",
    );
  });

  test("a cache hit marks the file as just used", async () => {
    const body = Buffer.from("cached image bytes\n");
    const digest = createHash("sha256").update(body).digest("hex");
    const dir = await mkdtemp(path.join(root, "hit-"));
    const cache = new BlobCache(dir);
    await mkdir(cache.dir, { recursive: true });
    await writeFile(cache.path(digest), body);
    const long = new Date(Date.now() - 48 * HOUR);
    await utimes(cache.path(digest), long, long);
    // Never contacted: the file is served from the cache.
    const http = new HttpClient("http://127.0.0.1:9");
    try {
      const r = await fetchFile(
        { name: "x", path: "images/x", sha256: digest, size: body.length },
        { http, cache },
      );
      assert.equal(r.cached, true);
    } finally {
      http.close();
    }
    const used = (await stat(cache.path(digest))).mtime.getTime();
    assert.ok(Date.now() - used < 60_000, "mtime is now");
  });
});
