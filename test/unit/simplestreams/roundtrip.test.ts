import { test } from "node:test";
import assert from "node:assert/strict";
import {
  AmbiguousImageError,
  buildDocuments,
  decodeJson,
  imageDownloadEntries,
  listImages,
  parseIndex,
  parseProducts,
  resolveAlias,
  shownAliases,
  type MetaFtype,
  type StreamImage,
  type StreamProduct,
} from "../../../simplestreams/index.js";
import { fingerprintOf, productOf, UPDATED, type ProductSpec } from "./fixtures.js";

const ACME: ProductSpec = { os: "Acme", release: "1", arch: "amd64" };
const ACME_ARM: ProductSpec = { ...ACME, arch: "arm64" };

/** Publishes, then reads back exactly as a client does: index → entries → products files → images. */
function roundTrip(products: StreamProduct[], metaFtype: MetaFtype = "lxd.tar.xz"): StreamImage[] {
  const { files } = buildDocuments(products, { updated: UPDATED });
  const index = parseIndex(decodeJson(files.get("streams/v1/index.json") ?? ""));
  const docs = imageDownloadEntries(index).map((e) => {
    const bytes = files.get(e.path);
    assert.ok(bytes, `index names ${e.path}, which was not built`);
    return parseProducts(decodeJson(bytes));
  });
  return listImages(docs, { metaFtype });
}

function twoVersions(): StreamProduct {
  return productOf(ACME, {
    "20240101_0000": { roots: ["squashfs", "disk-kvm.img"] },
    "20240201_0000": { roots: ["squashfs", "disk-kvm.img"] },
  });
}

for (const metaFtype of ["lxd.tar.xz", "incus.tar.xz"] as const) {
  test(`round trip (${metaFtype}): acme/1, acme/1/amd64 and acme/1/default resolve to the newest container`, () => {
    const images = roundTrip([twoVersions()], metaFtype);
    assert.equal(images.length, 4);
    const newest = fingerprintOf(ACME, "20240201_0000", "squashfs");
    for (const name of ["acme/1", "acme/1/amd64", "acme/1/default", "acme/1/default/amd64"]) {
      const img = resolveAlias(images, name, { arch: "x86_64" });
      assert.equal(img?.fingerprint, newest, name);
      assert.equal(img?.type, "container");
      assert.equal(img?.versionKey, "20240201_0000");
      assert.equal(img?.rootType, "squashfs");
    }
  });
}

test("round trip: container and virtual-machine aliases are separate namespaces", () => {
  const images = roundTrip([twoVersions()]);
  const vm = resolveAlias(images, "acme/1", { arch: "x86_64", type: "virtual-machine" });
  assert.equal(vm?.fingerprint, fingerprintOf(ACME, "20240201_0000", "disk-kvm.img"));
  assert.equal(vm?.type, "virtual-machine");
  assert.equal(vm?.root?.ftype, "disk-kvm.img");
  const ct = resolveAlias(images, "acme/1", { arch: "x86_64", type: "container" });
  assert.equal(ct?.fingerprint, fingerprintOf(ACME, "20240201_0000", "squashfs"));

  // A VM-only product: without a type, the container namespace is empty, so the VM is found.
  const vmOnly = roundTrip([productOf(ACME, { "20240201_0000": { roots: ["disk-kvm.img"] } })]);
  assert.equal(resolveAlias(vmOnly, "acme/1", { arch: "x86_64" })?.type, "virtual-machine");
  assert.equal(resolveAlias(vmOnly, "acme/1", { arch: "x86_64", type: "container" }), null);
});

test("round trip: the newest version key wins whatever the catalog order; older images keep no alias", () => {
  const p = twoVersions();
  p.versions.reverse();
  const images = roundTrip([p]);
  const old = images.filter((i) => i.versionKey === "20240101_0000");
  assert.equal(old.length, 2);
  for (const i of old) assert.deepEqual(i.aliases, []);
  // The older image is still reachable by fingerprint prefix (12 characters, as `lxc image list` shows).
  const fp = fingerprintOf(ACME, "20240101_0000", "squashfs");
  assert.equal(resolveAlias(images, fp.slice(0, 12), { arch: "x86_64" })?.versionKey, "20240101_0000");
  assert.equal(resolveAlias(images, fp, { arch: "x86_64", type: "virtual-machine" }), null);
});

