/**
 * GnuPG as the canonical simplestreams tools call it (shared/docs/simplestreams.md §6.3):
 * `gpgv --keyring=K -` on a clear-signed document, `gpgv --keyring=K X.json.gpg X.json` on a
 * detached signature, and `read_signed`'s extraction of the signed body. `gpg` runs with a
 * throwaway home so the tests never touch the user's keyrings.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, runOk, type RunResult } from "./process.js";

/** A keyring file `gpgv --keyring` reads, made from an armored public key (`gpg --dearmor`). */
export async function dearmoredKeyring(armored: string, dir: string): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), "lxhub-gnupg-"));
  const asc = join(dir, "signing-key.asc");
  const keyring = join(dir, "signing-key.gpg");
  await writeFile(asc, armored);
  await runOk("gpg", ["--homedir", home, "--batch", "--yes", "--output", keyring, "--dearmor", asc]);
  return keyring;
}

/** `gpgv --keyring=KEYRING ...args` (an absolute keyring path: gpgv looks a bare name up in its home). */
export function gpgv(keyring: string, args: readonly string[], input?: string | Buffer): Promise<RunResult> {
  return run("gpgv", [`--keyring=${keyring}`, ...args], { input });
}

/** `gpg --with-colons --show-keys`: the fingerprint of the first key in an armored file. */
export async function keyFingerprint(armoredFile: string): Promise<string> {
  const home = await mkdtemp(join(tmpdir(), "lxhub-gnupg-"));
  const r = await runOk("gpg", ["--homedir", home, "--batch", "--with-colons", "--show-keys", armoredFile]);
  const fpr = r.stdout.split("\n").find((l) => l.startsWith("fpr:"));
  if (!fpr) throw new Error(`gpg --show-keys printed no fingerprint:\n${r.stdout}`);
  return fpr.split(":")[9] ?? "";
}

/**
 * The body of a clear-signed document as simplestreams' `util.read_signed` extracts it, line for
 * line: the first non-empty line after the BEGIN line is taken as the (only) armor header, lines
 * up to the signature are the body, dash-escapes are removed, and a newline is added at the end.
 */
export function readSignedBody(content: string): string {
  const body: string[] = [];
  let mode = "";
  for (const line of content.split(/\r?\n/)) {
    if (line === "-----BEGIN PGP SIGNED MESSAGE-----") {
      mode = "header";
      continue;
    } else if (mode === "header") {
      if (line !== "") mode = "body";
      continue;
    } else if (line === "-----BEGIN PGP SIGNATURE-----") {
      mode = "signature";
      continue;
    } else if (line === "-----END PGP SIGNATURE-----") {
      mode = "garbage";
      continue;
    }
    if (mode === "body") body.push(line.startsWith("- ") ? line.slice(2) : line);
  }
  body.push("");
  return body.join("\n");
}
