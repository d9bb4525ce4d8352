#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Reloads under keep-alive load: how many requests get no response.

Each design serves a fixed 200 response on 127.0.0.1.  The same load runs
against each: C clients on keep-alive connections, each pausing 0-20 ms
between requests, for S seconds, once without reloads and once with R
reloads spread over it.  A request that gets no full response (end of
file, reset, timeout) is a failure, and its client connects again.  So
does a client after a response that says "Connection: close", as any
HTTP client does (before 2026-12-06 it sent its next request on the
closed connection, and counted it failed).

  baton          baton-httpd, kill -HUP to its master (connections move)
  baton-restart  baton-httpd, SIGTERM then a new start (for contrast)
  nginx          nginx 1.22, kill -HUP to its master (nginx -s reload)
  haproxy        HAProxy in master-worker mode (-W), kill -USR2 to the
                 master (seamless: listeners passed on)

requests: sent on a connection; failed: of those, got no full response;
refused: connection attempts that failed (no request sent).

Usage: reload_bench.py BUILD_DIR [--designs LIST] [--reloads R]
                       [--seconds S] [--clients C]
Prints one table; every server it starts is stopped by pid.
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_response(s):
    """One HTTP/1.1 response with Content-Length: its status line, and
    whether the server said it closes the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            raise ConnectionResetError("EOF instead of a response")
        data += b
    head, rest = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        b = s.recv(65536)
        if not b:
            raise ConnectionResetError("EOF inside a body")
        rest += b
    if len(rest) > n:
        raise ConnectionError("more bytes than one response")
    close = re.search(rb"(?im)^connection:\s*close\s*$", head) is not None
    return head.split(b"\r\n", 1)[0], close


class KeepAliveLoad:
    """n clients, each on one keep-alive connection, a request after a
    pause of 0-20 ms, again and again: a request that gets no full 200
    response is a failure (then the client connects again)."""

    def __init__(self, port, n=32, timeout=5):
        self.port, self.timeout = port, timeout
        self.ok = self.failed = self.refused = 0
        self.stopped = False
        self.lock = threading.Lock()
        self.ts = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]
        for t in self.ts:
            t.start()

    def _run(self, i):
        rnd = random.Random(i)
        s = None
        while not self.stopped:
            if s is None:
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                except OSError:
                    with self.lock:
                        self.refused += 1  # no request sent: not a failed request
                    time.sleep(0.01)
                    continue
            close = False
            try:
                time.sleep(rnd.random() * 0.02)
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                status, close = read_response(s)
                good = status.startswith(b"HTTP/1.1 200")
            except OSError:
                good = False
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
            # As any HTTP client: after "Connection: close" (a server
            # stopping, say), the next request goes on a new connection.
            if (close or not good) and s is not None:
                s.close()
                s = None
        if s is not None:
            s.close()

    def stop(self):
        self.stopped = True
        for t in self.ts:
            t.join(30)
        return self.ok, self.failed


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited at start (status %s)" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on port %d" % port)


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Design:
    """A server started from argv, reloaded and stopped by signals to its
    main process."""
    reload_sig, stop_sig = signal.SIGHUP, signal.SIGTERM

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def reload(self):
        self.proc.send_signal(self.reload_sig)

    def stop(self):
        stop(self.proc, self.stop_sig)


class Baton(Design):
    name = "baton"

    def __init__(self, build, port, d):
        self.argv = [os.path.join(build, "apps", "baton-httpd"), "--listen",
                     "127.0.0.1:%d" % port, "--workers", "2"]
        self.port = port


class BatonRestart(Baton):
    name = "baton-restart"

    def reload(self):
        self.stop()
        self.start()


def nginx_argv(d, server):
    """nginx 1.22 in the foreground, 2 workers, its files in directory d,
    with one server block whose inside is server; its command line."""
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("worker_processes 2;\ndaemon off;\nmaster_process on;\npid %s/nginx.pid;\n"
                "error_log %s/error.log;\nevents { worker_connections 4096; }\n"
                "http { access_log off; keepalive_requests 1000000; keepalive_timeout 65;\n"
                "  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;\n"
                "  uwsgi_temp_path %s; scgi_temp_path %s;\n"
                "  server { %s } }\n" % (d, d, d, d, d, d, d, server))
    return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", conf, "-p", d]


class Nginx(Design):
    name = "nginx"
    stop_sig = signal.SIGQUIT  # graceful

    def __init__(self, build, port, d):
        self.port = port
        self.argv = nginx_argv(d, "listen 127.0.0.1:%d; default_type text/plain;\n"
                                  "    location / { return 200 \"hello\\n\"; }" % port)


class Haproxy(Design):
    name = "haproxy"
    reload_sig = signal.SIGUSR2  # master-worker reload
    stop_sig = signal.SIGUSR1    # soft stop: finish, then exit

    def __init__(self, build, port, d):
        self.port = port
        conf = os.path.join(d, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("global\n  master-worker\n  nbthread 2\n"
                    "  stats socket %s/stats.sock mode 600 expose-fd listeners level admin\n"
                    "defaults\n  mode http\n  timeout client 30s\n  timeout connect 5s\n"
                    "  timeout server 30s\n  timeout http-keep-alive 30s\n"
                    "frontend f\n  bind 127.0.0.1:%d\n"
                    "  http-request return status 200 content-type text/plain string hello\n"
                    % (d, port))
        self.argv = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-W", "-db", "-f", conf]


DESIGNS = {"baton": Baton, "baton-restart": BatonRestart, "nginx": Nginx, "haproxy": Haproxy}
BINARIES = {"nginx": "nginx", "haproxy": "haproxy"}


def run(design, args, reloads):
    with tempfile.TemporaryDirectory() as d:
        srv = design(args.build, free_port(), d)
        srv.start()
        try:
            time.sleep(0.3)
            load = KeepAliveLoad(srv.port, args.clients)
            t0 = time.time()
            for k in range(reloads):
                time.sleep(args.seconds / (reloads + 1))
                srv.reload()
            time.sleep(max(0.0, args.seconds - (time.time() - t0)))
            ok, failed = load.stop()
            took = time.time() - t0
        finally:
            srv.stop()
    return ok, failed, ok / took, load.refused


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--designs", default="baton,baton-restart,nginx,haproxy")
    ap.add_argument("--reloads", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=14)
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    names = [n for n in args.designs.split(",") if n]
    for n in names:
        if n not in DESIGNS:
            ap.error("unknown design %s (%s)" % (n, ", ".join(DESIGNS)))
    print("reload_bench: %d clients on keep-alive connections, pauses 0-20 ms, %.0f s per "
          "run, %d reloads; each design also runs once without reloads" %
          (args.clients, args.seconds, args.reloads), flush=True)
    rows = []
    for n in names:
        if n in BINARIES and not shutil.which(BINARIES[n]):
            print("  %s: not installed, skipped" % n, flush=True)
            continue
        print("  %s ..." % n, flush=True)
        base = run(DESIGNS[n], args, 0)
        with_reloads = run(DESIGNS[n], args, args.reloads)
        rows.append((n, base, with_reloads))
    print("\n%-14s %10s %8s %8s %10s %15s %6s" % ("design", "requests", "failed", "refused",
                                                  "req/s", "req/s no reload", "ratio"))
    for n, base, rel in rows:
        print("%-14s %10d %8d %8d %10.0f %15.0f %6.2f" % (
            n, rel[0] + rel[1], rel[1], rel[3], rel[2], base[2], rel[2] / base[2] if base[2] else 0))
        if base[1]:
            print("  (%s failed %d requests even without reloads)" % (n, base[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
