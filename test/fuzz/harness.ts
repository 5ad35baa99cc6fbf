/**
 * The fuzz harness: one real `lxhub serve` on a data folder kept across restarts, the fixtures
 * valid publishes draw on, and the invariants every case is checked against (issue 6, "Proof by
 * hostile input"):
 *
 * - no response is a 5xx;
 * - a 4xx changed nothing: the catalog as the API shows it (GET /api/v1/products and each
 *   product's versions), the served documents (index.json and images.json, byte-equal) and, for
 *   requests other than uploads, the files under the blob folder;
 * - the documents are always served (200) and parse as JSON;
 * - a restart on the same data serves the same documents (up to their `updated` time) and
 *   `/readyz` answers 200.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import http from "node:http";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pack as tarPack } from "tar-stream";
import { stringify as yamlStringify } from "yaml";
import { api, digestOf, uploadBlob, type ApiResponse } from "../support/api.js";
import { buildBusyboxImage } from "../support/image-fixture.js";
import { checkAnswer } from "../support/openapi.js";
import { createToken, startServer, type RunningServer } from "../support/server.js";

/** What one request looked like, kept for the report of a failing case. */
export interface SentRequest {
  method: string;
  path: string;
  token?: string;
  headers?: Record<string, string>;
  /** The body as sent (binary bodies are described, not shown). */
  body?: string;
}

/** One request and what the server answered. */
export interface Exchange {
  request: SentRequest;
  status: number;
  text: string;
  /** For a 5xx: the error the server logged. */
  serverError?: string;
}

/** Everything a 4xx must leave as it was. */
export interface Observation {
  /** Body of GET /api/v1/products. */
  products: string;
  /** Product path → body of GET /api/v1/products/<os>/<release>/<arch>/<variant>. */
  versions: Map<string, string>;
  index: Buffer;
  images: Buffer;
  /** Relative path + size + mtime of every file under the blob folder. */
  blobs: string[];
}

/** A product whose names are all valid, so valid publishes can target it. */
export interface ProductKey {
  os: string;
  release: string;
  arch: string;
  variant: string;
}

/** A live version as the served images.json shows it. */
export interface LiveVersion {
  product: ProductKey;
  version: string;
  /** File name → ftype, and the delta bases its delta files name. */
  ftypes: Record<string, string>;
  deltaBases: string[];
}

export interface Stats {
  cases: number;
  requests: number;
  status: Map<number, number>;
  fiveXx: number;
  restarts: number;
}

/** A violated invariant: the case's requests and responses are in the message. */
export class InvariantError extends Error {}

async function walk(dir: string, root = dir): Promise<string[]> {
  let out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out = out.concat(await walk(p, root));
    else {
      const s = await stat(p).catch(() => null);
      out.push(`${path.relative(root, p)} ${s?.size ?? "gone"} ${s?.mtimeMs ?? ""}`);
    }
  }
  return out.sort();
}

function productPath(p: ProductKey): string {
  return [p.os, p.release, p.arch, p.variant].map(encodeURIComponent).join("/");
}

/** Removes every `updated` field: the one part of the documents a rebuild may change. */
function withoutUpdated(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutUpdated);
  if (typeof v !== "object" || v === null) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (k !== "updated") out[k] = withoutUpdated(x);
  return out;
}

