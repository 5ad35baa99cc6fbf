/**
 * What the LXD and Incus harnesses share (test/support/lxd.ts, test/support/incus.ts): both are a
 * daemon on a unix socket plus a CLI with the same commands for what the tests do (remote add,
 * image list/info/copy, launch, exec, delete), the same `--format json` shapes and the same
 * pinned-certificate rule for simplestreams remotes (simplestreams.md §1.2). A `ManagerSpec` says
 * where the two differ (command names, environment variables, daemon start, preseed command).
 *
 * - `ensure()` finds a running daemon or starts one (no systemd needed), and makes sure a `dir`
 *   storage pool named `default` backs the default profile's root disk; no network is configured,
 *   so containers run without NICs.
 * - `run()` runs the real CLI with a private client configuration (a temporary directory per test
 *   process, named by the spec's variable), so remotes and pinned certificates never reach the
 *   user's own configuration. The daemon itself is shared: everything a test creates there must be
 *   named with `TEST_PREFIX` and removed again (see `ManagerCleanup`).
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

export interface ManagerSpec {
  /** For messages: `LXD`, `Incus`. */
  product: string;
  /** The client command on the PATH: `lxc`, `incus`. */
  cli: string;
  /** The variable naming the client configuration directory: `LXD_CONF`, `INCUS_CONF`. */
  confVar: string;
  /** The variable that lowers the TLS 1.3 minimum; tests never inherit it (§1.2). */
  insecureTlsVar: string;
  /** Further client variables pointed at folders inside the private configuration (Incus: `INCUS_CACHE`). */
  privateDirVars?: readonly string[];
  /** What to install when a command is missing, for the error message. */
  packages: string;
  /** The daemon executable (absolute, or a name on the PATH). */
  daemon: string;
  /** Extra environment of a daemon started here. */
  daemonEnv?: NodeJS.ProcessEnv;
  /** `[command, args]` that waits until the daemon answers, at most `timeoutSeconds`. */
  waitReady(timeoutSeconds: number): [string, string[]];
  /** `[command, args]` that reads a preseed YAML on stdin. */
  preseed: [string, string[]];
  /** The daemon's cache folder, where it keeps a simplestreams remote's index documents (§1.5). */
  cacheRoot(): string;
}

/** One image as `<cli> image list --format json` prints it (the fields tests read). */
export interface ListedImage {
  fingerprint: string;
  aliases: { name: string; description?: string }[] | null;
  properties: Record<string, string>;
  architecture: string;
  type: string;
  size: number;
  filename: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

function preseedYaml(product: string): string {
  return `storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  description: Default ${product} profile
  devices:
    root:
      path: /
      pool: default
      type: disk
`;
}

/** A daemon and its CLI, driven the way a user drives them, with a private client configuration. */
export class ContainerManager {
  private confDirPath: string | undefined;
  private ready: Promise<void> | undefined;

  constructor(readonly spec: ManagerSpec) {}

  /** The private client configuration directory of this process, created on first use and removed at exit. */
  confDir(): string {
    if (!this.confDirPath) {
      const dir = mkdtempSync(join(tmpdir(), `${TEST_PREFIX}${this.spec.cli}conf-`));
      this.confDirPath = dir;
      process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
    }
    return this.confDirPath;
  }

  private env(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
    const conf = this.confDir();
    const env: NodeJS.ProcessEnv = { ...process.env, [this.spec.confVar]: conf };
    for (const v of this.spec.privateDirVars ?? []) env[v] = join(conf, v.toLowerCase());
    Object.assign(env, extra);
    // Tests must see the TLS 1.3 requirement real users get (simplestreams.md §1.2).
    if (!extra || !(this.spec.insecureTlsVar in extra)) delete env[this.spec.insecureTlsVar];
    return env;
  }

  /** Runs the real CLI with the private client configuration; never rejects on a non-zero exit. */
  run(args: readonly string[], opts: CliOptions = {}): Promise<RunResult> {
    return run(this.spec.cli, args, { env: this.env(opts.env), timeoutMs: opts.timeoutMs ?? 180_000 });
  }

  /** Like `run`, but rejects with the command line and stderr unless it exits with 0. */
  async ok(args: readonly string[], opts: CliOptions = {}): Promise<RunResult> {
    const r = await this.run(args, opts);
    if (r.code !== 0) {
      throw new Error(
        `${this.spec.cli} ${args.join(" ")} exited with ${r.code}\nstderr: ${r.stderr.trim()}\nstdout: ${r.stdout.trim()}`,
      );
    }
    return r;
  }

  private async daemonReady(timeoutSeconds: number): Promise<boolean> {
    const [cmd, args] = this.spec.waitReady(timeoutSeconds);
    const r = await run(cmd, args, { env: this.env(), timeoutMs: (timeoutSeconds + 10) * 1000 });
    return r.code === 0;
  }

  /** Starts the daemon detached (it outlives the test process, like a system service would). */
  private startDaemon(): string {
    const logFile = join(tmpdir(), `${TEST_PREFIX}${this.spec.product.toLowerCase()}.log`);
    const fd = openSync(logFile, "a");
    try {
      const child = spawn(this.spec.daemon, ["--group", "root", "--logfile", logFile], {
        detached: true,
        stdio: ["ignore", fd, fd],
        env: { ...process.env, ...this.spec.daemonEnv },
      });
      child.on("error", () => undefined); // reported through waitready
      child.unref();
    } finally {
      closeSync(fd);
    }
    return logFile;
  }

