import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { readImageMetadata } from "../image/metadata.js";
import { distroArch } from "../simplestreams/arch.js";
import {
  LXC_META_FTYPE,
  ROOT_FTYPES,
  type ImageMetadata,
  type PublishableFtype,
} from "../simplestreams/types.js";
import { isValidVersionKey, versionFromDate } from "../simplestreams/version.js";
import { HttpError, describeConnectionError } from "./http.js";
import { HttpPublisher, type Product, type Publisher, type PutProgress } from "./publisher.js";

export { UploadStateStore, defaultStateDir, type Product, type UploadRecord } from "./publisher.js";

/**
 * `lxhub push`: publish a distrobuilder output folder through a `Publisher` (client/publisher.ts;
 * by default over a server's publish API, openapi.yaml): hash each file, skip blobs the target
 * already has, upload the rest (in resumable chunks over HTTP), then create the version from the
 * digests. The target re-hashes every byte, checks metadata.yaml against the product and computes
 * the image fingerprints itself.
 */

/** Files distrobuilder writes, by name, and the ftype each is published as (simplestreams.md §3.1). */
const METADATA_NAMES = ["lxd.tar.xz", "incus.tar.xz"] as const;
/**
 * The LXC `download` template's metadata (`distrobuilder build-lxc`; simplestreams.md §7.3), published
 * beside a `rootfs.tar.xz` so `lxc-create -t download` finds both in the version's folder.
 */
const LXC_META = "meta.tar.xz";
const ROOT_FILES: ReadonlyArray<readonly [string, PublishableFtype]> = [
  ["rootfs.squashfs", "squashfs"],
  ["rootfs.tar.xz", "root.tar.xz"],
  ["disk.qcow2", "disk-kvm.img"],
];
const VM_FTYPES: ReadonlySet<string> = new Set(["disk-kvm.img", "disk1.img", "uefi1.img"]);

const MiB = 1024 * 1024;

export interface ImageFile {
  /** Name in the folder, kept as the published file name. */
  name: string;
  ftype: PublishableFtype;
  path: string;
  size: number;
}

/** `skip` and `upload` come from the Publisher (PutProgress). */
export type PushProgress =
  { phase: "hash"; file: string; done: number; total: number } | PutProgress | { phase: "publish" };

export interface PushOptions {
  /** Server root URL, e.g. `https://localhost:8443`; required unless `publisher` is given. */
  server?: string;
  /** Folder holding the metadata tarball and root file(s). */
  dir: string;
  /** Bearer token with a `push:` scope matching the product (or `admin`); required unless `publisher` is given. */
  token?: string;
  /** PEM to pin the server's certificate. */
  ca?: string | Buffer;
  /** Extra aliases besides the defaults (`<os>/<release>/<variant>`, and `<os>/<release>` for `default`). */
  aliases?: string[];
  /** Version key; default: metadata.yaml's creation_date as `YYYYMMDD_HHMM` (UTC). */
  version?: string;
  onProgress?: (p: PushProgress) => void;
  /** Where open upload sessions are remembered; default `$XDG_CACHE_HOME/lxhub/uploads`. */
  stateDir?: string;
  /** Bytes per PATCH; default 256 MiB. */
  chunkSize?: number;
  /** Retries of a transient failure (also: attempts to resume a chunk without progress); default 4. */
  retries?: number;
  /** First backoff delay (ms); default 250. */
  retryBaseMs?: number;
  userAgent?: string;
  /**
   * Publish through this adapter instead of an HttpPublisher (the server, token, ca, stateDir,
   * chunkSize, retries, retryBaseMs and userAgent options are then unused). The caller keeps it:
   * pushImage does not close it, and it reports its own skip/upload progress.
   */
  publisher?: Publisher;
}

export interface PushedFile {
  name: string;
  ftype: PublishableFtype;
  digest: string;
  size: number;
  /** false when the target already had the blob. */
  uploaded: boolean;
}

