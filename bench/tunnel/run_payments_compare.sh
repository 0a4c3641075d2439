#!/usr/bin/env bash
# Tunnel throughput with payments on, beside the same run with payments off (issue 4,
# "Benchmark"), using ../shared/bench/socks_bench as bench/tunnel/run_socks_compare.sh does.
#
# Starts, all on 127.0.0.1:
#   - dvpn-ledger (port 0 + --port-file, fresh operator keystore, SQLite in a temp dir);
#   - with dvpnctl: funds a client account and opens an escrow channel from it to a provider
#     account, with enough deposit for every run at the chosen price;
#   - two dvpn-tunnel-exit processes with the same flags, one free and one paid (--price-per-mb,
#     --ledger, --keystore, --promise-db; default invoice interval 1 MB and credit window 2 MB
#     unless --exit-flag says otherwise);
#   - a dvpn-tunnel-client for each (the paid one with --keystore, --channel, --ledger, --payee).
# Each round runs socks_bench once through each client; the order alternates between rounds so
# slow drift in machine load does not favour one side. Prints every RESULT line, the medians per
# side and the ratios paid / free, and checks the issue's goal (paid throughput >= 95% of free,
# both ways). Then it stops the paid client and the paid exit (SIGTERM: the exit settles its
# promises on shutdown) and shows what the provider was paid beside the bytes the paid tunnel
# metered: payments must really have happened.
#
# Every process this script starts is recorded by PID and stopped on exit; every wait is
# bounded. socks_bench is compiled into a temp dir, never into the repo.
#
# Usage: bench/tunnel/run_payments_compare.sh [options]
#   --runs N            rounds (socks_bench runs per side), default 5
#   --bytes SIZE        bulk bytes per direction per run (K/M/G suffixes), default 512M
#   --pings N           round trips in the rtt phase, default 2000
#   --conns N           fresh connections in the connect phase, default 200
#   --price C           credits per 10^6 metered bytes on the paid exit, default 0.01
#   --build-dir DIR     where bin/{dvpn-ledger,dvpnctl,dvpn-tunnel-exit,dvpn-tunnel-client} are,
#                       default <repo>/build
#   --exit-flag FLAG    pass FLAG to the paid exit only (repeatable), e.g.
#                       --exit-flag --credit-window-bytes=8000000
#   --client-flag FLAG  pass FLAG to both clients (repeatable), e.g. --socks-fast-reply
#   --results FILE      also append the raw RESULT lines to FILE
#   --run-timeout SEC   upper bound for one socks_bench run, default 600
#   --keep DIR          keep the logs and databases: copy the temp dir to DIR at the end
# Environment: SOCKS_BENCH_SRC overrides the path of socks_bench.c.
# Exit status: 0 when every run succeeded and the provider was paid, 1 on usage/setup errors,
# 2 when a run failed or the payment check failed.
set -euo pipefail

RUNS=5
BYTES=512M
PINGS=2000
CONNS=200
PRICE=0.01
BUILD_DIR=""
RESULTS_OUT=""
RUN_TIMEOUT=600
KEEP=""
START_TIMEOUT=20  # seconds to wait for a process to listen
CLIENT_FLAGS=()
EXIT_FLAGS=()
BENCH_NAME=run_payments_compare
source "$(dirname "$0")/common.sh"

while [ $# -gt 0 ]; do
  case "$1" in
    --price) PRICE=${2:?}; shift 2 ;;
    --exit-flag) EXIT_FLAGS+=("${2:?}"); shift 2 ;;
    --keep) KEEP=${2:?}; shift 2 ;;
    *) parse_common_option "$@"; shift "$OPT_SHIFT" ;;
  esac
done
check_common_options
[[ "$PRICE" =~ ^[0-9]+(\.[0-9]{1,6})?$ ]] || die "--price: credits with at most six decimals"
[[ "$BYTES" =~ ^[0-9]+[KMGT]?$ ]] || die "--bytes: a number with an optional K/M/G/T suffix"

setup_common "medians, JSON"
LEDGER_BIN="$BUILD_DIR/bin/dvpn-ledger"
CTL_BIN="$BUILD_DIR/bin/dvpnctl"
EXIT_BIN="$BUILD_DIR/bin/dvpn-tunnel-exit"
CLIENT_BIN="$BUILD_DIR/bin/dvpn-tunnel-client"
for b in "$LEDGER_BIN" "$CTL_BIN" "$EXIT_BIN" "$CLIENT_BIN"; do
  [ -x "$b" ] || die "$b not built (cmake --build $BUILD_DIR --target dvpn-ledger dvpnctl" \
    "dvpn-tunnel-exit dvpn-tunnel-client)"
