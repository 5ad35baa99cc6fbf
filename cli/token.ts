import type { Command } from "commander";
import type { Registry } from "../registry/registry.js";
import { resolveBlobs, resolveDataDir, resolveDb, DEFAULTS } from "../server/config.js";
import { openRegistry } from "../registry/registry.js";
import { parseDuration } from "../registry/tokens.js";

interface StorageFlags {
  data?: string;
  db?: string;
  blobs?: string;
}

/** The flags that say where the registry's storage is, as `lxhub serve` takes them. */
function storageOptions(cmd: Command): Command {
  return cmd
    .option("--data <dir>", "data folder (default ./lxhub-data, or $LXHUB_DATA)")
    .option(
      "--db <url>",
      "catalog URL as for `lxhub serve --db` (default <data>/catalog.sqlite, or $LXHUB_DB)",
    )
    .option(
      "--blobs <url>",
      "blob store URL as for `lxhub serve --blobs` (default <data>/blobs, or $LXHUB_BLOBS)",
    );
}

function openStorage(o: StorageFlags): Promise<Registry> {
  return openRegistry({
    ...DEFAULTS,
    dataDir: resolveDataDir(o.data),
    db: resolveDb(o.db),
    blobs: resolveBlobs(o.blobs),
  });
}

/** `lxhub token create|revoke`: manage API tokens directly in a data folder. */
export function registerToken(program: Command): void {
  const token = program.command("token").description("manage API tokens");
  storageOptions(token.command("create").description("create a token and print it on stdout"))
    .requiredOption(
      "--scope <scope...>",
      "admin, push:<pattern> or delete:<pattern> (pattern over os/release/arch/variant, e.g. debian/*)",
    )
    .option("--ttl <duration>", "lifetime such as 30m, 12h, 90d", "30d")
    .option("--subject <name>", "who the token is for (shown in the audit log)", "cli")
    .action(async (o: StorageFlags & { scope: string[]; ttl: string; subject: string }) => {
      const reg = await openStorage(o);
      try {
        const t = await reg.tokens.create({
          scopes: o.scope.flatMap((s) => s.split(",")).filter(Boolean),
          ttlSeconds: parseDuration(o.ttl),
          subject: o.subject,
          actor: "cli",
        });
        process.stdout.write(t.token + "\n");
        process.stderr.write(`token ${t.id} expires ${t.expiresAt}\n`);
      } finally {
        await reg.close();
      }
    });
  storageOptions(token.command("revoke").description("revoke a token by its id").argument("<id>")).action(
    async (id: string, o: StorageFlags) => {
      const reg = await openStorage(o);
      try {
        await reg.tokens.revoke(id, "cli");
      } finally {
        await reg.close();
      }
    },
  );
}
