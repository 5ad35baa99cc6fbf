/**
 * `lxhub mirror` against real upstreams on loopback: a second lxhub (signed, reached as a remote
 * whose key was pinned, relayed through a counting server so every upstream byte is seen) copied
 * through the target's publish API, and a static tree laid out as the public servers lay theirs
 * out, copied straight into a data folder. Checks what users of a mirror rely on: exactly the
 * selected versions arrive with the upstream's fingerprints, a re-run moves no image byte, a new
 * upstream version moves only its own files, `--dry-run` changes nothing, `--keep` retires older
 * mirrored versions, and a corrupted upstream file is refused while the rest goes on.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildBusyboxImage, sha256File } from "../support/image-fixture.js";
import { writeStaticTree, type StaticVersion } from "../support/static-tree.js";
import { createDatabase } from "../support/postgres.js";
import { createTestBucket, ensureRgw } from "../support/rgw.js";
import { publishTinyImage } from "../support/tiny-image.js";
import { CLI_MAIN, createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { dirSource, pullEnv, TestServer, upstreamSource } from "./pull-support.js";

interface ProductsJson {
  products: Record<
    string,
    { aliases: string; versions: Record<string, { items: Record<string, Record<string, unknown>> }> }
  >;
}

async function products(base: string): Promise<ProductsJson["products"]> {
  const r = await fetch(`${base}/streams/v1/images.json`);
  if (r.status === 404) return {};
  assert.equal(r.status, 200);
  return ((await r.json()) as ProductsJson).products;
}

/** `product key → sorted version keys` of a products document. */
function shape(p: ProductsJson["products"]): Record<string, string[]> {
  return Object.fromEntries(
    Object.entries(p)
      .map(([k, v]) => [k, Object.keys(v.versions).sort()] as const)
      .sort(([a], [b]) => (a < b ? -1 : 1)),
  );
}

/** Fingerprints (combined hashes of the metadata item) by `product key@version`. */
function fingerprints(p: ProductsJson["products"]): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [k, prod] of Object.entries(p)) {
    for (const [v, ver] of Object.entries(prod.versions)) {
      const meta = Object.values(ver.items).find((i) => i.ftype === "lxd.tar.xz")!;
      out[`${k}@${v}`] = Object.fromEntries(Object.entries(meta).filter(([f]) => f.startsWith("combined_")));
    }
  }
  return out;
}

interface Report {
  added: { product: string; version: string }[];
  retired: { product: string; version: string }[];
  failed: { product: string; version: string; error: string }[];
  bytesDownloaded: number;
  plan: { add: { version: string; bytes: number }[]; bytes: number; present: number };
}