export interface PushResult {
  product: Product;
  version: string;
  /** true when the server created the version (201), false when it already had it (200). */
  created: boolean;
  aliases: string[];
  files: PushedFile[];
  /** Image fingerprints by root ftype, as the server computed them. */
  fingerprints: Record<string, string>;
  /** Whether every root file is a VM disk (then `lxc launch --vm`). */
  vm: boolean;
  /** Bytes sent in request bodies, including any sent again after a dropped connection. */
  bytesUploaded: number;
  /** Bytes not sent: blobs the server had, and what resumed sessions already held. */
  bytesSkipped: number;
}

/** Finds the metadata tarball and root files in a distrobuilder output folder. */
export async function findImageFiles(dir: string): Promise<ImageFile[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new Error(`cannot read image folder ${dir}: ${(err as Error).message}`);
  }
  const present = new Set(names);
  const metaName = METADATA_NAMES.find((n) => present.has(n));
  if (!metaName) {
    throw new Error(
      `no metadata tarball in ${dir} (expected one of ${METADATA_NAMES.join(", ")}` +
        (present.has(LXC_META) ? `; ${LXC_META} is LXC's, published only beside one of them` : "") +
        ")",
    );
  }
  // distrobuilder writes `lxd.tar.xz` or `incus.tar.xz`; the server publishes the metadata file
  // under both ftypes (simplestreams.md §0.1), so one is enough.
  const picked: Array<[string, PublishableFtype]> = [[metaName, "lxd.tar.xz"]];
  for (const [name, ftype] of ROOT_FILES) if (present.has(name)) picked.push([name, ftype]);
  if (present.has(LXC_META) && present.has("rootfs.tar.xz")) picked.push([LXC_META, LXC_META_FTYPE]);
  if (!picked.some(([, ftype]) => (ROOT_FTYPES as readonly string[]).includes(ftype))) {
    throw new Error(
      `no root file in ${dir} (expected ${ROOT_FILES.map(([n]) => n).join(", ")} beside ${metaName})`,
    );
  }
  const files: ImageFile[] = [];
  for (const [name, ftype] of picked) {
    const p = path.join(dir, name);
    const st = await stat(p);
    if (!st.isFile()) throw new Error(`${p} is not a regular file`);
    files.push({ name, ftype, path: p, size: st.size });
  }
  return files;
}

/**
 * Product of an image from its metadata.yaml: os/release/variant from `properties` (variant
 * `default` when absent), arch from `properties.architecture`, else the top-level `architecture`,
 * published in its Debian spelling (simplestreams.md §4.6).
 */
export function productFromMetadata(meta: ImageMetadata): Product {
  const props = meta.properties;
  const os_ = props.os?.trim();
  const release = props.release?.trim();
  if (!os_ || !release) {
    throw new Error("metadata.yaml lacks properties.os or properties.release; cannot name the product");
  }
  const variant = props.variant?.trim() || "default";
  const raw = props.architecture?.trim() || meta.architecture;
  const arch = distroArch(raw);
  if (!arch)
    throw new Error(`metadata.yaml names architecture ${JSON.stringify(raw)}, which LXD does not know`);
  return { os: os_, release, arch, variant };
}

/**
 * Aliases as images.linuxcontainers.org names them (simplestreams.md §4.5): `<os>/<release>/<variant>`
 * with the os lower-cased, plus `<os>/<release>` for the `default` variant, then `extra`.
 * Aliases are joined with commas in the products file, so none may hold a comma or white space (pitfall 7).
 */
export function defaultAliases(product: Product, extra: string[] = []): string[] {
  const osName = product.os.toLowerCase();
  const out = [`${osName}/${product.release}/${product.variant}`];
  if (product.variant === "default") out.push(`${osName}/${product.release}`);
  for (const a of extra) {
    if (!a || /[\s,]/.test(a))
      throw new Error(`invalid alias ${JSON.stringify(a)}: empty, or holds a comma or white space`);
    out.push(a);
  }
  return [...new Set(out)];
}

/** sha256 of a file as `sha256:<hex>`, read in 1 MiB chunks. */
export async function hashFile(file: string, onBytes?: (done: number) => void): Promise<string> {
  const hash = createHash("sha256");
  let done = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: MiB })) {
    hash.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    onBytes?.(done);
  }
  return `sha256:${hash.digest("hex")}`;
}

