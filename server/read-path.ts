import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import type { BlobStore } from "../storage/blobs/store.js";
import type { IndexService, ServedDocument } from "../registry/indexer.js";
import type { PullThroughService } from "../registry/pull-through.js";
import { LxhubError } from "../registry/errors.js";
import { sendError } from "./errors.js";
import { sendFileRange } from "./send-file.js";

/**
 * The public read path on a plain `node:http` handler ahead of express (decisions.md: express
 * is 4–5× slower per request). Serves the index documents from memory and image files from the
 * blob store, with Range, HEAD, ETags (a gzip form has its own), 304s on `If-None-Match` (weak
 * comparison) and, for documents, on `If-Modified-Since`, and genuine 404s. Returns false for any path it
 * does not own, so the caller hands the request on.
 */
export function createReadPath(deps: {
  index: IndexService;
  blobs: BlobStore;
  certPem: string;
  /** > 0: answer file requests with a 302 to a presigned object-store URL valid this long. */
  redirectSeconds?: number;
  /** A pull-through cache: `upstream/…` files not held yet are fetched from the upstream. */
  pullThrough?: PullThroughService;
}) {
  const certBody = Buffer.from(deps.certPem);

  return function handle(req: IncomingMessage, res: ServerResponse): boolean {
    const rel = normalize(req.url ?? "/");
    if (rel === null) return false;
    // meta/1.0/: the LXC download template's index (simplestreams.md §7).
    const isDoc =
      rel.startsWith("streams/") || rel.startsWith(".well-known/lxhub/") || rel.startsWith("meta/");
    const isFile =
      rel.startsWith("images/") || rel.startsWith("blobs/sha256/") || rel.startsWith("upstream/");
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
    if (deps.index.shared) {
      // Replicas: answer from the newest generation committed before this request (registry/indexer.ts `fresh`).
      if (isDoc) {
        void deps.index.fresh().then(() => serve(req, res, rel, true));
        return true;
      }
      if (!rel.startsWith("blobs/sha256/") && !deps.index.generation()?.files.has(rel)) {
        void deps.index.fresh().then(() => serve(req, res, rel, false));
        return true;
      }
    }
    serve(req, res, rel, isDoc);
    return true;
  };

  function serve(req: IncomingMessage, res: ServerResponse, rel: string, isDoc: boolean): void {
    const gen = deps.index.generation();
    if (isDoc) {
      const doc = gen?.documents.get(rel);
      if (!gen || !doc) sendError(res, new LxhubError("NOT_FOUND", `no such document: /${rel}`));
      else sendDocument(req, res, doc, gen.builtAt);
      return;
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
      return;
    }
    const pulled = deps.pullThrough?.owns(rel) ? gen?.files.get(rel) : undefined;
    if (pulled && deps.pullThrough) {
      servePulled(req, res, deps.pullThrough, rel, pulled).catch((err: unknown) => {
        if (res.headersSent) res.destroy();
        else sendError(res, err);
      });
      return;
    }
    sendBlob(req, res, deps.blobs, digest, deps.redirectSeconds ?? 0).catch((err: unknown) =>
      sendError(res, err),
    );
  }

  /**
   * A file of the pull-through cache: served from the store when held (no upstream contact);
   * otherwise fetched once from the upstream (registry/pull-through.ts). A plain GET that starts
   * the fetch gets the bytes as they arrive; a Range or HEAD request, or one arriving while the
   * fetch runs, waits for it and is served from the store.
   */
  async function servePulled(
    req: IncomingMessage,
    res: ServerResponse,
    pt: PullThroughService,
    rel: string,
    blob: { digest: string; size: number },
  ): Promise<void> {
    if (await deps.blobs.stat(blob.digest)) {
      pt.hit();
      return sendBlob(req, res, deps.blobs, blob.digest, deps.redirectSeconds ?? 0);
    }
    pt.miss();
    const etag = `"${blob.digest.slice(7)}"`;
    if (etagMatches(req.headers["if-none-match"], etag)) {
      res.writeHead(304, { etag, "cache-control": IMMUTABLE });
      res.end();
      return;
    }
    const whole = req.method === "GET" && req.headers.range === undefined;
    const how = await pt.fetch(
      rel,
      blob,
      whole
        ? {
            begin: () => {
              res.writeHead(200, { ...fileHeaders(etag), "content-length": blob.size });
              res.flushHeaders();
              return res;
            },
          }
        : undefined,
    );
    if (how === "stored") await sendBlob(req, res, deps.blobs, blob.digest, deps.redirectSeconds ?? 0);
  }
}

/** Content behind a file path never changes (pitfall 19): cache forever. */
const IMMUTABLE = "public, max-age=31536000, immutable";

