#!/usr/bin/env bash
# Build everything (Release) and run the main benchmark, printing its table.
# For now that is the descriptor-passing benchmark; extra arguments go to
# `baton-bench fdpass` (try --help).  CSV lands in build/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps build
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >build/release.configure.log 2>&1 ||
  { cat build/release.configure.log; exit 1; }
cmake --build build/release -j"$(nproc)" >/dev/null
mkdir -p build/results
exec build/release/bench/baton-bench fdpass --csv build/results/fdpass.csv "$@"
