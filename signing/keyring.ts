/**
 * The server's signing keys: Ed25519, kept as private JWKs, one file per key (or one row of
 * the catalog's secrets per key when replicas share a PostgreSQL catalog: a `KeyStore`).
 *
 * Layout of the key folder (created with mode 0700 when missing; `open` takes away any wider
 * permission from the folder and its key files):
 *
 *     <dir>/<kid>.jwk     one private key, mode 0600, written temp → fsync → rename → fsync(dir)
 *
 * `kid` is the RFC 7638 SHA-256 thumbprint of the public key (base64url), so a key's name can be
 * recomputed from its bytes and a file renamed by hand is caught at `open`. Besides the JWK
 * members each file holds `lxhub_created` (ISO 8601, millisecond precision), which orders keys:
 * the newest one is active and signs; older ones stay in the published JWKS so statements they
 * signed keep verifying until an operator retires them. Files not ending in `.jwk` (including
 * our `.…tmp` files left by a crash) are ignored.
 *
 * A key made by `rotate` after another also holds `lxhub_endorsement`: the previous active key's
 * endorsement of it (signing/endorsement.ts), made once, published while the endorsing key is
 * kept and the overlap lasts (`endorsements`).
 *
 * Several processes may share one store (replicas, or `lxhub key rotate` beside a running
 * server): `reload` reads the store again, and the index service does so before it signs.
 */
