/**
 * The server's OpenPGP signing key, for the canonical simplestreams tools: `sstream-query` and
 * `sstream-mirror` check a clear-signed `.sjson` document with `gpgv --keyring=K -`, and a
 * detached `X.json.gpg` is checked with `gpgv --keyring=K X.json.gpg X.json`
 * (shared/docs/simplestreams.md §6.2, §6.3). lxhub's own clients verify the JWS statement
 * (statement.ts) instead; this key only serves those tools.
 *
 * The key is what GnuPG 2.2 (Debian 12's `gpgv`) can verify: a **v4** key, EdDSA on Ed25519 in
 * its "legacy" encoding (algorithm 22). openpgp.js 6 can also make RFC 9580 keys (v6, or v4 with
 * the new Ed25519 algorithm 27); `gpgv` 2.2 answers those with "unknown pubkey algorithm" and
 * refuses every signature, so they are not made here and refused when given.
 *
 * One key, never rotated by lxhub: it is made on first start and kept in an `OpenPgpKeyStore`
 * (a 0600 file in the data folder, or a row of the catalog's secrets shared by replicas), or it
 * is given by the operator (an unprotected armored private key). A key that cannot be used is an
 * `OpenPgpKeyError` naming where it is, so the server refuses to start with a sentence, not a
 * stack trace.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import * as openpgp from "openpgp";
import { restrictMode, writeSecretOnce } from "./secret-files.js";

/** A stored or given OpenPGP key that cannot be used as it is. */
export class OpenPgpKeyError extends Error {
  override name = "OpenPgpKeyError";
}

/** Where the one OpenPGP key is kept: written once, by the first process that needs it. */
export interface OpenPgpKeyStore {
  /** Shown in errors: the file, or the catalog secret. */
  readonly where: string;
  /** The stored armored private key, or null when there is none yet. */
  get(): Promise<string | null>;
  /** Stores `armored` unless a key is stored already; returns the key stored now. */
  putIfAbsent(armored: string): Promise<string>;
}

/** The key as one file (mode 0600, its folder 0700; permissions wider than that are taken away). */
export class FileOpenPgpKeyStore implements OpenPgpKeyStore {
  constructor(readonly where: string) {}

  async get(): Promise<string | null> {
    let text: string;
    try {
      text = await readFile(this.where, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw new OpenPgpKeyError(`${this.where}: unreadable (${(err as Error).message})`);
    }
    await restrictMode(path.dirname(this.where), 0o700);
    await restrictMode(this.where, 0o600);
    return text;
  }

  putIfAbsent(armored: string): Promise<string> {
    return writeSecretOnce(this.where, armored);
  }
}

/** openpgp.js settings every key and signature is made with: v4 keys, as gpgv 2.2 reads them. */
const CONFIG = { v6Keys: false } as const;

/**
 * A new key says it was made this long ago. gpgv refuses a key "created in the future" ("time
 * warp or clock problem"): without the margin, a verifier whose clock lags the server's could not
 * check anything until its clock caught up with the key's creation. (A signature dated in the
 * future is accepted by gpgv; only the key's date matters.)
 */
const KEY_BACKDATE_MS = 24 * 3600 * 1000;

/** Public-key algorithms GnuPG 2.2 cannot verify (RFC 9580's new Ed25519/Ed448 encodings). */
const UNVERIFIABLE = new Set<number>([openpgp.enums.publicKey.ed25519, openpgp.enums.publicKey.ed448]);

export class OpenPgpSigner {
  private constructor(
    private readonly key: openpgp.PrivateKey,
    /** The public key, ASCII-armored (what `signing-key.asc` serves). */
    readonly publicKeyArmored: string,
    /** Upper-case hex, as `gpg --fingerprint` and `gpgv` print it. */
    readonly fingerprint: string,
  ) {}

