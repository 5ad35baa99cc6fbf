/**
 * Named remotes of `lxhub pull` / `lxhub verify` and the trust pinned for each.
 *
 * Layout (XDG base directories; `~/.config`, `~/.local/state` when the variables are unset):
 *
 *     $XDG_CONFIG_HOME/lxhub/remotes.json           every remote: URL, pinned keys, CA file
 *     $XDG_CONFIG_HOME/lxhub/servercerts/<name>.crt  a copy of the PEM given with `--ca`
 *     $XDG_STATE_HOME/lxhub/serials/<sha256(url)>.json   highest statement serial seen per URL
 *
 * Files are written temp → fsync → rename, so a crash leaves the old file or the new one.
 *
 * A signed remote pins Ed25519 public keys by their RFC 7638 thumbprint (which is also the `kid`
 * lxhub signs with, signing/keyring.ts): `--key THUMBPRINT` pins one key, read from the server's
 * JWKS only to learn its public half (the thumbprint proves it is the one meant);
 * `--trust-on-first-use` pins every key the JWKS holds right now. A statement signed by any
 * other key is refused until the user re-trusts (adds the remote again), unless a chain of
 * endorsements from a pinned key reaches it (a rotation the server announced,
 * signing/endorsement.ts): then that key replaces the pinned ones (`follow`). A remote added with
 * `--no-signature` is a plain simplestreams tree: only the file hashes and fingerprints of its
 * documents protect a pull from it.
 *
 * The serial record is what refuses a replayed older statement (signing/statement.ts
 * `minSerial`). It is kept per URL in the state folder, not in remotes.json, so pulls never
 * rewrite the configuration; adding or removing a remote resets it (a re-trusted server may
 * have started its serials afresh).
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm, unlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { calculateJwkThumbprint, type JWK } from "jose";
import type { JsonWebKeySet } from "../signing/keyring.js";
import { HttpClient } from "./http.js";

/** Where the server publishes its public signing keys (registry/indexer.ts JWKS_PATH). */
export const JWKS_PATH = ".well-known/lxhub/jwks.json";
/** Endorsements of newer signing keys by older ones (registry/indexer.ts ENDORSEMENTS_PATH). */
export const ENDORSEMENTS_PATH = ".well-known/lxhub/endorsements.json";
/** The signed statement over the index documents (registry/indexer.ts STATEMENT_PATH). */
export const STATEMENT_PATH = "streams/v1/statement.jws";

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const THUMBPRINT = /^[A-Za-z0-9_-]{43}$/;
const FILE_VERSION = 1;

/** A remote as stored. */
export interface Remote {
  name: string;
  /** Mirror root, without a trailing `/`. */
  url: string;
  /**
   * Pinned public keys (kty OKP, crv Ed25519, x), each with `kid` set to its thumbprint.
   * Empty for an unsigned remote.
   */
  keys: JWK[];
  /** false: added with `--no-signature` (a plain simplestreams tree). */
  signed: boolean;
  /** Absolute path of the pinned CA/certificate PEM, if one was given. */
  ca?: string;
  addedAt: string;
}

interface RemotesFile {
  version: number;
  remotes: Record<string, Omit<Remote, "name">>;
}

/** `$XDG_CONFIG_HOME/lxhub` (or `~/.config/lxhub`). */
export function defaultConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CONFIG_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".config"), "lxhub");
}

/** `$XDG_STATE_HOME/lxhub` (or `~/.local/state/lxhub`). */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_STATE_HOME;
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".local", "state"), "lxhub");
}

/** A remote URL as stored and compared: parsed, http(s) only, one trailing `/` trimmed. */
export function normalizeUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`not a URL: ${url}`);
  }
  if (u.protocol !== "https:" && u.protocol !== "http:") {
    throw new Error(`unsupported URL scheme ${u.protocol} in ${url} (want https:// or http://)`);
  }
  if (u.search || u.hash) throw new Error(`a remote URL takes no query or fragment: ${url}`);
  return u.href.replace(/\/+$/, "");
}

/** Whether a command-line argument names a URL rather than a remote. */
export function isUrl(arg: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(arg);
}

/** Writes `data` to `file` atomically (temp in the same folder, fsync, rename). */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", mode);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Public Ed25519 key members, with `kid` = thumbprint; null when `jwk` is not such a key. */
export async function pinnableKey(jwk: unknown): Promise<JWK | null> {
  if (typeof jwk !== "object" || jwk === null) return null;
  const k = jwk as JWK;
  if (k.kty !== "OKP" || k.crv !== "Ed25519" || typeof k.x !== "string" || k.x === "") return null;
  if (k.use !== undefined && k.use !== "sig") return null;
  if (k.alg !== undefined && k.alg !== "EdDSA") return null;
  const pub: JWK = { kty: "OKP", crv: "Ed25519", x: k.x };
  const kid = await calculateJwkThumbprint(pub);
  return { ...pub, kid, alg: "EdDSA", use: "sig" };
}

