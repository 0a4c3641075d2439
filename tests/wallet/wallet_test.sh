#!/usr/bin/env bash
# End-to-end wallet test: drives the real dvpn-ledger with the real dvpnctl, as a user would,
# and checks every step through `dvpnctl --json`.
#
#   wallet_test.sh PATH/TO/dvpn-ledger PATH/TO/dvpnctl
#
# Keys for an operator, a client and a provider; a ledger on 127.0.0.1 port 0; a deposit; a
# channel; promises signed offline and settled (also twice, and out of order); a forged one; a
# withdrawal and an overdraft; a wrong passphrase; a close that refunds after the challenge
# period; a live watch; the ledger shut down with SIGTERM; then an unreachable ledger.
# Every command is bounded by `timeout`, every wait by a deadline; the ledger is killed by PID
# on any exit.

set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 DVPN_LEDGER DVPNCTL" >&2
  exit 2
fi
LEDGER_BIN=$1
CTL_BIN=$2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/wallet_test.XXXXXX")
ledger_pid=""
watch_pid=""

stop_pid() {  # stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  [[ -n $watch_pid ]] && stop_pid "$watch_pid"
  [[ -n $ledger_pid ]] && stop_pid "$ledger_pid"
  if [[ $rc -ne 0 && -f $tmp/ledger.log ]]; then
    echo "--- ledger log ---" >&2
    tail -n 30 "$tmp/ledger.log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

step() { echo "--- $*"; }

# No ambient configuration from the environment running the test.
unset DVPN_LEDGER DVPN_KEYSTORE DVPN_PASSPHRASE

# dvpnctl, never hanging, never reading a terminal.
ctl() {
  timeout -k 2 20 "$CTL_BIN" --ledger "127.0.0.1:${port:-1}" "$@" </dev/null
}

# run_expect RC PATTERN CMD...: runs CMD (stdout -> $tmp/out, stderr -> $tmp/err) and checks
# its exit code and, when PATTERN is not empty, that stderr contains PATTERN.
run_expect() {
  local want=$1 pattern=$2
  shift 2
  local rc=0
  "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  if [[ $rc -ne $want ]]; then
    fail "expected exit $want, got $rc from: $* | stdout: $(cat "$tmp/out") | stderr: $(cat "$tmp/err")"
  fi
  if [[ -n $pattern ]] && ! grep -q -- "$pattern" "$tmp/err"; then
    fail "stderr of '$*' lacks '$pattern': $(cat "$tmp/err")"
  fi
}

# jget PATH < json: prints the value at a dotted path ("items.0.outcome").
jget() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d[int(k)] if k.isdigit() else d[k]
print(d)' "$1"
}

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
  [[ "$2" == "$3" ]] || fail "$1: got '$2', expected '$3'"
}

# json_of ARGS...: runs `ctl --json ARGS` expecting success and prints stdout.
json_of() {
  run_expect 0 "" ctl --json "$@"
  cat "$tmp/out"
}

OP_PASS="operator passphrase"
CLIENT_PASS="client passphrase"
printf 'provider passphrase\n' >"$tmp/provider.pass"

op() { DVPN_PASSPHRASE=$OP_PASS ctl --keystore "$tmp/op.json" "$@"; }
client() { DVPN_PASSPHRASE=$CLIENT_PASS ctl --keystore "$tmp/client.json" "$@"; }
provider() { ctl --keystore "$tmp/provider.json" --passphrase-file "$tmp/provider.pass" "$@"; }

# ---------------------------------------------------------------------------------------------
step "keys"
run_expect 0 "" op --kdf-cost test key new
run_expect 0 "" client --kdf-cost test key new
run_expect 0 "" provider --kdf-cost test key new
# Public parts without a passphrase (no DVPN_PASSPHRASE, stdin not a terminal).
OP=$(json_of --keystore "$tmp/op.json" key show | jget address)
CLIENT=$(json_of --keystore "$tmp/client.json" key show | jget address)
PROVIDER=$(json_of --keystore "$tmp/provider.json" key show | jget address)
[[ $CLIENT =~ ^dv[0-9a-f]{48}$ ]] || fail "client address '$CLIENT'"
expect_eq "keystore mode" "$(stat -c %a "$tmp/client.json")" 600
! grep -q "$CLIENT_PASS" "$tmp/client.json" || fail "passphrase in the keystore"

