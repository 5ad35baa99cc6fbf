import { it } from "node:test";
import assert from "node:assert/strict";
import { normalize, parseRange } from "../../../server/read-path.js";

it("normalize merges doubled slashes (LXC download template, pitfall 15) and refuses dot segments", () => {
  assert.equal(normalize("/streams/v1/index.json"), "streams/v1/index.json");
  assert.equal(normalize("//images/a/b//rootfs.tar.xz"), "images/a/b/rootfs.tar.xz");
  assert.equal(
    normalize("/images/debian/12/amd64/default/20240101_22:10/lxd.tar.xz"),
    "images/debian/12/amd64/default/20240101_22:10/lxd.tar.xz",
  );
  assert.equal(normalize("/images/x/20240101_22%3A10/f?x=1"), "images/x/20240101_22:10/f");
  assert.equal(normalize("/.well-known/lxhub/jwks.json"), ".well-known/lxhub/jwks.json");
  assert.equal(normalize("/images/../catalog.sqlite"), null);
  assert.equal(normalize("/images/%2e%2e/catalog.sqlite"), null);
  assert.equal(normalize("/images/./x"), null);
  assert.equal(normalize("/images/%zz"), null);
  assert.equal(normalize("/a%00b"), null);
});

it("parseRange: one range or the whole file; past the end is unsatisfiable", () => {
  assert.deepEqual(parseRange("bytes=0-9", 100), { start: 0, end: 9 });
  assert.deepEqual(parseRange("bytes=90-", 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=-10", 100), { start: 90, end: 99 });
  assert.deepEqual(parseRange("bytes=50-500", 100), { start: 50, end: 99 });
  assert.equal(parseRange("bytes=100-", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=-0", 100), "unsatisfiable");
  assert.equal(parseRange("bytes=0-1,5-6", 100), null);
  assert.equal(parseRange("items=0-1", 100), null);
  assert.equal(parseRange(undefined, 100), null);
});
