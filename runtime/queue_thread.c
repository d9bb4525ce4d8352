/* SPDX-License-Identifier: MIT */
/*
 * The work queue, thread transport: the consumer is a thread of this
 * process, so no descriptor is passed and none is held back: an item's fd
 * simply changes hands through a bounded single-producer single-consumer
 * ring of item slots.
 *
 *     head ............ tail ............ ptail
 *     | taken by consumer | published      | pending (producer only)
 *
 * Memory order:
 *  - The producer writes slots [tail, ptail) with plain stores, then
 *    publishes them with a release store of tail (the flush); the consumer
 *    reads tail with acquire before reading those slots.
 *  - The consumer copies slots out, then releases them with a release store
 *    of head; the producer reads head with acquire before reusing a slot.
 *  - Sleeping (Dekker's pattern, both sides sequentially consistent): the
 *    consumer stores sleeping = 1 and then loads tail; the producer stores
 *    tail and then exchanges sleeping with 0.  At least one of them sees
 *    the other's store: either the consumer finds the items and does not
 *    sleep, or the producer sees it asleep and writes the eventfd.  A wake
 *    costs a syscall only when the consumer really is about to sleep.
 *
 * Back-pressure: a full ring refuses the push (-EAGAIN); the acceptor then
 * gives the connection to another worker.
 *
 * Direct descriptors (internal.h, ev.h): an item flagged BT__ITEM_DIRECT
 * carries a slot of the producer's ring.  The flush passes each such slot
 * to the consumer's ring (the producer's emitter: IORING_MSG_SEND_FD) and
 * publishes tail as usual; the consumer's ring gets one completion per
 * item, which names the item's sequence number and the slot it landed in
 * (bt__tq_direct_arrived).  The consumer takes items in order, and stops
 * at a direct item whose completion has not come yet; it may sleep there,
 * since that completion wakes it (no eventfd write for such a batch).
 * A send that fails leaves the producer's slot open: the item goes back to
 * the producer (bt__tq_direct_failed), which tells the consumer to pass it
 * over.  Once flushed, a direct item is the consumer's for good: if the
 * consumer ends without taking it, it goes with the consumer's ring.
 */
#include "queue_internal.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define CACHELINE 64

struct tslot {
	uint64_t id;
	uint64_t accept_ns;
	uint64_t pushed_ns;
	int fd;
	uint32_t flags;
	uint32_t payload_len;
	char *payload; /* a copy, freed by the consumer's next consume */
};

struct tq {
	unsigned cap; /* a power of two */
	struct tslot *slots;
	int efd;
	uint64_t ptail;     /* producer only */
	uint64_t last_head; /* producer only: for reap's count */
	_Alignas(CACHELINE) _Atomic uint64_t tail;
	_Alignas(CACHELINE) _Atomic uint64_t head;
	_Alignas(CACHELINE) _Atomic int sleeping;
	_Atomic uint32_t load;
	_Atomic uint64_t beat;  /* the consumer's loop wake-ups (watchdog) */
	_Atomic uint32_t drain_ms;
	_Atomic int drain;
	_Atomic uint64_t wakes; /* eventfd writes, for the counters */
	_Atomic int signaled;   /* the eventfd was written since its last reset */
	/* consumer only: payloads handed out by the last consume */
	char **given;
	size_t ngiven, capgiven;
	/* Direct descriptors.  Producer only: the emitter; per slot, the
	 * send failed and the item went back (nfail: such slots head has not
	 * passed). */
	bt__direct_emit_fn emit;
	void *emit_ctx;
	unsigned emit_idx;
	uint8_t *pfail;
	unsigned nfail;
	/* The consumer's ring (a duplicate: ours to close) and table size,
	 * published once by the consumer (-1: not yet). */
	_Atomic int ring_fd;
	_Atomic unsigned nfiles;
	/* Consumer only: per slot, where its descriptor arrived: table slot
	 * + 1, ARR_SKIP (passed over), 0 (not yet). */
	int32_t *arrived;
};

#define ARR_SKIP (-1)

