/* SPDX-License-Identifier: MIT */
/*
 * A worker loop's inlet (bt_queue_inlet_t, baton/queue.h): how batches
 * reach it and how it acknowledges them, one implementation per
 * transport, so that loop.c never asks which one it has (the backends only
 * tell a message channel from a ring with a wake-up fd, to wait on the
 * right thing).
 *   thread   the consumer end of an in-memory ring: its consuming is the
 *            acknowledgement
 *   forked   a channel, acknowledged in shared memory: no syscall
 *   attached a channel, acknowledged with ACK messages on it
 *            (docs/wire.md)
 */
#include "loop_internal.h"

#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- thread ---------------------------------------------------------------- */

static int none_init(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop, (void)in;
	return 0;
}

static void none(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop, (void)in;
}

static int never(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop, (void)in;
	return 0;
}

static void thread_woke(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop; /* the producer sees the consumer awake (bt_queue_idle) */
	bt_queue_awake(in->q);
}

static void thread_ack(bt_loop_t *loop, bt_queue_inlet_t *in, const struct bt_wire_batch *b)
{
	(void)loop, (void)in, (void)b; /* items come through bt_queue_consume */
}

static void thread_load(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	bt_queue_consumer_set_load(in->q, loop->nconns);
}

static void thread_tick(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop;
	bt__tq_beat(in->q);
}

static int thread_ready(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop; /* never sleep on published items (bt_queue_idle's handshake) */
	return !bt_queue_idle(in->q);
}

static const struct bt__inlet_ops thread_ops = {
	.kind = "thread", .init = none_init, .leave = none, .woke = thread_woke,
	.ack = thread_ack, .load = thread_load, .tick = thread_tick, .ready = thread_ready,
	.owed = never,
};

/* --- forked: shared memory ------------------------------------------------ */

static int forked_init(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop;
	bt_queue_shm_set_load(in->shm, in->slot, 0);
	return 0;
}

static void forked_ack(bt_loop_t *loop, bt_queue_inlet_t *in, const struct bt_wire_batch *b)
{
	(void)loop;
	bt_queue_ack_batch(in->shm, in->slot, b);
}

static void forked_load(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	bt_queue_shm_set_load(in->shm, in->slot, loop->nconns);
}

static void forked_tick(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop;
	bt__queue_shm_beat(in->shm, in->slot);
}

static const struct bt__inlet_ops forked_ops = {
	.kind = "forked", .init = forked_init, .leave = none, .woke = none,
	.ack = forked_ack, .load = forked_load, .tick = forked_tick, .ready = never,
	.owed = never,
};

/* --- attached: ACK messages -------------------------------------------------- */

/* While it holds connections, an attached loop says so at least this
 * often: the acceptor's watchdog reads ACKs as its heartbeat.  A changed
 * load (for least-loaded dispatch) goes out after LOAD_NS without an
 * ACK: under load every batch's ACK carries it anyway, and an ACK per
 * wake-up would cost a syscall each. */
#define HEARTBEAT_NS 1000000000ull
#define LOAD_NS 100000000ull

