/**
 * Two `lxhub serve` replicas sharing one PostgreSQL catalog (test/support/postgres.ts) and one
 * S3 bucket on a real Ceph RADOS Gateway (test/support/rgw.ts), as they run behind a load
 * balancer: pushes spread over both, each sees the other's versions at once, a replica killed in
 * the middle of a publish leaves nothing half done, and the object store or the database going
 * away is answered cleanly.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import pg from "pg";
import { api, uploadFile, versionPath } from "../support/api.js";
import { createDatabase, ensurePostgres } from "../support/postgres.js";
import { createTestBucket, ensureRgw, type Rgw } from "../support/rgw.js";
import { lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { buildTinyImage } from "../support/tiny-image.js";

const sha = (b: Buffer | string): string => createHash("sha256").update(b).digest("hex");
const exited = (s: RunningServer): Promise<unknown> =>
  s.proc.exitCode !== null || s.proc.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => s.proc.once("exit", r));

interface Published {
  base: string;
  product: { os: string; release: string; arch: string; variant: string };
  version: string;
  status: number;
  text: string;
  /** Time the publishing PUT took. */
  ms: number;
}

describe("replicas on one PostgreSQL and one S3 bucket", { timeout: 15 * 60_000 }, () => {
  let rgw: Rgw;
  let db: string;
  let blobsUrl: string;
  let env: NodeJS.ProcessEnv;
  let a: RunningServer;
  let b: RunningServer;
  let token: string;
  let work: string;
  let n = 0;

  const replica = (dataDir?: string): Promise<RunningServer> =>
    startServer({
      dataDir,
      keepData: true,
      // 20 pushes at once with one token hold up to 40 sessions.
      extraArgs: ["--db", db, "--blobs", blobsUrl, "--max-uploads-per-token", "100"],
      env,
    });

  /** Upload a fresh tiny image through `base` and publish it as a new version. */
  async function push(base: string, release = String((n % 4) + 1)): Promise<Published> {
    const i = n++;
    const product = { os: "tiny", release, arch: "amd64", variant: "default" };
    const version = `20240101_${String(i).padStart(4, "0")}`;
    const img = await buildTinyImage(join(work, `img-${i}`), {
      release,
      creationDate: 1704067200 + i,
      marker: `image ${i}`,
    });
    const meta = await uploadFile(base, token, img.files["lxd.tar.xz"]!);
    const root = await uploadFile(base, token, img.files["rootfs.tar.xz"]!);
    const body = JSON.stringify({
      files: [
        { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: meta },
        { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: root },
      ],
    });
    const t0 = Date.now();
    const r = await api(base, "PUT", versionPath(product, version), { token, body });
    return { base, product, version, status: r.status, text: r.text, ms: Date.now() - t0 };
  }

  const versionsIn = (imagesJson: string): string[] => {
    const doc = JSON.parse(imagesJson) as { products: Record<string, { versions: Record<string, unknown> }> };
    return Object.entries(doc.products).flatMap(([p, v]) => Object.keys(v.versions).map((x) => `${p}@${x}`));
  };
  const get = async (base: string, path: string) => {
    const res = await fetch(base + path);
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
  };
  const serialOf = async (base: string): Promise<number> => {
    const jws = (await get(base, "/streams/v1/statement.jws")).body.toString().trim();
    return Number(
      (JSON.parse(Buffer.from(jws.split(".")[1]!, "base64url").toString()) as { serial: number }).serial,
    );
  };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "lxhub-replicas-"));
    [rgw, db] = await Promise.all([ensureRgw(), createDatabase("replicas")]);
    const bucket = await createTestBucket(rgw, "replicas");
    blobsUrl = `s3://${bucket}/lxhub?endpoint=${encodeURIComponent(rgw.endpoint)}&region=${rgw.region}&forcePathStyle=true`;
    env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
    // Both start at once: one migrates and makes the first signing key, the other waits for it.
    [a, b] = await Promise.all([replica(), replica()]);
    const t = await lxhubCli(
      [
        "token",
        "create",
        "--data",
        a.dataDir,
        "--db",
        db,
        "--blobs",
        blobsUrl,
        "--scope",
        "admin",
        "--ttl",
        "1h",
      ],
      { env },
    );
    assert.equal(t.code, 0, t.stderr);
    token = t.stdout.trim();
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    for (const s of [a, b]) if (s) await rm(s.dataDir, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it("share one signing key and accept each other's tokens", async () => {
    const [ja, jb] = await Promise.all([
      get(a.httpUrl, "/.well-known/lxhub/jwks.json"),
      get(b.httpUrl, "/.well-known/lxhub/jwks.json"),
    ]);
    assert.deepEqual(JSON.parse(ja.body.toString()), JSON.parse(jb.body.toString()));
    for (const s of [a, b])
      assert.equal((await api(s.httpUrl, "GET", "/api/v1/products", { token })).status, 200);
  });

  it("20 concurrent pushes spread over both: both list all 20 in identical documents, files come from either", async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => push(i % 2 ? a.httpUrl : b.httpUrl)),
    );
    for (const r of results) assert.equal(r.status, 201, `${r.base} ${r.version}: ${r.text}`);
    const [ia, ib] = await Promise.all([
      get(a.httpUrl, "/streams/v1/images.json"),
      get(b.httpUrl, "/streams/v1/images.json"),
    ]);
    assert.equal(sha(ia.body), sha(ib.body), "both replicas serve the same images.json");
    const listed = versionsIn(ia.body.toString());
    for (const r of results) {
      const p = `${r.product.os}:${r.product.release}:${r.product.arch}:${r.product.variant}`;
      assert.ok(listed.includes(`${p}@${r.version}`), `${p}@${r.version} listed`);
    }
    assert.equal(await serialOf(a.httpUrl), await serialOf(b.httpUrl));
    const doc = JSON.parse(ia.body.toString()) as {
      products: Record<
        string,
        { versions: Record<string, { items: Record<string, { path: string; sha256: string }> }> }
      >;
    };
    for (const prod of Object.values(doc.products)) {
      for (const v of Object.values(prod.versions)) {
        for (const item of Object.values(v.items)) {
          for (const s of [a, b]) {
            const f = await get(s.httpUrl, `/${item.path}`);
            assert.equal(f.status, 200, `${s.httpUrl}/${item.path}`);
            assert.equal(sha(f.body), item.sha256);
          }
        }
      }
    }
  });

  it("an upload opened with a prefix on A, its chunks spread over A and B, committed on B, keeps the fingerprint hash it ran", async () => {
    const meta = Buffer.from(`metadata ${Date.now()}`);
    const root = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    const metaDigest = `sha256:${sha(meta)}`;
    const up = await api(a.httpUrl, "POST", "/api/v1/uploads", { token, body: undefined });
    assert.equal(up.status, 201, up.text);
    // The metadata blob first, then a session with it as the prefix.
    const loc0 = String(up.json?.location);
    await api(a.httpUrl, "PATCH", loc0, {
      token,
      body: meta,
      headers: { "content-range": `bytes 0-${meta.length - 1}/${meta.length}` },
    });
    assert.equal((await api(a.httpUrl, "PUT", `${loc0}?digest=${metaDigest}`, { token })).status, 201);
    const open = await api(a.httpUrl, "POST", `/api/v1/uploads?prefix=${metaDigest}`, { token });
    assert.equal(open.status, 201, open.text);
    const loc = String(open.json?.location);
    const parts = [root.subarray(0, 100_000), root.subarray(100_000, 200_001), root.subarray(200_001)];
    let at = 0;
    for (const [i, part] of parts.entries()) {
      const via = i === 1 ? b : a;
      const r = await api(via.httpUrl, "PATCH", loc, {
        token,
        body: part,
        headers: { "content-range": `bytes ${at}-${at + part.length - 1}/*` },
      });
      assert.equal(r.status, 202, r.text);
      at += part.length;
    }
    const rootDigest = `sha256:${sha(root)}`;
    assert.equal((await api(b.httpUrl, "PUT", `${loc}?digest=${rootDigest}`, { token })).status, 201);
    const client = new pg.Client({ connectionString: db });
    await client.connect();
    try {
      const row = await client.query<{ sha256: string }>(
        "select sha256 from combined_hashes where meta_digest = $1 and root_digest = $2",
        [metaDigest, rootDigest],
      );
      assert.equal(row.rows[0]?.sha256, sha(Buffer.concat([meta, root])));
    } finally {
      await client.end();
    }
  });

  it("a version published on A is served by B on its very next request (no older serial after a publish returns)", async () => {
    for (let i = 0; i < 5; i++) {
      const [from, to] = i % 2 ? [a, b] : [b, a];
      const r = await push(from.httpUrl);
      assert.equal(r.status, 201, r.text);
      const serialFrom = await serialOf(from.httpUrl);
      const t0 = Date.now();
      const images = await get(to.httpUrl, "/streams/v1/images.json");
      assert.ok(versionsIn(images.body.toString()).some((x) => x.endsWith(`@${r.version}`)));
      assert.ok((await serialOf(to.httpUrl)) >= serialFrom);
      assert.ok(Date.now() - t0 < 1000);
      const file = await get(
        to.httpUrl,
        `/images/tiny/${r.product.release}/amd64/default/${r.version}/rootfs.tar.xz`,
      );
      assert.equal(file.status, 200);
    }
  });

  it("a replica killed in the middle of a publish leaves no half version; the retry on the other replica publishes it", async (t) => {
    // Aim the kills across the time a publish takes here (measured first on A).
    // On a freshly started replica, as each kill below leaves it.
    await a.stop();
    a = await replica(a.dataDir);
    const probe = await push(a.httpUrl, "9");
    assert.equal(probe.status, 201);
    const tPublish = Math.max(10, probe.ms);
    t.diagnostic(`a publishing PUT took ${probe.ms} ms`);
    const outcomes = new Set<string>();
    for (const delay of [0, 0.5, 0.8, 1, 1.3, 1.7, 2.5, 4].map((f) => Math.round(f * tPublish))) {
      const i = n++;
      const release = "9";
      const product = { os: "tiny", release, arch: "amd64", variant: "default" };
      const version = `20240201_${String(i).padStart(4, "0")}`;
      const img = await buildTinyImage(join(work, `kill-${i}`), {
        release,
        creationDate: 1704067200 + i,
        marker: `k${i}`,
      });
      const meta = await uploadFile(a.httpUrl, token, img.files["lxd.tar.xz"]!);
      const root = await uploadFile(a.httpUrl, token, img.files["rootfs.tar.xz"]!);
      const body = JSON.stringify({
        files: [
          { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: meta },
          { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: root },
        ],
      });
      const inFlight = api(a.httpUrl, "PUT", versionPath(product, version), { token, body }).catch(
        (e: Error) => e,
      );
      await sleep(delay);
      a.kill();
      const first = await inFlight;
      await exited(a);
      // Whatever the kill cut, B shows the version whole or not at all.
      const images = (await get(b.httpUrl, "/streams/v1/images.json")).body.toString();
      const listed = versionsIn(images).includes(`tiny:${release}:amd64:default@${version}`);
      const api1 = await api(b.httpUrl, "GET", versionPath(product, version), { token });
      assert.equal(api1.status === 200, listed, `delay ${delay}: the API and the documents agree`);
      if (listed) {
        const f = await get(b.httpUrl, `/images/tiny/${release}/amd64/default/${version}/rootfs.tar.xz`);
        assert.equal(f.status, 200);
      }
      // The client retries through the other replica: created now, or already there.
      const retry = await api(b.httpUrl, "PUT", versionPath(product, version), { token, body });
      outcomes.add(listed ? "published before the kill" : "cut before the commit");
      t.diagnostic(
        `killed after ${delay} ms: first answer ${first instanceof Error ? "cut" : first.status}, listed ${listed}, retry ${retry.status}`,
      );
      assert.ok([200, 201].includes(retry.status), `delay ${delay}: ${retry.status} ${retry.text}`);
      if (!(first instanceof Error) && first.status === 201) assert.equal(retry.status, 200);
      const after = (await get(b.httpUrl, "/streams/v1/images.json")).body.toString();
      assert.ok(versionsIn(after).includes(`tiny:${release}:amd64:default@${version}`));
      a = await replica(a.dataDir);
      const [ia, ib] = await Promise.all([
        get(a.httpUrl, "/streams/v1/images.json"),
        get(b.httpUrl, "/streams/v1/images.json"),
      ]);
      assert.equal(sha(ia.body), sha(ib.body));
    }
    // Both sides of the commit were hit (the kills were spread over the publish).
    assert.equal(outcomes.size, 2, [...outcomes].join(", "));
  });

  it("the object store restarting during pushes and downloads: each request succeeds or fails cleanly, nothing half-visible", async (t) => {
    const before = JSON.parse((await get(a.httpUrl, "/streams/v1/images.json")).body.toString()) as {
      products: Record<
        string,
        { versions: Record<string, { items: Record<string, { path: string; sha256: string }> }> }
      >;
    };
    const files = Object.values(before.products)
      .flatMap((p) => Object.values(p.versions))
      .flatMap((v) => Object.values(v.items))
      .slice(0, 12);
    const downloads = files.map(async (f, i) => {
      await sleep(i * 40);
      try {
        const r = await get((i % 2 ? a : b).httpUrl, `/${f.path}`);
        return r.status === 200 ? (sha(r.body) === f.sha256 ? "ok" : "corrupt") : `status ${r.status}`;
      } catch {
        return "cut";
      }
    });
    const pushes = [0, 1, 2, 3].map(async (i) => {
      await sleep(i * 150);
      try {
        return await push((i % 2 ? a : b).httpUrl, "7");
      } catch (err) {
        return err as Error;
      }
    });
    // `lxhub push` retries what the server answers 503 (STORAGE_UNAVAILABLE, Retry-After): it
    // rides through the restart.
    const cliImage = await buildTinyImage(join(work, "cli-push"), {
      release: "7",
      creationDate: 1704067200 + 90_000,
      marker: "pushed by lxhub push during a gateway restart",
    });
    const cliPush = lxhubCli(["push", a.httpUrl, cliImage.dir, "--version", "20240301_0000"], {
      env: { LXHUB_TOKEN: token },
    });
    await sleep(200);
    await rgw.restartGateway();
    const got = await Promise.all(downloads);
    const cli = await cliPush;
    t.diagnostic(
      `lxhub push during the restart: exit ${cli.code}; ${cli.stderr.trim().split("\n").slice(-3).join(" | ")}`,
    );
    assert.equal(cli.code, 0, cli.stderr);
    assert.ok(!got.includes("corrupt"), got.join(", "));
    for (const g of got) assert.ok(["ok", "cut", "status 503"].includes(g), g);
    const pushed = await Promise.all(pushes);
    t.diagnostic(
      `downloads: ${got.join(", ")}; pushes: ${pushed.map((p) => (p instanceof Error ? p.message.slice(0, 60) : p.status)).join(", ")}`,
    );
    // After the gateway is back: both ready, identical documents, every listed file downloadable.
    for (const s of [a, b]) {
      for (let i = 0; (await api(s.httpUrl, "GET", "/readyz")).status !== 200; i++) {
        assert.ok(i < 100, "ready again after the gateway restart");
        await sleep(100);
      }
    }
    const [ia, ib] = await Promise.all([
      get(a.httpUrl, "/streams/v1/images.json"),
      get(b.httpUrl, "/streams/v1/images.json"),
    ]);
    assert.equal(sha(ia.body), sha(ib.body));
    for (const p of pushed) {
      if (p instanceof Error || p.status !== 201) continue;
      assert.ok(versionsIn(ia.body.toString()).some((x) => x.endsWith(`@${p.version}`)));
    }
    const doc = JSON.parse(ia.body.toString()) as typeof before;
    for (const v of Object.values(doc.products).flatMap((p) => Object.values(p.versions))) {
      for (const item of Object.values(v.items)) {
        const f = await get(b.httpUrl, `/${item.path}`);
        assert.equal(f.status, 200, item.path);
        assert.equal(sha(f.body), item.sha256);
      }
    }
    // A push after the restart works on either replica.
    for (const s of [a, b]) assert.equal((await push(s.httpUrl, "7")).status, 201);
  });

  it("with --blobs-redirect, image files are a 302 to a presigned object-store URL; documents are served directly", async () => {
    const c = await startServer({
      keepData: false,
      extraArgs: ["--db", db, "--blobs", blobsUrl, "--blobs-redirect", "60"],
      env,
    });
    try {
      const images = JSON.parse((await get(c.httpUrl, "/streams/v1/images.json")).body.toString()) as {
        products: Record<
          string,
          { versions: Record<string, { items: Record<string, { path: string; sha256: string }> }> }
        >;
      };
      const item = Object.values(Object.values(Object.values(images.products)[0]!.versions)[0]!.items)[0]!;
      const res = await fetch(`${c.httpUrl}/${item.path}`, { redirect: "manual" });
      assert.equal(res.status, 302);
      const location = res.headers.get("location") ?? "";
      assert.ok(location.startsWith(rgw.endpoint), location);
      assert.match(location, /X-Amz-Expires=60/);
      const bytes = Buffer.from(await (await fetch(location)).arrayBuffer());
      assert.equal(sha(bytes), item.sha256);
      // Ranges are the object store's business once redirected.
      const part = await fetch(location, { headers: { range: "bytes=0-9" } });
      assert.equal(part.status, 206);
      assert.equal((await part.arrayBuffer()).byteLength, 10);
      const doc = await fetch(`${c.httpUrl}/streams/v1/index.json`, { redirect: "manual" });
      assert.equal(doc.status, 200);
    } finally {
      await c.stop();
    }
  });

  it("/readyz fails while the object store is down; the documents are still served", async () => {
    await rgw.stopGateway();
    try {
      const r = await api(a.httpUrl, "GET", "/readyz");
      assert.equal(r.status, 503);
      assert.match(String(r.json?.reason), /blob store/);
      assert.equal((await get(a.httpUrl, "/streams/v1/index.json")).status, 200);
    } finally {
      await rgw.startGateway();
    }
    assert.equal((await api(a.httpUrl, "GET", "/readyz")).status, 200);
  });

  it("a replica that loses the database keeps serving the documents and files it has; /readyz says why", async () => {
    const pg = await ensurePostgres();
    const images = await get(b.httpUrl, "/streams/v1/images.json");
    assert.ok(versionsIn(images.body.toString()).length > 0);
    const doc = JSON.parse(images.body.toString()) as {
      products: Record<
        string,
        { versions: Record<string, { items: Record<string, { path: string; sha256: string }> }> }
      >;
    };
    const item = Object.values(Object.values(doc.products)[0]!.versions)[0]!.items;
    const file = Object.values(item)[0]!;
    pg.halt();
    try {
      const ready = await api(b.httpUrl, "GET", "/readyz");
      assert.equal(ready.status, 503);
      assert.match(String(ready.json?.reason), /catalog/);
      const again = await get(b.httpUrl, "/streams/v1/images.json");
      assert.equal(again.status, 200);
      assert.equal(sha(again.body), sha(images.body));
      const f = await get(b.httpUrl, `/${file.path}`);
      assert.equal(f.status, 200);
      assert.equal(sha(f.body), file.sha256);
    } finally {
      pg.resume();
    }
    for (let i = 0; (await api(b.httpUrl, "GET", "/readyz")).status !== 200; i++) {
      assert.ok(i < 100, "ready again once the database is back");
      await sleep(100);
    }
    assert.equal((await push(b.httpUrl, "8")).status, 201);
  });
});
