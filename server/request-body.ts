/**
 * Guards over a request's body, applied to every request by server/app.ts: how long it may take
 * to arrive (guardBody), and closing the connection after an answer given before it was all read
 * (closeIfBodyUnread).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { LxhubError } from "../registry/errors.js";
import { sendError } from "./errors.js";

/**
 * How long a request may take to arrive (docs/limits.md). Node's own `headersTimeout` bounds the
 * headers; Node's `requestTimeout` is off, because it cannot spare one kind of request: this
 * watchdog bounds the body instead, so that an authenticated upload that keeps making progress
 * may take as long as it needs while every other body, and every stalled one, is cut.
 */
export interface BodyLimits {
  /** A whole request body must have arrived this long after the request started. */
  requestMs: number;
  /** Longest gap without a byte while a body is still arriving (uploads included). */
  idleMs: number;
}

/**
 * Whether a request may take longer than `requestMs` (still bound by `idleMs`). Asked at most once
 * per request, and only once it has run past `requestMs`; until it answers the request runs on.
 */
export type MayOutlast = (req: IncomingMessage) => Promise<boolean>;

/** `code` of the error a cut request's body stream fails with. */
export const REQUEST_CUT = "LXHUB_REQUEST_CUT";

/** A request announces a body by `Transfer-Encoding` or a non-zero `Content-Length` (RFC 9112 §6.3). */
function announcesBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0");
}

function seconds(ms: number): string {
  return `${ms / 1000} s`;
}

/**
 * Watch one request's body arriving. Progress is the socket's `bytesRead` (the HTTP parser takes the
 * bytes below JavaScript, so no `data` event is seen): a handler that stops reading stops the
 * socket reading too, and is then cut like a client that stopped sending. Cutting answers
 * 408 (when no answer was started), then destroys the request with a REQUEST_CUT error and so the
 * socket; the bytes an upload received before are kept (BlobStore.append), so the client can resume.
 */
export function guardBody(
  req: IncomingMessage,
  res: ServerResponse,
  limits: BodyLimits,
  mayOutlast: MayOutlast,
  onCut: (why: string) => void,
): void {
  if (!announcesBody(req)) return;
  const socket = req.socket;
  const started = Date.now();
  let lastBytes = socket.bytesRead;
  let lastProgress = started;
  /** undefined: not asked yet; null: being asked. */
  let outlasts: boolean | null | undefined;

  const stop = (): void => {
    clearInterval(timer);
    socket.off("close", stop);
  };
  const cut = (why: string): void => {
    stop();
    onCut(why);
    // Ends the handler's read of the body with an error (an upload keeps what it received), and
    // closes the socket. Destroying the socket alone would leave a request whose answer was already
    // sent waiting forever for the rest of its body.
    const abort = (): void => {
      req.destroy(Object.assign(new Error(`request cut: ${why}`), { code: REQUEST_CUT }));
    };
    if (!res.headersSent) {
      res.once("finish", abort);
      sendError(res, new LxhubError("REQUEST_TIMEOUT", `the request was cut: ${why}`));
    } else {
      abort();
    }
  };
  const check = (): void => {
    if (req.complete || socket.destroyed) return stop();
    const now = Date.now();
    if (socket.bytesRead !== lastBytes) {
      lastBytes = socket.bytesRead;
      lastProgress = now;
    }
    if (now - lastProgress >= limits.idleMs) {
      return cut(`no byte of the request body for ${seconds(limits.idleMs)} (idle timeout)`);
    }
    if (now - started < limits.requestMs || outlasts === true || outlasts === null) return;
    if (outlasts === false) {
      return cut(`the request body took longer than ${seconds(limits.requestMs)} (request timeout)`);
    }
    outlasts = null;
    mayOutlast(req).then(
      (yes) => (outlasts = yes),
      () => (outlasts = false),
    );
  };
  // A quarter of the shorter limit: a stalled body is cut at most 25% after its limit.
  const timer = setInterval(check, Math.max(25, Math.min(limits.idleMs, limits.requestMs) / 4));
  socket.on("close", stop);
}

/** How long a connection whose request body was refused stays half-closed before it is destroyed. */
const LINGER_MS = 500;

/**
 * An answer that starts while the request body is still arriving (401, 403, 404, 405, 413, a quota,
 * a full disk, a wrong offset, a cut) says `Connection: close` and the rest of the body is not read:
 * a refused 1 GiB upload costs a few kilobytes, not 1 GiB of reading (Node's default drains it
 * to keep the connection alive). Once the answer is out the socket stops reading and stays
 * half-closed for LINGER_MS before it is destroyed, so that a client still sending its body reads
 * the answer instead of a connection reset (Go's net/http does the same).
 */
export function closeIfBodyUnread(req: IncomingMessage, res: ServerResponse): void {
  if (!announcesBody(req)) return;
  const writeHead = res.writeHead;
  res.writeHead = function (this: ServerResponse, ...args: Parameters<typeof writeHead>) {
    if (!req.complete) {
      this.setHeader("connection", "close");
      const socket = req.socket;
      this.once("finish", () => {
        // Node ends the socket now and would destroy it as soon as the FIN is out (destroySoon).
        socket.removeListener("finish", socket.destroy);
        setImmediate(() => socket.pause());
        setTimeout(() => socket.destroy(), LINGER_MS).unref();
      });
    }
    return writeHead.apply(this, args);
  } as typeof writeHead;
}
