#!/usr/bin/env bash
# `lxhub pull` against the shell pipelines it replaces (issue 3, last bullet). Run by hand, as
# root: `bash bench/pull.sh`. Not part of the test suite or CI.
#
# Needs the corpus of ../shared/bench/make-corpus.sh in bench/corpus (git-ignored):
#   bash /work/shared/bench/make-corpus.sh bench/corpus      (as root, ~10 min, idempotent)
#
# One run, loopback only, everything under bench/results/tmp/pull.* (git-ignored) and
# /dev/shm/lxhub-pull.*, the server stopped and both removed at exit:
#   1. a fresh `lxhub serve` (HTTP on 127.0.0.1, no TLS) gets, through `lxhub push`, two images
#      made from corpus v2:
#        alias bench-tar: lxd.tar.xz + rootfs.squashfs + rootfs.tar.xz in one version. The alias
#          resolves to the squashfs (as LXD picks), and `pull --format rootfs` takes the tarball
#          beside it: the single-pass path (download → sha256 → xz → tar → tree);
#        alias bench-sq: the same squashfs with its own metadata (variant `sqfs`), no tarball:
#          the download → verify → unsquashfs path;
#   2. `lxhub remote add --trust-on-first-use`, with XDG_CONFIG/STATE_HOME in the temp folder and
#      a new, empty XDG_CACHE_HOME for every pull, so every run downloads;
#   3. BENCH_RUNS rounds (default 3), each timing, alternating (the order flips every round):
#        tar:      lxhub pull bench bench-tar DEST
#                  vs  curl URL/rootfs.tar.xz | tee >(sha256sum) | tar --numeric-owner -xJf - -C DEST
#        sq:       lxhub pull bench bench-sq DEST
#                  vs  curl -o f URL/rootfs.squashfs && sha256sum f && unsquashfs -n -q -d DEST f
#        lxd:      lxhub pull --format lxd bench bench-sq DEST
#                  vs  curl -o of lxd.tar.xz and rootfs.squashfs + sha256sum of both
#        tar-shm, sq-shm: tar and sq again with DEST, the lxhub cache and f on tmpfs (/dev/shm),
#                  which shows the programs' own cost without the disk (PULL_TMPFS=0 skips them)
#        verify:   `lxhub verify bench` (start-up + signed index, no image) vs curl of images.json
#      Wall time from date +%s%N, peak RSS from /usr/bin/time -f %M (the largest of the process
#      and the children it waited for: node, xz or unsquashfs for lxhub; tar, xz, curl for the
#      pipeline), `sync` before each timed command so write-back of the previous run does not
#      land in the next one. Nothing on the disk is deleted while measuring (see run_case).
#      A measurement that overlaps bench/run.sh is taken again after it (and none starts while
#      it runs), so the two benchmarks do not disturb each other;
#   4. the trees of round 1 compared, lxhub vs pipeline: a listing of path, type, mode, owner,
#      size, link count, symlink target, device numbers and mtime (whole seconds; sub-second
#      differences counted), then `diff -r --no-dereference` for contents;
#   5. a Markdown table on stdout and in bench/results/pull-latest.md.
#
# Nothing here drops the page cache (not reliable on a shared machine): the server's blobs are
# read from memory (their residency is reported), and DEST, the lxhub cache and the pipeline's
# download file are new files written to the disk under bench/results/tmp (or to tmpfs).
#
# Knobs (environment): BENCH_RUNS (default 3), PULL_CORPUS (default bench/corpus), PULL_TMPFS=0
# (no tmpfs cases), PULL_WAIT_MAX (seconds to wait for bench/run.sh in all, default 1500),
# BENCH_KEEP=1 keeps the temp folder (not the tmpfs one).
# Needs: node, curl, tar, xz, unsquashfs, sha256sum, /usr/bin/time (Debian: time), diff, find;
# fincore (util-linux) for the page-cache note.
# Units: MB = 10^6 bytes, s = seconds.
set -euo pipefail
umask 022
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR="$ROOT/bench"
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
CLI="$ROOT/dist/cli/main.js"
CORPUS=${PULL_CORPUS:-$BENCH_DIR/corpus}
RUNS=${BENCH_RUNS:-3}
OUT_MD="$BENCH_DIR/results/pull-latest.md"

