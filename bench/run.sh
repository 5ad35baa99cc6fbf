#!/usr/bin/env bash
# lxhub server benchmark against baselines (nginx with sendfile, openssl, dd). `npm run bench`
# builds and then runs this script; it is not part of the test suite or CI.
#
# One run, loopback only, everything under bench/results/tmp/run.* (git-ignored), servers stopped
# and the temp folder removed at exit:
#   1. a file of random bytes (1 GiB) is pushed into a fresh lxhub data folder through the publish
#      API (curl, 256 MiB PATCHes, commit) and published as a version, so it is served under images/;
#   2. nginx (bench/nginx.conf: one worker, sendfile) serves the same file (a hard link to the
#      blob, so both servers read the same page-cache pages) and a copy of images.json;
#   3. download throughput, curl, lxhub vs nginx, alternating, median of BENCH_RUNS;
#   4. images.json (about 20 KB after publishing small versions of several products), wrk
#      -t2 -c64, requests/s and p99, lxhub vs nginx, alternating, median of BENCH_RUNS;
#   5. push throughput of a NEW random file per run through the API (curl) vs `openssl dgst
#      -sha256` of the same file, and vs `dd conv=fsync` (the disk's durable write speed);
#      then `lxhub push` end to end, when dist/cli/push.js exists and works;
#   6. peak RSS of a freshly started lxhub while 16 curl clients download the big file and one
#      client pushes another one;
#   7. a Markdown table of the results on stdout and in bench/results/latest.md (only for a run
#      with the default knobs below; other runs write bench/results/tmp/trial.md).
#
# Knobs (environment): BENCH_MIB (size of the big files, default 1024), BENCH_RUNS (default 3),
# BENCH_WRK_SECONDS (default 10), BENCH_CLIENTS (concurrent downloads in step 6, default 16),
# BENCH_KEEP=1 keeps the temp folder. Needs: node, curl, nginx, wrk, openssl, xz, tar, coreutils,
# cmp, findmnt (fincore, when present, reports what was in the page cache). The server runs through
# dist/cli/main.js's shebang, as the installed command does. Units: MB = 10^6 bytes. Results and
# their limits are discussed in docs/performance.md.
set -euo pipefail
umask 022
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
CLI="$ROOT/dist/cli/main.js"
MIB=${BENCH_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-16}
SIZE=$((MIB * 1024 * 1024))
CHUNK=$((256 * 1024 * 1024))

die() {
  echo "bench: $*" >&2
  exit 1
}
say() { echo "bench: $*" >&2; }

for tool in node curl nginx wrk openssl xz tar split dd sha256sum cmp findmnt awk; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y nginx-light wrk curl openssl xz-utils coreutils diffutils util-linux)"
done
[[ -f "$CLI" ]] || die "$CLI is missing: run 'npm run build' first (or 'npm run bench')"
# Run the command as users do, through its shebang: it carries V8 flags (a smaller young generation)
# that `node dist/cli/main.js` would drop.
if [[ -x "$CLI" ]]; then
  LXHUB=("$CLI")
  LXHUB_HOW="the lxhub command (shebang flags: $(head -n1 "$CLI" | sed 's/^#!//'))"
else
  LXHUB=(node "$CLI")
  LXHUB_HOW="node dist/cli/main.js (NOT executable, so without its shebang's flags: run 'npm run build')"
  echo "bench: warning: $CLI is not executable; running it with plain node, without its shebang's flags" >&2
fi
[[ "$MIB" =~ ^[0-9]+$ && "$MIB" -ge 1 ]] || die "BENCH_MIB must be a positive integer"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 ]] || die "BENCH_RUNS must be a positive integer"

mkdir -p "$BENCH_DIR/results/tmp"
RUN=$(mktemp -d "$BENCH_DIR/results/tmp/run.XXXXXX")
chmod 755 "$RUN" # nginx workers (user nobody when started as root) must reach www/
export XDG_CACHE_HOME="$RUN/cache" # where `lxhub push` keeps its upload-session records