done

# ---- process bookkeeping -------------------------------------------------------------------
start_bookkeeping payments_compare 150  # up to 15 s for each process to stop (the exit settles)

# stop_pid PID NAME: SIGTERM, then up to 15 s for it to exit (SIGKILL after); its exit status in
# STOP_RC. The PID is taken off the cleanup list once reaped.
STOP_RC=0
stop_pid() {
  local pid=$1 name=$2 p
  local -a rest=()
  STOP_RC=0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run_payments_compare: $name (pid $pid) did not stop within 15 s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || STOP_RC=$?
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || rest+=("$p"); done
  PIDS=(${rest[@]+"${rest[@]}"})
}

json_field() {  # FIELD: reads one JSON document on stdin, prints its member FIELD
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# ---- socks_bench ---------------------------------------------------------------------------
build_socks_bench

# ---- ledger, accounts, channel -------------------------------------------------------------
# Keystores with --kdf-cost test: they open instantly and are not protected by their
# passphrase, which is fine for throw-away keys in a temp dir. The paid exit and client read
# theirs with $DVPN_PASSPHRASE.
export DVPN_PASSPHRASE="payments-bench-$$"
ctl() { timeout 30 "$CTL_BIN" --kdf-cost test "$@"; }
for who in operator client provider; do
  ctl --keystore "$TMP/$who.json" key new >/dev/null || die "dvpnctl key new ($who) failed"
done
CLIENT_ADDR=$(ctl --keystore "$TMP/client.json" --json key show | json_field address)
PROVIDER_ADDR=$(ctl --keystore "$TMP/provider.json" --json key show | json_field address)

"$LEDGER_BIN" --db "$TMP/ledger.db" --listen 127.0.0.1:0 --port-file "$TMP/ledger.port" \
  --operator-keystore "$TMP/operator.json" --name payments-bench --log-level warn \
  >"$TMP/ledger.log" 2>&1 &
ledger_pid=$!; PIDS+=("$ledger_pid")
wait_file "$TMP/ledger.port" "$ledger_pid" dvpn-ledger || { show_log "$TMP/ledger.log"; exit 1; }
ledger_port=$(tr -dc '0-9' <"$TMP/ledger.port")
wait_port "$ledger_port" "$ledger_pid" dvpn-ledger || { show_log "$TMP/ledger.log"; exit 1; }
export DVPN_LEDGER="127.0.0.1:$ledger_port"
LEDGER_ID=$(ctl --json info | json_field ledger_id)

# Deposit: every run meters about 2 x BYTES (plus the ping and connect phases); twice that at
# the price, plus 10 credits, so the escrow never runs low during the bench.
DEPOSIT_MICRO=$(python3 - "$BYTES" "$RUNS" "$PRICE" <<'EOF'
import sys
from decimal import Decimal
size, runs, price = sys.argv[1], int(sys.argv[2]), Decimal(sys.argv[3])
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
n = int(size[:-1]) * mult[size[-1]] if size[-1] in mult else int(size)
mb = Decimal(runs * (2 * n + 50_000_000)) / 10**6
print(int(2 * mb * price * 10**6) + 10_000_000)
EOF
)
ctl --keystore "$TMP/operator.json" deposit --to "$CLIENT_ADDR" "${DEPOSIT_MICRO}u" >/dev/null ||
  die "dvpnctl deposit failed"
CHANNEL=$(ctl --keystore "$TMP/client.json" --json channel open --provider "$PROVIDER_ADDR" \
  --amount "${DEPOSIT_MICRO}u" --expires-in 24h | json_field channel_id) ||
  die "dvpnctl channel open failed"
log "ledger 127.0.0.1:$ledger_port (pid $ledger_pid), id ${LEDGER_ID:0:16}...; channel" \
    "${CHANNEL:0:16}... from $CLIENT_ADDR to $PROVIDER_ADDR, deposit ${DEPOSIT_MICRO}u"

# ---- exits and clients ---------------------------------------------------------------------
declare -A SOCKS_PORT  # side -> SOCKS5 port
declare -A SIDE_PIDS   # side -> "exit_pid client_pid"

# start_side NAME [extra exit flags...]: an exit and a client for it.
start_side() {
  local side=$1; shift
  local -a client_extra=()
  start_tunnel_exit "$TMP/$side-exit" "$side exit" "$@"
  if [ "$side" = paid ]; then
    client_extra=(--keystore "$TMP/client.json" --channel "$CHANNEL" --ledger "$DVPN_LEDGER"
                  --payee "$PROVIDER_ADDR")
  fi
  # --max-reconnects 0: a lost tunnel ends the client, so a paid session that broke off shows
  # as a failed run instead of a silent reconnect.
  start_tunnel_client "$TMP/$side-client" "$side client" "$TMP/$side-exit.log" \
    --max-reconnects 0 ${client_extra[@]+"${client_extra[@]}"} \
    ${CLIENT_FLAGS[@]+"${CLIENT_FLAGS[@]}"}
  SOCKS_PORT[$side]=$TUNNEL_CLIENT_PORT
  SIDE_PIDS[$side]="$TUNNEL_EXIT_PID $TUNNEL_CLIENT_PID"
  log "$side: exit 127.0.0.1:$TUNNEL_EXIT_PORT (pid $TUNNEL_EXIT_PID), client SOCKS5" \
      "127.0.0.1:$TUNNEL_CLIENT_PORT (pid $TUNNEL_CLIENT_PID)"
}

start_side free
start_side paid --price-per-mb "$PRICE" --ledger "$DVPN_LEDGER" --keystore "$TMP/provider.json" \
  --promise-db "$TMP/promises.db" ${EXIT_FLAGS[@]+"${EXIT_FLAGS[@]}"}

# ---- runs ----------------------------------------------------------------------------------
RESULTS="$TMP/results"
: >"$RESULTS"
FAILED=0

bench_once() {  # SIDE ROUND
  local side=$1 round=$2 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  run_socks_bench "$side" "$round" "${SIDE_PIDS[$side]}" \
    --socks "127.0.0.1:${SOCKS_PORT[$side]}" --bytes "$BYTES" --pings "$PINGS" --conns "$CONNS"
  [ -n "$RUN_LINE" ] || return 0
  # proxy_cpu_s: CPU seconds of the side's exit + client over the whole run.
  record_result "$round" "$RUN_LINE proxy_cpu_s=$RUN_CPU_S load1_before=$load"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE; $(nproc) CPUs"
log "$RUNS round(s), --bytes $BYTES --pings $PINGS --conns $CONNS, price $PRICE per MB"
for round in $(seq 1 "$RUNS"); do
  if [ $((round % 2)) = 1 ]; then order=(free paid); else order=(paid free); fi
  for side in "${order[@]}"; do bench_once "$side" "$round"; done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"

for side in free paid; do
  for pid in ${SIDE_PIDS[$side]}; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_payments_compare: a $side process ($pid) died during the runs" >&2
      show_log "$TMP/$side-client.log"; show_log "$TMP/$side-exit.log"
      FAILED=1
    fi
  done
done
[ -n "$RESULTS_OUT" ] && cat "$RESULTS" >>"$RESULTS_OUT"

# ---- medians and ratios --------------------------------------------------------------------
python_medians "$RESULTS" <<'EOF'
fields = [("up_MBps", "higher"), ("down_MBps", "higher"), ("rtt_p50_us", "lower"),
          ("rtt_p99_us", "lower"), ("conn_p50_ms", "lower"), ("proxy_cpu_s", "lower")]
runs = load_runs(sys.argv[1])
def ratio(f):
    a, b = median(runs, "paid", f), median(runs, "free", f)
    return None if a is None or not b else a / b
print_medians(runs, fields, (("free", "payments off"), ("paid", "payments on")))
if "free" in runs and "paid" in runs:
    print_ratios("ratio paid/free", ratio, fields, ".3f")
    # Per-round ratios: the two runs of a round are back to back, so they share the load.
    pairs = list(zip(runs["free"], runs["paid"]))
    for f in ("up_MBps", "down_MBps"):
        rs = [float(p[f]) / float(q[f]) for q, p in pairs if float(q[f]) > 0]
        if rs:
            print(f"  per-round ratio {f:10} " + " ".join(f"{r:.3f}" for r in rs) +
                  f"   (median {statistics.median(rs):.3f})")
    print()
    for name, f in (("upload", "up_MBps"), ("download", "down_MBps")):
        r = ratio(f)
        print(f"  goal paid {name:8} >= 95% of free   " +
              ("n/a" if r is None else ("MET" if r >= 0.95 else "NOT MET") + f" ({r:.1%})"))
EOF

# ---- did payments happen? ------------------------------------------------------------------
# Stop the paid client first (the exit logs the session's metered bytes and accepted amount
# when the tunnel closes), then the paid exit: on SIGTERM it commits its queued promises and
# settles them with the ledger before it exits.
read -r paid_exit_pid paid_client_pid <<<"${SIDE_PIDS[paid]}"
stop_pid "$paid_client_pid" "paid client"
[ "$STOP_RC" = 0 ] || echo "run_payments_compare: the paid client exited with status $STOP_RC" >&2
stop_pid "$paid_exit_pid" "paid exit"
[ "$STOP_RC" = 0 ] || echo "run_payments_compare: the paid exit exited with status $STOP_RC" >&2
session_line=$(grep -o 'session over: metered [0-9]* bytes.*accepted [0-9.]*' \
  "$TMP/paid-exit.log" | tail -n 1 || true)
METERED=$(sed -n 's/.*metered \([0-9]*\) bytes.*/\1/p' <<<"$session_line")
ACCEPTED=$(sed -n 's/.*accepted \([0-9.]*\).*/\1/p' <<<"$session_line")
SETTLED_MICRO=$(ctl --json channel show "$CHANNEL" | json_field settled_micro 2>/dev/null ||
  echo "")
BALANCE_MICRO=$(ctl --json balance "$PROVIDER_ADDR" | json_field balance_micro 2>/dev/null ||
  echo "")
python3 - "$PRICE" "${METERED:-}" "${ACCEPTED:-}" "${SETTLED_MICRO:-}" "${BALANCE_MICRO:-}" \
  "$(grep -c 'RESULT .*label=paid' "$RESULTS" || true)" "$BYTES" "$PINGS" "$CONNS" <<'EOF' ||
import sys
from decimal import Decimal
price, metered, accepted, settled, balance, paid_runs, size, pings, conns = sys.argv[1:10]
price_micro = int(Decimal(price) * 10**6)
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
n = int(size[:-1]) * mult[size[-1]] if size[-1] in mult else int(size)
print()
print("payments of the paid tunnel")
# socks_bench's payload per run: the bulk both ways, 64-byte pings both ways (20 warm-up ones
# too), one 64-byte ping both ways per connection.
moved = int(paid_runs) * (2 * n + (int(pings) + 20) * 128 + int(conns) * 128)
print(f"  payload socks_bench moved through it:  {moved:,} bytes ({paid_runs} runs)")
if not metered:
    # The exit's per-session line is debug since issue 13 (a peer must not be able to fill the
    # log): the payload socks_bench moved is the DATA both ways, what the exit meters.
    print("  (the exit's session line is at debug level: the socks_bench payload stands for the"
          " metered bytes)")
    metered = str(moved)
if not settled or not balance:
    print(f"  could not read the figures (metered={metered!r} settled={settled!r} "
          f"balance={balance!r})")
    sys.exit(1)
metered, settled, balance = int(metered), int(settled), int(balance)
due = metered * price_micro // 10**6
print(f"  metered by the exit (DATA both ways): {metered:,} bytes (its session meter at the"
      f" last check, every 1/8 invoice interval)")
print(f"  price x metered:                      {due:,} micro-credits "
      f"(price x socks_bench payload: {moved * price_micro // 10**6:,})")
print(f"  accepted by the exit (durable):       {accepted} credits")
print(f"  settled on the ledger (channel):      {settled:,} micro-credits")
print(f"  provider's ledger balance:            {balance:,} micro-credits")
gap = due - settled
interval_value = 1_000_000 * price_micro // 10**6
print(f"  unpaid tail: {gap:,} micro-credits "
      f"({gap / max(due, 1):.4%} of what was due; one 1 MB invoice = {interval_value:,})")
ok = settled > 0 and balance == settled and 0 <= gap <= 2 * interval_value
print(f"  check settled == balance and within two invoice intervals of price x metered: "
      f"{'OK' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF
  FAILED=1

[ $FAILED = 0 ] || { echo "run_payments_compare: a run or the payment check failed" >&2; exit 2; }
