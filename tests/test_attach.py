#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Workers that attach by name (--attach / --worker-of): baton-httpd with
no worker of its own serves through attached ones, each connection once;
forked and attached workers together; an attached worker SIGKILLed under
load; peers of another uid refused (and let in with --attach-uid); a path
channel is 0600; malformed HELLO and ACK from a raw peer drop that peer
only; the acceptor's descriptors stay flat over 100 attach/detach cycles.

Usage: test_attach.py BUILD_DIR [case ...]
Every process a case starts is stopped by pid; waits have deadlines.
"""
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
from cases import Skip, free_port, terminate, until  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
HTTPD = os.path.join(BUILD, "apps", "baton-httpd")
ECHO = os.path.join(BUILD, "apps", "baton-echo")
PYWORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps",
                        "python", "baton_worker.py")
ENV = dict(os.environ, BATON_LOG="info")


class Server:
    """A program on the runtime, its stderr collected as it comes."""

    def __init__(self, argv, env=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=dict(ENV, **(env or {})))
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in iter(self.proc.stderr.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def text(self):
        return "".join(self.lines)

    def wait_log(self, pattern, timeout=20):
        def seen():
            assert re.search(pattern, self.text()), "no '%s' in the log yet" % pattern
        until(seen, timeout=timeout)

    def stop(self):
        rc = terminate(self.proc)
        self.t.join(5)
        return rc


def http_get(port, timeout=10):
    """One request with Connection: close: the whole response, or raises."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = c.recv(65536)
            if not b:
                return data
            data += b


def server(port, name, *extra, env=None):
    s = Server([HTTPD, "--listen", "127.0.0.1:%d" % port, "--attach", name] + list(extra), env=env)
    s.wait_log(r"workers may attach at")
    return s


def worker(name, *extra):
    return Server([HTTPD, "--worker-of", name] + list(extra))


def test_attached_only():
    """--workers 0: a connection made before any worker waits in the
    backlog; 2000 connections are each answered exactly once by the
    attached worker's two loops."""
    port, name = free_port(), "@baton-test-attach-%d" % os.getpid()
    srv = server(port, name, "--workers", "0")
    w = None
    try:
        early = socket.create_connection(("127.0.0.1", port), timeout=10)
        early.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        w = worker(name, "--threads", "2")
        srv.wait_log(r"worker \d+ attached")
        data = b""
        while True:
            b = early.recv(65536)
            if not b:
                break
            data += b
        early.close()
        assert data.count(b"HTTP/1.1 200") == 1, data[:200]
        for i in range(2000):
            r = http_get(port)
            assert r.count(b"HTTP/1.1 200") == 1, (i, r[:200])
    finally:
        if w:
            assert w.stop() == 0, w.text()[-500:]
        assert srv.stop() == 0, srv.text()[-800:]
    held = re.findall(r"held (\d+)", srv.text())
    assert held and held[-1] == "0", srv.text()[-500:]


def test_forked_and_attached():
    """Forked and attached workers serve together; both get connections."""
    port, name = free_port(), "@baton-test-attach2-%d" % os.getpid()
    srv = server(port, name, "--workers", "1")
    w = worker(name)
    try:
        srv.wait_log(r"worker \d+ attached")
        for i in range(400):
            assert http_get(port).count(b"HTTP/1.1 200") == 1
        srv.proc.send_signal(signal.SIGUSR1)
        srv.wait_log(r"worker \d+: attached pid \d+, .* items [1-9]")
        assert re.search(r"worker 0: pid \d+, .* items [1-9]", srv.text()), srv.text()[-800:]
    finally:
        w.stop()
        assert srv.stop() == 0, srv.text()[-800:]


def test_thread_server_attached():
    """A thread-mode server with BATON_DIRECT=1 (on io_uring with Linux
    6.8, its own workers take direct descriptors): a worker attached to it
    gets regular ones, installed for it; both serve, each connection once."""
    port, name = free_port(), "@baton-test-attach-thr-%d" % os.getpid()
    srv = server(port, name, "--workers", "1", "--mode", "thread", env={"BATON_DIRECT": "1"})
    w = worker(name)
    try:
        srv.wait_log(r"worker \d+ attached")
        for i in range(600):
            assert http_get(port).count(b"HTTP/1.1 200") == 1, i
        srv.proc.send_signal(signal.SIGUSR1)
        srv.wait_log(r"worker \d+: attached pid \d+, .* items [1-9]")
        assert re.search(r"worker 0: thread, .* items [1-9]", srv.text()), srv.text()[-800:]
    finally:
        w.stop()
        assert srv.stop() == 0, srv.text()[-800:]
    text = srv.text()
    assert re.findall(r"dropped (\d+)", text)[-1] == "0", text[-800:]


