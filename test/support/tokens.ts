import { lxhubCli } from "./server.js";
import type { RunResult } from "./process.js";

/** `lxhub token create --data DIR --scope S... --ttl TTL`, as it ran (never rejects). */
export function tokenCreate(dataDir: string, scopes: readonly string[], ttl: string): Promise<RunResult> {
  return lxhubCli([
    "token",
    "create",
    "--data",
    dataDir,
    ...scopes.flatMap((s) => ["--scope", s]),
    "--ttl",
    ttl,
  ]);
}

/** A new token and its id (the id is what revoking takes). */
export async function issueToken(
  dataDir: string,
  scopes: readonly string[],
  ttl = "1h",
): Promise<{ token: string; id: string }> {
  const r = await tokenCreate(dataDir, scopes, ttl);
  const id = /token (\S+) expires/.exec(r.stderr)?.[1];
  if (r.code !== 0 || !id) throw new Error(`lxhub token create exited with ${r.code}: ${r.stderr.trim()}`);
  return { token: r.stdout.trim(), id };
}
