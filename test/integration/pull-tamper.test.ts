/**
 * Every link of the trust chain refuses a tampered remote, and leaves DEST as it was: a loopback
 * relay in front of a real `lxhub serve` serves modified copies of what the server serves (one
 * changed byte in images.json, in a root file, in the statement; an expired statement signed
 * with the server's own key; the server's own older statement replayed; a statement and JWKS
 * from another key).
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Keyring } from "../../signing/keyring.js";
import { signStatement } from "../../signing/statement.js";
import { dataPath } from "../../storage/layout.js";
import { buildBusyboxImage, sha256File, type BusyboxImage } from "../support/image-fixture.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { exists, leftovers, sha256, TestServer, upstreamSource, envWithRemote } from "./pull-support.js";

const STATEMENT = "streams/v1/statement.jws";
const INDEX = "streams/v1/index.json";
const IMAGES = "streams/v1/images.json";
const JWKS = ".well-known/lxhub/jwks.json";
const ALIAS = "busybox/1.36";

interface Snapshot {
  [STATEMENT]: Buffer;
  [INDEX]: Buffer;
  [IMAGES]: Buffer;
}

function flipByte(buf: Buffer, at: number): Buffer {
  const out = Buffer.from(buf);
  out[at] = (out[at] as number) ^ 0x01;
  return out;
}

function statementSerial(jws: Buffer): number {
  const payload = jws.toString("utf8").trim().split(".")[1] as string;
  return (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { serial: number }).serial;
}

describe("lxhub pull refuses a tampered remote", { timeout: 10 * 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let relay: TestServer;
  let v2: BusyboxImage;
  let old: Snapshot;
  let current: Snapshot;
  let rootTarPath: string;
  let rootSquashPath: string;

  const fresh = (): Promise<NodeJS.ProcessEnv> => envWithRemote(work, relay.url);

  async function snapshot(): Promise<Snapshot> {
    const get = upstreamSource(server.httpUrl);
    return {
      [STATEMENT]: (await get(STATEMENT)) as Buffer,
      [INDEX]: (await get(INDEX)) as Buffer,
      [IMAGES]: (await get(IMAGES)) as Buffer,
    };
  }

  /** Runs a pull that must fail with `reason`, leaving DEST and its surroundings as they were. */
  async function refused(env: NodeJS.ProcessEnv, reason: RegExp, args: string[] = []): Promise<string> {
    const dest = await mkdtemp(path.join(work, "dest-"));
    await rm(dest, { recursive: true });
    const r = await lxhubCli(["pull", "t", ALIAS, dest, ...args], { env });
    assert.equal(r.code, 1, `pull should fail; stdout: ${r.stdout}`);
    assert.match(r.stderr, reason);
    assert.equal(await exists(dest), false, "nothing may be left at DEST");
    assert.deepEqual(await leftovers(dest), []);
    return r.stderr;
  }

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-tamper-"));
    // No server-made delta: it would add a generation after the snapshots below are taken.
    server = await startServer({ extraArgs: ["--no-deltas"] });
    const token = await createToken(server.dataDir, "admin");
    const v1 = await buildBusyboxImage(path.join(work, "v1"), {
      serial: "20240101_0000",
      formats: ["squashfs", "tar.xz"],
      marker: "one",
    });
    v2 = await buildBusyboxImage(path.join(work, "v2"), {
      serial: "20240201_0000",
      formats: ["squashfs", "tar.xz"],
      marker: "two",
    });
    const push = async (img: BusyboxImage) => {
      const r = await lxhubCli(["push", server.httpUrl, img.dir, "--token", token]);
      assert.equal(r.code, 0, r.stderr);
    };
    await push(v1);
    old = await snapshot();
    await push(v2);
    current = await snapshot();
    assert.ok(statementSerial(current[STATEMENT]) > statementSerial(old[STATEMENT]));
    const base = "images/busybox/1.36/amd64/default/20240201_0000";
    rootTarPath = `${base}/rootfs.tar.xz`;
    rootSquashPath = `${base}/rootfs.squashfs`;
    assert.ok(current[IMAGES].toString().includes(rootTarPath), "images.json names the expected file paths");
    relay = new TestServer(upstreamSource(server.httpUrl));
    await relay.start();
  });

  after(async () => {
    await relay?.stop();
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("pulls through the unmodified relay (the baseline the refusals differ from)", async () => {
    const env = await fresh();
    const dest = path.join(work, "baseline");
    const r = await lxhubCli(["pull", "t", ALIAS, dest], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      await readFile(path.join(dest, "etc/lxhub-marker"), "utf8"),
      "two\n",
      "the newest version was pulled",
    );
  });

  it("one changed byte in images.json: refused before any image file is fetched", async () => {
    const env = await fresh();
    const text = current[IMAGES].toString("utf8");
    const digest = await sha256File(v2.files["rootfs.tar.xz"] as string);
    const at = text.indexOf(digest);
    assert.ok(at > 0);
    // An attacker pointing the index at other bytes: one hex digit of the root file's sha256.
    relay.overrides.set(IMAGES, flipByte(current[IMAGES], at + 10));
    relay.log.length = 0;
    try {
      await refused(env, /streams\/v1\/images\.json does not match the signed statement/);
      assert.equal(relay.bytesFor("images/"), 0);
    } finally {
      relay.overrides.delete(IMAGES);
    }
  });

  it("one changed byte in the root.tar.xz: the single-pass unpack is thrown away, nothing cached", async () => {
    const env = await fresh();
    const original = await readFile(v2.files["rootfs.tar.xz"] as string);
    relay.overrides.set(rootTarPath, flipByte(original, original.length >> 1));
    try {
      // DEST given as an existing empty folder: it must stay exactly that.
      const dest = path.join(work, "empty-dest");
      await mkdir(dest);
      const r = await lxhubCli(["pull", "t", ALIAS, dest], { env });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /rootfs\.tar\.xz \(.*\) has sha256 [0-9a-f]{64}, but the products file says/);
      assert.deepEqual(await readdir(dest), []);
      assert.deepEqual(await leftovers(dest), []);
      const blobs = await readdir(path.join(env.XDG_CACHE_HOME as string, "lxhub", "blobs", "sha256"));
      assert.deepEqual(
        blobs.filter((b) => b.startsWith(sha256(original)) || b.endsWith(".part")),
        [],
        "neither the bad file nor a partial one is kept",
      );
    } finally {
      relay.overrides.delete(rootTarPath);
    }
  });

  it("one changed byte in the rootfs.squashfs (--format lxd): refused", async () => {
    const env = await fresh();
    const original = await readFile(v2.files["rootfs.squashfs"] as string);
    relay.overrides.set(rootSquashPath, flipByte(original, 4096));
    try {
      await refused(env, /rootfs\.squashfs \(.*\) has sha256 [0-9a-f]{64}, but the products file says/, [
        "--format",
        "lxd",
      ]);
    } finally {
      relay.overrides.delete(rootSquashPath);
    }
  });

  it("one changed byte in the statement: refused", async () => {
    const env = await fresh();
    const jws = current[STATEMENT];
    const sigStart = jws.toString("utf8").lastIndexOf(".") + 1;
    const changed = Buffer.from(jws);
    // A different base64url character in the middle of the signature.
    const i = sigStart + 20;
    changed[i] = changed[i] === 0x41 ? 0x42 : 0x41;
    relay.overrides.set(STATEMENT, changed);
    try {
      await refused(env, /signed statement of t does not verify/);
    } finally {
      relay.overrides.delete(STATEMENT);
    }
  });

  it("an expired statement, even signed by the server's own key: refused", async () => {
    const env = await fresh();
    const keyring = await Keyring.open(dataPath(server.dataDir, { kind: "signingKeys" }));
    const jws = await signStatement(keyring, {
      documents: [INDEX, IMAGES].map((p) => ({
        path: p,
        sha256: sha256(current[p as keyof Snapshot]),
        size: current[p as keyof Snapshot].length,
      })),
      serial: statementSerial(current[STATEMENT]) + 100,
      issuedAt: new Date(Date.now() - 2 * 3600_000),
      ttlSeconds: 3600,
    });
    relay.overrides.set(STATEMENT, Buffer.from(jws + "\n"));
    try {
      await refused(env, /signed statement of t has expired/);
    } finally {
      relay.overrides.delete(STATEMENT);
    }
  });

  it("the server's own older statement, replayed after a newer one was seen: refused", async () => {
    const env = await fresh();
    const ok = await lxhubCli(["pull", "t", ALIAS, path.join(work, "seen-newer")], { env });
    assert.equal(ok.code, 0, ok.stderr);
    for (const p of [STATEMENT, INDEX, IMAGES] as const) relay.overrides.set(p, old[p]);
    try {
      await refused(env, /older than one this host already accepted.*replayed older index is refused/);
      // The same old (still valid) documents are accepted by a host that never saw the newer ones:
      // what refused them above is the remembered serial, nothing else.
      const other = await fresh();
      const dest = path.join(work, "old-ok");
      const r = await lxhubCli(["pull", "t", ALIAS, dest], { env: other });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await readFile(path.join(dest, "etc/lxhub-marker"), "utf8"), "one\n");
    } finally {
      for (const p of [STATEMENT, INDEX, IMAGES]) relay.overrides.delete(p);
    }
  });

  it("a statement signed by another key: refused with how to re-trust; re-trusting works", async () => {
    const env = await fresh();
    const other = await Keyring.open(await mkdtemp(path.join(work, "other-key-")));
    const jws = await signStatement(other, {
      documents: [INDEX, IMAGES].map((p) => ({
        path: p,
        sha256: sha256(current[p as keyof Snapshot]),
        size: current[p as keyof Snapshot].length,
      })),
      serial: statementSerial(current[STATEMENT]) + 1000,
      ttlSeconds: 3600,
    });
    relay.overrides.set(STATEMENT, Buffer.from(jws + "\n"));
    relay.overrides.set(JWKS, Buffer.from(JSON.stringify(other.jwks())));
    try {
      const stderr = await refused(env, /is signed by a key that is not pinned/);
      assert.match(stderr, new RegExp(`${other.active().kid}`));
      assert.match(stderr, new RegExp(`lxhub remote add t ${relay.url} --trust-on-first-use`));
      // Following the advice (the user now trusts the new key) makes the pull work.
      const again = await lxhubCli(["remote", "add", "t", relay.url, "--trust-on-first-use"], { env });
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, new RegExp(`pinned signing key: ${other.active().kid}`));
      const dest = path.join(work, "retrusted");
      const r = await lxhubCli(["pull", "t", ALIAS, dest], { env });
      assert.equal(r.code, 0, r.stderr);
    } finally {
      relay.overrides.delete(STATEMENT);
      relay.overrides.delete(JWKS);
    }
  });
});
