#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton-httpd against adversarial clients and files: what a server meets
first in production.  Slow and non-reading clients, huge and changing
files, special files under --root, a drain under load.  Each case checks a
bound (worker RSS) or that nothing the runtime accepted is lost.

Usage: test_httpd.py BUILD_DIR [case ...]
Backend and mode from BATON_BACKEND and BATON_TEST_MODE, as test_server.py.
Sanitized builds (BATON_TEST_SANITIZED=1) check RSS growth over the
worker's start instead of its absolute size: the sanitizer's own memory is
not the server's.  Under ThreadSanitizer (=thread) the RSS is printed and
not asserted: its shadow memory is a multiple of the server's.
"""
import hashlib
import os
import re
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
from cases import Skip  # noqa: E402
from test_server import (HTTPD, MODE, Server, connect, read_response,  # noqa: E402
                         recv_all)

SANITIZED = os.environ.get("BATON_TEST_SANITIZED") in ("1", "thread")
# ThreadSanitizer's shadow memory is a multiple of what the program touches:
# there the bound is printed, and asserted by the other builds.
TSAN = os.environ.get("BATON_TEST_SANITIZED") == "thread"
RSS_LIMIT = 64 << 20
# ASan keeps freed memory in quarantine: keep it small for these servers.
SERVER_ENV = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"}


def rss(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s for pid %d" % (field, pid))


def worker_pids(srv):
    """The processes whose memory the bound is about: the workers, or the
    server itself in thread mode."""
    return [srv.acc] if MODE == "thread" else srv.workers()


class RssBound:
    """Worker memory stays under RSS_LIMIT (growth over the start, in a
    sanitized build), sampled every 20 ms while the case runs, and the
    kernel's own high-water mark (VmHWM) checked at the end."""

    def __init__(self, srv):
        self.pids = worker_pids(srv)
        self.base = {p: rss(p) for p in self.pids}
        self.peak = dict(self.base)
        self.stop = False
        self.t = threading.Thread(target=self._sample, daemon=True)
        self.t.start()

    def _sample(self):
        while not self.stop:
            for p in self.pids:
                try:
                    self.peak[p] = max(self.peak[p], rss(p))
                except (OSError, AssertionError):
                    pass
            time.sleep(0.02)

    def check(self):
        self.stop = True
        self.t.join(5)
        for p in self.pids:
            hwm = max(self.peak[p], rss(p, "VmHWM"))
            used = hwm - self.base[p] if SANITIZED else hwm
            assert used < RSS_LIMIT or TSAN, "worker %d: %.1f MB%s (limit %d MB)" % (
                p, used / 1e6, " over its start" if SANITIZED else "", RSS_LIMIT >> 20)
            print("     worker %d: peak RSS %.1f MB%s" % (
                p, used / 1e6, " over its start" if SANITIZED else ""), flush=True)
        return {p: self.peak[p] for p in self.pids}


def no_worker_died(srv):
    bad = [ln for ln in srv.text().splitlines()
           if "killed by signal" in ln or "exited with status" in ln or "Sanitizer" in ln
           or "runtime error:" in ln or "has not moved" in ln]
    assert not bad, bad


def get(port, path, keep=False):
    s = connect(port)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" +
              (b"" if keep else b"Connection: close\r\n") + b"\r\n")
    return s


def status_of(port, path):
    s = get(port, path)
    data = recv_all(s, timeout=5)
    s.close()
    return int(data.split(b" ", 2)[1]) if data else None


# --- cases ---------------------------------------------------------------------

def test_file_changing_while_served():
    """A file truncated and regrown every 0.5 ms while it is requested with
    the head split in two (the request completes in a second read): the
    worker must neither touch freed memory nor die (found under ASan as a
    heap use-after-free: an abort freed the request state under the
    parser).  Every response is a 200 whose body is at most its
    Content-Length, or a connection cut short; nothing else."""
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "flap")
        with open(path, "wb") as f:
            f.write(b"x" * (8 << 20))
        srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "2", "--root", root,
                     env=SERVER_ENV)
        stop = [False]

        def flap():
            fd = os.open(path, os.O_WRONLY)
            size = 0
            while not stop[0]:
                size = (8 << 20) if size == 0 else 0
                os.ftruncate(fd, size)
                time.sleep(0.0005)
            os.close(fd)

        t = threading.Thread(target=flap, daemon=True)
        t.start()
        try:
            for _ in range(150):
                s = connect(srv.port)
                s.sendall(b"GET /flap HTTP/1.1\r\nHo")
                time.sleep(0.003)
                s.sendall(b"st: t\r\nConnection: close\r\n\r\n")
                try:
                    data = recv_all(s, timeout=10)
                except ConnectionResetError:
                    data = None
                s.close()
                if data:
                    head, _, body = data.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200"), head[:80]
                    n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                    assert len(body) <= n, (len(body), n)
        finally:
            stop[0] = True
            t.join(5)
        try:
            no_worker_died(srv)
            assert status_of(srv.port, "/flap") == 200
        finally:
            assert srv.stop() == 0


