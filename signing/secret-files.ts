import { randomBytes } from "node:crypto";
import { chmod, link, mkdir, open, readFile, stat, unlink, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * Secret files (signing keys, the token secret, the TLS key) are 0600 in 0700 folders. One made by
 * hand, or by an older version, may be readable by others: take away any permission beyond
 * `mode`, at start, for each such file and folder; never widens.
 */
export async function restrictMode(path: string, mode: number): Promise<void> {
  const current = (await stat(path)).mode & 0o777;
  if ((current & ~mode) !== 0) await chmod(path, current & mode);
}

/**
 * Writes `text` to `file` (mode 0600, its folder made 0700 when missing) unless the file exists,
 * and returns what the file holds now: a concurrent process that won the race keeps its secret.
 * The file appears whole or not at all (temp → fsync → link, which fails on an existing name).
 */
export async function writeSecretOnce(file: string, text: string): Promise<string> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  try {
    const fh = await open(tmp, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, file);
    return text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    return await readFile(file, "utf8");
  } finally {
    await unlink(tmp);
  }
}