LXHUB_PID=""
NGINX_PID=""
SAMPLER_PID=""
BG_PIDS=()


cleanup() {
  local rc=$?
  set +e
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  stop_pid "$SAMPLER_PID"
  stop_pid "$NGINX_PID" QUIT
  stop_pid "$LXHUB_PID" TERM
  if [[ $rc -ne 0 ]]; then
    say "FAILED (exit $rc); BENCH_KEEP=1 keeps the temp folder for a look. Logs:"
    for f in "$RUN"/*.log "$RUN"/*.err "$RUN"/nginx/logs/error.log; do
      [[ -s "$f" ]] && { echo "--- $f (last lines)" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  if [[ "${BENCH_KEEP:-}" == 1 ]]; then
    say "kept $RUN"
  else
    rm -rf "$RUN"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ns() { date +%s%N; }
# MB/s from bytes and nanoseconds
mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.0f", b * 1000 / ns }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
meets() { # value op goal → yes/no
  awk -v v="$1" -v g="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= g : v < g; print ok ? "yes" : "**no**" }'
}


wait_port() { # url seconds
  local url=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    curl -s -o /dev/null "$url" && return 0
    sleep 0.1
  done
  return 1
}

# --- lxhub server ---------------------------------------------------------------------------------
DATA="$RUN/data"
HTTP=""
SERVER_N=0
# Explicit free ports and /readyz polling, not the "listening" log line: stdout may be buffered.
start_lxhub() {
  SERVER_N=$((SERVER_N + 1))
  local log="$RUN/lxhub-$SERVER_N.log" err="$RUN/lxhub-$SERVER_N.err" port tls_port i
  port=$(free_port)
  tls_port=$(free_port)
  while [[ "$tls_port" == "$port" ]]; do tls_port=$(free_port); done
  "${LXHUB[@]}" serve --data "$DATA" --listen "127.0.0.1:$port" --tls-listen "127.0.0.1:$tls_port" --allow-insecure-writes >"$log" 2>"$err" &
  LXHUB_PID=$!
  HTTP="http://127.0.0.1:$port"
  for ((i = 0; i < 300; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/readyz")" == 200 ]] && return 0
    kill -0 "$LXHUB_PID" 2>/dev/null || die "lxhub serve exited at start-up: $(tail -n 5 "$err" "$log")"
    sleep 0.1
  done
  die "lxhub serve at $HTTP was not ready (GET /readyz → 200) within 30 s"
}
proc_kb() { # field of the running server's /proc status, in kB
  local v
  v=$(awk -v k="$1:" '$1 == k { print $2 }' "/proc/$LXHUB_PID/status" 2>/dev/null) || true
  [[ -n "$v" ]] || die "the lxhub server (pid $LXHUB_PID) is gone: was it killed from outside? $(tail -n 2 "$RUN/lxhub-$SERVER_N.log")"
  echo "$v"
}
stop_lxhub() {
  stop_pid "$LXHUB_PID" TERM
  LXHUB_PID=""
}

# --- publish API through curl ---------------------------------------------------------------------
api() { # method path [curl args…] → response body; dies with the server's error
  local method=$1 path=$2 out
  shift 2
  out=$(curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $TOKEN" -H 'Expect:' "$@" "$HTTP$path") ||
    die "$method $path failed: $out"
  printf '%s' "$out"
}
open_upload() { api POST /api/v1/uploads | sed -E 's/.*"location":"([^"]+)".*/\1/'; }

# A small file in one request: PUT to the session with the body commits it.
upload_small() { # file → digest
  local file=$1 hex loc
  hex=$(hex_of "$file")
  loc=$(open_upload)
  api PUT "$loc?digest=sha256:$hex" -T "$file" >/dev/null
  echo "sha256:$hex"
}

# A big file as PATCHes of its 256 MiB parts (split beforehand: curl cannot send a byte range of
# a file), then a commit without a body.
upload_parts() { # partdir total hex
  local dir=$1 total=$2 hex=$3 loc off=0 part len out
  loc=$(open_upload)
  for part in "$dir"/part.*; do
    len=$(stat -c %s "$part")
    out=$(api PATCH "$loc" -T "$part" -H "Content-Range: bytes $off-$((off + len - 1))/$total")
    off=$((off + len))
    [[ "$out" == *"\"offset\":$off"* ]] || die "PATCH answered $out, expected offset $off"
  done
  api PUT "$loc?digest=sha256:$hex" >/dev/null
}

make_meta() { # dir os release variant creation_unix → dir/lxd.tar.xz
  local d=$1 os=$2 release=$3 variant=$4 created=$5
  mkdir -p "$d"
  cat >"$d/metadata.yaml" <<EOF
architecture: x86_64
creation_date: $created
properties:
  architecture: amd64
  description: $os $release amd64 ($variant)
  os: $os
  release: $release
  variant: $variant
templates: {}
EOF
  tar -C "$d" -cJf "$d/lxd.tar.xz" metadata.yaml
}

put_version() { # os release variant version meta_digest root_digest → response JSON
  local os=$1 release=$2 variant=$3 version=$4 meta=$5 root=$6 aliases
  aliases="\"$os/$release/$variant\""
  [[ "$variant" == default ]] && aliases="$aliases,\"$os/$release\""
  api PUT "/api/v1/products/$os/$release/amd64/$variant/versions/$version" -H 'Content-Type: application/json' \
    --data-binary "{\"files\":[{\"name\":\"lxd.tar.xz\",\"ftype\":\"lxd.tar.xz\",\"digest\":\"$meta\"},{\"name\":\"rootfs.squashfs\",\"ftype\":\"squashfs\",\"digest\":\"$root\"}],\"aliases\":[$aliases]}"
}

random_file() { # path — random bytes, split into 256 MiB parts in path.parts/, flushed to disk
  head -c "$SIZE" /dev/urandom >"$1"
  mkdir -p "$1.parts"
  split -b "$CHUNK" -d -a 3 "$1" "$1.parts/part."
  sync # no write-back of these files may overlap a timed step
}

# --- machine --------------------------------------------------------------------------------------
DATE=$(date -u +%Y-%m-%dT%H:%MZ)
CPUS=$(nproc)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
KERNEL=$(uname -r)
NODE_V=$(node -v)
NGINX_V=$(nginx -v 2>&1 | sed 's/^nginx version: //')
WRK_V=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $2 }') # wrk -v exits with 1
CURL_V=$(curl --version | awk 'NR == 1 { print $2 }')
OPENSSL_V=$(openssl version | awk '{ print $2 }')
DISK=$(findmnt -no SOURCE,FSTYPE -T "$RUN" 2>/dev/null | tr -s ' ' || echo "?")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
say "$DATE, $CPUS CPUs ($CPU_MODEL), $MEM_GIB GiB, node $NODE_V, $NGINX_V; temp folder $RUN"
awk -v l="${LOAD_START%% *}" -v n="$CPUS" 'BEGIN { exit !(l > n / 2) }' &&
  say "warning: load average $LOAD_START before the start: other processes use the CPUs, figures will be noisy"

