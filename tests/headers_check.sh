#!/bin/sh
# SPDX-License-Identifier: MIT
# Each public header compiles alone, first in a translation unit of its
# own, as C11 and as C++ (they promise extern "C"), with the warnings CI
# uses: a user may include any one of them first.
#   headers_check.sh CC CXX INCLUDE_DIR GENERATED_INCLUDE_DIR
set -eu
cc=$1 cxx=$2 inc=$3 gen=$4
status=0
n=0
for h in "$inc"/baton/*.h; do
	name=baton/$(basename "$h")
	n=$((n + 1))
	for lang in c c++; do
		if [ "$lang" = c ]; then comp=$cc std=-std=c11; else comp=$cxx std=-std=c++11; fi
		command -v "$comp" >/dev/null 2>&1 || { [ "$lang" = c++ ] && continue; }
		if ! printf '#include <%s>\n' "$name" |
			"$comp" -x "$lang" $std -Wall -Wextra -Werror -pedantic -fsyntax-only \
				-I "$inc" -I "$gen" - 2>/tmp/headers_check.$$; then
			echo "$name does not compile alone as $lang:"
			cat /tmp/headers_check.$$
			status=1
		fi
	done
done
rm -f /tmp/headers_check.$$
echo "$n public headers checked"
exit $status
