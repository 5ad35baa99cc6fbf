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

/** Every ftype the publish API accepts. */
export const PUBLISHABLE_FTYPES = [...META_FTYPES, ...ROOT_FTYPES, "squashfs.vcdiff", "disk-kvm.img.vcdiff"] as const;
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
