/**
 * A mirror as LXD users meet it: `lxhub mirror` copies a second lxhub (signed; its key pinned
 * with `lxhub remote add`) and a static tree laid out as images.linuxcontainers.org lays one out
 * (served by a plain file server) into a third lxhub, and the real `lxc` (LXD 5.0.2) then lists
 * the mirrored images with their upstream fingerprints and aliases, shows their info, copies one
 * into the daemon and launches a container from each copy.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildBusyboxImage, imageFingerprint, type BusyboxImage } from "../support/image-fixture.js";
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
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { writeStaticTree, type StaticVersion } from "../support/static-tree.js";
import { dirSource, pullEnv, TestServer } from "../integration/pull-support.js";

describe("lxc (LXD 5.0.2) against an lxhub mirror", { timeout: 15 * 60_000 }, () => {
  const run = randomBytes(4).toString("hex");
  const remote = `${TEST_PREFIX}mirror-${run}`;
  const cleanup = new LxdCleanup();
  let work: string;
  let upstream: RunningServer;
  let target: RunningServer;
  let statik: TestServer;
  let pushed: BusyboxImage;
  let pushedFp: string;
  let tree: StaticVersion[];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), `${TEST_PREFIX}mirror-`));
    cleanup.add(`work dir ${work}`, () => rm(work, { recursive: true, force: true }));
    await ensureLxd();
    [upstream, target] = await Promise.all([startServer(), startServer()]);
    cleanup.add("lxhub servers", () => Promise.all([upstream.stop(), target.stop()]));

    // Upstream 1: an lxhub with one busybox image, pushed as a maintainer would.
    pushed = await buildBusyboxImage(join(work, "pushed"), {
      os: "mirrored",
      release: "1",
      serial: "20240301_0000",
      marker: `lxhub upstream ${run}`,
    });
    pushedFp = await imageFingerprint(pushed);
    const upToken = await createToken(upstream.dataDir, "push:mirrored/*");
    const push = await lxhubCli(["push", upstream.httpUrl, pushed.dir, "--token", upToken]);
    assert.equal(push.code, 0, push.stderr);

    // Upstream 2: a static tree, two versions with a delta between them.
    const images: BusyboxImage[] = [];
    for (const serial of ["20240101_0000", "20240201_0000"]) {
      images.push(
        await buildBusyboxImage(join(work, `static-${serial}`), {
          os: "statictree",
          release: "2",
          serial,
          marker: `static ${serial} ${run}`,
          formats: ["squashfs", "tar.xz"],
        }),
      );
    }
    tree = await writeStaticTree(
      join(work, "tree"),
      {
        os: "statictree",
        release: "2",
        variant: "default",
        aliases: ["statictree/2/default", "statictree/2"],
      },
      images,
    );
    statik = new TestServer(dirSource(join(work, "tree")));
    await statik.start();
    cleanup.add("static server", () => statik.stop());

    const toToken = await createToken(target.dataDir, "admin");
    const { env } = await pullEnv(work);
    const add = await lxhubCli(["remote", "add", "up", upstream.httpUrl, "--trust-on-first-use"], { env });
    assert.equal(add.code, 0, add.stderr);
    for (const source of ["up", statik.url]) {
      const m = await lxhubCli(["mirror", source, "--to", target.httpUrl, "--token", toToken], { env });
      assert.equal(m.code, 0, `mirror ${source}:\n${m.stdout}\n${m.stderr}`);
    }

    cleanup.remote(remote, target.httpsUrl);
    await addSimplestreamsRemote(remote, target.httpsUrl, target.certPem);
  });

  after(async () => {
    const problems = await cleanup.run();
    if (problems.length > 0) console.error(`cleanup problems:\n${problems.join("\n")}`);
  });

  it("lists the mirrored images with the upstreams' fingerprints and aliases", async () => {
    const images = await listImages(remote);
    const byFp = new Map(images.map((i) => [i.fingerprint, i]));
    const lxhubImage = byFp.get(pushedFp);
    assert.ok(lxhubImage, `image ${pushedFp} of the lxhub upstream in ${[...byFp.keys()].join(", ")}`);
    assert.ok(lxhubImage.aliases?.some((a) => a.name === "mirrored/1"));
    for (const v of tree) {
      for (const fp of [v.fingerprints.squashfs, v.fingerprints["root.tar.xz"]]) {
        assert.ok(byFp.has(fp), `static version ${v.key} image ${fp}`);
      }
    }
    const newest = byFp.get(tree[1]!.fingerprints.squashfs)!;
    assert.equal(newest.properties.serial, tree[1]!.key);
    assert.ok(newest.aliases?.some((a) => a.name === "statictree/2"));
  });

  it("lxc image info resolves the mirrored aliases", async () => {
    assert.equal(await imageInfoFingerprint(`${remote}:mirrored/1`), pushedFp);
    assert.equal(await imageInfoFingerprint(`${remote}:statictree/2`), tree[1]!.fingerprints.squashfs);
  });

  it("the daemon copies a mirrored image and launches containers from both upstreams' copies", async () => {
    cleanup.image(tree[1]!.fingerprints.squashfs);
    cleanup.image(pushedFp);
    const alias = `${TEST_PREFIX}mirrored-${run}`;
    await lxcOk(["image", "copy", `${remote}:statictree/2`, "local:", "--alias", alias], {
      timeoutMs: 300_000,
    });
    assert.equal(await imageInfoFingerprint(alias), tree[1]!.fingerprints.squashfs);

    for (const [name, source, marker] of [
      [`${TEST_PREFIX}ms-${run}`, `${remote}:statictree/2`, tree[1]!.image.marker],
      [`${TEST_PREFIX}ml-${run}`, `${remote}:mirrored/1`, pushed.marker],
    ] as const) {
      cleanup.container(name);
      await lxcOk(["launch", source, name], { timeoutMs: 300_000 });
      const t = await lxc(["exec", name, "--", "true"]);
      assert.equal(t.code, 0, `lxc exec true: ${t.stderr}`);
      const cat = await lxcOk(["exec", name, "--", "cat", "/etc/lxhub-marker"]);
      assert.equal(cat.stdout.trim(), marker);
    }
  });
});