/** Fetches `<url>/.well-known/lxhub/jwks.json` and returns its usable keys (thumbprint as kid). */
export async function fetchJwks(http: HttpClient): Promise<JWK[]> {
  const res = await http.request("GET", `/${JWKS_PATH}`, { accept: [404] });
  if (res.status === 404) {
    throw new Error(
      `${http.url(`/${JWKS_PATH}`).href} does not exist: the server publishes no lxhub signing keys ` +
        "(a plain simplestreams server can only be used with --no-signature)",
    );
  }
  let set: JsonWebKeySet;
  try {
    set = JSON.parse(res.body.toString("utf8")) as JsonWebKeySet;
  } catch {
    throw new Error(`${http.url(`/${JWKS_PATH}`).href} is not JSON`);
  }
  const out: JWK[] = [];
  for (const jwk of Array.isArray(set?.keys) ? set.keys : []) {
    const k = await pinnableKey(jwk);
    if (k && !out.some((o) => o.kid === k.kid)) out.push(k);
  }
  if (out.length === 0) throw new Error(`${http.url(`/${JWKS_PATH}`).href} holds no Ed25519 signing key`);
  return out;
}

/**
 * The keys to pin for `--key THUMBPRINT`: the server's JWKS is read only to find the public key
 * with that thumbprint; the thumbprint is what the user vouches for.
 */
export async function keysForThumbprints(http: HttpClient, thumbprints: string[]): Promise<JWK[]> {
  for (const t of thumbprints) {
    if (!THUMBPRINT.test(t)) {
      throw new Error(`invalid key thumbprint ${JSON.stringify(t)}: want 43 base64url characters (RFC 7638)`);
    }
  }
  const published = await fetchJwks(http);
  return thumbprints.map((t) => {
    const k = published.find((p) => p.kid === t);
    if (!k) {
      throw new Error(
        `the server publishes no key with thumbprint ${t} (it has: ${published.map((p) => p.kid).join(", ")})`,
      );
    }
    return k;
  });
}

export interface AddRemoteOptions {
  name: string;
  url: string;
  /** Thumbprints to pin (`--key`, repeatable). */
  keys?: string[];
  /** Pin every key the server publishes now. */
  trustOnFirstUse?: boolean;
  /** An unsigned (plain simplestreams) remote. */
  noSignature?: boolean;
  /** PEM file to pin the server's certificate with; copied into the config folder. */
  caFile?: string;
  configDir?: string;
  stateDir?: string;
}

export interface AddRemoteResult {
  remote: Remote;
  /** true when a remote of that name existed and was replaced. */
  replaced: boolean;
}

/** The remotes file and the files beside it; see the module comment. */
export class RemoteStore {
  readonly file: string;

  constructor(
    readonly configDir: string = defaultConfigDir(),
    readonly stateDir: string = defaultStateDir(),
  ) {
    this.file = path.join(configDir, "remotes.json");
  }

