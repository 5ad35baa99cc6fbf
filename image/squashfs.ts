/**
 * Unpacking a squashfs root file system (`rootfs.squashfs`, simplestreams.md §3.6) into a
 * directory with `unsquashfs` from squashfs-tools (decisions.md: squashfs), under the same
 * contract as unpack.ts: a private staging directory beside the destination, renamed into place
 * only when unsquashfs succeeded, removed on any failure; the destination absent or empty.
 *
 * What keeps a hostile image inside the destination is unsquashfs itself, so the version matters.
 * squashfs-tools 4.5.1 (Debian 12) refuses directory entries named `.` or `..` or containing `/`
 * (`check_name`, the CVE-2021-40153 fix) and directories whose names are duplicated or unsorted
 * (`check_directory`, the CVE-2021-41072 fix: a symlink followed by contents under the same name
 * can no longer send writes through the link). It never follows a name that already exists
 * because the tree starts empty and `-f` is not passed; hard links only join inodes it has
 * already written inside the tree; symlink targets are stored as they are. Versions before 4.5.1
 * (unless patched, as Debian's 4.5-3 and bullseye's 4.4-2+deb11u2 are) are unsafe here.
 *
 * Owners and modes follow unsquashfs: as root it restores uid/gid, modes, times, device nodes
 * and xattrs; as non-root it skips chown by itself, `-user-xattrs` is passed so other xattrs are
 * skipped rather than reported as errors, and device nodes cannot be made — unsquashfs reports
 * that as a non-fatal error (exit status 2), which fails the unpack here, as a device node in a
 * tarball does. Also as non-root, setuid/setgid/sticky bits are cleared before the tree becomes
 * visible, as unpack.ts does when it does not restore owners.
 */
import { spawn } from "node:child_process";
import { chmodSync, lstatSync, readdirSync } from "node:fs";
import { access, constants, mkdtemp } from "node:fs/promises";
import { join, resolve } from "node:path";
import { checkDestination, moveIntoPlace, removeTree } from "./unpack.js";

/** Why an unsquashfs run failed. */
export type UnsquashfsFailure =
  /** The program is not installed (or not at the path given). */
  | "NOT_INSTALLED"
  /** The image file cannot be read. */
  | "UNREADABLE"
  /** unsquashfs exited non-zero: a corrupt image, an I/O error, or (2) something it could not create. */
  | "FAILED"
  /** The caller's signal aborted the run. */
  | "ABORTED";

export class UnsquashfsError extends Error {
  override name = "UnsquashfsError";
  constructor(
    readonly reason: UnsquashfsFailure,
    message: string,
    /** unsquashfs's exit status, when it exited. */
    readonly exitCode?: number | null,
    /** What unsquashfs wrote to stderr (capped). */
    readonly stderr?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface UnsquashfsOptions {
  /** The program to run; default `unsquashfs` from PATH. */
  command?: string;
  /** Aborting kills unsquashfs and removes the staging directory. */
  signal?: AbortSignal;
}

const STDERR_CAP = 16 * 1024;

/** Runs unsquashfs to completion; resolves on exit status 0. */
function run(command: string, args: string[], signal: AbortSignal | undefined): Promise<void> {
  return new Promise((res, rej) => {
    const child = spawn(command, args, { stdio: ["ignore", "ignore", "pipe"], signal });
    let stderr = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      if (stderr.length < STDERR_CAP) stderr += text.slice(0, STDERR_CAP - stderr.length);
    });
    child.on("error", (err: NodeJS.ErrnoException) => {
      if (err.name === "AbortError")
        rej(new UnsquashfsError("ABORTED", "unsquashfs was aborted", null, stderr));
      else if (err.code === "ENOENT") {
        rej(new UnsquashfsError("NOT_INSTALLED", "unsquashfs not found: apt-get install squashfs-tools"));
      } else rej(new UnsquashfsError("FAILED", `unsquashfs could not be started: ${err.message}`));
    });
    child.on("close", (code: number | null, sig: NodeJS.Signals | null) => {
      if (code === 0) return res();
      if (signal?.aborted) return rej(new UnsquashfsError("ABORTED", "unsquashfs was aborted", code, stderr));
      const said = stderr.trim() || "no message";
      const how =
        code === 2
          ? "exit status 2: it could not create everything in the image"
          : code !== null
            ? `exit status ${code}`
            : `signal ${sig ?? "unknown"}`;
      const hint = /not superuser/.test(stderr) ? " (device nodes can only be created as root)" : "";
      rej(new UnsquashfsError("FAILED", `unsquashfs failed (${how})${hint}: ${said}`, code, stderr));
    });
  });
}

/** Clears setuid/setgid/sticky bits throughout a tree, never following symlinks. */
function clearSpecialBits(dir: string): void {
  const st = lstatSync(dir);
  if (st.mode & 0o7000) chmodSync(dir, st.mode & 0o777);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) clearSpecialBits(path);
    else if (!entry.isSymbolicLink()) {
      const mode = lstatSync(path).mode;
      if (mode & 0o7000) chmodSync(path, mode & 0o777);
    }
  }
}

/**
 * Unpacks the squashfs image `file` into `dest` (absent or an empty directory): into
 * `<dest>.lxhub-partial-<random>/rootfs` with `unsquashfs -d … -n -q`, then renamed to `dest`.
 * On failure nothing is left behind and `dest` is as it was. Throws `UnpackError` (DEST_EXISTS,
 * CROSS_DEVICE) for the destination, `UnsquashfsError` for everything else. There is no size
 * limit: the image's hash is expected to have been verified before.
 */
export async function unsquashfs(file: string, dest: string, opts: UnsquashfsOptions = {}): Promise<void> {
  const image = resolve(file);
  const target = resolve(dest);
  await checkDestination(target);
  try {
    await access(image, constants.R_OK);
  } catch (err) {
    throw new UnsquashfsError(
      "UNREADABLE",
      `cannot read the squashfs image ${image}: ${(err as Error).message}`,
      null,
      "",
      {
        cause: err,
      },
    );
  }
  const root = process.getuid?.() === 0;
  // unsquashfs creates the last component of -d itself and refuses one that exists (without -f).
  const container = await mkdtemp(`${target}.lxhub-partial-`);
  const tree = join(container, "rootfs");
  const args = ["-d", tree, "-n", "-q", ...(root ? [] : ["-user-xattrs"]), image];
  try {
    await run(opts.command ?? "unsquashfs", args, opts.signal);
    if (!root) clearSpecialBits(tree);
    await moveIntoPlace(tree, target);
  } finally {
    await removeTree(container);
  }
}
