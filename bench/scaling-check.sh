#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Check docs/scaling.md's capacity model on this machine: the acceptor is
# made the limit by a CPU quota on its threads (a cgroup of the cpu
# controller, one per acceptor thread), and the rate it then sustains is
# compared with the model's prediction, quota / (acceptor CPU per
# connection), for each number of acceptors.
#
#   bench/scaling-check.sh [BUILD_DIR] [QUOTA_PERCENT ...]
#
# As root, with the cgroup v1 cpu controller mounted at /sys/fs/cgroup/cpu
# (cgroup v2 machines: see docs/scaling.md).  Servers listen on 127.0.0.1
# only; every load is bounded (LOAD_SECONDS, default 4 s).
set -eu

BUILD=${1:-build/release}
[ $# -gt 0 ] && shift
QUOTAS=${*:-"3 6"}
SECONDS_LOAD=${LOAD_SECONDS:-4}
CLIENTS=${CLIENTS:-64}
MODE=${MODE:-process}
HTTPD=$BUILD/apps/baton-httpd
BENCH=$BUILD/bench/baton-bench
CG=/sys/fs/cgroup/cpu
# Every acceptor accepts from the start (no standby): the model's K.
export BATON_ACCEPTORS_ALWAYS=1

die() { echo "scaling-check: $*" >&2; exit 1; }
[ -x "$HTTPD" ] && [ -x "$BENCH" ] || die "no $HTTPD or $BENCH: build first (cmake --build $BUILD)"
[ "$(id -u)" = 0 ] || die "needs root (it makes cgroups)"
[ -w "$CG/tasks" ] || die "no cgroup v1 cpu controller at $CG (cgroup v2: see docs/scaling.md)"

TOP=$CG/baton-scaling-$$
SRV=
cleanup() {
	for d in "$TOP"/*/; do
		[ -d "$d" ] || continue
		for t in $(cat "$d/tasks" 2>/dev/null); do echo "$t" > "$CG/tasks" 2>/dev/null || true; done
		rmdir "$d" 2>/dev/null || true
	done
	rmdir "$TOP" 2>/dev/null || true
	if [ -n "$SRV" ]; then kill -TERM "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi
	SRV=
}
trap cleanup EXIT INT TERM
mkdir "$TOP"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The acceptor process's pid (title "baton-httpd: acceptor", under $SRV).
acceptor_pid() {
	for p in $(pgrep -P "$SRV") "$SRV"; do
		case "$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)" in
		*": acceptor"*) echo "$p"; return 0;;
		esac
	done
	return 1
}

# Its acceptor threads: the main thread and those named "acceptor k".
acceptor_tids() {
	a=$1
	for t in /proc/$a/task/*; do
		tid=${t##*/}
		if [ "$tid" = "$a" ] || grep -q '^acceptor ' "$t/comm"; then echo "$tid"; fi
	done
}

# Sum of the threads' on-CPU nanoseconds (schedstat).
cpu_ns() {
	a=$1; shift
	s=0
	for tid in "$@"; do s=$((s + $(cut -d' ' -f1 "/proc/$a/task/$tid/schedstat"))); done
	echo "$s"
}

# run K QUOTA: one server with K acceptors, each acceptor thread held to
# QUOTA percent of a CPU (0: none); sets RPS and AUS (the acceptor threads'
# CPU per connection, us).
run() {
	k=$1 q=$2
	p=$(port)
	"$HTTPD" --listen 127.0.0.1:"$p" --workers 2 --mode "$MODE" --acceptors "$k" \
		--control none 2>/dev/null &
	SRV=$!
	i=0
	until a=$(acceptor_pid) && [ "$(acceptor_tids "$a" | wc -l)" -ge "$k" ]; do
		i=$((i + 1)); [ $i -lt 200 ] || die "the server did not start"; sleep 0.05
	done
	tids=$(acceptor_tids "$a")
	if [ "$q" -gt 0 ]; then
		for tid in $tids; do
			mkdir "$TOP/$tid"
			echo 100000 > "$TOP/$tid/cpu.cfs_period_us"
			echo $((q * 1000)) > "$TOP/$tid/cpu.cfs_quota_us"
			echo "$tid" > "$TOP/$tid/tasks"
		done
	fi
	c0=$(cpu_ns "$a" $tids)
	out=$("$BENCH" load --connect 127.0.0.1:"$p" --clients "$CLIENTS" --threads 2 \
		--seconds "$SECONDS_LOAD" | grep '^RESULT')
	c1=$(cpu_ns "$a" $tids)
	cleanup
	mkdir -p "$TOP"
	RPS=$(echo "$out" | sed 's/.* rps=\([0-9.]*\).*/\1/')
	req=$(echo "$out" | sed 's/.*requests=\([0-9]*\).*/\1/')
	[ "$req" -gt 0 ] || die "no request served: $out"
	AUS=$(awk -v c=$((c1 - c0)) -v n="$req" 'BEGIN { printf "%.2f", c / n / 1000 }')
}

echo "baton scaling check: $MODE mode, 2 workers, $CLIENTS clients, ${SECONDS_LOAD} s per run"
run 1 0
A=$AUS
echo "acceptor CPU per connection, no quota, one acceptor: $A us ($RPS conns/s)"
printf '%-10s %-14s %12s %12s %8s %16s\n' acceptors "quota each" predicted measured ratio "acceptor us/conn"
for k in 1 2; do
	for q in $QUOTAS; do
		run "$k" "$q"
		pred=$(awk -v k="$k" -v q="$q" -v a="$A" 'BEGIN { printf "%.0f", k * q / 100 / a * 1e6 }')
		printf '%-10s %-14s %12s %12.0f %8.2f %16s\n' "$k" "$q% of a CPU" "$pred" "$RPS" \
			"$(awk -v m="$RPS" -v p="$pred" 'BEGIN { printf "%.2f", m / p }')" "$AUS"
	done
done
