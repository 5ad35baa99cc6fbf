/**
 * The pull-through cache (issue 8) with real processes on loopback: an upstream lxhub with tiny
 * published images, a cache lxhub started with `--upstream URL --upstream-key THUMBPRINT`
 * (`lxhub serve`), and a static simplestreams tree (`--upstream-no-signature`) that serves wrong
 * bytes for a file. Upstream requests are counted in the upstream's own access log (one JSON line
 * per request, server/access-log.ts) or in the static server's request log.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { buildDocuments } from "../../simplestreams/builder.js";
import { api, errorCode, uploadFile, versionPath } from "../support/api.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { createDatabase } from "../support/postgres.js";
import { buildTinyImage } from "../support/tiny-image.js";
import { dirSource, pullEnv, TestServer } from "./pull-support.js";

const VERSION = "20240101_0000";

function product(os: string) {
  return { os, release: "1", arch: "amd64", variant: "default" };
}

function sha256(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}

/** Publish a tiny image as `<os>:1:amd64:default` VERSION with alias `os`; returns its files' bytes. */
async function publish(
  base: string,
  token: string,
  dir: string,
  os: string,
  version = VERSION,
): Promise<{ meta: Buffer; root: Buffer }> {
  // Each version its own metadata (creation date) and root (marker): no file is shared.
  const creationDate = 1704067200 + Number(version.slice(6, 8)) * 86400;
  const img = await buildTinyImage(dir, { os, marker: `${os} ${version}`, creationDate });
  const meta = await uploadFile(base, token, img.files["lxd.tar.xz"]!);
  const root = await uploadFile(base, token, img.files["rootfs.tar.xz"]!);
  const r = await api(base, "PUT", versionPath(product(os), version), {
    token,
    body: JSON.stringify({
      aliases: [os],
      files: [
        { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: meta },
        { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: root },
      ],
    }),
  });
  assert.equal(r.status, 201, r.text);
  return {
    meta: await readFile(img.files["lxd.tar.xz"]!),
    root: await readFile(img.files["rootfs.tar.xz"]!),
  };
}

async function jwksKid(base: string): Promise<string> {
  const jwks = (await (await fetch(`${base}/.well-known/lxhub/jwks.json`)).json()) as {
    keys: { kid: string }[];
  };
  return jwks.keys[0]!.kid;
}

async function productsOf(
  base: string,
): Promise<Record<string, { versions: Record<string, { items: Record<string, { path: string }> }> }>> {
  const r = await fetch(`${base}/streams/v1/images.json`);
  assert.equal(r.status, 200);
  return ((await r.json()) as { products: Record<string, never> }).products;
}

