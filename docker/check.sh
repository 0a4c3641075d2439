#!/usr/bin/env bash
# The container demo as a user runs it, checked end to end (docker/README.md). As root on a
# Debian 12 machine, from anywhere:
#
#   bash docker/check.sh
#
#  1. installs what is missing with apt-get: docker.io, docker-compose, debootstrap, curl, python3
#  2. starts the Docker daemon when none answers (and stops it at the end)
#  3. makes the base images debian:bookworm and debian:bookworm-slim when they are missing:
#     debootstrap --variant=minbase, then docker import (no image registry needed)
#  4. builds the images and starts docker/compose.yaml (project "dvpncheck")
#  5. waits until the client reports connected (its health check: dvpnctl status --check)
#  6. through the client's published SOCKS port, with the demo password, fetches web's 20 MB file
#     and compares its SHA-256 with the file's; checks that the port refuses a client without the
#     password, and that another container on the network cannot use it
#  7. waits until the ledger shows the chosen seller paid exactly what the client spent
#  8. tears everything down: containers, network, volume, and the daemon if it started it
#
# Exits 0 when every check passed; otherwise 1, with the reason (and the services' last logs).
# Environment: DVPN_SOCKS_PORT (1080) the host port for SOCKS; DVPN_DEBIAN_MIRROR
# (http://deb.debian.org/debian) for debootstrap; DVPN_NO_CACHE=1 builds from scratch (to time a
# cold build); DVPN_KEEP=1 leaves the network running.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PROJECT=dvpncheck
SOCKS_PORT=${DVPN_SOCKS_PORT:-1080}
MIRROR=${DVPN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SOCKS_USER=demo
SOCKS_PASSWORD=$(sed -n 's/^DVPN_SOCKS_PASSWORD=//p' "$REPO/docker/client.env")
START=$(date +%s)
WORK=$(mktemp -d /tmp/dvpn-docker-check.XXXXXX)
DOCKERD_PID=""
STARTED_SERVICE=""
COMPOSE=()
UP=0

step() { echo "== [$(($(date +%s) - START)) s] $*"; }
fail() {
  echo "docker/check.sh: FAILED after $(($(date +%s) - START)) s: $*" >&2
  if [ "$UP" = 1 ]; then
    echo "-- last log lines of the services:" >&2
    "${COMPOSE[@]}" logs --no-color --tail 25 client provider1 provider2 provider3 ledger >&2 || true
  fi
  exit 1
}

cleanup() {
  local rc=$?
  if [ "$UP" = 1 ] && [ "${DVPN_KEEP:-0}" != 1 ]; then
    step "tearing down (containers, network, volume)"
    timeout 120 "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 ||
      echo "docker/check.sh: compose down failed" >&2
  fi
  if [ -n "$DOCKERD_PID" ]; then
    step "stopping the Docker daemon this script started (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$DOCKERD_PID" 2>/dev/null || true
  elif [ -n "$STARTED_SERVICE" ]; then
    step "stopping the docker service this script started"
    systemctl stop docker.socket docker.service >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  if [ "$rc" = 0 ]; then echo "docker/check.sh: OK in $(($(date +%s) - START)) s"; fi
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages and drives the Docker daemon)"

# 1. Packages.
missing=()
for p in docker.io docker-compose debootstrap curl python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    fail "apt-get install ${missing[*]}"
fi

# 2. The daemon.
if ! timeout 10 docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ] && systemctl cat docker.service >/dev/null 2>&1; then
    step "starting the docker service"
    systemctl start docker.service || fail "systemctl start docker.service"
    STARTED_SERVICE=1
  else
    step "starting dockerd (log: $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
  fi
  for _ in $(seq 1 60); do timeout 5 docker info >/dev/null 2>&1 && break; sleep 1; done
  timeout 10 docker info >/dev/null 2>&1 ||
    fail "the Docker daemon does not answer: $(tail -5 "$WORK/dockerd.log" 2>/dev/null)"
fi

