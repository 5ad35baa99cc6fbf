import { request } from "node:http";
import net from "node:net";
import { checkAnswer } from "./openapi.js";

/** What a raw request saw: the answer's head and how many body bytes the client got rid of. */
export interface RawOutcome {
  status: number;
  headers: Record<string, string>;
  /** Body bytes the client wrote before the server answered and closed (an upper bound of what it read). */
  bodyBytesWritten: number;
  /** The answer's body as text (as far as it arrived). */
  body: string;
  /** From connecting until the answer's head arrived. */
  ms: number;
  /** Whether the server closed the connection within `closeWithinMs` of answering (default 2 s with a body, else 0). */
  closed: boolean;
}

/**
 * Send a request head by hand over a plain socket (so the path goes out exactly as given, and
 * the body can be declared larger than what is sent), then stream zeros as the body until the
 * server answers or `declared` bytes went out. The answer is checked against openapi.yaml.
 */
export function rawRequest(
  base: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; declared?: number; closeWithinMs?: number } = {},
): Promise<RawOutcome> {
  const url = new URL(base);
  const declared = opts.declared ?? 0;
  const head =
    `${method} ${path} HTTP/1.1\r\nhost: ${url.host}\r\n` +
    Object.entries({ ...(declared ? { "content-length": String(declared) } : {}), ...opts.headers })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join("") +
    "\r\n";
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = net.connect(Number(url.port), url.hostname);
    const chunk = Buffer.alloc(64 * 1024);
    let received = "";
    let answered: Omit<RawOutcome, "closed" | "body"> | null = null;
    let bodyStart = 0;
    let headBytes = 0;
    let sent = 0;
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (answered) {
        const body = received.slice(bodyStart);
        let json: unknown = null;
        try {
          json = body ? JSON.parse(body) : null;
        } catch {
          json = null;
        }
        try {
          checkAnswer(method, path, {
            status: answered.status,
            contentType: answered.headers["content-type"] ?? null,
            json,
          });
        } catch (err) {
          reject(err as Error);
          return;
        }
        resolve({ ...answered, closed, body });
      } else reject(new Error(`no answer to ${method} ${path}: ${JSON.stringify(received.slice(0, 200))}`));
    };
    const timer = setTimeout(() => finish(false), 10_000);
    const pump = () => {
      while (!answered && sent < declared && !socket.destroyed) {
        const n = Math.min(chunk.length, declared - sent);
        sent += n;
        if (!socket.write(chunk.subarray(0, n))) {
          socket.once("drain", pump);
          return;
        }
      }
    };
    socket.on("connect", () => {
      socket.write(head);
      headBytes = Buffer.byteLength(head);
      pump();
    });
    socket.on("data", (d: Buffer) => {
      received += d.toString("latin1");
      if (answered) return;
      const end = received.indexOf("\r\n\r\n");
      if (end < 0) return;
      bodyStart = end + 4;
      const lines = received.slice(0, end).split("\r\n");
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(":");
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      answered = {
        status: Number(lines[0]?.split(" ")[1]),
        headers,
        bodyBytesWritten: Math.max(0, socket.bytesWritten - headBytes),
        ms: performance.now() - started,
      };
      clearTimeout(timer);
      // Give the body a moment to arrive, and the server time to close.
      setTimeout(() => finish(false), opts.closeWithinMs ?? (declared ? 2000 : 50));
    });
    socket.on("error", () => finish(answered !== null));
    socket.on("close", () => finish(true));
  });
}

/** A plain GET's answer, body undecoded. */
export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * A GET through node:http, which (unlike fetch) neither asks for nor decodes gzip by itself and
 * sends any `host` header it is given.
 */
export function rawGet(url: string, headers: Record<string, string> = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    request(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    })
      .on("error", reject)
      .end();
  });
}
