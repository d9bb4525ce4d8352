#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job: build everything (Release) and run the headline benchmark,
# every server design under the same load in one run, and print its table
# (about 2.5 minutes on 2 cores).  CSV lands in build/results/.
#
#   bench/run.sh                 baton-bench conns (the headline table)
#   bench/run.sh conns ARGS...   with options (try --help)
#   bench/run.sh fdpass ARGS...  descriptors/s through SCM_RIGHTS by batch size
#   bench/run.sh load ARGS...    the load generator alone
#   bench/run.sh reload ARGS...  reloads under keep-alive load: baton, a
#                                restart of baton, nginx and HAProxy
#                                (bench/reload_bench.py; about 2 minutes)
#   bench/run.sh drain ARGS...   one host of two taken out behind HAProxy
#                                under keep-alive load: baton with and
#                                without --grace, nginx (bench/drain_bench.py;
#                                about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
.ci/deps bench
mkdir -p build/results
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >build/release.configure.log 2>&1 ||
  { cat build/release.configure.log; exit 1; }
cmake --build build/release -j"$(nproc)" >/dev/null
cmd=${1:-conns}
[ $# -gt 0 ] && shift
case $cmd in
  conns) exec build/release/bench/baton-bench conns --csv build/results/conns.csv "$@" ;;
  fdpass) exec build/release/bench/baton-bench fdpass --csv build/results/fdpass.csv "$@" ;;
  reload) exec python3 bench/reload_bench.py build/release "$@" ;;
  drain) exec python3 bench/drain_bench.py build/release "$@" ;;
  *) exec build/release/bench/baton-bench "$cmd" "$@" ;;
esac
