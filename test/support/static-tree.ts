/**
 * A simplestreams tree laid out as the public image servers lay theirs out (images.linuxcontainers.org,
 * lxc-ci; shared/docs/simplestreams.md §2–§5), written to a folder for a static file server:
 * version keys with a colon (`20240101_00:00`), both `lxd.tar.xz` and `incus.tar.xz` metadata
 * items, `squashfs` and `root.tar.xz` roots, an xdelta3 `squashfs.vcdiff` from the previous
 * version, paths relative to the root, and a products file that is not `images.json`. With
 * `extras`, each version also has a VM disk (`disk-kvm.img`), a unified tarball and a manifest.
 */
import { randomBytes } from "node:crypto";
import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BusyboxImage } from "./image-fixture.js";
import { sha256File, sha256Files } from "./image-fixture.js";
import { runOk } from "./process.js";
import { statSync } from "node:fs";

export const STATIC_PRODUCTS_PATH = "streams/v1/download.json";

export interface StaticVersion {
  /** Version key in the tree, e.g. `20240101_00:00`. */
  key: string;
  image: BusyboxImage;
  /** Folder of the version relative to the root. */
  dir: string;
  fingerprints: { squashfs: string; "root.tar.xz": string; "disk-kvm.img"?: string };
}

/** `20240101_0000` → `20240101_00:00`, the key style of images.linuxcontainers.org. */
export function colonKey(serial: string): string {
  return serial.replace(/^(\d{8}_\d{2})(\d{2})$/, "$1:$2");
}

/**
 * Writes `images` (oldest first, one product) as a tree under `root`; returns each version's key,
 * folder and fingerprints.
 */
export async function writeStaticTree(
  root: string,
  product: { os: string; release: string; variant: string; aliases: string[] },
  images: BusyboxImage[],
  opts: { extras?: boolean } = {},
): Promise<StaticVersion[]> {
  const versions: StaticVersion[] = [];
  const items: Record<string, Record<string, unknown>> = {};
  const base = `images/${product.os}/${product.release}/amd64/${product.variant}`;
  let previous: { key: string; squashfs: string } | undefined;
  for (const image of images) {
    const key = colonKey(image.serial);
    const dir = `${base}/${key}`;
    const abs = join(root, dir);
    await mkdir(abs, { recursive: true });
    const meta = image.files["lxd.tar.xz"]!;
    const squashfs = image.files["rootfs.squashfs"]!;
    const rootxz = image.files["rootfs.tar.xz"]!;
    for (const [from, name] of [
      [meta, "lxd.tar.xz"],
      [meta, "incus.tar.xz"],
      [squashfs, "rootfs.squashfs"],
      [rootxz, "rootfs.tar.xz"],
    ] as const) {
      await copyFile(from, join(abs, name));
    }
    const file = async (name: string, ftype: string, extra: Record<string, unknown> = {}) => ({
      ftype,
      path: `${dir}/${name}`,
      sha256: await sha256File(join(abs, name)),
      size: statSync(join(abs, name)).size,
      ...extra,
    });
    const fingerprints: StaticVersion["fingerprints"] = {
      squashfs: await sha256Files([meta, squashfs]),
      "root.tar.xz": await sha256Files([meta, rootxz]),
    };
    const combined: Record<string, string> = {
      combined_squashfs_sha256: fingerprints.squashfs,
      combined_rootxz_sha256: fingerprints["root.tar.xz"],
      combined_sha256: fingerprints["root.tar.xz"],
    };
    const v: Record<string, unknown> = {
      "lxd.tar.xz": await file("lxd.tar.xz", "lxd.tar.xz", combined),
      "incus.tar.xz": await file("incus.tar.xz", "incus.tar.xz", combined),
      "root.squashfs": await file("rootfs.squashfs", "squashfs"),
      "root.tar.xz": await file("rootfs.tar.xz", "root.tar.xz"),
    };
    if (previous) {
      const name = `delta-${previous.key}.vcdiff`;
      await runOk("xdelta3", ["-e", "-f", "-s", previous.squashfs, squashfs, join(abs, name)]);
      v[`delta-${previous.key}`] = await file(name, "squashfs.vcdiff", { delta_base: previous.key });
    }
    if (opts.extras) {
      await writeFile(join(abs, "disk.qcow2"), randomBytes(96 * 1024));
      fingerprints["disk-kvm.img"] = await sha256Files([meta, join(abs, "disk.qcow2")]);
      for (const m of ["lxd.tar.xz", "incus.tar.xz"]) {
        (v[m] as Record<string, unknown>)["combined_disk-kvm-img_sha256"] = fingerprints["disk-kvm.img"];
      }
      v["disk.qcow2"] = await file("disk.qcow2", "disk-kvm.img");
      await writeFile(join(abs, "lxd_combined.tar.gz"), randomBytes(1024));
      v["lxd_combined.tar.gz"] = await file("lxd_combined.tar.gz", "lxd_combined.tar.gz");
      await writeFile(join(abs, "manifest"), "busybox 1.36\n");
      v.manifest = await file("manifest", "manifest");
    }
    items[key] = { items: v };
    versions.push({ key, image, dir, fingerprints });
    previous = { key, squashfs };
  }

  const productKey = `${product.os}:${product.release}:amd64:${product.variant}`;
  const products = {
    content_id: "images",
    datatype: "image-downloads",
    format: "products:1.0",
    products: {
      [productKey]: {
        aliases: product.aliases.join(","),
        arch: "amd64",
        os: product.os,
        release: product.release,
        release_title: product.release,
        variant: product.variant,
        lxd_requirements: {},
        requirements: {},
        versions: items,
      },
    },
  };
  const index = {
    format: "index:1.0",
    index: {
      images: {
        datatype: "image-downloads",
        path: STATIC_PRODUCTS_PATH,
        format: "products:1.0",
        products: [productKey],
      },
    },
  };
  await mkdir(join(root, "streams/v1"), { recursive: true });
  await writeFile(join(root, STATIC_PRODUCTS_PATH), JSON.stringify(products, null, 1));
  await writeFile(join(root, "streams/v1/index.json"), JSON.stringify(index, null, 1));
  return versions;
}
