/**
 * Delta copies with the real daemons (simplestreams.md §5): LXD 5.0.2 and Incus 6.0 each copy
 * version 1 of a busybox image from lxhub into their local store; version 2 is pushed, the server
 * makes its `squashfs.vcdiff` from version 1, and the daemon copies version 2 by downloading the
 * delta — not the root file — as lxhub's request log shows, ending with version 2's fingerprint.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  BUSYBOX_ALIAS,
  BUSYBOX_PUSH_SCOPE,
  buildBusyboxVersions,
  type BusyboxVersion,
} from "../support/busybox-versions.js";
import { ManagerCleanup, TEST_PREFIX, type ContainerManager } from "../support/container-manager.js";
import { INCUS } from "../support/incus.js";
import { LXD } from "../support/lxd.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";

interface Item {
  ftype: string;
  path: string;
}

for (const [label, manager, ua] of [
  ["LXD 5.0.2", LXD, "LXD"],
  ["Incus 6.0", INCUS, "Incus"],
] as [string, ContainerManager, string][]) {
  describe(`${label} copies a new version through lxhub's delta`, { timeout: 10 * 60_000 }, () => {
    const run = randomBytes(4).toString("hex");
    const remote = `${TEST_PREFIX}delta-${run}`;
    const cleanup = new ManagerCleanup(manager);
    let work: string;
    let server: RunningServer;
    let v1: BusyboxVersion;
    let v2: BusyboxVersion;
    let token: string;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), `${TEST_PREFIX}delta-`));
      cleanup.add(`work dir ${work}`, () => rm(work, { recursive: true, force: true }));
      await manager.ensure();
      [v1, v2] = await buildBusyboxVersions(work, `delta ${label} ${run}`);
      server = await startServer({ deltas: true });
      cleanup.add("lxhub server", () => server.stop());
      token = await createToken(server.dataDir, BUSYBOX_PUSH_SCOPE);
      const push = await lxhubCli(["push", server.httpUrl, v1.image.dir, "--token", token]);
      assert.equal(push.code, 0, push.stderr);
      cleanup.remote(remote, server.httpsUrl);
      await manager.addSimplestreamsRemote(remote, server.httpsUrl, server.certPem);
    });

    after(async () => {
      const problems = await cleanup.run();
      if (problems.length > 0) console.error(`cleanup problems:\n${problems.join("\n")}`);
    });

    it("holds version 1, then copies version 2 by downloading only the delta", async () => {
      cleanup.image(v1.fingerprint);
      await manager.ok(["image", "copy", `${remote}:${BUSYBOX_ALIAS}`, "local:"], { timeoutMs: 300_000 });
      assert.equal(await manager.imageInfoFingerprint(v1.fingerprint), v1.fingerprint);

      const push = await lxhubCli(["push", server.httpUrl, v2.image.dir, "--token", token]);
      assert.equal(push.code, 0, push.stderr);
      let delta: Item | undefined;
      let root: Item | undefined;
      for (const end = Date.now() + 60_000; !delta;) {
        const doc = (await (await fetch(`${server.httpUrl}/streams/v1/images.json`)).json()) as {
          products: Record<string, { versions: Record<string, { items: Record<string, Item> }> }>;
        };
        const items = Object.values(
          doc.products["busybox:1.36:amd64:default"]?.versions[v2.serial]?.items ?? {},
        );
        delta = items.find((i) => i.ftype === "squashfs.vcdiff");
        root = items.find((i) => i.ftype === "squashfs");
        if (!delta) {
          assert.ok(Date.now() < end, "the server listed a delta for version 2");
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      // The daemon caches a remote's index for an hour: let it read the new one.
      await rm(manager.daemonStreamCacheDir(server.httpsUrl), { recursive: true, force: true });

      const mark = server.logs.length;
      cleanup.image(v2.fingerprint);
      await manager.ok(["image", "copy", `${remote}:${BUSYBOX_ALIAS}`, "local:"], { timeoutMs: 300_000 });
      assert.equal(await manager.imageInfoFingerprint(v2.fingerprint), v2.fingerprint);
      const fetched = server.logs
        .slice(mark)
        .map((l) => JSON.parse(l) as { event?: string; path?: string; status?: number; ua?: string })
        .filter((l) => l.event === "request" && l.ua?.startsWith(ua) && l.status === 200)
        .map((l) => l.path);
      assert.ok(fetched.includes(`/${delta.path}`), `${label} fetched the delta: ${fetched.join(" ")}`);
      assert.ok(
        !fetched.includes(`/${root!.path}`),
        `${label} did not fetch version 2's root: ${fetched.join(" ")}`,
      );
    });
  });
}
