/* SPDX-License-Identifier: MIT */
/*
 * The PROXY protocol parser (runtime/proxy.c): valid v1 and v2 headers,
 * every refusal, the bounds, and the reader's rules (a proper prefix of a
 * valid header is -EAGAIN; what follows a header never changes the
 * result).
 */
#include "check.h"

#include "../runtime/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

/* Every proper prefix of h[0..n) reads -EAGAIN, h itself n, and h with
 * bytes after it n too (the same result). */
static void expect_header(const void *h, size_t n, struct bt__proxy *out)
{
	for (size_t k = 0; k < n; k++) {
		struct bt__proxy p;
		CHECK_ERR(bt__proxy_parse(h, k, &p), -EAGAIN);
	}
	CHECK_ERR(bt__proxy_parse(h, n, out), (long long)n);
	uint8_t more[BT__PROXY_MAX + 64];
	CHECK_OP(n + 9, <=, sizeof(more));
	memcpy(more, h, n);
	memcpy(more + n, "GET / \r\n\r\n", 9);
	struct bt__proxy again;
	CHECK_ERR(bt__proxy_parse(more, n + 9, &again), (long long)n);
	CHECK_EQ(again.has_addr, out->has_addr);
}

static void expect_in4(const struct sockaddr_storage *ss, socklen_t len, const char *ip,
		       unsigned port)
{
	const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
	CHECK_EQ(a->sin_family, AF_INET);
	CHECK_EQ(len, sizeof(*a));
	char s[INET_ADDRSTRLEN];
	CHECK(inet_ntop(AF_INET, &a->sin_addr, s, sizeof(s)) != NULL);
	CHECK(strcmp(s, ip) == 0);
	CHECK_EQ(ntohs(a->sin_port), port);
}

static void expect_in6(const struct sockaddr_storage *ss, socklen_t len, const char *ip,
		       unsigned port)
{
	const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
	CHECK_EQ(a->sin6_family, AF_INET6);
	CHECK_EQ(len, sizeof(*a));
	char s[INET6_ADDRSTRLEN];
	CHECK(inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof(s)) != NULL);
	CHECK(strcmp(s, ip) == 0);
	CHECK_EQ(ntohs(a->sin6_port), port);
}

static void test_v1_tcp4(void)
{
	const char *h = "PROXY TCP4 192.0.2.10 127.0.0.2 51234 8080\r\n";
	struct bt__proxy p;
	expect_header(h, strlen(h), &p);
	CHECK_EQ(p.version, 1);
	CHECK_EQ(p.has_addr, 1);
	expect_in4(&p.src, p.src_len, "192.0.2.10", 51234);
	expect_in4(&p.dst, p.dst_len, "127.0.0.2", 8080);
}

static void test_v1_tcp6(void)
{
	const char *h = "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
	struct bt__proxy p;
	expect_header(h, strlen(h), &p);
	CHECK_EQ(p.has_addr, 1);
	expect_in6(&p.src, p.src_len, "2001:db8::1", 0);
	expect_in6(&p.dst, p.dst_len, "::1", 65535);
}

static void test_v1_unknown(void)
{
	struct bt__proxy p;
	const char *a = "PROXY UNKNOWN\r\n";
	expect_header(a, strlen(a), &p);
	CHECK_EQ(p.has_addr, 0);
	const char *b = "PROXY UNKNOWN ffff::1 whatever the sender wrote\r\n";
	expect_header(b, strlen(b), &p);
	CHECK_EQ(p.has_addr, 0);
}

/* The longest line there can be: 107 bytes with CRLF (UNKNOWN with the
 * longest addresses), and the longest TCP6 one. */
