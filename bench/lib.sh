# Shell helpers shared by bench/run.sh and bench/pull.sh (sourced, not run).

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

hex_of() { sha256sum "$1" | cut -d' ' -f1; }

cached_pct() { # share of a file's bytes in the page cache
  if command -v fincore >/dev/null; then
    fincore -b -n -o RES,SIZE "$1" | awk '{ if ($2 > 0) printf "%.0f%%", 100 * $1 / $2; else print "n/a" }'
  else
    echo "n/a (no fincore)"
  fi
}

stop_pid() { # pid signal
  local pid=$1 sig=${2:-TERM} i
  [[ -n "$pid" ]] || return 0
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
