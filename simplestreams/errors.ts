/**
 * Errors of the simplestreams room. Each names *where* the problem is, because the reader is
 * either a maintainer fixing a catalog or a user looking at an upstream's broken document.
 */

/**
 * Which rule a record broke; the publish API answers with a code per rule (registry/errors.ts).
 * - `name`: a name breaks its grammar (names.ts); `text`: free text with a control character or too long;
 * - `alias`: a malformed or repeated alias; `alias-conflict`: an alias another product holds;
 * - `requirement`: a requirement key or value; `file`: a file's ftype, path, hash, size or role;
 * - `delta`: a delta whose base is missing, newer, or has nothing to apply to;
 * - `duplicate-image`: a (metadata, root) pair or fingerprint published twice; `options`: a builder option.
 */
export type StreamRule =
  | "name"
  | "text"
  | "alias"
  | "alias-conflict"
  | "requirement"
  | "file"
  | "delta"
  | "duplicate-image"
  | "options";

/** Where a problem is: product key, version key and file, as far as known. */
export interface StreamLocation {
  product?: string;
  version?: string;
  file?: string;
}

/**
 * The validator refused a record: publishing it would make a real client (LXD 5.0.2, Incus, the
 * canonical tools) drop, mis-resolve or reject images (docs/simplestreams.md §9).
 */
export class StreamValidationError extends Error {
  override readonly name = "StreamValidationError";
  /** Where, in words: e.g. `product "acme:1:amd64:default" version "20240101_0000" file "lxd.tar.xz"`. */
  readonly where: string;

  constructor(
    readonly rule: StreamRule,
    readonly location: StreamLocation,
    readonly problem: string,
  ) {
    const where = describeLocation(location);
    super(where ? `${where}: ${problem}` : problem);
    this.where = where;
  }
}

function describeLocation(l: StreamLocation): string {
  const parts: string[] = [];
  if (l.product !== undefined) parts.push(`product ${JSON.stringify(l.product)}`);
  if (l.version !== undefined) parts.push(`version ${JSON.stringify(l.version)}`);
  if (l.file !== undefined) parts.push(`file ${l.file}`);
  return parts.join(" ");
}

/**
 * An index or products document has a JSON value of the wrong type where LXD's Go decoder would
 * fail the whole document (simplestreams.md §2, pitfalls 1–4).
 */
export class StreamParseError extends Error {
  override readonly name = "StreamParseError";
  /** JSON path of the offending value, e.g. `$.products["a:b:amd64:default"].versions["20240101"].items["root"].size`. */
  readonly jsonPath: string;

  constructor(jsonPath: string, problem: string) {
    super(`${jsonPath}: ${problem}`);
    this.jsonPath = jsonPath;
  }
}

/**
 * A name matched more than one image (simplestreams.md §3.2, pitfall 29): LXD answers "More than
 * one match for the provided partial fingerprint" and the image is unusable.
 */
export class AmbiguousImageError extends Error {
  override readonly name = "AmbiguousImageError";
  /** Fingerprints of every match, in list order. */
  readonly fingerprints: string[];

  constructor(name: string, fingerprints: string[]) {
    super(
      `More than one match for the provided partial fingerprint ${JSON.stringify(name)}: ${fingerprints.join(", ")}`,
    );
    this.fingerprints = fingerprints;
  }
}