  private async read(): Promise<RemotesFile> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { version: FILE_VERSION, remotes: {} };
      throw err;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new Error(`${this.file} is not valid JSON (${(err as Error).message}); fix or remove it`);
    }
    const f = parsed as Partial<RemotesFile>;
    if (typeof f !== "object" || f === null || typeof f.remotes !== "object" || f.remotes === null) {
      throw new Error(`${this.file} has no "remotes" object; fix or remove it`);
    }
    const remotes = Object.create(null) as RemotesFile["remotes"];
    for (const [k, v] of Object.entries(f.remotes)) remotes[k] = v;
    return { version: FILE_VERSION, remotes };
  }

  private async write(f: RemotesFile): Promise<void> {
    await writeFileAtomic(this.file, JSON.stringify(f, null, 2) + "\n");
  }

  async list(): Promise<Remote[]> {
    const f = await this.read();
    return Object.keys(f.remotes)
      .sort()
      .map((name) => ({ name, ...(f.remotes[name] as Omit<Remote, "name">) }));
  }

  async get(name: string): Promise<Remote | null> {
    const f = await this.read();
    const r = Object.hasOwn(f.remotes, name) ? f.remotes[name] : undefined;
    if (!r) return null;
    if (typeof r.url !== "string" || !Array.isArray(r.keys) || typeof r.signed !== "boolean") {
      throw new Error(`remote ${name} in ${this.file} is damaged; add it again`);
    }
    return { name, ...r };
  }

  /**
   * Adds (or replaces) a remote: exactly one of `keys`, `trustOnFirstUse`, `noSignature`. Reads
   * the server's JWKS for the first two (through the given CA). Resets the serial record.
   */
  async add(opts: AddRemoteOptions): Promise<AddRemoteResult> {
    if (!NAME.test(opts.name)) {
      throw new Error(
        `invalid remote name ${JSON.stringify(opts.name)}: letters, digits, '.', '_' and '-', starting with a letter or digit`,
      );
    }
    const url = normalizeUrl(opts.url);
    const modes = [(opts.keys?.length ?? 0) > 0, !!opts.trustOnFirstUse, !!opts.noSignature].filter(Boolean);
    if (modes.length !== 1) {
      throw new Error(
        "say how to trust the remote: --key THUMBPRINT (the server's signing key, as `lxhub serve` prints it), " +
          "--trust-on-first-use (pin the keys it publishes now), or --no-signature (a plain simplestreams server)",
      );
    }
    let caPem: Buffer | undefined;
    if (opts.caFile) {
      try {
        caPem = await readFile(opts.caFile);
      } catch (err) {
        throw new Error(`cannot read --ca ${opts.caFile}: ${(err as Error).message}`);
      }
      if (!caPem.toString("latin1").includes("-----BEGIN CERTIFICATE-----")) {
        throw new Error(`--ca ${opts.caFile} is not a PEM certificate`);
      }
    }

    let keys: JWK[] = [];
    if (!opts.noSignature) {
      const http = new HttpClient(url, { ca: caPem, userAgent: "lxhub-remote" });
      try {
        keys = opts.trustOnFirstUse ? await fetchJwks(http) : await keysForThumbprints(http, opts.keys ?? []);
      } finally {
        http.close();
      }
    }

    let ca: string | undefined;
    if (caPem) {
      ca = path.join(this.configDir, "servercerts", `${opts.name}.crt`);
      await writeFileAtomic(ca, caPem, 0o644);
    }
    const f = await this.read();
    const replaced = Object.hasOwn(f.remotes, opts.name);
    const old = replaced ? f.remotes[opts.name] : undefined;
    const entry: Omit<Remote, "name"> = {
      url,
      keys,
      signed: !opts.noSignature,
      ...(ca ? { ca } : {}),
      addedAt: new Date().toISOString(),
    };
    f.remotes[opts.name] = entry;
    await this.write(f);
    if (!ca && old?.ca && this.ownsCert(old.ca)) await rm(old.ca, { force: true });
    await new SerialStore(this.stateDir).reset(url);
    if (old && old.url !== url) await new SerialStore(this.stateDir).reset(old.url);
    return { remote: { name: opts.name, ...entry }, replaced };
  }

  /**
   * After a pull followed a rotation: `key` (proven by endorsements from a pinned key) becomes the
   * remote's only pinned key. The keys it replaces signed nothing newer than what this host has
   * seen (serials only grow), so a statement they sign now would be a replay or a forgery. No-op
   * when the remote was replaced or removed meanwhile. The serial record is kept.
   */
  async follow(name: string, url: string, key: JWK): Promise<void> {
    const f = await this.read();
    const r = Object.hasOwn(f.remotes, name) ? f.remotes[name] : undefined;
    if (!r || r.url !== url || !r.signed) return;
    r.keys = [key];
    await this.write(f);
  }

  /** Whether a certificate path is one of the copies kept in the config folder (never the user's own file). */
  private ownsCert(file: string): boolean {
    return path.dirname(file) === path.join(this.configDir, "servercerts");
  }

  /** Removes a remote, its copied certificate and its serial record. False when there was none. */
  async remove(name: string): Promise<boolean> {
    const f = await this.read();
    if (!Object.hasOwn(f.remotes, name)) return false;
    const old = f.remotes[name] as Omit<Remote, "name">;
    delete f.remotes[name];
    await this.write(f);
    if (old.ca && this.ownsCert(old.ca)) await rm(old.ca, { force: true });
    await new SerialStore(this.stateDir).reset(old.url);
    return true;
  }
}

/** Highest statement serial seen per remote URL (anti-replay); see the module comment. */
export class SerialStore {
  constructor(readonly stateDir: string = defaultStateDir()) {}

  private fileFor(url: string): string {
    const key = createHash("sha256").update(normalizeUrl(url)).digest("hex");
    return path.join(this.stateDir, "serials", `${key}.json`);
  }

  /** The highest serial accepted from `url`, or undefined when none was recorded. */
  async get(url: string): Promise<number | undefined> {
    try {
      const rec = JSON.parse(await readFile(this.fileFor(url), "utf8")) as {
        url?: unknown;
        serial?: unknown;
      };
      if (rec.url !== normalizeUrl(url)) return undefined;
      return typeof rec.serial === "number" && Number.isSafeInteger(rec.serial) ? rec.serial : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records `serial` unless a higher one is already recorded (another pull may have raced us). */
  async record(url: string, serial: number, kid: string): Promise<void> {
    const prev = await this.get(url);
    if (prev !== undefined && prev >= serial) return;
    const rec = { url: normalizeUrl(url), serial, kid, seenAt: new Date().toISOString() };
    await writeFileAtomic(this.fileFor(url), JSON.stringify(rec) + "\n");
  }

  async reset(url: string): Promise<void> {
    await rm(this.fileFor(url), { force: true });
  }
}
