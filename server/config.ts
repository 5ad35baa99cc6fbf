import path from "node:path";
import { z } from "zod";
import { UPLOAD_QUOTA_DEFAULTS } from "../registry/uploads.js";
import { parseAge, parsePolicy } from "../registry/retention.js";

/**
 * Server configuration: one schema with defaults; flags > environment > config file > defaults
 * (SETTINGS names each setting's flag, variable and file key). A wrong value fails at start-up with
 * the setting's name, where it came from, and why.
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
     * Pull-through cache (env LXHUB_UPSTREAM): serve this simplestreams server's images beside our
     * own, fetching each file on its first request (registry/pull-through.ts). `http(s)://…`.
     */
    upstream: z.url({ protocol: /^https?$/, error: "must be an http:// or https:// URL" }).optional(),
    /** The upstream lxhub's statement key, a JWK thumbprint (env LXHUB_UPSTREAM_KEY); its signed statement is then required. */
    upstreamKey: z
      .string()
      .regex(/^[A-Za-z0-9_-]{43}$/, "must be a JWK thumbprint (43 base64url characters)")
      .optional(),
    /** The upstream is a plain simplestreams server: no statement checked, file sha256 still checked (env LXHUB_UPSTREAM_NO_SIGNATURE). */
    upstreamNoSignature: z.boolean(),
    /** PEM file to trust for the upstream's HTTPS instead of the system roots (env LXHUB_UPSTREAM_CA). */
    upstreamCa: z.string().min(1).optional(),
    /** Seconds between refreshes of the upstream's products (env LXHUB_UPSTREAM_REFRESH). */
    upstreamRefreshSeconds: z.number().int().min(1).max(86400),
    /** An upstream request with no byte moving this long fails as a timeout (env LXHUB_UPSTREAM_TIMEOUT, seconds). */
    upstreamTimeoutSeconds: z.number().positive().max(3600),
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
    /** YAML file of upstreams to mirror on a schedule (env LXHUB_MIRRORS; cli/mirror-schedule.ts). */
    mirrors: z.string().min(1).optional(),
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
  })
  .refine((c) => c.upstream === undefined || (c.upstreamKey !== undefined) !== c.upstreamNoSignature, {
    message:
      "--upstream needs exactly one of --upstream-key THUMBPRINT (an lxhub upstream's signing key) or --upstream-no-signature (a plain simplestreams server)",
  })
  .refine(
    (c) =>
      c.upstream !== undefined || (c.upstreamKey === undefined && !c.upstreamNoSignature && !c.upstreamCa),
    { message: "--upstream-key, --upstream-no-signature and --upstream-ca need --upstream" },
  );

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
  upstreamNoSignature: false,
  upstreamRefreshSeconds: 300,
  upstreamTimeoutSeconds: 30,
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
function seconds(v: unknown, name: string): unknown {
  if (typeof v !== "string") return v;
  const t = v.trim();
  if (/^\d+$/.test(t)) return Number(t);
  try {
    return parseAge(t, name);
  } catch (err) {
    throw new Error(`invalid configuration: ${(err as Error).message}`);
  }
}

type Kind = "string" | "number" | "boolean" | "duration" | "list";

/** One setting: its field, its name as a flag (`--NAME`) and as a key of the config file, its variable. */
interface Setting {
  key: keyof ServerConfig;
  name: string;
  env: string;
  kind: Kind;
  /** Holds credentials in a URL (`user:password@`): redacted by --print-config. */
  url?: boolean;
}

