#!/bin/sh
# SPDX-License-Identifier: MIT
# libbaton.so must export exactly the functions the public headers declare
# with BT_API: no internal bt__ helper, no stray symbol, none missing.
set -eu
lib=$1; shift
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBR]$/ {print $3}' | sed 's/@.*//' | sort -u)
headers=""
for d in "$@"; do headers="$headers $(ls "$d"/*.h)"; done
declared=$(grep -hv '^#' $headers | tr '\n' ' ' | grep -o 'BT_API[^(;]*(' |
	sed -E 's/.*[ *](bt_[a-z0-9_]+)\($/\1/' | sort -u)
status=0
for s in $exported; do
	case " $(echo $declared) " in *" $s "*) ;; *) echo "exported but not declared: $s"; status=1 ;; esac
done
for s in $declared; do
	case " $(echo $exported) " in *" $s "*) ;; *) echo "declared but not exported: $s"; status=1 ;; esac
done
echo "$(echo "$exported" | wc -w) symbols exported, $(echo "$declared" | wc -w) declared"
exit $status
