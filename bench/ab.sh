#!/usr/bin/env bash
# A/B of the read path in one run: this checkout's lxhub against the one at git revision BASE
# (e.g. the commit before a change on the read path), on the same machine, alternating.
#
#   bash bench/ab.sh BASE [RUNS]
#
# Each build gets its own fresh data folder holding the same image: a tiny metadata tarball and a
# BENCH_MIB (default 512) MiB root file of random bytes, pushed with `lxhub push`. Then, RUNS
# times (default 3), alternating B then A:
#   - images.json with wrk -t2 -c64 for BENCH_WRK_SECONDS (default 10): requests/s and p99;
#   - the root file downloaded once with curl to /dev/null: MB/s.
# Prints the medians and A/B ratios, and writes them to bench/results/tmp/ab.md (git-ignored).
# Loopback only; the temporary worktree, data and servers are removed at exit. Needs: git, node,
# curl, wrk, xz, tar. Not part of the test suite or CI.
set -euo pipefail
export LC_ALL=C
BASE=${1:?usage: bash bench/ab.sh BASE_REVISION [RUNS]}
RUNS=${2:-3}
MIB=${BENCH_MIB:-512}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in git node curl wrk xz tar; do
  command -v "$tool" >/dev/null || { echo "ab: $tool is not installed" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/lxhub-ab.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  git -C "$ROOT" worktree remove --force "$TMP/base" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

echo "ab: building $BASE in a temporary worktree" >&2
git -C "$ROOT" worktree add -q --detach "$TMP/base" "$BASE"
ln -s "$ROOT/node_modules" "$TMP/base/node_modules"
(cd "$TMP/base" && npx tsc -p tsconfig.json >/dev/null && chmod +x dist/cli/main.js)
[[ -x "$ROOT/dist/cli/main.js" ]] || { echo "ab: run npm run build first" >&2; exit 1; }

# The image: metadata.yaml in lxd.tar.xz, and random bytes as the root file.
IMG="$TMP/image"
mkdir -p "$IMG/meta"
printf 'architecture: x86_64\ncreation_date: 1704067200\nproperties:\n  os: bench\n  release: "1"\n  variant: default\n  architecture: amd64\n  description: bench\n' >"$IMG/meta/metadata.yaml"
tar -C "$IMG/meta" -cJf "$IMG/lxd.tar.xz" metadata.yaml
rm -r "$IMG/meta"
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$IMG/rootfs.squashfs"

# start NAME CLI: a server on a fresh data folder with the image pushed; sets URL_<NAME>.
start() {
  local name=$1 cli=$2 data="$TMP/data-$1" log="$TMP/$1.log"
  "$cli" serve --data "$data" --listen 127.0.0.1:0 --tls-listen '' --allow-insecure-writes --no-deltas --gc-interval 0 >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q '"event":"listening"' "$log" 2>/dev/null && break; sleep 0.1; done
  local url
  url=$(grep -o '"http":"[^"]*"' "$log" | head -n1 | cut -d'"' -f4)
  [[ -n "$url" ]] || { echo "ab: $name did not start:" >&2; cat "$log" >&2; exit 1; }
  local token
  token=$("$cli" token create --data "$data" --scope admin --ttl 1h 2>/dev/null)
  "$cli" push "$url" "$IMG" --token "$token" --version 20240101_0000 >/dev/null 2>&1
  local size
  size=$(curl -s "$url/streams/v1/images.json" | wc -c)
  echo "ab: $name serves $url (images.json: $size bytes)" >&2
  printf -v "URL_$name" '%s' "$url"
}
start A "$ROOT/dist/cli/main.js"
start B "$TMP/base/dist/cli/main.js"
FILE=images/bench/1/amd64/default/20240101_0000/rootfs.squashfs

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A RPS P99 MBS
for run in $(seq 1 "$RUNS"); do
  for name in B A; do
    url_var="URL_$name"
    url=${!url_var}
    out=$(wrk -t2 -c64 -d"${WRK_SECONDS}s" --latency "$url/streams/v1/images.json")
    RPS[$name]+="$(awk '/^Requests\/sec/ {print $2}' <<<"$out") "
    P99[$name]+="$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms$/,"",v); else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out") "
    t=$(curl -s -o /dev/null -w '%{time_total}' "$url/$FILE")
    MBS[$name]+="$(awk -v t="$t" -v b=$((MIB * 1024 * 1024)) 'BEGIN {printf "%.1f", b / t / 1e6}') "
    echo "ab: run $run $name done" >&2
  done
done
row() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median; }
rA=$(row "${RPS[A]}"); rB=$(row "${RPS[B]}")
pA=$(row "${P99[A]}"); pB=$(row "${P99[B]}")
mA=$(row "${MBS[A]}"); mB=$(row "${MBS[B]}")
mkdir -p "$ROOT/bench/results/tmp"
{
  echo "| figure (median of $RUNS, alternating) | A: $(git -C "$ROOT" rev-parse --short HEAD) | B: $(git -C "$ROOT" rev-parse --short "$BASE") | A/B |"
  echo "|---|---|---|---|"
  echo "| images.json req/s, wrk -t2 -c64 ${WRK_SECONDS}s | $rA | $rB | $(awk -v a="$rA" -v b="$rB" 'BEGIN {printf "%.3f", a/b}') |"
  echo "| images.json p99 ms | $pA | $pB | $(awk -v a="$pA" -v b="$pB" 'BEGIN {printf "%.3f", a/b}') |"
  echo "| ${MIB} MiB file download MB/s, curl | $mA | $mB | $(awk -v a="$mA" -v b="$mB" 'BEGIN {printf "%.3f", a/b}') |"
  echo
  echo "all runs: req/s A: ${RPS[A]}/ B: ${RPS[B]}; MB/s A: ${MBS[A]}/ B: ${MBS[B]}"
} | tee "$ROOT/bench/results/tmp/ab.md"
