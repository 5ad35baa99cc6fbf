/**
 * Signing-key rotation that hosts follow (issue 11), on a real `lxhub serve`: a host pins the key
 * on first use and pulls; `lxhub key rotate` on the data folder, the running server re-signs
 * (SIGHUP), and the host's next pull follows the old key's endorsement and pins the new key;
 * `lxhub key retire OLD`, and the host still pulls. A statement signed by a key no pinned key
 * endorsed (another server's, even with an endorsement it signed itself) is refused, and so is the
 * new key for a host that pinned only the old one after the old one was retired. With replicas
 * on one PostgreSQL catalog, the command re-signs and both replicas follow without a signal.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { decodeProtectedHeader } from "jose";
import { signEndorsement } from "../../signing/endorsement.js";
import { Keyring } from "../../signing/keyring.js";
import { dataPath } from "../../storage/layout.js";
import { createDatabase } from "../support/postgres.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { publishTinyImage } from "../support/tiny-image.js";
import { envWithRemote, pullEnv, TestServer, upstreamSource } from "./pull-support.js";

const STATEMENT = "streams/v1/statement.jws";
const ENDORSEMENTS = ".well-known/lxhub/endorsements.json";
const JWKS = ".well-known/lxhub/jwks.json";

async function get(base: string, rel: string): Promise<Buffer> {
  const res = await fetch(`${base}/${rel}`);
  assert.equal(res.status, 200, `GET ${rel}`);
  return Buffer.from(await res.arrayBuffer());
}

async function statementKid(base: string): Promise<string> {
  return decodeProtectedHeader((await get(base, STATEMENT)).toString("utf8").trim()).kid as string;
}

/** Waits (at most 10 s) until `check` holds for what the server serves. */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function pinned(env: NodeJS.ProcessEnv, name: string): Promise<string[]> {
  const file = path.join(env.XDG_CONFIG_HOME as string, "lxhub", "remotes.json");
  const f = JSON.parse(await readFile(file, "utf8")) as {
    remotes: Record<string, { keys: { kid: string }[] }>;
  };
  return (f.remotes[name]?.keys ?? []).map((k) => k.kid);
}

