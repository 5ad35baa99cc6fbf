import { randomBytes } from "node:crypto";

/** A stream chunk as a Buffer (no copy); strings and objects are refused. */
export function toBuffer(chunk: unknown): Buffer {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError("blob sources must yield bytes (Buffer or Uint8Array), not strings or objects");
}

/** 32 URL-safe characters (192 random bits): upload ids and temporary names. */
export function randomId(): string {
  return randomBytes(24).toString("base64url");
}
