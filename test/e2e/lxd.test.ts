/**
 * End to end with the real LXD 5.0.2 client and daemon: two versions of a busybox image are
 * pushed to a running `lxhub serve` with `lxhub push`, then `lxc` must see them through the HTTPS
 * simplestreams endpoint (pinned self-signed certificate, simplestreams.md §1.2, §8): list both
 * versions with the aliases on the newest, report its fingerprint, export its exact bytes, and the
 * daemon must copy and launch it; `lxhub pull` must verify and unpack it. The whole suite runs
 * twice: on the embedded default (SQLite + a data folder) and on shared storage (a PostgreSQL
 * catalog and an S3 bucket on a real Ceph RADOS Gateway), as replicas run.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  assertBothVersionsListed,
  buildBusyboxVersions,
  BUSYBOX_ALIAS as ALIAS,
  BUSYBOX_PUSH_SCOPE as PUSH_SCOPE,
  type BusyboxVersion,
} from "../support/busybox-versions.js";
import type { BusyboxImage } from "../support/image-fixture.js";
import {
  addSimplestreamsRemote,
  ensureLxd,
  imageInfoFingerprint,
  listImages,
  lxc,
  lxcOk,
  LxdCleanup,
  TEST_PREFIX,
} from "../support/lxd.js";
import { createDatabase } from "../support/postgres.js";
import { createTestBucket, ensureRgw } from "../support/rgw.js";
import { lxhubCli, startServer, type RunningServer, type StartServerOptions } from "../support/server.js";
import { pullEnv } from "../integration/pull-support.js";

/** How the server under test keeps its records and bytes, and how a token is made for it. */
interface Storage {
  label: string;
  /** Image files are answered with 302s to the object store (--blobs-redirect). */
  redirects?: boolean;
  start(): Promise<{ options: StartServerOptions; tokenArgs: string[]; env: NodeJS.ProcessEnv }>;
}

const STORAGES: Storage[] = [
  { label: "SQLite + data folder", start: async () => ({ options: {}, tokenArgs: [], env: {} }) },
  {
    label: "PostgreSQL + S3 (radosgw), files redirected to presigned URLs",
    redirects: true,
    start: async () => {
      const [rgw, db] = await Promise.all([ensureRgw(), createDatabase("e2e")]);
      const bucket = await createTestBucket(rgw, "e2e");
      const blobs = `s3://${bucket}/images?endpoint=${encodeURIComponent(rgw.endpoint)}&region=${rgw.region}&forcePathStyle=true`;
      const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
      const args = ["--db", db, "--blobs", blobs];
      // Image files are answered with a 302 to the object store: LXD and lxhub pull follow it.
      return { options: { extraArgs: [...args, "--blobs-redirect", "600"], env }, tokenArgs: args, env };
    },
  },
];

for (const storage of STORAGES) endToEnd(storage);

