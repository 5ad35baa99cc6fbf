#!/usr/bin/env bash
# Push and pull throughput of lxhub on its two storage set-ups, in ONE run: the embedded default
# (SQLite + data folder) against PostgreSQL + S3 (a Ceph RADOS Gateway), each next to the raw
# speed of what it stores into. `npm run bench:storage` builds and then runs this script; it is
# not part of the test suite or CI.
#
# One run, loopback only, everything under bench/results/tmp/storage.* (git-ignored); servers,
# PostgreSQL and the Ceph daemons stopped and the temp folder removed at exit (also on failure or
# Ctrl-C):
#   1. bench/storage-services.mjs starts a throwaway PostgreSQL and a throwaway single-node Ceph
#      cluster with radosgw as the tests do (test/support/postgres.ts, rgw.ts: a memstore OSD,
#      i.e. the objects live in the OSD's RAM; PostgreSQL with fsync=off), a database and a bucket;
#   2. three lxhub servers on 127.0.0.1, each with an admin token:
#        A  `lxhub serve --data DIR`                                     (SQLite + data folder)
#        B  `lxhub serve --db postgres://… --blobs s3://BUCKET/lxhub/?…`   (streams file requests)
#        C  a replica of B (same catalog and bucket) with `--blobs-redirect 600` (302 to a
#           presigned URL)
#   3. set-up: a BENCH_MIB MiB random file published as a version on A and on B (one publish on
#      B serves C too), and the same bytes put straight into the bucket (`raw/published`);
#   4. download of the published file with curl, BENCH_RUNS runs, order reversed every other
#      run: A, B (proxied through lxhub), C (curl -L: 302, then radosgw), two bare Node proxies
#      of the same object (bench/storage-services.mjs proxy: node:http GET of a presigned URL, or
#      the SDK's GetObject, piped into the response: what proxying costs in Node without lxhub),
#      a raw GET from a
#      presigned URL (made here, not by lxhub) of the very object B streams and C redirects to
#      (lxhub's multipart upload, copied to its content address), another of `raw/published`
#      (the same bytes as one PUT: another object layout in RADOS), and `dd bs=4M` of A's blob
#      file to /dev/null (no HTTP: the ceiling of a read from the page cache);
#      the bytes from A, B, C and radosgw are checked against the digest once. Downloads come
#      before pushes so that `raw/published` is gone again when the pushes fill the OSD;
#   5. push, BENCH_RUNS runs, each with a NEW random file (nothing can be deduplicated), the
#      order of the steps reversed every other run:
#        A push   through the API with curl: POST /api/v1/uploads, 64 MiB PATCHes, commit
#        B push   the same against B
#        dd       dd bs=4M conv=fsync of the file into A's data folder (the disk's durable write)
#        sha256   sha256sum of the file (what A must compute as well)
#        S3 PUT   curl -T of the file to a presigned PUT URL of radosgw (one request)
#        SDK      multipart uploads of the file with @aws-sdk/lib-storage, 8 MiB parts (B's part
#                 size), one part in flight (as B sends them) and four (the SDK's default);
#                 timed inside node, start-up not included
#      The peak RSS of A and B during each of their pushes: VmHWM after the push, reset before it
#      by writing 5 to /proc/<pid>/clear_refs (falls back to the peak since start when refused).
#      Deleted objects (the raw PUT, B's committed session) are reclaimed at once with
#      `radosgw-admin gc process --include-all`, untimed;
#   6. a Markdown table (medians, MB/s with MB = 10^6 bytes, lxhub/baseline ratios) on stdout
#      and in bench/results/storage-latest.md (only for a run with the default knobs; other runs
#      write bench/results/tmp/storage-trial.md).
#
# Knobs (environment): BENCH_MIB (file size, default 256; the memstore OSD holds 2 GiB, so
# (BENCH_RUNS + 3) × BENCH_MIB MiB must stay under 1600: B keeps every pushed blob, and a push
# holds its session's object and the copy at the content address at once), BENCH_RUNS (default 3),
# BENCH_S3_PART_MIB (B's S3 part size, as `partSize=` in its s3:// URL, and the SDK baseline's;
# default 8, lxhub's default), BENCH_KEEP=1 keeps the temp folder. Only a run with the defaults
# writes bench/results/storage-latest.md. Needs: node, curl, dd, sha256sum, split, tar, xz, awk,
# findmnt, runuser; PostgreSQL (initdb, pg_ctl) and Ceph (ceph-mon, ceph-osd, radosgw,
# ceph-common) as the tests use them; root (PostgreSQL runs as the postgres user,
# /proc/<pid>/clear_refs). Started in the background from a script, bash ignores SIGINT: stop
# such a run with SIGTERM. Results are discussed in docs/performance.md, "S3 and PostgreSQL".
set -euo pipefail
umask 022
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
CLI="$ROOT/dist/cli/main.js"
HELPER="$BENCH_DIR/storage-services.mjs"
MIB=${BENCH_MIB:-256}
RUNS=${BENCH_RUNS:-3}
PART_MIB=${BENCH_S3_PART_MIB:-8} # lxhub's S3 part size (its default: 8 MiB), and the SDK baseline's
SIZE=$((MIB * 1024 * 1024))
CHUNK=$((64 * 1024 * 1024))

