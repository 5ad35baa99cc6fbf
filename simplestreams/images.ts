import { canonicalArch, personalities } from "./arch.js";
import { AmbiguousImageError } from "./errors.js";
import {
  ROOT_FTYPES,
  type ImageDeltaRef,
  type ImageFileRef,
  type ItemDoc,
  type MetaFtype,
  type ProductDoc,
  type ProductsDoc,
  type RootFtype,
  type StreamImage,
  type VersionDoc,
} from "./types.js";
import { compareBytewise, versionDate } from "./version.js";

export interface ListOptions {
  /** Which client to behave like: `lxd.tar.xz` (LXD) or `incus.tar.xz` (Incus) (§0.1). */
  metaFtype: MetaFtype;
  /**
   * Strip a leading `<defaultOs>/` from every alias, as LXD does for cloud-images.ubuntu.com
   * remotes (`ubuntu`), §4.2. Unset for every other remote.
   */
  defaultOs?: string;
}

export interface ResolveOptions {
  /** Alias namespace; without it, container is tried first, then virtual-machine (§4.4). */
  type?: "container" | "virtual-machine";
  /** Canonical arch of the host, e.g. `hostArch()`. */
  arch: string;
}

/** Preference among images of one version, os, release, variant and arch (§4.3). */
const TYPE_PREFERENCE = ["squashfs", "root.tar.xz", "disk-kvm.img", "uefi1.img", "disk1.img"];

/** Delta ftype that rebuilds each root ftype (§5). */
const DELTA_FOR: Partial<Record<RootFtype, string>> = {
  squashfs: "squashfs.vcdiff",
  "disk-kvm.img": "disk-kvm.img.vcdiff",
};

/**
 * Fingerprint of the (meta, root) image read from the metadata item (§3.3): the matching
 * `combined_*_sha256`, with the legacy `combined_sha256` for `root.tar.xz`. Empty when absent
 * (the client then drops the pair).
 */
export function fingerprintFromMeta(meta: ItemDoc, root: RootFtype): string {
  const v = meta.combined[root] ?? "";
  if (v === "" && root === "root.tar.xz") return meta.combinedSha256;
  return v;
}

function isRoot(ftype: string): ftype is RootFtype {
  return (ROOT_FTYPES as readonly string[]).includes(ftype);
}

function ref(itemKey: string, item: ItemDoc): ImageFileRef {
  return { itemKey, ftype: item.ftype, path: item.path, sha256: item.sha256, size: item.size };
}

function eolDate(s: string): Date | null {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(s)) return null;
  const d = new Date(`${s}T00:00:00Z`);
  return Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== s ? null : d;
}

function sortedEntries<T>(m: Map<string, T>): [string, T][] {
  return [...m.entries()].sort(([a], [b]) => compareBytewise(a, b));
}

/**
 * Every image a client of the given kind derives from the products files (§4.7 steps 3–4), in
 * the clients' "latest" order, each carrying the aliases it won.
 *
 * Products with an unknown arch and versions whose key does not start with a valid `YYYYMMDD` are
 * skipped; each metadata item of `metaFtype` pairs with each root item of its version
 * (fingerprint = the matching combined hash; pairs without one, and metadata items without a
 * path, are skipped); each unified item (`lxd_combined.tar.gz` / `incus_combined.tar.gz`) is an
 * image on its own. Order: os, release, variant ascending, version key descending, raw arch
 * ascending, root type preference; remaining ties by fingerprint, so the result is deterministic
 * where LXD's unstable sort is not.
 */
export function listImages(products: ProductsDoc | ProductsDoc[], opts: ListOptions): StreamImage[] {
  const docs = Array.isArray(products) ? products : [products];
  const images: StreamImage[] = [];
  for (const doc of docs) {
    for (const [key, product] of sortedEntries(doc.products))
      images.push(...productImages(key, product, opts));
  }
  images.sort(compareImages);
  applyAliases(images, opts.defaultOs);
  return images;
}

