import { compareVersionKeys } from "../simplestreams/version.js";
import type { Catalog, ProductKey } from "../storage/catalog/catalog.js";
import { LxhubError } from "./errors.js";
import { productTarget } from "./paths.js";
import type { Actor, PublishService } from "./publish.js";
import { globToRegExp } from "./tokens.js";

/**
 * Retention: which versions of a product stay published. A policy names products by a pattern
 * over `os/release/arch/variant` (`*` matches anything, as in token scopes) and keeps the newest
 * `keep` versions and/or the versions published less than `youngerThanSeconds` ago; a version
 * either rule keeps stays. The newest version always stays, so a product's aliases always point
 * at a surviving version. For each product the first policy that matches applies.
 *
 * A retired version leaves the documents at once (one change for every version retired
 * together, each one in the audit log), but its files stay downloadable through the garbage
 * collector's grace period (registry/gc.ts), so clients holding an older index get no 404.
 */
export interface RetentionPolicy {
  /** Pattern over `os/release/arch/variant`; default `*`. */
  product: string;
  keep?: number;
  youngerThanSeconds?: number;
}

export interface RetiredVersion {
  product: ProductKey;
  version: string;
  /** The policy's rule in words, for the audit log and the report. */
  reason: string;
}

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** `30d`, `12h`, `90m`, `45s`, `2w` (or plain seconds) → seconds. */
export function parseAge(text: string, what: string): number {
  const m = /^(\d+)\s*([smhdw]?)$/.exec(text.trim());
  const n = m ? Number(m[1]) * (UNITS[m[2] || "s"] ?? NaN) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new LxhubError(
      "BAD_REQUEST",
      `${what}: ${JSON.stringify(text)} is not a duration (e.g. 30d, 12h, 90m)`,
    );
  }
  return n;
}

/** Checks a policy; a bad one is a BAD_REQUEST naming what is wrong. */
export function checkPolicy(p: RetentionPolicy): RetentionPolicy {
  if (typeof p.product !== "string" || !/^[A-Za-z0-9._+*/-]{1,256}$/.test(p.product)) {
    throw new LxhubError(
      "BAD_REQUEST",
      `retention: product pattern ${JSON.stringify(p.product)} is not a pattern like debian/* or *`,
    );
  }
  if (p.keep === undefined && p.youngerThanSeconds === undefined) {
    throw new LxhubError("BAD_REQUEST", `retention for ${p.product}: give keep, younger-than, or both`);
  }
  if (p.keep !== undefined && (!Number.isSafeInteger(p.keep) || p.keep < 1)) {
    throw new LxhubError(
      "BAD_REQUEST",
      `retention for ${p.product}: keep must be a whole number, at least 1`,
    );
  }
  if (
    p.youngerThanSeconds !== undefined &&
    (!Number.isSafeInteger(p.youngerThanSeconds) || p.youngerThanSeconds < 1)
  ) {
    throw new LxhubError(
      "BAD_REQUEST",
      `retention for ${p.product}: younger-than must be at least one second`,
    );
  }
  return p;
}

/**
 * One policy as a flag writes it: `PATTERN:keep=N,younger-than=DURATION` (either rule or both),
 * e.g. `debian/*:keep=3` or `*:keep=5,younger-than=30d`.
 */
export function parsePolicy(text: string): RetentionPolicy {
  const at = text.indexOf(":");
  if (at < 1) {
    throw new LxhubError(
      "BAD_REQUEST",
      `retention ${JSON.stringify(text)}: write PATTERN:keep=N,younger-than=DURATION`,
    );
  }
  const policy: RetentionPolicy = { product: text.slice(0, at) };
  for (const part of text.slice(at + 1).split(",")) {
    const [k, v = ""] = part.split("=", 2).map((s) => s.trim()) as [string, string?];
    if (k === "keep" && /^\d+$/.test(v)) policy.keep = Number(v);
    else if (k === "younger-than") policy.youngerThanSeconds = parseAge(v, `retention ${text}`);
    else {
      throw new LxhubError(
        "BAD_REQUEST",
        `retention ${JSON.stringify(text)}: unknown rule ${JSON.stringify(part)} (keep=N, younger-than=DURATION)`,
      );
    }
  }
  return checkPolicy(policy);
}

function rule(p: RetentionPolicy): string {
  const parts: string[] = [];
  if (p.keep !== undefined) parts.push(`keep the newest ${p.keep}`);
  if (p.youngerThanSeconds !== undefined) parts.push(`keep those younger than ${p.youngerThanSeconds} s`);
  return `retention ${p.product}: ${parts.join(" and ")}`;
}

/** The versions `policies` retire, from the catalog's products and live versions (pure). */
export function planRetention(
  products: { key: ProductKey; versions: { name: string; createdAt: string }[] }[],
  policies: readonly RetentionPolicy[],
  now: Date,
): RetiredVersion[] {
  const compiled = policies.map((p) => ({ p, re: globToRegExp(p.product) }));
  const out: RetiredVersion[] = [];
  for (const { key, versions } of products) {
    const target = productTarget(key);
    const policy = compiled.find((c) => c.re.test(target))?.p;
    if (!policy || versions.length < 2) continue;
    const newestFirst = [...versions].sort((a, b) => compareVersionKeys(b.name, a.name));
    newestFirst.forEach((v, i) => {
      if (i === 0) return; // the newest always stays
      const byCount = policy.keep !== undefined && i < policy.keep;
      const byAge =
        policy.youngerThanSeconds !== undefined &&
        now.getTime() - Date.parse(v.createdAt) < policy.youngerThanSeconds * 1000;
      if (!byCount && !byAge) out.push({ product: key, version: v.name, reason: rule(policy) });
    });
  }
  return out;
}

/** Applies retention policies to the catalog, through the publish pipeline. */
export class RetentionService {
  constructor(
    private readonly catalog: Catalog,
    private readonly publish: PublishService,
    /** The server's own policies (`lxhub serve --retain`), applied after each publish. */
    readonly policies: readonly RetentionPolicy[] = [],
  ) {
    policies.forEach(checkPolicy);
  }

  /**
   * Retires what `policies` (default the server's) retire, in every product or in `only`;
   * with `dryRun`, only says what it would retire.
   */
  async prune(
    actor: Actor,
    o: { policies?: readonly RetentionPolicy[]; dryRun?: boolean; only?: ProductKey; now?: Date } = {},
  ): Promise<RetiredVersion[]> {
    const policies = (o.policies ?? this.policies).map(checkPolicy);
    if (!policies.length) return [];
    const state = await this.catalog.images.snapshot();
    const products = state
      .filter((e) => !o.only || productTarget(e.product) === productTarget(o.only))
      .map((e) => ({
        key: {
          os: e.product.os,
          release: e.product.release,
          arch: e.product.arch,
          variant: e.product.variant,
        },
        versions: e.versions
          .filter((v) => !v.deletedAt)
          .map((v) => ({ name: v.name, createdAt: v.createdAt })),
      }));
    const retire = planRetention(products, policies, o.now ?? new Date());
    if (!o.dryRun && retire.length) await this.publish.retireVersions(actor, retire);
    return retire;
  }
}
