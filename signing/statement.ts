/**
 * The signed statement: a small JWT that binds the index documents (`streams/v1/index.json`,
 * `streams/v1/images.json`, …) by sha256 and size, so the documents themselves are served
 * verbatim as LXD reads them (simplestreams.md §6.6: LXD needs the plain `.json` files) while an
 * lxhub client can still prove they came from the server's key.
 *
 * Wire form: compact JWS, protected header `{alg: "EdDSA", kid, typ: "lxhub-statement+jwt"}`,
 * claims
 *
 *     iat, exp   integer seconds; exp = iat + ttl
 *     iss        issuer name (default "lxhub")
 *     serial     non-negative integer that only grows from one statement to the next; a client
 *                remembers the highest it accepted and refuses lower ones (rollback/replay)
 *     documents  { "<path relative to the mirror root>": { sha256: <64 lower-case hex>, size } }
 *
 * Signing a statement of a few hundred bytes instead of the documents keeps signing cheap
 * (decisions.md: JWS/JWT).
 */
import { createHash } from "node:crypto";
import {
  calculateJwkThumbprint,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWK,
  jwtVerify,
  SignJWT,
} from "jose";
import { KEY_ALG, type JsonWebKeySet, type SigningKey } from "./keyring.js";

export const STATEMENT_TYP = "lxhub-statement+jwt";
export const DEFAULT_ISSUER = "lxhub";

/** Statements longer than this are refused unread: no honest one comes close. */
const MAX_STATEMENT_LENGTH = 1024 * 1024;
const SHA256_HEX = /^[0-9a-f]{64}$/;

export interface DocumentDigest {
  /** 64 lower-case hex. */
  sha256: string;
  size: number;
}

export interface StatementDocument extends DocumentDigest {
  /** Relative to the mirror root, e.g. `streams/v1/index.json`. */
  path: string;
}

export interface SignStatementInput {
  documents: StatementDocument[];
  /** Must be larger than the serial of every statement signed before; the caller keeps it. */
  serial: number;
  /** Default: now. */
  issuedAt?: Date;
  ttlSeconds: number;
  /** Default `lxhub`. */
  issuer?: string;
}

export interface VerifyStatementOptions {
  /** The published JWKS, or one pinned public key (matched by its `kid`, or by thumbprint without one). */
  keys: JsonWebKeySet | JWK;
  /** The highest serial accepted before; a lower one is `REPLAYED`. Equal is accepted (a re-fetch). */
  minSerial?: number;
  /** Default: the current time. */
  now?: Date;
  /** Allowed clock skew when checking `exp`; default 60 s. */
  clockToleranceSeconds?: number;
  /** When set, `iss` must be exactly this. */
  issuer?: string;
}

export interface VerifiedStatement {
  kid: string;
  issuer: string;
  serial: number;
  issuedAt: Date;
  expiresAt: Date;
  /** path → digest. A Map, so a path like `constructor` can never resolve to something inherited. */
  documents: ReadonlyMap<string, DocumentDigest>;
}

export type StatementErrorCode =
  /** Not a compact JWS, wrong `typ`, missing or ill-typed claims. */
  | "MALFORMED"
  /** The signature does not verify, or the algorithm is not EdDSA. */
  | "BAD_SIGNATURE"
  /** No trusted key has the statement's `kid`. */
  | "UNKNOWN_KEY"
  /** A trusted key given to `verifyStatement` is not a usable Ed25519 public key. */
  | "BAD_KEY"
  | "EXPIRED"
  /** `serial` is lower than `minSerial`. */
  | "REPLAYED"
  /** `iss` differs from the required issuer. */
  | "WRONG_ISSUER"
  /** A document's bytes do not match the statement (`checkDocument`). */
  | "DOCUMENT_MISMATCH";

