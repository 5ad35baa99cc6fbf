import { mkdir } from "node:fs/promises";
import { Keyring } from "../signing/keyring.js";
import { FileOpenPgpKeyStore, OpenPgpSigner } from "../signing/openpgp.js";
import { openBlobStore } from "../storage/blobs/open.js";
import type { BlobStore } from "../storage/blobs/store.js";
import { Catalog, catalogConfigFromUrl, type ProductKey } from "../storage/catalog/catalog.js";
import { CatalogKeyStore, CatalogOpenPgpKeyStore, KeyService } from "./keys.js";
import { dataPath } from "../storage/layout.js";
import { IndexService } from "./indexer.js";
import { ProductService } from "./products.js";
import { MirrorStatusService } from "./mirrors.js";
import { GarbageCollector } from "./gc.js";
import { RegistryStats } from "./stats.js";
import { DeltaService, type DeltaOutcome } from "./deltas.js";
import { xdeltaAvailable } from "../image/vcdiff.js";
import { RetentionService, type RetentionPolicy } from "./retention.js";
import type { Actor } from "./publish.js";

/** Who retires versions after a publish, in the audit log. */
export const RETENTION_ACTOR: Actor = { subject: "retention", scopes: ["admin"] };
import { PublishService } from "./publish.js";
import { TokenService } from "./tokens.js";
import { UploadService } from "./uploads.js";
import { PullThroughService, type PullThroughOptions, type UpstreamSource } from "./pull-through.js";

export interface RegistryOptions {
  dataDir: string;
  /** Catalog: `postgres://…`, `sqlite:FILE`, or undefined for `<data>/catalog.sqlite` (catalog.ts). */
  db?: string;
  /** Blob store URL: `s3://BUCKET/PREFIX?endpoint=…`, `file://DIR`, or undefined for the data folder (storage/blobs/open.ts). */
  blobs?: string;
  statementTtlSeconds: number;
  uploadTtlSeconds: number;
  maxBlobBytes: number;
  issuer: string;
  /**
   * An armored OpenPGP private key file to sign the `.sjson`/`.json.gpg` documents with; default:
   * one made on first start, kept in the data folder (or the shared catalog's secrets).
   */
  openpgpKey?: string;
  /** Told once about each catalog record the documents leave out because it breaks a rule. */
  onProblem?: (problem: string) => void;
  /** Told when a replica fails to follow the shared catalog (it keeps serving what it has). */
  onSyncError?: (err: Error) => void;
  /** Upload quotas per token (defaults: UPLOAD_QUOTA_DEFAULTS). */
  maxUploadsPerToken?: number;
  maxUploadBytesPerToken?: number;
  /** A pull-through cache of this upstream (registry/pull-through.ts); its last good copy is seeded here. */
  pullThrough?: { source: UpstreamSource } & PullThroughOptions;
  /**
   * Make a delta from the previous version after each publish (needs the xdelta3 program; without
   * it `onDeltaUnavailable` is told once and none are made). Off for offline commands.
   */
  deltas?: boolean;
  onDeltaUnavailable?: () => void;
  onDelta?: (key: ProductKey, version: string, outcome: DeltaOutcome) => void;
  onDeltaError?: (key: ProductKey, version: string, err: unknown) => void;
  /** Retention policies applied after each publish (`lxhub serve --retain`). */
  retention?: RetentionPolicy[];
  /** Told when retention after a publish fails (the publish itself committed). */
  onRetentionError?: (err: unknown) => void;
}

/** Every service of one registry, wired over its storage; used by `serve` and by offline commands. */
export interface Registry {
  catalog: Catalog;
  blobs: BlobStore;
  keyring: Keyring;
  /** `lxhub key list|rotate|retire`. */
  keys: KeyService;
  /** The OpenPGP key of the documents for the canonical simplestreams tools. */
  openpgp: OpenPgpSigner;
  tokens: TokenService;
  index: IndexService;
  publish: PublishService;
  products: ProductService;
  uploads: UploadService;
  /** Present when the server is a pull-through cache of an upstream. */
  pullThrough?: PullThroughService;
  /** Status of the scheduled mirrors. */
  mirrors: MirrorStatusService;
  /** Retention policies, applied after each publish and on demand. */
  retention: RetentionService;
  /** Online garbage collection of the blob store. */
  gc: GarbageCollector;
  /** What this process's registry did, for the metrics. */
  stats: RegistryStats;
  /** Server-made deltas; null when off or xdelta3 is missing. */
  deltas: DeltaService | null;
  /** Limits the server checks at its boundary before reading a body. */
  limits: { maxBlobBytes: number };
  close(): Promise<void>;
}

