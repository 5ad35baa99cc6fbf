/**
 * `lxhub pull` gives up in time: a download that stalls (a loopback relay in front of the real
 * server holds it) is dropped and resumed, then given up with "stalled: …"; a pull that runs past
 * `--timeout` is stopped. Each time nothing is left at DEST.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { buildBusyboxImage, sha256File, type BusyboxImage } from "../support/image-fixture.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { exists, leftovers, TestServer, upstreamSource, envWithRemote } from "./pull-support.js";

const ROOT = "images/busybox/1.36/amd64/default/20240101_0000/rootfs.tar.xz";

describe("lxhub pull gives up in time", { timeout: 10 * 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let relay: TestServer;
  let image: BusyboxImage;
  let rootSize: number;

  const fresh = (): Promise<NodeJS.ProcessEnv> => envWithRemote(work, relay.url);

  /** A DEST path in a folder of its own. */
  async function destIn(name: string): Promise<string> {
    const parent = await mkdtemp(path.join(work, `${name}-`));
    return path.join(parent, "dest");
  }

  async function assertNothingAt(dest: string): Promise<void> {
    assert.equal(await exists(dest), false, "nothing may be left at DEST");
    assert.deepEqual(await leftovers(dest), [], "no staging folder may be left");
  }

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-limits-"));
    server = await startServer();
    const token = await createToken(server.dataDir, "admin");
    image = await buildBusyboxImage(path.join(work, "img"), { formats: ["squashfs", "tar.xz"] });
    rootSize = (await stat(image.files["rootfs.tar.xz"] as string)).size;
    const r = await lxhubCli(["push", server.httpUrl, image.dir, "--token", token]);
    assert.equal(r.code, 0, r.stderr);
    relay = new TestServer(upstreamSource(server.httpUrl));
    await relay.start();
  });

  after(async () => {
    await relay?.stop();
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("a download that stalls is dropped and resumed where it stopped", async () => {
    const env = await fresh();
    const dest = await destIn("stall-resumed");
    // Every answer for the root file stops after 150 kB: each stall costs a resume, never a restart.
    const held = relay.holdAfter(ROOT, 150_000);
    relay.log.length = 0;
    try {
      const r = await lxhubCli(["pull", "t", "busybox/1.36", dest, "--stall-timeout", "1s"], { env });
      assert.equal(r.code, 0, r.stderr);
      const asked = relay.log.filter((q) => q.path === ROOT);
      assert.ok(asked.length >= 2, `resumed (${asked.length} requests)`);
      assert.equal(relay.bytesFor(ROOT), rootSize, "no byte of the root file was sent twice");
      assert.deepEqual(
        asked.slice(1).map((q) => q.range !== undefined),
        asked.slice(1).map(() => true),
      );
    } finally {
      held.release();
    }
  });

  it("a download that sends nothing: given up with 'stalled: no data for N s from <url>'", async () => {
    const env = await fresh();
    const dest = await destIn("stall");
    const held = relay.holdAfter(ROOT, 0);
    const started = Date.now();
    try {
      const r = await lxhubCli(["pull", "t", "busybox/1.36", dest], {
        env: { ...env, LXHUB_STALL_TIMEOUT: "1s" },
      });
      assert.equal(r.code, 1, r.stdout);
      assert.match(
        r.stderr,
        /^lxhub: stalled: no data for 1 s from http:\/\/127\.0\.0\.1:\d+\/images\/busybox\/1\.36\/amd64\/default\/20240101_0000\/rootfs\.tar\.xz\n$/,
      );
      assert.ok(Date.now() - started < 60_000);
      await assertNothingAt(dest);
    } finally {
      held.release();
    }
  });

  it("a pull past --timeout is stopped; its partial download is kept for the next run", async () => {
    const env = await fresh();
    const dest = await destIn("deadline");
    const held = relay.holdAfter(ROOT, 100_000);
    const started = Date.now();
    try {
      const r = await lxhubCli(["pull", "t", "busybox/1.36", dest, "--timeout", "2s"], { env });
      const took = Date.now() - started;
      assert.equal(r.code, 1, r.stdout);
      assert.match(
        r.stderr,
        /deadline: the pull did not finish within 2 s \(--timeout or LXHUB_PULL_TIMEOUT sets it\); the unfinished download is kept/,
      );
      assert.ok(took < 30_000, `stopped soon after the deadline (${took} ms)`);
      await assertNothingAt(dest);
      const digest = await sha256File(image.files["rootfs.tar.xz"] as string);
      const part = path.join(env.XDG_CACHE_HOME as string, "lxhub", "blobs", "sha256", `${digest}.part`);
      assert.equal((await stat(part)).size, 100_000);
    } finally {
      held.release();
    }
    const bad = await lxhubCli(["pull", "t", "busybox/1.36", await destIn("bad"), "--timeout", "soon"], {
      env,
    });
    assert.match(bad.stderr, /--timeout: "soon" is not a duration/);
  });
});
