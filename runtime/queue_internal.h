/* SPDX-License-Identifier: MIT */
/* The queue's producer state, shared by queue.c (process transport) and
 * queue_thread.c (thread transport).  Not part of the public API. */
#ifndef BATON_QUEUE_INTERNAL_H
#define BATON_QUEUE_INTERNAL_H

#include <baton/queue.h>

#include <stdint.h>

#include "internal.h"

struct tq;

/* The shared acknowledgement memory (queue_shm.c): one slot per consumer. */
#define CACHELINE 64

struct lost_entry {
	uint64_t seq;
	uint64_t id;
};

struct slot {
	_Alignas(CACHELINE) _Atomic uint64_t acked_seq;
	_Atomic uint64_t fds_received;
	_Atomic uint64_t lost_head;
	_Atomic uint32_t load;
	_Atomic uint64_t beat; /* the consumer's loop wake-ups (watchdog) */
	_Alignas(CACHELINE) _Atomic uint64_t lost_tail;
	_Alignas(CACHELINE) struct lost_entry lost[];
};

struct bt_queue_shm {
	unsigned slots;
	unsigned cap; /* lost entries per slot */
	size_t slot_size;
	size_t map_size;
	unsigned char *base;
};

static inline struct slot *bt__shm_slot(const bt_queue_shm_t *shm, unsigned i)
{
	return (struct slot *)(shm->base + (size_t)i * shm->slot_size);
}



struct rec {
	uint64_t seq; /* 0 while pending */
	uint64_t id;
	uint64_t accept_ns;
	int fd;
	uint32_t flags;
	uint32_t payload_len;
	socklen_t peer_len;
	unsigned char *ext; /* peer_len bytes of address, then the payload */
	uint64_t pushed_ns;
};

/*
 * The transport behind a producer queue: the same calls, three ways.
 *   bt__queue_thread_ops  an in-memory ring to a thread of this process
 *                         (queue_thread.c)
 *   bt__queue_forked_ops  a channel to a forked process, acknowledged in
 *                         shared memory (queue.c, queue_shm.c)
 *   bt__queue_wire_ops    a channel to an attached process, acknowledged
 *                         with ACK messages (queue.c)
 * The public bt_queue_* calls go through q->ops; the acceptor and the loop
 * never ask which transport a queue has.
 */
struct bt__queue_ops {
	const char *kind; /* "thread", "forked", "attached" */
	void (*destroy)(bt_queue_t *q);
	int (*push)(bt_queue_t *q, const struct bt_wire_item *it);
	/* The pending batch, for the acceptor: a message to send (items,
	 * *msg set; bt_queue_flush_complete follows), or 0 when nothing is
	 * left to send (nothing pending, or published in place). */
	int (*send_prepare)(bt_queue_t *q, struct msghdr **msg);
	int (*flush)(bt_queue_t *q);
	unsigned (*pending)(const bt_queue_t *q);
	unsigned (*inflight)(const bt_queue_t *q);
	uint64_t (*pending_since)(const bt_queue_t *q);
	unsigned (*reap)(bt_queue_t *q, bt_queue_give_fn give, void *ctx);
	unsigned (*take)(bt_queue_t *q, bt_queue_give_fn give, void *ctx, int pending_only);
	uint32_t (*load)(const bt_queue_t *q);
	uint64_t (*beats)(const bt_queue_t *q);
	int (*send_drain)(bt_queue_t *q, unsigned deadline_ms);
	int (*on_ack)(bt_queue_t *q, const struct bt_wire_ack *ack);
	/* Optional: items the consumer has taken that the producer has not
	 * reaped yet, and inflight, from one reading (the control socket's
	 * snapshot, which must add up); NULL: none such, ops->inflight. */
	unsigned (*unreaped)(const bt_queue_t *q, unsigned *inflight);
};

extern const struct bt__queue_ops bt__queue_thread_ops;
extern const struct bt__queue_ops bt__queue_forked_ops;
extern const struct bt__queue_ops bt__queue_wire_ops;

struct bt_queue {
	const struct bt__queue_ops *ops;
	struct bt_queue_config cfg;
	unsigned batch_cap; /* the consumer's HELLO max_batch, 0: none */
	bt_fdpass_t *ch;
	bt_queue_shm_t *shm;
	unsigned slot_idx;
	struct slot *slot;

	struct rec *ring;
	unsigned cap;
	uint64_t head, sent, tail; /* ever-increasing; index = n % cap */
	uint64_t next_seq;
	uint64_t lost_tail; /* producer's copy of slot->lost_tail */
	/* Acknowledgements on the wire (no shm: an attached consumer's ACK
	 * messages, bt_queue_on_ack): the last cumulative seq, the load it
	 * reported, and how many ACKs came (the watchdog's heartbeat).  Lost
	 * items are marked in their records. */
	uint64_t w_acked;
	uint64_t w_acks;
	uint32_t w_load;
	int busy;           /* a send is in flight */
	unsigned busy_n;    /* items in it */

	struct tq *tq; /* thread transport (queue_thread.c), else NULL */

	struct bt_queue_stats st;
	uint64_t bhist[BT__BATCH_BUCKETS]; /* batches by size (bt__batch_bucket) */
	void (*closer)(void *ctx, int fd); /* how acknowledged copies close */
	void *closer_ctx;
	struct bt_wire_item witems[BT_WIRE_MAX_ITEMS];
	int fds[BT_WIRE_MAX_FDS];
	_Alignas(8) unsigned char buf[BT_WIRE_MAX_MSG];
};


/* Thread transport: the same calls, on the in-memory ring. */
/* Take a caller's queue config by its size (docs/abi.md) and check it:
 * 0, -EINVAL, -E2BIG. */
int bt__queue_config_take(struct bt_queue_config *dst, const struct bt_queue_config *cfg);
uint64_t bt__tq_wakes(const bt_queue_t *q);
uint64_t bt__tq_beats(const bt_queue_t *q);

#endif
