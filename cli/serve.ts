import type { Command } from "commander";
import { pino } from "pino";
import { readFileSync } from "node:fs";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { loadConfig, printableConfig, type ConfigFile } from "../server/config.js";
import { startServer } from "../server/app.js";
import { describeCatalogUrl } from "../storage/catalog/catalog.js";
import { describeBlobStore } from "../storage/blobs/open.js";
import { dataPath } from "../storage/layout.js";

/** `lxhub serve`: the image server on its embedded default (SQLite + a data folder). */
export function registerServe(program: Command): void {
  program
    .command("serve")
    .description("serve images over simplestreams and take pushes over the publish API")
    .option(
      "--config <file>",
      "YAML file of settings, keyed by these flags' names without -- (e.g. gc-interval: 6h); flags and $LXHUB_* win over it (or $LXHUB_CONFIG)",
    )
    .option("--print-config", "print the effective settings (passwords in URLs redacted) and exit")
    .option(
      "--log-format <format>",
      "json (default: one JSON object per line, for log collectors) or pretty (for a terminal) (or $LXHUB_LOG_FORMAT)",
    )
    .option("--data <dir>", "data folder (default ./lxhub-data, or $LXHUB_DATA)")
    .option(
      "--db <url>",
      "catalog: postgres://user@host:port/db for replicas, sqlite:FILE (default <data>/catalog.sqlite, or $LXHUB_DB)",
    )
    .option(
      "--blobs <url>",
      "blob store: s3://BUCKET/PREFIX?endpoint=URL&region=R&forcePathStyle=true, file://DIR (default <data>/blobs, or $LXHUB_BLOBS)",
    )
    .option(
      "--blobs-redirect <seconds>",
      "answer image file requests with a 302 to a presigned object-store URL valid this long; 0 streams them (default 0, or $LXHUB_BLOBS_REDIRECT)",
    )
    .option(
      "--listen <host:port>",
      "plain HTTP listener, '' to disable (default 0.0.0.0:8080, or $LXHUB_LISTEN)",
    )
    .option(
      "--tls-listen <host:port>",
      "HTTPS listener, TLS 1.3 (default 0.0.0.0:8443, or $LXHUB_TLS_LISTEN)",
    )
    .option("--tls-cert <file>", "PEM certificate (default: self-signed, made on first start)")
    .option("--tls-key <file>", "PEM private key for --tls-cert")
    .option(
      "--allow-insecure-writes",
      "accept tokens over plain HTTP (loopback, or behind a TLS-terminating proxy; or $LXHUB_ALLOW_INSECURE_WRITES=1)",
    )
    .option(
      "--headers-timeout <seconds>",
      "time to receive a request's headers (default 30, or $LXHUB_HEADERS_TIMEOUT)",
    )
    .option(
      "--request-timeout <seconds>",
      "time to receive a request body; authenticated uploads making progress are exempt (default 120, or $LXHUB_REQUEST_TIMEOUT)",
    )
    .option(
      "--idle-timeout <seconds>",
      "longest gap without a byte of a request body, uploads included (default 60, or $LXHUB_IDLE_TIMEOUT)",
    )
    .option(
      "--max-uploads-per-token <n>",
      "open upload sessions one token may hold (default 16, or $LXHUB_MAX_UPLOADS_PER_TOKEN)",
    )
    .option(
      "--max-upload-bytes-per-token <bytes>",
      "bytes one token may hold in open upload sessions (default 128 GiB, or $LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN)",
    )
    .option(
      "--public-url <url>",
      "base URL the web catalog's copy-paste lines name, e.g. https://images.example.org (default: the request's scheme and Host header, or $LXHUB_PUBLIC_URL)",
    )
    .option(
      "--openpgp-key <file>",
      "armored OpenPGP private key (unprotected, v4) signing the .sjson/.json.gpg documents (default: made on first start, or $LXHUB_OPENPGP_KEY)",
    )
    .option(
      "--upstream <url>",
      "be a pull-through cache of this simplestreams server: list its images beside ours, fetch each file on first request (or $LXHUB_UPSTREAM)",
    )
    .option(
      "--upstream-key <thumbprint>",
      "the upstream lxhub's signing key (JWK thumbprint); its signed statement is then required (or $LXHUB_UPSTREAM_KEY)",
    )
    .option(
      "--upstream-no-signature",
      "the upstream is a plain simplestreams server: no statement checked, file sha256 still checked (or $LXHUB_UPSTREAM_NO_SIGNATURE=1)",
    )
    .option("--upstream-ca <file>", "PEM to trust for the upstream's HTTPS (or $LXHUB_UPSTREAM_CA)")
    .option(
      "--upstream-refresh <seconds>",
      "seconds between refreshes of the upstream's products (default 300, or $LXHUB_UPSTREAM_REFRESH)",
    )
    .option(
      "--upstream-timeout <seconds>",
      "an upstream request with no byte moving this long fails; a client waiting on a missing file gets 504 (default 30, or $LXHUB_UPSTREAM_TIMEOUT)",
    )
    .option(
      "--retain <policy>",
      "retention applied after each publish: PATTERN:keep=N,younger-than=DURATION, e.g. 'debian/*:keep=3' (repeatable; first match wins; or $LXHUB_RETAIN, ';'-separated)",
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option(
      "--no-deltas",
      "do not make deltas from the previous version after each publish (or $LXHUB_DELTAS=0)",
    )
    .option(
      "--gc-interval <duration>",
      "time between garbage collections of unreferenced blobs, e.g. 6h; 0 = never (default 24h, or $LXHUB_GC_INTERVAL)",
    )
    .option(
      "--gc-grace <duration>",
      "files of retired versions stay downloadable this long, and blobs used this recently are kept (default 24h, or $LXHUB_GC_GRACE)",
    )
    .option(
      "--mirrors <file>",
      "YAML file of upstreams to mirror on a schedule (see README, lxhub serve --mirrors; or $LXHUB_MIRRORS)",
    )
    .action(
      async (o: {
        config?: string;
        logFormat?: string;
        printConfig?: boolean;
        mirrors?: string;
        retain: string[];
        gcInterval?: string;
        deltas?: boolean;
        gcGrace?: string;
        data?: string;
        db?: string;
        blobs?: string;
        blobsRedirect?: string;
        listen?: string;
        tlsListen?: string;
        tlsCert?: string;
        tlsKey?: string;
        allowInsecureWrites?: boolean;
        headersTimeout?: string;
        requestTimeout?: string;
        idleTimeout?: string;
        maxUploadsPerToken?: string;
        maxUploadBytesPerToken?: string;
        openpgpKey?: string;
        publicUrl?: string;
        upstream?: string;
        upstreamKey?: string;
        upstreamNoSignature?: boolean;
        upstreamCa?: string;
        upstreamRefresh?: string;
        upstreamTimeout?: string;
      }) => {
        const config = loadConfig(
          {
            dataDir: o.data,
            db: o.db,
            blobs: o.blobs,
            blobsRedirectSeconds: o.blobsRedirect,
            listen: o.listen,
            tlsListen: o.tlsListen,
            tlsCert: o.tlsCert,
            tlsKey: o.tlsKey,
            allowInsecureWrites: o.allowInsecureWrites,
            headersTimeoutSeconds: o.headersTimeout,
            requestTimeoutSeconds: o.requestTimeout,
            idleTimeoutSeconds: o.idleTimeout,
            maxUploadsPerToken: o.maxUploadsPerToken,
            maxUploadBytesPerToken: o.maxUploadBytesPerToken,
            openpgpKey: o.openpgpKey,
            publicUrl: o.publicUrl,
            upstream: o.upstream,
            upstreamKey: o.upstreamKey,
            upstreamNoSignature: o.upstreamNoSignature,
            upstreamCa: o.upstreamCa,
            upstreamRefreshSeconds: o.upstreamRefresh,
            upstreamTimeoutSeconds: o.upstreamTimeout,
            retain: o.retain,
            deltas: o.deltas === false ? false : undefined,
            gcIntervalSeconds: o.gcInterval,
            gcGraceSeconds: o.gcGrace,
            mirrors: o.mirrors,
            logFormat: o.logFormat,
          },
          process.env,
          readConfigFile(o.config ?? (process.env.LXHUB_CONFIG || undefined)),
        );
        if (o.printConfig) {
          process.stdout.write(stringifyYaml(printableConfig(config)));
          return;
        }
        const upstream = config.upstream
          ? // The client's HTTP code is loaded only for a pull-through cache (main.ts: lazy groups).
            new (await import("../client/upstream-source.js")).HttpUpstreamSource({
              url: config.upstream,
              key: config.upstreamKey ?? null,
              caFile: config.upstreamCa,
              stateDir: dataPath(config.dataDir, { kind: "upstreamState" }),
              stallMs: config.upstreamTimeoutSeconds * 1000,
            })
          : undefined;
        const mirrorsFile = config.mirrors;
        // The client's mirror code is loaded only for a server that mirrors (main.ts: lazy groups).
        const schedule = mirrorsFile ? await import("./mirror-schedule.js") : null;
        const mirrors = schedule && mirrorsFile ? schedule.loadMirrorsFile(mirrorsFile) : [];
        // Asynchronous, buffered log writes: a synchronous write per request would cap the read path.
        // `pretty` turns the same JSON lines into text for a terminal (pino-pretty, as a stream).
        const dest =
          config.logFormat === "pretty"
            ? (await import("pino-pretty")).default({
                colorize: process.stdout.isTTY,
                translateTime: "SYS:HH:MM:ss",
                singleLine: true,
              })
            : pino.destination({ sync: false });
        const log = pino({ base: undefined }, dest);
        const s = await startServer(config, log, (line) => dest.write(line), upstream);
        log.info({
          event: "listening",
          http: s.httpUrl,
          https: s.httpsUrl,
          dataDir: config.dataDir,
          catalog: config.db ? describeCatalogUrl(config.db) : "sqlite (data folder)",
          blobs: describeBlobStore(config.blobs, config.dataDir),
          certFile: s.tls?.certFile ?? null,
          certFingerprint: s.tls?.fingerprint ?? null,
          signingKey: s.registry.keyring.active().kid,
          openpgpFingerprint: s.registry.openpgp.fingerprint,
          serial: s.registry.index.generation()?.serial,
          upstream: upstream?.label ?? null,
          mirrors: mirrors.map((m) => m.name),
        });
        if (s.httpsUrl && s.tls) {
          const url = s.httpsUrl.replace("0.0.0.0", "localhost").replace("[::]", "localhost");
          process.stderr.write(
            [
              `lxhub serving ${config.dataDir}`,
              `  https: ${s.httpsUrl} (TLS 1.3)${s.httpUrl ? `   http: ${s.httpUrl}` : ""}`,
              `  certificate: ${s.tls.certFile}`,
              `  sha256 fingerprint: ${s.tls.fingerprint}`,
              `add it to lxc (pin the certificate, then add the remote):`,
              `  mkdir -p ~/.config/lxc/servercerts && cp ${s.tls.certFile} ~/.config/lxc/servercerts/lxhub.crt`,
              `  lxc remote add lxhub ${url} --protocol=simplestreams --public`,
              `index signing key (JWK thumbprint): ${s.registry.keyring.active().kid}`,
              `  lxhub remote add lxhub ${url} --key ${s.registry.keyring.active().kid} --ca ${s.tls.certFile}`,
              `OpenPGP key of the .sjson documents (sstream-query --keyring): ${s.registry.openpgp.fingerprint}`,
              "",
            ].join("\n"),
          );
        }
        const scheduler = schedule
          ? new schedule.MirrorScheduler(s.registry, mirrors, { dataDir: config.dataDir, log })
          : null;
        scheduler?.start();
        const stop = (signal: string) => {
          log.info({ event: "stopping", signal });
          Promise.resolve(scheduler?.stop())
            .then(() => s.close())
            .then(
              () => process.exit(0),
              () => process.exit(1),
            );
        };
        // SIGHUP (systemctl reload): read the signing keys again and re-sign now, e.g. after
        // `lxhub key rotate` on this data folder (registry/keys.ts).
        process.on("SIGHUP", () => {
          s.registry.index.rebuild().then(
            (g) =>
              log.info({ event: "resigned", serial: g.serial, signingKey: s.registry.keyring.active().kid }),
            (err: unknown) => log.error({ err }, "re-signing failed"),
          );
        });
        process.once("SIGTERM", () => stop("SIGTERM"));
        process.once("SIGINT", () => stop("SIGINT"));
      },
    );
}

/** The `--config` file as settings by name; a file that is not a YAML mapping is refused, naming it. */
function readConfigFile(file: string | undefined): ConfigFile | undefined {
  if (!file) return undefined;
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`invalid configuration: --config ${file}: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return { path: file, values: {} };
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new Error(`invalid configuration: --config ${file}: not a mapping of settings (key: value)`);
  }
  return { path: file, values: doc as Record<string, unknown> };
}
