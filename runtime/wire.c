/* SPDX-License-Identifier: MIT */
/*
 * Wire format v1 (docs/wire.md).  Pure functions: no syscalls, no
 * allocation, no reads outside [buf, buf + len).  Integers are written
 * byte by byte in little-endian order so the format does not depend on the
 * host; compilers turn these helpers into plain loads and stores on x86.
 *
 * The decoder never trusts a count: every length is checked against the
 * bytes that arrived before it is used, in 64-bit arithmetic so that no sum
 * can wrap.
 */
#include <baton/wire.h>

#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

/* Header offsets. */
#define H_MAGIC 0
#define H_VERSION 4
#define H_TYPE 6
#define H_SEQ 8
#define H_LENGTH 16
#define H_ITEMS 20
#define H_FDS 22
#define H_FLAGS 24
#define H_RESERVED 28

/* Item record offsets. */
#define I_ID 0
#define I_ACCEPT 8
#define I_FLAGS 16
#define I_PAYLOAD_LEN 20
#define I_FAMILY 24
#define I_ADDR_LEN 26
#define I_PORT 28
#define I_RESERVED1 30
#define I_SCOPE 32
#define I_ADDR 36
#define I_RESERVED2 52

/* Address families on the wire (not the host's AF_* numbers). */
#define W_AF_NONE 0
#define W_AF_INET 1
#define W_AF_INET6 2
#define W_AF_UNIX 3

#define UN_PATH_OFF offsetof(struct sockaddr_un, sun_path)

/* Flag bits 1..15 are reserved on the wire. */
#define ITEM_RESERVED_MASK (~BT_WIRE_ITEM_WIRE_MASK)

static inline void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static inline void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static inline void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint16_t get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void put_header(unsigned char *p, uint16_t type, uint64_t seq,
		       uint32_t length, uint16_t items, uint16_t fds)
{
	put32(p + H_MAGIC, BT_WIRE_MAGIC);
	put16(p + H_VERSION, BT_WIRE_VERSION);
	put16(p + H_TYPE, type);
	put64(p + H_SEQ, seq);
	put32(p + H_LENGTH, length);
	put16(p + H_ITEMS, items);
	put16(p + H_FDS, fds);
	put32(p + H_FLAGS, 0);
	put32(p + H_RESERVED, 0);
}

/* Bytes of the item's tail: unix path bytes, then the payload. */
static long item_check(const struct bt_wire_item *it, uint32_t *addr_tail)
{
	if (it->flags & ITEM_RESERVED_MASK)
		return -EINVAL;
	if (it->payload_len && !it->payload)
		return -EINVAL;
	if (it->payload_len > BT_WIRE_MAX_MSG)
		return -EMSGSIZE;
	*addr_tail = 0;
	if (it->peer_len == 0)
		return 0;
	switch (it->peer.ss_family) {
	case AF_INET:
		if (it->peer_len < sizeof(struct sockaddr_in))
			return -EINVAL;
		return 0;
	case AF_INET6:
		if (it->peer_len < sizeof(struct sockaddr_in6))
			return -EINVAL;
		return 0;
	case AF_UNIX:
		if (it->peer_len < UN_PATH_OFF ||
		    it->peer_len > sizeof(struct sockaddr_un))
			return -EINVAL;
		*addr_tail = (uint32_t)(it->peer_len - UN_PATH_OFF);
		return 0;
	default:
		return -EAFNOSUPPORT;
	}
}

long bt_wire_batch_size(const struct bt_wire_item *items, size_t n)
{
	if (n == 0 || !items)
		return -EINVAL;
	if (n > BT_WIRE_MAX_ITEMS)
		return -E2BIG;
	uint64_t size = BT_WIRE_HDR_SIZE + (uint64_t)n * BT_WIRE_ITEM_SIZE;
	size_t nfds = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t tail;
		long rc = item_check(&items[i], &tail);
		if (rc < 0)
			return rc;
		size += tail + (uint64_t)items[i].payload_len;
		if (items[i].flags & BT_WIRE_ITEM_FD)
			nfds++;
	}
	if (nfds > BT_WIRE_MAX_FDS)
		return -E2BIG;
	if (size > BT_WIRE_MAX_MSG)
		return -EMSGSIZE;
	return (long)size;
}