/** Polls the products file until `pred` holds (at most 15 s). */
async function waitForProducts(
  base: string,
  pred: (p: Awaited<ReturnType<typeof productsOf>>) => boolean,
): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (pred(await productsOf(base))) return;
    if (Date.now() > deadline)
      throw new Error(`${base}: products never matched: ${JSON.stringify(await productsOf(base))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Access-log lines of `server` for GETs of `p` (after the async log writes settled). */
async function requestsFor(server: RunningServer, p: string): Promise<number> {
  await new Promise((r) => setTimeout(r, 300));
  return server.logs.filter((l) => {
    if (!l.includes('"event":"request"')) return false;
    const o = JSON.parse(l) as { path: string; method: string };
    return o.method === "GET" && o.path === p;
  }).length;
}

function upstreamFile(os: string, file: string, version = VERSION): string {
  return `/upstream/images/${os}/1/amd64/default/${version}/${file}`;
}

function upstreamPath(os: string, file: string, version = VERSION): string {
  return `/images/${os}/1/amd64/default/${version}/${file}`;
}

interface Status {
  counters: {
    upstreamRequests: number;
    cacheHits: number;
    cacheMisses: number;
    coalesced: number;
    failures: Record<string, number>;
  };
  lastRefresh: { ok: boolean } | null;
}

async function status(base: string): Promise<Status> {
  const r = await api(base, "GET", "/api/v1/upstream");
  assert.equal(r.status, 200, r.text);
  return r.json as unknown as Status;
}

describe("pull-through cache", { timeout: 120_000 }, () => {
  let work: string;
  let upstream: RunningServer;
  let cache: RunningServer;
  let cacheData: string;
  let cacheArgs: string[];
  let upToken: string;
  let cacheToken: string;
  let up: { meta: Buffer; root: Buffer };
  let up2: { meta: Buffer; root: Buffer };

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-through-"));
    upstream = await startServer();
    upToken = await createToken(upstream.dataDir, "admin");
    up = await publish(upstream.httpUrl, upToken, path.join(work, "up"), "up");
    cacheData = path.join(work, "cache-data");
    cacheArgs = [
      "--upstream",
      upstream.httpUrl,
      "--upstream-key",
      await jwksKid(upstream.httpUrl),
      "--upstream-refresh",
      "1",
    ];
    cache = await startServer({ dataDir: cacheData, extraArgs: cacheArgs });
    cacheToken = await createToken(cache.dataDir, "admin");
    await publish(cache.httpUrl, cacheToken, path.join(work, "own"), "own");
    await waitForProducts(cache.httpUrl, (p) => "up:1:amd64:default" in p);
  });

  after(async () => {
    await cache?.stop();
    await upstream?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("lists the union of its own images and the upstream's, upstream files under upstream/", async () => {
    const products = await productsOf(cache.httpUrl);
    assert.deepEqual(Object.keys(products).sort(), ["own:1:amd64:default", "up:1:amd64:default"]);
    const items = products["up:1:amd64:default"]!.versions[VERSION]!.items;
    assert.equal(items["lxd.tar.xz"]!.path, upstreamFile("up", "lxd.tar.xz").slice(1));
    assert.equal(items["root.tar.xz"]!.path, upstreamFile("up", "rootfs.tar.xz").slice(1));
    assert.equal(
      products["own:1:amd64:default"]!.versions[VERSION]!.items["root.tar.xz"]!.path.startsWith("images/"),
      true,
    );
  });

  it("the first pull goes upstream once per file, the second does not", async () => {
    const cacheKid = await jwksKid(cache.httpUrl);
    for (const round of [1, 2]) {
      // A fresh client each time, so every file is asked of the cache.
      const { env } = await pullEnv(work);
      const dest = path.join(work, `pulled-${round}`);
      const r = await lxhubCli(["pull", cache.httpUrl, "up", dest, "--key", cacheKid, "--arch", "amd64"], {
        env,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(await readFile(path.join(dest, "etc/marker"), "utf8"), `up ${VERSION}\n`);
      for (const f of ["lxd.tar.xz", "rootfs.tar.xz"]) {
        assert.equal(
          await requestsFor(upstream, upstreamPath("up", f)),
          1,
          `round ${round}: upstream GETs of ${f}`,
        );
        assert.equal(
          await requestsFor(cache, upstreamFile("up", f)),
          round,
          `round ${round}: cache GETs of ${f}`,
        );
      }
    }
    const s = await status(cache.httpUrl);
    assert.equal(s.counters.cacheMisses, 2);
    assert.equal(s.counters.cacheHits, 2);
    // The same counters in the Prometheus format.
    const metrics = await (await fetch(`${cache.httpUrl}/metrics`)).text();
    assert.match(metrics, /^lxhub_upstream_cache_misses_total 2$/m);
    assert.match(metrics, /^lxhub_upstream_cache_hits_total 2$/m);
    assert.match(metrics, /^lxhub_upstream_failures_total\{kind="digest-mismatch"\} 0$/m);
    assert.match(metrics, /^lxhub_upstream_last_refresh_ok 1$/m);
  });

  it("garbage collection keeps the cached upstream files (no catalog version names them)", async () => {
    const gc = await api(cache.httpUrl, "POST", "/api/v1/gc", {
      token: cacheToken,
      body: JSON.stringify({ grace: "0" }),
      headers: { "content-type": "application/json" },
    });
    assert.equal(gc.status, 200, gc.text);
    for (const f of ["lxd.tar.xz", "rootfs.tar.xz"]) {
      const r = await fetch(cache.httpUrl + upstreamFile("up", f));
      assert.equal(r.status, 200);
      await r.arrayBuffer();
      assert.equal(await requestsFor(upstream, upstreamPath("up", f)), 1, `${f} was fetched again after GC`);
    }
  });

  it("ten concurrent requests for one missing file make one upstream request", async () => {
    // A new upstream version reaches the cache's index with the next refresh (every second here).
    up2 = await publish(upstream.httpUrl, upToken, path.join(work, "up2"), "up", "20240102_0000");
    await waitForProducts(cache.httpUrl, (p) => "20240102_0000" in (p["up:1:amd64:default"]?.versions ?? {}));
    const file = upstreamFile("up", "rootfs.tar.xz", "20240102_0000");
    const bodies = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        // Two of them ask for a range: they wait for the whole fetch, then get their bytes.
        const headers: Record<string, string> = i >= 8 ? { range: "bytes=0-" } : {};
        const r = await fetch(cache.httpUrl + file, { headers });
        assert.equal(r.status, i >= 8 ? 206 : 200);
        return Buffer.from(await r.arrayBuffer());
      }),
    );
    for (const b of bodies) assert.equal(sha256(b), sha256(up2.root));
    assert.equal(await requestsFor(upstream, upstreamPath("up", "rootfs.tar.xz", "20240102_0000")), 1);
    const s = await status(cache.httpUrl);
    assert.ok(s.counters.coalesced >= 1, JSON.stringify(s.counters));
  });

  it("with the upstream stopped, cached images still list and download; an uncached file is a clear 502", async () => {
    await upstream.stop();
    const check = async () => {
      await waitForProducts(cache.httpUrl, (p) => "up:1:amd64:default" in p && "own:1:amd64:default" in p);
      const products = await productsOf(cache.httpUrl);
      assert.deepEqual(Object.keys(products["up:1:amd64:default"]!.versions).sort(), [
        VERSION,
        "20240102_0000",
      ]);
      const root = await fetch(cache.httpUrl + upstreamFile("up", "rootfs.tar.xz"));
      assert.equal(root.status, 200);
      assert.equal(sha256(Buffer.from(await root.arrayBuffer())), sha256(up.root));
      const missing = await api(cache.httpUrl, "GET", upstreamFile("up", "lxd.tar.xz", "20240102_0000"));
      assert.equal(missing.status, 502, missing.text);
      assert.equal(errorCode(missing), "UPSTREAM_UNAVAILABLE");
      assert.match(String((missing.json?.error as { message?: string }).message), /upstream/);
    };
    // Let a refresh fail first, so the index is the last good copy.
    await new Promise((r) => setTimeout(r, 1500));
    const s = await status(cache.httpUrl);
    assert.equal(s.lastRefresh?.ok, false);
    assert.ok((s.counters.failures.unreachable ?? 0) >= 1, JSON.stringify(s.counters));
    await check();
    // A restart with the upstream still down reads the last good copy back from the catalog.
    await cache.stop();
    cache = await startServer({ dataDir: cacheData, extraArgs: cacheArgs });
    await check();
    // The failures are logged (the log is written asynchronously), not once per request or refresh.
    const failures = () => cache.logs.filter((l) => l.includes('"event":"upstream-failure"'));
    for (let i = 0; i < 50 && failures().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 5; i++)
      await api(cache.httpUrl, "GET", upstreamFile("up", "lxd.tar.xz", "20240102_0000"));
    await new Promise((r) => setTimeout(r, 2500));
    assert.ok(failures().length >= 1 && failures().length <= 2, failures().join("\n"));
  });
});

describe("pull-through cache of a plain simplestreams upstream that misbehaves", { timeout: 60_000 }, () => {
  let work: string;
  let tree: string;
  let origin: TestServer;
  let cache: RunningServer;
  let limiter: http.Server | undefined;
  let limitedCache: RunningServer | undefined;
  const rootPath = `images/bad/1/amd64/default/${VERSION}/rootfs.tar.xz`;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-through-bad-"));
    tree = path.join(work, "tree");
    const img = await buildTinyImage(path.join(work, "img"), { os: "bad" });
    const meta = await readFile(img.files["lxd.tar.xz"]!);
    const root = await readFile(img.files["rootfs.tar.xz"]!);
    const dir = path.join(tree, "images/bad/1/amd64/default", VERSION);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "lxd.tar.xz"), meta);
    // Same size, one byte changed: the products file names the sha256 of the real bytes.
    const wrong = Buffer.from(root);
    wrong[wrong.length - 1]! ^= 0xff;
    await writeFile(path.join(dir, "rootfs.tar.xz"), wrong);
    const docs = buildDocuments(
      [
        {
          ...product("bad"),
          releaseTitle: "1",
          aliases: ["bad"],
          requirements: {},
          versions: [
            {
              name: VERSION,
              files: [
                {
                  name: "lxd.tar.xz",
                  ftype: "lxd.tar.xz",
                  path: `images/bad/1/amd64/default/${VERSION}/lxd.tar.xz`,
                  sha256: sha256(meta),
                  size: meta.length,
                  combined: { "root.tar.xz": sha256(Buffer.concat([meta, root])) },
                },
                {
                  name: "rootfs.tar.xz",
                  ftype: "root.tar.xz",
                  path: rootPath,
                  sha256: sha256(root),
                  size: root.length,
                },
              ],
            },
          ],
        },
      ],
      { updated: new Date() },
    );
    for (const [p, body] of docs.files) {
      await mkdir(path.dirname(path.join(tree, p)), { recursive: true });
      await writeFile(path.join(tree, p), body);
    }
    origin = new TestServer(dirSource(tree));
    await origin.start();
    cache = await startServer({ extraArgs: ["--upstream", origin.url, "--upstream-no-signature"] });
    await waitForProducts(cache.httpUrl, (p) => "bad:1:amd64:default" in p);
  });

  after(async () => {
    await limitedCache?.stop();
    limiter?.closeAllConnections();
    await new Promise((r) => (limiter ? limiter.close(r) : r(undefined)));
    await cache?.stop();
    await origin?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it("cuts the download, stores nothing, and asks the upstream again next time", async () => {
    const file = `/upstream/${rootPath}`;
    for (const attempt of [1, 2]) {
      // The connection is cut: before the headers arrive or during the body, never a clean end.
      await assert.rejects(
        fetch(cache.httpUrl + file).then((r) => r.arrayBuffer()),
        `attempt ${attempt}: the download must fail`,
      );
      assert.equal(origin.log.filter((e) => e.path === rootPath).length, attempt);
    }
    const s = await status(cache.httpUrl);
    assert.equal(s.counters.failures["digest-mismatch"], 2);
    // Nothing stored: the content address is still unknown to the cache.
    const root = await readFile(path.join(work, "img", "rootfs.tar.xz"));
    const blob = await fetch(`${cache.httpUrl}/blobs/sha256/${sha256(root)}`);
    assert.equal(blob.status, 404);
    await blob.arrayBuffer();
    // A range request waits for the whole fetch, which fails before any byte: a clean 502.
    const ranged = await api(cache.httpUrl, "GET", file, { headers: { range: "bytes=0-9" } });
    assert.equal(ranged.status, 502);
    assert.equal(errorCode(ranged), "UPSTREAM_UNAVAILABLE");
  });

  /** How the flaky upstream answers: 429 for everything, or no answer at all. */
  let flaky: "429" | "hang" | null = null;

  it("a rate-limited upstream: a missing file is a clear 502, the index stays the last good copy", async () => {
    const source = dirSource(tree);
    limiter = http.createServer((req, res) => {
      const rel = (req.url ?? "/").slice(1);
      if (flaky === "hang") return;
      if (flaky === "429" || rel.endsWith("lxd.tar.xz")) {
        res.writeHead(429, { "retry-after": "1", "content-type": "application/json" });
        res.end('{"error":{"code":"RATE_LIMITED","message":"slow down"}}');
        return;
      }
      void source(rel).then((body) => (body ? res.writeHead(200).end(body) : res.writeHead(404).end()));
    });
    await new Promise<void>((r) => limiter!.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(limiter.address() as AddressInfo).port}`;
    limitedCache = await startServer({
      extraArgs: [
        "--upstream",
        url,
        "--upstream-no-signature",
        "--upstream-refresh",
        "1",
        "--upstream-timeout",
        "1",
      ],
    });
    await waitForProducts(limitedCache.httpUrl, (p) => "bad:1:amd64:default" in p);
    const meta = await api(
      limitedCache.httpUrl,
      "GET",
      `/upstream/images/bad/1/amd64/default/${VERSION}/lxd.tar.xz`,
    );
    assert.equal(meta.status, 502);
    assert.equal(errorCode(meta), "UPSTREAM_UNAVAILABLE");
    assert.match(String((meta.json?.error as { message?: string }).message), /rate-limited/);
    flaky = "429";
    await new Promise((r) => setTimeout(r, 2500));
    const s = await status(limitedCache.httpUrl);
    assert.equal(s.lastRefresh?.ok, false);
    assert.ok(s.counters.failures["rate-limited"]! >= 2, JSON.stringify(s.counters));
    assert.ok("bad:1:amd64:default" in (await productsOf(limitedCache.httpUrl)));
  });

  it("an upstream that does not answer: a missing file is 504 after the timeout, the index stays", async () => {
    flaky = "hang";
    const t0 = Date.now();
    const root = await api(limitedCache!.httpUrl, "GET", `/upstream/${rootPath}`);
    assert.equal(root.status, 504, root.text);
    assert.equal(errorCode(root), "UPSTREAM_TIMEOUT");
    // Two stalls of 1 s and one backoff of at most 2 s.
    assert.ok(Date.now() - t0 < 6000, `${Date.now() - t0} ms`);
    await new Promise((r) => setTimeout(r, 2500));
    const s = await status(limitedCache!.httpUrl);
    assert.ok(s.counters.failures.timeout! >= 2, JSON.stringify(s.counters));
    assert.ok("bad:1:amd64:default" in (await productsOf(limitedCache!.httpUrl)));
  });
});

