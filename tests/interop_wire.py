#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A worker written from docs/wire.md alone, standard library only.

Run by test_interop with one end of a SOCK_SEQPACKET pair as argv[1].
The conversation (both sides check every field):
  1. we send a BATCH (seq 7) of 4 items, 3 with a pipe's read end;
  2. we receive a BATCH (seq 8) of 253 items, each with a memfd, and check
     every field and the content behind every descriptor;
  3. we receive a HELLO and a DRAIN and check them;
  4. we send an ACK for seq 8 reporting lost ids [5, 6];
  5. we send a malformed message (bad magic) with one descriptor;
  6. we close.
Exit 0 when everything matched, 1 with a message otherwise.
"""
import os
import socket
import struct
import sys

MAGIC = b"BATN"
HDR = struct.Struct("<4sHHQIHHII")         # 32 bytes
ITEM = struct.Struct("<QQIIHHHHI16sI")      # 56 bytes
ACK = struct.Struct("<QQII")                # 24 bytes
HELLO = struct.Struct("<IIII")              # 16 bytes
DRAIN = struct.Struct("<II")                # 8 bytes
BATCH, ACK_T, HELLO_T, DRAIN_T = 1, 2, 3, 4
FAM_NONE, FAM_IN4, FAM_IN6, FAM_UNIX = 0, 1, 2, 3
FLAG_FD = 1
MAX_MSG = 65536
MAX_FDS = 253

assert HDR.size == 32 and ITEM.size == 56 and ACK.size == 24


def fail(msg):
    print("interop_wire.py: " + msg, file=sys.stderr)
    sys.exit(1)


def expect(what, got, want):
    if got != want:
        fail("%s: got %r, want %r" % (what, got, want))


def header(mtype, seq, length, items=0, fds=0):
    return HDR.pack(MAGIC, 1, mtype, seq, length, items, fds, 0, 0)


def encode_batch(seq, items):
    """items: dicts with id, accept_ns, flags, family, addr (bytes), port,
    scope, payload (bytes)."""
    records, tail = b"", b""
    for it in items:
        fam = it["family"]
        addr = it.get("addr", b"")
        inline = addr if fam in (FAM_IN4, FAM_IN6) else b""
        records += ITEM.pack(it["id"], it["accept_ns"], it["flags"],
                             len(it.get("payload", b"")), fam, len(addr),
                             it.get("port", 0), 0, it.get("scope", 0),
                             inline.ljust(16, b"\0"), 0)
        if fam == FAM_UNIX:
            tail += addr
        tail += it.get("payload", b"")
    nfds = sum(1 for it in items if it["flags"] & FLAG_FD)
    length = HDR.size + len(records) + len(tail)
    return header(BATCH, seq, length, len(items), nfds) + records + tail


def decode(data, nfds):
    if len(data) < HDR.size:
        fail("short message")
    magic, ver, mtype, seq, length, nitems, hfds, flags, rsv = HDR.unpack_from(data)
    expect("magic", magic, MAGIC)
    expect("version", ver, 1)
    expect("length field", length, len(data))
    expect("header reserved", (flags, rsv), (0, 0))
    if mtype != BATCH:
        expect("items/fds on a non-BATCH", (nitems, hfds, nfds), (0, 0, 0))
        return mtype, seq, data[HDR.size:]
    expect("fds announced vs received", hfds, nfds)
    off = HDR.size + nitems * ITEM.size
    items, with_fd = [], 0
    for i in range(nitems):
        (iid, acc, iflags, plen, fam, alen, port, r1, scope, addr,
         r2) = ITEM.unpack_from(data, HDR.size + i * ITEM.size)
        expect("record reserved", (r1, r2), (0, 0))
        it = {"id": iid, "accept_ns": acc, "flags": iflags, "family": fam,
              "port": port, "scope": scope}
        if fam == FAM_IN4:
            it["addr"] = addr[:4]
        elif fam == FAM_IN6:
            it["addr"] = addr
        elif fam == FAM_UNIX:
            it["addr"] = data[off:off + alen]
            off += alen
        it["payload"] = data[off:off + plen]
        off += plen
        if iflags & FLAG_FD:
            with_fd += 1
        items.append(it)
    expect("end of tail", off, len(data))
    expect("FD records", with_fd, hfds)
    return mtype, seq, items


def recv_msg(sock):
    """One message and its descriptors.  socket.recv_fds would do, but it
    ignores its flags argument (Python 3.11), and MSG_CMSG_CLOEXEC matters."""
    data, anc, flags, _ = sock.recvmsg(MAX_MSG, socket.CMSG_SPACE(MAX_FDS * 4),
                                       socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, ctype, cdata in anc:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds += struct.unpack("<%di" % (len(cdata) // 4),
                                 cdata[:len(cdata) - len(cdata) % 4])
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        fail("truncated: flags %#x" % flags)
    return data, fds


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    expect("socket type", sock.type, socket.SOCK_SEQPACKET)

    # 1. A batch from Python to C.
    pipes = [os.pipe() for _ in range(3)]
    for i, (r, w) in enumerate(pipes):
        os.write(w, b"py-item-%d" % i)
        os.close(w)
    items = [
        {"id": 101, "accept_ns": 11, "flags": FLAG_FD | 0x00AB0000,
         "family": FAM_IN4, "addr": socket.inet_pton(socket.AF_INET, "192.0.2.7"),
         "port": 8080},
        {"id": 102, "accept_ns": 12, "flags": 0, "family": FAM_NONE,
         "payload": b"job description"},
        {"id": 103, "accept_ns": 13, "flags": FLAG_FD, "family": FAM_IN6,
         "addr": socket.inet_pton(socket.AF_INET6, "2001:db8::42"), "port": 443,
         "scope": 3, "payload": b"x"},
        {"id": 104, "accept_ns": 14, "flags": FLAG_FD, "family": FAM_UNIX,
         "addr": b"\0py-abstract"},
    ]
    msg = encode_batch(7, items)
    socket.send_fds(sock, [msg], [r for r, _ in pipes])
    for r, _ in pipes:
        os.close(r)

    # 2. A full batch from C to Python.
    data, fds = recv_msg(sock)
    mtype, seq, got = decode(data, len(fds))
    expect("type", mtype, BATCH)
    expect("seq", seq, 8)
    expect("items", len(got), 253)
    for i, it in enumerate(got):
        expect("id %d" % i, it["id"], 5000 + i)
        expect("accept_ns %d" % i, it["accept_ns"], 1_000_000_000_000 + i)
        expect("flags %d" % i, it["flags"], FLAG_FD | (i << 16))
        if i % 2 == 0:
            expect("family %d" % i, it["family"], FAM_IN6)
            expect("addr %d" % i, it["addr"],
                   socket.inet_pton(socket.AF_INET6, "::1"))
            expect("port %d" % i, it["port"], 20000 + i)
        else:
            expect("family %d" % i, it["family"], FAM_UNIX)
            expect("addr %d" % i, it["addr"], b"/tmp/c-peer-%d\0" % i)
        expect("payload %d" % i, it["payload"], b"c-payload-%d" % i)
        fd = fds[i]
        if os.get_inheritable(fd):
            fail("descriptor %d not close-on-exec" % i)
        os.lseek(fd, 0, os.SEEK_SET)
        expect("content %d" % i, os.read(fd, 64), b"c-item-%d" % i)
        os.close(fd)

    # 3. HELLO and DRAIN.
    data, fds = recv_msg(sock)
    mtype, seq, body = decode(data, len(fds))
    expect("HELLO", (mtype, HELLO.unpack(body)), (HELLO_T, (3, 4242, 1, 0)))
    data, fds = recv_msg(sock)
    mtype, seq, body = decode(data, len(fds))
    expect("DRAIN", (mtype, seq, DRAIN.unpack(body)), (DRAIN_T, 9, (2500, 0)))

    # 4. An ACK back.
    body = ACK.pack(8, 253, 17, 2) + struct.pack("<QQ", 5005, 5006)
    sock.send(header(ACK_T, 1, HDR.size + len(body)) + body)

    # 5. Something hostile, with a descriptor C must close.
    r, w = os.pipe()
    bad = b"XXXX" + msg[4:]
    socket.send_fds(sock, [bad], [r])
    os.close(r)
    os.close(w)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
