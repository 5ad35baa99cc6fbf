/**
 * Running real programs from tests: one helper that collects output, feeds optional stdin,
 * and enforces a timeout, so every harness reports failures the same way.
 */
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";

export interface RunResult {
  stdout: string;
  stderr: string;
  /** Exit code; -1 when the process was killed by a signal or by the timeout. */
  code: number;
  /** True when the process was killed because `timeoutMs` passed. */
  timedOut: boolean;
}

export interface RunOptions {
  /** Complete environment of the child (not merged here; callers decide what leaks in). */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to stdin, which is then closed; stdin is empty otherwise. */
  input?: string | Buffer;
  /** Kill the process (SIGKILL) after this long; default 120 s. */
  timeoutMs?: number;
  /** Send stdout to this file instead of collecting it (for binary output). */
  stdoutFile?: string;
}

/** Runs `cmd args` without a shell and resolves when it exits; never rejects on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    const out = opts.stdoutFile ? createWriteStream(opts.stdoutFile) : undefined;
    const outDone = out
      ? new Promise<void>((res, rej) => out.on("finish", res).on("error", rej))
      : Promise.resolve();
    if (out) child.stdout.pipe(out);
    else child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, opts.timeoutMs ?? 120_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (timedOut) stderr += `\n[killed after ${opts.timeoutMs ?? 120_000} ms]`;
      outDone.then(
        () => resolve({ stdout, stderr, code: code ?? -1, timedOut }),
        (err: Error) => reject(err),
      );
    });
    // A child that exits without reading stdin makes the write fail with EPIPE; its exit code tells the story.
    child.stdin.on("error", () => undefined);
    child.stdin.end(opts.input ?? "");
  });
}

/** Like `run`, but rejects with the command line, exit code and stderr when the exit code is not 0. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} exited with ${r.code}\nstderr: ${r.stderr.trim()}\nstdout: ${r.stdout.trim()}`,
    );
  }
  return r;
}
