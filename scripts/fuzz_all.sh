#!/usr/bin/env bash
# Runs every libFuzzer target of the build (tests/fuzz: <name>_fuzzer) for a given time, two at a
# time (one per core), each from its seed corpus into a work corpus of its own, and prints one
# table row per target: executions, inputs kept, features, result. A target that crashes, leaks
# or times out leaves its reproducer in the work folder and makes the script exit 1.
# Usage: scripts/fuzz_all.sh [--build-dir DIR] [--seconds N] [--jobs N] [--work DIR]
#   (defaults: build, 300, 2, /tmp/dvpn-fuzz). Build the fuzzers first:
#   cmake --build build --target $(ls tests/fuzz/*_fuzz.cpp | xargs -n1 basename | sed 's/_fuzz.cpp/_fuzzer/')
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_DIR=build
SECONDS_EACH=300
JOBS=2
WORK=/tmp/dvpn-fuzz
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "usage: $0 [--build-dir DIR] [--seconds N] [--jobs N] [--work DIR]" >&2; exit 2 ;;
  esac
done
case "$SECONDS_EACH$JOBS" in *[!0-9]*) echo "--seconds and --jobs take whole numbers" >&2; exit 2 ;; esac

targets=()
for src in tests/fuzz/*_fuzz.cpp; do
  name=$(basename "$src" _fuzz.cpp)
  bin="$BUILD_DIR/bin/${name}_fuzzer"
  if [ ! -x "$bin" ]; then
    echo "missing $bin (configure with -DDVPN_LIBFUZZER=ON and build ${name}_fuzzer)" >&2
    exit 2
  fi
  targets+=("$name")
done
mkdir -p "$WORK"

run_one() {  # name
  local name=$1 dir="$WORK/$1"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  # -print_final_stats: executions; the log is kept for the table and any finding.
  if timeout $((SECONDS_EACH + 120)) "$BUILD_DIR/bin/${name}_fuzzer" \
      -max_total_time="$SECONDS_EACH" -use_value_profile=1 -max_len=4096 -timeout=10 \
      -rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" \
      "$dir/corpus" "tests/fuzz/corpus/$name" >"$dir/log" 2>&1; then
    echo ok >"$dir/result"
  else
    echo "finding (exit $?)" >"$dir/result"
  fi
}
export -f run_one
export BUILD_DIR SECONDS_EACH WORK

printf '%s\n' "${targets[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'

status=0
echo "| target | seconds | executions | exec/s | inputs kept | features (ft) | result |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for name in "${targets[@]}"; do
  dir="$WORK/$name"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$dir/log" | grep -o '[0-9]*$' || true)
  last=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1 || true)
  # g++ builds give libFuzzer comparison features (ft), not edge coverage (cov).
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || true)
  corpus=$(find "$dir/corpus" -type f | wc -l)
  result=$(cat "$dir/result" 2>/dev/null || echo "did not run")
  [ "$result" = ok ] || status=1
  echo "| $name | $SECONDS_EACH | ${execs:-?} | ${rate:-?} | $corpus | ${ft:-?} | $result |"
done
[ $status = 0 ] || echo "findings: see $WORK/<target>/log and artifacts/" >&2
exit $status
