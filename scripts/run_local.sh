#!/usr/bin/env bash
# The main job: a whole dVPN network on one machine, on loopback, with the embedded SQLite
# ledger. Builds what is missing, then starts:
#   - dvpn-ledger (SQLite file in $DVPN_HOME),
#   - three sellers, dvpn-node --config with different prices (0.08, 0.05, 0.12 credits per MB),
#     gossiping their signed offers (2 and 3 bootstrap to 1),
#   - a client: the operator funds its wallet (dvpnctl deposit); dvpn-client learns the offers by
#     gossip (it dials seller 1), and on `dvpnctl connect` chooses the best offer (the cheapest,
#     0.05), opens an escrow channel to that seller and serves SOCKS5.
# curl then fetches a file from a local web server through the SOCKS5 port; the script prints
# what was paid to whom and the balances, and leaves the dashboards and the SOCKS5 address for
# you to try until Ctrl-C stops everything (each seller settles what it holds first).
# --once: stop after the fetch and check that data passed and credits moved (the test suite runs
# this). State lives in $DVPN_HOME (default ./.dvpn-local). Everything binds 127.0.0.1; ports are
# $DVPN_BASE_PORT (default 7400) and up.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
HOME_DIR=${DVPN_HOME:-$ROOT/.dvpn-local}
BASE=${DVPN_BASE_PORT:-7400}
LEDGER_PORT=$BASE
SOCKS_PORT=$((BASE + 2))
CONTROL_PORT=$((BASE + 4))  # dvpn-client's ClientControl
WEB_PORT=$((BASE + 3))
PRICES=(0.08 0.05 0.12)  # sellers 1, 2, 3
FILE_BYTES=30000000
ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1

NEED=(dvpn-ledger dvpnctl dvpn-node dvpn-client)
missing=0
for b in "${NEED[@]}"; do [ -x "$BUILD_DIR/bin/$b" ] || missing=1; done
if [ "$missing" = 1 ]; then
  bash scripts/install_deps.sh
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${NEED[@]}"
fi
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
BIN=$BUILD_DIR/bin

