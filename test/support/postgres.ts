/**
 * A throwaway PostgreSQL server for the tests: one cluster per test process, on a free loopback
 * port, in a fresh temporary folder, trust authentication, no fsync (its data is thrown away).
 * `ensurePostgres()` starts it on first use (about 1.5 s: initdb + start); `createDatabase()`
 * gives each test a database of its own. The cluster is stopped when the process exits.
 *
 * Needs PostgreSQL's `initdb` and `pg_ctl` (PATH, /usr/local/bin, or /usr/lib/postgresql/<n>/bin).
 * As root the server runs as the `postgres` user (it refuses to run as root).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";

export interface PostgresServer {
  host: string;
  port: number;
  /** `postgres://postgres@127.0.0.1:PORT/NAME` */
  url(database: string): string;
  /** Stop the server (fast shutdown); the next `ensurePostgres` starts a new one. */
  stop(): void;
  /** Stop immediately (as a crash would) and start again on the same port and data. */
  restart(): void;
  /** Stop immediately (as a crash would); `resume()` starts it again on the same port and data. */
  halt(): void;
  resume(): void;
}

let running: PostgresServer | null = null;

function findTool(name: string): string {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const p = path.join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    for (const v of readdirSync(root).sort((a, b) => Number(b) - Number(a))) {
      const p = path.join(root, v, "bin", name);
      if (existsSync(p)) return p;
    }
  }
  throw new Error(`${name} not found: install PostgreSQL (Debian: postgresql)`);
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function ensurePostgres(): Promise<PostgresServer> {
  if (running) return running;
  const initdb = findTool("initdb");
  const pgCtl = findTool("pg_ctl");
  const dir = mkdtempSync(path.join(tmpdir(), "lxhub-pg-"));
  const data = path.join(dir, "data");
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
    chownSync(dir, uid, gid);
  }
  const run = (cmd: string, args: string[]): void => {
    const r = asRoot
      ? spawnSync("runuser", ["-u", "postgres", "--", cmd, ...args], { encoding: "utf8" })
      : spawnSync(cmd, args, { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${r.stderr || r.stdout}`);
  };
  const start = (): void =>
    run(pgCtl, [
      "-D",
      data,
      "-l",
      path.join(dir, "log"),
      "-w",
      "-t",
      "60",
      "-o",
      `-p ${port} -c listen_addresses=127.0.0.1 -k ${dir} -c fsync=off -c max_connections=200`,
      "start",
    ]);
  run(initdb, ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
  start();
  const server: PostgresServer = {
    host: "127.0.0.1",
    port,
    url: (db) => `postgres://postgres@127.0.0.1:${port}/${db}`,
    stop() {
      try {
        run(pgCtl, ["-D", data, "-m", "fast", "-w", "stop"]);
      } catch {
        // already stopped
      }
      if (running === server) running = null;
    },
    restart() {
      run(pgCtl, ["-D", data, "-m", "immediate", "-w", "stop"]);
      start();
    },
    halt() {
      run(pgCtl, ["-D", data, "-m", "immediate", "-w", "stop"]);
    },
    resume() {
      start();
    },
  };
  running = server;
  process.once("exit", () => {
    spawnSync(asRoot ? "runuser" : pgCtl, [
      ...(asRoot ? ["-u", "postgres", "--", pgCtl] : []),
      "-D",
      data,
      "-m",
      "immediate",
      "stop",
    ]);
    rmSync(dir, { recursive: true, force: true });
  });
  return server;
}

/** A new empty database on the test cluster; returns its connection URL. */
export async function createDatabase(prefix = "t"): Promise<string> {
  const server = await ensurePostgres();
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  const client = new pg.Client({ connectionString: server.url("postgres") });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  return server.url(name);
}
