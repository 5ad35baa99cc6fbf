import { test } from "node:test";
import assert from "node:assert/strict";
import {
  compareVersionKeys,
  isValidVersionKey,
  versionDate,
  versionFromDate,
} from "../../../simplestreams/index.js";

test("version keys must start with a real calendar date (pitfall 8)", () => {
  for (const key of [
    "20240101",
    "20240101_0000",
    "20240101_22:10",
    "20240523.1",
    "202401011504",
    "20240229_1200",
    "20000229",
  ]) {
    assert.equal(isValidVersionKey(key), true, key);
  }
  for (const key of [
    "2024010", // too short: LXD needs 8 characters
    "v20240101",
    "20241301", // month 13
    "20240001",
    "20240132",
    "20240230",
    "20230229", // not a leap year
    "19000229", // century, not a leap year
    "2024-01-01",
    "latest",
    "",
  ]) {
    assert.equal(isValidVersionKey(key), false, key);
  }
});

test("version keys use a restricted character set and at most 64 characters", () => {
  assert.equal(isValidVersionKey("20240101 1200"), false);
  assert.equal(isValidVersionKey("20240101/1200"), false);
  assert.equal(isValidVersionKey("20240101%20"), false);
  assert.equal(isValidVersionKey("20240101_ü"), false);
  assert.equal(isValidVersionKey("20240101-rc.1:A_b"), true);
  assert.equal(isValidVersionKey("20240101" + "x".repeat(56)), true);
  assert.equal(isValidVersionKey("20240101" + "x".repeat(57)), false);
});

test("versionDate is midnight UTC of the key's first eight characters, as LXD records created_at", () => {
  assert.equal(versionDate("20240201_0930")?.toISOString(), "2024-02-01T00:00:00.000Z");
  assert.equal(versionDate("00050101")?.toISOString(), "0005-01-01T00:00:00.000Z");
  assert.equal(versionDate("20240230"), null);
});

test("versionFromDate writes YYYYMMDD_HHMM in UTC", () => {
  assert.equal(versionFromDate(new Date(Date.UTC(2024, 0, 5, 7, 3, 59))), "20240105_0703");
  assert.equal(versionFromDate(new Date("2023-12-31T23:59:00-02:00")), "20240101_0159");
  assert.ok(isValidVersionKey(versionFromDate(new Date())));
  assert.throws(() => versionFromDate(new Date(Number.NaN)), RangeError);
});

test("compareVersionKeys is byte-wise, as LXD picks latest", () => {
  assert.ok(compareVersionKeys("20240201_0000", "20240101_0000") > 0);
  assert.ok(compareVersionKeys("20240101_0100", "20240101") > 0);
  assert.equal(compareVersionKeys("20240101", "20240101"), 0);
  // `_` (0x5f) sorts after digits: mixing formats inverts the real order (pitfall 8).
  assert.ok(compareVersionKeys("20240101_0000", "202401011200") > 0);
  // `.2` is "newer" than `.10` byte-wise.
  assert.ok(compareVersionKeys("20240523.2", "20240523.10") > 0);
  // Byte-wise on UTF-8 like Go, not on UTF-16 code units: U+E000 and U+1F600 swap places.
  assert.ok(compareVersionKeys("\u{e000}", "\u{1f600}") < 0);
  assert.ok("\u{e000}" > "\u{1f600}", "JavaScript's own order differs here");
  const sorted = ["20240101_0000", "20231231_2359", "20240101", "20240102"].sort(compareVersionKeys);
  assert.deepEqual(sorted, ["20231231_2359", "20240101", "20240101_0000", "20240102"]);
});