export class StatementError extends Error {
  override name = "StatementError";
  constructor(
    readonly code: StatementErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A path a client may join to a base URL or directory: relative, `/`-separated, without empty,
 * `.` or `..` segments, backslashes or control characters.
 */
function isDocumentPath(path: string): boolean {
  if (path.length === 0 || path.length > 1024) return false;
  // eslint-disable-next-line no-control-regex -- rejecting control characters is the point
  if (/[\\\u0000-\u001f\u007f]/.test(path)) return false;
  return path.split("/").every((seg) => seg !== "" && seg !== "." && seg !== "..");
}

function isSize(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Signs a statement over `input.documents` with the keyring's active key. */
export async function signStatement(
  keyring: { active(): SigningKey },
  input: SignStatementInput,
): Promise<string> {
  const documents: Record<string, DocumentDigest> = {};
  const seen = new Set<string>();
  for (const doc of input.documents) {
    if (!isDocumentPath(doc.path)) throw new TypeError(`invalid document path ${JSON.stringify(doc.path)}`);
    if (seen.has(doc.path)) throw new TypeError(`document ${doc.path} is listed twice`);
    if (!SHA256_HEX.test(doc.sha256))
      throw new TypeError(`document ${doc.path}: sha256 must be 64 lower-case hex`);
    if (!isSize(doc.size)) throw new TypeError(`document ${doc.path}: size must be a non-negative integer`);
    seen.add(doc.path);
    documents[doc.path] = { sha256: doc.sha256, size: doc.size };
  }
  if (!isSize(input.serial)) throw new TypeError("serial must be a non-negative integer");
  if (!Number.isSafeInteger(input.ttlSeconds) || input.ttlSeconds <= 0) {
    throw new TypeError("ttlSeconds must be a positive integer");
  }
  const iat = Math.floor((input.issuedAt ?? new Date()).getTime() / 1000);
  if (!Number.isSafeInteger(iat)) throw new TypeError("issuedAt is not a valid date");
  const issuer = input.issuer ?? DEFAULT_ISSUER;
  if (issuer === "") throw new TypeError("issuer must not be empty");

  const key = keyring.active();
  return new SignJWT({ serial: input.serial, documents })
    .setProtectedHeader({ alg: KEY_ALG, kid: key.kid, typ: STATEMENT_TYP })
    .setIssuer(issuer)
    .setIssuedAt(iat)
    .setExpirationTime(iat + input.ttlSeconds)
    .sign(key.privateKey);
}

function isKeySet(keys: JsonWebKeySet | JWK): keys is JsonWebKeySet {
  return Array.isArray((keys as { keys?: unknown }).keys);
}

/** The trusted key whose kid (or, for a kid-less pinned key, thumbprint) equals `kid`. */
async function findKey(keys: JsonWebKeySet | JWK, kid: string): Promise<CryptoKey> {
  const candidates = isKeySet(keys) ? keys.keys : [keys];
  for (const jwk of candidates) {
    if (typeof jwk !== "object" || jwk === null) continue;
    let candidateKid = jwk.kid;
    if (candidateKid === undefined) {
      candidateKid = await calculateJwkThumbprint(jwk).catch(() => undefined);
    }
    if (candidateKid !== kid) continue;
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
      throw new StatementError("BAD_KEY", `trusted key ${kid} is not an Ed25519 public key`);
    }
    if ((jwk.alg !== undefined && jwk.alg !== KEY_ALG) || (jwk.use !== undefined && jwk.use !== "sig")) {
      throw new StatementError("BAD_KEY", `trusted key ${kid} is not an EdDSA signing key`);
    }
    try {
      // Only the public members: a private JWK passed by mistake must not become a signing key.
      return (await importJWK({ kty: "OKP", crv: "Ed25519", x: jwk.x }, KEY_ALG)) as CryptoKey;
    } catch (err) {
      throw new StatementError("BAD_KEY", `trusted key ${kid} cannot be imported: ${(err as Error).message}`);
    }
  }
  throw new StatementError("UNKNOWN_KEY", `the statement is signed by key ${kid}, which is not trusted`);
}

function parseDocuments(value: unknown): Map<string, DocumentDigest> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new StatementError("MALFORMED", "claim documents must be an object");
  }
  const out = new Map<string, DocumentDigest>();
  for (const [path, digest] of Object.entries(value)) {
    if (!isDocumentPath(path))
      throw new StatementError("MALFORMED", `invalid document path ${JSON.stringify(path)}`);
    if (typeof digest !== "object" || digest === null) {
      throw new StatementError("MALFORMED", `document ${path}: digest must be an object`);
    }
    const { sha256, size } = digest as Record<string, unknown>;
    if (typeof sha256 !== "string" || !SHA256_HEX.test(sha256)) {
      throw new StatementError("MALFORMED", `document ${path}: sha256 must be 64 lower-case hex`);
    }
    if (!isSize(size))
      throw new StatementError("MALFORMED", `document ${path}: size must be a non-negative integer`);
    out.set(path, { sha256, size });
  }
  return out;
}

