/* SPDX-License-Identifier: MIT */
/*
 * The worker loop, backend-independent part: batches in, connections,
 * the connection API, drain and timers.  The backends (loop_uring.c,
 * loop_epoll.c) do the I/O and call back in here.
 *
 * Ownership: a descriptor that arrives in a batch belongs to the loop from
 * the moment bt_fdpass_rx_complete returns it; the loop acknowledges the
 * batch at once (shared memory, no syscall), so the acceptor may close its
 * copy.  The connection's fd is closed by the backend's conn_finish and by
 * nothing else.
 *
 * A connection is freed only when it is DONE and no operation in flight
 * names it; and then only at the end of the wake-up, so that an iteration
 * over the list that calls back into the application never follows a
 * freed node.
 */
#include "loop_internal.h"

#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BUF_SIZE (16 * 1024)
#define DEFAULT_BUF_COUNT 512

/* The smallest structs a caller may pass: ABI 1's (0.2.0). */
#define CONFIG_MIN offsetof(struct bt_loop_config, out_high)
#define HANDLER_MIN offsetof(struct bt_handler, on_writable)
#define DEFAULT_OUT_HIGH (256 * 1024)

static void config_defaults(struct bt_loop_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->backend = BT_BACKEND_AUTO;
	cfg->buf_size = DEFAULT_BUF_SIZE;
	cfg->buf_count = DEFAULT_BUF_COUNT;
	cfg->drain_timeout_ms = 10000;
	cfg->out_high = DEFAULT_OUT_HIGH;
	cfg->out_low = 0; /* out_high / 4 */
	cfg->proxy_timeout_ms = 5000;
}

int bt_loop_config_init_sized(struct bt_loop_config *cfg, size_t size)
{
	struct bt_loop_config d;
	config_defaults(&d);
	return bt__sized_init(cfg, size, CONFIG_MIN, &d, sizeof(d));
}

int bt__handler_take(struct bt_handler *dst, const struct bt_handler *h)
{
	memset(dst, 0, sizeof(*dst));
	dst->size = sizeof(*dst);
	return bt__sized_in(dst, sizeof(*dst), h, HANDLER_MIN, "bt_handler");
}

/* The core's wait returned. */
static void on_wake(void *ctx)
{
	bt_loop_t *loop = ctx;
	for (unsigned i = 0; i < loop->ninlets; i++)
		loop->inlet[i]->ops->woke(loop, loop->inlet[i]);
	loop->now_ns = loop->ev->now_ns;
	loop->st.wakeups++;
}

/* A loop that could not be made gives the caller's inlet back untouched;
 * one it made from the deprecated parts goes, without their channel. */
static void free_inlet(bt_loop_t *loop, const struct bt_loop_config *cfg)
{
	if (cfg->inlet)
		return;
	loop->inlet[0]->ch = NULL;
	bt_queue_inlet_destroy(loop->inlet[0]);
}

