/**
 * The real lxhub server and CLI as child processes (the compiled `dist/cli/main.js`).
 *
 * Server contract relied on here: `lxhub serve` writes one JSON (pino) log line per event on
 * stdout; once both listeners are bound it logs `"event":"listening"` with `http`, `https`
 * (base URLs), `certFile` (the PEM certificate served on HTTPS) and `certFingerprint`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { run, type RunResult } from "./process.js";

/** dist/test/support/server.js → dist/cli/main.js, independent of the working directory. */
export const CLI_MAIN = fileURLToPath(new URL("../../cli/main.js", import.meta.url));

const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

export interface StartServerOptions {
  /** Data folder; default a fresh temporary one, removed by `stop()` unless `keepData`. */
  dataDir?: string;
  /** Appended after the default flags. */
  extraArgs?: string[];
  /** Added to the inherited environment. */
  env?: NodeJS.ProcessEnv;
  /** Keep a temporary data folder after `stop()` (e.g. to restart on the same data). */
  keepData?: boolean;
  /**
   * Pass `--allow-insecure-writes` (default true): tests push over the plain loopback listener.
   * False starts the server as it runs by default, refusing tokens over plain HTTP.
   */
  allowInsecureWrites?: boolean;
  /**
   * Let the server make deltas after publishes (default false: `--no-deltas`). A delta lands in a
   * new generation a moment after a publish returns, which tests comparing states across
   * operations would see as a change; the delta tests turn it on.
   */
  deltas?: boolean;
}

export interface RunningServer {
  httpUrl: string;
  httpsUrl: string;
  certPem: string;
  certFile: string;
  certFingerprint: string;
  dataDir: string;
  proc: ChildProcessWithoutNullStreams;
  /** Every stdout line so far (JSON log lines, kept raw). */
  logs: string[];
  /** Everything written on stderr so far. */
  stderr(): string;
  /** SIGTERM, then wait for exit (SIGKILL after 10 s); removes a temporary data folder. */
  stop(): Promise<void>;
  /** SIGKILL now (a crash); does not wait and leaves the data folder. */
  kill(): void;
}

interface ListeningLine {
  event: "listening";
  http: string;
  https: string;
  certFile: string;
  certFingerprint: string;
}

function parseListening(line: string): ListeningLine | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (o.event !== "listening") return undefined;
  for (const k of ["http", "https", "certFile", "certFingerprint"] as const) {
    if (typeof o[k] !== "string") throw new Error(`"listening" log line has no string field ${k}: ${line}`);
  }
  return o as unknown as ListeningLine;
}

function exited(proc: ChildProcessWithoutNullStreams): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once("exit", () => resolve()));
}

/**
 * Spawns `lxhub serve --data DIR --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0
 * [--allow-insecure-writes] ...extraArgs` and
 * resolves once it logged `listening` (at most 20 s; the error carries the child's stderr and log).
 */
export async function startServer(opts: StartServerOptions = {}): Promise<RunningServer> {
  const ownData = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), "lxhub-test-data-")));
  const args = [
    CLI_MAIN,
    "serve",
    "--data",
    dataDir,
    "--listen",
    "127.0.0.1:0",
    "--tls-listen",
    "127.0.0.1:0",
    ...(opts.allowInsecureWrites === false ? [] : ["--allow-insecure-writes"]),
    ...(opts.deltas ? [] : ["--no-deltas"]),
  ];
  const proc = spawn(process.execPath, [...args, ...(opts.extraArgs ?? [])], {
    env: { ...process.env, ...opts.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  proc.stdin.end();
  const logs: string[] = [];
  let stderr = "";
  proc.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));

  const waiting = new Promise<ListeningLine>((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      proc.kill("SIGKILL");
      reject(
        new Error(
          `lxhub serve ${why}\nargs: ${args.slice(1).join(" ")}\nstderr:\n${stderr}\nstdout:\n${logs.join("\n")}`,
        ),
      );
    };
    const timer = setTimeout(
      () => fail(`did not log "listening" within ${START_TIMEOUT_MS} ms`),
      START_TIMEOUT_MS,
    );
    proc.once("error", (err) => fail(`could not start: ${err.message}`));
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      fail(`exited before listening (code ${code}, signal ${signal})`);
    proc.once("exit", onExit);
    createInterface({ input: proc.stdout }).on("line", (line) => {
      logs.push(line);
      try {
        const l = parseListening(line);
        if (l) {
          clearTimeout(timer);
          proc.off("exit", onExit);
          resolve(l);
        }
      } catch (err) {
        fail((err as Error).message);
      }
    });
  });

  let listening: ListeningLine;
  try {
    listening = await waiting;
  } catch (err) {
    // Bounded: a child that never spawned may emit no "exit".
    await Promise.race([exited(proc), new Promise((r) => setTimeout(r, 5_000).unref())]);
    if (ownData) await rm(dataDir, { recursive: true, force: true });
    throw err;
  }

  const certPem = await readFile(listening.certFile, "utf8");
  return {
    httpUrl: listening.http,
    httpsUrl: listening.https,
    certPem,
    certFile: listening.certFile,
    certFingerprint: listening.certFingerprint,
    dataDir,
    proc,
    logs,
    stderr: () => stderr,
    async stop() {
      const done = exited(proc);
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await done;
      clearTimeout(timer);
      if (ownData && !opts.keepData) await rm(dataDir, { recursive: true, force: true });
    },
    kill() {
      proc.kill("SIGKILL");
    },
  };
}

/** Runs `node dist/cli/main.js ...args`; never rejects on a non-zero exit. */
export function lxhubCli(
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string | Buffer; timeoutMs?: number } = {},
): Promise<RunResult> {
  return run(process.execPath, [CLI_MAIN, ...args], {
    env: { ...process.env, ...opts.env },
    input: opts.input,
    timeoutMs: opts.timeoutMs ?? 300_000,
  });
}

/** `lxhub token create --data DIR --scope SCOPE --ttl 1h`; resolves to the token (stdout, trimmed). */
export async function createToken(dataDir: string, scope: string): Promise<string> {
  const r = await lxhubCli(["token", "create", "--data", dataDir, "--scope", scope, "--ttl", "1h"]);
  if (r.code !== 0) throw new Error(`lxhub token create exited with ${r.code}: ${r.stderr.trim()}`);
  const token = r.stdout.trim();
  if (token === "") throw new Error("lxhub token create printed no token");
  return token;
}
