import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import type { BlobStore } from "../storage/blobs/store.js";
import type { IndexService, ServedDocument } from "../registry/indexer.js";
import { LxhubError } from "../registry/errors.js";
import { sendError } from "./errors.js";
import { sendFileRange } from "./send-file.js";

/**
 * The public read path on a plain `node:http` handler ahead of express (decisions.md: express
 * is 4–5× slower per request). Serves the index documents from memory and image files from the
 * blob store, with Range, HEAD, strong ETags and genuine 404s. Returns false for any path it
 * does not own, so the caller hands the request on.
 */
export function createReadPath(deps: { index: IndexService; blobs: BlobStore; certPem: string }) {
  const certBody = Buffer.from(deps.certPem);

  return function handle(req: IncomingMessage, res: ServerResponse): boolean {
    const rel = normalize(req.url ?? "/");
    if (rel === null) return false;
    const isDoc = rel.startsWith("streams/") || rel.startsWith(".well-known/lxhub/");
    const isFile = rel.startsWith("images/") || rel.startsWith("blobs/sha256/");
    if (!isDoc && !isFile) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "application/json" });
      res.end(
        JSON.stringify({
          error: { code: "METHOD_NOT_ALLOWED", message: "read-only path: use GET or HEAD" },
        }) + "\n",
      );
      return true;
    }
    if (rel === ".well-known/lxhub/server.crt") {
      res.writeHead(200, { "content-type": "application/x-pem-file", "content-length": certBody.length });
      res.end(req.method === "HEAD" ? undefined : certBody);
      return true;
    }
    const gen = deps.index.generation();
    if (isDoc) {
      const doc = gen?.documents.get(rel);
      if (!doc) sendError(res, new LxhubError("NOT_FOUND", `no such document: /${rel}`));
      else sendDocument(req, res, doc);
      return true;
    }
    let digest: string | undefined;
    if (rel.startsWith("blobs/sha256/")) {
      const hexPart = rel.slice("blobs/sha256/".length);
      if (/^[0-9a-f]{64}$/.test(hexPart)) digest = `sha256:${hexPart}`;
    } else {
      digest = gen?.files.get(rel)?.digest;
    }
    if (!digest) {
      sendError(res, new LxhubError("NOT_FOUND", `no such file: /${rel}`));
      return true;
    }
    sendBlob(req, res, deps.blobs, digest).catch((err: unknown) => sendError(res, err));
    return true;
  };
}

/**
 * Path relative to the root with runs of `/` merged (the LXC download template sends
 * `…//rootfs.tar.xz`, pitfall 15) and percent-escapes decoded; null when undecodable or when
 * it holds a `..` or `.` segment.
 */
const PLAIN_PATH_RE = /^\/[A-Za-z0-9_-][A-Za-z0-9_.:-]*(\/[A-Za-z0-9_-][A-Za-z0-9_.:-]*)*$/;

export function normalize(url: string): string | null {
  // Fast path for the common case (no escapes, no empty, dot or dot-dot segments, no query).
  if (PLAIN_PATH_RE.test(url)) return url.slice(1);
  const q = url.indexOf("?");
  const raw = q >= 0 ? url.slice(0, q) : url;
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    return null;
  }
  const segments = decoded.split("/").filter((s) => s.length > 0);
  if (segments.some((s) => s === ".." || s === "." || s.includes("\0"))) return null;
  return segments.join("/");
}

function acceptsGzip(req: IncomingMessage): boolean {
  const h = req.headers["accept-encoding"];
  if (!h) return false;
  return h.split(",").some((part) => {
    const [coding, ...params] = part.trim().split(";");
    if (coding?.trim().toLowerCase() !== "gzip") return false;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    return !q || Number(q.slice(2)) > 0;
  });
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((t) => t.trim() === etag || t.trim() === "*");
}

/** Response headers of a document, as flat arrays built once per document (not per request). */
interface DocumentHeaders {
  plain: string[];
  gzip: string[];
  notModified: string[];
}
const headerCache = new WeakMap<ServedDocument, DocumentHeaders>();

function documentHeaders(doc: ServedDocument): DocumentHeaders {
  let h = headerCache.get(doc);
  if (!h) {
    const common = [
      "content-type",
      doc.contentType,
      "etag",
      doc.etag,
      "vary",
      "Accept-Encoding",
      // Documents change with each publish: caches must revalidate (the ETag makes that cheap).
      "cache-control",
      "no-cache",
    ];
    h = {
      plain: [...common, "content-length", String(doc.body.length)],
      gzip: [...common, "content-encoding", "gzip", "content-length", String(doc.gzip.length)],
      notModified: common,
    };
    headerCache.set(doc, h);
  }
  return h;
}

function sendDocument(req: IncomingMessage, res: ServerResponse, doc: ServedDocument): void {
  const headers = documentHeaders(doc);
  if (etagMatches(req.headers["if-none-match"], doc.etag)) {
    res.writeHead(304, headers.notModified);
    res.end();
    return;
  }
  const gzip = acceptsGzip(req);
  res.writeHead(200, gzip ? headers.gzip : headers.plain);
  res.end(req.method === "HEAD" ? undefined : gzip ? doc.gzip : doc.body);
}

/** Parse a single `bytes=` range against a size; null = serve whole, "unsatisfiable" = 416. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | null | "unsatisfiable" {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null; // multiple or malformed ranges: RFC 9110 lets us answer with the whole file
  const [, a, b] = m;
  let start: number;
  let end: number;
  if (a === "" && b === "") return null;
  if (a === "") {
    const n = Number(b);
    if (n === 0) return "unsatisfiable";
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === "" ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== "" && Number(b) < start) return null;
  }
  if (start >= size) return "unsatisfiable";
  return { start, end };
}

async function sendBlob(
  req: IncomingMessage,
  res: ServerResponse,
  blobs: BlobStore,
  digest: string,
): Promise<void> {
  const info = await blobs.stat(digest);
  if (!info) throw new LxhubError("NOT_FOUND", `no such blob: ${digest}`);
  const etag = `"${digest.slice(7)}"`;
  const headers: Record<string, string | number> = {
    "content-type": "application/octet-stream",
    "accept-ranges": "bytes",
    etag,
    // Content behind a path never changes (pitfall 19): cache forever.
    "cache-control": "public, max-age=31536000, immutable",
  };
  const ifRange = req.headers["if-range"];
  let range = parseRange(req.headers.range, info.size);
  if (ifRange && ifRange !== etag) range = null;
  if (range === "unsatisfiable") {
    res.writeHead(416, { ...headers, "content-range": `bytes */${info.size}` });
    res.end();
    return;
  }
  if (range) {
    headers["content-range"] = `bytes ${range.start}-${range.end}/${info.size}`;
    headers["content-length"] = range.end - range.start + 1;
    res.writeHead(206, headers);
  } else {
    headers["content-length"] = info.size;
    res.writeHead(200, headers);
  }
  if (req.method === "HEAD" || info.size === 0) {
    res.end();
    return;
  }
  try {
    const local = blobs.localPath?.(digest);
    if (local) await sendFileRange(local, res, range?.start ?? 0, range?.end ?? info.size - 1);
    else await pipeline(await blobs.read(digest, range ?? undefined), res);
  } catch {
    // The client went away mid-download (or the file could not be read after the headers went out).
    res.destroy();
  }
}
