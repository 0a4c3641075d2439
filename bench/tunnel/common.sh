# shellcheck shell=bash disable=SC2034  # sets globals the sourcing scripts read
# Shell functions shared by bench/tunnel/run_payments_compare.sh and run_socks_compare.sh.
# Sourced (not run) after `set -euo pipefail`; defines functions only, starts nothing.
#
# The sourcing script sets, before calling them:
#   BENCH_NAME     prefix of error messages, e.g. run_socks_compare
#   START_TIMEOUT  seconds to wait for a process to listen or write its port file
#   RUNS, BYTES, PINGS, CONNS, BUILD_DIR, RESULTS_OUT, RUN_TIMEOUT, CLIENT_FLAGS (array) with
#   their defaults, and optionally KEEP (a dir to copy the temp dir to on exit)
# and, before starting a tunnel, EXIT_BIN and CLIENT_BIN.
#
# Globals set here: SCRIPT_DIR, REPO_ROOT, SRC (setup_common); TMP, PIDS, BENCH_PID
# (start_bookkeeping); BENCH (build_socks_bench); TUNNEL_* (start_tunnel_exit/_client);
# RUN_LINE, RUN_CPU_S and FAILED (run_socks_bench).

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# parse_common_option ARGS...: the option in $1 (its value in $2) if both scripts take it:
# --runs, --bytes, --pings, --conns, --build-dir, --results, --run-timeout, --client-flag;
# sets OPT_SHIFT to how many arguments it took. -h/--help prints the sourcing script's header
# comment and exits 0; any other option is a usage error.
parse_common_option() {
  OPT_SHIFT=2
  case "$1" in
    --runs) RUNS=${2:?} ;;
    --bytes) BYTES=${2:?} ;;
    --pings) PINGS=${2:?} ;;
    --conns) CONNS=${2:?} ;;
    --build-dir) BUILD_DIR=${2:?} ;;
    --results) RESULTS_OUT=${2:?} ;;
    --run-timeout) RUN_TIMEOUT=${2:?} ;;
    --client-flag) CLIENT_FLAGS+=("${2:?}") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
}

