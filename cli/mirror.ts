import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { BlobCache } from "../client/cache.js";
import { HttpClient } from "../client/http.js";
import {
  mirror,
  MirrorProgressLine,
  productLabel,
  type MirrorPlan,
  type MirrorReport,
} from "../client/mirror.js";
import { bytes } from "../client/progress.js";
import { HttpPublisher, type Publisher } from "../client/publisher.js";
import { isUrl, normalizeUrl, STATEMENT_PATH } from "../client/remotes.js";
import { openStream, resolveTarget, type RemoteTarget } from "../client/verify.js";
import { FilterError, parseFilter } from "../simplestreams/filters.js";
import { DirectPublisher } from "./direct-publisher.js";
import { interruptible } from "./interrupt.js";
import { openStorage, storageOptions, type StorageFlags } from "./storage-flags.js";

interface MirrorFlags extends StorageFlags {
  to?: string;
  token?: string;
  toCa?: string;
  ca?: string;
  key: string[];
  signature: boolean;
  filter: string[];
  keep?: string;
  dryRun?: boolean;
  jobs: string;
  json?: boolean;
}

const repeat = (v: string, prev: string[]): string[] => [...prev, v];

function positive(flag: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) {
    throw new Error(`${flag} must be a whole number, at least 1 (got ${JSON.stringify(v)})`);
  }
  return n;
}

/**
 * The upstream and how it is trusted: a remote's pinned keys, `--key`, or none with
 * `--no-signature`. A URL given without either is checked when it serves a signed statement —
 * then a key must be pinned, as the mirror cannot tell a replaced statement from a real one —
 * and read as a plain simplestreams server when it serves none.
 */
async function upstreamOf(source: string, flags: MirrorFlags): Promise<RemoteTarget> {
  const opts = { caFile: flags.ca, keys: flags.key, noSignature: !flags.signature };
  if (!isUrl(source) || flags.key.length || !flags.signature) return resolveTarget(source, opts);
  const target = await resolveTarget(source, { ...opts, noSignature: true });
  const http = new HttpClient(target.url, { ca: target.ca, userAgent: "lxhub-mirror" });
  try {
    const res = await http.request("HEAD", `/${STATEMENT_PATH}`, { accept: [404] });
    if (res.status !== 404) {
      throw new Error(
        `${normalizeUrl(source)} serves a signed statement: pin its key with --key THUMBPRINT ` +
          "(or mirror a remote added with `lxhub remote add`), or pass --no-signature to skip the check",
      );
    }
  } finally {
    http.close();
  }
  process.stderr.write(
    `lxhub: ${target.url} serves no signed statement; file hashes and image fingerprints are still checked\n`,
  );
  return target;
}

function planLines(plan: MirrorPlan): string[] {
  const lines: string[] = [];
  for (const a of plan.add) {
    lines.push(`+ ${productLabel(a.product)} ${a.version}  (${bytes(a.bytes)} to move)`);
  }
  for (const r of plan.retire) lines.push(`- ${productLabel(r.product)} ${r.version}`);
  return lines;
}

function summary(r: MirrorReport): string {
  const lines: string[] = [];
  if (r.dryRun) {
    lines.push(...planLines(r.plan));
    lines.push(
      `dry run: would add ${r.plan.add.length} version(s), retire ${r.plan.retire.length}, ` +
        `move ${bytes(r.plan.bytes)} (${r.plan.bytes} bytes); ${r.plan.present} already there`,
    );
  } else {
    for (const a of r.added) lines.push(`+ ${a.product} ${a.version}`);
    for (const x of r.retired) lines.push(`- ${x.product} ${x.version}`);
    for (const f of r.failed) lines.push(`! ${f.product} ${f.version}: ${f.error}`);
    lines.push(
      `mirrored ${r.upstream}: added ${r.added.length}, retired ${r.retired.length}, failed ${r.failed.length}, ` +
        `${r.plan.present} already there; downloaded ${bytes(r.bytesDownloaded)}, ` +
        `sent ${bytes(r.bytesUploaded)}, skipped ${bytes(r.bytesSkipped)}`,
    );
  }
  for (const s of r.plan.skipped) lines.push(`  left out: ${s.what}: ${s.reason}`);
  return lines.join("\n") + "\n";
}

