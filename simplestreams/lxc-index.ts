import type { CheckedProduct } from "./validate.js";
import { compareVersionKeys } from "./version.js";

/** Where the LXC `download` template reads its index (simplestreams.md §7.1), by mode. */
export const LXC_INDEX_PATHS = ["meta/1.0/index-system", "meta/1.0/index-user"] as const;

/** The names the template appends to a build's URL (§7.1, §7.3). */
const ROOTFS = "rootfs.tar.xz";
const META = "meta.tar.xz";

/**
 * The LXC download index (§7.2): one line per product that has a build the template can use —
 * the newest version holding a `root.tar.xz` named `rootfs.tar.xz` and an LXC metadata tarball
 * named `meta.tar.xz` in the same folder — as `os;release;arch;variant;version;/<folder>/`.
 * The template matches `--dist`, `--release`, `--arch` (distro-style, e.g. amd64) and
 * `--variant` exactly against the first four fields. Fields cannot hold `;` or a line break:
 * lxhub's name grammar leaves them out.
 */
export function lxcIndex(products: readonly CheckedProduct[]): Buffer {
  const lines: string[] = [];
  for (const c of products) {
    const builds = c.versions
      .filter((v) => {
        const root = v.roots.get("root.tar.xz");
        return (
          root &&
          v.lxc &&
          folderOf(root.path, ROOTFS) !== null &&
          folderOf(root.path, ROOTFS) === folderOf(v.lxc.path, META)
        );
      })
      .sort((a, b) => compareVersionKeys(b.version.name, a.version.name));
    const newest = builds[0];
    if (!newest) continue;
    const p = c.product;
    const folder = folderOf(newest.roots.get("root.tar.xz")!.path, ROOTFS) as string;
    lines.push([p.os, p.release, p.arch, p.variant, newest.version.name, `/${folder}/`].join(";"));
  }
  lines.sort();
  return Buffer.from(lines.map((l) => `${l}\n`).join(""));
}

/** The folder of `path` when its last segment is `name`, else null. */
function folderOf(path: string, name: string): string | null {
  const at = path.lastIndexOf("/");
  return at > 0 && path.slice(at + 1) === name ? path.slice(0, at) : null;
}
