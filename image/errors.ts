/** Why an image file was refused; stable names a caller can map to its own error catalog. */
export type ImageFormatReason =
  /** The file has no bytes at all. */
  | "EMPTY"
  /** The compressed stream is corrupt or truncated (the decompressor's message is included). */
  | "CORRUPT_COMPRESSION"
  /** The (decompressed) bytes are not a tar archive, or the archive is truncated. */
  | "NOT_TAR"
  /** No `metadata.yaml` at the top level of the tarball. */
  | "NO_METADATA"
  /** `metadata.yaml` is larger than the limit LXD applies (simplestreams.md §3.6). */
  | "METADATA_TOO_LARGE"
  /** More bytes than the caller's limit came out of the decompressor before metadata.yaml was found. */
  | "DECOMPRESSED_TOO_LARGE"
  /** `metadata.yaml` is not valid YAML or its fields have the wrong types. */
  | "INVALID_METADATA";

/** The bytes given are not a usable image file; the message says what is wrong, for a user. */
export class ImageFormatError extends Error {
  override name = "ImageFormatError";
  constructor(
    readonly reason: ImageFormatReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
