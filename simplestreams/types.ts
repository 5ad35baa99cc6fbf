import type { StreamValidationError } from "./errors.js";

/**
 * The simplestreams model as lxhub publishes and reads it (shared/docs/simplestreams.md §2).
 * Field names and JSON types follow what LXD 5.0.2 / Incus decode strictly (§9 pitfalls 1–4).
 */

/** Root file types a metadata tarball pairs with (§3.1, §3.2). */
export const ROOT_FTYPES = ["squashfs", "root.tar.xz", "disk-kvm.img", "disk1.img", "uefi1.img"] as const;
export type RootFtype = (typeof ROOT_FTYPES)[number];

/** Metadata tarball ftypes; lxhub publishes every metadata file under both (§0.1, pitfall 10). */
export const META_FTYPES = ["lxd.tar.xz", "incus.tar.xz"] as const;
export type MetaFtype = (typeof META_FTYPES)[number];

/**
 * The LXC `download` template's metadata tarball (`meta.tar.xz`: config, templates,
 * create-message; simplestreams.md §7.3), published beside a `root.tar.xz`. LXD and Incus ignore
 * the ftype; lxhub lists it in `meta/1.0/index-*`.
 */
export const LXC_META_FTYPE = "lxc.tar.xz";

/** Every ftype the publish API accepts. */
export const PUBLISHABLE_FTYPES = [
  ...META_FTYPES,
  ...ROOT_FTYPES,
  "squashfs.vcdiff",
  "disk-kvm.img.vcdiff",
  LXC_META_FTYPE,
] as const;
export type PublishableFtype = (typeof PUBLISHABLE_FTYPES)[number];

/** Name of the `combined_*_sha256` field for a root ftype (§3.3). */
export const COMBINED_FIELD: Record<RootFtype, string> = {
  squashfs: "combined_squashfs_sha256",
  "root.tar.xz": "combined_rootxz_sha256",
  "disk-kvm.img": "combined_disk-kvm-img_sha256",
  "disk1.img": "combined_disk1-img_sha256",
  "uefi1.img": "combined_uefi1-img_sha256",
};

/** One file of a version, as the catalog records it (input of the document builder). */
export interface StreamFile {
  /** File name inside the version folder, e.g. `lxd.tar.xz`, `rootfs.squashfs`. */
  name: string;
  /** Role: a metadata ftype (published under both META_FTYPES), a root ftype, or a delta. */
  ftype: PublishableFtype;
  /** Path relative to the mirror root (no leading `/`), e.g. `images/debian/12/amd64/default/20240101_0000/lxd.tar.xz`. */
  path: string;
  /** 64 lower-case hex (no `sha256:` prefix). */
  sha256: string;
  size: number;
  /** Metadata files only: sha256(meta ‖ root) per root ftype present in the version, lower-case hex. */
  combined?: Partial<Record<RootFtype, string>>;
  /** Delta files only: the version key the delta applies to. */
  deltaBase?: string;
}

export interface StreamVersion {
  /** Version key; must start with a valid YYYYMMDD (§2.4, pitfall 8). */
  name: string;
  label?: string;
  files: StreamFile[];
}

export interface StreamProduct {
  os: string;
  release: string;
  /** Architecture as published (distro-style, e.g. `amd64`); must be a name LXD 5.0.2 knows (§4.6). */
  arch: string;
  variant: string;
  releaseTitle: string;
  /** Server aliases, no commas or white space in any of them (§4.1, pitfall 7). */
  aliases: string[];
  /** Written both as `lxd_requirements` and `requirements` (§0.1); values are strings (pitfall 4). */
  requirements: Record<string, string>;
  /** Optional `support_eol`, `YYYY-MM-DD`. */
  supportEol?: string;
  versions: StreamVersion[];
}

export interface BuildOptions {
  /** Time written into `updated` (RFC 2822, pitfall 28). */
  updated: Date;
  /** Products file path relative to the root; default `streams/v1/images.json`. */
  productsPath?: string;
  /** content_id of the products file; default `images`. */
  contentId?: string;
  /** Lenient mode: leave out what breaks a rule and report it here (see validate.ts). */
  onDrop?: (problem: StreamValidationError) => void;
  /** The product (and version) being published, blamed for clashes (see validate.ts). */
  blame?: { product: string; version?: string };
}

/** The JSON documents of a stream, serialized exactly as served. */
export interface StreamDocuments {
  /** path relative to the mirror root → bytes, e.g. `streams/v1/index.json`, `streams/v1/images.json`. */
  files: Map<string, Buffer>;
}

