#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""baton-bench against servers other than baton-httpd: the sweep and conns
driving a program given with --server, the echo and raw protocols, IPv6,
names and unix socket paths, the open loop (--rate) and what it shows that
the closed loop hides, and the flags' errors.

Usage: test_bench.py BUILD_DIR [case ...]"""
import csv
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
from cases import free_port  # noqa: E402
from test_server import ECHO, HTTPD, Server  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
BENCH = os.path.join(BUILD, "bench", "baton-bench")


def bench(*args, timeout=300, expect=0):
    r = subprocess.run([BENCH] + list(args), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == expect, "exit %d, wanted %d: %s\n%s" % (
        r.returncode, expect, " ".join(args), (r.stdout + r.stderr)[-2000:])
    return r


def result(r):
    m = re.search(r"^RESULT (.*)$", r.stdout, re.M)
    assert m, r.stdout
    return dict((k, float(v)) for k, v in re.findall(r"(\w+)=([\d.]+)", m.group(1)))


# A tiny server in Python for the protocols our servers do not speak: it
# answers each request (REQ_LEN bytes) with REPLY_LEN bytes, on every
# connection and as many times as asked; "stall" makes it stop answering
# for 200 ms every second (one thread serves everything: a stall stalls
# all); "mangle" echoes back with the case of letters swapped.
PYSERVER = textwrap.dedent(r'''
    import asyncio, sys, time
    mode, path = sys.argv[1], sys.argv[2]
    REQ_LEN, REPLY = 5, bytes(range(256)) * 4  # 1024 bytes

    class Conn(asyncio.Protocol):
        def connection_made(self, t):
            self.t, self.buf = t, b""
        def data_received(self, data):
            if mode == "mangle":
                self.t.write(data.swapcase())
                return
            if mode == "http":
                self.buf += data
                while b"\r\n\r\n" in self.buf:
                    _, self.buf = self.buf.split(b"\r\n\r\n", 1)
                    self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
                return
            self.buf += data
            while len(self.buf) >= REQ_LEN:
                self.buf = self.buf[REQ_LEN:]
                self.t.write(REPLY)

    async def stall():
        while True:
            await asyncio.sleep(0.8)
            time.sleep(0.2)  # the whole server stops

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_unix_server(Conn, path) if path.startswith("/") else \
            await loop.create_server(Conn, "127.0.0.1", int(path))
        if "stall" in sys.argv[3:]:
            loop.create_task(stall())
        print("ready", flush=True)
        await srv.serve_forever()
    asyncio.run(main())
''')


class PyServer:
    def __init__(self, mode, where, *extra):
        self.proc = subprocess.Popen([sys.executable, "-c", PYSERVER, mode, str(where)] + list(extra),
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout.readline().strip() == b"ready"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        cases.terminate(self.proc, 10)


# --- cases ---------------------------------------------------------------------


def test_sweep_server_echo():
    """sweep --server baton-echo --proto echo: a CSV with every point, the
    defaults included, none with errors; the best setting's flags; a plot
    with a row of panels per client count."""
    with tempfile.TemporaryDirectory() as d:
        r = bench("sweep", "--server", ECHO, "--proto", "echo", "--size", "300", "--batches", "1,8",
                  "--flushes", "adaptive,delay:100", "--clients", "2,6", "--seconds", "0.3",
                  "--workers", "2", "--out", d)
        p = os.path.join(d, "sweep-baton-echo-process.csv")
        rows = list(csv.DictReader(open(p)))
        assert list(rows[0].keys()) == [
            "server", "mode", "clients", "rate", "dispatch", "flush", "batch", "conns_per_s", "p50_us",
            "p99_us", "p999_us", "server_cpu_us_per_conn", "errors"], rows[0]
        got = sorted((x["clients"], x["flush"], x["batch"]) for x in rows)
        want = sorted([(c, f, b) for c in ("2", "6") for f in ("adaptive", "delay:100")
                       for b in ("1", "8")] + [("2", "default", "default"), ("6", "default", "default")])
        assert got == want, got
        for x in rows:
            assert int(x["errors"]) == 0 and float(x["conns_per_s"]) > 0, x
            assert float(x["server_cpu_us_per_conn"]) > 0, x
        for c in ("2", "6"):
            assert "best at %s clients" % c in r.stdout, r.stdout
        # Per client count: the flags and the distance from the defaults, or
        # the defaults themselves as the best.
        flags = re.findall(r"flags: (--batch \d+ --flush \S+|none \(the defaults)", r.stdout)
        assert len(flags) == 2, r.stdout
        assert r.stdout.count("vs the defaults") == sum(f.startswith("--") for f in flags), r.stdout
        gp = open(os.path.join(d, "sweep-baton-echo-process.gp")).read()
        assert "multiplot layout 2,3" in gp and 'set xtics ("1" 1, "8" 8)' in gp, gp[:600]
        assert "set logscale y" in gp and "set yrange [0:*]" in gp and "key below" in gp, gp[:600]
        if shutil.which("gnuplot"):
            svg = open(os.path.join(d, "sweep-baton-echo-process.svg")).read()
            assert "<svg" in svg and "6 clients" in svg, svg[:300]


def test_sweep_open_loop():
    """sweep --rates: the points are at a fixed rate, and the CSV says which."""
    with tempfile.TemporaryDirectory() as d:
        r = bench("sweep", "--server", ECHO, "--proto", "echo", "--batches", "4", "--flushes",
                  "adaptive", "--rates", "300", "--clients", "8", "--seconds", "0.5", "--workers", "1",
                  "--keepalive", "--out", d)
        rows = list(csv.DictReader(open(os.path.join(d, "sweep-baton-echo-process.csv"))))
        assert len(rows) == 2 and all(x["rate"] == "300" and int(x["errors"]) == 0 for x in rows), rows
        for x in rows:
            assert 240 <= float(x["conns_per_s"]) <= 360, x
        assert "best at 300/s" in r.stdout, r.stdout


def test_conns_server_adds_a_row():
    """conns --server my=PATH: the program runs as design 'my', next to the
    built-in designs, in the same table."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "c.csv")
        bench("conns", "--server", "my=" + HTTPD, "--server-arg", "--body-size=100",
              "--designs", "inplace,my", "--seconds", "0.3", "--reps", "1", "--clients", "4",
              "--csv", out)
        rows = dict((x["design"], x) for x in csv.DictReader(open(out)))
        assert set(rows) == {"inplace", "my"}, rows
        assert int(rows["my"]["errors"]) == 0 and float(rows["my"]["conns_per_s"]) > 0, rows["my"]
        # Another protocol: only the --server designs speak it.
        bench("conns", "--server", "e=" + ECHO, "--proto", "echo", "--seconds", "0.3", "--reps",
              "1", "--clients", "4", "--csv", out)
        rows = list(csv.DictReader(open(out)))
        assert [x["design"] for x in rows] == ["e"] and int(rows[0]["errors"]) == 0, rows


