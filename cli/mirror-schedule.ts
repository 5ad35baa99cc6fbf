import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { BlobCache } from "../client/cache.js";
import { mirror, type MirrorReport } from "../client/mirror.js";
import { SerialStore } from "../client/remotes.js";
import { parseDuration } from "../client/settings.js";
import { describeError, openStream, resolveTarget } from "../client/verify.js";
import type { Registry } from "../registry/registry.js";
import { FilterError, parseFilter, type Filter } from "../simplestreams/filters.js";
import { dataPath, MIRROR_NAME_RE } from "../storage/layout.js";
import { DirectPublisher } from "./direct-publisher.js";

/**
 * Scheduled mirrors of `lxhub serve --mirrors FILE`: each entry of the file is synced at start
 * and then every `interval` by the client's `mirror` (client/mirror.ts), writing through the
 * direct Publisher into the registry the server serves, so a mirrored version appears in the
 * documents as any push does. With replicas, one replica at a time runs a given mirror (a catalog
 * lock); each run's outcome is recorded in the catalog (registry/mirrors.ts) for the API and the
 * metrics.
 */

const MIN_INTERVAL_SECONDS = 1;

const entrySchema = z
  .object({
    name: z
      .string()
      .regex(MIRROR_NAME_RE, "letters, digits, _ and -, at most 64, starting with a letter or digit"),
    upstream: z.string().regex(/^https?:\/\/[^\s]+$/, "an http(s):// URL"),
    key: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    no_signature: z.boolean().optional(),
    ca: z.string().min(1).optional(),
    filters: z.array(z.string()).default([]),
    keep: z.number().int().min(1).optional(),
    interval: z.union([z.string(), z.number().positive()]).default("1h"),
    jobs: z.number().int().min(1).max(64).default(2),
  })
  .strict()
  .refine((m) => (m.key !== undefined) !== (m.no_signature === true), {
    message: "give the upstream's signing key (key: THUMBPRINT) or no_signature: true, not both",
  });

const fileSchema = z.object({ mirrors: z.array(entrySchema) }).strict();

export interface ScheduledMirror {
  name: string;
  upstream: string;
  keys: string[];
  noSignature: boolean;
  ca?: string;
  filters: Filter[];
  keep?: number;
  intervalSeconds: number;
  jobs: number;
}

/** Reads and checks the mirrors file; errors name the file and the entry's key. */
export function loadMirrorsFile(file: string): ScheduledMirror[] {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`--mirrors ${file}: ${(err as Error).message}`);
  }
  const parsed = fileSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`--mirrors ${file}: ${issue.path.join(".") || "(top)"}: ${issue.message}`);
  }
  const names = new Set<string>();
  return parsed.data.mirrors.map((m, i) => {
    const at = `--mirrors ${file}: mirrors.${i}`;
    if (names.has(m.name)) throw new Error(`${at}.name: ${m.name} is given twice`);
    names.add(m.name);
    let filters: Filter[];
    try {
      filters = m.filters.map(parseFilter);
    } catch (err) {
      if (err instanceof FilterError) throw new Error(`${at}.filters: ${err.message}`);
      throw err;
    }
    const intervalSeconds =
      typeof m.interval === "number" ? m.interval : parseDuration(m.interval, `${at}.interval`) / 1000;
    if (intervalSeconds < MIN_INTERVAL_SECONDS) {
      throw new Error(`${at}.interval: at least ${MIN_INTERVAL_SECONDS} s`);
    }
    return {
      name: m.name,
      upstream: m.upstream,
      keys: m.key === undefined ? [] : Array.isArray(m.key) ? m.key : [m.key],
      noSignature: m.no_signature === true,
      ca: m.ca,
      filters,
      keep: m.keep,
      intervalSeconds,
      jobs: m.jobs,
    };
  });
}

/** Runs each mirror at start and every interval until stopped. */
export class MirrorScheduler {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly running = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private stopped = false;

  constructor(
    private readonly registry: Registry,
    private readonly mirrors: readonly ScheduledMirror[],
    private readonly opts: { dataDir: string; log: Logger },
  ) {}

  start(): void {
    for (const m of this.mirrors) this.schedule(m, 0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.abort.abort(new Error("the server is stopping"));
    await Promise.allSettled([...this.running]);
  }

  private schedule(m: ScheduledMirror, delayMs: number): void {
    if (this.stopped) return;
    const timer = setTimeout(() => {
      const run = this.runOnce(m).finally(() => {
        this.running.delete(run);
        this.schedule(m, m.intervalSeconds * 1000);
      });
      this.running.add(run);
    }, delayMs);
    timer.unref();
    this.timers.set(m.name, timer);
  }

  /** One sync of `m`, unless another replica runs it now; never throws. */
  async runOnce(m: ScheduledMirror): Promise<void> {
    const log = this.opts.log;
    try {
      const r = await this.registry.catalog.locks.tryLock(`lxhub:mirror:${m.name}`, () => this.sync(m));
      if (r.held) log.info({ event: "mirror-skipped", mirror: m.name, reason: "running on another replica" });
    } catch (err) {
      log.error({ event: "mirror-status-failed", mirror: m.name, err: describeError(err) });
    }
  }

  private async sync(m: ScheduledMirror): Promise<void> {
    const log = this.opts.log;
    const status = this.registry.mirrors;
    await status.started(m.name, m.upstream);
    log.info({ event: "mirror-started", mirror: m.name, upstream: m.upstream });
    let report: MirrorReport | null = null;
    let error: string | null = null;
    try {
      const target = await resolveTarget(m.upstream, {
        caFile: m.ca,
        keys: m.keys,
        noSignature: m.noSignature,
      });
      const stream = await openStream(target, {
        serials: new SerialStore(dataPath(this.opts.dataDir, { kind: "mirrorState", name: m.name })),
        signal: this.abort.signal,
        retries: 4,
      });
      try {
        report = await mirror(stream, {
          publisher: new DirectPublisher(this.registry, { subject: `mirror:${m.name}` }),
          cache: new BlobCache(dataPath(this.opts.dataDir, { kind: "mirrorCache" })),
          filters: m.filters,
          keep: m.keep,
          jobs: m.jobs,
          signal: this.abort.signal,
        });
      } finally {
        stream.close();
      }
    } catch (err) {
      error = describeError(err);
    }
    const outcome = {
      at: new Date().toISOString(),
      error,
      added: report?.added.length ?? 0,
      retired: report?.retired.length ?? 0,
      failed: report?.failed.length ?? 0,
      bytes: report?.bytesDownloaded ?? 0,
      versions: report ? report.plan.present + report.added.length - report.retired.length : 0,
    };
    await status.finished(m.name, outcome);
    if (error) log.error({ event: "mirror-failed", mirror: m.name, upstream: m.upstream, error });
    else {
      log.info({ event: "mirror-finished", mirror: m.name, ...outcome });
      for (const f of report?.failed ?? []) {
        log.warn({ event: "mirror-version-failed", mirror: m.name, ...f });
      }
    }
  }
}
