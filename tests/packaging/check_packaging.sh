#!/usr/bin/env bash
# Checks docker/ and packaging/systemd/ without Docker or systemd running anything:
#   1. every path the Dockerfile COPYs exists in the repository;
#   2. every executable the packaging names (dvpnctl, dvpn-NAME) is a CMake target under
#      services/;
#   3. every package the Dockerfile installs exists in Debian (the local apt index; skipped
#      without apt-cache or with an empty index);
#   4. every flag that compose.yaml, demo-init.sh, the unit, the Dockerfile and the README pass
#      to one of our executables is in that executable's --help (dvpnctl: its subcommands' too);
#   5. the node.toml files demo-init.sh writes, and node.toml.example, are accepted by dvpn-node:
#      run with --set node.keystore=/nonexistent, it must stop at the keystore or the
#      passphrase, after every key was checked; their exit-policy rules parse
#      (dvpn-tunnel-exit); node.toml.example shows every key of the config schema;
#   6. demo-init.sh's `fund` and the ledger's health check work against a real dvpn-ledger
#      (127.0.0.1, port 0, a temporary directory);
#   7. compose.yaml is valid YAML with consistent references (only a structural check without
#      PyYAML), and its subnet is the one demo-init.sh allows;
#   8. the unit: `systemd-analyze verify` reports no bad directive (when installed), also with
#      the full-tunnel drop-in, the passphrase credential's path matches node.toml.example, and
#      TimeoutStopSec exceeds shutdown_grace_ms + shutdown_timeout_ms; the default unit keeps
#      no capability and no device, the drop-in grants exactly CAP_NET_ADMIN and /dev/net/tun,
#      and the sysctl file turns on forwarding for both families.
# Usage: check_packaging.sh REPO_ROOT BIN_DIR (BIN_DIR holds the built executables).
set -uo pipefail

