#!/usr/bin/env bash
# Benchmarks of issue 4 (docs/BENCHMARKS.md, "Payments"):
#  1. build-dir/bin/payments_bench (bench/payments): promises signed / verified per second, the
#     client's per-invoice step, the provider's per-promise check, the CONTROL codec and one
#     whole invoice -> promise -> receipt exchange; 5 repetitions, medians;
#  2. bench/tunnel/run_payments_compare.sh: tunnel throughput with payments on beside the same
#     run with payments off (5 alternating socks_bench runs each), medians, ratio paid / free,
#     and the provider's settled earnings beside the bytes the paid tunnel metered.
# Usage: scripts/bench_payments.sh [build-dir] [--micro-only | --tunnel-only]
#                                  [extra run_payments_compare.sh flags...]
# Example: scripts/bench_payments.sh build --runs 9 --bytes 1G
# Build first: cmake --build build --target payments_bench dvpn-ledger dvpnctl dvpn-tunnel-exit
#              dvpn-tunnel-client
# (Batch settlement through the ledger and the raw libsecp256k1 rate: scripts/bench_settle.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then BUILD_DIR=$1; shift; fi
MICRO=1; TUNNEL=1
case "${1:-}" in
  --micro-only) TUNNEL=0; shift ;;
  --tunnel-only) MICRO=0; shift ;;
esac

if [ $MICRO = 1 ]; then
  BIN="$BUILD_DIR/bin/payments_bench"
  if [ ! -x "$BIN" ]; then
    echo "bench_payments.sh: $BIN not found; build it with:" \
      "cmake --build $BUILD_DIR --target payments_bench" >&2
    exit 1
  fi
  echo "== payments_bench, 5 repetitions, medians (loadavg before: $(cat /proc/loadavg))"
  "$BIN" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    --benchmark_min_time=0.5 --benchmark_filter='.*' 2>&1 |
    grep -E '^(Run on|Load|Benchmark|-----|BM_.*_median)' || true
  echo "(loadavg after: $(cat /proc/loadavg))"
  echo
fi
if [ $TUNNEL = 1 ]; then
  exec bench/tunnel/run_payments_compare.sh --build-dir "$BUILD_DIR" --runs 5 "$@"
fi