function productImages(productKey: string, product: ProductDoc, opts: ListOptions): StreamImage[] {
  const arch = canonicalArch(product.arch);
  if (arch === null) return [];
  const incus = opts.metaFtype === "incus.tar.xz";
  const unifiedFtype = incus ? "incus_combined.tar.gz" : "lxd_combined.tar.gz";
  // 5.0.2 reads only lxd_requirements, Incus only requirements; newer LXD prefers lxd_requirements.
  const reqMap = incus || product.lxdRequirements.size === 0 ? product.requirements : product.lxdRequirements;
  const requirements = Object.create(null) as Record<string, string>;
  for (const [k, v] of reqMap) requirements[k] = v;
  const serverAliases = product.aliases === "" ? [] : product.aliases.split(",");
  const expiresAt = eolDate(product.supportEol);
  const out: StreamImage[] = [];

  for (const [versionKey, version] of sortedEntries(product.versions)) {
    const createdAt = versionDate(versionKey);
    if (createdAt === null) continue;
    const items = sortedEntries(version.items);

    const make = (
      fingerprint: string,
      meta: [string, ItemDoc],
      root: [string, ItemDoc] | null,
      type: StreamImage["type"],
    ): StreamImage => {
      let description = `${product.os} ${product.releaseTitle} ${product.arch}`;
      if (version.label !== "") description += ` (${version.label})`;
      description += ` (${versionKey})`;
      return {
        fingerprint,
        type,
        productKey,
        versionKey,
        os: product.os,
        release: product.release,
        releaseTitle: product.releaseTitle,
        variant: product.variant,
        label: version.label,
        rawArch: product.arch,
        arch,
        rootType: root ? root[1].ftype : "tar.gz",
        serverAliases,
        aliases: [],
        meta: ref(meta[0], meta[1]),
        root: root ? ref(root[0], root[1]) : null,
        deltas: root ? deltasFor(product, version, root[1].ftype as RootFtype, opts.metaFtype) : [],
        size: meta[1].size + (root ? root[1].size : 0),
        filename: meta[1].path.slice(meta[1].path.lastIndexOf("/") + 1),
        createdAt,
        expiresAt,
        requirements,
        description,
      };
    };

    for (const [itemKey, item] of items) {
      if (item.ftype === unifiedFtype) {
        if (item.sha256 === "" || item.path === "") continue;
        const type = incus && item.combinedType === "virtual-machine" ? "virtual-machine" : "container";
        out.push(make(item.sha256, [itemKey, item], null, type));
      } else if (item.ftype === opts.metaFtype) {
        if (item.path === "") continue;
        for (const [rootKey, root] of items) {
          if (!isRoot(root.ftype)) continue;
          const fingerprint = fingerprintFromMeta(item, root.ftype);
          if (fingerprint === "") continue;
          const type =
            root.ftype === "squashfs" || root.ftype === "root.tar.xz" ? "container" : "virtual-machine";
          out.push(make(fingerprint, [itemKey, item], [rootKey, root], type));
        }
      }
    }
  }
  return out;
}

/**
 * Deltas of a version that rebuild `root`: items of the matching delta ftype whose `delta_base`
 * is still a version of the product, with the source fingerprint read from that version's
 * metadata item for the same root type (LXD ≥ 5.0.4 semantics; §5).
 */
function deltasFor(
  product: ProductDoc,
  version: VersionDoc,
  root: RootFtype,
  metaFtype: MetaFtype,
): ImageDeltaRef[] {
  const deltaFtype = DELTA_FOR[root];
  if (deltaFtype === undefined) return [];
  const out: ImageDeltaRef[] = [];
  for (const [itemKey, item] of sortedEntries(version.items)) {
    if (item.ftype !== deltaFtype || item.path === "") continue;
    const base = product.versions.get(item.deltaBase);
    if (!base) continue;
    let sourceFingerprint = "";
    for (const [, baseItem] of sortedEntries(base.items)) {
      if (baseItem.ftype !== metaFtype) continue;
      sourceFingerprint = fingerprintFromMeta(baseItem, root);
      break;
    }
    if (sourceFingerprint === "") continue;
    out.push({ ...ref(itemKey, item), deltaBase: item.deltaBase, sourceFingerprint });
  }
  return out;
}

