import { canonicalArch } from "./arch.js";
import { StreamValidationError } from "./errors.js";
import { canonicalJson, type JsonValue } from "./json.js";
import {
  COMBINED_FIELD,
  META_FTYPES,
  PUBLISHABLE_FTYPES,
  ROOT_FTYPES,
  type BuildOptions,
  type MetaFtype,
  type RootFtype,
  type StreamDocuments,
  type StreamFile,
  type StreamProduct,
  type StreamVersion,
} from "./types.js";
import { compareBytewise, compareVersionKeys, isValidVersionKey, MAX_VERSION_KEY_LENGTH } from "./version.js";

/** Where every client starts (§1.1); hard-coded in LXD and Incus. */
export const INDEX_PATH = "streams/v1/index.json";
export const DEFAULT_PRODUCTS_PATH = "streams/v1/images.json";
export const DEFAULT_CONTENT_ID = "images";
export const INDEX_FORMAT = "index:1.0";
export const PRODUCTS_FORMAT = "products:1.0";
export const IMAGE_DOWNLOADS = "image-downloads";

/** Item key of each root ftype inside a version (LXD reads only `ftype`; the names follow lxc-ci). */
export const ROOT_ITEM_KEYS: Readonly<Record<RootFtype, string>> = {
  squashfs: "root.squashfs",
  "root.tar.xz": "root.tar.xz",
  "disk-kvm.img": "disk.qcow2",
  "disk1.img": "disk1.img",
  "uefi1.img": "uefi1.img",
};

/** Delta ftypes and the root ftype each one rebuilds (§5). */
export const DELTA_TARGETS = {
  "squashfs.vcdiff": "squashfs",
  "disk-kvm.img.vcdiff": "disk-kvm.img",
} as const;
export type DeltaFtype = keyof typeof DELTA_TARGETS;

/** Item key of a delta: lxc-ci's `root.<base>.vcdiff` for squashfs, `disk.<base>.qcow2.vcdiff` for qcow2. */
export function deltaItemKey(ftype: DeltaFtype, deltaBase: string): string {
  return ftype === "squashfs.vcdiff" ? `root.${deltaBase}.vcdiff` : `disk.${deltaBase}.qcow2.vcdiff`;
}

/** Image type a root ftype makes (§3.4). */
export function imageTypeOfRoot(ftype: RootFtype): "container" | "virtual-machine" {
  return ftype === "squashfs" || ftype === "root.tar.xz" ? "container" : "virtual-machine";
}

/** Product key lxhub publishes: `os:release:arch:variant`, like lxc-ci and lxd-imagebuilder (§2.2). */
export function productKey(p: Pick<StreamProduct, "os" | "release" | "arch" | "variant">): string {
  return `${p.os}:${p.release}:${p.arch}:${p.variant}`;
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** RFC 2822 date as the canonical tools write `updated`: `Tue, 15 Sep 2015 16:15:24 +0000` (pitfall 28). */
export function rfc2822(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new RangeError("rfc2822: invalid date");
  const p2 = (n: number): string => String(n).padStart(2, "0");
  return (
    `${DAYS[date.getUTCDay()]}, ${p2(date.getUTCDate())} ${MONTHS[date.getUTCMonth()]} ` +
    `${String(date.getUTCFullYear()).padStart(4, "0")} ` +
    `${p2(date.getUTCHours())}:${p2(date.getUTCMinutes())}:${p2(date.getUTCSeconds())} +0000`
  );
}

const HEX64 = /^[0-9a-f]{64}$/;
// eslint-disable-next-line no-control-regex -- the point is to find control characters
const CONTROL = /[\u0000-\u001f\u007f]/;
const REQUIREMENT_KEY = /^[A-Za-z0-9_.-]+$/;
const EOL_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/**
 * Whether a path is safe to publish: relative, `/`-separated, no empty, `.` or `..` segment, no
 * backslash or control character. The canonical tools refuse absolute and `../` paths (§1.1) and
 * LXD would silently clean `..` and `//` into another file.
 */
export function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.length > 1024 || p.startsWith("/") || p.includes("\\") || CONTROL.test(p))
    return false;
  return p.split("/").every((seg) => seg !== "" && seg !== "." && seg !== "..");
}

