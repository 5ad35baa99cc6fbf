/**
 * The client's trust chain, in the order it is checked (shared/docs/ARCHITECTURE.md, Pull):
 *
 * 1. the signed statement `streams/v1/statement.jws` (signing/statement.ts): signed by a pinned
 *    key, not expired, serial not lower than the highest this host accepted from that URL;
 * 2. the index documents (`streams/v1/index.json` and each products file it lists) against the
 *    sha256 and size in the statement;
 * 3. each image file against the sha256 and size in the products file (client/cache.ts);
 * 4. the image fingerprint: sha256(meta ‖ root), or the unified file's sha256 (simplestreams.md
 *    §3.3, §1.6 step 5), computed over the same bytes as they pass.
 *
 * A plain simplestreams tree has no statement: steps 1–2 are skipped only when the user said so
 * (`--no-signature`, or a remote added with it); steps 3–4 always run.
 *
 * When the statement's key is not pinned, the server's endorsements are read: a chain from a
 * pinned key to it (signing/endorsement.ts, every link checked with a key already trusted, each
 * within its overlap, kid = thumbprint) makes it trusted, and a named remote pins it instead of
 * the old keys (`RemoteStore.follow`); a URL with `--key` follows it for this run only. No chain:
 * refused as before (`UNTRUSTED_KEY`).
 *
 * Which remote and which trust: a remote name uses what `lxhub remote add` pinned. A URL needs
 * `--key THUMBPRINT` (the server's JWKS is then read only to find that key) or `--no-signature`;
 * trust on first use is offered only by `lxhub remote add`, where the pinned key is kept — for a
 * one-off URL it would trust whatever answers, which is no check at all.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Writable } from "node:stream";
import type { JWK } from "jose";
import {
  canonicalArch,
  decodeJson,
  hostArch,
  imageDownloadEntries,
  listImages,
  META_FTYPES,
  parseIndex,
  parseProducts,
  resolveAlias,
  StreamParseError,
  type ProductsDoc,
  type StreamImage,
} from "../simplestreams/index.js";
import {
  checkDocument,
  StatementError,
  verifyStatement,
  type VerifiedStatement,
} from "../signing/statement.js";
import { followEndorsements, type EndorsedKey } from "../signing/endorsement.js";
import {
  BlobCache,
  fetchFile,
  HashChain,
  requestPath,
  VerificationError,
  type FetchProgress,
  type FetchResult,
} from "./cache.js";
import { HttpClient, HttpError, describeConnectionError } from "./http.js";
import {
  ENDORSEMENTS_PATH,
  isUrl,
  keysForThumbprints,
  normalizeUrl,
  RemoteStore,
  SerialStore,
  STATEMENT_PATH,
} from "./remotes.js";

export { VerificationError, type VerificationCode } from "./cache.js";

const INDEX_PATH = "streams/v1/index.json";
const USER_AGENT = "lxhub-pull";

/** Where to pull from, and how it is trusted. */
export interface RemoteTarget {
  /** What the user typed: the remote's name or the URL. */
  label: string;
  /** Set when `label` is a configured remote. */
  remoteName?: string;
  /** Mirror root without a trailing `/`. */
  url: string;
  /** Pinned keys; `null` when signatures are not checked (`--no-signature`, or an unsigned remote). */
  keys: JWK[] | null;
  /** PEM to trust for HTTPS instead of the system roots. */
  ca?: Buffer;
  /** Where a configured remote is kept: a followed rotation is pinned there. */
  store?: RemoteStore;
}

export interface TargetOptions {
  store?: RemoteStore;
  /** PEM file (`--ca`); overrides the remote's. */
  caFile?: string;
  /** Thumbprints to trust for a URL (`--key`). */
  keys?: string[];
  /** Skip the signature (`--no-signature`). */
  noSignature?: boolean;
}

async function readCa(file: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new Error(`cannot read ${flag} ${file}: ${(err as Error).message}`);
  }
}

