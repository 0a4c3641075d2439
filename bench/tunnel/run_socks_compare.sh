#!/usr/bin/env bash
# Compares the dVPN tunnel (dvpn-tunnel-client -> dvpn-tunnel-exit) with shadowsocks-libev
# (ss-local -> ss-server, chacha20-ietf-poly1305) on loopback, using ../shared/bench/socks_bench.
#
# Each round runs socks_bench once through every proxy (the order alternates between rounds so
# slow drift in machine load does not favour one side), then one --direct run gives the floor.
# Prints every RESULT line, a table of medians per proxy and the ratios dvpn / shadowsocks.
#
# Everything binds to 127.0.0.1. Every process this script starts is recorded by PID and stopped
# on exit; every wait is bounded. socks_bench is compiled into a temp dir, never into the repo.
#
# Usage: bench/tunnel/run_socks_compare.sh [options]
#   --runs N            rounds (socks_bench runs per proxy), default 5
#   --bytes SIZE        bulk bytes per direction per run (K/M/G suffixes), default 512M
#   --pings N           round trips in the rtt phase, default 2000
#   --conns N           fresh connections in the connect phase, default 500
#   --build-dir DIR     where bin/dvpn-tunnel-{exit,client} are, default <repo>/build
#   --only ss|dvpn      measure only one proxy (plus the direct floor)
#   --no-direct         skip the --direct floor run
#   --domain            send the target as the name "localhost" (SOCKS5 ATYP 3)
#   --ss-no-delay       give ss-local and ss-server TCP_NODELAY (off in Debian's defaults)
#   --no-install        do not apt-get install shadowsocks-libev when it is missing
#   --results FILE      also append the raw RESULT lines to FILE
#   --run-timeout SEC   upper bound for one socks_bench run, default 600
#   --client-flag FLAG  pass FLAG to dvpn-tunnel-client (repeatable), e.g. --socks-fast-reply
# Environment: SOCKS_BENCH_SRC overrides the path of socks_bench.c.
# Note: the proxies (and so one dVPN tunnel) stay up for all rounds; the exit runs with
# --new-streams-per-second 0 (no per-tunnel stream rate limit) so back-to-back connect phases
# are not refused. For RTT comparisons that do not depend on where the
# scheduler puts the processes, run the whole script under `taskset -c 1` (one CPU).
# Exit status: 0 when every run succeeded, 1 on usage/setup errors, 2 when a run failed.
set -euo pipefail

RUNS=5
BYTES=512M
PINGS=2000
CONNS=500
BUILD_DIR=""
ONLY=""
DIRECT=1
DOMAIN=0
SS_NO_DELAY=0
INSTALL=1
RESULTS_OUT=""
RUN_TIMEOUT=600
START_TIMEOUT=20  # seconds to wait for a proxy to listen

die() { echo "run_socks_compare: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
CLIENT_FLAGS=()

while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=${2:?}; shift 2 ;;
    --bytes) BYTES=${2:?}; shift 2 ;;
    --pings) PINGS=${2:?}; shift 2 ;;
    --conns) CONNS=${2:?}; shift 2 ;;
    --build-dir) BUILD_DIR=${2:?}; shift 2 ;;
    --only) ONLY=${2:?}; shift 2 ;;
    --no-direct) DIRECT=0; shift ;;
    --domain) DOMAIN=1; shift ;;
    --ss-no-delay) SS_NO_DELAY=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --results) RESULTS_OUT=${2:?}; shift 2 ;;
    --run-timeout) RUN_TIMEOUT=${2:?}; shift 2 ;;
    --client-flag) CLIENT_FLAGS+=("${2:?}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ "$RUN_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "--run-timeout must be a positive integer"
case "$ONLY" in ""|ss|dvpn) ;; *) die "--only takes ss or dvpn" ;; esac

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
[ -n "$BUILD_DIR" ] || BUILD_DIR="$REPO_ROOT/build"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$PWD/$BUILD_DIR" ;; esac
SRC=${SOCKS_BENCH_SRC:-$REPO_ROOT/../shared/bench/socks_bench.c}
[ -f "$SRC" ] || die "socks_bench.c not found at $SRC (set SOCKS_BENCH_SRC)"
command -v python3 >/dev/null || die "python3 is required (medians and port allocation)"
command -v timeout >/dev/null || die "timeout (coreutils) is required"

