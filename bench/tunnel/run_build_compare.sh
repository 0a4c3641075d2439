#!/usr/bin/env bash
# Two builds of the project measured in the same run: the tunnel (run_socks_compare.sh --only dvpn)
# and the paid tunnel beside the free one (run_payments_compare.sh), the two builds alternating
# inside every round, so that drift in machine load falls on both. For a change that must cost no
# speed (issue 15: the restructure measured against the build before it).
#
# Prints the medians of each build, the ratio new/old of the medians and, beside it, the spread
# (min..max) of the per-round ratios new/old: a difference inside that spread is noise.
# For the paid tunnel it compares paid/free per round, old against new.
#
# Everything binds to 127.0.0.1 (the two scripts it calls say how, and stop what they start).
#
# Usage: bench/tunnel/run_build_compare.sh --old DIR --new DIR [options]
#   --old DIR, --new DIR  build directories holding bin/{dvpn-tunnel-exit,dvpn-tunnel-client,
#                         dvpn-ledger,dvpnctl}
#   --runs N              rounds, default 9
#   --bytes SIZE          bulk bytes per direction per run, default 512M
#   --pings N             round trips in the rtt phase, default 2000
#   --conns N             fresh connections in the connect phase, default 200
#   --skip-socks          only the paid/free comparison
#   --skip-payments       only the tunnel comparison
# Exit status: 0 when every run succeeded, 1 on usage errors, 2 when a run failed.
set -euo pipefail

OLD=""; NEW=""; RUNS=9; BYTES=512M; PINGS=2000; CONNS=200; SOCKS=1; PAY=1
while [ $# -gt 0 ]; do
  case "$1" in
    --old) OLD=${2:?}; shift ;;
    --new) NEW=${2:?}; shift ;;
    --runs) RUNS=${2:?}; shift ;;
    --bytes) BYTES=${2:?}; shift ;;
    --pings) PINGS=${2:?}; shift ;;
    --conns) CONNS=${2:?}; shift ;;
    --skip-socks) SOCKS=0 ;;
    --skip-payments) PAY=0 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "run_build_compare: unknown option $1" >&2; exit 1 ;;
  esac
  shift
done
[ -n "$OLD" ] && [ -n "$NEW" ] || { echo "run_build_compare: --old and --new are required" >&2; exit 1; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "run_build_compare: --runs wants a positive integer" >&2; exit 1; }
for d in "$OLD" "$NEW"; do
  for b in dvpn-tunnel-exit dvpn-tunnel-client dvpn-ledger dvpnctl; do
    [ -x "$d/bin/$b" ] || { echo "run_build_compare: $d/bin/$b is missing" >&2; exit 1; }
  done
done
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d "${TMPDIR:-/tmp}/build_compare.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
trap 'exit 130' INT TERM
FAILED=0

one() {  # KIND BUILD_NAME BUILD_DIR ROUND
  local kind=$1 name=$2 dir=$3 round=$4 log="$OUT/$1.$2.$4.log"
  if [ "$kind" = socks ]; then
    "$HERE/run_socks_compare.sh" --runs 1 --only dvpn --no-direct --no-install --build-dir "$dir" \
      --bytes "$BYTES" --pings "$PINGS" --conns "$CONNS" --results "$OUT/socks.$name" >"$log" 2>&1 ||
      { echo "run_build_compare: socks round $round ($name) failed; last lines:" >&2; tail -n 15 "$log" >&2; FAILED=1; }
  else
    "$HERE/run_payments_compare.sh" --runs 1 --build-dir "$dir" \
      --bytes "$BYTES" --pings "$PINGS" --conns "$CONNS" --results "$OUT/pay.$name" >"$log" 2>&1 ||
      { echo "run_build_compare: payments round $round ($name) failed; last lines:" >&2; tail -n 15 "$log" >&2; FAILED=1; }
  fi
}

echo "run_build_compare: old=$OLD new=$NEW, $RUNS round(s), --bytes $BYTES --pings $PINGS --conns $CONNS"
echo "run_build_compare: load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
for round in $(seq 1 "$RUNS"); do
  if [ $((round % 2)) = 1 ]; then order=(old new); else order=(new old); fi
  for kind in socks pay; do
    [ "$kind" = socks ] && [ "$SOCKS" = 0 ] && continue
    [ "$kind" = pay ] && [ "$PAY" = 0 ] && continue
    for name in "${order[@]}"; do
      if [ "$name" = old ]; then one "$kind" old "$OLD" "$round"; else one "$kind" new "$NEW" "$round"; fi
    done
  done
  echo "run_build_compare: round $round done"
done
echo "run_build_compare: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" <<'EOF'
import os, statistics, sys
out = sys.argv[1]
def load(path, label):
    rows = []
    if os.path.exists(path):
        for line in open(path):
            kv = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
            if kv.get("label") == label:
                rows.append(kv)
    return rows
def val(r, f):
    v = r.get(f, "NA")
    return None if v in ("NA", "") else float(v)
def report(title, old, new, fields):
    print(f"\n{title}: old n={len(old)}, new n={len(new)}")
    print(f"{'':16}{'old median':>12}{'new median':>12}{'new/old':>9}   per-round new/old (min..max)   better")
    for f, better in fields:
        o = [val(r, f) for r in old if val(r, f) is not None]
        n = [val(r, f) for r in new if val(r, f) is not None]
        if not o or not n:
            continue
        mo, mn = statistics.median(o), statistics.median(n)
        rs = [b / a for a, b in zip([val(r, f) for r in old], [val(r, f) for r in new])
              if a and b is not None]
        spread = f"{min(rs):.3f}..{max(rs):.3f} (median {statistics.median(rs):.3f})" if rs else "-"
        print(f"{f:16}{mo:12.2f}{mn:12.2f}{mn / mo:9.3f}   {spread:30} {better}")
fields = [("up_MBps", "higher"), ("down_MBps", "higher"), ("rtt_p50_us", "lower"),
          ("rtt_p99_us", "lower"), ("conn_p50_ms", "lower"), ("conns_per_s", "higher")]
report("tunnel (dvpn-tunnel-client -> dvpn-tunnel-exit)",
       load(f"{out}/socks.old", "dvpn"), load(f"{out}/socks.new", "dvpn"), fields)
pay = {b: (load(f"{out}/pay.{b}", "free"), load(f"{out}/pay.{b}", "paid")) for b in ("old", "new")}
if pay["old"][1] or pay["new"][1]:
    report("paid tunnel", pay["old"][1], pay["new"][1], fields[:3])
    print(f"\npaid/free per round (each build's paid run beside its own free run)")
    for f in ("up_MBps", "down_MBps"):
        per = {}
        for b in ("old", "new"):
            free, paid = pay[b]
            per[b] = [val(p, f) / val(q, f) for q, p in zip(free, paid) if val(q, f)]
        if per["old"] and per["new"]:
            o, n = per["old"], per["new"]
            print(f"  {f:10} old median {statistics.median(o):.3f} ({min(o):.3f}..{max(o):.3f})"
                  f"   new median {statistics.median(n):.3f} ({min(n):.3f}..{max(n):.3f})")
EOF
exit $((FAILED * 2))
