import type { Command } from "commander";
import { RemoteStore } from "../client/remotes.js";
import { describeError } from "../client/verify.js";
import { printJson, reporting } from "./output.js";

interface AddFlags {
  key: string[];
  trustOnFirstUse?: boolean;
  signature: boolean;
  ca?: string;
}

/** `lxhub remote add|list|remove`: the remotes `lxhub pull` and `lxhub verify` know (client/remotes.ts). */
export function registerRemote(program: Command): void {
  const remote = program
    .command("remote")
    .description("manage the remotes lxhub pull/verify use, and the signing keys pinned for them");

  remote
    .command("add")
    .description("add (or replace, to re-trust) a remote and pin its signing key")
    .argument("<name>", "name to use in lxhub pull NAME …")
    .argument("<url>", "mirror root, e.g. https://images.example.org")
    .option(
      "--key <thumbprint>",
      "pin the signing key with this RFC 7638 thumbprint (repeatable)",
      (v: string, prev: string[]) => [...prev, v],
      [],
    )
    .option("--trust-on-first-use", "pin the signing keys the server publishes now")
    .option(
      "--no-signature",
      "a plain simplestreams server without lxhub signatures (file hashes still checked)",
    )
    .option("--ca <file>", "PEM certificate to trust for the server (copied into the config folder)")
    .action(async (name: string, url: string, flags: AddFlags) => {
      const r = await new RemoteStore()
        .add({
          name,
          url,
          keys: flags.key,
          trustOnFirstUse: flags.trustOnFirstUse,
          noSignature: !flags.signature,
          caFile: flags.ca,
        })
        .catch((err: unknown) => {
          throw new Error(describeError(err));
        });
      const lines = [`remote ${name} ${r.replaced ? "replaced" : "added"}: ${r.remote.url}`];
      if (!r.remote.signed) lines.push("  unsigned: only file hashes and image fingerprints will be checked");
      for (const k of r.remote.keys) lines.push(`  pinned signing key: ${k.kid}`);
      if (flags.trustOnFirstUse) {
        lines.push(
          "  (trusted on first use: compare the thumbprint with the one the server's operator publishes)",
        );
      }
      if (r.remote.ca) lines.push(`  certificate: ${r.remote.ca}`);
      process.stdout.write(lines.join("\n") + "\n");
    });

  remote
    .command("list")
    .description("list the remotes")
    .option("--json", "print the remotes as JSON (docs/cli-json.md)")
    .action(async (flags: { json?: boolean }) => {
      const remotes = await reporting(flags.json, describeError, () => new RemoteStore().list());
      if (flags.json) {
        printJson(
          remotes.map((r) => ({
            name: r.name,
            url: r.url,
            signed: r.signed,
            keys: r.keys.map((k) => k.kid),
            ca: r.ca ?? null,
            added_at: r.addedAt,
          })),
        );
        return;
      }
      if (remotes.length === 0) {
        process.stdout.write("no remotes (add one with: lxhub remote add NAME URL --trust-on-first-use)\n");
        return;
      }
      for (const r of remotes) {
        const trust = r.signed ? `keys ${r.keys.map((k) => k.kid).join(",")}` : "unsigned";
        process.stdout.write(`${r.name}\t${r.url}\t${trust}${r.ca ? `\tca ${r.ca}` : ""}\n`);
      }
    });

  remote
    .command("remove")
    .description("remove a remote, its pinned keys and certificate")
    .argument("<name>")
    .action(async (name: string) => {
      if (!(await new RemoteStore().remove(name))) throw new Error(`no remote named ${JSON.stringify(name)}`);
      process.stdout.write(`remote ${name} removed\n`);
    });
}
