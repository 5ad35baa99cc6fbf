import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import type {
  HeldVersion,
  Product,
  PublishFile,
  PublishOutcome,
  PublishRequest,
  Publisher,
  PutProgress,
} from "../client/publisher.js";
import { LxhubError } from "../registry/errors.js";
import { productTarget } from "../registry/paths.js";
import type { Actor } from "../registry/publish.js";
import type { Registry } from "../registry/registry.js";

export interface DirectPublisherOptions {
  /** Who publishes, in the audit log and as the owner of upload sessions; default `cli`. */
  subject?: string;
  onProgress?: (p: PutProgress) => void;
}

/**
 * The `Publisher` port on a registry opened on this machine (openRegistry), for offline commands
 * and a local mirror: no HTTP, but the same services the API calls, so the same checks apply —
 * bytes go through an upload session (hashed while written, visible only after the digest
 * matched, the image fingerprint hashed on the way with the metadata as prefix), versions through
 * PublishService with an admin actor. Not resumable: an interrupted file is cancelled and sent
 * again from the start next time. The caller keeps the registry: close() does not close it.
 */
export class DirectPublisher implements Publisher {
  bytesUploaded = 0;
  bytesSkipped = 0;
  private readonly actor: Actor;

  constructor(
    private readonly registry: Registry,
    private readonly opts: DirectPublisherOptions = {},
  ) {
    this.actor = { subject: opts.subject ?? "cli", scopes: ["admin"] };
  }

  async hasBlob(digest: string): Promise<boolean> {
    return (await this.registry.uploads.wanted(digest)) !== null;
  }

  async putFile(file: PublishFile, digest: string, prefix?: string): Promise<boolean> {
    if (await this.hasBlob(digest)) {
      this.bytesSkipped += file.size;
      this.opts.onProgress?.({ phase: "skip", file: file.name, size: file.size });
      return false;
    }
    const uploads = this.registry.uploads;
    const session = await uploads.open(this.actor.subject, prefix).catch((err: unknown) => {
      throw explain(err, `cannot store ${file.path}`);
    });
    let sent = 0;
    const report = (done: number) =>
      this.opts.onProgress?.({ phase: "upload", file: file.name, done, total: file.size });
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const chunk of createReadStream(file.path, { highWaterMark: 1024 * 1024 })) {
        sent += (chunk as Buffer).length;
        report(sent);
        yield chunk as Buffer;
      }
    }
    try {
      report(0);
      const view = await uploads.append(session.id, 0, Readable.from(counted(), { objectMode: false }));
      if (view.offset !== file.size) {
        throw new Error(`${file.path} holds ${view.offset} bytes, not ${file.size} (did it change?)`);
      }
      await uploads.commit(session.id, digest, this.actor.subject);
    } catch (err) {
      await uploads.cancel(session.id).catch(() => undefined);
      if (err instanceof LxhubError && err.code === "DIGEST_MISMATCH") {
        throw new Error(
          `the registry computed a different sha256 for ${file.path} than ${digest} (did the file change while storing?)`,
        );
      }
      throw explain(err, `cannot store ${file.path}`);
    } finally {
      this.bytesUploaded += sent;
    }
    return true;
  }

  async publishVersion(product: Product, version: string, req: PublishRequest): Promise<PublishOutcome> {
    try {
      const r = await this.registry.publish.putVersion(this.actor, product, version, {
        files: req.files,
        aliases: req.aliases,
        releaseTitle: req.releaseTitle,
        requirements: req.requirements,
      });
      return { created: r.created, fingerprints: r.version.fingerprints };
    } catch (err) {
      throw explain(err, `cannot publish ${productTarget(product)} version ${version}`);
    }
  }

  async versions(product: Product): Promise<Map<string, HeldVersion>> {
    const out = new Map<string, HeldVersion>();
    try {
      const p = await this.registry.products.get(product);
      for (const v of p.versions) out.set(v.version, { files: v.files, fingerprints: v.fingerprints });
    } catch (err) {
      if (!(err instanceof LxhubError && err.code === "NOT_FOUND")) throw err;
    }
    return out;
  }

  async deleteVersion(product: Product, version: string): Promise<void> {
    try {
      await this.registry.publish.deleteVersion(this.actor, product, version);
    } catch (err) {
      throw explain(err, `cannot retire ${productTarget(product)} version ${version}`);
    }
  }

  close(): void {}
}

/** A registry error as one line naming what failed, its code and why; anything else as it is. */
function explain(err: unknown, what: string): unknown {
  if (err instanceof LxhubError) return new Error(`${what}: ${err.code}: ${err.message}`, { cause: err });
  return err;
}