die() {
  echo "pull-bench: $*" >&2
  exit 1
}
say() { echo "pull-bench: $*" >&2; }

# --- the other benchmark and CPU steal ----------------------------------------------------------
other_bench_running() { pgrep -f 'bench/run[.]sh' >/dev/null; }
WAITED=0
REDONE=0
other_bench_wait() { # while bench/run.sh runs (up to PULL_WAIT_MAX s in all)
  local t0
  other_bench_running || return 0
  say "bench/run.sh is running: waiting for it to finish (polling every 30 s)"
  t0=$(date +%s)
  while other_bench_running; do
    (($(date +%s) - t0 + WAITED < ${PULL_WAIT_MAX:-1500})) || die "bench/run.sh still running after ${PULL_WAIT_MAX:-1500} s of waiting"
    sleep 30
  done
  WAITED=$((WAITED + $(date +%s) - t0))
}
cpu_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9 }' /proc/stat; }

[[ "$(id -u)" == 0 ]] || die "run as root: the pipeline's tar --numeric-owner and lxhub both restore owners only as root"
for tool in node npm curl tar xz unsquashfs sha256sum diff find awk sort sync; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed (Debian: apt-get install -y curl xz-utils squashfs-tools diffutils)"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (Debian: apt-get install -y time)"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 ]] || die "BENCH_RUNS must be a positive integer"
V2="$CORPUS/v2"
for f in lxd.tar.xz rootfs.tar.xz rootfs.squashfs; do
  [[ -f "$V2/$f" ]] || die "$V2/$f is missing: build the corpus first (bash /work/shared/bench/make-corpus.sh $CORPUS)"
done

# Build when dist/ is missing or older than any source file.
stale=""
if [[ ! -f "$CLI" ]]; then
  stale=yes
else
  stale=$(find "$ROOT"/{simplestreams,signing,image,storage,registry,server,client,cli} -name '*.ts' -newer "$CLI" 2>/dev/null | head -n 1)
fi
if [[ -n "$stale" ]]; then
  say "dist/ is stale or missing: npm run build"
  if ! (cd "$ROOT" && npm run build >&2); then
    # Others may be mid-edit in their rooms; tsc still emits, so go on if there is something to run.
    [[ -f "$CLI" ]] || die "npm run build failed"
    say "WARNING: npm run build reported errors (see above); going on with what it emitted"
  fi
fi

other_bench_wait
mkdir -p "$BENCH_DIR/results/tmp"
RUN=$(mktemp -d "$BENCH_DIR/results/tmp/pull.XXXXXX")
export XDG_CONFIG_HOME="$RUN/config" XDG_STATE_HOME="$RUN/state" XDG_CACHE_HOME="$RUN/cache"
LXHUB_PID=""


cleanup() {
  local rc=$?
  set +e
  stop_pid "$LXHUB_PID" TERM
  [[ -n "${SHM:-}" ]] && rm -rf "$SHM"
  if [[ $rc -ne 0 ]]; then
    say "FAILED (exit $rc); logs:"
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
secs() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# --- server, images, remote -----------------------------------------------------------------------
DATA="$RUN/data"
say "token and server in $RUN"
TOKEN=$(node "$CLI" token create --data "$DATA" --scope admin --ttl 2h 2>"$RUN/token.err") || die "token create failed: $(cat "$RUN/token.err")"
PORT=$(free_port)
HTTP="http://127.0.0.1:$PORT"
node "$CLI" serve --data "$DATA" --listen "127.0.0.1:$PORT" --tls-listen '' --allow-insecure-writes >"$RUN/serve.log" 2>"$RUN/serve.err" &
LXHUB_PID=$!
for ((i = 0; i < 300; i++)); do
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/readyz")" == 200 ]] && break
  kill -0 "$LXHUB_PID" 2>/dev/null || die "lxhub serve exited at start-up: $(tail -n 5 "$RUN/serve.err" "$RUN/serve.log")"
  sleep 0.1
