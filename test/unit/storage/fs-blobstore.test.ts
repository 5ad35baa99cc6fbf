import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";

import { FsBlobStore } from "../../../storage/blobs/fs.js";
import { DigestMismatchError } from "../../../storage/blobs/store.js";
import { dataPath } from "../../../storage/layout.js";
import { all, blobStoreConformance, collect, sha256 } from "../../storage/blobstore-conformance.js";

const MiB = 1024 * 1024;
/** The host part of temp folder names, as storage/blobs/fs.ts writes it. */
const HOST = os.hostname().replace(/[^A-Za-z0-9.-]/g, "_") || "host";

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), "lxhub-fsblob-"));
}

blobStoreConformance("FsBlobStore", async () => {
  const dir = await tempDir();
  return { store: await FsBlobStore.open(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

/** The same 1 MiB blocks in the parent and in the child process below: block i of `seed` is all (seed*16+i). */
function block(seed: number, i: number): Buffer {
  return Buffer.alloc(MiB, (seed * 16 + i) & 0xff);
}

describe("FsBlobStore on disk", () => {
  it("commits an upload after a restart, rehashing the bytes written before it", async () => {
    const dir = await tempDir();
    try {
      const data = randomBytes(2 * MiB + 3);
      const before = await FsBlobStore.open(dir);
      const resumed = await before.createUpload();
      await before.append(resumed.id, 0, Readable.from([data.subarray(0, MiB)]));
      const untouched = await before.createUpload();
      await before.append(untouched.id, 0, Readable.from([data]));
      const wrong = await before.createUpload();
      await before.append(wrong.id, 0, Readable.from([data.subarray(0, 100)]));

      const after = await FsBlobStore.open(dir);
      assert.equal((await after.uploadState(resumed.id))?.offset, MiB);
      await after.append(resumed.id, MiB, Readable.from([data.subarray(MiB)]));
      assert.deepEqual(await after.commitUpload(resumed.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
      assert.deepEqual(await after.commitUpload(untouched.id, sha256(data)), {
        digest: sha256(data),
        size: data.length,
      });
      // Restarted, the store cannot trust anything but the bytes on disk: a wrong digest still fails.
      await assert.rejects(after.commitUpload(wrong.id, sha256(data)), (err: unknown) => {
        assert.ok(err instanceof DigestMismatchError);
        assert.equal(err.actual, sha256(data.subarray(0, 100)));
        return true;
      });
      // The first instance's hash covers 100 bytes; the file now holds more (written by the
      // second), so it must rehash rather than trust its memory.
      const shared = await before.createUpload();
      const more = randomBytes(5000);
      await before.append(shared.id, 0, Readable.from([more.subarray(0, 100)]));
      await after.append(shared.id, 100, Readable.from([more.subarray(100)]));
      assert.deepEqual(await before.commitUpload(shared.id, sha256(more)), {
        digest: sha256(more),
        size: 5000,
      });
      assert.equal(await after.delete(sha256(more)), true);

      assert.deepEqual(await all(after.list()), [{ digest: sha256(data), size: data.length }]);
      assert.deepEqual(await all(after.listUploads()), []);
      assert.ok((await collect(await after.read(sha256(data)))).equals(data));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("on open removes only abandoned temp entries and keeps upload sessions", async () => {
    const dir = await tempDir();
    try {
      const first = await FsBlobStore.open(dir);
      const up = await first.createUpload();
      await first.append(up.id, 0, Readable.from([Buffer.from("resumable")]));
      const tmp = dataPath(dir, { kind: "tmp" });
      const [own] = await readdir(tmp);
      assert.ok(own !== undefined && own.startsWith(`${HOST}-${process.pid}-`), String(own));
      // A live process's put in progress (this one's).
      await writeFile(path.join(tmp, own, "put-in-progress"), randomBytes(1000));
      // Loose entries (older versions wrote straight into tmp/).
      await writeFile(path.join(tmp, "put-leftover"), randomBytes(1000));
      await mkdir(path.join(tmp, "nested", "deeper"), { recursive: true });
      await writeFile(path.join(tmp, "nested", "deeper", "x"), "x");
      // A process of this host that is gone.
      const deadPid = await new Promise<number>((resolve) => {
        const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
        child.on("exit", () => resolve(child.pid ?? 0));
      });
      const dead = `${HOST}-${deadPid}-0123456789ab`;
      await mkdir(path.join(tmp, dead));
      await writeFile(path.join(tmp, dead, "put-x"), "x");
      // Another host's folders: kept while fresh, removed after a day untouched.
      const otherFresh = "other-host-1-0123456789ab";
      const otherOld = "other-host-2-0123456789ab";
      await mkdir(path.join(tmp, otherFresh));
      await mkdir(path.join(tmp, otherOld));
      const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
      await utimes(path.join(tmp, otherOld), twoDaysAgo, twoDaysAgo);

      const second = await FsBlobStore.open(dir);
      const left = await readdir(tmp);
      assert.equal(left.length, 3, left.join(" "));
      assert.ok(left.includes(own) && left.includes(otherFresh));
      assert.deepEqual(await readdir(path.join(tmp, own)), ["put-in-progress"]);
      const secondOwn = left.find((n) => n !== own && n !== otherFresh);
      assert.ok(secondOwn?.startsWith(`${HOST}-${process.pid}-`));
      assert.equal((await second.uploadState(up.id))?.offset, "resumable".length);
      await second.ping();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("keeps committed blobs read-only at their layout path", async () => {
    const dir = await tempDir();
    try {
      const store = await FsBlobStore.open(dir);
      const put = await store.put(Readable.from([randomBytes(10_000)]));
      const up = await store.createUpload();
      const uploaded = randomBytes(20_000);
      await store.append(up.id, 0, Readable.from([uploaded]));
      const committed = await store.commitUpload(up.id, sha256(uploaded));
      for (const info of [put, committed]) {
        const hex = info.digest.slice("sha256:".length);
        const file = dataPath(dir, { kind: "blob", hex });
        assert.equal(file, path.join(dir, "blobs", "sha256", hex.slice(0, 2), hex));
        assert.equal(store.localPath(info.digest), file);
        const st = await stat(file);
        assert.equal(st.mode & 0o777, 0o444);
        assert.equal(st.size, info.size);
        assert.equal(st.nlink, 1); // the temp or upload name is gone
      }
      assert.deepEqual(await readdir(dataPath(dir, { kind: "uploadsRoot" })), []);
      const tmp = dataPath(dir, { kind: "tmp" });
      for (const own of await readdir(tmp)) assert.deepEqual(await readdir(path.join(tmp, own)), []);
      assert.equal(store.localPath(sha256(Buffer.from("absent"))), null);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("never lists the partial bytes of a killed writer as a blob; its upload resumes after restart", async () => {
    const dir = await tempDir();
    try {
      const observer = await FsBlobStore.open(dir);
      const moduleUrl = new URL("../../../storage/blobs/fs.js", import.meta.url).href;
      // The child puts one stream and appends another; both deliver 3 MiB and then stall forever.
      const script = `
        import { Readable } from "node:stream";
        const [moduleUrl, dir] = process.argv.slice(1);
        const { FsBlobStore } = await import(moduleUrl);
        const store = await FsBlobStore.open(dir);
        const stalled = (seed) => { let i = 0; return new Readable({ read() { if (i < 3) { this.push(Buffer.alloc(${MiB}, (seed * 16 + i++) & 0xff)); } } }); };
        const up = await store.createUpload();
        store.append(up.id, 0, stalled(1)).catch((e) => console.error(e));
        store.put(stalled(2)).catch((e) => console.error(e));
        console.log(up.id);
        setInterval(() => {}, 1000);
      `;
      const child = spawn(process.execPath, ["--input-type=module", "-e", script, moduleUrl, dir], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      let exited = false;
      child.on("exit", () => (exited = true));
      const exit = new Promise((resolve) => child.on("exit", resolve));
      try {
        const uploadsDir = dataPath(dir, { kind: "uploadsRoot" });
        const tmpDir = dataPath(dir, { kind: "tmp" });
        // Wait (not a timing assertion) until both partial files hold their 3 MiB.
        for (;;) {
          assert.equal(exited, false, "the writer process exited on its own");
          const sizes = async (d: string): Promise<number[]> =>
            Promise.all(
              (await readdir(d, { recursive: true })).map(async (n) => (await stat(path.join(d, n))).size),
            );
          const [ups, tmps] = await Promise.all([sizes(uploadsDir), sizes(tmpDir)]);
          if (ups.includes(3 * MiB) && tmps.includes(3 * MiB)) break;
          await sleep(20);
        }
      } finally {
        child.kill("SIGKILL");
        await exit;
      }
      const partial = (seed: number): Buffer => Buffer.concat([0, 1, 2].map((i) => block(seed, i)));
      assert.deepEqual(await all(observer.list()), []);
      for (const seed of [1, 2]) {
        assert.equal(await observer.stat(sha256(partial(seed))), null);
        assert.equal(observer.localPath(sha256(partial(seed))), null);
      }

      const restarted = await FsBlobStore.open(dir);
      // The killed writer's temp folder is gone; only this process's own folders remain.
      for (const name of await readdir(dataPath(dir, { kind: "tmp" }))) {
        assert.ok(name.startsWith(`${HOST}-${process.pid}-`), name);
      }
      assert.deepEqual(await all(restarted.list()), []);
      const sessions = await all(restarted.listUploads());
      assert.equal(sessions.length, 1);
      const session = sessions[0];
      assert.ok(session);
      assert.equal(session.offset, 3 * MiB);
      const rest = block(1, 3);
      await restarted.append(session.id, session.offset, Readable.from([rest]));
      const whole = Buffer.concat([partial(1), rest]);
      assert.deepEqual(await restarted.commitUpload(session.id, sha256(whole)), {
        digest: sha256(whole),
        size: whole.length,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("puts a 300 MB stream without holding it in memory", async () => {
    const dir = await tempDir();
    try {
      const store = await FsBlobStore.open(dir);
      const blocks = 300;
      const expected = createHash("sha256");
      const baseline = process.memoryUsage.rss();
      let peak = baseline;
      let i = 0;
      const source = new Readable({
        read() {
          peak = Math.max(peak, process.memoryUsage.rss());
          if (i === blocks) return void this.push(null);
          const b = Buffer.allocUnsafe(MiB).fill(i & 0xff);
          b.writeUInt32BE(i++, 0);
          expected.update(b);
          this.push(b);
        },
      });
      const info = await store.put(source);
      peak = Math.max(peak, process.memoryUsage.rss());
      assert.deepEqual(info, { digest: `sha256:${expected.digest("hex")}`, size: blocks * MiB });
      const growth = peak - baseline;
      assert.ok(growth < 64 * MiB, `RSS grew by ${(growth / MiB).toFixed(1)} MiB while storing 300 MiB`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
