/* SPDX-License-Identifier: MIT */
/* Wire format v1 through baton/wire.h: round trips, exact layout, and every
 * decoder refusal with its exact errno. */
#include "check.h"

#include <baton/wire.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/un.h>

static struct bt_wire_item items_buf[BT_WIRE_MAX_ITEMS];
static unsigned char msg_buf[BT_WIRE_MAX_MSG];

static void set_in4(struct bt_wire_item *it, const char *ip, uint16_t port)
{
	struct sockaddr_in *sin = (void *)&it->peer;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	inet_pton(AF_INET, ip, &sin->sin_addr);
	it->peer_len = sizeof(*sin);
}

static void set_in6(struct bt_wire_item *it, const char *ip, uint16_t port,
		    uint32_t scope)
{
	struct sockaddr_in6 *sin6 = (void *)&it->peer;
	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	sin6->sin6_scope_id = scope;
	inet_pton(AF_INET6, ip, &sin6->sin6_addr);
	it->peer_len = sizeof(*sin6);
}

/* path == NULL: unnamed; path[0] == '@': abstract. */
static void set_un(struct bt_wire_item *it, const char *path)
{
	struct sockaddr_un *sun = (void *)&it->peer;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	size_t off = offsetof(struct sockaddr_un, sun_path);
	if (!path) {
		it->peer_len = (socklen_t)off;
	} else if (path[0] == '@') {
		memcpy(sun->sun_path + 1, path + 1, strlen(path) - 1);
		it->peer_len = (socklen_t)(off + strlen(path));
	} else {
		memcpy(sun->sun_path, path, strlen(path) + 1);
		it->peer_len = (socklen_t)(off + strlen(path) + 1);
	}
}

static char payload_text[BT_WIRE_MAX_ITEMS + 1][24];

/* A batch that exercises every address kind, payloads and flags. */
static void make_items(struct bt_wire_item *it, size_t n)
{
	memset(it, 0, n * sizeof(*it));
	for (size_t i = 0; i < n; i++) {
		it[i].id = 0x1000000000ull + i;
		it[i].accept_ns = 123456789012345ull + i * 1000;
		it[i].flags = (i % 3 ? BT_WIRE_ITEM_FD : 0) | ((uint32_t)i << 16);
		it[i].fd = (int)(100 + i);
		switch (i % 6) {
		case 0: set_in4(&it[i], "127.0.0.1", (uint16_t)(40000 + i)); break;
		case 1: set_in6(&it[i], "2001:db8::1", 443, (uint32_t)i); break;
		case 2: set_un(&it[i], "/run/baton/client.sock"); break;
		case 3: set_un(&it[i], "@baton-abstract"); break;
		case 4: set_un(&it[i], NULL); break;
		case 5: it[i].peer_len = 0; break;
		}
		if (i % 2) {
			int len = snprintf(payload_text[i], sizeof(payload_text[i]), "job-%zu", i);
			it[i].payload = payload_text[i];
			it[i].payload_len = (uint32_t)len;
		}
	}
}

static size_t count_fd_items(const struct bt_wire_item *it, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += (it[i].flags & BT_WIRE_ITEM_FD) != 0;
	return k;
}

static void check_same_item(const struct bt_wire_item *a, const struct bt_wire_item *b)
{
	CHECK_EQ(a->id, b->id);
	CHECK_EQ(a->accept_ns, b->accept_ns);
	CHECK_EQ(a->flags, b->flags);
	CHECK_EQ(b->fd, -1); /* the wire layer never invents a descriptor */
	CHECK_EQ(a->peer_len, b->peer_len);
	CHECK(memcmp(&a->peer, &b->peer, a->peer_len) == 0);
	CHECK_EQ(a->payload_len, b->payload_len);
	if (a->payload_len)
		CHECK(memcmp(a->payload, b->payload, a->payload_len) == 0);
	else
		CHECK(b->payload == NULL);
}

