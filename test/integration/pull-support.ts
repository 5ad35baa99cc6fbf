/**
 * Helpers shared by the `lxhub pull` integration tests (pull*.test.ts):
 *
 * - `TestServer`: a loopback HTTP server that serves a source (the real lxhub, relayed, or a
 *   folder) with Range support, and can serve modified copies of paths, cut a connection once
 *   after N body bytes, or stall after N bytes until released — counting every body byte it sends;
 * - `snapshotTree`: what a user relies on in an unpacked tree (paths, types, modes, link targets,
 *   sizes, content hashes; owners when root), for `deepEqual`;
 * - `pullEnv`: private XDG folders for the CLI child processes; `envWithRemote` adds remote `t`.
 */
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { runOk } from "../support/process.js";
import { lxhubCli } from "../support/server.js";

/** Body source by path relative to the root; null → 404. */
export type Source = (rel: string) => Promise<Buffer | null>;

/** Relays to a real server: every request is fetched from `base` again (identity encoding). */
export function upstreamSource(base: string): Source {
  return async (rel) => {
    const res = await fetch(`${base.replace(/\/+$/, "")}/${rel}`, {
      headers: { "accept-encoding": "identity" },
    });
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(`upstream ${rel}: ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  };
}

/** Serves the files of a folder. */
export function dirSource(dir: string): Source {
  return async (rel) => {
    const file = path.join(dir, ...rel.split("/"));
    if (!file.startsWith(dir + path.sep)) return null;
    return readFile(file).catch(() => null);
  };
}

export interface ServedRequest {
  path: string;
  range: string | undefined;
  status: number;
  /** Body bytes written to the socket. */
  bytes: number;
}

interface Hold {
  path: string;
  after: number;
  reached: () => void;
  release: Promise<void>;
}

const CHUNK = 16 * 1024;

export class TestServer {
  /** Path → bytes served instead of the source's. */
  readonly overrides = new Map<string, Buffer>();
  /** Path → cut the connection after this many body bytes (once; the entry is then removed). */
  readonly cutOnce = new Map<string, number>();
  readonly log: ServedRequest[] = [];
  url = "";
  #server: http.Server | undefined;
  #hold: Hold | undefined;

  constructor(private readonly source: Source) {}

  async start(): Promise<string> {
    const server = http.createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(err));
        else res.destroy();
      });
    });
    this.#server = server;
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Stalls the next response for `rel` after `after` body bytes, keeping the connection open.
   * `reached` resolves once the bytes are written; `release()` lets held responses finish… by
   * closing them (the client sees a dropped connection).
   */
  holdAfter(rel: string, after: number): { reached: Promise<void>; release: () => void } {
    let reached!: () => void;
    let release!: () => void;
    const reachedP = new Promise<void>((r) => (reached = r));
    const releaseP = new Promise<void>((r) => (release = r));
    this.#hold = { path: rel, after, reached, release: releaseP };
    return {
      reached: reachedP,
      release: () => {
        this.#hold = undefined;
        release();
      },
    };
  }

  /** Body bytes sent for paths starting with `prefix`. */
  bytesFor(prefix: string): number {
    return this.log.filter((r) => r.path.startsWith(prefix)).reduce((n, r) => n + r.bytes, 0);
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const rel = decodeURIComponent(url.pathname)
      .split("/")
      .filter((s) => s !== "")
      .join("/");
    const rangeHeader = req.headers.range;
    const entry: ServedRequest = { path: rel, range: rangeHeader, status: 0, bytes: 0 };
    this.log.push(entry);
    const body = this.overrides.get(rel) ?? (await this.source(rel));
    if (!body) {
      entry.status = 404;
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "NOT_FOUND", message: `no such path /${rel}` } }));
      return;
    }
    let start = 0;
    let end = body.length - 1;
    const m = rangeHeader ? /^bytes=(\d+)-(\d*)$/.exec(rangeHeader) : null;
    if (m) {
      start = Number(m[1]);
      if (m[2]) end = Math.min(Number(m[2]), end);
      if (start >= body.length) {
        entry.status = 416;
        res.writeHead(416, { "content-range": `bytes */${body.length}` }).end();
        return;
      }
      entry.status = 206;
      res.writeHead(206, {
        "content-length": end - start + 1,
        "content-range": `bytes ${start}-${end}/${body.length}`,
        "accept-ranges": "bytes",
      });
    } else {
      entry.status = 200;
      res.writeHead(200, { "content-length": body.length, "accept-ranges": "bytes" });
    }
    const slice = body.subarray(start, end + 1);
    const cut = this.cutOnce.get(rel);
    if (cut !== undefined) this.cutOnce.delete(rel);
    const hold = this.#hold?.path === rel ? this.#hold : undefined;
    const limit = Math.min(cut ?? Infinity, hold?.after ?? Infinity);
    let off = 0;
    while (off < slice.length) {
      if (off >= limit) break;
      const n = Math.min(CHUNK, slice.length - off, limit - off);
      const ok = res.write(slice.subarray(off, off + n));
      off += n;
      entry.bytes += n;
      if (!ok) {
        await new Promise<void>((r) => {
          const done = (): void => {
            res.off("drain", done).off("close", done);
            r();
          };
          res.on("drain", done).on("close", done);
        });
      }
      if (res.destroyed) return;
    }
    if (off >= slice.length) {
      res.end();
      return;
    }
    if (hold) {
      hold.reached();
      await Promise.race([hold.release, new Promise((r) => res.once("close", r))]);
    }
    res.destroy();
  }
}

/** One node of an unpacked tree. */
export interface TreeNode {
  type: "file" | "dir" | "symlink" | "other";
  /** Octal permission bits (absent for symlinks, whose bits mean nothing on Linux). */
  mode?: string;
  size?: number;
  sha256?: string;
  link?: string;
  owner?: string;
}

/** Every entry under `root` (itself as `.`), keyed by relative path; symlinks are not followed. */
export async function snapshotTree(root: string): Promise<Record<string, TreeNode>> {
  const out: Record<string, TreeNode> = {};
  const asRoot = process.getuid?.() === 0;
  const visit = async (rel: string): Promise<void> => {
    const abs = rel === "." ? root : path.join(root, rel);
    const st = await lstat(abs);
    const node: TreeNode = {
      type: st.isFile() ? "file" : st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : "other",
      mode: (st.mode & 0o7777).toString(8),
    };
    if (asRoot) node.owner = `${st.uid}:${st.gid}`;
    if (st.isFile()) {
      node.size = st.size;
      node.sha256 = createHash("sha256")
        .update(await readFile(abs))
        .digest("hex");
    } else if (st.isSymbolicLink()) {
      node.link = await readlink(abs);
      delete node.mode;
    }
    out[rel] = node;
    if (st.isDirectory()) {
      for (const name of (await readdir(abs)).sort()) await visit(rel === "." ? name : `${rel}/${name}`);
    }
  };
  await visit(".");
  return out;
}

/** The tree GNU tar unpacks from `tarball` (as LXD's tools would), in a new folder under `parent`. */
export async function referenceTree(tarball: string, parent: string): Promise<string> {
  const dir = await mkdtemp(path.join(parent, "ref-"));
  await runOk("tar", ["--numeric-owner", "-xpJf", tarball, "-C", dir]);
  return dir;
}

/** Private config, cache and state folders for CLI children, under a new folder in `parent`. */
export async function pullEnv(parent: string): Promise<{ env: NodeJS.ProcessEnv; home: string }> {
  const home = await mkdtemp(path.join(parent, "home-"));
  const env = {
    XDG_CONFIG_HOME: path.join(home, "config"),
    XDG_CACHE_HOME: path.join(home, "cache"),
    XDG_STATE_HOME: path.join(home, "state"),
  };
  for (const d of Object.values(env)) await mkdir(d, { recursive: true });
  return { env, home };
}

/** Fresh private XDG folders (under `parent`) with remote `t` → `url`, its key pinned on first use. */
export async function envWithRemote(parent: string, url: string): Promise<NodeJS.ProcessEnv> {
  const { env } = await pullEnv(parent);
  const r = await lxhubCli(["remote", "add", "t", url, "--trust-on-first-use"], { env });
  if (r.code !== 0) throw new Error(`lxhub remote add failed: ${r.stderr}`);
  return env;
}

/** Names beside `dest` that a pull may have left (staging folders); must be none. */
export async function leftovers(dest: string): Promise<string[]> {
  const base = path.basename(dest);
  return (await readdir(path.dirname(dest))).filter((n) => n !== base && n.startsWith(base));
}

/** Whether `p` exists (without following a symlink). */
export async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

/** sha256 hex of a buffer. */
export function sha256(buf: Buffer): string {
  return createHash("sha256").update(buf).digest("hex");
}
