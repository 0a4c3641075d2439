#!/usr/bin/env bash
# run_full_tunnel_compare.sh -- issue 17's side-by-side benchmark: this project's full tunnel
# (paid, "free", offloads forced off) beside wireguard-go (with wg) and OpenVPN (AES-256-GCM,
# CHACHA20-POLY1305), all in the same three namespaces, alternating within each round.
#
#   user 172.31.1.2 --veth-- internet (172.31.3.1: iperf3 server) --veth-- provider 172.31.2.2
#
# Every system's client end runs in "user", its server end in "provider" (dvpn-node, the
# wireguard-go and openvpn servers), and the iperf3 server in "internet" is reached THROUGH the
# tunnel: the provider forwards the tunnel's packets to "internet" and masquerades them (the
# dvpn exit with its own nftables table; for the peers a table ftc_peers made here). The
# dvpn-client routes everything through its TUN device (the ledger and the exit stay outside);
# for a peer only 172.31.3.1/32 is routed into its tunnel, and only while it is measured.
#
# Per system and round: ping 172.31.3.1 at idle (--pings, 0.01 s apart); iperf3 one TCP flow
# up (user -> internet) with the CPU time of the tunnel's processes (utime+stime from
# /proc/PID/stat: dvpn-client + dvpn-node, both wireguard-go, both openvpn) and of the whole
# machine (/proc/stat: everything, including iperf3 and the kernel), per GB moved (10^9 bytes
# iperf3 counted at the receiver); one flow down (-R) with ping every 0.02 s during it ("under
# load"); four flows up (-P 4); UDP up at --udp-rate with 1300-byte datagrams (fits every
# tunnel's MTU; Mbit/s received and loss %). The systems alternate in each round (paid, free,
# offloads off, wireguard-go, openvpn-aes, openvpn-chacha); the table gives the median over the
# rounds and the min-max, then the issue's goals with the numbers.
#
# "free": dvpn-node refuses a zero price ("must be above zero (a seller's offer has a price)",
# marketplace CheckSellerPrice), and no full-tunnel exit serves free sessions (dvpn-tunnel-exit
# has no full tunnel). So dvpn-free is the cheapest a seller can be: price_per_mb = "0.000001"
# (1 micro-credit, the smallest amount) with the largest invoice interval (64,000,000 bytes) and
# credit window (256,000,000 bytes) the protocol allows, so the payment work (invoices, signed
# promises, the promise store) happens 64 times less often than with the defaults dvpn-paid uses
# (0.01 credits per MB, an invoice and a promise per 1,000,000 bytes, a 2,000,000-byte window).
#
# Usage: bench/tunnel/run_full_tunnel_compare.sh [--rounds N] [--time S] [--build DIR]
#          [--out FILE.json] [--out-dir DIR] [--perf] [--udp-rate R] [--pings N]
#          [--systems LIST] [--deadline S] [--no-install] [--keep DIR]
#   --rounds 3, --time 10 (s per iperf3 test), --build build (DIR/bin/dvpn-*), --out: the
#   machine-readable result (JSON; default OUT_DIR/results.json), --out-dir: the table, the raw
#   TSV and the perf reports (default /tmp/full_tunnel_compare.<date>), --perf: one more
#   dvpn-paid one-flow-up test under `perf record -g` of dvpn-client and dvpn-node, reports
#   (perf report --stdio --no-children --percent-limit 2, and the share per library) into
#   OUT_DIR, --udp-rate 2G,
#   --pings 100, --systems (comma list, default all six), --deadline (DEADLINE_S, 3600: the
#   whole script's budget; a system that no longer fits is SKIPPED), --no-install (do not
#   apt-get missing packages), --keep DIR (copy the logs there at the end).
# Needs root. Missing iperf3 / wireguard-go / wireguard-tools / openvpn / openssl / linux-perf
# are installed with apt-get (unless --no-install); a peer whose package is still missing is
# reported as "SKIPPED: why", never measured otherwise. Everything lives in namespaces named
# ftc<pid>-*; processes are stopped by PID; the namespaces, the nftables table, the temp dir and
# the /var/run/wireguard sockets made here are removed at the end, also on failure or Ctrl-C.
set -u -o pipefail

