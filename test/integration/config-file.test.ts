/**
 * `lxhub serve --config FILE` and `--print-config`, as an operator runs them: the file's keys are
 * the flags' names, flags and LXHUB_* variables win over it, a mistake stops the start naming the
 * key and the file, and the effective settings print with passwords redacted.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse } from "yaml";
import { createToken, lxhubCli, startServer } from "../support/server.js";
import { publishTinyImage } from "../support/tiny-image.js";

describe("lxhub serve --config", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "lxhub-config-"));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("prints the effective settings: flag > environment > file > default, passwords redacted", async () => {
    const file = join(work, "lxhub.yaml");
    await writeFile(
      file,
      [
        `data: ${join(work, "data")}`,
        "db: postgres://lxhub:hunter2@127.0.0.1:5432/lxhub",
        "gc-interval: 6h",
        "idle-timeout: 5",
        "listen: 127.0.0.1:9000",
        "retain: ['debian/*:keep=3']",
        "deltas: false",
      ].join("\n") + "\n",
    );
    const r = await lxhubCli(["serve", "--config", file, "--print-config", "--listen", "127.0.0.1:9100"], {
      env: { LXHUB_IDLE_TIMEOUT: "7" },
    });
    assert.equal(r.code, 0, r.stderr);
    const c = parse(r.stdout) as Record<string, unknown>;
    assert.equal(c.listen, "127.0.0.1:9100", "the flag wins");
    assert.equal(c["idle-timeout"], 7, "the environment beats the file");
    assert.equal(c["gc-interval"], 21600);
    assert.deepEqual(c.retain, ["debian/*:keep=3"]);
    assert.equal(c.deltas, false);
    assert.equal(c["tls-listen"], "0.0.0.0:8443", "the default");
    assert.equal(c.db, "postgres://lxhub:***@127.0.0.1:5432/lxhub");
    assert.ok(!r.stdout.includes("hunter2"));
  });

  it("a mistake in the file stops the start, naming the file and the key", async () => {
    const file = join(work, "bad.yaml");
    await writeFile(file, "gc-intervall: 6h\n");
    const r = await lxhubCli(["serve", "--config", file, "--data", join(work, "bad")]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.yaml: unknown key "gc-intervall"/);
    await writeFile(file, "idle-timeout: soon\n");
    const r2 = await lxhubCli(["serve", "--config", file, "--data", join(work, "bad")]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /idle-timeout \(idleTimeoutSeconds, from idle-timeout in .*bad\.yaml\)/);
  });

  it("a server runs on its config file (its retention policy applies after each publish)", async () => {
    const file = join(work, "run.yaml");
    await writeFile(file, "gc-interval: 0\nretain: ['tiny/*:keep=1']\n");
    const server = await startServer({ extraArgs: ["--config", file] });
    try {
      const token = await createToken(server.dataDir, "admin");
      for (const v of ["20240101_0000", "20240201_0000"]) {
        await publishTinyImage(server.httpUrl, token, join(work, v), v, { distinct: true });
      }
      const doc = (await (await fetch(`${server.httpUrl}/streams/v1/images.json`)).json()) as {
        products: Record<string, { versions: Record<string, unknown> }>;
      };
      assert.deepEqual(Object.keys(doc.products["tiny:1:amd64:default"]!.versions), ["20240201_0000"]);
    } finally {
      await server.stop();
    }
  });
});
