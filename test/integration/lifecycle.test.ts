/**
 * Image lifecycle on a real server: retention after each publish (`--retain`), retired files
 * downloadable through the grace period and collected after it, `lxhub prune` and `lxhub gc` on a
 * data folder, and garbage collection racing twenty concurrent publishes without losing one.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import Database from "better-sqlite3";
import { api, digestOf, uploadBlob, uploadFile, versionPath } from "../support/api.js";
import { createDatabase } from "../support/postgres.js";
import { createTestBucket, ensureRgw } from "../support/rgw.js";
import { buildTinyImage, publishTinyImage } from "../support/tiny-image.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";

interface Item {
  ftype: string;
  path: string;
  sha256: string;
  size: number;
}

async function liveVersions(base: string): Promise<Record<string, Record<string, Item[]>>> {
  const r = await fetch(`${base}/streams/v1/images.json`);
  const doc = (await r.json()) as {
    products: Record<string, { versions: Record<string, { items: Record<string, Item> }> }>;
  };
  return Object.fromEntries(
    Object.entries(doc.products).map(([p, prod]) => [
      p,
      Object.fromEntries(Object.entries(prod.versions).map(([v, ver]) => [v, Object.values(ver.items)])),
    ]),
  );
}

async function status(base: string, path: string): Promise<number> {
  const r = await fetch(`${base}/${path}`);
  await r.arrayBuffer();
  return r.status;
}

const V = ["20240101_0000", "20240201_0000", "20240301_0000", "20240401_0000"];

describe("retention and garbage collection", { timeout: 240_000 }, () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "lxhub-lifecycle-"));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  describe("lxhub serve --retain", () => {
    let server: RunningServer;
    let token: string;
    before(async () => {
      server = await startServer({
        extraArgs: ["--retain", "tiny/*:keep=2", "--gc-interval", "0"],
        keepData: true,
      });
      token = await createToken(server.dataDir, "admin");
    });
    after(async () => {
      await server?.stop();
      if (server) await rm(server.dataDir, { recursive: true, force: true });
    });

    it("keeps the newest two after each publish; retired files stay downloadable until collected", async () => {
      const paths = new Map<string, string[]>();
      for (const v of V) {
        const img = await publishTinyImage(server.httpUrl, token, join(work, `r-${v}`), v, {
          distinct: true,
        });
        paths.set(v, [
          `images/tiny/1/amd64/default/${v}/lxd.tar.xz`,
          `images/tiny/1/amd64/default/${v}/rootfs.tar.xz`,
        ]);
        assert.ok(img.digests.root);
        const live = Object.keys((await liveVersions(server.httpUrl))["tiny:1:amd64:default"] ?? {});
        assert.ok(live.length <= 2, `after ${v}: ${live.join(", ")}`);
        assert.ok(live.includes(v), `the version just published is live (${live.join(", ")})`);
      }
      assert.deepEqual(Object.keys((await liveVersions(server.httpUrl))["tiny:1:amd64:default"]!).sort(), [
        V[2],
        V[3],
      ]);
      // Retired versions left the documents but their files are still served (clients holding an older index).
      for (const v of [V[0]!, V[1]!])
        for (const p of paths.get(v)!) assert.equal(await status(server.httpUrl, p), 200, p);

      // A collection within the grace period frees nothing a retired version names.
      const kept = await api(server.httpUrl, "POST", "/api/v1/gc", {
        token,
        body: JSON.stringify({ grace: "1h" }),
      });
      assert.equal(kept.status, 200, kept.text);
      assert.deepEqual(kept.json?.freed, []);
      const dry = await api(server.httpUrl, "POST", "/api/v1/gc", {
        token,
        body: JSON.stringify({ grace: "0", dry_run: true }),
      });
      assert.equal((dry.json?.freed as unknown[]).length, 4, "two files of each retired version");
      assert.equal(await status(server.httpUrl, paths.get(V[0]!)![1]!), 200, "a dry run deletes nothing");
      const gc = await api(server.httpUrl, "POST", "/api/v1/gc", {
        token,
        body: JSON.stringify({ grace: "0" }),
      });
      assert.equal(gc.status, 200, gc.text);
      assert.equal((gc.json?.freed as unknown[]).length, 4);
      for (const v of [V[0]!, V[1]!])
        for (const p of paths.get(v)!) assert.equal(await status(server.httpUrl, p), 404, p);
      for (const v of [V[2]!, V[3]!])
        for (const p of paths.get(v)!) assert.equal(await status(server.httpUrl, p), 200, p);

      const db = new Database(join(server.dataDir, "catalog.sqlite"), { readonly: true });
      try {
        const rows = db
          .prepare("SELECT target, detail FROM audit_log WHERE action = 'version.retire' ORDER BY id")
          .all() as {
          target: string;
          detail: string;
        }[];
        assert.deepEqual(
          rows.map((r) => r.target),
          [`tiny:1:amd64:default@${V[0]}`, `tiny:1:amd64:default@${V[1]}`],
        );
        assert.match(rows[0]!.detail, /keep the newest 2/);
      } finally {
        db.close();
      }
    });

    it("keeps the metadata blob an open upload session hashes as its prefix, until the session ends", async () => {
      const meta = randomBytes(1500);
      assert.equal((await uploadBlob(server.httpUrl, token, meta)).status, 201);
      const open = await api(server.httpUrl, "POST", `/api/v1/uploads?prefix=${digestOf(meta)}`, { token });
      assert.equal(open.status, 201, open.text);
      const gc = async () => {
        const r = await api(server.httpUrl, "POST", "/api/v1/gc", {
          token,
          body: JSON.stringify({ grace: "0" }),
        });
        assert.equal(r.status, 200, r.text);
        return (r.json?.freed as { digest: string }[]).map((f) => f.digest);
      };
      assert.ok(!(await gc()).includes(digestOf(meta)), "kept while the session is open");
      assert.equal((await api(server.httpUrl, "DELETE", String(open.json?.location), { token })).status, 204);
      assert.ok((await gc()).includes(digestOf(meta)), "collected once it ended");
    });

    it("POST /api/v1/prune applies given policies, and a dry run changes nothing", async () => {
      const dry = await api(server.httpUrl, "POST", "/api/v1/prune", {
        token,
        body: JSON.stringify({ dry_run: true, policies: [{ product: "tiny/1/*", keep: 1 }] }),
      });
      assert.equal(dry.status, 200, dry.text);
      assert.deepEqual(dry.json?.retired, [
        { product: "tiny/1/amd64/default", version: V[2], reason: "retention tiny/1/*: keep the newest 1" },
      ]);
      assert.equal(Object.keys((await liveVersions(server.httpUrl))["tiny:1:amd64:default"]!).length, 2);
      const push = await createToken(server.dataDir, "push:*");
      const forbidden = await api(server.httpUrl, "POST", "/api/v1/prune", { token: push, body: "{}" });
      assert.equal(forbidden.status, 403);
    });
  });

  describe("lxhub prune and lxhub gc on a data folder", () => {
    it("retire, then collect the retired files and an abandoned upload", async () => {
      const server = await startServer({ keepData: true });
      const token = await createToken(server.dataDir, "admin");
      for (const v of V.slice(0, 3))
        await publishTinyImage(server.httpUrl, token, join(work, `c-${v}`), v, { distinct: true });
      const abandoned = randomBytes(4096);
      assert.equal((await uploadBlob(server.httpUrl, token, abandoned)).status, 201);
      await server.stop();
      const data = ["--data", server.dataDir];
      try {
        const dry = await lxhubCli(["prune", ...data, "--keep", "1", "--dry-run"]);
        assert.equal(dry.code, 0, dry.stderr);
        assert.match(dry.stdout, new RegExp(`^- tiny/1/amd64/default ${V[0]}$`, "m"));
        assert.match(dry.stdout, /dry run: would retire 2 version/);
        const real = await lxhubCli(["prune", ...data, "--keep", "1"]);
        assert.equal(real.code, 0, real.stderr);
        assert.match(real.stdout, /retired 2 version/);
        const young = await lxhubCli(["gc", ...data, "--json"]);
        assert.equal(young.code, 0, young.stderr);
        assert.deepEqual(
          (JSON.parse(young.stdout) as { freed: unknown[] }).freed,
          [],
          "all within the default 24 h grace",
        );
        const gc = await lxhubCli(["gc", ...data, "--grace", "0"]);
        assert.equal(gc.code, 0, gc.stderr);
        assert.match(gc.stdout, /^freed 5 blob\(s\)/m, "two versions' two files and the abandoned upload");
        assert.match(gc.stdout, new RegExp(digestOf(abandoned)));
      } finally {
        const again = await startServer({ dataDir: server.dataDir, keepData: true });
        assert.deepEqual(Object.keys((await liveVersions(again.httpUrl))["tiny:1:amd64:default"]!), [V[2]]);
        assert.equal(await status(again.httpUrl, `images/tiny/1/amd64/default/${V[0]}/rootfs.tar.xz`), 404);
        assert.equal(await status(again.httpUrl, `images/tiny/1/amd64/default/${V[2]}/rootfs.tar.xz`), 200);
        await again.stop();
        await rm(server.dataDir, { recursive: true, force: true });
      }
    });
  });

  describe("on PostgreSQL + S3 (radosgw)", () => {
    it("collects a deleted version's files and an abandoned upload from the bucket", async () => {
      const [rgw, db] = await Promise.all([ensureRgw(), createDatabase("lifecycle")]);
      const bucket = await createTestBucket(rgw, "lifecycle");
      const blobs = `s3://${bucket}/gc?endpoint=${encodeURIComponent(rgw.endpoint)}&region=${rgw.region}&forcePathStyle=true`;
      const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
      const server = await startServer({
        extraArgs: ["--db", db, "--blobs", blobs, "--gc-interval", "0"],
        env,
      });
      try {
        const made = await lxhubCli(
          ["token", "create", "--data", server.dataDir, "--db", db, "--blobs", blobs, "--scope", "admin"],
          { env },
        );
        assert.equal(made.code, 0, made.stderr);
        const token = made.stdout.trim();
        for (const v of V.slice(0, 2))
          await publishTinyImage(server.httpUrl, token, join(work, `s3-${v}`), v, { distinct: true });
        const abandoned = randomBytes(3000);
        assert.equal((await uploadBlob(server.httpUrl, token, abandoned)).status, 201);
        const del = await api(
          server.httpUrl,
          "DELETE",
          versionPath({ os: "tiny", release: "1", arch: "amd64", variant: "default" }, V[0]!),
          { token },
        );
        assert.equal(del.status, 204, del.text);
        const gc = await api(server.httpUrl, "POST", "/api/v1/gc", {
          token,
          body: JSON.stringify({ grace: "0" }),
        });
        assert.equal(gc.status, 200, gc.text);
        const freed = (gc.json?.freed as { digest: string }[]).map((f) => f.digest);
        assert.equal(freed.length, 3, JSON.stringify(gc.json));
        assert.ok(freed.includes(digestOf(abandoned)));
        assert.equal(await status(server.httpUrl, `images/tiny/1/amd64/default/${V[0]}/rootfs.tar.xz`), 404);
        assert.equal(await status(server.httpUrl, `images/tiny/1/amd64/default/${V[1]}/rootfs.tar.xz`), 200);
      } finally {
        await server.stop();
      }
    });
  });

  describe("garbage collection racing publishes", () => {
    let server: RunningServer;
    let token: string;
    before(async () => {
      server = await startServer({ extraArgs: ["--gc-interval", "0", "--max-uploads-per-token", "64"] });
      token = await createToken(server.dataDir, "admin");
    });
    after(() => server?.stop());

    it("twenty concurrent publishes lose nothing, and everything unreferenced is freed", async () => {
      const GRACE = 8;
      // Old garbage: abandoned uploads, and the files of a deleted version.
      const abandoned: string[] = [];
      const bytesOf = new Map<string, Buffer>();
      for (let i = 0; i < 10; i++) {
        const b = randomBytes(2048 + i);
        assert.equal((await uploadBlob(server.httpUrl, token, b)).status, 201);
        abandoned.push(digestOf(b));
        bytesOf.set(digestOf(b), b);
      }
      await publishTinyImage(server.httpUrl, token, join(work, "gone"), "20230101_0000", {
        release: "9",
        distinct: true,
      });
      const del = await api(
        server.httpUrl,
        "DELETE",
        versionPath({ os: "tiny", release: "9", arch: "amd64", variant: "default" }, "20230101_0000"),
        { token },
      );
      assert.equal(del.status, 204, del.text);
      await new Promise((r) => setTimeout(r, (GRACE + 0.5) * 1000));

      // Five publishers reuse an old abandoned blob as their root. As `lxhub push` does, they ask
      // for it first (HEAD) and skip its upload when the server has it, else upload it.
      const reused = abandoned.slice(0, 5);
      const publish = async (i: number): Promise<void> => {
        let root: string | undefined;
        if (i < reused.length) {
          root = reused[i]!;
          const head = await fetch(`${server.httpUrl}/api/v1/blobs/${root}`, { method: "HEAD" });
          if (head.status === 404)
            assert.equal((await uploadBlob(server.httpUrl, token, bytesOf.get(root)!)).status, 201);
          else assert.equal(head.status, 200);
        }
        const version = "20250101_0000";
        const img = await buildTinyImage(join(work, `race-${i}`), {
          release: "race",
          creationDate: 1735689600 + i * 86400,
          marker: `race ${i}`,
        });
        const meta = await uploadFile(server.httpUrl, token, img.files["lxd.tar.xz"]!);
        root ??= await uploadFile(server.httpUrl, token, img.files["rootfs.tar.xz"]!);
        const r = await api(
          server.httpUrl,
          "PUT",
          versionPath({ os: "tiny", release: `r${i}`, arch: "amd64", variant: "default" }, version),
          {
            token,
            body: JSON.stringify({
              files: [
                { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: meta },
                { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: root },
              ],
            }),
          },
        );
        assert.equal(r.status, 201, `publish ${i}: ${r.text}`);
      };
      let collecting = true;
      const collections: number[] = [];
      const collector = (async () => {
        while (collecting) {
          const r = await api(server.httpUrl, "POST", "/api/v1/gc", {
            token,
            body: JSON.stringify({ grace: `${GRACE}s` }),
          });
          assert.equal(r.status, 200, r.text);
          collections.push((r.json?.freed as unknown[]).length);
        }
      })();
      try {
        await Promise.all(Array.from({ length: 20 }, (_, i) => publish(i)));
      } finally {
        collecting = false;
        await collector;
      }
      assert.ok(collections.length >= 2, `collections ran during the publishes (${collections.length})`);

      // Every published version downloads and verifies.
      const live = await liveVersions(server.httpUrl);
      const race = Object.entries(live).filter(([p]) => p.startsWith("tiny:r"));
      assert.equal(race.length, 20);
      for (const [, versions] of race) {
        for (const items of Object.values(versions)) {
          for (const item of items) {
            const body = Buffer.from(await (await fetch(`${server.httpUrl}/${item.path}`)).arrayBuffer());
            assert.equal(createHash("sha256").update(body).digest("hex"), item.sha256, item.path);
          }
        }
      }
      // And what nothing references is gone: the unused abandoned blobs and the deleted version's files.
      for (const d of abandoned.slice(reused.length)) {
        assert.equal((await fetch(`${server.httpUrl}/api/v1/blobs/${d}`, { method: "HEAD" })).status, 404, d);
      }
      assert.equal(
        await status(server.httpUrl, "images/tiny/9/amd64/default/20230101_0000/rootfs.tar.xz"),
        404,
      );
      const rest = await api(server.httpUrl, "POST", "/api/v1/gc", {
        token,
        body: JSON.stringify({ grace: "0", dry_run: true }),
      });
      assert.deepEqual(rest.json?.freed, [], "only blobs live versions name are left");
    });
  });
});