function typeScore(rootType: string): number {
  const i = TYPE_PREFERENCE.indexOf(rootType);
  return i < 0 ? 0 : i;
}

function compareImages(a: StreamImage, b: StreamImage): number {
  return (
    compareBytewise(a.os, b.os) ||
    compareBytewise(a.release, b.release) ||
    compareBytewise(a.variant, b.variant) ||
    compareBytewise(b.versionKey, a.versionKey) ||
    compareBytewise(a.rawArch, b.rawArch) ||
    typeScore(a.rootType) - typeScore(b.rootType) ||
    compareBytewise(a.fingerprint, b.fingerprint)
  );
}

/** §4.2: first image in order takes `A` and `A/<raw arch>` per (type, canonical arch). */
function applyAliases(images: StreamImage[], defaultOs: string | undefined): void {
  const taken = new Set<string>();
  const strip = defaultOs ? `${defaultOs}/` : "";
  const register = (img: StreamImage, rawName: string, medium: boolean): void => {
    const name = strip && rawName.startsWith(strip) ? rawName.slice(strip.length) : rawName;
    const k = `${img.type}\u0000${img.arch}\u0000${name}`;
    if (taken.has(k)) return;
    taken.add(k);
    img.aliases.push({ name, medium });
  };
  for (const img of images) {
    for (const a of img.serverAliases) {
      register(img, a, false);
      register(img, `${a}/${img.rawArch}`, true);
    }
  }
}

/**
 * Alias names an LXD client shows for an image on a host of `hostArch` (short aliases only when
 * the arches match, §4.2).
 */
export function shownAliases(image: StreamImage, hostArch: string): string[] {
  return image.aliases.filter((a) => a.medium || image.arch === hostArch).map((a) => a.name);
}

/**
 * Resolves a name the way LXD does (§4.4, §4.7 step 5), over the output of `listImages`:
 *
 * 1. alias in the requested type's namespace (container first, then virtual-machine, when no type
 *    is given); among one registration per arch, the host's arch wins, then arches it runs as a
 *    personality, then the others (byte-wise), so `acme/1/arm64` still finds the arm64 image on
 *    an x86_64 host;
 * 2. otherwise a fingerprint prefix, which must match exactly one image.
 *
 * Like LXD, the chosen fingerprint is then looked up again: if it names more than one image
 * (pitfall 29), resolution fails.
 *
 * @returns the image, or `null` when nothing matches (or the only fingerprint match has another
 *   type than the one requested).
 * @throws AmbiguousImageError when the fingerprint (prefix) matches several images.
 */
export function resolveAlias(images: StreamImage[], name: string, opts: ResolveOptions): StreamImage | null {
  if (name === "") return null;
  const types = opts.type ? [opts.type] : (["container", "virtual-machine"] as const);
  const preferred = [opts.arch, ...personalities(opts.arch)];
  const rank = (arch: string): number => {
    const i = preferred.indexOf(arch);
    return i < 0 ? preferred.length : i;
  };

  for (const type of types) {
    const candidates = images.filter((img) => img.type === type && img.aliases.some((a) => a.name === name));
    if (candidates.length === 0) continue;
    candidates.sort((a, b) => rank(a.arch) - rank(b.arch) || compareBytewise(a.arch, b.arch));
    const chosen = candidates[0] as StreamImage;
    const same = images.filter((img) => img.fingerprint === chosen.fingerprint);
    if (same.length > 1)
      throw new AmbiguousImageError(
        chosen.fingerprint,
        same.map((img) => img.fingerprint),
      );
    return chosen;
  }

  const matches = images.filter((img) => img.fingerprint.startsWith(name));
  if (matches.length > 1)
    throw new AmbiguousImageError(
      name,
      matches.map((img) => img.fingerprint),
    );
  const match = matches[0];
  if (!match || (opts.type && match.type !== opts.type)) return null;
  return match;
}
