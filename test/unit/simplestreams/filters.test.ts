import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FilterError, parseFilter, selectProducts } from "../../../simplestreams/filters.js";
import { parseProducts } from "../../../simplestreams/parse.js";

const item = (ftype: string, n: number) => ({
  ftype,
  path: `images/x/${n}/${ftype}`,
  sha256: String(n % 10).repeat(64),
  size: n,
});

/** Three products, versions out of order, metadata + squashfs + tarball items. */
const doc = parseProducts({
  content_id: "images",
  datatype: "image-downloads",
  format: "products:1.0",
  products: Object.fromEntries(
    [
      ["debian", "12", "amd64", "default"],
      ["debian", "12", "arm64", "default"],
      ["ubuntu", "jammy", "amd64", "cloud"],
    ].map(([os, release, arch, variant]) => [
      `${os}:${release}:${arch}:${variant}`,
      {
        os,
        release,
        arch,
        variant,
        aliases: `${os}/${release}`,
        versions: Object.fromEntries(
          ["20240102_0000", "20240301_0000", "20240201_0000"].map((v, i) => [
            v,
            {
              items: {
                "lxd.tar.xz": item("lxd.tar.xz", i + 1),
                "root.squashfs": item("squashfs", i + 11),
                ...(i === 0 ? {} : { "root.tar.xz": item("root.tar.xz", i + 21) }),
              },
            },
          ]),
        ),
      },
    ]),
  ),
});

const shape = (d: ReturnType<typeof selectProducts>) =>
  Object.fromEntries(
    [...d.products].map(([p, prod]) => [
      p,
      Object.fromEntries(
        [...prod.versions].map(([v, ver]) => [v, [...ver.items.values()].map((i) => i.ftype).sort()]),
      ),
    ]),
  );

describe("mirror filters (sstream-mirror grammar)", () => {
  it("parses KEY=VALUE, KEY!=VALUE and KEY~REGEX; refuses anything else with the reason", () => {
    assert.equal(parseFilter("arch=amd64").test("amd64"), true);
    assert.equal(parseFilter("arch=amd64").test("arm64"), false);
    assert.equal(parseFilter("os!=ubuntu").test("debian"), true);
    assert.equal(parseFilter("os!=ubuntu").test("ubuntu"), false);
    assert.equal(parseFilter("release~^(12|13)$").test("12"), true);
    assert.equal(parseFilter("release~jam").test("jammy"), true, "a match anywhere, as re.search");
    assert.equal(parseFilter("variant=").test(""), true, "an empty value is a value");
    assert.equal(parseFilter("ftype=a=b").value, "a=b", "the first operator splits");
    for (const [bad, why] of [
      ["arch", /KEY=VALUE/],
      ["=amd64", /KEY=VALUE/],
      ["colour=red", /unknown key "colour"/],
      ["release~(", /not a regular expression/],
    ] as const) {
      assert.throws(
        () => parseFilter(bad),
        (err: Error) => err instanceof FilterError && why.test(err.message),
      );
    }
  });

  it("product keys select products, ftype selects files; all filters must hold", () => {
    const d = selectProducts(doc, ["os=debian", "arch~64$", "ftype!=squashfs"].map(parseFilter));
    assert.deepEqual(shape(d), {
      "debian:12:amd64:default": {
        "20240301_0000": ["lxd.tar.xz", "root.tar.xz"],
        "20240201_0000": ["lxd.tar.xz", "root.tar.xz"],
        "20240102_0000": ["lxd.tar.xz"],
      },
      "debian:12:arm64:default": {
        "20240301_0000": ["lxd.tar.xz", "root.tar.xz"],
        "20240201_0000": ["lxd.tar.xz", "root.tar.xz"],
        "20240102_0000": ["lxd.tar.xz"],
      },
    });
  });

  it("a version left with no file is left out; --keep keeps the newest N versions of each product", () => {
    const d = selectProducts(doc, ["arch=amd64", "ftype=root.tar.xz"].map(parseFilter), 1);
    assert.deepEqual(shape(d), {
      "debian:12:amd64:default": { "20240301_0000": ["root.tar.xz"] },
      "ubuntu:jammy:amd64:cloud": { "20240301_0000": ["root.tar.xz"] },
    });
    const two = selectProducts(doc, [parseFilter("os=ubuntu")], 2);
    assert.deepEqual(Object.keys(shape(two)["ubuntu:jammy:amd64:cloud"]!), [
      "20240301_0000",
      "20240201_0000",
    ]);
    assert.throws(() => selectProducts(doc, [], 0), /at least 1/);
    // The upstream document itself is left as it was.
    assert.equal(doc.products.size, 3);
    assert.equal(doc.products.get("debian:12:amd64:default")?.versions.size, 3);
  });

  it("no filter and no keep select everything; a filter nothing matches selects nothing", () => {
    assert.equal(selectProducts(doc, []).products.size, 3);
    assert.equal(selectProducts(doc, [parseFilter("os=alpine")]).products.size, 0);
  });
});
