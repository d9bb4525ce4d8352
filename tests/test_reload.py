#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Live upgrade (SIGHUP to the master), in the mode BATON_TEST_MODE names:
reloads under 'Connection: close' load fail no request; a binary replaced
on disk is the one running afterwards (master and generation); a new binary
that exits, or is never ready, changes nothing; the main pid and the pid
file stay; the master's descriptors stay flat over 20 reloads; systemd
hears RELOADING=1 then READY=1.

Usage: test_reload.py BUILD_DIR [case ...]
Every process a case starts is stopped by pid; waits have deadlines.
"""
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import cases  # noqa: E402
from reload_bench import KeepAliveLoad  # noqa: E402  (the README's figures use it too)
from test_server import (HTTPD, MODE, Server, children, connect, read_response,  # noqa: E402
                         recv_all)


def get_close(port, timeout=5):
    """One 'Connection: close' request; True if answered 200 in full."""
    try:
        s = connect(port, timeout=timeout)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = recv_all(s, timeout=timeout)
        s.close()
        good = data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello\n")
        if not good and os.environ.get("DEBUG_RELOAD"):
            print("get_close: got %r" % data[:300])
        return good
    except (OSError, AssertionError) as e:
        if os.environ.get("DEBUG_RELOAD"):
            print("get_close:", repr(e))
        return False


class Load:
    """n client threads sending 'Connection: close' requests until stopped;
    counts answered and failed requests, and keeps the slowest's time."""

    def __init__(self, port, n=8):
        self.port, self.ok, self.failed, self.stopped = port, 0, 0, False
        self.slowest = 0.0
        self.lock = threading.Lock()
        self.ts = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.ts:
            t.start()

    def _run(self):
        while not self.stopped:
            t0 = time.monotonic()
            good = get_close(self.port)
            took = time.monotonic() - t0
            with self.lock:
                self.slowest = max(self.slowest, took)
                if good:
                    self.ok += 1
                else:
                    self.failed += 1

    def stop(self):
        self.stopped = True
        for t in self.ts:
            t.join(30)
            assert not t.is_alive(), "a client hangs"
        return self.ok, self.failed


def wait_log(srv, needle, timeout=20):
    """Wait for needle in the server's log; the log in the failure."""
    def seen():
        text = srv.text()
        assert needle in text, "no %r in:\n%s" % (needle, text[-3000:])
    cases.until(seen, timeout=timeout)


def reload(srv, n, timeout=20):
    """SIGHUP to the master; wait for 'reload n:' in its log."""
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, "reload %d:" % n, timeout)


def generations(srv):
    return children(srv.proc.pid)


def wait_one_generation(srv, timeout=20):
    def one():
        g = generations(srv)
        assert len(g) == 1, g
        return g[0]
    return cases.until(one, timeout=timeout)


def test_reload_close_load():
    """5 reloads under 'Connection: close' load: no request fails, the main
    pid stays, each reload brings a new acceptor."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "2")
    try:
        first = srv.acc
        load = Load(srv.port)
        time.sleep(0.3)
        for i in range(1, 6):
            reload(srv, i)
            time.sleep(0.3)
        ok, failed = load.stop()
        assert failed == 0 and ok > 50, (ok, failed)
        assert srv.proc.poll() is None
        last = wait_one_generation(srv)
        assert last != first
        print("     %d requests, %d failed, over 5 reloads" % (ok, failed))
    finally:
        assert srv.stop() == 0, srv.text()[-2000:]


def test_reload_keepalive_load():
    """10 reloads under keep-alive load with pauses between requests (32
    clients): no request fails, every idle connection moves to the new
    generation instead of closing."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "2")
    try:
        load = KeepAliveLoad(srv.port)
        time.sleep(0.5)
        t0 = time.time()
        for i in range(1, 11):
            reload(srv, i)
            time.sleep(0.3)
        ok, failed = load.stop()
        took = time.time() - t0
        assert failed == 0 and load.refused == 0 and ok > 100, (ok, failed, load.refused,
                                                                srv.text()[-3000:])
        assert "connections taken over from the previous generation" in srv.text()
        print("     %d requests, %d failed, over 10 reloads in %.1f s" % (ok, failed, took))
    finally:
        assert srv.stop() == 0, srv.text()[-2000:]


