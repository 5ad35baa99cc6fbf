import type { Command } from "commander";
import { bytes } from "../client/progress.js";
import {
  describePullError,
  lxdRootName,
  pull,
  PullProgressLine,
  type PullFormat,
  type PullResult,
} from "../client/pull.js";
import {
  DEFAULT_LIMITS,
  formatDuration,
  LIMIT_ENV,
  resolveLimits,
  type LimitFlags,
} from "../client/settings.js";
import { imageRecord } from "../client/image-list.js";
import { describeError, verifyRemote } from "../client/verify.js";
import { interruptible } from "./interrupt.js";
import { printJson, reporting } from "./output.js";
import { repeat, targetOf, type TrustFlags } from "./trust-flags.js";

interface PullFlags extends TrustFlags {
  json?: boolean;
  arch?: string;
  vm?: boolean;
  format: string;
  timeout?: string;
  stallTimeout?: string;
  maxRatio?: string;
  cacheMaxSize?: string;
}

/** The limit flags' names, for messages about a malformed value. */
const LIMIT_FLAGS = {
  deadlineMs: "--timeout",
  stallMs: "--stall-timeout",
  maxRatio: "--max-ratio",
  cacheMaxBytes: "--cache-max-size",
};

function limitFlags(flags: PullFlags): LimitFlags {
  return {
    deadlineMs: flags.timeout,
    stallMs: flags.stallTimeout,
    maxRatio: flags.maxRatio,
    cacheMaxBytes: flags.cacheMaxSize,
  };
}

/** `lxhub pull` and `lxhub verify` (client/pull.ts, client/verify.ts). */
export function registerPull(program: Command): void {
  program
    .command("pull")
    .description(
      "download an image, verify the whole chain, and unpack its root file system (or write the lxd files)",
    )
    .argument("<remote>", "a remote name (lxhub remote add) or a URL")
    .argument("<alias>", "image alias or fingerprint prefix, resolved as LXD does")
    .argument("<dest>", "destination folder: absent or empty")
    .option("--arch <arch>", "architecture (default: this machine's)")
    .option("--vm", "the virtual-machine image instead of the container one")
    .option("--format <format>", "rootfs (unpacked tree) or lxd (files for lxc image import)", "rootfs")
    .option("--ca <file>", "PEM certificate to trust for the server")
    .option("--key <thumbprint>", "signing key to trust, for a URL (repeatable)", repeat, [])
    .option(
      "--no-signature",
      "do not require a signed index (plain simplestreams server); file hashes still checked",
    )
    .option(
      "--timeout <duration>",
      `give up when the whole pull takes longer (e.g. 30m, 12h; 0 = never; env ${LIMIT_ENV.deadlineMs}; default ${formatDuration(DEFAULT_LIMITS.deadlineMs)})`,
    )
    .option(
      "--stall-timeout <duration>",
      `drop a download that receives nothing this long; it is resumed, then given up (env ${LIMIT_ENV.stallMs}; default ${formatDuration(DEFAULT_LIMITS.stallMs)})`,
    )
    .option(
      "--max-ratio <n>",
      `a tarball may decompress to at most N times its signed size (env ${LIMIT_ENV.maxRatio}; default ${DEFAULT_LIMITS.maxRatio})`,
    )
    .option(
      "--cache-max-size <size>",
      `after the pull, evict the least recently used cached files above this size (e.g. 10G; env ${LIMIT_ENV.cacheMaxBytes}; default ${bytes(DEFAULT_LIMITS.cacheMaxBytes)})`,
    )
    .option("--json", "print the result as JSON (docs/cli-json.md)")
    .action(async (source: string, alias: string, dest: string, flags: PullFlags) => {
      const result = await reporting(flags.json, describePullError, async () => {
        if (flags.format !== "rootfs" && flags.format !== "lxd") {
          throw new Error(`--format must be rootfs or lxd, not ${flags.format}`);
        }
        const limits = resolveLimits(limitFlags(flags), LIMIT_FLAGS);
        const { signal, release } = interruptible();
        const progress = process.stderr.isTTY ? new PullProgressLine(process.stderr) : undefined;
        try {
          const target = await targetOf(source, flags);
          return await pull({
            target,
            alias,
            dest,
            arch: flags.arch,
            vm: flags.vm,
            format: flags.format as PullFormat,
            onProgress: progress?.onProgress,
            signal,
            limits,
          });
        } finally {
          progress?.finish();
          release();
        }
      });
      if (flags.json) printJson(pullJson(source, alias, result));
      else process.stdout.write(summary(alias, result));
      if (result.pruneFailure) process.stderr.write(`lxhub: warning: ${result.pruneFailure}\n`);
    });

  program
    .command("verify")
    .description(
      "check a remote's signed index (and with ALIAS, an image's files and fingerprint) without unpacking",
    )
    .argument("<remote>", "a remote name (lxhub remote add) or a URL")
    .argument("[alias]", "also fetch (or read from the cache) and check this image")
    .option("--arch <arch>", "architecture (default: this machine's)")
    .option("--vm", "the virtual-machine image instead of the container one")
    .option("--ca <file>", "PEM certificate to trust for the server")
    .option("--key <thumbprint>", "signing key to trust, for a URL (repeatable)", repeat, [])
    .option("--no-signature", "do not require a signed index (plain simplestreams server)")
    .option(
      "--stall-timeout <duration>",
      `drop a download that receives nothing this long (env ${LIMIT_ENV.stallMs}; default ${formatDuration(DEFAULT_LIMITS.stallMs)})`,
    )
    .option("--json", "print the report as JSON (docs/cli-json.md)")
    .action(async (source: string, alias: string | undefined, flags: PullFlags) => {
      const { target, report } = await reporting(flags.json, describeError, async () => {
        const { stallMs } = resolveLimits(limitFlags(flags), LIMIT_FLAGS);
        const { signal, release } = interruptible();
        try {
          const target = await targetOf(source, flags);
          const report = await verifyRemote(target, {
            alias,
            arch: flags.arch,
            vm: flags.vm,
            signal,
            stallMs,
          });
          return { target, report };
        } finally {
          release();
        }
      });
      if (flags.json) {
        printJson({
          ok: report.ok,
          remote: target.label,
          url: target.url,
          alias: alias ?? null,
          steps: report.steps,
          image: report.image ? imageRecord(report.image) : null,
        });
      } else {
        for (const s of report.steps) {
          process.stdout.write(`${s.ok ? "ok    " : "FAILED"} ${s.what}: ${s.detail}\n`);
        }
        process.stdout.write(
          report.ok ? `verified ${target.label}${alias ? ` ${alias}` : ""}\n` : "verification failed\n",
        );
      }
      if (!report.ok) process.exitCode = 1;
    });
}