test("round trip: a squashfs container beats a root.tar.xz one of the same version", () => {
  const images = roundTrip([productOf(ACME, { "20240201_0000": { roots: ["root.tar.xz", "squashfs"] } })]);
  assert.equal(resolveAlias(images, "acme/1", { arch: "x86_64" })?.rootType, "squashfs");
  const tarball = images.find((i) => i.rootType === "root.tar.xz");
  assert.equal(tarball?.fingerprint, fingerprintOf(ACME, "20240201_0000", "root.tar.xz"));
  assert.deepEqual(tarball?.aliases, []);
});

test("round trip: on an x86_64 host an arm64 image is reached through its /arm64 medium alias only", () => {
  const images = roundTrip([
    productOf(ACME, { "20240201_0000": { roots: ["squashfs"] } }),
    productOf(ACME_ARM, { "20240115_0000": { roots: ["squashfs"] } }),
  ]);
  const arm = resolveAlias(images, "acme/1/arm64", { arch: "x86_64" });
  assert.equal(arm?.fingerprint, fingerprintOf(ACME_ARM, "20240115_0000", "squashfs"));
  assert.equal(arm?.arch, "aarch64");
  assert.equal(arm?.rawArch, "arm64");
  assert.equal(resolveAlias(images, "acme/1", { arch: "x86_64" })?.arch, "x86_64");
  assert.equal(
    resolveAlias(images, "acme/1/aarch64", { arch: "x86_64" }),
    null,
    "medium aliases use the raw product arch",
  );
  // On an arm64 host the short alias picks the native image.
  assert.equal(resolveAlias(images, "acme/1", { arch: "aarch64" })?.arch, "aarch64");
  assert.deepEqual(shownAliases(arm as StreamImage, "x86_64"), ["acme/1/default/arm64", "acme/1/arm64"]);
  assert.deepEqual(shownAliases(arm as StreamImage, "aarch64"), [
    "acme/1/default",
    "acme/1/default/arm64",
    "acme/1",
    "acme/1/arm64",
  ]);
});

test("round trip: the host arch wins, then its personalities, then foreign arches", () => {
  const i386 = { ...ACME, arch: "i386" };
  const armhf = { ...ACME, arch: "armhf" };
  const all = roundTrip([
    productOf(ACME, { "20240201_0000": { roots: ["squashfs"] } }),
    productOf(i386, { "20240201_0000": { roots: ["squashfs"] } }),
    productOf(armhf, { "20240201_0000": { roots: ["squashfs"] } }),
  ]);
  assert.equal(resolveAlias(all, "acme/1", { arch: "x86_64" })?.arch, "x86_64");
  assert.equal(resolveAlias(all, "acme/1", { arch: "armv7l" })?.arch, "armv7l");
  // armv7l sorts before i686, yet i686 is a personality of x86_64 and wins.
  const noNative = roundTrip([
    productOf(armhf, { "20240201_0000": { roots: ["squashfs"] } }),
    productOf(i386, { "20240201_0000": { roots: ["squashfs"] } }),
  ]);
  assert.equal(resolveAlias(noNative, "acme/1", { arch: "x86_64" })?.arch, "i686");
  // Nothing native or personality: like LXD, a foreign image is still returned.
  assert.equal(resolveAlias(noNative, "acme/1", { arch: "s390x" })?.arch, "armv7l");
  assert.equal(resolveAlias(noNative, "nope", { arch: "x86_64" }), null);
});

test("round trip: deltas carry the source fingerprint of their base version", () => {
  const images = roundTrip([
    productOf(ACME, {
      "20240101_0000": { roots: ["squashfs"] },
      "20240201_0000": { roots: ["squashfs"], deltaFrom: "20240101_0000" },
    }),
  ]);
  const newest = resolveAlias(images, "acme/1", { arch: "x86_64" });
  assert.equal(newest?.deltas.length, 1);
  const d = newest?.deltas[0];
  assert.equal(d?.deltaBase, "20240101_0000");
  assert.equal(d?.sourceFingerprint, fingerprintOf(ACME, "20240101_0000", "squashfs"));
  assert.equal(d?.itemKey, "root.20240101_0000.vcdiff");
  assert.equal(d?.path, "images/acme/1/amd64/default/20240201_0000/delta-20240101_0000.vcdiff");
});