def test_proxy_client_address_moves():
    """A keep-alive connection from a --listen ADDR,proxy listener moves to
    the new generation at a reload with its client's address: the next
    request there still sees the address from its PROXY header."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0,proxy", "--workers", "2",
                 "--peer-header", "X-Client")
    try:
        s = connect(srv.port)
        s.sendall(b"PROXY TCP4 192.0.2.44 127.0.0.1 4444 80\r\n"
                  b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = read_response(s)
        assert b"\r\nX-Client: 192.0.2.44:4444\r\n" in head + b"\r\n", head
        old = srv.acc
        reload(srv, 1)
        wait_log(srv, "connections taken over from the previous generation")
        assert wait_one_generation(srv) != old
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = read_response(s)
        assert b"\r\nX-Client: 192.0.2.44:4444\r\n" in head + b"\r\n", head
        s.close()
    finally:
        assert srv.stop() == 0, srv.text()[-2000:]


def test_idle_and_half_head():
    """A keep-alive connection idle across a reload answers its next
    request after the old generation has exited: the same socket, no
    reconnect.  A request head sent half before the reload and half
    after is answered 200."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "2")
    try:
        idle = connect(srv.port, timeout=10)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        first = read_response(idle)
        half = connect(srv.port, timeout=10)
        half.sendall(b"GET / HTTP/1.1\r\nHo")
        old = srv.acc
        time.sleep(0.1)  # the half head has reached the server
        reload(srv, 1)

        def old_gone():
            assert old not in generations(srv), generations(srv)
        cases.until(old_gone, timeout=20)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        again = read_response(idle)
        assert first[0].startswith(b"HTTP/1.1 200") and again[0].startswith(b"HTTP/1.1 200"), again
        half.sendall(b"st: t\r\nConnection: close\r\n\r\n")
        rest = recv_all(half)
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"hello\n"), rest
        assert "2 connections taken over from the previous generation" in srv.text(), srv.text()
        idle.close()
        half.close()
    finally:
        assert srv.stop() == 0, srv.text()[-2000:]


def copy_of_httpd(d):
    path = os.path.join(d, "baton-httpd")
    shutil.copy2(HTTPD, path)
    return path


def replace_with(path, content_from=None, script=None):
    """Replace path the way a package upgrade does: a new file renamed over
    it (the running one's inode lives on, deleted)."""
    tmp = path + ".new"
    if script is not None:
        with open(tmp, "w") as f:
            f.write(script)
    else:
        shutil.copy2(content_from, tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, path)


def exe(pid):
    return os.readlink("/proc/%d/exe" % pid)


def test_binary_replaced():
    """The file replaced on disk is what runs after the reload: the master
    (same pid) and the new generation, neither '(deleted)'."""
    with tempfile.TemporaryDirectory() as d:
        path = copy_of_httpd(d)
        srv = Server(path, "--listen", "127.0.0.1:0", "--workers", "1")
        try:
            master = srv.proc.pid
            replace_with(path, content_from=HTTPD)
            assert exe(master).endswith("(deleted)"), exe(master)
            reload(srv, 1)

            def fresh():
                assert exe(master) == path, exe(master)
                gen = wait_one_generation(srv)
                assert exe(gen) == path, exe(gen)
            cases.until(fresh, timeout=20)
            assert srv.proc.pid == master and srv.proc.poll() is None
            assert get_close(srv.port)
        finally:
            assert srv.stop() == 0, srv.text()[-2000:]


def test_failed_new_binary():
    """A new binary that exits 1, then one that never gets ready: the
    reload fails with a log line saying why, load keeps passing and the
    same generation serves on."""
    with tempfile.TemporaryDirectory() as d:
        path = copy_of_httpd(d)
        srv = Server(path, "--listen", "127.0.0.1:0", "--workers", "2",
                     "--reload-timeout", "1000")
        try:
            gen = srv.acc
            load = Load(srv.port, n=4)
            replace_with(path, script="#!/bin/sh\nexit 1\n")
            srv.proc.send_signal(signal.SIGHUP)
            wait_log(srv, "exited with status 1; the serving generation keeps serving")
            hung = os.path.join(d, "hung.pid")
            replace_with(path, script="#!/bin/sh\necho $$ > %s\nexec sleep 60\n" % hung)
            srv.proc.send_signal(signal.SIGHUP)
            wait_log(srv, "was not ready within 1000 ms (--reload-timeout)")
            with open(hung) as f:
                sleeper = int(f.read())

            def killed():
                try:
                    with open("/proc/%d/stat" % sleeper) as f:
                        assert f.read().rsplit(")", 1)[1].split()[0] == "Z", "still running"
                except OSError:
                    pass
            cases.until(killed, timeout=10)
            time.sleep(0.3)
            ok, failed = load.stop()
            assert failed == 0 and ok > 20, (ok, failed, srv.text())
            assert generations(srv) == [gen], (generations(srv), gen)
            assert "reload 1:" not in srv.text()
            # The real binary back: a reload works again.
            replace_with(path, content_from=HTTPD)
            reload(srv, 1)
            assert get_close(srv.port)
        finally:
            assert srv.stop() == 0, srv.text()[-2000:]


