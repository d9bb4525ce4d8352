#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Running baton's programs as a service: the flags every Linux tool takes
(-h, -V, --, --flag=value, prefixes), defaults and signals in --help,
sd_notify to a NOTIFY_SOCKET this test listens on, journald priority
prefixes when JOURNAL_STREAM names stderr, --listen together with socket
activation, SIGHUP, and the default listen address.

Usage: test_service.py BUILD_DIR [case ...]
Every server a case starts is stopped by pid; waits have deadlines.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
from cases import Skip  # noqa: E402

BUILD = os.path.abspath(sys.argv[1])
ECHO = os.path.join(BUILD, "apps", "baton-echo")
HTTPD = os.path.join(BUILD, "apps", "baton-httpd")
SPOOL = os.path.join(BUILD, "apps", "baton-spool")
BENCH = os.path.join(BUILD, "bench", "baton-bench")
with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
    VERSION = re.search(r"CMAKE_PROJECT_VERSION:STATIC=(\S+)", f.read()).group(1)


def run(argv, timeout=20, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def children(pid):
    """pids whose parent is pid, sorted."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(out)


def wait_for(cond, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def echo_once(port, data=b"hi\n"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = s.recv(4096)
            if not b:
                return out
            out += b


class Server:
    """A server whose stderr goes to a file (so that JOURNAL_STREAM can
    name it); the port is read from its 'listening on' line."""

    def __init__(self, argv, env=None, pass_fds=(), journal=False):
        self.dir = tempfile.mkdtemp(prefix="baton-service-")
        self.errpath = os.path.join(self.dir, "stderr")
        self.err = open(self.errpath, "w+b")
        e = dict(os.environ)
        e.setdefault("BATON_LOG", "info")
        for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID"):
            e.pop(k, None)
        if journal:  # the way systemd says stderr is the journal's stream
            st = os.fstat(self.err.fileno())
            e["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        e.update(env or {})
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.err, env=e, pass_fds=pass_fds)

    def text(self):
        with open(self.errpath, "rb") as f:
            return f.read().decode(errors="replace")

    def started(self):
        wait_for(lambda: "worker processes" in self.text() or self.proc.poll() is not None,
                 "the server to start")
        assert self.proc.poll() is None, self.text()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.text())
        return int(m.group(1)) if m else None

    def stop(self, timeout=15):
        if self.err.closed:
            return self.proc.returncode
        rc = cases.terminate(self.proc, timeout)
        self.err.close()
        return "hung" if rc is None else rc


# --- cases -----------------------------------------------------------------------

def test_help_and_version_flags():
    for prog in (ECHO, HTTPD, SPOOL, BENCH):
        name = os.path.basename(prog)
        for flag in ("-h", "--help"):
            r = run([prog, flag])
            assert r.returncode == 0 and r.stdout.startswith("Usage: " + name), (prog, flag, r)
        for flag in ("-V", "--version"):
            r = run([prog, flag])
            assert r.returncode == 0, (prog, flag, r)
            assert r.stdout.startswith("%s (baton) %s\n" % (name, VERSION)), (prog, flag, r.stdout)
    for sub in ("conns", "sweep", "load", "fdpass"):
        for flag in ("-h", "-V"):
            r = run([BENCH, sub, flag])
            assert r.returncode == 0 and r.stdout, (sub, flag, r)


def test_flag_forms():
    for prog in (ECHO, HTTPD):
        # --flag=value, a unique prefix, then --help: parsed, printed, exit 0.
        r = run([prog, "--workers=1", "--bat", "4", "--flush=size", "--help"])
        assert r.returncode == 0 and "Usage:" in r.stdout, r
        # The same forms carry bad values to a clear error (exit 2).
        for bad, why in ((["--worke=0"], "ambiguous option '--worke=0' (--workers or --worker-timeout or --worker-of)"),
                         (["--workers=0"], "--workers: '0' is not"),
                         (["--worker-t=50"], "--worker-timeout: '50' is not"),
                         (["--out-high=100"], "--out-high: '100' is not"),
                         (["--batch"], "--batch needs a value"),
                         (["--", "stray"], "unexpected argument 'stray' after '--'"),
                         (["-x"], "unknown option '-x'"),
                         (["--nope=1"], "unknown option '--nope=1'")):
            r = run([prog] + bad)
            assert r.returncode == 2 and why in r.stderr, (prog, bad, r.stderr)
            assert "Try '%s --help'" % os.path.basename(prog) in r.stderr, r.stderr
    # '--' ends baton-spool's flags: a file may start with '-'.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "-data")
        with open(path, "w") as f:
            f.write("a b\nc\n")
        r = run([SPOOL, "-w", "1", "--job=words", "--", "-data"], cwd=d)
        assert r.returncode == 0 and "-data: 3 words" in r.stdout, r
        r = run([SPOOL, "--", "-nonexistent"], cwd=d)
        assert r.returncode == 1 and "open(-nonexistent)" in r.stderr, r
    r = run([SPOOL, "--workers"])
    assert r.returncode == 2 and "--workers needs a value" in r.stderr, r
    r = run([BENCH, "load", "--", "stray"])
    assert r.returncode == 2 and "unexpected argument 'stray'" in r.stderr, r
    r = run([BENCH, "conns", "--bogus"])
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr, r
    assert "Try 'baton-bench conns --help'" in r.stderr, r.stderr


def test_help_shows_defaults_and_signals():
    for prog, addr in ((HTTPD, "127.0.0.1:8080"), (ECHO, "127.0.0.1:7000")):
        r = run([prog, "--help"])
        out = r.stdout
        assert "(default %s)" % addr in out, out
        for want in ("--batch N", "(default 32)", "(default adaptive:200)", "(default rr)",
                     "(default process)", "(default 10000)", "(default auto)",
                     "one per online CPU", "HUP", "TERM, INT", "USR1", "BATON_LOG",
                     "BATON_BACKEND", "LISTEN_FDS", "NOTIFY_SOCKET", "JOURNAL_STREAM",
                     "Exit status:"):
            assert want in out, (prog, want, out)
    # The defaults shown are the config's: baton-httpd's own flags show theirs.
    assert "(default 60000)" in run([HTTPD, "--help"]).stdout


def notify_socket(abstract):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = "\0baton-test-notify-%d" % os.getpid()
        s.bind(name)
        return s, "@" + name[1:], None
    d = tempfile.mkdtemp(prefix="baton-notify-")
    path = os.path.join(d, "notify")
    s.bind(path)
    return s, path, d


def recv_until(s, key, timeout=10):
    """Datagrams until one holds key=...; returns all of them."""
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if any(line.startswith(key + "=") for line in msg.split("\n")):
            return got
    raise AssertionError("no %s= in %r" % (key, got))


def test_sd_notify():
    for abstract in (False, True):
        s, addr, d = notify_socket(abstract)
        srv = Server([ECHO, "--listen", "127.0.0.1:0", "--workers", "2"],
                     env={"NOTIFY_SOCKET": addr})
        try:
            msgs = recv_until(s, "READY")
            ready = [m for m in msgs if "READY=1" in m][0].split("\n")
            assert "MAINPID=%d" % srv.proc.pid in ready, ready
            status = [x for x in ready if x.startswith("STATUS=")]
            assert status and "2 worker processes" in status[0], ready
            # Ready means serving: a client is answered at once.
            port = srv.started()
            assert echo_once(port) == b"hi\n"
            srv.proc.send_signal(signal.SIGTERM)
            msgs = recv_until(s, "STOPPING")
            assert any("STATUS=SIGTERM: draining" in m for m in msgs), msgs
            assert srv.stop() == 0
        finally:
            srv.stop()
            s.close()
            if d:
                os.unlink(os.path.join(d, "notify"))
                os.rmdir(d)
    # A NOTIFY_SOCKET nobody listens on costs one warning, never the server.
    srv = Server([ECHO, "--listen", "127.0.0.1:0", "--workers", "1"],
                 env={"NOTIFY_SOCKET": "/nonexistent/notify"})
    try:
        port = srv.started()
        assert echo_once(port) == b"hi\n"
        assert "sd_notify: sendto(/nonexistent/notify)" in srv.text(), srv.text()
    finally:
        assert srv.stop() == 0


def test_journal_priorities():
    """JOURNAL_STREAM names stderr: <N> prefixes.  Names another stream:
    none (a child whose stderr was redirected keeps the variable)."""
    srv = Server([ECHO, "--listen", "127.0.0.1:0", "--workers", "1"], journal=True)
    try:
        port = srv.started()
        assert echo_once(port) == b"hi\n"
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload 1:" in srv.text(), "the reload line")
        text = srv.text()
        pid = srv.proc.pid
        assert re.search(r"^<6>baton-echo\[\d+\]: info: listening on 127\.0\.0\.1:", text,
                         re.M), text
        assert re.search(r"^<6>baton-echo\[%d\]: info: SIGHUP: reloading" % pid, text, re.M), text
        # Every line the log writes carries one (the counters block is
        # plain stderr text, printed at exit).
        for line in text.splitlines():
            if re.match(r"^(<\d>)?baton-echo\[", line):
                assert re.match(r"^<[3467]>baton-echo\[\d+\]: (error|warn|info|debug): ", line), line
    finally:
        assert srv.stop() == 0
    other = os.stat(BUILD)
    srv = Server([ECHO, "--listen", "127.0.0.1:0", "--workers", "1"],
                 env={"JOURNAL_STREAM": "%d:%d" % (other.st_dev, other.st_ino)})
    try:
        srv.started()
        assert re.search(r"^baton-echo\[\d+\]: info: listening", srv.text(), re.M), srv.text()
        assert "<6>" not in srv.text()
    finally:
        assert srv.stop() == 0


def activated(args, extra_env=None):
    """Start baton-echo the way systemd does: the socket at fd 3,
    LISTEN_FDS=1, LISTEN_PID = its own pid (tests/cases.py)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    port = ls.getsockname()[1]
    fd = ls.fileno()
    srv = Server(cases.activated(fd, [ECHO] + args), env=extra_env,
                 pass_fds=(fd,))
    ls.close()
    return srv, port


def test_listen_with_socket_activation():
    # Both: refused with exit 2, the reason logged, nothing served.
    srv, port = activated(["--listen", "127.0.0.1:0", "--workers", "1"])
    try:
        rc = srv.proc.wait(10)
        assert rc == 2, (rc, srv.text())
        assert "together with 1 socket from systemd (LISTEN_FDS)" in srv.text(), srv.text()
        assert "listening on" not in srv.text(), srv.text()
    finally:
        srv.stop()
    # Socket activation alone: the passed socket is served.
    srv, port = activated(["--workers", "1"])
    try:
        srv.started()
        assert "(fd 3 from systemd)" in srv.text(), srv.text()
        assert echo_once(port) == b"hi\n"
    finally:
        assert srv.stop() == 0
    # LISTEN_PID naming another process: the variables are not for us, and
    # --listen works.
    srv = Server([ECHO, "--listen", "127.0.0.1:0", "--workers", "1"],
                 env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    try:
        port = srv.started()
        assert port and echo_once(port) == b"hi\n"
    finally:
        assert srv.stop() == 0


def test_named_after_argv0():
    """A program that leaves the name to the runtime is named after
    argv[0]: a copy of baton-echo run as my-echo is my-echo in its log,
    its titles and its comm, so pgrep -x my-echo finds every process."""
    with tempfile.TemporaryDirectory() as d:
        link = os.path.join(d, "my-echo")
        os.symlink(ECHO, link)
        srv = Server([link, "--listen", "127.0.0.1:0", "--workers", "2", "--threads", "2"])
        try:
            port = srv.started()
            master = srv.proc.pid
            assert re.search(r"^my-echo\[\d+\]: info: my-echo: 2 worker processes of 2 threads",
                             srv.text(), re.M), srv.text()

            def named():
                accs = children(master)
                assert len(accs) == 1, accs
                pid = accs[0]
                found = run(["pgrep", "-x", "my-echo"]).stdout.split()
                kids = run(["pgrep", "-x", "-P", str(pid), "my-echo"]).stdout.split()
                assert str(pid) in found and str(master) in found and len(kids) == 2, (found, kids)
                with open("/proc/%d/cmdline" % master, "rb") as f:
                    assert f.read().split(b"\0")[0] == b"my-echo: master"
                titles = set()
                for k in kids:
                    with open("/proc/%s/cmdline" % k, "rb") as f:
                        titles.add(f.read().split(b"\0")[0].decode())
                assert titles == {"my-echo: worker 0", "my-echo: worker 1"}, titles
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    assert f.read().split(b"\0")[0] == b"my-echo: acceptor"
                # The hybrid's second thread in each worker process.
                for k in kids:
                    names = set()
                    for t in os.listdir("/proc/%s/task" % k):
                        with open("/proc/%s/task/%s/comm" % (k, t)) as f:
                            names.add(f.read().strip())
                    assert "my-echo" in names and any(
                        n.startswith("worker ") and n.endswith(".1") for n in names), names
                return True

            # Workers name themselves as they start: wait, with a deadline.
            cases.until(named)
            assert echo_once(port) == b"hi\n"
        finally:
            assert srv.stop() == 0


def test_sighup_reloads():
    """SIGHUP to the master: a new generation serves on the same port, the
    main pid stays; SIGHUP to a generation is refused with the master's
    pid in the message."""
    srv = Server([ECHO, "--listen", "127.0.0.1:0", "--workers", "2"])
    try:
        port = srv.started()
        for i in range(1, 4):  # one at a time: pending signals merge
            srv.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: srv.text().count("reload %d:" % i) == 1, "reload %d" % i)
            assert echo_once(port) == b"hi\n"
        assert srv.proc.poll() is None
        wait_for(lambda: len(children(srv.proc.pid)) == 1, "one generation left")
        gen = children(srv.proc.pid)[0]
        os.kill(gen, signal.SIGHUP)
        wait_for(lambda: "send it to the master (pid %d)" % srv.proc.pid in srv.text(),
                 "the refusal")
        assert echo_once(port) == b"hi\n"
    finally:
        assert srv.stop() == 0


def test_default_listen():
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.bind(("127.0.0.1", 7000))
    except OSError:
        raise Skip("127.0.0.1:7000 is taken on this machine")
    finally:
        probe.close()
    srv = Server([ECHO, "--workers", "1"])
    try:
        port = srv.started()
        assert port == 7000, srv.text()
        assert echo_once(7000) == b"hi\n"
    finally:
        assert srv.stop() == 0


def main():
    return cases.run(globals(), sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