function isMeta(ftype: string): ftype is MetaFtype {
  return (META_FTYPES as readonly string[]).includes(ftype);
}
function isRoot(ftype: string): ftype is RootFtype {
  return (ROOT_FTYPES as readonly string[]).includes(ftype);
}
function isDelta(ftype: string): ftype is DeltaFtype {
  return Object.hasOwn(DELTA_TARGETS, ftype);
}

/** A JSON object without a prototype, so that keys like `__proto__` stay plain keys. */
function obj(): { [key: string]: JsonValue } {
  return Object.create(null) as { [key: string]: JsonValue };
}

interface CheckedVersion {
  version: StreamVersion;
  meta: StreamFile | undefined;
  roots: Map<RootFtype, StreamFile>;
  deltas: Map<DeltaFtype, StreamFile>;
}

interface CheckedProduct {
  key: string;
  product: StreamProduct;
  canonical: string;
  versions: CheckedVersion[];
}

/**
 * Builds `streams/v1/index.json` and the products file from catalog records (§2, §2.6), as bytes
 * ready to serve (deterministic JSON, sorted keys, trailing newline).
 *
 * Every metadata file is published twice, as `lxd.tar.xz` and `incus.tar.xz` items with the same
 * path, digest, size and `combined_*_sha256` fields, so LXD and Incus both see it (§0.1,
 * pitfall 10); `requirements` is written as both `lxd_requirements` and `requirements`. Combined
 * hashes are written for the root files the version has (and `combined_sha256` beside
 * `combined_rootxz_sha256`); recorded ones for absent roots are left out.
 *
 * An empty catalog gives an index with an empty `index` map and a products file with no products:
 * both valid for every client, and no index entry with an empty `products` list (LXD skips such an
 * entry, the Python tools would still follow it). The products file is written either way so its
 * path never 404s.
 *
 * @throws StreamValidationError naming product/version/file for anything that would make a real
 *   client drop, mis-resolve or reject images (§9): unknown arch, bad version key, bad hex, bad
 *   size, bad aliases or requirements, a missing combined hash, a (meta, root) pair or
 *   fingerprint present twice in the stream, an unsafe path, a dangling delta, or one alias
 *   claimed by two products for the same arch and image type.
 */
export function buildDocuments(products: StreamProduct[], opts: BuildOptions): StreamDocuments {
  const productsPath = opts.productsPath ?? DEFAULT_PRODUCTS_PATH;
  const contentId = opts.contentId ?? DEFAULT_CONTENT_ID;
  checkOptions(opts, productsPath, contentId);
  const updated = rfc2822(opts.updated);

  const checked = products.map(checkProduct);
  checkStreamWide(checked);

  const productsJson = obj();
  for (const c of checked) productsJson[c.key] = productJson(c);
  const keys = checked.map((c) => c.key).sort(compareBytewise);

  const index = obj();
  if (keys.length > 0) {
    index[contentId] = {
      datatype: IMAGE_DOWNLOADS,
      format: PRODUCTS_FORMAT,
      path: productsPath,
      products: keys,
      updated,
    };
  }
  const indexDoc: JsonValue = { format: INDEX_FORMAT, index, updated };
  const productsDoc: JsonValue = {
    content_id: contentId,
    datatype: IMAGE_DOWNLOADS,
    format: PRODUCTS_FORMAT,
    products: productsJson,
    updated,
  };
  return {
    files: new Map([
      [INDEX_PATH, canonicalJson(indexDoc)],
      [productsPath, canonicalJson(productsDoc)],
    ]),
  };
}

