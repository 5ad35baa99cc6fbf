import { compareBytewise } from "./version.js";

/** A JSON value as the document builder writes it. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/**
 * Deterministic compact JSON: object keys in byte-wise order at every level, no white space, one
 * trailing newline. Same input, same bytes — so ETags and signatures only change when content
 * does (key order and white space are irrelevant to every client, pitfall 27).
 *
 * `JSON.stringify` alone cannot do this: it always writes integer-like keys (a version key such
 * as `20240101` is one) first, in numeric order, whatever the insertion order.
 */
export function canonicalJson(value: JsonValue): Buffer {
  return Buffer.from(write(value) + "\n", "utf8");
}

function write(value: JsonValue): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: non-finite number ${value}`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(write).join(",")}]`;
  const keys = Object.keys(value).sort(compareBytewise);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${write(value[k] as JsonValue)}`).join(",")}}`;
}
