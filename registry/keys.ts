import type { KeyStore } from "../signing/keyring.js";
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