static void test_v1_longest(void)
{
	const char *h = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	CHECK_EQ(strlen(h), BT__PROXY_V1_MAX);
	struct bt__proxy p;
	expect_header(h, BT__PROXY_V1_MAX, &p);
	CHECK_EQ(p.has_addr, 0);
	h = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65534\r\n";
	expect_header(h, strlen(h), &p);
	CHECK_EQ(p.has_addr, 1);
	expect_in6(&p.src, p.src_len, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	expect_in6(&p.dst, p.dst_len, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65534);
	/* UNKNOWN padded to 108: too long, as soon as that is known. */
	char l[BT__PROXY_V1_MAX + 1];
	memset(l, 'x', sizeof(l));
	memcpy(l, "PROXY UNKNOWN ", 14);
	l[BT__PROXY_V1_MAX - 1] = '\r';
	l[BT__PROXY_V1_MAX] = '\n';
	CHECK_ERR(bt__proxy_parse(l, sizeof(l), &p), -EMSGSIZE);
	CHECK_ERR(bt__proxy_parse(l, BT__PROXY_V1_MAX, &p), -EMSGSIZE);
	/* No CRLF within the bound at all. */
	memset(l, 'x', sizeof(l));
	memcpy(l, "PROXY ", 6);
	CHECK_ERR(bt__proxy_parse(l, BT__PROXY_V1_MAX - 1, &p), -EAGAIN);
	CHECK_ERR(bt__proxy_parse(l, BT__PROXY_V1_MAX, &p), -EMSGSIZE);
}

static void test_v1_refused(void)
{
	static const char *bad[] = {
		"PROXY TCP4 192.0.2.10 127.0.0.2 51234 8080\n",    /* bare LF */
		"PROXY TCP4 192.0.2.10 127.0.0.2 51234 8080\rX",   /* CR, no LF */
		"PROXY TCP4 192.0.2.10  127.0.0.2 51234 8080\r\n", /* two spaces */
		"PROXY TCP4 192.0.2.10 127.0.0.2 51234 8080 \r\n", /* trailing */
		"PROXY  TCP4 192.0.2.10 127.0.0.2 51234 8080\r\n", /* leading */
		"PROXY TCP4 192.0.2.10 127.0.0.2 51234\r\n",       /* 4 fields */
		"PROXY TCP4 192.0.2.10 127.0.0.2 1 2 3\r\n",       /* 6 fields */
		"PROXY TCP5 192.0.2.10 127.0.0.2 51234 8080\r\n",
		"PROXY TCP4 ::1 127.0.0.2 51234 8080\r\n",         /* v6 in TCP4 */
		"PROXY TCP6 192.0.2.10 ::1 51234 8080\r\n",        /* v4 in TCP6 */
		"PROXY TCP4 192.0.2.256 127.0.0.2 51234 8080\r\n",
		"PROXY TCP4 192.0.2.10 127.0.0.2 65536 8080\r\n",
		"PROXY TCP4 192.0.2.10 127.0.0.2 123456 8080\r\n",
		"PROXY TCP4 192.0.2.10 127.0.0.2 -1 8080\r\n",
		"PROXY TCP4 192.0.2.10 127.0.0.2 80x 8080\r\n",
		"PROXY TCP4 192.0.2.10 127.0.0.2 51234 \r\n",
		"PROXY tcp4 192.0.2.10 127.0.0.2 51234 8080\r\n",
		"PROXY UNKNOWNX\r\n",
		"PROXY \r\n",
		"PROXYTCP4 1.2.3.4 1.2.3.4 1 2\r\n",
		"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
		"GET / HTTP/1.1\r\n\r\n", /* a client that skipped the balancer */
		"\r\n\r\nX",              /* a v2 signature gone wrong */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct bt__proxy p;
		ssize_t rc = bt__proxy_parse(bad[i], strlen(bad[i]), &p);
		if (rc != -EPROTO)
			printf("  case %zu: %s\n", i, bad[i]);
		CHECK_ERR(rc, -EPROTO);
	}
	/* A NUL inside a v1 line. */
	static const char nul[] = "PROXY TCP4 1.2.3.4\0 1.2.3.4 1 2\r\n";
	struct bt__proxy p;
	CHECK_ERR(bt__proxy_parse(nul, sizeof(nul) - 1, &p), -EPROTO);
	/* Refused at the first byte that rules it out, not at the deadline. */
	CHECK_ERR(bt__proxy_parse("G", 1, &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse("PROXI", 5, &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse("\r\n\r\n\0\r\nX", 8, &p), -EPROTO);
}

/* A v2 header: 16 bytes of head, then body[0..blen). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *body, size_t blen)
{
	static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
					0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(blen >> 8);
	out[15] = (uint8_t)blen;
	if (blen)
		memcpy(out + 16, body, blen);
	return 16 + blen;
}

static void test_v2_inet(void)
{
	uint8_t body[12 + 3 + 2 + 3 + 0] = {192, 0, 2, 10, 127, 0, 0, 2, 0xc8, 0x22, 0x1f, 0x90,
					     /* TLV ALPN "h2", then an empty NOOP */
					     0x01, 0x00, 0x02, 'h', '2', 0x04, 0x00, 0x00};
	uint8_t h[64];
	size_t n = v2(h, 0x21, 0x11, body, sizeof(body));
	struct bt__proxy p;
	expect_header(h, n, &p);
	CHECK_EQ(p.version, 2);
	CHECK_EQ(p.has_addr, 1);
	expect_in4(&p.src, p.src_len, "192.0.2.10", 51234);
	expect_in4(&p.dst, p.dst_len, "127.0.0.2", 8080);
}

static void test_v2_inet6(void)
{
	uint8_t body[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1, [31] = 1, [32] = 0x00, [33] = 0x50,
			    [34] = 0x01, [35] = 0xbb};
	uint8_t h[64];
	size_t n = v2(h, 0x21, 0x21, body, sizeof(body));
	struct bt__proxy p;
	expect_header(h, n, &p);
	expect_in6(&p.src, p.src_len, "2001:db8::1", 80);
	expect_in6(&p.dst, p.dst_len, "::1", 443);
}

static void test_v2_unix(void)
{
	uint8_t body[216] = {0};
	memcpy(body, "/run/client.sock", 16);
	memcpy(body + 108 + 1, "abstract", 8); /* dst: an abstract name */
	uint8_t h[256];
	size_t n = v2(h, 0x21, 0x31, body, sizeof(body));
	struct bt__proxy p;
	expect_header(h, n, &p);
	CHECK_EQ(p.has_addr, 1);
	const struct sockaddr_un *s = (const struct sockaddr_un *)&p.src;
	CHECK_EQ(s->sun_family, AF_UNIX);
	CHECK_EQ(p.src_len, offsetof(struct sockaddr_un, sun_path) + 16);
	CHECK(memcmp(s->sun_path, "/run/client.sock", 16) == 0);
	CHECK_EQ(p.dst_len, offsetof(struct sockaddr_un, sun_path) + 108);
}

/* LOCAL (a balancer's own health check) and an unspecified family: no
 * addresses, the connection's own stand; whatever the body holds is
 * skipped. */
static void test_v2_local(void)
{
	uint8_t junk[40];
	memset(junk, 0xee, sizeof(junk));
	uint8_t h[64];
	struct bt__proxy p;
	size_t n = v2(h, 0x20, 0x00, NULL, 0);
	expect_header(h, n, &p);
	CHECK_EQ(p.has_addr, 0);
	n = v2(h, 0x20, 0x11, junk, sizeof(junk));
	expect_header(h, n, &p);
	CHECK_EQ(p.has_addr, 0);
	n = v2(h, 0x21, 0x00, junk, sizeof(junk)); /* PROXY, AF_UNSPEC */
	expect_header(h, n, &p);
	CHECK_EQ(p.has_addr, 0);
}

static void test_v2_refused(void)
{
	uint8_t a4[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
	uint8_t h[128];
	struct bt__proxy p;
	/* version 1 or 3 in the binary form; command 2 */
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x11, 0x11, a4, 12), &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x31, 0x11, a4, 12), &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x22, 0x11, a4, 12), &p), -EPROTO);
	/* ... known from the 13th byte on, before the rest */
	v2(h, 0x22, 0x11, a4, 12);
	CHECK_ERR(bt__proxy_parse(h, 13, &p), -EPROTO);
	/* family 4, transport 3 */
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x21, 0x41, a4, 12), &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x21, 0x13, a4, 12), &p), -EPROTO);
	/* a datagram, and an unspecified transport, with addresses */
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x21, 0x12, a4, 12), &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x21, 0x10, a4, 12), &p), -EPROTO);
	/* addresses that do not fit the length: refused from the head */
	size_t n = v2(h, 0x21, 0x11, a4, 11);
	CHECK_ERR(bt__proxy_parse(h, n, &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse(h, 16, &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x21, 0x21, a4, 12), &p), -EPROTO);
	/* TLVs that do not tile the rest: a cut head, a value past the end */
	uint8_t t1[14] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x01, 0x00};
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x21, 0x11, t1, sizeof(t1)), &p), -EPROTO);
	uint8_t t2[17] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x01, 0x00, 0x03, 'h', '2'};
	CHECK_ERR(bt__proxy_parse(h, v2(h, 0x21, 0x11, t2, sizeof(t2)), &p), -EPROTO);
	/* a signature with one byte wrong */
	v2(h, 0x21, 0x11, a4, 12);
	h[7] ^= 1;
	CHECK_ERR(bt__proxy_parse(h, 28, &p), -EPROTO);
	CHECK_ERR(bt__proxy_parse(h, 8, &p), -EPROTO);
}

