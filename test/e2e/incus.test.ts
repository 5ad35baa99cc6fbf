/**
 * End to end with the real Incus 6.0 client and daemon (Debian bookworm-backports): two versions
 * of a busybox image are pushed to a running `lxhub serve` with `lxhub push`, then `incus` must see
 * them through the HTTPS simplestreams endpoint (pinned self-signed certificate,
 * simplestreams.md §1.2): list both versions with the aliases on the newest, resolve the alias to
 * version 2, and the daemon must copy and launch it. Incus reads only `incus.tar.xz` metadata
 * items (simplestreams.md §0.1, §3.1), so everything here goes through the item lxhub publishes
 * under that ftype next to `lxd.tar.xz`; the server's access log shows Incus fetching it.
 *
 * The embedded default storage (SQLite + a data folder) is enough here: the LXD suite
 * (test/e2e/lxd.test.ts) covers PostgreSQL + S3 with the same HTTP answers.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  assertBothVersionsListed,
  buildBusyboxVersions,
  BUSYBOX_ALIAS as ALIAS,
  BUSYBOX_PUSH_SCOPE,
  type BusyboxVersion,
} from "../support/busybox-versions.js";
import { sha256File } from "../support/image-fixture.js";
import { ensureIncus, INCUS, incus, IncusCleanup, incusOk, TEST_PREFIX } from "../support/incus.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";

/** One item of a published products file (the fields read here). */
interface Item {
  ftype: string;
  path: string;
  sha256: string;
  combined_squashfs_sha256?: string;
}

describe("incus (Incus 6.0) against lxhub serve", { timeout: 15 * 60_000 }, () => {
  // Unique per run: fresh fingerprints make the daemon really download, and concurrent or
  // crashed earlier runs cannot collide with this one.
  const run = randomBytes(4).toString("hex");
  const remote = `${TEST_PREFIX}incus-${run}`;
  const container = `${TEST_PREFIX}incus-c1-${run}`;
  const localAlias = `${TEST_PREFIX}incus-img-${run}`;
  const cleanup = new IncusCleanup();
  let work: string;
  let server: RunningServer;
  let versions: [BusyboxVersion, BusyboxVersion];
  /** Version 2's `incus.tar.xz` item as the server publishes it. */
  let incusItem: Item;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), `${TEST_PREFIX}incus-e2e-`));
    cleanup.add(`work dir ${work}`, () => rm(work, { recursive: true, force: true }));
    await ensureIncus();

    versions = await buildBusyboxVersions(work, run);

    server = await startServer();
    cleanup.add("lxhub server", () => server.stop());
    const token = await createToken(server.dataDir, BUSYBOX_PUSH_SCOPE);
    for (const { image: v } of versions) {
      const push = await lxhubCli([
        "push",
        server.httpsUrl,
        v.dir,
        "--token",
        token,
        "--ca",
        server.certFile,
      ]);
      assert.equal(push.code, 0, `push ${v.serial} failed:\n${push.stderr}\n${push.stdout}`);
    }

    // Registered before the remote exists, so a failing step still cleans up.
    cleanup.remote(remote, server.httpsUrl);
    await INCUS.addSimplestreamsRemote(remote, server.httpsUrl, server.certPem);
  });

  after(async () => {
    const problems = await cleanup.run();
    if (problems.length > 0) console.error(`cleanup problems:\n${problems.join("\n")}`);
  });

  it("publishes each version's metadata as an incus.tar.xz item, paired like the lxd.tar.xz one", async () => {
    const index = (await (await fetch(`${server.httpUrl}/streams/v1/index.json`)).json()) as {
      index: Record<string, { path: string }>;
    };
    const paths = Object.values(index.index).map((e) => e.path);
    assert.equal(paths.length, 1, `one products file: ${paths}`);
    const products = (await (await fetch(`${server.httpUrl}/${paths[0]}`)).json()) as {
      products: Record<string, { versions: Record<string, { items: Record<string, Item> }> }>;
    };
    const published = new Map(Object.values(products.products).flatMap((p) => Object.entries(p.versions)));
    assert.deepEqual([...published.keys()].sort(), versions.map((v) => v.serial).sort());
    for (const v of versions) {
      const items = Object.values(published.get(v.serial)?.items ?? {});
      const ofType = (ftype: string) => items.filter((i) => i.ftype === ftype);
      assert.equal(ofType("incus.tar.xz").length, 1, `${v.serial}: one incus.tar.xz item`);
      const [item] = ofType("incus.tar.xz");
      const [legacy] = ofType("lxd.tar.xz");
      assert.ok(item && legacy, `${v.serial}: incus.tar.xz and lxd.tar.xz items`);
      assert.equal(item.sha256, await sha256File(v.image.files["lxd.tar.xz"] ?? ""));
      assert.equal(item.combined_squashfs_sha256, v.fingerprint, `${v.serial}: Incus' fingerprint`);
      assert.equal(item.path, legacy.path, `${v.serial}: both items name the same file`);
      if (v === versions[1]) incusItem = item;
    }
  });

  it("lists both versions, the aliases only on the newest", async () => {
    assert.ok(incusItem, "the products file was read first");
    const newest = assertBothVersionsListed(await INCUS.listImages(remote), versions);
    // Incus names the image after the file of the metadata item it read.
    assert.equal(newest.filename, posix.basename(incusItem.path));
  });

  it("incus image info resolves the alias to version 2's fingerprint", async () => {
    assert.equal(await INCUS.imageInfoFingerprint(`${remote}:${ALIAS}`), versions[1].fingerprint);
  });

  it("the daemon copies the image into its local store, fetching the incus.tar.xz item", async () => {
    assert.ok(incusItem, "the products file was read first");
    cleanup.image(versions[1].fingerprint);
    await incusOk(["image", "copy", `${remote}:${ALIAS}`, "local:", "--alias", localAlias], {
      timeoutMs: 300_000,
    });
    assert.equal(await INCUS.imageInfoFingerprint(localAlias), versions[1].fingerprint);
    // The daemon asked lxhub for exactly that item's file (the metadata half of version 2's fingerprint).
    const fetched = server.logs
      .map((l) => JSON.parse(l) as { event?: string; path?: string; status?: number; ua?: string })
      .filter((l) => l.event === "request" && l.ua?.startsWith("Incus") && l.status === 200)
      .map((l) => l.path);
    assert.ok(fetched.includes(`/${incusItem.path}`), `Incus fetched /${incusItem.path}: ${fetched}`);
  });

  it("the daemon launches a container that runs version 2", async () => {
    cleanup.container(container);
    await incusOk(["launch", `${remote}:${ALIAS}`, container], { timeoutMs: 300_000 });
    const t = await incus(["exec", container, "--", "true"]);
    assert.equal(t.code, 0, `incus exec true: ${t.stderr}`);
    const cat = await incusOk(["exec", container, "--", "cat", "/etc/lxhub-marker"]);
    assert.equal(cat.stdout.trim(), versions[1].image.marker);
  });

  // The delta copy (version 1 held, version 2 copied through its squashfs.vcdiff) is in
  // test/e2e/delta.test.ts, for Incus and LXD alike.
});