function endToEnd(storage: Storage): void {
  describe(`lxc (LXD 5.0.2) against lxhub serve on ${storage.label}`, { timeout: 15 * 60_000 }, () => {
    // Unique per run: fresh fingerprints make the daemon really download, and concurrent or
    // crashed earlier runs cannot collide with this one.
    const run = randomBytes(4).toString("hex");
    const remote = `${TEST_PREFIX}${run}`;
    const container = `${TEST_PREFIX}c1-${run}`;
    const localAlias = `${TEST_PREFIX}img-${run}`;
    const cleanup = new LxdCleanup();
    let work: string;
    let server: RunningServer;
    let versions: [BusyboxVersion, BusyboxVersion];
    let v1: BusyboxImage;
    let v2: BusyboxImage;
    let fp2: string;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), `${TEST_PREFIX}e2e-`));
      cleanup.add(`work dir ${work}`, () => rm(work, { recursive: true, force: true }));
      await ensureLxd();

      versions = await buildBusyboxVersions(work, run);
      [v1, v2] = [versions[0].image, versions[1].image];
      fp2 = versions[1].fingerprint;

      const setup = await storage.start();
      server = await startServer(setup.options);
      cleanup.add("lxhub server", () => server.stop());
      const made = await lxhubCli(
        [
          "token",
          "create",
          "--data",
          server.dataDir,
          ...setup.tokenArgs,
          "--scope",
          PUSH_SCOPE,
          "--ttl",
          "1h",
        ],
        { env: setup.env },
      );
      assert.equal(made.code, 0, made.stderr);
      const token = made.stdout.trim();

      // Version keys come from metadata.yaml's creation_date (the push default); the token once
      // by flag, once from the environment.
      const push1 = await lxhubCli([
        "push",
        server.httpsUrl,
        v1.dir,
        "--token",
        token,
        "--ca",
        server.certFile,
      ]);
      assert.equal(push1.code, 0, `push v1 failed:\n${push1.stderr}\n${push1.stdout}`);
      const push2 = await lxhubCli(["push", server.httpsUrl, v2.dir, "--ca", server.certFile], {
        env: { LXHUB_TOKEN: token },
      });
      assert.equal(push2.code, 0, `push v2 failed:\n${push2.stderr}\n${push2.stdout}`);

      cleanup.remote(remote, server.httpsUrl);
      await addSimplestreamsRemote(remote, server.httpsUrl, server.certPem);
    });

    after(async () => {
      // Registered before anything is created on the daemon, so a failing step still cleans up.
      const problems = await cleanup.run();
      if (problems.length > 0) console.error(`cleanup problems:\n${problems.join("\n")}`);
    });

    it("lists both versions, the aliases only on the newest", async () => {
      assertBothVersionsListed(await listImages(remote), versions);
    });

    it("lxc image info resolves the alias to version 2's fingerprint", async () => {
      assert.equal(await imageInfoFingerprint(`${remote}:${ALIAS}`), fp2);
    });

    it("lxc image export returns exactly the pushed bytes", async () => {
      const out = join(work, "export");
      await mkdir(out);
      await lxcOk(["image", "export", `${remote}:${ALIAS}`, out]);
      const exported = await Promise.all((await readdir(out)).sort().map((f) => readFile(join(out, f))));
      assert.equal(exported.length, 2, "metadata and rootfs files");
      const meta = await readFile(v2.files["lxd.tar.xz"] ?? "");
      const root = await readFile(v2.files["rootfs.squashfs"] ?? "");
      assert.ok(
        exported.some((b) => b.equals(meta)),
        "exported metadata tarball equals lxd.tar.xz of v2",
      );
      assert.ok(
        exported.some((b) => b.equals(root)),
        "exported rootfs equals rootfs.squashfs of v2",
      );
    });

    it("the daemon copies the image into its local store", async () => {
      cleanup.image(fp2);
      await lxcOk(["image", "copy", `${remote}:${ALIAS}`, "local:", "--alias", localAlias], {
        timeoutMs: 300_000,
      });
      assert.equal(await imageInfoFingerprint(localAlias), fp2);
    });

    it("the daemon launches a container that runs version 2", async () => {
      cleanup.container(container);
      await lxcOk(["launch", `${remote}:${ALIAS}`, container], { timeoutMs: 300_000 });
      if (storage.redirects) {
        // The daemon really fetched the image files through the redirect.
        const redirected = server.logs.filter(
          (l) => l.includes('"status":302') && l.includes("/images/busybox/") && /"ua":"LXD/.test(l),
        );
        assert.ok(redirected.length > 0, "LXD was sent to the object store for the image files");
      }
      const t = await lxc(["exec", container, "--", "true"]);
      assert.equal(t.code, 0, `lxc exec true: ${t.stderr}`);
      const cat = await lxcOk(["exec", container, "--", "cat", "/etc/lxhub-marker"]);
      assert.equal(cat.stdout.trim(), v2.marker);
    });

    it("lxhub pull verifies the chain and unpacks version 2's rootfs", async () => {
      const { env } = await pullEnv(work);
      const add = await lxhubCli(
        ["remote", "add", "hub", server.httpsUrl, "--trust-on-first-use", "--ca", server.certFile],
        { env },
      );
      assert.equal(add.code, 0, add.stderr);
      const dest = join(work, "pulled");
      const r = await lxhubCli(["pull", "hub", ALIAS, dest], { env });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(fp2));
      assert.equal((await readFile(join(dest, "etc/lxhub-marker"), "utf8")).trim(), v2.marker);
    });
  });
}
