import { chmod, stat } from "node:fs/promises";

/**
 * Secret files (signing keys, the token secret, the TLS key) are 0600 in 0700 folders. One made by
 * hand, or by an older version, may be readable by others: take away any permission beyond
 * `mode`, at start, for each such file and folder; never widens.
 */
export async function restrictMode(path: string, mode: number): Promise<void> {
  const current = (await stat(path)).mode & 0o777;
  if ((current & ~mode) !== 0) await chmod(path, current & mode);
}