# ---- process bookkeeping -------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/socks_compare.XXXXXX")
PIDS=()
BENCH_PID=""  # the socks_bench run in progress (its `timeout` wrapper), if any
cleanup() {
  local pid
  if [ -n "$BENCH_PID" ]; then  # `timeout` passes the signal on to socks_bench
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do  # up to 5 s for each to exit, then SIGKILL
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {  # a currently free TCP port on 127.0.0.1
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_port PORT PID NAME: until 127.0.0.1:PORT accepts a connection; fails if PID dies first
# or after START_TIMEOUT seconds.
wait_port() {
  local port=$1 pid=$2 name=$3 deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_socks_compare: $name (pid $pid) exited early" >&2
      return 1
    fi
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run_socks_compare: $name did not listen on 127.0.0.1:$port within ${START_TIMEOUT}s" >&2
  return 1
}

# wait_file FILE PID NAME: until FILE is non-empty (a port file); same bounds as wait_port.
wait_file() {
  local file=$1 pid=$2 name=$3 deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    [ -s "$file" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_socks_compare: $name (pid $pid) exited early" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "run_socks_compare: $name wrote nothing to $file within ${START_TIMEOUT}s" >&2
  return 1
}

show_log() {
  if [ -f "$1" ]; then echo "--- last lines of $1:" >&2; tail -n 20 "$1" >&2; fi
}

# ---- shadowsocks-libev ---------------------------------------------------------------------
WANT_SS=1; WANT_DVPN=1
[ "$ONLY" = dvpn ] && WANT_SS=0
[ "$ONLY" = ss ] && WANT_DVPN=0

if [ $WANT_SS = 1 ] && ! { command -v ss-server && command -v ss-local; } >/dev/null; then
  [ $INSTALL = 1 ] || die "ss-server/ss-local missing and --no-install given"
  candidate=$(apt-cache policy shadowsocks-libev 2>/dev/null | sed -n 's/^ *Candidate: *//p')
  if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
    die "shadowsocks-libev has no install candidate (apt-cache policy shadowsocks-libev)"
  fi
  [ "$(id -u)" = 0 ] || die "shadowsocks-libev missing; run: sudo apt-get install shadowsocks-libev"
  log "installing shadowsocks-libev $candidate with apt-get"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends \
    shadowsocks-libev >"$TMP/apt.log" 2>&1 ||
    { show_log "$TMP/apt.log"; die "apt-get install failed"; }
fi

# ---- socks_bench ---------------------------------------------------------------------------
BENCH="$TMP/socks_bench"
cc -O2 -o "$BENCH" "$SRC" -lpthread || die "could not compile $SRC"

# ---- start the proxies ---------------------------------------------------------------------
declare -A SOCKS_PORT  # peer name -> SOCKS5 port on 127.0.0.1
declare -A PEER_PIDS   # peer name -> "pid pid" of its processes (to check they survived)
PEERS=()

if [ $WANT_SS = 1 ]; then
  ss_port=$(free_port)
  ss_local_port=$(free_port)
  while [ "$ss_local_port" = "$ss_port" ]; do ss_local_port=$(free_port); done
  ss_password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  no_delay=false; [ $SS_NO_DELAY = 1 ] && no_delay=true
  # Password in a 0600 config file rather than on the command line (visible in ps).
  (umask 077; cat >"$TMP/ss.json" <<EOF
{"server": "127.0.0.1", "server_port": $ss_port, "local_address": "127.0.0.1",
 "local_port": $ss_local_port, "password": "$ss_password",
 "method": "chacha20-ietf-poly1305", "mode": "tcp_only", "timeout": 60, "no_delay": $no_delay}
EOF
  )
  ss-server -c "$TMP/ss.json" >"$TMP/ss-server.log" 2>&1 &
  ss_server_pid=$!; PIDS+=("$ss_server_pid")
  wait_port "$ss_port" "$ss_server_pid" ss-server || { show_log "$TMP/ss-server.log"; exit 1; }
  ss-local -c "$TMP/ss.json" >"$TMP/ss-local.log" 2>&1 &
  ss_local_pid=$!; PIDS+=("$ss_local_pid")
  wait_port "$ss_local_port" "$ss_local_pid" ss-local || { show_log "$TMP/ss-local.log"; exit 1; }
  SOCKS_PORT[ss]=$ss_local_port
  PEER_PIDS[ss]="$ss_server_pid $ss_local_pid"
  PEERS+=(ss)
  log "shadowsocks-libev $(ss-server -h 2>&1 | sed -n 's/^shadowsocks-libev //p' | head -1):" \
      "ss-server 127.0.0.1:$ss_port (pid $ss_server_pid), ss-local 127.0.0.1:$ss_local_port" \
      "(pid $ss_local_pid), chacha20-ietf-poly1305, no_delay=$no_delay"
fi

EXIT_BIN="$BUILD_DIR/bin/dvpn-tunnel-exit"
CLIENT_BIN="$BUILD_DIR/bin/dvpn-tunnel-client"
DVPN_SKIPPED=""
if [ $WANT_DVPN = 1 ]; then
  if [ ! -x "$EXIT_BIN" ] || [ ! -x "$CLIENT_BIN" ]; then
    DVPN_SKIPPED="$EXIT_BIN or $CLIENT_BIN not built"
    DVPN_SKIPPED+=" (cmake --build $BUILD_DIR --target dvpn-tunnel-exit dvpn-tunnel-client)"
    echo "run_socks_compare: SKIPPING dvpn: $DVPN_SKIPPED" >&2
  else
    # The static key file is created (mode 0600) on first use; --print-public-key prints the
    # public half and exits.
    provider_key=$(timeout "$START_TIMEOUT" "$EXIT_BIN" --static-key-file "$TMP/exit.key" \
      --print-public-key 2>"$TMP/exit.log" | tr -d '[:space:]') || provider_key=""
    [[ "$provider_key" =~ ^[0-9a-fA-F]{64}$ ]] || { show_log "$TMP/exit.log";
      die "dvpn-tunnel-exit --print-public-key printed no 64-hex-digit key: '$provider_key'"; }
    # Loopback is refused by the exit's default policy; the bench target is the loopback sink
    # (IPv6 too with --domain, since "localhost" may resolve to ::1).
    "$EXIT_BIN" --listen 127.0.0.1:0 --port-file "$TMP/exit.port" \
      --static-key-file "$TMP/exit.key" \
      --allow 127.0.0.1/32 --allow '[::1]/128' --new-streams-per-second 0 \
      >"$TMP/exit.log" 2>&1 &
    exit_pid=$!; PIDS+=("$exit_pid")
    wait_file "$TMP/exit.port" "$exit_pid" dvpn-tunnel-exit || { show_log "$TMP/exit.log"; exit 1; }
    exit_port=$(tr -dc '0-9' <"$TMP/exit.port")
    wait_port "$exit_port" "$exit_pid" dvpn-tunnel-exit || { show_log "$TMP/exit.log"; exit 1; }
    "$CLIENT_BIN" --provider "127.0.0.1:$exit_port" --provider-key "$provider_key" \
      --socks 127.0.0.1:0 --socks-port-file "$TMP/client.port" ${CLIENT_FLAGS[@]+"${CLIENT_FLAGS[@]}"} \
      >"$TMP/client.log" 2>&1 &
    client_pid=$!; PIDS+=("$client_pid")
    wait_file "$TMP/client.port" "$client_pid" dvpn-tunnel-client ||
      { show_log "$TMP/client.log"; exit 1; }
    client_port=$(tr -dc '0-9' <"$TMP/client.port")
    wait_port "$client_port" "$client_pid" dvpn-tunnel-client ||
      { show_log "$TMP/client.log"; exit 1; }
    SOCKS_PORT[dvpn]=$client_port
    PEER_PIDS[dvpn]="$exit_pid $client_pid"
    PEERS+=(dvpn)
    log "dvpn: exit 127.0.0.1:$exit_port (pid $exit_pid), client SOCKS5 127.0.0.1:$client_port" \
        "(pid $client_pid), build dir $BUILD_DIR"
  fi
fi
[ ${#PEERS[@]} -gt 0 ] || die "nothing to measure"

# ---- runs ----------------------------------------------------------------------------------
RESULTS="$TMP/results"
: >"$RESULTS"
FAILED=0
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
HZ=$(getconf CLK_TCK)

# bench_once PEER ROUND [extra socks_bench args...]
bench_once() {
  local peer=$1 round=$2; shift 2
  local out="$TMP/run.$peer.$round" rc=0 args=(--bytes "$BYTES" --pings "$PINGS" --conns "$CONNS")
  local t0 t1
  local -a pids
  read -r -a pids <<<"${PEER_PIDS[$peer]:-}"
  if [ "$peer" = direct ]; then
    args+=(--direct)
  else
    args+=(--socks "127.0.0.1:${SOCKS_PORT[$peer]}")
  fi
  [ $DOMAIN = 1 ] && [ "$peer" != direct ] && args+=(--domain)
  t0=$(cpu_ticks "${pids[@]}")
  # In the background so that a signal to this script runs the EXIT trap at once.
  timeout "$RUN_TIMEOUT" "$BENCH" "${args[@]}" --label "$peer" >"$out" 2>&1 &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  t1=$(cpu_ticks "${pids[@]}")
  local line
  line=$(grep '^RESULT ' "$out" || true)
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    local why="exit $rc"
    [ "$rc" = 124 ] && why+=", timeout after ${RUN_TIMEOUT}s"
    echo "run_socks_compare: round $round, $peer FAILED ($why):" >&2
    tail -n 5 "$out" >&2
    FAILED=1
    return 0
  fi
  # proxy_cpu_s: CPU seconds used by the proxy's own processes during the whole run.
  if [ ${#pids[@]} -gt 0 ]; then
    line+=" proxy_cpu_s=$(awk -v d=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.2f", d / hz }')"
  fi
  echo "round $round: $line"
  echo "$line" >>"$RESULTS"
}

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
log "$RUNS round(s), --bytes $BYTES --pings $PINGS --conns $CONNS, proxies: ${PEERS[*]}"
for round in $(seq 1 "$RUNS"); do
  order=("${PEERS[@]}")
  if [ $((round % 2)) = 0 ] && [ ${#PEERS[@]} = 2 ]; then order=("${PEERS[1]}" "${PEERS[0]}"); fi
  for peer in "${order[@]}"; do bench_once "$peer" "$round"; done
done
[ $DIRECT = 1 ] && bench_once direct 1
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"

for peer in "${PEERS[@]}"; do
  for pid in ${PEER_PIDS[$peer]}; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_socks_compare: $peer process $pid died during the runs" >&2
      FAILED=1
    fi
  done
done
[ -n "$RESULTS_OUT" ] && cat "$RESULTS" >>"$RESULTS_OUT"

# ---- medians and ratios --------------------------------------------------------------------
python3 - "$RESULTS" "$DVPN_SKIPPED" <<'EOF'
import statistics, sys
path, skipped = sys.argv[1], sys.argv[2]
fields = [("up_MBps", "higher"), ("down_MBps", "higher"), ("rtt_p50_us", "lower"),
          ("rtt_p99_us", "lower"), ("conn_p50_ms", "lower"), ("conns_per_s", "higher"),
          ("proxy_cpu_s", "lower")]
runs = {}
for line in open(path):
    kv = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
    runs.setdefault(kv.get("label", "?"), []).append(kv)
def med(peer, f):
    vals = [float(r[f]) for r in runs.get(peer, []) if r.get(f, "NA") not in ("NA", "")]
    return statistics.median(vals) if vals else None
def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"
peers = [p for p in ("ss", "dvpn", "direct") if p in runs]
names = {"ss": "shadowsocks-libev", "dvpn": "dvpn tunnel", "direct": "direct (floor)"}
print()
print("medians (n = runs per row)")
header = f"{'':20}{'n':>3}" + "".join(f"{f:>13}" for f, _ in fields)
print(header)
for p in peers:
    print(f"{names[p]:20}{len(runs[p]):>3}" + "".join(f"{fmt(med(p, f)):>13}" for f, _ in fields))
def ratio(f):
    a, b = med("dvpn", f), med("ss", f)
    return None if a is None or not b else a / b
if "ss" in runs and "dvpn" in runs:
    print(f"{'ratio dvpn/ss':23}" + "".join(
        f"{'-' if ratio(f) is None else format(ratio(f), '.2f'):>13}" for f, _ in fields))
    print(f"{'(better is)':23}" + "".join(f"{b:>13}" for _, b in fields))
    checks = [("upload >= shadowsocks", ratio("up_MBps"), lambda r: r >= 1.0),
              ("download >= shadowsocks", ratio("down_MBps"), lambda r: r >= 1.0),
              ("rtt p50 <= 1.2 x shadowsocks", ratio("rtt_p50_us"), lambda r: r <= 1.2)]
    print()
    for name, r, ok in checks:
        print(f"  goal {name:30} {'n/a' if r is None else ('MET' if ok(r) else 'NOT MET')}"
              f"{'' if r is None else f' (ratio {r:.2f})'}")
elif skipped:
    print(f"\ndvpn not measured: {skipped}")
EOF

[ $FAILED = 0 ] || { echo "run_socks_compare: at least one run failed (see above)" >&2; exit 2; }
