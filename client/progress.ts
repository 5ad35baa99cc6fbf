import type { PushProgress } from "./push.js";

/**
 * A single status line for a terminal, redrawn in place (`\r` + clear to end of line) at most
 * ten times a second. Meant for `process.stderr` when it is a TTY; callers skip it otherwise so
 * logs and pipes stay clean.
 */
export class StatusLine {
  private last = 0;
  private drawn = false;
  private started = new Map<string, { at: number; from: number }>();

  constructor(
    protected readonly out: NodeJS.WritableStream,
    private readonly minIntervalMs = 100,
  ) {}

  /** Ends the line being redrawn, if any. */
  finish(): void {
    if (this.drawn) this.out.write("\n");
    this.drawn = false;
  }

  /** Redraw the line; skipped when the last redraw is too recent, unless `force`. */
  protected draw(text: string, force: boolean): void {
    const now = Date.now();
    if (!force && now - this.last < this.minIntervalMs) return;
    this.last = now;
    this.out.write(`\r${text}\x1b[K`);
    this.drawn = true;
  }

  /** A line of its own, below the redrawn one. */
  protected line(text: string): void {
    this.finish();
    this.out.write(`${text}\n`);
  }

  /** `  <rate>/s` of the transfer named `key` since its first report (empty for the first half second). */
  protected rate(key: string, done: number): string {
    const now = Date.now();
    let s = this.started.get(key);
    if (!s) {
      s = { at: now, from: done };
      this.started.set(key, s);
    }
    const secs = (now - s.at) / 1000;
    return secs > 0.5 ? `  ${bytes((done - s.from) / secs)}/s` : "";
  }
}

/** Progress of `lxhub push`. */
export class ProgressLine extends StatusLine {
  /** Handler to pass as `onProgress` to `pushImage`. */
  readonly push = (p: PushProgress): void => {
    switch (p.phase) {
      case "hash":
        this.draw(`hashing  ${p.file}  ${fraction(p.done, p.total)}`, p.done === p.total);
        break;
      case "skip":
        this.line(`${p.file}: already on the server (${bytes(p.size)}), skipped`);
        break;
      case "upload":
        this.draw(
          `uploading ${p.file}  ${fraction(p.done, p.total)}${this.rate(p.file, p.done)}`,
          p.done === p.total,
        );
        break;
      case "publish":
        this.line("publishing version…");
        break;
    }
  };
}

export function fraction(done: number, total: number): string {
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
