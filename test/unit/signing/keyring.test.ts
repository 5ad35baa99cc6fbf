import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { calculateJwkThumbprint } from "jose";
import { Keyring, KeyringError } from "../../../signing/keyring.js";
import { signStatement, StatementError, verifyStatement } from "../../../signing/statement.js";

const SHA = "a".repeat(64);
const statementInput = {
  documents: [{ path: "streams/v1/index.json", sha256: SHA, size: 10 }],
  ttlSeconds: 600,
};

describe("Keyring", () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "lxhub-keyring-"));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("creates a folder (0700) and one private key file (0600) named by its thumbprint on first use", async () => {
    const dir = join(root, "first", "keys");
    const ring = await Keyring.open(dir);
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    const files = await readdir(dir);
    assert.deepEqual(files, [`${ring.active().kid}.jwk`]);
    assert.equal((await stat(join(dir, files[0] ?? ""))).mode & 0o777, 0o600);

    const stored = JSON.parse(await readFile(join(dir, files[0] ?? ""), "utf8")) as Record<string, unknown>;
    assert.equal(stored.kty, "OKP");
    assert.equal(stored.crv, "Ed25519");
    assert.equal(typeof stored.d, "string", "the file holds the private key");
    const thumbprint = await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: stored.x as string });
    assert.equal(ring.active().kid, thumbprint);
  });

  it("publishes only public members, each with kid, alg EdDSA and use sig", async () => {
    const ring = await Keyring.open(join(root, "jwks"));
    await ring.rotate();
    const { keys } = ring.jwks();
    assert.equal(keys.length, 2);
    for (const key of keys) {
      assert.deepEqual(Object.keys(key).sort(), ["alg", "crv", "kid", "kty", "use", "x"]);
      assert.equal(key.alg, "EdDSA");
      assert.equal(key.use, "sig");
      assert.equal(key.kid, await calculateJwkThumbprint(key));
      assert.equal("d" in key, false);
    }
    assert.equal(keys[0]?.kid, ring.active().kid, "active key first");
  });

  it("persists across reopen: same keys, same active key, and the reopened key signs verifiably", async () => {
    const dir = join(root, "reopen");
    const first = await Keyring.open(dir);
    const oldKid = first.active().kid;
    const newKid = await first.rotate();
    assert.notEqual(newKid, oldKid);
    assert.equal(first.active().kid, newKid);

    const again = await Keyring.open(dir);
    assert.equal(again.active().kid, newKid, "the newest key stays active after reopening");
    assert.deepEqual(again.jwks(), first.jwks());
    for (const file of await readdir(dir)) {
      assert.match(file, /^[A-Za-z0-9_-]{43}\.jwk$/, "no temporary files are left behind");
      assert.equal((await stat(join(dir, file))).mode & 0o777, 0o600);
    }

    const jws = await signStatement(again, { ...statementInput, serial: 1 });
    const verified = await verifyStatement(jws, { keys: first.jwks() });
    assert.equal(verified.kid, newKid);
  });

  it("orders keys rotated within one millisecond", async () => {
    const ring = await Keyring.open(join(root, "fast"));
    const kids = [ring.active().kid];
    for (let i = 0; i < 4; i++) kids.push(await ring.rotate());
    assert.deepEqual(
      ring.list().map((k) => k.kid),
      kids,
    );
    const reopened = await Keyring.open(join(root, "fast"));
    assert.deepEqual(
      reopened.list().map((k) => k.kid),
      kids,
    );
  });

  it("retires an old key: it leaves the JWKS and the folder; the active key cannot be retired", async () => {
    const dir = join(root, "retire");
    const ring = await Keyring.open(dir);
    const oldKid = ring.active().kid;
    const oldStatement = await signStatement(ring, { ...statementInput, serial: 1 });
    const newKid = await ring.rotate();

    await assert.rejects(ring.retire(newKid), KeyringError);
    await assert.rejects(ring.retire("no-such-kid"), KeyringError);

    await ring.retire(oldKid);
    assert.deepEqual(
      ring.jwks().keys.map((k) => k.kid),
      [newKid],
    );
    assert.deepEqual(await readdir(dir), [`${newKid}.jwk`]);
    await assert.rejects(
      verifyStatement(oldStatement, { keys: ring.jwks() }),
      (err: unknown) => err instanceof StatementError && err.code === "UNKNOWN_KEY",
    );
    const reopened = await Keyring.open(dir);
    assert.deepEqual(
      reopened.list().map((k) => k.kid),
      [newKid],
    );
  });

  it("refuses to open a folder holding a key file whose name is not its thumbprint", async () => {
    const dir = join(root, "renamed");
    const ring = await Keyring.open(dir);
    const kid = ring.active().kid;
    // Another first character (a kid may itself start with "x": the same name would be no rename).
    const other = kid.startsWith("x") ? "y" : "x";
    await rename(join(dir, `${kid}.jwk`), join(dir, `${other}${kid.slice(1)}.jwk`));
    await assert.rejects(Keyring.open(dir), (err: unknown) => {
      assert.ok(err instanceof KeyringError);
      assert.match(err.message, /thumbprint/);
      return true;
    });
  });

  it("refuses a key file whose private half does not belong to its public half", async () => {
    const dir = join(root, "mismatch");
    const a = await Keyring.open(join(dir, "a"));
    const b = await Keyring.open(join(dir, "b"));
    const aFile = join(dir, "a", `${a.active().kid}.jwk`);
    const aJwk = JSON.parse(await readFile(aFile, "utf8")) as Record<string, unknown>;
    const bJwk = JSON.parse(await readFile(join(dir, "b", `${b.active().kid}.jwk`), "utf8")) as Record<
      string,
      unknown
    >;
    await writeFile(aFile, JSON.stringify({ ...aJwk, d: bJwk.d }), { mode: 0o600 });
    await assert.rejects(Keyring.open(join(dir, "a")), (err: unknown) => {
      assert.ok(err instanceof KeyringError);
      assert.ok(err.message.includes(aFile), err.message);
      return true;
    });
  });

  it("refuses a key file that is not JSON, naming it", async () => {
    const dir = join(root, "garbage");
    await Keyring.open(dir);
    const bad = join(dir, `${"A".repeat(43)}.jwk`);
    await writeFile(bad, "not json", { mode: 0o600 });
    await assert.rejects(
      Keyring.open(dir),
      (err: unknown) => err instanceof KeyringError && err.message.includes(bad),
    );
  });
});
