import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { filterImages, matchesFilter, type ImageRecord } from "../../../client/image-list.js";

function record(over: Partial<ImageRecord> = {}): ImageRecord {
  return {
    fingerprint: "ab".repeat(32),
    aliases: ["debian/12", "debian/12/amd64"],
    architecture: "x86_64",
    type: "container",
    public: true,
    size: 3,
    filename: "lxd.tar.xz",
    description: "debian 12 amd64 (20240101_0000)",
    created_at: "2024-01-01T00:00:00.000Z",
    uploaded_at: "2024-01-01T00:00:00.000Z",
    expires_at: null,
    properties: {
      architecture: "amd64",
      os: "debian",
      release: "12",
      serial: "20240101_0000",
      type: "squashfs",
      variant: "cloud",
      "requirements.secureboot": "false",
    },
    product: "debian:12:amd64:cloud",
    version: "20240101_0000",
    files: [],
    ...over,
  };
}

describe("image list filters (incus' imageShouldShow)", () => {
  const r = record();

  test("a plain word: substring of an alias or of the fingerprint", () => {
    assert.ok(matchesFilter(r, "bian/1"));
    assert.ok(matchesFilter(r, "abab"));
    assert.ok(!matchesFilter(r, "ubuntu"));
    assert.ok(!matchesFilter(record({ aliases: [] }), "debian"));
  });

  test("KEY=VALUE: an abbreviated property name, VALUE an anchored regular expression", () => {
    assert.ok(matchesFilter(r, "os=debian"));
    assert.ok(!matchesFilter(r, "os=deb"), "anchored");
    assert.ok(matchesFilter(r, "os=deb.*"));
    assert.ok(matchesFilter(r, "os=^deb"), "a ^ leaves it unanchored at the end");
    assert.ok(matchesFilter(r, "arch=amd64"), "arch abbreviates architecture");
    assert.ok(matchesFilter(r, "var=cloud|default"), "alternatives stay inside the anchors");
    assert.ok(matchesFilter(r, "req.secure=false"), "dotted keys abbreviate part by part");
    assert.ok(!matchesFilter(r, "secureboot=false"), "as many dotted parts");
    assert.ok(
      matchesFilter(record({ properties: { label: "a(b" } }), "label=a(b"),
      "invalid regexp: as text",
    );
  });

  test("KEY=VALUE: a field of the record, named exactly, compared as printed", () => {
    assert.ok(matchesFilter(r, "architecture=x86_64"));
    assert.ok(matchesFilter(r, "type=container"));
    assert.ok(matchesFilter(r, "type=squashfs"), "the property type too");
    assert.ok(!matchesFilter(r, "type=virtual-machine"));
    assert.ok(matchesFilter(r, "public=true"));
    assert.ok(matchesFilter(r, "size=3"));
    assert.ok(!matchesFilter(r, "files="), "not a scalar");
  });

  test("every filter must match", () => {
    assert.deepEqual(filterImages([r], ["os=debian", "architecture=x86_64"]), [r]);
    assert.deepEqual(filterImages([r], ["os=debian", "architecture=aarch64"]), []);
    assert.deepEqual(filterImages([r], []), [r]);
  });
});
