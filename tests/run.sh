#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build everything and run the whole test suite with ctest, four times over:
#   build/check   gcc, warnings as errors
#   build/asan    gcc, AddressSanitizer + UndefinedBehaviorSanitizer
#   build/tsan    gcc, ThreadSanitizer
#   build/fuzz    clang, ASan + UBSan, then the libFuzzer targets (the wire
#                 decoder, baton-httpd's request parser, the --metrics
#                 listener's request heads, the PROXY protocol header) for
#                 FUZZ_SECONDS each (default 60) from their seed corpora
# Installs the Debian packages it needs first (as root).  Exit 0 only if
# every suite passed.  SUITES="check asan" runs a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps test

jobs=$(nproc)
suites=${SUITES:-check asan tsan fuzz}
fuzz_seconds=${FUZZ_SECONDS:-60}
# A sanitizer report is a failure, never a warning.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

suite() {
  local name=$1; shift
  echo "=== suite $name: cmake $*"
  cmake -S . -B "build/$name" -DBATON_WERROR=ON "$@" >"build/$name.configure.log" 2>&1 ||
    { cat "build/$name.configure.log"; return 1; }
  cmake --build "build/$name" -j"$jobs"
  (cd "build/$name" && ctest --output-on-failure --timeout 600)
}

mkdir -p build
failed=()
for s in $suites; do
  case $s in
    check) suite check -DCMAKE_BUILD_TYPE=RelWithDebInfo || failed+=(check) ;;
    asan)  suite asan -DCMAKE_BUILD_TYPE=Debug -DBATON_ASAN=ON -DBATON_UBSAN=ON || failed+=(asan) ;;
    tsan)  suite tsan -DCMAKE_BUILD_TYPE=Debug -DBATON_TSAN=ON || failed+=(tsan) ;;
    fuzz)
      if suite fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
           -DBATON_ASAN=ON -DBATON_UBSAN=ON -DBATON_FUZZ=ON; then
        for target in wire http metrics proxy; do
          echo "=== fuzz_$target for ${fuzz_seconds}s"
          rm -rf "build/fuzz/corpus_$target" && mkdir -p "build/fuzz/corpus_$target"
          case $target in
            wire) seeds=tests/fuzz/corpus ;;
            *) seeds=tests/fuzz/${target}_corpus ;;
          esac
          cp "$seeds"/* "build/fuzz/corpus_$target/"
          if "build/fuzz/tests/fuzz_$target" -max_total_time="$fuzz_seconds" -timeout=10 \
               -rss_limit_mb=2048 -artifact_prefix="build/fuzz/$target-" "build/fuzz/corpus_$target" \
               >"build/fuzz/fuzz_$target.log" 2>&1; then
            grep -E "^#[0-9]+ +DONE|Done [0-9]+ runs" "build/fuzz/fuzz_$target.log" | tail -2
          else
            tail -40 "build/fuzz/fuzz_$target.log"
            echo "fuzz_$target found a crash or leak: build/fuzz/$target-crash-* reproduces it"
            failed+=("fuzz_$target")
          fi
        done
      else
        failed+=(fuzz)
      fi ;;
    *) echo "unknown suite $s" >&2; exit 2 ;;
  esac
done

if ((${#failed[@]})); then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed: $suites"
