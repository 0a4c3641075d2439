#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install dependencies, configure, build
# every target, run every test with ctest. Usage: scripts/test.sh [build-dir] (default: build).
# DVPN_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
SANITIZE=${DVPN_SANITIZE:-0}

bash scripts/install_deps.sh

SAN_FLAG=OFF
if [ "$SANITIZE" = 1 ]; then SAN_FLAG=ON; fi
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDVPN_SANITIZE="$SAN_FLAG"
cmake --build "$BUILD_DIR" -j"$(nproc)"
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 600 -j"$(nproc)"