static void put_item(unsigned char *r, const struct bt_wire_item *it)
{
	memset(r, 0, BT_WIRE_ITEM_SIZE);
	put64(r + I_ID, it->id);
	put64(r + I_ACCEPT, it->accept_ns);
	put32(r + I_FLAGS, it->flags & BT_WIRE_ITEM_WIRE_MASK);
	put32(r + I_PAYLOAD_LEN, it->payload_len);
	if (it->peer_len == 0)
		return;
	switch (it->peer.ss_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const void *)&it->peer;
		put16(r + I_FAMILY, W_AF_INET);
		put16(r + I_ADDR_LEN, 4);
		put16(r + I_PORT, ntohs(sin->sin_port));
		memcpy(r + I_ADDR, &sin->sin_addr, 4);
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const void *)&it->peer;
		put16(r + I_FAMILY, W_AF_INET6);
		put16(r + I_ADDR_LEN, 16);
		put16(r + I_PORT, ntohs(sin6->sin6_port));
		put32(r + I_SCOPE, sin6->sin6_scope_id);
		memcpy(r + I_ADDR, &sin6->sin6_addr, 16);
		break;
	}
	case AF_UNIX:
		put16(r + I_FAMILY, W_AF_UNIX);
		put16(r + I_ADDR_LEN, (uint16_t)(it->peer_len - UN_PATH_OFF));
		break;
	}
}

long bt_wire_encode_batch(void *buf, size_t cap, uint64_t seq,
			  const struct bt_wire_item *items, size_t n)
{
	long size = bt_wire_batch_size(items, n);
	if (size < 0)
		return size;
	if (!buf || (size_t)size > cap)
		return -ENOBUFS;

	unsigned char *p = buf;
	unsigned char *tail = p + BT_WIRE_HDR_SIZE + n * BT_WIRE_ITEM_SIZE;
	uint16_t nfds = 0;
	for (size_t i = 0; i < n; i++) {
		const struct bt_wire_item *it = &items[i];
		put_item(p + BT_WIRE_HDR_SIZE + i * BT_WIRE_ITEM_SIZE, it);
		if (it->flags & BT_WIRE_ITEM_FD)
			nfds++;
		if (it->peer_len && it->peer.ss_family == AF_UNIX) {
			const struct sockaddr_un *sun = (const void *)&it->peer;
			size_t plen = it->peer_len - UN_PATH_OFF;
			memcpy(tail, sun->sun_path, plen);
			tail += plen;
		}
		if (it->payload_len) {
			memcpy(tail, it->payload, it->payload_len);
			tail += it->payload_len;
		}
	}
	put_header(p, BT_WIRE_BATCH, seq, (uint32_t)size, (uint16_t)n, nfds);
	return size;
}

long bt_wire_encode_ack(void *buf, size_t cap, uint64_t seq,
			const struct bt_wire_ack *ack)
{
	if (!ack)
		return -EINVAL;
	if (ack->n_lost > BT_WIRE_MAX_FDS)
		return -E2BIG;
	size_t size = BT_WIRE_HDR_SIZE + BT_WIRE_ACK_SIZE + 8u * ack->n_lost;
	if (!buf || size > cap)
		return -ENOBUFS;
	unsigned char *p = buf;
	put_header(p, BT_WIRE_ACK, seq, (uint32_t)size, 0, 0);
	unsigned char *b = p + BT_WIRE_HDR_SIZE;
	put64(b + 0, ack->seq);
	put64(b + 8, ack->fds_total);
	put32(b + 16, ack->load);
	put32(b + 20, ack->n_lost);
	for (uint32_t i = 0; i < ack->n_lost; i++)
		put64(b + BT_WIRE_ACK_SIZE + 8u * i, ack->lost[i]);
	return (long)size;
}

long bt_wire_encode_hello(void *buf, size_t cap, uint64_t seq,
			  const struct bt_wire_hello *hello)
{
	if (!hello || hello->max_batch > BT_WIRE_MAX_FDS)
		return -EINVAL;
	size_t size = BT_WIRE_HDR_SIZE + BT_WIRE_HELLO_SIZE;
	if (!buf || size > cap)
		return -ENOBUFS;
	unsigned char *p = buf;
	put_header(p, BT_WIRE_HELLO, seq, (uint32_t)size, 0, 0);
	put32(p + BT_WIRE_HDR_SIZE + 0, hello->worker_id);
	put32(p + BT_WIRE_HDR_SIZE + 4, hello->pid);
	put32(p + BT_WIRE_HDR_SIZE + 8, hello->version);
	put32(p + BT_WIRE_HDR_SIZE + 12, hello->max_batch);
	return (long)size;
}

