/**
 * `lxhub pull` / `lxhub verify` / `lxhub remote` against a real `lxhub serve` (images pushed with
 * `lxhub push`) and against a plain static simplestreams tree: the unpacked trees equal the
 * source trees on both unpack paths, `--format lxd` output is what `lxc image import` accepts,
 * a second pull downloads nothing, and an unsigned tree needs `--no-signature`.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { buildDocuments } from "../../simplestreams/builder.js";
import type { StreamProduct } from "../../simplestreams/types.js";
import {
  buildBusyboxImage,
  imageFingerprint,
  sha256File,
  type BusyboxImage,
} from "../support/image-fixture.js";
import { ensureLxd, imageInfoFingerprint, lxcOk, LxdCleanup, TEST_PREFIX } from "../support/lxd.js";
import { run } from "../support/process.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import {
  dirSource,
  exists,
  leftovers,
  pullEnv,
  referenceTree,
  snapshotTree,
  TestServer,
  upstreamSource,
} from "./pull-support.js";

const runId = randomBytes(4).toString("hex");

describe("lxhub pull from a real lxhub server", { timeout: 10 * 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let both: BusyboxImage;
  let squashOnly: BusyboxImage;
  let refBoth: string;
  let refSquash: string;
  let env: NodeJS.ProcessEnv;
  let relay: TestServer;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-"));
    server = await startServer();
    const token = await createToken(server.dataDir, "admin");
    both = await buildBusyboxImage(path.join(work, "both"), {
      formats: ["squashfs", "tar.xz"],
      marker: `both ${runId}`,
    });
    // A second product published with only its squashfs root (the tarball is the reference tree).
    squashOnly = await buildBusyboxImage(path.join(work, "squash-build"), {
      release: "squash",
      formats: ["squashfs", "tar.xz"],
      marker: `squash ${runId}`,
    });
    const squashDir = path.join(work, "squash");
    await mkdir(squashDir);
    for (const f of ["lxd.tar.xz", "rootfs.squashfs"]) {
      await copyFile(squashOnly.files[f] as string, path.join(squashDir, f));
    }
    for (const dir of [both.dir, squashDir]) {
      const r = await lxhubCli(["push", server.httpsUrl, dir, "--token", token, "--ca", server.certFile]);
      assert.equal(r.code, 0, `push ${dir}: ${r.stderr}`);
    }
    refBoth = await referenceTree(both.files["rootfs.tar.xz"] as string, work);
    refSquash = await referenceTree(squashOnly.files["rootfs.tar.xz"] as string, work);

    ({ env } = await pullEnv(work));
    const add = await lxhubCli(
      ["remote", "add", "hub", server.httpsUrl, "--trust-on-first-use", "--ca", server.certFile],
      { env },
    );
    assert.equal(add.code, 0, add.stderr);
    relay = new TestServer(upstreamSource(server.httpUrl));
    await relay.start();
  });

  after(async () => {
    await relay?.stop();
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("remote add pins the server's key (TOFU), copies the CA, and remote list/remove show it", async () => {
    const { env: e } = await pullEnv(work);
    const add = await lxhubCli(
      ["remote", "add", "x", server.httpsUrl, "--trust-on-first-use", "--ca", server.certFile],
      { env: e },
    );
    assert.equal(add.code, 0, add.stderr);
    const jwks = (await (await fetch(`${server.httpUrl}/.well-known/lxhub/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    const kid = jwks.keys[0]?.kid as string;
    assert.match(add.stdout, new RegExp(`pinned signing key: ${kid}`));
    const stored = JSON.parse(
      await readFile(path.join(e.XDG_CONFIG_HOME as string, "lxhub", "remotes.json"), "utf8"),
    ) as { remotes: Record<string, { keys: { kid: string }[]; ca: string }> };
    assert.deepEqual(
      stored.remotes.x?.keys.map((k) => k.kid),
      [kid],
    );
    assert.equal(await readFile(stored.remotes.x?.ca as string, "utf8"), server.certPem);
    const list = await lxhubCli(["remote", "list"], { env: e });
    assert.match(list.stdout, new RegExp(`^x\\t${server.httpsUrl.replace(/\/$/, "")}\\tkeys ${kid}`, "m"));
    assert.equal((await lxhubCli(["remote", "remove", "x"], { env: e })).code, 0);
    assert.doesNotMatch((await lxhubCli(["remote", "list"], { env: e })).stdout, /^x\t/m);
    assert.equal(await exists(stored.remotes.x?.ca as string), false);
    // Without a way to trust it, a remote is refused.
    const bare = await lxhubCli(["remote", "add", "y", server.httpsUrl, "--ca", server.certFile], { env: e });
    assert.equal(bare.code, 1);
    assert.match(bare.stderr, /--trust-on-first-use/);
  });

  it("unpacks the root.tar.xz in one pass; the tree equals the source tree", async () => {
    const dest = path.join(work, "rootfs-tar");
    const r = await lxhubCli(["pull", "hub", "busybox/1.36", dest], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /unpacked while downloading/);
    assert.match(r.stdout, new RegExp(await imageFingerprint(both, "rootfs.tar.xz")));
    assert.deepEqual(await snapshotTree(dest), await snapshotTree(refBoth));
    assert.deepEqual(await leftovers(dest), []);
    // The verified files are in the content-addressed cache, and no partial file is left.
    const blobs = await readdir(path.join(env.XDG_CACHE_HOME as string, "lxhub", "blobs", "sha256"));
    assert.deepEqual(
      blobs.sort(),
      [
        await sha256File(both.files["lxd.tar.xz"] as string),
        await sha256File(both.files["rootfs.tar.xz"] as string),
      ].sort(),
    );
  });

  it("unpacks a squashfs-only image with unsquashfs; the tree equals the source tree", async () => {
    const dest = path.join(work, "rootfs-squash");
    const r = await lxhubCli(["pull", "hub", "busybox/squash", dest], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /unsquashfs/);
    assert.match(r.stdout, new RegExp(await imageFingerprint(squashOnly, "rootfs.squashfs")));
    assert.deepEqual(await snapshotTree(dest), await snapshotTree(refSquash));
    assert.deepEqual(await leftovers(dest), []);
  });

  it("a second pull of the same image downloads no image file bytes", async () => {
    const { env: e } = await pullEnv(work);
    const add = await lxhubCli(["remote", "add", "relay", relay.url, "--trust-on-first-use"], { env: e });
    assert.equal(add.code, 0, add.stderr);
    const first = path.join(work, "cache-1");
    const r1 = await lxhubCli(["pull", "relay", "busybox/1.36", first], { env: e });
    assert.equal(r1.code, 0, r1.stderr);
    const metaSize = (await readFile(both.files["lxd.tar.xz"] as string)).length;
    const rootSize = (await readFile(both.files["rootfs.tar.xz"] as string)).length;
    assert.equal(relay.bytesFor("images/"), metaSize + rootSize);

    relay.log.length = 0;
    const second = path.join(work, "cache-2");
    const r2 = await lxhubCli(["pull", "relay", "busybox/1.36", second], { env: e });
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(relay.bytesFor("images/"), 0);
    assert.ok(relay.bytesFor("streams/") > 0, "the documents are still fetched and verified");
    assert.deepEqual(await snapshotTree(second), await snapshotTree(refBoth));
    assert.match(r2.stdout, /downloaded 0 B/);

    // A cached file damaged on disk is noticed (it is hashed again as it is read), dropped and
    // fetched again: the tree is still the verified one.
    const rootBlob = path.join(
      e.XDG_CACHE_HOME as string,
      "lxhub",
      "blobs",
      "sha256",
      await sha256File(both.files["rootfs.tar.xz"] as string),
    );
    const damaged = await readFile(rootBlob);
    damaged[damaged.length >> 1] = (damaged[damaged.length >> 1] as number) ^ 0x01;
    await writeFile(rootBlob, damaged);
    relay.log.length = 0;
    const third = path.join(work, "cache-3");
    const r3 = await lxhubCli(["pull", "relay", "busybox/1.36", third], { env: e });
    assert.equal(r3.code, 0, r3.stderr);
    assert.equal(relay.bytesFor("images/"), rootSize);
    assert.deepEqual(await snapshotTree(third), await snapshotTree(refBoth));
    assert.equal(await sha256File(rootBlob), await sha256File(both.files["rootfs.tar.xz"] as string));
  });

  it("verify checks the chain and, with an alias, the files and fingerprint; a pull to a non-empty DEST is refused", async () => {
    const v = await lxhubCli(["verify", "hub", "busybox/1.36"], { env });
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /^ok {4} statement: signed by pinned key/m);
    assert.match(v.stdout, /^ok {4} streams\/v1\/images\.json: sha256/m);
    assert.match(v.stdout, new RegExp(`^ok {4} fingerprint: ${await imageFingerprint(both)}`, "m"));
    const busy = path.join(work, "busy");
    await mkdir(busy);
    await writeFile(path.join(busy, "keep"), "mine");
    const r = await lxhubCli(["pull", "hub", "busybox/1.36", busy], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not empty/);
    assert.deepEqual(await readdir(busy), ["keep"]);
    const none = await lxhubCli(["pull", "hub", "nosuch/alias", path.join(work, "none")], { env });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no container image "nosuch\/alias"/);
    assert.equal(await exists(path.join(work, "none")), false);
  });

  it("--format lxd writes the verified files; lxc image import accepts them with the expected fingerprint", async (t) => {
    const dest = path.join(work, "lxd-files");
    const r = await lxhubCli(["pull", "hub", "busybox/1.36", dest, "--format", "lxd"], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await readdir(dest)).sort(), ["lxd.tar.xz", "rootfs.squashfs"]);
    assert.deepEqual(
      await readFile(path.join(dest, "rootfs.squashfs")),
      await readFile(both.files["rootfs.squashfs"] as string),
    );
    const expected = await imageFingerprint(both, "rootfs.squashfs");
    assert.match(r.stdout, new RegExp(`fingerprint: ${expected}`));

    if ((await run("sh", ["-c", "command -v lxd && command -v lxc"])).code !== 0) {
      t.skip("lxd/lxc not installed");
      return;
    }
    await ensureLxd();
    const cleanup = new LxdCleanup();
    try {
      const alias = `${TEST_PREFIX}pull-${runId}`;
      cleanup.image(expected);
      await lxcOk([
        "image",
        "import",
        path.join(dest, "lxd.tar.xz"),
        path.join(dest, "rootfs.squashfs"),
        "--alias",
        alias,
      ]);
      assert.equal(await imageInfoFingerprint(alias), expected);
    } finally {
      const problems = await cleanup.run();
      assert.deepEqual(problems, []);
    }
  });
});

describe("lxhub pull from a plain static simplestreams tree", { timeout: 5 * 60_000 }, () => {
  let work: string;
  let image: BusyboxImage;
  let ref: string;
  let tree: TestServer;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-plain-"));
    image = await buildBusyboxImage(path.join(work, "img"), {
      os: "plain",
      release: "1",
      formats: ["squashfs", "tar.xz"],
      marker: `plain ${runId}`,
    });
    ref = await referenceTree(image.files["rootfs.tar.xz"] as string, work);
    const root = path.join(work, "tree");
    const version = "20240101_0000";
    const dir = `images/plain/1/amd64/default/${version}`;
    const files = [
      ["lxd.tar.xz", "lxd.tar.xz"],
      ["rootfs.squashfs", "squashfs"],
      ["rootfs.tar.xz", "root.tar.xz"],
    ] as const;
    const streamFiles = [];
    for (const [name, ftype] of files) {
      const src = image.files[name] as string;
      await mkdir(path.join(root, dir), { recursive: true });
      await copyFile(src, path.join(root, dir, name));
      streamFiles.push({
        name,
        ftype,
        path: `${dir}/${name}`,
        sha256: await sha256File(src),
        size: (await readFile(src)).length,
      });
    }
    const meta = streamFiles[0] as (typeof streamFiles)[number] & { combined?: Record<string, string> };
    meta.combined = {
      squashfs: await imageFingerprint(image, "rootfs.squashfs"),
      "root.tar.xz": await imageFingerprint(image, "rootfs.tar.xz"),
    };
    const products: StreamProduct[] = [
      {
        os: "plain",
        release: "1",
        arch: "amd64",
        variant: "default",
        releaseTitle: "1",
        aliases: ["plain/1/default", "plain/1"],
        requirements: {},
        versions: [{ name: version, files: streamFiles }],
      },
    ];
    for (const [p, body] of buildDocuments(products, { updated: new Date() }).files) {
      await mkdir(path.dirname(path.join(root, p)), { recursive: true });
      await writeFile(path.join(root, p), body);
    }
    tree = new TestServer(dirSource(root));
    await tree.start();
    ({ env } = await pullEnv(work));
  });

  after(async () => {
    await tree?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("is refused without --no-signature, before any image file is fetched", async () => {
    const dest = path.join(work, "refused");
    const r = await lxhubCli(["pull", tree.url, "plain/1", dest], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--no-signature/);
    assert.equal(await exists(dest), false);
    // Trusting a key needs the server to publish one: a plain tree has none.
    const tofu = await lxhubCli(["remote", "add", "plain", tree.url, "--trust-on-first-use"], { env });
    assert.equal(tofu.code, 1);
    assert.match(tofu.stderr, /publishes no lxhub signing keys/);
    assert.equal(tree.bytesFor("images/"), 0);
  });

  it("is pulled with --no-signature: file hashes and the fingerprint are still checked", async () => {
    const dest = path.join(work, "plain-rootfs");
    const r = await lxhubCli(["pull", tree.url, "plain/1", dest, "--no-signature"], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /not checking signatures/);
    assert.match(r.stdout, /file hashes and fingerprint \(no signature checked\)/);
    assert.deepEqual(await snapshotTree(dest), await snapshotTree(ref));

    const v = await lxhubCli(["verify", tree.url, "plain/1", "--no-signature"], { env });
    assert.equal(v.code, 0, v.stdout);
    assert.match(v.stdout, /^ok {4} statement: not checked/m);

    // An unsigned remote, added explicitly as such, works the same.
    const add = await lxhubCli(["remote", "add", "plain", tree.url, "--no-signature"], { env });
    assert.equal(add.code, 0, add.stderr);
    const dest2 = path.join(work, "plain-lxd");
    const r2 = await lxhubCli(["pull", "plain", "plain/1", dest2, "--format", "lxd"], { env });
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual((await readdir(dest2)).sort(), ["lxd.tar.xz", "rootfs.squashfs"]);
  });

  it("still refuses a changed file without a signature (sha256 from images.json)", async () => {
    const { env: e } = await pullEnv(work);
    const rel = "images/plain/1/amd64/default/20240101_0000/rootfs.tar.xz";
    const bytes = Buffer.from(await readFile(image.files["rootfs.tar.xz"] as string));
    bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] as number) ^ 0x01;
    tree.overrides.set(rel, bytes);
    try {
      const dest = path.join(work, "plain-tampered");
      const r = await lxhubCli(["pull", tree.url, "plain/1", dest, "--no-signature"], { env: e });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /rootfs\.tar\.xz .*has sha256 [0-9a-f]{64}, but the products file says/);
      assert.equal(await exists(dest), false);
      assert.deepEqual(await leftovers(dest), []);
    } finally {
      tree.overrides.delete(rel);
    }
  });
});
