import { signEndorsement } from "../signing/endorsement.js";
import { endorsementClaims, type Keyring, type KeyStore } from "../signing/keyring.js";
import type { Catalog } from "../storage/catalog/catalog.js";
import type { IndexService } from "./indexer.js";
import type { OpenPgpKeyStore } from "../signing/openpgp.js";
import type { SecretRecords } from "../storage/catalog/catalog.js";

const PREFIX = "signing-key:";

/**
 * The signing keys kept in the catalog's secrets (one row per key, `signing-key:<kid>`), so
 * replicas sharing a PostgreSQL catalog sign with the same keys and publish the same JWKS.
 */
export class CatalogKeyStore implements KeyStore {
  readonly where = "the catalog's secrets";

  constructor(private readonly secrets: SecretRecords) {}

  async list(): Promise<{ kid: string; text: string; label: string }[]> {
    return (await this.secrets.list(PREFIX)).map((r) => ({
      kid: r.name.slice(PREFIX.length),
      text: r.value,
      label: `catalog secret ${r.name}`,
    }));
  }

  async add(kid: string, text: string): Promise<void> {
    await this.secrets.putIfAbsent(PREFIX + kid, text);
  }

  async remove(kid: string): Promise<void> {
    await this.secrets.delete(PREFIX + kid);
  }
}

const OPENPGP_NAME = "openpgp-key";

/** The OpenPGP signing key in the catalog's secrets (`openpgp-key`), shared by every replica. */
export class CatalogOpenPgpKeyStore implements OpenPgpKeyStore {
  readonly where = `catalog secret ${OPENPGP_NAME}`;

  constructor(private readonly secrets: SecretRecords) {}

  get(): Promise<string | null> {
    return this.secrets.get(OPENPGP_NAME);
  }

  putIfAbsent(armored: string): Promise<string> {
    return this.secrets.putIfAbsent(OPENPGP_NAME, armored);
  }
}

/** One signing key as `lxhub key list` shows it. */
export interface KeyStatus {
  kid: string;
  created: Date;
  /** `active` signs; `previous` is still published (JWKS) and may endorse a newer key, never signs. */
  state: "active" | "previous";
  /** The key that endorsed this one at its rotation, and until when (published only while it lasts). */
  endorsedBy?: { kid: string; until: Date; published: boolean; retired: boolean };
}

/**
 * `lxhub key list|rotate|retire` over the registry's key store (the data folder, or the shared
 * catalog's secrets). A rotation makes a new active key endorsed by the one it replaces for an
 * overlap (signing/endorsement.ts); retiring a key deletes it (its private half too), so it
 * never signs again and its endorsements are no longer published.
 *
 * How a running server learns of it: the index service reads the key store again before every
 * signature and re-signs when the store changed (within a minute, at the next publish, or
 * on SIGHUP; registry/indexer.ts). With a shared catalog this command also re-signs at once, and
 * every replica follows the new generation.
 */
export class KeyService {
  constructor(
    private readonly catalog: Catalog,
    private readonly keyring: Keyring,
    private readonly index: IndexService,
    private readonly issuer: string,
  ) {}

  async list(now: Date = new Date()): Promise<KeyStatus[]> {
    await this.keyring.reload();
    const keys = this.keyring.list();
    const kept = new Set(keys.map((k) => k.kid));
    return keys.map((k, i) => {
      const e = k.endorsement ? endorsementClaims(k.endorsement) : null;
      return {
        kid: k.kid,
        created: k.created,
        state: i === keys.length - 1 ? "active" : "previous",
        ...(e
          ? {
              endorsedBy: {
                kid: e.by,
                until: e.notAfter,
                retired: !kept.has(e.by),
                published: kept.has(e.by) && e.notAfter > now,
              },
            }
          : {}),
      };
    });
  }

  /** A new active key, endorsed by the previous one for `overlapSeconds`. Returns both kids. */
  rotate(overlapSeconds: number): Promise<{ previous: string; kid: string }> {
    return this.changing(async () => {
      const previous = this.keyring.active().kid;
      const notBefore = new Date();
      const notAfter = new Date(notBefore.getTime() + overlapSeconds * 1000);
      const kid = await this.keyring.rotate((old, next) =>
        signEndorsement(old, next, { notBefore, notAfter, issuer: this.issuer }),
      );
      return { previous, kid };
    });
  }

  /** Deletes a key that is not active: it never signs again and its endorsements stop. */
  retire(kid: string): Promise<void> {
    return this.changing(() => this.keyring.retire(kid));
  }

  /** Under the keys' lock, on the store as it is now; re-signs at once when replicas share it. */
  private async changing<T>(fn: () => Promise<T>): Promise<T> {
    const result = await this.catalog.locks.withLock("lxhub:keys", async () => {
      await this.keyring.reload();
      return fn();
    });
    if (this.catalog.shared) await this.index.rebuild();
    return result;
  }
}
