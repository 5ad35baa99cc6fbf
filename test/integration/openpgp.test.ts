/**
 * The OpenPGP-signed documents for the canonical simplestreams tools, against a real `lxhub
 * serve`: the served key, `index.sjson`/`images.sjson` clear-signed, `.json.gpg` detached, all
 * checked with the real `gpgv` the way `sstream-query`/`sstream-mirror` call it
 * (shared/docs/simplestreams.md §6.3). Those tools themselves have no Debian 12 package and PyPI
 * is not reachable from CI, so the cases that run them are skipped unless they are on PATH
 * (README: "The canonical simplestreams tools").
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as openpgp from "openpgp";
import { dearmoredKeyring, gpgv, keyFingerprint, readSignedBody } from "../support/gpg.js";
import { checkAnswer } from "../support/openapi.js";
import { createDatabase } from "../support/postgres.js";
import { run } from "../support/process.js";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { publishTinyImage } from "../support/tiny-image.js";

const V1 = "streams/v1";
const hasSstream =
  (await run("sh", ["-c", "command -v sstream-query && command -v sstream-mirror"])).code === 0;
const SKIP_SSTREAM = hasSstream ? false : "sstream-query/sstream-mirror not installed (no Debian 12 package)";

async function fetchOk(base: string, rel: string): Promise<{ body: Buffer; type: string | null }> {
  const r = await fetch(`${base}/${rel}`);
  const body = Buffer.from(await r.arrayBuffer());
  checkAnswer("GET", `/${rel}`, {
    status: r.status,
    contentType: r.headers.get("content-type"),
    json: undefined,
  });
  assert.equal(r.status, 200, `GET /${rel}: ${body.toString()}`);
  return { body, type: r.headers.get("content-type") };
}

describe("OpenPGP signatures for sstream-query and sstream-mirror", { timeout: 5 * 60_000 }, () => {
  let work: string;
  let s: RunningServer;
  let keyring: string;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-openpgp-"));
    s = await startServer({ keepData: true });
    const admin = await createToken(s.dataDir, "admin");
    await publishTinyImage(s.httpUrl, admin, path.join(work, "img"));
    keyring = await dearmoredKeyring(
      (await fetchOk(s.httpUrl, `${V1}/signing-key.asc`)).body.toString(),
      work,
    );
  });
  after(async () => {
    await s?.stop();
    await rm(work, { recursive: true, force: true });
    if (s) await rm(s.dataDir, { recursive: true, force: true });
  });

  it("serves the key, the .sjson and the .json.gpg documents with their content types", async () => {
    const key = await fetchOk(s.httpUrl, `${V1}/signing-key.asc`);
    assert.equal(key.type, "application/pgp-keys");
    assert.match(key.body.toString(), /^-----BEGIN PGP PUBLIC KEY BLOCK-----/);
    for (const name of ["index", "images"]) {
      assert.equal((await fetchOk(s.httpUrl, `${V1}/${name}.sjson`)).type, "text/plain; charset=utf-8");
      assert.equal((await fetchOk(s.httpUrl, `${V1}/${name}.json.gpg`)).type, "application/pgp-signature");
    }
    // LXD reads the plain index, which keeps naming the plain products file.
    const index = JSON.parse((await fetchOk(s.httpUrl, `${V1}/index.json`)).body.toString()) as {
      index: { images: { path: string } };
    };
    assert.equal(index.index.images.path, `${V1}/images.json`);
    const signed = JSON.parse(
      readSignedBody((await fetchOk(s.httpUrl, `${V1}/index.sjson`)).body.toString()),
    ) as {
      index: { images: { path: string } };
    };
    assert.equal(signed.index.images.path, `${V1}/images.sjson`);
  });

  it("gpgv verifies both .sjson documents as sstream-query does (stdin), and their bodies are the documents", async () => {
    for (const name of ["index", "images"]) {
      const sjson = (await fetchOk(s.httpUrl, `${V1}/${name}.sjson`)).body;
      const r = await gpgv(keyring, ["-"], sjson);
      assert.equal(r.code, 0, `${name}.sjson: ${r.stderr}`);
      assert.match(r.stderr, /Good signature/);
    }
    const products = (await fetchOk(s.httpUrl, `${V1}/images.json`)).body;
    const sjson = (await fetchOk(s.httpUrl, `${V1}/images.sjson`)).body.toString();
    assert.deepEqual(JSON.parse(readSignedBody(sjson)), JSON.parse(products.toString()));
    assert.ok(products.toString().includes("tiny:1:amd64:default"));
  });

  it("gpgv verifies the detached .json.gpg signatures over the served .json bytes", async () => {
    for (const name of ["index", "images"]) {
      await writeFile(path.join(work, `${name}.json`), (await fetchOk(s.httpUrl, `${V1}/${name}.json`)).body);
      await writeFile(
        path.join(work, `${name}.json.gpg`),
        (await fetchOk(s.httpUrl, `${V1}/${name}.json.gpg`)).body,
      );
      const r = await gpgv(keyring, [path.join(work, `${name}.json.gpg`), path.join(work, `${name}.json`)]);
      assert.equal(r.code, 0, `${name}.json.gpg: ${r.stderr}`);
    }
  });

  it("a changed images.sjson fails verification", async () => {
    const sjson = (await fetchOk(s.httpUrl, `${V1}/images.sjson`)).body.toString();
    const tampered = sjson.replace('"tiny"', '"evil"');
    assert.notEqual(tampered, sjson);
    const r = await gpgv(keyring, ["-"], tampered);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /BAD signature/);
  });

  it(
    "sstream-query lists the published items and refuses a changed images.sjson",
    { skip: SKIP_SSTREAM },
    async () => {
      const q = await run("sstream-query", [
        "--keyring",
        keyring,
        "-o",
        "%(product_name)s %(version_name)s %(item_name)s",
        `${s.httpUrl}/${V1}/index.sjson`,
      ]);
      assert.equal(q.code, 0, q.stderr);
      assert.match(q.stdout, /^tiny:1:amd64:default 20240101_0000 lxd\.tar\.xz$/m);
      assert.match(q.stdout, /^tiny:1:amd64:default 20240101_0000 root\.tar\.xz$/m);

      // The same documents from a folder: as served they verify; with images.sjson changed they do not.
      const query = async (tamper: boolean) => {
        const tree = path.join(work, tamper ? "tampered" : "copy");
        await mkdir(path.join(tree, V1), { recursive: true });
        for (const name of ["index.sjson", "images.sjson"]) {
          const body = (await fetchOk(s.httpUrl, `${V1}/${name}`)).body.toString();
          const changed = tamper && name === "images.sjson" ? body.replace('"tiny"', '"evil"') : body;
          await writeFile(path.join(tree, V1, name), changed);
        }
        return run("sstream-query", ["--keyring", keyring, `file://${tree}/${V1}/index.sjson`]);
      };
      const copy = await query(false);
      assert.equal(copy.code, 0, copy.stderr);
      const bad = await query(true);
      assert.notEqual(bad.code, 0, bad.stdout);
      assert.match(bad.stderr, /gpgv/);
    },
  );

  it(
    "sstream-mirror mirrors and verifies the .sjson tree and its files",
    { skip: SKIP_SSTREAM },
    async () => {
      const out = path.join(work, "mirror");
      const m = await run("sstream-mirror", ["--keyring", keyring, `${s.httpUrl}/${V1}/index.sjson`, out]);
      assert.equal(m.code, 0, m.stderr);
      assert.equal(
        await readFile(path.join(out, V1, "images.sjson"), "utf8"),
        (await fetchOk(s.httpUrl, `${V1}/images.sjson`)).body.toString(),
      );
      await readFile(path.join(out, "images/tiny/1/amd64/default/20240101_0000/rootfs.tar.xz"));
    },
  );

  it("keeps the key across a restart (same fingerprint), in a 0600 file of the data folder", async () => {
    const before = await keyFingerprint(path.join(work, "signing-key.asc"));
    await s.stop();
    s = await startServer({ dataDir: s.dataDir, keepData: true });
    const asc = path.join(work, "after.asc");
    await writeFile(asc, (await fetchOk(s.httpUrl, `${V1}/signing-key.asc`)).body);
    assert.equal(await keyFingerprint(asc), before);
    assert.ok(s.logs.some((l) => l.includes(`"openpgpFingerprint":"${before}"`)));
    const r = await gpgv(keyring, ["-"], (await fetchOk(s.httpUrl, `${V1}/images.sjson`)).body);
    assert.equal(r.code, 0, r.stderr);
  });
});

describe("OpenPGP key configuration", { timeout: 5 * 60_000 }, () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-openpgp-conf-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("a stored key that cannot be read stops the start with a sentence naming the file", async () => {
    const dataDir = path.join(work, "bad");
    await mkdir(path.join(dataDir, "keys"), { recursive: true, mode: 0o700 });
    const file = path.join(dataDir, "keys", "openpgp-key.asc");
    await writeFile(file, "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\ngarbage\n", { mode: 0o600 });
    const err = await startServer({ dataDir }).then(
      async (s) => {
        await s.stop();
        return new Error("started");
      },
      (e: Error) => e,
    );
    assert.match(err.message, /exited before listening \(code 1/);
    const stderr = err.message.slice(err.message.indexOf("stderr:"));
    assert.ok(stderr.includes(`lxhub: ${file}: not an armored OpenPGP private key`), stderr);
    assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
  });

  it("--openpgp-key signs with the given key, and LXHUB_OPENPGP_KEY too", async () => {
    const { privateKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "ed25519Legacy",
      userIDs: [{ name: "given" }],
      format: "object",
      config: { v6Keys: false },
    });
    const file = path.join(work, "given.asc");
    await writeFile(file, privateKey.armor(), { mode: 0o600 });
    const want = privateKey.getFingerprint().toUpperCase();
    for (const opts of [{ extraArgs: ["--openpgp-key", file] }, { env: { LXHUB_OPENPGP_KEY: file } }]) {
      const s = await startServer(opts);
      try {
        const asc = path.join(work, "served.asc");
        await writeFile(asc, (await fetchOk(s.httpUrl, `${V1}/signing-key.asc`)).body);
        assert.equal(await keyFingerprint(asc), want);
        const keyring = await dearmoredKeyring(await readFile(asc, "utf8"), work);
        const r = await gpgv(keyring, ["-"], (await fetchOk(s.httpUrl, `${V1}/index.sjson`)).body);
        assert.equal(r.code, 0, r.stderr);
      } finally {
        await s.stop();
      }
    }
  });

  it("replicas on one PostgreSQL catalog sign with one key and serve the same bytes", async () => {
    const db = await createDatabase("openpgp");
    const [a, b] = await Promise.all([
      startServer({ extraArgs: ["--db", db] }),
      startServer({ extraArgs: ["--db", db] }),
    ]);
    try {
      for (const rel of [`${V1}/signing-key.asc`, `${V1}/index.sjson`, `${V1}/images.sjson`]) {
        const [x, y] = await Promise.all([fetchOk(a.httpUrl, rel), fetchOk(b.httpUrl, rel)]);
        assert.ok(x.body.equals(y.body), rel);
      }
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