/** Publishes the image in `opts.dir`; see the module comment for the steps. */
export async function pushImage(opts: PushOptions): Promise<PushResult> {
  const files = await findImageFiles(opts.dir);
  const meta = files[0] as ImageFile;
  let metadata: ImageMetadata;
  try {
    metadata = await readImageMetadata(meta.path);
  } catch (err) {
    throw new Error(`cannot read metadata.yaml from ${meta.path}: ${(err as Error).message}`);
  }
  const product = productFromMetadata(metadata);
  const version = opts.version ?? versionFromDate(new Date(metadata.creationDate * 1000));
  if (!isValidVersionKey(version)) {
    throw new Error(
      `invalid version ${JSON.stringify(version)}: it must start with a date YYYYMMDD and use only [0-9A-Za-z_.:-]`,
    );
  }
  const aliases = defaultAliases(product, opts.aliases);

  const publisher = opts.publisher ?? httpPublisher(opts);
  // A caller's publisher may have published before: report what this push moved.
  const uploadedBefore = publisher.bytesUploaded;
  const skippedBefore = publisher.bytesSkipped;
  try {
    const pushed: PushedFile[] = [];
    const digests: string[] = [];
    for (const f of files) {
      const digest = await hashFile(f.path, (done) =>
        opts.onProgress?.({ phase: "hash", file: f.name, done, total: f.size }),
      );
      digests.push(digest);
    }
    // The metadata file goes first; each root file is then uploaded with it as prefix, so the
    // target computes the image fingerprint while the bytes pass instead of reading them again.
    const metaDigest = digests[files.findIndex((f) => f.ftype === "lxd.tar.xz")];
    for (const [i, f] of files.entries()) {
      const digest = digests[i] as string;
      const root = (ROOT_FTYPES as readonly string[]).includes(f.ftype);
      const uploaded = await publisher.putFile(f, digest, root ? metaDigest : undefined);
      pushed.push({ name: f.name, ftype: f.ftype, digest, size: f.size, uploaded });
    }

    opts.onProgress?.({ phase: "publish" });
    const res = await publisher.publishVersion(product, version, {
      files: pushed.map((f) => ({ name: f.name, ftype: f.ftype, digest: f.digest })),
      aliases,
      releaseTitle: product.release,
    });
    return {
      product,
      version,
      created: res.created,
      aliases,
      files: pushed,
      fingerprints: res.fingerprints,
      vm: files.slice(1).every((f) => VM_FTYPES.has(f.ftype)),
      bytesUploaded: publisher.bytesUploaded - uploadedBefore,
      bytesSkipped: publisher.bytesSkipped - skippedBefore,
    };
  } finally {
    if (!opts.publisher) await publisher.close();
  }
}

function httpPublisher(opts: PushOptions): HttpPublisher {
  if (!opts.server || opts.token === undefined) {
    throw new Error("pushImage needs a server URL and a token, or a publisher");
  }
  return new HttpPublisher({
    server: opts.server,
    token: opts.token,
    ca: opts.ca,
    stateDir: opts.stateDir,
    chunkSize: opts.chunkSize,
    retries: opts.retries,
    retryBaseMs: opts.retryBaseMs,
    userAgent: opts.userAgent,
    onProgress: opts.onProgress,
  });
}

/**
 * A one-line explanation of a push failure for a terminal: names a refused token as such, and
 * otherwise gives the server's code and message.
 */
export function describePushError(err: unknown): string {
  if (err instanceof HttpError) {
    // A bodiless answer (HEAD) has only the synthetic HTTP_<status> code: nothing more to quote.
    const says = err.code.startsWith("HTTP_") ? "" : ` (${err.code}: ${err.message})`;
    if (err.status === 401) return `the server rejected the token${says}; check --token or LXHUB_TOKEN`;
    if (err.status === 403) return `the token is not allowed to push this image${says}`;
    return `${err.request ?? "request"} failed: ${err.status} ${err.code}: ${err.message}`;
  }
  return describeConnectionError(err) ?? (err instanceof Error ? err.message : String(err));
}