/** Resolves `REMOTE_OR_URL` into a target; see the module comment for the rules. */
export async function resolveTarget(arg: string, opts: TargetOptions = {}): Promise<RemoteTarget> {
  const ca = opts.caFile ? await readCa(opts.caFile, "--ca") : undefined;
  if (!isUrl(arg)) {
    const store = opts.store ?? new RemoteStore();
    const remote = await store.get(arg);
    if (!remote) {
      throw new Error(
        `no remote named ${JSON.stringify(arg)}: add it with \`lxhub remote add ${arg} URL --trust-on-first-use\` ` +
          "(or --key THUMBPRINT), or give a URL",
      );
    }
    if (opts.keys?.length) {
      throw new Error(
        `--key is for URLs; to pin another key for remote ${arg}: lxhub remote add ${arg} ${remote.url} --key THUMBPRINT`,
      );
    }
    return {
      label: arg,
      remoteName: arg,
      store,
      url: remote.url,
      keys: opts.noSignature || !remote.signed ? null : remote.keys,
      ca: ca ?? (remote.ca ? await readCa(remote.ca, `the certificate of remote ${arg}`) : undefined),
    };
  }
  const url = normalizeUrl(arg);
  if (opts.noSignature) return { label: arg, url, keys: null, ca };
  if (!opts.keys?.length) {
    throw new Error(
      `${url} is not a configured remote, so there is no pinned key to check its signature with: ` +
        "pass --key THUMBPRINT, add it first (`lxhub remote add NAME URL --trust-on-first-use`), " +
        "or pass --no-signature for a plain simplestreams server (file hashes and fingerprints are still checked)",
    );
  }
  const http = new HttpClient(url, { ca, userAgent: USER_AGENT });
  try {
    return { label: arg, url, keys: await keysForThumbprints(http, opts.keys), ca };
  } finally {
    http.close();
  }
}

/** One passed (or, in a report, failed) step of the chain. */
export interface VerifyStep {
  what: string;
  ok: boolean;
  detail: string;
}

export interface StreamOptions {
  /** Highest serials seen; default the user's state folder. */
  serials?: SerialStore;
  /** Default now (for tests of expiry). */
  now?: Date;
  signal?: AbortSignal;
  onStep?: (step: VerifyStep) => void;
  retries?: number;
  retryBaseMs?: number;
  /** A request with no bytes moving for this long (ms) fails as stalled; default 60 s, 0 = never. */
  stallMs?: number;
}

/** A remote whose documents passed steps 1–2. Call `close()` when done. */
export interface OpenedStream {
  target: RemoteTarget;
  http: HttpClient;
  /** `null` when signatures were not checked. */
  statement: VerifiedStatement | null;
  products: ProductsDoc[];
  close(): void;
}

function retrustHint(target: RemoteTarget): string {
  const name = target.remoteName ?? "NAME";
  return (
    `If the server's key changed on purpose, trust the new one: ` +
    `\`lxhub remote add ${name} ${target.url} --trust-on-first-use\` (or --key THUMBPRINT, checked with the server's operator)`
  );
}

function statementFailure(err: StatementError, target: RemoteTarget): VerificationError {
  const where = `the signed statement of ${target.label}`;
  switch (err.code) {
    case "UNKNOWN_KEY": {
      const pinned = (target.keys ?? []).map((k) => k.kid).join(", ");
      return new VerificationError(
        "UNTRUSTED_KEY",
        `${where} is signed by a key that is not pinned (${err.message}; pinned: ${pinned || "none"}), ` +
          "and no endorsement by a pinned key vouches for it. " +
          `Refusing it: the server's signing key changed, or someone else is answering. ${retrustHint(target)}`,
        false,
        { cause: err },
      );
    }
    case "EXPIRED":
      return new VerificationError(
        "BAD_STATEMENT",
        `${where} has expired (${err.message}): the server stopped re-signing its index, or an old copy is being replayed`,
        false,
        { cause: err },
      );
    case "REPLAYED":
      return new VerificationError(
        "BAD_STATEMENT",
        `${where} is older than one this host already accepted (${err.message}): a replayed older index is refused. ` +
          `If the server was restored from a backup and you trust it, add the remote again to reset what was seen`,
        false,
        { cause: err },
      );
    case "BAD_SIGNATURE":
      return new VerificationError("BAD_STATEMENT", `${where} does not verify: ${err.message}`, false, {
        cause: err,
      });
    default:
      return new VerificationError(
        "BAD_STATEMENT",
        `${where} is refused (${err.code}): ${err.message}`,
        false,
        {
          cause: err,
        },
      );
  }
}

