/**
 * Endorsements: how a server's signing key vouches for the key that replaces it, so a client
 * that pinned the old key can follow a rotation without being told the new thumbprint.
 *
 * Wire form: compact JWS, protected header `{alg: "EdDSA", kid: <endorsing key>, typ:
 * "lxhub-endorsement+jwt"}`, claims
 *
 *     sub        the endorsed key's RFC 7638 thumbprint (its kid)
 *     jwk        the endorsed public key (kty OKP, crv Ed25519, x)
 *     iss        the issuer, as in the statements
 *     iat, nbf   when the rotation happened (integer seconds)
 *     exp        the end of the overlap: after it the endorsement no longer counts
 *
 * It is made once, by `lxhub key rotate`, with the key that was active until then, and kept with
 * the new key (signing/keyring.ts). The server publishes every endorsement whose endorsing key it
 * still holds and whose overlap has not ended (registry/indexer.ts, `ENDORSEMENTS_PATH`).
 *
 * A client follows endorsements only from keys it already trusts (`followEndorsements`): each
 * link is checked with the pinned key or a key an earlier link proved, so a chain A → B → C
 * reaches C from a pinned A when both endorsements are still published. An endorsement signed by
 * any other key is ignored, never trusted.
 */
import {
  calculateJwkThumbprint,
  decodeProtectedHeader,
  errors,
  importJWK,
  type JWK,
  jwtVerify,
  SignJWT,
} from "jose";
import { KEY_ALG, type KeyInfo, type SigningKey } from "./keyring.js";

export const ENDORSEMENT_TYP = "lxhub-endorsement+jwt";

/** Endorsements longer than this are refused unread; the honest ones are under 1 KiB. */
const MAX_ENDORSEMENT_LENGTH = 8 * 1024;
/** At most this many endorsements are looked at: a server holds a handful of keys. */
export const MAX_ENDORSEMENTS = 32;

export interface EndorseInput {
  /** When the endorsement starts to count; default now. */
  notBefore?: Date;
  /** The end of the overlap. */
  notAfter: Date;
  issuer: string;
}

/** `signer` (the key that was active) vouches for `endorsed` until `notAfter`. */
export async function signEndorsement(
  signer: SigningKey,
  endorsed: Pick<KeyInfo, "kid" | "publicJwk">,
  input: EndorseInput,
): Promise<string> {
  const nbf = Math.floor((input.notBefore ?? new Date()).getTime() / 1000);
  const exp = Math.floor(input.notAfter.getTime() / 1000);
  if (!Number.isSafeInteger(nbf) || !Number.isSafeInteger(exp) || exp <= nbf) {
    throw new TypeError("an endorsement needs notAfter after notBefore");
  }
  if (input.issuer === "") throw new TypeError("issuer must not be empty");
  const { x } = endorsed.publicJwk;
  return new SignJWT({ jwk: { kty: "OKP", crv: "Ed25519", x } })
    .setProtectedHeader({ alg: KEY_ALG, kid: signer.kid, typ: ENDORSEMENT_TYP })
    .setIssuer(input.issuer)
    .setSubject(endorsed.kid)
    .setIssuedAt(nbf)
    .setNotBefore(nbf)
    .setExpirationTime(exp)
    .sign(signer.privateKey);
}

/** A key proven by a chain of endorsements from a pinned key. */
export interface EndorsedKey {
  /** Public members, `kid` = thumbprint, `alg: EdDSA`, `use: sig`. */
  jwk: JWK;
  issuer: string;
  /** Kids from the pinned key to this one, both included. */
  chain: string[];
  /** The earliest end of overlap along the chain. */
  notAfter: Date;
}

export type EndorsementRefusal =
  "MALFORMED" | "UNTRUSTED_SIGNER" | "BAD_SIGNATURE" | "NOT_YET_VALID" | "EXPIRED" | "WRONG_KID";

export class EndorsementError extends Error {
  override name = "EndorsementError";
  constructor(
    readonly code: EndorsementRefusal,
    message: string,
  ) {
    super(message);
  }
}

export interface VerifyEndorsementOptions {
  /** Default now. */
  now?: Date;
  /** Allowed clock skew on nbf and exp; default 60 s. */
  clockToleranceSeconds?: number;
}

export interface FollowOptions extends VerifyEndorsementOptions {
  /** Told about each endorsement by a trusted key that was refused (expired, forged, …), to explain a refusal. */
  onRefused?: (by: string, err: EndorsementError) => void;
}

async function publicKey(jwk: JWK): Promise<CryptoKey> {
  return (await importJWK({ kty: "OKP", crv: "Ed25519", x: jwk.x }, KEY_ALG)) as CryptoKey;
}

/**
 * Verifies one endorsement against keys already trusted (kid → public JWK). Throws
 * `EndorsementError` saying why it is refused: signed by a key not in `trusted`, a bad signature,
 * outside its validity, or a `sub` that is not the thumbprint of the endorsed `jwk`.
 */
