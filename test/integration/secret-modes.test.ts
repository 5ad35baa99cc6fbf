import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createToken, startServer } from "../support/server.js";

async function modeOf(p: string): Promise<string> {
  return ((await stat(p)).mode & 0o777).toString(8);
}

/** Modes of every place that holds a secret in a data folder (keys, token secret, TLS key). */
async function secretModes(data: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const rel = ["", "keys", "keys/signing", "keys/token-secret", "tls", "tls/server.key"];
  for (const kf of await readdir(path.join(data, "keys/signing"))) rel.push(`keys/signing/${kf}`);
  for (const r of rel) out[r || "."] = await modeOf(path.join(data, r));
  return out;
}

function expected(modes: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.keys(modes).map((k) => [k, /\.jwk$|token-secret$|server\.key$/.test(k) ? "600" : "700"]),
  );
}

/**
 * The server is started with umask 000, so every mode below comes from the code, not from a
 * friendly umask.
 */
describe("files holding secrets are 0600 in 0700 folders", () => {
  let work: string;
  let umask: number;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-modes-"));
    umask = process.umask(0);
  });
  after(async () => {
    process.umask(umask);
    await rm(work, { recursive: true, force: true });
  });

  it("on a fresh data folder the server makes", async () => {
    const data = path.join(work, "fresh", "data");
    const s = await startServer({ dataDir: data });
    await createToken(data, "admin");
    await s.stop();
    const modes = await secretModes(data);
    assert.deepEqual(modes, expected(modes));
  });

  it("and tightened again at start when a hand or an older version loosened them", async () => {
    const data = path.join(work, "loose");
    let s = await startServer({ dataDir: data });
    await s.stop();
    const [keyFile] = await readdir(path.join(data, "keys/signing"));
    await chmod(path.join(data, "keys/signing"), 0o755);
    await chmod(path.join(data, "keys/signing", keyFile!), 0o644);
    await chmod(path.join(data, "tls"), 0o755);
    await chmod(path.join(data, "tls/server.key"), 0o644);
    await chmod(path.join(data, "keys"), 0o755);
    await chmod(path.join(data, "keys/token-secret"), 0o644);
    s = await startServer({ dataDir: data });
    await s.stop();
    const modes = await secretModes(data);
    delete modes["."]; // the operator's folder keeps its mode (it existed before)
    assert.deepEqual(modes, expected(modes));
  });
});
