#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages the build and the tests need, skipping the
# ones already present. Run as root. Idempotent.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config ccache git
  libboost-dev libboost-system-dev
  libsodium-dev libsecp256k1-dev libsqlite3-dev sqlite3 libssl-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libtomlplusplus-dev chromium
  libclang-rt-14-dev
  libmnl-dev libnftables-dev nftables iproute2
  python3 procps curl iputils-ping
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
