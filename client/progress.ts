import type { PushProgress } from "./push.js";

/**
 * A single status line for a terminal, redrawn in place (`\r` + clear to end of line) at most
 * ten times a second. Meant for `process.stderr` when it is a TTY; callers skip it otherwise so
 * logs and pipes stay clean.
 */
export class ProgressLine {
  private last = 0;
  private drawn = false;
  private started = new Map<string, { at: number; from: number }>();

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly minIntervalMs = 100,
  ) {}

  /** Handler to pass as `onProgress` to `pushImage`. */
  readonly push = (p: PushProgress): void => {
    switch (p.phase) {
      case "hash":
        this.draw(`hashing  ${p.file}  ${fraction(p.done, p.total)}`, p.done === p.total);
        break;
      case "skip":
        this.line(`${p.file}: already on the server (${bytes(p.size)}), skipped`);
        break;
      case "upload": {
        const key = p.file;
        const now = Date.now();
        let s = this.started.get(key);
        if (!s) {
          s = { at: now, from: p.done };
          this.started.set(key, s);
        }
        const secs = (now - s.at) / 1000;
        const rate = secs > 0.5 ? `  ${bytes((p.done - s.from) / secs)}/s` : "";
        this.draw(`uploading ${p.file}  ${fraction(p.done, p.total)}${rate}`, p.done === p.total);
        break;
      }
      case "publish":
        this.line("publishing version…");
        break;
    }
  };

  /** Ends the line being redrawn, if any. */
  finish(): void {
    if (this.drawn) this.out.write("\n");
    this.drawn = false;
  }

  private draw(text: string, force: boolean): void {
    const now = Date.now();
    if (!force && now - this.last < this.minIntervalMs) return;
    this.last = now;
    this.out.write(`\r${text}\x1b[K`);
    this.drawn = true;
  }

  private line(text: string): void {
    this.finish();
    this.out.write(`${text}\n`);
  }
}

function fraction(done: number, total: number): string {
  const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
  return `${String(pct).padStart(3)}%  ${bytes(done)} / ${bytes(total)}`;
}

/** Human size in binary units, e.g. `12.3 MiB`. */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`;
}