describe("signing-key rotation followed by a pinned host", { timeout: 5 * 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let env: NodeJS.ProcessEnv;
  let lateEnv: NodeJS.ProcessEnv;
  let oldKid: string;
  let newKid: string;
  let n = 0;
  const pull = (e: NodeJS.ProcessEnv, remote = "t") =>
    lxhubCli(["pull", remote, "tiny/1", path.join(work, `dest-${++n}`), "--arch", "amd64"], { env: e });
  const key = (...args: string[]) => lxhubCli(["key", ...args, "--data", server.dataDir]);

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-keyrot-"));
    server = await startServer();
    const admin = await createToken(server.dataDir, "admin");
    await publishTinyImage(server.httpUrl, admin, path.join(work, "img"), "20240101_0000", {
      aliases: ["tiny/1"],
    });
    env = await envWithRemote(work, server.httpUrl);
    // A host that pinned the same key but will not pull until the old key is retired.
    lateEnv = await envWithRemote(work, server.httpUrl);
    oldKid = await statementKid(server.httpUrl);
  });

  after(async () => {
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("pulls with the key pinned on first use", async () => {
    assert.deepEqual(await pinned(env, "t"), [oldKid]);
    const r = await pull(env);
    assert.equal(r.code, 0, r.stderr);
  });

  it("rotate: the running server signs with the new key, endorsed by the old one", async () => {
    const r = await key("rotate", "--overlap", "1h");
    assert.equal(r.code, 0, r.stderr);
    newKid = r.stdout.trim();
    assert.notEqual(newKid, oldKid);
    const list = await key("list");
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^${oldKid}\\t\\S+\\tprevious\\t-$`, "m"));
    assert.match(list.stdout, new RegExp(`^${newKid}\\t\\S+\\tactive\\tendorsed by ${oldKid} until `, "m"));

    server.proc.kill("SIGHUP");
    await until("the new key's statement", async () => (await statementKid(server.httpUrl)) === newKid);
    const endorsements = JSON.parse((await get(server.httpUrl, ENDORSEMENTS)).toString()) as {
      endorsements: string[];
    };
    assert.equal(endorsements.endorsements.length, 1);
    assert.equal(decodeProtectedHeader(endorsements.endorsements[0] as string).kid, oldKid);
  });

  it("a URL with --key OLD follows the endorsement for this run and pins nothing", async () => {
    const { env: e } = await pullEnv(work);
    const r = await lxhubCli(["verify", server.httpUrl, "--key", oldKid], { env: e });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`endorsed by pinned key ${oldKid} → ${newKid}.*not pinned`));
  });

  it("the host that pinned the old key pulls again and now pins the new key", async () => {
    const r = await pull(env);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await pinned(env, "t"), [newKid]);
  });

  it("retire OLD: it leaves the JWKS and its endorsement stops; the host still pulls", async () => {
    const r = await key("retire", oldKid);
    assert.equal(r.code, 0, r.stderr);
    server.proc.kill("SIGHUP");
    await until("the old key gone from the JWKS", async () => {
      const jwks = JSON.parse((await get(server.httpUrl, JWKS)).toString()) as { keys: { kid: string }[] };
      return jwks.keys.length === 1 && jwks.keys[0]?.kid === newKid;
    });
    assert.deepEqual(JSON.parse((await get(server.httpUrl, ENDORSEMENTS)).toString()), { endorsements: [] });
    const again = await pull(env);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch((await key("list")).stdout, new RegExp(oldKid.replace(/[-]/g, "\\-") + "\\t"));
  });

  it("a host that pinned only the retired key is refused (no endorsement left)", async () => {
    const r = await pull(lateEnv);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is signed by a key that is not pinned/);
    assert.deepEqual(await pinned(lateEnv, "t"), [oldKid]);
  });

  it("a statement by a key no pinned key endorsed is refused, even with a self-made endorsement", async () => {
    const other = await startServer();
    const relay = new TestServer(upstreamSource(server.httpUrl));
    try {
      await relay.start();
      const e = await envWithRemote(work, relay.url);
      assert.deepEqual(await pinned(e, "t"), [newKid]);
      // The relay now answers with the other server's documents and key.
      const ring = await Keyring.open(dataPath(other.dataDir, { kind: "signingKeys" }));
      const self = await signEndorsement(ring.active(), ring.active(), {
        notAfter: new Date(Date.now() + 3600_000),
        issuer: "lxhub",
      });
      for (const rel of [STATEMENT, "streams/v1/index.json", "streams/v1/images.json", JWKS]) {
        relay.overrides.set(rel, await get(other.httpUrl, rel));
      }
      relay.overrides.set(ENDORSEMENTS, Buffer.from(JSON.stringify({ endorsements: [self] })));
      const r = await lxhubCli(["verify", "t"], { env: e });
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stdout, /is signed by a key that is not pinned/);
      assert.deepEqual(await pinned(e, "t"), [newKid]);
    } finally {
      await relay.stop();
      await other.stop();
    }
  });
});

describe("signing-key rotation on replicas sharing PostgreSQL", { timeout: 5 * 60_000 }, () => {
  let work: string;
  let db: string;
  let replicas: RunningServer[] = [];
  const key = (...args: string[]) =>
    lxhubCli(["key", ...args, "--db", db, "--data", path.join(work, "cli-data")]);
  const served = async (rel: string) =>
    Promise.all(replicas.map(async (r) => (await get(r.httpUrl, rel)).toString()));

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-keyrot-pg-"));
    db = await createDatabase("keyrot");
    // One after the other: the first makes the first key in the catalog, the second loads it.
    for (let i = 0; i < 2; i++) replicas.push(await startServer({ extraArgs: ["--db", db] }));
  });

  after(async () => {
    for (const r of replicas) await r.stop();
    replicas = [];
    await rm(work, { recursive: true, force: true });
  });

  it("rotate re-signs in the catalog, both replicas serve the new key, a pinned host follows; retire too", async () => {
    const oldKid = await statementKid(replicas[0]!.httpUrl);
    assert.equal(await statementKid(replicas[1]!.httpUrl), oldKid);
    const env = await envWithRemote(work, replicas[1]!.httpUrl);

    const r = await key("rotate", "--overlap", "1h");
    assert.equal(r.code, 0, r.stderr);
    const newKid = r.stdout.trim();
    await until("both replicas on the new key", async () =>
      (await Promise.all(replicas.map((x) => statementKid(x.httpUrl)))).every((k) => k === newKid),
    );
    const [e0, e1] = await served(ENDORSEMENTS);
    assert.equal(e0, e1, "replicas publish the same endorsements");
    const v = await lxhubCli(["verify", "t"], { env });
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, new RegExp(`endorsed by pinned key ${oldKid} → ${newKid}`));
    assert.deepEqual(await pinned(env, "t"), [newKid]);

    assert.equal((await key("retire", oldKid)).code, 0);
    await until("both replicas without the old key", async () =>
      (await served(JWKS)).every((j) => !j.includes(oldKid)),
    );
    const again = await lxhubCli(["verify", "t"], { env });
    assert.equal(again.code, 0, again.stdout + again.stderr);
  });
});