# --- 1. big file into lxhub -----------------------------------------------------------------------
say "1/6 making a $MIB MiB random file and publishing it"
TOKEN=$("${LXHUB[@]}" token create --data "$DATA" --scope admin 2>"$RUN/token.err") || die "token create failed: $(cat "$RUN/token.err")"
start_lxhub
BIG="$RUN/big.bin"
random_file "$BIG"
BIG_HEX=$(hex_of "$BIG")
upload_parts "$BIG.parts" "$SIZE" "$BIG_HEX"
rm -rf "$BIG.parts"
make_meta "$RUN/meta/big" debian bookworm default "$(date -d 2025-01-01 +%s)"
META=$(upload_small "$RUN/meta/big/lxd.tar.xz")
BIG_VERSION_JSON=$(put_version debian bookworm default 20250101_0000 "$META" "sha256:$BIG_HEX")
BIG_PATH=$(printf '%s' "$BIG_VERSION_JSON" | node -e '
  const v = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const f = v.files.find((f) => f.name === "rootfs.squashfs");
  if (!f) process.exit(1);
  console.log(f.path.replace(/^\/+/, ""));') || die "no rootfs.squashfs path in $BIG_VERSION_JSON"
BIG_URL="$HTTP/$BIG_PATH"
BLOB=$(find "$DATA" -type f -name "$BIG_HEX" | head -n1)
[[ -n "$BLOB" ]] || die "blob file $BIG_HEX not found under $DATA"
rm -f "$BIG" # the blob in the data folder is the one copy both servers read from now

# Small versions of several products, so images.json has a realistic shape and size (~20 KB).
say "   publishing small versions for images.json"
n=0
for product in debian/bookworm debian/trixie ubuntu/jammy ubuntu/noble alpine/3.21; do
  for variant in default cloud; do
    for day in 02 03; do
      n=$((n + 1))
      os=${product%/*} release=${product#*/}
      make_meta "$RUN/meta/$n" "$os" "$release" "$variant" "$(date -d "2025-01-$day" +%s)"
      head -c 65536 /dev/urandom >"$RUN/meta/$n/rootfs.squashfs"
      m=$(upload_small "$RUN/meta/$n/lxd.tar.xz")
      r=$(upload_small "$RUN/meta/$n/rootfs.squashfs")
      put_version "$os" "$release" "$variant" "202501${day}_0000" "$m" "$r" >/dev/null
    done
  done
done
VERSIONS=$((n + 1))
PRODUCTS=$((n / 2))

# --- 2. nginx -------------------------------------------------------------------------------------
say "2/6 starting nginx (one worker, sendfile)"
NG="$RUN/nginx"
mkdir -p "$NG/logs" "$NG/tmp" "$NG/www/streams/v1" "$NG/www/$(dirname "$BIG_PATH")"
NGINX_PORT=$(free_port)
sed "s/@PORT@/$NGINX_PORT/" "$BENCH_DIR/nginx.conf" >"$NG/nginx.conf"
ln "$BLOB" "$NG/www/$BIG_PATH"
curl -sS --fail -o "$NG/www/streams/v1/images.json" "$HTTP/streams/v1/images.json" || die "cannot fetch images.json from lxhub"
DOC_BYTES=$(stat -c %s "$NG/www/streams/v1/images.json")
nginx -p "$NG/" -c "$NG/nginx.conf" -e "$NG/logs/error.log" -g 'daemon off;' &
NGINX_PID=$!
NGX="http://127.0.0.1:$NGINX_PORT"
wait_port "$NGX/streams/v1/images.json" 10 || die "nginx did not start: $(cat "$NG/logs/error.log")"
cmp -s <(curl -sS "$HTTP/streams/v1/images.json") <(curl -sS "$NGX/streams/v1/images.json") ||
  die "lxhub and nginx serve different images.json bytes"

# --- 3. downloads ---------------------------------------------------------------------------------
say "3/6 downloads of $MIB MiB, $RUNS runs each, alternating"
cat "$BLOB" >/dev/null # page cache: both servers read the same (hard-linked) file
CACHED_BIG=$(cached_pct "$BLOB")
cmp -s "$BLOB" <(curl -sS "$BIG_URL") || die "lxhub served other bytes than it stored at $BIG_URL"
download() { # url → bytes/s
  local out code size speed
  out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{speed_download}' "$1")
  read -r code size speed <<<"$out"
  [[ "$code" == 200 && "$size" == "$SIZE" ]] || die "download of $1: HTTP $code, $size bytes"
  echo "$speed"
}
DL_L=() DL_N=()
for ((i = 0; i < RUNS; i++)); do
  v=$(download "$BIG_URL")
  DL_L+=("$v")
  v=$(download "$NGX/$BIG_PATH")
  DL_N+=("$v")
done
DL_L_MED=$(median "${DL_L[@]}")
DL_N_MED=$(median "${DL_N[@]}")
DL_RATIO=$(ratio "$DL_L_MED" "$DL_N_MED")
mb() { awk -v v="$1" 'BEGIN { printf "%.0f", v / 1e6 }'; }
mb_list() { local v out=(); for v in "$@"; do out+=("$(mb "$v")"); done; echo "${out[*]}"; }
say "   lxhub $(mb "$DL_L_MED") MB/s, nginx $(mb "$DL_N_MED") MB/s, ratio $DL_RATIO"

# --- 4. images.json under wrk ---------------------------------------------------------------------
say "4/6 images.json ($DOC_BYTES bytes): wrk -t2 -c64 -d${WRK_SECONDS}s, $RUNS runs each, alternating"
wrk_run() { # url label → "rps p99_ms"
  local out rps p99
  out=$(wrk -t2 -c64 -d"${WRK_SECONDS}s" --latency "$1")
  printf '%s\n' "$out" >"$RUN/wrk-$2.txt"
  if grep -q 'Non-2xx' <<<"$out"; then die "wrk against $1: $(grep 'Non-2xx' <<<"$out")"; fi
  # Timeouts (wrk gives up after 2 s) are worth knowing but do not void the run.
  if grep -q 'Socket errors' <<<"$out"; then echo "$2: $(grep 'Socket errors' <<<"$out" | tr -s ' ')" >>"$RUN/wrk-errors.txt"; fi
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) m = v / 1000; else if (v ~ /ms$/) m = v + 0; else if (v ~ /s$/) m = v * 1000; printf "%.2f", m }' <<<"$out")
  [[ -n "$rps" && -n "$p99" ]] || die "cannot read wrk output for $1 (see $RUN/wrk-$2.txt)"
  echo "$rps $p99"
}
wrk -t2 -c64 -d2s "$HTTP/streams/v1/images.json" >/dev/null # warm-up (JIT, connections)
wrk -t2 -c64 -d2s "$NGX/streams/v1/images.json" >/dev/null
RPS_L=() RPS_N=() P99_L=() P99_N=()
for ((i = 0; i < RUNS; i++)); do
  r=$(wrk_run "$HTTP/streams/v1/images.json" "lxhub-$i")
  read -r rps p99 <<<"$r"
  RPS_L+=("$rps") P99_L+=("$p99")
  r=$(wrk_run "$NGX/streams/v1/images.json" "nginx-$i")
  read -r rps p99 <<<"$r"
  RPS_N+=("$rps") P99_N+=("$p99")
