/**
 * Errors of the simplestreams room. Each names *where* the problem is, because the reader is
 * either a maintainer fixing a catalog or a user looking at an upstream's broken document.
 */

/**
 * The document builder refused its input: publishing it would make a real client (LXD 5.0.2,
 * Incus, the canonical tools) drop, mis-resolve or reject images (simplestreams.md §9).
 */
export class StreamValidationError extends Error {
  override readonly name = "StreamValidationError";
  /** Where: e.g. `product "acme:1:amd64:default" version "20240101_0000" file "lxd.tar.xz"`. */
  readonly where: string;

  constructor(where: string, problem: string) {
    super(where ? `${where}: ${problem}` : problem);
    this.where = where;
  }
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
