#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton-spool end to end: files (descriptors plus a job description) go to
worker processes and to worker threads; every file is reported once with
the right count.  Usage: test_spool.py BUILD_DIR"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SPOOL = os.path.join(os.path.abspath(sys.argv[1]), "apps", "baton-spool")


def main():
    d = tempfile.mkdtemp(prefix="baton-spool-")
    passed = failed = 0
    try:
        files, lines, nbytes = [], {}, {}
        for i in range(300):  # more than one batch, wraps the thread ring
            p = os.path.join(d, "f%03d.log" % i)
            body = "".join("line %d of %d\n" % (k, i) for k in range(i % 50))
            with open(p, "w") as f:
                f.write(body)
            files.append(p)
            lines[p] = i % 50
            nbytes[p] = len(body)
        for mode in ("process", "thread"):
            for job, want in (("lines", lines), ("bytes", nbytes)):
                name = "%s_%s" % (mode, job)
                try:
                    r = subprocess.run([SPOOL, "--workers", "3", "--mode", mode, "--job", job] + files,
                                       capture_output=True, text=True, timeout=120)
                    assert r.returncode == 0, (r.returncode, r.stderr[-500:])
                    got = {}
                    for m in re.finditer(r"^(\S+): (\d+) %s \(worker (\d)\)$" % job, r.stdout, re.M):
                        assert m.group(1) not in got, "reported twice: %s" % m.group(1)
                        got[m.group(1)] = int(m.group(2))
                    assert got == want, "counts differ"
                    assert "300 files" in r.stdout and "0 failed" in r.stdout, r.stdout[-200:]
                    workers = set(re.findall(r"\(worker (\d)\)", r.stdout))
                    assert workers == {"0", "1", "2"}, workers
                    passed += 1
                    print("ok   %s" % name)
                except AssertionError as e:
                    failed += 1
                    print("FAIL %s: %s" % (name, e))
        # A file that cannot be opened: reported, exit 1, the rest processed.
        r = subprocess.run([SPOOL, files[5], os.path.join(d, "missing")], capture_output=True,
                           text=True, timeout=60)
        ok = r.returncode == 1 and "missing" in r.stderr and "1 failed" in r.stdout
        print(("ok   " if ok else "FAIL ") + "missing_file")
        passed, failed = passed + ok, failed + (not ok)
        r = subprocess.run([SPOOL, "--workers", "0", files[0]], capture_output=True, text=True, timeout=30)
        ok = r.returncode == 2 and "--workers" in r.stderr
        print(("ok   " if ok else "FAIL ") + "bad_flags")
        passed, failed = passed + ok, failed + (not ok)
    finally:
        shutil.rmtree(d)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
