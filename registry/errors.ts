/**
 * Domain errors. Services throw `LxhubError` with a code from this list; the server renders
 * them at one boundary with the HTTP status its error catalog (server/errors.ts) assigns.
 */
export const ERROR_CODES = [
  "UNAUTHORIZED",
  "FORBIDDEN",
  "BAD_REQUEST",
  "MALFORMED_JSON",
  "NOT_FOUND",
  "UPLOAD_NOT_FOUND",
  "UPLOAD_OFFSET_MISMATCH",
  "DIGEST_MISMATCH",
  "TOO_LARGE",
  "BLOB_UNKNOWN",
  "INVALID_PRODUCT",
  "INVALID_VERSION",
  "INVALID_FILES",
  "INVALID_METADATA",
  "ARCH_MISMATCH",
  "UNKNOWN_ARCH",
  "VERSION_CONFLICT",
  "VERSION_DELETED",
  "DUPLICATE_IMAGE",
  "ALIAS_CONFLICT",
  "ALIAS_FORBIDDEN",
  "INVALID_NAME",
  "INVALID_ALIAS",
  "INVALID_REQUIREMENT",
  "INVALID_TEXT",
  "INVALID_DELTA",
  "METHOD_NOT_ALLOWED",
  "INSECURE_TRANSPORT",
  "QUOTA_EXCEEDED",
  "INSUFFICIENT_STORAGE",
  "INTERNAL",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class LxhubError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "LxhubError";
  }
}
