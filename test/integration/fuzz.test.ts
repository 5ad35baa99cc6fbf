/**
 * Property-based fuzzing of the write path (issue 6, "Proof by hostile input"): fast-check
 * generates publish, delete, upload and token requests against a real `lxhub serve`, and every
 * case is checked against the invariants in test/fuzz/harness.ts (no 5xx; a 4xx changes nothing;
 * the documents are served as JSON; restarts on the same data serve the same documents).
 *
 * CI runs a fixed seed and a bounded count. Environment:
 * - `LXHUB_FUZZ_RUNS`: cases in all (default 1500), split between the two properties;
 * - `LXHUB_FUZZ_SEED`: the seed (default fixed, below);
 * - `LXHUB_FUZZ_RESTART_EVERY`: restart the server every this many cases (default 300).
 * `bench/fuzz.sh` runs ≥ 10,000 cases with a random seed.
 */
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { catalogCaseArb, otherCaseArb, runCase, VersionClock, type FuzzCase } from "../fuzz/cases.js";
import { FuzzTarget } from "../fuzz/harness.js";

const DEFAULT_SEED = 20260601;
const seed = Number(process.env.LXHUB_FUZZ_SEED ?? DEFAULT_SEED);
const runs = Number(process.env.LXHUB_FUZZ_RUNS ?? 1500);
const restartEvery = Number(process.env.LXHUB_FUZZ_RESTART_EVERY ?? 300);

describe("fuzzing the write path of a real server", { timeout: 24 * 3600_000 }, () => {
  const t = new FuzzTarget();
  const clock = new VersionClock();
  let firstFailure: string | null = null;
  const started = Date.now();

  before(async () => {
    await t.start();
  });
  after(async () => {
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `${t.summary(seed)}; ${seconds.toFixed(1)} s (${(t.stats.cases / seconds).toFixed(1)} cases/s)`,
    );
    for (const [sig, x] of t.failures) {
      console.log(`5xx seen: ${sig.split("\n")[0]}\n  first request: ${x.request.method} ${x.request.path}`);
    }
    await t.stop();
  });

  const property = (arb: fc.Arbitrary<FuzzCase>) =>
    fc.asyncProperty(arb, async (c) => {
      try {
        await runCase(t, clock, c);
        if (t.stats.cases % restartEvery === 0) await t.restart();
      } catch (err) {
        // The case as first met, before shrinking replays smaller ones on a changed catalog.
        if (firstFailure === null) {
          firstFailure = (err as Error).message;
          console.error(`first failing case (seed ${seed}):\n${fc.stringify(c)}\n${firstFailure}`);
        }
        throw err;
      }
    });

  it("publishes, deletes and concurrent duplicates", async () => {
    await fc.assert(property(catalogCaseArb), {
      seed,
      numRuns: Math.ceil(runs * 0.7),
      includeErrorInReport: true,
    });
    await t.restart();
  });

  it("uploads, upload sessions and tokens", async () => {
    await fc.assert(property(otherCaseArb), {
      seed: seed + 1,
      numRuns: Math.floor(runs * 0.3),
      includeErrorInReport: true,
    });
    await t.restart();
  });
});
