import type { Command } from "commander";
import { resolveTarget, type RemoteTarget } from "../client/verify.js";

/** The flags that say how a REMOTE_OR_URL argument is trusted (client/verify.ts, module comment). */
export interface TrustFlags {
  ca?: string;
  key: string[];
  signature: boolean;
}

export const repeat = (v: string, prev: string[]): string[] => [...prev, v];

/** Adds `--ca`, `--key` and `--no-signature` as `lxhub pull` and `lxhub verify` take them. */
export function trustOptions(cmd: Command): Command {
  return cmd
    .option("--ca <file>", "PEM certificate to trust for the server")
    .option("--key <thumbprint>", "signing key to trust, for a URL (repeatable)", repeat, [])
    .option("--no-signature", "do not require a signed index (plain simplestreams server)");
}

/** The remote a REMOTE_OR_URL argument names, with the trust flags; warns when it is unsigned. */
export async function targetOf(source: string, flags: TrustFlags): Promise<RemoteTarget> {
  const target = await resolveTarget(source, {
    caFile: flags.ca,
    keys: flags.key,
    noSignature: !flags.signature,
  });
  if (target.keys === null) {
    process.stderr.write(
      `lxhub: warning: not checking signatures for ${target.label}; only file hashes and image fingerprints protect this pull\n`,
    );
  }
  return target;
}