describe(
  "pull-through cache replicas on one PostgreSQL catalog and one blob folder",
  { timeout: 90_000 },
  () => {
    let work: string;
    let upstream: RunningServer;
    let upToken: string;
    const replicas: RunningServer[] = [];

    const serial = async (base: string): Promise<number> => {
      const r = await api(base, "GET", "/readyz");
      return (r.json as { serial: number }).serial;
    };

    before(async () => {
      work = await mkdtemp(path.join(tmpdir(), "lxhub-pull-through-pg-"));
      upstream = await startServer();
      upToken = await createToken(upstream.dataDir, "admin");
      await publish(upstream.httpUrl, upToken, path.join(work, "up"), "up");
      const db = await createDatabase("pullthrough");
      const blobs = path.join(work, "blobs");
      await mkdir(blobs);
      const args = [
        ...["--db", db, "--blobs", `file://${blobs}`],
        ...["--upstream", upstream.httpUrl, "--upstream-key", await jwksKid(upstream.httpUrl)],
        ...["--upstream-refresh", "1"],
      ];
      // One after the other: the first makes the catalog's keys.
      replicas.push(await startServer({ extraArgs: args }));
      replicas.push(await startServer({ extraArgs: args }));
      for (const r of replicas) await waitForProducts(r.httpUrl, (p) => "up:1:amd64:default" in p);
    });

    after(async () => {
      for (const r of replicas) await r.stop();
      await upstream?.stop();
      await rm(work, { recursive: true, force: true });
    });

    it("an upstream change makes one new generation (two when both replicas saw it before either rebuilt), never one per refresh", async () => {
      // Several refreshes of both replicas with nothing new upstream: no new generation.
      await new Promise((r) => setTimeout(r, 1500));
      const quiet = await serial(replicas[0]!.httpUrl);
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(await serial(replicas[0]!.httpUrl), quiet);
      await publish(upstream.httpUrl, upToken, path.join(work, "up2"), "up", "20240102_0000");
      for (const r of replicas) {
        await waitForProducts(r.httpUrl, (p) => "20240102_0000" in (p["up:1:amd64:default"]?.versions ?? {}));
      }
      await new Promise((r) => setTimeout(r, 3000));
      const after = await serial(replicas[0]!.httpUrl);
      assert.ok(after - quiet >= 1 && after - quiet <= 2, `serial ${quiet} → ${after}`);
      assert.equal(await serial(replicas[1]!.httpUrl), after);
    });

    it("a file fetched through one replica is served by the other without the upstream", async () => {
      const file = upstreamFile("up", "rootfs.tar.xz");
      for (const r of replicas) {
        const res = await fetch(r.httpUrl + file);
        assert.equal(res.status, 200);
        await res.arrayBuffer();
      }
      assert.equal(await requestsFor(upstream, upstreamPath("up", "rootfs.tar.xz")), 1);
      assert.equal((await status(replicas[1]!.httpUrl)).counters.cacheHits, 1);
    });
  },
);
