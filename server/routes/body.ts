import type { Request } from "express";
import type { z } from "zod";
import { LxhubError, type ErrorCode } from "../../registry/errors.js";
import { MAX_JSON_BYTES } from "./route.js";

/** The Content-Length a request declares, or null when it has none (chunked, or no body). */
export function declaredLength(req: Request): number | null {
  const h = req.headers["content-length"];
  if (h === undefined) return null;
  const n = Number(h);
  if (!/^\d+$/.test(h) || !Number.isSafeInteger(n))
    throw new LxhubError("BAD_REQUEST", `bad Content-Length ${JSON.stringify(h)}`);
  return n;
}

/** Whether a request carries a body at all. */
export function hasBody(req: Request): boolean {
  return (
    (Number(req.headers["content-length"] ?? 0) || 0) > 0 || req.headers["transfer-encoding"] !== undefined
  );
}

/** TOO_LARGE, before a byte is read, when the declared body is larger than `max`. */
export function refuseLargerThan(req: Request, max: number, what: string): void {
  const n = declaredLength(req);
  if (n !== null && n > max)
    throw new LxhubError(
      "TOO_LARGE",
      `${what} of ${n} bytes is larger than the server accepts (${max} bytes)`,
      {
        limit: max,
      },
    );
}

/**
 * `Content-Range: bytes <start>-<end>/<total or *>` → start; absent → null. Every number must be a
 * safe integer (below 2^53), end ≥ start, end < total, and a declared Content-Length must equal
 * the range's length.
 */
export function contentRangeStart(req: Request): number | null {
  const header = req.headers["content-range"];
  if (header === undefined) return null;
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim());
  const bad = (why: string) =>
    new LxhubError("BAD_REQUEST", `bad Content-Range ${JSON.stringify(header)}: ${why}`);
  if (!m) throw bad('use "bytes <start>-<end>/<total or *>"');
  const [start, end, total] = [Number(m[1]), Number(m[2]), m[3] === "*" ? null : Number(m[3])];
  if (
    !Number.isSafeInteger(start) ||
    !Number.isSafeInteger(end) ||
    (total !== null && !Number.isSafeInteger(total))
  )
    throw bad("a number is past 2^53");
  if (end < start) throw bad("the end is before the start");
  if (total !== null && end >= total) throw bad("the end is past the total");
  const length = declaredLength(req);
  if (length !== null && length !== end - start + 1)
    throw bad(`it names ${end - start + 1} bytes but Content-Length is ${length}`);
  return start;
}

/**
 * Read a JSON body of at most MAX_JSON_BYTES and check it against `schema`. A declared length
 * over the limit is refused before reading; a zod issue is reported with the code of the field
 * it is in (`fieldCodes`), or BAD_REQUEST for the body's shape.
 */
export async function readJson<T>(
  req: Request,
  schema: z.ZodType<T>,
  fieldCodes: Partial<Record<string, ErrorCode>> = {},
): Promise<T> {
  refuseLargerThan(req, MAX_JSON_BYTES, "a JSON body");
  const text = await readText(req, MAX_JSON_BYTES);
  if (text.length === 0) throw new LxhubError("BAD_REQUEST", "expected a JSON body");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new LxhubError("MALFORMED_JSON", "the request body is not valid JSON");
  }
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issues = r.error.issues.map(describeIssue);
  const first = r.error.issues[0];
  const field = typeof first?.path[0] === "string" ? first.path[0] : "";
  const shape = first?.code === "invalid_type" && first.path.length <= 1;
  const code = (!shape && fieldCodes[field]) || "BAD_REQUEST";
  throw new LxhubError(code, `invalid request body: ${issues.join("; ")}`, { issues });
}

/** One zod issue in words: where (JSON path), and what; a bad record key names the key and its rule. */
function describeIssue(i: z.core.$ZodIssue): string {
  const where = i.path.map((k) =>
    typeof k === "string" && /^[A-Za-z_]\w*$/.test(k) ? k : JSON.stringify(k),
  );
  const at = where.join(".") || "(body)";
  if (i.code === "invalid_key") {
    const key = JSON.stringify(i.path[i.path.length - 1]);
    return `${where.slice(0, -1).join(".")}: key ${key}: ${i.issues.map((x) => x.message).join("; ")}`;
  }
  return `${at}: ${i.message}`;
}

/**
 * The body as text, at most `max` bytes. Over the limit it stops reading (the socket is closed
 * after the answer, see server/api.ts) instead of draining the rest.
 */
function readText(req: Request, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (err?: Error) => {
      req.off("data", onData).off("end", onEnd).off("error", onError);
      if (err) {
        req.pause();
        reject(err);
      } else resolve(Buffer.concat(chunks).toString("utf8"));
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > max)
        done(new LxhubError("TOO_LARGE", `a JSON body is larger than ${max} bytes`, { limit: max }));
      else chunks.push(c);
    };
    const onEnd = () => done();
    const onError = (err: Error) => done(err);
    req.on("data", onData).on("end", onEnd).on("error", onError);
  });
}
