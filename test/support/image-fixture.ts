/**
 * Builds tiny but real LXD container images from the host's static busybox, laid out the way
 * distrobuilder 2.x writes a split image (simplestreams.md §3.6): `lxd.tar.xz` (metadata.yaml +
 * templates/), `rootfs.squashfs`, optionally `rootfs.tar.xz`. Real tools do the packing
 * (tar, xz, mksquashfs), so the result is what LXD itself accepts with `lxc image import`.
 *
 * Builds are reproducible: the same options give byte-identical files (fixed timestamps, sorted
 * tar entries, root ownership, single-threaded xz), so only `marker` (written to
 * `/etc/lxhub-marker`) has to change to get a different image.
 */
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { stringify } from "yaml";
import { runOk } from "./process.js";

/** `lxc`: an LXC download-template build (`rootfs.tar.xz` and `meta.tar.xz`, simplestreams.md §7.3). */
export type RootfsFormat = "squashfs" | "tar.xz" | "lxc";

export interface BusyboxImageOptions {
  /** Default `busybox`. */
  os?: string;
  /** Default `1.36`. */
  release?: string;
  /** Default `default`. */
  variant?: string;
  /** Distro-style architecture name; only amd64 is built (the host's busybox). */
  arch?: "amd64";
  /** Version key `YYYYMMDD_HHMM`; default derived from `creationDate`. */
  serial?: string;
  /** Default: parsed from `serial` when given, else 2024-01-01T00:00Z. Second precision. */
  creationDate?: Date;
  /** Content of `/etc/lxhub-marker`; default `<os> <release> <variant> <serial>`. */
  marker?: string;
  /** Root file systems to write; default `["squashfs"]`. */
  formats?: RootfsFormat[];
}

/** The `metadata.yaml` written into `lxd.tar.xz` (fields as in simplestreams.md §3.6). */
export interface ImageMetadata {
  architecture: string;
  creation_date: number;
  properties: {
    architecture: string;
    description: string;
    name: string;
    os: string;
    release: string;
    serial: string;
    variant: string;
  };
  templates: Record<string, never>;
}

export interface BusyboxImage {
  /** The directory holding the image files (and nothing else). */
  dir: string;
  /** File name → absolute path: `lxd.tar.xz`, `rootfs.squashfs`, `rootfs.tar.xz` as requested. */
  files: Record<string, string>;
  metadata: ImageMetadata;
  serial: string;
  marker: string;
}

const BUSYBOX = "/bin/busybox";
const LXD_ARCH: Record<"amd64", string> = { amd64: "x86_64" };

