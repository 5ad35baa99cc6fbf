import { it } from "node:test";
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { METADATA_SCAN_MAX_BYTES, readImageMetadata } from "../../../image/metadata.js";
import { ImageFormatError } from "../../../image/errors.js";
import { metadataBomb, TINY_METADATA_YAML } from "../../support/metadata-bomb.js";

it("refuses quickly a half-MB lxd.tar.xz that inflates to 3 GiB before metadata.yaml, naming the limit", async () => {
  const bomb = await metadataBomb(3 * 1024 ** 3, TINY_METADATA_YAML);
  assert.ok(bomb.length < 1024 * 1024, `the bomb weighs ${bomb.length} bytes`);
  const t0 = Date.now();
  await assert.rejects(readImageMetadata(Readable.from([bomb])), (err: unknown) => {
    assert.ok(err instanceof ImageFormatError, String(err));
    assert.equal(err.reason, "DECOMPRESSED_TOO_LARGE");
    assert.match(err.message, new RegExp(`first ${METADATA_SCAN_MAX_BYTES} bytes .*after xz decompression`));
    return true;
  });
  const ms = Date.now() - t0;
  assert.ok(ms < 10_000, `took ${ms} ms`);
});

it("the limit is a parameter: the same tarball passes under a larger one and fails under a smaller one", async () => {
  const tarball = await metadataBomb(2 * 1024 * 1024, TINY_METADATA_YAML);
  const md = await readImageMetadata(Readable.from([tarball]), { maxScanBytes: 4 * 1024 * 1024 });
  assert.equal(md.properties.os, "bomb");
  await assert.rejects(
    readImageMetadata(Readable.from([tarball]), { maxScanBytes: 1024 * 1024 }),
    /first 1048576 bytes/,
  );
});
