import path from "node:path";
import { z } from "zod";
import { UPLOAD_QUOTA_DEFAULTS } from "../registry/uploads.js";
import { parseAge, parsePolicy } from "../registry/retention.js";

/**
 * Server configuration: one schema with defaults; flags > environment > defaults. A wrong value
 * fails at start-up with the setting's name and why.
 */
const hostPort = z
  .string()
  .regex(
    /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/,
    "must be HOST:PORT (e.g. 127.0.0.1:8080, [::]:8443)",
  );

export const configSchema = z
  .object({
    /** Data folder: catalog, blobs, keys, certificate (default ./lxhub-data; env LXHUB_DATA). */
    dataDir: z.string().min(1),
    /**
     * Catalog (env LXHUB_DB): `postgres://user@host:port/db` when several replicas share the
     * work, `sqlite:FILE`, or unset for `<data>/catalog.sqlite`.
     */
    db: z.string().min(1).optional(),
    /**
     * Blob store (env LXHUB_BLOBS): `s3://BUCKET/PREFIX?endpoint=…&region=…&forcePathStyle=true`
     * (credentials from the AWS SDK's chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, …),
     * `file://DIR`, or unset for `<data>/blobs/`.
     */
    blobs: z.string().min(1).optional(),
    /**
     * Answer image file requests with a 302 to a presigned URL of the object store, valid this
     * many seconds (env LXHUB_BLOBS_REDIRECT); 0 (default) streams the bytes through lxhub.
     * Index documents are always served by lxhub.
     */
    blobsRedirectSeconds: z
      .number()
      .int()
      .min(0)
      .max(7 * 86400),
    /** Plain HTTP listener (env LXHUB_LISTEN); "" disables it. */
    listen: z.union([hostPort, z.literal("")]),
    /** HTTPS listener, TLS 1.3 only (env LXHUB_TLS_LISTEN); "" disables it. Plain HTTP on this port is answered too. */
    tlsListen: z.union([hostPort, z.literal("")]),
    /** PEM certificate and key (env LXHUB_TLS_CERT / LXHUB_TLS_KEY); default: self-signed, kept in the data folder. */
    tlsCert: z.string().optional(),
    tlsKey: z.string().optional(),
    /** Lifetime of the signed statement; it is re-signed at a quarter of it (env LXHUB_STATEMENT_TTL). */
    statementTtlSeconds: z.number().int().min(60),
    /** An upload session untouched this long expires. */
    uploadTtlSeconds: z.number().int().min(60),
    /** Largest blob accepted. */
    maxBlobBytes: z.number().int().positive(),
    /** `iss` of signed statements. */
    issuer: z.string().min(1),
    /**
     * Armored OpenPGP private key (unprotected, v4) that signs the `.sjson` and `.json.gpg`
     * documents (env LXHUB_OPENPGP_KEY); default: one made on first start and kept in the data
     * folder, or in the catalog when replicas share it.
     */
    openpgpKey: z.string().min(1).optional(),
    /**
     * Base URL the web catalog's copy-paste lines name (env LXHUB_PUBLIC_URL), e.g.
     * `https://images.example.org`; default: the request's scheme and Host header.
     */
    publicUrl: z
      .string()
      .regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, "must be an http:// or https:// URL without query")
      .transform((u) => u.replace(/\/+$/, ""))
      .optional(),
    /**
     * Accept requests that carry a token over plain HTTP (env LXHUB_ALLOW_INSECURE_WRITES). Off by
     * default: a token sent in clear can be read on the way; turn it on only for a loopback
     * listener or behind a proxy that terminates TLS.
     */
    allowInsecureWrites: z.boolean(),
    /** Time to receive a request's headers (env LXHUB_HEADERS_TIMEOUT, seconds); then 408 and close. */
    headersTimeoutSeconds: z.number().positive().max(3600),
    /**
     * Time to receive a whole request body (env LXHUB_REQUEST_TIMEOUT, seconds). An authenticated
     * upload (`PATCH`/`PUT /api/v1/uploads/{id}`) is exempt while it keeps making progress.
     */
    requestTimeoutSeconds: z.number().positive().max(86400),
    /** Longest gap without a byte while a request body is being received (env LXHUB_IDLE_TIMEOUT, seconds). */
    idleTimeoutSeconds: z.number().positive().max(3600),
    /** Open upload sessions one token may hold (env LXHUB_MAX_UPLOADS_PER_TOKEN). */
    maxUploadsPerToken: z.number().int().positive(),
    /** Bytes one token may hold in its open upload sessions together (env LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN). */
    maxUploadBytesPerToken: z.number().int().positive(),
    /**
     * Retention policies applied after each publish, `PATTERN:keep=N,younger-than=DURATION`
     * (repeatable flag; env LXHUB_RETAIN, separated by `;`). First match per product wins.
     */
    retain: z.array(
      z.string().superRefine((text, ctx) => {
        try {
          parsePolicy(text);
        } catch (err) {
          ctx.addIssue({ code: "custom", message: (err as Error).message });
        }
      }),
    ),
    /** Make a delta from the previous version after each publish (env LXHUB_DELTAS; needs xdelta3). */
    deltas: z.boolean(),
    /** Seconds between garbage collections (env LXHUB_GC_INTERVAL); 0 turns them off. */
    gcIntervalSeconds: z.number().int().min(0).max(2_000_000),
    /**
     * Grace period (env LXHUB_GC_GRACE): files of a retired or deleted version stay downloadable
     * this long, and a blob used this recently is never collected.
     */
    gcGraceSeconds: z.number().int().min(0),
  })
  .refine((c) => (c.tlsCert === undefined) === (c.tlsKey === undefined), {
    message: "--tls-cert and --tls-key go together",
  })
  .refine((c) => c.listen !== "" || c.tlsListen !== "", {
    message: "at least one of --listen / --tls-listen",
  });