int bt_loop_create(bt_loop_t **out, const struct bt_loop_config *cfg)
{
	if (!out || !cfg)
		return -EINVAL;
	struct bt_loop_config c;
	struct bt_handler h;
	config_defaults(&c);
	int rc = bt__sized_in(&c, sizeof(c), cfg, CONFIG_MIN, "bt_loop_config");
	if (rc < 0)
		return rc;
	cfg = &c;
	if (!cfg->handler)
		return -EINVAL;
	rc = bt__handler_take(&h, cfg->handler);
	if (rc < 0)
		return rc;
	if (!h.on_data && !h.on_item)
		return -EINVAL;
	/* The transport: one inlet, or the parts ABI 1 programs give. */
	int legacy = cfg->channel || cfg->queue || cfg->shm;
	if (cfg->inlet ? legacy : !cfg->channel == !cfg->queue)
		return -EINVAL;
	if (cfg->buf_size < 512 || cfg->buf_size > (1u << 20) || cfg->buf_count == 0 ||
	    cfg->buf_count > 32768 || (cfg->buf_count & (cfg->buf_count - 1)))
		return -EINVAL;
	if (cfg->out_high < 4096 || (cfg->out_low && cfg->out_low >= cfg->out_high))
		return -EINVAL;
	bt_loop_t *loop = calloc(1, sizeof(*loop));
	if (!loop)
		return -ENOMEM;
	loop->cfg = c;
	if (!loop->cfg.out_low)
		loop->cfg.out_low = loop->cfg.out_high / 4;
	loop->handler = h;
	loop->h = &loop->handler;
	loop->ms = &loop->ms_own;
	loop->cfg.handler = loop->h;
	loop->inlet[0] = cfg->inlet;
	loop->ninlets = 1;
	if (!loop->inlet[0]) {
		rc = cfg->queue	 ? bt_queue_inlet_thread(&loop->inlet[0], cfg->queue)
		     : cfg->shm ? bt_queue_inlet_forked(&loop->inlet[0], cfg->channel, cfg->shm, cfg->slot)
				: bt_queue_inlet_wire(&loop->inlet[0], cfg->channel);
		if (rc < 0) {
			free(loop);
			return rc;
		}
	}
	loop->cfg.inlet = NULL, loop->cfg.channel = NULL, loop->cfg.shm = NULL;
	loop->cfg.queue = NULL;
	rc = loop->inlet[0]->ops->init(loop, loop->inlet[0]);
	if (rc == 0)
		rc = bt_pool_sink_create(&loop->sink);
	if (rc < 0) {
		free_inlet(loop, cfg);
		free(loop);
		return rc;
	}
	char who[32];
	snprintf(who, sizeof(who), "worker %d", cfg->worker_id);
	struct bt__ev_client cl = {
		.on_cqe = bt__loop_uring_cqe,
		.on_event = bt__loop_epoll_event,
		.uring_usable = bt__loop_uring_setup,
		.on_wake = on_wake,
		.ctx = loop,
	};
	rc = bt__ev_open(&loop->ev, cfg->backend, 512, 8192, &cl, who);
	if (rc == 0) {
		loop->ops = loop->ev->kind == BT_BACKEND_URING ? &bt__loop_uring_ops
								: &bt__loop_epoll_ops;
		rc = loop->ops->init(loop);
		if (rc == 0)
			rc = loop->ops->inlet_add(loop, loop->inlet[0]);
		if (rc < 0) {
			loop->ops->fini(loop);
			bt__ev_destroy(loop->ev);
		}
	}
	if (rc < 0) {
		bt_pool_sink_destroy(loop->sink);
		free_inlet(loop, cfg);
		free(loop);
		return rc;
	}
	*out = loop;
	return 0;
}

/* --- job offload (the process-wide pool is in pool.c) ---------------------------- */

int bt_loop_submit(bt_loop_t *loop, bt_job_t **job, bt_work_fn work, bt_done_fn done, void *arg)
{
	if (!loop)
		return -EINVAL;
	bt_pool_t *p = bt__pool_global();
	if (!p)
		return -ENOMEM;
	return bt_pool_submit(p, loop->sink, job, work, done, arg);
}

int bt_loop_cancel(bt_loop_t *loop, bt_job_t *job)
{
	bt_pool_t *p = loop ? bt__pool_global() : NULL;
	if (!p)
		return -EINVAL;
	return bt_pool_cancel(p, job);
}

unsigned bt_loop_jobs(const bt_loop_t *loop)
{
	return bt_pool_sink_pending(loop->sink);
}

const char *bt_loop_backend(const bt_loop_t *loop)
{
	return loop->ops->name;
}

void *bt_loop_user(const bt_loop_t *loop)
{
	return loop->cfg.user;
}

int bt_loop_worker_id(const bt_loop_t *loop)
{
	return loop->cfg.worker_id;
}

int bt_loop_draining(const bt_loop_t *loop)
{
	/* Handing its connections to the next generation, a loop is not
	 * draining: they move at their safe points, they need not end. */
	return loop->draining && !loop->handing_over;
}

enum bt_loop_state bt_loop_state(const bt_loop_t *loop)
{
	if (loop->draining)
		return loop->handing_over ? BT_LOOP_HANDING_OVER : BT_LOOP_DRAINING;
	return atomic_load_explicit(&loop->ms->away, memory_order_relaxed) ? BT_LOOP_GOING_AWAY
									    : BT_LOOP_SERVING;
}

unsigned bt_loop_conns(const bt_loop_t *loop)
{
	return loop->nconns;
}

