/* SPDX-License-Identifier: MIT */
/*
 * The PROXY protocol's header, versions 1 and 2 (proxy.h).
 *
 * Version 1, one line:  "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP
 *                       sport SP dport CRLF,  or  "PROXY UNKNOWN" ... CRLF
 * Version 2, binary:    12-byte signature, version and command, family
 *                       and transport, a 16-bit big-endian length, then the
 *                       addresses for the family and TLVs to the end.
 *
 * The rules the parser keeps, so that a reader can feed it the bytes as
 * they come: a proper prefix of a valid header is -EAGAIN, never a
 * refusal; a refusal comes as soon as the bytes in hand rule a header out
 * (the first byte that breaks the signature, a version 2 length past the
 * bound), so a client that sends something else is closed at once rather
 * than at the deadline; nothing past the header is read.
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[6] = "PROXY ";

/* Version 2's family (high nibble) and transport (low nibble). */
enum { AF_V2_UNSPEC, AF_V2_INET, AF_V2_INET6, AF_V2_UNIX };
enum { TR_V2_UNSPEC, TR_V2_STREAM, TR_V2_DGRAM };

/* Does buf[0..len) agree with sig[0..n) as far as it goes? */
static int prefix_ok(const uint8_t *buf, size_t len, const void *sig, size_t n)
{
	return memcmp(buf, sig, len < n ? len : n) == 0;
}

/* --- version 1 ----------------------------------------------------------- */

static int v1_port(const char *t, size_t n, uint16_t *port)
{
	if (n == 0 || n > 5)
		return -1;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (t[i] < '0' || t[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(t[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port = htons((uint16_t)v);
	return 0;
}

/* One textual address of family af into *ss (without its port). */
static int v1_addr(int af, const char *t, size_t n, struct sockaddr_storage *ss, socklen_t *sl)
{
	char s[INET6_ADDRSTRLEN];
	if (n >= sizeof(s))
		return -1;
	memcpy(s, t, n);
	s[n] = 0;
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		a->sin_family = AF_INET;
		if (inet_pton(AF_INET, s, &a->sin_addr) != 1)
			return -1;
		*sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, s, &a->sin6_addr) != 1)
			return -1;
		*sl = sizeof(*a);
	}
	return 0;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port_be)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = port_be;
	else
		((struct sockaddr_in6 *)ss)->sin6_port = port_be;
}

/* The line is line[0..end), its CRLF after it. */
static int v1_line(const char *line, size_t end, struct bt__proxy *out)
{
	size_t pos = sizeof(v1_sig);
	if (end - pos >= 7 && memcmp(line + pos, "UNKNOWN", 7) == 0 &&
	    (end - pos == 7 || line[pos + 7] == ' ')) {
		/* The rest of the line is the sender's business. */
		out->has_addr = 0;
		return 0;
	}
	/* Five fields, one space between each, none empty. */
	const char *f[5];
	size_t n[5], k = 0, start = pos;
	for (size_t j = pos; j <= end; j++) {
		if (j < end && line[j] != ' ')
			continue;
		if (j == start || k == 5)
			return -EPROTO;
		f[k] = line + start;
		n[k++] = j - start;
		start = j + 1;
	}
	if (k != 5 || n[0] != 4)
		return -EPROTO;
	int af;
	if (memcmp(f[0], "TCP4", 4) == 0)
		af = AF_INET;
	else if (memcmp(f[0], "TCP6", 4) == 0)
		af = AF_INET6;
	else
		return -EPROTO;
	uint16_t sport, dport;
	if (v1_addr(af, f[1], n[1], &out->src, &out->src_len) < 0 ||
	    v1_addr(af, f[2], n[2], &out->dst, &out->dst_len) < 0 ||
	    v1_port(f[3], n[3], &sport) < 0 || v1_port(f[4], n[4], &dport) < 0)
		return -EPROTO;
	set_port(&out->src, sport);
	set_port(&out->dst, dport);
	out->has_addr = 1;
	return 0;
}

static ssize_t parse_v1(const uint8_t *buf, size_t len, struct bt__proxy *out)
{
	size_t scan = len < BT__PROXY_V1_MAX ? len : BT__PROXY_V1_MAX;
	for (size_t i = sizeof(v1_sig); i < scan; i++) {
		if (buf[i] == '\r') {
			if (i + 2 > BT__PROXY_V1_MAX)
				return -EMSGSIZE; /* no room left for its LF */
			if (i + 1 >= len)
				return -EAGAIN; /* its LF is still to come */
			if (buf[i + 1] != '\n')
				return -EPROTO;
			out->version = 1;
			int rc = v1_line((const char *)buf, i, out);
			return rc < 0 ? rc : (ssize_t)(i + 2);
		}
		if (buf[i] == '\n' || buf[i] == 0)
			return -EPROTO; /* a bare LF, or a NUL: not a header line */
	}
	return len >= BT__PROXY_V1_MAX ? -EMSGSIZE : -EAGAIN;
}

