import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import { applyDelta } from "../image/vcdiff.js";
import type { StreamImage } from "../simplestreams/index.js";
import { fetchFile, type BlobCache, type FetchOptions } from "./cache.js";
import { fileName, type OpenedStream } from "./verify.js";

/** How a root file was made from a delta instead of downloaded whole. */
export interface DeltaUse {
  /** Version the delta starts from (its root was in the cache). */
  base: string;
  /** The delta's file name. */
  name: string;
  size: number;
  /** Bytes received from the network for the delta. */
  downloaded: number;
}

/**
 * When the image's squashfs root is not cached but a delta of it is listed whose base version's
 * root is (simplestreams.md §5), downloads the delta (verified against its sha256), rebuilds the
 * root with xdelta3 and puts it in the cache only if the result has the root's size and sha256;
 * the pull then takes it from the cache and checks it again, with the fingerprint. Returns null
 * when no delta applies or any step fails (xdelta3 missing included): the root is then
 * downloaded whole. An abort is passed on.
 */
export async function rebuildFromDelta(
  stream: OpenedStream,
  image: StreamImage,
  cache: BlobCache,
  opts: Omit<FetchOptions, "http" | "cache" | "chain" | "sink">,
): Promise<DeltaUse | null> {
  const root = image.root;
  if (!root || root.ftype !== "squashfs" || (await cache.has(root.sha256, root.size))) return null;
  for (const d of image.deltas) {
    if (d.ftype !== "squashfs.vcdiff") continue;
    const base = baseRoot(stream, image.productKey, d.deltaBase);
    if (!base || !(await cache.has(base.sha256, base.size))) continue;
    const out = `${cache.path(root.sha256)}.delta-${process.pid}`;
    try {
      const got = await fetchFile(
        { name: fileName(d.path), path: d.path, sha256: d.sha256, size: d.size },
        { ...opts, http: stream.http, cache },
      );
      await applyDelta(cache.path(base.sha256), got.file, out, opts.signal);
      const st = await stat(out);
      if (st.size !== root.size || (await sha256(out)) !== root.sha256) {
        await rm(out, { force: true });
        continue;
      }
      await rename(out, cache.path(root.sha256));
      await cache.evict(d.sha256);
      return { base: d.deltaBase, name: fileName(d.path), size: d.size, downloaded: got.downloaded };
    } catch (err) {
      await rm(out, { force: true });
      if (opts.signal?.aborted) throw err;
    }
  }
  return null;
}

/** The squashfs item of `version` of the product, from the verified products documents. */
function baseRoot(
  stream: OpenedStream,
  productKey: string,
  version: string,
): { sha256: string; size: number } | null {
  for (const doc of stream.products) {
    const v = doc.products.get(productKey)?.versions.get(version);
    for (const item of v?.items.values() ?? []) {
      if (item.ftype === "squashfs" && /^[0-9a-f]{64}$/.test(item.sha256)) return item;
    }
  }
  return null;
}

async function sha256(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest("hex");
}
