/**
 * `GET /metrics` as Prometheus reads it: the whole exposition parses with the reference client's
 * text-format parser (Debian's python3-prometheus-client), and the counters move as requests,
 * publishes, uploads, errors and a garbage collection happen.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { api } from "../support/api.js";
import { run } from "../support/process.js";
import { createToken, startServer, type RunningServer } from "../support/server.js";
import { publishTinyImage } from "../support/tiny-image.js";

/** Parses the exposition with prometheus_client's parser; returns `name{labels}` → value. */
const PARSE = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
`;

async function scrape(base: string): Promise<Record<string, number>> {
  const r = await fetch(`${base}/metrics`);
  assert.equal(r.status, 200);
  assert.match(String(r.headers.get("content-type")), /^text\/plain/);
  const parsed = await run("/usr/bin/python3", ["-c", PARSE], { input: await r.text() });
  assert.equal(parsed.code, 0, `the exposition does not parse:\n${parsed.stderr}`);
  return JSON.parse(parsed.stdout) as Record<string, number>;
}

describe("GET /metrics", { timeout: 60_000 }, () => {
  let work: string;
  let server: RunningServer;
  let token: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "lxhub-metrics-"));
    server = await startServer({ extraArgs: ["--gc-interval", "0"] });
    token = await createToken(server.dataDir, "admin");
  });
  after(async () => {
    await server?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("parses as Prometheus text and its counters move with what the server does", async () => {
    const before = await scrape(server.httpUrl);
    const v = (m: Record<string, number>, k: string) => m[k] ?? 0;
    await publishTinyImage(server.httpUrl, token, join(work, "img"), "20240101_0000");
    for (let i = 0; i < 3; i++) await (await fetch(`${server.httpUrl}/streams/v1/images.json`)).arrayBuffer();
    const file = await fetch(`${server.httpUrl}/images/tiny/1/amd64/default/20240101_0000/rootfs.tar.xz`);
    const size = (await file.arrayBuffer()).byteLength;
    assert.equal(
      (await api(server.httpUrl, "POST", "/api/v1/tokens", { token: "not-a-token", body: "{}" })).status,
      401,
    );
    assert.equal((await api(server.httpUrl, "POST", "/api/v1/gc", { token, body: "{}" })).status, 200);
    const after = await scrape(server.httpUrl);

    assert.equal(v(after, "lxhub_publishes_total{}") - v(before, "lxhub_publishes_total{}"), 1);
    assert.ok(v(after, "lxhub_index_builds_total{}") > v(before, "lxhub_index_builds_total{}"));
    assert.ok(v(after, "lxhub_index_last_build_seconds{}") > 0);
    assert.ok(v(after, "lxhub_upload_bytes_total{}") >= size, "the uploaded files' bytes");
    assert.equal(
      v(after, "lxhub_upload_sessions_committed_total{}") -
        v(before, "lxhub_upload_sessions_committed_total{}"),
      2,
    );
    const docs = 'lxhub_http_requests_total{route="documents",status="200"}';
    assert.ok(v(after, docs) - v(before, docs) >= 3, "three document requests counted");
    const files = 'lxhub_http_requests_total{route="files",status="200"}';
    assert.equal(v(after, files) - v(before, files), 1);
    assert.ok(v(after, 'lxhub_http_response_bytes_total{route="files"}') >= size);
    assert.equal(
      v(after, 'lxhub_api_errors_total{code="UNAUTHORIZED"}') -
        v(before, 'lxhub_api_errors_total{code="UNAUTHORIZED"}'),
      1,
    );
    assert.equal(v(after, "lxhub_gc_runs_total{}") - v(before, "lxhub_gc_runs_total{}"), 1);
    assert.ok(v(after, "lxhub_statement_expiry_timestamp_seconds{}") > Date.now() / 1000);
    assert.ok(v(after, "lxhub_served_bytes{}") >= size);
    assert.ok(v(after, "lxhub_index_serial{}") > v(before, "lxhub_index_serial{}"));
  });
});