/** `lxhub pull --json` (docs/cli-json.md). */
function pullJson(remote: string, alias: string, r: PullResult) {
  return {
    remote,
    alias,
    dest: r.dest,
    format: r.format,
    method: r.method,
    fingerprint: r.fingerprint,
    image: imageRecord(r.image),
    files: r.files.map((f) => ({
      name: f.name,
      ftype: f.ftype,
      sha256: f.sha256,
      size: f.size,
      downloaded: f.downloaded,
      resumed_from: f.resumedFrom,
      cached: f.cached,
    })),
    bytes_downloaded: r.bytesDownloaded,
    statement: r.statement,
    delta: r.delta ?? null,
  };
}

function summary(alias: string, r: PullResult): string {
  const img = r.image;
  const what =
    r.format === "lxd"
      ? "image files for lxc image import"
      : r.method === "tar-single-pass"
        ? "root file system (unpacked while downloading)"
        : "root file system (unsquashfs)";
  const downloaded = r.files.reduce((n, f) => n + f.downloaded, 0);
  const cached = r.files.filter((f) => f.cached).reduce((n, f) => n + f.size, 0);
  const resumed = r.files.reduce((n, f) => n + f.resumedFrom, 0);
  const lines = [
    `pulled ${alias}: ${img.description}`,
    `  fingerprint: ${r.fingerprint} (${img.rootType})`,
    `  into ${r.dest}: ${what}`,
    `  downloaded ${bytes(downloaded)}, from the cache ${bytes(cached)}${resumed ? `, resumed ${bytes(resumed)}` : ""}`,
    ...(r.delta
      ? [
          `  root rebuilt from delta ${r.delta.name} (${bytes(r.delta.size)}, ${bytes(r.delta.downloaded)} downloaded) over cached version ${r.delta.base}, then verified`,
        ]
      : []),
    r.statement
      ? `  verified: statement serial ${r.statement.serial} signed by ${r.statement.kid}, documents, file hashes, fingerprint`
      : "  verified: file hashes and fingerprint (no signature checked)",
  ];
  const removed = r.pruned?.removed ?? [];
  const lru = removed.filter((e) => e.why === "lru");
  const abandoned = removed.length - lru.length;
  if (removed.length) {
    const freed = bytes(lru.reduce((n, e) => n + e.size, 0));
    const parts = [
      lru.length
        ? `evicted ${lru.length} least recently used file(s), ${freed}, to stay under its size cap`
        : "",
      abandoned ? `removed ${abandoned} abandoned partial download(s)` : "",
    ];
    lines.push(`  cache: ${parts.filter(Boolean).join("; ")}`);
  }
  if (r.format === "lxd") {
    const files = img.root ? `lxd.tar.xz ${r.dest}/${lxdRootName(img.root.ftype)}` : "image.tar.gz";
    lines.push(`  import: lxc image import ${r.dest}/${files}`);
  }
  return lines.join("\n") + "\n";
}
