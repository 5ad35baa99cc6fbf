import path from "node:path";
import type { Command } from "commander";
import { ProgressLine, bytes } from "../client/progress.js";
import { describePushError, pushImage } from "../client/push.js";
import type { PushResult } from "../client/push.js";
import { printJson, reporting } from "./output.js";
import { serverAccess, type ServerFlags } from "./server-flags.js";

interface PushFlags extends ServerFlags {
  json?: boolean;
  alias: string[];
  version?: string;
}

/** `lxhub push SERVER_URL DIR`: publish a distrobuilder output folder (client/push.ts). */
export function registerPush(program: Command): void {
  program
    .command("push")
    .description(
      "publish an image folder written by distrobuilder (lxd.tar.xz + rootfs.squashfs / disk.qcow2 …)",
    )
    .argument("<server>", "server URL, e.g. https://localhost:8443")
    .argument("<dir>", "folder with the metadata tarball and root file(s)")
    .option("--token <token>", "API token with a push: scope (default: $LXHUB_TOKEN)")
    .option("--ca <file>", "PEM certificate to trust for the server (pins a self-signed certificate)")
    .option("--alias <alias>", "extra alias (repeatable)", (v: string, prev: string[]) => [...prev, v], [])
    .option("--version <version>", "version key (default: the image's creation date as YYYYMMDD_HHMM, UTC)")
    .option("--json", "print the result as JSON (docs/cli-json.md)")
    .action(async (server: string, dir: string, flags: PushFlags) => {
      const result = await reporting(flags.json, describePushError, async () => {
        const { token, ca } = serverAccess(server, flags);
        const progress = process.stderr.isTTY ? new ProgressLine(process.stderr) : undefined;
        try {
          return await pushImage({
            server,
            dir,
            token,
            ca,
            aliases: flags.alias,
            version: flags.version,
            onProgress: progress?.push,
          });
        } finally {
          progress?.finish();
        }
      });
      if (flags.json) printJson(pushJson(result));
      else process.stdout.write(summary(server, flags.ca, result));
    });
}

/** `lxhub push --json` (docs/cli-json.md). */
function pushJson(r: PushResult) {
  return {
    created: r.created,
    product: r.product,
    version: r.version,
    aliases: r.aliases,
    fingerprints: r.fingerprints,
    vm: r.vm,
    files: r.files,
    bytes_uploaded: r.bytesUploaded,
    bytes_skipped: r.bytesSkipped,
  };
}

function summary(server: string, caFile: string | undefined, r: PushResult): string {
  const p = r.product;
  const lines = [
    `${r.created ? "published" : "already published"}: ${p.os}/${p.release}/${p.arch}/${p.variant} version ${r.version}`,
    `  uploaded ${bytes(r.bytesUploaded)}, skipped ${bytes(r.bytesSkipped)}`,
  ];
  for (const [ftype, fp] of Object.entries(r.fingerprints)) lines.push(`  fingerprint (${ftype}): ${fp}`);
  lines.push(`  aliases: ${r.aliases.join(", ")}`);
  // The shortest default alias: `<os>/<release>` for the default variant, else `<os>/<release>/<variant>`.
  const alias = p.variant === "default" && r.aliases[1] ? r.aliases[1] : (r.aliases[0] ?? r.version);
  const remote = "lxhub";
  const url = server.replace(/\/+$/, "");
  lines.push("", "use it:");
  if (!url.startsWith("https://"))
    lines.push("  (lxc accepts only https:// remotes; use the server's HTTPS address)");
  if (caFile) {
    // lxc trusts a PEM found at servercerts/<remote>.crt (simplestreams.md §1.2).
    lines.push(
      `  mkdir -p ~/.config/lxc/servercerts && cp ${path.resolve(caFile)} ~/.config/lxc/servercerts/${remote}.crt`,
    );
  }
  lines.push(`  lxc remote add ${remote} ${url} --protocol=simplestreams`);
  lines.push(`  lxc launch ${remote}:${alias}${r.vm ? " --vm" : ""}`);
  lines.push("", "or pull and verify it with lxhub:");
  lines.push(
    `  lxhub remote add ${remote} ${url} --trust-on-first-use${caFile ? ` --ca ${path.resolve(caFile)}` : ""}`,
  );
  lines.push(`  lxhub pull ${remote} ${alias} ./rootfs${r.vm ? " --vm --format lxd" : ""}`);
  return lines.join("\n") + "\n";
}
