/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the wire decoder.  The first input byte chooses how
 * many descriptors "arrived" (and whether MSG_CTRUNC was set); the rest is
 * the message.  Every accepted BATCH must re-encode to the same bytes and
 * decode again to the same items: the decoder accepts only what the
 * encoder can produce.
 *
 * Built with clang -fsanitize=fuzzer when BATON_FUZZ is on; otherwise
 * fuzz_replay.c gives it a main() that replays the seed corpus under ctest.
 */
#include <baton/wire.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct bt_wire_item items[BT_WIRE_MAX_ITEMS];
static struct bt_wire_item again[BT_WIRE_MAX_ITEMS];
static unsigned char out[BT_WIRE_MAX_MSG];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t nfds = data[0] & 0x7f;
	if (data[0] == 0xff)
		nfds = 253;
	int truncated = (data[0] & 0x80) && data[0] != 0xff;
	/* A heap copy of exactly the message, so ASan sees any over-read. */
	size_t len = size - 1;
	unsigned char *msg = malloc(len ? len : 1);
	if (!msg)
		return 0;
	memcpy(msg, data + 1, len);

	struct bt_wire_msg m = {.u.batch.items = items};
	int rc = bt_wire_decode(msg, len, nfds, truncated, &m);
	if (rc == 0 && m.type == BT_WIRE_BATCH) {
		struct bt_wire_batch *b = &m.u.batch;
		if (b->n_lost > b->n_fds || b->n_items == 0)
			abort();
		for (size_t i = 0; i < b->n_items; i++)
			items[i].flags &= ~BT_WIRE_ITEM_LOST;
		long n = bt_wire_encode_batch(out, sizeof(out), b->seq, items, b->n_items);
		if (n != (long)len || memcmp(out, msg, len) != 0)
			abort();
		struct bt_wire_msg m2 = {.u.batch.items = again};
		if (bt_wire_decode(out, (size_t)n, b->n_fds, 0, &m2) != 0)
			abort();
		for (size_t i = 0; i < b->n_items; i++)
			if (again[i].id != items[i].id ||
			    again[i].payload_len != items[i].payload_len ||
			    again[i].peer_len != items[i].peer_len ||
			    memcmp(&again[i].peer, &items[i].peer, items[i].peer_len))
				abort();
	} else if (rc == 0 && m.type == BT_WIRE_ACK) {
		long n = bt_wire_encode_ack(out, sizeof(out), m.seq, &m.u.ack);
		if (n != (long)len || memcmp(out, msg, len) != 0)
			abort();
	} else if (rc != 0 && rc != -EBADMSG && rc != -EPROTONOSUPPORT) {
		abort();
	}
	free(msg);
	return 0;
}
