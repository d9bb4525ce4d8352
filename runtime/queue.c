/* SPDX-License-Identifier: MIT */
/*
 * The work queue, process transport (baton/queue.h).
 *
 * Producer state is one FIFO ring of records, in three consecutive runs:
 *
 *     head ........ sent ........ tail
 *     | unacknowledged | pending   |
 *
 * Records before `sent` went out in batches with increasing sequence
 * numbers; the producer still holds their descriptors.  Reaping pops from
 * head while the consumer's acknowledged sequence covers them.  A send
 * refused with EAGAIN moves `sent` back over its batch, which is pending
 * again, in order.
 *
 * The shared acknowledgement memory is in queue_shm.c, the config and flush
 * policy names in queue_config.c, the thread transport in queue_thread.c.
 */
#include <baton/queue.h>

#include "internal.h"
#include "queue_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t shm_beats(const bt_queue_t *q)
{
	return atomic_load_explicit(&q->slot->beat, memory_order_relaxed);
}

static uint64_t wire_beats(const bt_queue_t *q)
{
	return q->w_acks; /* an attached worker's heartbeat: its ACKs */
}

/* --- producer ----------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int bt_queue_create(bt_queue_t **out, const struct bt_queue_config *cfg,
		    bt_fdpass_t *ch, bt_queue_shm_t *shm, unsigned slot)
{
	if (!out || !cfg || !ch || (shm && slot >= shm->slots))
		return -EINVAL;
	struct bt_queue_config c;
	int rc = bt__queue_config_take(&c, cfg);
	if (rc < 0)
		return rc;
	cfg = &c;
	if (shm && cfg->max_inflight > shm->cap)
		return -EINVAL;
	bt_queue_t *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->ring = calloc(cfg->max_inflight, sizeof(*q->ring));
	if (!q->ring) {
		free(q);
		return -ENOMEM;
	}
	q->cfg = *cfg;
	q->cap = cfg->max_inflight;
	q->ch = ch;
	q->shm = shm;
	q->slot_idx = slot;
	q->ops = shm ? &bt__queue_forked_ops : &bt__queue_wire_ops;
	if (!shm) { /* acknowledged on the wire (bt_queue_on_ack) */
		q->next_seq = 1;
		*out = q;
		return 0;
	}
	q->slot = bt__shm_slot(shm, slot);
	/* Sequence numbers continue from what the slot last acknowledged, so
	 * a slot that was not reset cannot acknowledge our new batches. */
	q->next_seq = atomic_load_explicit(&q->slot->acked_seq, memory_order_acquire) + 1;
	q->lost_tail = atomic_load_explicit(&q->slot->lost_head, memory_order_acquire);
	*out = q;
	return 0;
}

void bt__queue_set_closer(struct bt_queue *q, void (*fn)(void *ctx, int fd), void *ctx)
{
	q->closer = fn;
	q->closer_ctx = ctx;
}

static void close_copy(bt_queue_t *q, int fd)
{
	if (q->closer)
		q->closer(q->closer_ctx, fd);
	else
		bt__close(fd);
}

static struct rec *at(const bt_queue_t *q, uint64_t n)
{
	return &q->ring[n % q->cap];
}

static void rec_free(struct rec *r)
{
	free(r->ext);
	r->ext = NULL;
}

static void ch_destroy(bt_queue_t *q)
{
	for (uint64_t n = q->head; n != q->tail; n++) {
		struct rec *r = at(q, n);
		if (r->flags & BT_WIRE_ITEM_FD)
			bt__close(r->fd);
		rec_free(r);
	}
	bt_fdpass_close(q->ch);
	free(q->ring);
	free(q);
}

