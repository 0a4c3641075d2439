#!/usr/bin/env bash
# The main job: a local network on loopback with the embedded SQLite ledger.
# Builds what is missing, starts dvpn-ledger on 127.0.0.1 with a fresh operator key, then walks
# through the money flow with dvpnctl as a user would: fund a client, open an escrow channel to a
# provider, sign promises, settle them in a batch, withdraw, close the channel cooperatively.
# Then a paid tunnel: the provider runs dvpn-tunnel-exit at a price per MB, the client opens a
# new channel and runs dvpn-tunnel-client (SOCKS5), curl fetches a file from a local web server
# through the tunnel while the client pays per megabyte, and the exit settles on shutdown.
# The ledger, exit and client keep running afterwards until Ctrl-C (or everything stops at once
# with --once). State lives in $DVPN_HOME (default ./.dvpn-local). Everything binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
HOME_DIR=${DVPN_HOME:-$ROOT/.dvpn-local}
PORT=${DVPN_LEDGER_PORT:-7400}
EXIT_PORT=${DVPN_EXIT_PORT:-7401}
SOCKS_PORT=${DVPN_SOCKS_PORT:-7402}
WEB_PORT=${DVPN_WEB_PORT:-7403}
ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1

NEED=(dvpn-ledger dvpnctl dvpn-tunnel-exit dvpn-tunnel-client)
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
export DVPN_LEDGER=127.0.0.1:$PORT
export DVPN_PASSPHRASE=${DVPN_PASSPHRASE:-local-demo-passphrase}
ctl() { "$BIN/dvpnctl" --kdf-cost interactive "$@"; }

echo "== keys (operator, client, provider) in $HOME_DIR"
for who in operator client provider; do
  ctl --keystore "$HOME_DIR/$who.json" key new >/dev/null
done
addr() { ctl --keystore "$HOME_DIR/$1.json" --json key show | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])'; }
CLIENT=$(addr client); PROVIDER=$(addr provider)

echo "== starting dvpn-ledger on $DVPN_LEDGER (db $HOME_DIR/ledger.db)"
"$BIN/dvpn-ledger" --db "$HOME_DIR/ledger.db" --listen "127.0.0.1:$PORT" \
  --port-file "$HOME_DIR/ledger.port" --operator-keystore "$HOME_DIR/operator.json" \
  --challenge-period 60 &
LEDGER_PID=$!
PIDS=()  # started after the ledger; stopped first, in reverse order
cleanup() {
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  kill -TERM $LEDGER_PID 2>/dev/null || true
  wait $LEDGER_PID 2>/dev/null || true
}
trap cleanup EXIT
wait_file() {  # wait_file FILE WHAT: up to 15 s for FILE to be non-empty
  for _ in $(seq 1 150); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "$2 did not start" >&2
  exit 1
}
for _ in $(seq 1 100); do [ -s "$HOME_DIR/ledger.port" ] && break; sleep 0.1; done
[ -s "$HOME_DIR/ledger.port" ] || { echo "dvpn-ledger did not start" >&2; exit 1; }

step() { echo; echo "\$ dvpnctl $*"; ctl "$@"; }
step --keystore "$HOME_DIR/operator.json" info
step --keystore "$HOME_DIR/operator.json" deposit --to "$CLIENT" 100
CHANNEL=$(ctl --keystore "$HOME_DIR/client.json" --json channel open --provider "$PROVIDER" \
  --amount 10 --expires-in 24h | python3 -c 'import json,sys; print(json.load(sys.stdin)["channel_id"])')
echo; echo "opened channel $CHANNEL (10 credits in escrow for $PROVIDER)"
for cumulative in 1 2.5 4; do
  SIG=$(ctl --keystore "$HOME_DIR/client.json" --json promise --channel "$CHANNEL" \
    --cumulative "$cumulative" | python3 -c 'import json,sys; print(json.load(sys.stdin)["signature"])')
  echo "client signed a promise for $cumulative credits"
done
step --keystore "$HOME_DIR/provider.json" settle --channel "$CHANNEL" --cumulative 4 --signature "$SIG"
step --keystore "$HOME_DIR/provider.json" settle --channel "$CHANNEL" --cumulative 4 --signature "$SIG"
step --keystore "$HOME_DIR/provider.json" withdraw 1.5 --destination "bank:demo"
step --keystore "$HOME_DIR/provider.json" channel close "$CHANNEL"
step --keystore "$HOME_DIR/client.json" balance
step --keystore "$HOME_DIR/provider.json" balance
step --keystore "$HOME_DIR/client.json" history

echo
echo "== a paid tunnel: $PROVIDER sells bandwidth at 0.05 credits per MB"
CHANNEL=$(ctl --keystore "$HOME_DIR/client.json" --json channel open --provider "$PROVIDER" \
  --amount 20 --expires-in 24h | python3 -c 'import json,sys; print(json.load(sys.stdin)["channel_id"])')
