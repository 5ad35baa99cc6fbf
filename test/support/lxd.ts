/**
 * The real LXD (Debian `lxd`/`lxd-client` 5.0.2) for end-to-end tests.
 *
 * - `ensureLxd()` finds a running daemon or starts one (no systemd needed), and makes sure a
 *   `dir` storage pool named `default` backs the default profile's root disk; no network is
 *   configured, so containers run without NICs.
 * - `lxc()` runs the real CLI with a private client configuration (`LXD_CONF` in a temporary
 *   directory per test process), so remotes and pinned certificates never reach the user's
 *   `~/.config/lxc`. The daemon itself is shared: everything a test creates there must be named
 *   with `TEST_PREFIX` and removed again (see `LxdCleanup`).
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, type RunResult } from "./process.js";

/** Every container, image alias and remote a test creates is named with this prefix. */
export const TEST_PREFIX = "lxhub-test-";

const PRESEED = `storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  description: Default LXD profile
  devices:
    root:
      path: /
      pool: default
      type: disk
`;

let confDir: string | undefined;

/** The private `LXD_CONF` of this process, created on first use and removed at exit. */
export function lxcConfDir(): string {
  if (!confDir) {
    const dir = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}lxcconf-`));
    confDir = dir;
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return confDir;
}

function lxcEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LXD_CONF: lxcConfDir(), ...extra };
  // Tests must see the TLS 1.3 requirement real users get (simplestreams.md §1.2).
  if (!extra || !("LXD_INSECURE_TLS" in extra)) delete env.LXD_INSECURE_TLS;
  return env;
}

/** Runs the real `lxc` with the private client configuration; never rejects on a non-zero exit. */
export function lxc(
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return run("lxc", args, { env: lxcEnv(opts.env), timeoutMs: opts.timeoutMs ?? 180_000 });
}

/** Like `lxc`, but rejects with the command line and stderr unless it exits with 0. */
export async function lxcOk(
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  const r = await lxc(args, opts);
  if (r.code !== 0) {
    throw new Error(
      `lxc ${args.join(" ")} exited with ${r.code}\nstderr: ${r.stderr.trim()}\nstdout: ${r.stdout.trim()}`,
    );
  }
  return r;
}

async function daemonReady(timeoutSeconds: number): Promise<boolean> {
  const r = await run("lxd", ["waitready", `--timeout=${timeoutSeconds}`], {
    timeoutMs: (timeoutSeconds + 10) * 1000,
  });
  return r.code === 0;
}

/** Starts `lxd` detached (it outlives the test process, like a system service would). */
function startDaemon(): string {
  const logFile = join(tmpdir(), "lxhub-test-lxd.log");
  const fd = openSync(logFile, "a");
  try {
    const child = spawn("lxd", ["--group", "root", "--logfile", logFile], {
      detached: true,
      stdio: ["ignore", fd, fd],
    });
    child.on("error", () => undefined); // reported below through waitready
    child.unref();
  } finally {
    closeSync(fd);
  }
  return logFile;
}

let ready: Promise<void> | undefined;

/**
 * Makes sure an LXD daemon answers on its unix socket and can launch a container: starts one if
 * none runs (needs root), then applies the minimal preseed unless pool `default` already exists,
 * and adds the root disk to the default profile if it lacks one. Idempotent and cached per process.
 */
export function ensureLxd(): Promise<void> {
  ready ??= (async () => {
    const which = await run("sh", ["-c", "command -v lxd && command -v lxc"]);
    if (which.code !== 0)
      throw new Error("lxd/lxc not found: install the Debian packages lxd and lxd-client");
    if (!(await daemonReady(1))) {
      if (process.getuid?.() !== 0) throw new Error("no LXD daemon is running and starting one needs root");
      const logFile = startDaemon();
      if (!(await daemonReady(60))) {
        const log = await run("tail", ["-n", "30", logFile]);
        throw new Error(`LXD did not become ready within 60 s; ${logFile}:\n${log.stdout}`);
      }
    }
    if ((await lxc(["storage", "show", "default"])).code !== 0) {
      const r = await run("lxd", ["init", "--preseed"], { input: PRESEED, timeoutMs: 120_000 });
      if (r.code !== 0) throw new Error(`lxd init --preseed failed: ${r.stderr.trim()}`);
    }
    const profile = await lxcOk(["profile", "device", "list", "default"]);
    if (!profile.stdout.split("\n").some((l) => l.trim() === "root")) {
      await lxcOk(["profile", "device", "add", "default", "root", "disk", "path=/", "pool=default"]);
    }
  })();
  ready.catch(() => (ready = undefined));
  return ready;
}

/**
 * Adds a simplestreams remote to the private client configuration with `certPem` pinned: the
 * file `<LXD_CONF>/servercerts/<name>.crt` is trusted as an extra root for that remote and
 * forwarded to the daemon on `image copy`/`launch` (simplestreams.md §1.2).
 */
export async function addSimplestreamsRemote(name: string, url: string, certPem: string): Promise<void> {
  const certs = join(lxcConfDir(), "servercerts");
  await mkdir(certs, { recursive: true });
  await writeFile(join(certs, `${name}.crt`), certPem);
  await lxcOk(["remote", "add", name, url, "--protocol=simplestreams", "--public"]);
}

/** Removes a remote and its pinned certificate from the private configuration. */
export async function removeRemote(name: string): Promise<void> {
  await lxc(["remote", "remove", name]);
  await rm(join(lxcConfDir(), "servercerts", `${name}.crt`), { force: true });
}

/** One image as `lxc image list --format json` prints it (the fields tests read). */
export interface LxcImage {
  fingerprint: string;
  aliases: { name: string; description?: string }[] | null;
  properties: Record<string, string>;
  architecture: string;
  type: string;
  size: number;
  filename: string;
}

/** `lxc image list <remote>: --format json`, parsed. */
export async function listImages(remote: string): Promise<LxcImage[]> {
  const r = await lxcOk(["image", "list", `${remote}:`, "--format", "json"]);
  return JSON.parse(r.stdout) as LxcImage[];
}

/** The full fingerprint printed by `lxc image info <ref>`. */
export async function imageInfoFingerprint(ref: string): Promise<string> {
  const r = await lxcOk(["image", "info", ref]);
  const m = /^Fingerprint:\s*([0-9a-f]{64})\s*$/m.exec(r.stdout);
  if (!m?.[1]) throw new Error(`no fingerprint in lxc image info ${ref}:\n${r.stdout}`);
  return m[1];
}

/**
 * Where the daemon caches a simplestreams remote's index documents (LXD 5.0.2 without snap:
 * `$LXD_DIR/cache` or `/var/cache/lxd`, then sha256 of the URL; simplestreams.md §1.5).
 */
export function daemonStreamCacheDir(url: string): string {
  const root = process.env.LXD_DIR ? join(process.env.LXD_DIR, "cache") : "/var/cache/lxd";
  return join(root, createHash("sha256").update(url.replace(/\/$/, "")).digest("hex"));
}

function assertTestName(name: string): void {
  if (!name.startsWith(TEST_PREFIX))
    throw new Error(`refusing to touch ${name}: test resources start with ${TEST_PREFIX}`);
}

/**
 * Records what a test creates on the shared daemon and removes it again, in reverse order, even
 * when the test failed half-way. Containers and aliases must carry `TEST_PREFIX`; images are
 * tracked by fingerprint (the test built them, so the fingerprint is its own).
 */
export class LxdCleanup {
  private readonly steps: { what: string; undo: () => Promise<RunResult | void> }[] = [];

  container(name: string): string {
    assertTestName(name);
    this.steps.push({ what: `container ${name}`, undo: () => lxc(["delete", "--force", name]) });
    return name;
  }

  image(fingerprint: string): string {
    if (!/^[0-9a-f]{64}$/.test(fingerprint)) throw new Error(`not a full fingerprint: ${fingerprint}`);
    this.steps.push({ what: `image ${fingerprint}`, undo: () => lxc(["image", "delete", fingerprint]) });
    return fingerprint;
  }

  remote(name: string, url?: string): string {
    assertTestName(name);
    this.steps.push({ what: `remote ${name}`, undo: () => removeRemote(name) });
    if (url) {
      const dir = daemonStreamCacheDir(url);
      this.steps.push({ what: `daemon cache ${dir}`, undo: () => rm(dir, { recursive: true, force: true }) });
    }
    return name;
  }

  /** Any other undo step (e.g. stopping a server); runs in the same reverse order. */
  add(what: string, undo: () => Promise<unknown>): void {
    this.steps.push({ what, undo: async () => void (await undo()) });
  }

  /**
   * Runs every undo step; a step that fails because the thing is already gone is fine, other
   * failures are collected and returned so the caller can report them without hiding the test's
   * own error.
   */
  async run(): Promise<string[]> {
    const problems: string[] = [];
    for (const step of this.steps.reverse()) {
      try {
        const r = await step.undo();
        if (r && r.code !== 0 && !/not found|doesn't exist|does not exist/i.test(r.stderr)) {
          problems.push(`${step.what}: ${r.stderr.trim()}`);
        }
      } catch (err) {
        problems.push(`${step.what}: ${(err as Error).message}`);
      }
    }
    this.steps.length = 0;
    return problems;
  }
}
