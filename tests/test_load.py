#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton-bench load, our load generator: it counts only complete 200
responses, reports refused connections as errors, and agrees with wrk (when
installed) on requests per second.  Usage: test_load.py BUILD_DIR"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

BUILD = os.path.abspath(sys.argv[1])
BENCH = os.path.join(BUILD, "bench", "baton-bench")
HTTPD = os.path.join(BUILD, "apps", "baton-httpd")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def load(port, *extra):
    r = subprocess.run([BENCH, "load", "--connect", "127.0.0.1:%d" % port] + list(extra),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = re.search(r"RESULT requests=(\d+) seconds=([\d.]+) rps=(\d+) p50_us=(\d+) p99_us=(\d+) "
                  r"p999_us=(\d+) errors=(\d+)", r.stdout)
    assert m, r.stdout
    return {"requests": int(m.group(1)), "rps": int(m.group(3)), "p50": int(m.group(4)),
            "p99": int(m.group(5)), "errors": int(m.group(7)), "out": r.stdout}


def main():
    passed = failed = 0

    def case(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
            print("ok   %s" % name, flush=True)
        except AssertionError as e:
            failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)

    port = free_port()
    srv = subprocess.Popen([HTTPD, "--listen", "127.0.0.1:%d" % port, "--workers", "2"],
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        def served():
            for extra in ([], ["--keepalive"], ["--threads", "2", "--clients", "64"]):
                r = load(port, "--seconds", "1", *extra)
                assert r["requests"] > 100 and r["errors"] == 0, (extra, r["out"])
                assert 0 < r["p50"] <= r["p99"], r["out"]
        case("served_without_errors", served)

        def refused():
            dead = free_port()
            r = load(dead, "--seconds", "0.5", "--clients", "4")
            assert r["requests"] == 0 and r["errors"] > 0, r["out"]
            assert "refused" in r["out"], r["out"]
        case("refused_is_an_error", refused)

        def bad_status():
            r = load(port, "--seconds", "0.5", "--path", "/a b")  # a 400
            assert r["requests"] == 0 and r["errors"] > 0, r["out"]
        case("non_200_is_an_error", bad_status)

        def args():
            for bad in (["--clients", "0"], ["--connect", "nohost"], ["--seconds", "x"], []):
                r = subprocess.run([BENCH, "load"] + (["--connect", "127.0.0.1:1"] if bad and bad[0] != "--connect" else []) + bad,
                                   capture_output=True, text=True, timeout=10)
                assert r.returncode == 2 and "baton-bench" in r.stderr, (bad, r.stderr)
        case("argument_errors", args)

        def vs_wrk():
            if not shutil.which("wrk"):
                print("     (wrk not installed: cross-check skipped)")
                return
            if os.environ.get("BATON_TEST_SANITIZED"):
                print("     (sanitized build: speed cross-check skipped)")
                return
            ours, theirs = [], []
            for _ in range(3):  # alternate, medians: the machine is shared
                ours.append(load(port, "--seconds", "2")["rps"])
                out = subprocess.run(["wrk", "-t1", "-c32", "-d2s", "-H", "Connection: close",
                                      "http://127.0.0.1:%d/" % port],
                                     capture_output=True, text=True, timeout=60).stdout
                theirs.append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))
            a, b = sorted(ours)[1], sorted(theirs)[1]
            print("     baton-bench load %.0f/s, wrk %.0f/s" % (a, b))
            assert 0.75 <= a / b <= 1.25, (ours, theirs)
        case("agrees_with_wrk", vs_wrk)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(20)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