import { randomBytes } from "node:crypto";
import { restrictMode } from "./secret-files.js";
import { mkdir, open, readdir, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import {
  calculateJwkThumbprint,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
} from "jose";

/** The JWS algorithm every lxhub key signs with. */
export const KEY_ALG = "EdDSA";

/** A JSON Web Key Set as published: public keys only. */
export interface JsonWebKeySet {
  keys: JWK[];
}

/** What is known about a key without touching its private half. */
export interface KeyInfo {
  kid: string;
  created: Date;
  /** Public members only, with `kid`, `alg: EdDSA`, `use: sig`. */
  publicJwk: JWK;
  /** The previous active key's endorsement of this one, made by `rotate` (compact JWS). */
  endorsement?: string;
}

/** Makes the endorsement of `next` by `previous` when `rotate` replaces the active key. */
export type Endorse = (previous: SigningKey, next: KeyInfo) => Promise<string>;

export interface SigningKey extends KeyInfo {
  privateKey: CryptoKey;
}

/** What an endorsement says (signing/endorsement.ts), read without checking it. */
export interface EndorsementClaims {
  /** The endorsing key. */
  by: string;
  /** The endorsed key. */
  kid: string;
  /** The end of the overlap. */
  notAfter: Date;
}

/** The claims of an endorsement this server made (for listing and publishing); null if unreadable. */
export function endorsementClaims(jws: string): EndorsementClaims | null {
  try {
    const { kid } = decodeProtectedHeader(jws);
    const { sub, exp } = decodeJwt(jws);
    if (typeof kid !== "string" || typeof sub !== "string" || typeof exp !== "number") return null;
    return { by: kid, kid: sub, notAfter: new Date(exp * 1000) };
  } catch {
    return null;
  }
}

/** A key folder that cannot be used as it is (bad file, unknown kid, retiring the active key). */
export class KeyringError extends Error {
  override name = "KeyringError";
}

const SUFFIX = ".jwk";
const CREATED_MEMBER = "lxhub_created";
const ENDORSEMENT_MEMBER = "lxhub_endorsement";

/** Public members of an Ed25519 JWK plus the members every published key carries. */
function publicPart(jwk: JWK, kid: string): JWK {
  return { kty: "OKP", crv: "Ed25519", x: jwk.x, kid, alg: KEY_ALG, use: "sig" };
}

async function writeFileAtomic(dir: string, name: string, data: string): Promise<void> {
  const target = join(dir, name);
  const tmp = join(dir, `.${name}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    try {
      // Explicit, because the umask could have narrowed the mode given to open.
      await fh.chmod(0o600);
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDir(dir);
}

/** Makes a rename or unlink durable: the directory entry lives in the directory's own blocks. */
async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/**
 * Where the keys are kept: a folder of files by default, or a table every replica shares (the
 * catalog's `secrets`, when it is PostgreSQL; registry/registry.ts). Each key is one JSON text
 * stored under its kid, written once.
 */
export interface KeyStore {
  /** Shown in errors: the folder, or where else the keys live. */
  readonly where: string;
  /** Every stored key: its kid, JSON text, and where it is (for errors). */
  list(): Promise<{ kid: string; text: string; label: string }[]>;
  /** Store a new key (never replaces one). */
  add(kid: string, text: string): Promise<void>;
  remove(kid: string): Promise<void>;
}

/** The key folder: `<dir>/<kid>.jwk`, mode 0600 in a 0700 folder (see the top of this file). */
export class FileKeyStore implements KeyStore {
  constructor(readonly where: string) {}

  async list(): Promise<{ kid: string; text: string; label: string }[]> {
    const dir = this.where;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await restrictMode(dir, 0o700);
    const files = (await readdir(dir)).filter((f) => f.endsWith(SUFFIX) && !f.startsWith("."));
    const out: { kid: string; text: string; label: string }[] = [];
    for (const file of files) {
      const path = join(dir, file);
      await restrictMode(path, 0o600);
      let text: string;
      try {
        text = await readFile(path, "utf8");
      } catch (err) {
        throw new KeyringError(`${path}: unreadable (${(err as Error).message})`);
      }
      out.push({ kid: file.slice(0, -SUFFIX.length), text, label: path });
    }
    return out;
  }

  async add(kid: string, text: string): Promise<void> {
    await writeFileAtomic(this.where, `${kid}${SUFFIX}`, text);
  }

  async remove(kid: string): Promise<void> {
    await unlink(join(this.where, `${kid}${SUFFIX}`));
    await syncDir(this.where);
  }
}

/** `path` names the key in errors (its file, or its place in the catalog). */
async function parseKey(path: string, kidFromName: string, text: string): Promise<SigningKey> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new KeyringError(`${path}: not a JSON key file (${(err as Error).message})`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new KeyringError(`${path}: not a JWK object`);
  }
  const jwk = parsed as JWK & Record<string, unknown>;
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string" || typeof jwk.d !== "string") {
    throw new KeyringError(`${path}: not an Ed25519 private JWK (kty OKP, crv Ed25519, x and d)`);
  }
  const created = new Date(typeof jwk[CREATED_MEMBER] === "string" ? jwk[CREATED_MEMBER] : NaN);
  if (Number.isNaN(created.getTime())) {
    throw new KeyringError(`${path}: missing or invalid ${CREATED_MEMBER}`);
  }
  const kid = await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: jwk.x });
  if (kid !== kidFromName) {
    throw new KeyringError(`${path}: the key's thumbprint is ${kid}, not the name's ${kidFromName}`);
  }
  let privateKey: CryptoKey;
  try {
    privateKey = (await importJWK({ kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d }, KEY_ALG)) as CryptoKey;
  } catch (err) {
    // WebCrypto also refuses a private half that does not belong to the public half here.
    throw new KeyringError(`${path}: unusable key (${(err as Error).message})`);
  }
  const endorsement = typeof jwk[ENDORSEMENT_MEMBER] === "string" ? jwk[ENDORSEMENT_MEMBER] : undefined;
  return {
    kid,
    created,
    publicJwk: publicPart(jwk, kid),
    privateKey,
    ...(endorsement ? { endorsement } : {}),
  };
}

/**
 * Every key in `store`, oldest first. A key whose stored text is the one `parsed` remembers is
 * reused as it is; `parsed` is updated to the store's keys (kid → text and key).
 */
async function readKeys(
  store: KeyStore,
  parsed: Map<string, { text: string; key: SigningKey }>,
): Promise<SigningKey[]> {
  const seen = new Map<string, { text: string; key: SigningKey }>();
  for (const { kid, text, label } of await store.list()) {
    const known = parsed.get(kid);
    seen.set(kid, known && known.text === text ? known : { text, key: await parseKey(label, kid, text) });
  }
  parsed.clear();
  for (const [kid, entry] of seen) parsed.set(kid, entry);
  return [...seen.values()].map((e) => e.key).sort(byAge);
}

function byAge(a: KeyInfo, b: KeyInfo): number {
  return a.created.getTime() - b.created.getTime() || (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0);
}

export class Keyring {
  /** Oldest first; the last one is active. Never empty. */
  #keys: SigningKey[];
  /** What `reload` read last, so unchanged keys are not parsed and imported again. */
  readonly #parsed = new Map<string, { text: string; key: SigningKey }>();

  private constructor(
    private readonly store: KeyStore,
    keys: SigningKey[],
  ) {
    this.#keys = keys;
  }

  /** Where the keys are kept (a folder, or the shared catalog). */
  get dir(): string {
    return this.store.where;
  }

  /**
   * Loads every `<kid>.jwk` in `dir`, creating the folder (0700) and a first key when there is
   * none. Throws `KeyringError` naming the file if any key file is unreadable or inconsistent:
   * a signing server must not start with a key set it cannot account for.
   */
  static async open(dirOrStore: string | KeyStore): Promise<Keyring> {
    const store = typeof dirOrStore === "string" ? new FileKeyStore(dirOrStore) : dirOrStore;
    const ring = new Keyring(store, []);
    ring.#keys = await readKeys(store, ring.#parsed);
    if (ring.#keys.length === 0) await ring.rotate();
    return ring;
  }

  /**
   * Reads the store again: keys another process added (a rotation) or removed (a retirement).
   * Keys already loaded are not parsed again. Throws like `open`; an empty store keeps the keys
   * loaded (a folder being restored is no reason to stop signing).
   */
  async reload(): Promise<void> {
    const keys = await readKeys(this.store, this.#parsed);
    if (keys.length > 0) this.#keys = keys;
  }

  /** The newest key: the one that signs. */
  active(): SigningKey {
    const key = this.#keys[this.#keys.length - 1];
    if (key === undefined) throw new KeyringError("the keyring is empty");
    return key;
  }

  /** Every key, oldest first (the last is active). */
  list(): KeyInfo[] {
    return this.#keys.map(({ kid, created, publicJwk, endorsement }) => ({
      kid,
      created,
      publicJwk: { ...publicJwk },
      ...(endorsement ? { endorsement } : {}),
    }));
  }

  /**
   * The endorsements to publish: each one whose endorsing key is still here (not retired) and
   * whose overlap has not ended at `now`, oldest first.
   */
  endorsements(now: Date = new Date()): string[] {
    const kept = new Set(this.#keys.map((k) => k.kid));
    const out: string[] = [];
    for (const k of this.#keys) {
      const e = k.endorsement ? endorsementClaims(k.endorsement) : null;
      if (e && k.endorsement && e.kid === k.kid && kept.has(e.by) && e.notAfter > now)
        out.push(k.endorsement);
    }
    return out;
  }

  /**
   * Creates a new key, stores it, and makes it active. Returns its kid. With `endorse`, the key
   * that was active signs an endorsement of the new one, stored with it (signing/endorsement.ts).
   */
  async rotate(endorse?: Endorse): Promise<string> {
    const { privateKey } = await generateKeyPair(KEY_ALG, { crv: "Ed25519", extractable: true });
    const jwk = await exportJWK(privateKey);
    const kid = await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: jwk.x });
    // Strictly after the current active key, even within one millisecond, so order is total.
    const newest = this.#keys[this.#keys.length - 1];
    const created = new Date(Math.max(Date.now(), newest ? newest.created.getTime() + 1 : 0));
    const endorsement =
      newest && endorse
        ? await endorse(newest, { kid, created, publicJwk: publicPart(jwk, kid) })
        : undefined;
    const file = {
      ...publicPart(jwk, kid),
      d: jwk.d,
      [CREATED_MEMBER]: created.toISOString(),
      ...(endorsement ? { [ENDORSEMENT_MEMBER]: endorsement } : {}),
    };
    const text = `${JSON.stringify(file, null, 2)}\n`;
    await this.store.add(kid, text);
    const signingKey = (await importJWK(
      { kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d },
      KEY_ALG,
    )) as CryptoKey;
    const key: SigningKey = {
      kid,
      created,
      publicJwk: publicPart(jwk, kid),
      privateKey: signingKey,
      ...(endorsement ? { endorsement } : {}),
    };
    this.#keys.push(key);
    this.#parsed.set(kid, { text, key });
    return kid;
  }

  /**
   * Deletes a key that is no longer active: it leaves the JWKS, so statements it signed stop
   * verifying. The active key cannot be retired (rotate first).
   */
  async retire(kid: string): Promise<void> {
    const index = this.#keys.findIndex((k) => k.kid === kid);
    if (index < 0) throw new KeyringError(`no key ${kid} in ${this.dir}`);
    if (index === this.#keys.length - 1) {
      throw new KeyringError(`key ${kid} is the active key; rotate to a new key before retiring it`);
    }
    await this.store.remove(kid);
    this.#keys.splice(index, 1);
  }

  /** The public keys to publish, active key first; never any private member. */
  jwks(): JsonWebKeySet {
    return { keys: [...this.#keys].reverse().map((k) => ({ ...k.publicJwk })) };
  }
}
