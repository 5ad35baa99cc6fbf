/**
 * The deploy/ room, tested for real where this machine allows it:
 *   - the container image: the base image from debootstrap (deploy/build-base.sh, cached), the
 *     image built from deploy/Dockerfile with buildah, then the server started inside it with
 *     `buildah run` and asked for /healthz, /readyz and the index over the host network; and two
 *     containers of it as replicas on one PostgreSQL and one radosgw bucket (the test's own, on
 *     loopback), pushed to through both;
 *   - the systemd unit, checked by `systemd-analyze verify`;
 *   - the compose file and Kubernetes manifests, which cannot run here (no container engine
 *     with cgroups, no cluster): parsed, and their cross-references checked.
 * The image tests need root, debootstrap, buildah and podman (.ci/run installs them).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse, parseAllDocuments } from "yaml";
import { run, runOk } from "../support/process.js";
import { api, uploadFile, versionPath } from "../support/api.js";
import { createDatabase, freePort } from "../support/postgres.js";
import { createTestBucket, ensureRgw } from "../support/rgw.js";
import { buildTinyImage, TINY_PRODUCT } from "../support/tiny-image.js";

/** dist/test/deploy/ → the repository root. */
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const DEPLOY = join(ROOT, "deploy");
const BASE_IMAGE = "localhost/lxhub-base:trixie";
const IMAGE = "localhost/lxhub:test";
const BUILD_STAGE = "localhost/lxhub:test-build-stage";
const BUILD_TIMEOUT_MS = 45 * 60_000;

type Doc = Record<string, unknown>;

function obj(v: unknown, what: string): Doc {
  assert.ok(typeof v === "object" && v !== null && !Array.isArray(v), `${what} is not a mapping`);
  return v as Doc;
}

