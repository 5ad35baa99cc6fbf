import type { Knex } from "knex";

/** A unit of work: every write that must land with others takes one, so callers compose them atomically. */
export type Tx = Knex.Transaction;

export const now = (): string => new Date().toISOString();

/**
 * A JSON column as stored. A value that does not parse (written by hand or by an older version)
 * comes back as its raw text: the publish validator then leaves the record out of the documents
 * instead of a parse error stopping the server (registry/indexer.ts).
 */
export function jsonColumn(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