static int send_ack(bt_loop_t *loop, bt_queue_inlet_t *in, int wait)
{
	struct bt_wire_ack *a = in->ack;
	a->fds_total = in->fds_total;
	a->load = loop->nconns;
	unsigned char buf[BT_WIRE_HDR_SIZE + BT_WIRE_ACK_SIZE + 8 * BT_WIRE_MAX_FDS];
	long len = bt_wire_encode_ack(buf, sizeof(buf), 0, a);
	if (len < 0)
		return bt__log_errno(BT_LOG_ERROR, (int)len, "worker %d: encoding an ACK",
				     loop->cfg.worker_id);
	ssize_t n;
	do
		n = send(bt_fdpass_fd(in->ch), buf, (size_t)len,
			 MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0; /* the tick tries again; a later ACK covers this one */
	if (n < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "worker %d: send(ACK)",
				     loop->cfg.worker_id);
	in->ack_due = 0;
	in->ack_sent_ns = loop->now_ns;
	in->load_sent = a->load;
	a->n_lost = 0;
	return 0;
}

/* The ACK of batch b, cumulative with any not sent yet; out now if the
 * channel takes it. */
static void wire_ack(bt_loop_t *loop, bt_queue_inlet_t *in, const struct bt_wire_batch *b)
{
	struct bt_wire_ack *a = in->ack;
	if (a->n_lost + b->n_lost > BT_WIRE_MAX_FDS) {
		/* Lost ids cannot wait any longer: wait for room (the
		 * acceptor reads its channels at every wake-up). */
		send_ack(loop, in, 1);
	}
	for (unsigned i = 0; i < b->n_items && a->n_lost < BT_WIRE_MAX_FDS; i++)
		if (b->items[i].flags & BT_WIRE_ITEM_LOST)
			a->lost[a->n_lost++] = b->items[i].id;
	in->fds_total += (uint64_t)(b->n_fds - b->n_lost);
	a->seq = b->seq;
	in->ack_due = 1;
	send_ack(loop, in, 0);
}

static void wire_leave(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	if (in->ack_due && !in->eof)
		send_ack(loop, in, 1); /* else the acceptor would send them again */
}

/* An ACK the channel had no room for goes now.  Otherwise the last ACK
 * again (it settles nothing new: docs/wire.md): once a second while the
 * loop holds connections, and 100 ms after its load changed. */
static void wire_tick(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	uint64_t quiet = loop->now_ns - in->ack_sent_ns;
	if (!in->ack_due && in->ack->seq &&
	    ((in->load_sent != loop->nconns && quiet >= LOAD_NS) ||
	     (loop->nconns && quiet >= HEARTBEAT_NS)))
		in->ack_due = 1;
	if (in->ack_due && !in->eof)
		send_ack(loop, in, 0);
}

/* An ACK that found the channel full, or a load not yet told. */
static int wire_owed(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	if (in->eof)
		return 0;
	return in->ack_due || (in->ack->seq && in->load_sent != loop->nconns);
}

static const struct bt__inlet_ops wire_ops = {
	.kind = "attached", .init = none_init, .leave = wire_leave,
	.woke = none, .ack = wire_ack, .load = none, .tick = wire_tick, .ready = never,
	.owed = wire_owed,
};

/* --- the handles ------------------------------------------------------------ */

static int make(bt_queue_inlet_t **out, const struct bt__inlet_ops *ops)
{
	bt_queue_inlet_t *in = calloc(1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	in->ops = ops;
	*out = in;
	return 0;
}

int bt_queue_inlet_thread(bt_queue_inlet_t **out, bt_queue_t *q)
{
	if (!out || !q || !bt_queue_is_thread(q))
		return -EINVAL;
	int rc = make(out, &thread_ops);
	if (rc == 0)
		(*out)->q = q;
	return rc;
}

int bt_queue_inlet_forked(bt_queue_inlet_t **out, bt_fdpass_t *ch, bt_queue_shm_t *shm,
			  unsigned slot)
{
	if (!out || !ch || !shm)
		return -EINVAL;
	int rc = make(out, &forked_ops);
	if (rc == 0) {
		(*out)->ch = ch;
		(*out)->shm = shm;
		(*out)->slot = slot;
	}
	return rc;
}

int bt_queue_inlet_wire(bt_queue_inlet_t **out, bt_fdpass_t *ch)
{
	if (!out || !ch)
		return -EINVAL;
	struct bt_wire_ack *ack = calloc(1, sizeof(*ack));
	if (!ack)
		return -ENOMEM;
	int rc = make(out, &wire_ops);
	if (rc < 0) {
		free(ack);
		return rc;
	}
	(*out)->ch = ch;
	(*out)->ack = ack;
	return 0;
}

int bt_queue_inlet_attach(bt_queue_inlet_t **out, const char *addr, unsigned worker_id,
			  unsigned max_batch)
{
	if (!out || !addr || max_batch > BT_WIRE_MAX_FDS)
		return -EINVAL;
	int fd = bt_fdpass_connect(addr, 0);
	if (fd < 0)
		return fd;
	bt_fdpass_t *ch;
	int rc = bt_fdpass_open(&ch, fd);
	if (rc < 0) {
		bt__close(fd);
		return rc;
	}
	struct bt_wire_hello h = {.worker_id = worker_id, .pid = (uint32_t)getpid(),
				  .version = BT_WIRE_VERSION, .max_batch = max_batch};
	unsigned char buf[BT_WIRE_HDR_SIZE + BT_WIRE_HELLO_SIZE];
	long len = bt_wire_encode_hello(buf, sizeof(buf), 0, &h);
	rc = len < 0 ? (int)len : bt_fdpass_send(ch, buf, (size_t)len, NULL, 0);
	if (rc == 0)
		rc = bt_queue_inlet_wire(out, ch);
	if (rc < 0)
		bt_fdpass_close(ch);
	return rc;
}

void bt_queue_inlet_destroy(bt_queue_inlet_t *in)
{
	if (!in)
		return;
	if (in->ch)
		bt_fdpass_close(in->ch);
	free(in->ack);
	free(in);
}

const char *bt_queue_inlet_kind(const bt_queue_inlet_t *in)
{
	return in ? in->ops->kind : "none";
}
