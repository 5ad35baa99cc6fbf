import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { api, errorCode, uploadBlob, uploadFile, versionPath } from "../support/api.js";
import { buildTinyImage } from "../support/tiny-image.js";
import { metadataBomb, TINY_METADATA_YAML } from "../support/metadata-bomb.js";
import { METADATA_SCAN_MAX_BYTES } from "../../image/metadata.js";

describe("publishing a metadata tarball that inflates to 3 GiB", () => {
  let s: RunningServer;
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-bomb-"));
    s = await startServer();
  });
  after(async () => {
    await s?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("is refused quickly with a 4xx naming the limit, and the server goes on", async () => {
    const admin = await createToken(s.dataDir, "admin");
    const bomb = await metadataBomb(3 * 1024 ** 3, TINY_METADATA_YAML);
    const up = await uploadBlob(s.httpUrl, admin, bomb);
    assert.equal(up.status, 201, up.text);
    const img = await buildTinyImage(path.join(work, "img"), { os: "bomb" });
    const root = await uploadFile(s.httpUrl, admin, img.files["rootfs.tar.xz"]!);
    const body = JSON.stringify({
      files: [
        { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: up.json?.digest },
        { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: root },
      ],
    });
    const product = { os: "bomb", release: "1", arch: "amd64", variant: "default" };
    const t0 = Date.now();
    const r = await api(s.httpUrl, "PUT", versionPath(product, "20240101_0000"), { token: admin, body });
    const ms = Date.now() - t0;
    assert.ok(r.status === 400 || r.status === 413, `${r.status} ${r.text}`);
    assert.ok(["INVALID_METADATA", "TOO_LARGE"].includes(errorCode(r) ?? ""), r.text);
    assert.match(r.text, new RegExp(String(METADATA_SCAN_MAX_BYTES)));
    assert.ok(ms < 10_000, `answered after ${ms} ms`);
    assert.equal((await api(s.httpUrl, "GET", "/streams/v1/index.json")).status, 200);
  });
});