/** `YYYYMMDD_HHMM` in UTC, the distrobuilder serial format (simplestreams.md §2.4). */
export function serialOf(date: Date): string {
  const iso = date.toISOString(); // 2024-01-01T00:00:00.000Z
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}_${iso.slice(11, 13)}${iso.slice(14, 16)}`;
}

function dateOfSerial(serial: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})(?:_(\d{2})(\d{2}))?/.exec(serial);
  if (!m) throw new Error(`serial ${serial} does not start with YYYYMMDD`);
  const [, y, mo, d, h = "00", mi = "00"] = m;
  return new Date(`${y}-${mo}-${d}T${h}:${mi}:00Z`);
}

/** Environment that keeps tar/xz/mksquashfs output independent of the caller's settings. */
function toolEnv(): NodeJS.ProcessEnv {
  // No SOURCE_DATE_EPOCH: mksquashfs refuses it together with -mkfs-time/-all-time.
  return { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C", TZ: "UTC" };
}

/** Writes a minimal bootable busybox tree: init runs `/bin/true` once, then keeps `sleep` alive. */
async function writeRootfs(
  root: string,
  marker: string,
  opts: { os: string; release: string },
): Promise<void> {
  if (!existsSync(BUSYBOX)) {
    throw new Error(`${BUSYBOX} not found: install the Debian package busybox-static`);
  }
  const file = await runOk("file", ["-L", BUSYBOX]).catch(() => undefined);
  if (file && !/statically linked|static-pie/.test(file.stdout)) {
    throw new Error(`${BUSYBOX} is not statically linked (${file.stdout.trim()}): install busybox-static`);
  }
  for (const d of [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "dev",
    "proc",
    "sys",
    "run",
    "var",
    "etc",
    "root",
    "tmp",
  ]) {
    await mkdir(join(root, d), { recursive: true });
  }
  await chmod(join(root, "tmp"), 0o1777);
  await chmod(join(root, "root"), 0o700);
  await copyFile(BUSYBOX, join(root, "bin/busybox"));
  await chmod(join(root, "bin/busybox"), 0o755);

  const applets = (await runOk(BUSYBOX, ["--list-full"])).stdout.split("\n").filter((l) => l.trim() !== "");
  for (const rel of new Set([...applets, "sbin/init"])) {
    const target = join(root, rel);
    if (rel === "bin/busybox" || existsSync(target)) continue;
    await mkdir(dirname(target), { recursive: true });
    await symlink("/bin/busybox", target);
  }

  const etc = (name: string, text: string) => writeFile(join(root, "etc", name), text, { mode: 0o644 });
  await etc("inittab", "::sysinit:/bin/true\n::respawn:/bin/sleep 3600\n");
  await etc("passwd", "root:x:0:0:root:/root:/bin/sh\n");
  await etc("group", "root:x:0:\n");
  await etc("hostname", "busybox\n");
  await etc("os-release", `ID=${opts.os}\nNAME="${opts.os}"\nVERSION_ID="${opts.release}"\n`);
  await etc("lxhub-marker", `${marker}\n`);
}

/**
 * Builds one busybox image version into `dir` (created if missing; existing image files are
 * overwritten). The staging tree lives in a temporary directory so `dir` holds only the image
 * files, ready for `lxhub push DIR` or `lxc image import`.
 */
export async function buildBusyboxImage(dir: string, opts: BusyboxImageOptions = {}): Promise<BusyboxImage> {
  const os = opts.os ?? "busybox";
  const release = opts.release ?? "1.36";
  const variant = opts.variant ?? "default";
  const arch = opts.arch ?? "amd64";
  const creation =
    opts.creationDate ?? (opts.serial ? dateOfSerial(opts.serial) : new Date("2024-01-01T00:00:00Z"));
  const serial = opts.serial ?? serialOf(creation);
  const marker = opts.marker ?? `${os} ${release} ${variant} ${serial}`;
  const formats = opts.formats ?? ["squashfs"];
  const epoch = Math.floor(creation.getTime() / 1000);
  const env = toolEnv();

  const metadata: ImageMetadata = {
    architecture: LXD_ARCH[arch],
    creation_date: epoch,
    properties: {
      architecture: arch,
      description: `${os} ${release} ${arch} (${serial})`,
      name: `${os}-${release}-${arch}-${variant}-${serial}`,
      os,
      release,
      serial,
      variant,
    },
    templates: {},
  };

  await mkdir(dir, { recursive: true });
  const stage = await mkdtemp(join(tmpdir(), "lxhub-test-image-"));
  try {
    const root = join(stage, "rootfs");
    const meta = join(stage, "meta");
    await writeRootfs(root, marker, { os, release });
    await mkdir(join(meta, "templates"), { recursive: true });
    await writeFile(join(meta, "metadata.yaml"), stringify(metadata), { mode: 0o644 });

    const tarFlags = [
      "--sort=name",
      `--mtime=@${epoch}`,
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "--format=gnu",
    ];
    const xz = async (tarFile: string, out: string) => {
      await runOk("xz", ["-T1", "-6", "--check=crc64", "--stdout", tarFile], { env, stdoutFile: out });
    };

    const files: Record<string, string> = {};
    const metaTar = join(stage, "meta.tar");
    await runOk("tar", [...tarFlags, "-C", meta, "-cf", metaTar, "metadata.yaml", "templates"], { env });
    files["lxd.tar.xz"] = join(dir, "lxd.tar.xz");
    await xz(metaTar, files["lxd.tar.xz"]);

    if (formats.includes("squashfs")) {
      const out = join(dir, "rootfs.squashfs");
      await rm(out, { force: true });
      await runOk(
        "mksquashfs",
        [root, out, "-noappend", "-all-root", "-comp", "xz", "-no-xattrs", "-no-progress", "-quiet"].concat([
          "-mkfs-time",
          String(epoch),
          "-all-time",
          String(epoch),
        ]),
        { env, timeoutMs: 300_000 },
      );
      files["rootfs.squashfs"] = out;
    }
    if (formats.includes("tar.xz") || formats.includes("lxc")) {
      const rootTar = join(stage, "rootfs.tar");
      await runOk("tar", [...tarFlags, "-C", root, "-cf", rootTar, "."], { env });
      files["rootfs.tar.xz"] = join(dir, "rootfs.tar.xz");
      await xz(rootTar, files["rootfs.tar.xz"]);
    }
    if (formats.includes("lxc")) {
      // What `distrobuilder build-lxc` writes (simplestreams.md §7.3), as small as the template takes.
      const lxc = join(stage, "lxc-meta");
      await mkdir(lxc);
      await writeFile(
        join(lxc, "config"),
        "lxc.include = LXC_TEMPLATE_CONFIG/common.conf\nlxc.arch = x86_64\n",
      );
      await writeFile(
        join(lxc, "config-user"),
        "lxc.include = LXC_TEMPLATE_CONFIG/common.conf\nlxc.include = LXC_TEMPLATE_CONFIG/userns.conf\nlxc.arch = x86_64\n",
      );
      await writeFile(join(lxc, "templates"), "/etc/hostname\n");
      await writeFile(join(lxc, "create-message"), `${os} ${release} (${serial}) from lxhub\n`);
      await writeFile(join(lxc, "expiry"), `${epoch + 30 * 86400}\n`);
      const lxcTar = join(stage, "lxc-meta.tar");
      await runOk(
        "tar",
        [
          ...tarFlags,
          "-C",
          lxc,
          "-cf",
          lxcTar,
          "config",
          "config-user",
          "create-message",
          "expiry",
          "templates",
        ],
        { env },
      );
      files["meta.tar.xz"] = join(dir, "meta.tar.xz");
      await xz(lxcTar, files["meta.tar.xz"]);
    }
    return { dir, files, metadata, serial, marker };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/** Lower-case hex sha256 of the concatenated bytes of `paths`, read as a stream. */
export async function sha256Files(paths: readonly string[]): Promise<string> {
  const hash = createHash("sha256");
  for (const p of paths) {
    for await (const chunk of createReadStream(p, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  }
  return hash.digest("hex");
}

/** Lower-case hex sha256 of one file. */
export function sha256File(path: string): Promise<string> {
  return sha256Files([path]);
}

/**
 * The LXD image fingerprint of a split image: sha256(metadata tarball ‖ rootfs), metadata first
 * (simplestreams.md §3.3).
 */
export function imageFingerprint(
  image: BusyboxImage,
  rootfs: "rootfs.squashfs" | "rootfs.tar.xz" = "rootfs.squashfs",
): Promise<string> {
  const meta = image.files["lxd.tar.xz"];
  const root = image.files[rootfs];
  if (!meta || !root) throw new Error(`image in ${image.dir} has no ${rootfs}`);
  return sha256Files([meta, root]);
}