done
RPS_L_MED=$(median "${RPS_L[@]}")
RPS_N_MED=$(median "${RPS_N[@]}")
P99_L_MED=$(median "${P99_L[@]}")
P99_N_MED=$(median "${P99_N[@]}")
RPS_RATIO=$(ratio "$RPS_L_MED" "$RPS_N_MED")
say "   lxhub $RPS_L_MED req/s p99 $P99_L_MED ms, nginx $RPS_N_MED req/s p99 $P99_N_MED ms, ratio $RPS_RATIO"

# --- 5. push --------------------------------------------------------------------------------------
say "5/6 push of new $MIB MiB files, $RUNS runs: openssl dgst, dd conv=fsync, curl through the API"
PUSH=() SHA=() DDW=()
CACHED_PUSH=""
for ((i = 0; i < RUNS; i++)); do
  f="$RUN/push-$i.bin"
  random_file "$f"
  CACHED_PUSH+="${CACHED_PUSH:+, }$(cached_pct "$f")"
  t0=$(now_ns)
  hex=$(openssl dgst -sha256 -r "$f" | cut -d' ' -f1)
  t1=$(now_ns)
  SHA+=("$(mbps "$SIZE" $((t1 - t0)))")
  [[ "$hex" =~ ^[0-9a-f]{64}$ ]] || die "openssl dgst gave no digest for $f"
  t0=$(now_ns)
  dd if="$f" of="$RUN/dd.bin" bs=4M conv=fsync status=none
  t1=$(now_ns)
  DDW+=("$(mbps "$SIZE" $((t1 - t0)))")
  rm -f "$RUN/dd.bin"
  sync
  t0=$(now_ns)
  upload_parts "$f.parts" "$SIZE" "$hex"
  t1=$(now_ns)
  PUSH+=("$(mbps "$SIZE" $((t1 - t0)))")
  rm -rf "$f" "$f.parts"