die() {
  echo "bench-storage: $*" >&2
  exit 1
}
say() { echo "bench-storage: $*" >&2; }

for tool in node curl dd sha256sum split tar xz awk sort findmnt sync runuser; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y curl coreutils util-linux)"
done
for tool in radosgw radosgw-admin ceph-mon ceph-osd ceph; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y ceph-mon ceph-osd radosgw ceph-common uuid-runtime)"
done
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ||
  die "PostgreSQL's initdb is not installed (Debian: apt-get install -y postgresql)"
[[ "$(id -u)" == 0 ]] || die "run as root (as the tests do): PostgreSQL is started as the postgres user"
[[ -f "$CLI" && -f "$ROOT/dist/test/support/rgw.js" ]] || die "dist/ is missing: run 'npm run build' first (or 'npm run bench:storage')"
if [[ -x "$CLI" ]]; then
  LXHUB=("$CLI")
else
  LXHUB=(node "$CLI")
  say "warning: $CLI is not executable; running it with plain node, without its shebang's flags"
fi
[[ "$MIB" =~ ^[0-9]+$ && "$MIB" -ge 1 ]] || die "BENCH_MIB must be a positive integer"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 ]] || die "BENCH_RUNS must be a positive integer"
[[ "$PART_MIB" =~ ^[0-9]+$ && "$PART_MIB" -ge 5 ]] || die "BENCH_S3_PART_MIB must be an integer of at least 5 (S3's smallest part)"
(((RUNS + 3) * MIB <= 1600)) || die "(BENCH_RUNS + 3) × BENCH_MIB = $(((RUNS + 3) * MIB)) MiB would not fit the 2 GiB memstore OSD of the test gateway (at most 1600)"

mkdir -p "$BENCH_DIR/results/tmp"
RUN=$(mktemp -d "$BENCH_DIR/results/tmp/storage.XXXXXX")
export XDG_CACHE_HOME="$RUN/cache"

# The helper's temporary folders (PostgreSQL's and the Ceph cluster's) go into a folder of this
# run, so the script finds the cluster's ceph.conf and can clean up after a helper that died.
SVC_TMP=$(mktemp -d /tmp/lxhub-bench-storage.XXXXXX)
chmod 755 "$SVC_TMP" # PostgreSQL runs as the postgres user
SERVICES_PID=""
PID_A="" PID_B="" PID_C="" PROXY_HTTP_PID="" PROXY_SDK_PID=""

cleanup() {
  local rc=$?
  set +e
  stop_pid "$PID_C" TERM
  stop_pid "$PID_B" TERM
  stop_pid "$PID_A" TERM
  stop_pid "$PROXY_HTTP_PID" TERM
  stop_pid "$PROXY_SDK_PID" TERM
  # The helper's exit hooks stop radosgw, the OSD, the monitor and PostgreSQL (they take a moment).
  stop_pid "$SERVICES_PID" TERM
  # Should the helper have died without its exit hooks: the daemons by their pid files.
  for pidfile in "$SVC_TMP"/lxhub-ceph-*/run/*.pid; do
    [[ -f "$pidfile" ]] && kill -KILL "$(cat "$pidfile")" 2>/dev/null
  done
  for pgdata in "$SVC_TMP"/lxhub-pg-*/data; do
    [[ -f "$pgdata/postmaster.pid" ]] && runuser -u postgres -- "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -n1)" -D "$pgdata" -m immediate stop >/dev/null 2>&1
  done
  rm -rf "$SVC_TMP"
  if [[ $rc -ne 0 ]]; then
    say "FAILED (exit $rc); BENCH_KEEP=1 keeps the temp folder for a look. Logs:"
    for f in "$RUN"/*.log "$RUN"/*.err; do
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
mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.0f", b * 1000 / ns }'; } # bytes ns → MB/s
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n1; }
kb_mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k * 1024 / 1e6 }'; }

# --- machine --------------------------------------------------------------------------------------
DATE=$(date -u +%Y-%m-%dT%H:%MZ)
CPUS=$(nproc)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
KERNEL=$(uname -r)
NODE_V=$(node -v)
CURL_V=$(curl --version | awk 'NR == 1 { print $2 }')
CEPH_V=$(radosgw --version 2>/dev/null | awk '{ print $3; exit }' || echo "?")
PG_V=$({ initdb --version 2>/dev/null || /usr/lib/postgresql/*/bin/initdb --version; } | awk '{ print $3; exit }' || echo "?")
DISK=$(findmnt -no SOURCE,FSTYPE -T "$RUN" 2>/dev/null | tr -s ' ' || echo "?")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
say "$DATE, $CPUS CPUs ($CPU_MODEL), $MEM_GIB GiB, node $NODE_V, Ceph $CEPH_V, PostgreSQL $PG_V; temp folder $RUN"
awk -v l="${LOAD_START%% *}" -v n="$CPUS" 'BEGIN { exit !(l > n / 2) }' &&
  say "warning: load average $LOAD_START before the start: other processes use the CPUs, figures will be noisy"

