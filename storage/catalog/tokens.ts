import type { Knex } from "knex";
import { now } from "./knex-util.js";

export interface TokenRecord {
  id: string;
  subject: string;
  scopes: string[];
  createdAt: string;
  expiresAt: string;
  revokedAt: string | null;
}

/** Issued API tokens (their signed form is never stored: only the id, scopes and lifetime). */
export interface TokenRecords {
  insert(t: TokenRecord): Promise<void>;
  get(id: string): Promise<TokenRecord | null>;
  /** false when the token does not exist or was already revoked. */
  revoke(id: string): Promise<boolean>;
}

interface TokenRow {
  id: string;
  subject: string;
  scopes: string;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
}

export class KnexTokenRecords implements TokenRecords {
  constructor(private readonly db: Knex) {}

  async insert(t: TokenRecord): Promise<void> {
    await this.db("tokens").insert({
      id: t.id,
      subject: t.subject,
      scopes: JSON.stringify(t.scopes),
      created_at: t.createdAt,
      expires_at: t.expiresAt,
      revoked_at: t.revokedAt,
    });
  }

  async get(id: string): Promise<TokenRecord | null> {
    const row = (await this.db("tokens").where({ id }).first()) as TokenRow | undefined;
    return row
      ? {
          id: row.id,
          subject: row.subject,
          scopes: JSON.parse(row.scopes) as string[],
          createdAt: row.created_at,
          expiresAt: row.expires_at,
          revokedAt: row.revoked_at,
        }
      : null;
  }

  async revoke(id: string): Promise<boolean> {
    const n = await this.db("tokens").where({ id }).whereNull("revoked_at").update({ revoked_at: now() });
    return n > 0;
  }
}