test("round trip: image fields as LXD 5.0.2 shows them", () => {
  const p = productOf(
    { ...ACME, releaseTitle: "One", supportEol: "2029-06-30", requirements: { secureboot: "false" } },
    { "20240201_0930": { roots: ["squashfs"], label: "release" } },
  );
  const [img] = roundTrip([p]);
  assert.ok(img);
  const meta = p.versions[0]?.files.find((f) => f.ftype === "lxd.tar.xz");
  const root = p.versions[0]?.files.find((f) => f.ftype === "squashfs");
  assert.ok(meta && root);
  assert.equal(img.description, "Acme One amd64 (release) (20240201_0930)");
  assert.equal(img.size, meta.size + root.size);
  assert.equal(img.filename, "lxd.tar.xz");
  assert.equal(img.createdAt.toISOString(), "2024-02-01T00:00:00.000Z");
  assert.equal(img.expiresAt?.toISOString(), "2029-06-30T00:00:00.000Z");
  assert.deepEqual({ ...img.requirements }, { secureboot: "false" });
  assert.deepEqual(img.meta, {
    itemKey: "lxd.tar.xz",
    ftype: "lxd.tar.xz",
    path: meta.path,
    sha256: meta.sha256,
    size: meta.size,
  });
  assert.deepEqual(img.root, {
    itemKey: "root.squashfs",
    ftype: "squashfs",
    path: root.path,
    sha256: root.sha256,
    size: root.size,
  });
});

test("§8 transcript: aliases land where LXD 5.0.2 put them on an x86_64 host", () => {
  const testos: ProductSpec = { os: "Testos", release: "one", arch: "amd64" };
  const testosArm: ProductSpec = { ...testos, arch: "arm64" };
  const images = roundTrip([
    productOf(testos, {
      "20240101_0000": { roots: ["squashfs", "disk-kvm.img"] },
      "20240201_0000": { roots: ["squashfs"] },
    }),
    productOf(testosArm, { "20240115_0000": { roots: ["squashfs"] } }),
  ]);
  const row = (img: StreamImage): string =>
    `${shownAliases(img, "x86_64").sort().join(" ")}|${img.fingerprint.slice(0, 12)}|${img.description}|${img.type}`;
  const rows = images.map(row).sort();
  const fp = (spec: ProductSpec, v: string, r: "squashfs" | "disk-kvm.img"): string =>
    fingerprintOf(spec, v, r).slice(0, 12);
  const four = "testos/one testos/one/amd64 testos/one/default testos/one/default/amd64";
  assert.deepEqual(
    rows,
    [
      `${four}|${fp(testos, "20240201_0000", "squashfs")}|Testos one amd64 (20240201_0000)|container`,
      `${four}|${fp(testos, "20240101_0000", "disk-kvm.img")}|Testos one amd64 (20240101_0000)|virtual-machine`,
      `testos/one/arm64 testos/one/default/arm64|${fp(testosArm, "20240115_0000", "squashfs")}|Testos one arm64 (20240115_0000)|container`,
      `|${fp(testos, "20240101_0000", "squashfs")}|Testos one amd64 (20240101_0000)|container`,
    ].sort(),
  );
});

/** A hand-written products document (what some other server might publish). */
function remote(
  items: Record<string, unknown>,
  product: Record<string, unknown> = {},
): ReturnType<typeof parseProducts> {
  return parseProducts({
    products: {
      "acme:1:amd64:default": {
        aliases: "acme/1",
        arch: "amd64",
        os: "Acme",
        release: "1",
        release_title: "1",
        variant: "default",
        versions: { "20240201_0000": { items } },
        ...product,
      },
    },
  });
}

const M = "1".repeat(64);
const R = "2".repeat(64);
const FP = "3".repeat(64);