/** Every setting of `lxhub serve`; a config file's keys are these names. */
export const SETTINGS: readonly Setting[] = [
  { key: "dataDir", name: "data", env: "LXHUB_DATA", kind: "string" },
  { key: "db", name: "db", env: "LXHUB_DB", kind: "string", url: true },
  { key: "blobs", name: "blobs", env: "LXHUB_BLOBS", kind: "string", url: true },
  { key: "blobsRedirectSeconds", name: "blobs-redirect", env: "LXHUB_BLOBS_REDIRECT", kind: "number" },
  { key: "listen", name: "listen", env: "LXHUB_LISTEN", kind: "string" },
  { key: "tlsListen", name: "tls-listen", env: "LXHUB_TLS_LISTEN", kind: "string" },
  { key: "tlsCert", name: "tls-cert", env: "LXHUB_TLS_CERT", kind: "string" },
  { key: "tlsKey", name: "tls-key", env: "LXHUB_TLS_KEY", kind: "string" },
  { key: "statementTtlSeconds", name: "statement-ttl", env: "LXHUB_STATEMENT_TTL", kind: "number" },
  { key: "uploadTtlSeconds", name: "upload-ttl", env: "LXHUB_UPLOAD_TTL", kind: "number" },
  { key: "maxBlobBytes", name: "max-blob-bytes", env: "LXHUB_MAX_BLOB_BYTES", kind: "number" },
  { key: "issuer", name: "issuer", env: "LXHUB_ISSUER", kind: "string" },
  { key: "openpgpKey", name: "openpgp-key", env: "LXHUB_OPENPGP_KEY", kind: "string" },
  {
    key: "allowInsecureWrites",
    name: "allow-insecure-writes",
    env: "LXHUB_ALLOW_INSECURE_WRITES",
    kind: "boolean",
  },
  { key: "headersTimeoutSeconds", name: "headers-timeout", env: "LXHUB_HEADERS_TIMEOUT", kind: "number" },
  { key: "requestTimeoutSeconds", name: "request-timeout", env: "LXHUB_REQUEST_TIMEOUT", kind: "number" },
  { key: "idleTimeoutSeconds", name: "idle-timeout", env: "LXHUB_IDLE_TIMEOUT", kind: "number" },
  {
    key: "maxUploadsPerToken",
    name: "max-uploads-per-token",
    env: "LXHUB_MAX_UPLOADS_PER_TOKEN",
    kind: "number",
  },
  {
    key: "maxUploadBytesPerToken",
    name: "max-upload-bytes-per-token",
    env: "LXHUB_MAX_UPLOAD_BYTES_PER_TOKEN",
    kind: "number",
  },
  { key: "upstream", name: "upstream", env: "LXHUB_UPSTREAM", kind: "string", url: true },
  { key: "upstreamKey", name: "upstream-key", env: "LXHUB_UPSTREAM_KEY", kind: "string" },
  {
    key: "upstreamNoSignature",
    name: "upstream-no-signature",
    env: "LXHUB_UPSTREAM_NO_SIGNATURE",
    kind: "boolean",
  },
  { key: "upstreamCa", name: "upstream-ca", env: "LXHUB_UPSTREAM_CA", kind: "string" },
  { key: "upstreamRefreshSeconds", name: "upstream-refresh", env: "LXHUB_UPSTREAM_REFRESH", kind: "number" },
  { key: "upstreamTimeoutSeconds", name: "upstream-timeout", env: "LXHUB_UPSTREAM_TIMEOUT", kind: "number" },
  { key: "retain", name: "retain", env: "LXHUB_RETAIN", kind: "list" },
  { key: "deltas", name: "deltas", env: "LXHUB_DELTAS", kind: "boolean" },
  { key: "gcIntervalSeconds", name: "gc-interval", env: "LXHUB_GC_INTERVAL", kind: "duration" },
  { key: "gcGraceSeconds", name: "gc-grace", env: "LXHUB_GC_GRACE", kind: "duration" },
  { key: "mirrors", name: "mirrors", env: "LXHUB_MIRRORS", kind: "string" },
];

/** Values as commander hands them over (strings, booleans, a list for `--retain`), by field. */
export type ConfigFlags = Partial<
  Record<keyof ServerConfig, string | number | boolean | string[] | undefined>
>;

/** A config file's settings (`--config FILE`, YAML), by setting name. */
export interface ConfigFile {
  path: string;
  values: Record<string, unknown>;
}

/**
 * The effective configuration: each setting from its flag, else its environment variable, else
 * the config file, else its default. A wrong value stops the start with the setting's name, where
 * it came from and why; a config file key that is no setting is refused too.
 */
export function loadConfig(
  flags: ConfigFlags,
  env: NodeJS.ProcessEnv = process.env,
  file?: ConfigFile,
): ServerConfig {
  if (file) {
    const known = new Set(SETTINGS.map((s) => s.name));
    for (const k of Object.keys(file.values)) {
      if (!known.has(k)) {
        throw new Error(
          `invalid configuration: ${file.path}: unknown key ${JSON.stringify(k)} (keys are the flags of lxhub serve without --, e.g. gc-interval)`,
        );
      }
    }
  }
  const raw: Record<string, unknown> = {};
  const origin = new Map<string, string>();
  for (const s of SETTINGS) {
    // An empty listener address means "off"; any other empty value means "unset".
    const emptyIsValue = s.key === "listen" || s.key === "tlsListen";
    const given = (v: unknown): boolean =>
      v !== undefined && !(Array.isArray(v) && v.length === 0) && (emptyIsValue || v !== "");
    let value: unknown = flags[s.key];
    let from = `--${s.name}`;
    if (!given(value)) {
      value = env[s.env];
      from = s.env;
      if (typeof value === "string" && s.kind === "list") {
        value = value
          .split(";")
          .map((r) => r.trim())
          .filter(Boolean);
      }
    }
    if (!given(value) && file) {
      value = file.values[s.name];
      from = `${s.name} in ${file.path}`;
    }
    if (!given(value)) {
      value = (DEFAULTS as Record<string, unknown>)[s.key] ?? (s.kind === "list" ? [] : undefined);
      from = "the default";
    }
    if (s.kind === "boolean") value = envBoolean(value as string | boolean | undefined, from);
    else if (s.kind === "number" && typeof value === "string")
      value = value.trim() === "" ? NaN : Number(value);
    else if (s.kind === "duration") value = seconds(value, from);
    raw[s.key] = value;
    origin.set(s.key, from);
  }
  raw.dataDir = path.resolve(String(raw.dataDir));
  const r = configSchema.safeParse(raw);
  if (!r.success) {
    throw new Error(
      "invalid configuration: " +
        r.error.issues
          .map((i) => {
            const key = String(i.path[0] ?? "");
            const s = SETTINGS.find((x) => x.key === key);
            return s ? `${s.name} (${key}, from ${origin.get(key)}): ${i.message}` : `config: ${i.message}`;
          })
          .join("; "),
    );
  }
  return r.data;
}

/** `scheme://user:password@host` → `scheme://user:***@host`. */
function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, "$1:***@");
}

/** The effective configuration by setting name, as `--print-config` shows it: credentials in URLs redacted. */
export function printableConfig(config: ServerConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const v = config[s.key];
    if (v === undefined) continue;
    out[s.name] = s.url && typeof v === "string" ? redactUrl(v) : v;
  }
  return out;
}

export function splitHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(":");
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(hp.slice(i + 1)) };
}
