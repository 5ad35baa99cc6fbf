/**
 * Property-based fuzzing of the write path (issue 6, "Proof by hostile input"): fast-check
 * generates publish, delete, upload and token requests against a real `lxhub serve`, and every
 * case is checked against the invariants in test/fuzz/harness.ts (no 5xx; a 4xx changes nothing;
 * the documents are served as JSON; restarts on the same data serve the same documents; aliases
 * never change owner or leave a push token's scope; every answer is one openapi.yaml documents,
 * through test/support/api.ts). Cases that failed once run first (KNOWN_*_CASES in
 * test/fuzz/cases.ts).
 *
 * CI runs a fixed seed and a bounded count. Environment:
 * - `LXHUB_FUZZ_RUNS`: cases in all (default below), split between the two properties;
 * - `LXHUB_FUZZ_SEED`: the seed (default fixed, below);
 * - `LXHUB_FUZZ_RESTART_EVERY`: restart the server on the same data every this many cases;
 * - `LXHUB_FUZZ_SURVEY=1`: do not stop at the first violation: record it, check the server
 *   still restarts on that data, start over on a fresh data folder and go on; the test still
 *   fails at the end, listing every distinct violation (for finding them all in one run).
 * `bench/fuzz.sh` runs ≥ 10,000 cases with a random seed.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  catalogCaseArb,
  KNOWN_CATALOG_CASES,
  KNOWN_OTHER_CASES,
  otherCaseArb,
  runCase,
  VersionClock,
  type FuzzCase,
} from "../fuzz/cases.js";
import { FuzzTarget, signature } from "../fuzz/harness.js";

const DEFAULT_SEED = 20260601;
const seed = Number(process.env.LXHUB_FUZZ_SEED ?? DEFAULT_SEED);
const runs = Number(process.env.LXHUB_FUZZ_RUNS ?? 1500);
const restartEvery = Number(process.env.LXHUB_FUZZ_RESTART_EVERY ?? 300);
const survey = process.env.LXHUB_FUZZ_SURVEY === "1";

describe("fuzzing the write path of a real server", { timeout: 24 * 3600_000 }, () => {
  const t = new FuzzTarget();
  const clock = new VersionClock();
  let firstFailure: string | null = null;
  /** Survey mode: signature → the first case that showed it, its message, and how often. */
  const violations = new Map<string, { c: FuzzCase; message: string; count: number }>();
  const started = Date.now();

  before(async () => {
    await t.start();
  });
  after(async () => {
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `${t.summary(seed)}; ${seconds.toFixed(1)} s (${(t.stats.cases / seconds).toFixed(1)} cases/s)`,
    );
    for (const [sig, { first, count }] of t.failures) {
      console.log(`5xx seen ${count}×: ${sig}\n  first: ${first.request.method} ${first.request.path}`);
    }
    await t.stop();
  });

  /** Survey mode: record the violation, check a restart on this data, then start afresh. */
  async function record(c: FuzzCase, err: Error): Promise<void> {
    const add = (message: string) => {
      const problem = message.split("\n")[0]!;
      const logged = /server logged: (.*)/.exec(message)?.[1] ?? /→ (\d+ .*)/.exec(message)?.[1] ?? "";
      const sig = `${c.kind}: ${signature(problem)} | ${signature(logged)}`;
      const seen = violations.get(sig);
      if (seen) {
        seen.count++;
        if (message.length < seen.message.length) Object.assign(seen, { c, message });
      } else violations.set(sig, { c, message, count: 1 });
    };
    add(err.message);
    try {
      await t.restart();
    } catch (restartErr) {
      add(`after that case: ${(restartErr as Error).message}`);
    }
    await t.reset();
  }

  const property = (arb: fc.Arbitrary<FuzzCase>) =>
    fc.asyncProperty(arb, async (c) => {
      try {
        await runCase(t, clock, c);
        if (t.stats.cases % restartEvery === 0) await t.restart();
      } catch (err) {
        if (survey) return record(c, err as Error);
        // The case as first met, before shrinking replays smaller ones on a changed catalog.
        if (firstFailure === null) {
          firstFailure = (err as Error).message;
          console.error(`first failing case (seed ${seed}):\n${fc.stringify(c)}\n${firstFailure}`);
        }
        throw err;
      }
    });

  const check = async (
    arb: fc.Arbitrary<FuzzCase>,
    known: FuzzCase[],
    propertySeed: number,
    numRuns: number,
  ) => {
    await fc.assert(property(arb), {
      seed: propertySeed,
      numRuns,
      // Cases that failed once run first, every time.
      examples: known.map((c) => [c] as [FuzzCase]),
      includeErrorInReport: true,
    });
    await t.restart();
    if (survey && violations.size) {
      const list = [...violations.entries()].map(
        ([sig, v]) => `\n### ${v.count}× ${sig}\ncase: ${fc.stringify(v.c)}\n${v.message}`,
      );
      violations.clear();
      assert.fail(`${list.length} distinct violations:${list.join("\n")}`);
    }
  };

  it("publishes, deletes and concurrent duplicates", async () => {
    await check(catalogCaseArb, KNOWN_CATALOG_CASES, seed, Math.ceil(runs * 0.7));
  });

  it("uploads, upload sessions and tokens", async () => {
    await check(otherCaseArb, KNOWN_OTHER_CASES, seed + 1, Math.floor(runs * 0.3));
  });
});
