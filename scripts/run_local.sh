#!/usr/bin/env bash
# The main job: a local network on loopback with the embedded SQLite ledger.
# Builds what is missing, starts dvpn-ledger on 127.0.0.1 with a fresh operator key, then walks
# through the money flow with dvpnctl as a user would: fund a client, open an escrow channel to a
# provider, sign promises, settle them in a batch, withdraw, close the channel cooperatively. The ledger keeps running afterwards
# until Ctrl-C (or exits at once with --once). State lives in $DVPN_HOME (default ./.dvpn-local).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
HOME_DIR=${DVPN_HOME:-$ROOT/.dvpn-local}
PORT=${DVPN_LEDGER_PORT:-7400}
ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1

if [ ! -x "$BUILD_DIR/bin/dvpn-ledger" ] || [ ! -x "$BUILD_DIR/bin/dvpnctl" ]; then
  bash scripts/install_deps.sh
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target dvpn-ledger dvpnctl
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
trap 'kill -TERM $LEDGER_PID 2>/dev/null; wait $LEDGER_PID 2>/dev/null || true' EXIT
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

if [ "$ONCE" = 1 ]; then exit 0; fi
echo
echo "dvpn-ledger is running on $DVPN_LEDGER (pid $LEDGER_PID). Try, in another shell:"
echo "  DVPN_LEDGER=$DVPN_LEDGER DVPN_PASSPHRASE=$DVPN_PASSPHRASE $BIN/dvpnctl --keystore $HOME_DIR/client.json watch"
echo "Ctrl-C stops it."
wait $LEDGER_PID
