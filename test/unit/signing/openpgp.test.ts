/**
 * signing/openpgp.ts and simplestreams/sjson.ts against the real `gpgv` (GnuPG 2.2 on Debian 12),
 * the verifier the canonical simplestreams tools call.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as openpgp from "openpgp";
import { FileOpenPgpKeyStore, OpenPgpKeyError, OpenPgpSigner } from "../../../signing/openpgp.js";
import { buildDocuments } from "../../../simplestreams/builder.js";
import { sjsonBody, sjsonPath } from "../../../simplestreams/sjson.js";
import { dearmoredKeyring, gpgv, readSignedBody } from "../../support/gpg.js";

describe("OpenPgpSigner", () => {
  let root: string;
  let signer: OpenPgpSigner;
  let keyring: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "lxhub-openpgp-"));
    signer = await OpenPgpSigner.open(new FileOpenPgpKeyStore(join(root, "keys", "openpgp-key.asc")), "test");
    keyring = await dearmoredKeyring(signer.publicKeyArmored, root);
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("makes the key on first use in a 0600 file of a 0700 folder, and reopens the same key", async () => {
    const file = join(root, "keys", "openpgp-key.asc");
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(join(root, "keys"))).mode & 0o777, 0o700);
    assert.match(await readFile(file, "utf8"), /^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    const again = await OpenPgpSigner.open(new FileOpenPgpKeyStore(file), "test");
    assert.equal(again.fingerprint, signer.fingerprint);
    assert.match(signer.fingerprint, /^[0-9A-F]{40}$/, "a v4 fingerprint");
    // Dated a day back: gpgv refuses a key "created in the future" by a verifier's lagging clock.
    const key = await openpgp.readPrivateKey({ armoredKey: await readFile(file, "utf8") });
    assert.ok(Date.now() - key.getCreationTime().getTime() > 23 * 3600 * 1000);
  });

  it("clear-signs what gpgv verifies, with the Hash header read_signed skips, and gpgv refuses a change", async () => {
    const text = '{\n "a": "- dash",\n "b": 1\n}';
    const signed = await signer.clearSign(text);
    assert.match(signed, /^-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n/);
    const ok = await gpgv(keyring, ["-"], signed);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(readSignedBody(signed)), JSON.parse(text));
    const bad = await gpgv(keyring, ["-"], signed.replace('"b": 1', '"b": 2'));
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /BAD signature/);
  });

  it("makes armored detached signatures over bytes that gpgv verifies", async () => {
    const data = Buffer.from('{"x":1}\n');
    await writeFile(join(root, "x.json"), data);
    await writeFile(join(root, "x.json.gpg"), await signer.detachSign(data));
    const ok = await gpgv(keyring, [join(root, "x.json.gpg"), join(root, "x.json")]);
    assert.equal(ok.code, 0, ok.stderr);
    await writeFile(join(root, "x.json"), '{"x":2}\n');
    assert.notEqual((await gpgv(keyring, [join(root, "x.json.gpg"), join(root, "x.json")])).code, 0);
  });

  it("refuses keys it cannot use, naming where they are", async () => {
    const refused = async (armored: string, why: RegExp) =>
      assert.rejects(OpenPgpSigner.fromArmored(armored, "/etc/the-key.asc"), (err: Error) => {
        assert.ok(err instanceof OpenPgpKeyError);
        assert.match(err.message, /^\/etc\/the-key\.asc: /);
        assert.match(err.message, why);
        return true;
      });
    await refused("not a key", /not an armored OpenPGP private key/);
    await refused(signer.publicKeyArmored, /not an armored OpenPGP private key/);
    const gen = async (o: Omit<openpgp.KeyOptions, "userIDs" | "format">) =>
      (await openpgp.generateKey({ ...o, userIDs: [{ name: "t" }], format: "armored" })).privateKey;
    await refused(await gen({ passphrase: "secret" }), /protected by a passphrase/);
    await refused(await gen({ type: "curve25519", config: { v6Keys: true } }), /a v6 key/);
    await refused(await gen({ type: "curve25519", config: { v6Keys: false } }), /gpgv 2\.2 .*cannot verify/);
    assert.match(
      (await OpenPgpSigner.fromArmored(await gen({ type: "ecc", curve: "nistP256" }), "x")).fingerprint,
      /^[0-9A-F]{40}$/,
      "an ECDSA v4 key is accepted",
    );
  });
});

describe("sjsonBody", () => {
  const docs = buildDocuments([], { updated: new Date(0) }).files;

  it("names the .sjson products file in an index, and keeps every other member", () => {
    const index = Buffer.from(
      JSON.stringify({
        format: "index:1.0",
        updated: "u",
        index: { images: { path: "streams/v1/images.json", products: ["a:b"], format: "products:1.0" } },
      }),
    );
    const body = JSON.parse(sjsonBody(index)) as { index: { images: { path: string; products: string[] } } };
    assert.equal(body.index.images.path, "streams/v1/images.sjson");
    assert.deepEqual(body.index.images.products, ["a:b"]);
    assert.equal(sjsonPath("streams/v1/index.json"), "streams/v1/index.sjson");
  });

  it("leaves a products file's content as it is, one member per line (gpg refuses lines over 20000 characters)", () => {
    const products = docs.get("streams/v1/images.json");
    assert.ok(products);
    const body = sjsonBody(products);
    assert.deepEqual(JSON.parse(body), JSON.parse(products.toString()));
    assert.ok(body.split("\n").length > 3);
    assert.ok(!body.endsWith("\n"));
  });
});
