/**
 * The real Incus 6.0 (Debian bookworm-backports `incus`/`incus-client`) for end-to-end tests,
 * through the harness shared with LXD (test/support/container-manager.ts).
 *
 * - `ensureIncus()` finds a running daemon or starts `incusd --group root` (no systemd needed;
 *   the package keeps `incusd` in `/usr/libexec/incus`, off the PATH), and makes sure a `dir`
 *   storage pool named `default` backs the default profile's root disk (`incus admin init
 *   --preseed`); no network is configured, so containers run without NICs.
 * - `incus()` runs the real CLI with a private client configuration (`INCUS_CONF`, and
 *   `INCUS_CACHE` inside it, in a temporary directory per test process), so remotes, pinned
 *   certificates and the CLI's cached index documents never reach the user's `~/.config/incus`
 *   or `~/.cache/incus`. The daemon is shared: everything a test creates there must be named with
 *   `TEST_PREFIX` and removed again (see `IncusCleanup`).
 *
 * Incus and LXD run side by side on one machine: separate state (`/var/lib/incus`,
 * `/var/lib/lxd`), sockets and caches (`/var/cache/incus`, `/var/cache/lxd`); instance names
 * differ per run, so their `lxc.payload.<name>` cgroups never meet.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { RunResult } from "./process.js";
import { ContainerManager, ManagerCleanup, type CliOptions } from "./container-manager.js";

export { TEST_PREFIX } from "./container-manager.js";

const LIBEXEC_INCUSD = "/usr/libexec/incus/incusd";

export const INCUS = new ContainerManager({
  product: "Incus",
  cli: "incus",
  confVar: "INCUS_CONF",
  insecureTlsVar: "INCUS_INSECURE_TLS",
  privateDirVars: ["INCUS_CACHE"],
  packages: "incus and incus-client (from bookworm-backports, see .ci/run)",
  daemon: existsSync(LIBEXEC_INCUSD) ? LIBEXEC_INCUSD : "incusd",
  // Loopback only: no fetch of instance types from images.linuxcontainers.org at start.
  daemonEnv: { INCUS_SKIP_INSTANCE_TYPES: "1" },
  waitReady: (s) => ["incus", ["admin", "waitready", `--timeout=${s}`]],
  preseed: ["incus", ["admin", "init", "--preseed"]],
  cacheRoot: () => (process.env.INCUS_DIR ? join(process.env.INCUS_DIR, "cache") : "/var/cache/incus"),
});

/** Runs the real `incus` with the private client configuration; never rejects on a non-zero exit. */
export const incus = (args: readonly string[], opts?: CliOptions): Promise<RunResult> =>
  INCUS.run(args, opts);

/** Like `incus`, but rejects with the command line and stderr unless it exits with 0. */
export const incusOk = (args: readonly string[], opts?: CliOptions): Promise<RunResult> =>
  INCUS.ok(args, opts);

/** Starts or finds the Incus daemon and gives it a `dir` pool (see `ContainerManager.ensure`). */
export const ensureIncus = (): Promise<void> => INCUS.ensure();

/** Removes what a test created on the Incus daemon (see `ManagerCleanup`). */
export class IncusCleanup extends ManagerCleanup {
  constructor() {
    super(INCUS);
  }
}