static int ch_push(bt_queue_t *q, const struct bt_wire_item *it)
{
	if ((it->flags & ~BT_WIRE_ITEM_WIRE_MASK) ||
	    ((it->flags & BT_WIRE_ITEM_FD) && it->fd < 0))
		return -EINVAL;
	if (it->peer_len && it->peer.ss_family != AF_INET &&
	    it->peer.ss_family != AF_INET6 && it->peer.ss_family != AF_UNIX)
		return -EINVAL;
	if (it->peer_len > sizeof(struct sockaddr_storage) ||
	    (it->payload_len && !it->payload) ||
	    it->payload_len > BT_WIRE_MAX_MSG - BT_WIRE_HDR_SIZE - BT_WIRE_ITEM_SIZE)
		return -EINVAL;
	if (q->tail - q->head >= q->cap)
		return -EAGAIN;

	struct rec *r = at(q, q->tail);
	memset(r, 0, sizeof(*r));
	if (it->peer_len || it->payload_len) {
		r->ext = malloc((size_t)it->peer_len + it->payload_len);
		if (!r->ext)
			return -ENOMEM;
		memcpy(r->ext, &it->peer, it->peer_len);
		if (it->payload_len)
			memcpy(r->ext + it->peer_len, it->payload, it->payload_len);
	}
	r->id = it->id;
	r->accept_ns = it->accept_ns;
	r->fd = (it->flags & BT_WIRE_ITEM_FD) ? it->fd : -1;
	r->flags = it->flags;
	r->payload_len = it->payload_len;
	r->peer_len = it->peer_len;
	if (q->cfg.flush != BT_FLUSH_SIZE || q->tail == q->sent)
		r->pushed_ns = now_ns();
	q->tail++;
	q->st.pushed++;
	return q->tail - q->sent >= q->cfg.batch ? 1 : 0;
}

static unsigned ch_pending(const bt_queue_t *q)
{
	return (unsigned)(q->tail - q->sent);
}

static unsigned ch_inflight(const bt_queue_t *q)
{
	return (unsigned)(q->tail - q->head);
}

static uint64_t ch_pending_since(const bt_queue_t *q)
{
	if (q->tail == q->sent)
		return 0;
	return at(q, q->sent)->pushed_ns;
}

/* Fill the wire view of a record. */
static void to_item(const struct rec *r, struct bt_wire_item *it)
{
	it->id = r->id;
	it->accept_ns = r->accept_ns;
	it->flags = r->flags & BT_WIRE_ITEM_WIRE_MASK;
	it->fd = r->fd;
	it->peer_len = r->peer_len;
	if (r->peer_len)
		memcpy(&it->peer, r->ext, r->peer_len);
	it->payload_len = r->payload_len;
	it->payload = r->payload_len ? r->ext + r->peer_len : NULL;
}

static int ch_send_prepare(bt_queue_t *q, struct msghdr **msg)
{
	if (q->busy)
		return -EBUSY;
	unsigned n = bt_queue_pending(q);
	if (n == 0)
		return 0;
	if (n > q->cfg.batch)
		n = q->cfg.batch;

	/* Payloads can make n items too large for one message: send fewer. */
	size_t nfds = 0, bytes = BT_WIRE_HDR_SIZE;
	unsigned k = 0;
	for (; k < n; k++) {
		const struct rec *r = at(q, q->sent + k);
		size_t add = BT_WIRE_ITEM_SIZE + r->payload_len;
		if (r->peer_len && ((const struct sockaddr *)r->ext)->sa_family == AF_UNIX)
			add += r->peer_len - sizeof(sa_family_t);
		if (bytes + add > BT_WIRE_MAX_MSG)
			break;
		bytes += add;
		to_item(r, &q->witems[k]);
		if (r->flags & BT_WIRE_ITEM_FD)
			q->fds[nfds++] = r->fd;
	}
	n = k;
	uint64_t seq = q->next_seq;
	long len = bt_wire_encode_batch(q->buf, sizeof(q->buf), seq, q->witems, n);
	if (len < 0)
		return bt__log_errno(BT_LOG_ERROR, (int)len, "encoding a batch of %u items", n);
	int rc = bt_fdpass_tx_prepare(q->ch, q->buf, (size_t)len, q->fds, nfds, msg);
	if (rc < 0)
		return rc;
	for (unsigned i = 0; i < n; i++)
		at(q, q->sent + i)->seq = seq;
	q->next_seq++;
	q->sent += n;
	q->busy = 1;
	q->busy_n = n;
	return (int)n;
}