cp "$tmp/client.json" "$tmp/client.copy"
run_expect 1 "already exists" client --kdf-cost test key new
cmp -s "$tmp/client.json" "$tmp/client.copy" || fail "key new overwrote a keystore"

# Import: the well-known 0x22... key from docs/protocol.md becomes a fourth account.
printf '%s\n' "$(printf '22%.0s' $(seq 32))" >"$tmp/secret.hex"
DVPN_PASSPHRASE=imp timeout 20 "$CTL_BIN" --keystore "$tmp/imported.json" --kdf-cost test --json \
  key import <"$tmp/secret.hex" >"$tmp/out" 2>"$tmp/err" || fail "key import: $(cat "$tmp/err")"
IMPORTED=$(jget address <"$tmp/out")
! grep -q "$(cat "$tmp/secret.hex")" "$tmp/out" || fail "key import printed the secret"
run_expect 2 "passphrase is needed" ctl --keystore "$tmp/client.json" promise \
  --channel "$(printf '0%.0s' $(seq 64))" --cumulative 1 --ledger-id "$(printf '0%.0s' $(seq 64))"

# ---------------------------------------------------------------------------------------------
step "ledger"
"$LEDGER_BIN" --db "$tmp/ledger.db" --listen 127.0.0.1:0 --port-file "$tmp/port" \
  --name wallet-test --operator-keystore "$tmp/op.json" --challenge-period 1 \
  --log-level warn >"$tmp/ledger.log" 2>&1 &
ledger_pid=$!
port=""
for _ in $(seq 100); do  # up to 10 s
  if [[ -s $tmp/port ]] && grep -qE '^[0-9]+$' "$tmp/port"; then
    port=$(cat "$tmp/port")
    break
  fi
  kill -0 "$ledger_pid" 2>/dev/null || fail "dvpn-ledger exited at start"
  sleep 0.1
done
[[ -n $port ]] || fail "dvpn-ledger did not write its port file"

info=$(json_of info)
expect_eq "ledger name" "$(jget name <<<"$info")" wallet-test
expect_eq "operator" "$(jget operator <<<"$info")" "$OP"
expect_eq "challenge period" "$(jget challenge_period_seconds <<<"$info")" 1
[[ $(jget ledger_id <<<"$info") =~ ^[0-9a-f]{64}$ ]] || fail "ledger id"

# A live watch of the client, from the beginning, for its first four movements.
timeout -k 2 30 "$CTL_BIN" --ledger "127.0.0.1:$port" --json watch "$CLIENT" --after 0 --count 4 \
  >"$tmp/watch.out" 2>"$tmp/watch.err" </dev/null &
watch_pid=$!

# ---------------------------------------------------------------------------------------------
step "deposit"
run_expect 1 "only the ledger's operator" client deposit --to "$CLIENT" 5
run_expect 1 "is not an amount" op deposit --to "$CLIENT" 1.0000001
run_expect 1 "is not an address" op deposit --to dv1234 10
run_expect 2 "" op deposit 10   # --to is required
out=$(DVPN_PASSPHRASE=$OP_PASS json_of --keystore "$tmp/op.json" deposit --to "$CLIENT" 10)
expect_eq "balance after deposit" "$(jget balance_micro <<<"$out")" 10000000
expect_eq "client balance" "$(json_of balance "$CLIENT" | jget balance_micro)" 10000000
expect_eq "own balance" \
  "$(DVPN_PASSPHRASE=$CLIENT_PASS json_of --keystore "$tmp/client.json" balance | jget balance)" \
  10.000000