static void roundtrip(size_t n)
{
	struct bt_wire_item src[BT_WIRE_MAX_ITEMS];
	make_items(src, n);
	long len = bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 77, src, n);
	CHECK_OP(len, >, 0);
	CHECK_EQ(len, bt_wire_batch_size(src, n));

	struct bt_wire_msg m = {.u.batch.items = items_buf};
	size_t nf = count_fd_items(src, n);
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, nf, 0, &m), 0);
	CHECK_EQ(m.type, BT_WIRE_BATCH);
	CHECK_EQ(m.seq, 77);
	CHECK_EQ(m.u.batch.seq, 77);
	CHECK_EQ(m.u.batch.n_items, n);
	CHECK_EQ(m.u.batch.n_fds, nf);
	CHECK_EQ(m.u.batch.n_lost, 0);
	for (size_t i = 0; i < n; i++)
		check_same_item(&src[i], &m.u.batch.items[i]);
}

static void test_roundtrip_1(void) { roundtrip(1); }
static void test_roundtrip_2(void) { roundtrip(2); }
static void test_roundtrip_16(void) { roundtrip(16); }
static void test_roundtrip_253(void) { roundtrip(253); }

/* The exact bytes of a small batch, as docs/wire.md lays them out. */
static void test_golden_layout(void)
{
	struct bt_wire_item it[2];
	memset(it, 0, sizeof(it));
	it[0].id = 0x0102030405060708ull;
	it[0].accept_ns = 0x1112131415161718ull;
	it[0].flags = BT_WIRE_ITEM_FD | 0xabcd0000u;
	it[0].fd = 5;
	set_in4(&it[0], "10.1.2.3", 0x1f90);
	it[1].id = 9;
	set_un(&it[1], "@ab");
	it[1].payload = "xyz";
	it[1].payload_len = 3;

	long len = bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0x2a, it, 2);
	CHECK_EQ(len, 32 + 2 * 56 + 3 + 3);
	static const unsigned char want_hdr[32] = {
		'B', 'A', 'T', 'N', 1, 0, 1, 0,           /* magic, version, type */
		0x2a, 0, 0, 0, 0, 0, 0, 0,                /* seq */
		150, 0, 0, 0, 2, 0, 1, 0,                 /* length, items, fds */
		0, 0, 0, 0, 0, 0, 0, 0};                  /* flags, reserved */
	CHECK(memcmp(msg_buf, want_hdr, 32) == 0);
	static const unsigned char want_item0[56] = {
		8, 7, 6, 5, 4, 3, 2, 1,                   /* id */
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, /* accept_ns */
		0x01, 0x00, 0xcd, 0xab,                   /* flags */
		0, 0, 0, 0,                               /* payload_len */
		1, 0, 4, 0, 0x90, 0x1f, 0, 0,             /* inet, len 4, port, rsv */
		0, 0, 0, 0,                               /* scope */
		10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* addr */
		0, 0, 0, 0};                              /* reserved */
	CHECK(memcmp(msg_buf + 32, want_item0, 56) == 0);
	const unsigned char *r1 = msg_buf + 32 + 56;
	CHECK_EQ(r1[0], 9);
	CHECK_EQ(r1[20], 3);  /* payload_len */
	CHECK_EQ(r1[24], 3);  /* unix */
	CHECK_EQ(r1[26], 3);  /* addr_len: NUL, 'a', 'b' */
	static const unsigned char want_tail[6] = {0, 'a', 'b', 'x', 'y', 'z'};
	CHECK(memcmp(msg_buf + 32 + 112, want_tail, 6) == 0);
}

/* The example at the end of docs/wire.md, byte for byte. */
static void test_doc_example(void)
{
	static const unsigned char doc[88] = {
		0x42, 0x41, 0x54, 0x4e, 0x01, 0x00, 0x01, 0x00, 0x2a, 0, 0, 0, 0, 0, 0, 0,
		0x58, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
		0x09, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0,
		0x01, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x04, 0x00, 0x90, 0x1f, 0, 0,
		0, 0, 0, 0, 0x7f, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0};
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = 9;
	it.accept_ns = 0x10;
	it.flags = BT_WIRE_ITEM_FD;
	it.fd = 3;
	set_in4(&it, "127.0.0.1", 8080);
	CHECK_EQ(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 42, &it, 1), 88);
	CHECK(memcmp(msg_buf, doc, 88) == 0);
	struct bt_wire_msg m = {.u.batch.items = items_buf};
	CHECK_ERR(bt_wire_decode(doc, 88, 1, 0, &m), 0);
	CHECK_EQ(m.u.batch.items[0].id, 9);
}