int bt_queue_create_thread(bt_queue_t **out, const struct bt_queue_config *cfg)
{
	if (!out || !cfg)
		return -EINVAL;
	struct bt_queue_config c;
	int rc = bt__queue_config_take(&c, cfg);
	if (rc < 0)
		return rc;
	cfg = &c;
	if (cfg->max_inflight > (1u << 20))
		return -EINVAL;
	bt_queue_t *q = calloc(1, sizeof(*q));
	struct tq *t = calloc(1, sizeof(*t));
	unsigned cap = 1;
	while (cap < cfg->max_inflight)
		cap <<= 1;
	if (t)
		t->slots = calloc(cap, sizeof(*t->slots));
	if (!q || !t || !t->slots) {
		if (t)
			free(t->slots);
		free(t);
		free(q);
		return -ENOMEM;
	}
	t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->efd < 0) {
		int err = -errno;
		free(t->slots);
		free(t);
		free(q);
		return bt__log_errno(BT_LOG_ERROR, err, "eventfd");
	}
	t->cap = cap;
	atomic_init(&t->ring_fd, -1);
	q->ops = &bt__queue_thread_ops;
	q->cfg = *cfg;
	q->tq = t;
	*out = q;
	return 0;
}

int bt_queue_is_thread(const bt_queue_t *q)
{
	return q && q->ops == &bt__queue_thread_ops;
}

static void tq_destroy(bt_queue_t *q)
{
	struct tq *t = q->tq;
	uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
	for (uint64_t n = head; n != t->ptail; n++) {
		struct tslot *s = &t->slots[n & (t->cap - 1)];
		/* A direct item's slot went with its ring (the producer's or
		 * the consumer's): it is no descriptor of ours. */
		if ((s->flags & BT_WIRE_ITEM_FD) && !(s->flags & BT__ITEM_DIRECT))
			bt__close(s->fd);
		free(s->payload);
	}
	for (size_t i = 0; i < t->ngiven; i++)
		free(t->given[i]);
	free(t->given);
	int rfd = atomic_load_explicit(&t->ring_fd, memory_order_acquire);
	if (rfd >= 0)
		bt__close(rfd);
	free(t->pfail);
	free(t->arrived);
	close(t->efd);
	free(t->slots);
	free(t);
	free(q);
}

static unsigned tq_pending(const bt_queue_t *q);

static int tq_push(bt_queue_t *q, const struct bt_wire_item *it)
{
	struct tq *t = q->tq;
	uint32_t allowed = BT_WIRE_ITEM_WIRE_MASK | (t->emit ? BT__ITEM_DIRECT : 0);
	if ((it->flags & ~allowed) || ((it->flags & BT_WIRE_ITEM_FD) && it->fd < 0))
		return -EINVAL;
	if (it->flags & BT__ITEM_DIRECT) {
		int room;
		if (!bt__tq_direct_ready(q, &room))
			return -EXDEV; /* the consumer's ring is not known yet */
		if (!room)
			return -ENOSPC;
	}
	/* Peer addresses do not travel through this ring (yet). */
	if (it->peer_len || (it->payload_len && !it->payload) ||
	    it->payload_len > BT_WIRE_MAX_MSG)
		return -EINVAL;
	uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
	if (t->ptail - head >= t->cap || t->ptail - head >= q->cfg.max_inflight)
		return -EAGAIN;
	struct tslot *s = &t->slots[t->ptail & (t->cap - 1)];
	s->payload = NULL;
	s->payload_len = 0;
	if (it->payload_len) {
		s->payload = malloc(it->payload_len);
		if (!s->payload)
			return -ENOMEM;
		memcpy(s->payload, it->payload, it->payload_len);
		s->payload_len = it->payload_len;
	}
	s->id = it->id;
	s->accept_ns = it->accept_ns;
	s->fd = (it->flags & BT_WIRE_ITEM_FD) ? it->fd : -1;
	s->flags = it->flags;
	s->pushed_ns = (q->cfg.flush != BT_FLUSH_SIZE ||
			t->ptail == atomic_load_explicit(&t->tail, memory_order_relaxed))
			       ? bt__now_ns()
			       : 0;
	t->ptail++;
	q->st.pushed++;
	return tq_pending(q) >= q->cfg.batch ? 1 : 0;
}