def test_pid_file_and_fds():
    """--pid-file holds the master's pid, the same after reloads, and goes
    at exit; the master's descriptors after 20 reloads are what they were
    after the start."""
    with tempfile.TemporaryDirectory() as d:
        pidfile = os.path.join(d, "httpd.pid")
        srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1", "--pid-file", pidfile)
        try:
            master = srv.proc.pid
            with open(pidfile) as f:
                assert f.read() == "%d\n" % master
            assert stat.S_IMODE(os.stat(pidfile).st_mode) == 0o644
            before = sorted(os.listdir("/proc/%d/fd" % master))
            for i in range(1, 21):
                reload(srv, i)
            wait_one_generation(srv)
            with open(pidfile) as f:
                assert f.read() == "%d\n" % master

            def links():
                out = []
                for fd in sorted(os.listdir("/proc/%d/fd" % master)):
                    try:
                        out.append(os.readlink("/proc/%d/fd/%s" % (master, fd)))
                    except OSError:
                        pass
                return out

            def flat():
                # The master execs itself after each reload: while the new
                # image loads, its loader holds files open for a moment.
                after = links()
                assert len(after) == len(before), (before, after)
            cases.until(flat, timeout=10)
            assert get_close(srv.port)
        finally:
            assert srv.stop() == 0, srv.text()[-2000:]
        assert not os.path.exists(pidfile)
        assert not [f for f in os.listdir(d) if f.endswith(".tmp")]


def test_flags_file_changes_listeners():
    """--flags-file is read again at a reload: a second address added and
    the first dropped in the file take effect, the kept one without a
    moment refused; a bad file fails the reload and changes nothing."""
    a, b = cases.free_port(), cases.free_port()
    while b == a:  # two probes in a row can be given the same port
        b = cases.free_port()
    with tempfile.TemporaryDirectory() as d:
        flags = os.path.join(d, "httpd.flags")
        with open(flags, "w") as f:
            f.write("# the addresses\n--listen 127.0.0.1:%d\n\n--workers 1\n" % a)
        srv = Server(HTTPD, "--flags-file", flags)
        try:
            assert get_close(a)
            with open(flags, "w") as f:
                f.write("--listen 127.0.0.1:%d\n--listen=127.0.0.1:%d\n--workers 1\n" % (a, b))
            reload(srv, 1)
            assert get_close(a) and get_close(b)
            with open(flags, "w") as f:
                f.write("--listen 127.0.0.1:%d\n--workers 1\n" % b)
            load = Load(b, n=4)
            reload(srv, 2)
            wait_one_generation(srv)
            time.sleep(0.2)
            ok, failed = load.stop()
            assert failed == 0 and ok > 10, (ok, failed, srv.text()[-4000:])
            assert not get_close(a, timeout=2)  # dropped: refused
            with open(flags, "w") as f:
                f.write("--listen 127.0.0.1:%d\n--workers nonsense\n" % b)
            srv.proc.send_signal(signal.SIGHUP)
            wait_log(srv, "--workers: 'nonsense' is not")
            wait_log(srv, "exited with status 2; the serving generation keeps serving")
            assert get_close(b)
        finally:
            assert srv.stop() == 0, srv.text()[-2000:]


def test_attach_listener_moves():
    """The --attach listener passes to the new generation too: after a
    reload a worker attaches there (the path is not removed by the old
    generation, and nothing is bound twice)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "attach.sock")
        srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1", "--attach", path)
        w = None
        try:
            reload(srv, 1)
            wait_one_generation(srv)
            assert os.path.exists(path)
            w = subprocess.Popen([HTTPD, "--worker-of", path], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_log(srv, "attached: pid %d" % w.pid)
            for _ in range(20):
                assert get_close(srv.port)
        finally:
            if w:
                cases.terminate(w)
            assert srv.stop() == 0, srv.text()[-2000:]
        assert not os.path.exists(path)


def test_sd_notify_reload():
    """Under systemd's notify protocol: RELOADING=1, then READY=1 with the
    same MAINPID."""
    with tempfile.TemporaryDirectory() as d:
        addr = os.path.join(d, "notify")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(addr)
        s.settimeout(20)
        srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1",
                     env={"NOTIFY_SOCKET": addr})
        try:
            def until_msg(key):
                got = []
                while True:
                    m = s.recv(4096).decode()
                    got.append(m)
                    if key in m.split("\n"):
                        return got
            first = until_msg("READY=1")
            assert any("MAINPID=%d" % srv.proc.pid in m for m in first), first
            srv.proc.send_signal(signal.SIGHUP)
            got = until_msg("RELOADING=1")
            got += until_msg("READY=1")
            ready = [m for m in got if "READY=1" in m.split("\n")][-1]
            assert "MAINPID=%d" % srv.proc.pid in ready, got
            assert get_close(srv.port), srv.text()
        finally:
            assert srv.stop() == 0, srv.text()[-2000:]
            s.close()


def main():
    print("mode: %s" % MODE)
    return cases.run(globals(), sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