def pipelined_no_read(args, path, total, body_len):
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1", *args, env=SERVER_ENV)
    try:
        bound = RssBound(srv)
        s = connect(srv.port, timeout=60)
        req = ("GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path).encode()
        s.sendall(req * (total - 1) + req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        # Not reading: the server fills the socket buffers and stops.
        time.sleep(1.0)
        # Now read everything: all responses, complete and in order.
        got = 0
        buf = bytearray()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
            while True:
                he = buf.find(b"\r\n\r\n")
                if he < 0:
                    break
                m = re.search(rb"Content-Length: (\d+)", bytes(buf[:he]))
                n = int(m.group(1))
                if len(buf) < he + 4 + n:
                    break
                assert buf.startswith(b"HTTP/1.1 200"), bytes(buf[:60])
                assert n == body_len, (n, body_len)
                body = bytes(buf[he + 4:he + 4 + n])
                assert body_check(body), "response %d: wrong body" % got
                del buf[:he + 4 + n]
                got += 1
        s.close()
        assert got == total and not buf, (got, len(buf))
        bound.check()
        no_worker_died(srv)
    finally:
        assert srv.stop() == 0


def body_check(body):
    """--body-size bodies are 'abc...z' repeated, ending in a newline; the
    test file is the same pattern."""
    want = pattern(len(body))
    return body == want


_patterns = {}


def pattern(n):
    if n not in _patterns:
        p = bytes(ord("a") + i % 26 for i in range(26)) * (n // 26 + 1)
        p = bytearray(p[:n])
        if n:
            p[-1] = ord("\n")
        _patterns[n] = bytes(p)
    return _patterns[n]


def test_pipelined_without_reading():
    """1000 pipelined requests for a 1 MB body from a client that does not
    read: worker RSS stays under 64 MB; then it reads all 1000 responses,
    complete and in order.  Once with the fixed body, once with a file."""
    pipelined_no_read(["--body-size", str(1 << 20)], "/", 1000, 1 << 20)
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "mb"), "wb") as f:
            f.write(pattern(1 << 20))
        pipelined_no_read(["--root", root], "/mb", 1000, 1 << 20)


def test_slow_readers():
    """50 clients that each ask for a 10 MB body and do not read: the
    worker holds the high-water mark per connection, not the body."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1",
                 "--body-size", str(10 << 20), env=SERVER_ENV)
    try:
        bound = RssBound(srv)
        socks = [get(srv.port, "/") for _ in range(50)]
        time.sleep(1.0)
        for s in socks:
            head, body = read_response(s)
            assert len(body) == 10 << 20 and body == pattern(10 << 20)
            s.close()
        bound.check()
        no_worker_died(srv)
    finally:
        assert srv.stop() == 0


def test_huge_sparse_file():
    """A 3 GiB sparse file (more than 2 GiB in one response, which was lost
    on io_uring) downloads completely with the same bytes, and worker RSS
    stays under 64 MB."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BATON_TEST_TMP")) as root:
        path = os.path.join(root, "big")
        size = 3 << 30
        marks = {0: b"start", 1 << 31: b"two-gib", size - 3: b"end"}
        with open(path, "wb") as f:
            f.truncate(size)
            for off, data in marks.items():
                f.seek(off)
                f.write(data)
        want = hashlib.sha256()
        zeros = bytes(1 << 20)
        pos = 0
        for off in sorted(marks):
            while pos < off:
                k = min(len(zeros), off - pos)
                want.update(zeros[:k])
                pos += k
            want.update(marks[off])
            pos += len(marks[off])
        while pos < size:
            k = min(len(zeros), size - pos)
            want.update(zeros[:k])
            pos += k
        srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1", "--root", root,
                     env=SERVER_ENV)
        try:
            bound = RssBound(srv)
            s = get(srv.port, "/big")
            s.settimeout(60)
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            head, _, rest = head.partition(b"\r\n\r\n")
            assert b"Content-Length: %d" % size in head, head
            got = hashlib.sha256(rest)
            n = len(rest)
            buf = bytearray(4 << 20)
            view = memoryview(buf)
            while True:
                k = s.recv_into(view)
                if not k:
                    break
                got.update(view[:k])
                n += k
            s.close()
            no_worker_died(srv)
            assert n == size, (n, size)
            assert got.hexdigest() == want.hexdigest()
            bound.check()
        finally:
            assert srv.stop() == 0


