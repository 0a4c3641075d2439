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

die() { echo "run_payments_compare: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=${2:?}; shift 2 ;;
    --bytes) BYTES=${2:?}; shift 2 ;;
    --pings) PINGS=${2:?}; shift 2 ;;
    --conns) CONNS=${2:?}; shift 2 ;;
    --price) PRICE=${2:?}; shift 2 ;;
    --build-dir) BUILD_DIR=${2:?}; shift 2 ;;
    --exit-flag) EXIT_FLAGS+=("${2:?}"); shift 2 ;;
    --client-flag) CLIENT_FLAGS+=("${2:?}"); shift 2 ;;
    --results) RESULTS_OUT=${2:?}; shift 2 ;;
    --run-timeout) RUN_TIMEOUT=${2:?}; shift 2 ;;
    --keep) KEEP=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ "$RUN_TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "--run-timeout must be a positive integer"
[[ "$PRICE" =~ ^[0-9]+(\.[0-9]{1,6})?$ ]] || die "--price: credits with at most six decimals"
[[ "$BYTES" =~ ^[0-9]+[KMGT]?$ ]] || die "--bytes: a number with an optional K/M/G/T suffix"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
[ -n "$BUILD_DIR" ] || BUILD_DIR="$REPO_ROOT/build"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$PWD/$BUILD_DIR" ;; esac
SRC=${SOCKS_BENCH_SRC:-$REPO_ROOT/../shared/bench/socks_bench.c}
[ -f "$SRC" ] || die "socks_bench.c not found at $SRC (set SOCKS_BENCH_SRC)"
command -v python3 >/dev/null || die "python3 is required (medians, JSON)"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
LEDGER_BIN="$BUILD_DIR/bin/dvpn-ledger"
CTL_BIN="$BUILD_DIR/bin/dvpnctl"
EXIT_BIN="$BUILD_DIR/bin/dvpn-tunnel-exit"
CLIENT_BIN="$BUILD_DIR/bin/dvpn-tunnel-client"
for b in "$LEDGER_BIN" "$CTL_BIN" "$EXIT_BIN" "$CLIENT_BIN"; do
  [ -x "$b" ] || die "$b not built (cmake --build $BUILD_DIR --target dvpn-ledger dvpnctl" \
    "dvpn-tunnel-exit dvpn-tunnel-client)"
done

