/**
 * `lxhub pull` refuses before it writes: a root tarball that decompresses far beyond its signed
 * size (an xz bomb: 1 GiB of zeros in ~160 KB) is stopped at `--max-ratio` × that size, whether
 * its hash is forged (served by a loopback relay in front of the real server) or signed (pushed
 * to the real server); a download that stalls is dropped and resumed, then given up with
 * "stalled: …"; a pull that runs past `--timeout` is stopped. Each time nothing is left at DEST.
 * And the download cache keeps its size cap after each pull (`lxhub cache list|prune`).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import {
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { after, before, describe, it } from "node:test";
import { pack as tarPack } from "tar-stream";
import { buildBusyboxImage, sha256File, type BusyboxImage } from "../support/image-fixture.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { exists, leftovers, pullEnv, TestServer, upstreamSource, envWithRemote } from "./pull-support.js";

const MiB = 1024 * 1024;
const ROOT = "images/busybox/1.36/amd64/default/20240101_0000/rootfs.tar.xz";

/** A tar of `files` × 1 MiB of zeros, xz-compressed (single-threaded, fast preset) into `file`. */
async function writeXzBomb(file: string, files: number): Promise<void> {
  const xz = spawn("xz", ["-1", "-T1", "-c"], { stdio: ["pipe", "pipe", "inherit"] });
  const packer = tarPack();
  const zeros = Buffer.alloc(MiB);
  const written = pipeline(xz.stdout, createWriteStream(file));
  const fed = pipeline(packer, xz.stdin);
  for (let i = 0; i < files; i++) {
    await new Promise<void>((resolve, reject) =>
      packer.entry({ name: `zeros/${String(i).padStart(5, "0")}`, size: MiB, mode: 0o644 }, zeros, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  packer.finalize();
  await Promise.all([fed, written]);
}

/** Bytes of files under `dir`'s staging folders (`*.lxhub-partial-*`), now. */
async function stagedBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (p: string): Promise<void> => {
    const entries = await readdir(p, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const child = path.join(p, e.name);
      if (e.isDirectory()) await walk(child);
      else if (e.isFile()) total += (await lstat(child).catch(() => ({ size: 0 }))).size;
    }
  };
  for (const name of await readdir(dir).catch(() => [])) {
    if (name.includes(".lxhub-partial-")) await walk(path.join(dir, name));
  }
  return total;
}

/** Samples `stagedBytes(dir)` every few ms until `stop()`, which gives the largest value seen. */
function watchStaging(dir: string): { stop: () => Promise<number> } {
  let most = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      most = Math.max(most, await stagedBytes(dir));
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return most;
    },
  };
}

