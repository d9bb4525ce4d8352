#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton-bench load, our load generator: it counts only complete 200
responses, reports refused connections as errors, and agrees with wrk (when
installed) on requests per second.  Usage: test_load.py BUILD_DIR [case ...]
Without wrk, or in a sanitized build, the comparison is skipped (reported
as a skip, not a pass)."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
from cases import Skip, free_port  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
BENCH = os.path.join(BUILD, "bench", "baton-bench")
HTTPD = os.path.join(BUILD, "apps", "baton-httpd")


def load(port, *extra):
    r = subprocess.run([BENCH, "load", "--connect", "127.0.0.1:%d" % port] + list(extra),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.search(r"RESULT requests=(\d+) seconds=([\d.]+) rps=(\d+) p50_us=(\d+) p99_us=(\d+) "
                  r"p999_us=(\d+) errors=(\d+)", r.stdout)
    assert m, r.stdout
    return {"requests": int(m.group(1)), "rps": int(m.group(3)), "p50": int(m.group(4)),
            "p99": int(m.group(5)), "errors": int(m.group(7)), "out": r.stdout}


PORT = None


def test_served_without_errors():
    for extra in ([], ["--keepalive"], ["--threads", "2", "--clients", "64"]):
        r = load(PORT, "--seconds", "1", *extra)
        assert r["requests"] > 100 and r["errors"] == 0, (extra, r["out"])
        assert 0 < r["p50"] <= r["p99"], r["out"]


def test_refused_is_an_error():
    dead = free_port()
    r = load(dead, "--seconds", "0.5", "--clients", "4")
    assert r["requests"] == 0 and r["errors"] > 0, r["out"]
    assert "refused" in r["out"], r["out"]


def test_non_200_is_an_error():
    r = load(PORT, "--seconds", "0.5", "--path", "/a b")  # a 400
    assert r["requests"] == 0 and r["errors"] > 0, r["out"]


def test_argument_errors():
    for bad in (["--clients", "0"], ["--connect", "nohost"], ["--seconds", "x"], []):
        pre = ["--connect", "127.0.0.1:1"] if bad and bad[0] != "--connect" else []
        r = subprocess.run([BENCH, "load"] + pre + bad, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "baton-bench" in r.stderr, (bad, r.stderr)


def test_agrees_with_wrk():
    if not shutil.which("wrk"):
        raise Skip("wrk is not installed")
    if os.environ.get("BATON_TEST_SANITIZED"):
        raise Skip("a sanitized build: its speed means nothing")
    ours, theirs = [], []
    for _ in range(3):  # alternate, medians: the machine is shared
        ours.append(load(PORT, "--seconds", "2")["rps"])
        out = subprocess.run(["wrk", "-t1", "-c32", "-d2s", "-H", "Connection: close",
                              "http://127.0.0.1:%d/" % PORT],
                             capture_output=True, text=True, timeout=60).stdout
        theirs.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))
    a, b = sorted(ours)[1], sorted(theirs)[1]
    print("     baton-bench load %.0f/s, wrk %.0f/s" % (a, b))
    assert 0.75 <= a / b <= 1.25, (ours, theirs)


def main():
    global PORT
    PORT = free_port()
    srv = subprocess.Popen([HTTPD, "--listen", "127.0.0.1:%d" % PORT, "--workers", "2"],
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        return cases.run(globals(), sys.argv[2:])
    finally:
        cases.terminate(srv, 20)


if __name__ == "__main__":
    sys.exit(main())
