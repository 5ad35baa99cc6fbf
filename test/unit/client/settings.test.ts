import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  DEFAULT_LIMITS,
  formatDuration,
  parseDuration,
  parseSize,
  resolveLimits,
} from "../../../client/settings.js";

describe("client settings", () => {
  test("durations: units, plain seconds, 0 for none; a malformed one names the setting", () => {
    assert.equal(parseDuration("90", "x"), 90_000);
    assert.equal(parseDuration("90s", "x"), 90_000);
    assert.equal(parseDuration("15m", "x"), 900_000);
    assert.equal(parseDuration("1.5h", "x"), 5_400_000);
    assert.equal(parseDuration("2d", "x"), 172_800_000);
    assert.equal(parseDuration("250ms", "x"), 250);
    assert.equal(parseDuration("0", "x"), 0);
    assert.throws(() => parseDuration("soon", "--timeout"), /^Error: --timeout: "soon" is not a duration/);
    assert.throws(() => parseDuration("-1s", "--timeout"), /is not a duration/);
  });

  test("sizes: binary units with or without iB, plain bytes", () => {
    assert.equal(parseSize("4096", "x"), 4096);
    assert.equal(parseSize("10G", "x"), 10 * 1024 ** 3);
    assert.equal(parseSize("10GiB", "x"), 10 * 1024 ** 3);
    assert.equal(parseSize("500mb", "x"), 500 * 1024 ** 2);
    assert.equal(parseSize("1.5k", "x"), 1536);
    assert.equal(parseSize("0", "x"), 0);
    assert.throws(() => parseSize("big", "--max-size"), /^Error: --max-size: "big" is not a size/);
  });

  test("a flag beats the environment, which beats the default", () => {
    const names = { deadlineMs: "--timeout", maxRatio: "--max-ratio" };
    assert.deepEqual(resolveLimits({}, names, {}), DEFAULT_LIMITS);
    const env = { LXHUB_PULL_TIMEOUT: "1h", LXHUB_MAX_RATIO: "10", LXHUB_STALL_TIMEOUT: "" };
    const fromEnv = resolveLimits({}, names, env);
    assert.equal(fromEnv.deadlineMs, 3_600_000);
    assert.equal(fromEnv.maxRatio, 10);
    assert.equal(fromEnv.stallMs, DEFAULT_LIMITS.stallMs, "an empty variable is unset");
    const fromFlag = resolveLimits({ deadlineMs: "5m", maxRatio: "3" }, names, env);
    assert.equal(fromFlag.deadlineMs, 300_000);
    assert.equal(fromFlag.maxRatio, 3);
    assert.throws(
      () => resolveLimits({}, names, { LXHUB_MAX_RATIO: "0.5" }),
      /^Error: LXHUB_MAX_RATIO: "0.5"/,
    );
    assert.throws(() => resolveLimits({ maxRatio: "x" }, names, {}), /^Error: --max-ratio: "x"/);
  });

  test("durations for messages", () => {
    assert.equal(formatDuration(12 * 3_600_000), "12 h");
    assert.equal(formatDuration(2000), "2 s");
    assert.equal(formatDuration(90_000), "90 s");
    assert.equal(formatDuration(120_000), "2 min");
    assert.equal(formatDuration(250), "250 ms");
  });
});