# ---------------------------------------------------------------------------------------------
step "channel"
run_expect 1 "is not a duration" client channel open --provider "$PROVIDER" --amount 4 --expires-in 5x
run_expect 1 "insufficient balance" client channel open --provider "$PROVIDER" --amount 11
run_expect 0 "" client --json channel open --provider "$PROVIDER" --amount 4 --expires-in 1h
chan=$(cat "$tmp/out")
CH=$(jget channel_id <<<"$chan")
expect_eq "channel status" "$(jget status <<<"$chan")" open
expect_eq "channel deposit" "$(jget deposit_micro <<<"$chan")" 4000000
acct=$(json_of balance "$CLIENT")
expect_eq "client balance after open" "$(jget balance_micro <<<"$acct")" 6000000
expect_eq "client escrow after open" "$(jget escrowed_micro <<<"$acct")" 4000000
expect_eq "channel list" "$(json_of channel list "$PROVIDER" | jget channels.0.channel_id)" "$CH"

# ---------------------------------------------------------------------------------------------
step "promises"
run_expect 0 "" client promise --channel "$CH" --cumulative 1.5
read -r p1_ch p1_amount p1_sig <"$tmp/out"
expect_eq "promise channel" "$p1_ch" "$CH"
expect_eq "promise amount" "$p1_amount" 1.500000
[[ $p1_sig =~ ^[0-9a-f]{128}$ ]] || fail "promise signature '$p1_sig'"
run_expect 0 "" client promise --channel "$CH" --cumulative 2500000u
cp "$tmp/out" "$tmp/p2.txt"
run_expect 0 "" client --json promise --channel "$CH" --cumulative 4
p4_sig=$(jget signature <"$tmp/out")

step "settle"
run_expect 0 "" provider --json settle --channel "$p1_ch" --cumulative "$p1_amount" --signature "$p1_sig"
expect_eq "first settle" "$(jget items.0.outcome <"$tmp/out")" settled
expect_eq "first settle moved" "$(jget items.0.moved_micro <"$tmp/out")" 1500000
expect_eq "provider balance" "$(json_of balance "$PROVIDER" | jget balance_micro)" 1500000

# The same promise again moves nothing.
run_expect 0 "" provider --json settle --channel "$p1_ch" --cumulative "$p1_amount" --signature "$p1_sig"
expect_eq "re-settle" "$(jget items.0.outcome <"$tmp/out")" already_settled
expect_eq "re-settle moved" "$(jget items.0.moved_micro <"$tmp/out")" 0
expect_eq "provider balance after re-settle" "$(json_of balance "$PROVIDER" | jget balance_micro)" 1500000

# A file: the newer promise, then the older one again.
{ echo "# channel cumulative signature"; cat "$tmp/p2.txt"; echo; echo "$p1_ch $p1_amount $p1_sig"; } \
  >"$tmp/batch.txt"
run_expect 0 "" provider --json settle --file "$tmp/batch.txt"
expect_eq "batch item 0" "$(jget items.0.outcome <"$tmp/out")" settled
expect_eq "batch item 0 moved" "$(jget items.0.moved_micro <"$tmp/out")" 1000000
expect_eq "batch item 1" "$(jget items.1.outcome <"$tmp/out")" already_settled
expect_eq "batch total" "$(jget total_moved_micro <"$tmp/out")" 1000000
expect_eq "batch provider balance" "$(jget provider_balance_micro <"$tmp/out")" 2500000

# A forged promise (the 4-credit signature claiming 3.9 credits) is refused, nothing moves.
run_expect 1 "refused" provider --json settle --channel "$CH" --cumulative 3.9 --signature "$p4_sig"
expect_eq "forged" "$(jget items.0.outcome <"$tmp/out")" bad_signature
expect_eq "balance after forgery" "$(json_of balance "$PROVIDER" | jget balance_micro)" 2500000
run_expect 2 "same number" provider settle --channel "$CH" --cumulative 1
echo "nonsense line" >"$tmp/bad.txt"
run_expect 1 "bad.txt:1: expected" provider settle --file "$tmp/bad.txt"

expect_eq "channel settled" "$(json_of channel show "$CH" | jget settled_micro)" 2500000

# ---------------------------------------------------------------------------------------------
step "withdraw"
run_expect 1 "the ledger refused the withdrawal: insufficient balance" \
  provider withdraw 3 --destination "bank account 1"
