import { canonicalArch } from "./arch.js";
import { fingerprintFromMeta } from "./images.js";
import { MAX_ALIASES, nameProblem } from "./names.js";
import {
  LXC_META_FTYPE,
  META_FTYPES,
  ROOT_FTYPES,
  type ItemDoc,
  type MetaFtype,
  type ProductDoc,
  type RootFtype,
  type VersionDoc,
} from "./types.js";
import { DELTA_TARGETS, type DeltaFtype } from "./validate.js";
import { compareVersionKeys } from "./version.js";

/**
 * How lxhub takes over a version of another simplestreams server (the mirror and the
 * pull-through cache): which of its items make lxhub's files, under which names, and what is
 * left out and why. Real trees carry more than lxhub publishes — both `lxd.tar.xz` and
 * `incus.tar.xz` metadata, unified tarballs, manifests, several deltas — so the choice is made
 * here once.
 *
 * - **Metadata**: one file, as lxhub publishes one metadata tarball under both ftypes
 *   (simplestreams.md §0.1): `lxd.tar.xz` when present (the item LXD 5.0 reads), else
 *   `incus.tar.xz`.
 * - **Roots**: each root ftype whose image the chosen metadata item makes, i.e. whose combined
 *   hash it carries (§3.2: without one no client makes the image); the combined hash is the
 *   fingerprint the copy must reproduce.
 * - **Deltas**: one per delta ftype, the one with the newest base; the caller keeps it only if its
 *   base version is copied too (§5).
 * - **Left out, with a reason**: unified tarballs (lxhub publishes split images), items without a
 *   path or sha256, roots without a combined hash. Other ftypes (manifests, …) are ignored.
 */

export interface PickedFile {
  /** Item key upstream. */
  key: string;
  /** File name in the lxhub version folder: the upstream basename when it is a valid name, else the ftype's usual name. */
  name: string;
  ftype: MetaFtype | RootFtype | DeltaFtype | typeof LXC_META_FTYPE;
  item: ItemDoc;
  /** Roots: the image fingerprint the upstream names (sha256(meta ‖ root)). */
  fingerprint?: string;
  /** Deltas: the version the delta applies to. */
  deltaBase?: string;
}

export interface SkippedItem {
  key: string;
  ftype: string;
  reason: string;
}

export interface VersionFiles {
  meta: PickedFile | null;
  roots: PickedFile[];
  deltas: PickedFile[];
  /** LXC's download-template metadata (`lxc.tar.xz`), kept beside a `root.tar.xz`. */
  lxc: PickedFile | null;
  skipped: SkippedItem[];
}

const UNIFIED = new Set(["lxd_combined.tar.gz", "incus_combined.tar.gz"]);
const HEX64 = /^[0-9a-f]{64}$/;

/** What each ftype is called when the upstream's basename is not a valid lxhub file name. */
const FALLBACK_NAMES: Record<string, string> = {
  "lxd.tar.xz": "lxd.tar.xz",
  "incus.tar.xz": "incus.tar.xz",
  squashfs: "rootfs.squashfs",
  "root.tar.xz": "rootfs.tar.xz",
  "disk-kvm.img": "disk.qcow2",
  "disk1.img": "disk1.img",
  "uefi1.img": "uefi1.img",
  "squashfs.vcdiff": "rootfs.squashfs.vcdiff",
  "disk-kvm.img.vcdiff": "disk.qcow2.vcdiff",
  [LXC_META_FTYPE]: "meta.tar.xz",
};

function basename(p: string): string {
  const parts = p.split("/").filter((s) => s !== "");
  return parts[parts.length - 1] ?? "";
}

