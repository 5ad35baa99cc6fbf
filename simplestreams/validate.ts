/**
 * The one rule set of what lxhub publishes. The publish API checks a request with these
 * functions before it reads a blob, the publish pipeline runs `validateStream` over the catalog
 * as it will be before it commits, and the document builder runs it over the catalog as it is,
 * so a rule cannot be enforced in one place and forgotten in another.
 *
 * Strict mode throws the first `StreamValidationError`; lenient mode (`onDrop`) leaves out the
 * smallest part that breaks a rule (a product, a version or an alias) and reports it, so that a
 * catalog row written by an older version or by hand never stops the server from signing.
 */
import { canonicalArch } from "./arch.js";
import { StreamValidationError, type StreamLocation, type StreamRule } from "./errors.js";
import {
  MAX_ALIASES,
  MAX_REQUIREMENTS,
  TEXT_LIMITS,
  hasControl,
  nameProblem,
  textProblem,
  type NameKind,
} from "./names.js";
import {
  LXC_META_FTYPE,
  META_FTYPES,
  PUBLISHABLE_FTYPES,
  ROOT_FTYPES,
  COMBINED_FIELD,
  type MetaFtype,
  type RootFtype,
  type StreamFile,
  type StreamProduct,
  type StreamVersion,
} from "./types.js";
import { compareVersionKeys } from "./version.js";

/** Delta ftypes and the root ftype each one rebuilds (§5). */
export const DELTA_TARGETS = {
  "squashfs.vcdiff": "squashfs",
  "disk-kvm.img.vcdiff": "disk-kvm.img",
} as const;
export type DeltaFtype = keyof typeof DELTA_TARGETS;

/** Image type a root ftype makes (§3.4). */
export function imageTypeOfRoot(ftype: RootFtype): "container" | "virtual-machine" {
  return ftype === "squashfs" || ftype === "root.tar.xz" ? "container" : "virtual-machine";
}

/** Product key lxhub publishes: `os:release:arch:variant`, like lxc-ci and lxd-imagebuilder (§2.2). */
export function productKey(p: Pick<StreamProduct, "os" | "release" | "arch" | "variant">): string {
  return [p.os, p.release, p.arch, p.variant].map((x) => (typeof x === "string" ? x : String(x))).join(":");
}

export function isMeta(ftype: string): ftype is MetaFtype {
  return (META_FTYPES as readonly string[]).includes(ftype);
}
export function isRoot(ftype: string): ftype is RootFtype {
  return (ROOT_FTYPES as readonly string[]).includes(ftype);
}
export function isDelta(ftype: string): ftype is DeltaFtype {
  return Object.hasOwn(DELTA_TARGETS, ftype);
}

const HEX64 = /^[0-9a-f]{64}$/;
const EOL_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

/**
 * Whether a path is safe to publish: relative, `/`-separated, no empty, `.` or `..` segment, no
 * backslash or control character. The canonical tools refuse absolute and `../` paths (§1.1) and
 * LXD would silently clean `..` and `//` into another file.
 */
export function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.length > 1024 || p.startsWith("/") || p.includes("\\") || hasControl(p))
    return false;
  return p.split("/").every((seg) => seg !== "" && seg !== "." && seg !== "..");
}

function fail(rule: StreamRule, at: StreamLocation, problem: string): never {
  throw new StreamValidationError(rule, at, problem);
}

function fileLabel(f: { name?: unknown; path?: unknown; ftype?: unknown }): string {
  return `${JSON.stringify(f.name ?? f.path)} (${String(f.ftype)})`;
}

function checkName(kind: NameKind, at: StreamLocation, value: unknown): void {
  const problem = nameProblem(kind, value);
  if (problem) fail("name", at, problem);
}