static void test_control_messages(void)
{
	struct bt_wire_msg m;
	struct bt_wire_ack ack = {.seq = 41, .fds_total = 1000, .load = 7, .n_lost = 3,
				  .lost = {5, 6, 0xffffffffffffull}};
	long len = bt_wire_encode_ack(msg_buf, sizeof(msg_buf), 3, &ack);
	CHECK_EQ(len, 32 + 24 + 24);
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 0, 0, &m), 0);
	CHECK_EQ(m.type, BT_WIRE_ACK);
	CHECK_EQ(m.seq, 3);
	CHECK_EQ(m.u.ack.seq, 41);
	CHECK_EQ(m.u.ack.fds_total, 1000);
	CHECK_EQ(m.u.ack.load, 7);
	CHECK_EQ(m.u.ack.n_lost, 3);
	CHECK_EQ(m.u.ack.lost[2], 0xffffffffffffull);
	/* descriptors never ride on an ACK */
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 1, 0, &m), -EBADMSG);

	struct bt_wire_hello h = {.worker_id = 3, .pid = 4242, .version = 1, .max_batch = 16};
	len = bt_wire_encode_hello(msg_buf, sizeof(msg_buf), 0, &h);
	CHECK_EQ(len, 48);
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 0, 0, &m), 0);
	CHECK_EQ(m.type, BT_WIRE_HELLO);
	CHECK_EQ(m.u.hello.worker_id, 3);
	CHECK_EQ(m.u.hello.pid, 4242);
	CHECK_EQ(m.u.hello.version, 1);
	CHECK_EQ(m.u.hello.max_batch, 16);
	/* max_batch above 253 is refused on the wire (offset 44) */
	msg_buf[44] = 254;
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 0, 0, &m), -EBADMSG);
	msg_buf[44] = 253;
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 0, 0, &m), 0);
	CHECK_EQ(m.u.hello.max_batch, 253);

	struct bt_wire_drain d = {.deadline_ms = 5000};
	len = bt_wire_encode_drain(msg_buf, sizeof(msg_buf), 9, &d);
	CHECK_EQ(len, 40);
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 0, 0, &m), 0);
	CHECK_EQ(m.type, BT_WIRE_DRAIN);
	CHECK_EQ(m.u.drain.deadline_ms, 5000);

	CHECK(strcmp(bt_wire_type_name(BT_WIRE_ACK), "ACK") == 0);
	CHECK(strcmp(bt_wire_type_name(99), "unknown") == 0);
}

static void test_encode_errors(void)
{
	struct bt_wire_item it[BT_WIRE_MAX_ITEMS + 1];
	make_items(it, BT_WIRE_MAX_ITEMS + 1);
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, it, 0), -EINVAL);
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, NULL, 1), -EINVAL);
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, it, 254), -E2BIG);

	struct bt_wire_item one = it[0];
	one.flags |= 0x20; /* reserved bit */
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, &one, 1), -EINVAL);
	one = it[0];
	one.flags |= BT_WIRE_ITEM_LOST; /* receiver-only flag */
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, &one, 1), -EINVAL);
	one = it[0];
	one.peer.ss_family = AF_PACKET;
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, &one, 1), -EAFNOSUPPORT);
	one = it[0];
	one.peer_len = 3; /* too short for sockaddr_in */
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, &one, 1), -EINVAL);
	one = it[0];
	one.payload = NULL;
	one.payload_len = 4;
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, &one, 1), -EINVAL);

	static char big[BT_WIRE_MAX_MSG];
	one = it[0];
	one.payload = big;
	one.payload_len = BT_WIRE_MAX_MSG - 32 - 56; /* exactly the maximum */
	CHECK_EQ(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, &one, 1), BT_WIRE_MAX_MSG);
	one.payload_len++;
	CHECK_ERR(bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 0, &one, 1), -EMSGSIZE);

	/* Too small a buffer: refused and left untouched. */
	memset(msg_buf, 0xee, 64);
	CHECK_ERR(bt_wire_encode_batch(msg_buf, 60, 0, it, 1), -ENOBUFS);
	CHECK_EQ(msg_buf[0], 0xee);
	struct bt_wire_ack ack = {.n_lost = 254};
	CHECK_ERR(bt_wire_encode_ack(msg_buf, sizeof(msg_buf), 0, &ack), -E2BIG);
	ack.n_lost = 0;
	CHECK_ERR(bt_wire_encode_ack(msg_buf, 40, 0, &ack), -ENOBUFS);
	struct bt_wire_hello h = {.max_batch = BT_WIRE_MAX_FDS + 1};
	CHECK_ERR(bt_wire_encode_hello(msg_buf, sizeof(msg_buf), 0, &h), -EINVAL);
}