function arr(v: unknown, what: string): unknown[] {
  assert.ok(Array.isArray(v), `${what} is not a list`);
  return v;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

async function which(cmd: string): Promise<boolean> {
  return (await run("sh", ["-c", `command -v ${cmd}`])).code === 0;
}

/** GETs url until it answers 200 or `ms` passed; resolves to the last status and body. */
async function waitFor200(url: string, ms: number): Promise<{ status: number; body: string }> {
  const end = Date.now() + ms;
  let last = { status: 0, body: "" };
  while (Date.now() < end) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      last = { status: r.status, body: await r.text() };
      if (r.status === 200) return last;
    } catch (err) {
      last = { status: 0, body: (err as Error).message };
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return last;
}

/**
 * `lxhub serve` started by the image's entrypoint in a fresh container, with `env` (plain HTTP on
 * a free loopback port, HTTPS off), until `stop()`.
 */
async function serveInImage(
  entrypoint: string[],
  env: Record<string, string>,
): Promise<{ base: string; ctr: string; output: () => string; stop: () => Promise<void> }> {
  const from = await runOk("buildah", ["from", IMAGE]);
  const ctr = from.stdout.trim().split("\n").pop() ?? "";
  const port = await freePort();
  const all = { ...env, LXHUB_LISTEN: `127.0.0.1:${port}`, LXHUB_TLS_LISTEN: "" };
  const envArgs = Object.entries(all).flatMap(([k, v]) => ["--env", `${k}=${v}`]);
  let output = "";
  const server = spawn(
    "buildah",
    ["run", "--isolation", "chroot", "--network", "host", ...envArgs, ctr, "--", ...entrypoint],
    { stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  server.stdout?.setEncoding("utf8").on("data", (d: string) => (output += d));
  server.stderr?.setEncoding("utf8").on("data", (d: string) => (output += d));
  return {
    base: `http://127.0.0.1:${port}`,
    ctr,
    output: () => output,
    async stop() {
      if (server.pid !== undefined && server.exitCode === null) {
        const exited = new Promise<void>((r) => server.once("exit", () => r()));
        process.kill(-server.pid, "SIGTERM");
        const timer = setTimeout(
          () => server.pid !== undefined && process.kill(-server.pid, "SIGKILL"),
          10_000,
        );
        await exited;
        clearTimeout(timer);
      }
      await run("buildah", ["rm", ctr]);
    },
  };
}

describe("deploy: container image (debootstrap base, buildah build, buildah run)", () => {
  const durations: string[] = [];
  let missing: string[] = [];
  /** Set once this run built the image: the tests after the build use it, not a stale one. */
  let built = false;

  before(async () => {
    missing = [];
    for (const cmd of ["debootstrap", "buildah", "podman"]) if (!(await which(cmd))) missing.push(cmd);
  });

  after(() => {
    if (durations.length) process.stdout.write(`# deploy durations: ${durations.join("; ")}\n`);
  });

  test("the base image exists or is built from debootstrap (rootfs cached under /var/cache/lxhub-ci)", async (t) => {
    assert.deepEqual(missing, [], `missing commands (.ci/run installs them): ${missing.join(" ")}`);
    assert.equal(process.getuid?.(), 0, "debootstrap and buildah need root");
    const exists = await run("podman", ["image", "exists", BASE_IMAGE]);
    if (exists.code === 0) {
      t.diagnostic(`${BASE_IMAGE} present`);
      return;
    }
    const t0 = Date.now();
    await runOk("bash", [join(DEPLOY, "build-base.sh"), BASE_IMAGE], { timeoutMs: BUILD_TIMEOUT_MS });
    durations.push(`base image ${seconds(Date.now() - t0)}`);
    assert.equal((await run("podman", ["image", "exists", BASE_IMAGE])).code, 0);
  });

  test("deploy/Dockerfile builds with buildah bud (chroot isolation)", async (t) => {
    const t0 = Date.now();
    const r = await run(
      "buildah",
      [
        "bud",
        // Keep intermediate layers: a second build with unchanged sources reuses apt and npm ci.
        "--layers",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        // The host's CA bundle, for a proxy that inspects TLS to the npm registry (not kept in the image).
        "--secret",
        "id=ca,src=/etc/ssl/certs/ca-certificates.crt",
        "-t",
        IMAGE,
        "-f",
        "deploy/Dockerfile",
        ".",
      ],
      { cwd: ROOT, timeoutMs: BUILD_TIMEOUT_MS },
    );
    const took = Date.now() - t0;
    assert.equal(r.code, 0, `buildah bud failed:\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-4000)}`);
    built = true;
    durations.push(`buildah bud ${seconds(took)}`);
    t.diagnostic(`buildah bud took ${seconds(took)}`);

    // The image's configuration: entrypoint, user, volume, ports and health check.
    const inspect = await runOk("buildah", ["inspect", "--type", "image", IMAGE]);
    const info = obj(JSON.parse(inspect.stdout), "buildah inspect");
    const docker = obj(info.Docker, "Docker");
    const config = obj(docker.config, "Docker.config");
    assert.deepEqual(config.Entrypoint, ["lxhub", "serve"]);
    assert.equal(config.User, "lxhub");
    assert.ok(Object.keys(obj(config.Volumes, "Volumes")).includes("/var/lib/lxhub"));
    assert.deepEqual(Object.keys(obj(config.ExposedPorts, "ExposedPorts")).sort(), ["8080/tcp", "8443/tcp"]);
    const hc = obj(config.Healthcheck, "Healthcheck");
    assert.ok(JSON.stringify(hc.Test).includes("/healthz"), "health check asks /healthz");
    const env = arr(config.Env, "Env");
    assert.ok(env.includes("LXHUB_LISTEN=0.0.0.0:8080"), "listens on 0.0.0.0 by default");
  });

  test("the build stage compiled better-sqlite3 against Debian's Node headers and downloaded none", async () => {
    assert.ok(built, "the image was not built in this run");
    // The build stage alone, from the layers the build above left (--layers, same arguments):
    // seconds. The tag stays: removing it would drop those cached layers with it.
    const r = await run(
      "buildah",
      [
        "bud",
        "--layers",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--secret",
        "id=ca,src=/etc/ssl/certs/ca-certificates.crt",
        "--target",
        "build",
        "-t",
        BUILD_STAGE,
        "-f",
        "deploy/Dockerfile",
        ".",
      ],
      { cwd: ROOT, timeoutMs: BUILD_TIMEOUT_MS },
    );
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const from = await runOk("buildah", ["from", BUILD_STAGE]);
    const ctr = from.stdout.trim().split("\n").pop() ?? "";
    try {
      const check = await run("buildah", [
        "run",
        "--isolation",
        "chroot",
        ctr,
        "--",
        "sh",
        "-c",
        [
          // node-gyp's configuration names the system headers...
          `grep -q '"nodedir": "/usr"' node_modules/better-sqlite3/build/config.gypi`,
          "test -f /usr/include/node/node.h",
          // ...and neither a header tarball nor a prebuilt binary was fetched.
          "test ! -e /root/.cache/node-gyp",
          "test ! -e /root/.npm/_prebuilds",
          "test -f node_modules/better-sqlite3/build/Release/better_sqlite3.node",
        ].join(" && "),
      ]);
      assert.equal(check.code, 0, `build stage check failed: ${check.stderr}`);
    } finally {
      await run("buildah", ["rm", ctr]);
    }
  });

  test("the image runs lxhub serve as a non-root user and serves /healthz, /readyz and the index", async (t) => {
    assert.ok(built, "the image was not built in this run");
    const from = await runOk("buildah", ["from", IMAGE]);
    const ctr = from.stdout.trim().split("\n").pop() ?? "";
    assert.ok(ctr !== "", "buildah from printed no container name");
    let server: ChildProcess | undefined;
    try {
      const uid = await runOk("buildah", ["run", "--isolation", "chroot", ctr, "--", "id", "-u"]);
      assert.notEqual(uid.stdout.trim(), "0", "the image's user is root");
      assert.match(uid.stdout.trim(), /^\d+$/);
      const version = await runOk("buildah", [
        "run",
        "--isolation",
        "chroot",
        ctr,
        "--",
        "node",
        "--version",
      ]);
      assert.match(version.stdout.trim(), /^v20\./, "Debian trixie's Node.js 20");
      // The runtime stage has no build tools, and the native binding loads with Debian's node.
      const tools = await run("buildah", [
        "run",
        "--isolation",
        "chroot",
        ctr,
        "--",
        "sh",
        "-c",
        "command -v npm g++ make python3",
      ]);
      assert.equal(tools.stdout.trim(), "", "build tools in the runtime image");
      const binding = await runOk("buildah", [
        "run",
        "--isolation",
        "chroot",
        ctr,
        "--",
        "node",
        "-e",
        "require('/opt/lxhub/node_modules/better-sqlite3')(':memory:')",
      ]);
      assert.equal(binding.code, 0);

      // Started as the image starts it: its entrypoint, listeners from the environment (here a
      // free loopback port instead of 0.0.0.0:8080, HTTPS off). chroot isolation shares the
      // host's network namespace; --network host says so explicitly.
      const inspect = await runOk("buildah", ["inspect", "--type", "image", IMAGE]);
      const config = obj(obj(obj(JSON.parse(inspect.stdout), "inspect").Docker, "Docker").config, "config");
      const entrypoint = arr(config.Entrypoint, "Entrypoint").map(String);
      const healthcheck = arr(obj(config.Healthcheck, "Healthcheck").Test, "Healthcheck.Test").map(String);
      const port = await freePort();
      const env = ["--env", `LXHUB_LISTEN=127.0.0.1:${port}`, "--env", "LXHUB_TLS_LISTEN="];
      const inCtr = ["run", "--isolation", "chroot", "--network", "host", ...env, ctr, "--"];
      const t0 = Date.now();
      let output = "";
      server = spawn("buildah", [...inCtr, ...entrypoint], {
        stdio: ["ignore", "pipe", "pipe"],
        detached: true,
      });
      server.stdout?.setEncoding("utf8").on("data", (d: string) => (output += d));
      server.stderr?.setEncoding("utf8").on("data", (d: string) => (output += d));
      const base = `http://127.0.0.1:${port}`;
      const health = await waitFor200(`${base}/healthz`, 60_000);
      assert.equal(health.status, 200, `/healthz: ${health.body}\nserver output:\n${output}`);
      t.diagnostic(`server in the image answered /healthz ${seconds(Date.now() - t0)} after buildah run`);
      // The image's own HEALTHCHECK command (["CMD", …]) succeeds against it.
      assert.equal(healthcheck[0], "CMD");
      const hc = await run("buildah", [...inCtr, ...healthcheck.slice(1)]);
      assert.equal(hc.code, 0, `HEALTHCHECK failed: ${hc.stderr}`);
      const ready = await waitFor200(`${base}/readyz`, 30_000);
      assert.equal(ready.status, 200, `/readyz: ${ready.body}`);
      assert.equal(obj(JSON.parse(ready.body), "/readyz").status, "ready");
      const index = await fetch(`${base}/streams/v1/index.json`);
      assert.equal(index.status, 200);
      const doc = obj(await index.json(), "index.json");
      assert.equal(doc.format, "index:1.0");
      assert.match(output, /"event":"listening"/);
      assert.match(output, /\/var\/lib\/lxhub/, "the data folder is the image's volume");
    } finally {
      if (server?.pid !== undefined && server.exitCode === null) {
        const exited = new Promise<void>((r) => server?.once("exit", () => r()));
        // The process group: buildah and the server it started.
        process.kill(-server.pid, "SIGTERM");
        const timer = setTimeout(
          () => server?.pid !== undefined && process.kill(-server.pid, "SIGKILL"),
          10_000,
        );
        await exited;
        clearTimeout(timer);
      }
      await run("buildah", ["rm", ctr]);
    }
  });

  test("the compose file's lxhub-init command makes the replicas' shared state in the image", async () => {
    assert.ok(built, "the image was not built in this run");
    const compose = obj(parse(readFileSync(join(DEPLOY, "compose.yaml"), "utf8")), "compose.yaml");
    const init = obj(obj(compose.services, "services")["lxhub-init"], "lxhub-init");
    const entrypoint = arr(init.entrypoint, "entrypoint").map(String);
    const script = String(arr(init.command, "command")[0]);
    assert.ok(script.includes("18080") && script.includes("18443"), "the init script's listeners moved");
    // As compose runs it: `$$` is compose's escape for `$`. Free ports instead of 18080/18443,
    // since the host network is shared. The image's own environment (SQLite in the volume): this
    // machine has no PostgreSQL or S3 store for the compose file's LXHUB_DB/LXHUB_BLOBS.
    const [http, https] = [await freePort(), await freePort()];
    const command = script
      .replaceAll("$$", "$")
      .replaceAll("18080", String(http))
      .replaceAll("18443", String(https));
    const from = await runOk("buildah", ["from", IMAGE]);
    const ctr = from.stdout.trim().split("\n").pop() ?? "";
    try {
      const runIn = ["run", "--isolation", "chroot", "--network", "host", ctr, "--"];
      const r = await run("buildah", [...runIn, ...entrypoint, command], { timeoutMs: 120_000 });
      assert.equal(r.code, 0, `lxhub-init failed:\n${r.stderr}\n${r.stdout}`);
      const state = await run("buildah", [
        ...runIn,
        "sh",
        "-c",
        "ls /var/lib/lxhub/keys/signing/*.jwk && test -s /var/lib/lxhub/keys/token-secret && test -s /var/lib/lxhub/tls/server.key",
      ]);
      assert.equal(state.code, 0, `shared state missing:\n${state.stderr}`);
    } finally {
      await run("buildah", ["rm", ctr]);
    }
  });

  test("two containers of the image on one PostgreSQL and one radosgw bucket serve one registry (the compose shape)", async (t) => {
    assert.ok(built, "the image was not built in this run");
    const inspect = await runOk("buildah", ["inspect", "--type", "image", IMAGE]);
    const config = obj(obj(obj(JSON.parse(inspect.stdout), "inspect").Docker, "Docker").config, "config");
    const entrypoint = arr(config.Entrypoint, "Entrypoint").map(String);
    const [rgw, db] = await Promise.all([ensureRgw(), createDatabase("deploy")]);
    const bucket = await createTestBucket(rgw, "deploy");
    const env = {
      LXHUB_DB: db,
      LXHUB_BLOBS: `s3://${bucket}/blobs?endpoint=${encodeURIComponent(rgw.endpoint)}&region=${rgw.region}&forcePathStyle=true`,
      AWS_ACCESS_KEY_ID: rgw.accessKeyId,
      AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
      LXHUB_ALLOW_INSECURE_WRITES: "1",
    };
    const [a, b] = await Promise.all([serveInImage(entrypoint, env), serveInImage(entrypoint, env)]);
    const work = await mkdtemp(join(tmpdir(), "lxhub-deploy-replicas-"));
    try {
      for (const r of [a, b]) {
        const ready = await waitFor200(`${r.base}/readyz`, 60_000);
        assert.equal(ready.status, 200, `/readyz: ${ready.body}\n${r.output()}`);
      }
      // A token made in one container (it lives in PostgreSQL) works on the other.
      const envArgs = Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`]);
      const made = await runOk("buildah", [
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        ...envArgs,
        a.ctr,
        "--",
        "lxhub",
        "token",
        "create",
        "--scope",
        "admin",
        "--ttl",
        "1h",
      ]);
      const token = made.stdout.trim();
      const img = await buildTinyImage(join(work, "img"));
      const meta = await uploadFile(a.base, token, img.files["lxd.tar.xz"]!);
      const root = await uploadFile(b.base, token, img.files["rootfs.tar.xz"]!);
      const body = JSON.stringify({
        files: [
          { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: meta },
          { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: root },
        ],
      });
      const put = await api(b.base, "PUT", versionPath(TINY_PRODUCT, "20240101_0000"), { token, body });
      assert.equal(put.status, 201, put.text);
      const [ia, ib] = await Promise.all([
        fetch(`${a.base}/streams/v1/images.json`).then((r) => r.text()),
        fetch(`${b.base}/streams/v1/images.json`).then((r) => r.text()),
      ]);
      assert.equal(ia, ib, "both containers serve the same images.json");
      assert.match(ia, /20240101_0000/);
      const file = await fetch(`${a.base}/images/tiny/1/amd64/default/20240101_0000/rootfs.tar.xz`);
      assert.equal(file.status, 200);
      t.diagnostic("pushed through both containers, served identically by both");
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe("deploy: systemd unit", () => {
  test("deploy/lxhub.service passes systemd-analyze verify without a warning", async (t) => {
    const unit = readFileSync(join(DEPLOY, "lxhub.service"), "utf8");
    for (const line of [
      "StateDirectory=lxhub",
      "EnvironmentFile=-/etc/lxhub/lxhub.env",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "PrivateTmp=yes",
      "ReadWritePaths=/var/lib/lxhub",
      "User=lxhub",
      "ExecStart=/usr/bin/lxhub serve",
    ]) {
      assert.ok(unit.split("\n").includes(line), `lxhub.service lacks ${line}`);
    }
    if (!(await which("systemd-analyze"))) {
      t.skip("systemd-analyze is not installed (package systemd): unit not verified");
      return;
    }
    // verify insists that ExecStart names an executable; /usr/bin/lxhub exists only after
    // `npm link`, so the copy checked here points at this checkout's built CLI instead.
    const dir = await mkdtemp(join(tmpdir(), "lxhub-unit-"));
    try {
      const file = join(dir, "lxhub.service");
      await writeFile(
        file,
        unit.replace("ExecStart=/usr/bin/lxhub ", `ExecStart=${join(ROOT, "dist/cli/main.js")} `),
      );
      const r = await run("systemd-analyze", ["verify", file]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr.trim(), "", "systemd-analyze printed warnings");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("deploy: compose file", () => {
  const compose = obj(parse(readFileSync(join(DEPLOY, "compose.yaml"), "utf8")), "compose.yaml");
  const services = obj(compose.services, "services");

  test("lxhub ×2 with PostgreSQL, an S3 store and a load balancer, each with a health check", () => {
    for (const name of ["postgres", "s3", "lxhub", "lb"]) {
      const s = obj(services[name], `service ${name}`);
      assert.ok(typeof s.image === "string" && s.image !== "", `${name} names an image`);
      obj(s.healthcheck, `${name}.healthcheck`);
    }
    const lxhub = obj(services.lxhub, "lxhub");
    assert.equal(obj(lxhub.deploy, "lxhub.deploy").replicas, 2);
    const env = obj(lxhub.environment, "lxhub.environment");
    assert.match(String(env.LXHUB_DB), /^postgres:\/\/.*@postgres:5432\//);
    assert.match(String(env.LXHUB_BLOBS), /^s3:\/\/[^/]+\/.*endpoint=http:\/\/s3:9000/);
    for (const k of ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LXHUB_LISTEN", "LXHUB_TLS_LISTEN"]) {
      assert.ok(k in env, `lxhub.environment lacks ${k}`);
    }
    assert.ok(JSON.stringify(lxhub.healthcheck).includes("/readyz"));
  });

  test("every service it depends on exists, and every file it names exists", () => {
    for (const [name, v] of Object.entries(services)) {
      const s = obj(v, name);
      for (const dep of Object.keys(obj(s.depends_on ?? {}, `${name}.depends_on`))) {
        assert.ok(dep in services, `${name} depends on unknown service ${dep}`);
      }
      if (s.build !== undefined) {
        const b = obj(s.build, `${name}.build`);
        const context = join(DEPLOY, String(b.context));
        assert.ok(existsSync(join(context, String(b.dockerfile))), `${name}: no ${String(b.dockerfile)}`);
        assert.ok(existsSync(join(context, "package-lock.json")), `${name}: context is not the repo root`);
      }
      for (const m of arr(s.volumes ?? [], `${name}.volumes`)) {
        const src = String(m).split(":")[0] ?? "";
        if (src.startsWith(".") || src.startsWith("/")) {
          assert.ok(existsSync(join(DEPLOY, src)), `${name} mounts ${src}, which does not exist`);
        } else {
          assert.ok(src in obj(compose.volumes, "volumes"), `${name} mounts undeclared volume ${src}`);
        }
      }
    }
  });

  test("the load balancer checks /readyz and spreads over both replicas", () => {
    const cfg = readFileSync(join(DEPLOY, "haproxy.cfg"), "utf8");
    assert.match(cfg, /option httpchk GET \/readyz/);
    assert.match(cfg, /server-template lxhub 2 lxhub:8080/);
    assert.match(cfg, /server-template lxhub 2 lxhub:8443/);
  });

  test("docker-compose validates it against the compose schema (docker-compose config)", async (t) => {
    if (!(await which("docker-compose"))) {
      t.skip("docker-compose is not installed: the compose schema was not checked");
      return;
    }
    // Debian 12's docker-compose (1.29) predates the top-level `name` key of the compose
    // specification; the copy it checks lacks only that key, and resolves paths from deploy/.
    const text = readFileSync(join(DEPLOY, "compose.yaml"), "utf8");
    assert.match(text, /^name: lxhub$/m);
    const dir = await mkdtemp(join(tmpdir(), "lxhub-compose-"));
    try {
      const file = join(dir, "compose.yaml");
      await writeFile(file, text.replace(/^name: lxhub\n/m, ""));
      const r = await run("docker-compose", ["-f", file, "--project-directory", DEPLOY, "config", "-q"], {
        env: { ...process.env, POSTGRES_PASSWORD: "x", S3_ACCESS_KEY: "x", S3_SECRET_KEY: "x" },
      });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("haproxy accepts deploy/haproxy.cfg (haproxy -c)", async (t) => {
    if (!(await which("haproxy"))) {
      t.skip("haproxy is not installed: its configuration was not checked");
      return;
    }
    const r = await run("haproxy", ["-c", "-f", join(DEPLOY, "haproxy.cfg")]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  });

  test(".dockerignore keeps node_modules and dist out of the build context", () => {
    const lines = readFileSync(join(ROOT, ".dockerignore"), "utf8").split("\n");
    assert.ok(lines.includes("node_modules/"));
    assert.ok(lines.includes("dist/"));
  });
});

describe("deploy: Kubernetes manifests", () => {
  const docs: Doc[] = [];
  for (const f of readdirSync(join(DEPLOY, "k8s")).filter((n) => n.endsWith(".yaml"))) {
    for (const d of parseAllDocuments(readFileSync(join(DEPLOY, "k8s", f), "utf8"))) {
      assert.deepEqual(d.errors, [], `${f}: ${d.errors.map((e) => e.message).join("; ")}`);
      docs.push(obj(d.toJS(), f));
    }
  }
  const byKind = (kind: string): Doc[] => docs.filter((d) => d.kind === kind);
  const name = (d: Doc): string => String(obj(d.metadata, "metadata").name);

  test("the expected kinds parse", () => {
    for (const kind of ["Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"]) {
      assert.ok(byKind(kind).length >= 1, `no ${kind}`);
    }
  });

  test("the Deployment: 2 replicas, probes, resources, non-root with a read-only root and an emptyDir /tmp", () => {
    const [dep] = byKind("Deployment");
    const spec = obj(obj(dep, "Deployment").spec, "spec");
    assert.equal(spec.replicas, 2);
    const pod = obj(obj(spec.template, "template").spec, "pod spec");
    assert.equal(obj(pod.securityContext, "pod securityContext").runAsNonRoot, true);
    const [c] = arr(pod.containers, "containers");
    const ctr = obj(c, "container");
    const path = (probe: string) => obj(obj(ctr[probe], probe).httpGet, `${probe}.httpGet`).path;
    assert.equal(path("readinessProbe"), "/readyz");
    assert.equal(path("livenessProbe"), "/healthz");
    const res = obj(ctr.resources, "resources");
    obj(res.requests, "requests");
    obj(res.limits, "limits");
    const sc = obj(ctr.securityContext, "container securityContext");
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.equal(sc.allowPrivilegeEscalation, false);
    const volumes = arr(pod.volumes, "volumes").map((v) => obj(v, "volume"));
    const mounts = arr(ctr.volumeMounts, "volumeMounts").map((m) => obj(m, "mount"));
    const tmp = mounts.find((m) => m.mountPath === "/tmp");
    assert.ok(tmp, "no /tmp mount");
    assert.ok(
      volumes.find((v) => v.name === tmp.name && v.emptyDir !== undefined),
      "/tmp is not an emptyDir",
    );
    for (const m of mounts)
      assert.ok(
        volumes.some((v) => v.name === m.name),
        `mount ${String(m.name)} has no volume`,
      );

    // Every ConfigMap, Secret and claim the pod refers to is in the manifests.
    for (const e of arr(ctr.envFrom, "envFrom").map((x) => obj(x, "envFrom"))) {
      if (e.configMapRef)
        assert.ok(byKind("ConfigMap").some((d) => name(d) === obj(e.configMapRef, "ref").name));
      if (e.secretRef) assert.ok(byKind("Secret").some((d) => name(d) === obj(e.secretRef, "ref").name));
    }
    for (const v of volumes) {
      if (v.secret) assert.ok(byKind("Secret").some((d) => name(d) === obj(v.secret, "secret").secretName));
      if (v.persistentVolumeClaim) {
        const claim = obj(v.persistentVolumeClaim, "pvc").claimName;
        assert.ok(
          byKind("PersistentVolumeClaim").some((d) => name(d) === claim),
          `no claim ${String(claim)}`,
        );
      }
    }
  });

  test("the Service and the PodDisruptionBudget select the Deployment's pods", () => {
    const [dep] = byKind("Deployment");
    const spec = obj(obj(dep, "Deployment").spec, "spec");
    const labels = obj(obj(obj(spec.template, "template").metadata, "template metadata").labels, "labels");
    const matches = (sel: Doc) => Object.entries(sel).every(([k, v]) => labels[k] === v);
    const [svc] = byKind("Service");
    assert.ok(matches(obj(obj(obj(svc, "Service").spec, "spec").selector, "selector")));
    const [pdb] = byKind("PodDisruptionBudget");
    const pdbSpec = obj(obj(pdb, "PodDisruptionBudget").spec, "spec");
    assert.ok(matches(obj(obj(pdbSpec.selector, "selector").matchLabels, "matchLabels")));
    assert.equal(pdbSpec.minAvailable, 1);
  });
});