function checkOptions(opts: BuildOptions, productsPath: string, contentId: string): void {
  if (!(opts.updated instanceof Date) || Number.isNaN(opts.updated.getTime())) {
    throw new StreamValidationError("options", "updated must be a valid Date");
  }
  if (!isSafeRelativePath(productsPath) || !productsPath.endsWith(".json")) {
    // A `.sjson` products path makes LXD fail to decode (pitfall 13).
    throw new StreamValidationError(
      "options",
      `productsPath ${JSON.stringify(productsPath)} must be a relative path to a plain .json file`,
    );
  }
  const base = productsPath.slice(productsPath.lastIndexOf("/") + 1);
  if (base === "index.json") {
    // Clients cache by basename: the products file would overwrite the cached index (pitfall 17).
    throw new StreamValidationError(
      "options",
      `productsPath ${JSON.stringify(productsPath)} must not be named index.json (clients cache both files by basename)`,
    );
  }
  if (contentId.length === 0 || /\s/.test(contentId) || CONTROL.test(contentId)) {
    throw new StreamValidationError(
      "options",
      `contentId ${JSON.stringify(contentId)} must be non-empty, without white space`,
    );
  }
}

function where(p: StreamProduct | string, v?: string, f?: StreamFile): string {
  const key = typeof p === "string" ? p : safeProductKey(p);
  let s = `product ${JSON.stringify(key)}`;
  if (v !== undefined) s += ` version ${JSON.stringify(v)}`;
  if (f !== undefined) s += ` file ${JSON.stringify(f.name ?? f.path)} (${String(f.ftype)})`;
  return s;
}

function safeProductKey(p: StreamProduct): string {
  const parts = [p.os, p.release, p.arch, p.variant].map((x) => (typeof x === "string" ? x : String(x)));
  return parts.join(":");
}

function checkText(w: string, field: string, value: unknown, allowEmpty = false): void {
  if (typeof value !== "string")
    throw new StreamValidationError(w, `${field} must be a string, got ${typeof value}`);
  if (!allowEmpty && value.length === 0) throw new StreamValidationError(w, `${field} must not be empty`);
  if (CONTROL.test(value))
    throw new StreamValidationError(w, `${field} ${JSON.stringify(value)} contains a control character`);
}

