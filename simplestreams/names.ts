/**
 * The one grammar of every name lxhub publishes. Each name becomes a path segment, a JSON key
 * or a part of a product key that LXD, Incus and the canonical tools read (docs/simplestreams.md
 * §1.1, §2.4, §4.1), so it is defined here once and enforced at the API boundary, in the publish
 * validator and in the document builder alike; `openapi.yaml` repeats these patterns and a
 * contract test checks that it does.
 *
 * Patterns are plain ECMAScript regular expressions without length quantifiers (JSON Schema
 * `pattern` uses the same dialect); the length limit is `maxLength`.
 */
import { canonicalArch } from "./arch.js";
import { MAX_VERSION_KEY_LENGTH, VERSION_KEY_PATTERN, versionDate } from "./version.js";

export interface NameRule {
  /** Anchored pattern, also published in openapi.yaml. */
  readonly pattern: RegExp;
  readonly maxLength: number;
  /** What the name is, for error messages. */
  readonly what: string;
  /** The rule in words, for error messages. */
  readonly hint: string;
}

/** A product key part: starts with a letter or digit; letters, digits and `._+-`. */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;
const SEGMENT_HINT = "a letter or digit, then letters, digits and . _ + -";

export const NAMES = {
  os: { pattern: SEGMENT, maxLength: 64, what: "os", hint: SEGMENT_HINT },
  release: { pattern: SEGMENT, maxLength: 64, what: "release", hint: SEGMENT_HINT },
  arch: {
    pattern: SEGMENT,
    maxLength: 64,
    what: "architecture",
    hint: "an architecture LXD knows, e.g. amd64, arm64",
  },
  variant: { pattern: SEGMENT, maxLength: 64, what: "variant", hint: SEGMENT_HINT },
  /** Version keys start with a real date YYYYMMDD; clients skip any other (pitfall 8). */
  version: {
    pattern: VERSION_KEY_PATTERN,
    maxLength: MAX_VERSION_KEY_LENGTH,
    what: "version",
    hint: "a real date YYYYMMDD, then letters, digits and _ . : - (e.g. 20240101_0000)",
  },
  /**
   * Aliases: `/`-separated words, no empty segment; clients split the aliases string on `,` and
   * keep white space (pitfall 7), so neither may appear.
   */
  alias: {
    pattern: /^[A-Za-z0-9][A-Za-z0-9._:+-]*(\/[A-Za-z0-9][A-Za-z0-9._:+-]*)*$/,
    maxLength: 128,
    what: "alias",
    hint: "/-separated words of letters, digits and . _ : + -, each starting with a letter or digit",
  },
  /** The last segment of an image file's path. */
  file: {
    pattern: /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
    maxLength: 128,
    what: "file name",
    hint: "a letter or digit, then letters, digits and . _ -",
  },
  /** Keys of `requirements` (LXD's `lxd_requirements`, e.g. `secureboot`, `cgroup`). */
  requirementKey: {
    pattern: /^[A-Za-z0-9][A-Za-z0-9_.-]*$/,
    maxLength: 64,
    what: "requirement key",
    hint: "a letter or digit, then letters, digits and _ . -",
  },
} as const satisfies Record<string, NameRule>;

export type NameKind = keyof typeof NAMES;

/** Free text published in the documents (release titles, requirement values): bounded, no control characters. */
export const TEXT_LIMITS = { releaseTitle: 256, requirementValue: 256 } as const;
/** How many aliases and requirements one product may carry. */
export const MAX_ALIASES = 32;
export const MAX_REQUIREMENTS = 32;

// eslint-disable-next-line no-control-regex -- the point is to find control characters
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Whether a text contains a control character (C0, DEL or C1). */
export function hasControl(text: string): boolean {
  return CONTROL.test(text);
}

/**
 * What is wrong with `value` as a name of this kind, in words, or null when it is fine. Beyond
 * the pattern: a version must start with a real calendar date, an arch must be one LXD knows.
 */
export function nameProblem(kind: NameKind, value: unknown): string | null {
  const rule: NameRule = NAMES[kind];
  if (typeof value !== "string") return `${rule.what} must be a string`;
  const shown = JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
  if (value.length === 0) return `${rule.what} must not be empty`;
  if (value.length > rule.maxLength)
    return `${rule.what} ${shown} is longer than ${rule.maxLength} characters`;
  if (!rule.pattern.test(value)) return `${rule.what} ${shown} must be ${rule.hint}`;
  if (kind === "version" && versionDate(value) === null)
    return `${rule.what} ${shown} must start with a real date YYYYMMDD`;
  if (kind === "arch" && canonicalArch(value) === null)
    return `unknown architecture ${shown} (use e.g. amd64, arm64)`;
  return null;
}

/** Whether `value` is a valid name of this kind. */
export function isName(kind: NameKind, value: unknown): value is string {
  return nameProblem(kind, value) === null;
}

/** What is wrong with a free text field, or null: a string, at most `max` characters, no control character. */
export function textProblem(what: string, value: unknown, max: number, allowEmpty = false): string | null {
  if (typeof value !== "string") return `${what} must be a string`;
  if (!allowEmpty && value.length === 0) return `${what} must not be empty`;
  if (value.length > max) return `${what} is longer than ${max} characters`;
  if (hasControl(value)) return `${what} ${JSON.stringify(value)} contains a control character`;
  return null;
}

/** `sha256:<64 lower-case hex>`, the one digest form of the API. */
export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
