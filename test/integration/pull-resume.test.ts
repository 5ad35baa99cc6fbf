/**
 * Interrupted downloads resume with `Range` instead of restarting, shown by the bytes a loopback
 * relay (in front of a real `lxhub serve`) sends: a pull interrupted mid-file (SIGTERM, as a user
 * pressing Ctrl-C would) keeps its `.part`, and the next pull asks only for the rest; a connection
 * dropped mid-file is resumed within the same run.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { buildBusyboxImage, sha256File, type BusyboxImage } from "../support/image-fixture.js";
import { CLI_MAIN, createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import {
  exists,
  leftovers,
  referenceTree,
  snapshotTree,
  TestServer,
  upstreamSource,
  envWithRemote,
} from "./pull-support.js";

const ROOT = "images/busybox/1.36/amd64/default/20240101_0000/rootfs.tar.xz";

describe("lxhub pull resumes interrupted downloads", { timeout: 10 * 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let relay: TestServer;
  let image: BusyboxImage;
  let ref: string;
  let rootSize: number;
  let rootDigest: string;

  const fresh = (): Promise<NodeJS.ProcessEnv> => envWithRemote(work, relay.url);

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-resume-"));
    server = await startServer();
    const token = await createToken(server.dataDir, "admin");
    image = await buildBusyboxImage(path.join(work, "img"), { formats: ["squashfs", "tar.xz"] });
    const r = await lxhubCli(["push", server.httpUrl, image.dir, "--token", token]);
    assert.equal(r.code, 0, r.stderr);
    ref = await referenceTree(image.files["rootfs.tar.xz"] as string, work);
    rootSize = (await stat(image.files["rootfs.tar.xz"] as string)).size;
    rootDigest = await sha256File(image.files["rootfs.tar.xz"] as string);
    assert.ok(rootSize > 400_000, `the test image's root is big enough to interrupt (${rootSize} bytes)`);
    relay = new TestServer(upstreamSource(server.httpUrl));
    await relay.start();
  });

  after(async () => {
    await relay?.stop();
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("a pull interrupted mid-file keeps its partial download; the next pull asks only for the rest", async () => {
    const env = await fresh();
    const dest = path.join(work, "interrupted");
    const held = relay.holdAfter(ROOT, 300_000);
    const child = spawn(process.execPath, [CLI_MAIN, "pull", "t", "busybox/1.36", dest], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    try {
      await held.reached;
      // Let the bytes already sent reach the client before it is interrupted.
      await new Promise((r) => setTimeout(r, 300));
      child.kill("SIGTERM");
      assert.equal(await exited, 1, stderr);
    } finally {
      held.release();
      child.kill("SIGKILL");
    }
    assert.match(stderr, /interrupted/);
    assert.equal(await exists(dest), false);
    assert.deepEqual(await leftovers(dest), [], "the staging folder of the unpack is removed");

    const blobs = path.join(env.XDG_CACHE_HOME as string, "lxhub", "blobs", "sha256");
    const part = path.join(blobs, `${rootDigest}.part`);
    const kept = (await stat(part)).size;
    assert.ok(kept > 0 && kept <= 300_000, `partial file holds ${kept} bytes`);
    assert.equal(await exists(path.join(blobs, rootDigest)), false);

    relay.log.length = 0;
    const r = await lxhubCli(["pull", "t", "busybox/1.36", dest], { env });
    assert.equal(r.code, 0, r.stderr);
    const rootRequests = relay.log.filter((l) => l.path === ROOT);
    assert.deepEqual(
      rootRequests.map((l) => [l.range, l.status, l.bytes]),
      [[`bytes=${kept}-`, 206, rootSize - kept]],
      "only the missing bytes are transferred",
    );
    assert.match(r.stdout, /resumed/);
    assert.deepEqual(await snapshotTree(dest), await snapshotTree(ref));
    assert.deepEqual((await readdir(blobs)).includes(`${rootDigest}.part`), false);
    assert.equal(await sha256File(path.join(blobs, rootDigest)), rootDigest);
  });

  it("a connection dropped mid-file is resumed with Range in the same run", async () => {
    const env = await fresh();
    const dest = path.join(work, "dropped");
    relay.log.length = 0;
    relay.cutOnce.set(ROOT, 250_000);
    const r = await lxhubCli(["pull", "t", "busybox/1.36", dest], { env });
    assert.equal(r.code, 0, r.stderr);
    const rootRequests = relay.log.filter((l) => l.path === ROOT);
    assert.equal(rootRequests.length, 2, JSON.stringify(rootRequests));
    const [first, second] = rootRequests as [(typeof rootRequests)[0], (typeof rootRequests)[0]];
    assert.deepEqual([first.range, first.status, first.bytes], [undefined, 200, 250_000]);
    const m = /^bytes=(\d+)-$/.exec(second.range ?? "");
    assert.ok(m, `the second request asks for a range (${second.range})`);
    const from = Number(m[1]);
    assert.ok(from > 0 && from <= 250_000);
    assert.equal(second.bytes, rootSize - from);
    assert.ok(relay.bytesFor(ROOT) < rootSize + 250_000);
    assert.deepEqual(await snapshotTree(dest), await snapshotTree(ref));
    assert.equal(
      (await readFile(path.join(dest, "etc/lxhub-marker"), "utf8")).length > 0,
      true,
      "the tree is complete",
    );
  });
});
