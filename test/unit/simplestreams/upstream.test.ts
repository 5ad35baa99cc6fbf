import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseProducts } from "../../../simplestreams/parse.js";
import { productFields, versionFiles } from "../../../simplestreams/upstream.js";

const hex = (c: string) => c.repeat(64);
const dir = "images/debian/bookworm/amd64/default/20240101_05:24";

/** A version as images.linuxcontainers.org lays one out: both metadata files, VM disk, deltas, unified tarball. */
function realWorld(items: Record<string, unknown>) {
  const doc = parseProducts({
    content_id: "images",
    datatype: "image-downloads",
    format: "products:1.0",
    products: {
      "debian:bookworm:amd64:default": {
        aliases: "debian/bookworm/default,debian/bookworm,debian/12,bad alias,debian/12",
        arch: "amd64",
        os: "Debian",
        release: "bookworm",
        release_title: "bookworm",
        variant: "default",
        requirements: { secureboot: "false" },
        lxd_requirements: { secureboot: "true", cgroup: "v2" },
        versions: { "20240101_05:24": { items } },
      },
    },
  });
  const product = doc.products.get("debian:bookworm:amd64:default")!;
  return { product, version: product.versions.get("20240101_05:24")! };
}

describe("versionFiles: which upstream items make lxhub's files", () => {
  it("takes lxd.tar.xz, the roots it fingerprints, the newest delta; says why it leaves the rest", () => {
    const { version } = realWorld({
      "incus.tar.xz": {
        ftype: "incus.tar.xz",
        path: `${dir}/incus.tar.xz`,
        sha256: hex("1"),
        size: 10,
        combined_squashfs_sha256: hex("a"),
      },
      "lxd.tar.xz": {
        ftype: "lxd.tar.xz",
        path: `${dir}/lxd.tar.xz`,
        sha256: hex("2"),
        size: 11,
        combined_squashfs_sha256: hex("b"),
        "combined_disk-kvm-img_sha256": hex("c"),
      },
      "root.squashfs": { ftype: "squashfs", path: `${dir}/rootfs.squashfs`, sha256: hex("3"), size: 12 },
      "root.tar.xz": { ftype: "root.tar.xz", path: `${dir}/rootfs.tar.xz`, sha256: hex("4"), size: 13 },
      "disk.qcow2": { ftype: "disk-kvm.img", path: `${dir}/disk.qcow2`, sha256: hex("5"), size: 14 },
      "delta-20231230_05:24": {
        ftype: "squashfs.vcdiff",
        path: `${dir}/delta-20231230_05:24.vcdiff`,
        sha256: hex("6"),
        size: 15,
        delta_base: "20231230_05:24",
      },
      "delta-20231231_05:24": {
        ftype: "squashfs.vcdiff",
        path: `${dir}/delta-20231231_05:24.vcdiff`,
        sha256: hex("7"),
        size: 16,
        delta_base: "20231231_05:24",
      },
      "lxd_combined.tar.gz": {
        ftype: "lxd_combined.tar.gz",
        path: `${dir}/lxd_combined.tar.gz`,
        sha256: hex("8"),
        size: 17,
      },
      manifest: { ftype: "manifest", path: `${dir}/manifest`, sha256: hex("9"), size: 1 },
    });
    const got = versionFiles(version);
    assert.equal(got.meta?.key, "lxd.tar.xz");
    assert.equal(got.meta?.name, "lxd.tar.xz");
    assert.deepEqual(
      got.roots.map((r) => [r.key, r.name, r.ftype, r.fingerprint]),
      [
        ["disk.qcow2", "disk.qcow2", "disk-kvm.img", hex("c")],
        ["root.squashfs", "rootfs.squashfs", "squashfs", hex("b")],
      ],
    );
    // Colons are not valid in lxhub file names: the delta takes its ftype's usual name.
    assert.deepEqual(
      got.deltas.map((d) => [d.key, d.name, d.deltaBase]),
      [["delta-20231231_05:24", "rootfs.squashfs.vcdiff", "20231231_05:24"]],
    );
    const reasons = Object.fromEntries(got.skipped.map((s) => [s.key, s.reason]));
    assert.match(reasons["incus.tar.xz"]!, /one metadata file/);
    assert.match(reasons["root.tar.xz"]!, /no combined hash/);
    assert.match(reasons["lxd_combined.tar.gz"]!, /unified tarball/);
    assert.match(reasons["delta-20231230_05:24"]!, /newest base/);
    assert.equal(reasons.manifest, undefined, "other ftypes are ignored quietly");
  });

  it("falls back to incus.tar.xz, and a version without any usable root makes nothing", () => {
    const incusOnly = versionFiles(
      realWorld({
        "incus.tar.xz": {
          ftype: "incus.tar.xz",
          path: `${dir}/incus.tar.xz`,
          sha256: hex("1"),
          size: 10,
          combined_rootxz_sha256: hex("a"),
        },
        "root.tar.xz": { ftype: "root.tar.xz", path: `${dir}/rootfs.tar.xz`, sha256: hex("4"), size: 13 },
      }).version,
    );
    assert.equal(incusOnly.meta?.ftype, "incus.tar.xz");
    assert.deepEqual(
      incusOnly.roots.map((r) => [r.ftype, r.fingerprint]),
      [["root.tar.xz", hex("a")]],
    );

    const metaOnly = versionFiles(
      realWorld({
        "lxd.tar.xz": { ftype: "lxd.tar.xz", path: `${dir}/lxd.tar.xz`, sha256: hex("2"), size: 11 },
        "root.squashfs": { ftype: "squashfs", path: `${dir}/rootfs.squashfs`, sha256: hex("3"), size: 12 },
        "delta-x": {
          ftype: "squashfs.vcdiff",
          path: `${dir}/d.vcdiff`,
          sha256: hex("6"),
          size: 1,
          delta_base: "20231231",
        },
      }).version,
    );
    assert.equal(metaOnly.meta, null);
    assert.deepEqual(metaOnly.roots, []);
    assert.deepEqual(metaOnly.deltas, []);

    const noPath = versionFiles(
      realWorld({
        "lxd.tar.xz": { ftype: "lxd.tar.xz", sha256: hex("2"), size: 11, combined_squashfs_sha256: hex("b") },
        "root.squashfs": { ftype: "squashfs", path: `${dir}/rootfs.squashfs`, sha256: hex("3"), size: 12 },
      }).version,
    );
    assert.equal(noPath.meta, null);
    assert.ok(noPath.skipped.some((s) => s.key === "lxd.tar.xz" && s.reason === "no path"));
  });
});

describe("productFields", () => {
  it("splits aliases as clients do, drops the ones lxhub refuses, merges requirements", () => {
    const got = productFields(realWorld({}).product);
    assert.ok(got.ok);
    assert.deepEqual(got.fields.aliases, ["debian/bookworm/default", "debian/bookworm", "debian/12"]);
    assert.deepEqual(got.droppedAliases, ["bad alias", "debian/12"]);
    assert.deepEqual(got.fields.requirements, { secureboot: "false", cgroup: "v2" });
    assert.equal(got.fields.variant, "default");
  });

  it("refuses an unknown architecture and names outside the grammar", () => {
    const { product } = realWorld({});
    assert.match(
      String((productFields({ ...product, arch: "pdp11" }) as { reason: string }).reason),
      /pdp11/,
    );
    assert.equal(productFields({ ...product, os: "../x" }).ok, false);
    const noVariant = productFields({ ...product, variant: "" });
    assert.ok(noVariant.ok && noVariant.fields.variant === "default");
  });
});
