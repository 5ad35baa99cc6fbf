import path from "node:path";

import { FsBlobStore } from "./fs.js";
import { checkS3Options, S3BlobStore, type S3BlobStoreOptions } from "./s3.js";
import type { BlobStore } from "./store.js";

/** A blob store URL that cannot be used; the message says which part is wrong. */
export class BlobStoreUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BlobStoreUrlError";
  }
}

const S3_PARAMS = new Set(["endpoint", "region", "forcePathStyle", "partSize"]);

type Parsed = { kind: "fs"; dir: string } | { kind: "s3"; options: S3BlobStoreOptions };

/**
 * The blob store a URL names:
 * - absent: the filesystem store in `dataDir` (storage/layout.ts);
 * - `file://DIR`: the filesystem store in DIR (`file:///abs/path` or `file://relative/path`);
 * - `s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:8000&region=us-east-1&forcePathStyle=true`
 *   (`partSize=<bytes>` too): credentials come from the SDK's default chain
 *   (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role), never from the URL.
 * The store is not contacted: call `ping()` to check that it answers.
 */
export async function openBlobStore(url: string | undefined, dataDir: string): Promise<BlobStore> {
  const parsed = parseBlobStoreUrl(url, dataDir);
  if (parsed.kind === "fs") return FsBlobStore.open(parsed.dir);
  return new S3BlobStore(parsed.options);
}

/** A one-line description for logs, without credentials (which a URL cannot carry anyway). */
export function describeBlobStore(url: string | undefined, dataDir = "."): string {
  const parsed = parseBlobStoreUrl(url, dataDir);
  if (parsed.kind === "fs") return `filesystem ${parsed.dir}`;
  const o = parsed.options;
  const where = o.endpoint ?? `AWS ${o.region}`;
  return `s3 bucket ${o.bucket}, prefix ${JSON.stringify(o.prefix ?? "")} at ${where}${o.forcePathStyle ? " (path-style)" : ""}`;
}

function parseBlobStoreUrl(url: string | undefined, dataDir: string): Parsed {
  if (url === undefined || url === "") return { kind: "fs", dir: path.resolve(dataDir) };
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === "file") {
    if (!url.startsWith("file://"))
      throw new BlobStoreUrlError(`blob store URL must be file://DIR, not ${redact(url)}`);
    const dir = url.slice("file://".length);
    if (dir === "" || /[?#]/.test(dir)) {
      throw new BlobStoreUrlError(`blob store URL file://DIR needs a folder and no query: ${redact(url)}`);
    }
    return { kind: "fs", dir: path.resolve(dir) };
  }
  if (scheme !== "s3") {
    throw new BlobStoreUrlError(
      `unknown blob store URL scheme ${JSON.stringify(scheme ?? url.slice(0, 20))}: use file://DIR or s3://BUCKET/PREFIX?endpoint=...`,
    );
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new BlobStoreUrlError(`malformed blob store URL ${redact(url)}`);
  }
  if (u.username !== "" || u.password !== "") {
    throw new BlobStoreUrlError(
      "an s3:// blob store URL must not hold credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
  }
  const bucket = u.hostname;
  if (bucket === "") throw new BlobStoreUrlError(`s3:// blob store URL without a bucket: ${redact(url)}`);
  if (u.port !== "")
    throw new BlobStoreUrlError(`s3://BUCKET takes no port (use ?endpoint=): ${redact(url)}`);
  if (u.hash !== "") throw new BlobStoreUrlError(`s3:// blob store URL with a #fragment: ${redact(url)}`);
  for (const key of u.searchParams.keys()) {
    if (!S3_PARAMS.has(key)) {
      throw new BlobStoreUrlError(
        `unknown s3:// parameter ${JSON.stringify(key)} (known: ${[...S3_PARAMS].join(", ")})`,
      );
    }
  }
  const prefix = decodeURIComponent(u.pathname.replace(/^\/+/, ""));
  const endpoint = u.searchParams.get("endpoint") ?? undefined;
  if (endpoint !== undefined && !/^https?:\/\/[^/?#@]+\/?$/.test(endpoint)) {
    throw new BlobStoreUrlError(
      `s3:// endpoint must be http(s)://host[:port], not ${JSON.stringify(endpoint)}`,
    );
  }
  const forcePathStyle = boolParam(u.searchParams.get("forcePathStyle"));
  const partSizeText = u.searchParams.get("partSize");
  const partSize = partSizeText === null ? undefined : Number(partSizeText);
  if (partSize !== undefined && !Number.isSafeInteger(partSize)) {
    throw new BlobStoreUrlError(
      `s3:// partSize must be a number of bytes, not ${JSON.stringify(partSizeText)}`,
    );
  }
  const options: S3BlobStoreOptions = {
    bucket,
    prefix,
    endpoint,
    region: u.searchParams.get("region") ?? process.env.AWS_REGION ?? "us-east-1",
    forcePathStyle,
    partSize,
  };
  try {
    checkS3Options(options);
  } catch (err) {
    throw new BlobStoreUrlError(`blob store URL ${redact(url)}: ${(err as Error).message}`);
  }
  return { kind: "s3", options };
}

function boolParam(value: string | null): boolean {
  if (value === null || value === "false" || value === "0") return false;
  if (value === "true" || value === "1" || value === "") return true;
  throw new BlobStoreUrlError(`s3:// forcePathStyle must be true or false, not ${JSON.stringify(value)}`);
}

/** The URL for an error message, with anything that looks like credentials cut out. */
function redact(url: string): string {
  return JSON.stringify(url.replace(/\/\/[^/@]*@/, "//***@").slice(0, 200));
}
