#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Server designs side by side under the same wrk load, in one run.

Each design serves the same tiny HTTP response on 127.0.0.1; wrk (an
independent load client from Debian) drives it for --seconds per round,
with one new connection per request (-H "Connection: close") or keep-alive
(--keepalive).  Rounds alternate the designs; medians are reported.

  requests/s    wrk's count over its run
  p50/p99 ms    wrk's latency percentiles (connect to last byte for
                connect-per-request, since each request opens its connection)
  CPU us/req    the server's own CPU time (user+sys of every process of the
                server, read from /proc, children included) per request: a
                load generator sharing the cores cannot hide a design's cost

Usage: servers.py BUILD_DIR [--seconds S] [--rounds N] [--connections C]
                  [--designs a,b,...] [--keepalive] [--csv FILE]
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tree_cpu(root):
    """CPU seconds of root (with its reaped children) and its live descendants."""
    total = 0
    try:
        with open("/proc/%d/stat" % root) as f:
            st = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
    except OSError:
        return 0.0
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read().rsplit(")", 1)[1].split()
            kids.setdefault(int(st[1]), []).append((int(p), int(st[11]) + int(st[12])))
        except (OSError, IndexError, ValueError):
            pass
    todo = [root]
    while todo:
        pid = todo.pop()
        for kid, ticks in kids.get(pid, []):
            total += ticks
            todo.append(kid)
    return total / TCK


