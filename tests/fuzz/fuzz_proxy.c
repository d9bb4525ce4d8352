/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the PROXY protocol header parser (runtime/proxy.c):
 * any bytes a client can send first.  Checks, beyond the sanitizers:
 * - the result is a length inside the input, -EAGAIN, -EPROTO or -EMSGSIZE;
 * - -EAGAIN never comes with BT__PROXY_MAX bytes or more in hand;
 * - a decision is final: a shorter prefix reads -EAGAIN or the same;
 * - a header's length alone gives the same result, and its proper
 *   prefixes read -EAGAIN;
 * - addresses, when given, are of a family the parser produces, with a
 *   length that fits;
 * - bt__proxy_encode_v2 of them (a reload hands them on so) parses back
 *   to the same addresses.
 */
#include "../../runtime/proxy.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <netinet/in.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int decided(ssize_t rc)
{
	return rc != -EAGAIN;
}

static void check_addr(const struct sockaddr_storage *ss, socklen_t len)
{
	switch (ss->ss_family) {
	case AF_INET:
		if (len != sizeof(struct sockaddr_in))
			abort();
		break;
	case AF_INET6:
		if (len != sizeof(struct sockaddr_in6))
			abort();
		break;
	case AF_UNIX:
		if (len < offsetof(struct sockaddr_un, sun_path) || len > sizeof(struct sockaddr_un))
			abort();
		break;
	default:
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > BT__PROXY_MAX + 64)
		size = BT__PROXY_MAX + 64;
	struct bt__proxy p;
	ssize_t rc = bt__proxy_parse(data, size, &p);
	if (rc > 0) {
		if ((size_t)rc > size || (size_t)rc > BT__PROXY_MAX)
			abort();
		if (p.version != 1 && p.version != 2)
			abort();
		if (p.version == 1 && rc > BT__PROXY_V1_MAX)
			abort();
		if (p.has_addr) {
			check_addr(&p.src, p.src_len);
			check_addr(&p.dst, p.dst_len);
			if (p.src.ss_family != p.dst.ss_family)
				abort();
		}
		struct bt__proxy q;
		if (bt__proxy_parse(data, (size_t)rc, &q) != rc || q.has_addr != p.has_addr)
			abort();
		if (p.has_addr && (q.src_len != p.src_len || memcmp(&q.src, &p.src, p.src_len) != 0))
			abort();
		if (p.has_addr) {
			uint8_t enc[16 + 216];
			ssize_t n = bt__proxy_encode_v2(enc, sizeof(enc), (struct sockaddr *)&p.src,
							(struct sockaddr *)&p.dst);
			struct bt__proxy e;
			if (n <= 0 || bt__proxy_parse(enc, (size_t)n, &e) != n || !e.has_addr ||
			    e.version != 2)
				abort();
			if (e.src_len != p.src_len || memcmp(&e.src, &p.src, p.src_len) != 0 ||
			    e.dst_len != p.dst_len || memcmp(&e.dst, &p.dst, p.dst_len) != 0)
				abort();
		}
		size_t ks[3] = {0, (size_t)rc / 2, (size_t)rc - 1};
		for (int i = 0; i < 3; i++)
			if (bt__proxy_parse(data, ks[i], &q) != -EAGAIN)
				abort();
	} else if (rc == -EAGAIN) {
		if (size >= BT__PROXY_MAX)
			abort();
	} else if (rc != -EPROTO && rc != -EMSGSIZE) {
		abort();
	}
	/* A decision is final. */
	if (size > 0) {
		size_t ks[2] = {size - 1, size / 2};
		for (int i = 0; i < 2; i++) {
			struct bt__proxy q;
			ssize_t r = bt__proxy_parse(data, ks[i], &q);
			if (decided(r) && r != rc)
				abort();
		}
	}
	return 0;
}