/* Put the batch in flight back at the front of the pending run. */
static void unsend(bt_queue_t *q)
{
	q->sent -= q->busy_n;
	for (uint64_t n = q->sent; n != q->sent + q->busy_n; n++)
		at(q, n)->seq = 0;
	q->next_seq--;
}

int bt_queue_flush_complete(bt_queue_t *q, long res)
{
	if (!q || !q->busy || !q->ch)
		return -EINVAL;
	int rc = bt_fdpass_tx_complete(q->ch, res);
	unsigned n = q->busy_n;
	if (rc == 0) {
		q->st.batches++;
		q->st.items_sent += n;
		q->bhist[bt__batch_bucket(n)]++;
		if (q->cfg.fire_and_forget) {
			/* Nothing is held in this mode, so the batch is at head. */
			for (unsigned i = 0; i < n; i++) {
				struct rec *r = at(q, q->head);
				if (r->flags & BT_WIRE_ITEM_FD)
					close_copy(q, r->fd);
				rec_free(r);
				q->head++;
			}
		}
	} else if (rc == -EAGAIN || rc == -ETOOMANYREFS || rc == -ENOBUFS || rc == -EINTR) {
		unsend(q);
		if (rc == -ETOOMANYREFS)
			q->st.toomanyrefs++;
		else
			q->st.full++;
		if (rc != -ETOOMANYREFS)
			rc = -EAGAIN;
	} else {
		/* The consumer is gone or the channel broken: the batch counts
		 * as unacknowledged, for bt_queue_take. */
	}
	q->busy = 0;
	q->busy_n = 0;
	return rc;
}

