/**
 * The real LXD (Debian `lxd`/`lxd-client` 5.0.2) for end-to-end tests, through the harness shared
 * with Incus (test/support/container-manager.ts).
 *
 * - `ensureLxd()` finds a running daemon or starts one (no systemd needed), and makes sure a
 *   `dir` storage pool named `default` backs the default profile's root disk; no network is
 *   configured, so containers run without NICs.
 * - `lxc()` runs the real CLI with a private client configuration (`LXD_CONF` in a temporary
 *   directory per test process), so remotes and pinned certificates never reach the user's
 *   `~/.config/lxc`. The daemon itself is shared: everything a test creates there must be named
 *   with `TEST_PREFIX` and removed again (see `LxdCleanup`).
 */
import { join } from "node:path";
import type { RunResult } from "./process.js";
import { ContainerManager, ManagerCleanup, type CliOptions, type ListedImage } from "./container-manager.js";

export { TEST_PREFIX } from "./container-manager.js";

export const LXD = new ContainerManager({
  product: "LXD",
  cli: "lxc",
  confVar: "LXD_CONF",
  insecureTlsVar: "LXD_INSECURE_TLS",
  packages: "lxd and lxd-client",
  daemon: "lxd",
  waitReady: (s) => ["lxd", ["waitready", `--timeout=${s}`]],
  preseed: ["lxd", ["init", "--preseed"]],
  // LXD 5.0.2 without snap: `$LXD_DIR/cache` or `/var/cache/lxd` (simplestreams.md §1.5).
  cacheRoot: () => (process.env.LXD_DIR ? join(process.env.LXD_DIR, "cache") : "/var/cache/lxd"),
});

/** Runs the real `lxc` with the private client configuration; never rejects on a non-zero exit. */
export const lxc = (args: readonly string[], opts?: CliOptions): Promise<RunResult> => LXD.run(args, opts);

/** Like `lxc`, but rejects with the command line and stderr unless it exits with 0. */
export const lxcOk = (args: readonly string[], opts?: CliOptions): Promise<RunResult> => LXD.ok(args, opts);

/** Starts or finds the LXD daemon and gives it a `dir` pool (see `ContainerManager.ensure`). */
export const ensureLxd = (): Promise<void> => LXD.ensure();

/** `lxc remote add NAME URL --protocol=simplestreams --public` with `certPem` pinned. */
export const addSimplestreamsRemote = (name: string, url: string, certPem: string): Promise<void> =>
  LXD.addSimplestreamsRemote(name, url, certPem);

/** `lxc image list <remote>: --format json`, parsed. */
export const listImages = (remote: string): Promise<ListedImage[]> => LXD.listImages(remote);

/** The full fingerprint printed by `lxc image info <ref>`. */
export const imageInfoFingerprint = (ref: string): Promise<string> => LXD.imageInfoFingerprint(ref);

/** Removes what a test created on the LXD daemon (see `ManagerCleanup`). */
export class LxdCleanup extends ManagerCleanup {
  constructor() {
    super(LXD);
  }
}