export async function openRegistry(opts: RegistryOptions): Promise<Registry> {
  // 0700: the folder holds the signing keys, the token secret and the TLS key (each also 0600 in
  // a 0700 folder of its own); an existing folder keeps the mode its operator gave it.
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const catalog = await Catalog.open(
    catalogConfigFromUrl(opts.db, dataPath(opts.dataDir, { kind: "catalog" })),
  );
  try {
    const blobs = await openBlobStore(opts.blobs, opts.dataDir);
    // Replicas sharing a catalog share its keys; the first to start makes the first key.
    const keyring = catalog.shared
      ? await catalog.locks.withLock("lxhub:keys", () => Keyring.open(new CatalogKeyStore(catalog.secrets)))
      : await Keyring.open(dataPath(opts.dataDir, { kind: "signingKeys" }));
    const openpgp = await openOpenPgpSigner(opts, catalog);
    const tokens = await TokenService.open(catalog, dataPath(opts.dataDir, { kind: "tokenSecret" }));
    const pullThrough = opts.pullThrough
      ? new PullThroughService(opts.pullThrough.source, blobs, catalog, {
          maxFileBytes: opts.maxBlobBytes,
          ...opts.pullThrough,
        })
      : undefined;
    await pullThrough?.seed();
    const stats = new RegistryStats();
    const index = new IndexService(catalog, keyring, {
      onSealed: (seconds) => {
        stats.indexBuilds++;
        stats.indexBuildSeconds += seconds;
        stats.lastIndexBuildSeconds = seconds;
      },
      statementTtlSeconds: opts.statementTtlSeconds,
      issuer: opts.issuer,
      openpgp,
      onProblem: opts.onProblem,
      onSyncError: opts.onSyncError,
      extra: pullThrough,
    });
    pullThrough?.attach(() => index.rebuild());
    const publish = new PublishService(catalog, blobs, index);
    publish.onPublished(
      async () => void stats.published++,
      () => undefined,
    );
    const retention = new RetentionService(catalog, publish, opts.retention ?? []);
    let deltas: DeltaService | null = null;
    if (opts.deltas) {
      if (await xdeltaAvailable()) {
        deltas = new DeltaService(catalog, blobs, publish, {
          dataDir: opts.dataDir,
          onDone: (key, version, outcome) => {
            if (outcome.made) stats.deltas++;
            opts.onDelta?.(key, version, outcome);
          },
          onError: opts.onDeltaError,
        });
        const d = deltas;
        publish.onPublished(
          async (key, version) => d.schedule(key, version),
          () => undefined,
        );
      } else opts.onDeltaUnavailable?.();
    }
    if (retention.policies.length) {
      publish.onPublished(
        async (key) => void (await retention.prune(RETENTION_ACTOR, { only: key })),
        (err) => opts.onRetentionError?.(err),
      );
    }
    const uploads = new UploadService(blobs, catalog, {
      stats,
      ttlSeconds: opts.uploadTtlSeconds,
      maxBlobBytes: opts.maxBlobBytes,
      maxSessionsPerToken: opts.maxUploadsPerToken,
      maxSessionBytesPerToken: opts.maxUploadBytesPerToken,
    });
    return {
      catalog,
      blobs,
      keyring,
      keys: new KeyService(catalog, keyring, index, opts.issuer),
      openpgp,
      tokens,
      index,
      publish,
      products: new ProductService(catalog),
      uploads,
      pullThrough,
      mirrors: new MirrorStatusService(catalog),
      retention,
      // Cached upstream files are named by no catalog version: the cache says which it serves.
      stats,
      gc: new GarbageCollector(catalog, blobs, {
        stats,
        // Blobs no version names but the server needs: the pull-through cache's files, and the
        // metadata blobs open upload sessions hash as their prefix.
        extraNeeded: async () => {
          const needed = await uploads.openPrefixes();
          for (const d of pullThrough?.neededBlobs() ?? []) needed.add(d);
          return needed;
        },
      }),
      deltas,
      limits: { maxBlobBytes: opts.maxBlobBytes },
      close: async () => {
        pullThrough?.stop();
        index.stop();
        await deltas?.idle();
        await catalog.close();
        await blobs.close?.();
      },
    };
  } catch (err) {
    await catalog.close();
    throw err;
  }
}

/** The given key, else the one kept in the shared catalog or the data folder (made on first start). */
function openOpenPgpSigner(opts: RegistryOptions, catalog: Catalog): Promise<OpenPgpSigner> {
  const userId = `${opts.issuer} simplestreams signing key`;
  if (opts.openpgpKey) return OpenPgpSigner.fromFile(opts.openpgpKey);
  // Replicas make it under the keys' lock, as the Ed25519 keys (the store's first writer wins anyway).
  if (catalog.shared) {
    return catalog.locks.withLock("lxhub:keys", () =>
      OpenPgpSigner.open(new CatalogOpenPgpKeyStore(catalog.secrets), userId),
    );
  }
  return OpenPgpSigner.open(new FileOpenPgpKeyStore(dataPath(opts.dataDir, { kind: "openpgpKey" })), userId);
}
