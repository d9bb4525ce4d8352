#!/bin/sh
# SPDX-License-Identifier: MIT
# The ABI check (docs/abi.md): describe the built libbaton.so with abidw
# (public headers only) and compare it with the committed baseline of its
# SONAME, tests/abi/libbaton.so.N.abi, with abidiff.  What the ABI rule
# allows (a sized struct growing at its end, new functions) is suppressed
# (tests/abi/suppressions.ini); any other change fails, and so does a
# SONAME with no baseline.  With --write, (re)write the baseline instead.
#
#   abi_check.sh [--write] LIB SRC_INCLUDE BIN_INCLUDE ABI_DIR
set -eu
write=0
if [ "${1:-}" = "--write" ]; then write=1; shift; fi
lib=$1 src_inc=$2 bin_inc=$3 abi_dir=$4
for tool in abidw abidiff; do
	if ! command -v $tool >/dev/null 2>&1; then
		echo "abi_check: $tool not found (Debian: abigail-tools); .ci/deps test installs it"
		exit 77
	fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# abidw keeps what the headers in one directory declare: stage them there.
mkdir -p "$tmp/include/baton"
cp "$src_inc"/*.h "$bin_inc"/version.h "$tmp/include/baton/"
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')
[ -n "$soname" ] || { echo "abi_check: $lib has no SONAME"; exit 1; }
abidw --headers-dir "$tmp/include/baton" --drop-private-types --no-corpus-path \
	--no-comp-dir-path --short-locs --drop-undefined-syms "$lib" >"$tmp/current.abi"
baseline="$abi_dir/$soname.abi"
if [ $write = 1 ]; then
	cp "$tmp/current.abi" "$baseline"
	echo "abi_check: wrote $baseline"
	exit 0
fi
if [ ! -f "$baseline" ]; then
	echo "abi_check: no baseline for $soname ($baseline)."
	echo "A new SONAME means an incompatible ABI on purpose: write its baseline with"
	echo "  cmake --build BUILD --target abi-baseline   (docs/abi.md)"
	exit 1
fi
set +e
abidiff --suppressions "$abi_dir/suppressions.ini" --no-added-syms \
	"$baseline" "$tmp/current.abi" >"$tmp/report" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ]; then
	cat "$tmp/report"
	echo "abi_check: $lib is not compatible with $baseline (abidiff status $rc)."
	echo "Fix the change (new fields go at the end of a sized struct; new functions,"
	echo "never changed ones), or bump BATON_ABI in CMakeLists.txt and write the new"
	echo "baseline (docs/abi.md)."
	exit 1
fi
echo "abi_check: $soname matches $baseline ($(grep -c '<function-decl' "$baseline") functions)"
