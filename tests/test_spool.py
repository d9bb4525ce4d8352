#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton-spool end to end: files (descriptors plus a job description) go to
worker processes and to worker threads; every file is reported once with
the right count.  Usage: test_spool.py BUILD_DIR"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from cases import until

SPOOL = os.path.join(os.path.abspath(sys.argv[1]), "apps", "baton-spool")


def children(pid):
    """Pids and command lines of pid's child processes."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((int(d), cmd))
    return out


def worker_sigkill(files, lines):
    """A worker stopped while files are queued to it, then SIGKILLed: the
    runtime redelivers what it had not acknowledged to the other worker,
    respawns it, and every file is reported exactly once."""
    env = dict(os.environ, BATON_LOG="info")
    p = subprocess.Popen([SPOOL, "--workers", "2", "--files-from", "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    err = []
    t = threading.Thread(target=lambda: err.extend(iter(p.stderr.readline, b"")), daemon=True)
    t.start()
    try:
        def worker0():
            pids = [c for c, cmd in children(p.pid) if cmd == "baton-spool: worker 0"]
            assert pids, "no worker 0 yet"
            return pids[0]
        w0 = until(worker0, timeout=30)
        os.kill(w0, signal.SIGSTOP)
        p.stdin.write("".join(f + "\n" for f in files).encode())
        p.stdin.flush()

        def sent_to_stopped():
            os.kill(p.pid, signal.SIGUSR1)
            time.sleep(0.05)
            text = b"".join(err).decode(errors="replace")
            m = re.findall(r"^  worker 0: .* items (\d+),", text, re.M)
            assert m and int(m[-1]) > 0, "nothing sent to the stopped worker yet"
        until(sent_to_stopped, timeout=30)
        os.kill(w0, signal.SIGKILL)
        p.stdin.close()
        out = p.stdout.read().decode()
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    t.join(5)
    text = b"".join(err).decode(errors="replace")
    assert rc == 0, (rc, text[-800:])
    got = {}
    for m in re.finditer(r"^(\S+): (\d+) lines \(worker (\d)\)$", out, re.M):
        assert m.group(1) not in got, "reported twice: %s" % m.group(1)
        got[m.group(1)] = int(m.group(2))
    assert got == {f: lines[f] for f in files}, "counts differ: %d of %d" % (len(got), len(files))
    assert "%d files" % len(files) in out and "0 failed" in out, out[-200:]
    assert re.search(r"worker 0 \(pid %d\) killed by signal 9" % w0, text), text[-800:]
    exit_line = [ln for ln in text[text.rfind("counters (exit)"):].splitlines() if "acceptor:" in ln]
    red = re.search(r"redelivered (\d+)", exit_line[0]) if exit_line else None
    assert red and int(red.group(1)) > 0, exit_line


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
        try:
            worker_sigkill(files[:200], lines)
            print("ok   worker_sigkill")
            passed += 1
        except AssertionError as e:
            failed += 1
            print("FAIL worker_sigkill: %s" % e)
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