  /**
   * The stored key, or a new one (Ed25519, v4, sign-only, never expiring) stored first. Two
   * processes starting together agree: the first write wins and both use what is stored.
   */
  static async open(store: OpenPgpKeyStore, userId: string): Promise<OpenPgpSigner> {
    let armored = await store.get();
    if (armored === null) armored = await store.putIfAbsent(await OpenPgpSigner.generate(userId));
    return OpenPgpSigner.fromArmored(armored, store.where);
  }

  /** A key the operator gave: an unprotected armored private key in `file`. */
  static async fromFile(file: string): Promise<OpenPgpSigner> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      throw new OpenPgpKeyError(`${file}: unreadable (${(err as Error).message})`);
    }
    return OpenPgpSigner.fromArmored(text, file);
  }

  /** A new armored private key (see the top of this file for why this kind), dated a day back. */
  static async generate(userId: string): Promise<string> {
    const { privateKey } = await openpgp.generateKey({
      type: "ecc",
      curve: "ed25519Legacy",
      userIDs: [{ name: userId }],
      subkeys: [],
      date: new Date(Date.now() - KEY_BACKDATE_MS),
      format: "armored",
      config: CONFIG,
    });
    return privateKey;
  }

  /** `label` names the key in errors (its file, or its place in the catalog). */
  static async fromArmored(text: string, label: string): Promise<OpenPgpSigner> {
    let key: openpgp.PrivateKey;
    try {
      key = await openpgp.readPrivateKey({ armoredKey: text });
    } catch (err) {
      throw new OpenPgpKeyError(`${label}: not an armored OpenPGP private key (${(err as Error).message})`);
    }
    if (!key.isDecrypted()) {
      throw new OpenPgpKeyError(
        `${label}: the key is protected by a passphrase; give it unprotected (gpg --export-secret-keys after removing the passphrase) in a file only lxhub can read`,
      );
    }
    if (key.keyPacket.version !== 4) {
      throw new OpenPgpKeyError(
        `${label}: a v${key.keyPacket.version} key; gpgv 2.2 (Debian 12) verifies signatures of v4 keys only`,
      );
    }
    let signing: openpgp.PrivateKey | openpgp.Subkey;
    try {
      signing = await key.getSigningKey(undefined, new Date(), undefined, { ...openpgp.config, ...CONFIG });
      // The private half must belong to the public half, or every signature is bad.
      await (signing.keyPacket as openpgp.SecretKeyPacket | openpgp.SecretSubkeyPacket).validate();
    } catch (err) {
      throw new OpenPgpKeyError(`${label}: no usable signing key (${(err as Error).message})`);
    }
    if (UNVERIFIABLE.has(signing.keyPacket.algorithm)) {
      throw new OpenPgpKeyError(
        `${label}: its signing key uses ${signing.getAlgorithmInfo().algorithm}, which gpgv 2.2 (Debian 12) cannot verify; use an EdDSA (ed25519Legacy), ECDSA or RSA key`,
      );
    }
    return new OpenPgpSigner(key, key.toPublic().armor(), key.getFingerprint().toUpperCase());
  }

  /**
   * An OpenPGP clear-signed message (RFC 4880 §7) whose body is `text`. Its armor header says
   * `Hash: SHA512`: simplestreams' `read_signed` skips the first non-empty line after
   * `-----BEGIN PGP SIGNED MESSAGE-----` as a header, so a message without one loses its
   * first body line there. GnuPG refuses any line longer than 20000 characters in it.
   */
  async clearSign(text: string): Promise<string> {
    return openpgp.sign({
      message: await openpgp.createCleartextMessage({ text }),
      signingKeys: this.key,
      config: CONFIG,
    });
  }

  /** An ASCII-armored detached signature over `data` as bytes (`gpg --armor --detach-sign`). */
  async detachSign(data: Uint8Array): Promise<string> {
    return openpgp.sign({
      message: await openpgp.createMessage({ binary: data }),
      signingKeys: this.key,
      detached: true,
      format: "armored",
      config: CONFIG,
    });
  }
}
