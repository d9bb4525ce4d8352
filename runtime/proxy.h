/* SPDX-License-Identifier: MIT */
/*
 * The PROXY protocol's header (versions 1 and 2), as a balancer such as
 * HAProxy sends it first on a connection ("send-proxy", "send-proxy-v2"):
 * the client's address and the address it connected to.  A parser of
 * untrusted bytes: no allocation, no state, every length checked against
 * the input and against the bounds below.
 */
#ifndef BATON_RUNTIME_PROXY_H
#define BATON_RUNTIME_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Version 1 is one text line of at most 107 bytes with its CRLF. */
#define BT__PROXY_V1_MAX 107
/* Version 2: a 16-byte head, then its length of addresses and TLVs.  We
 * take at most this much in all (the protocol allows 16 + 65535); a
 * balancer's addresses and usual TLVs (ALPN, authority, unique id, SSL)
 * fit well within it. */
#define BT__PROXY_V2_MAX 4096
/* The most bytes a header may need before it is known to be complete or
 * refused: a reader that has this many and still gets -EAGAIN has a
 * parser bug; it never does. */
#define BT__PROXY_MAX BT__PROXY_V2_MAX

struct bt__proxy {
	uint8_t version; /* 1 or 2 */
	/* 0: the header carries no addresses (v1 UNKNOWN; v2 LOCAL, or an
	 * unspecified family): the connection's own addresses stand.  1:
	 * src and dst hold the client's and the one it connected to. */
	uint8_t has_addr;
	struct sockaddr_storage src, dst;
	socklen_t src_len, dst_len;
};

/*
 * Parse the PROXY header at the start of buf[0..len).
 * Returns the header's length (> 0; the connection's own bytes follow it)
 * and fills *out; -EAGAIN if buf is a proper prefix of a header that may
 * still be valid (read more, within a deadline); -EPROTO if it is not a
 * PROXY header or breaks the protocol; -EMSGSIZE if it is longer than the
 * bounds above.  The result depends only on the header's own bytes:
 * whatever follows it does not change it.
 */
ssize_t bt__proxy_parse(const void *buf, size_t len, struct bt__proxy *out);

/*
 * A version 2 header (command PROXY, a stream over src's family) saying
 * src connected to dst, into buf: its length, -EINVAL (src not INET,
 * INET6 or UNIX) or -ENOSPC (cap below 16 + 216 may not do).  dst may be
 * NULL, or of another family: its address is then all zeros.  A
 * connection handed to the next generation carries one, so that its
 * client's address goes with it.
 */
ssize_t bt__proxy_encode_v2(void *buf, size_t cap, const struct sockaddr *src,
			    const struct sockaddr *dst);

#endif