/** The fields of a product other than its versions: key parts, title, aliases, requirements, EOL. */
export function checkProductFields(
  p: Pick<
    StreamProduct,
    "os" | "release" | "arch" | "variant" | "releaseTitle" | "aliases" | "requirements"
  > & {
    supportEol?: string;
  },
): void {
  const at = { product: productKey(p) };
  for (const kind of ["os", "release", "arch", "variant"] as const) checkName(kind, at, p[kind]);
  const title = textProblem("release_title", p.releaseTitle, TEXT_LIMITS.releaseTitle, true);
  if (title) fail("text", at, title);
  checkAliases(at, p.aliases);
  checkRequirements(at, p.requirements);
  if (p.supportEol !== undefined) {
    const m = typeof p.supportEol === "string" ? EOL_DATE.exec(p.supportEol) : null;
    const d = m ? new Date(`${p.supportEol}T00:00:00Z`) : null;
    if (!m || !d || Number.isNaN(d.getTime()) || d.toISOString().slice(0, 10) !== p.supportEol) {
      fail("text", at, `supportEol ${JSON.stringify(p.supportEol)} must be a real date YYYY-MM-DD`);
    }
  }
}

/** Aliases: each one a name of the alias grammar (no commas or white space: pitfall 7), none twice. */
export function checkAliases(at: StreamLocation, aliases: unknown): void {
  if (!Array.isArray(aliases)) fail("alias", at, "aliases must be an array of strings");
  if (aliases.length > MAX_ALIASES) fail("alias", at, `at most ${MAX_ALIASES} aliases per product`);
  const seen = new Set<string>();
  for (const a of aliases) {
    const problem = nameProblem("alias", a);
    if (problem) fail("alias", at, problem);
    if (seen.has(a as string)) fail("alias", at, `alias ${JSON.stringify(a)} is listed twice`);
    seen.add(a as string);
  }
}

/** Requirements: keys of the requirement-key grammar, string values (pitfall 4) without control characters. */
export function checkRequirements(at: StreamLocation, requirements: unknown): void {
  if (typeof requirements !== "object" || requirements === null || Array.isArray(requirements)) {
    fail("requirement", at, "requirements must be an object of strings");
  }
  const entries = Object.entries(requirements as Record<string, unknown>);
  if (entries.length > MAX_REQUIREMENTS)
    fail("requirement", at, `at most ${MAX_REQUIREMENTS} requirements per product`);
  for (const [k, v] of entries) {
    const keyProblem = nameProblem("requirementKey", k);
    if (keyProblem) fail("requirement", at, keyProblem);
    if (typeof v !== "string") {
      // Go decodes into map[string]string: a bool or number fails the whole file (pitfall 4).
      fail(
        "requirement",
        at,
        `requirement ${JSON.stringify(k)} must be a string, got ${typeof v} (pitfall 4)`,
      );
    }
    const valueProblem = textProblem(
      `requirement ${JSON.stringify(k)}`,
      v,
      TEXT_LIMITS.requirementValue,
      true,
    );
    if (valueProblem) fail("requirement", at, valueProblem);
  }
}

/** The part of a file a publish request names: its name, role and delta base. */
export interface FileShape {
  name: string;
  ftype: string;
  deltaBase?: string | null;
}

/**
 * The files of one version, by shape: file names of the file grammar and unique, known ftypes,
 * at most one metadata file, one file per root ftype and one delta per delta ftype (LXD 5.0.2
 * applies every matching delta in turn: pitfall 23), `deltaBase` on deltas and only on them.
 */
export function checkVersionShape(at: StreamLocation, files: readonly FileShape[]): void {
  if (!Array.isArray(files)) fail("file", at, "files must be an array");
  const names = new Set<string>();
  const roles = new Set<string>();
  for (const f of files) {
    const fat = { ...at, file: fileLabel(f) };
    const nameIssue = nameProblem("file", f.name);
    if (nameIssue) fail("file", fat, nameIssue);
    if (names.has(f.name)) fail("file", fat, `file name ${JSON.stringify(f.name)} is given twice`);
    names.add(f.name);
    if (!(PUBLISHABLE_FTYPES as readonly string[]).includes(f.ftype)) {
      fail("file", fat, `unknown ftype ${JSON.stringify(f.ftype)} (known: ${PUBLISHABLE_FTYPES.join(", ")})`);
    }
    const role = isMeta(f.ftype) ? "metadata" : f.ftype;
    if (roles.has(role)) {
      // Two metadata items make each pair twice or clash on the item key (pitfall 29).
      fail(isDelta(f.ftype) ? "delta" : "file", fat, `more than one ${role} file in one version`);
    }
    roles.add(role);
    const hasBase = f.deltaBase !== undefined && f.deltaBase !== null;
    if (isDelta(f.ftype) !== hasBase)
      fail("delta", fat, "delta files, and only they, name a delta_base version");
    if (hasBase) {
      const baseIssue = nameProblem("version", f.deltaBase);
      if (baseIssue) fail("delta", fat, `delta_base: ${baseIssue}`);
    }
  }
}