void bt_loop_get_stats_sized(const bt_loop_t *loop, struct bt_loop_stats *out, size_t size)
{
	struct bt_loop_stats st = loop->st;
	st.size = sizeof(st);
	bt__sized_out(out, size, &st, sizeof(st));
}

void bt__loop_publish_load(bt_loop_t *loop)
{
	for (unsigned i = 0; i < loop->ninlets; i++)
		loop->inlet[i]->ops->load(loop, loop->inlet[i]);
}

int bt_loop_add_inlet(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	if (!loop || !in)
		return -EINVAL;
	if (loop->started)
		return -EBUSY;
	if (loop->ninlets == BT__MAX_INLETS)
		return -E2BIG;
	for (unsigned i = 0; i < loop->ninlets; i++)
		if (loop->inlet[i] == in)
			return -EINVAL;
	/* Direct descriptors name their items by one queue's sequence
	 * numbers (BT__DIRECT_DATA): a loop that takes them has one inlet. */
	if ((loop->inlet[0]->q && bt__tq_direct_wanted(loop->inlet[0]->q)) ||
	    (in->q && bt__tq_direct_wanted(in->q)))
		return -EOPNOTSUPP;
	int rc = in->ops->init(loop, in);
	if (rc == 0)
		rc = loop->ops->inlet_add(loop, in);
	if (rc < 0)
		return rc;
	loop->inlet[loop->ninlets++] = in;
	return 0;
}

static void start_drain(bt_loop_t *loop, unsigned deadline_ms);

/* A connection the handler sees while the loop drains: on_drain now. */
static void conn_drain_now(bt_loop_t *loop, bt_conn_t *c)
{
	if (loop->draining && !loop->handing_over && !c->drained && c->state == CONN_OPEN &&
	    loop->h->on_drain) {
		c->drained = 1;
		loop->h->on_drain(c);
	}
}

/* Inlet in's producer is done (it said DRAIN, with deadline_ms, or its
 * channel ended): once every inlet's is, the loop drains. */
static void inlet_done(bt_loop_t *loop, bt_queue_inlet_t *in, unsigned deadline_ms)
{
	if (in->done)
		return;
	in->done = 1;
	if (++loop->ndone == loop->ninlets)
		start_drain(loop, deadline_ms);
}

/* A connection arrived in a batch: on_open, then start reading it. */
static void open_conn(bt_loop_t *loop, const struct bt_wire_item *it)
{
	bt_conn_t *c = bt__conn_new(loop, it);
	if (!c)
		return;
	c->resumed = (it->flags & BT_WIRE_ITEM_RESUMED) != 0;
	if (it->flags & BT_WIRE_ITEM_PROXY) {
		/* Its PROXY header first (conn_proxy.c); the handler sees it
		 * once that is read (bt__loop_conn_reveal). */
		int rc = bt__conn_proxy_begin(c);
		if (rc == 0)
			rc = loop->ops->conn_start(loop, c);
		if (rc < 0)
			bt__conn_finish(c, rc, 1);
		else if (c->resumed && it->payload_len)
			bt__conn_input(c, it->payload, it->payload_len);
		return;
	}
	if (loop->h->on_open)
		loop->h->on_open(c);
	if (c->state != CONN_OPEN)
		return;
	int rc = loop->ops->conn_start(loop, c);
	if (rc < 0)
		bt__conn_ended(c, rc);
	/* A connection from the previous generation: what it had read and
	 * not consumed comes first (a receive just armed completes after
	 * this returns; the backend has the socket, so a reply that closes
	 * it goes out as any other). */
	if (c->resumed && it->payload_len && c->state == CONN_OPEN)
		bt__conn_input(c, it->payload, it->payload_len);
	conn_drain_now(loop, c);
}

void bt__loop_conn_reveal(bt_loop_t *loop, bt_conn_t *c, const void *rest, size_t len)
{
	c->hidden = 0;
	if (loop->h->on_open)
		loop->h->on_open(c);
	if (len && c->state == CONN_OPEN)
		bt__conn_input(c, rest, len);
	if (c->state == CONN_OPEN)
		conn_drain_now(loop, c);
}

/* --- batches, drain, timers ------------------------------------------------ */