static int ch_flush(bt_queue_t *q)
{
	struct msghdr *msg;
	int n = ch_send_prepare(q, &msg);
	if (n <= 0)
		return n;
	ssize_t r;
	do
		r = sendmsg(bt_fdpass_fd(q->ch), msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	int rc = bt_queue_flush_complete(q, r < 0 ? -errno : (long)r);
	return rc < 0 ? rc : n;
}

static unsigned ch_reap(bt_queue_t *q, bt_queue_give_fn give, void *ctx)
{
	if (q->head == q->sent)
		return 0;
	uint64_t acked = q->shm ? atomic_load_explicit(&q->slot->acked_seq, memory_order_acquire)
				: q->w_acked;
	if (at(q, q->head)->seq > acked)
		return 0;
	uint64_t lost_head = q->shm ? atomic_load_explicit(&q->slot->lost_head, memory_order_acquire)
				    : 0;
	unsigned released = 0;
	while (q->head != q->sent) {
		/* The batch in flight has no acknowledgement yet, whatever a
		 * stale slot says. */
		if (q->busy && q->head >= q->sent - q->busy_n)
			break;
		struct rec *r = at(q, q->head);
		if (r->seq > acked)
			break;
		int lost = (r->flags & BT_WIRE_ITEM_LOST) != 0; /* said by an ACK */
		if (q->shm && q->lost_tail != lost_head) {
			const struct lost_entry *e = &q->slot->lost[q->lost_tail % q->shm->cap];
			if (e->seq == r->seq && e->id == r->id) {
				lost = 1;
				q->lost_tail++;
			}
		}
		if (lost && give) {
			struct bt_wire_item it;
			memset(&it, 0, sizeof(it));
			to_item(r, &it);
			give(ctx, &it);
			q->st.lost++;
		} else {
			if (r->flags & BT_WIRE_ITEM_FD)
				close_copy(q, r->fd);
			q->st.acked++;
		}
		rec_free(r);
		q->head++;
		released++;
	}
	if (q->shm)
		atomic_store_explicit(&q->slot->lost_tail, q->lost_tail, memory_order_release);
	return released;
}

static unsigned ch_take_all(bt_queue_t *q, bt_queue_give_fn give, void *ctx)
{
	/* A send in flight still refers to these descriptors. */
	if (q->busy)
		return 0;
	unsigned n = 0;
	while (q->head != q->tail) {
		struct rec *r = at(q, q->head);
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		to_item(r, &it);
		give(ctx, &it);
		rec_free(r);
		q->head++;
		n++;
	}
	q->sent = q->tail;
	q->st.taken += n;
	return n;
}

static unsigned ch_take(bt_queue_t *q, bt_queue_give_fn give, void *ctx, int pending_only)
{
	if (!pending_only)
		return ch_take_all(q, give, ctx);
	if (q->busy)
		return 0;
	unsigned n = 0;
	for (uint64_t i = q->sent; i != q->tail; i++) {
		struct rec *r = at(q, i);
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		to_item(r, &it);
		give(ctx, &it);
		rec_free(r);
		n++;
	}
	q->tail = q->sent;
	q->st.taken += n;
	return n;
}

static uint32_t shm_load(const bt_queue_t *q)
{
	return atomic_load_explicit(&q->slot->load, memory_order_relaxed);
}

static uint32_t wire_load(const bt_queue_t *q)
{
	return q->w_load;
}

static int shm_on_ack(bt_queue_t *q, const struct bt_wire_ack *ack)
{
	(void)q, (void)ack;
	return -EINVAL; /* acknowledged in shared memory */
}

static int wire_on_ack(bt_queue_t *q, const struct bt_wire_ack *ack)
{
	/* Only batches that went out can be acknowledged: not the one whose
	 * send is in flight, nor a seq never given. */
	uint64_t top = q->next_seq - 1 - (q->busy ? 1 : 0);
	if (ack->seq > top || ack->n_lost > BT_WIRE_MAX_FDS)
		return -EPROTO;
	if (ack->seq < q->w_acked && ack->n_lost)
		return -EPROTO; /* lost ids of batches already settled */
	/* Each lost id names an item with a descriptor of a batch this ACK
	 * settles, once: all checked before any is marked. */
	uint64_t pos[BT_WIRE_MAX_FDS];
	for (uint32_t k = 0; k < ack->n_lost; k++) {
		uint64_t n = q->head;
		for (; n != q->sent; n++) {
			struct rec *r = at(q, n);
			if (r->seq > q->w_acked && r->seq <= ack->seq && r->id == ack->lost[k] &&
			    (r->flags & BT_WIRE_ITEM_FD) && !(r->flags & BT_WIRE_ITEM_LOST))
				break;
		}
		if (n == q->sent)
			return -EPROTO;
		for (uint32_t j = 0; j < k; j++)
			if (pos[j] == n)
				return -EPROTO;
		pos[k] = n;
	}
	for (uint32_t k = 0; k < ack->n_lost; k++)
		at(q, pos[k])->flags |= BT_WIRE_ITEM_LOST;
	if (ack->seq > q->w_acked)
		q->w_acked = ack->seq;
	q->w_load = ack->load;
	q->w_acks++;
	return 0;
}

unsigned bt__queue_unreaped(const struct bt_queue *q, unsigned *inflight)
{
	if (q->ops->unreaped)
		return q->ops->unreaped(q, inflight);
	*inflight = q->ops->inflight(q);
	return 0;
}

void bt__queue_cap_batch(struct bt_queue *q, unsigned n)
{
	q->batch_cap = n;
	if (n && n < q->cfg.batch)
		q->cfg.batch = n;
}

void bt__queue_set_policy(struct bt_queue *q, unsigned batch, int flush, unsigned delay_us)
{
	q->cfg.batch = q->batch_cap && q->batch_cap < batch ? q->batch_cap : batch;
	q->cfg.flush = (enum bt_flush)flush;
	q->cfg.delay_us = delay_us;
}

int bt__queue_flush_policy(const struct bt_queue *q)
{
	return q->cfg.flush;
}

uint64_t bt__queue_delay_ns(const struct bt_queue *q)
{
	return (uint64_t)q->cfg.delay_us * 1000ull;
}

bt_fdpass_t *bt_queue_channel(bt_queue_t *q)
{
	return q ? q->ch : NULL;
}

static int ch_send_drain(bt_queue_t *q, unsigned deadline_ms)
{
	unsigned char buf[64];
	struct bt_wire_drain d = {.deadline_ms = deadline_ms};
	long len = bt_wire_encode_drain(buf, sizeof(buf), 0, &d);
	if (len < 0)
		return (int)len;
	/* Non-blocking whatever the socket: a full channel is retried. */
	ssize_t n;
	do
		n = send(bt_fdpass_fd(q->ch), buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == len ? 0 : -EIO;
}

void bt_queue_get_stats_sized(const bt_queue_t *q, struct bt_queue_stats *out, size_t size)
{
	struct bt_queue_stats st = q->st;
	st.size = sizeof(st);
	bt__sized_out(out, size, &st, sizeof(st));
}

#define CHANNEL_OPS(fork_or_wire)                                                          \
	.destroy = ch_destroy, .push = ch_push, .send_prepare = ch_send_prepare,            \
	.flush = ch_flush, .pending = ch_pending, .inflight = ch_inflight,                   \
	.pending_since = ch_pending_since, .reap = ch_reap, .take = ch_take,                 \
	.send_drain = ch_send_drain, .load = fork_or_wire##_load,                            \
	.beats = fork_or_wire##_beats, .on_ack = fork_or_wire##_on_ack

const struct bt__queue_ops bt__queue_forked_ops = {.kind = "forked", CHANNEL_OPS(shm)};
const struct bt__queue_ops bt__queue_wire_ops = {.kind = "attached", CHANNEL_OPS(wire)};

/* --- the public calls, on any transport -------------------------------------- */

void bt_queue_destroy(bt_queue_t *q)
{
	if (q)
		q->ops->destroy(q);
}

int bt_queue_push(bt_queue_t *q, const struct bt_wire_item *it)
{
	return q && it ? q->ops->push(q, it) : -EINVAL;
}

int bt_queue_flush_prepare(bt_queue_t *q, struct msghdr **msg)
{
	if (!q || !msg)
		return -EINVAL;
	if (!q->ch)
		return -EOPNOTSUPP; /* in place: bt_queue_flush */
	return q->ops->send_prepare(q, msg);
}

int bt__queue_send_prepare(bt_queue_t *q, struct msghdr **msg)
{
	return q->ops->send_prepare(q, msg);
}

int bt_queue_flush(bt_queue_t *q)
{
	return q ? q->ops->flush(q) : -EINVAL;
}

unsigned bt_queue_pending(const bt_queue_t *q)
{
	return q->ops->pending(q);
}

unsigned bt_queue_inflight(const bt_queue_t *q)
{
	return q->ops->inflight(q);
}

uint64_t bt_queue_pending_since(const bt_queue_t *q)
{
	return q->ops->pending_since(q);
}

unsigned bt_queue_reap(bt_queue_t *q, bt_queue_give_fn give, void *ctx)
{
	return q ? q->ops->reap(q, give, ctx) : 0;
}

unsigned bt_queue_take(bt_queue_t *q, bt_queue_give_fn give, void *ctx)
{
	return q && give ? q->ops->take(q, give, ctx, 0) : 0;
}

unsigned bt_queue_take_pending(bt_queue_t *q, bt_queue_give_fn give, void *ctx)
{
	return q && give ? q->ops->take(q, give, ctx, 1) : 0;
}

uint32_t bt_queue_consumer_load(const bt_queue_t *q)
{
	return q->ops->load(q);
}

uint64_t bt__queue_beats(const bt_queue_t *q)
{
	return q->ops->beats(q);
}

int bt_queue_on_ack(bt_queue_t *q, const struct bt_wire_ack *ack)
{
	return q && ack ? q->ops->on_ack(q, ack) : -EINVAL;
}

int bt_queue_send_drain(bt_queue_t *q, unsigned deadline_ms)
{
	return q ? q->ops->send_drain(q, deadline_ms) : -EINVAL;
}