expect_eq "balance after overdraft" "$(json_of balance "$PROVIDER" | jget balance_micro)" 2500000
run_expect 1 "wrong passphrase" \
  ctl --keystore "$tmp/provider.json" --passphrase-file "$tmp/secret.hex" withdraw 1 --destination x
DVPN_PASSPHRASE=wrong run_expect 1 "wrong passphrase" \
  ctl --keystore "$tmp/client.json" withdraw 1 --destination x
run_expect 0 "" provider --json withdraw 2 --destination "bank account 1"
expect_eq "balance after withdraw" "$(jget balance_micro <"$tmp/out")" 500000

# ---------------------------------------------------------------------------------------------
step "close"
run_expect 0 "" client --json channel close "$CH"
expect_eq "closing" "$(jget status <"$tmp/out")" closing
run_expect 1 "refused the top-up" client channel topup "$CH" 1
status=""
for _ in $(seq 100); do  # challenge period 1 s, finalizer every second: up to 10 s
  status=$(json_of channel show "$CH" | jget status)
  [[ $status == closed ]] && break
  sleep 0.1
done
expect_eq "closed" "$status" closed
expect_eq "refunded" "$(json_of channel show "$CH" | jget refunded_micro)" 1500000
acct=$(json_of balance "$CLIENT")
expect_eq "client balance after close" "$(jget balance_micro <<<"$acct")" 7500000
expect_eq "client escrow after close" "$(jget escrowed_micro <<<"$acct")" 0

# Conservation: deposited - withdrawn == sum of balances.
info=$(json_of info)
expect_eq "total deposited" "$(jget total_deposited_micro <<<"$info")" 10000000
expect_eq "total withdrawn" "$(jget total_withdrawn_micro <<<"$info")" 2000000
expect_eq "provider balance at the end" "$(json_of balance "$PROVIDER" | jget balance_micro)" 500000
expect_eq "imported balance" "$(json_of balance "$IMPORTED" | jget balance_micro)" 0

# ---------------------------------------------------------------------------------------------
step "history and watch"
hist=$(json_of history "$CLIENT")
kinds=$(python3 -c 'import json,sys; print(" ".join(m["kind"] for m in json.load(sys.stdin)["movements"]))' <<<"$hist")
expect_eq "client history" "$kinds" "deposit escrow_lock settle_pay settle_pay escrow_refund"
page=$(json_of history "$CLIENT" --limit 2)
expect_eq "page size" "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["movements"]))' <<<"$page")" 2
next=$(jget next_after_seq <<<"$page")
[[ $next -gt 0 ]] || fail "history paging: next_after_seq $next"
rest=$(json_of history "$CLIENT" --after "$next")
expect_eq "rest of history" "$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["movements"]))' <<<"$rest")" 3

watch_rc=0
for _ in $(seq 100); do
  kill -0 "$watch_pid" 2>/dev/null || break
  sleep 0.1
done
wait "$watch_pid" || watch_rc=$?
watch_pid=""
expect_eq "watch exit code" "$watch_rc" 0
wkinds=$(python3 -c 'import json,sys; print(" ".join(json.loads(l)["kind"] for l in sys.stdin))' <"$tmp/watch.out")
expect_eq "watched movements" "$wkinds" "deposit escrow_lock settle_pay settle_pay"

# ---------------------------------------------------------------------------------------------
step "shutdown and unreachable ledger"
kill -TERM "$ledger_pid"
ledger_rc=0
for _ in $(seq 100); do
  kill -0 "$ledger_pid" 2>/dev/null || break
  sleep 0.1
done
wait "$ledger_pid" || ledger_rc=$?
ledger_pid=""
expect_eq "dvpn-ledger exit code after SIGTERM" "$ledger_rc" 0
run_expect 3 "cannot reach the ledger" ctl balance "$CLIENT"
run_expect 3 "cannot reach the ledger" provider withdraw 0.1 --destination x
run_expect 3 "" ctl watch "$CLIENT" --after 0

echo "PASS"
