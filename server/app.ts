import http from "node:http";
import https from "node:https";
import net from "node:net";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { pino, type Logger } from "pino";
import { openRegistry, type Registry } from "../registry/registry.js";
import { dataPath } from "../storage/layout.js";
import { LxhubError } from "../registry/errors.js";
import { createApi } from "./api.js";
import { createMetrics } from "./metrics.js";
import { parsePolicy } from "../registry/retention.js";
import { productTarget } from "../registry/paths.js";
import type { ServerConfig } from "./config.js";
import { splitHostPort } from "./config.js";
import { createReadPath } from "./read-path.js";
import { accessLogger, type LineSink } from "./access-log.js";
import { sendError } from "./errors.js";
import { closeIfBodyUnread, guardBody, REQUEST_CUT, type MayOutlast } from "./request-body.js";
import { allows } from "../registry/tokens.js";
import { loadOrCreateTls, type TlsMaterial } from "./tls.js";
import type { UpstreamSource } from "../registry/pull-through.js";

/** How often a server looks for key changes made by `lxhub key rotate|retire` (registry/keys.ts). */
const KEY_CHECK_MS = 60_000;

export interface RunningServer {
  registry: Registry;
  tls: TlsMaterial | null;
  httpUrl: string | null;
  httpsUrl: string | null;
  log: Logger;
  close(): Promise<void>;
}

function urlOf(scheme: string, addr: AddressInfo): string {
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return `${scheme}://${host}:${addr.port}`;
}