function checkProduct(p: StreamProduct): CheckedProduct {
  const w = where(p);
  // os/release/variant are the sort keys of "latest"; an empty one breaks LXD's comparison (§4.3).
  checkText(w, "os", p.os);
  checkText(w, "release", p.release);
  checkText(w, "variant", p.variant);
  checkText(w, "arch", p.arch);
  checkText(w, "releaseTitle", p.releaseTitle, true);
  const canonical = canonicalArch(p.arch);
  if (canonical === null) {
    throw new StreamValidationError(
      w,
      `arch ${JSON.stringify(p.arch)} is unknown to LXD 5.0.2; the product would be dropped (pitfall 9)`,
    );
  }

  if (!Array.isArray(p.aliases)) throw new StreamValidationError(w, "aliases must be an array of strings");
  const seenAliases = new Set<string>();
  for (const a of p.aliases) {
    if (typeof a !== "string" || a.length === 0) {
      throw new StreamValidationError(w, `alias ${JSON.stringify(a)} must be a non-empty string (pitfall 2)`);
    }
    if (a.includes(",") || /\s/.test(a) || CONTROL.test(a)) {
      // Clients split the aliases string on "," without trimming (§4.1, pitfall 7).
      throw new StreamValidationError(
        w,
        `alias ${JSON.stringify(a)} must not contain a comma or white space (pitfall 7)`,
      );
    }
    if (seenAliases.has(a)) throw new StreamValidationError(w, `alias ${JSON.stringify(a)} is listed twice`);
    seenAliases.add(a);
  }

  if (typeof p.requirements !== "object" || p.requirements === null || Array.isArray(p.requirements)) {
    throw new StreamValidationError(w, "requirements must be an object of strings");
  }
  for (const [k, v] of Object.entries(p.requirements)) {
    if (!REQUIREMENT_KEY.test(k))
      throw new StreamValidationError(
        w,
        `requirement key ${JSON.stringify(k)} must match ${REQUIREMENT_KEY}`,
      );
    if (typeof v !== "string") {
      // Go decodes into map[string]string: a bool or number fails the whole file (pitfall 4).
      throw new StreamValidationError(
        w,
        `requirement ${JSON.stringify(k)} must be a string (write "${String(v)}"), got ${typeof v} (pitfall 4)`,
      );
    }
  }

  if (p.supportEol !== undefined) {
    const m = typeof p.supportEol === "string" ? EOL_DATE.exec(p.supportEol) : null;
    const d = m ? new Date(`${p.supportEol}T00:00:00Z`) : null;
    if (!m || !d || Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== p.supportEol) {
      throw new StreamValidationError(
        w,
        `supportEol ${JSON.stringify(p.supportEol)} must be a real date YYYY-MM-DD`,
      );
    }
  }
  if (!Array.isArray(p.versions)) throw new StreamValidationError(w, "versions must be an array");

  const versions: CheckedVersion[] = [];
  const names = new Set<string>();
  for (const v of p.versions) {
    if (typeof v.name !== "string" || !isValidVersionKey(v.name)) {
      throw new StreamValidationError(
        w,
        `version key ${JSON.stringify(v.name)} must start with a real date YYYYMMDD, use only [0-9A-Za-z_.:-] and be at most ${MAX_VERSION_KEY_LENGTH} characters; clients ignore it otherwise (pitfall 8)`,
      );
    }
    if (names.has(v.name))
      throw new StreamValidationError(w, `version ${JSON.stringify(v.name)} is listed twice`);
    names.add(v.name);
    versions.push(checkVersion(p, v));
  }

  // Deltas reference other versions of the same product (§5).
  const byName = new Map(versions.map((cv) => [cv.version.name, cv]));
  for (const cv of versions) {
    for (const [ftype, f] of cv.deltas) {
      const wf = where(p, cv.version.name, f);
      const base = f.deltaBase as string;
      const target = DELTA_TARGETS[ftype];
      const baseVersion = byName.get(base);
      if (!baseVersion) {
        throw new StreamValidationError(
          wf,
          `delta_base ${JSON.stringify(base)} is not a version of this product`,
        );
      }
      if (compareVersionKeys(base, cv.version.name) >= 0) {
        throw new StreamValidationError(
          wf,
          `delta_base ${JSON.stringify(base)} must be an older version than ${JSON.stringify(cv.version.name)}`,
        );
      }
      if (!cv.roots.has(target)) {
        throw new StreamValidationError(wf, `a ${ftype} delta needs a ${target} file in the same version`);
      }
      if (!baseVersion.meta || !baseVersion.roots.has(target)) {
        // Clients take the delta's source fingerprint from the base version's metadata item.
        throw new StreamValidationError(
          wf,
          `delta_base version ${JSON.stringify(base)} has no metadata + ${target} image to apply the delta to`,
        );
      }
    }
  }
  return { key: productKey(p), product: p, canonical, versions };
}

