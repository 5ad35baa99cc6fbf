/**
 * The smallest real split image the publish API and `lxhub push` accept, made with tar and xz only
 * (no mksquashfs, no busybox): `lxd.tar.xz` holding metadata.yaml and `rootfs.tar.xz` holding one
 * file. For tests about the server's limits, not about what LXD boots.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runOk } from "./process.js";
import { api, uploadFile, versionPath } from "./api.js";

export interface TinyImage {
  dir: string;
  /** `lxd.tar.xz` and `rootfs.tar.xz` → absolute path. */
  files: Record<string, string>;
}

/** The kernel's name (metadata.yaml `architecture`) of the Debian arch names tests publish. */
const KERNEL_ARCH: Record<string, string> = { amd64: "x86_64", arm64: "aarch64", i386: "i686" };

export async function buildTinyImage(
  dir: string,
  opts: { os?: string; release?: string; arch?: string; creationDate?: number; marker?: string } = {},
): Promise<TinyImage> {
  const arch = opts.arch ?? "amd64";
  const work = await mkdtemp(join(tmpdir(), "lxhub-tiny-"));
  try {
    await mkdir(join(work, "meta"));
    await mkdir(join(work, "root/etc"), { recursive: true });
    await writeFile(
      join(work, "meta/metadata.yaml"),
      [
        `architecture: ${KERNEL_ARCH[arch] ?? arch}`,
        `creation_date: ${opts.creationDate ?? 1704067200}`,
        "properties:",
        `  os: ${opts.os ?? "tiny"}`,
        `  release: "${opts.release ?? "1"}"`,
        "  variant: default",
        `  architecture: ${arch}`,
        "  description: tiny test image",
        "",
      ].join("\n"),
    );
    await writeFile(join(work, "root/etc/marker"), `${opts.marker ?? "tiny"}\n`);
    await mkdir(dir, { recursive: true });
    const files = { "lxd.tar.xz": join(dir, "lxd.tar.xz"), "rootfs.tar.xz": join(dir, "rootfs.tar.xz") };
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C", TZ: "UTC" };
    const tar = ["--sort=name", "--owner=0", "--group=0", "--numeric-owner", "--mtime=@1704067200"];
    await runOk("tar", [...tar, "-cJf", files["lxd.tar.xz"], "-C", join(work, "meta"), "metadata.yaml"], {
      env,
    });
    await runOk("tar", [...tar, "-cJf", files["rootfs.tar.xz"], "-C", join(work, "root"), "."], { env });
    return { dir, files };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The product a tiny image is published as by publishTinyImage. */
export const TINY_PRODUCT = { os: "tiny", release: "1", arch: "amd64", variant: "default" };

/**
 * Build a tiny image in `dir`, upload its files and publish them as TINY_PRODUCT `version`
 * (path `/images/tiny/1/amd64/default/<version>/…`), or as release `opts.release` and arch
 * `opts.arch` (Debian name); returns the
 * image and its files' digests. With `opts.distinct`, the image's bytes follow from the release
 * and version (creation date and marker), so each version is a new image. `opts.os` publishes
 * another os; `releaseTitle` and `requirements` go into the version's body as given.
 */
export async function publishTinyImage(
  base: string,
  token: string,
  dir: string,
  version = "20240101_0000",
  opts: {
    os?: string;
    release?: string;
    arch?: string;
    distinct?: boolean;
    aliases?: string[];
    releaseTitle?: string;
    requirements?: Record<string, string>;
  } = {},
): Promise<TinyImage & { digests: { meta: string; root: string } }> {
  const os = opts.os ?? TINY_PRODUCT.os;
  const release = opts.release ?? TINY_PRODUCT.release;
  const arch = opts.arch ?? TINY_PRODUCT.arch;
  const date = Date.UTC(
    Number(version.slice(0, 4)),
    Number(version.slice(4, 6)) - 1,
    Number(version.slice(6, 8)),
  );
  const img = await buildTinyImage(
    dir,
    opts.distinct
      ? { os, release, arch, creationDate: date / 1000, marker: `${release} ${version}` }
      : { os, release, arch },
  );
  const meta = await uploadFile(base, token, img.files["lxd.tar.xz"]!);
  const root = await uploadFile(base, token, img.files["rootfs.tar.xz"]!);
  const body = JSON.stringify({
    files: [
      { name: "lxd.tar.xz", ftype: "lxd.tar.xz", digest: meta },
      { name: "rootfs.tar.xz", ftype: "root.tar.xz", digest: root },
    ],
    ...(opts.aliases ? { aliases: opts.aliases } : {}),
    ...(opts.releaseTitle !== undefined ? { release_title: opts.releaseTitle } : {}),
    ...(opts.requirements ? { requirements: opts.requirements } : {}),
  });
  const r = await api(base, "PUT", versionPath({ ...TINY_PRODUCT, os, release, arch }, version), {
    token,
    body,
  });
  if (r.status !== 201) throw new Error(`publish ${version}: ${r.status} ${r.text}`);
  return { ...img, digests: { meta, root } };
}