export type ServerConfig = z.infer<typeof configSchema>;

export const DEFAULTS = {
  dataDir: "lxhub-data",
  listen: "0.0.0.0:8080",
  tlsListen: "0.0.0.0:8443",
  statementTtlSeconds: 7 * 86400,
  uploadTtlSeconds: 24 * 3600,
  maxBlobBytes: 64 * 1024 ** 3,
  issuer: "lxhub",
  blobsRedirectSeconds: 0,
  allowInsecureWrites: false,
  headersTimeoutSeconds: 30,
  requestTimeoutSeconds: 120,
  idleTimeoutSeconds: 60,
  maxUploadsPerToken: UPLOAD_QUOTA_DEFAULTS.maxSessionsPerToken,
  maxUploadBytesPerToken: UPLOAD_QUOTA_DEFAULTS.maxSessionBytesPerToken,
  deltas: true,
  gcIntervalSeconds: 24 * 3600,
  gcGraceSeconds: 24 * 3600,
};

/** `1`, `true`, `yes`, `on` (any case) are true; `0`, `false`, `no`, `off` false; empty is unset. */
function envBoolean(v: string | boolean | undefined, name: string): boolean | undefined {
  if (v === undefined || typeof v === "boolean") return v;
  const t = v.trim().toLowerCase();
  if (t === "") return undefined;
  if (["1", "true", "yes", "on"].includes(t)) return true;
  if (["0", "false", "no", "off"].includes(t)) return false;
  throw new Error(`invalid configuration: ${name}: expected true or false, got ${JSON.stringify(v)}`);
}

/** Data folder from a flag, else LXHUB_DATA, else ./lxhub-data (absolute). */
export function resolveDataDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(flag ?? env.LXHUB_DATA ?? DEFAULTS.dataDir);
}

/** Catalog URL from a flag, else LXHUB_DB, else undefined (the data folder's SQLite file). */
export function resolveDb(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  return flag || env.LXHUB_DB || undefined;
}

/** OpenPGP key file from a flag, else LXHUB_OPENPGP_KEY, else undefined (the kept key). */
export function resolveOpenPgpKey(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  return flag || env.LXHUB_OPENPGP_KEY || undefined;
}

/** Blob store URL from a flag, else LXHUB_BLOBS, else undefined (the data folder). */
export function resolveBlobs(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  return flag || env.LXHUB_BLOBS || undefined;
}

/** A duration setting: plain seconds, or `90s`, `15m`, `24h`, `7d`; `0` stays 0. */
function seconds(v: string | number | boolean | undefined, name: string): number | undefined {
  if (v === undefined || typeof v === "number") return v;
  const t = String(v).trim();
  if (/^\d+$/.test(t)) return Number(t);
  try {
    return parseAge(t, name);
  } catch (err) {
    throw new Error(`invalid configuration: ${(err as Error).message}`);
  }
}