long bt_wire_encode_drain(void *buf, size_t cap, uint64_t seq,
			  const struct bt_wire_drain *drain)
{
	if (!drain || drain->flags != 0)
		return -EINVAL;
	size_t size = BT_WIRE_HDR_SIZE + BT_WIRE_DRAIN_SIZE;
	if (!buf || size > cap)
		return -ENOBUFS;
	unsigned char *p = buf;
	put_header(p, BT_WIRE_DRAIN, seq, (uint32_t)size, 0, 0);
	put32(p + BT_WIRE_HDR_SIZE + 0, drain->deadline_ms);
	put32(p + BT_WIRE_HDR_SIZE + 4, 0);
	return (long)size;
}

static int all_zero(const unsigned char *p, size_t n)
{
	unsigned char acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

int bt_wire_peek(const void *buf, size_t len, uint16_t *type, uint64_t *seq)
{
	const unsigned char *p = buf;
	if (!buf || len < BT_WIRE_HDR_SIZE)
		return -EBADMSG;
	if (get32(p + H_MAGIC) != BT_WIRE_MAGIC)
		return -EBADMSG;
	if (get16(p + H_VERSION) != BT_WIRE_VERSION)
		return -EPROTONOSUPPORT;
	if (type)
		*type = get16(p + H_TYPE);
	if (seq)
		*seq = get64(p + H_SEQ);
	return 0;
}

/*
 * Decode one item record; *tail_off advances over its tail bytes, which
 * must lie within [.., len).  Returns 0 or -EBADMSG.
 */
static int get_item(const unsigned char *msg, size_t len, size_t idx,
		    uint64_t *tail_off, struct bt_wire_item *it)
{
	const unsigned char *r = msg + BT_WIRE_HDR_SIZE + idx * BT_WIRE_ITEM_SIZE;
	uint32_t flags = get32(r + I_FLAGS);
	uint16_t family = get16(r + I_FAMILY);
	uint16_t alen = get16(r + I_ADDR_LEN);
	uint16_t port = get16(r + I_PORT);
	uint32_t scope = get32(r + I_SCOPE);

	if (flags & ITEM_RESERVED_MASK)
		return -EBADMSG;
	if (get16(r + I_RESERVED1) || get32(r + I_RESERVED2))
		return -EBADMSG;

	memset(it, 0, offsetof(struct bt_wire_item, peer));
	it->id = get64(r + I_ID);
	it->accept_ns = get64(r + I_ACCEPT);
	it->flags = flags;
	it->fd = -1;
	it->payload_len = get32(r + I_PAYLOAD_LEN);
	it->payload = NULL;
	it->peer_len = 0;
	it->peer.ss_family = AF_UNSPEC;

	uint32_t tail = 0;
	switch (family) {
	case W_AF_NONE:
		if (alen || port || scope || !all_zero(r + I_ADDR, 16))
			return -EBADMSG;
		break;
	case W_AF_INET: {
		if (alen != 4 || scope || !all_zero(r + I_ADDR + 4, 12))
			return -EBADMSG;
		struct sockaddr_in *sin = (void *)&it->peer;
		memset(sin, 0, sizeof(*sin));
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, r + I_ADDR, 4);
		it->peer_len = sizeof(*sin);
		break;
	}
	case W_AF_INET6: {
		if (alen != 16)
			return -EBADMSG;
		struct sockaddr_in6 *sin6 = (void *)&it->peer;
		memset(sin6, 0, sizeof(*sin6));
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		sin6->sin6_scope_id = scope;
		memcpy(&sin6->sin6_addr, r + I_ADDR, 16);
		it->peer_len = sizeof(*sin6);
		break;
	}
	case W_AF_UNIX:
		if (alen > BT_WIRE_MAX_ADDR || port || scope ||
		    !all_zero(r + I_ADDR, 16))
			return -EBADMSG;
		tail = alen;
		break;
	default:
		return -EBADMSG;
	}

	uint64_t off = *tail_off;
	if (off + tail + (uint64_t)it->payload_len > len)
		return -EBADMSG;
	if (family == W_AF_UNIX) {
		struct sockaddr_un *sun = (void *)&it->peer;
		memset(sun, 0, sizeof(*sun));
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, msg + off, alen);
		it->peer_len = (socklen_t)(UN_PATH_OFF + alen);
		off += alen;
	}
	if (it->payload_len)
		it->payload = msg + off;
	off += it->payload_len;
	*tail_off = off;
	return 0;
}

