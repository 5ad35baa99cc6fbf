/**
 * The two-version product every client end-to-end suite publishes (test/e2e/lxd.test.ts,
 * test/e2e/incus.test.ts): busybox 1.36, version 1 and the newer version 2 with a marker file
 * unique to the run, and what a client must show when it lists them (simplestreams.md §3.5, §4).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { ListedImage } from "./container-manager.js";
import { buildBusyboxImage, imageFingerprint, type BusyboxImage } from "./image-fixture.js";

/** The product's short alias; LXD and Incus also register `/default` and `/amd64` forms. */
export const BUSYBOX_ALIAS = "busybox/1.36";
/** Token scope that allows publishing the product (scope grammar: push:<os pattern>). */
export const BUSYBOX_PUSH_SCOPE = "push:busybox/*";

export interface BusyboxVersion {
  image: BusyboxImage;
  /** The version key (the serial the image was built with). */
  serial: string;
  fingerprint: string;
}

/** Builds version 1 and version 2 under `work` (`v1/`, `v2/`); `run` makes the markers unique. */
export async function buildBusyboxVersions(
  work: string,
  run: string,
): Promise<[BusyboxVersion, BusyboxVersion]> {
  const common = { os: "busybox", release: "1.36", variant: "default" } as const;
  const build = async (n: 1 | 2, serial: string): Promise<BusyboxVersion> => {
    const image = await buildBusyboxImage(join(work, `v${n}`), { ...common, serial, marker: `v${n} ${run}` });
    return { image, serial, fingerprint: await imageFingerprint(image) };
  };
  return Promise.all([build(1, "20240101_0000"), build(2, "20240201_0000")]);
}

/**
 * Asserts a client's `image list REMOTE: --format json` of the product: both versions with their
 * fingerprints, container images for x86_64, the aliases only on the newest, the product's
 * properties. Returns the newest image for further checks.
 */
export function assertBothVersionsListed(
  images: readonly ListedImage[],
  [v1, v2]: readonly [BusyboxVersion, BusyboxVersion],
): ListedImage {
  const bySerial = new Map(images.map((i) => [i.properties.serial, i]));
  assert.deepEqual([...bySerial.keys()].sort(), [v1.serial, v2.serial]);

  const newest = bySerial.get(v2.serial);
  const older = bySerial.get(v1.serial);
  assert.ok(newest && older);
  assert.equal(newest.fingerprint, v2.fingerprint);
  assert.equal(older.fingerprint, v1.fingerprint);
  assert.equal(newest.type, "container");
  assert.equal(newest.architecture, "x86_64");
  const names = (newest.aliases ?? []).map((a) => a.name);
  for (const a of [BUSYBOX_ALIAS, `${BUSYBOX_ALIAS}/default`, `${BUSYBOX_ALIAS}/amd64`])
    assert.ok(names.includes(a), `alias ${a} in ${names}`);
  assert.deepEqual(older.aliases ?? [], []);
  assert.equal(newest.properties.os, "busybox");
  assert.equal(newest.properties.release, "1.36");
  assert.equal(newest.properties.variant, "default");
  return newest;
}