function describe(x: Exchange): string {
  const r = x.request;
  const lines = [`${r.method} ${r.path}`];
  if (r.token) lines.push(`  token: ${r.token}`);
  for (const [k, v] of Object.entries(r.headers ?? {})) lines.push(`  ${k}: ${v}`);
  if (r.body !== undefined) lines.push(`  body: ${truncate(r.body, 2000)}`);
  lines.push(`→ ${x.status} ${truncate(x.text, 1000)}`);
  if (x.serverError) lines.push(`  server logged: ${truncate(x.serverError, 1000)}`);
  return lines.join("\n");
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n)}… (${s.length} characters)` : s;
}

/** The few spellings the cases use for one architecture (simplestreams/arch.ts has them all). */
const SAME_ARCH: Record<string, string> = { amd64: "x86_64", arm64: "aarch64", generic_64: "x86_64" };

/**
 * Aliases are authority (issue 6): within one case an alias never moves from the product that
 * held it to another product for the same architecture, and never ends up held by two products.
 */
function aliasMoves(before: string, after: string): string[] {
  const owners = (text: string) => {
    const m = new Map<string, Set<string>>();
    const list = (JSON.parse(text) as { products?: (ProductKey & { aliases?: unknown })[] }).products ?? [];
    for (const p of list) {
      if (!Array.isArray(p.aliases)) continue;
      const arch = SAME_ARCH[p.arch] ?? p.arch;
      for (const a of p.aliases) {
        const key = `${String(a)} (${arch})`;
        m.set(key, (m.get(key) ?? new Set()).add(`${p.os}:${p.release}:${p.arch}:${p.variant}`));
      }
    }
    return m;
  };
  const was = owners(before);
  const now = owners(after);
  const out: string[] = [];
  for (const [alias, holders] of now) {
    const old = was.get(alias) ?? new Set<string>();
    const gained = [...holders].filter((h) => !old.has(h));
    if (!gained.length || !old.size) continue;
    const kept = [...old].filter((h) => holders.has(h));
    out.push(
      kept.length
        ? `alias ${alias} held by ${kept.join(", ")} is now also held by ${gained.join(", ")}`
        : `alias ${alias} moved from ${[...old].join(", ")} to ${gained.join(", ")} without move_aliases`,
    );
  }
  return out;
}

/** A failure's message with the parts that vary between cases (numbers, hex, quoted names) masked. */
export function signature(message: string): string {
  return message
    .split("\n")[0]!
    .replace(/[0-9a-f]{64}/g, "<hex>")
    .replace(/"(?:[^"\\]|\\.)*"/g, '"…"')
    .replace(/'[^']*'/g, "'…'")
    .replace(/\d+/g, "N")
    .slice(0, 300);
}

export function describeExchanges(xs: readonly Exchange[]): string {
  return xs.map(describe).join("\n");
}

/** The data folder's blob directory (storage/layout.ts: `blobs/sha256/<aa>/<hex>`). */
function blobDir(dataDir: string): string {
  return path.join(dataDir, "blobs");
}

/**
 * The fuzz target: a real server, the tokens the cases use by role, the fixture blobs, and the
 * invariant checks. One instance per test file.
 */
export class FuzzTarget {
  server!: RunningServer;
  readonly stats: Stats = { cases: 0, requests: 0, status: new Map(), fiveXx: 0, restarts: 0 };
  /** Token role → token. */
  readonly tokens = new Map<string, string>();
  /** Token role → token id (for revocation cases). */
  readonly tokenIds = new Map<string, string>();
  /** Digest of the real root file uploaded at the start, by ftype (squashfs, root.tar.xz). */
  readonly roots = new Map<string, string>();
  /** A blob that is not an image at all (used as a delta's bytes). */
  deltaDigest = "";
  /** Digest of a real metadata tarball (busybox/1.36, amd64) uploaded at the start. */
  fixtureMeta = "";
  /** The last observation, valid until the next request. */
  private last: Observation | null = null;
  private work = "";
  private dataDir = "";
  private boots = 0;
  private fixtureFiles: Record<string, string> = {};
  private readonly metaCache = new Map<string, string>();
  /** Compressed metadata tarballs made ahead (one xz run for many), not uploaded yet. */
  private readonly metaPool = new Map<string, Buffer[]>();
  private metaSerial = 0;
  /** Every 5xx seen: a signature (the server's logged error) → the first exchange and a count. */
  readonly failures = new Map<string, { first: Exchange; count: number }>();

  get base(): string {
    return this.server.httpUrl;
  }

  /** Builds the fixture image once, then boots a server on a fresh data folder. */
  async start(): Promise<void> {
    this.work = await mkdtemp(path.join(tmpdir(), "lxhub-fuzz-"));
    // Real root files, reused by digest: every valid publish pairs one with a fresh metadata
    // tarball, so no two publishes share a (metadata, root) pair.
    const img = await buildBusyboxImage(path.join(this.work, "img"), {
      serial: "20240101_0000",
      formats: ["squashfs", "tar.xz"],
    });
    this.fixtureFiles = img.files;
    await this.boot();
  }

  /** A server on a new, empty data folder: tokens by role, fixture blobs uploaded. */
  private async boot(): Promise<void> {
    this.dataDir = path.join(this.work, `data-${this.boots++}`);
    this.server = await startServer({ dataDir: this.dataDir });
    this.last = null;
    const admin = await createToken(this.dataDir, "admin");
    this.tokens.clear();
    this.tokens.set("admin", admin);
    for (const [role, scopes] of Object.entries(TOKEN_ROLES)) {
      const r = await api(this.base, "POST", "/api/v1/tokens", {
        token: admin,
        body: JSON.stringify({ scopes, ttl: "1d", subject: `fuzz-${role}` }),
      });
      if (r.status !== 201) throw new Error(`creating the ${role} token: ${r.status} ${r.text}`);
      this.tokens.set(role, String(r.json?.token));
      this.tokenIds.set(role, String(r.json?.id));
    }
    const revoked = await api(this.base, "DELETE", `/api/v1/tokens/${this.tokenIds.get("revoked")}`, {
      token: admin,
    });
    if (revoked.status !== 204) throw new Error(`revoking a token: ${revoked.status} ${revoked.text}`);
    for (const [file, ftype] of [
      ["rootfs.squashfs", "squashfs"],
      ["rootfs.tar.xz", "root.tar.xz"],
    ] as const) {
      this.roots.set(ftype, await this.upload(await readFile(this.fixtureFiles[file]!)));
    }
    this.fixtureMeta = await this.upload(await readFile(this.fixtureFiles["lxd.tar.xz"]!));
    this.deltaDigest = await this.upload(Buffer.from("VCD\xc4 not really a vcdiff, but a blob\n", "latin1"));
    await this.ensureReady();
  }

  /**
   * Drop this server and its data and boot a new one (survey mode goes on after a violation
   * that may have left the catalog broken for every later case).
   */
  async reset(): Promise<void> {
    await this.server.stop();
    await rm(this.dataDir, { recursive: true, force: true });
    this.metaCache.clear();
    await this.boot();
  }

  async stop(): Promise<void> {
    await this.server?.stop();
    if (this.work) await rm(this.work, { recursive: true, force: true });
  }

  private async upload(bytes: Buffer): Promise<string> {
    const r = await uploadBlob(this.base, this.tokens.get("admin")!, bytes);
    if (r.status !== 201) throw new Error(`fixture upload: ${r.status} ${r.text}`);
    return digestOf(bytes);
  }

  /**
   * A metadata tarball (`lxd.tar.xz`, real tar + xz) for this product, uploaded; memoized per
   * (product, version), never shared between two versions, so its (metadata, root) pairs are new.
   */
  async metadataFor(
    p: ProductKey,
    version: string,
    lxdArch = "x86_64",
    /** Whose names metadata.yaml carries (hostile names borrow a valid product's). */
    describes: ProductKey = p,
  ): Promise<string> {
    const key = JSON.stringify([p, version, lxdArch]);
    const known = this.metaCache.get(key);
    if (known) return known;
    const poolKey = JSON.stringify([describes, lxdArch]);
    let pool = this.metaPool.get(poolKey);
    if (!pool?.length) {
      pool = await this.makeMetadata(describes, lxdArch, 32);
      this.metaPool.set(poolKey, pool);
    }
    const digest = await this.upload(pool.shift()!);
    this.metaCache.set(key, digest);
    return digest;
  }

  /** A metadata tarball some other version of this product was given (or the fixture's). */
  otherMetadata(p: ProductKey, version: string): string {
    for (const [k, d] of this.metaCache) {
      const [kp, kv] = JSON.parse(k) as [ProductKey, string];
      if (kv !== version && JSON.stringify(kp) === JSON.stringify(p)) return d;
    }
    return this.fixtureMeta;
  }

  /** `count` distinct metadata tarballs for a product, compressed by one xz run. */
  private async makeMetadata(p: ProductKey, lxdArch: string, count: number): Promise<Buffer[]> {
    const tars: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const serial = `fuzz-${this.metaSerial++}`;
      const yaml = yamlStringify({
        architecture: lxdArch,
        creation_date: 1704067200 + this.metaSerial,
        properties: {
          architecture: p.arch,
          description: `${p.os} ${p.release} ${p.arch} (${serial})`,
          name: `${p.os}-${p.release}-${p.arch}-${p.variant}-${serial}`,
          os: p.os,
          release: p.release,
          serial,
          variant: p.variant,
        },
        templates: {},
      });
      tars.push(await tarOf([["metadata.yaml", Buffer.from(yaml)]]));
    }
    return xzEach(tars, path.join(this.work, "meta"));
  }

  /** Send one request, count it, and fail the case on a 5xx. */
  async send(req: SentRequest & { rawBody?: Buffer }, exchanges: Exchange[]): Promise<ApiResponse> {
    this.last = null;
    const logsBefore = this.server.logs.length;
    // The path as fetch sends it (the URL parser drops tabs and newlines, resolves `.`, `..`,
    // `%2e%2e` and `\`): the server and the contract check must see the same request.
    const sent = new URL(this.base + req.path);
    const path = sent.pathname + sent.search;
    const request: SentRequest = {
      ...req,
      path: path === req.path ? path : `${path}   (written as ${JSON.stringify(req.path)})`,
      token: req.token ? this.roleOf(req.token) : undefined,
    };
    delete (request as { rawBody?: Buffer }).rawBody;
    let r: ApiResponse;
    try {
      r = await api(this.base, req.method, path, {
        token: req.token,
        body: req.rawBody ?? req.body,
        headers: req.headers,
      });
    } catch (err) {
      // No answer, or an answer openapi.yaml does not document (test/support/openapi.ts).
      this.stats.requests++;
      exchanges.push({ request, status: -1, text: (err as Error).message });
      throw new InvariantError(`${(err as Error).message}\n${describeExchanges(exchanges)}`);
    }
    this.stats.requests++;
    this.stats.status.set(r.status, (this.stats.status.get(r.status) ?? 0) + 1);
    const x: Exchange = { request, status: r.status, text: r.text };
    exchanges.push(x);
    if (r.status >= 500) {
      this.stats.fiveXx++;
      x.serverError = await this.errorLoggedSince(logsBefore);
      const sig = `${req.method} → ${r.status}: ${signature(x.serverError ?? r.text)}`;
      const seen = this.failures.get(sig);
      if (seen) seen.count++;
      else this.failures.set(sig, { first: x, count: 1 });
    }
    return r;
  }

  /**
   * PATCH with a declared Content-Length of `length` but only 16 bytes sent: the server must
   * answer (413 before reading, issue 6 "Numbers") within 5 s; no answer is recorded as status 0.
   */
  async sendDeclared(
    path: string,
    token: string | undefined,
    length: string,
    exchanges: Exchange[],
  ): Promise<void> {
    this.last = null;
    const url = new URL(this.base + path);
    const headers: Record<string, string> = { "content-length": length };
    if (token) headers.authorization = `Bearer ${token}`;
    const answer = await new Promise<{ status: number; text: string; contentType?: string }>((resolve) => {
      const req = http.request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "PATCH",
        headers,
      });
      const timer = setTimeout(() => {
        req.destroy();
        resolve({ status: 0, text: "no answer within 5 s" });
      }, 5000);
      req.on("error", (err) => {
        clearTimeout(timer);
        resolve({ status: 0, text: `connection error before an answer: ${err.message}` });
      });
      req.on("response", (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d));
        const done = () => {
          clearTimeout(timer);
          req.destroy();
          resolve({ status: res.statusCode ?? 0, text, contentType: res.headers["content-type"] });
        };
        res.on("end", done);
        res.on("error", done);
      });
      req.write(Buffer.alloc(16, 7));
    });
    this.stats.requests++;
    this.stats.status.set(answer.status, (this.stats.status.get(answer.status) ?? 0) + 1);
    exchanges.push({
      request: {
        method: "PATCH",
        path,
        token: token ? this.roleOf(token) : undefined,
        headers: { "content-length": length },
        body: "<16 bytes, then nothing>",
      },
      status: answer.status,
      text: answer.text,
    });
    if (answer.status > 0) {
      let json: unknown = null;
      try {
        json = JSON.parse(answer.text);
      } catch {
        json = null;
      }
      try {
        checkAnswer("PATCH", url.pathname, {
          status: answer.status,
          contentType: answer.contentType ?? null,
          json,
        });
      } catch (err) {
        throw new InvariantError(`${(err as Error).message}\n${describeExchanges(exchanges)}`);
      }
    }
  }

  /** The message of the error the server logged for a 5xx (it answers only "internal error"). */
  private async errorLoggedSince(from: number): Promise<string | undefined> {
    for (let i = 0; i < 10; i++) {
      for (const line of this.server.logs.slice(from)) {
        try {
          const o = JSON.parse(line) as { level?: number; err?: { message?: string }; msg?: string };
          if ((o.level ?? 0) >= 50) return o.err?.message ?? o.msg;
        } catch {
          // not a JSON line
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  }

  /** The role name of a token value, for reports (tokens never appear in the output). */
  private roleOf(token: string): string {
    for (const [role, t] of this.tokens) if (t === token) return `<${role} token>`;
    return JSON.stringify(token.length > 80 ? token.slice(0, 80) + "…" : token);
  }

  /** The catalog through the API, the documents, and the blob folder; checks the documents are served. */
  async observe(): Promise<Observation> {
    if (this.last) return { ...this.last, blobs: await walk(blobDir(this.dataDir)) };
    return this.refresh();
  }

  /** Reads everything again (after a request), without re-using the last observation. */
  private async refresh(): Promise<Observation> {
    const [products, index, images] = await Promise.all([
      api(this.base, "GET", "/api/v1/products"),
      fetch(`${this.base}/streams/v1/index.json`),
      fetch(`${this.base}/streams/v1/images.json`),
    ]);
    if (products.status !== 200)
      throw new InvariantError(`GET /api/v1/products → ${products.status} ${products.text}`);
    const docs: Buffer[] = [];
    for (const [name, res] of [
      ["index.json", index],
      ["images.json", images],
    ] as const) {
      const body = Buffer.from(await res.arrayBuffer());
      if (res.status !== 200)
        throw new InvariantError(`GET /streams/v1/${name} → ${res.status} ${body.toString()}`);
      try {
        JSON.parse(body.toString("utf8"));
      } catch (err) {
        throw new InvariantError(`/streams/v1/${name} is not JSON: ${(err as Error).message}`);
      }
      docs.push(body);
    }
    const list = (products.json?.products ?? []) as ProductKey[];
    const versions = new Map<string, string>();
    await Promise.all(
      list.map(async (p) => {
        const r = await api(this.base, "GET", `/api/v1/products/${productPath(p)}`);
        if (r.status !== 200)
          throw new InvariantError(`GET /api/v1/products/${productPath(p)} → ${r.status} ${r.text}`);
        versions.set(productPath(p), r.text);
      }),
    );
    this.last = {
      products: products.text,
      versions,
      index: docs[0]!,
      images: docs[1]!,
      blobs: await walk(blobDir(this.dataDir)),
    };
    return this.last;
  }

  /** The GET /api/v1/products body of the last observation. */
  lastProducts(): string {
    if (!this.last) throw new Error("lastProducts() before observe()");
    return this.last.products;
  }

  /** Live versions as the served images.json shows them. */
  async live(): Promise<LiveVersion[]> {
    const o = this.last ?? (await this.refresh());
    const doc = JSON.parse(o.images.toString("utf8")) as {
      products: Record<
        string,
        {
          os: string;
          release: string;
          arch: string;
          versions: Record<string, { items: Record<string, { ftype: string; delta_base?: string }> }>;
        }
      >;
    };
    const out: LiveVersion[] = [];
    for (const [key, p] of Object.entries(doc.products)) {
      const [os, release, arch, variant] = key.split(":") as [string, string, string, string];
      for (const [version, v] of Object.entries(p.versions)) {
        const ftypes: Record<string, string> = {};
        const deltaBases: string[] = [];
        for (const [name, item] of Object.entries(v.items)) {
          ftypes[name] = item.ftype;
          if (item.delta_base) deltaBases.push(item.delta_base);
        }
        out.push({ product: { os, release, arch, variant }, version, ftypes, deltaBases });
      }
    }
    return out;
  }

  /**
   * Checks one case: none of its responses is a 5xx; when every request was answered 4xx, the
   * state is as `before` (blob files too unless `uploads`); the documents are served as JSON.
   */
  async check(
    before: Observation,
    exchanges: readonly Exchange[],
    opts: {
      /** Blob files may change (uploads commit blobs). */
      uploads: boolean;
      /** The case can never change the catalog or the documents, whatever the answers (uploads, tokens). */
      neverChanges?: boolean;
      /** An admin asked to move aliases (`"move_aliases": true`): they may change owner. */
      aliasMovesAllowed?: boolean;
    },
  ): Promise<void> {
    this.stats.cases++;
    const problems: string[] = [];
    if (exchanges.some((x) => x.status >= 500)) problems.push("a request was answered with a 5xx");
    if (exchanges.some((x) => x.status === 0)) problems.push("a request got no answer");
    let after: Observation | null = null;
    try {
      after = await this.observe();
    } catch (err) {
      problems.push((err as Error).message);
    }
    const all4xx = exchanges.length > 0 && exchanges.every((x) => x.status >= 400 && x.status < 500);
    if (after && (all4xx || opts.neverChanges)) {
      const why = all4xx ? "after a 4xx" : "after a request that must not touch the catalog";
      if (after.products !== before.products) problems.push(`GET /api/v1/products changed ${why}`);
      const keys = new Set([...before.versions.keys(), ...after.versions.keys()]);
      for (const k of keys) {
        if (before.versions.get(k) !== after.versions.get(k))
          problems.push(`GET /api/v1/products/${k} changed ${why}`);
      }
      if (!after.index.equals(before.index)) problems.push(`/streams/v1/index.json changed ${why}`);
      if (!after.images.equals(before.images)) problems.push(`/streams/v1/images.json changed ${why}`);
      if (all4xx && !opts.uploads && after.blobs.join("\n") !== before.blobs.join("\n")) {
        const gone = before.blobs.filter((b) => !after!.blobs.includes(b));
        const added = after.blobs.filter((b) => !before.blobs.includes(b));
        problems.push(`blob files changed after a 4xx: -${JSON.stringify(gone)} +${JSON.stringify(added)}`);
      }
    }
    if (after && !opts.aliasMovesAllowed) problems.push(...aliasMoves(before.products, after.products));
    if (problems.length) {
      throw new InvariantError(`${problems.join("; ")}\n${describeExchanges(exchanges)}`);
    }
  }

  /** Fails unless /readyz answers 200. */
  async ensureReady(): Promise<void> {
    const r = await api(this.base, "GET", "/readyz");
    if (r.status !== 200) throw new InvariantError(`/readyz → ${r.status} ${r.text}`);
  }

  /**
   * Stop the server, start it again on the same data folder, and check it serves the same
   * documents (apart from their `updated` time) and is ready.
   */
  async restart(): Promise<void> {
    const before = await this.observe();
    await this.server.stop();
    this.last = null;
    try {
      this.server = await startServer({ dataDir: this.dataDir });
    } catch (err) {
      throw new InvariantError(`the server does not start again on the same data: ${(err as Error).message}`);
    }
    this.stats.restarts++;
    await this.ensureReady();
    const after = await this.observe();
    for (const [name, a, b] of [
      ["index.json", before.index, after.index],
      ["images.json", before.images, after.images],
    ] as const) {
      const x = JSON.stringify(withoutUpdated(JSON.parse(a.toString("utf8"))));
      const y = JSON.stringify(withoutUpdated(JSON.parse(b.toString("utf8"))));
      if (x !== y)
        throw new InvariantError(`after a restart /streams/v1/${name} differs:\nbefore ${x}\nafter  ${y}`);
    }
    if (before.products !== after.products)
      throw new InvariantError("after a restart GET /api/v1/products differs");
  }

  /** The closing line: cases, requests, statuses, 5xx count. */
  summary(seed: number): string {
    const statuses = [...this.stats.status.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([s, n]) => `${s}×${n}`)
      .join(" ");
    return (
      `fuzz: seed ${seed}, ${this.stats.cases} cases, ${this.stats.requests} requests, ` +
      `${this.stats.fiveXx} 5xx, ${this.stats.restarts} restarts; statuses ${statuses}`
    );
  }
}

/** Scopes of the tokens the cases use, by role (plus `admin`, made with the CLI). */
export const TOKEN_ROLES: Record<string, string[]> = {
  pushAll: ["push:*"],
  pushFuzz: ["push:fuzz/*"],
  pushBusybox: ["push:busybox/*"],
  deleteAll: ["delete:*"],
  pushDeleteFuzz: ["push:fuzz/*", "delete:fuzz/*"],
  revoked: ["push:*"],
};

function tarOf(entries: [string, Buffer][]): Promise<Buffer> {
  const p = tarPack();
  for (const [name, data] of entries) p.entry({ name, mtime: new Date(0), mode: 0o644 }, data);
  p.finalize();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    p.on("data", (c: unknown) => chunks.push(c as Buffer));
    p.on("end", () => resolve(Buffer.concat(chunks)));
    p.on("error", reject);
  });
}

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/**
 * xz-compress each buffer with one `xz` run over many files (its output is the concatenated
 * streams, split again at the stream magic and checked); falls back to one run per buffer.
 */
async function xzEach(inputs: Buffer[], dir: string): Promise<Buffer[]> {
  await mkdir(dir, { recursive: true });
  const files = inputs.map((_, i) => path.join(dir, `${i}.tar`));
  await Promise.all(files.map((f, i) => writeFile(f, inputs[i]!)));
  const all = await xz(files);
  const pieces: Buffer[] = [];
  let at = all.indexOf(XZ_MAGIC);
  while (at >= 0) {
    const next = all.indexOf(XZ_MAGIC, at + 1);
    pieces.push(all.subarray(at, next < 0 ? all.length : next));
    at = next;
  }
  if (pieces.length === inputs.length && pieces.every((x) => x.subarray(-2).toString("latin1") === "YZ"))
    return pieces;
  return Promise.all(files.map((f) => xz([f])));
}

function xz(files: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn("xz", ["-T1", "-0", "--check=crc64", "--stdout", ...files], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`xz exited with ${code}`)),
    );
  });
}

/** sha256 digest of a string, for digests that name nothing. */
export function digestOfText(text: string): string {
  return `sha256:${createHash("sha256").update(text).digest("hex")}`;
}