/** A version that passed, with its files by role. */
export interface CheckedVersion {
  version: StreamVersion;
  meta: StreamFile | undefined;
  roots: Map<RootFtype, StreamFile>;
  deltas: Map<DeltaFtype, StreamFile>;
  /** The LXC download template's `meta.tar.xz`, if published. */
  lxc: StreamFile | undefined;
}

/** A product that passed, with the versions that passed. */
export interface CheckedProduct {
  key: string;
  product: StreamProduct;
  canonical: string;
  versions: CheckedVersion[];
  /** Aliases that passed (lenient mode may leave some out). */
  aliases: string[];
}

function checkHex(at: StreamLocation, field: string, value: unknown): void {
  if (typeof value !== "string" || !HEX64.test(value)) {
    // Clients compare the lower-case hex digest as a string (pitfall 5).
    fail("file", at, `${field} ${JSON.stringify(value)} must be 64 lower-case hex characters (pitfall 5)`);
  }
}

/** One version on its own: name, label, shape, paths, hashes, sizes, combined hashes. */
export function checkVersion(productKeyText: string, v: StreamVersion): CheckedVersion {
  const at = { product: productKeyText, version: String(v.name) };
  checkName("version", at, v.name);
  if (v.label !== undefined) {
    const problem = textProblem("label", v.label, TEXT_LIMITS.releaseTitle, true);
    if (problem) fail("text", at, problem);
  }
  checkVersionShape(at, v.files);
  let meta: StreamFile | undefined;
  const roots = new Map<RootFtype, StreamFile>();
  const deltas = new Map<DeltaFtype, StreamFile>();
  for (const f of v.files) {
    const fat = { ...at, file: fileLabel(f) };
    if (typeof f.path !== "string" || !isSafeRelativePath(f.path)) {
      fail(
        "file",
        fat,
        `path ${JSON.stringify(f.path)} must be relative, without "..", "." or empty segments`,
      );
    }
    checkHex(fat, "sha256", f.sha256);
    if (typeof f.size !== "number" || !Number.isSafeInteger(f.size) || f.size < 0) {
      fail("file", fat, `size ${JSON.stringify(f.size)} must be a non-negative integer (pitfall 1)`);
    }
    if (isMeta(f.ftype)) meta = f;
    else if (f.combined !== undefined) fail("file", fat, "only a metadata file carries combined hashes");
    if (isRoot(f.ftype)) roots.set(f.ftype, f);
    if (isDelta(f.ftype)) deltas.set(f.ftype, f);
  }
  if (meta) {
    const fat = { ...at, file: fileLabel(meta) };
    const combined = meta.combined ?? {};
    if (typeof combined !== "object" || combined === null) fail("file", fat, "combined must be an object");
    for (const [root, value] of Object.entries(combined)) {
      if (!isRoot(root)) fail("file", fat, `combined hash for unknown root ftype ${JSON.stringify(root)}`);
      checkHex(fat, `combined ${root} hash`, value);
    }
    for (const root of roots.keys()) {
      if (combined[root] === undefined) {
        // Without it, every client silently drops the (meta, root) image (§3.2, pitfall 6).
        fail(
          "file",
          fat,
          `missing combined ${root} hash (${COMBINED_FIELD[root]}) for the ${root} file of this version (pitfall 6)`,
        );
      }
    }
  }
  const lxc = v.files.find((f) => f.ftype === LXC_META_FTYPE);
  return { version: v, meta, roots, deltas, lxc };
}