/**
 * Verifies a statement with the pinned keys or, when its kid is not pinned, with a key the
 * endorsements reach from them (`followed`, of the statement's own issuer). Throws
 * `StatementError`; an `UNKNOWN_KEY` says why endorsements by pinned keys did not count.
 */
async function verifyFollowing(
  jws: string,
  pinned: JWK[],
  opts: { minSerial?: number; now?: Date; endorsements: () => Promise<string[]> },
): Promise<{ statement: VerifiedStatement; followed?: EndorsedKey }> {
  const verify = (keys: JWK[]) =>
    verifyStatement(jws, { keys: { keys }, minSerial: opts.minSerial, now: opts.now });
  try {
    return { statement: await verify(pinned) };
  } catch (err) {
    if (!(err instanceof StatementError) || err.code !== "UNKNOWN_KEY") throw err;
    const refused: string[] = [];
    const reached = await followEndorsements(pinned, await opts.endorsements(), {
      now: opts.now,
      onRefused: (by, e) => refused.push(`an endorsement by ${by} is refused: ${e.message}`),
    });
    // Say why a pinned key's endorsement did not count (an overlap that ended, a forgery).
    const unknown = refused.length
      ? new StatementError(err.code, `${err.message}; ${refused.join("; ")}`)
      : err;
    const statement = await verify([...pinned, ...[...reached.values()].map((r) => r.jwk)]).catch(
      (e: unknown) => {
        throw e instanceof StatementError && e.code === "UNKNOWN_KEY" ? unknown : e;
      },
    );
    const followed = reached.get(statement.kid);
    // A chain vouches for keys of its own issuer only.
    if (!followed || followed.issuer !== statement.issuer) throw unknown;
    return { statement, followed };
  }
}

/** The server's endorsements (remotes.ts ENDORSEMENTS_PATH); none when it publishes none. */
async function getEndorsements(http: HttpClient, signal?: AbortSignal): Promise<string[]> {
  const res = await http.request("GET", `/${ENDORSEMENTS_PATH}`, { accept: [404], signal });
  if (res.status === 404 || res.body.length > 256 * 1024) return [];
  try {
    const doc = JSON.parse(res.body.toString("utf8")) as { endorsements?: unknown };
    return Array.isArray(doc.endorsements)
      ? doc.endorsements.filter((e): e is string => typeof e === "string")
      : [];
  } catch {
    return [];
  }
}

async function getDocument(http: HttpClient, rel: string, signal?: AbortSignal): Promise<Buffer> {
  const res = await http.request("GET", requestPath(rel), { signal });
  return res.body;
}

function checkAgainst(statement: VerifiedStatement | null, rel: string, bytes: Buffer): string {
  if (!statement) return "not signed (--no-signature)";
  try {
    const d = checkDocument(statement, rel, bytes);
    return `sha256 ${d.sha256} (${d.size} bytes) as signed`;
  } catch (err) {
    if (err instanceof StatementError) {
      throw new VerificationError(
        "DOCUMENT_MISMATCH",
        `${rel} does not match the signed statement: ${err.message}`,
      );
    }
    throw err;
  }
}

function parsed<T>(rel: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof StreamParseError)
      throw new VerificationError("BAD_DOCUMENT", `${rel}: ${err.message}`);
    throw err;
  }
}

/**
 * Steps 1–2: fetches and checks the statement (when the target has keys), then the index and
 * every products file it lists, and records the statement's serial. Throws `VerificationError`
 * naming the failed step.
 */