ROUNDS=3
TIME=10
BUILD=build
OUT=""
OUT_DIR=""
PERF=0
UDP_RATE=2G
PINGS=100
SYSTEMS=dvpn-paid,dvpn-free,dvpn-paid-offloads-off,wireguard-go,openvpn-aes,openvpn-chacha
DEADLINE_S=${DEADLINE_S:-3600}
INSTALL=1
FT_KEEP=""
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --time) TIME=${2:?}; shift 2 ;;
    --build) BUILD=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --out-dir) OUT_DIR=${2:?}; shift 2 ;;
    --perf) PERF=1; shift ;;
    --udp-rate) UDP_RATE=${2:?}; shift 2 ;;
    --pings) PINGS=${2:?}; shift 2 ;;
    --systems) SYSTEMS=${2:?}; shift 2 ;;
    --deadline) DEADLINE_S=${2:?}; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --keep) FT_KEEP=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in ROUNDS TIME PINGS DEADLINE_S; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "${v,,} must be a positive integer" >&2; exit 2; }
done
[ "$TIME" -ge 3 ] || { echo "--time must be at least 3" >&2; exit 2; }
START_S=$SECONDS
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
source bench/tunnel/full_tunnel_lib.sh
FT_BIN=$(realpath "$BUILD")/bin
for b in dvpn-ledger dvpn-node dvpn-client dvpnctl; do
  [ -x "$FT_BIN/$b" ] || { echo "missing $FT_BIN/$b (build first)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 2; }
[ -c /dev/net/tun ] || { echo "no /dev/net/tun" >&2; exit 2; }
[ -n "$OUT_DIR" ] || OUT_DIR=/tmp/full_tunnel_compare.$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(realpath "$OUT_DIR")
[ -n "$OUT" ] || OUT=$OUT_DIR/results.json
RAW=$OUT_DIR/raw.tsv
: > "$RAW"
remaining() { echo $((DEADLINE_S - (SECONDS - START_S))); }

# ---- tools: install what is missing (root, apt-get), else say which peer is skipped ------------
declare -A PKG=([iperf3]=iperf3 [wg]=wireguard-tools [wireguard-go]=wireguard-go
  [openvpn]=openvpn [openssl]=openssl [perf]=linux-perf [nft]=nftables [ping]=iputils-ping)
want=(iperf3 wg wireguard-go openvpn openssl nft ping)
[ $PERF = 1 ] && want+=(perf)
missing=()
for c in "${want[@]}"; do command -v "$c" > /dev/null || missing+=("${PKG[$c]}"); done
if [ ${#missing[@]} -gt 0 ] && [ $INSTALL = 1 ] && command -v apt-get > /dev/null; then
  installable=()
  for p in "${missing[@]}"; do
    cand=$(apt-cache policy "$p" 2> /dev/null | awk '/Candidate:/ {print $2}')
    if [ -n "$cand" ] && [ "$cand" != "(none)" ]; then installable+=("$p"); else
      ft_log "package $p has no install candidate (apt-cache policy)"; fi
  done
  if [ ${#installable[@]} -gt 0 ]; then
    ft_log "installing: ${installable[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends \
      "${installable[@]}" > "$OUT_DIR/apt-get.log" 2>&1 || ft_log "apt-get install failed (see $OUT_DIR/apt-get.log)"
  fi
fi
for c in iperf3 nft ping python3; do
  command -v "$c" > /dev/null || { echo "needs $c (${PKG[$c]:-$c})" >&2; exit 2; }
done
declare -A SKIP=()  # system -> why it cannot run at all
command -v wireguard-go > /dev/null || SKIP[wireguard-go]="wireguard-go is not installed (Debian package wireguard-go)"
command -v wg > /dev/null || SKIP[wireguard-go]="wg is not installed (Debian package wireguard-tools)"
for s in openvpn-aes openvpn-chacha; do
  command -v openvpn > /dev/null || SKIP[$s]="openvpn is not installed (Debian package openvpn)"
  command -v openssl > /dev/null || SKIP[$s]="openssl is not installed (Debian package openssl)"
done
if ! "$FT_BIN/dvpn-client" --help 2>&1 | grep -q -- '--packet-offloads'; then
  SKIP[dvpn-paid-offloads-off]="this build has no --packet-offloads (dvpn-client --help)"
fi
CLK_TCK=$(getconf CLK_TCK)

# ---- perf: usable? which event? -----------------------------------------------------------------
PERF_NOTE=""
PERF_EVENT=""
if [ $PERF = 1 ]; then
  if ! command -v perf > /dev/null; then
    PERF_NOTE="perf is not installed (Debian package linux-perf): no profile"
  else
    pst=$(timeout 20 perf stat -e instructions true 2>&1); prc=$?
    if [ $prc = 0 ] && ! grep -q "not supported\|not counted" <<< "$pst"; then
      PERF_EVENT=cycles
    elif timeout 20 perf record -q -e cpu-clock -o "$OUT_DIR/.perf-probe" -- true > /dev/null 2>&1; then
      PERF_EVENT=cpu-clock
      PERF_NOTE="hardware counters unusable here ('perf stat -e instructions true': not supported); sampling with the software event cpu-clock"
    else
      PERF_NOTE="perf unusable here ('perf stat -e instructions true' and 'perf record -e cpu-clock' fail): no profile"
    fi
    rm -f "$OUT_DIR/.perf-probe"
  fi
  [ -n "$PERF_NOTE" ] && ft_log "perf: $PERF_NOTE"
fi

ft_log "host: $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); rounds $ROUNDS, $TIME s per test; results in $OUT_DIR"

# ---- the topology, the ledger, the peers' NAT ---------------------------------------------------
ft_init ftc
ft_topology
ft_start_ledger
ft_new_account seller > /dev/null || { echo "dvpnctl key new failed" >&2; exit 1; }
ip netns exec "$FT_P" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$FT_P" nft -f - << EOF || { echo "nft: cannot make the peers' NAT table" >&2; exit 1; }
table ip ftc_peers {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr { 10.202.0.0/24, 10.203.0.0/24, 10.204.0.0/24 } oifname "$FT_VP" masquerade
  }
}
EOF
FT_CLEANUP_HOOKS+=("ip netns exec '$FT_P' nft delete table ip ftc_peers")

# ---- measuring ------------------------------------------------------------------------------------
# record ROUND SYSTEM KEY VALUE: one raw figure (or status) into RAW.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RAW"; }

# run_wait OUTFILE CMD...: CMD in the background (so Ctrl-C reaches the trap at once), waited for.
run_wait() {
  local outf=$1 pid rc
  shift
  "$@" > "$outf" 2>&1 &
  pid=$!
  FT_PIDS+=("$pid:timeout")
  wait "$pid"; rc=$?
  FT_PIDS=("${FT_PIDS[@]:0:${#FT_PIDS[@]}-1}")
  return $rc
}

cpu_ticks() {  # cpu_ticks PID...: their utime+stime summed (ticks; all threads)
  local p t=0 v
  for p in "$@"; do
    v=$(sed 's/^.*) //' "/proc/$p/stat" 2> /dev/null | awk '{print $12 + $13}')
    t=$((t + ${v:-0}))
  done
  echo $t
}
machine_ticks() {  # busy and kernel (system+irq+softirq) ticks of the whole machine
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $4 + $7 + $8}' /proc/stat
}

# ping_stats FILE: "p50 p90 loss%" of the replies in a ping output.
ping_stats() {
  awk -F'time=' '/ time=/ { split($2, a, " "); print a[1] }' "$1" | sort -g | awk -v sent="$2" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "NA NA 100"; exit }
      i50 = int((50 * NR + 99) / 100); i90 = int((90 * NR + 99) / 100)
      printf "%.3f %.3f %.1f\n", v[i50], v[i90], (sent - NR) * 100 / sent
    }'
}

# iperf_start: an iperf3 server for one test in "internet" on 172.31.3.1; sets IPERF_SERVER.
iperf_start() {
  ft_spawn iperf3 "$FT_H/iperf-server.log" ip netns exec "$FT_I" iperf3 -s -1 -B $FT_SERVER
  IPERF_SERVER=$FT_LAST_PID
  ft_wait_until 10 "$IPERF_SERVER" bash -c "ip netns exec '$FT_I' ss -Hltn 'sport = :5201' | grep -q ."
}

# iperf_json FILE FIELDS: prints the iperf3 JSON's figures: mbps bytes retransmits loss%.
iperf_json() {
  python3 - "$1" << 'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    e = d["end"]; r = e["sum_received"]; s = e.get("sum_sent", {})
    print("%.1f %d %s %s" % (r["bits_per_second"] / 1e6, r["bytes"], s.get("retransmits", "NA"),
                             ("%.2f" % r["lost_percent"]) if "lost_percent" in r else "NA"))
except Exception as ex:  # a failed test: iperf3 wrote {"error": ...}
    print("NA 0 NA NA")
PY
}

# iperf_test NAME ROUND SYSTEM ARGS...: one iperf3 client run from "user" (JSON into
# FT_H/SYSTEM-ROUND-NAME.json); sets MBPS BYTES RETR LOSS. Returns 1 when it failed.
iperf_test() {
  local name=$1 round=$2 sys=$3 base=${#FT_PIDS[@]} f
  shift 3
  f=$FT_H/$sys-$round-$name.json
  iperf_start || { ft_stop_from "$base"; ft_log "$sys: iperf3 server did not start"; return 1; }
  run_wait "$f" timeout $((TIME + 25)) ip netns exec "$FT_U" iperf3 -c $FT_SERVER -t "$TIME" \
    --connect-timeout 5000 -J "$@"
  ft_stop_from "$base"
  read -r MBPS BYTES RETR LOSS <<< "$(iperf_json "$f")"
  if [ "$MBPS" = NA ]; then
    ft_log "$sys $name: iperf3 failed: $(grep -o '"error":.*' "$f" | head -1)"
    return 1
  fi
  return 0
}

# measure ROUND SYSTEM CPU_PIDS...: the five measurements; raw figures into RAW.
measure() {
  local round=$1 sys=$2 c0 c1 m0 m1 g base p50 p90 loss ppid n
  shift 2
  # idle ping
  run_wait "$FT_H/$sys-$round-ping-idle.txt" timeout 60 ip netns exec "$FT_U" \
    ping -n -c "$PINGS" -i 0.01 -W 1 $FT_SERVER
  read -r p50 p90 loss <<< "$(ping_stats "$FT_H/$sys-$round-ping-idle.txt" "$PINGS")"
  record "$round" "$sys" ping_idle_p50_ms "$p50"; record "$round" "$sys" ping_idle_p90_ms "$p90"
  record "$round" "$sys" ping_idle_loss_pct "$loss"
  # one flow up, with CPU time
  c0=$(cpu_ticks "$@"); m0=$(machine_ticks)
  if iperf_test up1 "$round" "$sys"; then
    c1=$(cpu_ticks "$@"); m1=$(machine_ticks)
    record "$round" "$sys" up1_mbps "$MBPS"; record "$round" "$sys" up1_retransmits "$RETR"
    g=$(python3 -c "print('%.3f' % ($BYTES / 1e9))")
    record "$round" "$sys" up1_gb "$g"
    if [ "$BYTES" -gt 0 ]; then
      python3 - "$round" "$sys" "$c0" "$c1" "$m0" "$m1" "$BYTES" "$CLK_TCK" >> "$RAW" << 'PY'
import sys
r, s, c0, c1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m0, m1 = [int(x) for x in sys.argv[5].split()], [int(x) for x in sys.argv[6].split()]
gb, hz = int(sys.argv[7]) / 1e9, int(sys.argv[8])
print("%s\t%s\tcpu_s_per_gb\t%.3f" % (r, s, (c1 - c0) / hz / gb))
print("%s\t%s\tmachine_cpu_s_per_gb\t%.3f" % (r, s, (m1[0] - m0[0]) / hz / gb))
print("%s\t%s\tmachine_kernel_s_per_gb\t%.3f" % (r, s, (m1[1] - m0[1]) / hz / gb))
PY
    fi
  fi
  # one flow down, ping under load during it
  base=${#FT_PIDS[@]}
  n=$(((TIME - 2) * 50)); [ $n -ge 10 ] || n=10
  timeout $((TIME + 20)) bash -c "sleep 1; exec ip netns exec '$FT_U' ping -n -c $n -i 0.02 -W 1 $FT_SERVER" \
    > "$FT_H/$sys-$round-ping-load.txt" 2>&1 &
  ppid=$!
  FT_PIDS+=("$ppid:timeout")
  iperf_test down1 "$round" "$sys" -R && { record "$round" "$sys" down1_mbps "$MBPS"; record "$round" "$sys" down1_retransmits "$RETR"; }
  wait "$ppid" 2> /dev/null
  ft_stop_from "$base"
  read -r p50 p90 loss <<< "$(ping_stats "$FT_H/$sys-$round-ping-load.txt" "$n")"
  record "$round" "$sys" ping_load_p50_ms "$p50"; record "$round" "$sys" ping_load_p90_ms "$p90"
  record "$round" "$sys" ping_load_loss_pct "$loss"
  # four flows up
  iperf_test up4 "$round" "$sys" -P 4 && record "$round" "$sys" up4_mbps "$MBPS"
  # UDP up at a high rate
  iperf_test udp "$round" "$sys" -u -b "$UDP_RATE" -l 1300 &&
    { record "$round" "$sys" udp_mbps "$MBPS"; record "$round" "$sys" udp_loss_pct "$LOSS"; }
  record "$round" "$sys" status ok
}

# reach_server: the iperf3 server answers a ping (through whatever tunnel is routed now).
reach_server() { ft_wait_until 10 "" ip netns exec "$FT_U" ping -n -c 1 -W 1 $FT_SERVER; }

# ---- this project ---------------------------------------------------------------------------------
# run_dvpn ROUND SYSTEM [perf]: a fresh client account and channel, dvpn-node with the variant's
# config, dvpn-client --full-tunnel, then measure (or the perf profile), then both stopped.
run_dvpn() {
  local round=$1 sys=$2 mode=${3:-measure} base=${#FT_PIDS[@]} who addr price maxp extra=""
  local cflags=() tr dev
  who=client-$sys-$round
  price=0.01; maxp=0.1
  FT_TUNNEL_EXTRA=""
  case $sys in
    dvpn-free) price=0.000001; maxp=0.000001
      extra=$'[payments]\ninvoice_interval_bytes = 64000000\ncredit_window_bytes = 256000000' ;;
    dvpn-paid-offloads-off) FT_TUNNEL_EXTRA='packet_offloads = "off"'; cflags=(--packet-offloads off) ;;
  esac
  extra+=$'\n[settlement]\nshutdown_timeout_ms = 3000\nshutdown_grace_ms = 1000'
  addr=$(ft_new_account "$who") || { record "$round" "$sys" status "FAILED: dvpnctl key new"; return 1; }
  ft_ctl --keystore "$FT_H/operator.json" deposit --to "$addr" 1000 > /dev/null ||
    { record "$round" "$sys" status "FAILED: deposit"; return 1; }
  ft_node_config "$FT_H/node-$sys-$round.toml" seller "$FT_H/node-$sys-$round" "$price" "$extra"
  if ! ft_start_node "$FT_H/node-$sys-$round.toml" "$FT_H/node-$sys-$round.log"; then
    ft_log "$sys: dvpn-node did not start:"; tail -5 "$FT_H/node-$sys-$round.log" >&2
    record "$round" "$sys" status "FAILED: dvpn-node did not start: $(tail -1 "$FT_H/node-$sys-$round.log" | cut -c1-160)"
    ft_stop_from "$base"; return 1
  fi
  if ! ft_start_client "$who" "$FT_H/client-$sys-$round.log" "$FT_H/c-$sys-$round.sock" "$maxp" "${cflags[@]}"; then
    ft_log "$sys: dvpn-client did not connect:"; tail -5 "$FT_H/client-$sys-$round.log" >&2
    record "$round" "$sys" status "FAILED: dvpn-client did not connect"
    ft_stop_from "$base"; return 1
  fi
  tr=$(ft_transport "$FT_H/c-$sys-$round.sock")
  dev=$(ip -n "$FT_U" route get $FT_SERVER 2> /dev/null | grep -o 'dev [^ ]*')
  ft_log "$sys round $round: transport ${tr:-?}, $FT_SERVER via ${dev:-?}"
  record "$round" "$sys" transport "${tr:-unknown}"
  if [ "$dev" = "dev $FT_VU" ] || ! reach_server; then
    record "$round" "$sys" status "FAILED: the iperf3 server is not reached through the tunnel"
    ft_stop_from "$base"; return 1
  fi
  if [ "$mode" = perf ]; then
    profile "$FT_CLIENT_PID" "$FT_NODE_PID"
  else
    measure "$round" "$sys" "$FT_CLIENT_PID" "$FT_NODE_PID"
  fi
  ft_stop_from "$base"
}

# ---- wireguard-go -----------------------------------------------------------------------------------
WG_RUNDIR=/var/run/wireguard
WGS=ftw${FT_ID}s; WGC=ftw${FT_ID}c
if [ -z "${SKIP[wireguard-go]:-}" ]; then
  [ -d $WG_RUNDIR ] || { mkdir -m 0700 $WG_RUNDIR && FT_CLEANUP_HOOKS+=("rmdir $WG_RUNDIR"); }
  FT_CLEANUP_HOOKS=("rm -f $WG_RUNDIR/$WGS.sock $WG_RUNDIR/$WGC.sock" "${FT_CLEANUP_HOOKS[@]}")
  (umask 077; wg genkey > "$FT_H/wg-s.key" && wg genkey > "$FT_H/wg-c.key") ||
    SKIP[wireguard-go]="wg genkey failed"
fi
run_wg() {
  local round=$1 sys=wireguard-go base=${#FT_PIDS[@]} ps pc
  for s in $WG_RUNDIR/$WGS.sock $WG_RUNDIR/$WGC.sock; do
    [ -e "$s" ] && { record "$round" $sys status "FAILED: $s already exists"; return 1; }
  done
  export WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1
  ft_spawn wireguard-go "$FT_H/wg-s-$round.log" ip netns exec "$FT_P" wireguard-go -f "$WGS"; ps=$FT_LAST_PID
  ft_spawn wireguard-go "$FT_H/wg-c-$round.log" ip netns exec "$FT_U" wireguard-go -f "$WGC"; pc=$FT_LAST_PID
  if ! ft_wait_until 10 "$ps" test -S $WG_RUNDIR/$WGS.sock || ! ft_wait_until 10 "$pc" test -S $WG_RUNDIR/$WGC.sock; then
    record "$round" $sys status "FAILED: wireguard-go did not start: $(tail -1 "$FT_H/wg-s-$round.log")"
    ft_stop_from "$base"; return 1
  fi
  if ! { ip netns exec "$FT_P" wg set "$WGS" private-key "$FT_H/wg-s.key" listen-port 51820 \
           peer "$(wg pubkey < "$FT_H/wg-c.key")" allowed-ips 10.202.0.1/32 &&
         ip netns exec "$FT_U" wg set "$WGC" private-key "$FT_H/wg-c.key" \
           peer "$(wg pubkey < "$FT_H/wg-s.key")" endpoint $FT_NODE_ADDR:51820 allowed-ips $FT_SERVER/32 &&
         ip -n "$FT_P" addr add 10.202.0.2/24 dev "$WGS" && ip -n "$FT_P" link set "$WGS" up &&
         ip -n "$FT_U" addr add 10.202.0.1/24 dev "$WGC" && ip -n "$FT_U" link set "$WGC" up &&
         ip -n "$FT_U" route add $FT_SERVER/32 dev "$WGC"; }; then
    record "$round" $sys status "FAILED: configuring the wireguard-go interfaces"
    ft_stop_from "$base"; return 1
  fi
  if reach_server; then
    ft_log "$sys round $round: $(ip -n "$FT_U" -o link show "$WGC" | grep -o 'mtu [0-9]*'), $FT_SERVER via $WGC"
    measure "$round" $sys "$ps" "$pc"
  else
    record "$round" $sys status "FAILED: no traffic through the tunnel"
  fi
  ip -n "$FT_U" route del $FT_SERVER/32 dev "$WGC" 2> /dev/null
  ft_stop_from "$base"
}

# ---- OpenVPN: p2p TLS, two throwaway self-signed certificates pinned by --peer-fingerprint ---------
if [ -z "${SKIP[openvpn-aes]:-}" ]; then
  for s in s c; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=ftc-$s" -keyout "$FT_H/ovpn-$s.key" -out "$FT_H/ovpn-$s.crt" > /dev/null 2>&1
  done
  FP_S=$(openssl x509 -in "$FT_H/ovpn-s.crt" -noout -fingerprint -sha256 2> /dev/null | sed 's/.*=//')
  FP_C=$(openssl x509 -in "$FT_H/ovpn-c.crt" -noout -fingerprint -sha256 2> /dev/null | sed 's/.*=//')
  if [ -z "$FP_S" ] || [ -z "$FP_C" ]; then
    SKIP[openvpn-aes]="openssl could not make the certificates"; SKIP[openvpn-chacha]=${SKIP[openvpn-aes]}
  fi
fi
run_ovpn() {  # run_ovpn ROUND SYSTEM
  local round=$1 sys=$2 base=${#FT_PIDS[@]} cipher net port tag ps pc neg
  case $sys in
    openvpn-aes) cipher=AES-256-GCM; net=10.203.0; port=1194; tag=a ;;
    *) cipher=CHACHA20-POLY1305; net=10.204.0; port=1195; tag=c ;;
  esac
  if ! openvpn --show-ciphers 2> /dev/null | grep -q "^$cipher "; then
    record "$round" "$sys" status "SKIPPED: this openvpn/openssl does not offer $cipher"; return 1
  fi
  local common=(--dev-type tun --proto udp --lport "$port" --rport "$port" --data-ciphers "$cipher"
    --verb 3 --ping 10 --ping-exit 120)
  ft_spawn openvpn "$FT_H/$sys-s-$round.log" ip netns exec "$FT_P" openvpn "${common[@]}" \
    --dev "fto$tag${FT_ID}s" --local $FT_NODE_ADDR --remote $FT_USER_ADDR --ifconfig "$net.2" "$net.1" \
    --tls-server --dh none --cert "$FT_H/ovpn-s.crt" --key "$FT_H/ovpn-s.key" --peer-fingerprint "$FP_C"
  ps=$FT_LAST_PID
  ft_spawn openvpn "$FT_H/$sys-c-$round.log" ip netns exec "$FT_U" openvpn "${common[@]}" \
    --dev "fto$tag${FT_ID}c" --local $FT_USER_ADDR --remote $FT_NODE_ADDR --ifconfig "$net.1" "$net.2" \
    --tls-client --cert "$FT_H/ovpn-c.crt" --key "$FT_H/ovpn-c.key" --peer-fingerprint "$FP_S"
  pc=$FT_LAST_PID
  if ! ft_wait_until 30 "$pc" grep -q 'Initialization Sequence Completed' "$FT_H/$sys-c-$round.log" ||
     ! ft_wait_until 30 "$ps" grep -q 'Initialization Sequence Completed' "$FT_H/$sys-s-$round.log"; then
    record "$round" "$sys" status "FAILED: OpenVPN did not finish initialising"
    ft_stop_from "$base"; return 1
  fi
  neg=$(grep -m1 -o "Data Channel: cipher '[^']*'" "$FT_H/$sys-c-$round.log")
  if ! grep -q "cipher '$cipher'" <<< "$neg"; then
    record "$round" "$sys" status "FAILED: negotiated '$neg' instead of $cipher"
    ft_stop_from "$base"; return 1
  fi
  ip -n "$FT_U" route add $FT_SERVER/32 dev "fto$tag${FT_ID}c"
  if reach_server; then
    ft_log "$sys round $round: $neg, $FT_SERVER via fto$tag${FT_ID}c"
    measure "$round" "$sys" "$ps" "$pc"
  else
    record "$round" "$sys" status "FAILED: no traffic through the tunnel"
  fi
  ip -n "$FT_U" route del $FT_SERVER/32 2> /dev/null
  ft_stop_from "$base"
}

# ---- perf profile of dvpn-client and dvpn-node over one extra one-flow-up test ------------------
profile() {  # profile CLIENT_PID NODE_PID
  local base=${#FT_PIDS[@]} pids=("$1" "$2") names=(dvpn-client dvpn-node) i
  for i in 0 1; do
    ft_spawn perf "$FT_H/perf-${names[i]}.log" perf record -g -e "$PERF_EVENT" -p "${pids[i]}" \
      -o "$FT_H/perf-${names[i]}.data" -- sleep $((TIME + 2))
  done
  sleep 0.5
  iperf_test perf-up1 perf dvpn-paid && ft_log "perf run: one flow up $MBPS Mbit/s"
  for i in 0 1; do
    ft_wait_until $((TIME + 20)) "" bash -c "! kill -0 ${FT_PIDS[base + i]%%:*} 2>/dev/null"
  done
  ft_stop_from "$base"
  for i in 0 1; do
    timeout 300 perf report -i "$FT_H/perf-${names[i]}.data" --stdio --no-children \
      --percent-limit 2 > "$OUT_DIR/perf-${names[i]}.txt" 2> "$FT_H/perf-report-${names[i]}.log" ||
      ft_log "perf report of ${names[i]} failed: $(tail -1 "$FT_H/perf-report-${names[i]}.log")"
    timeout 300 perf report -i "$FT_H/perf-${names[i]}.data" --stdio --no-children --sort dso \
      -g none > "$OUT_DIR/perf-${names[i]}-dso.txt" 2> /dev/null
    ft_log "perf: $OUT_DIR/perf-${names[i]}.txt (top symbols), perf-${names[i]}-dso.txt (per library)"
  done
}

# ---- the rounds -------------------------------------------------------------------------------------
IFS=, read -r -a SYS_LIST <<< "$SYSTEMS"
need=$((4 * TIME + 60))
for ((r = 1; r <= ROUNDS; r++)); do
  for sys in "${SYS_LIST[@]}"; do
    if [ -n "${SKIP[$sys]:-}" ]; then record "$r" "$sys" status "SKIPPED: ${SKIP[$sys]}"; continue; fi
    if [ "$(remaining)" -lt $need ]; then
      record "$r" "$sys" status "SKIPPED: the script's budget (DEADLINE_S=$DEADLINE_S s) is spent"; continue
    fi
    ft_log "round $r/$ROUNDS: $sys"
    case $sys in
      dvpn-*) run_dvpn "$r" "$sys" ;;
      wireguard-go) run_wg "$r" ;;
      openvpn-aes|openvpn-chacha) run_ovpn "$r" "$sys" ;;
      *) record "$r" "$sys" status "SKIPPED: unknown system" ;;
    esac
  done