class Design:
    def __init__(self, name, argv_fn, ready_re=r"listening on \S+:(\d+)", conf=None):
        self.name = name
        self.argv_fn = argv_fn
        self.ready_re = ready_re
        self.conf = conf
        self.proc = None
        self.port = None
        self.tmp = None

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="baton-bench-")
        port = free_port()
        argv = self.argv_fn(port, self.tmp)
        self.log = open(os.path.join(self.tmp, "stderr"), "w+")
        env = dict(os.environ, BATON_LOG="warn")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env=env)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                self.port = port
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.log.seek(0)
        raise RuntimeError("%s did not start: %s" % (self.name, self.log.read()))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def nginx_argv(workers):
    def argv(port, tmp):
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""worker_processes %d;
daemon off;
master_process on;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %s;
  proxy_temp_path %s;
  fastcgi_temp_path %s;
  uwsgi_temp_path %s;
  scgi_temp_path %s;
  server {
    listen 127.0.0.1:%d backlog=4096;
    location / { default_type text/plain; return 200 "hello\\n"; }
  }
}
""" % (workers, tmp, tmp, tmp, tmp, tmp, tmp, tmp, port))
        return ["nginx", "-c", conf, "-e", os.path.join(tmp, "error.log")]
    return argv


def designs(build, workers, batch, flush):
    httpd = os.path.join(build, "apps", "baton-httpd")
    common = ["--workers", str(workers), "--batch", str(batch), "--flush", flush]
    d = {
        "baton-process": Design("baton-process", lambda p, t: [httpd, "--listen", "127.0.0.1:%d" % p,
                                                               "--mode", "process"] + common),
        "baton-thread": Design("baton-thread", lambda p, t: [httpd, "--listen", "127.0.0.1:%d" % p,
                                                             "--mode", "thread"] + common),
        "inplace": Design("inplace", lambda p, t: [os.path.join(build, "bench", "bench-inplace"),
                                                   "--listen", "127.0.0.1:%d" % p]),
        "inplace-plain": Design("inplace-plain", lambda p, t: [
            os.path.join(build, "bench", "bench-inplace"), "--listen", "127.0.0.1:%d" % p,
            "--no-fin-merge"]),
        "inplace-paced": Design("inplace-paced", lambda p, t: [
            os.path.join(build, "bench", "bench-inplace"), "--listen", "127.0.0.1:%d" % p,
            "--paced", "200"]),
        "prefork": Design("prefork", lambda p, t: [os.path.join(build, "bench", "bench-prefork"),
                                                   "--listen", "127.0.0.1:%d" % p, "--workers", str(workers)]),
        "reuseport": Design("reuseport", lambda p, t: [os.path.join(build, "bench", "bench-reuseport"),
                                                       "--listen", "127.0.0.1:%d" % p, "--workers", str(workers)]),
        "fork": Design("fork", lambda p, t: [os.path.join(build, "bench", "bench-fork"),
                                             "--listen", "127.0.0.1:%d" % p]),
    }
    for extra in os.environ.get("BATON_BENCH_VARIANTS", "").split(";"):
        if extra.strip():
            args = extra.split()
            d["baton:" + "".join(args)] = Design("baton:" + "".join(args), (
                lambda xs: lambda p, t: [httpd, "--listen", "127.0.0.1:%d" % p] + common + xs)(args))
    if shutil.which("nginx"):
        d["nginx"] = Design("nginx", nginx_argv(workers))
    return d


def parse_ms(v, unit):
    v = float(v)
    return {"us": v / 1000, "ms": v, "s": v * 1000}[unit]


def run_wrk(port, seconds, conns, keepalive):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "--timeout", "5s"]
    if not keepalive:
        argv += ["-H", "Connection: close"]
    argv.append("http://127.0.0.1:%d/" % port)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)s", out)
    reqs = int(m.group(1))
    lat = dict((p, parse_ms(v, u)) for p, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", out))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    nerr = sum(int(x) for x in errs.groups()) if errs else 0
    return {"reqs": reqs, "rps": reqs / float(m.group(2)), "p50": lat.get("50", 0.0),
            "p99": lat.get("99", 0.0), "errors": nerr + (int(non2xx.group(1)) if non2xx else 0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--flush", default="adaptive")
    ap.add_argument("--designs", default="")
    ap.add_argument("--keepalive", action="store_true")
    ap.add_argument("--csv")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("servers.py: wrk is not installed (apt-get install wrk)")
    all_d = designs(os.path.abspath(a.build), a.workers, a.batch, a.flush)
    names = [n for n in (a.designs.split(",") if a.designs else all_d) if n]
    for n in names:
        if n not in all_d:
            sys.exit("servers.py: unknown design %s (have %s)" % (n, ", ".join(all_d)))
    res = dict((n, []) for n in names)
    print("load: wrk -t1 -c%d, %s, %d s x %d rounds, %d workers, batch %d, flush %s" % (
        a.connections, "keep-alive" if a.keepalive else "one connection per request",
        a.seconds, a.rounds, a.workers, a.batch, a.flush), flush=True)
    for r in range(a.rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for n in order:
            d = all_d[n]
            d.start()
            try:
                run_wrk(d.port, 1, a.connections, a.keepalive)  # warm-up
                c0 = tree_cpu(d.proc.pid)
                w = run_wrk(d.port, a.seconds, a.connections, a.keepalive)
                c1 = tree_cpu(d.proc.pid)
            finally:
                d.stop()
            w["cpu_us"] = (c1 - c0) * 1e6 / max(1, w["reqs"])
            res[n].append(w)
            print("  round %d %-14s %9.0f req/s %7.1f us/req  errors %d" % (
                r + 1, n, w["rps"], w["cpu_us"], w["errors"]), file=sys.stderr, flush=True)
    med = {}
    for n in names:
        med[n] = dict((k, statistics.median(x[k] for x in res[n]))
                      for k in ("rps", "p50", "p99", "cpu_us", "errors"))
    base = med.get("inplace", {}).get("cpu_us")
    print("\n%-14s %10s %8s %8s %10s %9s %7s" % ("design", "req/s", "p50 ms", "p99 ms",
                                                  "CPU us/req", "x inplace", "errors"))
    for n in names:
        m = med[n]
        ratio = "%.2f" % (m["cpu_us"] / base) if base else "-"
        print("%-14s %10.0f %8.2f %8.2f %10.1f %9s %7d" % (n, m["rps"], m["p50"], m["p99"],
                                                         m["cpu_us"], ratio, m["errors"]))
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("design,req_per_s,p50_ms,p99_ms,cpu_us_per_req,ratio_to_inplace,errors\n")
            for n in names:
                m = med[n]
                f.write("%s,%.0f,%.3f,%.3f,%.2f,%s,%d\n" % (
                    n, m["rps"], m["p50"], m["p99"], m["cpu_us"],
                    "%.4f" % (m["cpu_us"] / base) if base else "", m["errors"]))


if __name__ == "__main__":
    main()