def test_conns_attach():
    """The baton-attach design: baton-httpd with --workers 0 --attach and
    --worker-of processes serves the load, with their CPU counted."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "c.csv")
        bench("conns", "--designs", "baton-attach", "--seconds", "0.5", "--reps", "1",
              "--clients", "4", "--workers", "2", "--csv", out)
        rows = list(csv.DictReader(open(out)))
        assert [x["design"] for x in rows] == ["baton-attach"], rows
        assert int(rows[0]["errors"]) == 0 and float(rows[0]["conns_per_s"]) > 0, rows
        assert float(rows[0]["server_cpu_us_per_conn"]) > 0, rows


def test_conns_with_wrk():
    """conns --client wrk: the same designs, loaded by wrk (an independent
    client), one table; inplace-plain is run only when named."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "c.csv")
        bench("conns", "--client", "wrk", "--designs", "inplace,inplace-plain,baton-proc",
              "--seconds", "1", "--reps", "1", "--clients", "4", "--csv", out)
        rows = dict((x["design"], x) for x in csv.DictReader(open(out)))
        assert set(rows) == {"inplace", "inplace-plain", "baton-proc"}, rows
        for x in rows.values():
            assert int(x["errors"]) == 0 and float(x["conns_per_s"]) > 0, x
            assert float(x["server_cpu_us_per_conn"]) > 0 and float(x["p50_us"]) > 0, x
        bench("conns", "--client", "wrk", "--designs", "inplace", "--keepalive", "--seconds", "1",
              "--reps", "1", "--clients", "4", "--csv", out)
        rows = list(csv.DictReader(open(out)))
        assert [x["design"] for x in rows] == ["inplace"] and int(rows[0]["errors"]) == 0, rows


