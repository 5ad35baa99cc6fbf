import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parsePolicy, planRetention } from "../../../registry/retention.js";

const now = new Date("2024-06-30T00:00:00Z");
const product = (os: string, release: string, versions: [string, string][]) => ({
  key: { os, release, arch: "amd64", variant: "default" },
  versions: versions.map(([name, createdAt]) => ({ name, createdAt })),
});
const daily = product("debian", "12", [
  ["20240601_0000", "2024-06-01T00:00:00Z"],
  ["20240629_0000", "2024-06-29T00:00:00Z"],
  ["20240615_0000", "2024-06-15T00:00:00Z"],
  ["20240625_0000", "2024-06-25T00:00:00Z"],
]);
const retired = (r: ReturnType<typeof planRetention>) => r.map((x) => `${x.product.os}@${x.version}`).sort();

describe("retention policies", () => {
  it("keep N retires all but the newest N by version key", () => {
    assert.deepEqual(retired(planRetention([daily], [parsePolicy("debian/*:keep=2")], now)), [
      "debian@20240601_0000",
      "debian@20240615_0000",
    ]);
  });

  it("younger-than keeps recent publishes; with keep, a version either rule keeps stays", () => {
    assert.deepEqual(retired(planRetention([daily], [parsePolicy("*:younger-than=10d")], now)), [
      "debian@20240601_0000",
      "debian@20240615_0000",
    ]);
    assert.deepEqual(retired(planRetention([daily], [parsePolicy("*:keep=3,younger-than=1d")], now)), [
      "debian@20240601_0000",
    ]);
  });

  it("the newest version always stays, even when every rule would retire it", () => {
    assert.deepEqual(retired(planRetention([daily], [parsePolicy("*:younger-than=1s")], now)), [
      "debian@20240601_0000",
      "debian@20240615_0000",
      "debian@20240625_0000",
    ]);
  });

  it("the first matching policy applies; unmatched products are left alone", () => {
    const other = product("alpine", "3.20", [
      ["20240101_0000", "2024-01-01T00:00:00Z"],
      ["20240102_0000", "2024-01-02T00:00:00Z"],
    ]);
    const r = planRetention(
      [daily, other],
      [parsePolicy("debian/12/*:keep=3"), parsePolicy("debian/*:keep=1")],
      now,
    );
    assert.deepEqual(retired(r), ["debian@20240601_0000"]);
    assert.match(r[0]!.reason, /debian\/12\/\*: keep the newest 3/);
  });

  it("refuses malformed policies with the reason", () => {
    assert.throws(() => parsePolicy("debian/*"), /PATTERN:keep=N/);
    assert.throws(() => parsePolicy("debian/*:keep=0"), /at least 1/);
    assert.throws(() => parsePolicy("debian/*:size=3"), /unknown rule/);
    assert.throws(() => parsePolicy("debian/*:younger-than=soon"), /not a duration/);
  });
});
