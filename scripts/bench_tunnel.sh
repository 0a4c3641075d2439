#!/usr/bin/env bash
# Tunnel throughput and latency: the dVPN tunnel (dvpn-tunnel-client -> dvpn-tunnel-exit) against
# shadowsocks-libev (ss-local -> ss-server, chacha20-ietf-poly1305) through
# ../shared/bench/socks_bench on loopback, 5 alternating runs each plus one direct run; prints
# every RESULT line, the medians and the ratios dvpn / shadowsocks.
# Usage: scripts/bench_tunnel.sh [build-dir] [extra bench/tunnel/run_socks_compare.sh flags...]
# Example: scripts/bench_tunnel.sh build --runs 9 --bytes 1G
# Installs shadowsocks-libev with apt-get when it is missing (root only; --no-install refuses).
# Without build-dir/bin/dvpn-tunnel-{exit,client} it measures shadowsocks only and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then BUILD_DIR=$1; shift; fi
exec bench/tunnel/run_socks_compare.sh --build-dir "$BUILD_DIR" --runs 5 "$@"