/* The loop drains: at the last inlet's DRAIN, or when asked. */
static void start_drain(bt_loop_t *loop, unsigned deadline_ms)
{
	if (loop->draining)
		return;
	if (!deadline_ms)
		deadline_ms = loop->cfg.drain_timeout_ms;
	loop->draining = 1;
	loop->drain_deadline_ns = bt__now_ns() + (uint64_t)deadline_ms * 1000000ull;
	bt__log(BT_LOG_DEBUG, "worker %d: draining %u connections, deadline %u ms",
		loop->cfg.worker_id, loop->nconns, deadline_ms);
	if (bt__loop_handover_begin(loop) || !loop->h->on_drain)
		return; /* a reload: they move at their safe points instead */
	for (bt_conn_t *c = loop->conns, *next; c; c = next) {
		next = c->next;
		if (c->state == CONN_OPEN && !c->drained && !c->hidden) {
			c->drained = 1;
			loop->h->on_drain(c);
		}
	}
}

void bt_loop_drain(bt_loop_t *loop, unsigned deadline_ms)
{
	/* As if every producer had said DRAIN (it begins now, not at the
	 * last inlet's DRAIN). */
	start_drain(loop, deadline_ms);
}

/* The hand-off latency of an item the loop takes now (metrics.c). */
static void handoff(bt_loop_t *loop, const struct bt_wire_item *it)
{
	if (!it->accept_ns || (it->flags & BT_WIRE_ITEM_LOST))
		return;
	/* The wake-up's clock, unless the item is younger (a thread ring
	 * read again in the same wake-up): then the clock now. */
	uint64_t now = loop->now_ns >= it->accept_ns ? loop->now_ns : bt__now_ns();
	bt__mslot_handoff(loop->ms, now > it->accept_ns ? now - it->accept_ns : 0);
}

void bt__loop_use_mslot(bt_loop_t *loop, struct bt__mslot *ms)
{
	loop->ms = ms ? ms : &loop->ms_own;
}

int bt__loop_on_channel(bt_loop_t *loop, bt_queue_inlet_t *in, int rc, struct bt_wire_msg *msg)
{
	if (rc == -EAGAIN || rc == -EINTR)
		return 0;
	if (rc <= 0) {
		/* The acceptor is gone (or spoke nonsense): serve what we
		 * have, then stop (once every inlet has). */
		if (rc < 0)
			bt__log_errno(BT_LOG_ERROR, rc, "worker %d: channel failed", loop->cfg.worker_id);
		in->eof = 1;
		unsigned open = 0;
		for (unsigned i = 0; i < loop->ninlets; i++)
			open += loop->inlet[i]->ch && !loop->inlet[i]->eof;
		loop->channel_eof = open == 0;
		inlet_done(loop, in, 0);
		return 1;
	}
	switch (msg->type) {
	case BT_WIRE_BATCH: {
		struct bt_wire_batch *b = &msg->u.batch;
		loop->st.batches++;
		loop->st.lost += b->n_lost;
		/* Acknowledge first: from here on the loop owns these fds and
		 * the acceptor may close its copies. */
		in->ops->ack(loop, in, b);
		for (unsigned i = 0; i < b->n_items; i++) {
			const struct bt_wire_item *it = &b->items[i];
			if (it->flags & BT_WIRE_ITEM_HANDOVER) {
				bt__loop_handover_channel(loop, it->fd);
				continue;
			}
			handoff(loop, it);
			if (loop->h->on_item) {
				if (!(it->flags & BT_WIRE_ITEM_LOST))
					loop->h->on_item(loop, it);
			} else if (it->fd >= 0)
				open_conn(loop, it);
			else if (!(it->flags & BT_WIRE_ITEM_LOST))
				bt__log(BT_LOG_WARN, "worker %d: item %llu carries no connection: ignored",
					loop->cfg.worker_id, (unsigned long long)it->id);
		}
		return 0;
	}
	case BT_WIRE_DRAIN:
		loop->drain_asked = 1;
		inlet_done(loop, in, msg->u.drain.deadline_ms);
		return 0;
	default:
		return 0;
	}
}