def test_sigkill_attached():
    """Two attached workers under load; one is SIGKILLed.  Every client
    finishes within its deadline, none gets two answers, and the server
    goes on with the other worker."""
    port, name = free_port(), "@baton-test-attach3-%d" % os.getpid()
    srv = server(port, name, "--workers", "0")
    w1, w2 = worker(name), worker(name)
    results, lock = [], threading.Lock()
    try:
        # Attached workers take the slots after those the server may
        # scale its own to (settings.max_workers): not 0 and 1.
        until(lambda: len(re.findall(r"worker \d+ attached", srv.text())) == 2 or
              (_ for _ in ()).throw(AssertionError(srv.text()[-800:])))
        stop = time.time() + 3

        def client():
            while time.time() < stop:
                t0 = time.time()
                try:
                    r = http_get(port, timeout=10)
                    res = r.count(b"HTTP/1.1 200")
                except OSError:
                    res = -1  # reset: its worker died holding it
                with lock:
                    results.append((res, time.time() - t0))
        ts = [threading.Thread(target=client) for _ in range(8)]
        for t in ts:
            t.start()
        time.sleep(1)
        w1.proc.kill()
        w1.proc.wait()
        for t in ts:
            t.join(30)
            assert not t.is_alive(), "a client hangs"
        srv.wait_log(r"worker \d \(attached, pid %d\) left" % w1.proc.pid)
        assert all(n in (0, 1, -1) for n, _ in results), "answered twice"
        assert all(d < 10 for _, d in results)
        ok = sum(1 for n, _ in results if n == 1)
        assert ok > 50 and ok >= len(results) - 10, (ok, len(results))
        for i in range(50):  # the survivor serves everything now
            assert http_get(port).count(b"HTTP/1.1 200") == 1
    finally:
        w1.stop()
        w2.stop()
        assert srv.stop() == 0, srv.text()[-800:]


def test_python_worker():
    """apps/python/baton_worker.py, written from docs/wire.md: 2000 HTTP
    connections answered once each, then echo; it leaves on SIGTERM with
    status 0 and the server goes on."""
    port, name = free_port(), "@baton-test-attach8-%d" % os.getpid()
    srv = server(port, name, "--workers", "0")
    py = Server([sys.executable, PYWORKER, "--attach", name, "--http", "--body", "from python\n"])
    try:
        srv.wait_log(r"worker \d+ attached")
        for i in range(2000):
            r = http_get(port)
            assert r.count(b"HTTP/1.1 200") == 1 and r.endswith(b"from python\n"), (i, r[:200])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            for i in range(5):  # keep-alive
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                got = b""
                while not got.endswith(b"from python\n"):
                    got += c.recv(4096)
                assert got.count(b"HTTP/1.1 200") == 1, got
        assert py.stop() == 0, py.text()
        srv.wait_log(r"worker \d+ \(attached, pid \d+\) left")
    finally:
        py.stop()
        assert srv.stop() == 0, srv.text()[-800:]
    port, name = free_port(), "@baton-test-attach9-%d" % os.getpid()
    srv = Server([ECHO, "--listen", "127.0.0.1:%d" % port, "--workers", "0", "--attach", name])
    srv.wait_log(r"workers may attach at")
    py = Server([sys.executable, PYWORKER, "--attach", name, "--echo"])
    try:
        srv.wait_log(r"worker \d+ attached")
        for i in range(200):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"echo %d\n" % i)
                got = b""
                while len(got) < len(b"echo %d\n" % i):
                    got += c.recv(100)
                assert got == b"echo %d\n" % i, got
    finally:
        py.stop()
        assert srv.stop() == 0, srv.text()[-800:]


def burst(port, n, timeout=30):
    """n clients at once, each one request; returns each one's count of
    responses (-1: an error), in a list filled as they finish."""
    results, lock = [], threading.Lock()

    def one():
        try:
            r = http_get(port, timeout=timeout).count(b"HTTP/1.1 200")
        except OSError:
            r = -1
        with lock:
            results.append(r)
    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    return ts, results