done
[[ $i -lt 300 ]] || die "lxhub serve at $HTTP was not ready (GET /readyz → 200) within 30 s"

# bench-tar: one version holding both roots (hard links: nothing is copied).
IMG_TAR="$RUN/img-tar"
mkdir -p "$IMG_TAR"
ln "$V2/lxd.tar.xz" "$V2/rootfs.tar.xz" "$V2/rootfs.squashfs" "$IMG_TAR/"
# bench-sq: its own metadata (variant sqfs), so it is another product with no tarball sibling.
IMG_SQ="$RUN/img-sq"
mkdir -p "$IMG_SQ/meta"
tar -xJf "$V2/lxd.tar.xz" -C "$IMG_SQ/meta"
sed -i -e 's/^  variant: minbase$/  variant: sqfs/' -e 's/(minbase)/(sqfs)/' "$IMG_SQ/meta/metadata.yaml"
grep -q '^  variant: sqfs$' "$IMG_SQ/meta/metadata.yaml" || die "could not set the variant in $IMG_SQ/meta/metadata.yaml"
tar --numeric-owner --owner=0 --group=0 --sort=name -C "$IMG_SQ/meta" -cf - metadata.yaml templates | xz -6 -T1 -c >"$IMG_SQ/lxd.tar.xz"
rm -rf "$IMG_SQ/meta"
ln "$V2/rootfs.squashfs" "$IMG_SQ/"

