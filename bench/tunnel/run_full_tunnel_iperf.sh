#!/usr/bin/env bash
# run_full_tunnel_iperf.sh -- one TCP flow each way through this project's full tunnel (paid),
# measured by iperf3 between the "user" and "internet" namespaces of a three-namespace topology
# this script creates (user <-> internet <-> provider, as tests/support/topology builds it).
# The real dvpn-ledger runs in "internet" on its own address, dvpn-node (full_tunnel = true) in
# "provider", dvpn-client --full-tunnel in "user". A first look for issue 17, not yet the
# side-by-side benchmark against wireguard-go and OpenVPN (../shared/bench/tun_peers.sh).
#
# Usage: bench/tunnel/run_full_tunnel_iperf.sh [--build DIR] [--time S] [--transport auto|tcp]
#          [--window BYTES] [--interval BYTES]
# --window / --interval set the seller's [payments] credit_window_bytes / invoice_interval_bytes
# (defaults: the node's own).
# Needs root, iproute2, nftables, iperf3. Everything lives in namespaces named fti<pid>-*, which
# are deleted at the end (also on failure); processes are stopped by PID. The setup is shared
# with run_full_tunnel_compare.sh (full_tunnel_lib.sh).
set -u -o pipefail

BUILD=build
TIME=5
TRANSPORT=auto
PAYMENTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --time) TIME=$2; shift 2 ;;
    --transport) TRANSPORT=$2; shift 2 ;;
    --window) PAYMENTS="$PAYMENTS
credit_window_bytes = $2"; shift 2 ;;
    --interval) PAYMENTS="$PAYMENTS
invoice_interval_bytes = $2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/../.." || exit 2
BIN=$(realpath "$BUILD")/bin
for b in dvpn-ledger dvpn-node dvpn-client dvpnctl; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (build first)" >&2; exit 2; }
done
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 2; }

source bench/tunnel/full_tunnel_lib.sh
FT_BIN=$BIN
ft_init fti
ft_topology
ft_start_ledger
CLIENT=$(ft_new_account client)
ft_new_account seller > /dev/null
[ -n "$PAYMENTS" ] && PAYMENTS="[payments]$PAYMENTS"
ft_node_config "$FT_H/seller.toml" seller "$FT_H/seller" 0.01 "$PAYMENTS"
ft_start_node "$FT_H/seller.toml" "$FT_H/seller.log" ||
  { echo "dvpn-node did not start:"; tail -20 "$FT_H/seller.log"; exit 1; } >&2
ft_ctl --keystore "$FT_H/operator.json" deposit --to "$CLIENT" 1000 > /dev/null
ft_start_client client "$FT_H/client.log" "$FT_H/control.sock" 0.1 \
  --full-tunnel-transport "$TRANSPORT" ||
  { echo "dvpn-client did not connect"; tail -20 "$FT_H/client.log"; exit 1; }
echo "transport: $(ft_transport "$FT_H/control.sock")"
for dir in up down; do
  ft_spawn iperf3 "$FT_H/iperf-server.log" ip netns exec "$FT_I" iperf3 -s -B $FT_SERVER -1
  server=$FT_LAST_PID
  ft_wait_until 20 "$server" ip netns exec "$FT_I" ss -ltn "sport = :5201" -H ||
    { echo "iperf3 server did not start" >&2; exit 1; }
  flags=""; [ $dir = down ] && flags="-R"
  out=$(timeout $((TIME + 20)) ip netns exec "$FT_U" iperf3 -c $FT_SERVER -t "$TIME" $flags -J)
  python3 -c 'import json,sys; e=json.loads(sys.argv[2])["end"]; r=e["sum_received"]["bits_per_second"]/1e6; s=e["sum_sent"]; print("%-4s %8.0f Mbit/s  retransmits %s" % (sys.argv[1], r, s.get("retransmits", "-")))' "$dir" "$out"
  wait $server 2>/dev/null
done