export async function openStream(target: RemoteTarget, opts: StreamOptions = {}): Promise<OpenedStream> {
  const http = new HttpClient(target.url, {
    ca: target.ca,
    userAgent: USER_AGENT,
    retries: opts.retries,
    retryBaseMs: opts.retryBaseMs,
    timeoutMs: opts.stallMs,
  });
  const step = (what: string, detail: string): void => opts.onStep?.({ what, ok: true, detail });
  try {
    let statement: VerifiedStatement | null = null;
    const serials = opts.serials ?? new SerialStore();
    if (target.keys !== null) {
      const res = await http.request("GET", `/${STATEMENT_PATH}`, { accept: [404], signal: opts.signal });
      if (res.status === 404) {
        throw new VerificationError(
          "NO_STATEMENT",
          `${target.url} serves no signed statement (/${STATEMENT_PATH}), so its documents cannot be checked ` +
            "against the pinned key. For a plain simplestreams server pass --no-signature " +
            "(file hashes and fingerprints are still checked)",
        );
      }
      const minSerial = await serials.get(target.url);
      let followed: EndorsedKey | undefined;
      try {
        ({ statement, followed } = await verifyFollowing(res.body.toString("utf8"), target.keys, {
          minSerial,
          now: opts.now,
          endorsements: () => getEndorsements(http, opts.signal),
        }));
      } catch (err) {
        if (err instanceof StatementError) throw statementFailure(err, target);
        throw err;
      }
      const signed = `serial ${statement.serial}, expires ${statement.expiresAt.toISOString()}`;
      if (followed) {
        target.keys = [followed.jwk];
        if (target.remoteName !== undefined)
          await target.store?.follow(target.remoteName, target.url, followed.jwk);
        step(
          "statement",
          `signed by key ${statement.kid}, endorsed by pinned key ${followed.chain.join(" → ")} ` +
            `(overlap until ${followed.notAfter.toISOString()}); ` +
            (target.remoteName !== undefined
              ? `now pinned for remote ${target.remoteName}`
              : "followed for this run (not pinned: a URL)") +
            `; ${signed}`,
        );
      } else {
        step("statement", `signed by pinned key ${statement.kid}, ${signed}`);
      }
    } else {
      step("statement", "not checked (--no-signature)");
    }

    const indexBytes = await getDocument(http, INDEX_PATH, opts.signal);
    step(INDEX_PATH, checkAgainst(statement, INDEX_PATH, indexBytes));
    const index = parsed(INDEX_PATH, () => parseIndex(decodeJson(indexBytes)));
    const products: ProductsDoc[] = [];
    for (const entry of imageDownloadEntries(index)) {
      const bytes = await getDocument(http, entry.path, opts.signal);
      step(entry.path, checkAgainst(statement, entry.path, bytes));
      products.push(parsed(entry.path, () => parseProducts(decodeJson(bytes))));
    }
    if (statement) await serials.record(target.url, statement.serial, statement.kid);
    return { target, http, statement, products, close: () => http.close() };
  } catch (err) {
    http.close();
    throw err;
  }
}

/** LXD strips `ubuntu/` from aliases only for this server (simplestreams.md §4.2). */
export function defaultOsFor(url: string): string | undefined {
  return url.startsWith("https://cloud-images.ubuntu.com") ? "ubuntu" : undefined;
}

export interface FindImageOptions {
  /** Any spelling LXD knows (`amd64`, `x86_64`); default this host's. Then only that arch is accepted. */
  arch?: string;
  /** The virtual-machine namespace instead of container. */
  vm?: boolean;
}

export interface FoundImage {
  image: StreamImage;
  /** Every image of the client kind the image was found with, in LXD's order. */
  images: StreamImage[];
}

/**
 * Resolves an alias (or fingerprint prefix) as LXD does (simplestreams.md §4.4, §4.7): LXD's view
 * (`lxd.tar.xz` metadata) first, Incus' (`incus.tar.xz`) when that finds nothing, in the
 * container namespace (virtual-machine with `vm`), for this host's architecture. With `arch`
 * the image must be of that architecture.
 */
