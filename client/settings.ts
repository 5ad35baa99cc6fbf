/**
 * The limits of `lxhub pull` (and `lxhub cache prune`), in one place: each has a default, an
 * environment variable and a flag, and a value given by a flag beats the environment, which beats
 * the default. A malformed value fails at start-up with the setting's name.
 *
 * | limit | default | environment | flag |
 * |---|---|---|---|
 * | overall deadline of one pull | 12 h | `LXHUB_PULL_TIMEOUT` | `--timeout` |
 * | stall timeout of one download (no bytes for this long) | 60 s | `LXHUB_STALL_TIMEOUT` | `--stall-timeout` |
 * | decompressed bytes per signed compressed byte | 64 | `LXHUB_MAX_RATIO` | `--max-ratio` |
 * | size cap of the download cache | 10 GiB | `LXHUB_CACHE_MAX_SIZE` | `--cache-max-size` (`--max-size` for prune) |
 *
 * The deadline is a backstop for multi-GB images on slow links (10 GiB at 2 Mbit/s takes ~12 h);
 * stalls are what the stall timeout catches, and a stalled download is resumed (`Range`) like a
 * dropped one before it is given up. A duration of `0` turns the deadline or the stall timeout off.
 */

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const UNITS_MS: Record<string, number> = { ms: 1, s: SECOND, m: MINUTE, h: HOUR, d: DAY };
const UNITS_BYTES: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

export interface PullLimits {
  /** Overall deadline of one pull in ms; 0 = none. */
  deadlineMs: number;
  /** A download with no bytes for this long (ms) is dropped and resumed, then given up; 0 = none. */
  stallMs: number;
  /** Decompressed bytes allowed per byte of the signed compressed size (≥ 1). */
  maxRatio: number;
  /** Size cap of the download cache in bytes, kept after each pull by evicting the least recently used files. */
  cacheMaxBytes: number;
}

export const DEFAULT_LIMITS: Readonly<PullLimits> = {
  deadlineMs: 12 * HOUR,
  stallMs: 60 * SECOND,
  maxRatio: 64,
  cacheMaxBytes: 10 * 1024 ** 3,
};

export const LIMIT_ENV = {
  deadlineMs: "LXHUB_PULL_TIMEOUT",
  stallMs: "LXHUB_STALL_TIMEOUT",
  maxRatio: "LXHUB_MAX_RATIO",
  cacheMaxBytes: "LXHUB_CACHE_MAX_SIZE",
} as const satisfies Record<keyof PullLimits, string>;

/** Flag values as commander hands them over (strings, absent when not given). */
export type LimitFlags = Partial<Record<keyof PullLimits, string>>;

/** `30s`, `15m`, `12h`, `1d`, `1.5h`, `500ms`, or plain seconds (`90`) → ms. */
export function parseDuration(text: string, setting: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/i.exec(text.trim());
  const ms = m ? Number(m[1]) * (UNITS_MS[(m[2] ?? "s").toLowerCase()] ?? NaN) : NaN;
  if (!Number.isFinite(ms)) {
    throw new Error(`${setting}: ${JSON.stringify(text)} is not a duration (e.g. 90s, 15m, 12h; 0 for none)`);
  }
  return Math.round(ms);
}

/** `10G`, `10GiB`, `500M`, `1.5g`, `0`, or plain bytes (`4096`) → bytes; units are binary (K = 1024). */
export function parseSize(text: string, setting: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([bkmgt])(?:i?b)?)?$/i.exec(text.trim());
  const n = m ? Number(m[1]) * (UNITS_BYTES[(m[2] ?? "").toLowerCase()] ?? NaN) : NaN;
  if (!Number.isFinite(n)) {
    throw new Error(`${setting}: ${JSON.stringify(text)} is not a size (e.g. 10G, 500M, 0)`);
  }
  return Math.floor(n);
}

function parseRatio(text: string, setting: string): number {
  const n = Number(text.trim());
  if (text.trim() === "" || !Number.isFinite(n) || n < 1) {
    throw new Error(`${setting}: ${JSON.stringify(text)} is not a ratio of at least 1 (e.g. 64)`);
  }
  return n;
}

const PARSERS: Record<keyof PullLimits, (text: string, setting: string) => number> = {
  deadlineMs: parseDuration,
  stallMs: parseDuration,
  maxRatio: parseRatio,
  cacheMaxBytes: parseSize,
};

/**
 * The limits from flags (named in messages as `flagNames` says, e.g. `--timeout`), then the
 * environment, then the defaults.
 */
export function resolveLimits(
  flags: LimitFlags,
  flagNames: Partial<Record<keyof PullLimits, string>>,
  env: NodeJS.ProcessEnv = process.env,
): PullLimits {
  const out = { ...DEFAULT_LIMITS };
  for (const key of Object.keys(PARSERS) as (keyof PullLimits)[]) {
    const flag = flags[key];
    const fromEnv = env[LIMIT_ENV[key]];
    if (flag !== undefined) out[key] = PARSERS[key](flag, flagNames[key] ?? key);
    else if (fromEnv !== undefined && fromEnv !== "") out[key] = PARSERS[key](fromEnv, LIMIT_ENV[key]);
  }
  return out;
}

/** A duration for messages: `12 h`, `90 s`, `1.5 s`, `250 ms`. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [
    ["d", DAY],
    ["h", HOUR],
    ["min", MINUTE],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${unit}`;
  }
  if (ms >= SECOND) return `${Math.round(ms / 100) / 10} s`;
  return `${ms} ms`;
}