function mapJoseError(err: unknown): never {
  if (err instanceof StatementError) throw err;
  if (err instanceof errors.JWTExpired)
    throw new StatementError("EXPIRED", `the statement has expired (${err.message})`);
  if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JOSEAlgNotAllowed) {
    throw new StatementError("BAD_SIGNATURE", `the statement's signature does not verify (${err.message})`);
  }
  if (err instanceof errors.JOSEError)
    throw new StatementError("MALFORMED", `malformed statement: ${err.message}`);
  throw err;
}

/**
 * Verifies a statement's signature against the trusted keys, then its expiry, claim types and
 * serial. Throws `StatementError` with a code saying why it refused; never returns a statement
 * it did not verify completely.
 */
export async function verifyStatement(jws: string, opts: VerifyStatementOptions): Promise<VerifiedStatement> {
  if (typeof jws !== "string" || jws.length > MAX_STATEMENT_LENGTH || jws.trim().split(".").length !== 3) {
    throw new StatementError("MALFORMED", "the statement is not a compact JWS");
  }
  const token = jws.trim();
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw new StatementError(
      "MALFORMED",
      `the statement's header cannot be decoded (${(err as Error).message})`,
    );
  }
  // Decided before any key is looked up, so `none` or an HMAC keyed with public bytes never runs.
  if (header.alg !== KEY_ALG) {
    throw new StatementError(
      "BAD_SIGNATURE",
      `algorithm ${String(header.alg)} is not accepted; only ${KEY_ALG}`,
    );
  }
  if (header.typ !== STATEMENT_TYP) {
    throw new StatementError("MALFORMED", `typ is ${String(header.typ)}, not ${STATEMENT_TYP}`);
  }
  if (typeof header.kid !== "string" || header.kid === "") {
    throw new StatementError("MALFORMED", "the statement names no kid");
  }
  const kid = header.kid;
  const key = await findKey(opts.keys, kid);

  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: [KEY_ALG],
      typ: STATEMENT_TYP,
      currentDate: opts.now,
      clockTolerance: opts.clockToleranceSeconds ?? 60,
      requiredClaims: ["iat", "exp", "iss"],
    }));
  } catch (err) {
    mapJoseError(err);
  }

  const { iss, iat, exp, serial } = payload;
  if (typeof iss !== "string" || iss === "")
    throw new StatementError("MALFORMED", "claim iss must be a string");
  if (opts.issuer !== undefined && iss !== opts.issuer) {
    throw new StatementError("WRONG_ISSUER", `the statement is issued by ${iss}, not ${opts.issuer}`);
  }
  if (!isSize(iat) || !isSize(exp) || exp <= iat) {
    throw new StatementError("MALFORMED", "claims iat and exp must be integers with exp after iat");
  }
  if (!isSize(serial)) throw new StatementError("MALFORMED", "claim serial must be a non-negative integer");
  const documents = parseDocuments(payload.documents);
  if (opts.minSerial !== undefined && serial < opts.minSerial) {
    throw new StatementError(
      "REPLAYED",
      `the statement's serial ${serial} is older than ${opts.minSerial}, the newest one seen`,
    );
  }
  return {
    kid,
    issuer: iss,
    serial,
    issuedAt: new Date(iat * 1000),
    expiresAt: new Date(exp * 1000),
    documents,
  };
}

/**
 * Checks a document against a verified statement, from its bytes or from a digest computed while
 * it streamed. Returns the statement's digest; throws `DOCUMENT_MISMATCH` naming the path when the
 * document is not listed or differs.
 */
export function checkDocument(
  statement: VerifiedStatement,
  path: string,
  actual: Uint8Array | DocumentDigest,
): DocumentDigest {
  const expected = statement.documents.get(path);
  if (expected === undefined) {
    throw new StatementError("DOCUMENT_MISMATCH", `${path} is not listed in the signed statement`);
  }
  const digest =
    actual instanceof Uint8Array
      ? { sha256: createHash("sha256").update(actual).digest("hex"), size: actual.byteLength }
      : { sha256: actual.sha256.toLowerCase(), size: actual.size };
  if (digest.size !== expected.size) {
    throw new StatementError(
      "DOCUMENT_MISMATCH",
      `${path} is ${digest.size} bytes, but the signed statement says ${expected.size}`,
    );
  }
  if (digest.sha256 !== expected.sha256) {
    throw new StatementError(
      "DOCUMENT_MISMATCH",
      `${path} has sha256 ${digest.sha256}, but the signed statement says ${expected.sha256}`,
    );
  }
  return { ...expected };
}