/* The bound: a v2 length past BT__PROXY_V2_MAX is refused from the head,
 * without waiting for its bytes; one at the bound is taken. */
static void test_v2_bounds(void)
{
	static uint8_t h[BT__PROXY_V2_MAX + 16];
	static uint8_t body[BT__PROXY_V2_MAX];
	struct bt__proxy p;
	memset(body, 0, sizeof(body));
	memcpy(body, (uint8_t[]){1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2}, 12);
	/* one NOOP TLV filling the rest up to the bound */
	size_t blen = BT__PROXY_V2_MAX - 16;
	size_t vlen = blen - 12 - 3;
	body[12] = 0x04;
	body[13] = (uint8_t)(vlen >> 8);
	body[14] = (uint8_t)vlen;
	size_t n = v2(h, 0x21, 0x11, body, blen);
	CHECK_EQ(n, BT__PROXY_V2_MAX);
	CHECK_ERR(bt__proxy_parse(h, n, &p), (long long)n);
	CHECK_ERR(bt__proxy_parse(h, n - 1, &p), -EAGAIN);
	/* one byte more */
	body[14] = (uint8_t)(vlen + 1);
	n = v2(h, 0x21, 0x11, body, blen + 1);
	CHECK_ERR(bt__proxy_parse(h, 16, &p), -EMSGSIZE);
	CHECK_ERR(bt__proxy_parse(h, n, &p), -EMSGSIZE);
	/* the largest length there is */
	h[14] = 0xff;
	h[15] = 0xff;
	CHECK_ERR(bt__proxy_parse(h, 16, &p), -EMSGSIZE);
}

