#!/usr/bin/env bash
# The fuzz suite (test/integration/fuzz.test.ts) by hand: many cases with a random seed, against a
# real server on loopback (issue 6, "Proof by hostile input"). Not part of CI, which runs the same
# suite with a fixed seed and a bounded count.
#
# Usage: bash bench/fuzz.sh [CASES] [SEED]      CASES default 10000, SEED default random
#   LXHUB_FUZZ_SURVEY=1 bash bench/fuzz.sh    go on after a violation and list every distinct one
#   LXHUB_FUZZ_RESTART_EVERY=N                restart the server on the same data every N cases
#
# The log goes to stdout and to bench/results/tmp/fuzz-<seed>.log (git-ignored); its last lines give
# the seed, the cases run, the 5xx count and the cases per second. A failure replays with the same
# CASES and SEED (the two properties use SEED and SEED+1, with 70% and 30% of CASES).
set -euo pipefail
cd "$(dirname "$0")/.."

cases=${1:-10000}
seed=${2:-$(node -e 'console.log(require("node:crypto").randomInt(2 ** 31))')}
mkdir -p bench/results/tmp
log="bench/results/tmp/fuzz-$seed.log"

npm run build >/dev/null
echo "fuzz: $cases cases, seed $seed (replay: bash bench/fuzz.sh $cases $seed); log $log"
LXHUB_FUZZ_RUNS=$cases LXHUB_FUZZ_SEED=$seed \
  node --test --test-concurrency=1 --test-reporter=spec dist/test/integration/fuzz.test.js 2>&1 | tee "$log"
