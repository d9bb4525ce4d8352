# SPDX-License-Identifier: MIT
"""What the end-to-end Python tests share: run a script's test_* cases
(one line each, a summary, exit status), and retry a check until it holds
or a deadline passes (never a fixed sleep)."""
import signal
import socket
import subprocess
import sys
import time
import traceback


class Skip(Exception):
    """The machine lacks something this case needs."""


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def until(check, timeout=10, interval=0.02):
    """Call check() until it raises no AssertionError/OSError; after
    timeout seconds, let the last failure through."""
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except (AssertionError, OSError):
            if time.time() > deadline:
                raise
            time.sleep(interval)


def run(namespace, want):
    """Run namespace's test_* functions (those named in want, if any) in
    name order; print one line per case and a summary; return 0 or 1."""
    cases = [v for k, v in sorted(namespace.items()) if k.startswith("test_") and callable(v)]
    passed = failed = skipped = 0
    for case in cases:
        name = case.__name__[5:]
        if want and name not in want:
            continue
        t0 = time.time()
        try:
            case()
            passed += 1
            print("ok   %-36s %7.2f s" % (name, time.time() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("skip %-36s %s" % (name, e), flush=True)
        except Exception:  # noqa: BLE001 - every failure is reported
            failed += 1
            print("FAIL %-36s\n%s" % (name, traceback.format_exc()), flush=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.stdout.flush()
    return 1 if failed else 0


def activated(fd, argv, nofile=None, name=None):
    """The command that starts argv the way systemd's socket activation
    does: the listening socket fd moved to descriptor 3, LISTEN_FDS=1 and
    LISTEN_PID = the program's own pid (known only in the child: a tiny
    launcher sets it right before exec).  nofile: an RLIMIT_NOFILE to set
    first.  name: LISTEN_FDNAMES (a .socket unit's FileDescriptorName=).
    Pass fd in the Popen's pass_fds."""
    launcher = ("import os, resource, sys\n"
                "n = int(sys.argv[2])\n"
                "if n:\n"
                "    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
                "fd = int(sys.argv[1])\n"
                "if fd != 3:\n"
                "    os.dup2(fd, 3)\n"
                "    os.close(fd)\n"
                "os.set_inheritable(3, True)\n"
                "os.environ['LISTEN_PID'] = str(os.getpid())\n"
                "os.environ['LISTEN_FDS'] = '1'\n"
                "if sys.argv[3]:\n"
                "    os.environ['LISTEN_FDNAMES'] = sys.argv[3]\n"
                "os.execv(sys.argv[4], sys.argv[4:])\n")
    return [sys.executable, "-c", launcher, str(fd), str(nofile or 0), name or ""] + list(argv)


def terminate(proc, timeout=15):
    """SIGTERM proc (a subprocess.Popen) and wait up to timeout seconds for
    it to exit: its exit status, or None if it hung (it is then killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