done
PUSH_MED=$(median "${PUSH[@]}")
SHA_MED=$(median "${SHA[@]}")
DDW_MED=$(median "${DDW[@]}")
PUSH_RATIO=$(ratio "$PUSH_MED" "$SHA_MED")
PUSH_DD_RATIO=$(ratio "$PUSH_MED" "$DDW_MED")
say "   API push $PUSH_MED MB/s, openssl sha256 $SHA_MED MB/s (ratio $PUSH_RATIO), dd conv=fsync $DDW_MED MB/s"

# `lxhub push` end to end (hash on the client, upload in its own chunks, publish: the server
# reads the file again for the image fingerprint), when the command exists and works.
CLI_PUSH="not measured: dist/cli/push.js is missing"
CLI_PUSH_MBPS=""
CLI_PUSH_SPLIT=""
CLI_PUSH_NS=""
if [[ -f "$ROOT/dist/cli/push.js" ]]; then
  d="$RUN/cli-push"
  make_meta "$d" debian trixie default "$(date -d 2025-02-01 +%s)"
  rm -f "$d/metadata.yaml"
  random_file "$d/rootfs.squashfs"
  rm -rf "$d/rootfs.squashfs.parts"
  t0=$(now_ns)
  if "${LXHUB[@]}" push "$HTTP" "$d" --token "$TOKEN" --version 20250201_0000 >"$RUN/cli-push.log" 2>"$RUN/cli-push.err"; then
    t1=$(now_ns)
    CLI_PUSH_MBPS=$(mbps "$SIZE" $((t1 - t0)))
    CLI_PUSH="$CLI_PUSH_MBPS MB/s"
    CLI_PUSH_NS=$((t1 - t0))
    say "   lxhub push $CLI_PUSH"
  else
    CLI_PUSH="not measured: lxhub push failed ($(tail -n 1 "$RUN/cli-push.err" | tr '|' '/'))"
    say "   $CLI_PUSH"
  fi
  rm -rf "$d"
