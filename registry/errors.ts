/**
 * The public error catalog: every code the API answers with, its HTTP status and what it means,
 * in one table (as distribution's `registry/api/errcode/register.go` keeps it). Services throw
 * `LxhubError` with a code from here; `server/errors.ts` renders them at one boundary; the
 * `ErrorCode` enum in `openapi.yaml` lists the same codes (test/contract checks that it does).
 */
export interface ErrorDescriptor {
  /** HTTP status the server answers with. */
  readonly status: number;
  /** What the code means, for the API guide and `openapi.yaml`. */
  readonly description: string;
}

export const ERROR_CATALOG = {
  UNAUTHORIZED: {
    status: 401,
    description: "no token, or a token that is malformed, forged, expired, revoked or unknown",
  },
  FORBIDDEN: {
    status: 403,
    description:
      "the token's scopes do not allow this action on this target, or the upload session is another token's",
  },
  BAD_REQUEST: { status: 400, description: "the request is malformed (body shape, header or query value)" },
  MALFORMED_JSON: { status: 400, description: "the request body is not valid JSON" },
  NOT_FOUND: { status: 404, description: "no such route, product, version, token or document" },
  UPLOAD_NOT_FOUND: {
    status: 404,
    description: "no open upload session with this id (never opened, committed, cancelled or expired)",
  },
  UPLOAD_OFFSET_MISMATCH: {
    status: 416,
    description:
      "a chunk does not start at the session's current offset; ask for the offset and resume there",
  },
  DIGEST_MISMATCH: {
    status: 400,
    description: "the uploaded bytes do not have the expected sha256; nothing was kept",
  },
  TOO_LARGE: {
    status: 413,
    description: "the body is larger than the server accepts (blob size or JSON body limit)",
  },
  BLOB_UNKNOWN: { status: 400, description: "a digest names a blob that was never uploaded" },
  INVALID_PRODUCT: { status: 400, description: "the os, release or variant is not a valid name" },
  INVALID_VERSION: {
    status: 400,
    description: "the version key is not valid (a real date YYYYMMDD, then letters, digits and _ . : -)",
  },
  INVALID_FILES: {
    status: 400,
    description: "the files of a version are not a publishable set (names, ftypes, digests, pairs)",
  },
  INVALID_METADATA: {
    status: 400,
    description: "the metadata tarball has no readable metadata.yaml or it is invalid",
  },
  ARCH_MISMATCH: { status: 400, description: "the architecture in metadata.yaml differs from the product's" },
  UNKNOWN_ARCH: { status: 400, description: "the architecture is not one LXD and Incus know" },
  VERSION_CONFLICT: {
    status: 409,
    description: "the version exists with other files (versions are immutable)",
  },
  VERSION_DELETED: { status: 409, description: "the version was deleted; its name is never reused" },
  DUPLICATE_IMAGE: {
    status: 409,
    description: "another version already publishes the same (metadata, root) pair",
  },
  ALIAS_CONFLICT: { status: 409, description: "an alias already belongs to another product" },
  ALIAS_FORBIDDEN: { status: 403, description: "the token claimed an alias outside its scope" },
  INVALID_NAME: {
    status: 400,
    description: "a name or id in the path or body breaks the name grammar (simplestreams/names.ts)",
  },
  INVALID_ALIAS: {
    status: 400,
    description: "an alias breaks the alias grammar, is listed twice, or there are too many",
  },
  INVALID_REQUIREMENT: {
    status: 400,
    description: "a requirement key or value breaks the grammar, or there are too many",
  },
  INVALID_TEXT: { status: 400, description: "a free text field is too long or contains a control character" },
  INVALID_DELTA: {
    status: 400,
    description:
      "a delta file names no valid older base version of the same product, or has no squashfs to apply to",
  },
  METHOD_NOT_ALLOWED: {
    status: 405,
    description: "the path exists but does not answer this method; `Allow` lists the ones it does",
  },
  INSECURE_TRANSPORT: {
    status: 403,
    description: "a write with a token over plain HTTP, which this server is not configured to allow",
  },
  QUOTA_EXCEEDED: {
    status: 429,
    description:
      "a per-token limit (open upload sessions, bytes in open sessions) is reached; the message names it",
  },
  STORAGE_UNAVAILABLE: {
    status: 503,
    description:
      "the catalog or the blob store does not answer right now (restarting, unreachable); nothing was changed; retry shortly",
  },
  UPSTREAM_UNAVAILABLE: {
    status: 502,
    description:
      "a pull-through cache does not hold the file and could not fetch it from its upstream (unreachable, an error answer, a rate limit, or bytes that did not match the listed sha256); nothing was stored",
  },
  UPSTREAM_TIMEOUT: {
    status: 504,
    description: "a pull-through cache does not hold the file and its upstream did not answer in time",
  },
  INSUFFICIENT_STORAGE: { status: 507, description: "the server's storage is full; nothing was kept" },
  REQUEST_TIMEOUT: {
    status: 408,
    description:
      "the request body stalled (idle timeout) or took too long (request timeout); the connection is closed",
  },
  INTERNAL: {
    status: 500,
    description: "an unexpected server error; details are in the server's log, never in the answer",
  },
} as const satisfies Record<string, ErrorDescriptor>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

/** Every code, in catalog order. */
export const ERROR_CODES = Object.keys(ERROR_CATALOG) as ErrorCode[];

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