function sorted<T>(m: Map<string, T>): [string, T][] {
  return [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Which items of `version` make lxhub's files (see the module comment). */
export function versionFiles(version: VersionDoc): VersionFiles {
  const skipped: SkippedItem[] = [];
  const usable = (key: string, item: ItemDoc): boolean => {
    if (!item.path) {
      skipped.push({ key, ftype: item.ftype, reason: "no path" });
      return false;
    }
    if (!HEX64.test(item.sha256)) {
      skipped.push({ key, ftype: item.ftype, reason: "no sha256 (64 lower-case hex)" });
      return false;
    }
    return true;
  };

  const items = sorted(version.items);
  const metas = new Map<string, [string, ItemDoc]>();
  for (const [key, item] of items) {
    if (UNIFIED.has(item.ftype)) {
      skipped.push({ key, ftype: item.ftype, reason: "unified tarball: lxhub publishes split images" });
    } else if ((META_FTYPES as readonly string[]).includes(item.ftype) && !metas.has(item.ftype)) {
      if (usable(key, item)) metas.set(item.ftype, [key, item]);
    }
  }
  const chosen = metas.get("lxd.tar.xz") ?? metas.get("incus.tar.xz");
  for (const [ftype, [key]] of metas) {
    if (chosen && chosen[0] !== key) {
      skipped.push({
        key,
        ftype,
        reason: `lxhub publishes one metadata file (${chosen[1].ftype}) under both ftypes`,
      });
    }
  }
  const names = new Set<string>();
  const nameFor = (item: ItemDoc): string => {
    let name = basename(item.path);
    if (nameProblem("file", name) || names.has(name)) name = FALLBACK_NAMES[item.ftype] ?? item.ftype;
    let n = name;
    for (let i = 2; names.has(n); i++) n = `${i}.${name}`;
    names.add(n);
    return n;
  };

  if (!chosen) {
    for (const [key, item] of items) {
      if ((ROOT_FTYPES as readonly string[]).includes(item.ftype)) {
        skipped.push({ key, ftype: item.ftype, reason: "no metadata tarball in this version" });
      }
    }
    return { meta: null, roots: [], deltas: [], lxc: null, skipped };
  }
  const [metaKey, metaItem] = chosen;
  const meta: PickedFile = {
    key: metaKey,
    name: nameFor(metaItem),
    ftype: metaItem.ftype as MetaFtype,
    item: metaItem,
  };

  const roots: PickedFile[] = [];
  const seenRoots = new Set<string>();
  const deltas = new Map<DeltaFtype, PickedFile>();
  for (const [key, item] of items) {
    if ((ROOT_FTYPES as readonly string[]).includes(item.ftype)) {
      const ftype = item.ftype as RootFtype;
      if (seenRoots.has(ftype)) {
        skipped.push({ key, ftype, reason: `a second ${ftype} file in one version` });
        continue;
      }
      if (!usable(key, item)) continue;
      const fingerprint = fingerprintFromMeta(metaItem, ftype);
      if (!HEX64.test(fingerprint)) {
        skipped.push({
          key,
          ftype,
          reason: `the metadata item has no combined hash for ${ftype}, so no client makes this image`,
        });
        continue;
      }
      seenRoots.add(ftype);
      roots.push({ key, name: "", ftype, item, fingerprint });
    } else if (item.ftype in DELTA_TARGETS) {
      const ftype = item.ftype as DeltaFtype;
      if (!item.deltaBase) {
        skipped.push({ key, ftype, reason: "delta without delta_base" });
        continue;
      }
      if (!usable(key, item)) continue;
      const held = deltas.get(ftype);
      if (held && compareVersionKeys(held.deltaBase as string, item.deltaBase) >= 0) {
        skipped.push({ key, ftype, reason: `lxhub keeps one ${ftype} per version (the newest base)` });
        continue;
      }
      if (held)
        skipped.push({
          key: held.key,
          ftype,
          reason: `lxhub keeps one ${ftype} per version (the newest base)`,
        });
      deltas.set(ftype, { key, name: "", ftype, item, deltaBase: item.deltaBase });
    }
  }
  // Names in a fixed order (meta, roots, deltas) so that a re-run names files the same way.
  for (const r of roots) r.name = nameFor(r.item);
  const kept = [...deltas.values()].filter((d) => {
    if (roots.some((r) => DELTA_TARGETS[d.ftype as DeltaFtype] === r.ftype)) return true;
    skipped.push({
      key: d.key,
      ftype: d.ftype,
      reason: `no ${DELTA_TARGETS[d.ftype as DeltaFtype]} file to rebuild`,
    });
    return false;
  });
  for (const d of kept) d.name = nameFor(d.item);
  const lxcEntry = items.find(
    ([, item]) => item.ftype === LXC_META_FTYPE && item.path && HEX64.test(item.sha256),
  );
  const lxc: PickedFile | null =
    lxcEntry && roots.some((r) => r.ftype === "root.tar.xz")
      ? { key: lxcEntry[0], name: nameFor(lxcEntry[1]), ftype: LXC_META_FTYPE, item: lxcEntry[1] }
      : null;
  return {
    meta: roots.length ? meta : null,
    roots,
    deltas: roots.length ? kept : [],
    lxc: roots.length ? lxc : null,
    skipped,
  };
}

export interface ProductFields {
  os: string;
  release: string;
  /** As published upstream (distro-style, e.g. `amd64`). */
  arch: string;
  variant: string;
  releaseTitle: string;
  aliases: string[];
  requirements: Record<string, string>;
}

/**
 * A product's fields as lxhub publishes them, or the reason it cannot be: names outside lxhub's
 * grammar, an architecture LXD does not know. Aliases are split as clients split them (§4.1);
 * one that lxhub would refuse is left out and named in `droppedAliases`. Requirements merge
 * `lxd_requirements` and `requirements` (the latter wins).
 */
export function productFields(
  product: ProductDoc,
): { ok: true; fields: ProductFields; droppedAliases: string[] } | { ok: false; reason: string } {
  const variant = product.variant || "default";
  for (const [part, value] of [
    ["os", product.os],
    ["release", product.release],
    ["variant", variant],
  ] as const) {
    const problem = nameProblem(part, value);
    if (problem) return { ok: false, reason: `product ${problem}` };
  }
  const archProblem = nameProblem("arch", product.arch);
  if (archProblem || !canonicalArch(product.arch)) {
    return { ok: false, reason: archProblem ?? `architecture ${JSON.stringify(product.arch)} is unknown` };
  }
  const aliases: string[] = [];
  const droppedAliases: string[] = [];
  for (const a of product.aliases.split(",")) {
    if (a === "") continue;
    if (nameProblem("alias", a) || aliases.includes(a) || aliases.length >= MAX_ALIASES)
      droppedAliases.push(a);
    else aliases.push(a);
  }
  const requirements: Record<string, string> = {};
  for (const [k, v] of product.lxdRequirements) requirements[k] = v;
  for (const [k, v] of product.requirements) requirements[k] = v;
  return {
    ok: true,
    fields: {
      os: product.os,
      release: product.release,
      arch: product.arch,
      variant,
      releaseTitle: product.releaseTitle || product.release,
      aliases,
      requirements,
    },
    droppedAliases,
  };
}
