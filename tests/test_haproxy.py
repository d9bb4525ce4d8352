#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton behind a real balancer: HAProxy (Debian's package) on 127.0.0.1 in
front of two baton-httpd instances on 127.0.0.2 and 127.0.0.3, as
docs/deploy.md sets it up.

  deploy_config_parses  docs/deploy/haproxy.cfg is valid (haproxy -c)
  client_address   TCP mode, send-proxy-v2: the handler sees the client's
                   own address (the client binds 127.0.0.9), not HAProxy's;
                   _v1: the same with send-proxy (a version 1 line)
  spread           both instances serve, round robin
  drain_http       HTTP mode under keep-alive load: one instance gets
                   SIGTERM with --grace; it answers 503 to the health check,
                   HAProxy marks it down, then it drains: no request fails
  drain_tcp        the same in TCP mode, where the client's connection runs
                   end to end: the instance's "Connection: close" moves each
                   client to the other one; no request fails

Usage: test_haproxy.py BUILD_DIR [case ...]
Backend and mode from BATON_BACKEND and BATON_TEST_MODE, as test_server.py.
Every process it starts is stopped by pid.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import cases  # noqa: E402
from cases import Skip  # noqa: E402
from drain_bench import BACKENDS, FRONT, HAPROXY, HAProxy, free_port  # noqa: E402
from reload_bench import KeepAliveLoad  # noqa: E402
from test_server import HTTPD, MODE, Server, recv_all  # noqa: E402

def instances(bport, *extra):
    return [Server(HTTPD, "--listen", "%s:%d,proxy" % (ip, bport), "--workers", "2",
                   "--health", "/healthz", "--peer-header", "X-Client",
                   "--body", name + "\n", *extra)
            for name, ip in zip(("A", "B"), BACKENDS)]


def setup(mode, *extra, send="send-proxy-v2"):
    if not os.access(HAPROXY, os.X_OK):
        raise Skip("no haproxy (.ci/deps test installs it)")
    fport, bport = free_port(), free_port()
    srvs = instances(bport, *extra)
    lb = HAProxy(mode, fport, bport, send)
    try:
        lb.wait_state({"a": "UP", "b": "UP"})
    except BaseException:
        teardown(lb, srvs)
        raise
    return fport, lb, srvs


def teardown(lb, srvs):
    lb.stop()  # by pid
    for s in srvs:
        if s.proc.poll() is None:
            assert s.stop() == 0, s.text()


def get_from(fport, source=None):
    """One 'Connection: close' GET through HAProxy: (head, body, our address)."""
    s = socket.socket()
    s.settimeout(10)
    if source:
        s.bind((source, 0))
    s.connect((FRONT, fport))
    me = s.getsockname()
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = recv_all(s, timeout=10)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    # HAProxy's HTTP mode sends header names in lower case.
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert m and int(m.group(1)) == len(body), data
    return head, body, me


def test_deploy_config_parses():
    """docs/deploy/haproxy.cfg, the configuration users copy, is valid for
    this HAProxy (haproxy -c), and names the settings the tests rely on."""
    if not os.access(HAPROXY, os.X_OK):
        raise Skip("no haproxy (.ci/deps test installs it)")
    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "docs", "deploy", "haproxy.cfg")
    r = subprocess.run([HAPROXY, "-c", "-f", cfg], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    text = open(cfg).read()
    for needle in ("send-proxy-v2", "check-send-proxy", "option httpchk GET /healthz",
                   "http-check expect status 200", "mode tcp", "option redispatch"):
        assert needle in text, needle


def client_address(send):
    fport, lb, srvs = setup("tcp", send=send)
    try:
        for _ in range(6):
            head, body, me = get_from(fport, source="127.0.0.9")
            assert head.startswith(b"HTTP/1.1 200"), head
            m = re.search(rb"\r\nX-Client: (\S+)", head)
            assert m and m.group(1).decode() == "%s:%d" % me, (head, me)
    finally:
        teardown(lb, srvs)


def test_client_address():
    """TCP mode with send-proxy-v2: X-Client (bt_conn_peer) is the client's
    own address and port (it binds 127.0.0.9), not HAProxy's."""
    client_address("send-proxy-v2")


def test_client_address_v1():
    """The same with send-proxy: HAProxy's version 1 header, a text line."""
    client_address("send-proxy")


def test_spread():
    """Both instances serve: 40 requests, round robin, each gets at least
    a quarter."""
    fport, lb, srvs = setup("tcp")
    try:
        got = {b"A\n": 0, b"B\n": 0}
        for _ in range(40):
            head, body, _ = get_from(fport)
            got[body] += 1
        assert got[b"A\n"] >= 10 and got[b"B\n"] >= 10, got
        print("     A %d, B %d of 40" % (got[b"A\n"], got[b"B\n"]), flush=True)
    finally:
        teardown(lb, srvs)


def drain_under_load(mode):
    """32 keep-alive clients through HAProxy; instance A gets SIGTERM with
    --grace 2000: its health check says 503 and HAProxy marks it down
    before it drains.  Returns (requests, failed)."""
    fport, lb, srvs = setup(mode, "--grace", "2000", "--drain-timeout", "3000")
    a, b = srvs
    try:
        load = KeepAliveLoad(fport, n=32)
        time.sleep(1.0)
        t0 = time.time()
        a.proc.send_signal(signal.SIGTERM)
        lb.wait_state({"a": "DOWN", "b": "UP"}, timeout=10)
        down = time.time() - t0
        assert a.proc.poll() is None, "A stopped before HAProxy took it out"
        assert a.wait(30) == 0, a.text()
        gone = time.time() - t0
        time.sleep(1.0)
        ok, failed = load.stop()
        assert "going away" in a.text(), a.text()
        print("     %s mode: %d requests, %d failed; A down in HAProxy %.2f s after "
              "SIGTERM, exited after %.2f s" % (mode, ok + failed, failed, down, gone), flush=True)
        assert ok > 200, (ok, failed)
        assert failed == 0, (ok, failed, lb.text()[-2000:])
        # B serves on, alone.
        head, body, _ = get_from(fport)
        assert body == b"B\n", (head, body)
        return ok + failed, failed
    finally:
        teardown(lb, srvs)


def test_drain_http():
    drain_under_load("http")


def test_drain_tcp():
    drain_under_load("tcp")


def main():
    print("backend: %s, mode: %s" % (os.environ.get("BATON_BACKEND", "auto"), MODE))
    return cases.run(globals(), sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
