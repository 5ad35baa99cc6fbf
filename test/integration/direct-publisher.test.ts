/**
 * `pushImage` through the direct Publisher (cli/direct-publisher.ts): an image folder published
 * into a registry opened on a data folder, with no server, through the same upload sessions and
 * publish service the API uses.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pushImage } from "../../client/push.js";
import { DirectPublisher } from "../../cli/direct-publisher.js";
import { openRegistry, type Registry } from "../../registry/registry.js";
import { DEFAULTS } from "../../server/config.js";
import { TINY_PRODUCT, buildTinyImage, type TinyImage } from "../support/tiny-image.js";

async function sha256(...files: string[]): Promise<string> {
  const h = createHash("sha256");
  for (const f of files) h.update(await readFile(f));
  return h.digest("hex");
}

describe("DirectPublisher", () => {
  let work: string;
  let reg: Registry;
  let image: TinyImage;

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "lxhub-direct-"));
    reg = await openRegistry({ ...DEFAULTS, dataDir: path.join(work, "data") });
    image = await buildTinyImage(path.join(work, "image"));
  });
  after(async () => {
    await reg?.close();
    await rm(work, { recursive: true, force: true });
  });

  it("publishes an image folder into a registry; a second push sends nothing", async () => {
    const meta = image.files["lxd.tar.xz"] as string;
    const root = image.files["rootfs.tar.xz"] as string;
    const publisher = new DirectPublisher(reg);
    const r = await pushImage({ dir: image.dir, publisher });

    assert.deepEqual(r.product, TINY_PRODUCT);
    assert.equal(r.version, "20240101_0000");
    assert.equal(r.created, true);
    assert.deepEqual(
      r.files.map((f) => [f.name, f.ftype, f.uploaded]),
      [
        ["lxd.tar.xz", "lxd.tar.xz", true],
        ["rootfs.tar.xz", "root.tar.xz", true],
      ],
    );
    const size = r.files.reduce((n, f) => n + f.size, 0);
    assert.equal(r.bytesUploaded, size);
    assert.equal(r.bytesSkipped, 0);

    // The version and its files are in the catalog, and the blobs in the store.
    const product = await reg.products.get(TINY_PRODUCT);
    assert.deepEqual(product.aliases, ["tiny/1/default", "tiny/1"]);
    assert.deepEqual(
      product.versions.map((v) => v.version),
      ["20240101_0000"],
    );
    const v = product.versions[0]!;
    assert.deepEqual(
      v.files.map((f) => [f.name, f.ftype, f.digest]),
      r.files.map((f) => [f.name, f.ftype, f.digest]),
    );
    for (const f of r.files) assert.ok(await publisher.hasBlob(f.digest), `${f.name} stored`);

    // The fingerprint was hashed while the root file was stored (metadata as prefix) and recorded.
    const fingerprint = await sha256(meta, root);
    const [metaFile, rootFile] = r.files;
    assert.equal(await reg.catalog.images.getCombined(metaFile!.digest, rootFile!.digest), fingerprint);
    assert.deepEqual(r.fingerprints, { "root.tar.xz": fingerprint });
    assert.deepEqual(v.fingerprints, r.fingerprints);

    // Again, through the same publisher: nothing sent, the version already there.
    const again = await pushImage({ dir: image.dir, publisher });
    assert.equal(again.created, false);
    assert.equal(again.bytesUploaded, 0);
    assert.equal(again.bytesSkipped, size);
    assert.deepEqual(
      again.files.map((f) => f.uploaded),
      [false, false],
    );
    assert.deepEqual(again.fingerprints, r.fingerprints);
    assert.equal(publisher.bytesUploaded, size);
  });

  it("names the registry's refusal in the error", async () => {
    const other = await buildTinyImage(path.join(work, "other"), { marker: "other" });
    // Same product and version, other files: versions are immutable.
    await assert.rejects(
      pushImage({ dir: other.dir, publisher: new DirectPublisher(reg) }),
      /cannot publish tiny\/1\/amd64\/default version 20240101_0000: VERSION_CONFLICT: /,
    );
  });
});
