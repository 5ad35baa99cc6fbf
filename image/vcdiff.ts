/**
 * VCDIFF deltas between two versions of a root file (simplestreams.md §5), made and applied with
 * the `xdelta3` program, as the image servers make them and LXD applies them
 * (`xdelta3 -e -s OLD NEW DELTA`, `xdelta3 -d -s OLD DELTA NEW`). Files in, files out: xdelta3
 * needs seekable inputs, and the callers hash what comes out.
 */
import { spawn } from "node:child_process";

export class XdeltaError extends Error {
  override name = "XdeltaError";
  constructor(
    message: string,
    /** `NOT_INSTALLED`, or `FAILED` (non-zero exit: a corrupt delta, a wrong base, I/O). */
    readonly reason: "NOT_INSTALLED" | "FAILED" | "ABORTED",
    readonly stderr = "",
  ) {
    super(message);
  }
}

const STDERR_CAP = 4096;

function xdelta3(args: string[], signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("xdelta3", args, { stdio: ["ignore", "ignore", "pipe"], signal });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      if (stderr.length < STDERR_CAP) stderr += d;
    });
    child.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") {
        reject(new XdeltaError("xdelta3 is not installed (Debian package xdelta3)", "NOT_INSTALLED"));
      } else if (err.name === "AbortError") reject(new XdeltaError("xdelta3 was stopped", "ABORTED"));
      else reject(new XdeltaError(`xdelta3: ${err.message}`, "FAILED"));
    });
    child.once("close", (code) => {
      if (code === 0) resolve();
      else if (signal?.aborted) reject(new XdeltaError("xdelta3 was stopped", "ABORTED"));
      else
        reject(new XdeltaError(`xdelta3 ${args[0]} exited with ${code}: ${stderr.trim()}`, "FAILED", stderr));
    });
  });
}

/** Writes to `out` the delta that turns `base` into `target`. */
export function encodeDelta(base: string, target: string, out: string, signal?: AbortSignal): Promise<void> {
  return xdelta3(["-e", "-f", "-9", "-s", base, target, out], signal);
}

/** Writes to `out` the file `delta` makes from `base`. */
export function applyDelta(base: string, delta: string, out: string, signal?: AbortSignal): Promise<void> {
  return xdelta3(["-d", "-f", "-s", base, delta, out], signal);
}

/** Whether the `xdelta3` program runs here. */
export async function xdeltaAvailable(): Promise<boolean> {
  try {
    await xdelta3(["-V"]);
    return true;
  } catch (err) {
    // `xdelta3 -V` prints its version and exits 0 on Debian; a non-zero exit still means it runs.
    return !(err instanceof XdeltaError && err.reason === "NOT_INSTALLED");
  }
}