/** `lxhub mirror UPSTREAM`: copy a simplestreams server into an lxhub (client/mirror.ts). */
export function registerMirror(program: Command): void {
  storageOptions(
    program
      .command("mirror")
      .description(
        "copy the images of a simplestreams server into an lxhub: through its API (--to) or into its storage (--data/--db/--blobs)",
      )
      .argument("<upstream>", "a remote name (lxhub remote add) or the upstream's URL")
      .option(
        "--to <server>",
        "target lxhub URL; its publish API is used (token with push: and delete: scopes)",
      )
      .option("--token <token>", "API token for --to (default: $LXHUB_TOKEN)")
      .option("--to-ca <file>", "PEM certificate to trust for the --to server")
      .option("--ca <file>", "PEM certificate to trust for the upstream")
      .option("--key <thumbprint>", "upstream signing key to trust, for a URL (repeatable)", repeat, [])
      .option("--no-signature", "do not check the upstream's signed statement; file hashes still checked")
      .option(
        "--filter <filter>",
        "KEY=VALUE, KEY!=VALUE or KEY~REGEX over os, release, arch, variant, ftype (repeatable; all must hold)",
        repeat,
        [],
      )
      .option("--keep <n>", "keep the newest N versions per product; older mirrored versions are retired")
      .option(
        "--dry-run",
        "list what would be added (+) and retired (-), and the bytes to move; change nothing",
      )
      .option("--jobs <n>", "versions copied at the same time", "4")
      .option("--json", "print the report as JSON"),
  ).action(async (source: string, flags: MirrorFlags) => {
    let filters;
    try {
      filters = flags.filter.map(parseFilter);
    } catch (err) {
      if (err instanceof FilterError) throw new Error(`--filter: ${err.message}`);
      throw err;
    }
    const keep = flags.keep === undefined ? undefined : positive("--keep", flags.keep);
    const jobs = positive("--jobs", flags.jobs);
    const direct = flags.data !== undefined || flags.db !== undefined || flags.blobs !== undefined;
    if (flags.to && direct)
      throw new Error("--to and --data/--db/--blobs exclude each other: pick one target");
    if (!flags.to && !direct) {
      throw new Error("no target: --to SERVER_URL (through its API) or --data DIR / --db URL --blobs URL");
    }

    const target = await upstreamOf(source, flags);
    const { signal, release } = interruptible();
    const stream = await openStream(target, { retries: 4, signal }).catch((err: unknown) => {
      release();
      throw err;
    });
    let publisher: Publisher | undefined;
    let close = async (): Promise<void> => undefined;
    const progress = process.stderr.isTTY && !flags.json ? new MirrorProgressLine(process.stderr) : undefined;
    try {
      if (flags.to) {
        const token = flags.token ?? process.env.LXHUB_TOKEN;
        if (!token) throw new Error("no token for --to: pass --token or set LXHUB_TOKEN");
        let ca: Buffer | undefined;
        if (flags.toCa) {
          try {
            ca = readFileSync(flags.toCa);
          } catch (err) {
            throw new Error(`cannot read --to-ca ${flags.toCa}: ${(err as Error).message}`);
          }
        }
        publisher = new HttpPublisher({ server: flags.to, token, ca, userAgent: "lxhub-mirror" });
      } else {
        const registry = await openStorage(flags);
        publisher = new DirectPublisher(registry, { subject: "mirror" });
        close = () => registry.close();
      }
      const report = await mirror(stream, {
        publisher,
        cache: new BlobCache(),
        filters,
        keep,
        dryRun: flags.dryRun,
        jobs,
        onEvent: progress?.event,
        signal,
      });
      progress?.finish();
      process.stdout.write(flags.json ? JSON.stringify(report, null, 2) + "\n" : summary(report));
      if (report.failed.length) {
        throw new Error(`${report.failed.length} version(s) not mirrored (see above); the rest was`);
      }
    } finally {
      release();
      progress?.finish();
      await publisher?.close();
      stream.close();
      await close();
    }
  });
}
