import { StreamParseError } from "./errors.js";
import {
  COMBINED_FIELD,
  ROOT_FTYPES,
  type IndexDoc,
  type IndexEntryDoc,
  type ItemDoc,
  type ProductDoc,
  type ProductsDoc,
  type RootFtype,
  type VersionDoc,
} from "./types.js";
import { compareBytewise } from "./version.js";

export {
  listImages,
  resolveAlias,
  fingerprintFromMeta,
  type ListOptions,
  type ResolveOptions,
} from "./images.js";

/**
 * Strict readers of upstream documents. They accept exactly what LXD's Go decoder
 * (`encoding/json` into the structs of `shared/simplestreams/{index,products}.go`) accepts, so a
 * document lxhub reads is one every client can read too (§2, pitfalls 1–4):
 *
 * - a JSON value of the wrong type anywhere in a known field fails the whole document;
 * - `null` is the field's zero value, unknown fields are ignored;
 * - field names match case-insensitively (ASCII, plus `K` U+212A ~ `k` and `ſ` U+017F ~ `s`, as
 *   Debian 12's Go 1.19 folds them); when a field appears twice the later one wins.
 *
 * One difference: after `JSON.parse` an integer written `328.0` or `3.28e2` can no longer be told
 * from `328`, so such sizes pass here although Go refuses them. Sizes beyond 2^53 are refused
 * (they lose precision in JavaScript).
 */

/** Parses JSON bytes, turning a syntax error into a StreamParseError at `$`. */
export function decodeJson(bytes: Buffer | string): unknown {
  const text = typeof bytes === "string" ? bytes : bytes.toString("utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new StreamParseError("$", `invalid JSON: ${(err as Error).message}`);
  }
}

/** Validates `streams/v1/index.json` (§2.1). */
export function parseIndex(json: unknown): IndexDoc {
  const doc: IndexDoc = { format: "", updated: "", index: new Map() };
  for (const [name, value, p] of fields(json, "$")) {
    if (name === "index") doc.index = mapOf(value, p, parseIndexEntry);
    else if (name === "updated") doc.updated = str(value, p);
    else if (name === "format") doc.format = str(value, p);
  }
  return doc;
}

function parseIndexEntry(json: unknown, path: string): IndexEntryDoc {
  const e: IndexEntryDoc = { datatype: "", path: "", format: "", updated: "", products: [] };
  for (const [name, value, p] of fields(json, path)) {
    if (name === "datatype") e.datatype = str(value, p);
    else if (name === "path") e.path = str(value, p);
    else if (name === "updated") e.updated = str(value, p);
    else if (name === "format") e.format = str(value, p);
    else if (name === "products") e.products = strArray(value, p);
  }
  return e;
}

/**
 * Index entries a client loads (§4.7 step 1): datatype exactly `image-downloads` and a non-empty
 * `products` list, in key order.
 */
export function imageDownloadEntries(index: IndexDoc): IndexEntryDoc[] {
  return [...index.index.entries()]
    .filter(([, e]) => e.datatype === "image-downloads" && e.products.length > 0)
    .sort(([a], [b]) => compareBytewise(a, b))
    .map(([, e]) => e);
}

/** Validates a products file (§2.2–2.5). */
export function parseProducts(json: unknown): ProductsDoc {
  const doc: ProductsDoc = {
    contentId: "",
    datatype: "",
    format: "",
    license: "",
    updated: "",
    products: new Map(),
  };
  for (const [name, value, p] of fields(json, "$")) {
    if (name === "content_id") doc.contentId = str(value, p);
    else if (name === "datatype") doc.datatype = str(value, p);
    else if (name === "format") doc.format = str(value, p);
    else if (name === "license") doc.license = str(value, p);
    else if (name === "updated") doc.updated = str(value, p);
    else if (name === "products") doc.products = mapOf(value, p, parseProduct);
  }
  return doc;
}

function parseProduct(json: unknown, path: string): ProductDoc {
  const d: ProductDoc = {
    aliases: "",
    arch: "",
    os: "",
    release: "",
    releaseTitle: "",
    releaseCodename: "",
    variant: "",
    version: "",
    supported: false,
    supportEol: "",
    lxdRequirements: new Map(),
    requirements: new Map(),
    versions: new Map(),
  };
  for (const [name, value, p] of fields(json, path)) {
    switch (name) {
      case "aliases":
        d.aliases = str(value, p);
        break;
      case "arch":
        d.arch = str(value, p);
        break;
      case "os":
        d.os = str(value, p);
        break;
      case "release":
        d.release = str(value, p);
        break;
      case "release_title":
        d.releaseTitle = str(value, p);
        break;
      case "release_codename":
        d.releaseCodename = str(value, p);
        break;
      case "variant":
        d.variant = str(value, p);
        break;
      case "version":
        d.version = str(value, p);
        break;
      case "supported":
        d.supported = bool(value, p);
        break;
      case "support_eol":
        d.supportEol = str(value, p);
        break;
      case "lxd_requirements":
        d.lxdRequirements = mapOf(value, p, str);
        break;
      case "requirements":
        d.requirements = mapOf(value, p, str);
        break;
      case "versions":
        d.versions = mapOf(value, p, parseVersion);
        break;
    }
  }
  return d;
}

