import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { convertProducts, productsOfDocuments, UPSTREAM_PREFIX } from "../../../registry/pull-through.js";
import { buildDocuments } from "../../../simplestreams/builder.js";
import { parseProducts } from "../../../simplestreams/parse.js";

const hex = (c: string) => c.repeat(64);

/** A products document as an upstream serves it (JSON), one product, versions as given. */
function upstreamDoc(versions: Record<string, Record<string, Record<string, unknown>>>, over = {}) {
  return parseProducts({
    content_id: "images",
    datatype: "image-downloads",
    format: "products:1.0",
    products: {
      "debian:12:amd64:default": {
        aliases: "debian/12,debian/bookworm",
        arch: "amd64",
        os: "debian",
        release: "12",
        release_title: "bookworm",
        variant: "default",
        versions: Object.fromEntries(Object.entries(versions).map(([v, items]) => [v, { items }])),
        ...over,
      },
    },
  });
}

function split(version: string, opts: { meta?: string; root?: string; size?: number } = {}) {
  const base = `images/debian/bookworm/amd64/default/${version}`;
  return {
    "lxd.tar.xz": {
      ftype: "lxd.tar.xz",
      path: opts.meta ?? `${base}/lxd.tar.xz`,
      sha256: hex("a"),
      size: 100,
      combined_squashfs_sha256: hex("c").slice(1) + version.slice(7, 8),
    },
    "root.squashfs": {
      ftype: "squashfs",
      path: opts.root ?? `${base}/rootfs.squashfs`,
      sha256: hex(version.slice(7, 8)),
      size: opts.size ?? 1000,
    },
  };
}

describe("pull-through: upstream products → served products", () => {
  it("serves files under upstream/images/ from checked names, keeping the upstream path aside", () => {
    const c = convertProducts([upstreamDoc({ "20240101_0000": split("20240101_0000") })]);
    assert.equal(c.products.length, 1);
    const p = c.products[0]!;
    assert.deepEqual(
      [p.os, p.release, p.arch, p.variant, p.aliases],
      ["debian", "12", "amd64", "default", ["debian/12", "debian/bookworm"]],
    );
    const files = p.versions[0]!.files;
    assert.deepEqual(
      files.map((f) => [f.ftype, f.path]),
      [
        ["lxd.tar.xz", "upstream/images/debian/12/amd64/default/20240101_0000/lxd.tar.xz"],
        ["squashfs", "upstream/images/debian/12/amd64/default/20240101_0000/rootfs.squashfs"],
      ],
    );
    assert.deepEqual(files[0]!.combined, { squashfs: hex("c").slice(1) + "1" });
    assert.equal(
      c.sources.get("upstream/images/debian/12/amd64/default/20240101_0000/rootfs.squashfs")?.upstreamPath,
      "images/debian/bookworm/amd64/default/20240101_0000/rootfs.squashfs",
    );
  });

  it("leaves out versions with unsafe upstream paths, bad version keys, or files over the limit", () => {
    const c = convertProducts(
      [
        upstreamDoc({
          "20240101_0001": split("20240101_0001", { root: "../../etc/passwd" }),
          "20240101_0002": split("20240101_0002", { meta: "/abs/lxd.tar.xz" }),
          "20240101_0003": split("20240101_0003", { size: 10_000 }),
          "not-a-date": split("20240101_0004"),
          "20240101_0005": split("20240101_0005"),
        }),
      ],
      { maxFileBytes: 5000 },
    );
    assert.deepEqual(
      c.products[0]!.versions.map((v) => v.name),
      ["20240101_0005"],
    );
    assert.equal(c.skipped.length, 4, c.skipped.join("\n"));
    for (const path of c.sources.keys()) assert.ok(path.startsWith(UPSTREAM_PREFIX) && !path.includes(".."));
  });

  it("leaves out products whose names lxhub refuses", () => {
    const c = convertProducts([upstreamDoc({ "20240101_0000": split("20240101_0000") }, { os: "../x" })]);
    assert.equal(c.products.length, 0);
    assert.match(c.skipped[0] ?? "", /debian:12:amd64:default/);
  });

  it("reads the same products back from the documents it served (the restart seed)", () => {
    const c = convertProducts([
      upstreamDoc({ "20240101_0000": split("20240101_0000"), "20240102_0000": split("20240102_0000") }),
    ]);
    const own = {
      os: "own",
      release: "1",
      arch: "amd64",
      variant: "default",
      releaseTitle: "1",
      aliases: [],
      requirements: {},
      versions: [
        {
          name: "20240101_0000",
          files: [
            {
              name: "lxd.tar.xz",
              ftype: "lxd.tar.xz" as const,
              path: "images/own/1/amd64/default/20240101_0000/lxd.tar.xz",
              sha256: hex("e"),
              size: 10,
              combined: { squashfs: hex("f") },
            },
            {
              name: "rootfs.squashfs",
              ftype: "squashfs" as const,
              path: "images/own/1/amd64/default/20240101_0000/rootfs.squashfs",
              sha256: hex("d"),
              size: 10,
            },
          ],
        },
      ],
    };
    const docs = buildDocuments([own, ...c.products], { updated: new Date() }).files;
    const seed = productsOfDocuments(docs);
    assert.deepEqual(seed.products, c.products);
    assert.deepEqual(
      [...seed.sources].map(([p, s]) => [p, s.digest, s.size, s.upstreamPath]),
      [...c.sources].map(([p, s]) => [p, s.digest, s.size, null]),
    );
  });
});
