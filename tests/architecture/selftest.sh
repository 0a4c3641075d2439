#!/usr/bin/env bash
# check_deps.py finds what it should: a small tree that keeps the rules passes, then each
# breach (an include across the rules, an internal header used elsewhere, a link across the
# rules, a cycle in the rules, code in no unit) makes it fail, naming the breach.
set -euo pipefail
CHECK=$(cd "$(dirname "$0")" && pwd)/check_deps.py
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

make_tree() {
  rm -rf "$T/r" && mkdir -p "$T/r/docs" "$T/r/a" "$T/r/b" "$T/r/tests"
  cat > "$T/r/docs/architecture.md" <<'MD'
```dependencies
a:
b: a
```
MD
  echo '#pragma once' > "$T/r/a/a.h"
  echo '#pragma once' > "$T/r/a/a_internal.h"
  echo '#include "a/a.h"' > "$T/r/b/b.cpp"
  echo '#include "b/b.h"' > "$T/r/tests/t.cpp"  # tests may use anything
  printf 'add_library(dvpn_a a.cpp)\n' > "$T/r/a/CMakeLists.txt"
  printf 'add_library(dvpn_b b.cpp)\ntarget_link_libraries(dvpn_b PUBLIC dvpn_a)\n' \
    > "$T/r/b/CMakeLists.txt"
}

expect_fail() {  # what, expected text
  if out=$(python3 "$CHECK" "$T/r" 2>&1); then
    echo "selftest: $1 was not found"; exit 1
  fi
  grep -qF "$2" <<<"$out" || { echo "selftest: $1: expected '$2' in: $out"; exit 1; }
}

make_tree
python3 "$CHECK" "$T/r" >/dev/null || { echo "selftest: a clean tree failed"; exit 1; }

make_tree; echo '#include "b/b.h"' >> "$T/r/a/a.h"
expect_fail "an include across the rules" 'a/a.h:2: a may not use b (includes b/b.h)'

make_tree; echo '#include "a/a_internal.h"' >> "$T/r/b/b.cpp"
expect_fail "an internal header" 'includes a/a_internal.h, internal to a'

make_tree; printf 'target_link_libraries(dvpn_a PUBLIC dvpn_b)\n' >> "$T/r/a/CMakeLists.txt"
expect_fail "a link across the rules" 'dvpn_a (a) may not link dvpn_b (b)'

make_tree; sed -i 's/^a:$/a: b/' "$T/r/docs/architecture.md"
expect_fail "a cycle" 'the allowed edges form a cycle: a -> b -> a'

make_tree; mkdir -p "$T/r/c" && echo '' > "$T/r/c/c.cpp"
expect_fail "code in no unit" 'c/c.cpp: in no unit'

echo "selftest: every breach found"