def test_stuck_attached():
    """An attached worker stopped (SIGSTOP) while connections were sent to
    it sends no ACK: after --worker-timeout the watchdog kills it, and
    what it had not acknowledged is served by the forked worker, every
    client exactly once."""
    port, name = free_port(), "@baton-test-attach10-%d" % os.getpid()
    srv = server(port, name, "--workers", "1", "--worker-timeout", "1000", "--flush", "size",
                 "--batch", "1")
    w = worker(name)
    try:
        srv.wait_log(r"worker \d+ attached")
        w.proc.send_signal(signal.SIGSTOP)
        ts, results = burst(port, 40)
        for t in ts:
            t.join(30)
            assert not t.is_alive(), "a client hangs"
        srv.wait_log(r"worker \d+ \(attached, pid %d, uid \d+\): no ACK for \d+ ms with \d+ "
                     r"connections open and [1-9]\d* unacknowledged: stuck \(--worker-timeout "
                     r"1000\): SIGKILL" % w.proc.pid)
        assert w.proc.wait(10) == -signal.SIGKILL
        assert sorted(results) == [1] * 40, results
        srv.wait_log(r"worker \d+ \(attached, pid %d\) left" % w.proc.pid)
        assert http_get(port).count(b"HTTP/1.1 200") == 1
    finally:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGCONT)
        w.stop()
        assert srv.stop() == 0, srv.text()[-800:]


def test_stuck_unkillable():
    """A stuck attached worker of another uid, under a server that may not
    signal it: logged once, its items left to it (no second answer), the
    others served; once it runs again it serves them."""
    if os.geteuid() != 0:
        raise Skip("needs root to run the server and the worker as two other users")
    if not nobody_can_run():
        raise Skip("nobody cannot run the build's programs")
    port, name = free_port(), "@baton-test-attach11-%d" % os.getpid()
    srv = Server(["setpriv", "--reuid=1", "--regid=1", "--clear-groups", HTTPD, "--listen",
                  "127.0.0.1:%d" % port, "--attach", name, "--attach-uid", "65534",
                  "--workers", "1", "--worker-timeout", "500", "--flush", "size",
                  "--batch", "1"])
    srv.wait_log(r"workers may attach at")
    py = Server(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                 PYWORKER, "--attach", name, "--http"])
    try:
        srv.wait_log(r"worker \d+ attached")
        py.proc.send_signal(signal.SIGSTOP)
        ts, results = burst(port, 20)
        srv.wait_log(r"stuck \(--worker-timeout 500\), but pidfd_send_signal\(SIGKILL\): "
                     r"Operation not permitted: its ([1-9]\d*) items wait for it")
        waiting = int(re.findall(r"its (\d+) items wait for it", srv.text())[-1])

        def others_done():
            assert len(results) == 20 - waiting, (len(results), waiting)
        until(others_done, timeout=15)
        assert results == [1] * len(results), results
        py.proc.send_signal(signal.SIGCONT)
        for t in ts:
            t.join(30)
            assert not t.is_alive(), "a client hangs"
        assert sorted(results) == [1] * 20, results
        assert len(re.findall(r"but pidfd_send_signal", srv.text())) == 1, srv.text()[-800:]
    finally:
        py.proc.send_signal(signal.SIGCONT)
        py.stop()
        assert srv.stop() == 0, srv.text()[-800:]


def test_max_batch():
    """HELLO's max_batch: a Python worker that takes 2 connections per
    batch never gets more, though the server's batches hold 64 and wait
    100 ms to fill; a C worker says its --batch."""
    port, name = free_port(), "@baton-test-attach12-%d" % os.getpid()
    srv = server(port, name, "--workers", "0", "--batch", "64", "--flush", "delay:100000")
    py = Server([sys.executable, PYWORKER, "--attach", name, "--http", "--max-batch", "2", "-v"])
    try:
        srv.wait_log(r"worker \d+ attached: pid %d, takes up to 2 items per batch" % py.proc.pid)
        ts, results = burst(port, 60)
        for t in ts:
            t.join(30)
            assert not t.is_alive(), "a client hangs"
        assert sorted(results) == [1] * 60, results
        def logged():  # its log is read by a thread of ours, a little behind
            n = [int(k) for k in re.findall(r"batch \d+: (\d+) items", py.text())]
            assert sum(n) == 60, n
            return n
        sizes = until(logged)
        assert max(sizes) <= 2, sizes
    finally:
        py.stop()
        assert srv.stop() == 0, srv.text()[-800:]
    port, name = free_port(), "@baton-test-attach13-%d" % os.getpid()
    srv = server(port, name, "--workers", "0")
    w = worker(name, "--batch", "4")
    try:
        srv.wait_log(r"worker \d+ attached: pid %d, takes up to 4 items per batch" % w.proc.pid)
    finally:
        w.stop()
        assert srv.stop() == 0, srv.text()[-800:]