# --- 1. PostgreSQL and radosgw --------------------------------------------------------------------
say "1/6 starting PostgreSQL and a Ceph RADOS Gateway (about 20 s)"
TMPDIR="$SVC_TMP" node "$HELPER" start >"$RUN/services.out" 2>"$RUN/services.err" &
SERVICES_PID=$!
for ((i = 0; i < 3000; i++)); do
  [[ -s "$RUN/services.out" ]] && break
  kill -0 "$SERVICES_PID" 2>/dev/null || die "the service helper exited: $(tail -n 20 "$RUN/services.err")"
  sleep 0.1
done
[[ -s "$RUN/services.out" ]] || die "PostgreSQL and radosgw were not up within 300 s"
svc() { node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(s[process.argv[2]]);' "$RUN/services.out" "$1"; }
DB_URL=$(svc dbUrl)
S3_ENDPOINT=$(svc endpoint)
BUCKET=$(svc bucket)
AWS_ACCESS_KEY_ID=$(svc accessKeyId)
AWS_SECRET_ACCESS_KEY=$(svc secretAccessKey)
AWS_REGION=$(svc region)
export S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
START_MS=$(node -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(`PostgreSQL ${(s.startMs.postgres / 1000).toFixed(1)} s, radosgw + bucket ${(s.startMs.rgw / 1000).toFixed(1)} s`);' "$RUN/services.out")
CEPH_CONF=$(ls "$SVC_TMP"/lxhub-ceph-*/ceph.conf 2>/dev/null | head -n1)
[[ -n "$CEPH_CONF" ]] || die "no ceph.conf under $SVC_TMP"
# radosgw frees the RADOS objects of deleted S3 objects only in its garbage collection, 2 h later by
# default: run it now (untimed), so deleted uploads leave room in the 2 GiB memstore OSD.
rgw_gc() { radosgw-admin -c "$CEPH_CONF" gc process --include-all >>"$RUN/gc.log" 2>&1 || say "warning: radosgw-admin gc process failed (see gc.log)"; }
BLOBS_URL="s3://$BUCKET/lxhub/?endpoint=$S3_ENDPOINT&region=$AWS_REGION&forcePathStyle=true"
[[ "$PART_MIB" == 8 ]] || BLOBS_URL+="&partSize=$((PART_MIB * 1024 * 1024))"
say "   $START_MS; bucket $BUCKET at $S3_ENDPOINT"

# --- 2. lxhub servers -----------------------------------------------------------------------------
# start_server NAME args… → sets PID_<NAME> and HTTP_<NAME>; ready when GET /readyz answers 200.
start_server() {
  local name=$1 port tls_port pid url i
  shift
  port=$(free_port)
  tls_port=$(free_port)
  while [[ "$tls_port" == "$port" ]]; do tls_port=$(free_port); done
  "${LXHUB[@]}" serve --listen "127.0.0.1:$port" --tls-listen "127.0.0.1:$tls_port" --allow-insecure-writes "$@" \
    >"$RUN/server-$name.log" 2>"$RUN/server-$name.err" &
  pid=$!
  url="http://127.0.0.1:$port"
  printf -v "PID_$name" '%s' "$pid"
  printf -v "HTTP_$name" '%s' "$url"
  for ((i = 0; i < 600; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" == 200 ]] && return 0
    kill -0 "$pid" 2>/dev/null || die "server $name exited at start-up: $(tail -n 5 "$RUN/server-$name.err" "$RUN/server-$name.log")"
    sleep 0.1
  done
  die "server $name at $url was not ready (GET /readyz → 200) within 60 s"
}
say "2/6 starting lxhub A (SQLite + data folder), B (PostgreSQL + S3) and C (B's replica, --blobs-redirect)"
DATA_A="$RUN/data-a"
TOKEN_A=$("${LXHUB[@]}" token create --data "$DATA_A" --scope admin 2>"$RUN/token-a.err") || die "token create (A) failed: $(cat "$RUN/token-a.err")"
TOKEN_B=$("${LXHUB[@]}" token create --data "$RUN/data-b" --db "$DB_URL" --blobs "$BLOBS_URL" --scope admin 2>"$RUN/token-b.err") ||
  die "token create (B) failed: $(cat "$RUN/token-b.err")"
start_server A --data "$DATA_A"
start_server B --data "$RUN/data-b" --db "$DB_URL" --blobs "$BLOBS_URL"
start_server C --data "$RUN/data-c" --db "$DB_URL" --blobs "$BLOBS_URL" --blobs-redirect 600

# --- publish API through curl ---------------------------------------------------------------------
api() { # server method path [curl args…] → response body; dies with the server's error
  local name=$1 method=$2 path=$3 out url token
  shift 3
  url="HTTP_$name" token="TOKEN_$name"
  [[ "$name" == C ]] && token=TOKEN_B
  out=$(curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer ${!token}" -H 'Expect:' "$@" "${!url}$path") ||
    die "$name: $method $path failed: $out"
  printf '%s' "$out"
}
open_upload() { api "$1" POST /api/v1/uploads | sed -E 's/.*"location":"([^"]+)".*/\1/'; }
upload_small() { # server file → digest (one PUT with the body commits)
  local hex loc
  hex=$(hex_of "$2")
  loc=$(open_upload "$1")
  api "$1" PUT "$loc?digest=sha256:$hex" -T "$2" >/dev/null
  echo "sha256:$hex"
}
upload_parts() { # server partdir hex [sessions-file] — POST, PATCH per part, PUT ?digest=
  local name=$1 dir=$2 hex=$3 loc off=0 part len out
  loc=$(open_upload "$name")
  [[ -z "${4:-}" ]] || echo "$loc" >>"$4"
  for part in "$dir"/part.*; do
    len=$(stat -c %s "$part")
    out=$(api "$name" PATCH "$loc" -T "$part" -H "Content-Range: bytes $off-$((off + len - 1))/$SIZE")
    off=$((off + len))
    [[ "$out" == *"\"offset\":$off"* ]] || die "$name: PATCH answered $out, expected offset $off"
  done
  api "$name" PUT "$loc?digest=sha256:$hex" >/dev/null
}
random_file() { # path — random bytes, split into 64 MiB parts in path.parts/, flushed to disk
  head -c "$SIZE" /dev/urandom >"$1"
  mkdir -p "$1.parts"
  split -b "$CHUNK" -d -a 3 "$1" "$1.parts/part."
  sync # no write-back of these files may overlap a timed step
}
presign() { node "$HELPER" presign "$1" "$BUCKET" "$2" 2>>"$RUN/helper.err"; }

# --- 3. set-up: the published file ----------------------------------------------------------------
say "3/6 publishing a $MIB MiB file on A and B, and putting it straight into the bucket"
PUB="$RUN/published.bin"
random_file "$PUB"
PUB_HEX=$(hex_of "$PUB")
META_DIR="$RUN/meta"
mkdir -p "$META_DIR"
cat >"$META_DIR/metadata.yaml" <<EOF
architecture: x86_64
creation_date: $(date -d 2025-01-01 +%s)
properties:
  architecture: amd64
  description: debian bookworm amd64 (default)
  os: debian
  release: bookworm
  variant: default
templates: {}
EOF
tar -C "$META_DIR" -cJf "$META_DIR/lxd.tar.xz" metadata.yaml
FILE_PATH=""
for s in A B; do
  upload_parts "$s" "$PUB.parts" "$PUB_HEX"
  meta=$(upload_small "$s" "$META_DIR/lxd.tar.xz")
  json=$(api "$s" PUT /api/v1/products/debian/bookworm/amd64/default/versions/20250101_0000 -H 'Content-Type: application/json' \
    --data-binary "{\"files\":[{\"name\":\"lxd.tar.xz\",\"ftype\":\"lxd.tar.xz\",\"digest\":\"$meta\"},{\"name\":\"rootfs.squashfs\",\"ftype\":\"squashfs\",\"digest\":\"sha256:$PUB_HEX\"}],\"aliases\":[\"debian/bookworm\"]}")
  FILE_PATH=$(printf '%s' "$json" | node -e '
    const v = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const f = v.files.find((f) => f.name === "rootfs.squashfs");
    if (!f) process.exit(1);
    console.log(f.path.replace(/^\/+/, ""));') || die "$s: no rootfs.squashfs path in $json"
done
BLOB_A=$(find "$DATA_A" -type f -name "$PUB_HEX" | head -n1)
[[ -n "$BLOB_A" ]] || die "blob file $PUB_HEX not found under $DATA_A"
code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Expect:' -T "$PUB" "$(presign PUT raw/published)")
[[ "$code" == 200 ]] || die "raw PUT of the published file to radosgw: HTTP $code"
RAW_GET_URL=$(presign GET raw/published)
# C follows B's catalog (NOTIFY, or its 5 s poll): wait until it redirects the new file.
for ((i = 0; i < 300; i++)); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP_C/$FILE_PATH")" == 302 ]] && break
  sleep 0.1
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP_C/$FILE_PATH")" == 302 ]] || die "C does not answer $FILE_PATH with a 302"
for s in A B C; do
  url="HTTP_$s"
  got=$(curl -sS -L "${!url}/$FILE_PATH" | sha256sum | cut -d' ' -f1)
  [[ "$got" == "$PUB_HEX" ]] || die "$s served other bytes than it stored at /$FILE_PATH"
done
got=$(curl -sS "$RAW_GET_URL" | sha256sum | cut -d' ' -f1)
[[ "$got" == "$PUB_HEX" ]] || die "radosgw returned other bytes than were put"
# The object B streams and C redirects to (lxhub wrote it as a multipart upload and copied it to
# its content address), presigned here on its own: the baseline for B's and C's downloads.
LOCATION=$(curl -s -o /dev/null -w '%{redirect_url}' "$HTTP_C/$FILE_PATH")
BLOB_KEY=$(node -e 'const u = new URL(process.argv[1]); const p = decodeURIComponent(u.pathname); const b = `/${process.argv[2]}/`;
  if (!p.startsWith(b)) process.exit(1); console.log(p.slice(b.length));' "$LOCATION" "$BUCKET") ||
  die "C redirected to $LOCATION, not into bucket $BUCKET"
BLOB_GET_URL=$(presign GET "$BLOB_KEY")
got=$(curl -sS "$BLOB_GET_URL" | sha256sum | cut -d' ' -f1)
[[ "$got" == "$PUB_HEX" ]] || die "radosgw returned other bytes for lxhub's object $BLOB_KEY"
# Bare Node proxies of that object (no lxhub): node:http GET of a presigned URL, or the SDK's
# GetObject body, piped into the response.
# Not in a $(…) subshell: the proxy exits when its parent does.
start_proxy() { # http|sdk → sets PROXY_<HOW> (its URL) and PROXY_<HOW>_PID
  local how=$1 var i
  var=PROXY_${how^^}
  node "$HELPER" proxy "$how" "$BUCKET" "$BLOB_KEY" >"$RUN/proxy-$how.out" 2>>"$RUN/helper.err" &
  printf -v "${var}_PID" '%s' $!
  for ((i = 0; i < 200; i++)); do
    [[ -s "$RUN/proxy-$how.out" ]] && break
    sleep 0.1
  done
  [[ -s "$RUN/proxy-$how.out" ]] || die "the $how proxy did not start: $(tail -n 5 "$RUN/helper.err")"
  printf -v "$var" '%s' "http://127.0.0.1:$(head -n1 "$RUN/proxy-$how.out")/blob"
}
start_proxy http
start_proxy sdk
for url in "$PROXY_HTTP" "$PROXY_SDK"; do
  got=$(curl -sS "$url" | sha256sum | cut -d' ' -f1)
  [[ "$got" == "$PUB_HEX" ]] || die "the proxy at $url served other bytes"
done
rm -rf "$PUB" "$PUB.parts"

# --- 4. download ----------------------------------------------------------------------------------
say "4/6 downloads of the published $MIB MiB file, $RUNS runs: A, B, C (302), raw GETs, dd read (order reversed every other run)"
DL_A=() DL_B=() DL_C=() DL_PH=() DL_PS=() DL_RAW=() DL_RAW1=() DL_DD=()
cat "$BLOB_A" >/dev/null # page cache, as for the pushes' sources
CACHED_BLOB=$(cached_pct "$BLOB_A")
download() { # url → MB/s; follows one redirect; time_total covers both requests
  local out code size secs redirects
  out=$(curl -s -L -o /dev/null -w '%{http_code} %{size_download} %{time_total} %{num_redirects}' "$1")
  read -r code size secs redirects <<<"$out"
  [[ "$code" == 200 && "$size" == "$SIZE" ]] || die "download of $1: HTTP $code, $size bytes"
  echo "$redirects" >>"$RUN/redirects-$2.txt"
  awk -v b="$SIZE" -v s="$secs" 'BEGIN { printf "%.0f", b / s / 1e6 }'
}
dl_step() {
  local t0 t1
  case $1 in
    A) DL_A+=("$(download "$HTTP_A/$FILE_PATH" A)") ;;
    B) DL_B+=("$(download "$HTTP_B/$FILE_PATH" B)") ;;
    C) DL_C+=("$(download "$HTTP_C/$FILE_PATH" C)") ;;
    ph) DL_PH+=("$(download "$PROXY_HTTP" ph)") ;;
    ps) DL_PS+=("$(download "$PROXY_SDK" ps)") ;;
    raw) DL_RAW+=("$(download "$BLOB_GET_URL" raw)") ;;
    raw1) DL_RAW1+=("$(download "$RAW_GET_URL" raw1)") ;;
    dd)
      t0=$(now_ns)
      dd if="$BLOB_A" of=/dev/null bs=4M status=none
      t1=$(now_ns)
      DL_DD+=("$(mbps "$SIZE" $((t1 - t0)))")
      ;;
  esac
}
for ((i = 0; i < RUNS; i++)); do
  steps=(A B C ph ps raw raw1 dd)
  ((i % 2 == 1)) && steps=(dd raw1 raw ps ph C B A)
  for step in "${steps[@]}"; do dl_step "$step"; done
  say "   run $((i + 1)): A ${DL_A[i]}, B ${DL_B[i]}, C ${DL_C[i]}, Node proxy ${DL_PH[i]} (SDK ${DL_PS[i]}), raw GET ${DL_RAW[i]} (one-PUT object ${DL_RAW1[i]}), dd read ${DL_DD[i]} MB/s"
