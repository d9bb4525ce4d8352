#!/bin/sh
# SPDX-License-Identifier: MIT
# Render each man page with man -l, as a user's man(1) would, and fail on
# any warning (man --warnings passes -w to groff) or a page without its
# NAME and SYNOPSIS/DESCRIPTION.
#   man_check.sh DIR PAGE...
set -eu
dir=$1; shift
command -v man >/dev/null 2>&1 || { echo "man_check: man not found (Debian: man-db)"; exit 77; }
status=0
for page in "$@"; do
	f="$dir/$page"
	if [ ! -f "$f" ]; then
		echo "missing: $f (is help2man installed?)"; status=1; continue
	fi
	out=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -E UTF-8 -l "$f" 2>"$dir/.warn") || {
		echo "$page: man failed"; cat "$dir/.warn"; status=1; continue; }
	if [ -s "$dir/.warn" ]; then
		echo "$page: warnings:"; cat "$dir/.warn"; status=1; continue
	fi
	for section in NAME DESCRIPTION; do
		echo "$out" | grep -q "^$section" || { echo "$page: no $section section"; status=1; }
	done
	echo "$page: $(echo "$out" | wc -l) lines, no warnings"
done
rm -f "$dir/.warn"
exit $status