void bt__loop_consume(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	if (!in) {
		for (unsigned i = 0; i < loop->ninlets; i++)
			if (loop->inlet[i]->q)
				bt__loop_consume(loop, loop->inlet[i]);
		return;
	}
	bt_queue_t *q = in->q;
	struct bt_wire_item items[64];
	int n;
	while ((n = bt_queue_consume(q, items, 64)) > 0) {
		loop->st.batches++;
		for (int i = 0; i < n; i++) {
			if (!(items[i].flags & BT_WIRE_ITEM_HANDOVER))
				handoff(loop, &items[i]);
			if (items[i].flags & BT_WIRE_ITEM_HANDOVER)
				bt__loop_handover_channel(loop, items[i].fd);
			else if (loop->h->on_item) {
				if (!(items[i].flags & BT__ITEM_DIRECT) ||
				    bt__loop_item_to_regular(loop, &items[i]) == 0)
					loop->h->on_item(loop, &items[i]);
			}
			else if (items[i].fd >= 0)
				open_conn(loop, &items[i]);
		}
	}
	unsigned ms;
	if (bt_queue_drain_requested(q, &ms))
		inlet_done(loop, in, ms);
}

int bt__loop_tick(bt_loop_t *loop)
{
	/* The heartbeat (the watchdog sees this loop is not stuck), and what
	 * the transport has to retry. */
	for (unsigned i = 0; i < loop->ninlets; i++)
		loop->inlet[i]->ops->tick(loop, loop->inlet[i]);
	bt__loop_flush(loop);
	bt__loop_handover_tick(loop);
	uint64_t now = loop->now_ns;
	if (loop->draining && now >= loop->drain_deadline_ns) {
		for (bt_conn_t *c = loop->conns, *next; c; c = next) {
			next = c->next;
			if (c->state != CONN_DONE)
				loop->closed_at_deadline++;
			bt__conn_finish(c, -ETIMEDOUT, 1);
		}
	}
	if (loop->retryq)
		bt__loop_retry_reads(loop);
	bt__loop_flush(loop);
	bt__loop_run_closes(loop);
	bt__loop_free_zombies(loop);
	if (loop->stopping)
		return 1;
	/* Direct items published to us are ours alone (they go with our
	 * ring): wait for them, a second past the drain's deadline at most. */
	if (loop->draining && loop->inlet[0]->q && bt__tq_direct_owed(loop->inlet[0]->q) &&
	    now < loop->drain_deadline_ns + 1000000000ull)
		return 0;
	return loop->draining && loop->nconns == 0 && loop->conns == NULL &&
	       bt_pool_sink_pending(loop->sink) == 0;
}

int bt__loop_item_to_regular(bt_loop_t *loop, struct bt_wire_item *it)
{
	int fd = bt__ev_install(loop->ev, it->fd);
	bt__loop_uring_close_slot(loop, it->fd);
	if (fd < 0) {
		bt__log(BT_LOG_ERROR, "worker %d: item %llu closed: no descriptor for it",
			loop->cfg.worker_id, (unsigned long long)it->id);
		return fd;
	}
	it->fd = fd;
	it->flags &= ~BT__ITEM_DIRECT;
	return 0;
}

static void on_tick(struct bt__timer *t, void *arg)
{
	(void)t, (void)arg; /* the wake-up is the point: bt__loop_tick runs */
}

#define TICK_NS 100000000ull

/* An inlet has something to say (a later tick must come). */
static int inlets_owe(bt_loop_t *loop)
{
	for (unsigned i = 0; i < loop->ninlets; i++)
		if (loop->inlet[i]->ops->owed(loop, loop->inlet[i]))
			return 1;
	return 0;
}

/* Wake-ups until the loop is told to return: the core waits and calls
 * back (connections, channel, timers, watches), then the tick. */
