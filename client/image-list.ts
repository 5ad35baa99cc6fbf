/**
 * What `lxhub image list` and `lxhub image info` show of a remote's images: the images an LXD
 * client derives from the verified documents (simplestreams/images.ts), as records shaped like
 * Incus' `api.Image` (simplestreams.md §3.5) plus lxhub's product, version and files — the JSON
 * shape documented in docs/cli-json.md — and `incus image list`'s filters over them.
 */
import {
  hostArch,
  listImages,
  META_FTYPES,
  shownAliases,
  type ImageFileRef,
  type StreamImage,
} from "../simplestreams/index.js";
import { defaultOsFor, type OpenedStream } from "./verify.js";

/** One file of an image (docs/cli-json.md, `files`). */
export interface ImageFileRecord {
  name: string;
  ftype: string;
  path: string;
  size: number;
  sha256: string;
  /** Deltas only: the version the delta applies to. */
  delta_base?: string;
}

/** One image (docs/cli-json.md): stable field names, snake_case like Incus' API. */
export interface ImageRecord {
  fingerprint: string;
  /** Aliases as an LXD/Incus client on this host shows them (§4.2). */
  aliases: string[];
  /** Canonical architecture name (`x86_64`, `aarch64`, …). */
  architecture: string;
  type: "container" | "virtual-machine";
  public: true;
  /** Bytes: metadata + root. */
  size: number;
  filename: string;
  description: string;
  created_at: string;
  uploaded_at: string;
  /** `null`: the product declares no end of support. */
  expires_at: string | null;
  properties: Record<string, string>;
  /** The simplestreams product key (`os:release:arch:variant`). */
  product: string;
  version: string;
  files: ImageFileRecord[];
}

/**
 * The images of an opened stream as LXD derives them (`lxd.tar.xz` metadata), or as Incus does
 * (`incus.tar.xz`) when LXD's view is empty — the order `findImage` resolves in.
 */
export function streamImages(stream: OpenedStream): StreamImage[] {
  const defaultOs = defaultOsFor(stream.target.url);
  for (const metaFtype of META_FTYPES) {
    const images = listImages(stream.products, { metaFtype, defaultOs });
    if (images.length) return images;
  }
  return [];
}

function fileRecord(ref: ImageFileRef, deltaBase?: string): ImageFileRecord {
  return {
    name: ref.path.slice(ref.path.lastIndexOf("/") + 1),
    ftype: ref.ftype,
    path: ref.path,
    size: ref.size,
    sha256: ref.sha256,
    ...(deltaBase !== undefined ? { delta_base: deltaBase } : {}),
  };
}

/** §3.5's properties; empty values left out, requirements as `requirements.<key>`. */
function properties(img: StreamImage): Record<string, string> {
  const props: Record<string, string> = {
    architecture: img.rawArch,
    description: img.description,
    label: img.label,
    os: img.os,
    release: img.release,
    serial: img.versionKey,
    type: img.rootType,
    variant: img.variant,
  };
  for (const [k, v] of Object.entries(img.requirements)) props[`requirements.${k}`] = v;
  const out: Record<string, string> = {};
  for (const k of Object.keys(props).sort()) if (props[k] !== "") out[k] = props[k] as string;
  return out;
}

/** The record of one image; aliases as shown on a host of `arch` (default this one's). */
export function imageRecord(img: StreamImage, arch: string | null = hostArch()): ImageRecord {
  const created = img.createdAt.toISOString();
  return {
    fingerprint: img.fingerprint,
    aliases: shownAliases(img, arch ?? ""),
    architecture: img.arch,
    type: img.type,
    public: true,
    size: img.size,
    filename: img.filename,
    description: img.description,
    created_at: created,
    uploaded_at: created,
    expires_at: img.expiresAt ? img.expiresAt.toISOString() : null,
    properties: properties(img),
    product: img.productKey,
    version: img.versionKey,
    files: [
      fileRecord(img.meta),
      ...(img.root ? [fileRecord(img.root)] : []),
      ...img.deltas.map((d) => fileRecord(d, d.deltaBase)),
    ],
  };
}

/** `a.b` matches `architecture.bits`: as many dotted parts, each a prefix of the other's (incus). */
function dotPrefixMatch(short: string, full: string): boolean {
  const s = short.split(".");
  const f = full.split(".");
  return s.length === f.length && f.every((part, i) => part.startsWith(s[i] as string));
}

/** A property value against `key=VALUE`: VALUE a regular expression, anchored unless it has `^` or `$`. */
function valueMatches(pattern: string, value: string): boolean {
  const source = pattern.includes("^") || pattern.includes("$") ? pattern : `^(?:${pattern})$`;
  try {
    return new RegExp(source).test(value);
  } catch {
    return pattern === value;
  }
}

/**
 * One FILTER of `incus image list` (cmd/incus/image.go `imageShouldShow`):
 *
 * - `KEY=VALUE`: a property whose name KEY abbreviates (`arch=amd64` matches `architecture`) and
 *   whose value matches VALUE as a regular expression (anchored unless VALUE holds `^` or `$`;
 *   compared as text if it is not a valid one), or a top-level field of the record named KEY
 *   exactly whose value prints as VALUE (`architecture=x86_64`, `type=virtual-machine`,
 *   `public=true`);
 * - anything else: a substring of one of the image's aliases or of its fingerprint.
 */
export function matchesFilter(rec: ImageRecord, filter: string): boolean {
  const eq = filter.indexOf("=");
  if (eq < 0) return rec.aliases.some((a) => a.includes(filter)) || rec.fingerprint.includes(filter);
  const key = filter.slice(0, eq);
  const value = filter.slice(eq + 1);
  for (const [k, v] of Object.entries(rec.properties)) {
    if (dotPrefixMatch(key, k) && valueMatches(value, v)) return true;
  }
  const top = (rec as unknown as Record<string, unknown>)[key];
  const scalar = typeof top === "string" || typeof top === "number" || typeof top === "boolean";
  return scalar && String(top) === value;
}

/** The records every filter matches (all must, as in incus). */
export function filterImages(records: ImageRecord[], filters: string[]): ImageRecord[] {
  return records.filter((r) => filters.every((f) => matchesFilter(r, f)));
}
