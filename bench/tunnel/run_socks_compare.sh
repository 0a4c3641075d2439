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
CLIENT_FLAGS=()
BENCH_NAME=run_socks_compare
source "$(dirname "$0")/common.sh"

while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY=${2:?}; shift 2 ;;
    --no-direct) DIRECT=0; shift ;;
    --domain) DOMAIN=1; shift ;;
    --ss-no-delay) SS_NO_DELAY=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    *) parse_common_option "$@"; shift "$OPT_SHIFT" ;;
  esac
done
check_common_options
case "$ONLY" in ""|ss|dvpn) ;; *) die "--only takes ss or dvpn" ;; esac

setup_common "medians and port allocation"

# ---- process bookkeeping -------------------------------------------------------------------
start_bookkeeping socks_compare 50  # up to 5 s for each process to stop

free_port() {  # a currently free TCP port on 127.0.0.1
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
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
build_socks_bench

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
    start_tunnel_exit "$TMP/exit" dvpn-tunnel-exit
    start_tunnel_client "$TMP/client" dvpn-tunnel-client "" \
      ${CLIENT_FLAGS[@]+"${CLIENT_FLAGS[@]}"}
    SOCKS_PORT[dvpn]=$TUNNEL_CLIENT_PORT
    PEER_PIDS[dvpn]="$TUNNEL_EXIT_PID $TUNNEL_CLIENT_PID"
    PEERS+=(dvpn)
    log "dvpn: exit 127.0.0.1:$TUNNEL_EXIT_PORT (pid $TUNNEL_EXIT_PID), client SOCKS5" \
        "127.0.0.1:$TUNNEL_CLIENT_PORT (pid $TUNNEL_CLIENT_PID), build dir $BUILD_DIR"
  fi
fi
[ ${#PEERS[@]} -gt 0 ] || die "nothing to measure"

# ---- runs ----------------------------------------------------------------------------------
RESULTS="$TMP/results"
: >"$RESULTS"
FAILED=0

# bench_once PEER ROUND
bench_once() {
  local peer=$1 round=$2
  local -a args=(--bytes "$BYTES" --pings "$PINGS" --conns "$CONNS")
  if [ "$peer" = direct ]; then
    args+=(--direct)
  else
    args+=(--socks "127.0.0.1:${SOCKS_PORT[$peer]}")
  fi
  [ $DOMAIN = 1 ] && [ "$peer" != direct ] && args+=(--domain)
  run_socks_bench "$peer" "$round" "${PEER_PIDS[$peer]:-}" "${args[@]}"
  [ -n "$RUN_LINE" ] || return 0
  # proxy_cpu_s: CPU seconds used by the proxy's own processes during the whole run.
  if [ -n "${PEER_PIDS[$peer]:-}" ]; then
    record_result "$round" "$RUN_LINE proxy_cpu_s=$RUN_CPU_S"
  else
    record_result "$round" "$RUN_LINE"
  fi
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
python_medians "$RESULTS" "$DVPN_SKIPPED" <<'EOF'
path, skipped = sys.argv[1], sys.argv[2]
fields = [("up_MBps", "higher"), ("down_MBps", "higher"), ("rtt_p50_us", "lower"),
          ("rtt_p99_us", "lower"), ("conn_p50_ms", "lower"), ("conns_per_s", "higher"),
          ("proxy_cpu_s", "lower")]
runs = load_runs(path)
print_medians(runs, fields, (("ss", "shadowsocks-libev"), ("dvpn", "dvpn tunnel"),
                             ("direct", "direct (floor)")))
def ratio(f):
    a, b = median(runs, "dvpn", f), median(runs, "ss", f)
    return None if a is None or not b else a / b
if "ss" in runs and "dvpn" in runs:
    print_ratios("ratio dvpn/ss", ratio, fields, ".2f")
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