/** metadata.yaml inside a metadata tarball (§3.6). */
export interface ImageMetadata {
  /** As written (canonical `x86_64` or distro-style `amd64`). */
  architecture: string;
  /** Unix seconds. */
  creationDate: number;
  expiryDate?: number;
  properties: Record<string, string>;
  /** Names of the templates declared, if any. */
  templates: string[];
}

// ---------------------------------------------------------------------------------------------
// Documents as read from a remote (output of parse.ts). Collections keyed by free-form strings are
// Maps, so a key such as `__proto__` stays data. Absent fields hold Go's zero value ("", 0, false,
// empty Map), because that is what LXD sees.

/** `streams/v1/index.json` (§2.1). */
export interface IndexDoc {
  format: string;
  updated: string;
  /** Entry key (conventionally the content_id) → entry. */
  index: Map<string, IndexEntryDoc>;
}

export interface IndexEntryDoc {
  datatype: string;
  path: string;
  format: string;
  updated: string;
  products: string[];
}

/** A products file (§2.2). */
export interface ProductsDoc {
  contentId: string;
  datatype: string;
  format: string;
  license: string;
  updated: string;
  products: Map<string, ProductDoc>;
}

/** One product (§2.3). */
export interface ProductDoc {
  /** One comma-separated string, split without trimming (§4.1). */
  aliases: string;
  arch: string;
  os: string;
  release: string;
  releaseTitle: string;
  releaseCodename: string;
  variant: string;
  version: string;
  supported: boolean;
  supportEol: string;
  lxdRequirements: Map<string, string>;
  requirements: Map<string, string>;
  versions: Map<string, VersionDoc>;
}

/** One version (§2.4). */
export interface VersionDoc {
  label: string;
  pubname: string;
  items: Map<string, ItemDoc>;
}

/** One item (§2.5). */
export interface ItemDoc {
  ftype: string;
  path: string;
  sha256: string;
  md5: string;
  /** Integer (Go int64; lxhub also requires it to be a safe JavaScript integer). */
  size: number;
  /** `combined_*_sha256` per root ftype, only those present and non-empty. */
  combined: Partial<Record<RootFtype, string>>;
  /** Legacy `combined_sha256` (fingerprint of a root.tar.xz pair when `combined_rootxz_sha256` is absent). */
  combinedSha256: string;
  /** Incus: `virtual-machine` marks a unified VM tarball. */
  combinedType: string;
  deltaBase: string;
}

/** A file a client downloads for an image. */
export interface ImageFileRef {
  /** Item key inside the version. */
  itemKey: string;
  ftype: string;
  path: string;
  sha256: string;
  size: number;
}

/** A delta usable to rebuild an image's root from an older image already held (§5). */
export interface ImageDeltaRef extends ImageFileRef {
  /** Version key the delta applies to. */
  deltaBase: string;
  /** Fingerprint of the image the delta starts from. */
  sourceFingerprint: string;
}

/** One image as a client derives it from a products file (§4.7 step 3). */
export interface StreamImage {
  /** sha256(meta ‖ root), or the unified file's sha256 (§3.3). */
  fingerprint: string;
  type: "container" | "virtual-machine";
  productKey: string;
  versionKey: string;
  os: string;
  release: string;
  releaseTitle: string;
  variant: string;
  label: string;
  /** Product `arch` as published (used in medium aliases), e.g. `amd64`. */
  rawArch: string;
  /** Canonical arch, e.g. `x86_64`. */
  arch: string;
  /** Root ftype (`squashfs`, `root.tar.xz`, `disk-kvm.img`, …) or `tar.gz` for a unified tarball (`properties.type`). */
  rootType: string;
  /** Server aliases of the product, split on `,` exactly like the clients (§4.1). */
  serverAliases: string[];
  /**
   * Alias names this image won (§4.2): `medium` ones are `A/<raw arch>`. A client shows the short
   * ones only when the image arch is the host's, but resolves them either way.
   */
  aliases: { name: string; medium: boolean }[];
  /** Metadata file, or the unified tarball. */
  meta: ImageFileRef;
  /** Root file; `null` for a unified tarball. */
  root: ImageFileRef | null;
  deltas: ImageDeltaRef[];
  /** meta size + root size. */
  size: number;
  /** Basename of the metadata path (the name `lxc image export` writes). */
  filename: string;
  /** Midnight UTC of the version key's date. */
  createdAt: Date;
  /** `support_eol` midnight UTC, or `null` (never). */
  expiresAt: Date | null;
  /** Requirements as the chosen client reads them. */
  requirements: Record<string, string>;
  /** LXD 5.0.2 description: `<os> <release_title> <arch>[ (<label>)] (<version>)`. */
  description: string;
}