function checkVersion(p: StreamProduct, v: StreamVersion): CheckedVersion {
  const wv = where(p, v.name);
  if (v.label !== undefined) checkText(wv, "label", v.label, true);
  if (!Array.isArray(v.files)) throw new StreamValidationError(wv, "files must be an array");
  let meta: StreamFile | undefined;
  const roots = new Map<RootFtype, StreamFile>();
  const deltas = new Map<DeltaFtype, StreamFile>();

  for (const f of v.files) {
    const wf = where(p, v.name, f);
    if (!(PUBLISHABLE_FTYPES as readonly string[]).includes(f.ftype)) {
      throw new StreamValidationError(wf, `ftype ${JSON.stringify(f.ftype)} is not one lxhub publishes`);
    }
    if (typeof f.path !== "string" || !isSafeRelativePath(f.path)) {
      throw new StreamValidationError(
        wf,
        `path ${JSON.stringify(f.path)} must be relative, without "..", "." or empty segments`,
      );
    }
    checkHex(wf, "sha256", f.sha256);
    if (typeof f.size !== "number" || !Number.isSafeInteger(f.size) || f.size < 0) {
      throw new StreamValidationError(
        wf,
        `size ${JSON.stringify(f.size)} must be a non-negative integer (pitfall 1)`,
      );
    }
    if (isMeta(f.ftype)) {
      if (meta) {
        // Two metadata items in one version make each pair twice, or clash on the item key (pitfall 29).
        throw new StreamValidationError(
          wf,
          `version already has a metadata file ${JSON.stringify(meta.path)}; one per version`,
        );
      }
      meta = f;
    } else if (f.combined !== undefined) {
      throw new StreamValidationError(wf, "only a metadata file carries combined hashes");
    }
    if (isRoot(f.ftype)) {
      if (roots.has(f.ftype))
        throw new StreamValidationError(wf, `version already has a ${f.ftype} file; one per version`);
      roots.set(f.ftype, f);
    }
    if (isDelta(f.ftype)) {
      if (deltas.has(f.ftype)) {
        // LXD 5.0.2 applies every matching delta in turn and can corrupt the rootfs (pitfall 23).
        throw new StreamValidationError(
          wf,
          `version already has a ${f.ftype} delta; at most one per version`,
        );
      }
      if (typeof f.deltaBase !== "string" || !isValidVersionKey(f.deltaBase)) {
        throw new StreamValidationError(
          wf,
          `delta needs deltaBase naming a version key, got ${JSON.stringify(f.deltaBase)}`,
        );
      }
      deltas.set(f.ftype, f);
    } else if (f.deltaBase !== undefined) {
      throw new StreamValidationError(wf, "only a delta file carries deltaBase");
    }
  }

  if (meta) {
    const wf = where(p, v.name, meta);
    const combined = meta.combined ?? {};
    if (typeof combined !== "object" || combined === null)
      throw new StreamValidationError(wf, "combined must be an object");
    for (const [root, value] of Object.entries(combined)) {
      if (!isRoot(root))
        throw new StreamValidationError(wf, `combined hash for unknown root ftype ${JSON.stringify(root)}`);
      checkHex(wf, `combined ${root} hash`, value);
    }
    for (const root of roots.keys()) {
      if (combined[root] === undefined) {
        // Without it, every client silently drops the (meta, root) image (§3.2, pitfall 6).
        throw new StreamValidationError(
          wf,
          `missing combined ${root} hash (${COMBINED_FIELD[root]}) for the ${root} file of this version (pitfall 6)`,
        );
      }
    }
  }
  return { version: v, meta, roots, deltas };
}

function checkHex(w: string, field: string, value: unknown): void {
  if (typeof value !== "string" || !HEX64.test(value)) {
    // Clients compare the lower-case hex digest as a string (pitfall 5).
    throw new StreamValidationError(
      w,
      `${field} ${JSON.stringify(value)} must be 64 lower-case hex characters (pitfall 5)`,
    );
  }
}

