/**
 * LXC's `download` template (Debian 12 `lxc` 5.0.2; simplestreams.md §7) against lxhub: a build
 * folder with `lxd.tar.xz`, `rootfs.squashfs`, `rootfs.tar.xz` and `meta.tar.xz` is pushed with
 * `lxhub push`, lxhub lists it in `meta/1.0/index-system`, and
 * `lxc-create -t download -- --server 127.0.0.1:PORT --dist … --release … --arch amd64` creates a
 * container whose root file system is the pushed one. The template only speaks HTTPS and checks
 * no signature; wget trusts lxhub's self-signed certificate through a private wgetrc.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildBusyboxImage, type BusyboxImage } from "../support/image-fixture.js";
import { TEST_PREFIX } from "../support/container-manager.js";
import { run } from "../support/process.js";
import { createToken, lxhubCli, startServer, type RunningServer } from "../support/server.js";

describe("lxc-create -t download from lxhub", { timeout: 5 * 60_000 }, () => {
  const name = `${TEST_PREFIX}lxc-${randomBytes(4).toString("hex")}`;
  let work: string;
  let server: RunningServer;
  let image: BusyboxImage;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), `${TEST_PREFIX}lxc-`));
    image = await buildBusyboxImage(join(work, "build"), {
      os: "busybox",
      release: "1.36",
      serial: "20240301_0000",
      marker: `lxc ${name}`,
      formats: ["squashfs", "lxc"],
    });
    server = await startServer();
    const token = await createToken(server.dataDir, "push:busybox/*");
    const push = await lxhubCli(["push", server.httpUrl, image.dir, "--token", token]);
    assert.equal(push.code, 0, push.stderr);
  });

  after(async () => {
    await run("lxc-destroy", ["-n", name, "-f"]);
    await server?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("lists the build in meta/1.0/index-system", async () => {
    for (const mode of ["system", "user"]) {
      const r = await fetch(`${server.httpUrl}/meta/1.0/index-${mode}`);
      assert.equal(r.status, 200);
      assert.match(String(r.headers.get("content-type")), /^text\/plain/);
      assert.equal(
        await r.text(),
        `busybox;1.36;amd64;default;${image.serial};/images/busybox/1.36/amd64/default/${image.serial}/\n`,
      );
    }
  });

  it("creates a container with the pushed root file system", async () => {
    const wgetrc = join(work, "wgetrc");
    await writeFile(wgetrc, `ca_certificate = ${server.certFile}\n`);
    const port = new URL(server.httpsUrl).port;
    const mark = server.logs.length;
    const r = await run(
      "lxc-create",
      [
        "-n",
        name,
        "-t",
        "download",
        "--",
        "--server",
        `127.0.0.1:${port}`,
        "--dist",
        "busybox",
        "--release",
        "1.36",
        "--arch",
        "amd64",
      ],
      {
        env: { ...process.env, WGETRC: wgetrc, LXC_CACHE_PATH: join(work, "lxc-cache") },
        timeoutMs: 180_000,
      },
    );
    assert.equal(r.code, 0, `lxc-create failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /busybox 1\.36 \(20240301_0000\) from lxhub/, "the create-message was shown");
    const rootfs = `/var/lib/lxc/${name}/rootfs`;
    assert.equal((await readFile(join(rootfs, "etc/lxhub-marker"), "utf8")).trim(), image.marker);
    assert.match(await readFile(`/var/lib/lxc/${name}/config`, "utf8"), /lxc\.arch = (x86_64|amd64)/);
    // The template's paths arrive with doubled slashes; each was answered.
    const paths = server.logs
      .slice(mark)
      .map((l) => JSON.parse(l) as { event?: string; path?: string; status?: number })
      .filter((l) => l.event === "request" && l.status === 200)
      .map((l) => l.path ?? "");
    assert.ok(
      paths.some((p) => /^\/+meta\/1\.0\/index-system$/.test(p)),
      paths.join(" "),
    );
    assert.ok(
      paths.some((p) => p.endsWith("//rootfs.tar.xz")),
      paths.join(" "),
    );
    assert.ok(
      paths.some((p) => p.endsWith("//meta.tar.xz")),
      paths.join(" "),
    );
  });
});