for spec in "bench-tar:$IMG_TAR" "bench-sq:$IMG_SQ"; do
  alias=${spec%%:*} dir=${spec#*:}
  node "$CLI" push "$HTTP" "$dir" --token "$TOKEN" --alias "$alias" >"$RUN/push-$alias.log" 2>"$RUN/push-$alias.err" ||
    die "lxhub push $dir failed: $(tail -n 5 "$RUN/push-$alias.err" "$RUN/push-$alias.log")"
done
node "$CLI" remote add bench "$HTTP" --trust-on-first-use >"$RUN/remote.log" 2>"$RUN/remote.err" ||
  die "lxhub remote add failed: $(cat "$RUN/remote.err")"
KID=$(awk '/pinned signing key:/ { print $NF }' "$RUN/remote.log")

# The pipelines' URLs: the human-readable paths of images.json, as a script would find them.
curl -sS --fail "$HTTP/streams/v1/images.json" -o "$RUN/images.json"
item() { # alias ftype → "path sha256 size"
  node -e '
    const [file, alias, ftype] = process.argv.slice(1);
    const doc = JSON.parse(require("fs").readFileSync(file, "utf8"));
    for (const p of Object.values(doc.products)) {
      if (!String(p.aliases ?? "").split(",").includes(alias)) continue;
      const keys = Object.keys(p.versions).sort();
      const v = p.versions[keys[keys.length - 1]];
      for (const it of Object.values(v.items)) if (it.ftype === ftype) { console.log(it.path, it.sha256, it.size); process.exit(0); }
    }
    process.exit(1);' "$RUN/images.json" "$1" "$2" || die "no $2 item for alias $1 in images.json"
}
read -r TAR_PATH TAR_SHA TAR_SIZE < <(item bench-tar root.tar.xz)
read -r SQ_PATH SQ_SHA SQ_SIZE < <(item bench-sq squashfs)
read -r SQMETA_PATH SQMETA_SHA SQMETA_SIZE < <(item bench-sq lxd.tar.xz)
[[ "$TAR_SHA" == "$(hex_of "$V2/rootfs.tar.xz")" ]] || die "the published rootfs.tar.xz is not the corpus file"
[[ "$SQ_SHA" == "$(hex_of "$V2/rootfs.squashfs")" ]] || die "the published rootfs.squashfs is not the corpus file"
blob_file() { # hex → the server's blob file (layout-independent)
  find "$DATA" -type f -name "*$1*" -size +0 2>/dev/null | head -n 1
}
TAR_BLOB=$(blob_file "$TAR_SHA")
SQ_BLOB=$(blob_file "$SQ_SHA")

# --- the commands ---------------------------------------------------------------------------------
# Disk cases write under $WORK (bench/results/tmp, the brief's place and where a user would unpack);
# tmpfs cases under $SHM, with the lxhub cache and the pipeline's download there too, to show the
# programs' own cost without this disk (see "inode allocation" in the report).
WORK="$RUN/work"
mkdir -p "$WORK"
SHM=""
if [[ "${PULL_TMPFS:-1}" == 1 && -d /dev/shm ]] && [[ "$(stat -f -c %T /dev/shm)" == tmpfs ]] &&
  (($(df -k --output=avail /dev/shm | tail -n 1) > 2 * 1024 * 1024)); then
  SHM=$(mktemp -d /dev/shm/lxhub-pull.XXXXXX)
fi

# Runs one measured command and appends its wall time (ns) and peak RSS (kB) to NS[key] and
# RSS[key]; its output goes to $RUN/<label>.log and .err.
# A measurement that overlapped bench/run.sh (the server benchmark, which others run) is thrown
# away and taken again once that benchmark is over, so neither disturbs the other's figures.
declare -A NS RSS
measure() { # key label command…
  local key=$1 label=$2 t0 t1 attempt
  shift 2
  for ((attempt = 1; ; attempt++)); do
    other_bench_wait
    sync
    t0=$(now_ns)
    /usr/bin/time -f '%M' -o "$RUN/$label.rss" "$@" >"$RUN/$label.log" 2>"$RUN/$label.err" ||
      die "$label failed: $(tail -n 5 "$RUN/$label.err" "$RUN/$label.log")"
    t1=$(now_ns)
    other_bench_running || break
    ((attempt < 5)) || die "bench/run.sh keeps running over the measurements; try again later"
    say "bench/run.sh started during $label: measuring it again once that is over"
    REDONE=$((REDONE + 1))
    rm -rf "${REDO_CLEAN[@]}"
  done
  NS[$key]+="$((t1 - t0)) "
  RSS[$key]+="$(tail -n 1 "$RUN/$label.rss") "
}

# $1 = DEST, $2 = URL, $3 = expected sha256
# tee >(sha256sum) written with a FIFO and a background job: bash 5.2's `wait` on a process
# substitution that ended during the pipeline hangs.
PIPE_TAR='set -euo pipefail
mkdir "$1"
mkfifo "$1.fifo"
sha256sum <"$1.fifo" >"$1.sum" &
curl -sS --fail "$2" | tee "$1.fifo" | tar --numeric-owner -xJf - -C "$1"
wait $!
[[ "$(cut -d" " -f1 "$1.sum")" == "$3" ]] || { echo "sha256 mismatch" >&2; exit 1; }'
# $1 = DEST, $2 = URL, $3 = expected sha256, $4 = download file
PIPE_SQ='set -euo pipefail
curl -sS --fail -o "$4" "$2"
[[ "$(sha256sum "$4" | cut -d" " -f1)" == "$3" ]] || { echo "sha256 mismatch" >&2; exit 1; }
unsquashfs -n -q -d "$1" "$4" >/dev/null'
# $1 = folder, $2 $3 = URL and sha256 of the metadata, $4 $5 = of the squashfs
PIPE_FILES='set -euo pipefail
mkdir "$1"
curl -sS --fail -o "$1/lxd.tar.xz" "$2" -o "$1/rootfs.squashfs" "$4"
[[ "$(sha256sum "$1/lxd.tar.xz" | cut -d" " -f1)" == "$3" ]] || { echo "sha256 mismatch" >&2; exit 1; }
[[ "$(sha256sum "$1/rootfs.squashfs" | cut -d" " -f1)" == "$5" ]] || { echo "sha256 mismatch" >&2; exit 1; }'

# Nothing on the disk is deleted between measurements: on this file system (ext4 without a
# journal) creating inodes right after many were freed is several times slower, which would
# charge one command for the clean-up of another. Every disk case gets new names; all of it is
# removed at exit. tmpfs has no such effect, and its trees are removed after each pair.
run_case() { # case round first(lxhub|pipe)
  local c=$1 r=$2 first=$3 who base dest cache key label
  for who in $([[ $first == lxhub ]] && echo "lxhub pipe" || echo "pipe lxhub"); do
    key="$c:$who" label="$c-$who-$r"
    base=$WORK
    [[ $c == *-shm ]] && base=$SHM
    dest="$base/$label"
    cache="$base/cache-$label" # a new, empty lxhub cache: every pull downloads
    REDO_CLEAN=("$dest" "$dest.sum" "$dest.fifo" "$dest.squashfs" "$cache")
    case "$key" in
      tar*:lxhub) measure "$key" "$label" env XDG_CACHE_HOME="$cache" node "$CLI" pull bench bench-tar "$dest" ;;
      tar*:pipe) measure "$key" "$label" bash -c "$PIPE_TAR" _ "$dest" "$HTTP/$TAR_PATH" "$TAR_SHA" ;;
      sq*:lxhub) measure "$key" "$label" env XDG_CACHE_HOME="$cache" node "$CLI" pull bench bench-sq "$dest" ;;
      sq*:pipe) measure "$key" "$label" bash -c "$PIPE_SQ" _ "$dest" "$HTTP/$SQ_PATH" "$SQ_SHA" "$dest.squashfs" ;;
      lxd:lxhub) measure "$key" "$label" env XDG_CACHE_HOME="$cache" node "$CLI" pull bench --format lxd bench-sq "$dest" ;;
      lxd:pipe) measure "$key" "$label" bash -c "$PIPE_FILES" _ "$dest" "$HTTP/$SQMETA_PATH" "$SQMETA_SHA" "$HTTP/$SQ_PATH" "$SQ_SHA" ;;
      verify:lxhub) measure "$key" "$label" node "$CLI" verify bench ;;
      verify:pipe) measure "$key" "$label" curl -sS --fail -o /dev/null "$HTTP/streams/v1/images.json" ;;
    esac
  done
}