describe("lxhub mirror", { timeout: 240_000 }, () => {
  let work: string;
  let upstream: RunningServer;
  let target: RunningServer;
  let relay: TestServer;
  let env: NodeJS.ProcessEnv;
  let upToken: string;
  let toToken: string;

  /** Publishes a new tiny image as `tiny/<release>/amd64/default` `version` on the upstream. */
  async function publishUpstream(release: string, version: string): Promise<void> {
    await publishTinyImage(upstream.httpUrl, upToken, join(work, `img-${release}-${version}`), version, {
      release,
      distinct: true,
      aliases: [`tiny/${release}`],
    });
  }

  async function mirrorTo(...extra: string[]) {
    return lxhubCli(["mirror", "up", "--to", target.httpUrl, "--token", toToken, ...extra], { env });
  }

  async function mirrorJson(...extra: string[]): Promise<{ code: number; report: Report; stderr: string }> {
    const r = await mirrorTo("--json", ...extra);
    let report: Report;
    try {
      report = JSON.parse(r.stdout) as Report;
    } catch {
      throw new Error(`mirror printed no JSON report (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
    return { code: r.code, report, stderr: r.stderr };
  }

  /** Upstream file requests (not documents) since `from`. */
  const fileRequests = (from: number) =>
    relay.log.slice(from).filter((r) => r.path.startsWith("images/") || r.path.startsWith("blobs/"));

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "lxhub-mirror-"));
    [upstream, target] = await Promise.all([startServer(), startServer()]);
    upToken = await createToken(upstream.dataDir, "admin");
    toToken = await createToken(target.dataDir, "admin");
    for (const [release, version] of [
      ["1", "20240101_0000"],
      ["1", "20240201_0000"],
      ["1", "20240301_0000"],
      ["2", "20240115_0000"],
    ] as const) {
      await publishUpstream(release, version);
    }
    relay = new TestServer(upstreamSource(upstream.httpUrl));
    await relay.start();
    ({ env } = await pullEnv(work));
    const add = await lxhubCli(["remote", "add", "up", relay.url, "--trust-on-first-use"], { env });
    assert.equal(add.code, 0, add.stderr);
  });

  after(async () => {
    await relay?.stop();
    await Promise.all([upstream?.stop(), target?.stop()]);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("--dry-run lists what it would add and the bytes to move, and changes nothing", async () => {
    const before = await fetch(`${target.httpUrl}/streams/v1/images.json`).then((r) => r.text());
    const mark = relay.log.length;
    const r = await mirrorTo("--dry-run");
    assert.equal(r.code, 0, r.stderr);
    const plus = r.stdout.split("\n").filter((l) => l.startsWith("+ "));
    assert.deepEqual(
      plus.map((l) => l.split(/\s+/).slice(1, 3).join(" ")),
      [
        "tiny/1/amd64/default 20240101_0000",
        "tiny/1/amd64/default 20240201_0000",
        "tiny/1/amd64/default 20240301_0000",
        "tiny/2/amd64/default 20240115_0000",
      ],
    );
    const up = await products(upstream.httpUrl);
    let total = 0;
    for (const p of Object.values(up))
      for (const v of Object.values(p.versions))
        for (const i of Object.values(v.items)) if (i.ftype !== "incus.tar.xz") total += i.size as number;
    assert.match(r.stdout, new RegExp(`move [^(]+\\(${total} bytes\\)`));
    assert.equal(await fetch(`${target.httpUrl}/streams/v1/images.json`).then((x) => x.text()), before);
    assert.deepEqual(fileRequests(mark), [], "a dry run downloads no image file");
  });

  it("filters and --keep select exactly the expected versions", async () => {
    const r = await mirrorJson("--dry-run", "--filter", "release~^1$", "--keep", "2");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      r.report.plan.add.map((a) => a.version),
      ["20240201_0000", "20240301_0000"],
    );
    const none = await mirrorJson("--dry-run", "--filter", "os=tiny", "--filter", "arch!=amd64");
    assert.deepEqual(none.report.plan.add, []);
    const bad = await mirrorTo("--filter", "colour=red");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /unknown key "colour"/);
  });

  it("copies every version through the publish API with the upstream's fingerprints", async () => {
    const r = await mirrorJson();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.report.added.length, 4);
    const up = await products(upstream.httpUrl);
    const got = await products(target.httpUrl);
    assert.deepEqual(shape(got), shape(up));
    assert.deepEqual(fingerprints(got), fingerprints(up));
    assert.equal(got["tiny:1:amd64:default"]?.aliases, up["tiny:1:amd64:default"]?.aliases);
  });

  it("a re-run against the unchanged upstream moves no image byte", async () => {
    const mark = relay.log.length;
    const r = await mirrorJson();
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.report.added, []);
    assert.equal(r.report.plan.present, 4);
    assert.equal(r.report.bytesDownloaded, 0);
    assert.deepEqual(fileRequests(mark), [], "no image file was requested upstream");
  });

  it("a new upstream version moves only its own files; --keep retires older mirrored versions", async () => {
    await publishUpstream("1", "20240401_0000");
    const mark = relay.log.length;
    const r = await mirrorJson("--keep", "2");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      r.report.added.map((a) => a.version),
      ["20240401_0000"],
    );
    assert.deepEqual(
      fileRequests(mark)
        .map((x) => x.path)
        .sort(),
      [
        "images/tiny/1/amd64/default/20240401_0000/lxd.tar.xz",
        "images/tiny/1/amd64/default/20240401_0000/rootfs.tar.xz",
      ],
    );
    assert.deepEqual(r.report.retired.map((x) => x.version).sort(), ["20240101_0000", "20240201_0000"]);
    assert.deepEqual(shape(await products(target.httpUrl)), {
      "tiny:1:amd64:default": ["20240301_0000", "20240401_0000"],
      "tiny:2:amd64:default": ["20240115_0000"],
    });
  });

  it("--db and --blobs copy straight into shared storage (PostgreSQL + S3) that replicas serve", async () => {
    const [rgw, db] = await Promise.all([ensureRgw(), createDatabase("mirror")]);
    const bucket = await createTestBucket(rgw, "mirror");
    const blobs = `s3://${bucket}/m?endpoint=${encodeURIComponent(rgw.endpoint)}&region=${rgw.region}&forcePathStyle=true`;
    const s3env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
    const m = await lxhubCli(["mirror", "up", "--db", db, "--blobs", blobs, "--filter", "release=2"], {
      env: { ...env, ...s3env },
    });
    assert.equal(m.code, 0, m.stderr + m.stdout);
    const replica = await startServer({ extraArgs: ["--db", db, "--blobs", blobs], env: s3env });
    try {
      const got = await products(replica.httpUrl);
      assert.deepEqual(shape(got), { "tiny:2:amd64:default": ["20240115_0000"] });
      const item = Object.values(got["tiny:2:amd64:default"]!.versions["20240115_0000"]!.items)[0]!;
      const file = await fetch(`${replica.httpUrl}/${item.path as string}`);
      assert.equal(file.status, 200);
      assert.equal((await file.arrayBuffer()).byteLength, item.size);
    } finally {
      await replica.stop();
    }
  });

  describe("from a static tree laid out as the public servers lay theirs out", () => {
    let tree: string;
    let statik: TestServer;
    let versions: StaticVersion[];
    let data: string;
    let partSize = 0;

    before(async () => {
      tree = join(work, "tree");
      const images = [];
      for (const serial of ["20240101_0000", "20240201_0000", "20240301_0000"]) {
        images.push(
          await buildBusyboxImage(join(work, `bb-${serial}`), {
            serial,
            marker: `static ${serial}`,
            formats: ["squashfs", "tar.xz"],
          }),
        );
      }
      versions = await writeStaticTree(
        tree,
        {
          os: "busybox",
          release: "1.36",
          variant: "default",
          aliases: ["busybox/1.36/default", "busybox/1.36"],
        },
        images,
        { extras: true },
      );
      statik = new TestServer(dirSource(tree));
      await statik.start();
      data = join(work, "direct");
    });

    after(async () => {
      await statik?.stop();
    });

    it("an interrupted sync keeps what it downloaded; the next run resumes it", async () => {
      const file = `${versions[0]!.dir}/rootfs.squashfs`;
      const hold = statik.holdAfter(file, 16 * 1024);
      const child = spawn(process.execPath, [CLI_MAIN, "mirror", statik.url, "--data", data, "--jobs", "1"], {
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stderr = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      child.stdout.resume();
      await hold.reached;
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      child.kill("SIGTERM");
      const code = await exited;
      hold.release();
      assert.equal(code, 1);
      assert.match(stderr, /interrupted \(SIGTERM\)/);
      const part = join(
        env.XDG_CACHE_HOME!,
        "lxhub/blobs/sha256",
        `${await sha256File(join(tree, file))}.part`,
      );
      partSize = (await stat(part)).size;
      assert.ok(partSize >= 16 * 1024, `the partial download is kept (${partSize} bytes)`);
    });

    it("refuses a corrupted file, publishes the rest, and reports the error", async () => {
      const bad = `${versions[2]!.dir}/rootfs.squashfs`;
      const good = await dirSource(tree)(bad);
      const flipped = Buffer.from(good!);
      const at = flipped.length >> 1;
      flipped[at] = (flipped[at] ?? 0) ^ 0xff;
      statik.overrides.set(bad, flipped);
      // No statement upstream and no --key: read as a plain simplestreams server, with a notice.
      const r = await lxhubCli(["mirror", statik.url, "--data", data], { env });
      assert.equal(r.code, 1, "a failed version makes the exit status non-zero");
      assert.match(r.stderr, /serves no signed statement/);
      assert.match(r.stdout, /^\+ busybox\/1\.36\/amd64\/default 20240101_00:00$/m);
      assert.match(r.stdout, /^\+ busybox\/1\.36\/amd64\/default 20240201_00:00$/m);
      assert.match(r.stdout, /^! busybox\/1\.36\/amd64\/default 20240301_00:00: .*sha256/m);
      assert.match(r.stdout, /left out: .*lxd_combined\.tar\.gz: unified tarball/);
      assert.match(r.stderr, /1 version\(s\) not mirrored/);
      // The download the interrupted run left was resumed, not started again.
      const file = `${versions[0]!.dir}/rootfs.squashfs`;
      assert.ok(
        statik.log.some((x) => x.path === file && x.range === `bytes=${partSize}-`),
        `a ranged request from byte ${partSize}: ${JSON.stringify(statik.log.filter((x) => x.path === file))}`,
      );
    });

    it("a re-run fetches only the refused version; the copy serves every real-world item", async () => {
      statik.overrides.clear();
      const mark = statik.log.length;
      const r = await lxhubCli(["mirror", statik.url, "--data", data, "--json"], { env });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const report = JSON.parse(r.stdout) as Report;
      assert.deepEqual(
        report.added.map((a) => a.version),
        ["20240301_00:00"],
      );
      const fetched = statik.log
        .slice(mark)
        .map((x) => x.path)
        .filter((p) => p.startsWith("images/"));
      assert.ok(fetched.length > 0);
      for (const p of fetched) assert.ok(p.startsWith(versions[2]!.dir), `only version 3 files: ${p}`);

      const server = await startServer({ dataDir: data, keepData: true });
      try {
        const got = await products(server.httpUrl);
        const product = got["busybox:1.36:amd64:default"];
        assert.ok(product, `mirrored product in ${Object.keys(got).join(", ")}`);
        assert.equal(product.aliases, "busybox/1.36/default,busybox/1.36");
        assert.deepEqual(
          Object.keys(product.versions).sort(),
          versions.map((v) => v.key),
        );
        for (const [i, v] of versions.entries()) {
          const items: Record<string, unknown>[] = Object.values(product.versions[v.key]!.items);
          const ftypes = items.map((x) => x.ftype as string).sort();
          const expected = ["disk-kvm.img", "incus.tar.xz", "lxd.tar.xz", "root.tar.xz", "squashfs"];
          if (i > 0) expected.push("squashfs.vcdiff");
          assert.deepEqual(ftypes, expected.sort(), v.key);
          const meta = items.find((x) => x.ftype === "lxd.tar.xz")!;
          assert.equal(meta.combined_squashfs_sha256, v.fingerprints.squashfs);
          assert.equal(meta.combined_rootxz_sha256, v.fingerprints["root.tar.xz"]);
          assert.equal(meta["combined_disk-kvm-img_sha256"], v.fingerprints["disk-kvm.img"]);
          const delta = items.find((x) => x.ftype === "squashfs.vcdiff");
          if (i > 0) assert.equal(delta?.delta_base, versions[i - 1]!.key);
          // Every listed file downloads with the listed bytes.
          for (const item of items) {
            const res = await fetch(`${server.httpUrl}/${item.path as string}`, { method: "HEAD" });
            assert.equal(res.status, 200, item.path as string);
            assert.equal(Number(res.headers.get("content-length")), item.size);
          }
        }
      } finally {
        await server.stop();
      }
    });
  });
});
