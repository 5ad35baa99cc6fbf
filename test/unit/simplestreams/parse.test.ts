import { test } from "node:test";
import assert from "node:assert/strict";
import {
  decodeJson,
  imageDownloadEntries,
  parseIndex,
  parseProducts,
  StreamParseError,
} from "../../../simplestreams/index.js";

const HEX = "a".repeat(64);

/** A products document as a remote might serve it, with one product/version/item to vary. */
function doc(product: Record<string, unknown> = {}, item: Record<string, unknown> = {}): unknown {
  return {
    content_id: "images",
    datatype: "image-downloads",
    format: "products:1.0",
    products: {
      "acme:1:amd64:default": {
        aliases: "acme/1",
        arch: "amd64",
        os: "Acme",
        release: "1",
        release_title: "One",
        variant: "default",
        versions: {
          "20240101_0000": {
            items: {
              "root.squashfs": { ftype: "squashfs", path: "images/r", sha256: HEX, size: 10, ...item },
            },
          },
        },
        ...product,
      },
    },
  };
}

function rejects(
  json: unknown,
  jsonPath: string,
  pattern: RegExp,
  parse: (j: unknown) => unknown = parseProducts,
): void {
  assert.throws(
    () => parse(json),
    (err: unknown) => {
      assert.ok(err instanceof StreamParseError, String(err));
      assert.equal(err.jsonPath, jsonPath);
      assert.match(err.message, pattern);
      return true;
    },
  );
}

const ITEM = '$.products["acme:1:amd64:default"].versions["20240101_0000"].items["root.squashfs"]';
const PRODUCT = '$.products["acme:1:amd64:default"]';

test("a well-formed products document parses into typed values", () => {
  const d = parseProducts(
    doc({ supported: true, support_eol: "2029-01-01", lxd_requirements: { secureboot: "false" } }),
  );
  assert.equal(d.contentId, "images");
  const p = d.products.get("acme:1:amd64:default");
  assert.ok(p);
  assert.equal(p.aliases, "acme/1");
  assert.equal(p.supported, true);
  assert.equal(p.lxdRequirements.get("secureboot"), "false");
  assert.equal(p.requirements.size, 0);
  const item = p.versions.get("20240101_0000")?.items.get("root.squashfs");
  assert.deepEqual(item, {
    ftype: "squashfs",
    path: "images/r",
    sha256: HEX,
    md5: "",
    size: 10,
    combined: {},
    combinedSha256: "",
    combinedType: "",
    deltaBase: "",
  });
});

test("pitfall 1: a size that is not an integer fails the whole document, naming the JSON path", () => {
  rejects(doc({}, { size: "10" }), `${ITEM}.size`, /expected an integer, got the string "10"/);
  rejects(doc({}, { size: 10.5 }), `${ITEM}.size`, /expected an integer/);
  rejects(doc({}, { size: 2 ** 60 }), `${ITEM}.size`, /too large/);
  rejects(doc({}, { size: true }), `${ITEM}.size`, /expected an integer, got the boolean true/);
});

test("pitfall 2: aliases as an array fail the whole document", () => {
  rejects(doc({ aliases: ["acme/1", "acme"] }), `${PRODUCT}.aliases`, /expected a string, got an array/);
});

test("pitfall 3: supported as a string fails the whole document", () => {
  rejects(doc({ supported: "true" }), `${PRODUCT}.supported`, /expected a boolean/);
});

test("pitfall 4: non-string requirement values fail the whole document", () => {
  rejects(
    doc({ lxd_requirements: { secureboot: false } }),
    `${PRODUCT}.lxd_requirements["secureboot"]`,
    /expected a string, got the boolean false/,
  );
  rejects(doc({ requirements: { nesting: 1 } }), `${PRODUCT}.requirements["nesting"]`, /expected a string/);
  rejects(doc({ requirements: ["x"] }), `${PRODUCT}.requirements`, /expected an object, got an array/);
});

test("wrong types elsewhere fail too: versions, items, combined hashes, the top level", () => {
  rejects(doc({ versions: [] }), `${PRODUCT}.versions`, /expected an object/);
  rejects(doc({ arch: 64 }), `${PRODUCT}.arch`, /expected a string/);
  rejects(doc({}, { combined_squashfs_sha256: 5 }), `${ITEM}.combined_squashfs_sha256`, /expected a string/);
  rejects(
    doc({}, { "combined_disk-kvm-img_sha256": {} }),
    `${ITEM}["combined_disk-kvm-img_sha256"]`,
    /expected a string/,
  );
  rejects([], "$", /expected an object, got an array/);
  rejects("x", "$", /expected an object/);
});