/** Checks that span products: unique keys, immutable paths, unique pairs and fingerprints, unique aliases. */
function checkStreamWide(checked: CheckedProduct[]): void {
  const keys = new Set<string>();
  const paths = new Map<string, { sha256: string; size: number; at: string }>();
  const fingerprints = new Map<string, string>();
  const pairs = new Map<string, string>();
  const aliases = new Map<string, string>();

  for (const c of checked) {
    if (keys.has(c.key)) throw new StreamValidationError(where(c.key), "product is listed twice");
    keys.add(c.key);
    const types = new Set<string>();

    for (const cv of c.versions) {
      for (const f of cv.version.files) {
        const at = where(c.key, cv.version.name, f);
        const seen = paths.get(f.path);
        if (seen && (seen.sha256 !== f.sha256 || seen.size !== f.size)) {
          // One path, one content: caches and mirrors rely on it (pitfall 19).
          throw new StreamValidationError(
            at,
            `path ${JSON.stringify(f.path)} already names different content at ${seen.at}`,
          );
        }
        if (!seen) paths.set(f.path, { sha256: f.sha256, size: f.size, at });
      }
      if (!cv.meta) continue;
      for (const [root, rf] of cv.roots) {
        const at = where(c.key, cv.version.name, rf);
        const fingerprint = cv.meta.combined?.[root] as string;
        const pair = `${cv.meta.sha256}:${rf.sha256}`;
        const other = pairs.get(pair) ?? fingerprints.get(fingerprint);
        if (other !== undefined) {
          // Two images with one fingerprint: every lookup fails with "More than one match" (pitfall 29).
          throw new StreamValidationError(
            at,
            `the same metadata + ${root} image (fingerprint ${fingerprint}) is already published at ${other} (pitfall 29)`,
          );
        }
        pairs.set(pair, at);
        fingerprints.set(fingerprint, at);
        types.add(imageTypeOfRoot(root));
      }
    }

    // Clients register `A` and `A/<raw arch>` per (type, canonical arch), first product in sort
    // order wins regardless of dates (§4.2–4.3, pitfall 22).
    for (const type of types) {
      for (const a of c.product.aliases) {
        for (const name of [a, `${a}/${c.product.arch}`]) {
          const k = `${type}\u0000${c.canonical}\u0000${name}`;
          const owner = aliases.get(k);
          if (owner !== undefined && owner !== c.key) {
            throw new StreamValidationError(
              where(c.key),
              `alias ${JSON.stringify(name)} (${type}, ${c.canonical}) is also claimed by product ${JSON.stringify(owner)} (pitfall 22)`,
            );
          }
          aliases.set(k, c.key);
        }
      }
    }
  }
}

function productJson(c: CheckedProduct): JsonValue {
  const p = c.product;
  const req = obj();
  for (const [k, v] of Object.entries(p.requirements)) req[k] = v;
  const out = obj();
  if (p.aliases.length > 0) out["aliases"] = p.aliases.join(",");
  out["arch"] = p.arch;
  out["os"] = p.os;
  out["release"] = p.release;
  out["release_title"] = p.releaseTitle;
  out["variant"] = p.variant;
  out["lxd_requirements"] = req;
  out["requirements"] = req;
  if (p.supportEol !== undefined) out["support_eol"] = p.supportEol;
  const versions = obj();
  for (const cv of c.versions) versions[cv.version.name] = versionJson(cv);
  out["versions"] = versions;
  return out;
}

function versionJson(cv: CheckedVersion): JsonValue {
  const items = obj();
  if (cv.meta) {
    const m = cv.meta;
    for (const ftype of META_FTYPES) {
      const item = obj();
      item["ftype"] = ftype;
      item["path"] = m.path;
      item["sha256"] = m.sha256;
      item["size"] = m.size;
      for (const root of cv.roots.keys()) {
        const value = m.combined?.[root] as string;
        item[COMBINED_FIELD[root]] = value;
        // LXD falls back to the legacy field for root.tar.xz pairs (§2.5).
        if (root === "root.tar.xz") item["combined_sha256"] = value;
      }
      items[ftype] = item;
    }
  }
  for (const [root, f] of cv.roots) {
    items[ROOT_ITEM_KEYS[root]] = { ftype: root, path: f.path, sha256: f.sha256, size: f.size };
  }
  for (const [ftype, f] of cv.deltas) {
    const base = f.deltaBase as string;
    items[deltaItemKey(ftype, base)] = {
      delta_base: base,
      ftype,
      path: f.path,
      sha256: f.sha256,
      size: f.size,
    };
  }
  const out = obj();
  out["items"] = items;
  if (cv.version.label !== undefined && cv.version.label !== "") out["label"] = cv.version.label;
  return out;
}