done
grep -qv '^1$' "$RUN/redirects-C.txt" && die "C did not answer with exactly one redirect: $(sort -u "$RUN/redirects-C.txt" | paste -sd,)"
grep -qv '^0$' "$RUN/redirects-B.txt" && die "B redirected instead of streaming"
node "$HELPER" delete "$BUCKET" raw/published 2>>"$RUN/helper.err" # room in the OSD for the pushes
stop_pid "$PROXY_HTTP_PID" TERM
stop_pid "$PROXY_SDK_PID" TERM
PROXY_HTTP_PID="" PROXY_SDK_PID=""
rgw_gc

# --- 5. push --------------------------------------------------------------------------------------
# Peak RSS during one push: reset VmHWM (clear_refs 5, Linux ≥ 4.0) before it, read it after.
HWM_RESET=yes
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || HWM_RESET=no; }
hwm_kb() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"; }
say "5/6 push of new $MIB MiB files, $RUNS runs: A, B, dd conv=fsync, sha256sum, S3 PUT, SDK multipart (order reversed every other run)"
PUSH_A=() PUSH_B=() DDW=() SHA=() RAWPUT=() MP1=() MP4=() HWM_A=() HWM_B=() CACHED=""
push_step() { # step file hex
  local step=$1 f=$2 hex=$3 t0 t1 url code got
  case $step in
    A | B)
      local pid="PID_$step"
      reset_hwm "${!pid}"
      t0=$(now_ns)
      upload_parts "$step" "$f.parts" "$hex" "$RUN/sessions-$step.txt"
      t1=$(now_ns)
      if [[ $step == A ]]; then
        PUSH_A+=("$(mbps "$SIZE" $((t1 - t0)))") HWM_A+=("$(hwm_kb "$PID_A")")
      else
        PUSH_B+=("$(mbps "$SIZE" $((t1 - t0)))") HWM_B+=("$(hwm_kb "$PID_B")")
        rgw_gc # the committed session's objects (its blob was copied to the content address)
      fi
      ;;
    dd)
      t0=$(now_ns)
      dd if="$f" of="$DATA_A/dd.bin" bs=4M conv=fsync status=none
      t1=$(now_ns)
      DDW+=("$(mbps "$SIZE" $((t1 - t0)))")
      rm -f "$DATA_A/dd.bin"
      sync
      ;;
    sha)
      t0=$(now_ns)
      got=$(sha256sum "$f" | cut -d' ' -f1)
      t1=$(now_ns)
      [[ "$got" == "$hex" ]] || die "sha256sum gave $got, expected $hex"
      SHA+=("$(mbps "$SIZE" $((t1 - t0)))")
      ;;
    put)
      url=$(presign PUT raw/push)
      t0=$(now_ns)
      code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Expect:' -T "$f" "$url")
      t1=$(now_ns)
      [[ "$code" == 200 ]] || die "raw PUT to radosgw: HTTP $code"
      RAWPUT+=("$(mbps "$SIZE" $((t1 - t0)))")
      node "$HELPER" delete "$BUCKET" raw/push 2>>"$RUN/helper.err"
      rgw_gc
      ;;
    mp1 | mp4)
      local ms
      ms=$(node "$HELPER" multipart "$BUCKET" raw/multipart "$f" "$PART_MIB" "${step#mp}" 2>>"$RUN/helper.err") ||
        die "SDK multipart upload failed: $(tail -n 5 "$RUN/helper.err")"
      if [[ $step == mp1 ]]; then MP1+=("$(mbps "$SIZE" "$(awk -v m="$ms" 'BEGIN { printf "%.0f", m * 1e6 }')")"); else MP4+=("$(mbps "$SIZE" "$(awk -v m="$ms" 'BEGIN { printf "%.0f", m * 1e6 }')")"); fi
      node "$HELPER" delete "$BUCKET" raw/multipart 2>>"$RUN/helper.err"
      rgw_gc
      ;;
  esac
}
for ((i = 0; i < RUNS; i++)); do
  f="$RUN/push-$i.bin"
  random_file "$f"
  hex=$(hex_of "$f")
  CACHED+="${CACHED:+, }$(cached_pct "$f")"
  steps=(A B dd sha put mp1 mp4)
  ((i % 2 == 1)) && steps=(mp4 mp1 put sha dd B A)
  for step in "${steps[@]}"; do push_step "$step" "$f" "$hex"; done
  rm -rf "$f" "$f.parts"
  say "   run $((i + 1)): A ${PUSH_A[i]}, B ${PUSH_B[i]}, dd ${DDW[i]}, sha256sum ${SHA[i]}, S3 PUT ${RAWPUT[i]}, SDK multipart ${MP1[i]} (4 parts in flight ${MP4[i]}) MB/s"