def nobody_can_run():
    try:
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            HTTPD, "--version"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_other_uid():
    """A peer of another uid is refused on an abstract name (logged), and
    let in with --attach-uid; a path channel is created 0600."""
    if os.geteuid() != 0:
        raise Skip("needs root to run a worker as nobody")
    if not nobody_can_run():
        raise Skip("nobody cannot run the build's programs")
    port, name = free_port(), "@baton-test-attach4-%d" % os.getpid()
    srv = server(port, name, "--workers", "1")
    try:
        w = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            HTTPD, "--worker-of", name], capture_output=True, timeout=30)
        # Refused as it says HELLO (EPIPE) or just after (the channel ends
        # without a DRAIN): either way it says so and exits 1.
        assert w.returncode == 1 and b"refused" in w.stderr, w
        srv.wait_log(r"refused channel peer pid \d+ uid 65534")
        assert http_get(port).count(b"HTTP/1.1 200") == 1  # still serving
    finally:
        assert srv.stop() == 0
    port, name = free_port(), "@baton-test-attach5-%d" % os.getpid()
    srv = server(port, name, "--workers", "0", "--attach-uid", "65534")
    w = Server(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", HTTPD,
                "--worker-of", name])
    try:
        srv.wait_log(r"worker \d+ attached")
        assert http_get(port).count(b"HTTP/1.1 200") == 1
    finally:
        w.stop()
        assert srv.stop() == 0
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "attach.sock")
        srv = server(free_port(), path)
        try:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        finally:
            assert srv.stop() == 0
        assert not os.path.exists(path)  # removed at exit


HDR = struct.Struct("<IHHQIHHII")


def msg(mtype, body, seq=0):
    return HDR.pack(0x4e544142, 1, mtype, seq, HDR.size + len(body), 0, 0, 0, 0) + body


def raw_peer(name, first, second=None):
    """Attach with raw bytes: send first (and second); True if the server
    then dropped us (EOF)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(10)
    s.connect("\0" + name[1:])
    s.send(first)
    if second:
        s.send(second)
    try:
        dropped = s.recv(65536) == b""
    except ConnectionResetError:
        dropped = True
    s.close()
    return dropped


def test_malformed_peer():
    """A HELLO of version 0, an ACK before HELLO, an ACK for a batch never
    sent and one naming a lost id never sent each drop that peer with a log
    line; the server keeps serving through its own worker."""
    port, name = free_port(), "@baton-test-attach6-%d" % os.getpid()
    srv = server(port, name, "--workers", "1")
    try:
        hello0 = msg(3, struct.pack("<IIII", 0, os.getpid(), 0, 0))
        hello1 = msg(3, struct.pack("<IIII", 0, os.getpid(), 1, 0))
        ack = msg(2, struct.pack("<QQII", 5, 0, 0, 0))
        assert raw_peer(name, hello0)
        srv.wait_log(r"sent a bad HELLO")
        assert raw_peer(name, ack)
        srv.wait_log(r"sent a bad ACK")
        assert raw_peer(name, hello1, ack)
        assert raw_peer(name, msg(3, struct.pack("<IIII", 0, os.getpid(), 1, 254)))
        srv.wait_log(r"worker \d+'s channel closed \(Bad message\)")  # max_batch 254

        lost = msg(2, struct.pack("<QQII", 0, 0, 0, 1) + struct.pack("<Q", 999))
        assert raw_peer(name, hello1, lost)  # a lost id never sent

        def three_bad_acks():
            n = len(re.findall(r"sent a bad ACK", srv.text()))
            assert n >= 3, "%d bad ACKs logged" % n
        until(three_bad_acks, timeout=10)
        for i in range(20):
            assert http_get(port).count(b"HTTP/1.1 200") == 1
    finally:
        assert srv.stop() == 0, srv.text()[-800:]


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def acceptor(master):
    """The master's child that serves ('NAME: acceptor')."""
    def find():
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open("/proc/%s/stat" % p) as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    with open("/proc/%s/cmdline" % p, "rb") as f:
                        title = f.read().split(b"\0")[0]
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == master and title.endswith(b": acceptor"):
                    return int(p)
        raise AssertionError("no acceptor under %d" % master)
    return until(find, timeout=10)


def test_fds_flat():
    """100 raw peers attach (HELLO) and leave: the acceptor's descriptors
    are what they were."""
    port, name = free_port(), "@baton-test-attach7-%d" % os.getpid()
    srv = server(port, name, "--workers", "1")
    try:
        acc = acceptor(srv.proc.pid)
        before = fd_count(acc)
        hello = msg(3, struct.pack("<IIII", 0, os.getpid(), 1, 0))
        for i in range(100):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect("\0" + name[1:])
            s.send(hello)
            s.close()

            def left():
                n = len(re.findall(r"worker \d+ \(attached, pid \d+\) left", srv.text()))
                assert n == i + 1, "%d of %d left" % (n, i + 1)
            until(left, timeout=10)

        def flat():
            assert fd_count(acc) == before, (fd_count(acc), before)
        until(flat, timeout=10)
    finally:
        assert srv.stop() == 0, srv.text()[-800:]


def main():
    return cases.run(globals(), sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
