import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { HttpError } from "../../../client/http.js";
import {
  UploadStateStore,
  defaultAliases,
  describePushError,
  findImageFiles,
  pushImage,
} from "../../../client/push.js";
import type { PushOptions } from "../../../client/push.js";
import { makeImageDir } from "./image-fixture.js";
import { UploadServer } from "./upload-server.js";

const MiB = 1024 * 1024;
let root = "";
let imageDir = "";

function digestOf(file: string): string {
  return `sha256:${createHash("sha256").update(readFileSync(file)).digest("hex")}`;
}

before(() => {
  root = mkdtempSync(path.join(tmpdir(), "lxhub-push-"));
  imageDir = path.join(root, "image");
  makeImageDir(imageDir);
});
after(() => rmSync(root, { recursive: true, force: true }));

/** Fresh state folder per test so records never leak between them. */
function opts(server: string, extra: Partial<PushOptions> = {}): PushOptions {
  return {
    server,
    dir: imageDir,
    token: "good",
    stateDir: mkdtempSync(path.join(root, "state-")),
    chunkSize: MiB,
    retryBaseMs: 1,
    ...extra,
  };
}

async function withServer(
  o: ConstructorParameters<typeof UploadServer>[0],
  fn: (s: UploadServer, url: string) => Promise<void>,
): Promise<void> {
  const s = new UploadServer(o);
  const url = await s.start();
  try {
    await fn(s, url);
  } finally {
    await s.stop();
  }
}

describe("findImageFiles", () => {
  test("maps distrobuilder file names to ftypes, metadata first", async () => {
    const dir = path.join(root, "names");
    mkdirSync(dir);
    for (const n of ["incus.tar.xz", "disk.qcow2", "rootfs.tar.xz", "image.yaml", "build.log"]) {
      writeFileSync(path.join(dir, n), n);
    }
    const files = await findImageFiles(dir);
    assert.deepEqual(
      files.map((f) => [f.name, f.ftype, f.size]),
      [
        ["incus.tar.xz", "lxd.tar.xz", 12],
        ["rootfs.tar.xz", "root.tar.xz", 13],
        ["disk.qcow2", "disk-kvm.img", 10],
      ],
    );
  });

  test("refuses a folder without metadata or without a root file", async () => {
    const noMeta = path.join(root, "nometa");
    mkdirSync(noMeta);
    writeFileSync(path.join(noMeta, "rootfs.squashfs"), "x");
    await assert.rejects(findImageFiles(noMeta), /no metadata tarball/);
    const noRoot = path.join(root, "noroot");
    mkdirSync(noRoot);
    writeFileSync(path.join(noRoot, "lxd.tar.xz"), "x");
    await assert.rejects(findImageFiles(noRoot), /no root file/);
  });
});

describe("defaultAliases", () => {
  test("lower-cases the os, adds <os>/<release> for the default variant, then extras", () => {
    const p = { os: "Debian", release: "12", arch: "amd64", variant: "default" };
    assert.deepEqual(defaultAliases(p, ["deb", "debian/12"]), ["debian/12/default", "debian/12", "deb"]);
    assert.deepEqual(defaultAliases({ ...p, variant: "cloud" }), ["debian/12/cloud"]);
    assert.throws(() => defaultAliases(p, ["a, b"]), /comma or white space/);
  });
});

