#!/usr/bin/env bash
# Runs bench/settle (build/bin/settle_bench) five times and prints the median of each figure.
# Usage: scripts/bench_settle.sh [build-dir] [extra settle_bench flags...]
# Example: scripts/bench_settle.sh build --verify-threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
shift || true
BIN="$BUILD_DIR/bin/settle_bench"
if [ ! -x "$BIN" ]; then
  echo "bench_settle.sh: $BIN not found; build it with: cmake --build $BUILD_DIR --target settle_bench" >&2
  exit 1
fi
RUNS=5
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for i in $(seq 1 $RUNS); do
  line=$("$BIN" "$@" | grep '^RESULT ')
  echo "run $i: ${line#RESULT }"
  echo "$line" >>"$results"
done
median() {  # median of the values of key $1 over all runs
  sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$results" | sort -g | awk '{v[NR]=$1} END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo "median of $RUNS runs:"
echo "  raw BIP-340 verify, 1 core (secp256k1_schnorrsig_verify): $(median verify_per_sec) /s"
echo "  SettleBatch end to end (gRPC + checks + SQLite commit):  $(median settle_per_sec) promises/s"
echo "  Ledger::SettleBatch in process (no gRPC):                 $(median direct_settle_per_sec) promises/s"
echo "  ratio settle / raw verify:                                $(median ratio)"