test("pitfall 10 seen from the client: an incus.tar.xz-only version is invisible to LXD, and vice versa", () => {
  const doc = (ftype: string) =>
    remote({
      meta: { ftype, path: "m", sha256: M, size: 1, combined_squashfs_sha256: FP },
      root: { ftype: "squashfs", path: "r", sha256: R, size: 2 },
    });
  assert.equal(listImages(doc("incus.tar.xz"), { metaFtype: "lxd.tar.xz" }).length, 0);
  assert.equal(listImages(doc("incus.tar.xz"), { metaFtype: "incus.tar.xz" }).length, 1);
  assert.equal(listImages(doc("lxd.tar.xz"), { metaFtype: "incus.tar.xz" }).length, 0);
  assert.equal(listImages(doc("lxd.tar.xz"), { metaFtype: "lxd.tar.xz" })[0]?.fingerprint, FP);
});

test("what silently disappears: unknown arch, bad version key, missing combined hash, meta without path (§4.8)", () => {
  const items = {
    meta: { ftype: "lxd.tar.xz", path: "m", sha256: M, size: 1, combined_squashfs_sha256: FP },
    root: { ftype: "squashfs", path: "r", sha256: R, size: 2 },
    disk: { ftype: "disk-kvm.img", path: "d", sha256: "4".repeat(64), size: 3 },
  };
  const ok = listImages(remote(items), { metaFtype: "lxd.tar.xz" });
  assert.equal(ok.length, 1, "the disk has no combined hash: no VM image");
  assert.equal(listImages(remote(items, { arch: "loong64" }), { metaFtype: "lxd.tar.xz" }).length, 0);
  assert.equal(
    listImages(remote(items, { versions: { "2024-02-01": { items } } }), { metaFtype: "lxd.tar.xz" }).length,
    0,
  );
  const noPath = { ...items, meta: { ...items.meta, path: "" } };
  assert.equal(listImages(remote(noPath), { metaFtype: "lxd.tar.xz" }).length, 0);
  // root.tar.xz falls back to the legacy combined_sha256.
  const legacy = remote({
    meta: { ftype: "lxd.tar.xz", path: "m", sha256: M, size: 1, combined_sha256: FP },
    root: { ftype: "root.tar.xz", path: "r", sha256: R, size: 2 },
  });
  assert.equal(listImages(legacy, { metaFtype: "lxd.tar.xz" })[0]?.fingerprint, FP);
});

test("a meta-only newest version leaves the aliases on the newest complete one (§3.2)", () => {
  const p = productOf(ACME, {
    "20240101_0000": { roots: ["squashfs"] },
    "20240301_0000": { roots: [] },
  });
  const images = roundTrip([p]);
  assert.equal(images.length, 1);
  assert.equal(resolveAlias(images, "acme/1", { arch: "x86_64" })?.versionKey, "20240101_0000");
});

test("pitfall 29 seen from the client: one pair listed twice makes even its alias unusable", () => {
  const items = {
    meta: { ftype: "lxd.tar.xz", path: "m", sha256: M, size: 1, combined_squashfs_sha256: FP },
    root: { ftype: "squashfs", path: "r", sha256: R, size: 2 },
  };
  const doc = remote({}, { versions: { "20240101_0000": { items }, "20240201_0000": { items } } });
  const images = listImages(doc, { metaFtype: "lxd.tar.xz" });
  assert.equal(images.length, 2);
  assert.throws(() => resolveAlias(images, "acme/1", { arch: "x86_64" }), AmbiguousImageError);
  assert.throws(() => resolveAlias(images, FP.slice(0, 12), { arch: "x86_64" }), /More than one match/);
});