def test_conns_split_and_direct_ceiling():
    """conns --split: a baton design's acceptor CPU apart from the rest's,
    adding up to its total; none for a design without an acceptor.  The
    ceiling on direct descriptors runs (inplace-direct) and x inplace is
    over the cheaper in-place design."""
    r = bench("conns", "--designs", "inplace,inplace-direct,baton-proc", "--split", "--seconds",
              "0.5", "--reps", "1", "--clients", "4")
    table = r.stdout
    m = re.search(r"^baton-proc\s+([\d.]+) \([\d.]+-[\d.]+\)\s+([\d.]+)$", table, re.M)
    assert m, table
    total = re.search(r"^baton-proc\s+\d+ \([\d-]+\)\s+\d+\s+\d+\s+\d+\s+([\d.]+)", table, re.M)
    assert total, table
    acc, rest = float(m.group(1)), float(m.group(2))
    assert acc > 0 and rest > 0 and abs(acc + rest - float(total.group(1))) < 0.2, (acc, rest, table)
    split = table[table.index("acceptor us/conn"):]
    assert "inplace" not in split, split
    assert re.search(r"^inplace-direct\s+\d+", table, re.M), table
    base = re.search(r"cheaper in-place design run \((inplace|inplace-direct)\)", table)
    assert base, table
    ratio = re.search(r"^%s\s.*\s1\.00\s+0$" % re.escape(base.group(1)), table, re.M)
    assert ratio, table


def test_load_addresses():
    """load against [::1], a name (localhost) and a unix socket path; conns
    and sweep serve on them too."""
    srv = Server(HTTPD, "--listen", "[::1]:0", "--workers", "1")
    try:
        port = srv.port
        x = result(bench("load", "--connect", "[::1]:%d" % port, "--seconds", "0.3", "--clients", "4"))
        assert x["requests"] > 0 and x["errors"] == 0, x
    finally:
        srv.stop()
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1")
    try:
        x = result(bench("load", "--connect", "localhost:%d" % srv.port, "--seconds", "0.3",
                         "--clients", "4", "--keepalive"))
        assert x["requests"] > 0 and x["errors"] == 0, x
    finally:
        srv.stop()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.sock")
        srv = Server(HTTPD, "--listen", path, "--workers", "1")
        try:
            x = result(bench("load", "--connect", path, "--seconds", "0.3", "--clients", "4"))
            assert x["requests"] > 0 and x["errors"] == 0, x
        finally:
            srv.stop()
        out = os.path.join(d, "c.csv")
        bench("conns", "--designs", "baton-proc,nginx" if shutil.which("nginx") else "baton-proc",
              "--listen", os.path.join(d, "c.sock"), "--seconds", "0.3", "--reps", "1", "--clients",
              "4", "--csv", out)
        rows = list(csv.DictReader(open(out)))
        assert rows and all(int(x["errors"]) == 0 and float(x["conns_per_s"]) > 0 for x in rows), rows
        bench("conns", "--designs", "baton-thread", "--listen", "[::1]", "--seconds", "0.3", "--reps",
              "1", "--clients", "4", "--csv", out)
        rows = list(csv.DictReader(open(out)))
        assert rows and int(rows[0]["errors"]) == 0, rows


def test_rate_is_kept():
    """--rate R: the schedule is kept within 10% on a short run, and the
    latency runs from the intended send times."""
    srv = Server(HTTPD, "--listen", "127.0.0.1:0", "--workers", "1")
    try:
        for extra in ([], ["--keepalive"]):
            r = bench("load", "--connect", "127.0.0.1:%d" % srv.port, "--rate", "400", "--seconds",
                      "2", "--clients", "16", *extra)
            x = result(r)
            assert 360 <= x["rps"] <= 440 and x["errors"] == 0, (extra, r.stdout)
            assert 760 <= x["due"] <= 840, r.stdout
            assert "intended send time" in r.stdout, r.stdout
    finally:
        srv.stop()


def test_coordinated_omission():
    """A server that stops for 200 ms every second: closed loop, the stall
    hides (its 2 clients wait, nothing else is sent); at a fixed rate, every
    exchange due during a stall waits for it, and p99 shows it."""
    port = free_port()
    with PyServer("http", port, "stall"):
        common = ["--connect", "127.0.0.1:%d" % port, "--keepalive", "--seconds", "3"]
        closed = result(bench("load", "--clients", "2", *common))
        opened = result(bench("load", "--clients", "64", "--rate", "300", *common))
    print("     p99 closed loop %d us (%d exchanges), open loop %d us (%d)" % (
        closed["p99_us"], closed["requests"], opened["p99_us"], opened["requests"]))
    assert closed["errors"] == 0 and opened["errors"] == 0, (closed, opened)
    assert closed["requests"] > 2000, closed  # the stalls are under 1% of them
    assert opened["p99_us"] >= 120000, opened
    assert closed["p99_us"] < 60000, closed