# --- tree comparison ------------------------------------------------------------------------------
# One line per entry: path|type|mode|uid|gid|size|links|symlink target|mtime. Directory sizes are
# left out (they depend on the file system's history); for device nodes the size is major:minor.
listing() { # dir
  (
    cd "$1"
    find . \( -type d -printf '%P|%y|%m|%U|%G|-|%n|%l|%T@\n' \) -o \( -type b -o -type c \) -o -printf '%P|%y|%m|%U|%G|%s|%n|%l|%T@\n'
    find . \( -type b -o -type c \) -exec stat -c '%n|%F|%a|%u|%g|%t:%T|%h||%.9Y' {} + | sed 's,^\./,,'
  ) | sort
}
whole_seconds() { awk -F'|' -v OFS='|' '{ split($9, t, "."); $9 = t[1]; print }' "$1"; }
COMPARE_NOTES=()
compare_trees() { # label lxhub-tree pipeline-tree
  local label=$1 a=$2 b=$3 n sub
  listing "$a" >"$RUN/list-$label-lxhub"
  listing "$b" >"$RUN/list-$label-pipe"
  n=$(wc -l <"$RUN/list-$label-pipe")
  # entries whose full-precision mtimes differ (the listings must agree to the second)
  sub=$(diff <(cut -d'|' -f1,9 "$RUN/list-$label-lxhub") <(cut -d'|' -f1,9 "$RUN/list-$label-pipe") | grep -c '^<' || true)
  if ! diff <(whole_seconds "$RUN/list-$label-lxhub") <(whole_seconds "$RUN/list-$label-pipe") >"$RUN/diff-$label.txt"; then
    COMPARE_NOTES+=("$label: the listings DIFFER ($(grep -c '^[<>]' "$RUN/diff-$label.txt") lines; first: $(grep -m 3 '^[<>]' "$RUN/diff-$label.txt" | tr '\n' ' '))")
  elif
    # Device nodes are compared in the listing (major:minor); diff -r only says what they are.
    diff -r --no-dereference "$a" "$b" 2>&1 |
      grep -Ev '^File .* is a (character special file|block special file|fifo) while file .* is a \1$' >"$RUN/diffr-$label.txt"
    [[ -s "$RUN/diffr-$label.txt" ]]
  then
    COMPARE_NOTES+=("$label: same listing of $n entries, but diff -r finds differences: $(head -n 3 "$RUN/diffr-$label.txt" | tr '\n' ' ')")
  else
    local subnote=""
    [[ $sub -eq 0 ]] || subnote="; sub-second mtimes differ on $sub entries"
    COMPARE_NOTES+=("$label: identical, $n entries (path, type, mode, uid/gid, size, link count, symlink target, device numbers, mtime to the second; file contents by diff -r)$subnote")
  fi
}

