# shellcheck shell=bash disable=SC2034  # sets globals the sourcing scripts read
# Shell functions shared by bench/tunnel/run_full_tunnel_iperf.sh and
# run_full_tunnel_compare.sh: the three-namespace topology, the real dvpn-ledger, a seller
# dvpn-node with full_tunnel = true and a dvpn-client --full-tunnel, and process bookkeeping.
# Sourced (not run); defines functions only, starts nothing until called.
#
# Topology (as tests/support/topology builds it), all in namespaces named <prefix><pid>-{u,i,p}:
#
#   user  172.31.1.2 --veth-- 172.31.1.1  internet  172.31.2.1 --veth-- 172.31.2.2  provider
#                                          172.31.3.1/32 on lo: the iperf3 server
#                                          172.31.3.200/32 on lo: the ledger (the client keeps
#                                          it outside the tunnel)
#
# Globals: FT_ID, FT_U, FT_I, FT_P (namespace names), FT_VU, FT_VP (the veth names in user and
# provider), FT_H (temp dir), FT_BIN, FT_PIDS ("pid:exe" of everything started, oldest first),
# FT_NS (namespaces created), FT_CLEANUP_HOOKS (commands run by ft_cleanup before the namespaces
# go), FT_LAST_PID (ft_spawn's). The sourcing script sets FT_BIN and calls ft_init PREFIX first.

FT_SERVER=172.31.3.1
FT_LEDGER_ADDR=172.31.3.200
FT_NODE_ADDR=172.31.2.2
FT_USER_ADDR=172.31.1.2

ft_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ft_init PREFIX: names (PREFIX + this shell's PID), the temp dir, the EXIT/INT/TERM traps.
ft_init() {
  FT_ID=$$
  FT_U=$1$FT_ID-u; FT_I=$1$FT_ID-i; FT_P=$1$FT_ID-p
  FT_VU=$1${FT_ID}u; FT_VP=$1${FT_ID}p  # interface names stay <= 15 characters
  FT_H=$(mktemp -d "/tmp/$1.XXXXXX") || { echo "mktemp failed" >&2; exit 1; }
  FT_PIDS=(); FT_NS=(); FT_CLEANUP_HOOKS=()
  trap ft_cleanup EXIT
  trap 'ft_log "interrupted"; exit 130' INT
  trap 'ft_log "terminated"; exit 143' TERM
}

ft_proc_state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null; }

# ft_stop_pid PID EXE: SIGTERM, up to 6 s, then SIGKILL; only while PID still runs EXE
# (`ip` too: `ip netns exec` execs the program in place), so a reused PID is left alone.
ft_stop_pid() {
  local pid=$1 want=$2 exe
  [ -e "/proc/$pid" ] || { wait "$pid" 2>/dev/null; return 0; }
  if [ "$(ft_proc_state "$pid")" != Z ]; then
    exe=$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)" 2>/dev/null)
    # no exe: our child is exiting right now; the wait below reaps it
    if [ -n "$exe" ] && [ "$exe" != "$want" ] && [ "$exe" != ip ] && [ "$exe" != timeout ]; then
      ft_log "not stopping PID $pid: runs '$exe', expected '$want'"
      return 0
    fi
    [ -n "$exe" ] && kill -TERM "$pid" 2>/dev/null
    local end=$((SECONDS + 6))  # by the clock: a sleep cut short must not shorten the grace
    while [ $SECONDS -lt $end ]; do
      if [ ! -e "/proc/$pid" ] || [ "$(ft_proc_state "$pid")" = Z ]; then break; fi
      sleep 0.1
    done
    if [ -e "/proc/$pid" ] && [ "$(ft_proc_state "$pid")" != Z ]; then
      ft_log "PID $pid ($want) ignored SIGTERM for 6 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
  return 0
}

