/**
 * The pull-through cache with the real LXD client and daemon: a busybox image is pushed to an
 * upstream `lxhub serve`; a second `lxhub serve --upstream … --upstream-key …` is the remote LXD
 * knows. The daemon's first copy makes the cache fetch each file from the upstream once; a second
 * copy, with the upstream stopped, is served by the cache alone.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildBusyboxImage, imageFingerprint } from "../support/image-fixture.js";
import {
  addSimplestreamsRemote,
  ensureLxd,
  imageInfoFingerprint,
  listImages,
  lxc,
  lxcOk,
  LxdCleanup,
  TEST_PREFIX,
} from "../support/lxd.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";

const ALIAS = "busybox/1.36";

/** GETs of image files in a server's access log, by path. */
function fileGets(server: RunningServer): Map<string, number> {
  const counts = new Map<string, number>();
  for (const l of server.logs) {
    if (!l.includes('"event":"request"')) continue;
    const o = JSON.parse(l) as { method: string; path: string; status: number };
    if (o.method === "GET" && o.path.includes("/images/busybox/") && o.status < 300)
      counts.set(o.path, (counts.get(o.path) ?? 0) + 1);
  }
  return counts;
}

describe("lxc (LXD 5.0.2) through an lxhub pull-through cache", { timeout: 10 * 60_000 }, () => {
  const run = randomBytes(4).toString("hex");
  const remote = `${TEST_PREFIX}cache-${run}`;
  const cleanup = new LxdCleanup();
  let work: string;
  let upstream: RunningServer;
  let cache: RunningServer;
  let fp: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), `${TEST_PREFIX}pull-through-`));
    cleanup.add(`work dir ${work}`, () => rm(work, { recursive: true, force: true }));
    await ensureLxd();
    const img = await buildBusyboxImage(join(work, "img"), { serial: "20240101_0000", marker: `pt ${run}` });
    fp = await imageFingerprint(img);
    upstream = await startServer();
    cleanup.add("upstream", () => upstream.stop());
    const token = await createToken(upstream.dataDir, "admin");
    const push = await lxhubCli([
      "push",
      upstream.httpsUrl,
      img.dir,
      "--token",
      token,
      "--ca",
      upstream.certFile,
    ]);
    assert.equal(push.code, 0, push.stderr);
    const jwks = (await (await fetch(`${upstream.httpUrl}/.well-known/lxhub/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    cache = await startServer({
      extraArgs: [
        "--upstream",
        upstream.httpsUrl,
        "--upstream-key",
        jwks.keys[0]!.kid,
        "--upstream-ca",
        upstream.certFile,
      ],
    });
    cleanup.add("cache", () => cache.stop());
    for (let i = 0; ; i++) {
      const products = await (await fetch(`${cache.httpUrl}/streams/v1/images.json`)).text();
      if (products.includes("busybox:1.36:amd64:default")) break;
      assert.ok(i < 100, "the cache never listed the upstream image");
      await new Promise((r) => setTimeout(r, 100));
    }
    cleanup.remote(remote, cache.httpsUrl);
    await addSimplestreamsRemote(remote, cache.httpsUrl, cache.certPem);
  });

  after(async () => {
    const problems = await cleanup.run();
    if (problems.length > 0) console.error(`cleanup problems:\n${problems.join("\n")}`);
  });

  it("lists the upstream image with its fingerprint and alias", async () => {
    const images = await listImages(remote);
    const image = images.find((i) => i.fingerprint === fp);
    assert.ok(image, `fingerprint ${fp} in ${images.map((i) => i.fingerprint).join(", ")}`);
    assert.ok((image.aliases ?? []).some((a) => a.name === ALIAS));
  });

  it("the daemon's first copy fetches each file from the upstream once; a second needs no upstream", async () => {
    cleanup.image(fp);
    await lxcOk(["image", "copy", `${remote}:${ALIAS}`, "local:"], { timeoutMs: 300_000 });
    assert.equal(await imageInfoFingerprint(fp), fp);
    await new Promise((r) => setTimeout(r, 300));
    const gets = fileGets(upstream);
    assert.equal(gets.size, 2, `upstream file GETs: ${JSON.stringify([...gets])}`);
    for (const [p, n] of gets) assert.equal(n, 1, p);

    await upstream.stop();
    const del = await lxc(["image", "delete", fp]);
    assert.equal(del.code, 0, del.stderr);
    await lxcOk(["image", "copy", `${remote}:${ALIAS}`, "local:"], { timeoutMs: 300_000 });
    assert.equal(await imageInfoFingerprint(fp), fp);
    // The daemon really downloaded both files from the cache twice.
    await new Promise((r) => setTimeout(r, 300));
    const served = fileGets(cache);
    assert.equal(served.size, 2, JSON.stringify([...served]));
    for (const [p, n] of served) assert.equal(n, 2, p);
  });
});
