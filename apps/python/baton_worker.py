#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A baton worker in Python, standard library only, written from
docs/wire.md: it attaches to a server started with --attach ADDR, says
HELLO, receives batches of connections (SCM_RIGHTS), acknowledges each
batch with an ACK (cumulative, with the ids whose descriptor did not arrive
after MSG_CTRUNC), repeats its last ACK every second while it holds
connections (the server's watchdog reads it as a heartbeat), serves the
connections, and on DRAIN (or the channel's end) finishes what it holds and
exits.

As a program:

    python3 baton_worker.py --attach @name --echo
    python3 baton_worker.py --attach /run/app/attach.sock --http [--body TEXT]

As a module:

    import baton_worker
    class Hello(baton_worker.Connection):
        def on_data(self, data):
            self.write(b"hi\\n")
            self.close()
    baton_worker.Worker("@name", Hello).run()

SIGTERM or SIGINT: leave (what was not acknowledged goes to other
workers) and finish the connections held.  Exit status: 0 after a DRAIN
or a signal, 1 if the server closed the channel without a DRAIN (it
refused us: see its log), 2 for bad usage.
"""
import argparse
import errno
import os
import selectors
import signal
import socket
import struct
import sys
import time

MAGIC = 0x4E544142  # "BATN"
VERSION = 1
BATCH, ACK, HELLO, DRAIN = 1, 2, 3, 4
HDR = struct.Struct("<IHHQIHHII")  # magic version type seq length items fds flags reserved
ITEM = struct.Struct("<QQIIHHHHI16sI")
ACK_BODY = struct.Struct("<QQII")  # seq fds_total load n_lost
HELLO_BODY = struct.Struct("<IIII")  # worker_id pid version flags
DRAIN_BODY = struct.Struct("<II")  # deadline_ms flags
FLAG_FD = 0x1
APP_BITS = 0xFFFF0000
FAM_NONE, FAM_IN4, FAM_IN6, FAM_UNIX = 0, 1, 2, 3
MAX_MSG = 65536
MAX_FDS = 253


class ProtocolError(Exception):
    """The server sent something docs/wire.md does not allow."""


def _header(mtype, seq, length, items=0, fds=0):
    return HDR.pack(MAGIC, VERSION, mtype, seq, length, items, fds, 0, 0)


def encode_hello(worker_id, pid, max_batch=0):
    """max_batch: the most items we take in one BATCH (1..253; 0: 253)."""
    body = HELLO_BODY.pack(worker_id, pid, VERSION, max_batch)
    return _header(HELLO, 0, HDR.size + len(body)) + body


def encode_ack(seq, fds_total, load, lost):
    body = ACK_BODY.pack(seq, fds_total, load, len(lost)) + b"".join(
        struct.pack("<Q", i) for i in lost)
    return _header(ACK, 0, HDR.size + len(body)) + body


def decode(data, nfds, ctrunc):
    """A message: (type, seq, items or body).  Items are dicts: id,
    accept_ns, flags, has_fd, peer (None, (host, port), or unix bytes),
    payload.  Raises ProtocolError for anything the receiver rules refuse."""
    if len(data) < HDR.size:
        raise ProtocolError("short message")
    magic, ver, mtype, seq, length, nitems, hfds, flags, rsv = HDR.unpack_from(data)
    if magic != MAGIC or ver != VERSION:
        raise ProtocolError("magic or version")
    if length != len(data) or flags or rsv:
        raise ProtocolError("length or reserved header field")
    if mtype == DRAIN:
        if nitems or hfds or nfds or length != HDR.size + DRAIN_BODY.size:
            raise ProtocolError("DRAIN")
        deadline_ms, dflags = DRAIN_BODY.unpack_from(data, HDR.size)
        if dflags:
            raise ProtocolError("DRAIN flags")
        return mtype, seq, deadline_ms
    if mtype != BATCH:
        raise ProtocolError("type %d from the acceptor" % mtype)
    if not 1 <= nitems <= MAX_FDS or hfds > nitems or (nfds != hfds and not ctrunc):
        raise ProtocolError("item or descriptor count")
    off = HDR.size + nitems * ITEM.size
    if off > len(data):
        raise ProtocolError("records past the end")
    items, with_fd = [], 0
    for i in range(nitems):
        (iid, acc, iflags, plen, fam, alen, port, r1, scope, addr,
         r2) = ITEM.unpack_from(data, HDR.size + i * ITEM.size)
        if r1 or r2 or iflags & ~(FLAG_FD | APP_BITS):
            raise ProtocolError("reserved item field")
        peer = None
        if fam == FAM_NONE:
            if alen or port or scope or any(addr):
                raise ProtocolError("address on family none")
        elif fam == FAM_IN4:
            if alen != 4 or port == 0 or scope or any(addr[4:]):
                raise ProtocolError("IPv4 address")
            peer = (socket.inet_ntop(socket.AF_INET, addr[:4]), port)
        elif fam == FAM_IN6:
            if alen != 16 or port == 0:
                raise ProtocolError("IPv6 address")
            peer = (socket.inet_ntop(socket.AF_INET6, addr), port)
        elif fam == FAM_UNIX:
            if alen > 108 or port or scope or any(addr):
                raise ProtocolError("unix address")
            peer = data[off:off + alen]
            off += alen
        else:
            raise ProtocolError("address family %d" % fam)
        payload = data[off:off + plen]
        off += plen
        if iflags & FLAG_FD:
            with_fd += 1
        items.append({"id": iid, "accept_ns": acc, "flags": iflags,
                      "has_fd": bool(iflags & FLAG_FD), "peer": peer, "payload": payload})
    if off != len(data) or with_fd != hfds:
        raise ProtocolError("tail length or FD records")
    return mtype, seq, items


def recv_msg(sock):
    """One message, its descriptors, and whether some were dropped."""
    data, anc, flags, _ = sock.recvmsg(MAX_MSG, socket.CMSG_SPACE(MAX_FDS * 4),
                                       socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, ctype, cdata in anc:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds += struct.unpack("<%di" % (len(cdata) // 4), cdata[:len(cdata) - len(cdata) % 4])
    if flags & socket.MSG_TRUNC:
        for fd in fds:
            os.close(fd)
        raise ProtocolError("message longer than %d bytes" % MAX_MSG)
    return data, fds, bool(flags & socket.MSG_CTRUNC)


def connect(address):
    """address: a path, or @name for the abstract namespace."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.connect("\0" + address[1:] if address.startswith("@") else address)
    return s


class Connection:
    """One client connection; override on_open/on_data/on_close."""

    def __init__(self, worker, sock, item):
        self.worker, self.sock, self.item = worker, sock, item
        self.out = bytearray()
        self.closing = False

    def on_open(self):
        pass

    def on_data(self, data):
        pass

    def on_close(self):
        pass

    def write(self, data):
        self.out += data
        self.worker._flush(self)

    def close(self):
        self.closing = True
        self.worker._flush(self)


class Echo(Connection):
    def on_data(self, data):
        self.write(data)


class Http(Connection):
    """HTTP/1.1 GET with a fixed body: keep-alive unless the client says
    close (or speaks HTTP/1.0 without keep-alive)."""
    body = b"hello\n"

    def on_open(self):
        self.buf = b""

    def on_data(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            fields = dict(ln.split(b":", 1) for ln in lines[1:] if b":" in ln)
            conn = {k.strip().lower(): v.strip().lower() for k, v in fields.items()}.get(
                b"connection", b"")
            close = conn == b"close" or (lines[0].endswith(b"HTTP/1.0") and conn != b"keep-alive")
            self.write(b"HTTP/1.1 200 OK\r\nServer: baton-python\r\nContent-Type: text/plain\r\n"
                       b"Content-Length: %d\r\n%s\r\n" % (len(self.body),
                                                         b"Connection: close\r\n" if close else b"")
                       + self.body)
            if close:
                self.close()
                return
        if len(self.buf) > 16384:
            self.close()


class Worker:
    """One attached worker: a channel to the server and the connections it
    was given, on one selector."""

    HEARTBEAT = 1.0  # seconds: the last ACK again while we hold connections

    def __init__(self, address, handler=Echo, worker_id=0, max_batch=0, verbose=False):
        self.handler = handler
        self.verbose = verbose
        self.sel = selectors.DefaultSelector()
        self.ch = connect(address)
        self.ch.sendall(encode_hello(worker_id, os.getpid(), max_batch))
        self.ch.setblocking(False)
        self.sel.register(self.ch, selectors.EVENT_READ, None)
        self.conns = {}
        self.fds_total = 0
        self.ack_seq = 0
        self.ack_due = False
        self.ack_sent_at = 0.0
        self.load_sent = 0
        self.lost = []
        self.draining = False
        self.drain_deadline = None
        self.drained_by_server = False
        self.stop_asked = False

    def stop(self):
        """Leave: close the channel (the server gives what we had not
        acknowledged to the others) and finish the connections we hold.
        Safe from a signal handler."""
        self.stop_asked = True

    # --- the channel ---------------------------------------------------
    def _on_channel(self):
        while True:
            try:
                data, fds, ctrunc = recv_msg(self.ch)
            except BlockingIOError:
                break
            if not data:  # the server closed the channel
                self._stop_channel()
                return
            try:
                mtype, seq, body = decode(data, len(fds), ctrunc)
            except ProtocolError as e:
                for fd in fds:
                    os.close(fd)
                print("baton_worker: dropping a bad message: %s" % e, file=sys.stderr)
                self._stop_channel()
                return
            if mtype == DRAIN:
                self.drained_by_server = True
                self._drain(body)
                continue
            self._on_batch(seq, body, fds)

    def _on_batch(self, seq, items, fds):
        if self.verbose:
            print("baton_worker: batch %d: %d items, %d descriptors" % (seq, len(items), len(fds)),
                  file=sys.stderr, flush=True)
        it_fds = iter(fds)
        for it in items:
            if not it["has_fd"]:
                self._open(it, None)
                continue
            fd = next(it_fds, None)
            if fd is None:  # MSG_CTRUNC took it: the server redelivers it
                self.lost.append(it["id"])
                continue
            self.fds_total += 1
            self._open(it, fd)
        self.ack_seq = seq
        self.ack_due = True
        self._send_ack()

    def _send_ack(self):
        if not self.ack_due:
            return
        msg = encode_ack(self.ack_seq, self.fds_total, len(self.conns), self.lost[:MAX_FDS])
        try:
            self.ch.send(msg, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return  # tried again at the next wake-up; a later ACK covers it
        except OSError:
            return
        del self.lost[:MAX_FDS]
        self.ack_due = bool(self.lost)
        self.ack_sent_at, self.load_sent = time.monotonic(), len(self.conns)

    def _heartbeat(self):
        """The server's watchdog reads ACKs as our heartbeat, and its
        least-loaded dispatch reads their load: repeat the last ACK when the
        load changed (after 0.1 s without an ACK), and every second while we
        hold connections."""
        quiet = time.monotonic() - self.ack_sent_at
        if self.ack_seq and ((self.load_sent != len(self.conns) and quiet >= 0.1) or (
                self.conns and quiet >= self.HEARTBEAT)):
            self.ack_due = True

    def _stop_channel(self):
        if self.ch is None:
            return
        self._send_ack()
        self.sel.unregister(self.ch)
        self.ch.close()
        self.ch = None
        self._drain(0)

    def _drain(self, deadline_ms):
        if not self.draining:
            self.draining = True
            self.drain_deadline = time.monotonic() + (deadline_ms or 10000) / 1000.0

    # --- connections -----------------------------------------------------
    def _open(self, item, fd):
        if fd is None:
            return
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        c = self.handler(self, sock, item)
        self.conns[sock.fileno()] = c
        self.sel.register(sock, selectors.EVENT_READ, c)
        c.on_open()

    def _flush(self, c):
        while c.out:
            try:
                n = c.sock.send(c.out, socket.MSG_NOSIGNAL)
            except BlockingIOError:
                break
            except OSError:
                self._finish(c)
                return
            del c.out[:n]
        if c.sock.fileno() < 0:
            return
        if c.closing and not c.out:
            self._finish(c)
            return
        self.sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)

    def _finish(self, c):
        fd = c.sock.fileno()
        if fd < 0 or fd not in self.conns:
            return
        del self.conns[fd]
        self.sel.unregister(c.sock)
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        c.sock.close()
        c.on_close()

    def _on_conn(self, c, events):
        if events & selectors.EVENT_WRITE:
            self._flush(c)
        if events & selectors.EVENT_READ and c.sock.fileno() >= 0:
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._finish(c)
            else:
                c.on_data(data)

    def run(self):
        """Serve until drained; returns the exit status."""
        while not (self.draining and (not self.conns or time.monotonic() >= self.drain_deadline)):
            for key, events in self.sel.select(timeout=0.1):
                if key.data is None:
                    self._on_channel()
                else:
                    self._on_conn(key.data, events)
            if self.stop_asked and self.ch is not None:
                self._stop_channel()
            if self.ch is not None:
                self._heartbeat()
                self._send_ack()
        for c in list(self.conns.values()):
            self._finish(c)
        if self.ch is not None:
            self._send_ack()
            self.ch.close()
        return 0 if self.drained_by_server or self.stop_asked else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description="A baton worker in Python: attach to a server "
                                 "started with --attach ADDR and serve its connections.")
    ap.add_argument("--attach", required=True, metavar="ADDR",
                    help="the server's attach address: a path or @name")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--echo", action="store_true", help="echo every byte back")
    mode.add_argument("--http", action="store_true", help="answer HTTP GET with a fixed body")
    ap.add_argument("--body", default="hello\n", help="--http: the body (default 'hello\\n')")
    ap.add_argument("--max-batch", type=int, default=0, metavar="N",
                    help="the most connections to take per batch, 1..253 (told in HELLO; "
                    "default: as many as the server sends)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="log each batch received on stderr")
    a = ap.parse_args(argv)
    if not 0 <= a.max_batch <= MAX_FDS:
        ap.error("--max-batch: %d is not in 1..%d" % (a.max_batch, MAX_FDS))
    handler = Echo
    if a.http:
        handler = type("HttpBody", (Http,), {"body": a.body.encode()})
    try:
        w = Worker(a.attach, handler, max_batch=a.max_batch, verbose=a.verbose)
    except OSError as e:
        print("baton_worker: connect(%s): %s" % (a.attach, os.strerror(e.errno or errno.EIO)),
              file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    signal.signal(signal.SIGINT, lambda *_: w.stop())
    return w.run()


if __name__ == "__main__":
    sys.exit(main())