static void wake(struct tq *t)
{
	/* Pairs with the consumer's store of sleeping and load of tail in
	 * bt_queue_idle: see the header comment. */
	if (atomic_exchange_explicit(&t->sleeping, 0, memory_order_seq_cst)) {
		uint64_t one = 1;
		ssize_t n = write(t->efd, &one, sizeof(one));
		(void)n; /* EAGAIN: the counter is already non-zero, it will wake */
		/* After the write: a consumer that sees the flag finds the
		 * counter to reset (a level-triggered waiter must not spin). */
		atomic_store_explicit(&t->signaled, 1, memory_order_release);
		atomic_fetch_add_explicit(&t->wakes, 1, memory_order_relaxed);
	}
}

static int tq_flush(bt_queue_t *q)
{
	struct tq *t = q->tq;
	uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
	uint64_t upto = t->ptail;
	int regular = 0;
	if (t->emit) {
		int rfd = atomic_load_explicit(&t->ring_fd, memory_order_acquire);
		for (uint64_t i = tail; i != t->ptail; i++) {
			struct tslot *s = &t->slots[i & (t->cap - 1)];
			if (!(s->flags & BT__ITEM_DIRECT)) {
				regular = 1;
				continue;
			}
			/* No SQE even after a submission: the rest stays pending,
			 * for the next flush. */
			if (t->emit(t->emit_ctx, t->emit_idx, rfd, s->fd, i) < 0) {
				upto = i;
				break;
			}
		}
	} else {
		regular = 1;
	}
	unsigned n = (unsigned)(upto - tail);
	if (n == 0)
		return 0;
	atomic_store_explicit(&t->tail, upto, memory_order_seq_cst);
	/* A direct item's completion wakes the consumer. */
	if (regular)
		wake(t);
	q->st.batches++;
	q->st.items_sent += n;
	q->bhist[bt__batch_bucket(n)]++;
	return (int)n;
}

static unsigned tq_pending(const bt_queue_t *q)
{
	return (unsigned)(q->tq->ptail - atomic_load_explicit(&q->tq->tail, memory_order_relaxed));
}

static unsigned tq_inflight(const bt_queue_t *q)
{
	return (unsigned)(q->tq->ptail - atomic_load_explicit(&q->tq->head, memory_order_acquire)) -
	       q->tq->nfail;
}

/* Failed direct sends in [from, to): their marks cleared if clear. */
static unsigned failed_in(struct tq *t, uint64_t from, uint64_t to, int clear)
{
	unsigned k = 0;
	for (uint64_t i = from; t->nfail && i != to; i++) {
		uint8_t *f = &t->pfail[i & (t->cap - 1)];
		if (*f) {
			k++;
			if (clear) {
				*f = 0;
				t->nfail--;
			}
		}
	}
	return k;
}

static uint64_t tq_pending_since(const bt_queue_t *q)
{
	struct tq *t = q->tq;
	uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
	if (tail == t->ptail)
		return 0;
	return t->slots[tail & (t->cap - 1)].pushed_ns;
}

static unsigned tq_unreaped(const bt_queue_t *q, unsigned *inflight)
{
	struct tq *t = q->tq;
	uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
	unsigned failed = failed_in(t, t->last_head, head, 0);
	*inflight = (unsigned)(t->ptail - head) - (t->nfail - failed);
	return (unsigned)(head - t->last_head) - failed;
}

/* Items the consumer took since the last call: counted as acknowledged. */
static unsigned tq_reap(bt_queue_t *q, bt_queue_give_fn give, void *ctx)
{
	(void)give, (void)ctx; /* a thread loses no descriptor */
	struct tq *t = q->tq;
	uint64_t head = atomic_load_explicit(&t->head, memory_order_acquire);
	/* Items passed over (their send failed) went back: not acknowledged. */
	unsigned n = (unsigned)(head - t->last_head) - failed_in(t, t->last_head, head, 1);
	t->last_head = head;
	q->st.acked += n;
	return n;
}

