import type { Command } from "commander";
import { openRegistry, type Registry } from "../registry/registry.js";
import { DEFAULTS, resolveBlobs, resolveDataDir, resolveDb } from "../server/config.js";

/** Where an offline command finds the registry's storage, as `lxhub serve` takes it. */
export interface StorageFlags {
  data?: string;
  db?: string;
  blobs?: string;
}

/** Adds `--data`, `--db` and `--blobs` to an offline command. */
export function storageOptions(cmd: Command): Command {
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

/** Opens the registry the storage flags (or their environment variables) name. */
export function openStorage(o: StorageFlags): Promise<Registry> {
  return openRegistry({
    ...DEFAULTS,
    dataDir: resolveDataDir(o.data),
    db: resolveDb(o.db),
    blobs: resolveBlobs(o.blobs),
  });
}