  /**
   * Makes sure the daemon answers on its unix socket and can launch a container: starts one if
   * none runs (needs root), then applies the minimal preseed unless pool `default` already exists,
   * and adds the root disk to the default profile if it lacks one. Idempotent and cached per process.
   */
  ensure(): Promise<void> {
    const { product, cli, daemon, packages } = this.spec;
    this.ready ??= (async () => {
      const which = await run("sh", ["-c", 'command -v "$1" && command -v "$2"', "sh", daemon, cli]);
      if (which.code !== 0)
        throw new Error(`${daemon}/${cli} not found: install the Debian packages ${packages}`);
      if (!(await this.daemonReady(1))) {
        if (process.getuid?.() !== 0)
          throw new Error(`no ${product} daemon is running and starting one needs root`);
        const logFile = this.startDaemon();
        if (!(await this.daemonReady(60))) {
          const log = await run("tail", ["-n", "30", logFile]);
          throw new Error(`${product} did not become ready within 60 s; ${logFile}:\n${log.stdout}`);
        }
      }
      if ((await this.run(["storage", "show", "default"])).code !== 0) {
        const [cmd, args] = this.spec.preseed;
        const r = await run(cmd, args, { input: preseedYaml(product), timeoutMs: 120_000, env: this.env() });
        if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr.trim()}`);
      }
      const profile = await this.ok(["profile", "device", "list", "default"]);
      if (!profile.stdout.split("\n").some((l) => l.trim() === "root")) {
        await this.ok(["profile", "device", "add", "default", "root", "disk", "path=/", "pool=default"]);
      }
    })();
    this.ready.catch(() => (this.ready = undefined));
    return this.ready;
  }

  /**
   * Adds a simplestreams remote to the private client configuration with `certPem` pinned: the
   * file `<conf>/servercerts/<name>.crt` is trusted as an extra root for that remote and
   * forwarded to the daemon on `image copy`/`launch` (simplestreams.md §1.2).
   */
  async addSimplestreamsRemote(name: string, url: string, certPem: string): Promise<void> {
    const certs = join(this.confDir(), "servercerts");
    await mkdir(certs, { recursive: true });
    await writeFile(join(certs, `${name}.crt`), certPem);
    await this.ok(["remote", "add", name, url, "--protocol=simplestreams", "--public"]);
  }

  /** Removes a remote and its pinned certificate from the private configuration. */
  async removeRemote(name: string): Promise<RunResult> {
    const r = await this.run(["remote", "remove", name]);
    await rm(join(this.confDir(), "servercerts", `${name}.crt`), { force: true });
    return r;
  }

  /** `<cli> image list <remote>: --format json`, parsed. */
  async listImages(remote: string): Promise<ListedImage[]> {
    const r = await this.ok(["image", "list", `${remote}:`, "--format", "json"]);
    return JSON.parse(r.stdout) as ListedImage[];
  }

  /** The full fingerprint printed by `<cli> image info <ref>`. */
  async imageInfoFingerprint(ref: string): Promise<string> {
    const r = await this.ok(["image", "info", ref]);
    const m = /^Fingerprint:\s*([0-9a-f]{64})\s*$/m.exec(r.stdout);
    if (!m?.[1]) throw new Error(`no fingerprint in ${this.spec.cli} image info ${ref}:\n${r.stdout}`);
    return m[1];
  }

  /** Where the daemon caches a simplestreams remote's index documents: sha256 of the URL (§1.5). */
  daemonStreamCacheDir(url: string): string {
    return join(this.spec.cacheRoot(), createHash("sha256").update(url.replace(/\/$/, "")).digest("hex"));
  }
}

function assertTestName(name: string): void {
  if (!name.startsWith(TEST_PREFIX))
    throw new Error(`refusing to touch ${name}: test resources start with ${TEST_PREFIX}`);
}

/**
 * Records what a test creates on the shared daemon and removes it again, in reverse order, even
 * when the test failed half-way. Containers and remotes must carry `TEST_PREFIX`; images are
 * tracked by fingerprint (the test built them, so the fingerprint is its own).
 */
export class ManagerCleanup {
  private readonly steps: { what: string; undo: () => Promise<RunResult | void> }[] = [];

  constructor(private readonly manager: ContainerManager) {}

  container(name: string): string {
    assertTestName(name);
    this.cli(`container ${name}`, ["delete", "--force", name]);
    return name;
  }

  image(fingerprint: string): string {
    if (!/^[0-9a-f]{64}$/.test(fingerprint)) throw new Error(`not a full fingerprint: ${fingerprint}`);
    this.cli(`image ${fingerprint}`, ["image", "delete", fingerprint]);
    return fingerprint;
  }

  private cli(what: string, args: string[]): void {
    this.steps.push({ what, undo: () => this.manager.run(args) });
  }

  /** The remote in the private configuration and, given its URL, the daemon's cache of its index. */
  remote(name: string, url?: string): string {
    assertTestName(name);
    this.steps.push({ what: `remote ${name}`, undo: () => this.manager.removeRemote(name) });
    if (url) {
      const dir = this.manager.daemonStreamCacheDir(url);
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