/* Give back what the consumer has not taken (all, or only the pending
 * items).  With pending_only 0 the consumer must have stopped. */
static unsigned tq_take(bt_queue_t *q, bt_queue_give_fn give, void *ctx, int pending_only)
{
	struct tq *t = q->tq;
	uint64_t tail = atomic_load_explicit(&t->tail, memory_order_relaxed);
	uint64_t from = pending_only ? tail : atomic_load_explicit(&t->head, memory_order_acquire);
	unsigned n = 0;
	for (uint64_t i = from; i != t->ptail; i++) {
		struct tslot *s = &t->slots[i & (t->cap - 1)];
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		if ((s->flags & BT__ITEM_DIRECT) && i - from < tail - from) {
			/* Sent: it went back already (a failed send), or it is
			 * in the consumer's ring, which ended without taking it:
			 * gone with that ring. */
			if (failed_in(t, i, i + 1, 1))
				continue;
			it.id = s->id;
			it.flags = BT_WIRE_ITEM_LOST;
			it.fd = -1;
			give(ctx, &it);
			continue;
		}
		it.id = s->id;
		it.accept_ns = s->accept_ns;
		it.flags = s->flags;
		it.fd = s->fd;
		it.payload = s->payload;
		it.payload_len = s->payload_len;
		give(ctx, &it);
		free(s->payload);
		s->payload = NULL;
		n++;
	}
	t->ptail = from;
	if (!pending_only) {
		atomic_store_explicit(&t->tail, from, memory_order_release);
		atomic_store_explicit(&t->head, from, memory_order_release);
		t->last_head = from;
	}
	q->st.taken += n;
	return n;
}

static uint32_t tq_load(const bt_queue_t *q)
{
	return atomic_load_explicit(&q->tq->load, memory_order_relaxed);
}

/* --- consumer side ----------------------------------------------------------- */

int bt_queue_wake_fd(const bt_queue_t *q)
{
	return q && q->tq ? q->tq->efd : -EINVAL;
}

int bt_queue_consume(bt_queue_t *q, struct bt_wire_item *out, size_t max)
{
	if (!q || !q->tq || !out)
		return -EINVAL;
	struct tq *t = q->tq;
	/* The payloads of the previous call were the caller's until now. */
	for (size_t i = 0; i < t->ngiven; i++)
		free(t->given[i]);
	t->ngiven = 0;
	uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
	size_t avail = (size_t)(tail - head);
	if (avail > max)
		avail = max;
	if (avail > t->capgiven) {
		char **g = realloc(t->given, avail * sizeof(*g));
		if (!g)
			return -ENOMEM;
		t->given = g;
		t->capgiven = avail;
	}
	size_t n = 0, used = 0;
	while (n < max && head + used != tail) {
		uint64_t i = head + used;
		const struct tslot *s = &t->slots[i & (t->cap - 1)];
		int fd = s->fd;
		if (s->flags & BT__ITEM_DIRECT) {
			int32_t *a = &t->arrived[i & (t->cap - 1)];
			if (*a == 0)
				break; /* its completion has not come: wait for it */
			int32_t v = *a;
			*a = 0;
			used++;
			if (v == ARR_SKIP)
				continue; /* its send failed: the producer has it back */
			fd = v - 1;
		} else {
			used++;
		}
		struct bt_wire_item *o = &out[n++];
		memset(o, 0, offsetof(struct bt_wire_item, peer));
		o->id = s->id;
		o->accept_ns = s->accept_ns;
		o->flags = s->flags;
		o->fd = fd;
		o->peer_len = 0;
		o->payload = s->payload;
		o->payload_len = s->payload_len;
		if (s->payload)
			t->given[t->ngiven++] = s->payload;
	}
	/* The slots are free for the producer from here on. */
	if (used)
		atomic_store_explicit(&t->head, head + used, memory_order_release);
	return (int)n;
}