/** Deltas reference an older version of the same product that has something to apply them to (§5). */
function checkDeltas(productKeyText: string, cv: CheckedVersion, byName: Map<string, CheckedVersion>): void {
  for (const [ftype, f] of cv.deltas) {
    const at = { product: productKeyText, version: cv.version.name, file: fileLabel(f) };
    const base = f.deltaBase as string;
    const target = DELTA_TARGETS[ftype];
    const baseVersion = byName.get(base);
    if (compareVersionKeys(base, cv.version.name) >= 0) {
      fail(
        "delta",
        at,
        `delta_base ${JSON.stringify(base)} must be an older version than ${JSON.stringify(cv.version.name)}`,
      );
    }
    if (!baseVersion)
      fail("delta", at, `delta_base ${JSON.stringify(base)} is not a published version of this product`);
    if (!cv.roots.has(target))
      fail("delta", at, `a ${ftype} delta needs a ${target} file in the same version`);
    if (!baseVersion.meta || !baseVersion.roots.has(target)) {
      // Clients take the delta's source fingerprint from the base version's metadata item.
      fail(
        "delta",
        at,
        `delta_base version ${JSON.stringify(base)} has no metadata + ${target} image to apply the delta to`,
      );
    }
  }
}

export interface ValidateOptions {
  /** Lenient mode: leave out what breaks a rule (product, version or alias) and report it here. */
  onDrop?: (problem: StreamValidationError) => void;
  /**
   * The product (and version) being published: checked last in the rules that span records, so
   * a clash is blamed on it and never on what was published before.
   */
  blame?: { product: string; version?: string };
}

/**
 * Every rule over a whole stream: each product on its own, each version, deltas within a
 * product, then what spans products (unique keys, one content per path, unique images, one
 * owner per alias). Returns the products that passed, in input order.
 */
export function validateStream(
  products: readonly StreamProduct[],
  opts: ValidateOptions = {},
): CheckedProduct[] {
  const guard = <T>(fn: () => T): T | undefined => {
    if (!opts.onDrop) return fn();
    try {
      return fn();
    } catch (err) {
      if (!(err instanceof StreamValidationError)) throw err;
      opts.onDrop(err);
      return undefined;
    }
  };
  const blamedLast = (key: string): number => (opts.blame?.product === key ? 1 : 0);
  const ordered = [...products].sort((a, b) => blamedLast(productKey(a)) - blamedLast(productKey(b)));

  const checked: CheckedProduct[] = [];
  for (const p of ordered) {
    const c = guard(() => checkProduct(p, opts, guard));
    if (c) checked.push(c);
  }
  checkStreamWide(checked, guard);
  const kept = checked.filter((c) => c.versions.length > 0);
  const rank = new Map(products.map((p, i) => [productKey(p), i]));
  return kept.sort((a, b) => (rank.get(a.key) ?? 0) - (rank.get(b.key) ?? 0));
}

type Guard = <T>(fn: () => T) => T | undefined;

function checkProduct(p: StreamProduct, opts: ValidateOptions, guard: Guard): CheckedProduct {
  const key = productKey(p);
  checkProductFields(p);
  const canonical = canonicalArch(p.arch) as string;
  if (!Array.isArray(p.versions)) fail("file", { product: key }, "versions must be an array");
  const blamed = opts.blame?.product === key ? opts.blame.version : undefined;
  const ordered = [...p.versions].sort((a, b) => (a.name === blamed ? 1 : 0) - (b.name === blamed ? 1 : 0));
  const versions: CheckedVersion[] = [];
  const names = new Set<string>();
  for (const v of ordered) {
    const cv = guard(() => {
      if (names.has(v.name))
        fail("name", { product: key, version: v.name }, `version ${JSON.stringify(v.name)} is listed twice`);
      return checkVersion(key, v);
    });
    if (cv) {
      names.add(v.name);
      versions.push(cv);
    }
  }
  // A version whose delta is broken is left out as a whole; deltas only ever name older versions,
  // so checking in version order sees every base before the versions that name it.
  versions.sort((a, b) => compareVersionKeys(a.version.name, b.version.name));
  const byName = new Map<string, CheckedVersion>();
  const passed: CheckedVersion[] = [];
  for (const cv of versions) {
    if (guard(() => (checkDeltas(key, cv, byName), true))) {
      byName.set(cv.version.name, cv);
      passed.push(cv);
    }
  }
  const order = new Map(p.versions.map((v, i) => [v.name, i]));
  passed.sort((a, b) => (order.get(a.version.name) ?? 0) - (order.get(b.version.name) ?? 0));
  return { key, product: p, canonical, versions: passed, aliases: [...p.aliases] };
}

