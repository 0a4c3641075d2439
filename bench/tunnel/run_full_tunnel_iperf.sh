#!/usr/bin/env bash
# run_full_tunnel_iperf.sh -- one TCP flow each way through this project's full tunnel (paid),
# measured by iperf3 between the "user" and "internet" namespaces of a three-namespace topology
# this script creates (user <-> internet <-> provider, as tests/support/topology builds it).
# The real dvpn-ledger runs in "internet" on its own address, dvpn-node (full_tunnel = true) in
# "provider", dvpn-client --full-tunnel in "user". A first look for issue 17, not yet the
# side-by-side benchmark against wireguard-go and OpenVPN (../shared/bench/tun_peers.sh).
#
# Usage: bench/tunnel/run_full_tunnel_iperf.sh [--build DIR] [--time S] [--transport auto|tcp]
# Needs root, iproute2, nftables, iperf3. Everything lives in namespaces named fti<pid>-*, which
# are deleted at the end (also on failure); processes are stopped by PID.
set -u -o pipefail

BUILD=build
TIME=5
TRANSPORT=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --time) TIME=$2; shift 2 ;;
    --transport) TRANSPORT=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/../.."
BIN=$(realpath "$BUILD")/bin
for b in dvpn-ledger dvpn-node dvpn-client dvpnctl; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (build first)" >&2; exit 2; }
done
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 2; }

ID=$$
U=fti$ID-u; P=fti$ID-p; I=fti$ID-i
H=$(mktemp -d /tmp/fti.XXXXXX)
PIDS=()
cleanup() {
  for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do kill -TERM "${PIDS[k]}" 2>/dev/null; done
  for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do
    for _ in $(seq 50); do kill -0 "${PIDS[k]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${PIDS[k]}" 2>/dev/null
  done
  for n in $U $P $I; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$H"
}
trap cleanup EXIT
wait_for() {  # wait_for WHAT COMMAND...: up to 20 s
  local what=$1; shift
  for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what" >&2; exit 1
}

for n in $U $P $I; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add fti${ID}u type veth peer name fti${ID}iu
ip link add fti${ID}p type veth peer name fti${ID}ip
ip link set fti${ID}u netns $U; ip link set fti${ID}iu netns $I
ip link set fti${ID}p netns $P; ip link set fti${ID}ip netns $I
ip -n $U addr add 172.31.1.2/24 dev fti${ID}u
ip -n $I addr add 172.31.1.1/24 dev fti${ID}iu
ip -n $P addr add 172.31.2.2/24 dev fti${ID}p
ip -n $I addr add 172.31.2.1/24 dev fti${ID}ip
ip -n $I addr add 172.31.3.1/32 dev lo   # the internet's server
ip -n $I addr add 172.31.3.200/32 dev lo # the ledger (kept outside the tunnel by the client)
for l in "$U fti${ID}u" "$I fti${ID}iu" "$P fti${ID}p" "$I fti${ID}ip"; do
  set -- $l; ip -n "$1" link set "$2" up
done
ip -n $U route add default via 172.31.1.1
ip -n $P route add default via 172.31.2.1
ip netns exec $I sysctl -qw net.ipv4.ip_forward=1

export DVPN_PASSPHRASE=bench
ctl() { ip netns exec $U "$BIN/dvpnctl" --kdf-cost interactive "$@"; }
for who in operator client seller; do ctl --keystore "$H/$who.json" key new >/dev/null; done
CLIENT=$(ctl --keystore "$H/client.json" --json key show | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
ip netns exec $I "$BIN/dvpn-ledger" --db "$H/ledger.db" --listen 172.31.3.200:7400 \
  --port-file "$H/ledger.port" --operator-keystore "$H/operator.json" --challenge-period 60 \
  > "$H/ledger.log" 2>&1 &
PIDS+=($!)
wait_for "dvpn-ledger did not start" test -s "$H/ledger.port"
export DVPN_LEDGER=172.31.3.200:7400
cat > "$H/seller.toml" <<EOF
[node]
ledger = "172.31.3.200:7400"
keystore = "$H/seller.json"
data_dir = "$H/seller"
[gossip]
listen = "172.31.2.2:7601"
round_ms = 200
[offer]
price_per_mb = "0.01"
region = "local"
[tunnel]
listen = "172.31.2.2:7443"
full_tunnel = true
allow = ["172.31.3.1/32"]
[control]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
EOF
ip netns exec $P "$BIN/dvpn-node" --config "$H/seller.toml" > "$H/seller.log" 2>&1 &
PIDS+=($!)
wait_for "dvpn-node did not start (see its log)" grep -q "full-tunnel mode on" "$H/seller.log"
ctl --keystore "$H/operator.json" deposit --to "$CLIENT" 1000 >/dev/null
ip netns exec $U "$BIN/dvpn-client" --keystore "$H/client.json" --ledger 172.31.3.200:7400 \
  --bootstrap 172.31.2.2:7601 --max-price-per-mb 0.1 --open-deposit 500 \
  --socks 127.0.0.1:0 --control "unix:$H/control.sock" --full-tunnel \
  --full-tunnel-transport "$TRANSPORT" > "$H/client.log" 2>&1 &
PIDS+=($!)
wait_for "dvpn-client did not start" ctl status --client "unix:$H/control.sock"
connected=0
for _ in 1 2 3; do
  ctl connect --client "unix:$H/control.sock" --full-tunnel --wait 20 >/dev/null && { connected=1; break; }
done
[ $connected = 1 ] || { echo "dvpn-client did not connect"; tail -20 "$H/client.log"; exit 1; }
sleep 2  # the transport settles on UDP after the first keepalive answer
echo "transport: $(ctl status --client "unix:$H/control.sock" | awk '/^transport:/ {print $2}')"
for dir in up down; do
  ip netns exec $I iperf3 -s -B 172.31.3.1 -1 > "$H/iperf-server.log" 2>&1 &
  server=$!
  PIDS+=($server)
  wait_for "iperf3 server did not start" ip netns exec $I ss -ltn "sport = :5201" -H
  flags=""; [ $dir = down ] && flags="-R"
  out=$(timeout $((TIME + 20)) ip netns exec $U iperf3 -c 172.31.3.1 -t "$TIME" $flags -J)
  python3 -c 'import json,sys; e=json.loads(sys.argv[2])["end"]; r=e["sum_received"]["bits_per_second"]/1e6; s=e["sum_sent"]; print("%-4s %8.0f Mbit/s  retransmits %s" % (sys.argv[1], r, s.get("retransmits", "-")))' "$dir" "$out"
  wait $server 2>/dev/null
done