/* Consumer: the item at head is direct and its completion has not come
 * (that completion will wake the loop). */
static int head_waits(const struct tq *t, uint64_t head)
{
	const struct tslot *s = &t->slots[head & (t->cap - 1)];
	return (s->flags & BT__ITEM_DIRECT) && t->arrived[head & (t->cap - 1)] == 0;
}

int bt_queue_idle(bt_queue_t *q)
{
	struct tq *t = q->tq;
	/* Reset the eventfd before deciding, but only if it was written:
	 * a read that finds nothing is a syscall per loop iteration. */
	if (atomic_load_explicit(&t->signaled, memory_order_relaxed) &&
	    atomic_exchange_explicit(&t->signaled, 0, memory_order_acquire)) {
		uint64_t one;
		ssize_t n = read(t->efd, &one, sizeof(one)); /* resets it to 0 */
		(void)n;
	}
	atomic_store_explicit(&t->sleeping, 1, memory_order_seq_cst);
	uint64_t tail = atomic_load_explicit(&t->tail, memory_order_seq_cst);
	uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
	if ((tail != head && !head_waits(t, head)) ||
	    atomic_load_explicit(&t->drain, memory_order_acquire) == 1) {
		atomic_store_explicit(&t->sleeping, 0, memory_order_relaxed);
		return 0;
	}
	return 1;
}

void bt_queue_awake(bt_queue_t *q)
{
	if (q && q->tq)
		atomic_store_explicit(&q->tq->sleeping, 0, memory_order_relaxed);
}

int bt_queue_drain_requested(bt_queue_t *q, unsigned *deadline_ms)
{
	if (!q || !q->tq)
		return 0;
	int d = atomic_load_explicit(&q->tq->drain, memory_order_acquire);
	if (d == 1) {
		if (deadline_ms)
			*deadline_ms = atomic_load_explicit(&q->tq->drain_ms, memory_order_relaxed);
		atomic_store_explicit(&q->tq->drain, 2, memory_order_relaxed); /* seen */
		return 1;
	}
	return 0;
}

void bt__tq_beat(bt_queue_t *q)
{
	atomic_fetch_add_explicit(&q->tq->beat, 1, memory_order_relaxed);
}

uint64_t bt__tq_beats(const bt_queue_t *q)
{
	return atomic_load_explicit(&q->tq->beat, memory_order_relaxed);
}

void bt_queue_consumer_set_load(bt_queue_t *q, uint32_t load)
{
	if (q && q->tq)
		atomic_store_explicit(&q->tq->load, load, memory_order_relaxed);
}

static int tq_send_drain(bt_queue_t *q, unsigned deadline_ms)
{
	struct tq *t = q->tq;
	atomic_store_explicit(&t->drain_ms, deadline_ms, memory_order_relaxed);
	atomic_store_explicit(&t->drain, 1, memory_order_seq_cst);
	wake(t);
	return 0;
}

uint64_t bt__tq_wakes(const bt_queue_t *q)
{
	return atomic_load_explicit(&q->tq->wakes, memory_order_relaxed);
}

/* The acceptor's send: publishing is the send. */
static int tq_send_prepare(bt_queue_t *q, struct msghdr **msg)
{
	*msg = NULL;
	tq_flush(q);
	return 0;
}

static uint64_t tq_beats(const bt_queue_t *q)
{
	return bt__tq_beats(q);
}

static int tq_on_ack(bt_queue_t *q, const struct bt_wire_ack *ack)
{
	(void)q, (void)ack;
	return -EINVAL; /* the ring is its own acknowledgement */
}

/* --- direct descriptors -------------------------------------------------- */

