import type { Command } from "commander";
import { DEFAULT_PART_GRACE_MS, listCache, pruneCache } from "../client/cache-prune.js";
import { bytes } from "../client/progress.js";
import {
  DEFAULT_LIMITS,
  formatDuration,
  LIMIT_ENV,
  parseDuration,
  resolveLimits,
} from "../client/settings.js";

interface PruneFlags {
  maxSize?: string;
  partGrace?: string;
}

/** `lxhub cache list|prune`: the download cache `lxhub pull` fills (client/cache-prune.ts). */
export function registerCache(program: Command): void {
  const cache = program.command("cache").description("inspect and prune the download cache of lxhub pull");

  cache
    .command("list")
    .description("list the cached files, most recently used first")
    .action(async () => {
      const { dir, entries, totalBytes } = await listCache();
      const { cacheMaxBytes } = resolveLimits({}, {});
      for (const e of entries) {
        const state = e.kind === "file" ? "verified" : e.locked ? "downloading" : "partial";
        process.stdout.write(
          `${state.padEnd(11)} ${bytes(e.size).padStart(10)}  ${e.lastUsed.toISOString()}  sha256:${e.sha256}\n`,
        );
      }
      process.stdout.write(
        `${entries.length} file(s), ${bytes(totalBytes)} in ${dir} (cap ${bytes(cacheMaxBytes)})\n`,
      );
    });

  cache
    .command("prune")
    .description(
      "evict least recently used files above the size cap, and partial downloads abandoned for longer than the grace period",
    )
    .option(
      "--max-size <size>",
      `size cap, e.g. 10G, 500M, 0 for everything not in use (env ${LIMIT_ENV.cacheMaxBytes}; default ${bytes(DEFAULT_LIMITS.cacheMaxBytes)})`,
    )
    .option(
      "--part-grace <duration>",
      `remove partial downloads not written for this long (default ${formatDuration(DEFAULT_PART_GRACE_MS)})`,
    )
    .action(async (flags: PruneFlags) => {
      const { cacheMaxBytes } = resolveLimits(
        { cacheMaxBytes: flags.maxSize },
        { cacheMaxBytes: "--max-size" },
      );
      const partGraceMs =
        flags.partGrace === undefined ? undefined : parseDuration(flags.partGrace, "--part-grace");
      const report = await pruneCache(undefined, { maxBytes: cacheMaxBytes, partGraceMs });
      for (const e of report.removed) {
        const why = e.why === "lru" ? "least recently used" : "abandoned partial download";
        process.stdout.write(`removed ${bytes(e.size).padStart(10)}  sha256:${e.sha256}  (${why})\n`);
      }
      const freed = report.removed.reduce((n, e) => n + e.size, 0);
      process.stdout.write(
        `removed ${report.removed.length} file(s), ${bytes(freed)}; ${bytes(report.totalBytes)} left (cap ${bytes(cacheMaxBytes)})\n`,
      );
      if (report.overBy > 0) {
        process.stdout.write(
          `still ${bytes(report.overBy)} over the cap: partial downloads in use or kept for a resume are not evicted\n`,
        );
      }
    });
}
