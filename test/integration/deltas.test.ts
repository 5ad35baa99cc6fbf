/**
 * Server-made deltas (simplestreams.md §5): after version 2 of a product is pushed, the server
 * lists a `squashfs.vcdiff` item from version 1 that rebuilds version 2's root exactly, and
 * `lxhub pull` holding version 1 in its cache downloads that delta instead of the whole root —
 * shown by the server's request log — and still verifies the result.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildBusyboxVersions, type BusyboxVersion } from "../support/busybox-versions.js";
import { runOk } from "../support/process.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";
import { pullEnv } from "./pull-support.js";

interface Item {
  ftype: string;
  path: string;
  sha256: string;
  size: number;
  delta_base?: string;
}

async function versionItems(base: string, version: string): Promise<Item[]> {
  const doc = (await (await fetch(`${base}/streams/v1/images.json`)).json()) as {
    products: Record<string, { versions: Record<string, { items: Record<string, Item> }> }>;
  };
  return Object.values(doc.products["busybox:1.36:amd64:default"]?.versions[version]?.items ?? {});
}

describe("deltas", { timeout: 180_000 }, () => {
  let work: string;
  let server: RunningServer;
  let v1: BusyboxVersion;
  let v2: BusyboxVersion;
  let delta: Item;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "lxhub-deltas-"));
    [v1, v2] = await buildBusyboxVersions(work, randomBytes(4).toString("hex"));
    server = await startServer({ deltas: true });
    const token = await createToken(server.dataDir, "push:busybox/*");
    for (const v of [v1, v2]) {
      const r = await lxhubCli(["push", server.httpUrl, v.image.dir, "--token", token]);
      assert.equal(r.code, 0, r.stderr);
    }
    const end = Date.now() + 60_000;
    for (;;) {
      const found = (await versionItems(server.httpUrl, v2.serial)).find(
        (i) => i.ftype === "squashfs.vcdiff",
      );
      if (found) {
        delta = found;
        break;
      }
      if (Date.now() > end) throw new Error(`no delta listed for version 2:\n${server.logs.join("\n")}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  });

  after(async () => {
    await server?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("version 2 lists one squashfs delta from version 1 that rebuilds its root exactly, much smaller", async () => {
    const items = await versionItems(server.httpUrl, v2.serial);
    assert.equal(items.filter((i) => i.ftype.endsWith(".vcdiff")).length, 1);
    assert.equal(delta.delta_base, v1.serial);
    const root = items.find((i) => i.ftype === "squashfs")!;
    assert.ok(delta.size < root.size * 0.8, `delta ${delta.size} vs root ${root.size}`);
    assert.equal(
      (await versionItems(server.httpUrl, v1.serial)).filter((i) => i.ftype.endsWith(".vcdiff")).length,
      0,
    );

    const bytes = Buffer.from(await (await fetch(`${server.httpUrl}/${delta.path}`)).arrayBuffer());
    assert.equal(createHash("sha256").update(bytes).digest("hex"), delta.sha256);
    const file = join(work, "d.vcdiff");
    await writeFile(file, bytes);
    const out = join(work, "rebuilt.squashfs");
    await runOk("xdelta3", ["-d", "-f", "-s", v1.image.files["rootfs.squashfs"]!, file, out]);
    assert.ok((await readFile(out)).equals(await readFile(v2.image.files["rootfs.squashfs"]!)));
    assert.ok(server.logs.some((l) => l.includes('"event":"delta"') && l.includes('"made":true')));
  });

  it("lxhub pull holding version 1 downloads the delta, not version 2's root, and verifies it", async () => {
    const { env } = await pullEnv(work);
    const add = await lxhubCli(["remote", "add", "hub", server.httpUrl, "--trust-on-first-use"], { env });
    assert.equal(add.code, 0, add.stderr);
    const first = await lxhubCli(["pull", "hub", v1.fingerprint.slice(0, 16), join(work, "one")], { env });
    assert.equal(first.code, 0, first.stderr);
    const mark = server.logs.length;
    const second = await lxhubCli(["pull", "hub", "busybox/1.36", join(work, "two"), "--format", "lxd"], {
      env,
    });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, new RegExp(`root rebuilt from delta .* over cached version ${v1.serial}`));
    assert.match(second.stdout, new RegExp(v2.fingerprint));
    const paths = server.logs
      .slice(mark)
      .filter((l) => l.includes('"event":"request"'))
      .map((l) => (JSON.parse(l) as { path: string }).path);
    assert.ok(paths.includes(`/${delta.path}`), `the delta was requested: ${paths.join(" ")}`);
    assert.ok(!paths.some((p) => p.endsWith("/rootfs.squashfs")), `no root downloaded: ${paths.join(" ")}`);
    assert.ok(
      (await readFile(join(work, "two", "rootfs.squashfs"))).equals(
        await readFile(v2.image.files["rootfs.squashfs"]!),
      ),
    );
  });
});
