#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Taking one host out of two behind HAProxy: how many requests fail.

HAProxy (Debian's package) listens on 127.0.0.1 and balances, round robin,
over two instances of a design on 127.0.0.2 and 127.0.0.3, each sent a
PROXY v2 header (send-proxy-v2) and checked with GET /healthz every 100 ms
(fall 2, rise 2), as docs/deploy.md sets it up.  C keep-alive clients
(reload_bench's: a request after a pause of 0-20 ms; a new connection after
a failure or a "Connection: close") run for S seconds; at S/3 the first
instance is told to stop.  A request that gets no full 200 response is a
failure.  Each design runs in HAProxy's TCP mode (the client's connection
runs end to end to the instance) and in its HTTP mode (HAProxy keeps its
own connections to the instances, and may retry an idempotent request on
one that closed: retry-on).

  baton          baton-httpd --grace 2000, SIGTERM: 503 on /healthz while
                 it serves on for 2 s, "Connection: close" on every
                 response from SIGTERM on, then the drain
  baton-nograce  baton-httpd, SIGTERM: the drain at once
  nginx          nginx 1.22 (listen ... proxy_protocol), SIGQUIT: its
                 graceful stop

Usage: drain_bench.py BUILD_DIR [--designs LIST] [--modes tcp,http]
                      [--seconds S] [--clients C] [--reps N]
Prints one table; every process it starts is stopped by pid.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reload_bench import KeepAliveLoad, nginx_argv, stop  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
FRONT = "127.0.0.1"
BACKENDS = ("127.0.0.2", "127.0.0.3")


def free_port():
    """A port free on 127.0.0.1 and on both backend addresses."""
    while True:
        s = socket.socket()
        s.bind((FRONT, 0))
        port = s.getsockname()[1]
        s.close()
        try:
            for ip in BACKENDS:
                t = socket.socket()
                t.bind((ip, port))
                t.close()
            return port
        except OSError:
            continue


def haproxy_config(mode, fport, bport, sock, send="send-proxy-v2"):
    """The configuration of docs/deploy.md, with the checks made fast for a
    test (inter 100ms, fall 2, rise 2) and a stats socket to watch them.
    send: send-proxy-v2, or send-proxy for version 1."""
    http = mode == "http"
    servers = "".join(
        "    server %s %s:%d %s check check-send-proxy\n" % (name, ip, bport, send)
        for name, ip in zip(("a", "b"), BACKENDS))
    return ("global\n"
            "    stats socket %s level admin\n"
            "    hard-stop-after 30s\n"
            "defaults\n"
            "    mode %s\n"
            "    timeout connect 2s\n"
            "    timeout client 30s\n"
            "    timeout server 30s\n"
            "    retries 3\n"
            "    option redispatch\n"
            "%s"
            "frontend web\n"
            "    bind %s:%d\n"
            "    default_backend baton\n"
            "backend baton\n"
            "    balance roundrobin\n"
            "    option httpchk GET /healthz\n"
            "    http-check expect status 200\n"
            "    default-server inter 100ms fall 2 rise 2\n"
            "%s"
            "%s") % (sock, mode,
                     "    option http-keep-alive\n" if http else "",
                     FRONT, fport,
                     "    retry-on conn-failure empty-response response-timeout\n" if http else "",
                     servers)


