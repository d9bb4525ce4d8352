#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton-bench conns, the harness: argument errors, and a short run of every
design in which each served connections with no errors, with the CSV
columns present.  Usage: test_conns.py BUILD_DIR"""
import csv
import os
import subprocess
import sys
import tempfile

BENCH = os.path.join(os.path.abspath(sys.argv[1]), "bench", "baton-bench")


def main():
    passed = failed = 0

    def case(name, ok, detail=""):
        nonlocal passed, failed
        print(("ok   " if ok else "FAIL ") + name + ("" if ok else ": " + detail), flush=True)
        passed, failed = passed + ok, failed + (not ok)

    for bad, why in ((["--reps", "0"], "--reps"), (["--designs", "nosuch"], "unknown design"),
                     (["--clients", "x"], "--clients"), (["extra"], "unexpected argument"),
                     (["--seconds", "0"], "--seconds")):
        r = subprocess.run([BENCH, "conns"] + bad, capture_output=True, text=True, timeout=30)
        case("rejects %s" % " ".join(bad), r.returncode == 2 and why in r.stderr, r.stderr[-300:])

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "conns.csv")
        window = "2" if os.environ.get("BATON_TEST_SANITIZED") else "0.5"
        r = subprocess.run([BENCH, "conns", "--seconds", window, "--reps", "1", "--clients", "8",
                            "--csv", out], capture_output=True, text=True, timeout=300)
        case("short run exits 0", r.returncode == 0, r.stdout[-500:] + r.stderr[-500:])
        rows = list(csv.DictReader(open(out))) if os.path.exists(out) else []
        case("csv columns", bool(rows) and list(rows[0].keys()) == [
            "design", "conns_per_s", "p50_us", "p99_us", "p999_us", "server_cpu_us_per_conn",
            "errors"], str(rows[:1]))
        names = [x["design"] for x in rows]
        for want in ("baton-proc", "baton-thread", "fork", "prefork", "reuseport", "inplace"):
            case("design %s ran" % want, want in names, str(names))
        for x in rows:
            case("%s served without errors" % x["design"],
                 float(x["conns_per_s"]) > 0 and int(x["errors"]) == 0 and
                 float(x["server_cpu_us_per_conn"]) > 0, str(x))
        r = subprocess.run([BENCH, "sweep", "--batches", "1,4", "--flushes", "adaptive,delay:100",
                            "--clients", "4", "--seconds", "0.3", "--out", d],
                           capture_output=True, text=True, timeout=300)
        case("sweep exits 0", r.returncode == 0, r.stdout[-300:] + r.stderr[-300:])
        p = os.path.join(d, "sweep-process.csv")
        rows = list(csv.DictReader(open(p))) if os.path.exists(p) else []
        case("sweep csv: 4 points and the defaults", len(rows) == 5 and list(rows[0].keys()) == [
            "server", "mode", "clients", "rate", "dispatch", "flush", "batch", "conns_per_s",
            "p50_us", "p99_us", "p999_us", "server_cpu_us_per_conn", "errors"] and
             all(int(x["errors"]) == 0 for x in rows), str(rows[:2]))
        case("sweep recommends", "best at 4 clients" in r.stdout, r.stdout[-300:])
    for bad in (["--batches", "0"], ["--flushes", "sometimes"], ["--mode", "fiber"]):
        r = subprocess.run([BENCH, "sweep"] + bad, capture_output=True, text=True, timeout=30)
        case("sweep rejects %s" % " ".join(bad), r.returncode == 2, r.stderr[-200:])
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
