import type { Command } from "commander";
import { openStorage, storageOptions, type StorageFlags } from "./storage-flags.js";
import { parseDuration } from "../registry/tokens.js";
import type { KeyStatus } from "../registry/keys.js";

function describe(k: KeyStatus): string {
  const e = k.endorsedBy;
  const endorsed = !e
    ? "-"
    : `endorsed by ${e.kid} until ${e.until.toISOString()}${e.retired ? " (endorser retired)" : e.published ? "" : " (ended)"}`;
  return `${k.kid}\t${k.created.toISOString()}\t${k.state}\t${endorsed}`;
}

const PICKUP =
  "a running `lxhub serve` on this storage signs with the new keys within a minute (or at its next publish), " +
  "or at once on SIGHUP (systemctl reload lxhub)";

/** `lxhub key list|rotate|retire`: the index signing keys, on the registry's storage (registry/keys.ts). */
export function registerKey(program: Command): void {
  const key = program.command("key").description("manage the keys that sign the index statement");
  storageOptions(
    key.command("list").description("list the signing keys: kid, created, state, endorsement"),
  ).action(async (o: StorageFlags) => {
    const reg = await openStorage(o);
    try {
      process.stdout.write((await reg.keys.list()).map((k) => describe(k) + "\n").join(""));
    } finally {
      await reg.close();
    }
  });
  storageOptions(
    key
      .command("rotate")
      .description("make a new active key, endorsed by the current one so pinned hosts follow")
      .option("--overlap <duration>", "how long the endorsement is published (e.g. 30d, 12h)", "30d"),
  ).action(async (o: StorageFlags & { overlap: string }) => {
    const overlap = parseDuration(o.overlap);
    const reg = await openStorage(o);
    try {
      const r = await reg.keys.rotate(overlap);
      process.stdout.write(`${r.kid}\n`);
      process.stderr.write(
        `new active key ${r.kid}, endorsed by ${r.previous} for ${o.overlap}; ` +
          `retire ${r.previous} once hosts have pulled (lxhub key retire ${r.previous}); ${PICKUP}\n`,
      );
    } finally {
      await reg.close();
    }
  });
  storageOptions(
    key
      .command("retire")
      .description("delete an old key: it leaves the JWKS and its endorsement is no longer published")
      .argument("<kid>"),
  ).action(async (kid: string, o: StorageFlags) => {
    const reg = await openStorage(o);
    try {
      await reg.keys.retire(kid);
      process.stderr.write(
        `retired ${kid}: hosts that still pin only it must add the remote again; ${PICKUP}\n`,
      );
    } finally {
      await reg.close();
    }
  });
}
