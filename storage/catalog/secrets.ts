import type { Knex } from "knex";
import { now } from "./knex-util.js";

/**
 * Small named secrets every replica must share when the catalog is shared (PostgreSQL): the
 * token secret, the index signing keys. Values are written once and never changed in place; a
 * name is claimed by the first writer (`putIfAbsent`), so two replicas starting together agree.
 */
export interface SecretRecords {
  get(name: string): Promise<string | null>;
  /** Store `value` under `name` unless the name is taken; returns what is stored now. */
  putIfAbsent(name: string, value: string): Promise<string>;
  /** Names starting with `prefix`, with their values, oldest first. */
  list(prefix: string): Promise<{ name: string; value: string; createdAt: string }[]>;
  delete(name: string): Promise<boolean>;
}

export class KnexSecretRecords implements SecretRecords {
  constructor(private readonly db: Knex) {}

  async get(name: string): Promise<string | null> {
    const row = (await this.db("secrets").where({ name }).first("value")) as { value: string } | undefined;
    return row?.value ?? null;
  }

  async putIfAbsent(name: string, value: string): Promise<string> {
    await this.db("secrets").insert({ name, value, created_at: now() }).onConflict("name").ignore();
    const stored = await this.get(name);
    if (stored === null) throw new Error(`secret ${name} vanished after being written`);
    return stored;
  }

  async list(prefix: string): Promise<{ name: string; value: string; createdAt: string }[]> {
    const rows = (await this.db("secrets")
      .where("name", ">=", prefix)
      .andWhere("name", "<", prefix + "\uffff")
      .orderBy([{ column: "created_at" }, { column: "name" }])) as {
      name: string;
      value: string;
      created_at: string;
    }[];
    return rows
      .filter((r) => r.name.startsWith(prefix))
      .map((r) => ({ name: r.name, value: r.value, createdAt: r.created_at }));
  }

  async delete(name: string): Promise<boolean> {
    return (await this.db("secrets").where({ name }).delete()) > 0;
  }
}