function fileHeaders(etag: string): Record<string, string | number> {
  return {
    "content-type": "application/octet-stream",
    "accept-ranges": "bytes",
    etag,
    "cache-control": IMMUTABLE,
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

/** The opaque part of an entity tag: `W/"x"` and `"x"` both give `"x"`. */
function opaque(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

/**
 * `If-None-Match` against the selected representation's ETag, with the weak comparison RFC 9110
 * §13.1.2 asks for: `W/"x"` matches `"x"`. A proxy that compresses on the fly marks the tag it
 * passes on as weak; its clients' revalidations must still get a 304.
 */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  const ours = opaque(etag);
  return header.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || opaque(tag) === ours;
  });
}

/**
 * `If-Modified-Since` (RFC 9110 §13.1.3), looked at only when there is no `If-None-Match`: true
 * when the resource has not changed since the given date (HTTP dates have whole seconds).
 */
export function notModifiedSince(header: string | undefined, lastModified: Date): boolean {
  if (!header) return false;
  const since = Date.parse(header);
  return Number.isFinite(since) && Math.floor(lastModified.getTime() / 1000) <= Math.floor(since / 1000);
}

/** The ETag of a document's gzip form: another representation, so another tag (RFC 9110 §8.8.3). */
export function gzipEtag(doc: ServedDocument): string {
  return `"${doc.sha256}-gzip"`;
}

/** Response headers of one representation of a document, built once per document (not per request). */
interface RepresentationHeaders {
  ok: string[];
  notModified: string[];
}
interface DocumentHeaders {
  plain: RepresentationHeaders;
  gzip: RepresentationHeaders;
}
const headerCache = new WeakMap<ServedDocument, DocumentHeaders>();

/** `builtAt` is the time of the generation the document belongs to: its Last-Modified. */
function documentHeaders(doc: ServedDocument, builtAt: Date): DocumentHeaders {
  let h = headerCache.get(doc);
  if (!h) {
    const common = (etag: string) => [
      "etag",
      etag,
      "last-modified",
      builtAt.toUTCString(),
      "vary",
      "Accept-Encoding",
      // Documents change with each publish: caches must revalidate (the ETag makes that cheap).
      "cache-control",
      "no-cache",
    ];
    const plain = common(doc.etag);
    const gzip = common(gzipEtag(doc));
    const type = ["content-type", doc.contentType];
    h = {
      plain: {
        ok: [...type, ...plain, "content-length", String(doc.body.length)],
        notModified: plain,
      },
      gzip: {
        ok: [...type, ...gzip, "content-encoding", "gzip", "content-length", String(doc.gzip.length)],
        notModified: gzip,
      },
    };
    headerCache.set(doc, h);
  }
  return h;
}

/**
 * A 304 answers for the form the client holds: its `If-None-Match` may name either form's tag
 * (a client that cached the identity form and now also accepts gzip still has a fresh copy), and
 * the 304 carries the tag that matched, which tells a cache which stored response to refresh
 * (RFC 9111 §4.3.4). Without `If-None-Match`, `If-Modified-Since` decides for the selected form.
 */
function sendDocument(req: IncomingMessage, res: ServerResponse, doc: ServedDocument, builtAt: Date): void {
  const gzip = acceptsGzip(req);
  const all = documentHeaders(doc, builtAt);
  const inm = req.headers["if-none-match"];
  let fresh: RepresentationHeaders | undefined;
  if (inm !== undefined) {
    if (etagMatches(inm, gzip ? gzipEtag(doc) : doc.etag)) fresh = all[gzip ? "gzip" : "plain"];
    else if (etagMatches(inm, gzip ? doc.etag : gzipEtag(doc))) fresh = all[gzip ? "plain" : "gzip"];
  } else if (notModifiedSince(req.headers["if-modified-since"], builtAt)) {
    fresh = all[gzip ? "gzip" : "plain"];
  }
  if (fresh) {
    res.writeHead(304, fresh.notModified);
    res.end();
    return;
  }
  res.writeHead(200, all[gzip ? "gzip" : "plain"].ok);
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
  redirectSeconds: number,
): Promise<void> {
  const info = await blobs.stat(digest);
  if (!info) throw new LxhubError("NOT_FOUND", `no such blob: ${digest}`);
  const etag = `"${digest.slice(7)}"`;
  const headers = fileHeaders(etag);
  if (etagMatches(req.headers["if-none-match"], etag)) {
    res.writeHead(304, { etag, "cache-control": headers["cache-control"] as string });
    res.end();
    return;
  }
  const url =
    redirectSeconds > 0 && info.size > 0 ? await blobs.presignedUrl?.(digest, redirectSeconds) : null;
  if (url) {
    // The object store serves the bytes (Range included); the client may reuse the answer for
    // a little less than the URL lives.
    res.writeHead(302, {
      location: url,
      "cache-control": `private, max-age=${Math.max(0, Math.floor(redirectSeconds / 2))}`,
      "content-length": 0,
    });
    res.end();
    return;
  }
  // If-Range takes the strong comparison only (RFC 9110 §13.1.5): a weak tag never matches.
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