test("null is the zero value and unknown fields are ignored, as with Go's decoder", () => {
  const d = parseProducts(
    doc({ aliases: null, supported: null, versions: null, clouds: [1, 2], extra: { size: "x" } }, {}),
  );
  const p = d.products.get("acme:1:amd64:default");
  assert.ok(p);
  assert.equal(p.aliases, "");
  assert.equal(p.supported, false);
  assert.equal(p.versions.size, 0);
  const withNulls = parseProducts(
    doc({}, { size: null, sha512: 5, md5: null, combined_squashfs_sha256: null }),
  );
  const item = withNulls.products
    .get("acme:1:amd64:default")
    ?.versions.get("20240101_0000")
    ?.items.get("root.squashfs");
  assert.equal(item?.size, 0);
  assert.deepEqual(item?.combined, {});
  assert.equal(parseProducts(null).products.size, 0);
});

test("field names match case-insensitively like Go (later occurrence wins), so a mis-cased wrong type still fails", () => {
  rejects(doc({}, { Size: "10" }), `${ITEM}.Size`, /expected an integer/);
  const d = parseProducts(doc({ ARCH: "arm64" }, { SHA256: "b".repeat(64), ſize: 7 }));
  const p = d.products.get("acme:1:amd64:default");
  assert.equal(p?.arch, "arm64");
  const item = p?.versions.get("20240101_0000")?.items.get("root.squashfs");
  assert.equal(item?.sha256, "b".repeat(64));
  assert.equal(item?.size, 7);
});

test("map keys are data: a product named __proto__ is kept as a product", () => {
  const d = parseProducts(JSON.parse('{"products":{"__proto__":{"arch":"amd64","os":"Evil"}}}'));
  assert.equal(d.products.get("__proto__")?.os, "Evil");
  assert.equal(Object.getPrototypeOf({}), Object.prototype);
});

test("combined fields are read per root type, with the legacy combined_sha256 kept apart", () => {
  const d = parseProducts(
    doc(
      {},
      {
        ftype: "lxd.tar.xz",
        combined_squashfs_sha256: "1".repeat(64),
        combined_rootxz_sha256: "2".repeat(64),
        combined_sha256: "3".repeat(64),
        "combined_disk-kvm-img_sha256": "4".repeat(64),
        "combined_disk1-img_sha256": "5".repeat(64),
        "combined_uefi1-img_sha256": "6".repeat(64),
        combined_type: "virtual-machine",
        delta_base: "20231201_0000",
      },
    ),
  );
  const item = d.products
    .get("acme:1:amd64:default")
    ?.versions.get("20240101_0000")
    ?.items.get("root.squashfs");
  assert.deepEqual(item?.combined, {
    squashfs: "1".repeat(64),
    "root.tar.xz": "2".repeat(64),
    "disk-kvm.img": "4".repeat(64),
    "disk1.img": "5".repeat(64),
    "uefi1.img": "6".repeat(64),
  });
  assert.equal(item?.combinedSha256, "3".repeat(64));
  assert.equal(item?.combinedType, "virtual-machine");
  assert.equal(item?.deltaBase, "20231201_0000");
});

test("parseIndex validates types and imageDownloadEntries keeps what a client loads", () => {
  const idx = parseIndex({
    format: "index:1.0",
    updated: "Thu, 01 Feb 2024 12:30:05 +0000",
    index: {
      "com.ubuntu.cloud:released:aws": {
        datatype: "image-ids",
        path: "streams/v1/aws.json",
        products: ["x"],
        clouds: [{}],
      },
      empty: { datatype: "image-downloads", path: "streams/v1/empty.json", products: [] },
      missing: { datatype: "image-downloads", path: "streams/v1/missing.json" },
      images: {
        datatype: "image-downloads",
        path: "streams/v1/images.json",
        format: "products:1.0",
        products: ["a", null],
      },
    },
  });
  assert.equal(idx.index.size, 4);
  assert.deepEqual(idx.index.get("images")?.products, ["a", ""]);
  assert.deepEqual(
    imageDownloadEntries(idx).map((e) => e.path),
    ["streams/v1/images.json"],
  );
  rejects(
    { index: { images: { datatype: "image-downloads", products: "a,b" } } },
    '$.index["images"].products',
    /expected an array/,
    parseIndex,
  );
  rejects({ index: { images: { path: 1 } } }, '$.index["images"].path', /expected a string/, parseIndex);
  rejects({ index: [] }, "$.index", /expected an object/, parseIndex);
});

test("decodeJson reports invalid JSON (e.g. a clear-signed .sjson body) at the root", () => {
  assert.throws(
    () => decodeJson("-----BEGIN PGP SIGNED MESSAGE-----\n"),
    (err: unknown) => err instanceof StreamParseError && err.jsonPath === "$",
  );
  assert.throws(() => decodeJson(Buffer.from("\ufeff{}")), StreamParseError);
  assert.deepEqual(decodeJson(Buffer.from('{"a":1}\n')), { a: 1 });
});
