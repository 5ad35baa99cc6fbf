import type { ProductDoc, ProductsDoc } from "./types.js";
import { compareVersionKeys } from "./version.js";

/**
 * Mirror filters, in the grammar of the canonical `sstream-mirror`: `KEY=VALUE` (equal),
 * `KEY!=VALUE` (not equal), `KEY~REGEX` (the regular expression matches somewhere in the value,
 * as Python's `re.search` does). Several filters must all hold. `os`, `release`, `arch` and
 * `variant` select products; `ftype` selects the files of each version, and a version left with
 * no file is left out. `keep` then keeps the newest N versions of each product (version keys
 * compared as clients compare them).
 */
export const FILTER_KEYS = ["os", "release", "arch", "variant", "ftype"] as const;
export type FilterKey = (typeof FILTER_KEYS)[number];

export interface Filter {
  key: FilterKey;
  op: "=" | "!=" | "~";
  value: string;
  /** As written, for messages. */
  text: string;
  test(actual: string): boolean;
}

export class FilterError extends Error {
  override name = "FilterError";
}

const FILTER_RE = /^([a-z_]+)(!=|=|~)(.*)$/s;

/** Parses one filter; a FilterError says what is wrong with it. */
export function parseFilter(text: string): Filter {
  const m = FILTER_RE.exec(text);
  if (!m) throw new FilterError(`filter ${JSON.stringify(text)}: use KEY=VALUE, KEY!=VALUE or KEY~REGEX`);
  const [, key = "", op = "", value = ""] = m;
  if (!(FILTER_KEYS as readonly string[]).includes(key)) {
    throw new FilterError(
      `filter ${JSON.stringify(text)}: unknown key ${JSON.stringify(key)} (known: ${FILTER_KEYS.join(", ")})`,
    );
  }
  let test: (actual: string) => boolean;
  if (op === "~") {
    let re: RegExp;
    try {
      re = new RegExp(value, "u");
    } catch (err) {
      throw new FilterError(
        `filter ${JSON.stringify(text)}: not a regular expression (${(err as Error).message})`,
      );
    }
    test = (actual) => re.test(actual);
  } else if (op === "=") {
    test = (actual) => actual === value;
  } else {
    test = (actual) => actual !== value;
  }
  return { key: key as FilterKey, op: op as Filter["op"], value, text, test };
}

/**
 * The part of `doc` the filters select, with at most `keep` newest versions per product (all when
 * `keep` is undefined). Products left with no version are dropped. `doc` is not changed.
 */
export function selectProducts(doc: ProductsDoc, filters: readonly Filter[], keep?: number): ProductsDoc {
  if (keep !== undefined && (!Number.isSafeInteger(keep) || keep < 1)) {
    throw new FilterError(`keep must be a whole number of versions, at least 1 (got ${keep})`);
  }
  const productFilters = filters.filter((f) => f.key !== "ftype");
  const fileFilters = filters.filter((f) => f.key === "ftype");
  const products = new Map<string, ProductDoc>();
  for (const [name, product] of doc.products) {
    if (!productFilters.every((f) => f.test(product[f.key as Exclude<FilterKey, "ftype">]))) continue;
    const versions: ProductDoc["versions"] = new Map();
    const names = [...product.versions.keys()].sort((a, b) => compareVersionKeys(b, a));
    for (const v of names) {
      const version = product.versions.get(v)!;
      const items = new Map(
        [...version.items].filter(([, item]) => fileFilters.every((f) => f.test(item.ftype))),
      );
      if (items.size === 0) continue;
      versions.set(v, { ...version, items });
      if (keep !== undefined && versions.size >= keep) break;
    }
    if (versions.size) products.set(name, { ...product, versions });
  }
  return { ...doc, products };
}
