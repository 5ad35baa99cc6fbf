/**
 * `lxhub serve --mirrors FILE`: the server syncs an upstream lxhub on its own at start and on an
 * interval, serves what it copied, and reports each mirror's status through
 * `GET /api/v1/mirrors` and `GET /metrics`; when the upstream goes away the failure is recorded
 * and logged while the copy keeps being served. A mirrors file with a mistake stops the server at
 * start, naming the entry and key.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { api } from "../support/api.js";
import { publishTinyImage } from "../support/tiny-image.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";

interface Status {
  name: string;
  upstream: string;
  running: boolean;
  last_success_at: string | null;
  last_error: string | null;
  lag_seconds: number | null;
  last_run: { added: number; retired: number; failed: number; bytes: number };
  versions: number;
  runs_total: number;
  failures_total: number;
  bytes_total: number;
}

async function statusOf(base: string, name: string): Promise<Status | undefined> {
  const r = await api(base, "GET", "/api/v1/mirrors");
  assert.equal(r.status, 200, r.text);
  return (r.json?.mirrors as Status[]).find((m) => m.name === name);
}

/** Polls `check` every 200 ms until it returns a value (at most `ms`). */
async function until<T>(what: string, ms: number, check: () => Promise<T | undefined | false>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function versionsOf(base: string): Promise<string[]> {
  const r = await fetch(`${base}/streams/v1/images.json`);
  if (r.status !== 200) return [];
  const doc = (await r.json()) as { products: Record<string, { versions: Record<string, unknown> }> };
  return Object.entries(doc.products).flatMap(([p, v]) => Object.keys(v.versions).map((k) => `${p}@${k}`));
}

describe("lxhub serve --mirrors", { timeout: 120_000 }, () => {
  let work: string;
  let upstream: RunningServer;
  let server: RunningServer;
  let token: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "lxhub-mirror-schedule-"));
    upstream = await startServer();
    token = await createToken(upstream.dataDir, "admin");
    await publishTinyImage(upstream.httpUrl, token, join(work, "v1"), "20240101_0000", { distinct: true });
    const jwks = (await (await fetch(`${upstream.httpUrl}/.well-known/lxhub/jwks.json`)).json()) as {
      keys: { kid: string }[];
    };
    const file = join(work, "mirrors.yaml");
    await writeFile(
      file,
      [
        "mirrors:",
        "  - name: up",
        `    upstream: ${upstream.httpUrl}`,
        `    key: ${jwks.keys[0]!.kid}`,
        "    filters: [release=1]",
        "    interval: 2s",
      ].join("\n") + "\n",
    );
    server = await startServer({ extraArgs: ["--mirrors", file] });
  });

  after(async () => {
    await Promise.all([server?.stop(), upstream?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("syncs at start, serves the copy, and reports the run", async () => {
    const s = await until("a successful run", 30_000, async () => {
      const st = await statusOf(server.httpUrl, "up");
      return st?.last_success_at ? st : undefined;
    });
    assert.equal(s.upstream.replace(/\/+$/, ""), upstream.httpUrl.replace(/\/+$/, ""));
    assert.equal(s.last_error, null);
    assert.equal(s.versions, 1);
    assert.ok(s.runs_total >= 1);
    assert.ok(s.lag_seconds !== null && s.lag_seconds >= 0 && s.lag_seconds < 30);
    assert.deepEqual(await versionsOf(server.httpUrl), ["tiny:1:amd64:default@20240101_0000"]);
    assert.ok(s.bytes_total > 0, "the first run downloaded the image");

    const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
    assert.match(metrics, /^lxhub_mirror_last_run_ok\{mirror="up"\} 1$/m);
    assert.match(metrics, /^lxhub_mirror_versions\{mirror="up"\} 1$/m);
    assert.match(metrics, /^lxhub_mirror_runs_total\{mirror="up"\} [1-9]\d*$/m);
    assert.match(metrics, /^lxhub_mirror_last_success_timestamp_seconds\{mirror="up"\} \d+(\.\d+)?$/m);
    assert.match(metrics, /^# TYPE lxhub_mirror_downloaded_bytes_total counter$/m);
  });

  it("picks up a new upstream version on a later run, moving no byte for the old one", async () => {
    const before = (await statusOf(server.httpUrl, "up"))!;
    await publishTinyImage(upstream.httpUrl, token, join(work, "v2"), "20240201_0000", { distinct: true });
    await until("the new version on the mirror", 30_000, async () =>
      (await versionsOf(server.httpUrl)).includes("tiny:1:amd64:default@20240201_0000"),
    );
    const after = await until("the run's status", 10_000, async () => {
      const st = (await statusOf(server.httpUrl, "up"))!;
      return st.versions === 2 ? st : undefined;
    });
    assert.ok(after.runs_total > before.runs_total);
  });

  it("with the upstream gone, records and logs the failure and keeps serving the copy", async () => {
    await upstream.stop();
    const s = await until("a failed run", 30_000, async () => {
      const st = (await statusOf(server.httpUrl, "up"))!;
      return st.last_error ? st : undefined;
    });
    assert.ok(s.failures_total >= 1);
    assert.ok(s.last_success_at, "the last success is kept");
    const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
    assert.match(metrics, /^lxhub_mirror_last_run_ok\{mirror="up"\} 0$/m);
    assert.match(metrics, /^lxhub_mirror_failures_total\{mirror="up"\} [1-9]\d*$/m);
    assert.ok(server.logs.some((l) => l.includes('"event":"mirror-failed"')));
    assert.equal((await versionsOf(server.httpUrl)).length, 2, "the copy is still served");
    const file = await fetch(`${server.httpUrl}/images/tiny/1/amd64/default/20240201_0000/rootfs.tar.xz`);
    assert.equal(file.status, 200);
    await file.arrayBuffer();
  });

  it("a mistake in the mirrors file stops the server at start, naming the entry and key", async () => {
    const cases: [string, RegExp][] = [
      [
        "  - name: x\n    upstream: ftp://example\n    no_signature: true\n",
        /mirrors\.0\.upstream: an http\(s\):\/\/ URL/,
      ],
      ["  - name: x\n    upstream: http://127.0.0.1:1\n", /key: THUMBPRINT\) or no_signature: true/],
      [
        "  - name: x\n    upstream: http://127.0.0.1:1\n    no_signature: true\n    filters: [size=1]\n",
        /mirrors\.0\.filters: .*unknown key "size"/,
      ],
    ];
    for (const [entry, error] of cases) {
      const bad = join(work, "bad.yaml");
      await writeFile(bad, `mirrors:\n${entry}`);
      const r = await lxhubCli([
        "serve",
        "--data",
        join(work, "bad-data"),
        "--mirrors",
        bad,
        "--listen",
        "127.0.0.1:0",
      ]);
      assert.notEqual(r.code, 0, entry);
      assert.match(r.stderr, error);
    }
  });
});