# check_common_options: the options both scripts take, after parsing.
check_common_options() {
  [[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
  [[ "$RUN_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "--run-timeout must be a positive integer"
}

# setup_common PYTHON_USE: finds the repo, makes BUILD_DIR absolute (default <repo>/build),
# finds socks_bench.c and checks for python3 (PYTHON_USE says what for) and timeout.
setup_common() {
  SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
  [ -n "$BUILD_DIR" ] || BUILD_DIR="$REPO_ROOT/build"
  case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$PWD/$BUILD_DIR" ;; esac
  SRC=${SOCKS_BENCH_SRC:-$REPO_ROOT/../shared/bench/socks_bench.c}
  [ -f "$SRC" ] || die "socks_bench.c not found at $SRC (set SOCKS_BENCH_SRC)"
  command -v python3 >/dev/null || die "python3 is required ($1)"
  command -v timeout >/dev/null || die "timeout (coreutils) is required"
}

# ---- process bookkeeping -------------------------------------------------------------------
# start_bookkeeping TMP_PREFIX STOP_TENTHS: makes the temp dir TMP, and on exit stops
# the socks_bench run in progress (BENCH_PID) and every PID in PIDS: SIGTERM to all, then up to
# STOP_TENTHS tenths of a second for each to exit before SIGKILL; copies TMP to KEEP if set, and
# removes TMP.
start_bookkeeping() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  PIDS=()
  BENCH_PID=""  # the socks_bench run in progress (its `timeout` wrapper), if any
  STOP_TENTHS=$2
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

cleanup() {
  local pid
  if [ -n "$BENCH_PID" ]; then  # `timeout` passes the signal on to socks_bench
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 "$STOP_TENTHS"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ && echo "== logs kept in $KEEP" >&2 || true
  fi
  rm -rf "$TMP"
}

# wait_port PORT PID NAME: until 127.0.0.1:PORT accepts a connection; fails if PID dies first
# or after START_TIMEOUT seconds.
wait_port() {
  local port=$1 pid=$2 name=$3 deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$BENCH_NAME: $name (pid $pid) exited early" >&2
      return 1
    fi
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$BENCH_NAME: $name did not listen on 127.0.0.1:$port within ${START_TIMEOUT}s" >&2
  return 1
}

# wait_file FILE PID NAME: until FILE is non-empty (a port file); same bounds as wait_port.
wait_file() {
  local file=$1 pid=$2 name=$3 deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    [ -s "$file" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$BENCH_NAME: $name (pid $pid) exited early" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$BENCH_NAME: $name wrote nothing to $file within ${START_TIMEOUT}s" >&2
  return 1
}

show_log() {  # FILE: its last lines on stderr, if it exists
  if [ -f "$1" ]; then echo "--- last lines of $1:" >&2; tail -n 20 "$1" >&2; fi
}

# ---- dVPN tunnel ---------------------------------------------------------------------------
# start_tunnel_exit PREFIX NAME [extra exit flags...]: a dvpn-tunnel-exit on 127.0.0.1 (port 0)
# with its static key in PREFIX.key (created mode 0600 on first use), port file PREFIX.port and
# log PREFIX.log, recorded in PIDS; NAME names it in messages. Sets TUNNEL_EXIT_KEY (its public
# key, hex), TUNNEL_EXIT_PID and TUNNEL_EXIT_PORT once it listens; exits the script on failure.
start_tunnel_exit() {
  local prefix=$1 name=$2; shift 2
  TUNNEL_EXIT_KEY=$(timeout "$START_TIMEOUT" "$EXIT_BIN" --static-key-file "$prefix.key" \
    --print-public-key 2>"$prefix.log" | tr -d '[:space:]') || TUNNEL_EXIT_KEY=""
  [[ "$TUNNEL_EXIT_KEY" =~ ^[0-9a-fA-F]{64}$ ]] || { show_log "$prefix.log";
    die "dvpn-tunnel-exit --print-public-key printed no 64-hex-digit key: '$TUNNEL_EXIT_KEY'"; }
  # Loopback is refused by the exit's default policy; the bench target is the loopback sink
  # (IPv6 too, since "localhost" may resolve to ::1). No per-tunnel stream rate limit, so that
  # back-to-back connect phases are not refused.
  "$EXIT_BIN" --listen 127.0.0.1:0 --port-file "$prefix.port" \
    --static-key-file "$prefix.key" --allow 127.0.0.1/32 --allow '[::1]/128' \
    --new-streams-per-second 0 "$@" >"$prefix.log" 2>&1 &
  TUNNEL_EXIT_PID=$!; PIDS+=("$TUNNEL_EXIT_PID")
  wait_file "$prefix.port" "$TUNNEL_EXIT_PID" "$name" || { show_log "$prefix.log"; exit 1; }
  TUNNEL_EXIT_PORT=$(tr -dc '0-9' <"$prefix.port")
  wait_port "$TUNNEL_EXIT_PORT" "$TUNNEL_EXIT_PID" "$name" || { show_log "$prefix.log"; exit 1; }
}

# start_tunnel_client PREFIX NAME EXIT_LOG [extra client flags...]: a dvpn-tunnel-client of the
# exit last started by start_tunnel_exit, its SOCKS5 server on 127.0.0.1 (port 0), port file
# PREFIX.port and log PREFIX.log, recorded in PIDS. EXIT_LOG (may be "") is shown too when the
# client writes no port. Sets TUNNEL_CLIENT_PID and TUNNEL_CLIENT_PORT once it listens; exits
# the script on failure.
start_tunnel_client() {
  local prefix=$1 name=$2 exit_log=$3; shift 3
  "$CLIENT_BIN" --provider "127.0.0.1:$TUNNEL_EXIT_PORT" --provider-key "$TUNNEL_EXIT_KEY" \
    --socks 127.0.0.1:0 --socks-port-file "$prefix.port" "$@" >"$prefix.log" 2>&1 &
  TUNNEL_CLIENT_PID=$!; PIDS+=("$TUNNEL_CLIENT_PID")
  wait_file "$prefix.port" "$TUNNEL_CLIENT_PID" "$name" ||
    { show_log "$prefix.log"; show_log "$exit_log"; exit 1; }
  TUNNEL_CLIENT_PORT=$(tr -dc '0-9' <"$prefix.port")
  wait_port "$TUNNEL_CLIENT_PORT" "$TUNNEL_CLIENT_PID" "$name" ||
    { show_log "$prefix.log"; exit 1; }
}

# ---- socks_bench ---------------------------------------------------------------------------
build_socks_bench() {  # compiles SRC into TMP (never into the repo); sets BENCH
  BENCH="$TMP/socks_bench"
  cc -O2 -o "$BENCH" "$SRC" -lpthread || die "could not compile $SRC"
}

cpu_ticks() {  # summed utime+stime (clock ticks) of the given PIDs
  local total=0 pid stat
  local -a f
  for pid in "$@"; do
    stat=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    read -r -a f <<<"$stat"  # f[0] is field 3 (state): utime, stime are fields 14, 15
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# run_socks_bench LABEL ROUND PIDS [socks_bench args...]: one socks_bench run labelled LABEL,
# bounded by RUN_TIMEOUT, its output in TMP/run.LABEL.ROUND. PIDS (space-separated, may be
# empty) are the processes whose CPU time the run is charged. On success sets RUN_LINE (the
# RESULT line) and RUN_CPU_S (those processes' CPU seconds over the run, 2 decimals); on
# failure prints why, sets FAILED=1 and leaves RUN_LINE empty. Returns 0 either way.
run_socks_bench() {
  local label=$1 round=$2 rc=0 t0 t1 hz
  local out="$TMP/run.$label.$round"
  local -a pids
  read -r -a pids <<<"$3"
  shift 3
  RUN_LINE=""; RUN_CPU_S=""
  t0=$(cpu_ticks "${pids[@]}")
  # In the background so that a signal to this script runs the EXIT trap at once.
  timeout "$RUN_TIMEOUT" "$BENCH" "$@" --label "$label" >"$out" 2>&1 &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  t1=$(cpu_ticks "${pids[@]}")
  RUN_LINE=$(grep '^RESULT ' "$out" || true)
  if [ $rc -ne 0 ] || [ -z "$RUN_LINE" ]; then
    local why="exit $rc"
    [ "$rc" = 124 ] && why+=", timeout after ${RUN_TIMEOUT}s"
    echo "$BENCH_NAME: round $round, $label FAILED ($why):" >&2
    tail -n 5 "$out" >&2
    FAILED=1
    RUN_LINE=""
    return 0
  fi
  hz=$(getconf CLK_TCK)
  RUN_CPU_S=$(awk -v d=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.2f", d / hz }')
}

record_result() {  # ROUND LINE: prints LINE for ROUND and appends it to RESULTS
  echo "round $1: $2"
  echo "$2" >>"$RESULTS"
}

# ---- medians -------------------------------------------------------------------------------
# python_medians ARGS...: runs the Python program on stdin with ARGS as sys.argv[1:], after
# these helpers for the RESULT lines:
#   load_runs(path)                 label -> [{field: value}, ...], one dict per RESULT line
#   median(runs, label, f)          median of field f over label's runs (None if none has it)
#   fmt(v)                          a median as printed ("-" for None)
#   print_medians(runs, fields, rows)  the table: fields [(name, better)], rows [(label, title)]
#   print_ratios(title, ratio, fields, spec)  ratio(f) per field (format spec) and "(better is)"
python_medians() {
  python3 -c "$(medians_prelude)"$'\n'"$(cat)" "$@"
}

medians_prelude() {
  cat <<'EOF'
import statistics, sys
def load_runs(path):
    runs = {}
    for line in open(path):
        kv = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
        runs.setdefault(kv.get("label", "?"), []).append(kv)
    return runs
def median(runs, label, f):
    vals = [float(r[f]) for r in runs.get(label, []) if r.get(f, "NA") not in ("NA", "")]
    return statistics.median(vals) if vals else None
def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"
def print_medians(runs, fields, rows):
    print()
    print("medians (n = runs per row)")
    print(f"{'':20}{'n':>3}" + "".join(f"{f:>13}" for f, _ in fields))
    for label, title in rows:
        if label in runs:
            print(f"{title:20}{len(runs[label]):>3}" +
                  "".join(f"{fmt(median(runs, label, f)):>13}" for f, _ in fields))
def print_ratios(title, ratio, fields, spec):
    print(f"{title:23}" + "".join(
        f"{'-' if ratio(f) is None else format(ratio(f), spec):>13}" for f, _ in fields))
    print(f"{'(better is)':23}" + "".join(f"{b:>13}" for _, b in fields))
EOF
}