done

# --- 6. results -----------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# Where a push's time went, from the servers' request logs (flushed when they stop): the PATCHes
# and the commit (PUT ?digest=) of each timed session, in seconds; median over the runs.
stop_pid "$PID_C" TERM
stop_pid "$PID_A" TERM
stop_pid "$PID_B" TERM
PID_A="" PID_B="" PID_C=""
split_of() { # server → "PATCHes X s, commit Y s" (medians)
  node -e '
    const fs = require("fs");
    const [log, sessions] = process.argv.slice(1);
    const lines = fs.readFileSync(log, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
      .filter((l) => l.event === "request");
    const med = (a) => a.sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)];
    const patch = [], commit = [];
    for (const loc of fs.readFileSync(sessions, "utf8").split("\n").filter(Boolean)) {
      const mine = lines.filter((l) => l.path === loc || l.path.startsWith(loc + "?"));
      patch.push(mine.filter((l) => l.method === "PATCH").reduce((n, l) => n + l.ms, 0) / 1000);
      commit.push(mine.filter((l) => l.method === "PUT").reduce((n, l) => n + l.ms, 0) / 1000);
    }
    console.log(`PATCHes ${med(patch).toFixed(2)} s, commit ${med(commit).toFixed(2)} s`);
  ' "$RUN/server-$1.log" "$RUN/sessions-$1.txt" || echo "(no breakdown: cannot read the request log)"
}
SPLIT_A=$(split_of A)
SPLIT_B=$(split_of B)
RESULT="$BENCH_DIR/results/storage-latest.md"
[[ "$MIB/$RUNS/$PART_MIB" != 256/3/8 ]] && RESULT="$BENCH_DIR/results/tmp/storage-trial.md"
M_PUSH_A=$(median "${PUSH_A[@]}") M_PUSH_B=$(median "${PUSH_B[@]}") M_DDW=$(median "${DDW[@]}")
M_SHA=$(median "${SHA[@]}") M_RAWPUT=$(median "${RAWPUT[@]}") M_MP1=$(median "${MP1[@]}") M_MP4=$(median "${MP4[@]}")
M_DL_A=$(median "${DL_A[@]}") M_DL_B=$(median "${DL_B[@]}") M_DL_C=$(median "${DL_C[@]}")
M_DL_PH=$(median "${DL_PH[@]}") M_DL_PS=$(median "${DL_PS[@]}") M_DL_RAW=$(median "${DL_RAW[@]}") M_DL_RAW1=$(median "${DL_RAW1[@]}") M_DL_DD=$(median "${DL_DD[@]}")
HWM_A_MB=() HWM_B_MB=()
for v in "${HWM_A[@]}"; do HWM_A_MB+=("$(kb_mb "$v")"); done
for v in "${HWM_B[@]}"; do HWM_B_MB+=("$(kb_mb "$v")"); done
HWM_HOW="peak RSS during the push (VmHWM, reset before it through /proc/<pid>/clear_refs)"
[[ "$HWM_RESET" == yes ]] || HWM_HOW="peak RSS since the server started (VmHWM; resetting it through /proc/<pid>/clear_refs was refused)"
{
  echo "# lxhub storage benchmark: SQLite + data folder vs PostgreSQL + S3, $DATE"
  echo
  echo "Machine: $CPUS CPUs ($CPU_MODEL), $MEM_GIB GiB RAM, kernel $KERNEL, disk $DISK; node $NODE_V,"
  echo "curl $CURL_V, Ceph $CEPH_V (radosgw, one memstore OSD: objects in RAM), PostgreSQL $PG_V (fsync=off)."
  echo "lxhub commit $COMMIT (plus uncommitted changes, if any). Load average (1, 5, 15 min) $LOAD_START at"
  echo "the start, $LOAD_END at the end. Command: \`npm run bench:storage\`. File: $MIB MiB of random bytes"
  echo "(a new one per push run); B's S3 part size $PART_MIB MiB. MB = 10^6 bytes; medians of $RUNS runs."
  echo
  echo "| measurement | lxhub | baseline | ratio |"
  echo "|---|---|---|---|"
  echo "| push, A (SQLite + data folder): curl, 64 MiB PATCHes + commit | $M_PUSH_A MB/s | sha256sum: $M_SHA MB/s | $(ratio "$M_PUSH_A" "$M_SHA") |"
  echo "| same push vs the disk's durable write | $M_PUSH_A MB/s | dd bs=4M conv=fsync: $M_DDW MB/s | $(ratio "$M_PUSH_A" "$M_DDW") |"
  echo "| push, B (PostgreSQL + S3): curl, 64 MiB PATCHes + commit | $M_PUSH_B MB/s | curl -T to a presigned PUT URL: $M_RAWPUT MB/s | $(ratio "$M_PUSH_B" "$M_RAWPUT") |"
  echo "| same push vs the SDK's multipart upload, $PART_MIB MiB parts one at a time (as B sends them) | $M_PUSH_B MB/s | @aws-sdk/lib-storage, queueSize 1: $M_MP1 MB/s (queueSize 4: $M_MP4 MB/s) | $(ratio "$M_PUSH_B" "$M_MP1") |"
  echo "| push, B vs A | $M_PUSH_B MB/s | A: $M_PUSH_A MB/s | $(ratio "$M_PUSH_B" "$M_PUSH_A") |"
  echo "| download, A (streams the blob file, page cache) | $M_DL_A MB/s | dd bs=4M of the blob file to /dev/null: $M_DL_DD MB/s | $(ratio "$M_DL_A" "$M_DL_DD") |"
  echo "| download, B (streams the object from radosgw) | $M_DL_B MB/s | curl of a presigned GET URL of the same object: $M_DL_RAW MB/s | $(ratio "$M_DL_B" "$M_DL_RAW") |"
  echo "| same download vs a bare Node proxy (node:http GET of a presigned URL piped into the response) | $M_DL_B MB/s | bare proxy: $M_DL_PH MB/s (with the SDK's GetObject: $M_DL_PS MB/s) | $(ratio "$M_DL_B" "$M_DL_PH") |"
  echo "| download, C (--blobs-redirect: 302, then radosgw; curl -L) | $M_DL_C MB/s | curl of a presigned GET URL of the same object: $M_DL_RAW MB/s | $(ratio "$M_DL_C" "$M_DL_RAW") |"
  echo "| (radosgw alone: the same bytes stored by one PUT) | — | curl of a presigned GET URL: $M_DL_RAW1 MB/s | — |"
  echo "| peak RSS of A during a push (median, max) | $(median "${HWM_A_MB[@]}") MB, $(max_of "${HWM_A_MB[@]}") MB | — | — |"
  echo "| peak RSS of B during a push (median, max) | $(median "${HWM_B_MB[@]}") MB, $(max_of "${HWM_B_MB[@]}") MB | — | — |"
  echo
  echo "Details:"
  echo
  echo "- push MB/s per run: A ${PUSH_A[*]} / B ${PUSH_B[*]} / sha256sum ${SHA[*]} / dd conv=fsync ${DDW[*]} / S3 PUT ${RAWPUT[*]} / SDK multipart ${MP1[*]} / SDK multipart, 4 in flight ${MP4[*]}"
  echo "- download MB/s per run: A ${DL_A[*]} / B ${DL_B[*]} / C ${DL_C[*]} / bare Node proxy ${DL_PH[*]} / bare SDK proxy ${DL_PS[*]} / raw GET of lxhub's object ${DL_RAW[*]} / raw GET of the one-PUT object ${DL_RAW1[*]} / dd read ${DL_DD[*]}"
  echo "- where a push's time went (server request log, medians): A $SPLIT_A; B $SPLIT_B"
  echo "- memory: $HWM_HOW, MB per run: A ${HWM_A_MB[*]} / B ${HWM_B_MB[*]}"
  echo "- order within a run: A, B, C, Node proxies, raw GETs, dd read (downloads) and A, B, dd, sha256sum, S3 PUT, SDK multipart (pushes), reversed every other run"
  echo "- page cache: each push file ${CACHED} resident before its run; A's published blob ${CACHED_BLOB} before the downloads"
  echo "- start-up of the services: $START_MS"
} >"$RESULT.new"
mv "$RESULT.new" "$RESULT"
echo
cat "$RESULT"
say "results written to $RESULT"
