#!/bin/sh
# The demo network's one-shot set-up (docker/compose.yaml), run inside the dvpn image:
#
#   demo-init.sh keys   keystores of the operator, the client and three providers, and the
#                       providers' node.toml files (service `init`: before the ledger starts,
#                       which reads the operator's public key from its keystore)
#   demo-init.sh fund   the operator credits the client with 100 credits, once (service `fund`:
#                       once the ledger answers)
#
# Both are idempotent: existing keystores are kept (dvpnctl never overwrites one), the configs
# are rewritten, and a marker file keeps a second `up` from funding again.
# Environment: DVPN_PASSPHRASE (required; docker/demo.env), DVPN_DIR (default /var/lib/dvpn),
# DVPN_LEDGER (default ledger:7400).
set -eu

DIR=${DVPN_DIR:-/var/lib/dvpn}
LEDGER=${DVPN_LEDGER:-ledger:7400}
# compose.yaml's network: the exits may reach its web server (port 8000) even though the exit
# policy refuses private ranges by default.
SUBNET=172.28.0.0/24
: "${DVPN_PASSPHRASE:?set DVPN_PASSPHRASE (docker/demo.env)}"

# write_config NAME PRICE_PER_MB BOOTSTRAP: DIR/NAME/node.toml (docs/node.md §2).
write_config() {
  mkdir -p "$DIR/$1"
  cat > "$DIR/$1/node.toml" <<EOF
# Written by docker/demo-init.sh: the demo seller $1 at $2 credits per MB.
# The keystore's passphrase comes from \$DVPN_PASSPHRASE (docker/demo.env).
[node]
ledger = "$LEDGER"
keystore = "$DIR/keys/$1.json"
data_dir = "$DIR/$1"

[gossip]
listen = "0.0.0.0:7600"
bootstrap = [$3]

[offer]
price_per_mb = "$2"
region = "demo"
endpoints = ["$1:7443"]

[tunnel]
listen = "0.0.0.0:7443"
allow = ["$SUBNET:8000"]

# Settles soon, so that the demo shows credits moving on the ledger within a minute.
[settlement]
threshold = "0.2"
max_age_s = 30

# Loopback only (dvpn-node refuses any other address): reachable inside this container.
[control]
grpc_listen = "127.0.0.1:7601"
http_listen = "127.0.0.1:7602"
EOF
}

keys() {
  mkdir -p "$DIR/keys"
  for who in operator client provider1 provider2 provider3; do
    if [ ! -s "$DIR/keys/$who.json" ]; then
      dvpnctl --kdf-cost interactive --keystore "$DIR/keys/$who.json" key new
    fi
  done
  write_config provider1 0.05 ''
  write_config provider2 0.08 '"provider1:7600"'
  write_config provider3 0.12 '"provider1:7600"'
  echo "demo-init: keystores in $DIR/keys, configs in $DIR/provider{1,2,3}/node.toml"
}

fund() {
  if [ -e "$DIR/keys/client.funded" ]; then
    echo "demo-init: the client was funded before"
    return 0
  fi
  client=$(dvpnctl --keystore "$DIR/keys/client.json" --json key show |
    sed -n 's/.*"address": *"\([^"]*\)".*/\1/p')
  [ -n "$client" ] || { echo "demo-init: no address in $DIR/keys/client.json" >&2; exit 1; }
  dvpnctl --ledger "$LEDGER" --keystore "$DIR/keys/operator.json" deposit --to "$client" 100
  touch "$DIR/keys/client.funded"
}

case "${1:-}" in
  keys) keys ;;
  fund) fund ;;
  *) echo "usage: demo-init.sh keys|fund" >&2; exit 2 ;;
esac