function parseVersion(json: unknown, path: string): VersionDoc {
  const v: VersionDoc = { label: "", pubname: "", items: new Map() };
  for (const [name, value, p] of fields(json, path)) {
    if (name === "items") v.items = mapOf(value, p, parseItem);
    else if (name === "label") v.label = str(value, p);
    else if (name === "pubname") v.pubname = str(value, p);
  }
  return v;
}

const COMBINED_TO_ROOT = new Map<string, RootFtype>(ROOT_FTYPES.map((r) => [COMBINED_FIELD[r], r]));

function parseItem(json: unknown, path: string): ItemDoc {
  const it: ItemDoc = {
    ftype: "",
    path: "",
    sha256: "",
    md5: "",
    size: 0,
    combined: {},
    combinedSha256: "",
    combinedType: "",
    deltaBase: "",
  };
  for (const [name, value, p] of fields(json, path)) {
    const root = COMBINED_TO_ROOT.get(name);
    if (root !== undefined) {
      const s = str(value, p);
      if (s === "") delete it.combined[root];
      else it.combined[root] = s;
      continue;
    }
    switch (name) {
      case "ftype":
        it.ftype = str(value, p);
        break;
      case "path":
        it.path = str(value, p);
        break;
      case "sha256":
        it.sha256 = str(value, p);
        break;
      case "md5":
        it.md5 = str(value, p);
        break;
      case "size":
        it.size = int64(value, p);
        break;
      case "combined_sha256":
        it.combinedSha256 = str(value, p);
        break;
      case "combined_type":
        it.combinedType = str(value, p);
        break;
      case "delta_base":
        it.deltaBase = str(value, p);
        break;
    }
  }
  return it;
}

// ----- Go-like decoding helpers -----

/** Folds a JSON key the way Go matches it to a field name (result is lower-case ASCII for field names). */
function foldKey(key: string): string {
  return key.replace(/[A-Z\u212a\u017f]/g, (c) =>
    c === "\u212a" ? "k" : c === "\u017f" ? "s" : c.toLowerCase(),
  );
}

function childPath(path: string, key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  return `the ${typeof v} ${String(v)}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Members of a JSON object decoded into a Go struct: [folded name, value, path], in document order. */
function fields(json: unknown, path: string): [string, unknown, string][] {
  if (json === null) return [];
  if (!isObject(json)) throw new StreamParseError(path, `expected an object, got ${describe(json)}`);
  return Object.keys(json).map((k) => [foldKey(k), json[k], childPath(path, k)]);
}

function str(v: unknown, path: string): string {
  if (v === null) return "";
  if (typeof v !== "string") throw new StreamParseError(path, `expected a string, got ${describe(v)}`);
  return v;
}

function bool(v: unknown, path: string): boolean {
  if (v === null) return false;
  if (typeof v !== "boolean") throw new StreamParseError(path, `expected a boolean, got ${describe(v)}`);
  return v;
}

function int64(v: unknown, path: string): number {
  if (v === null) return 0;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new StreamParseError(path, `expected an integer, got ${describe(v)}`);
  }
  if (!Number.isSafeInteger(v)) throw new StreamParseError(path, `integer ${v} is too large`);
  return v;
}

function strArray(v: unknown, path: string): string[] {
  if (v === null) return [];
  if (!Array.isArray(v)) throw new StreamParseError(path, `expected an array of strings, got ${describe(v)}`);
  return v.map((x, i) => str(x, `${path}[${i}]`));
}

function mapOf<T>(v: unknown, path: string, decode: (value: unknown, path: string) => T): Map<string, T> {
  const out = new Map<string, T>();
  if (v === null) return out;
  if (!isObject(v)) throw new StreamParseError(path, `expected an object, got ${describe(v)}`);
  for (const k of Object.keys(v)) out.set(k, decode(v[k], `${path}[${JSON.stringify(k)}]`));
  return out;
}