/** Rules that span products: unique keys, immutable paths, unique pairs and fingerprints, unique aliases. */
function checkStreamWide(checked: CheckedProduct[], guard: Guard): void {
  const keys = new Set<string>();
  const paths = new Map<string, { sha256: string; size: number; at: string }>();
  const fingerprints = new Map<string, string>();
  const pairs = new Map<string, string>();
  const aliases = new Map<string, string>();

  for (const c of checked) {
    if (keys.has(c.key)) {
      guard(() => fail("name", { product: c.key }, "product is listed twice"));
      c.versions = [];
      continue;
    }
    keys.add(c.key);
    const types = new Set<string>();
    c.versions = c.versions.filter(
      (cv) =>
        guard(() => {
          const at = (f: StreamFile) => ({ product: c.key, version: cv.version.name, file: fileLabel(f) });
          const here = `product ${JSON.stringify(c.key)} version ${JSON.stringify(cv.version.name)}`;
          const where = (f: StreamFile) => `${here} file ${JSON.stringify(f.name ?? f.path)}`;
          for (const f of cv.version.files) {
            const seen = paths.get(f.path);
            if (seen && (seen.sha256 !== f.sha256 || seen.size !== f.size)) {
              // One path, one content: caches and mirrors rely on it (pitfall 19).
              fail(
                "file",
                at(f),
                `path ${JSON.stringify(f.path)} already names different content at ${seen.at}`,
              );
            }
          }
          const found: [string, string][] = [];
          if (cv.meta) {
            for (const [root, rf] of cv.roots) {
              const fingerprint = cv.meta.combined?.[root] as string;
              const other = pairs.get(`${cv.meta.sha256}:${rf.sha256}`) ?? fingerprints.get(fingerprint);
              if (other !== undefined) {
                // Two images with one fingerprint: every lookup fails with "More than one match" (pitfall 29).
                fail(
                  "duplicate-image",
                  at(rf),
                  `the same metadata + ${root} image (fingerprint ${fingerprint}) is already published at ${other} (pitfall 29)`,
                );
              }
              found.push([`${cv.meta.sha256}:${rf.sha256}`, fingerprint]);
            }
          }
          for (const f of cv.version.files)
            if (!paths.has(f.path)) paths.set(f.path, { sha256: f.sha256, size: f.size, at: where(f) });
          for (const [pair, fingerprint] of found) {
            pairs.set(pair, here);
            fingerprints.set(fingerprint, here);
          }
          if (cv.meta) for (const root of cv.roots.keys()) types.add(imageTypeOfRoot(root));
          return true;
        }) === true,
    );

    // Clients register `A` and `A/<raw arch>` per (type, canonical arch), first product in sort
    // order wins regardless of dates (§4.2–4.3, pitfall 22): an alias has one owner.
    c.aliases = c.aliases.filter(
      (a) =>
        guard(() => {
          for (const type of types) {
            for (const name of [a, `${a}/${c.product.arch}`]) {
              const owner = aliases.get(`${type}\u0000${c.canonical}\u0000${name}`);
              if (owner !== undefined && owner !== c.key) {
                fail(
                  "alias-conflict",
                  { product: c.key },
                  `alias ${JSON.stringify(name)} (${type}, ${c.canonical}) already belongs to product ${JSON.stringify(owner)} (pitfall 22)`,
                );
              }
            }
          }
          for (const type of types) {
            for (const name of [a, `${a}/${c.product.arch}`])
              aliases.set(`${type}\u0000${c.canonical}\u0000${name}`, c.key);
          }
          return true;
        }) === true,
    );
  }
}