describe("pushImage", () => {
  test("uploads missing blobs, publishes by digest; a second push uploads nothing", async () => {
    await withServer({}, async (s, url) => {
      const r = await pushImage(opts(url, { aliases: ["testos/latest"] }));
      const meta = path.join(imageDir, "lxd.tar.xz");
      const sq = path.join(imageDir, "rootfs.squashfs");
      const size = statSync(meta).size + statSync(sq).size;

      assert.deepEqual(r.product, { os: "Testos", release: "one", arch: "amd64", variant: "default" });
      assert.equal(r.version, "20240101_0000");
      assert.equal(r.created, true);
      assert.equal(r.vm, false);
      assert.equal(r.bytesUploaded, size);
      assert.equal(r.bytesSkipped, 0);
      assert.deepEqual(s.blobs.get(digestOf(meta)), readFileSync(meta));
      assert.deepEqual(s.blobs.get(digestOf(sq)), readFileSync(sq));
      assert.deepEqual(s.versionBodies[0], {
        files: [
          { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: digestOf(meta) },
          { name: "rootfs.squashfs", ftype: "squashfs", digest: digestOf(sq) },
        ],
        aliases: ["testos/one/default", "testos/one", "testos/latest"],
        release_title: "one",
      });
      assert.ok(s.versions.has("Testos/one/amd64/default/20240101_0000"));
      const fp = createHash("sha256").update(readFileSync(meta)).update(readFileSync(sq)).digest("hex");
      assert.deepEqual(r.fingerprints, { squashfs: fp });
      assert.equal(s.count("POST", "/api/v1/uploads"), 2);
      const patches = s.count("PATCH", "/api/v1/uploads");

      // Same image again: HEAD finds both blobs, nothing is uploaded, the server answers 200.
      const again = await pushImage(opts(url, { aliases: ["testos/latest"] }));
      assert.equal(again.created, false);
      assert.equal(again.bytesUploaded, 0);
      assert.equal(again.bytesSkipped, size);
      assert.deepEqual(
        again.files.map((f) => f.uploaded),
        [false, false],
      );
      assert.equal(s.count("POST", "/api/v1/uploads"), 2);
      assert.equal(s.count("PATCH", "/api/v1/uploads"), patches);
    });
  });

  test("a blob the server already has is not uploaded", async () => {
    await withServer({}, async (s, url) => {
      const sq = path.join(imageDir, "rootfs.squashfs");
      s.blobs.set(digestOf(sq), readFileSync(sq));
      const r = await pushImage(opts(url));
      assert.deepEqual(
        r.files.map((f) => [f.name, f.uploaded]),
        [
          ["lxd.tar.xz", true],
          ["rootfs.squashfs", false],
        ],
      );
      assert.equal(s.count("POST", "/api/v1/uploads"), 1);
      assert.equal(r.bytesSkipped, statSync(sq).size);
      assert.equal(r.bytesUploaded, statSync(path.join(imageDir, "lxd.tar.xz")).size);
    });
  });

  test("a connection dropped mid-chunk resumes at the server's offset", async () => {
    const sq = path.join(imageDir, "rootfs.squashfs");
    const size = statSync(sq).size;
    const dropAt = Math.floor(1.5 * MiB) + 1234; // inside the second 1 MiB chunk
    await withServer({ dropAt }, async (s, url) => {
      const r = await pushImage(opts(url));
      assert.deepEqual(s.blobs.get(digestOf(sq)), readFileSync(sq));
      assert.ok(s.count("GET", "/api/v1/uploads/") >= 1, "asked the server for the offset");
      assert.equal(s.count("POST", "/api/v1/uploads"), 2, "no second session");
      // The server kept the bytes before the cut, so every byte arrived exactly once.
      const sessionBytes = Math.max(...s.received.values());
      assert.equal(sessionBytes, size);
      assert.ok(r.bytesUploaded < 2 * size);
    });
  });

  test("when the server discards the cut chunk, only that chunk is sent again", async () => {
    const sq = path.join(imageDir, "rootfs.squashfs");
    const size = statSync(sq).size;
    const dropAt = Math.floor(1.5 * MiB);
    await withServer({ dropAt, keepPartial: false }, async (s, url) => {
      await pushImage(opts(url));
      assert.deepEqual(s.blobs.get(digestOf(sq)), readFileSync(sq));
      const sessionBytes = Math.max(...s.received.values());
      // Received = the whole file + what arrived of the discarded chunk before the cut (N = 0.5 MiB).
      assert.equal(sessionBytes, size + (dropAt - MiB));
    });
  });

  test("a killed push is resumed from the state file by the next run", async () => {
    const sq = path.join(imageDir, "rootfs.squashfs");
    const size = statSync(sq).size;
    const stallAt = 2 * MiB + 777;
    const cache = mkdtempSync(path.join(root, "xdg-"));
    const stateDir = path.join(cache, "lxhub", "uploads");
    await withServer({ stallAt }, async (s, url) => {
      const pushModule = fileURLToPath(new URL("../../../client/push.js", import.meta.url));
      const script = path.join(root, "child-push.mjs");
      writeFileSync(
        script,
        [
          "const { pushImage } = await import(process.argv[2]);",
          `await pushImage({ server: process.argv[3], dir: process.argv[4], token: "good", chunkSize: ${MiB}, retryBaseMs: 1 });`,
        ].join("\n"),
      );
      const child = spawn(process.execPath, [script, pushModule, url, imageDir], {
        env: { ...process.env, XDG_CACHE_HOME: cache },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      const first = await Promise.race([s.whenStalled().then(() => "stalled"), exited.then(() => "exited")]);
      assert.equal(first, "stalled", `child exited before stalling: ${stderr}`);
      // The child wrote its session record under $XDG_CACHE_HOME/lxhub/uploads before sending bytes.
      assert.equal(readdirSync(stateDir).filter((n) => n.endsWith(".json")).length, 1);
      child.kill("SIGKILL");
      await exited;

      const r = await pushImage(opts(url, { stateDir }));
      assert.deepEqual(s.blobs.get(digestOf(sq)), readFileSync(sq));
      assert.equal(s.count("POST", "/api/v1/uploads"), 2, "the killed session was reused, not reopened");
      assert.equal(Math.max(...s.received.values()), size, "no byte was sent twice");
      assert.ok(r.bytesSkipped >= stallAt);
      assert.ok(r.bytesUploaded <= size - stallAt);
      assert.deepEqual(readdirSync(stateDir), [], "record dropped after commit");
    });
  });

  test("a remembered session the server no longer knows is dropped and a new one opened", async () => {
    await withServer({}, async (s, url) => {
      const o = opts(url);
      const sq = path.join(imageDir, "rootfs.squashfs");
      const store = new UploadStateStore(o.stateDir);
      const server = new URL(url).href.replace(/\/+$/, "");
      await store.put({
        server,
        digest: digestOf(sq),
        id: "expired-session",
        size: statSync(sq).size,
        file: sq,
        createdAt: new Date().toISOString(),
      });
      assert.ok(await store.get(server, digestOf(sq)));
      await pushImage(o);
      assert.equal(s.count("GET", "/api/v1/uploads/expired-session"), 1);
      assert.equal(s.count("POST", "/api/v1/uploads"), 2);
      assert.deepEqual(s.blobs.get(digestOf(sq)), readFileSync(sq));
      assert.equal(await store.get(server, digestOf(sq)), null);
    });
  });

  test("a bad token fails at once with a message that says so", async () => {
    await withServer({ token: "good" }, async (s, url) => {
      const err = await pushImage(opts(url, { token: "bad" })).then(
        () => assert.fail("push succeeded with a bad token"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof HttpError);
      assert.equal(err.status, 401);
      assert.match(describePushError(err), /rejected the token/);
      assert.equal(s.log.length, 1, "a 401 is not retried");
    });
  });

  test("a VM-only folder is marked vm; --version overrides the date; a bad version is refused locally", async () => {
    const dir = path.join(root, "vm");
    mkdirSync(dir);
    copyFileSync(path.join(imageDir, "lxd.tar.xz"), path.join(dir, "lxd.tar.xz"));
    writeFileSync(path.join(dir, "disk.qcow2"), Buffer.alloc(4096, 1));
    await withServer({}, async (s, url) => {
      const r = await pushImage(opts(url, { dir, version: "20240202_1200" }));
      assert.equal(r.vm, true);
      assert.ok(s.versions.has("Testos/one/amd64/default/20240202_1200"));
      assert.deepEqual(Object.keys(r.fingerprints), ["disk-kvm.img"]);
      await assert.rejects(pushImage(opts(url, { dir, version: "latest" })), /invalid version/);
    });
  });

  test("arch falls back to the canonical architecture, published in its Debian spelling", async () => {
    const dir = path.join(root, "arm");
    makeImageDir(dir, { distroArch: null, architecture: "aarch64", variant: "cloud", rootPayload: 1000 });
    await withServer({}, async (s, url) => {
      const r = await pushImage(opts(url, { dir }));
      assert.equal(r.product.arch, "arm64");
      assert.deepEqual(r.aliases, ["testos/one/cloud"]);
      assert.ok(s.versions.has("Testos/one/arm64/cloud/20240101_0000"));
    });
  });
});