fi

HWM_1=$(proc_kb VmHWM)
stop_lxhub # also flushes its request log, read here
if [[ -n "$CLI_PUSH_NS" ]]; then
  # Where the time went, from the server's request log: uploads (PATCH + commit), publish (PUT
  # version: metadata check, fingerprint over every byte, index rebuild); the rest is the client.
  CLI_PUSH_SPLIT=$(grep '"ua":"lxhub-push"' "$RUN/lxhub-$SERVER_N.log" | node -e '
    const lines = require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
    const sum = (f) => lines.filter(f).reduce((n, l) => n + l.ms, 0) / 1000;
    const up = sum((l) => l.path.startsWith("/api/v1/uploads"));
    const pub = sum((l) => l.method === "PUT" && l.path.startsWith("/api/v1/products/"));
    const total = Number(process.argv[1]) / 1e9;
    console.log(`${total.toFixed(1)} s in all: uploads ${up.toFixed(1)} s, publish ${pub.toFixed(1)} s, client-side hashing and the rest ${(total - up - pub).toFixed(1)} s`);
  ' "$CLI_PUSH_NS") || CLI_PUSH_SPLIT="(no breakdown: cannot read the server log)"
  say "   lxhub push: $CLI_PUSH_SPLIT"
fi

# --- 6. peak RSS under load -----------------------------------------------------------------------
say "6/6 peak RSS of a fresh lxhub: $CLIENTS downloads + 1 push of $MIB MiB at once"
start_lxhub
BIG_URL="$HTTP/$BIG_PATH"
f="$RUN/load-push.bin"
random_file "$f"
load_hex=$(hex_of "$f")
sleep 1
RSS_IDLE=$(proc_kb VmRSS)
HWM_IDLE=$(proc_kb VmHWM)
(
  while :; do
    while read -r key value _; do
      if [[ "$key" == VmRSS: ]]; then echo "$value"; fi
    done <"/proc/$LXHUB_PID/status" || exit 0
    sleep 0.1
  done
) >"$RUN/rss.txt" 2>/dev/null &
SAMPLER_PID=$!
t0=$(now_ns)
for ((i = 0; i < CLIENTS; i++)); do
  curl -s -o /dev/null -w '%{http_code} %{size_download}\n' "$BIG_URL" >"$RUN/load-dl-$i.txt" &
  BG_PIDS+=($!)
done
tp0=$(now_ns)
upload_parts "$f.parts" "$SIZE" "$load_hex"
tp1=$(now_ns)
for pid in "${BG_PIDS[@]}"; do wait "$pid" || die "a download in step 6 failed"; done
t1=$(now_ns)
BG_PIDS=()
stop_pid "$SAMPLER_PID"
SAMPLER_PID=""
for ((i = 0; i < CLIENTS; i++)); do
  [[ "$(cat "$RUN/load-dl-$i.txt")" == "200 $SIZE" ]] || die "download $i in step 6: $(cat "$RUN/load-dl-$i.txt")"
done
HWM_2=$(proc_kb VmHWM)
RSS_SAMPLED=$(sort -n "$RUN/rss.txt" | tail -n1)
LOAD_DL=$(mbps $((SIZE * CLIENTS)) $((t1 - t0)))
LOAD_PUSH=$(mbps "$SIZE" $((tp1 - tp0)))
kb_mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k * 1024 / 1e6 }'; }
say "   VmHWM $(kb_mb "$HWM_2") MB (sampled max $(kb_mb "$RSS_SAMPLED") MB, idle $(kb_mb "$RSS_IDLE") MB)"
stop_lxhub

