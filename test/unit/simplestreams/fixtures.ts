/**
 * Builds catalog records for the simplestreams tests from real bytes: every sha256, size and
 * combined fingerprint is computed from the (small, synthetic) file contents, as the publish
 * service does, so a test that mixes files up gets hashes that really disagree.
 */
import { createHash } from "node:crypto";
import type {
  MetaFtype,
  RootFtype,
  StreamFile,
  StreamProduct,
  StreamVersion,
} from "../../../simplestreams/index.js";

export function sha256(...parts: Buffer[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

const FILE_NAMES: Record<RootFtype, string> = {
  squashfs: "rootfs.squashfs",
  "root.tar.xz": "rootfs.tar.xz",
  "disk-kvm.img": "disk.qcow2",
  "disk1.img": "disk1.img",
  "uefi1.img": "uefi1.img",
};

export interface ProductSpec {
  os: string;
  release: string;
  arch: string;
  variant?: string;
  aliases?: string[];
  requirements?: Record<string, string>;
  releaseTitle?: string;
  supportEol?: string;
}

export interface VersionSpec {
  /** Root ftypes present in the version. */
  roots: RootFtype[];
  /** Metadata ftype to record (default lxd.tar.xz); `null` for no metadata file. */
  meta?: MetaFtype | null;
  label?: string;
  /** Add a squashfs.vcdiff delta from this older version. */
  deltaFrom?: string;
  /** Distinguishes contents when two versions must differ although named alike. */
  salt?: string;
}

/** The bytes lxhub would store for one file of a version. */
export function contentOf(p: ProductSpec, version: string, what: string, salt = ""): Buffer {
  return Buffer.from(
    `${p.os}/${p.release}/${p.arch}/${p.variant ?? "default"}/${version}/${what}${salt}\n`.repeat(7),
  );
}

export function dirOf(p: ProductSpec, version: string): string {
  return `images/${p.os.toLowerCase()}/${p.release}/${p.arch}/${p.variant ?? "default"}/${version}`;
}

export function fileOf(name: string, ftype: StreamFile["ftype"], path: string, bytes: Buffer): StreamFile {
  return { name, ftype, path, sha256: sha256(bytes), size: bytes.length };
}

/** One version with a metadata file paired to each listed root, combined hashes computed. */
export function versionOf(p: ProductSpec, name: string, spec: VersionSpec): StreamVersion {
  const dir = dirOf(p, name);
  const files: StreamFile[] = [];
  const rootBytes = new Map<RootFtype, Buffer>();
  for (const r of spec.roots) {
    const bytes = contentOf(p, name, r, spec.salt);
    rootBytes.set(r, bytes);
    files.push(fileOf(FILE_NAMES[r], r, `${dir}/${FILE_NAMES[r]}`, bytes));
  }
  const metaFtype = spec.meta === undefined ? "lxd.tar.xz" : spec.meta;
  if (metaFtype !== null) {
    const metaBytes = contentOf(p, name, "meta", spec.salt);
    const meta = fileOf(metaFtype, metaFtype, `${dir}/${metaFtype}`, metaBytes);
    meta.combined = {};
    for (const [r, bytes] of rootBytes) meta.combined[r] = sha256(metaBytes, bytes);
    files.unshift(meta);
  }
  if (spec.deltaFrom !== undefined) {
    const bytes = contentOf(p, name, `delta-${spec.deltaFrom}`, spec.salt);
    const delta = fileOf(
      `delta-${spec.deltaFrom}.vcdiff`,
      "squashfs.vcdiff",
      `${dir}/delta-${spec.deltaFrom}.vcdiff`,
      bytes,
    );
    delta.deltaBase = spec.deltaFrom;
    files.push(delta);
  }
  const v: StreamVersion = { name, files };
  if (spec.label !== undefined) v.label = spec.label;
  return v;
}

/** A product with the given versions (name → spec). */
export function productOf(p: ProductSpec, versions: Record<string, VersionSpec>): StreamProduct {
  const variant = p.variant ?? "default";
  const out: StreamProduct = {
    os: p.os,
    release: p.release,
    arch: p.arch,
    variant,
    releaseTitle: p.releaseTitle ?? p.release,
    aliases: p.aliases ?? [
      `${p.os.toLowerCase()}/${p.release}/${variant}`,
      `${p.os.toLowerCase()}/${p.release}`,
    ],
    requirements: p.requirements ?? {},
    versions: Object.entries(versions).map(([name, spec]) => versionOf({ ...p, variant }, name, spec)),
  };
  if (p.supportEol !== undefined) out.supportEol = p.supportEol;
  return out;
}

/** Metadata fingerprint of a version's (meta, root) pair, recomputed from the bytes. */
export function fingerprintOf(p: ProductSpec, version: string, root: RootFtype, salt = ""): string {
  const q = { ...p, variant: p.variant ?? "default" };
  return sha256(contentOf(q, version, "meta", salt), contentOf(q, version, root, salt));
}

export const UPDATED = new Date(Date.UTC(2024, 1, 1, 12, 30, 5));

/** Parses one emitted document as a client would (plain JSON.parse of the bytes). */
export function json(files: Map<string, Buffer>, path: string): Record<string, unknown> {
  const bytes = files.get(path);
  if (!bytes) throw new Error(`no document ${path}; have ${[...files.keys()].join(", ")}`);
  return JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
}

/** Walks a parsed JSON object by keys; fails loudly when a step is missing. */
export function at(value: unknown, ...keys: string[]): unknown {
  let cur = value;
  for (const k of keys) {
    if (typeof cur !== "object" || cur === null || !Object.hasOwn(cur, k)) {
      throw new Error(`missing key ${JSON.stringify(k)} in path ${keys.join(" › ")}`);
    }
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}