function listen(server: net.Server, hostPort: string): Promise<AddressInfo> {
  const { host, port } = splitHostPort(hostPort);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Error codes that say the client went away (or was cut off) while its request was read. */
const CLIENT_GONE_CODES = new Set(["ECONNRESET", "EPIPE", "ERR_STREAM_PREMATURE_CLOSE", REQUEST_CUT]);

/**
 * An error that only says the client dropped its connection mid-request (or was cut by a
 * timeout): logged as an info event, not as a server error. body-parser reports it as
 * `request.aborted`.
 */
export function isClientGone(err: unknown): boolean {
  const e = err as { code?: unknown; type?: unknown } | null;
  return (typeof e?.code === "string" && CLIENT_GONE_CODES.has(e.code)) || e?.type === "request.aborted";
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const UPLOAD_URL_RE = /^\/api\/v1\/uploads\/[^/?]+(?:\?|$)/;

const INSECURE_MESSAGE =
  "this request carries a token over plain HTTP, where anyone on the way can read it; " +
  "use the server's https:// address, or start the server with --allow-insecure-writes " +
  "(LXHUB_ALLOW_INSECURE_WRITES=1) when it listens on loopback or behind a proxy that terminates TLS";

/**
 * A write (any method but GET, HEAD, OPTIONS) that reaches the API with an `Authorization` header
 * on a connection that is not TLS: the plain listener, or plain HTTP on the TLS port (the
 * first-byte sniff below hands those to a plain server). Reads are left alone: the public read
 * path never looks at tokens, and a bodiless HEAD refusal could not say why.
 */
export function carriesTokenInClear(req: http.IncomingMessage): boolean {
  return (
    req.headers.authorization !== undefined &&
    req.method !== "GET" &&
    req.method !== "HEAD" &&
    req.method !== "OPTIONS" &&
    (req.socket as Partial<TLSSocket>).encrypted !== true
  );
}

/**
 * Whether the path decodes as percent-encoded UTF-8. Overlong forms (`%c0%ae`) and lone bytes
 * (`%ff`) do not; the API's router would fail on them with an error of its own (a 500 at its
 * error boundary), so they are answered 400 before it.
 */
export function decodablePath(url: string): boolean {
  const q = url.indexOf("?");
  try {
    decodeURIComponent(q >= 0 ? url.slice(0, q) : url);
    return true;
  } catch {
    return false;
  }
}

/**
 * Compose and start the server: registry services, the read path ahead of the express API,
 * a plain HTTP listener and a TLS 1.3 listener that also answers plain HTTP on the same port
 * (LXD asks for every image file over http:// on the HTTPS port first, simplestreams.md §1.6:
 * it gets the same bytes at once instead of a hanging handshake).
 */
export async function startServer(
  config: ServerConfig,
  log: Logger = pino(),
  /** Access-log lines (`bytes` counts headers too); default: standard output. */
  accessSink: LineSink = (line) => process.stdout.write(line),
  /** The upstream of a pull-through cache (`--upstream`; cli/serve.ts makes it over HTTP). */
  upstream?: UpstreamSource,
): Promise<RunningServer> {
  const registry = await openRegistry({
    ...config,
    pullThrough: upstream && {
      source: upstream,
      refreshSeconds: config.upstreamRefreshSeconds,
      onFailure: (f) =>
        log.warn(
          { event: "upstream-failure", upstream: upstream.label, kind: f.kind, suppressed: f.suppressed },
          f.message,
        ),
      onRefresh: (r) => log.info({ event: "upstream-refreshed", upstream: upstream.label, ...r }),
    },
    retention: config.retain.map(parsePolicy),
    onRetentionError: (err) => log.error({ event: "retention-failed", err: errorText(err) }),
    onDeltaUnavailable: () =>
      log.warn(
        { event: "deltas-off" },
        "xdelta3 is not installed (Debian package xdelta3): no deltas are made",
      ),
    onDelta: (key, version, outcome) =>
      log.info({ event: "delta", product: productTarget(key), version, ...outcome }),
    onDeltaError: (key, version, err) =>
      log.error({ event: "delta-failed", product: productTarget(key), version, err: errorText(err) }),
    onProblem: (problem) =>
      log.error(
        { event: "catalog-problem", problem },
        "a catalog record breaks a rule and is left out of the documents",
      ),
    onSyncError: (err) =>
      log.error(
        { event: "catalog-unreachable", err: err.message },
        "cannot follow the shared catalog; serving the documents already loaded",
      ),
  });
  await registry.index.rebuild();
  registry.index.follow();
  registry.pullThrough?.start();
  const readPath = (certPem: string) =>
    createReadPath({
      index: registry.index,
      blobs: registry.blobs,
      pullThrough: registry.pullThrough,
      certPem,
      redirectSeconds: config.blobsRedirectSeconds,
      publicUrl: config.publicUrl,
    });
  const metrics = createMetrics({
    mirrors: registry.mirrors,
    pullThrough: registry.pullThrough,
    stats: registry.stats,
    index: registry.index,
    statementTtlSeconds: config.statementTtlSeconds,
  });
  const api = createApi({
    ...registry,
    metrics,
    gcGraceSeconds: config.gcGraceSeconds,
    onInternalError: (err) => {
      if (isClientGone(err)) log.info({ event: "client-gone", reason: errorText(err) });
      else log.error({ err }, "internal error");
    },
  });

  let tls: TlsMaterial | null = null;
  if (config.tlsListen !== "") {
    tls = await loadOrCreateTls({
      certFile: config.tlsCert ?? dataPath(config.dataDir, { kind: "tlsCert" }),
      keyFile: config.tlsKey ?? dataPath(config.dataDir, { kind: "tlsKey" }),
      generate: config.tlsCert === undefined,
    });
  }
  const read = readPath(tls?.cert ?? "");

  const logRequest = accessLogger(accessSink, metrics.observeRequest);
  const headersMs = config.headersTimeoutSeconds * 1000;
  const bodyLimits = {
    requestMs: config.requestTimeoutSeconds * 1000,
    idleMs: config.idleTimeoutSeconds * 1000,
  };
  /** An upload's bytes (PATCH, or PUT with a last chunk) sent with a valid token that may push. */
  const mayOutlast: MayOutlast = async (req) => {
    if ((req.method !== "PATCH" && req.method !== "PUT") || !UPLOAD_URL_RE.test(req.url ?? "")) return false;
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
    if (bearer === undefined) return false;
    return allows((await registry.tokens.verify(bearer)).scopes, "push", "*");
  };
  const handler: http.RequestListener = (req, res) => {
    logRequest(req, res);
    guardBody(req, res, bodyLimits, mayOutlast, (why) =>
      log.warn({ event: "request-cut", method: req.method, url: req.url, why }),
    );
    closeIfBodyUnread(req, res);
    if (read(req, res)) return;
    if (!decodablePath(req.url ?? "/")) {
      sendError(res, new LxhubError("INVALID_NAME", "the request path is not valid percent-encoded UTF-8"));
      return;
    }
    if (!config.allowInsecureWrites && carriesTokenInClear(req)) {
      sendError(res, new LxhubError("INSECURE_TRANSPORT", INSECURE_MESSAGE));
      return;
    }
    api(req, res);
  };
  const serverOpts: http.ServerOptions = {
    // Bodies are bounded by guardBody, which can spare an authenticated upload making progress.
    requestTimeout: 0,
    headersTimeout: headersMs,
    // How often Node looks for connections past headersTimeout.
    connectionsCheckingInterval: Math.min(30_000, Math.max(50, headersMs / 4)),
    keepAliveTimeout: 5_000,
  };
  const servers: net.Server[] = [];
  let httpUrl: string | null = null;
  let httpsUrl: string | null = null;

  if (config.listen !== "") {
    const plain = http.createServer(serverOpts, handler);
    servers.push(plain);
    httpUrl = urlOf("http", await listen(plain, config.listen));
  }
  if (tls) {
    const plainOnTls = http.createServer(serverOpts, handler);
    const secure = https.createServer(
      { ...serverOpts, cert: tls.cert, key: tls.key, minVersion: "TLSv1.3", handshakeTimeout: headersMs },
      handler,
    );
    // Sniff the first byte: 0x16 opens a TLS handshake, anything else is plain HTTP.
    const front = net.createServer({ pauseOnConnect: false }, (socket) => {
      socket.once("data", (first: Buffer) => {
        // From here on the HTTP(S) server's own limits apply (headers, handshake, body).
        socket.setTimeout(0);
        socket.pause();
        socket.unshift(first);
        (first[0] === 0x16 ? secure : plainOnTls).emit("connection", socket);
        process.nextTick(() => socket.resume());
      });
      socket.on("error", () => socket.destroy());
      // A connection that never says its first byte is not kept longer than its headers may take.
      socket.setTimeout(headersMs, () => socket.destroy());
    });
    servers.push(front, plainOnTls, secure);
    httpsUrl = urlOf("https", await listen(front, config.tlsListen));
  }

  const timers = [
    setInterval(() => {
      registry.uploads.sweep().catch((err: unknown) => log.error({ err }, "upload sweep failed"));
    }, 10 * 60_000),
    setInterval(
      () => {
        // Re-sign once the generation served is a quarter of the statement's lifetime old; with
        // replicas the first one due does it and the others load its generation.
        registry.index
          .resignIfDue((config.statementTtlSeconds / 4) * 1000)
          .catch((err: unknown) => log.error({ err }, "re-signing failed"));
      },
      Math.max(30, config.statementTtlSeconds / 8) * 1000,
    ),
    setInterval(() => {
      // A rotation or retirement made by `lxhub key` from another process: signed with within a
      // minute (the check re-reads the key store; nothing is signed when it did not change).
      registry.index
        .resignIfDue(Infinity)
        .catch((err: unknown) => log.error({ err }, "re-signing after a key change failed"));
    }, KEY_CHECK_MS),
  ];
  if (config.gcIntervalSeconds > 0) {
    // One replica at a time collects; the others skip their turn.
    timers.push(
      setInterval(() => {
        registry.catalog.locks
          .tryLock("lxhub:gc", () => registry.gc.run({ graceSeconds: config.gcGraceSeconds }))
          .then(
            (r) => {
              if (!r.held)
                log.info({
                  event: "gc",
                  scanned: r.value.scanned,
                  freed: r.value.freed.length,
                  freedBytes: r.value.freedBytes,
                });
            },
            (err: unknown) => log.error({ event: "gc-failed", err: errorText(err) }),
          );
      }, config.gcIntervalSeconds * 1000),
    );
  }
  for (const t of timers) t.unref();

  return {
    registry,
    tls,
    httpUrl,
    httpsUrl,
    log,
    async close() {
      for (const t of timers) clearInterval(t);
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              if (!s.listening) return resolve();
              s.close(() => resolve());
              (s as http.Server).closeAllConnections?.();
            }),
        ),
      );
      await registry.close();
    },
  };
}