done
if [ $PERF = 1 ]; then
  if [ -n "$PERF_EVENT" ] && [ "$(remaining)" -ge $((TIME + 60)) ]; then
    ft_log "perf: one more dvpn-paid one-flow-up test under perf record -g -e $PERF_EVENT"
    run_dvpn perf dvpn-paid perf
  elif [ -n "$PERF_EVENT" ]; then
    PERF_NOTE="no profile: the script's budget is spent"
  fi
fi

# ---- the table ----------------------------------------------------------------------------------
META=$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" nproc "$(nproc)" kernel "$(uname -r)" \
  cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
  repo_head "$(git -C "$REPO" rev-parse --short HEAD 2> /dev/null)" rounds "$ROUNDS" time_s "$TIME" \
  udp_rate "$UDP_RATE" pings "$PINGS" perf "$PERF_NOTE" \
  iperf3 "$(iperf3 --version 2> /dev/null | head -1)" \
  wireguard_go "$(wireguard-go --version 2> /dev/null | head -1)" \
  openvpn "$(openvpn --version 2> /dev/null | head -1 | cut -d' ' -f1-2)" \
  free "dvpn-free: price_per_mb 0.000001 (1 micro-credit, the lowest; zero is refused), invoice_interval_bytes 64000000, credit_window_bytes 256000000 (the largest); dvpn-paid: 0.01 per MB, defaults (1000000, 2000000)")
python3 "$REPO/bench/tunnel/full_tunnel_compare_report.py" "$RAW" "$OUT" "$META" | tee "$OUT_DIR/table.txt"
ft_log "done in $((SECONDS - START_S)) s; raw figures $RAW, JSON $OUT"
