#!/usr/bin/env bash
# Tunnel resource figures of issue 3 (docs/BENCHMARKS.md): handshakes per second on one core
# (bench/tunnel/handshake_bench.cpp, in process, 5 repetitions inside one run) and memory per
# idle tunnel and per idle stream on the real executables (bench/tunnel/idle_memory_bench.cpp,
# 1000 tunnels and 2000 streams, RUNS runs). Prints every RESULT line and the medians.
# Usage: scripts/bench_tunnel_resources.sh [build-dir] [runs]
# Build first: cmake --build build --target handshake_bench idle_memory_bench
# (idle_memory_bench needs about 0.6 GB of memory for 1000 tunnels: ~270 KiB per tunnel on each
# side, the exit and this bench's client side.)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
RUNS=${2:-3}
for b in handshake_bench idle_memory_bench dvpn-tunnel-exit dvpn-tunnel-client; do
  if [ ! -x "$BUILD_DIR/bin/$b" ]; then
    echo "bench_tunnel_resources.sh: $BUILD_DIR/bin/$b not found; build it with:" \
      "cmake --build $BUILD_DIR --target handshake_bench idle_memory_bench" >&2
    exit 1
  fi
done
results=$(mktemp)
trap 'rm -f "$results"' EXIT

median() {  # median of the values of key $1 over the RESULT lines in $results
  sed -n "s/.* $1=\([0-9.-]*\).*/\1/p" "$results" | sort -g | awk '{v[NR]=$1} END {
    if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2];
    else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== handshakes per second, one thread (median of 5 repetitions) =="
echo "loadavg before: $(cat /proc/loadavg)"
"$BUILD_DIR/bin/handshake_bench" --reps 5
echo

echo "== memory per idle tunnel / stream ($RUNS runs of 1000 tunnels, 2000 streams) =="
: >"$results"
for i in $(seq 1 "$RUNS"); do
  load=$(cat /proc/loadavg)
  line=$("$BUILD_DIR/bin/idle_memory_bench" --tunnels 1000 --streams 2000 | grep '^RESULT ')
  echo "run $i (loadavg before: $load): ${line#RESULT }"
  echo "$line" >>"$results"
done
echo "median of $RUNS runs (KiB = 1024 bytes, VmRSS growth):"
echo "  exit, per idle tunnel:                   $(median exit_kib_per_tunnel) KiB"
echo "  client side (ConnectTunnel), per tunnel: $(median client_kib_per_tunnel) KiB"
echo "  exit, per idle stream:                   $(median exit_kib_per_stream) KiB"
echo "  dvpn-tunnel-client, per idle stream:     $(median client_kib_per_stream) KiB"
