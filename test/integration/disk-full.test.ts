import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { api, errorCode, uploadBlob } from "../support/api.js";
import { run } from "../support/process.js";

/**
 * A real full disk: the data folder is a 4 MiB tmpfs (needs root, as the tests run in CI). When
 * it cannot be mounted the tests are skipped with the reason.
 */
describe("a full disk under the data folder (4 MiB tmpfs)", () => {
  let mountPoint: string;
  let mounted = false;
  let skip: string | false = false;
  let s: RunningServer;
  let token: string;

  before(async () => {
    mountPoint = await mkdtemp(path.join(tmpdir(), "lxhub-full-"));
    const r = await run("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", mountPoint]);
    if (r.code !== 0) {
      skip = `cannot mount a tmpfs here (${r.stderr.trim()}); run as root`;
      return;
    }
    mounted = true;
    s = await startServer({ dataDir: mountPoint });
    token = await createToken(s.dataDir, "push:*");
  });
  after(async () => {
    await s?.stop();
    if (mounted) await run("umount", [mountPoint]);
    await rm(mountPoint, { recursive: true, force: true });
  });

  it("answers an append that fills the disk with 507 INSUFFICIENT_STORAGE and leaves no session file", async (t) => {
    if (skip) return t.skip(skip);
    const open = await api(s.httpUrl, "POST", "/api/v1/uploads", { token });
    assert.equal(open.status, 201, open.text);
    const location = String(open.json?.location);
    const big = randomBytes(8 * 1024 * 1024);
    const r = await api(s.httpUrl, "PATCH", location, {
      token,
      body: big,
      headers: { "content-range": `bytes 0-${big.length - 1}/*` },
    });
    assert.equal(r.status, 507, r.text);
    assert.equal(errorCode(r), "INSUFFICIENT_STORAGE");
    assert.match(r.text, /storage is full/);
    assert.deepEqual(await readdir(path.join(s.dataDir, "uploads")), []);
    assert.equal(errorCode(await api(s.httpUrl, "GET", location, { token })), "UPLOAD_NOT_FOUND");
  });

  it("keeps serving: documents, readiness, and an upload that fits", async (t) => {
    if (skip) return t.skip(skip);
    assert.equal((await api(s.httpUrl, "GET", "/streams/v1/index.json")).status, 200);
    assert.equal((await api(s.httpUrl, "GET", "/readyz")).status, 200);
    const small = randomBytes(64 * 1024);
    const r = await uploadBlob(s.httpUrl, token, small);
    assert.equal(r.status, 201, r.text);
    const back = await fetch(`${s.httpUrl}/blobs/sha256/${String(r.json?.digest).slice(7)}`);
    assert.deepEqual(Buffer.from(await back.arrayBuffer()), small);
  });

  it("logged the full disk as no internal error", (t) => {
    if (skip) return t.skip(skip);
    assert.deepEqual(
      s.logs.filter((l) => /"level":50/.test(l)),
      [],
    );
  });
});