export function loadConfig(
  flags: Partial<Record<Exclude<keyof ServerConfig, "retain">, string | number | boolean | undefined>> & {
    retain?: string[];
  },
  env: NodeJS.ProcessEnv = process.env,
): ServerConfig {
  const pick = <T>(flag: T | undefined, envName: string, dflt: T): T =>
    flag ?? (env[envName] as T | undefined) ?? dflt;
  const num = (v: string | number | boolean | undefined): number | undefined =>
    v === undefined ? undefined : Number(v);
  const raw = {
    dataDir: resolveDataDir(flags.dataDir as string | undefined, env),
    db: resolveDb(flags.db as string | undefined, env),
    blobs: resolveBlobs(flags.blobs as string | undefined, env),
    blobsRedirectSeconds: num(
      pick(flags.blobsRedirectSeconds, "LXHUB_BLOBS_REDIRECT", DEFAULTS.blobsRedirectSeconds),
    ),
    listen: pick(flags.listen as string | undefined, "LXHUB_LISTEN", DEFAULTS.listen),
    tlsListen: pick(flags.tlsListen as string | undefined, "LXHUB_TLS_LISTEN", DEFAULTS.tlsListen),
    tlsCert: pick(flags.tlsCert as string | undefined, "LXHUB_TLS_CERT", undefined),
    tlsKey: pick(flags.tlsKey as string | undefined, "LXHUB_TLS_KEY", undefined),
    statementTtlSeconds: num(
      pick(flags.statementTtlSeconds, "LXHUB_STATEMENT_TTL", DEFAULTS.statementTtlSeconds),
    ),
    uploadTtlSeconds: num(pick(flags.uploadTtlSeconds, "LXHUB_UPLOAD_TTL", DEFAULTS.uploadTtlSeconds)),
    maxBlobBytes: num(pick(flags.maxBlobBytes, "LXHUB_MAX_BLOB_BYTES", DEFAULTS.maxBlobBytes)),
    issuer: pick(flags.issuer as string | undefined, "LXHUB_ISSUER", DEFAULTS.issuer),
    openpgpKey: resolveOpenPgpKey(flags.openpgpKey as string | undefined, env),
    publicUrl: pick(flags.publicUrl as string | undefined, "LXHUB_PUBLIC_URL", undefined) || undefined,
    allowInsecureWrites:
      envBoolean(flags.allowInsecureWrites as boolean | undefined, "--allow-insecure-writes") ??
      envBoolean(env.LXHUB_ALLOW_INSECURE_WRITES, "LXHUB_ALLOW_INSECURE_WRITES") ??
      DEFAULTS.allowInsecureWrites,
    headersTimeoutSeconds: num(
      pick(flags.headersTimeoutSeconds, "LXHUB_HEADERS_TIMEOUT", DEFAULTS.headersTimeoutSeconds),
    ),
    requestTimeoutSeconds: num(
      pick(flags.requestTimeoutSeconds, "LXHUB_REQUEST_TIMEOUT", DEFAULTS.requestTimeoutSeconds),
    ),
    idleTimeoutSeconds: num(
      pick(flags.idleTimeoutSeconds, "LXHUB_IDLE_TIMEOUT", DEFAULTS.idleTimeoutSeconds),
    ),
    maxUploadsPerToken: num(
      pick(flags.maxUploadsPerToken, "LXHUB_MAX_UPLOADS_PER_TOKEN", DEFAULTS.maxUploadsPerToken),
    ),
    maxUploadBytesPerToken: num(
      pick(flags.maxUploadBytesPerToken, "LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN", DEFAULTS.maxUploadBytesPerToken),
    ),
    retain: flags.retain?.length
      ? flags.retain
      : (env.LXHUB_RETAIN ?? "")
          .split(";")
          .map((r) => r.trim())
          .filter(Boolean),
    deltas:
      envBoolean(flags.deltas as boolean | undefined, "--no-deltas") ??
      envBoolean(env.LXHUB_DELTAS, "LXHUB_DELTAS") ??
      DEFAULTS.deltas,
    gcIntervalSeconds: seconds(
      pick(flags.gcIntervalSeconds, "LXHUB_GC_INTERVAL", DEFAULTS.gcIntervalSeconds),
      "--gc-interval",
    ),
    gcGraceSeconds: seconds(
      pick(flags.gcGraceSeconds, "LXHUB_GC_GRACE", DEFAULTS.gcGraceSeconds),
      "--gc-grace",
    ),
  };
  const r = configSchema.safeParse(raw);
  if (!r.success) {
    throw new Error(
      "invalid configuration: " +
        r.error.issues.map((i) => `${i.path.join(".") || "config"}: ${i.message}`).join("; "),
    );
  }
  return r.data;
}

export function splitHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(":");
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(hp.slice(i + 1)) };
}