echo "client opened channel $CHANNEL (20 credits in escrow)"
mkdir -p "$HOME_DIR/www"
head -c 30000000 /dev/urandom > "$HOME_DIR/www/file.bin"
python3 -m http.server "$WEB_PORT" --bind 127.0.0.1 --directory "$HOME_DIR/www" \
  > "$HOME_DIR/web.log" 2>&1 &
PIDS+=($!)
"$BIN/dvpn-tunnel-exit" --static-key-file "$HOME_DIR/exit.key" --print-public-key \
  > "$HOME_DIR/exit.pub"
"$BIN/dvpn-tunnel-exit" --listen "127.0.0.1:$EXIT_PORT" --port-file "$HOME_DIR/exit.port" \
  --static-key-file "$HOME_DIR/exit.key" --allow 127.0.0.1/32 \
  --price-per-mb 0.05 --ledger "$DVPN_LEDGER" --keystore "$HOME_DIR/provider.json" \
  --promise-db "$HOME_DIR/promises.db" > "$HOME_DIR/exit.log" 2>&1 &
EXIT_PID=$!
PIDS+=($EXIT_PID)
wait_file "$HOME_DIR/exit.port" "dvpn-tunnel-exit (see $HOME_DIR/exit.log)"
echo "dvpn-tunnel-exit listening on 127.0.0.1:$EXIT_PORT (log $HOME_DIR/exit.log)"
"$BIN/dvpn-tunnel-client" --provider "127.0.0.1:$EXIT_PORT" \
  --provider-key "$(head -c 64 "$HOME_DIR/exit.pub")" --socks "127.0.0.1:$SOCKS_PORT" \
  --socks-port-file "$HOME_DIR/socks.port" --keystore "$HOME_DIR/client.json" \
  --channel "$CHANNEL" --ledger "$DVPN_LEDGER" --payee "$PROVIDER" --max-price-per-mb 0.1 \
  --session-cap 10 --daily-cap 15 --spend-file "$HOME_DIR/spend" --log-level debug \
  > "$HOME_DIR/client.log" 2>&1 &
PIDS+=($!)
wait_file "$HOME_DIR/socks.port" "dvpn-tunnel-client (see $HOME_DIR/client.log)"
echo "dvpn-tunnel-client: SOCKS5 on 127.0.0.1:$SOCKS_PORT (log $HOME_DIR/client.log)"
echo
echo "\$ curl --socks5-hostname 127.0.0.1:$SOCKS_PORT http://127.0.0.1:$WEB_PORT/file.bin"
curl -sS --max-time 60 --socks5-hostname "127.0.0.1:$SOCKS_PORT" \
  "http://127.0.0.1:$WEB_PORT/file.bin" -o "$HOME_DIR/fetched.bin" \
  -w 'fetched %{size_download} bytes in %{time_total} s through the tunnel\n'
cmp -s "$HOME_DIR/www/file.bin" "$HOME_DIR/fetched.bin" || { echo "the copy differs" >&2; exit 1; }
echo "the copy is identical"
sleep 1  # the last invoice and promise of the transfer
echo "promises the client signed: $(grep -c 'promising cumulative' "$HOME_DIR/client.log" || true)" \
  "(latest: $(grep -o 'promising cumulative [0-9.]*' "$HOME_DIR/client.log" | tail -1 | cut -d' ' -f3))"

if [ "$ONCE" = 1 ]; then
  echo
  echo "== stopping the exit: it settles the latest promise on shutdown"
  kill -TERM "$EXIT_PID"
  wait "$EXIT_PID" || true
  step --keystore "$HOME_DIR/provider.json" balance
  step --keystore "$HOME_DIR/client.json" channel show "$CHANNEL"
  SETTLED=$(ctl --keystore "$HOME_DIR/client.json" --json channel show "$CHANNEL" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["settled_micro"])')
  # 30 MB at 0.05 per MB, plus the HTTP request and headers: 1.5 credits and a few micro.
  if [ "$SETTLED" -lt 1500000 ] || [ "$SETTLED" -gt 1600000 ]; then
    echo "settled $SETTLED micro-credits, expected about 1500000" >&2
    exit 1
  fi
  exit 0
fi
echo
echo "Running: dvpn-ledger on $DVPN_LEDGER, a paid exit on 127.0.0.1:$EXIT_PORT, and a client"
echo "with SOCKS5 on 127.0.0.1:$SOCKS_PORT. Try, in another shell:"
echo "  curl --socks5-hostname 127.0.0.1:$SOCKS_PORT http://127.0.0.1:$WEB_PORT/file.bin -o /dev/null"
echo "  DVPN_LEDGER=$DVPN_LEDGER DVPN_PASSPHRASE=$DVPN_PASSPHRASE $BIN/dvpnctl --keystore $HOME_DIR/provider.json watch"
echo "Ctrl-C stops everything (the exit settles what it holds first)."
wait $LEDGER_PID
