import { createHash, randomUUID } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A tiny real HTTP server on 127.0.0.1 speaking the publish API of openapi.yaml (uploads, blobs,
 * versions) with real sha256 checks, plus knobs to drop or stall connections mid-upload.
 * It counts what it received so tests can tell a resumed upload from a restarted one.
 */

export interface UploadServerOptions {
  /** Accepted bearer token; anything else gets 401 UNAUTHORIZED. */
  token?: string;
  /** Once: destroy the connection when a PATCH brings a session to this many bytes. */
  dropAt?: number;
  /** With dropAt: whether the bytes of the cut chunk are kept (openapi says they are). Default true. */
  keepPartial?: boolean;
  /** Once: when a session reaches this many bytes, stop reading and never answer (a hung upload). */
  stallAt?: number;
}

interface Session {
  chunks: Buffer[];
  offset: number;
}

export interface Log {
  method: string;
  path: string;
}

export class UploadServer {
  readonly blobs = new Map<string, Buffer>();
  readonly sessions = new Map<string, Session>();
  readonly versions = new Map<string, { files: Array<{ name: string; ftype: string; digest: string }> }>();
  readonly log: Log[] = [];
  readonly versionBodies: unknown[] = [];
  /** PATCH body bytes received, per session id (including bytes later discarded). */
  readonly received = new Map<string, number>();
  private readonly server: http.Server;
  private dropArmed: boolean;
  private stallArmed: boolean;
  private stallWaiters: Array<() => void> = [];
  stalled = false;

  constructor(private readonly opts: UploadServerOptions = {}) {
    this.dropArmed = opts.dropAt !== undefined;
    this.stallArmed = opts.stallAt !== undefined;
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Resolves once a PATCH has stalled at `stallAt`. */
  whenStalled(): Promise<void> {
    if (this.stalled) return Promise.resolve();
    return new Promise((resolve) => this.stallWaiters.push(resolve));
  }

  count(method: string, prefix: string): number {
    return this.log.filter((l) => l.method === method && l.path.startsWith(prefix)).length;
  }

  totalReceived(): number {
    let n = 0;
    for (const v of this.received.values()) n += v;
    return n;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://x");
    const p = url.pathname;
    const method = req.method ?? "GET";
    this.log.push({ method, path: p });
    const send = (status: number, body?: unknown, headers: Record<string, string> = {}) => {
      const text = body === undefined ? "" : JSON.stringify(body);
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(text),
        ...headers,
      });
      res.end(method === "HEAD" ? undefined : text);
    };
    const error = (status: number, code: string, message: string) =>
      send(status, { error: { code, message } });

    if (p.startsWith("/api/v1/") && req.headers.authorization !== `Bearer ${this.opts.token ?? "good"}`) {
      req.resume();
      return error(401, "UNAUTHORIZED", "missing or invalid token");
    }