# ft_stop_from N: stops FT_PIDS[N..], newest first, and forgets them.
ft_stop_from() {
  local from=$1 i
  for ((i = ${#FT_PIDS[@]} - 1; i >= from; i--)); do
    ft_stop_pid "${FT_PIDS[i]%%:*}" "${FT_PIDS[i]#*:}"
  done
  FT_PIDS=("${FT_PIDS[@]:0:from}")
}

# shellcheck disable=SC2317  # run by the EXIT trap
ft_cleanup() {
  local rc=$? h n
  trap - EXIT INT TERM
  ft_stop_from 0
  for h in "${FT_CLEANUP_HOOKS[@]}"; do eval "$h" 2>/dev/null; done
  for n in "${FT_NS[@]}"; do ip netns del "$n" 2>/dev/null || ft_log "could not delete netns $n"; done
  if [ -n "${FT_KEEP:-}" ]; then
    mkdir -p "$FT_KEEP" && cp -r "$FT_H"/. "$FT_KEEP"/ && ft_log "logs kept in $FT_KEEP"
  fi
  rm -rf "$FT_H"
  exit "$rc"
}

# ft_spawn EXE LOGFILE CMD...: runs CMD in the background, output to LOGFILE; records
# "pid:EXE" in FT_PIDS and the PID in FT_LAST_PID.
ft_spawn() {
  local exe=$1 logf=$2
  shift 2
  "$@" > "$logf" 2>&1 &
  FT_LAST_PID=$!
  FT_PIDS+=("$FT_LAST_PID:$exe")
}

# ft_wait_until SECONDS PID CMD...: polls CMD every 0.1 s; fails after SECONDS or when PID
# (if not empty) has exited.
ft_wait_until() {
  local t=$1 pid=$2
  shift 2
  for _ in $(seq $((t * 10))); do
    "$@" > /dev/null 2>&1 && return 0
    if [ -n "$pid" ] && { [ ! -e "/proc/$pid" ] || [ "$(ft_proc_state "$pid")" = Z ]; }; then
      return 1
    fi
    sleep 0.1
  done
  return 1
}

# ft_topology: the three namespaces, the two veth pairs, addresses, routes, forwarding in
# "internet". Exits on failure (the trap removes what was made).
ft_topology() {
  local n
  for n in $FT_U $FT_P $FT_I; do
    [ -e "/var/run/netns/$n" ] && { echo "netns $n already exists" >&2; exit 1; }
    ip netns add "$n" || exit 1
    FT_NS+=("$n")
    ip -n "$n" link set lo up
  done
  ip link add "$FT_VU" netns "$FT_U" type veth peer name "${FT_VU}i" netns "$FT_I" || exit 1
  ip link add "$FT_VP" netns "$FT_P" type veth peer name "${FT_VP}i" netns "$FT_I" || exit 1
  ip -n "$FT_U" addr add $FT_USER_ADDR/24 dev "$FT_VU"
  ip -n "$FT_I" addr add 172.31.1.1/24 dev "${FT_VU}i"
  ip -n "$FT_P" addr add $FT_NODE_ADDR/24 dev "$FT_VP"
  ip -n "$FT_I" addr add 172.31.2.1/24 dev "${FT_VP}i"
  ip -n "$FT_I" addr add $FT_SERVER/32 dev lo
  ip -n "$FT_I" addr add $FT_LEDGER_ADDR/32 dev lo
  ip -n "$FT_U" link set "$FT_VU" up; ip -n "$FT_I" link set "${FT_VU}i" up
  ip -n "$FT_P" link set "$FT_VP" up; ip -n "$FT_I" link set "${FT_VP}i" up
  ip -n "$FT_U" route add default via 172.31.1.1
  ip -n "$FT_P" route add default via 172.31.2.1
  ip netns exec "$FT_I" sysctl -qw net.ipv4.ip_forward=1
  ft_wait_until 10 "" ip netns exec "$FT_U" ping -n -c 1 -W 1 $FT_NODE_ADDR ||
    { echo "the namespaces' veth path does not come up" >&2; exit 1; }
}

ft_ctl() { ip netns exec "$FT_U" "$FT_BIN/dvpnctl" --kdf-cost interactive "$@"; }

# ft_new_account NAME: a keystore FT_H/NAME.json (passphrase $DVPN_PASSPHRASE); prints its
# address.
ft_new_account() {
  ft_ctl --keystore "$FT_H/$1.json" key new > /dev/null || return 1
  ft_ctl --keystore "$FT_H/$1.json" --json key show |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])'
}

# ft_start_ledger: the operator's account and dvpn-ledger in "internet" on FT_LEDGER_ADDR:7400.
ft_start_ledger() {
  export DVPN_PASSPHRASE=bench
  ft_new_account operator > /dev/null || { echo "dvpnctl key new failed" >&2; exit 1; }
  ft_spawn dvpn-ledger "$FT_H/ledger.log" ip netns exec "$FT_I" "$FT_BIN/dvpn-ledger" \
    --db "$FT_H/ledger.db" --listen $FT_LEDGER_ADDR:7400 --port-file "$FT_H/ledger.port" \
    --operator-keystore "$FT_H/operator.json" --challenge-period 60
  ft_wait_until 20 "$FT_LAST_PID" test -s "$FT_H/ledger.port" ||
    { echo "dvpn-ledger did not start:"; tail -20 "$FT_H/ledger.log"; exit 1; } >&2
  export DVPN_LEDGER=$FT_LEDGER_ADDR:7400
}

# ft_node_config FILE SELLER DATA_DIR PRICE_PER_MB [EXTRA_TOML_LINES]: a seller's node.toml
# serving full tunnel on FT_NODE_ADDR:7443 (UDP too), gossip on :7601, exit policy allowing
# only the iperf3 server. EXTRA is appended verbatim (whole tables, e.g. "[payments]\n...").
ft_node_config() {
  cat > "$1" <<EOF
[node]
ledger = "$FT_LEDGER_ADDR:7400"
keystore = "$FT_H/$2.json"
data_dir = "$3"
[gossip]
listen = "$FT_NODE_ADDR:7601"
round_ms = 200
[offer]
price_per_mb = "$4"
region = "local"
[tunnel]
listen = "$FT_NODE_ADDR:7443"
full_tunnel = true
allow = ["$FT_SERVER/32"]
${FT_TUNNEL_EXTRA:-}
[control]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
${5:-}
EOF
}

# ft_start_node CONFIG LOG: dvpn-node in "provider"; waits up to 20 s for "full-tunnel mode on".
# Returns 1 (the log says why) when it does not get there. FT_NODE_PID.
ft_start_node() {
  ft_spawn dvpn-node "$2" ip netns exec "$FT_P" "$FT_BIN/dvpn-node" --config "$1"
  FT_NODE_PID=$FT_LAST_PID
  ft_wait_until 20 "$FT_NODE_PID" grep -q "full-tunnel mode on" "$2"
}

# ft_start_client CLIENT LOG SOCK MAX_PRICE EXTRA_FLAGS...: dvpn-client --full-tunnel in
# "user" (bootstrap: the node's gossip), control socket SOCK; then connects (three tries of
# 20 s) and waits 2 s for the transport to settle on UDP. Returns 1 on failure. FT_CLIENT_PID.
ft_start_client() {
  local who=$1 logf=$2 sock=$3 maxp=$4 ok=0
  shift 4
  ft_spawn dvpn-client "$logf" ip netns exec "$FT_U" "$FT_BIN/dvpn-client" \
    --keystore "$FT_H/$who.json" --ledger $FT_LEDGER_ADDR:7400 --bootstrap $FT_NODE_ADDR:7601 \
    --max-price-per-mb "$maxp" --open-deposit 500 --socks 127.0.0.1:0 --control "unix:$sock" \
    --full-tunnel "$@"
  FT_CLIENT_PID=$FT_LAST_PID
  ft_wait_until 20 "$FT_CLIENT_PID" ft_ctl status --client "unix:$sock" || return 1
  for _ in 1 2 3; do
    kill -0 "$FT_CLIENT_PID" 2> /dev/null || return 1
    timeout 30 ip netns exec "$FT_U" "$FT_BIN/dvpnctl" connect --client "unix:$sock" \
      --full-tunnel --wait 20 > /dev/null 2>&1 && { ok=1; break; }
  done
  [ $ok = 1 ] || return 1
  sleep 2  # the transport settles on UDP after the first keepalive answer
}

# ft_transport SOCK: the client's transport (udp or tcp) as its status says.
ft_transport() {
  timeout 10 ip netns exec "$FT_U" "$FT_BIN/dvpnctl" status --client "unix:$1" 2> /dev/null |
    awk '/^transport:/ {print $2}'
}
