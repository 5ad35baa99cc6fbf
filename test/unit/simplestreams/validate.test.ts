import { test } from "node:test";
import assert from "node:assert/strict";
import {
  NAMES,
  nameProblem,
  validateStream,
  StreamValidationError,
  type StreamProduct,
} from "../../../simplestreams/index.js";
import { productOf, type ProductSpec } from "./fixtures.js";

const ACME: ProductSpec = { os: "Acme", release: "1", arch: "amd64" };
const OTHER: ProductSpec = { os: "Other", release: "2", arch: "amd64" };

function lenient(products: StreamProduct[], blame?: { product: string; version?: string }) {
  const dropped: StreamValidationError[] = [];
  const kept = validateStream(products, { onDrop: (d) => dropped.push(d), blame });
  return { dropped, kept };
}

test("names: one grammar, with lengths, real dates and known architectures", () => {
  assert.equal(nameProblem("os", "debian"), null);
  assert.match(nameProblem("os", "a/b") ?? "", /must be a letter or digit/);
  assert.match(nameProblem("os", "..") ?? "", /must be/);
  assert.match(nameProblem("release", "x".repeat(65)) ?? "", /longer than 64/);
  assert.match(nameProblem("version", "20241301_0000") ?? "", /real date/);
  assert.equal(nameProblem("version", "20240229_0000"), null);
  assert.match(nameProblem("arch", "pdp11") ?? "", /unknown architecture/);
  assert.equal(nameProblem("alias", "debian/12/cloud"), null);
  for (const bad of ["a,b", "a b", "a//b", "a/", "/a", "a\u0000"]) assert.ok(nameProblem("alias", bad), bad);
  assert.match(nameProblem("requirementKey", "bad key") ?? "", /requirement key "bad key"/);
  // Patterns carry no upper length bound: the limit is maxLength, as in openapi.yaml.
  for (const rule of Object.values(NAMES)) assert.doesNotMatch(rule.pattern.source, /\{\d*,\d+\}/);
});

test("lenient: a broken product, version or alias is left out and reported, the rest is kept", () => {
  const badProduct = productOf(ACME, { "20240101_0000": { roots: ["squashfs"] } });
  badProduct.requirements = { "bad key": "x" };
  const good = productOf(OTHER, {
    "20240101_0000": { roots: ["squashfs"] },
    "20240102_0000": { roots: ["squashfs"] },
  });
  good.versions[1]!.files[0]!.sha256 = "NOT HEX";
  const { dropped, kept } = lenient([badProduct, good]);
  assert.deepEqual(
    kept.map((c) => [c.key, c.versions.map((v) => v.version.name)]),
    [["Other:2:amd64:default", ["20240101_0000"]]],
  );
  assert.deepEqual(
    dropped.map((d) => [d.rule, d.location.product, d.location.version]),
    [
      ["requirement", "Acme:1:amd64:default", undefined],
      ["file", "Other:2:amd64:default", "20240102_0000"],
    ],
  );
  // Strict mode throws the first of them.
  assert.throws(() => validateStream([badProduct, good]), StreamValidationError);
});

test("blame: a clash lands on what is being published, never on what was there first", () => {
  const first = productOf(OTHER, { "20240101_0000": { roots: ["squashfs"] } });
  first.aliases = ["shared"];
  const second = productOf(ACME, { "20240101_0000": { roots: ["squashfs"] } });
  second.aliases = ["shared", "acme"];
  // ACME sorts first, but it is the one being published: it loses the alias.
  const { dropped, kept } = lenient([second, first], { product: "Acme:1:amd64:default" });
  assert.equal(dropped.length, 1);
  assert.equal(dropped[0]!.rule, "alias-conflict");
  assert.equal(dropped[0]!.location.product, "Acme:1:amd64:default");
  assert.deepEqual(
    kept.map((c) => [c.key, c.aliases]),
    [
      ["Acme:1:amd64:default", ["acme"]],
      ["Other:2:amd64:default", ["shared"]],
    ],
  );
});

test("blame: a republished image is refused on the new version, even when its key sorts first", () => {
  const p = productOf(ACME, { "20240201_0000": { roots: ["squashfs"] } });
  const copy = structuredClone(p.versions[0]!);
  copy.name = "20240101_0000";
  copy.files = copy.files.map((f) => ({ ...f, path: f.path.replace("20240201_0000", "20240101_0000") }));
  p.versions.push(copy);
  const { dropped, kept } = lenient([p], { product: "Acme:1:amd64:default", version: "20240101_0000" });
  assert.deepEqual(
    dropped.map((d) => [d.rule, d.location.version]),
    [["duplicate-image", "20240101_0000"]],
  );
  assert.deepEqual(
    kept[0]?.versions.map((v) => v.version.name),
    ["20240201_0000"],
  );
});