    let m: RegExpExecArray | null;
    if (method === "HEAD" && (m = /^\/api\/v1\/blobs\/(sha256:[0-9a-f]{64})$/.exec(p))) {
      const blob = this.blobs.get(m[1] as string);
      res.writeHead(blob ? 200 : 404, { "content-length": blob ? blob.length : 0 });
      return void res.end();
    }
    if (method === "POST" && p === "/api/v1/uploads") {
      req.resume();
      const id = randomUUID();
      this.sessions.set(id, { chunks: [], offset: 0 });
      return send(
        201,
        { id, offset: 0, location: `/api/v1/uploads/${id}` },
        { location: `/api/v1/uploads/${id}` },
      );
    }
    if ((m = /^\/api\/v1\/uploads\/([^/]+)$/.exec(p))) {
      const id = decodeURIComponent(m[1] as string);
      const s = this.sessions.get(id);
      if (!s) {
        req.resume();
        return error(404, "UPLOAD_NOT_FOUND", `no upload ${id}`);
      }
      if (method === "GET") return send(200, { id, offset: s.offset }, { "upload-offset": String(s.offset) });
      if (method === "PATCH") return this.patch(id, s, req, send, error);
      if (method === "PUT") {
        req.resume();
        const all = Buffer.concat(s.chunks);
        const digest = `sha256:${createHash("sha256").update(all).digest("hex")}`;
        this.sessions.delete(id);
        if (digest !== url.searchParams.get("digest"))
          return error(400, "DIGEST_MISMATCH", "digest mismatch");
        this.blobs.set(digest, all);
        return send(201, { digest, size: all.length });
      }
    }
    if (
      method === "PUT" &&
      (m = /^\/api\/v1\/products\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)\/versions\/([^/]+)$/.exec(p))
    ) {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          files: Array<{ name: string; ftype: string; digest: string }>;
        };
        this.versionBodies.push(body);
        for (const f of body.files) {
          if (!this.blobs.has(f.digest)) return error(400, "BLOB_UNKNOWN", `no blob ${f.digest}`);
        }
        const key = m!.slice(1).map(decodeURIComponent).join("/");
        const existed = this.versions.has(key);
        this.versions.set(key, { files: body.files });
        const meta = body.files.find((f) => f.ftype === "lxd.tar.xz");
        const fingerprints: Record<string, string> = {};
        for (const f of body.files) {
          if (f === meta || !meta) continue;
          const h = createHash("sha256");
          h.update(this.blobs.get(meta.digest) as Buffer);
          h.update(this.blobs.get(f.digest) as Buffer);
          fingerprints[f.ftype] = h.digest("hex");
        }
        send(existed ? 200 : 201, { product: key, version: m![5], fingerprints });
      });
      return;
    }
    req.resume();
    error(404, "NOT_FOUND", `no route ${method} ${p}`);
  }

  private patch(
    id: string,
    s: Session,
    req: http.IncomingMessage,
    send: (status: number, body?: unknown, headers?: Record<string, string>) => void,
    error: (status: number, code: string, message: string) => void,
  ): void {
    const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(req.headers["content-range"] ?? "");
    if (range && Number(range[1]) !== s.offset) {
      req.resume();
      return error(416, "UPLOAD_OFFSET_MISMATCH", `offset is ${s.offset}`);
    }
    const chunkStart = s.offset;
    const kept: Buffer[] = [];
    let done = false;
    req.on("data", (c: Buffer) => {
      if (done) return;
      this.received.set(id, (this.received.get(id) ?? 0) + c.length);
      let chunk = c;
      if (this.dropArmed && s.offset + chunk.length >= (this.opts.dropAt as number)) {
        this.dropArmed = false;
        done = true;
        chunk = chunk.subarray(0, (this.opts.dropAt as number) - s.offset);
        // Count only what we keep reading; the rest of this packet is thrown away with the socket.
        this.received.set(id, (this.received.get(id) ?? 0) - (c.length - chunk.length));
        if (this.opts.keepPartial ?? true) {
          s.chunks.push(chunk);
          s.offset += chunk.length;
        } else {
          // Roll back to the chunk start: this server keeps nothing of a broken request.
          s.chunks.splice(s.chunks.length - kept.length, kept.length);
          s.offset = chunkStart;
        }
        req.socket.destroy();
        return;
      }
      if (this.stallArmed && s.offset + chunk.length >= (this.opts.stallAt as number)) {
        this.stallArmed = false;
        done = true;
        chunk = chunk.subarray(0, (this.opts.stallAt as number) - s.offset);
        this.received.set(id, (this.received.get(id) ?? 0) - (c.length - chunk.length));
        s.chunks.push(chunk);
        s.offset += chunk.length;
        req.pause();
        this.stalled = true;
        for (const w of this.stallWaiters.splice(0)) w();
        return;
      }
      s.chunks.push(chunk);
      kept.push(chunk);
      s.offset += chunk.length;
    });
    req.on("end", () => {
      if (!done) send(202, { id, offset: s.offset }, { "upload-offset": String(s.offset) });
    });
  }
}
