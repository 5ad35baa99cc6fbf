import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { applyDelta, encodeDelta } from "../image/vcdiff.js";
import { compareVersionKeys } from "../simplestreams/version.js";
import type { BlobStore } from "../storage/blobs/store.js";
import type { Catalog, ItemRecord, ProductKey } from "../storage/catalog/catalog.js";
import { dataPath } from "../storage/layout.js";
import { productTarget } from "./paths.js";
import type { Actor, PublishService } from "./publish.js";
import { GC_SWEEP_LOCK } from "./uploads.js";

/** Who adds deltas, in the audit log. */
export const DELTA_ACTOR: Actor = { subject: "deltas", scopes: ["admin"] };

/**
 * A delta is published only if it is smaller than this fraction of the full root file: a client
 * that already holds the previous version then downloads at most 80 % of the bytes.
 */
export const MAX_DELTA_RATIO = 0.8;

export type DeltaOutcome =
  | { made: true; name: string; size: number; fullSize: number; base: string }
  | { made: false; reason: string };

/**
 * Server-made deltas (simplestreams.md §5): after a version of a product is published, an xdelta3
 * (VCDIFF) delta from the product's previous live version's `squashfs` root to the new one is made
 * in the background, checked by applying it and hashing the result against the new root, stored
 * as a blob and listed as the version's `squashfs.vcdiff` item with `delta_base` (at most one per
 * version, and only if smaller than MAX_DELTA_RATIO of the full file). LXD and Incus daemons that
 * hold the previous image then download the delta instead of the whole root.
 *
 * Only squashfs roots get deltas: Incus matches a `disk-kvm.img.vcdiff` against the base
 * version's container image (simplestreams.md §5), so a VM disk delta could be applied to the
 * wrong file. Deltas run one at a time; a failure is reported and leaves the version as it was.
 */
export class DeltaService {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly catalog: Catalog,
    private readonly blobs: BlobStore,
    private readonly publish: PublishService,
    private readonly opts: {
      dataDir: string;
      onDone?: (key: ProductKey, version: string, outcome: DeltaOutcome) => void;
      onError?: (key: ProductKey, version: string, err: unknown) => void;
    },
  ) {}

  /** Queues the delta of `version`; returns at once. */
  schedule(key: ProductKey, version: string): void {
    this.queue = this.queue
      .then(() => this.make(key, version))
      .then(
        (outcome) => this.opts.onDone?.(key, version, outcome),
        (err: unknown) => this.opts.onError?.(key, version, err),
      );
  }

  /** Resolves once every queued delta is done (for an orderly stop). */
  idle(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  /** Makes and publishes the delta of `version` from the product's previous live version. */
  async make(key: ProductKey, version: string): Promise<DeltaOutcome> {
    const product = await this.catalog.images.getProduct(key);
    if (!product) return { made: false, reason: `no product ${productTarget(key)}` };
    const live = (await this.catalog.images.listVersions(product.id)).filter((v) => !v.deletedAt);
    const target = live.find((v) => v.name === version);
    const targetRoot = target?.items.find((i) => i.ftype === "squashfs");
    if (!target || !targetRoot) return { made: false, reason: "the version has no squashfs root" };
    if (target.items.some((i) => i.ftype === "squashfs.vcdiff"))
      return { made: false, reason: "it has a delta" };
    const older = live
      .filter((v) => compareVersionKeys(v.name, version) < 0)
      .sort((a, b) => compareVersionKeys(b.name, a.name))[0];
    const baseRoot = older?.items.find((i) => i.ftype === "squashfs");
    if (!older || !baseRoot) return { made: false, reason: "no previous version with a squashfs root" };
    if (baseRoot.digest === targetRoot.digest) return { made: false, reason: "the root did not change" };

    const work = dataPath(this.opts.dataDir, {
      kind: "tmpEntry",
      name: `delta-${randomBytes(8).toString("hex")}`,
    });
    await mkdir(work, { recursive: true, mode: 0o700 });
    try {
      const base = await this.local(baseRoot, path.join(work, "base"));
      const full = await this.local(targetRoot, path.join(work, "target"));
      const delta = path.join(work, "delta");
      await encodeDelta(base, full, delta);
      const size = (await stat(delta)).size;
      if (size >= targetRoot.size * MAX_DELTA_RATIO) {
        return { made: false, reason: `the delta (${size} bytes) saves too little of ${targetRoot.size}` };
      }
      // What a client will rebuild must be the published root, byte for byte.
      const rebuilt = path.join(work, "rebuilt");
      await applyDelta(base, delta, rebuilt);
      const got = await sha256(rebuilt);
      if (`sha256:${got}` !== targetRoot.digest) {
        throw new Error(`the delta rebuilds sha256:${got}, not the root ${targetRoot.digest}`);
      }
      // Recorded as used at once, under the sweep lock, so a collection cannot take it before
      // the version names it (registry/gc.ts).
      const info = await this.catalog.locks.withLock(GC_SWEEP_LOCK, async () => {
        const stored = await this.blobs.put(createReadStream(delta));
        await this.catalog.images.recordBlob(stored.digest, stored.size);
        return stored;
      });
      const name = `delta-${older.name.replace(/[^A-Za-z0-9._-]/g, "_")}.vcdiff`;
      const added = await this.publish.addDelta(DELTA_ACTOR, key, version, {
        name,
        ftype: "squashfs.vcdiff",
        digest: info.digest,
        size: info.size,
        deltaBase: older.name,
      });
      if (!added) return { made: false, reason: "the version or its base changed meanwhile" };
      return { made: true, name, size: info.size, fullSize: targetRoot.size, base: older.name };
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  /** A local file with the blob's bytes: the store's own file when it has one, else a copy in `to`. */
  private async local(item: ItemRecord, to: string): Promise<string> {
    const own = this.blobs.localPath?.(item.digest);
    if (own) return own;
    await pipeline(await this.blobs.read(item.digest), createWriteStream(to, { mode: 0o600 }));
    return to;
  }
}

async function sha256(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest("hex");
}