# ---- process bookkeeping -------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/payments_compare.XXXXXX")
PIDS=()
BENCH_PID=""  # the socks_bench run in progress (its `timeout` wrapper), if any
cleanup() {
  local pid
  if [ -n "$BENCH_PID" ]; then  # `timeout` passes the signal on to socks_bench
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do  # up to 15 s for each to exit (the exit settles), then SIGKILL
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ && echo "== logs kept in $KEEP" >&2 || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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

wait_port() {  # PORT PID NAME: until 127.0.0.1:PORT accepts; fails if PID dies or on timeout
  local port=$1 pid=$2 name=$3 deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_payments_compare: $name (pid $pid) exited early" >&2
      return 1
    fi
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run_payments_compare: $name did not listen on 127.0.0.1:$port within ${START_TIMEOUT}s" >&2
  return 1
}

wait_file() {  # FILE PID NAME: until FILE is non-empty; same bounds as wait_port
  local file=$1 pid=$2 name=$3 deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    [ -s "$file" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run_payments_compare: $name (pid $pid) exited early" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "run_payments_compare: $name wrote nothing to $file within ${START_TIMEOUT}s" >&2
  return 1
}

show_log() {
  if [ -f "$1" ]; then echo "--- last lines of $1:" >&2; tail -n 20 "$1" >&2; fi
}

json_field() {  # FIELD: reads one JSON document on stdin, prints its member FIELD
  python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# ---- socks_bench ---------------------------------------------------------------------------
BENCH="$TMP/socks_bench"
cc -O2 -o "$BENCH" "$SRC" -lpthread || die "could not compile $SRC"

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
  local key pub exit_pid client_pid exit_port client_port
  local -a client_extra=()
  pub=$(timeout "$START_TIMEOUT" "$EXIT_BIN" --static-key-file "$TMP/$side-exit.key" \
    --print-public-key 2>"$TMP/$side-exit.log" | tr -d '[:space:]') || pub=""
  [[ "$pub" =~ ^[0-9a-fA-F]{64}$ ]] || { show_log "$TMP/$side-exit.log";
    die "dvpn-tunnel-exit --print-public-key printed no 64-hex-digit key: '$pub'"; }
  # Loopback is refused by the exit's default policy; the bench's sink is on loopback.
  "$EXIT_BIN" --listen 127.0.0.1:0 --port-file "$TMP/$side-exit.port" \
    --static-key-file "$TMP/$side-exit.key" --allow 127.0.0.1/32 --allow '[::1]/128' \
    --new-streams-per-second 0 "$@" >"$TMP/$side-exit.log" 2>&1 &
  exit_pid=$!; PIDS+=("$exit_pid")
  wait_file "$TMP/$side-exit.port" "$exit_pid" "$side exit" ||
    { show_log "$TMP/$side-exit.log"; exit 1; }
  exit_port=$(tr -dc '0-9' <"$TMP/$side-exit.port")
  wait_port "$exit_port" "$exit_pid" "$side exit" || { show_log "$TMP/$side-exit.log"; exit 1; }
  if [ "$side" = paid ]; then
    client_extra=(--keystore "$TMP/client.json" --channel "$CHANNEL" --ledger "$DVPN_LEDGER"
                  --payee "$PROVIDER_ADDR")
  fi
  # --max-reconnects 0: a lost tunnel ends the client, so a paid session that broke off shows
  # as a failed run instead of a silent reconnect.
  "$CLIENT_BIN" --provider "127.0.0.1:$exit_port" --provider-key "$pub" \
    --socks 127.0.0.1:0 --socks-port-file "$TMP/$side-client.port" --max-reconnects 0 \
    ${client_extra[@]+"${client_extra[@]}"} ${CLIENT_FLAGS[@]+"${CLIENT_FLAGS[@]}"} \
    >"$TMP/$side-client.log" 2>&1 &
  client_pid=$!; PIDS+=("$client_pid")
  wait_file "$TMP/$side-client.port" "$client_pid" "$side client" ||
    { show_log "$TMP/$side-client.log"; show_log "$TMP/$side-exit.log"; exit 1; }
  client_port=$(tr -dc '0-9' <"$TMP/$side-client.port")
  wait_port "$client_port" "$client_pid" "$side client" ||
    { show_log "$TMP/$side-client.log"; exit 1; }
  SOCKS_PORT[$side]=$client_port
  SIDE_PIDS[$side]="$exit_pid $client_pid"
  log "$side: exit 127.0.0.1:$exit_port (pid $exit_pid), client SOCKS5" \
      "127.0.0.1:$client_port (pid $client_pid)"
}

start_side free
start_side paid --price-per-mb "$PRICE" --ledger "$DVPN_LEDGER" --keystore "$TMP/provider.json" \
  --promise-db "$TMP/promises.db" ${EXIT_FLAGS[@]+"${EXIT_FLAGS[@]}"}

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

bench_once() {  # SIDE ROUND
  local side=$1 round=$2
  local out="$TMP/run.$side.$round" rc=0 t0 t1 line load
  local -a pids
  read -r -a pids <<<"${SIDE_PIDS[$side]}"
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(cpu_ticks "${pids[@]}")
  # In the background so that a signal to this script runs the EXIT trap at once.
  timeout "$RUN_TIMEOUT" "$BENCH" --socks "127.0.0.1:${SOCKS_PORT[$side]}" --bytes "$BYTES" \
    --pings "$PINGS" --conns "$CONNS" --label "$side" >"$out" 2>&1 &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  t1=$(cpu_ticks "${pids[@]}")
  line=$(grep '^RESULT ' "$out" || true)
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    local why="exit $rc"
    [ "$rc" = 124 ] && why+=", timeout after ${RUN_TIMEOUT}s"
    echo "run_payments_compare: round $round, $side FAILED ($why):" >&2
    tail -n 5 "$out" >&2
    FAILED=1
    return 0
  fi
  # proxy_cpu_s: CPU seconds of the side's exit + client over the whole run.
  line+=" proxy_cpu_s=$(awk -v d=$((t1 - t0)) -v hz="$HZ" 'BEGIN { printf "%.2f", d / hz }')"
  line+=" load1_before=$load"
  echo "round $round: $line"
  echo "$line" >>"$RESULTS"
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
python3 - "$RESULTS" <<'EOF'
import statistics, sys
fields = [("up_MBps", "higher"), ("down_MBps", "higher"), ("rtt_p50_us", "lower"),
          ("rtt_p99_us", "lower"), ("conn_p50_ms", "lower"), ("proxy_cpu_s", "lower")]
runs = {}
for line in open(sys.argv[1]):
    kv = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
    runs.setdefault(kv.get("label", "?"), []).append(kv)
def med(side, f):
    vals = [float(r[f]) for r in runs.get(side, []) if r.get(f, "NA") not in ("NA", "")]
    return statistics.median(vals) if vals else None
def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}"
def ratio(f):
    a, b = med("paid", f), med("free", f)
    return None if a is None or not b else a / b
print()
print("medians (n = runs per row)")
print(f"{'':20}{'n':>3}" + "".join(f"{f:>13}" for f, _ in fields))
for side, name in (("free", "payments off"), ("paid", "payments on")):
    if side in runs:
        print(f"{name:20}{len(runs[side]):>3}" +
              "".join(f"{fmt(med(side, f)):>13}" for f, _ in fields))
if "free" in runs and "paid" in runs:
    print(f"{'ratio paid/free':23}" + "".join(
        f"{'-' if ratio(f) is None else format(ratio(f), '.3f'):>13}" for f, _ in fields))
    print(f"{'(better is)':23}" + "".join(f"{b:>13}" for _, b in fields))
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
session_line=$(grep -o 'session over: metered [0-9]* bytes, accepted [0-9.]*' \
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
if not metered or not settled or not balance:
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