/* Encode a fresh valid 4-item batch; returns its length. */
static size_t fresh(struct bt_wire_item *src)
{
	make_items(src, 4); /* items 1 and 2 carry fds, 1 and 3 payloads */
	long len = bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 5, src, 4);
	CHECK_OP(len, >, 0);
	return (size_t)len;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void test_decode_refusals(void)
{
	struct bt_wire_item src[4];
	struct bt_wire_msg m = {.u.batch.items = items_buf};
	size_t len = fresh(src);
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), 0);

	/* Too short for a header, and every truncation of the message. */
	for (size_t cut = 0; cut < len; cut++) {
		int rc = bt_wire_decode(msg_buf, cut, 2, 0, &m);
		CHECK_ERR(rc, -EBADMSG);
	}
	CHECK_ERR(bt_wire_decode(NULL, len, 2, 0, &m), -EINVAL);

	msg_buf[0] ^= 1; /* magic */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	msg_buf[4] = 2; /* version */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EPROTONOSUPPORT);
	len = fresh(src);
	msg_buf[6] = 9; /* type */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	msg_buf[24] = 1; /* header flags */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	msg_buf[31] = 1; /* header reserved */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);

	/* Counts that disagree with the descriptors that arrived. */
	len = fresh(src);
	CHECK_ERR(bt_wire_decode(msg_buf, len, 1, 0, &m), -EBADMSG);
	CHECK_ERR(bt_wire_decode(msg_buf, len, 3, 0, &m), -EBADMSG);
	CHECK_ERR(bt_wire_decode(msg_buf, len, 3, 1, &m), -EBADMSG); /* more than announced */
	msg_buf[22] = 3; /* header says 3 fds, records flag 2 */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 3, 0, &m), -EBADMSG);
	len = fresh(src);
	msg_buf[22] = 5; /* more fds than items */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 5, 0, &m), -EBADMSG);
	len = fresh(src);
	msg_buf[20] = 0; /* no items */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	msg_buf[20] = 254 & 0xff; /* 254 items */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	put_le32(msg_buf + 16, (uint32_t)len + 1); /* length field */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);

	/* Hostile record fields. */
	unsigned char *r1 = msg_buf + 32 + 56;
	len = fresh(src);
	put_le32(r1 + 20, 0xffffffffu); /* payload_len past the end */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	put_le32(r1 + 20, 0); /* payload shorter: bytes left over */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	r1[16] |= BT_WIRE_ITEM_LOST; /* receiver-only flag on the wire */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	r1[24] = 7; /* family */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	r1[26] = 4; /* inet6 with addr_len 4 */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	unsigned char *r0 = msg_buf + 32;
	r0[40] = 1; /* inet: bytes past the 4-byte address */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	r0[30] = 1; /* reserved */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	r0[55] = 1; /* reserved */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);
	len = fresh(src);
	unsigned char *r2 = msg_buf + 32 + 2 * 56;
	r2[26] = 200; /* unix path longer than sun_path */
	CHECK_ERR(bt_wire_decode(msg_buf, len, 2, 0, &m), -EBADMSG);

	/* Over the maximum size, even if self-consistent. */
	static unsigned char big[BT_WIRE_MAX_MSG + 8];
	len = fresh(src);
	memcpy(big, msg_buf, len);
	put_le32(big + 16, BT_WIRE_MAX_MSG + 8);
	CHECK_ERR(bt_wire_decode(big, BT_WIRE_MAX_MSG + 8, 2, 0, &m), -EBADMSG);

	/* Control messages with a wrong size or items. */
	struct bt_wire_drain d = {.deadline_ms = 1};
	long dl = bt_wire_encode_drain(msg_buf, sizeof(msg_buf), 0, &d);
	msg_buf[20] = 1;
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)dl, 0, 0, &m), -EBADMSG);
	struct bt_wire_ack ack = {.n_lost = 2};
	long al = bt_wire_encode_ack(msg_buf, sizeof(msg_buf), 0, &ack);
	put_le32(msg_buf + 32 + 20, 3); /* claims 3 lost ids, carries 2 */
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)al, 0, 0, &m), -EBADMSG);
	put_le32(msg_buf + 32 + 20, 0x10000000u);
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)al, 0, 0, &m), -EBADMSG);
}

