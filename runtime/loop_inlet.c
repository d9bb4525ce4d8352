/* SPDX-License-Identifier: MIT */
/*
 * A worker loop's inlet: how batches reach it and how it acknowledges
 * them, one implementation per transport, so that loop.c never asks which
 * one it has (the backends only tell a message channel from a ring with a
 * wake-up fd, to wait on the right thing).
 *   thread   the consumer end of an in-memory ring (cfg.queue): its
 *            consuming is the acknowledgement
 *   forked   a channel, acknowledged in shared memory (cfg.channel and
 *            cfg.shm): no syscall
 *   attached a channel, acknowledged with ACK messages on it (cfg.channel
 *            alone: docs/wire.md)
 */
#include "loop_internal.h"

#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

/* --- thread ---------------------------------------------------------------- */

static int none_init(bt_loop_t *loop)
{
	(void)loop;
	return 0;
}

static void none(bt_loop_t *loop)
{
	(void)loop;
}

static void thread_woke(bt_loop_t *loop)
{
	/* The producer sees the consumer awake (bt_queue_idle). */
	bt_queue_awake(loop->cfg.queue);
}

static void thread_ack(bt_loop_t *loop, const struct bt_wire_batch *b)
{
	(void)loop, (void)b; /* items come through bt_queue_consume */
}

static void thread_load(bt_loop_t *loop)
{
	bt_queue_consumer_set_load(loop->cfg.queue, loop->nconns);
}

static void thread_tick(bt_loop_t *loop)
{
	bt__tq_beat(loop->cfg.queue);
}

static int thread_ready(bt_loop_t *loop)
{
	/* Never sleep on published items (the handshake of bt_queue_idle). */
	return !bt_queue_idle(loop->cfg.queue);
}

const struct bt__inlet_ops bt__inlet_thread = {
	.kind = "thread", .init = none_init, .fini = none, .leave = none, .woke = thread_woke,
	.ack = thread_ack, .load = thread_load, .tick = thread_tick, .ready = thread_ready,
};

/* --- forked: shared memory ------------------------------------------------ */

static int forked_init(bt_loop_t *loop)
{
	bt_queue_shm_set_load(loop->cfg.shm, loop->cfg.slot, 0);
	return 0;
}

static void forked_ack(bt_loop_t *loop, const struct bt_wire_batch *b)
{
	bt_queue_ack_batch(loop->cfg.shm, loop->cfg.slot, b);
}

static void forked_load(bt_loop_t *loop)
{
	bt_queue_shm_set_load(loop->cfg.shm, loop->cfg.slot, loop->nconns);
}

static void forked_tick(bt_loop_t *loop)
{
	bt__queue_shm_beat(loop->cfg.shm, loop->cfg.slot);
}

static int never(bt_loop_t *loop)
{
	(void)loop;
	return 0;
}

const struct bt__inlet_ops bt__inlet_forked = {
	.kind = "forked", .init = forked_init, .fini = none, .leave = none, .woke = none,
	.ack = forked_ack, .load = forked_load, .tick = forked_tick, .ready = never,
};

/* --- attached: ACK messages -------------------------------------------------- */

static int send_ack(bt_loop_t *loop, int wait)
{
	if (!loop->ack_due)
		return 0;
	struct bt_wire_ack *a = loop->ack;
	a->fds_total = loop->fds_total;
	a->load = loop->nconns;
	unsigned char buf[BT_WIRE_HDR_SIZE + BT_WIRE_ACK_SIZE + 8 * BT_WIRE_MAX_FDS];
	long len = bt_wire_encode_ack(buf, sizeof(buf), 0, a);
	if (len < 0)
		return bt__log_errno(BT_LOG_ERROR, (int)len, "worker %d: encoding an ACK",
				     loop->cfg.worker_id);
	ssize_t n;
	do
		n = send(bt_fdpass_fd(loop->cfg.channel), buf, (size_t)len,
			 MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0; /* the tick tries again; a later ACK covers this one */
	if (n < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "worker %d: send(ACK)",
				     loop->cfg.worker_id);
	loop->ack_due = 0;
	a->n_lost = 0;
	return 0;
}


/* The ACK of batch b, cumulative with any not sent yet; out now if the
 * channel takes it. */
static void wire_ack(bt_loop_t *loop, const struct bt_wire_batch *b)
{
	struct bt_wire_ack *a = loop->ack;
	if (a->n_lost + b->n_lost > BT_WIRE_MAX_FDS) {
		/* Lost ids cannot wait any longer: wait for room (the
		 * acceptor reads its channels at every wake-up). */
		send_ack(loop, 1);
	}
	for (unsigned i = 0; i < b->n_items && a->n_lost < BT_WIRE_MAX_FDS; i++)
		if (b->items[i].flags & BT_WIRE_ITEM_LOST)
			a->lost[a->n_lost++] = b->items[i].id;
	loop->fds_total += (uint64_t)(b->n_fds - b->n_lost);
	a->seq = b->seq;
	loop->ack_due = 1;
	send_ack(loop, 0);
}

static int wire_init(bt_loop_t *loop)
{
	loop->ack = calloc(1, sizeof(*loop->ack));
	return loop->ack ? 0 : -ENOMEM;
}

static void wire_fini(bt_loop_t *loop)
{
	free(loop->ack);
	loop->ack = NULL;
}

static void wire_leave(bt_loop_t *loop)
{
	if (loop->ack_due)
		send_ack(loop, 1); /* else the acceptor would send them again */
}

static void wire_tick(bt_loop_t *loop)
{
	if (loop->ack_due)
		send_ack(loop, 0); /* one the channel had no room for */
}

const struct bt__inlet_ops bt__inlet_wire = {
	.kind = "attached", .init = wire_init, .fini = wire_fini, .leave = wire_leave,
	.woke = none, .ack = wire_ack, .load = none, .tick = wire_tick, .ready = never,
};
