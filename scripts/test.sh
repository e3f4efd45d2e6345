#!/usr/bin/env bash
# test.sh - install what is missing, build, and run the whole test suite:
#   1. a normal (debugoptimized) build: unit, fuzz-corpus and integration tests;
#   2. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer.
# Ends with one line "N passed, N failed" (CI reads it). Exit 0 only if all pass.
#
#   scripts/test.sh            both builds
#   TM_TEST_QUICK=1 scripts/test.sh   the normal build only
#   TM_TEST_SUITES="unit fuzz" scripts/test.sh   only these meson suites
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test || { echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
suites="${TM_TEST_SUITES:-}"

# Count results from meson's JSON test log of one build directory.
count() {
    local log="$1/meson-logs/testlog.json"
    [ -f "$log" ] || return
    read -r p f < <(/usr/bin/python3 - "$log" <<'PY'
import json, sys
p = f = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r != "SKIP":
        f += 1
print(p, f)
PY
)
    passed=$((passed + p))
    failed=$((failed + f))
}

run_suite() {
    local dir="$1"; shift
    local args=()
    for s in $suites; do args+=(--suite "$s"); done
    rm -f "$dir/meson-logs/testlog.json"
    meson test -C "$dir" --print-errorlogs "${args[@]}" "$@"
    count "$dir"
}

echo "== build (debugoptimized)"
# Warnings are errors here: a new warning fails the suite.
if bash scripts/build.sh build -Dwerror=true; then
    run_suite build
else
    echo "build failed"
    failed=$((failed + 1))
fi

if [ -z "${TM_TEST_QUICK:-}" ]; then
    echo "== build (AddressSanitizer + UndefinedBehaviorSanitizer)"
    # halt_on_error turns every UBSan finding into a failing test.
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
    export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
    if bash scripts/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false \
            -Dbuildtype=debug -Dwerror=true; then
        run_suite build-asan --timeout-multiplier 3
    else
        echo "sanitizer build failed"
        failed=$((failed + 1))
    fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