/* MSG_CTRUNC: the first k descriptors arrived, the rest are flagged. */
static void test_truncated_fds(void)
{
	struct bt_wire_item src[16];
	make_items(src, 16);
	for (int i = 0; i < 16; i++)
		src[i].flags |= BT_WIRE_ITEM_FD;
	src[3].flags &= ~BT_WIRE_ITEM_FD;
	long len = bt_wire_encode_batch(msg_buf, sizeof(msg_buf), 8, src, 16);
	struct bt_wire_msg m = {.u.batch.items = items_buf};
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 5, 1, &m), 0);
	CHECK_EQ(m.u.batch.n_fds, 15);
	CHECK_EQ(m.u.batch.n_lost, 10);
	int seen = 0;
	for (int i = 0; i < 16; i++) {
		uint32_t f = m.u.batch.items[i].flags;
		if (i == 3) {
			CHECK_EQ(f & (BT_WIRE_ITEM_FD | BT_WIRE_ITEM_LOST), 0);
			continue;
		}
		CHECK_EQ(!!(f & BT_WIRE_ITEM_LOST), seen >= 5);
		seen++;
	}
	/* nothing arrived at all */
	CHECK_ERR(bt_wire_decode(msg_buf, (size_t)len, 0, 1, &m), 0);
	CHECK_EQ(m.u.batch.n_lost, 15);
}

/* Flip every bit of a valid message: the decoder must never read out of
 * bounds (ASan watches) and must either refuse or return a consistent batch. */
static void test_bit_flips(void)
{
	struct bt_wire_item src[4];
	size_t len = fresh(src);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			unsigned char *heap = malloc(len); /* exact size for ASan */
			memcpy(heap, msg_buf, len);
			heap[i] ^= (unsigned char)(1u << bit);
			struct bt_wire_msg m = {.u.batch.items = items_buf};
			int rc = bt_wire_decode(heap, len, 2, 0, &m);
			CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTONOSUPPORT);
			if (rc == 0 && m.type == BT_WIRE_BATCH) {
				size_t k = count_fd_items(m.u.batch.items, m.u.batch.n_items);
				CHECK_EQ(k, 2);
			}
			free(heap);
		}
	}
}

static void test_peek(void)
{
	struct bt_wire_item src[4];
	size_t len = fresh(src);
	uint16_t type;
	uint64_t seq;
	CHECK_ERR(bt_wire_peek(msg_buf, len, &type, &seq), 0);
	CHECK_EQ(type, BT_WIRE_BATCH);
	CHECK_EQ(seq, 5);
	CHECK_ERR(bt_wire_peek(msg_buf, 31, &type, &seq), -EBADMSG);
}

static const struct check_case cases[] = {
	{"roundtrip_1", test_roundtrip_1},
	{"roundtrip_2", test_roundtrip_2},
	{"roundtrip_16", test_roundtrip_16},
	{"roundtrip_253", test_roundtrip_253},
	{"golden_layout", test_golden_layout},
	{"doc_example", test_doc_example},
	{"control_messages", test_control_messages},
	{"encode_errors", test_encode_errors},
	{"decode_refusals", test_decode_refusals},
	{"truncated_fds", test_truncated_fds},
	{"bit_flips", test_bit_flips},
	{"peek", test_peek},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