export function findImage(stream: OpenedStream, name: string, opts: FindImageOptions = {}): FoundImage {
  let arch: string;
  if (opts.arch !== undefined) {
    const a = canonicalArch(opts.arch);
    if (a === null)
      throw new Error(`unknown architecture ${JSON.stringify(opts.arch)} (LXD names: amd64, arm64, …)`);
    arch = a;
  } else {
    const h = hostArch();
    if (h === null)
      throw new Error(`LXD has no name for this machine's architecture (${process.arch}); pass --arch`);
    arch = h;
  }
  const type = opts.vm ? "virtual-machine" : "container";
  const defaultOs = defaultOsFor(stream.target.url);
  let lastImages: StreamImage[] = [];
  for (const metaFtype of META_FTYPES) {
    const images = listImages(stream.products, { metaFtype, defaultOs });
    lastImages = images.length ? images : lastImages;
    const image = resolveAlias(images, name, { type, arch });
    if (!image) continue;
    if (opts.arch !== undefined && image.arch !== arch) {
      throw new Error(`${stream.target.label} has ${name} only for ${image.arch}, not ${arch}`);
    }
    return { image, images };
  }
  const known = [
    ...new Set(
      lastImages
        .filter((i) => i.type === type && i.arch === arch)
        .flatMap((i) => i.aliases.filter((a) => !a.medium).map((a) => a.name)),
    ),
  ].sort();
  const hint = known.length
    ? ` (its ${type} aliases for ${arch}: ${known.slice(0, 12).join(", ")}${known.length > 12 ? ", …" : ""})`
    : ` (it has no ${type} image for ${arch})`;
  throw new Error(`${stream.target.label} has no ${type} image ${JSON.stringify(name)} for ${arch}${hint}`);
}

/** The `root.tar.xz` image of the same version and metadata as `image`, if the version has one. */
export function tarballSibling(images: StreamImage[], image: StreamImage): StreamImage | undefined {
  if (image.rootType === "root.tar.xz") return image;
  return images.find(
    (i) =>
      i.rootType === "root.tar.xz" &&
      i.productKey === image.productKey &&
      i.versionKey === image.versionKey &&
      i.type === image.type &&
      i.meta.path === image.meta.path &&
      i.meta.sha256 === image.meta.sha256,
  );
}

export interface FetchImageOptions {
  cache: BlobCache;
  /** Receives the root file's bytes as they pass (single-pass unpacking); not ended here. */
  rootSink?: Writable;
  onProgress?: (p: FetchProgress) => void;
  signal?: AbortSignal;
  retries?: number;
  retryBaseMs?: number;
}

export interface FetchedImage {
  meta: FetchResult;
  root: FetchResult | null;
  /** The fingerprint, as computed (equal to the image's). */
  fingerprint: string;
}

/** File name of an item for messages (the last segment of its path). */
export function fileName(p: string): string {
  return path.posix.basename(p) || p;
}

/**
 * Steps 3–4 for one image: fetches meta then root through the cache, each checked against the
 * products file, while one sha256 runs over meta ‖ root; then compares it with the fingerprint.
 */
export async function fetchImage(
  stream: OpenedStream,
  image: StreamImage,
  opts: FetchImageOptions,
): Promise<FetchedImage> {
  const chain = new HashChain();
  const common = {
    http: stream.http,
    cache: opts.cache,
    chain,
    onProgress: opts.onProgress,
    signal: opts.signal,
    retries: opts.retries,
    retryBaseMs: opts.retryBaseMs,
  };
  const meta = await fetchFile({ ...image.meta, name: fileName(image.meta.path) }, common);
  const root = image.root
    ? await fetchFile({ ...image.root, name: fileName(image.root.path) }, { ...common, sink: opts.rootSink })
    : null;
  const fingerprint = chain.digest();
  if (fingerprint !== image.fingerprint) {
    const over = image.root
      ? `sha256(${fileName(image.meta.path)} ‖ ${fileName(image.root.path)})`
      : `sha256(${fileName(image.meta.path)})`;
    throw new VerificationError(
      "FINGERPRINT_MISMATCH",
      `image fingerprint mismatch: ${over} is ${fingerprint}, but the products file says ${image.fingerprint}`,
    );
  }
  return { meta, root, fingerprint };
}