# Compose v2 (`docker compose`) where it exists, else v1 (`docker-compose`, Debian 12's).
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  COMPOSE=(docker-compose)
fi
COMPOSE+=(-p "$PROJECT" -f "$REPO/docker/compose.yaml")
export DVPN_SOCKS_PORT=$SOCKS_PORT
step "compose: ${COMPOSE[0]} ($("${COMPOSE[@]:0:${#COMPOSE[@]}-4}" version --short 2>/dev/null || echo '?'))"

# 3. The base images.
if ! docker image inspect debian:bookworm >/dev/null 2>&1; then
  step "making debian:bookworm with debootstrap from $MIRROR (a few minutes)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    fail "debootstrap: $(tail -5 "$WORK/debootstrap.log")"
  rm -rf "$WORK"/rootfs/var/cache/apt/archives/*.deb "$WORK"/rootfs/var/lib/apt/lists/*
  tar -C "$WORK/rootfs" -c . | docker import - debian:bookworm >/dev/null ||
    fail "docker import"
  rm -rf "$WORK/rootfs"
fi
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  docker tag debian:bookworm debian:bookworm-slim || fail "docker tag debian:bookworm-slim"
fi

# 4. Build and start.
step "building the images (compiles the project the first time: ~10 min on 2 cores)"
build_args=()
[ "${DVPN_NO_CACHE:-0}" = 1 ] && build_args+=(--no-cache)
"${COMPOSE[@]}" build "${build_args[@]}" >"$WORK/build.log" 2>&1 ||
  fail "build: $(tail -20 "$WORK/build.log")"
step "images built"
if curl -s --max-time 2 "http://127.0.0.1:$SOCKS_PORT/" >/dev/null 2>&1 ||
   (exec 3<>"/dev/tcp/127.0.0.1/$SOCKS_PORT") 2>/dev/null; then
  fail "127.0.0.1:$SOCKS_PORT is in use (another demo running? set DVPN_SOCKS_PORT)"
fi
step "starting the network"
UP=1
"${COMPOSE[@]}" up -d >"$WORK/up.log" 2>&1 || fail "up: $(tail -20 "$WORK/up.log")"

# 5. Connected.
step "waiting for the client to connect"
client_status() { "${COMPOSE[@]}" exec -T client dvpnctl --json status 2>/dev/null; }
connected=0
for _ in $(seq 1 90); do
  if "${COMPOSE[@]}" exec -T client dvpnctl status --check >/dev/null 2>&1; then
    connected=1
    break
  fi
  sleep 2
done
[ "$connected" = 1 ] || fail "the client is not connected after 180 s: $(client_status || true)"
status=$(client_status) || fail "dvpnctl status"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
provider=$(echo "$status" | json '["provider"]')
price=$(echo "$status" | json '["price_per_mb"]')
step "connected to $provider at $price per MB ($(echo "$status" | json '["endpoint"]'))"

# 6. Data through the tunnel, and nobody else's.
step "fetching http://web:8000/20MB.bin through 127.0.0.1:$SOCKS_PORT"
t0=$(date +%s.%N)
curl -sf --max-time 120 --proxy "socks5h://$SOCKS_USER:$SOCKS_PASSWORD@127.0.0.1:$SOCKS_PORT" \
  -o "$WORK/20MB.bin" http://web:8000/20MB.bin || fail "curl through the tunnel failed (exit $?)"
t1=$(date +%s.%N)
got=$(sha256sum "$WORK/20MB.bin" | cut -d' ' -f1)
want=$("${COMPOSE[@]}" exec -T web sha256sum /srv/www/20MB.bin | cut -d' ' -f1)
size=$(stat -c %s "$WORK/20MB.bin")
[ "$got" = "$want" ] || fail "the file differs: sha256 $got through the tunnel, $want at web"
step "$size bytes, sha256 matches, $(python3 -c "print(round($size*8/1e6/($t1-$t0),1))") Mbit/s"
if curl -sf --max-time 10 --proxy "socks5h://127.0.0.1:$SOCKS_PORT" -o /dev/null \
     http://web:8000/ 2>/dev/null; then
  fail "the SOCKS port served a client without the password"
fi
if "${COMPOSE[@]}" exec -T provider2 curl -sf --max-time 10 --proxy socks5h://client:1080 \
     -o /dev/null http://web:8000/ 2>/dev/null; then
  fail "another container (provider2) used the client's SOCKS port"
fi
step "the SOCKS port refuses clients without the password (host and provider2)"

# 7. The seller paid on the ledger: its balance reaches what the client signed.
step "waiting for $provider to settle (threshold 0.2 credits or 30 s)"
paid=0
for _ in $(seq 1 60); do
  spent=$(client_status | json '["spent_session_micro"]') || spent=-1
  balance=$("${COMPOSE[@]}" exec -T ledger dvpnctl --ledger 127.0.0.1:7400 --json balance \
    "$provider" 2>/dev/null | json '["balance_micro"]') || balance=-1
  if [ "$spent" -gt 0 ] && [ "$balance" = "$spent" ]; then
    paid=1
    break
  fi
  sleep 3
done
[ "$paid" = 1 ] ||
  fail "the seller's ledger balance ($balance micro) is not what the client spent ($spent micro)"
step "the ledger paid $provider $(python3 -c "print($balance/1e6)") credits: what the client signed for $size bytes at $price per MB"