def test_raw_protocol():
    """--proto raw against a Python server: a request file, N bytes back;
    a wrong length is an error, never a success."""
    with tempfile.TemporaryDirectory() as d:
        req = os.path.join(d, "req")
        with open(req, "wb") as f:
            f.write(b"PING\n")
        port = free_port()
        with PyServer("raw", port):
            for extra in ([], ["--keepalive"]):
                x = result(bench("load", "--connect", "127.0.0.1:%d" % port, "--proto", "raw", "--send",
                                 req, "--expect-bytes", "1024", "--seconds", "0.5", "--clients", "4",
                                 *extra))
                assert x["requests"] > 0 and x["errors"] == 0, (extra, x)
            r = bench("load", "--connect", "127.0.0.1:%d" % port, "--proto", "raw", "--send", req,
                      "--expect-bytes", "1000", "--seconds", "0.3", "--clients", "2")
            x = result(r)
            assert x["requests"] == 0 and x["errors"] > 0 and "mismatch" in r.stdout, r.stdout
        path = os.path.join(d, "py.sock")
        with PyServer("mangle", path):
            r = bench("load", "--connect", path, "--proto", "echo", "--line", "Hello", "--seconds", "0.3",
                      "--clients", "2")
            x = result(r)
            assert x["requests"] == 0 and x["errors"] > 0 and "mismatch" in r.stdout, r.stdout


def test_bad_flags():
    """Every bad flag: exit 2 and a message that names it."""
    with tempfile.TemporaryDirectory() as d:
        empty = os.path.join(d, "empty")
        open(empty, "w").close()
        bad = [
            (["load", "--connect", "127.0.0.1"], "which port"),
            (["load", "--connect", "[::1:80"], "[IPV6]:PORT"),
            (["load", "--connect", "::1:80"], "brackets"),
            (["load", "--connect", "127.0.0.1:99999"], "not a port"),
            (["load", "--connect", "/" + "x" * 120], "107 bytes"),
            (["load", "--connect", "127.0.0.1:1", "--proto", "gopher"], "--proto"),
            (["load", "--connect", "127.0.0.1:1", "--size", "10"], "--proto echo"),
            (["load", "--connect", "127.0.0.1:1", "--proto", "echo", "--size", "10", "--line", "x"],
             "not both"),
            (["load", "--connect", "127.0.0.1:1", "--proto", "raw"], "--send"),
            (["load", "--connect", "127.0.0.1:1", "--proto", "raw", "--send", empty,
              "--expect-bytes", "3"], "regular file"),
            (["load", "--connect", "127.0.0.1:1", "--proto", "echo", "--path", "/x"], "--proto http"),
            (["load", "--connect", "127.0.0.1:1", "--expect", "7xx"], "--expect"),
            (["load", "--connect", "127.0.0.1:1", "--rate", "0"], "--rate"),
            (["load", "--connect", "127.0.0.1:1", "--server-pid", "999999999"], "--server-pid"),
            (["conns", "--server", "noequals"], "NAME=PATH"),
            (["conns", "--server", "x=/no/such/server"], "no such file"),
            (["conns", "--server", "fork=" + ECHO], "built-in"),
            (["conns", "--designs", "fork", "--listen", "[::1]"], "IPv4 only"),
            (["conns", "--proto", "echo"], "--server"),
            (["conns", "--server-arg", "x"], "without --server"),
            (["conns", "--client", "ab"], "--client"),
            (["conns", "--client", "wrk", "--proto", "echo", "--server", "e=" + ECHO], "http only"),
            (["conns", "--client", "wrk", "--rate", "100"], "closed loop"),
            (["conns", "--client", "wrk", "--listen", os.path.join(d, "sock")], "TCP"),
            (["sweep", "--objective", "beauty"], "--objective"),
            (["sweep", "--proto", "echo"], "--server"),
            (["sweep", "--rates", "fast"], "--rates"),
            (["sweep", "--dispatches", "random"], "--dispatches"),
            (["sweep", "--batches", "8,4"], "increasing"),
            (["sweep", "--mode", "thread", "--threads", "2"], "--threads"),
        ]
        for args, why in bad:
            r = subprocess.run([BENCH] + args, capture_output=True, text=True, timeout=30)
            assert r.returncode == 2 and why in r.stderr, (args, r.returncode, r.stderr)


def main():
    return cases.run(globals(), sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