export async function verifyEndorsement(
  jws: string,
  trusted: ReadonlyMap<string, JWK>,
  opts: VerifyEndorsementOptions = {},
): Promise<{ by: string; jwk: JWK; issuer: string; notAfter: Date }> {
  if (typeof jws !== "string" || jws.length > MAX_ENDORSEMENT_LENGTH || jws.split(".").length !== 3) {
    throw new EndorsementError("MALFORMED", "not a compact JWS");
  }
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jws);
  } catch (err) {
    throw new EndorsementError("MALFORMED", `undecodable header (${(err as Error).message})`);
  }
  if (header.alg !== KEY_ALG) throw new EndorsementError("BAD_SIGNATURE", `algorithm ${String(header.alg)}`);
  if (header.typ !== ENDORSEMENT_TYP) throw new EndorsementError("MALFORMED", `typ is ${String(header.typ)}`);
  const by = header.kid;
  const signer = typeof by === "string" ? trusted.get(by) : undefined;
  if (typeof by !== "string" || signer === undefined) {
    throw new EndorsementError("UNTRUSTED_SIGNER", `signed by ${String(by)}, which is not trusted`);
  }
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(jws, await publicKey(signer), {
      algorithms: [KEY_ALG],
      typ: ENDORSEMENT_TYP,
      currentDate: opts.now,
      clockTolerance: opts.clockToleranceSeconds ?? 60,
      requiredClaims: ["iss", "sub", "nbf", "exp"],
    }));
  } catch (err) {
    if (err instanceof errors.JWTExpired) throw new EndorsementError("EXPIRED", `expired (${err.message})`);
    if (err instanceof errors.JWTClaimValidationFailed && err.claim === "nbf") {
      throw new EndorsementError("NOT_YET_VALID", `not valid yet (${err.message})`);
    }
    if (err instanceof errors.JWSSignatureVerificationFailed) {
      throw new EndorsementError("BAD_SIGNATURE", "the signature does not verify");
    }
    throw new EndorsementError("MALFORMED", (err as Error).message);
  }
  const { sub, jwk, iss, exp } = payload as { sub?: unknown; jwk?: unknown; iss?: unknown; exp?: unknown };
  const k = jwk as JWK | undefined;
  if (
    typeof k !== "object" ||
    k === null ||
    k.kty !== "OKP" ||
    k.crv !== "Ed25519" ||
    typeof k.x !== "string"
  ) {
    throw new EndorsementError("MALFORMED", "claim jwk is not an Ed25519 public key");
  }
  if (typeof iss !== "string" || iss === "" || typeof exp !== "number") {
    throw new EndorsementError("MALFORMED", "claims iss and exp are required");
  }
  const kid = await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: k.x });
  if (sub !== kid) {
    throw new EndorsementError("WRONG_KID", `sub ${String(sub)} is not the endorsed key's thumbprint ${kid}`);
  }
  await publicKey(k).catch((err: unknown) => {
    throw new EndorsementError(
      "MALFORMED",
      `the endorsed key cannot be imported (${(err as Error).message})`,
    );
  });
  return {
    by,
    jwk: { kty: "OKP", crv: "Ed25519", x: k.x, kid, alg: KEY_ALG, use: "sig" },
    issuer: iss,
    notAfter: new Date(exp * 1000),
  };
}

/**
 * Every key reachable from `pinned` through `endorsements` (a breadth-first walk: a link counts
 * only when signed by a pinned key or one proven before it). Endorsements that do not verify from
 * what is trusted are skipped, never trusted; the pinned keys themselves are not in the result.
 */
export async function followEndorsements(
  pinned: readonly JWK[],
  endorsements: readonly string[],
  opts: FollowOptions = {},
): Promise<Map<string, EndorsedKey>> {
  const trusted = new Map<string, JWK>();
  for (const k of pinned) if (typeof k.kid === "string") trusted.set(k.kid, k);
  const reached = new Map<string, EndorsedKey>();
  const pending = endorsements.slice(0, MAX_ENDORSEMENTS);
  for (let progress = true; progress;) {
    progress = false;
    for (let i = 0; i < pending.length; i++) {
      let link: Awaited<ReturnType<typeof verifyEndorsement>>;
      try {
        link = await verifyEndorsement(pending[i] as string, trusted, opts);
      } catch (err) {
        if (err instanceof EndorsementError && err.code === "UNTRUSTED_SIGNER") continue; // maybe later
        const by = signerOf(pending[i] as string);
        if (err instanceof EndorsementError && by !== undefined && trusted.has(by)) opts.onRefused?.(by, err);
        pending.splice(i--, 1);
        continue;
      }
      pending.splice(i--, 1);
      const kid = link.jwk.kid as string;
      if (trusted.has(kid)) continue;
      const from = reached.get(link.by);
      if (from && from.issuer !== link.issuer) continue;
      trusted.set(kid, link.jwk);
      reached.set(kid, {
        jwk: link.jwk,
        issuer: link.issuer,
        chain: [...(from?.chain ?? [link.by]), kid],
        notAfter: from && from.notAfter < link.notAfter ? from.notAfter : link.notAfter,
      });
      progress = true;
    }
  }
  return reached;
}

/** The `kid` an endorsement's header names, unchecked; undefined when there is none. */
function signerOf(jws: string): string | undefined {
  try {
    const { kid } = decodeProtectedHeader(jws);
    return typeof kid === "string" ? kid : undefined;
  } catch {
    return undefined;
  }
}