test("a fingerprint prefix must match exactly one image", () => {
  const items = (fp: string) => ({
    meta: { ftype: "lxd.tar.xz", path: `m${fp}`, sha256: M, size: 1, combined_squashfs_sha256: fp },
    root: { ftype: "squashfs", path: `r${fp}`, sha256: R, size: 2 },
  });
  const a = "abc1" + "0".repeat(60);
  const b = "abc2" + "0".repeat(60);
  const doc = remote(
    {},
    { versions: { "20240101_0000": { items: items(a) }, "20240201_0000": { items: items(b) } } },
  );
  const images = listImages(doc, { metaFtype: "lxd.tar.xz" });
  assert.throws(() => resolveAlias(images, "abc", { arch: "x86_64" }), AmbiguousImageError);
  assert.equal(resolveAlias(images, "abc1", { arch: "x86_64" })?.fingerprint, a);
  assert.equal(resolveAlias(images, "abc2", { arch: "x86_64" })?.fingerprint, b);
  assert.equal(resolveAlias(images, "abc3", { arch: "x86_64" }), null);
  assert.equal(resolveAlias(images, "", { arch: "x86_64" }), null);
});

test("unified tarballs: an image on their own; combined_type only matters to Incus", () => {
  const doc = remote({
    lxd: { ftype: "lxd_combined.tar.gz", path: "u.tar.gz", sha256: M, size: 5 },
    incus: {
      ftype: "incus_combined.tar.gz",
      path: "v.tar.gz",
      sha256: R,
      size: 6,
      combined_type: "virtual-machine",
    },
  });
  const lxd = listImages(doc, { metaFtype: "lxd.tar.xz" });
  assert.equal(lxd.length, 1);
  assert.equal(lxd[0]?.fingerprint, M);
  assert.equal(lxd[0]?.type, "container");
  assert.equal(lxd[0]?.rootType, "tar.gz");
  assert.equal(lxd[0]?.root, null);
  const incus = listImages(doc, { metaFtype: "incus.tar.xz" });
  assert.equal(incus.length, 1);
  assert.equal(incus[0]?.type, "virtual-machine");
  assert.equal(resolveAlias(incus, "acme/1", { arch: "x86_64", type: "virtual-machine" })?.fingerprint, R);
});

test("requirements: LXD reads lxd_requirements first, Incus reads requirements", () => {
  const items = {
    meta: { ftype: "lxd.tar.xz", path: "m", sha256: M, size: 1, combined_squashfs_sha256: FP },
    meta2: { ftype: "incus.tar.xz", path: "m", sha256: M, size: 1, combined_squashfs_sha256: FP },
    root: { ftype: "squashfs", path: "r", sha256: R, size: 2 },
  };
  const doc = remote(items, { lxd_requirements: { secureboot: "false" }, requirements: { nesting: "true" } });
  assert.deepEqual(
    { ...listImages(doc, { metaFtype: "lxd.tar.xz" })[0]?.requirements },
    { secureboot: "false" },
  );
  assert.deepEqual(
    { ...listImages(doc, { metaFtype: "incus.tar.xz" })[0]?.requirements },
    { nesting: "true" },
  );
  const only = remote(items, { requirements: { nesting: "true" } });
  assert.deepEqual(
    { ...listImages(only, { metaFtype: "lxd.tar.xz" })[0]?.requirements },
    { nesting: "true" },
  );
});

test("aliases are split on commas without trimming, and defaultOs strips a leading os/ like LXD for ubuntu", () => {
  const items = {
    meta: { ftype: "lxd.tar.xz", path: "m", sha256: M, size: 1, combined_squashfs_sha256: FP },
    root: { ftype: "squashfs", path: "r", sha256: R, size: 2 },
  };
  const spaced = listImages(remote(items, { aliases: "acme/1, acme" }), { metaFtype: "lxd.tar.xz" });
  assert.equal(resolveAlias(spaced, "acme", { arch: "x86_64" }), null, "pitfall 7: the alias is ' acme'");
  assert.equal(resolveAlias(spaced, " acme", { arch: "x86_64" })?.fingerprint, FP);
  const ubuntu = listImages(remote(items, { aliases: "ubuntu/24.04,noble" }), {
    metaFtype: "lxd.tar.xz",
    defaultOs: "ubuntu",
  });
  assert.equal(resolveAlias(ubuntu, "24.04", { arch: "x86_64" })?.fingerprint, FP);
  assert.equal(resolveAlias(ubuntu, "noble/amd64", { arch: "x86_64" })?.fingerprint, FP);
});
