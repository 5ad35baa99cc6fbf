import type { Knex } from "knex";

export interface UploadSessionRecord {
  id: string;
  createdAt: string;
  createdBy: string;
  expiresAt: string;
  /** Saved running hash of a session opened with a prefix (opaque to the catalog), or null. */
  prefixState?: string | null;
}

/** Who owns each open upload session and when it expires (the bytes live in the blob store). */
export interface UploadRecords {
  create(s: UploadSessionRecord): Promise<void>;
  get(id: string): Promise<UploadSessionRecord | null>;
  touch(id: string, expiresAt: string): Promise<void>;
  /** Replace the session's saved prefix hash state (null forgets it). */
  savePrefixState(id: string, state: string | null): Promise<void>;
  delete(id: string): Promise<void>;
  /** Ids of the sessions `owner` opened that have not expired at `at`. */
  openOf(owner: string, at: Date): Promise<string[]>;
  expired(at: Date): Promise<string[]>;
  /** Saved prefix hash states of the sessions not expired at `at` (replicas save them). */
  prefixStates(at: Date): Promise<string[]>;
}

export class KnexUploadRecords implements UploadRecords {
  constructor(private readonly db: Knex) {}

  async create(s: UploadSessionRecord): Promise<void> {
    await this.db("upload_sessions").insert({
      id: s.id,
      created_at: s.createdAt,
      created_by: s.createdBy,
      expires_at: s.expiresAt,
      prefix_state: s.prefixState ?? null,
    });
  }

  async get(id: string): Promise<UploadSessionRecord | null> {
    const row = (await this.db("upload_sessions").where({ id }).first()) as
      | {
          id: string;
          created_at: string;
          created_by: string;
          expires_at: string;
          prefix_state: string | null;
        }
      | undefined;
    return row
      ? {
          id: row.id,
          createdAt: row.created_at,
          createdBy: row.created_by,
          expiresAt: row.expires_at,
          prefixState: row.prefix_state,
        }
      : null;
  }

  async touch(id: string, expiresAt: string): Promise<void> {
    await this.db("upload_sessions").where({ id }).update({ expires_at: expiresAt });
  }

  async savePrefixState(id: string, state: string | null): Promise<void> {
    await this.db("upload_sessions").where({ id }).update({ prefix_state: state });
  }

  async delete(id: string): Promise<void> {
    await this.db("upload_sessions").where({ id }).delete();
  }

  async openOf(owner: string, at: Date): Promise<string[]> {
    const rows = (await this.db("upload_sessions")
      .where({ created_by: owner })
      .andWhere("expires_at", ">", at.toISOString())
      .select("id")) as { id: string }[];
    return rows.map((r) => r.id);
  }

  async expired(at: Date): Promise<string[]> {
    const rows = (await this.db("upload_sessions")
      .where("expires_at", "<", at.toISOString())
      .select("id")) as {
      id: string;
    }[];
    return rows.map((r) => r.id);
  }

  async prefixStates(at: Date): Promise<string[]> {
    const rows = (await this.db("upload_sessions")
      .whereNotNull("prefix_state")
      .andWhere("expires_at", ">", at.toISOString())
      .select("prefix_state")) as { prefix_state: string }[];
    return rows.map((r) => r.prefix_state);
  }
}