def test_special_files_refused():
    """A FIFO under the root gets 403 at once (it used to hang a worker in
    open(2), and every other connection of that worker with it); so do a
    unix socket and a symlink as the last component.  Regular files and
    index.html still work."""
    with tempfile.TemporaryDirectory() as root:
        os.mkfifo(os.path.join(root, "fifo"))
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(os.path.join(root, "sock"))
        with open(os.path.join(root, "plain"), "wb") as f:
            f.write(b"plain\n")
        os.symlink("plain", os.path.join(root, "link"))
        os.mkdir(os.path.join(root, "d"))
        with open(os.path.join(root, "d", "index.html"), "wb") as f:
            f.write(b"index\n")
        srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1", "--root", root,
                     env=SERVER_ENV)
        try:
            for path in ("/fifo", "/sock", "/link"):
                t0 = time.time()
                assert status_of(srv.port, path) == 403, path
                assert time.time() - t0 < 1.0, (path, time.time() - t0)
            assert status_of(srv.port, "/plain") == 200
            assert status_of(srv.port, "/d/") == 200
            assert status_of(srv.port, "/missing") == 404
            no_worker_died(srv)
        finally:
            sock.close()
            assert srv.stop() == 0


def test_sigterm_answers_every_accepted():
    """SIGTERM under 'Connection: close' load: every connection the runtime
    accepted gets its response (the drain used to close accepted
    connections whose request had not been read yet).  Responses counted
    by the clients equal 'accepted' in the server's exit counters."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "2", "--drain-timeout", "5000",
                 env=SERVER_ENV)
    stop = [False]
    answered = [0]
    empty = [0]
    lock = threading.Lock()

    def load():
        while not stop[0]:
            try:
                s = connect(srv.port, timeout=10)
            except OSError:
                continue  # refused: the listener is closed
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                data = recv_all(s, timeout=10)
            except OSError:
                data = None  # reset: left in the backlog, never accepted
            finally:
                s.close()
            with lock:
                if data:
                    assert data.startswith(b"HTTP/1.1 200"), data[:60]
                    answered[0] += 1
                elif data is not None:
                    empty[0] += 1

    ts = [threading.Thread(target=load) for _ in range(16)]
    for t in ts:
        t.start()
    try:
        time.sleep(1.0)
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.wait(30)
    finally:
        stop[0] = True
        for t in ts:
            t.join(30)
    assert rc == 0, srv.text()
    no_worker_died(srv)
    m = re.search(r"counters \(exit\).*\n.*accepted (\d+)", srv.text())
    assert m, srv.text()
    accepted = int(m.group(1))
    assert empty[0] == 0, "%d connections closed without a response" % empty[0]
    assert answered[0] == accepted, (answered[0], accepted)


def ask(s, path):
    """One keep-alive GET on s: (head, body)."""
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    return read_response(s)


def test_health_path():
    """--health PATH answers 200 "ok" while serving (with a query, or HEAD,
    too; nothing else is taken for it), and a bad PATH is refused at start.
    With --grace, SIGTERM makes it 503 "going away" with Connection: close
    while the server still accepts and serves (a keep-alive connection's
    next response then closes it); a second SIGTERM drains at once."""
    import subprocess
    bad = subprocess.run([HTTPD, "--health", "healthz"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 2 and "is not a path" in bad.stderr, (bad.returncode, bad.stderr)
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "2", "--grace", "60000",
                 "--health", "/healthz", env=SERVER_ENV)
    for path in ("/healthz", "/healthz?from=haproxy"):
        s = get(srv.port, path)
        head, body = read_response(s)
        s.close()
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        assert b"Cache-Control: no-store" in head and body == b"ok\n", (head, body)
    s = get(srv.port, "/healthzz")
    head, body = read_response(s)
    s.close()
    assert body == b"hello\n", (head, body)
    s = connect(srv.port)
    s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = recv_all(s, timeout=10)
    s.close()
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"\r\n\r\n"), data

    keep = connect(srv.port)
    head, body = ask(keep, "/")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" not in head, head
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    # The workers learn it a moment later: ask on new connections until
    # one says so.  Each is answered: the server still accepts.
    while True:
        s = get(srv.port, "/healthz")
        head, body = read_response(s)
        s.close()
        if head.startswith(b"HTTP/1.1 503"):
            break
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        assert time.time() < t0 + 20, "still 200 20 s after SIGTERM"
        time.sleep(0.01)
    assert b"Connection: close" in head and body == b"going away\n", (head, body)
    assert status_of(srv.port, "/") == 200, "a new connection in the grace is not served"
    # Both workers say 503 (the connections go round robin).
    for _ in range(4):
        s = get(srv.port, "/healthz")
        head, body = read_response(s)
        s.close()
        assert head.startswith(b"HTTP/1.1 503"), head
    # The keep-alive connection is answered, and closed after it.
    head, body = ask(keep, "/")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head, head
    assert recv_all(keep, timeout=10) == b"", "the connection stays open after its response"
    keep.close()
    assert srv.proc.poll() is None, "exited within its grace"
    def logged():
        assert "going away" in srv.text(), srv.text()
    cases.until(logged)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.wait(30) == 0, srv.text()
    assert time.time() - t0 < 30, "the second SIGTERM did not end the grace"
    assert "the grace ends now" in srv.text(), srv.text()
    no_worker_died(srv)


def test_drain_answers_idle_keepalive():
    """A keep-alive connection idle at SIGTERM is not closed under its
    client: its next request is answered with Connection: close.  One that
    stays silent is closed at the drain's deadline, and the server exits 0.
    (Closing idle connections first would race a request on its way.)"""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1", "--drain-timeout", "3000",
                 env=SERVER_ENV)
    talker, silent = connect(srv.port), connect(srv.port)
    for s in (talker, silent):
        head, body = ask(s, "/")
        assert b"Connection: close" not in head, head
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    # Until the worker has DRAIN, it answers as before and keeps the
    # connection: ask again until a response says close.
    while True:
        head, body = ask(talker, "/")
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        if b"Connection: close" in head:
            break
        assert time.time() < t0 + 2.5, "no Connection: close before the drain's deadline"
        time.sleep(0.01)
    assert recv_all(talker, timeout=10) == b"", "open after its last response"
    talker.close()
    assert recv_all(silent, timeout=20) == b"", "the silent connection got bytes"
    waited = time.time() - t0
    silent.close()
    assert srv.wait(30) == 0, srv.text()
    assert waited >= 2.5, "the idle connection was closed %.2f s after SIGTERM, " \
        "before the drain's deadline" % waited
    no_worker_died(srv)


V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src, sport, dport=80):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = "::1" if ":" in src else "127.0.0.1"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def proxy_v2(src, sport, tlv=b""):
    """A v2 PROXY header for an IPv6 or IPv4 client, TLVs appended."""
    if ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + bytes(16) + struct.pack(">HH", sport, 443)
        fam = 0x21
    else:
        body = socket.inet_pton(socket.AF_INET, src) + bytes(4) + struct.pack(">HH", sport, 443)
        fam = 0x11
    body += tlv
    return V2_SIG + bytes([0x21, fam]) + struct.pack(">H", len(body)) + body


def via_proxy(port, header, keep=False):
    """A connection that sends header, then GET /: (socket, head)."""
    s = connect(port)
    s.sendall(header + b"GET / HTTP/1.1\r\nHost: t\r\n" +
              (b"" if keep else b"Connection: close\r\n") + b"\r\n")
    head, body = read_response(s)
    assert body == b"hello\n", (head, body)
    return s, head


def client_of(head):
    m = re.search(rb"\r\nX-Client: (\S+)", head)
    assert m, head
    return m.group(1).decode()


def test_proxy_listener():
    """--listen ADDR,proxy: v1 and v2 headers (TLVs skipped, a header split
    over writes) give the handler the client's address (bt_conn_peer, shown
    by --peer-header); a plain listener never parses one.  A connection
    without a header, with a malformed or an oversized one, or one that
    stops inside it is closed, and counted; a slow one is closed at
    --proxy-timeout.  The worker serves on, and the counters say it."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0,proxy", "--listen", "127.0.0.1:0",
                 "--workers", "2", "--peer-header", "X-Client", "--proxy-timeout", "1000",
                 env=SERVER_ENV)
    pport = srv.port
    plain = int(srv.addrs[1].rsplit(":", 1)[1])
    assert "(PROXY protocol)" in srv.text().split("listening on")[1], srv.text()
    try:
        s, head = via_proxy(pport, proxy_v1("192.0.2.7", 4321))
        assert client_of(head) == "192.0.2.7:4321", head
        s, head = via_proxy(pport, proxy_v1("2001:db8::5", 5555))
        assert client_of(head) == "[2001:db8::5]:5555", head
        tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00" + b"\x05\x00\x03abc"
        s, head = via_proxy(pport, proxy_v2("2001:db8::9", 6000, tlvs))
        assert client_of(head) == "[2001:db8::9]:6000", head
        # Split over writes, keep-alive: the peer stays for every request.
        s = connect(pport)
        h = proxy_v2("198.51.100.20", 7000)
        s.sendall(h[:7])
        time.sleep(0.05)
        s.sendall(h[7:20])
        time.sleep(0.05)
        s.sendall(h[20:] + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, body = read_response(s)
        assert client_of(head) == "198.51.100.20:7000", head
        head, body = ask(s, "/")
        assert client_of(head) == "198.51.100.20:7000", head
        s.close()
        # A LOCAL header (a balancer's own check): the connection's address.
        local = V2_SIG + bytes([0x20, 0x00, 0x00, 0x00])
        s, head = via_proxy(pport, local)
        assert client_of(head).startswith("127.0.0.1:"), head
        # The plain listener: the client's own address, and a PROXY line
        # is just a bad request there.
        s, head = via_proxy(plain, b"")
        assert client_of(head).startswith("127.0.0.1:"), head
        s = connect(plain)
        s.sendall(proxy_v1("192.0.2.7", 1) + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert recv_all(s).startswith(b"HTTP/1.1 400"), "a plain listener parsed a header"

        refused = 0
        for bad in (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",          # no header
                    b"PROXY TCP4 1.2.3.400 1.2.3.4 1 2\r\n",          # malformed
                    b"PROXY TCP4 " + b"1" * 120 + b"\r\n",            # over 107
                    V2_SIG + b"\x21\x21\xff\xff" + bytes(4096)):  # over 4096
            s = connect(pport)
            t0 = time.time()
            try:
                s.sendall(bad)
                got = recv_all(s, timeout=10)
            except ConnectionResetError:
                got = b""
            assert got == b"", (bad[:20], got)
            assert time.time() - t0 < 0.9, "refused only at the deadline: %r" % bad[:20]
            refused += 1
        # Stops inside its header: refused at its EOF.
        s = connect(pport)
        s.sendall(b"PROXY TCP4 1.2.3.4")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s, timeout=10) == b""
        refused += 1
        # Slow: closed at --proxy-timeout (1 s), not before.
        s = connect(pport)
        t0 = time.time()
        s.sendall(b"PROXY TCP4 1.2.3.4 ")
        assert recv_all(s, timeout=10) == b""
        took = time.time() - t0
        assert 0.9 <= took < 5, took
        # Still serving.
        s, head = via_proxy(pport, proxy_v1("192.0.2.8", 1))
        assert client_of(head) == "192.0.2.8:1", head
    finally:
        assert srv.stop() == 0, srv.text()
    m = re.search(r"proxy: refused (\d+) .*late (\d+)", srv.text())
    assert m and int(m.group(1)) == refused and int(m.group(2)) == 1, (refused, srv.text())
    no_worker_died(srv)


def test_proxy_socket_activation():
    """A socket from systemd named "proxy" (FileDescriptorName=proxy,
    LISTEN_FDNAMES) is a PROXY listener, and stays one across a reload
    (SIGHUP: the master starts the program again, which takes the socket
    from the previous generation)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    port = ls.getsockname()[1]
    cmd = cases.activated(ls.fileno(), [HTTPD, "--workers", "1", "--peer-header", "X-Client"],
                          name="proxy")
    srv = Server(HTTPD, cmd=cmd, pass_fds=(ls.fileno(),), env=SERVER_ENV)
    ls.close()
    try:
        assert "(fd 3 from systemd, PROXY protocol)" in srv.text(), srv.text()
        for gen in (1, 2):
            s, head = via_proxy(port, proxy_v1("192.0.2.31", 3100 + gen))
            assert client_of(head) == "192.0.2.31:%d" % (3100 + gen), head
            s.close()
            s = connect(port)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert recv_all(s, timeout=10) == b"", "a request without a header was served"
            s.close()
            if gen == 1:
                old = srv.acc
                srv.proc.send_signal(signal.SIGHUP)

                def reloaded():
                    assert "reload 1:" in srv.text() and srv.acc != old, srv.text()[-1500:]
                cases.until(reloaded, timeout=20)
    finally:
        assert srv.stop() == 0, srv.text()[-2000:]


def test_stopped_worker_under_load():
    """SIGSTOP one of two workers under 'Connection: close' load: dispatch
    passes it over once it stops acknowledging, so the other keeps serving
    (throughput stays above half of the figure before); a client fails at
    most once (the connection it had on the stopped worker: each gives up
    after 1 s); after --worker-timeout the stopped worker is killed and
    replaced, and the server serves on."""
    if MODE == "thread":
        raise Skip("SIGSTOP stops every thread of the process")
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "2", "--worker-timeout", "3000",
                 env=SERVER_ENV)
    clients = 12
    stop = [False]
    done = []   # completion times of good responses
    failed = []
    lock = threading.Lock()

    def load():
        while not stop[0]:
            try:
                s = connect(srv.port, timeout=1.0)
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                data = recv_all(s, timeout=1.0)
                s.close()
                ok = data.startswith(b"HTTP/1.1 200")
            except (OSError, AssertionError):
                ok = False
            with lock:
                (done if ok else failed).append(time.time())

    pids = srv.workers()
    ts = [threading.Thread(target=load) for _ in range(clients)]
    try:
        for t in ts:
            t.start()
        time.sleep(1.0)
        t_stop = time.time()
        os.kill(pids[0], signal.SIGSTOP)
        # Before the watchdog (3 s): from 1.2 s on, every client that was
        # caught has given up and been dispatched elsewhere.
        time.sleep(2.7)

        def rate(a, b):
            with lock:
                return sum(1 for x in done if a <= x < b) / (b - a)
        before = rate(t_stop - 0.8, t_stop)
        during = rate(t_stop + 1.2, t_stop + 2.7)

        def replaced():
            now = srv.workers()
            assert len(now) == 2 and pids[0] not in now, now
        cases.until(replaced, timeout=10)
        time.sleep(0.5)
        after = rate(time.time() - 0.5, time.time())
    finally:
        stop[0] = True
        for t in ts:
            t.join(10)
        try:
            os.kill(pids[0], signal.SIGCONT)
        except OSError:
            pass
    try:
        print("     responses/s: %.0f before, %.0f while stopped, %.0f after; %d failed"
              % (before, during, after, len(failed)))
        assert during > before / 2, (before, during)
        assert after > 0
        with lock:
            in_stop = sum(1 for x in failed if x >= t_stop)
        assert in_stop <= clients, "%d failures for %d clients" % (in_stop, clients)
        text = srv.text()
        assert "dispatching to the others" in text, text
        assert "stuck (--worker-timeout 3000): SIGKILL" in text, text
    finally:
        assert srv.stop() == 0


def test_stopped_worker_redelivered():
    """The only worker is stopped with a connection sent to it and not yet
    acknowledged: after --worker-timeout it is killed, replaced, and that
    connection is served by its successor (redelivered, not lost)."""
    if MODE == "thread":
        raise Skip("SIGSTOP stops every thread of the process")
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1", "--worker-timeout", "1000",
                 env=SERVER_ENV)
    try:
        pid = srv.workers()[0]
        os.kill(pid, signal.SIGSTOP)
        t0 = time.time()
        s = connect(srv.port, timeout=20)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = recv_all(s, timeout=20)
        s.close()
        took = time.time() - t0
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello\n"), data
        assert took >= 0.9, took  # served only after the watchdog
        assert pid not in srv.workers()
        c = srv.counters()
        assert c["redelivered"] >= 1, c
        assert re.search(r"worker 0: pid \d+[^,]*, restarts 1, stuck 1,", srv.text()), srv.text()
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
        assert srv.stop() == 0


def main():
    print("backend: %s, mode: %s" % (os.environ.get("BATON_BACKEND", "auto"), MODE))
    return cases.run(globals(), sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
