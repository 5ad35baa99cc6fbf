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
 *
 * With `indent`, the same order with one member or element per line (the `.sjson` bodies, sjson.ts).
 */
export function canonicalJson(value: JsonValue, opts: { indent?: number } = {}): Buffer {
  return Buffer.from(write(value, opts.indent ? " ".repeat(opts.indent) : "", "") + "\n", "utf8");
}

/** `indent` "" writes compact JSON; otherwise one member or element per line, nested by `indent`. */
function write(value: JsonValue, indent: string, depth: string): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new TypeError(`canonicalJson: non-finite number ${value}`);
    return JSON.stringify(value);
  }
  const inner = depth + indent;
  const [open, sep, colon, close] = indent
    ? ["\n" + inner, ",\n" + inner, ": ", "\n" + depth]
    : ["", ",", ":", ""];
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[${open}${value.map((v) => write(v, indent, inner)).join(sep)}${close}]`;
  }
  const keys = Object.keys(value).sort(compareBytewise);
  if (keys.length === 0) return "{}";
  const members = keys.map(
    (k) => `${JSON.stringify(k)}${colon}${write(value[k] as JsonValue, indent, inner)}`,
  );
  return `{${open}${members.join(sep)}${close}}`;
}
