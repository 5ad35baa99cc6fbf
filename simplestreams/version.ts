/**
 * Version keys (simplestreams.md §2.4, pitfall 8). A client reads the first 8 characters as a
 * `YYYYMMDD` date (skipping the version otherwise) and picks "latest" by byte-wise comparison of
 * the whole key, newest = greatest.
 */

/** Version keys lxhub publishes: a date YYYYMMDD, then `[0-9A-Za-z_.:-]` (the grammar is in names.ts). */
export const VERSION_KEY_PATTERN = /^[0-9]{8}[0-9A-Za-z_.:-]*$/;
/** Longest key lxhub publishes; keys also become path segments. */
export const MAX_VERSION_KEY_LENGTH = 64;

/**
 * The date LXD derives from a version key (midnight UTC of its first 8 characters, as Go's
 * `time.Parse("20060102", key[0:8])` reads them), or `null` when LXD skips the version.
 */
export function versionDate(key: string): Date | null {
  const m = /^(\d{4})(\d{2})(\d{2})/.exec(key);
  if (!m) return null;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return null;
  const d = new Date(0);
  // setUTCFullYear, not Date.UTC: Date.UTC maps years 0–99 to 1900–1999.
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(0, 0, 0, 0);
  return d;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/**
 * Whether lxhub accepts `key` as a version key to publish: it starts with a real calendar date
 * `YYYYMMDD` (so every client keeps it), uses only `[0-9A-Za-z_.:-]` (safe in paths and URLs,
 * covers every format in the wild: `20240523.1`, `20240101_22:10`, `202401011504`) and is at most
 * 64 characters long.
 */
export function isValidVersionKey(key: string): boolean {
  return key.length <= MAX_VERSION_KEY_LENGTH && VERSION_KEY_PATTERN.test(key) && versionDate(key) !== null;
}

/** Version key `YYYYMMDD_HHMM` (UTC) for a moment, the format distrobuilder uses by default (§3.6). */
export function versionFromDate(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new RangeError("versionFromDate: invalid date");
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) throw new RangeError(`versionFromDate: year ${year} is not four digits`);
  const p2 = (n: number): string => String(n).padStart(2, "0");
  return (
    String(year).padStart(4, "0") +
    p2(date.getUTCMonth() + 1) +
    p2(date.getUTCDate()) +
    "_" +
    p2(date.getUTCHours()) +
    p2(date.getUTCMinutes())
  );
}

/**
 * Byte-wise comparison of UTF-8 strings, what Go's `<` on strings does (JavaScript's `<` compares
 * UTF-16 code units, which orders some non-BMP characters differently). Negative, 0 or positive.
 */
export function compareBytewise(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/**
 * Orders version keys the way LXD picks "latest": plain byte-wise comparison, so
 * `compareVersionKeys(a, b) > 0` means a client treats `a` as newer. Mixing key formats in one
 * product can therefore invert dates (`20240101_0000` > `202401011200`, because `_` sorts after
 * digits).
 */
export function compareVersionKeys(a: string, b: string): number {
  return compareBytewise(a, b);
}