void bt__tq_set_emitter(bt_queue_t *q, bt__direct_emit_fn emit, void *ctx, unsigned idx)
{
	struct tq *t = q->tq;
	if (!t || t->emit)
		return;
	t->pfail = calloc(t->cap, sizeof(*t->pfail));
	t->arrived = calloc(t->cap, sizeof(*t->arrived));
	if (!t->pfail || !t->arrived) {
		/* Then it takes regular descriptors only. */
		free(t->pfail);
		free(t->arrived);
		t->pfail = NULL;
		t->arrived = NULL;
		bt__log(BT_LOG_WARN, "worker %u: out of memory: it takes regular descriptors", idx);
		return;
	}
	t->emit_ctx = ctx;
	t->emit_idx = idx;
	t->emit = emit;
}

int bt__tq_direct_wanted(const bt_queue_t *q)
{
	return q->tq && q->tq->emit;
}

int bt__tq_direct_consumer(bt_queue_t *q, int ring_fd, unsigned nfiles)
{
	struct tq *t = q->tq;
	if (!t || !t->emit || nfiles == 0)
		return -EINVAL;
	int fd = fcntl(ring_fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	atomic_store_explicit(&t->nfiles, nfiles, memory_order_relaxed);
	atomic_store_explicit(&t->ring_fd, fd, memory_order_release);
	return 0;
}

int bt__tq_direct_ready(const bt_queue_t *q, int *room)
{
	struct tq *t = q->tq;
	if (!t || !t->emit || atomic_load_explicit(&t->ring_fd, memory_order_acquire) < 0)
		return 0;
	/* Its table holds what is open and what is on the way; a margin
	 * for connections whose close is still queued in its ring. */
	unsigned nfiles = atomic_load_explicit(&t->nfiles, memory_order_relaxed);
	uint64_t used = (uint64_t)tq_load(q) + tq_inflight(q) + nfiles / 8;
	*room = used < nfiles;
	return 1;
}

int bt__tq_direct_failed(bt_queue_t *q, uint64_t n, int src, int err,
			 void (*give)(void *ctx, const struct bt_wire_item *it), void *ctx)
{
	struct tq *t = q->tq;
	if (!t || !t->emit)
		return -ENOENT;
	unsigned pos = (unsigned)(n & (t->cap - 1));
	struct tslot *s = &t->slots[pos];
	if (!(s->flags & BT__ITEM_DIRECT) || t->pfail[pos])
		return -ENOENT;
	(void)err;
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = s->id;
	it.accept_ns = s->accept_ns;
	it.flags = s->flags;
	it.fd = src;
	give(ctx, &it);
	t->pfail[pos] = 1;
	t->nfail++;
	/* The consumer passes it over once told (it waits at it until then). */
	int rfd = atomic_load_explicit(&t->ring_fd, memory_order_acquire);
	if (t->emit(t->emit_ctx, t->emit_idx, rfd, -1, n) < 0)
		bt__log(BT_LOG_ERROR, "worker %u: cannot tell it to pass item %llu over",
			t->emit_idx, (unsigned long long)s->id);
	return 0;
}

void bt__tq_direct_arrived(bt_queue_t *q, uint64_t n, int res)
{
	struct tq *t = q->tq;
	if (!t || !t->arrived)
		return;
	t->arrived[n & (t->cap - 1)] = res >= 0 ? res + 1 : ARR_SKIP;
}

unsigned bt__tq_direct_owed(const bt_queue_t *q)
{
	const struct tq *t = q->tq;
	if (!t || !t->emit)
		return 0;
	uint64_t head = atomic_load_explicit(&t->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&t->tail, memory_order_acquire);
	unsigned k = 0;
	for (uint64_t i = head; i != tail; i++)
		k += (t->slots[i & (t->cap - 1)].flags & BT__ITEM_DIRECT) != 0;
	return k;
}

const struct bt__queue_ops bt__queue_thread_ops = {
	.kind = "thread",
	.destroy = tq_destroy,
	.push = tq_push,
	.send_prepare = tq_send_prepare,
	.flush = tq_flush,
	.pending = tq_pending,
	.inflight = tq_inflight,
	.unreaped = tq_unreaped,
	.pending_since = tq_pending_since,
	.reap = tq_reap,
	.take = tq_take,
	.load = tq_load,
	.beats = tq_beats,
	.send_drain = tq_send_drain,
	.on_ack = tq_on_ack,
};