ROOT=${1:?usage: check_packaging.sh REPO_ROOT BIN_DIR}
BIN=${2:?usage: check_packaging.sh REPO_ROOT BIN_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
PY="python3 $HERE/packaging_files.py"
DOCKERFILE=$ROOT/docker/Dockerfile
COMPOSE=$ROOT/docker/compose.yaml
INIT=$ROOT/docker/demo-init.sh
UNIT=$ROOT/packaging/systemd/dvpn-node.service
DROPIN=$ROOT/packaging/systemd/dvpn-node.service.d/full-tunnel.conf
SYSCTL=$ROOT/packaging/systemd/60-dvpn-full-tunnel.conf
EXAMPLE=$ROOT/packaging/systemd/node.toml.example
EXECUTABLES=(dvpn-ledger dvpn-node dvpn-client dvpn-tunnel-client dvpn-tunnel-exit dvpnctl)

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

TMP=$(mktemp -d)
LEDGER_PID=
cleanup() {
  if [ -n "$LEDGER_PID" ]; then
    kill -TERM "$LEDGER_PID" 2>/dev/null
    wait "$LEDGER_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

for f in "$DOCKERFILE" "$COMPOSE" "$INIT" "$ROOT/docker/demo.env" "$ROOT/docker/README.md" \
  "$UNIT" "$EXAMPLE" "$DROPIN" "$SYSCTL"; do
  [ -f "$f" ] || fail "missing ${f#"$ROOT"/}"
done
for b in "${EXECUTABLES[@]}"; do
  [ -x "$BIN/$b" ] || { echo "FAIL: $BIN/$b is not built" >&2; exit 1; }
done

# ---- 1. COPY sources
n=0
while read -r src; do
  n=$((n + 1))
  [ -e "$ROOT/$src" ] || fail "Dockerfile: COPY $src: no such path in the repository"
done < <($PY copy-sources "$DOCKERFILE")
[ "$n" -gt 0 ] || fail "Dockerfile: no COPY found"
pass "Dockerfile COPY sources exist ($n)"

# ---- 2. executables are CMake targets
TARGETS=$(grep -rhoE 'add_executable\(\s*[A-Za-z0-9_.+-]+' "$ROOT/services" --include=CMakeLists.txt |
  sed -E 's/add_executable\(\s*//' | sort -u)
# Words of the same shape that are not executables.
NOT_EXECUTABLES="dvpn-node-data"  # dvpn-node's default data_dir, named in node.toml.example
n=0
while IFS=$'\t' read -r name file; do
  n=$((n + 1))
  case " $NOT_EXECUTABLES " in *" $name "*) continue ;; esac
  grep -qxF "$name" <<<"$TARGETS" ||
    fail "${file#"$ROOT"/}: $name is not an add_executable target under services/"
done < <($PY executables "$DOCKERFILE" "$COMPOSE" "$INIT" "$ROOT/docker/README.md" "$UNIT" "$EXAMPLE")
[ "$n" -gt 0 ] || fail "no executable named in the packaging files"
# The Dockerfile builds all six (cmake --target) and copies each from the build stage.
joined=$(sed 's/\\$//' "$DOCKERFILE" | tr '\n' ' ')
copied=$($PY copy-from-build "$DOCKERFILE")
for b in "${EXECUTABLES[@]}"; do
  [[ $joined =~ --target[^\&]*[[:space:]]$b[[:space:]] ]] || fail "Dockerfile: cmake does not build $b"
  grep -qxF "/build/bin/$b" <<<"$copied" || fail "Dockerfile: $b is not copied from the build stage"
done
pass "executables named in the packaging are CMake targets ($n mentions)"

# ---- 3. apt packages exist in Debian (local index only)
if ! command -v apt-cache >/dev/null; then
  echo "skip: apt-cache not available: package names not checked"
elif ! compgen -G "/var/lib/apt/lists/*Packages*" >/dev/null; then
  echo "skip: the apt index is empty (apt-get update): package names not checked"
else
  mapfile -t packages < <($PY apt-packages "$DOCKERFILE")
  [ ${#packages[@]} -gt 0 ] || fail "Dockerfile: no apt-get install found"
  # One apt-cache call (each one loads the whole index): the packages with a candidate version.
  known=$(apt-cache policy "${packages[@]}" 2>/dev/null |
    awk '/^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) }
         /^  Candidate: / && $2 != "(none)" { print name }')
  for pkg in "${packages[@]}"; do
    grep -qxF "$pkg" <<<"$known" ||
      fail "Dockerfile: package $pkg is not in the apt index (not a Debian 12 package?)"
  done
  pass "Dockerfile packages exist in the apt index (${#packages[@]})"
fi

# ---- 4. flags are in each executable's --help
for b in "${EXECUTABLES[@]}"; do
  "$BIN/$b" --help >"$TMP/$b.help" 2>&1 || fail "$b --help failed"
done
# dvpnctl: the flags of every subcommand and sub-subcommand too.
while read -r sub; do
  "$BIN/dvpnctl" "$sub" --help >"$TMP/sub.help" 2>&1
  cat "$TMP/sub.help" >>"$TMP/dvpnctl.help"
  while read -r subsub; do
    "$BIN/dvpnctl" "$sub" "$subsub" --help >>"$TMP/dvpnctl.help" 2>&1
  done < <($PY help-subcommands "$TMP/sub.help")
done < <($PY help-subcommands "$TMP/dvpnctl.help")
n=0
while IFS=$'\t' read -r binary flag; do
  n=$((n + 1))
  if [ ! -f "$TMP/$binary.help" ]; then
    fail "a command runs $binary, which is not one of ${EXECUTABLES[*]}"
  elif ! grep -qE -- "(^|[ ,])$flag([ ,=]|$)" "$TMP/$binary.help"; then
    fail "$binary has no flag $flag (not in its --help)"
  fi
done < <($PY flags "$COMPOSE" "$INIT" "$UNIT" "$DOCKERFILE" "$ROOT/docker/README.md")
[ "$n" -gt 10 ] || fail "only $n flags found in the commands: the extraction is broken"
pass "flags passed to the executables are in their --help ($n)"

# ---- 5. node.toml files
# accept_config FILE LABEL: dvpn-node must check every key, then stop at the keystore or the
# passphrase.
accept_config() {
  local out rc label=$2
  out=$(DVPN_PASSPHRASE=check-packaging "$BIN/dvpn-node" --config "$1" \
    --set node.keystore=/nonexistent 2>&1)
  rc=$?
  if [ "$rc" -ne 2 ] || ! grep -qE '^dvpn-node: (node\.keystore /nonexistent: cannot read|node\.passphrase_file: cannot read)' <<<"$out"; then
    fail "dvpn-node refuses $label before the keystore (exit $rc): $out"
    return
  fi
  # The exit policy is parsed later, when the tunnel starts: parse its rules here.
  local rules=()
  if [ "$HAVE_TOMLLIB" = 1 ]; then
    while IFS=$'\t' read -r action rule; do rules+=("--$action" "$rule"); done \
      < <($PY toml-rules "$1")
  fi
  if [ ${#rules[@]} -gt 0 ]; then
    out=$("$BIN/dvpn-tunnel-exit" --listen 127.0.0.1:0 --static-key-file "$TMP/exit.key" \
      "${rules[@]}" --price-per-mb 1 2>&1)
    grep -q -- "--ledger HOST:PORT is required" <<<"$out" ||
      fail "$label: [tunnel] allow/deny: $out"
  fi
  pass "dvpn-node accepts $label ($((${#rules[@]} / 2)) exit-policy rules)"
}
HAVE_TOMLLIB=1
if ! python3 -c 'import tomllib' 2>/dev/null; then
  echo "skip: python3 without tomllib (< 3.11): exit-policy rules not checked"
  HAVE_TOMLLIB=0
fi
mkdir -p "$TMP/demo"
if DVPN_DIR="$TMP/demo" DVPN_LEDGER=ledger:7400 DVPN_PASSPHRASE=check-packaging \
  PATH="$BIN:$PATH" sh "$INIT" keys >"$TMP/init.log" 2>&1; then
  for p in provider1 provider2 provider3; do
    if [ -f "$TMP/demo/$p/node.toml" ]; then
      accept_config "$TMP/demo/$p/node.toml" "demo-init.sh's $p/node.toml"
    else
      fail "demo-init.sh keys wrote no $p/node.toml"
    fi
  done
else
  fail "demo-init.sh keys failed: $(cat "$TMP/init.log")"
fi
accept_config "$EXAMPLE" node.toml.example
# The example shows every key of the schema (set, or commented out with its default).
$PY toml-keys "$EXAMPLE" | sort -u >"$TMP/example.keys"
n=0
while IFS=$'\t' read -r table key; do
  n=$((n + 1))
  grep -qxF "$table"$'\t'"$key" "$TMP/example.keys" ||
    fail "node.toml.example does not show [$table] $key"
done < <($PY schema "$ROOT/provider/config.cpp")
[ "$n" -gt 20 ] || fail "only $n keys read from config.cpp's schema: the extraction is broken"
pass "node.toml.example shows all $n keys of the schema"

# ---- 6. funding and the ledger's health check against a real ledger
if [ -s "$TMP/demo/keys/operator.json" ]; then
  "$BIN/dvpn-ledger" --db "$TMP/ledger.db" --listen 127.0.0.1:0 --port-file "$TMP/ledger.port" \
    --operator-keystore "$TMP/demo/keys/operator.json" >"$TMP/ledger.log" 2>&1 &
  LEDGER_PID=$!
  for _ in $(seq 1 100); do [ -s "$TMP/ledger.port" ] && break; sleep 0.1; done
  if [ -s "$TMP/ledger.port" ]; then
    LEDGER=127.0.0.1:$(cat "$TMP/ledger.port")
    # compose.yaml's health check of the ledger, without a keystore or passphrase
    (cd "$TMP" && env -u DVPN_PASSPHRASE HOME="$TMP" "$BIN/dvpnctl" --ledger "$LEDGER" \
      --timeout 2 info >/dev/null 2>&1) || fail "the ledger health check (dvpnctl info) fails"
    for round in 1 2; do
      DVPN_DIR="$TMP/demo" DVPN_LEDGER=$LEDGER DVPN_PASSPHRASE=check-packaging \
        PATH="$BIN:$PATH" sh "$INIT" fund >"$TMP/fund.log" 2>&1 ||
        fail "demo-init.sh fund (round $round) failed: $(cat "$TMP/fund.log")"
    done
    balance=$(DVPN_PASSPHRASE=check-packaging "$BIN/dvpnctl" --ledger "$LEDGER" \
      --keystore "$TMP/demo/keys/client.json" --json balance 2>&1)
    grep -qE '"balance_micro": *100000000\b' <<<"$balance" ||
      fail "after funding twice the client should hold 100 credits: $balance"
    pass "demo-init.sh fund credits the client once; the ledger health check answers"
  else
    fail "dvpn-ledger did not start: $(cat "$TMP/ledger.log")"
  fi
fi

# ---- 7. compose.yaml
if out=$($PY compose "$COMPOSE"); then
  pass "compose.yaml structure"
else
  fail "compose.yaml: $out"
fi
subnet=$(sed -nE 's/^\s*-?\s*subnet:\s*"?([0-9./]+)"?.*/\1/p' "$COMPOSE" | head -1)
init_subnet=$(sed -nE 's/^SUBNET=([0-9./]+).*/\1/p' "$INIT")
if [ -z "$subnet" ] || [ "$subnet" != "$init_subnet" ]; then
  fail "compose.yaml's subnet ($subnet) differs from demo-init.sh's SUBNET ($init_subnet)"
fi
sh -n "$INIT" || fail "demo-init.sh: sh -n reports a syntax error"
grep -qE '^DVPN_PASSPHRASE=.*demo' "$ROOT/docker/demo.env" ||
  fail "docker/demo.env: DVPN_PASSPHRASE must be there and say it is a demo value"

# ---- 8. the systemd unit
unit_name=$(basename "$UNIT")
grep -qxF "LoadCredential=passphrase:/etc/dvpn/passphrase" "$UNIT" ||
  fail "$unit_name: no LoadCredential=passphrase:/etc/dvpn/passphrase"
grep -qxF "passphrase_file = \"/run/credentials/$unit_name/passphrase\"" "$EXAMPLE" ||
  fail "node.toml.example: passphrase_file is not /run/credentials/$unit_name/passphrase"
stop_s=$(sed -nE 's/^TimeoutStopSec=([0-9]+)s?$/\1/p' "$UNIT")
grace=$(sed -nE 's/^shutdown_grace_ms = ([0-9]+)$/\1/p' "$EXAMPLE")
settle=$(sed -nE 's/^shutdown_timeout_ms = ([0-9]+)$/\1/p' "$EXAMPLE")
if [ -z "$stop_s" ] || [ -z "$grace" ] || [ -z "$settle" ] ||
  [ $((stop_s * 1000)) -le $((grace + settle)) ]; then
  fail "$unit_name: TimeoutStopSec (${stop_s:-?} s) must exceed shutdown_grace_ms +" \
    "shutdown_timeout_ms (${grace:-?} + ${settle:-?} ms)"
fi
if command -v systemd-analyze >/dev/null; then
  # Diagnostics about the file itself are "PATH:LINE: ..."; the missing binary and a
  # container's missing targets are not the unit's fault.
  systemd-analyze verify "$UNIT" >"$TMP/verify.log" 2>&1
  if grep -E "^$UNIT:[0-9]+:" "$TMP/verify.log" >&2; then
    fail "systemd-analyze verify: bad directives in $unit_name"
  else
    pass "systemd-analyze verify: no bad directive in $unit_name"
  fi
  # The drop-in, loaded from a unit path of our own beside a copy of the unit.
  mkdir -p "$TMP/units/$unit_name.d"
  cp "$UNIT" "$TMP/units/"
  cp "$DROPIN" "$TMP/units/$unit_name.d/"
  SYSTEMD_UNIT_PATH="$TMP/units:" systemd-analyze verify "$TMP/units/$unit_name" \
    >"$TMP/verify-dropin.log" 2>&1
  if grep -E "^$TMP/units/.*:[0-9]+:" "$TMP/verify-dropin.log" >&2; then
    fail "systemd-analyze verify: bad directives in $unit_name with full-tunnel.conf"
  else
    pass "systemd-analyze verify: no bad directive in $unit_name with full-tunnel.conf"
  fi
else
  echo "skip: systemd-analyze not available"
fi
# Least privilege: the default unit has no capability and no device; the drop-in adds exactly
# what full-tunnel mode needs.
for line in "CapabilityBoundingSet=" "AmbientCapabilities=" "PrivateDevices=yes"; do
  grep -qxF "$line" "$UNIT" || fail "$unit_name: \"$line\" missing (the default stays unprivileged)"
done
want="AmbientCapabilities=CAP_NET_ADMIN
CapabilityBoundingSet=CAP_NET_ADMIN
DeviceAllow=/dev/net/tun rw
DevicePolicy=closed
PrivateDevices=no"
got=$(grep -vE '^(#|\[|$)' "$DROPIN" | sort)
[ "$got" = "$want" ] ||
  fail "full-tunnel.conf: directives are not exactly the full-tunnel set:"$'\n'"$got"
# Every directive has a comment line right above it (or above the previous directive of its
# group): no unexplained privilege.
awk '/^[A-Za-z]/ && prev !~ /^#/ && prev !~ /^[A-Za-z]/ { bad = 1 } { prev = $0 } END { exit bad }' \
  "$DROPIN" || fail "full-tunnel.conf: a directive without a comment"
for key in net.ipv4.ip_forward net.ipv6.conf.all.forwarding; do
  grep -qxE "$key = 1" "$SYSCTL" || fail "60-dvpn-full-tunnel.conf: no \"$key = 1\""
done
pass "full-tunnel privileges: drop-in and sysctl file"

if [ "$failures" -gt 0 ]; then
  echo "check_packaging: $failures failure(s)" >&2
  exit 1
fi
echo "check_packaging: all checks passed"