static int run(bt_loop_t *loop)
{
	for (;;) {
		if (loop->ops->prepare)
			loop->ops->prepare(loop);
		/* Thread mode: never sleep on published items (see
		 * bt_queue_idle for the handshake with the producer). */
		for (unsigned i = 0; i < loop->ninlets; i++) {
			bt_queue_inlet_t *in = loop->inlet[i];
			while (in->ops->ready(loop, in)) {
				bt__loop_consume(loop, in);
				bt__loop_flush(loop);
			}
		}
		/* A worker with connections open (or an ACK to send) wakes
		 * at least every 100 ms:
		 * its heartbeat (the watchdog), a drain's deadline, file
		 * reads to retry.  One-shot, started again only after it
		 * fired: stopping and restarting it as connections come and
		 * go would move the ring's TIMEOUT at every burst. */
		if ((loop->conns || loop->draining || inlets_owe(loop)) &&
		    !bt__timer_armed(&loop->tick)) {
			loop->tick.cb = on_tick;
			bt__timer_start(&loop->ev->timers, &loop->tick, bt__now_ns() + TICK_NS, 0);
		}
		/* Output queued in the last pass goes out after a look at
		 * what else is ready: no sleep. */
		int rc = bt__ev_wait(loop->ev, 0, loop->flushq != NULL);
		if (rc < 0)
			return rc;
		if (bt__loop_tick(loop))
			return 0;
	}
}

int bt_loop_run(bt_loop_t *loop)
{
	if (!loop)
		return -EINVAL;
	if (!loop->started) {
		loop->started = 1;
		if (loop->h->on_start && loop->h->on_start(loop) != 0)
			return -ECANCELED;
	}
	int rc = run(loop);
	bt__loop_run_closes(loop);
	bt__loop_free_zombies(loop);
	bt__log(BT_LOG_DEBUG, "worker %d (%s): %llu connections in %llu batches, %llu lost, %llu wake-ups",
		loop->cfg.worker_id, loop->ev->name, (unsigned long long)loop->st.conns,
		(unsigned long long)loop->st.batches, (unsigned long long)loop->st.lost,
		(unsigned long long)loop->st.wakeups);
	if (loop->ho)
		bt__log(BT_LOG_INFO, "worker %d: %llu connections handed over to the next generation "
				     "(%llu bytes carried), %u closed at the drain deadline",
			loop->cfg.worker_id, (unsigned long long)loop->handed,
			(unsigned long long)loop->carried, loop->closed_at_deadline);
	if (loop->h->on_stop)
		loop->h->on_stop(loop);
	return rc;
}

void bt_loop_destroy(bt_loop_t *loop)
{
	if (!loop)
		return;
	for (bt_conn_t *c = loop->conns, *next; c; c = next) {
		next = c->next;
		bt__conn_finish(c, -ECANCELED, 1);
	}
	bt__loop_run_closes(loop);
	/* Jobs still out (the application's, and file reads): wait for them,
	 * so no done() is lost, none runs for a loop that is gone, and a file
	 * read's completion still finds its connection. */
	while (bt_pool_sink_pending(loop->sink)) {
		struct pollfd pfd = {.fd = bt_pool_sink_fd(loop->sink), .events = POLLIN};
		poll(&pfd, 1, 100);
		bt_pool_sink_run(loop->sink);
	}
	bt__loop_run_closes(loop);
	bt__loop_users_fini(loop);
	bt__timer_stop(&loop->ev->timers, &loop->tick);
	bt__ev_destroy(loop->ev); /* drops what is in flight */
	loop->ops->fini(loop);
	bt__loop_retry_reads(loop);
	while (loop->flushq) { /* nothing more goes out */
		bt_conn_t *c = loop->flushq;
		loop->flushq = c->flush_next;
		c->flush_queued = 0;
		c->flush_next = NULL;
	}
	for (bt_conn_t *c = loop->conns, *next; c; c = next) {
		next = c->next;
		if (c->xfd >= 0) {
			bt__close(c->xfd);
			c->xfd = -1;
		}
		if (c->fd_open) {
			if (!c->direct) /* a direct one went with the ring */
				bt__close(c->fd);
			c->fd_open = 0;
		}
		c->ops = 0;
		bt__conn_maybe_free(c);
	}
	bt__loop_free_zombies(loop);
	bt_pool_sink_destroy(loop->sink);
	for (unsigned i = 0; i < loop->ninlets; i++) {
		loop->inlet[i]->ops->leave(loop, loop->inlet[i]); /* e.g. the ACK still owed */
		bt_queue_inlet_destroy(loop->inlet[i]);
	}
	if (loop->ho)
		bt_fdpass_close(loop->ho);
	free(loop);
}
