/**
 * Machine-readable output of the client commands (docs/cli-json.md): one JSON document on stdout,
 * progress and warnings on stderr, and with `--json` a failure is a JSON error object on stdout
 * as well as the usual `lxhub: …` line on stderr (exit status 1 either way).
 */
import { HttpError } from "../client/http.js";
import { VerificationError } from "../client/verify.js";

/** Writes one JSON document (two-space indented) and a newline on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

/** `{"error": …}` of docs/cli-json.md: the sentence, and the code (and HTTP status) when known. */
export interface JsonError {
  error: { message: string; code?: string; status?: number };
}

export function jsonError(err: unknown, message: string): JsonError {
  const error: JsonError["error"] = { message };
  if (err instanceof HttpError) {
    error.code = err.code;
    error.status = err.status;
  } else if (err instanceof VerificationError) {
    error.code = err.code;
  }
  return { error };
}

/**
 * Runs a command's action; a failure becomes `Error(describe(err))` for main's `lxhub: …` line,
 * and with `json` is also printed as a JsonError on stdout.
 */
export async function reporting<T>(
  json: boolean | undefined,
  describe: (err: unknown) => string,
  action: () => Promise<T>,
): Promise<T> {
  try {
    return await action();
  } catch (err) {
    const message = describe(err);
    if (json) printJson(jsonError(err, message));
    throw new Error(message, { cause: err });
  }
}

/** A table as `incus image list` draws it: `+---+` borders, one `| … |` line per row. */
export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const rule = "+" + widths.map((w) => "-".repeat(w + 2)).join("+") + "+\n";
  const line = (cells: string[]): string =>
    "|" + widths.map((w, i) => ` ${(cells[i] ?? "").padEnd(w)} `).join("|") + "|\n";
  return rule + line(headers) + rule + rows.map((r) => line(r) + rule).join("");
}

/** RFC 4180: CRLF after each record; a field holding a comma, quote, CR or LF is quoted, quotes doubled. */
export function renderCsv(rows: string[][]): string {
  const field = (v: string): string => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return rows.map((r) => r.map(field).join(",") + "\r\n").join("");
}