# --- run ------------------------------------------------------------------------------------------
CASES=(tar sq lxd)
[[ -n "$SHM" ]] && CASES+=(tar-shm sq-shm)
CASES+=(verify)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
read -r TICKS0 STEAL0 < <(cpu_ticks)
CACHE_START="rootfs.tar.xz blob $(cached_pct "$TAR_BLOB"), rootfs.squashfs blob $(cached_pct "$SQ_BLOB")"
for ((r = 1; r <= RUNS; r++)); do
  first=$([[ $((r % 2)) == 1 ]] && echo lxhub || echo pipe)
  say "round $r of $RUNS ($first first)"
  for c in "${CASES[@]}"; do
    run_case "$c" "$r" "$first"
    [[ $c == *-shm && $r -gt 1 ]] && rm -rf "${SHM:?}"/*
  done
  if [[ $r == 1 ]]; then
    compare_trees tarball "$WORK/tar-lxhub-1" "$WORK/tar-pipe-1"
    compare_trees squashfs "$WORK/sq-lxhub-1" "$WORK/sq-pipe-1"
    [[ -n "$SHM" ]] && compare_trees "tarball on tmpfs" "$SHM/tar-shm-lxhub-1" "$SHM/tar-shm-pipe-1"
    [[ -n "$SHM" ]] && rm -rf "${SHM:?}"/*
    if cmp -s "$WORK/lxd-lxhub-1/lxd.tar.xz" "$WORK/lxd-pipe-1/lxd.tar.xz" &&
      cmp -s "$WORK/lxd-lxhub-1/rootfs.squashfs" "$WORK/lxd-pipe-1/rootfs.squashfs"; then
      COMPARE_NOTES+=("--format lxd: lxd.tar.xz and rootfs.squashfs byte-identical to the pipeline's")
    else
      COMPARE_NOTES+=("--format lxd: the files DIFFER from the pipeline's")
    fi
    grep -q 'unpacked while downloading' "$RUN/tar-lxhub-1.log" ||
      COMPARE_NOTES+=("WARNING: the tarball pull did not take the single-pass path: $(tr '\n' ' ' <"$RUN/tar-lxhub-1.log")")
    grep -q '(unsquashfs)' "$RUN/sq-lxhub-1.log" ||
      COMPARE_NOTES+=("WARNING: the squashfs pull did not use unsquashfs: $(tr '\n' ' ' <"$RUN/sq-lxhub-1.log")")
    ENTRIES=$(wc -l <"$RUN/list-tarball-pipe")
    TREE_BYTES=$(du -sb --apparent-size "$WORK/tar-pipe-1" | cut -f1)
  fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
read -r TICKS1 STEAL1 < <(cpu_ticks)
STEAL_PCT=$(awk -v s=$((STEAL1 - STEAL0)) -v t=$((TICKS1 - TICKS0)) 'BEGIN { v = (t > 0) ? 100 * s / t : 0; printf "%.0f%%", v }')
CACHE_END="rootfs.tar.xz blob $(cached_pct "$TAR_BLOB"), rootfs.squashfs blob $(cached_pct "$SQ_BLOB")"

# --- report ---------------------------------------------------------------------------------------
LEGEND=()
kb_mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k * 1024 / 1e6 }'; }
row() { # case description lxhub-label pipe-label
  local c=$1 what=$2 lxhub=$3 pipe=$4 ml mp rl rp q met
  # shellcheck disable=SC2086
  ml=$(median ${NS[$c:lxhub]})
  # shellcheck disable=SC2086
  mp=$(median ${NS[$c:pipe]})
  # shellcheck disable=SC2086
  rl=$(median ${RSS[$c:lxhub]})
  # shellcheck disable=SC2086
  rp=$(median ${RSS[$c:pipe]})
  q=$(ratio "$mp" "$ml")
  met=$(awk -v q="$q" 'BEGIN { print (q >= 1.0) ? "yes" : "**no**" }')
  LEGEND+=("$what: lxhub: $lxhub; pipeline: $pipe")
  printf '| %s | %s s | %s s | %s | %s MB | %s MB | %s |\n' "$what" \
    "$(secs "$ml")" "$(secs "$mp")" "$q" "$(kb_mb "$rl")" "$(kb_mb "$rp")" "$met"
}
per_run() { # key → "a / b / c"
  local x out=""
  for x in ${NS[$1]}; do out+="$(secs "$x") / "; done
  echo "${out% / }"
}

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- client image cli 2>/dev/null | wc -l)
FS=$(df -T "$RUN" | awk 'NR == 2 { print $1 " " $2 }')
NOJOURNAL=""
DEV=$(basename "${FS%% *}")
[[ "$(cat "/sys/fs/ext4/$DEV/journal_task" 2>/dev/null)" == "<none>" ]] && NOJOURNAL=" (ext4 without a journal)"
{
  echo "# lxhub pull benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r);"
  echo "disk cases on $FS, tmpfs cases on /dev/shm; node $(node --version), curl $(curl --version | awk 'NR == 1 { print $2 }'),"
  echo "$(tar --version | head -n 1), xz $(xz --version | awk 'NR == 1 { print $NF }'), unsquashfs $(unsquashfs -version 2>&1 | awk 'NR == 1 { print $3 }')."
  echo "lxhub commit $COMMIT$([[ $DIRTY -gt 0 ]] && echo " with uncommitted changes in client/, image/ or cli/")."
  echo "Load average (1, 5, 15 min) $LOAD_START at the start, $LOAD_END at the end; CPU time stolen by the hypervisor"
  echo "during the measurements: $STEAL_PCT (/proc/stat steal). Waited ${WAITED} s for bench/run.sh; measurements it overlapped and taken again: $REDONE."
  echo "Command: \`bash bench/pull.sh\` (as root). Medians of $RUNS runs per command, run alternately in one session (order flipped every round)."
  echo "The server (\`lxhub serve\`, HTTP on 127.0.0.1) runs on the same machine and serves both sides."
  echo
  echo "Corpus v2 (Debian bookworm minbase + less, curl, ca-certificates): rootfs.tar.xz $(mb "$TAR_SIZE") MB, rootfs.squashfs (xz)"
  echo "$(mb "$SQ_SIZE") MB; the tree has $ENTRIES entries, $(mb "$TREE_BYTES") MB. Pushed as two images: \`bench-tar\` (one version with"
  echo "lxd.tar.xz, rootfs.squashfs and rootfs.tar.xz: \`pull --format rootfs\` takes the tarball, unpacked while downloading) and"
  echo "\`bench-sq\` (the same squashfs with its own metadata, no tarball: download, verify, unsquashfs)."
  echo "Ratio = pipeline time / lxhub time: ≥ 1.0 means lxhub is no slower (the goal)."
  echo
  echo "| what | lxhub | pipeline | ratio | lxhub peak RSS | pipeline peak RSS | goal ≥ 1.0 met |"
  echo "|---|---|---|---|---|---|---|"
  row tar "tarball rootfs → disk" "\`lxhub pull bench bench-tar DEST\`" "\`curl | tee >(sha256sum) | tar --numeric-owner -xJf -\`"
  row sq "squashfs rootfs → disk" "\`lxhub pull bench bench-sq DEST\`" "\`curl -o f && sha256sum f && unsquashfs -n -q -d DEST f\`"
  row lxd "files for \`lxc image import\` → disk" "\`lxhub pull --format lxd bench bench-sq DEST\`" "\`curl -o\` both files, \`sha256sum\` both"
  if [[ -n "$SHM" ]]; then
    row tar-shm "tarball rootfs → tmpfs" "same, DEST and cache on /dev/shm" "same, DEST on /dev/shm"
    row sq-shm "squashfs rootfs → tmpfs" "same, DEST and cache on /dev/shm" "same, DEST and f on /dev/shm"
  fi
  echo
  echo "Commands (\`bench\` is the local server, added with \`lxhub remote add bench URL --trust-on-first-use\`):"
  echo
  for l in "${LEGEND[@]}"; do echo "- $l"; done
  echo
  echo "Details:"
  echo
  for c in "${CASES[@]}"; do
    [[ $c == verify ]] && continue
    echo "- $c, seconds per run: lxhub $(per_run "$c:lxhub"); pipeline $(per_run "$c:pipe")"
  done
  echo "- fixed cost of every lxhub pull: \`lxhub verify bench\` (node start-up, statement signature, index and"
  echo "  products documents, nothing downloaded) takes $(secs "$(median ${NS[verify:lxhub]})") s (median; runs $(per_run verify:lxhub));"
  echo "  \`curl\` of images.json alone takes $(secs "$(median ${NS[verify:pipe]})") s."
  echo "- lxhub verifies more than the pipelines: the signed statement (key $KID), the index and products"
  echo "  documents, the metadata file (lxd.tar.xz, $SQMETA_SIZE B) and the image fingerprint; it also keeps the"
  echo "  downloaded file in its cache (written and fsynced), which the tarball pipeline does not."
  echo "- peak RSS: \`/usr/bin/time -f %M\`, the largest single process among the command and the children it"
  echo "  waited for (lxhub: node, xz or unsquashfs; pipeline: curl, tee, tar, xz, sha256sum, unsquashfs), not their sum."
  echo "- page cache: not dropped. The server's blobs: at the start $CACHE_START; at the end $CACHE_END."
  echo "  Every DEST, lxhub cache and pipeline download is new; \`sync\` before each timed command."
  echo "- every lxhub pull starts with an empty cache (every run downloads) and goes through \`lxhub remote add\` (trust on first use)."
  echo "- inode allocation: on $FS$NOJOURNAL creating"
  echo "  files costs more the more inodes were freed recently nearby (\`perf\`: ext4 \`recently_deleted\` → \`find_get_block_common\`),"
  echo "  so disk figures swing 2–3× with what ran before; nothing is deleted on the disk during the measurements."
  for n in "${COMPARE_NOTES[@]}"; do echo "- trees, round 1: $n"; done
} | tee "$OUT_MD"
say "wrote $OUT_MD"
