import type { Command } from "commander";
import { openStorage, storageOptions, type StorageFlags } from "./storage-flags.js";
import { parseDuration } from "../registry/tokens.js";

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
