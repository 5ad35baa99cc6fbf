import { StreamValidationError } from "./errors.js";
import { canonicalJson, type JsonValue } from "./json.js";
import { hasControl } from "./names.js";
import { LXC_INDEX_PATHS, lxcIndex } from "./lxc-index.js";
import {
  LXC_META_FTYPE,
  COMBINED_FIELD,
  META_FTYPES,
  type BuildOptions,
  type RootFtype,
  type StreamDocuments,
  type StreamProduct,
} from "./types.js";
import {
  isSafeRelativePath,
  validateStream,
  type CheckedProduct,
  type CheckedVersion,
  type DeltaFtype,
} from "./validate.js";
import { compareBytewise } from "./version.js";

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

/** Item key of a delta: lxc-ci's `root.<base>.vcdiff` for squashfs, `disk.<base>.qcow2.vcdiff` for qcow2. */
export function deltaItemKey(ftype: DeltaFtype, deltaBase: string): string {
  return ftype === "squashfs.vcdiff" ? `root.${deltaBase}.vcdiff` : `disk.${deltaBase}.qcow2.vcdiff`;
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

/** A JSON object without a prototype, so that keys like `__proto__` stay plain keys. */
function obj(): { [key: string]: JsonValue } {
  return Object.create(null) as { [key: string]: JsonValue };
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
 * Every record goes through the one rule set (validate.ts) first. Strict by default:
 * @throws StreamValidationError naming product/version/file and the rule for anything that would
 *   make a real client drop, mis-resolve or reject images (§9). With `onDrop`, what breaks a rule
 *   is left out and reported instead (the server's documents never fail to build).
 */
export function buildDocuments(products: StreamProduct[], opts: BuildOptions): StreamDocuments {
  const productsPath = opts.productsPath ?? DEFAULT_PRODUCTS_PATH;
  const contentId = opts.contentId ?? DEFAULT_CONTENT_ID;
  checkOptions(opts, productsPath, contentId);
  const updated = rfc2822(opts.updated);

  const checked = validateStream(products, opts);

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
  const lxc = lxcIndex(checked);
  return {
    files: new Map([
      [INDEX_PATH, canonicalJson(indexDoc)],
      [productsPath, canonicalJson(productsDoc)],
      ...LXC_INDEX_PATHS.map((p) => [p, lxc] as const),
    ]),
  };
}

function checkOptions(opts: BuildOptions, productsPath: string, contentId: string): void {
  if (!(opts.updated instanceof Date) || Number.isNaN(opts.updated.getTime())) {
    throw new StreamValidationError("options", {}, "updated must be a valid Date");
  }
  if (!isSafeRelativePath(productsPath) || !productsPath.endsWith(".json")) {
    // A `.sjson` products path makes LXD fail to decode (pitfall 13).
    throw new StreamValidationError(
      "options",
      {},
      `productsPath ${JSON.stringify(productsPath)} must be a relative path to a plain .json file`,
    );
  }
  const base = productsPath.slice(productsPath.lastIndexOf("/") + 1);
  if (base === "index.json") {
    // Clients cache by basename: the products file would overwrite the cached index (pitfall 17).
    throw new StreamValidationError(
      "options",
      {},
      `productsPath ${JSON.stringify(productsPath)} must not be named index.json (clients cache both files by basename)`,
    );
  }
  if (contentId.length === 0 || /\s/.test(contentId) || hasControl(contentId)) {
    throw new StreamValidationError(
      "options",
      {},
      `contentId ${JSON.stringify(contentId)} must be non-empty, without white space`,
    );
  }
}

function productJson(c: CheckedProduct): JsonValue {
  const p = c.product;
  const req = obj();
  for (const [k, v] of Object.entries(p.requirements)) req[k] = v;
  const out = obj();
  if (c.aliases.length > 0) out["aliases"] = c.aliases.join(",");
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
  if (cv.lxc) {
    items[LXC_META_FTYPE] = {
      ftype: LXC_META_FTYPE,
      path: cv.lxc.path,
      sha256: cv.lxc.sha256,
      size: cv.lxc.size,
    };
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