export interface VerifyOptions extends StreamOptions, FindImageOptions {
  /** Also fetch (or read from the cache) and check this image's files and fingerprint. */
  alias?: string;
  cacheDir?: string;
  onProgress?: (p: FetchProgress) => void;
}

export interface VerifyReport {
  ok: boolean;
  steps: VerifyStep[];
  image?: StreamImage;
}

const STEP_OF: Record<string, string> = {
  NO_STATEMENT: "statement",
  UNTRUSTED_KEY: "statement",
  BAD_STATEMENT: "statement",
  DOCUMENT_MISMATCH: "documents",
  BAD_DOCUMENT: "documents",
  FILE_MISMATCH: "files",
  CACHE_CORRUPT: "files",
  FINGERPRINT_MISMATCH: "fingerprint",
};

/**
 * `lxhub verify`: runs the chain without unpacking anything and reports every step. Never
 * throws for a failed check (the report says `ok: false` with the failed step last); throws
 * only for usage errors such as an unknown remote.
 */
export async function verifyRemote(target: RemoteTarget, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const steps: VerifyStep[] = [];
  const onStep = (s: VerifyStep): void => {
    steps.push(s);
    opts.onStep?.(s);
  };
  let stream: OpenedStream | undefined;
  let image: StreamImage | undefined;
  try {
    stream = await openStream(target, { ...opts, onStep });
    if (opts.alias !== undefined) {
      image = findImage(stream, opts.alias, opts).image;
      onStep({
        what: "image",
        ok: true,
        detail: `${opts.alias} → ${image.description}, ${image.type}, ${image.rootType}, fingerprint ${image.fingerprint}`,
      });
      const cache = new BlobCache(opts.cacheDir);
      const got = await fetchImage(stream, image, { ...opts, cache });
      for (const [ref, r] of [
        [image.meta, got.meta],
        [image.root, got.root],
      ] as const) {
        if (!ref || !r) continue;
        const how = r.cached ? "from the cache" : `downloaded ${r.downloaded} bytes`;
        onStep({
          what: fileName(ref.path),
          ok: true,
          detail: `sha256 ${ref.sha256} (${ref.size} bytes), ${how}`,
        });
      }
      onStep({ what: "fingerprint", ok: true, detail: got.fingerprint });
    }
    return { ok: true, steps, image };
  } catch (err) {
    const what = err instanceof VerificationError ? (STEP_OF[err.code] ?? "check") : "error";
    onStep({ what, ok: false, detail: describeError(err) });
    return { ok: false, steps, image };
  } finally {
    stream?.close();
  }
}

/**
 * A one-line explanation of a pull/verify failure for a terminal: the request that failed, a
 * network failure in words (client/http.ts), a local file error in words, or the error's own
 * message (verification errors already name what failed).
 */
export function describeError(err: unknown): string {
  if (err instanceof HttpError) {
    const says = err.code.startsWith("HTTP_") ? err.message : `${err.code}: ${err.message}`;
    return `${err.request ?? "request"} failed: ${says}`;
  }
  return (
    describeConnectionError(err) ??
    describeFileError(err) ??
    (err instanceof Error ? err.message : String(err))
  );
}

/** node's file-system errors (`ENOSPC: no space left on device, write`) as sentences naming the file. */
function describeFileError(err: unknown): string | null {
  const e = err as NodeJS.ErrnoException | undefined;
  if (!(err instanceof Error) || !e?.syscall || e.path === undefined) return null;
  const file = e.path;
  switch (e.code) {
    case "ENOSPC":
      return `no space left on the disk holding ${file}`;
    case "EDQUOT":
      return `the disk quota is used up, writing ${file}`;
    case "EACCES":
    case "EPERM":
      return `permission denied: cannot ${e.syscall} ${file}`;
    case "EROFS":
      return `${file} is on a read-only file system`;
    case "ENOENT":
      return `${file} does not exist`;
    case "ENOTDIR":
      return `a part of ${file} is not a folder`;
    default:
      return null;
  }
}