static int decode_batch(const unsigned char *p, size_t len, size_t nfds,
			int truncated, struct bt_wire_batch *b)
{
	uint16_t n = get16(p + H_ITEMS);
	uint16_t nf = get16(p + H_FDS);

	if (!b->items)
		return -EINVAL;
	if (n == 0 || n > BT_WIRE_MAX_ITEMS || nf > BT_WIRE_MAX_FDS || nf > n)
		return -EBADMSG;
	/* Descriptors are all-or-nothing unless the kernel cut them short. */
	if (truncated ? nfds > nf : nfds != nf)
		return -EBADMSG;
	if (BT_WIRE_HDR_SIZE + (uint64_t)n * BT_WIRE_ITEM_SIZE > len)
		return -EBADMSG;

	uint64_t tail_off = BT_WIRE_HDR_SIZE + (uint64_t)n * BT_WIRE_ITEM_SIZE;
	size_t with_fd = 0;
	uint16_t lost = 0;
	for (size_t i = 0; i < n; i++) {
		struct bt_wire_item *it = &b->items[i];
		int rc = get_item(p, len, i, &tail_off, it);
		if (rc < 0)
			return rc;
		if (it->flags & BT_WIRE_ITEM_FD) {
			/* The kernel installs descriptors in order and stops
			 * at the first failure: those past nfds are lost. */
			if (with_fd >= nfds) {
				it->flags |= BT_WIRE_ITEM_LOST;
				lost++;
			}
			with_fd++;
		}
	}
	if (with_fd != nf || tail_off != len)
		return -EBADMSG;
	b->seq = get64(p + H_SEQ);
	b->n_items = n;
	b->n_fds = nf;
	b->n_lost = lost;
	return 0;
}

int bt_wire_decode(const void *buf, size_t len, size_t nfds, int truncated,
		   struct bt_wire_msg *out)
{
	const unsigned char *p = buf;
	uint16_t type;
	uint64_t seq;

	if (!buf || !out)
		return -EINVAL;
	int rc = bt_wire_peek(buf, len, &type, &seq);
	if (rc < 0)
		return rc;
	if (len > BT_WIRE_MAX_MSG || get32(p + H_LENGTH) != len)
		return -EBADMSG;
	if (get32(p + H_FLAGS) || get32(p + H_RESERVED))
		return -EBADMSG;

	out->type = type;
	out->seq = seq;
	if (type == BT_WIRE_BATCH)
		return decode_batch(p, len, nfds, truncated, &out->u.batch);

	/* Only a BATCH carries items or descriptors. */
	if (get16(p + H_ITEMS) || get16(p + H_FDS) || nfds)
		return -EBADMSG;
	const unsigned char *b = p + BT_WIRE_HDR_SIZE;
	size_t body = len - BT_WIRE_HDR_SIZE;
	switch (type) {
	case BT_WIRE_ACK: {
		struct bt_wire_ack *a = &out->u.ack;
		if (body < BT_WIRE_ACK_SIZE)
			return -EBADMSG;
		a->n_lost = get32(b + 20);
		if (a->n_lost > BT_WIRE_MAX_FDS ||
		    body != BT_WIRE_ACK_SIZE + 8u * (size_t)a->n_lost)
			return -EBADMSG;
		a->seq = get64(b + 0);
		a->fds_total = get64(b + 8);
		a->load = get32(b + 16);
		for (uint32_t i = 0; i < a->n_lost; i++)
			a->lost[i] = get64(b + BT_WIRE_ACK_SIZE + 8u * i);
		return 0;
	}
	case BT_WIRE_HELLO: {
		struct bt_wire_hello *h = &out->u.hello;
		if (body != BT_WIRE_HELLO_SIZE || get32(b + 12) > BT_WIRE_MAX_FDS)
			return -EBADMSG;
		h->worker_id = get32(b + 0);
		h->pid = get32(b + 4);
		h->version = get32(b + 8);
		h->max_batch = get32(b + 12);
		return 0;
	}
	case BT_WIRE_DRAIN: {
		struct bt_wire_drain *d = &out->u.drain;
		if (body != BT_WIRE_DRAIN_SIZE || get32(b + 4))
			return -EBADMSG;
		d->deadline_ms = get32(b + 0);
		d->flags = 0;
		return 0;
	}
	default:
		return -EBADMSG;
	}
}

const char *bt_wire_type_name(unsigned type)
{
	switch (type) {
	case BT_WIRE_BATCH:
		return "BATCH";
	case BT_WIRE_ACK:
		return "ACK";
	case BT_WIRE_HELLO:
		return "HELLO";
	case BT_WIRE_DRAIN:
		return "DRAIN";
	default:
		return "unknown";
	}
}
