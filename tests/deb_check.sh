#!/bin/sh
# SPDX-License-Identifier: MIT
# The Debian package, built with cpack -G DEB from this build tree.
#   deb_check.sh contents BUILD_DIR VERSION
#       build it and check what it holds with dpkg-deb -c / -f
#   deb_check.sh install BUILD_DIR VERSION CC "SAN_FLAGS"
#       install it with dpkg -i, use it from /usr (baton-httpd --version, a
#       program built with pkg-config, man, systemd-analyze verify), then
#       dpkg -P.  Exit 77 where the test may not: not root, no dpkg, or a
#       baton package already installed (never replaced by a test).
set -eu
mode=$1 build=$2 version=$3
deb_dir=$build/tests/deb
deb=$deb_dir/baton_${version}_$(dpkg --print-architecture 2>/dev/null || echo amd64).deb
fail() { echo "deb_check: $*"; exit 1; }

if [ "$mode" = contents ]; then
	command -v dpkg-deb >/dev/null 2>&1 || { echo "deb_check: no dpkg-deb"; exit 77; }
	rm -rf "$deb_dir"
	(cd "$build" && cpack -G DEB -B "$deb_dir" >"$build/tests/cpack.log" 2>&1) ||
		{ cat "$build/tests/cpack.log"; fail "cpack -G DEB failed"; }
	[ -f "$deb" ] || fail "no $deb"
	list=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's#^\./#/#')
	for f in /usr/lib/libbaton.so.1 /usr/lib/libbaton.so /usr/lib/libbaton.a \
		/usr/lib/pkgconfig/baton.pc /usr/lib/cmake/baton/batonConfig.cmake \
		/usr/include/baton/runtime.h /usr/include/baton/loop.h /usr/include/baton/queue.h \
		/usr/include/baton/acceptor.h /usr/include/baton/fdpass.h /usr/include/baton/wire.h \
		/usr/include/baton/pool.h /usr/include/baton/log.h /usr/include/baton/version.h \
		/usr/include/baton/metrics.h /usr/bin/baton-ctl /usr/share/man/man1/baton-ctl.1 \
		/usr/bin/baton-httpd /usr/bin/baton-echo /usr/bin/baton-spool /usr/bin/baton-bench \
		/usr/libexec/baton/bench-fork /usr/libexec/baton/bench-inplace \
		/usr/libexec/baton/bench-prefork /usr/libexec/baton/bench-reuseport \
		/usr/share/man/man7/baton.7 /usr/share/man/man1/baton-httpd.1 \
		/usr/share/man/man1/baton-echo.1 /usr/share/man/man1/baton-spool.1 \
		/usr/share/man/man1/baton-bench.1 /usr/share/doc/baton/copyright \
		/usr/share/doc/baton/examples/baton-echo.c \
		/usr/share/doc/baton/examples/systemd/baton-httpd.service \
		/usr/share/doc/baton/examples/systemd/baton-httpd.socket; do
		echo "$list" | grep -qx "$f" || fail "$f is not in the package"
	done
	if echo "$list" | grep -q '^/usr/bin/bench-'; then fail "a reference server in /usr/bin"; fi
	[ "$(dpkg-deb -f "$deb" Package)" = baton ] || fail "Package is not baton"
	[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version is not $version"
	dpkg-deb -f "$deb" Depends | grep -q 'liburing2' || fail "Depends lacks liburing2"
	pc=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/lib/pkgconfig/baton.pc)
	echo "$pc" | grep -qx 'prefix=/usr' || fail "baton.pc: prefix is not /usr: $pc"
	echo "deb_check: $(basename "$deb"): $(echo "$list" | grep -vc '/$') files, Depends: $(dpkg-deb -f "$deb" Depends)"
	exit 0
fi

[ "$mode" = install ] || fail "usage: deb_check.sh contents|install BUILD VERSION [CC SAN_FLAGS]"
cc=$4 san=${5:-}
command -v dpkg >/dev/null 2>&1 || { echo "deb_check: no dpkg"; exit 77; }
[ "$(id -u)" = 0 ] || { echo "deb_check: not root: dpkg -i skipped"; exit 77; }
if dpkg-query -W -f='${Status}' baton 2>/dev/null | grep -q "install ok installed"; then
	echo "deb_check: a baton package is installed already: not replacing it"; exit 77
fi
[ -f "$deb" ] || fail "no $deb: deb_contents builds it"
cleanup() { dpkg -P baton >/dev/null 2>&1 || true; rm -rf "$work"; }
work=$(mktemp -d)
trap cleanup EXIT
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i failed"; }
out=$(/usr/bin/baton-httpd --version) || fail "/usr/bin/baton-httpd --version failed"
echo "$out" | head -1 | grep -qx "baton-httpd (baton) $version" || fail "--version said: $out"
/usr/bin/baton-bench -V | grep -q "$version" || fail "baton-bench -V"
# pkg-config sees /usr/include as the system path: no -I at all.
cflags=$(pkg-config --cflags baton) || fail "pkg-config --cflags baton"
[ -z "$(echo "$cflags" | tr -d ' ')" ] || fail "pkg-config --cflags baton gave '$cflags'"
# shellcheck disable=SC2086 # SAN_FLAGS is a list of flags
$cc $san -o "$work/consumer" "$(dirname "$0")/consumer/main.c" $(pkg-config --libs baton) ||
	fail "cannot build a program with pkg-config baton"
"$work/consumer" | grep -q "baton $version ok" || fail "the installed library does not work"
if command -v man >/dev/null 2>&1; then
	for p in baton-httpd baton-echo baton-spool baton-bench; do
		man -w "$p" >/dev/null 2>&1 || fail "man $p: not found"
	done
	man -w 7 baton >/dev/null 2>&1 || fail "man 7 baton: not found"
fi
if command -v systemd-analyze >/dev/null 2>&1; then
	ex=/usr/share/doc/baton/examples/systemd
	systemd-analyze verify "$ex/baton-httpd.socket" "$ex/baton-httpd.service" \
		>"$work/verify.log" 2>&1 || { cat "$work/verify.log"; fail "systemd-analyze verify"; }
fi
dpkg -P baton >/dev/null 2>&1 || fail "dpkg -P baton"
[ ! -e /usr/bin/baton-httpd ] || fail "dpkg -P left /usr/bin/baton-httpd"
echo "deb_check: installed, used from /usr and removed: $out" | head -1