/* bt__proxy_encode_v2 (a connection handed to the next generation takes
 * its client's address along): what it writes parses back to the same
 * addresses, for each family; a dst of another family reads as zeros;
 * too small a buffer and an unknown family are refused. */
static void test_v2_encode(void)
{
	uint8_t h[16 + 216];
	struct bt__proxy p;
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(4321)};
	struct sockaddr_in d4 = {.sin_family = AF_INET, .sin_port = htons(80)};
	inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
	inet_pton(AF_INET, "198.51.100.1", &d4.sin_addr);
	ssize_t n = bt__proxy_encode_v2(h, sizeof(h), (struct sockaddr *)&s4, (struct sockaddr *)&d4);
	CHECK_EQ(n, 28);
	expect_header(h, (size_t)n, &p);
	CHECK_EQ(p.version, 2);
	expect_in4(&p.src, p.src_len, "192.0.2.7", 4321);
	expect_in4(&p.dst, p.dst_len, "198.51.100.1", 80);

	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(5555)};
	inet_pton(AF_INET6, "2001:db8::5", &s6.sin6_addr);
	n = bt__proxy_encode_v2(h, sizeof(h), (struct sockaddr *)&s6, (struct sockaddr *)&d4);
	CHECK_EQ(n, 52);
	expect_header(h, (size_t)n, &p);
	expect_in6(&p.src, p.src_len, "2001:db8::5", 5555);
	expect_in6(&p.dst, p.dst_len, "::", 0);

	struct sockaddr_un su = {.sun_family = AF_UNIX};
	memcpy(su.sun_path, "/run/c.sock", 11);
	n = bt__proxy_encode_v2(h, sizeof(h), (struct sockaddr *)&su, NULL);
	CHECK_EQ(n, 16 + 216);
	expect_header(h, (size_t)n, &p);
	const struct sockaddr_un *u = (const struct sockaddr_un *)&p.src;
	CHECK_EQ(u->sun_family, AF_UNIX);
	CHECK(strcmp(u->sun_path, "/run/c.sock") == 0);

	CHECK_ERR(bt__proxy_encode_v2(h, 27, (struct sockaddr *)&s4, NULL), -ENOSPC);
	struct sockaddr bad = {.sa_family = AF_PACKET};
	CHECK_ERR(bt__proxy_encode_v2(h, sizeof(h), &bad, NULL), -EINVAL);
	CHECK_ERR(bt__proxy_encode_v2(h, sizeof(h), NULL, NULL), -EINVAL);
}

static const struct check_case cases[] = {
	{"v1_tcp4", test_v1_tcp4},
	{"v1_tcp6", test_v1_tcp6},
	{"v1_unknown", test_v1_unknown},
	{"v1_longest", test_v1_longest},
	{"v1_refused", test_v1_refused},
	{"v2_inet", test_v2_inet},
	{"v2_inet6", test_v2_inet6},
	{"v2_unix", test_v2_unix},
	{"v2_local", test_v2_local},
	{"v2_refused", test_v2_refused},
	{"v2_bounds", test_v2_bounds},
	{"v2_encode", test_v2_encode},
	{0},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
