import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, readFile, writeFile, link, unlink, open } from "node:fs/promises";
import path from "node:path";
import { SignJWT, jwtVerify, errors as joseErrors } from "jose";
import { restrictMode } from "../signing/secret-files.js";
import type { Catalog } from "../storage/catalog/catalog.js";
import { LxhubError } from "./errors.js";

/** What a token may do. `admin` allows everything. */
export type Action = "push" | "delete" | "admin";

export interface Principal {
  tokenId: string;
  subject: string;
  scopes: string[];
}

/** `admin`, `push:<pattern>` or `delete:<pattern>`; also published in openapi.yaml. */
export const SCOPE_PATTERN = /^(admin|(push|delete):[A-Za-z0-9._*:/-]+)$/;
/** Longest scope string, and most scopes on one token. */
export const MAX_SCOPE_LENGTH = 200;
export const MAX_SCOPES = 32;
/** Longest token lifetime: 10 years. A token meant to outlive that is a token nobody rotates. */
export const MAX_TOKEN_TTL_SECONDS = 10 * 365 * 86400;
/** A duration: a whole number, optionally followed by s, m, h, d or w. */
export const DURATION_PATTERN = /^(\d+)\s*([smhdw]?)$/;
/** Token ids are random UUIDs (the JWT's `jti`). */
export const TOKEN_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ISSUER = "lxhub";
const AUDIENCE = "lxhub-api";

/**
 * Parse `30m`, `12h`, `90d`, `3600s` (or a bare number of seconds) into seconds: positive and at
 * most MAX_TOKEN_TTL_SECONDS (BAD_REQUEST otherwise, so `99999999999d` is refused, not stored).
 */
export function parseDuration(text: string): number {
  const m = DURATION_PATTERN.exec(text.trim());
  if (!m)
    throw new LxhubError("BAD_REQUEST", `not a duration: ${JSON.stringify(text)} (use e.g. 30m, 12h, 90d)`);
  const n = Number(m[1]);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2] ?? ""] ?? 1;
  const seconds = n * unit;
  checkTtl(seconds);
  return seconds;
}

function checkTtl(seconds: number): void {
  if (!Number.isSafeInteger(seconds) || seconds <= 0)
    throw new LxhubError("BAD_REQUEST", "a token's lifetime must be a positive whole number of seconds");
  if (seconds > MAX_TOKEN_TTL_SECONDS)
    throw new LxhubError(
      "BAD_REQUEST",
      `a token's lifetime may be at most ${MAX_TOKEN_TTL_SECONDS / 86400}d (10 years), got ${seconds}s`,
    );
}

export function validateScopes(scopes: string[]): void {
  if (!scopes.length) throw new LxhubError("BAD_REQUEST", "a token needs at least one scope");
  if (scopes.length > MAX_SCOPES)
    throw new LxhubError("BAD_REQUEST", `a token may have at most ${MAX_SCOPES} scopes`);
  for (const s of scopes) {
    if (s.length > MAX_SCOPE_LENGTH || !SCOPE_PATTERN.test(s)) {
      throw new LxhubError(
        "BAD_REQUEST",
        `unknown scope ${JSON.stringify(s)}: use admin, push:<pattern> or delete:<pattern> (pattern like debian/* or *)`,
      );
    }
  }
}