rm -rf "$HOME_DIR" && mkdir -p "$HOME_DIR" && chmod 700 "$HOME_DIR"
export DVPN_LEDGER=127.0.0.1:$LEDGER_PORT
export DVPN_PASSPHRASE=${DVPN_PASSPHRASE:-local-demo-passphrase}
ctl() { "$BIN/dvpnctl" --kdf-cost interactive "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
seller_port() { echo $((BASE + 10 * $1 + $2)); }  # seller N: +0 tunnel, +1 gossip, +2 gRPC, +3 http

PIDS=()  # stopped in reverse order
cleanup() {
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
wait_for() {  # wait_for WHAT COMMAND...: up to 20 s for COMMAND to succeed
  local what=$1
  shift
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "$what" >&2
  exit 1
}

echo "== keys: operator, client, seller1..3 (keystores in $HOME_DIR)"
for who in operator client seller1 seller2 seller3; do
  ctl --keystore "$HOME_DIR/$who.json" key new >/dev/null
done
addr() { ctl --keystore "$HOME_DIR/$1.json" --json key show | json '["address"]'; }
CLIENT=$(addr client)

echo "== dvpn-ledger on $DVPN_LEDGER (SQLite file $HOME_DIR/ledger.db)"
"$BIN/dvpn-ledger" --db "$HOME_DIR/ledger.db" --listen "$DVPN_LEDGER" \
  --port-file "$HOME_DIR/ledger.port" --operator-keystore "$HOME_DIR/operator.json" \
  --challenge-period 60 > "$HOME_DIR/ledger.log" 2>&1 &
PIDS+=($!)
wait_for "dvpn-ledger did not start (see $HOME_DIR/ledger.log)" test -s "$HOME_DIR/ledger.port"

echo "== three sellers (dvpn-node --config), gossiping their offers"
for n in 1 2 3; do
  bootstrap=""
  [ "$n" != 1 ] && bootstrap="bootstrap = [\"127.0.0.1:$(seller_port 1 1)\"]"
  cat > "$HOME_DIR/seller$n.toml" <<EOF
# Seller $n of the local network (every key: docs/node.md).
[node]
ledger = "$DVPN_LEDGER"
keystore = "$HOME_DIR/seller$n.json"
data_dir = "$HOME_DIR/seller$n"

[gossip]
listen = "127.0.0.1:$(seller_port "$n" 1)"
$bootstrap
round_ms = 200
anti_entropy_ms = 2000

[offer]
price_per_mb = "${PRICES[n - 1]}"
region = "local"
capacity_mbps = 100
max_sessions = 16

[tunnel]
listen = "127.0.0.1:$(seller_port "$n" 0)"
# The local web server is on loopback, which exits refuse by default: allow its port only (the
# node's own ports stay refused whatever this says; docs/tunnel.md, "The exit's own host").
allow = ["127.0.0.1/32:$WEB_PORT"]

[settlement]
threshold = "0.5"
max_age_s = 30

[control]
grpc_listen = "127.0.0.1:$(seller_port "$n" 2)"
http_listen = "127.0.0.1:$(seller_port "$n" 3)"
EOF
  "$BIN/dvpn-node" --config "$HOME_DIR/seller$n.toml" > "$HOME_DIR/seller$n.log" 2>&1 &
  PIDS+=($!)
  wait_for "seller $n did not start (see $HOME_DIR/seller$n.log)" \
    curl -sf "http://127.0.0.1:$(seller_port "$n" 3)/api/status"
  echo "seller $n: $(addr "seller$n") sells at ${PRICES[n - 1]} credits/MB;" \
    "dashboard http://127.0.0.1:$(seller_port "$n" 3)/"
done
offers_known() {
  [ "$(curl -sf "http://127.0.0.1:$(seller_port 1 3)/api/status" | json '["gossip"]["offers"]')" = 3 ]
}
wait_for "the offers did not reach seller 1 (see $HOME_DIR/seller*.log)" offers_known
echo "seller 1's offer book holds all 3 offers:"
echo "\$ dvpnctl offers --node 127.0.0.1:$(seller_port 1 2)"
ctl offers --node "127.0.0.1:$(seller_port 1 2)" | tee "$HOME_DIR/offers.txt"
for p in "${PRICES[@]}"; do
  grep -q " ${p}0000 " "$HOME_DIR/offers.txt" || { echo "dvpnctl offers does not list $p" >&2; exit 1; }
done

echo
echo "== the client: the operator funds its wallet, then it connects through the best offer"
ctl --keystore "$HOME_DIR/operator.json" deposit --to "$CLIENT" 100 >/dev/null
echo "\$ dvpnctl deposit --to $CLIENT 100   (client balance: $(ctl --keystore "$HOME_DIR/client.json" --json balance | json '["balance"]'))"
"$BIN/dvpn-client" --keystore "$HOME_DIR/client.json" --ledger "$DVPN_LEDGER" \
  --bootstrap "127.0.0.1:$(seller_port 1 1)" --max-price-per-mb 0.1 --open-deposit 20 \
  --socks "127.0.0.1:$SOCKS_PORT" --socks-port-file "$HOME_DIR/socks.port" \
  --control "127.0.0.1:$CONTROL_PORT" --provider-stats "$HOME_DIR/provider-stats.db" \
  --session-cap 10 --daily-cap 15 --spend-file "$HOME_DIR/spend" \
  > "$HOME_DIR/client.log" 2>&1 &
PIDS+=($!)
echo "dvpn-client: a light gossip node (it only dials seller 1), ClientControl on 127.0.0.1:$CONTROL_PORT"
wait_for "dvpn-client did not start (see $HOME_DIR/client.log)" \
  ctl status --client "127.0.0.1:$CONTROL_PORT"
echo "\$ dvpnctl connect --client 127.0.0.1:$CONTROL_PORT"
for _ in 1 2 3; do  # the client's gossip node may need a moment to learn the offers
  ctl connect --client "127.0.0.1:$CONTROL_PORT" --wait 10 && break
  sleep 1
done
test -s "$HOME_DIR/socks.port" || { echo "dvpn-client did not connect (see $HOME_DIR/client.log)" >&2; exit 1; }
mkdir -p "$HOME_DIR/www"
head -c "$FILE_BYTES" /dev/urandom > "$HOME_DIR/www/file.bin"
python3 -m http.server "$WEB_PORT" --bind 127.0.0.1 --directory "$HOME_DIR/www" \
  > "$HOME_DIR/web.log" 2>&1 &
PIDS+=($!)
wait_for "the web server did not start" curl -sf -o /dev/null "http://127.0.0.1:$WEB_PORT/"
echo
echo "\$ curl --socks5-hostname 127.0.0.1:$SOCKS_PORT http://127.0.0.1:$WEB_PORT/file.bin"
curl -sS --max-time 60 --socks5-hostname "127.0.0.1:$SOCKS_PORT" \
  "http://127.0.0.1:$WEB_PORT/file.bin" -o "$HOME_DIR/fetched.bin" \
  -w 'fetched %{size_download} bytes in %{time_total} s through the tunnel\n'
cmp -s "$HOME_DIR/www/file.bin" "$HOME_DIR/fetched.bin" || { echo "the copy differs" >&2; exit 1; }
echo "the copy is identical"

# The chosen seller settles on its own once 0.5 credits are unsettled (its [settlement]
# threshold); wait for the ledger to show it.
settled() {  # settled N: seller N's settled micro-credits, from its dashboard
  curl -sf "http://127.0.0.1:$(seller_port "$1" 3)/api/earnings" | json '["settled_micro"]'
}
paid_seller() { for n in 1 2 3; do [ "$(settled "$n")" -gt 0 ] && echo "$n" && return 0; done; return 1; }
wait_for "no seller settled anything (see $HOME_DIR/seller*.log)" paid_seller
sleep 1  # the last promise of the transfer
echo
echo "== who was paid"
for n in 1 2 3; do
  earnings=$(curl -sf "http://127.0.0.1:$(seller_port "$n" 3)/api/earnings")
  printf 'seller %s (%s/MB): settled %s micro-credits, unsettled %s; ledger balance %s\n' "$n" \
    "${PRICES[n - 1]}" "$(echo "$earnings" | json '["settled_micro"]')" \
    "$(echo "$earnings" | json '["unsettled_micro"]')" \
    "$(ctl --keystore "$HOME_DIR/seller$n.json" --json balance | json '["balance"]')"
done
PAID=$(paid_seller)
echo "\$ dvpnctl earnings --node 127.0.0.1:$(seller_port "$PAID" 2)   (the chosen seller's node)"
ctl earnings --node "127.0.0.1:$(seller_port "$PAID" 2)"
echo "\$ dvpnctl status --client 127.0.0.1:$CONTROL_PORT"
ctl status --client "127.0.0.1:$CONTROL_PORT"
echo "client $CLIENT: balance $(ctl --keystore "$HOME_DIR/client.json" --json balance | json '["balance"]')," \
  "in escrow $(ctl --keystore "$HOME_DIR/client.json" --json balance | json '["escrowed"]')"

if [ "$ONCE" = 1 ]; then
  # The cheapest offer (seller 2, 0.05/MB) was chosen, and 30 MB at 0.05 moved about 1.5
  # credits to it once everything is settled at shutdown.
  echo
  echo "== stopping: every seller settles what it holds"
  for ((i = ${#PIDS[@]} - 1; i >= 1; i--)); do  # all but the ledger (PIDS[0])
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  PIDS=("${PIDS[0]}")
  for n in 1 2 3; do
    BAL[n]=$(ctl --keystore "$HOME_DIR/seller$n.json" --json balance | json '["balance_micro"]')
    echo "seller $n balance: ${BAL[n]} micro-credits"
  done
  if [ "${BAL[2]}" -lt 1500000 ] || [ "${BAL[2]}" -gt 1600000 ]; then
    echo "seller 2 was paid ${BAL[2]} micro-credits, expected about 1500000" >&2
    exit 1
  fi
  if [ "${BAL[1]}" != 0 ] || [ "${BAL[3]}" != 0 ]; then
    echo "a seller the client did not choose was paid" >&2
    exit 1
  fi
  echo "OK: data passed through the tunnel and 30 MB at 0.05/MB moved ${BAL[2]} micro-credits"
  exit 0
fi
echo
echo "Running. Try, in another shell:"
echo "  curl --socks5-hostname 127.0.0.1:$SOCKS_PORT http://127.0.0.1:$WEB_PORT/file.bin -o /dev/null"
for n in 1 2 3; do echo "  seller $n dashboard: http://127.0.0.1:$(seller_port "$n" 3)/"; done
echo "  $BIN/dvpnctl status --client 127.0.0.1:$CONTROL_PORT --watch 30    (live throughput and spending)"
echo "  $BIN/dvpnctl earnings --node 127.0.0.1:$(seller_port 2 2)    (seller 2's earnings)"
echo "  DVPN_LEDGER=$DVPN_LEDGER DVPN_PASSPHRASE=$DVPN_PASSPHRASE $BIN/dvpnctl --keystore $HOME_DIR/seller2.json balance"
echo "Ctrl-C stops everything (each seller settles what it holds first)."
wait "${PIDS[0]}"