class HAProxy:
    """HAProxy in the foreground (-db) in a directory of its own."""

    def __init__(self, mode, fport, bport, send="send-proxy-v2"):
        self.dir = tempfile.mkdtemp(prefix="baton-haproxy-")
        self.sock = os.path.join(self.dir, "stats.sock")
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_config(mode, fport, bport, self.sock, send))
        self.log = open(os.path.join(self.dir, "haproxy.log"), "w+")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def states(self):
        """{server: status} ("UP", "DOWN", "UP 1/2", ...) from 'show stat'."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(self.sock)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        finally:
            s.close()
        rows = [ln.split(",") for ln in data.decode().splitlines()
                if ln and not ln.startswith("#")]
        return {r[1]: r[17] for r in rows if len(r) > 17 and r[0] == "baton" and r[1] in "ab"}

    def wait_state(self, want, timeout=20):
        """Until every server in want has that status; RuntimeError after
        timeout seconds, or if HAProxy exits."""
        deadline = time.time() + timeout
        st = {}
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("haproxy exited: %s" % self.text())
            try:
                st = self.states()
            except OSError:
                st = {}
            if all(st.get(k, "").startswith(v) for k, v in want.items()):
                return
            time.sleep(0.02)
        raise RuntimeError("haproxy: servers %s, not %s after %d s" % (st, want, timeout))

    def text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        stop(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Instance:
    """One backend instance: started from argv, told to stop by a signal."""
    stop_sig = signal.SIGTERM

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def begin_stop(self):
        self.proc.send_signal(self.stop_sig)

    def wait(self, timeout=30):
        return self.proc.wait(timeout)

    def stop(self):
        stop(self.proc, self.stop_sig)


class Baton(Instance):
    grace = "2000"

    def __init__(self, build, ip, port, name, d):
        self.argv = [os.path.join(build, "apps", "baton-httpd"), "--listen",
                     "%s:%d,proxy" % (ip, port), "--workers", "2", "--health", "/healthz",
                     "--body", name + "\n", "--grace", self.grace, "--drain-timeout", "3000"]


class BatonNoGrace(Baton):
    grace = "0"


class Nginx(Instance):
    stop_sig = signal.SIGQUIT  # graceful

    def __init__(self, build, ip, port, name, d):
        d = os.path.join(d, name)
        os.mkdir(d)
        self.argv = nginx_argv(d, "listen %s:%d proxy_protocol; default_type text/plain;\n"
                                  "    location = /healthz { return 200 \"ok\\n\"; }\n"
                                  "    location / { return 200 \"%s\\n\"; }" % (ip, port, name))


DESIGNS = {"baton": Baton, "baton-nograce": BatonNoGrace, "nginx": Nginx}


def run(design, mode, args):
    """One drain under load: (requests, failed, seconds until HAProxy
    marked the instance down, seconds until it exited)."""
    with tempfile.TemporaryDirectory() as d:
        fport, bport = free_port(), free_port()
        insts = [design(args.build, ip, bport, name, d) for name, ip in zip("AB", BACKENDS)]
        for i in insts:
            i.start()
        lb = HAProxy(mode, fport, bport)
        try:
            lb.wait_state({"a": "UP", "b": "UP"})
            load = KeepAliveLoad(fport, args.clients)
            time.sleep(args.seconds / 3)
            t0 = time.time()
            insts[0].begin_stop()
            lb.wait_state({"a": "DOWN"}, timeout=30)
            down = time.time() - t0
            insts[0].wait(30)
            gone = time.time() - t0
            time.sleep(max(0.0, args.seconds * 2 / 3 - gone))
            ok, failed = load.stop()
        finally:
            lb.stop()
            for i in insts:
                i.stop()
    return ok + failed, failed, down, gone


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--designs", default="baton,baton-nograce,nginx")
    ap.add_argument("--modes", default="tcp,http")
    ap.add_argument("--seconds", type=float, default=9)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    names = [n for n in args.designs.split(",") if n]
    modes = [m for m in args.modes.split(",") if m]
    for n in names:
        if n not in DESIGNS:
            ap.error("unknown design %s (%s)" % (n, ", ".join(DESIGNS)))
    for m in modes:
        if m not in ("tcp", "http"):
            ap.error("unknown mode %s (tcp, http)" % m)
    if not os.access(HAPROXY, os.X_OK):
        print("drain_bench: no haproxy (.ci/deps bench installs it)", file=sys.stderr)
        return 1
    print("drain_bench: HAProxy over 2 instances, %d keep-alive clients, %.0f s per run, "
          "one instance stopped at %.0f s; %d runs each" %
          (args.clients, args.seconds, args.seconds / 3, args.reps), flush=True)
    rows = []
    for m in modes:
        for n in names:
            if n == "nginx" and not shutil.which("nginx"):
                print("  nginx: not installed, skipped", flush=True)
                continue
            runs = []
            for r in range(args.reps):
                runs.append(run(DESIGNS[n], m, args))
                print("  %s, %s mode, run %d: %d requests, %d failed" %
                      (n, m, r + 1, runs[-1][0], runs[-1][1]), flush=True)
            rows.append((n, m, runs))
    print("\n%-14s %-5s %10s %8s %s" % ("design", "mode", "requests", "failed",
                                          "failed per run; down / exited after (s)"))
    for n, m, runs in rows:
        print("%-14s %-5s %10d %8d %s" % (
            n, m, sum(r[0] for r in runs), sum(r[1] for r in runs),
            "  ".join("%d (%.2f/%.2f)" % (r[1], r[2], r[3]) for r in runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