/** A scope or policy pattern (`*` matches anything, `/` included) as an anchored regular expression. */
export function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`);
}

/** Whether `scopes` allow `action` on `target` (`os/release/arch/variant`, or `*` for "any product"). */
export function allows(scopes: string[], action: Action, target: string): boolean {
  if (scopes.includes("admin")) return true;
  if (action === "admin") return false;
  return scopes.some((s) => {
    const [verb, pattern] = [s.slice(0, s.indexOf(":")), s.slice(s.indexOf(":") + 1)];
    if (verb !== action) return false;
    return target === "*" || globToRegExp(pattern).test(target);
  });
}

/**
 * API tokens: HS256 JWTs (jose) with a jti recorded in the catalog, so they expire by their
 * `exp` and can be revoked before that. The HMAC secret lives in the data folder (0600).
 */
/** Name of the token secret in the catalog's secrets (shared catalogs). */
export const TOKEN_SECRET_NAME = "token-secret";

export class TokenService {
  private constructor(
    private readonly catalog: Catalog,
    private readonly secret: Uint8Array,
  ) {}

  /**
   * The HMAC secret comes from `secretFile` (made on first use), or, when the catalog is shared
   * by replicas (PostgreSQL), from the catalog's secrets, so every replica accepts every token.
   */
  static async open(catalog: Catalog, secretFile: string): Promise<TokenService> {
    if (catalog.shared) {
      const stored = await catalog.secrets.putIfAbsent(
        TOKEN_SECRET_NAME,
        randomBytes(32).toString("base64url"),
      );
      const secret = Buffer.from(stored, "base64url");
      if (secret.length < 32) throw new Error("the catalog's token secret is too short");
      return new TokenService(catalog, new Uint8Array(secret));
    }
    let secret: Buffer;
    try {
      secret = Buffer.from((await readFile(secretFile, "utf8")).trim(), "base64url");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      secret = randomBytes(32);
      await mkdir(path.dirname(secretFile), { recursive: true, mode: 0o700 });
      const tmp = `${secretFile}.${process.pid}.tmp`;
      await writeFile(tmp, secret.toString("base64url") + "\n", { mode: 0o600 });
      const fh = await open(tmp, "r");
      await fh.sync();
      await fh.close();
      try {
        // link() fails when the file exists: a concurrent `token create` that won the race keeps its secret.
        await link(tmp, secretFile);
      } catch (linkErr) {
        if ((linkErr as NodeJS.ErrnoException).code !== "EEXIST") throw linkErr;
        secret = Buffer.from((await readFile(secretFile, "utf8")).trim(), "base64url");
      } finally {
        await unlink(tmp);
      }
    }
    if (secret.length < 32) throw new Error(`token secret in ${secretFile} is too short`);
    await restrictMode(path.dirname(secretFile), 0o700);
    await restrictMode(secretFile, 0o600);
    return new TokenService(catalog, new Uint8Array(secret));
  }

  async create(opts: {
    scopes: string[];
    ttlSeconds: number;
    subject?: string;
    actor?: string;
  }): Promise<{ id: string; token: string; expiresAt: string }> {
    validateScopes(opts.scopes);
    checkTtl(opts.ttlSeconds);
    const id = randomUUID();
    const nowS = Math.floor(Date.now() / 1000);
    const exp = nowS + opts.ttlSeconds;
    const subject = opts.subject ?? "lxhub";
    const token = await new SignJWT({ scopes: opts.scopes })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setJti(id)
      .setSubject(subject)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt(nowS)
      .setExpirationTime(exp)
      .sign(this.secret);
    const expiresAt = new Date(exp * 1000).toISOString();
    await this.catalog.tokens.insert({
      id,
      subject,
      scopes: opts.scopes,
      createdAt: new Date(nowS * 1000).toISOString(),
      expiresAt,
      revokedAt: null,
    });
    await this.catalog.audit.record({
      actor: opts.actor ?? "cli",
      action: "token.create",
      target: id,
      detail: { scopes: opts.scopes, subject, expiresAt },
    });
    return { id, token, expiresAt };
  }

  /** Check a bearer token: signature, issuer, audience, expiry, and that it was not revoked. */
  async verify(token: string): Promise<Principal> {
    let payload;
    try {
      ({ payload } = await jwtVerify(token, this.secret, {
        algorithms: ["HS256"],
        issuer: ISSUER,
        audience: AUDIENCE,
      }));
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new LxhubError("UNAUTHORIZED", "token expired");
      throw new LxhubError("UNAUTHORIZED", "invalid token");
    }
    const id = payload.jti;
    if (typeof id !== "string") throw new LxhubError("UNAUTHORIZED", "invalid token");
    const rec = await this.catalog.tokens.get(id);
    if (!rec) throw new LxhubError("UNAUTHORIZED", "unknown token");
    if (rec.revokedAt) throw new LxhubError("UNAUTHORIZED", "token revoked");
    if (Date.parse(rec.expiresAt) <= Date.now()) throw new LxhubError("UNAUTHORIZED", "token expired");
    return { tokenId: id, subject: rec.subject, scopes: rec.scopes };
  }

  async revoke(id: string, actor: string): Promise<void> {
    if (!(await this.catalog.tokens.revoke(id))) throw new LxhubError("NOT_FOUND", `no active token ${id}`);
    await this.catalog.audit.record({ actor, action: "token.revoke", target: id });
  }
}

/** Throw FORBIDDEN unless the principal may do `action` on `target`. */
export function authorize(p: Principal, action: Action, target: string): void {
  if (!allows(p.scopes, action, target)) {
    throw new LxhubError(
      "FORBIDDEN",
      `token scopes ${p.scopes.join(" ")} do not allow ${action} on ${target}`,
    );
  }
}