/* --- version 2 ----------------------------------------------------------- */

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static ssize_t parse_v2(const uint8_t *buf, size_t len, struct bt__proxy *out)
{
	if (len >= 13) {
		unsigned ver = buf[12] >> 4, cmd = buf[12] & 0x0f;
		if (ver != 2 || cmd > 1)
			return -EPROTO;
	}
	if (len >= 14) {
		unsigned af = buf[13] >> 4, tr = buf[13] & 0x0f;
		if (af > AF_V2_UNIX || tr > TR_V2_DGRAM)
			return -EPROTO;
	}
	if (len < 16)
		return -EAGAIN;
	size_t total = 16 + (size_t)be16(buf + 14);
	if (total > BT__PROXY_V2_MAX)
		return -EMSGSIZE;
	unsigned cmd = buf[12] & 0x0f, af = buf[13] >> 4, tr = buf[13] & 0x0f;
	size_t need = af == AF_V2_INET ? 12 : af == AF_V2_INET6 ? 36 : af == AF_V2_UNIX ? 216 : 0;
	/* A PROXY command with addresses: they must fit, over a stream. */
	int proxied = cmd == 1 && af != AF_V2_UNSPEC;
	if (proxied && (tr != TR_V2_STREAM || total - 16 < need))
		return -EPROTO;
	if (len < total)
		return -EAGAIN;
	out->version = 2;
	out->has_addr = 0;
	if (!proxied)
		return (ssize_t)total; /* LOCAL (a health check), or no family */
	const uint8_t *a = buf + 16;
	memset(&out->src, 0, sizeof(out->src));
	memset(&out->dst, 0, sizeof(out->dst));
	if (af == AF_V2_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		out->src_len = out->dst_len = sizeof(*s);
	} else if (af == AF_V2_INET6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		out->src_len = out->dst_len = sizeof(*s);
	} else {
		struct sockaddr_un *s = (struct sockaddr_un *)&out->src;
		struct sockaddr_un *d = (struct sockaddr_un *)&out->dst;
		s->sun_family = d->sun_family = AF_UNIX;
		memcpy(s->sun_path, a, 108);
		memcpy(d->sun_path, a + 108, 108);
		/* A path ends at its NUL; an abstract name (a leading NUL)
		 * takes all 108 bytes. */
		size_t sn = s->sun_path[0] ? strnlen(s->sun_path, 108) : 108;
		size_t dn = d->sun_path[0] ? strnlen(d->sun_path, 108) : 108;
		out->src_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sn);
		out->dst_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + dn);
	}
	/* The TLVs (type, 16-bit length, value) must tile the rest exactly;
	 * their contents are skipped. */
	size_t off = 16 + need;
	while (off < total) {
		if (total - off < 3)
			return -EPROTO;
		size_t vlen = be16(buf + off + 1);
		if (total - off - 3 < vlen)
			return -EPROTO;
		off += 3 + vlen;
	}
	out->has_addr = 1;
	return (ssize_t)total;
}

ssize_t bt__proxy_parse(const void *buf, size_t len, struct bt__proxy *out)
{
	const uint8_t *b = buf;
	if (len == 0)
		return -EAGAIN;
	if (b[0] == 'P') {
		if (!prefix_ok(b, len, v1_sig, sizeof(v1_sig)))
			return -EPROTO;
		return len < sizeof(v1_sig) ? -EAGAIN : parse_v1(b, len, out);
	}
	if (!prefix_ok(b, len, v2_sig, sizeof(v2_sig)))
		return -EPROTO;
	return len < sizeof(v2_sig) ? -EAGAIN : parse_v2(b, len, out);
}

ssize_t bt__proxy_encode_v2(void *buf, size_t cap, const struct sockaddr *src,
			    const struct sockaddr *dst)
{
	unsigned char *p = buf;
	size_t alen;
	unsigned char fam;
	if (!src)
		return -EINVAL;
	switch (src->sa_family) {
	case AF_INET:
		fam = AF_V2_INET << 4 | TR_V2_STREAM, alen = 12;
		break;
	case AF_INET6:
		fam = AF_V2_INET6 << 4 | TR_V2_STREAM, alen = 36;
		break;
	case AF_UNIX:
		fam = AF_V2_UNIX << 4 | TR_V2_STREAM, alen = 216;
		break;
	default:
		return -EINVAL;
	}
	if (cap < 16 + alen)
		return -ENOSPC;
	if (dst && dst->sa_family != src->sa_family)
		dst = NULL; /* its address is then all zeros */
	memcpy(p, v2_sig, sizeof(v2_sig));
	p[12] = 0x21; /* version 2, PROXY */
	p[13] = fam;
	p[14] = (unsigned char)(alen >> 8);
	p[15] = (unsigned char)alen;
	unsigned char *a = p + 16;
	memset(a, 0, alen);
	if (src->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
		memcpy(a, &s->sin_addr, 4);
		memcpy(a + 8, &s->sin_port, 2);
		if (d) {
			memcpy(a + 4, &d->sin_addr, 4);
			memcpy(a + 10, &d->sin_port, 2);
		}
	} else if (src->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
		memcpy(a, &s->sin6_addr, 16);
		memcpy(a + 32, &s->sin6_port, 2);
		if (d) {
			memcpy(a + 16, &d->sin6_addr, 16);
			memcpy(a + 34, &d->sin6_port, 2);
		}
	} else {
		const struct sockaddr_un *s = (const void *)src, *d = (const void *)dst;
		memcpy(a, s->sun_path, sizeof(s->sun_path));
		if (d)
			memcpy(a + 108, d->sun_path, sizeof(d->sun_path));
	}
	return (ssize_t)(16 + alen);
}