describe("lxhub pull refuses before it writes", { timeout: 10 * 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let relay: TestServer;
  let image: BusyboxImage;
  let other: BusyboxImage;
  let bomb: string;
  let bombSize: number;
  let rootSize: number;

  const fresh = (): Promise<NodeJS.ProcessEnv> => envWithRemote(work, relay.url);

  /** A DEST path in a folder of its own (so staging folders beside it can be watched). */
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
    bomb = path.join(work, "bomb.tar.xz");
    await writeXzBomb(bomb, 1024);
    bombSize = (await stat(bomb)).size;
    assert.ok(bombSize < rootSize, `the bomb (${bombSize} B) fits in the signed size (${rootSize} B)`);

    // The same bomb, signed: an image whose rootfs.tar.xz is the bomb, pushed as any other.
    const signed = await buildBusyboxImage(path.join(work, "signed-bomb"), {
      os: "bomb",
      release: "1",
      formats: ["squashfs", "tar.xz"],
    });
    await copyFile(bomb, signed.files["rootfs.tar.xz"] as string);
    other = await buildBusyboxImage(path.join(work, "other"), {
      os: "other",
      release: "1",
      formats: ["squashfs", "tar.xz"],
    });
    for (const img of [image, signed, other]) {
      const r = await lxhubCli(["push", server.httpUrl, img.dir, "--token", token]);
      assert.equal(r.code, 0, r.stderr);
    }
    relay = new TestServer(upstreamSource(server.httpUrl));
    await relay.start();
  });

  after(async () => {
    await relay?.stop();
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("a forged root tarball that is an xz bomb: stopped at 64× the signed size while the download lasts, then refused by its hash", async (t) => {
    const env = await fresh();
    // The bomb, padded with zeros to the signed size: only its hash differs from what is signed.
    const forged = Buffer.concat([await readFile(bomb), Buffer.alloc(rootSize - bombSize)]);
    relay.overrides.set(ROOT, forged);
    // The sender holds back the last byte, as an attacker may: the unpacker runs ahead of the hash
    // check for as long as the download lasts. It is let go once the unpacker gave up (its
    // staging folder is gone); the client then resumes, gets the last byte and checks the hash.
    const held = relay.holdAfter(ROOT, rootSize - 1);
    const dest = await destIn("forged");
    const watch = watchStaging(path.dirname(dest));
    const started = Date.now();
    try {
      const pulled = lxhubCli(["pull", "t", "busybox/1.36", dest], { env });
      await held.reached;
      while ((await readdir(path.dirname(dest))).some((n) => n.includes(".lxhub-partial-"))) {
        assert.ok(Date.now() - started < 60_000, "the unpacker stops at the limit");
        await new Promise((r) => setTimeout(r, 20));
      }
      held.release();
      const r = await pulled;
      const most = await watch.stop();
      const limit = Math.max(MiB, rootSize * 64);
      t.diagnostic(
        `forged bomb: ${bombSize} B → 1 GiB; signed size ${rootSize} B; limit ${limit} B; ` +
          `most seen in staging ${most} B; ${Date.now() - started} ms`,
      );
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, /rootfs\.tar\.xz \(.*\) has sha256 [0-9a-f]{64}, but the products file says/);
      assert.match(
        r.stderr,
        /its content was refused as well while unpacking: rootfs\.tar\.xz decompresses to more than [\d.]+ MiB \(64× its signed size of/,
      );
      assert.ok(most <= limit, `at most the limit was written to staging (${most} > ${limit})`);
      await assertNothingAt(dest);
    } finally {
      held.release();
      relay.overrides.delete(ROOT);
    }
  });

  it("a signed xz bomb: refused at 64× its size, nothing at DEST; the ratio flag and env set the cap", async (t) => {
    const { env } = await pullEnv(work);
    const base = ["pull", server.httpUrl, "bomb/1", "--no-signature"];
    const dest = await destIn("signed");
    const watch = watchStaging(path.dirname(dest));
    const started = Date.now();
    const r = await lxhubCli([...base, dest], { env });
    const most = await watch.stop();
    const limit = Math.max(MiB, bombSize * 64);
    t.diagnostic(
      `signed bomb: ${bombSize} B → 1 GiB; limit ${limit} B; most seen in staging ${most} B; ${Date.now() - started} ms`,
    );
    assert.equal(r.code, 1, r.stdout);
    assert.match(
      r.stderr,
      /refused: rootfs\.tar\.xz decompresses to more than [\d.]+ MiB \(64× its signed size of [\d.]+ KiB\); the partial unpack was removed and nothing was written to .*dest\. If the image is genuine, allow a higher ratio with --max-ratio N or LXHUB_MAX_RATIO/,
    );
    assert.ok(most <= limit, `at most the limit was written to staging (${most} > ${limit})`);
    await assertNothingAt(dest);

    // A lower ratio stops it sooner; the flag beats the environment; a malformed value is named.
    const low = await destIn("signed-low");
    const r2 = await lxhubCli([...base, low, "--max-ratio", "8"], {
      env: { ...env, LXHUB_MAX_RATIO: "1000" },
    });
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /decompresses to more than [\d.]+ MiB \(8× its signed size/);
    await assertNothingAt(low);
    const bad = await lxhubCli([...base, await destIn("bad"), "--max-ratio", "lots"], { env });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--max-ratio: "lots" is not a ratio of at least 1/);
    const badEnv = await lxhubCli([...base, await destIn("bad-env")], {
      env: { ...env, LXHUB_MAX_RATIO: "0.5" },
    });
    assert.match(badEnv.stderr, /LXHUB_MAX_RATIO: "0.5" is not a ratio of at least 1/);
  });

  it("a genuine image unpacks under the default ratio", async () => {
    const env = await fresh();
    const dest = await destIn("genuine");
    const r = await lxhubCli(["pull", "t", "busybox/1.36", dest], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await readdir(dest)).includes("bin"));
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

  it("the cache keeps its size cap after each pull, least recently used first; cache list and prune", async () => {
    const env = await fresh();
    const digest = async (img: BusyboxImage, name: string) => sha256File(img.files[name] as string);
    const [busyRoot, otherRoot] = [
      await digest(image, "rootfs.tar.xz"),
      await digest(other, "rootfs.tar.xz"),
    ];
    const first = await lxhubCli(["pull", "t", "busybox/1.36", await destIn("cache-1")], { env });
    assert.equal(first.code, 0, first.stderr);
    assert.doesNotMatch(first.stdout, /cache: removed/);
    const list = await lxhubCli(["cache", "list"], { env });
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^verified .* sha256:${busyRoot}$`, "m"));
    assert.match(list.stdout, /^2 file\(s\), .* \(cap 10\.0 GiB\)$/m);

    // Two images do not fit in 1500 KiB: the one used longest ago goes.
    const second = await lxhubCli(["pull", "t", "other/1", await destIn("cache-2")], {
      env: { ...env, LXHUB_CACHE_MAX_SIZE: "1500K" },
    });
    assert.equal(second.code, 0, second.stderr);
    assert.match(
      second.stdout,
      /^ {2}cache: evicted 2 least recently used file\(s\), [\d.]+ [KM]iB, to stay under its size cap$/m,
    );
    const after2 = await lxhubCli(["cache", "list"], { env });
    assert.match(after2.stdout, new RegExp(`sha256:${otherRoot}$`, "m"));
    assert.doesNotMatch(after2.stdout, new RegExp(busyRoot));

    // Partial downloads: one abandoned two days ago, one from an hour ago.
    const blobs = path.join(env.XDG_CACHE_HOME as string, "lxhub", "blobs", "sha256");
    const [abandoned, recent] = [busyRoot, "ab".repeat(32)];
    for (const [hex, hoursAgo] of [
      [abandoned, 48],
      [recent, 1],
    ] as const) {
      const file = path.join(blobs, `${hex}.part`);
      await writeFile(file, Buffer.alloc(1000));
      const t = new Date(Date.now() - hoursAgo * 3600_000);
      await utimes(file, t, t);
    }
    const prune = await lxhubCli(["cache", "prune"], { env });
    assert.equal(prune.code, 0, prune.stderr);
    assert.match(
      prune.stdout,
      new RegExp(`^removed .* sha256:${abandoned}  \\(abandoned partial download\\)$`, "m"),
    );
    assert.match(prune.stdout, /^removed 1 file\(s\), 1000 B; /m);
    const none = await lxhubCli(["cache", "prune", "--max-size", "0"], { env });
    assert.match(none.stdout, new RegExp(`sha256:${otherRoot}  \\(least recently used\\)`));
    assert.match(
      none.stdout,
      /^still 1000 B over the cap: partial downloads in use or kept for a resume are not evicted$/m,
    );
    assert.deepEqual(await readdir(blobs), [`${recent}.part`]);
    const bad = await lxhubCli(["cache", "prune", "--max-size", "lots"], { env });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--max-size: "lots" is not a size/);
  });
});

// Keep the helpers honest: the watcher sees files written into a staging folder.
describe("watchStaging", () => {
  it("sees bytes in a staging folder", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "lxhub-watch-"));
    try {
      await mkdir(path.join(dir, "dest.lxhub-partial-x", "a"), { recursive: true });
      await writeFile(path.join(dir, "dest.lxhub-partial-x", "a", "f"), Buffer.alloc(12345));
      const w = watchStaging(dir);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(await w.stop(), 12345);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
