import type { KeyStore } from "../signing/keyring.js";
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