# --- 7. results -----------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# Only a run with the default settings replaces the recorded results; a trial run with other knobs
# writes its table to the git-ignored scratch folder.
RESULT="$BENCH_DIR/results/latest.md"
if [[ "$MIB/$RUNS/$WRK_SECONDS/$CLIENTS" != 1024/3/10/16 ]]; then
  RESULT="$BENCH_DIR/results/tmp/trial.md"
fi
GIB_LABEL="$MIB MiB"
[[ "$MIB" == 1024 ]] && GIB_LABEL="1 GiB"
{
  echo "# lxhub benchmark, $DATE"
  echo
  echo "Machine: $CPUS CPUs ($CPU_MODEL), $MEM_GIB GiB RAM, kernel $KERNEL, disk $DISK; node $NODE_V,"
  echo "$NGINX_V (1 worker, sendfile), wrk $WRK_V, curl $CURL_V, OpenSSL $OPENSSL_V. lxhub commit $COMMIT"
  echo "(plus uncommitted changes, if any). Load average (1, 5, 15 min) $LOAD_START at the start, $LOAD_END at the end."
  echo "Server started as $LXHUB_HOW."
  echo "Command: \`npm run bench\`. MB = 10^6 bytes; medians of $RUNS runs."
  echo
  echo "| measurement | lxhub | baseline | ratio | goal | met |"
  echo "|---|---|---|---|---|---|"
  echo "| download $GIB_LABEL over HTTP (curl, page cache) | $(mb "$DL_L_MED") MB/s | nginx: $(mb "$DL_N_MED") MB/s | $DL_RATIO | ≥ 0.9 | $(meets "$DL_RATIO" ">=" 0.9) |"
  echo "| images.json ($DOC_BYTES B), wrk -t2 -c64 -d${WRK_SECONDS}s | $(printf '%.0f' "$RPS_L_MED") req/s, p99 $P99_L_MED ms | nginx: $(printf '%.0f' "$RPS_N_MED") req/s, p99 $P99_N_MED ms | $RPS_RATIO | ≥ 0.7 | $(meets "$RPS_RATIO" ">=" 0.7) |"
  echo "| push $GIB_LABEL through the API (curl, 256 MiB PATCHes + commit) | $PUSH_MED MB/s | openssl dgst -sha256: $SHA_MED MB/s | $PUSH_RATIO | ≥ 0.5 | $(meets "$PUSH_RATIO" ">=" 0.5) |"
  echo "| same push vs the disk's durable write speed | $PUSH_MED MB/s | dd bs=4M conv=fsync: $DDW_MED MB/s | $PUSH_DD_RATIO | — | — |"
  if [[ -n "$CLI_PUSH_MBPS" ]]; then
    echo "| \`lxhub push\` $GIB_LABEL end to end (1 run: hash, upload, publish) | $CLI_PUSH_MBPS MB/s | openssl dgst -sha256: $SHA_MED MB/s | $(ratio "$CLI_PUSH_MBPS" "$SHA_MED") | — | — |"
  else
    echo "| \`lxhub push\` end to end | $CLI_PUSH | — | — | — | — |"
  fi
  echo "| peak RSS (VmHWM) of a fresh server, $CLIENTS downloads + 1 push of $GIB_LABEL | $(kb_mb "$HWM_2") MB | — | — | < 150 MB | $(meets "$(kb_mb "$HWM_2")" "<" 150) |"
  echo
  echo "Details:"
  echo
  echo "- downloads, MB/s per run: lxhub $(mb_list "${DL_L[@]}") / nginx $(mb_list "${DL_N[@]}")"
  echo "- images.json req/s per run: lxhub ${RPS_L[*]} / nginx ${RPS_N[*]}; p99 ms: lxhub ${P99_L[*]} / nginx ${P99_N[*]}"
  echo "- images.json: $DOC_BYTES bytes, $VERSIONS versions of $PRODUCTS products (served without gzip: wrk sends no Accept-Encoding)"
  if [[ -s "$RUN/wrk-errors.txt" ]]; then echo "- wrk socket errors: $(paste -sd';' "$RUN/wrk-errors.txt")"; fi
  echo "- push MB/s per run: API ${PUSH[*]} / openssl ${SHA[*]} / dd conv=fsync ${DDW[*]}"
  echo "- page cache: the served blob was ${CACHED_BIG} resident before the downloads; each push file ${CACHED_PUSH} before its runs"
  echo "- step 6: RSS $(kb_mb "$RSS_IDLE") MB idle 1 s after start (VmHWM then $(kb_mb "$HWM_IDLE") MB), sampled max $(kb_mb "$RSS_SAMPLED") MB (every 100 ms), VmHWM $(kb_mb "$HWM_2") MB;"
  echo "  $CLIENTS downloads together $LOAD_DL MB/s, the concurrent push $LOAD_PUSH MB/s"
  if [[ -n "$CLI_PUSH_SPLIT" ]]; then echo "- \`lxhub push\`: $CLI_PUSH_SPLIT"; fi
  echo "- VmHWM of the first server after steps 1–5 (publishing, downloads, wrk, pushes): $(kb_mb "$HWM_1") MB"
} >"$RESULT.new"
mv "$RESULT.new" "$RESULT"
echo
cat "$RESULT"
say "results written to $RESULT"
