import type { Command } from "commander";
import { bytes } from "../client/progress.js";
import { RETENTION_ACTOR } from "../registry/registry.js";
import { checkPolicy, parseAge } from "../registry/retention.js";
import { openStorage, storageOptions, type StorageFlags } from "./storage-flags.js";

/** `0`, `0s`… → 0; anything else as a duration (`24h`, `90m`, plain seconds). */
function grace(text: string): number {
  return /^0+\s*[smhdw]?$/.test(text.trim())
    ? 0
    : /^\d+$/.test(text.trim())
      ? Number(text)
      : parseAge(text, "--grace");
}

/** `lxhub prune` and `lxhub gc`: retention and garbage collection on a registry's storage. */
export function registerLifecycle(program: Command): void {
  storageOptions(
    program
      .command("prune")
      .description(
        "retire versions a retention policy does not keep (the newest of each product always stays)",
      )
      .option("--keep <n>", "keep the newest N versions of each product")
      .option("--younger-than <duration>", "keep the versions published less than this long ago (e.g. 30d)")
      .option(
        "--product <glob>",
        "products the policy applies to, as os/release/arch/variant (e.g. debian/*)",
        "*",
      )
      .option("--dry-run", "list what would be retired; change nothing")
      .option("--json", "print the result as JSON"),
  ).action(
    async (
      o: StorageFlags & {
        keep?: string;
        youngerThan?: string;
        product: string;
        dryRun?: boolean;
        json?: boolean;
      },
    ) => {
      if (o.keep === undefined && o.youngerThan === undefined) {
        throw new Error("give --keep N and/or --younger-than DURATION");
      }
      if (o.keep !== undefined && !/^\d+$/.test(o.keep))
        throw new Error(`--keep must be a whole number (got ${o.keep})`);
      const policy = checkPolicy({
        product: o.product,
        keep: o.keep === undefined ? undefined : Number(o.keep),
        youngerThanSeconds:
          o.youngerThan === undefined ? undefined : parseAge(o.youngerThan, "--younger-than"),
      });
      const reg = await openStorage(o);
      try {
        const retired = await reg.retention.prune(
          { subject: "cli", scopes: RETENTION_ACTOR.scopes },
          { policies: [policy], dryRun: o.dryRun },
        );
        if (o.json) {
          process.stdout.write(JSON.stringify({ dry_run: o.dryRun === true, retired }, null, 2) + "\n");
          return;
        }
        for (const r of retired) {
          process.stdout.write(
            `- ${r.product.os}/${r.product.release}/${r.product.arch}/${r.product.variant} ${r.version}\n`,
          );
        }
        process.stdout.write(
          `${o.dryRun ? "dry run: would retire" : "retired"} ${retired.length} version(s)` +
            (o.dryRun || !retired.length
              ? "\n"
              : "; their files stay downloadable until `lxhub gc` after the grace period\n"),
        );
      } finally {
        await reg.close();
      }
    },
  );

  storageOptions(
    program
      .command("gc")
      .description(
        "delete blobs that no version needs (files of retired versions after the grace period, abandoned uploads)",
      )
      .option(
        "--grace <duration>",
        "keep files of versions retired, and blobs used, less than this long ago",
        "24h",
      )
      .option("--dry-run", "list what would be freed; delete nothing")
      .option("--json", "print the report as JSON"),
  ).action(async (o: StorageFlags & { grace: string; dryRun?: boolean; json?: boolean }) => {
    const graceSeconds = grace(o.grace);
    const reg = await openStorage(o);
    try {
      const r = await reg.gc.run({ graceSeconds, dryRun: o.dryRun });
      if (o.json) {
        process.stdout.write(JSON.stringify(r, null, 2) + "\n");
        return;
      }
      for (const b of r.freed) process.stdout.write(`- ${b.digest} ${b.size}\n`);
      process.stdout.write(
        `${r.dryRun ? "dry run: would free" : "freed"} ${r.freed.length} blob(s), ${bytes(r.freedBytes)} (${r.freedBytes} bytes); ` +
          `${r.kept} kept of ${r.scanned}\n`,
      );
    } finally {
      await reg.close();
    }
  });
}
