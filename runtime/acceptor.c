/* SPDX-License-Identifier: MIT */
/*
 * The acceptor, backend-independent part: accept, flush policy, pacing,
 * drain, timers (dispatch, the backlog and redelivery are in
 * acceptor_dispatch.c; workers coming and going in acceptor_workers.c).  The backends (acceptor_uring.c,
 * acceptor_epoll.c) wait for events and call bt__acc_on_* here.
 *
 * One wake-up: the backend handles every ready event (accepts are pushed
 * to a worker's pending batch, full batches are sent at once), then
 * end_of_wakeup(): reap acknowledgements, move the backlog to workers,
 * flush by policy (adaptive: everything pending, since the completion
 * queue is drained), fire timers.
 *
 * Descriptor ownership: see acceptor_dispatch.c.
 */
#include "acceptor_internal.h"
#include "acceptor_policy.h"

#include "internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REAP_TICK_NS 50000000ull  /* reap at least this often while holding */
#define REST_NS 100000000ull /* a worker that lost descriptors rests this long */

/* The smallest struct bt_acceptor_config a caller may pass: ABI 1's. */
#define CONFIG_MIN sizeof(struct bt_acceptor_config)

static void config_defaults(struct bt_acceptor_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->dispatch = BT_DISPATCH_RR;
	cfg->backend = BT_BACKEND_AUTO;
	cfg->max_backlog = 4096;
	cfg->emfile_pause_ms = 100;
}

int bt_acceptor_config_init_sized(struct bt_acceptor_config *cfg, size_t size)
{
	struct bt_acceptor_config d;
	config_defaults(&d);
	return bt__sized_init(cfg, size, CONFIG_MIN, &d, sizeof(d));
}

int bt_acceptor_parse_dispatch(const char *s, enum bt_dispatch *out)
{
	if (!s || !out)
		return -EINVAL;
	if (!strcmp(s, "rr"))
		*out = BT_DISPATCH_RR;
	else if (!strcmp(s, "least"))
		*out = BT_DISPATCH_LEAST;
	else if (!strcmp(s, "hash"))
		*out = BT_DISPATCH_HASH;
	else
		return -EINVAL;
	return 0;
}

const char *bt_acceptor_dispatch_name(enum bt_dispatch d)
{
	return d == BT_DISPATCH_LEAST ? "least" : d == BT_DISPATCH_HASH ? "hash" : "rr";
}

/* The core's wait returned: the clock the handlers read. */
static void on_wake(void *ctx)
{
	bt_acceptor_t *acc = ctx;
	acc->now_ns = acc->ev->now_ns;
}

int bt_acceptor_create(bt_acceptor_t **out, const struct bt_acceptor_config *cfg,
		       unsigned max_workers)
{
	return bt__acc_create_with(out, cfg, max_workers, NULL);
}

int bt__acc_create_with(bt_acceptor_t **out, const struct bt_acceptor_config *cfg,
			unsigned max_workers, const struct acc_ops *ops)
{
	if (!out || !cfg || max_workers == 0 || max_workers > 4096)
		return -EINVAL;
	struct bt_acceptor_config c;
	config_defaults(&c);
	int rc = bt__sized_in(&c, sizeof(c), cfg, CONFIG_MIN, "bt_acceptor_config");
	if (rc < 0)
		return rc;
	cfg = &c;
	if (cfg->dispatch < BT_DISPATCH_RR || cfg->dispatch > BT_DISPATCH_HASH ||
	    cfg->max_backlog == 0)
		return -EINVAL;
	bt_acceptor_t *acc = calloc(1, sizeof(*acc));
	if (!acc)
		return -ENOMEM;
	acc->cfg = c;
	acc->cap = max_workers;
	acc->w = calloc(max_workers ? max_workers : 1, sizeof(*acc->w));
	acc->bcap = 1024;
	acc->backlog = malloc(acc->bcap * sizeof(*acc->backlog));
	if (!acc->w || !acc->backlog) {
		free(acc->w);
		free(acc->backlog);
		free(acc);
		return -ENOMEM;
	}
	acc->emfile_ms = cfg->emfile_pause_ms ? cfg->emfile_pause_ms : 100;
	struct bt__ev_client cl = {
		.on_cqe = bt__acc_uring_cqe,
		.on_event = bt__acc_epoll_event,
		.uring_usable = bt__acc_uring_usable,
		.on_wake = on_wake,
		.ctx = acc,
	};
	/* A test's own backend runs on an epoll core (never waited on). */
	rc = bt__ev_open(&acc->ev, ops ? BT_BACKEND_EPOLL : cfg->backend, 1024, 16384, &cl,
			 "acceptor");
	if (rc < 0)
		goto fail;
	if (!ops)
		ops = acc->ev->kind == BT_BACKEND_URING ? &bt__acc_uring_ops : &bt__acc_epoll_ops;
	acc->ops = ops;
	rc = ops->init(acc);
	if (rc < 0) {
		bt__ev_destroy(acc->ev);
		goto fail;
	}
	acc->can_sweep = acc->ops->sweep_listener != NULL;
	*out = acc;
	return 0;
fail:
	free(acc->w);
	free(acc->backlog);
	free(acc);
	return rc;
}

const char *bt_acceptor_backend(const bt_acceptor_t *acc)
{
	return acc->ops == &bt__acc_uring_ops || acc->ops == &bt__acc_epoll_ops ? acc->ev->name
										 : acc->ops->name;
}

/* --- events from the backends ---------------------------------------------- */

static void arm_all_listeners(bt_acceptor_t *acc)
{
	if (acc->standby)
		return;
	if (acc->sweeping) {
		if (acc->sweeps_out || acc->now_ns < acc->next_sweep_ns)
			return;
		for (unsigned i = 0; i < acc->nl; i++) {
			struct listener *l = &acc->l[i];
			if (l->fd >= 0 && !l->armed && !l->closing &&
			    acc->ops->sweep_listener(acc, l) == 0)
				acc->sweeps_out++;
		}
		acc->st.sweeps += acc->sweeps_out != 0;
		acc->sweep_rr++;
		acc->next_sweep_ns = acc->now_ns + acc->sweep_hold_ns;
		return;
	}
	for (unsigned i = 0; i < acc->nl; i++) {
		struct listener *l = &acc->l[i];
		if (l->fd >= 0 && !l->armed && !l->closing && acc->ops->arm_listener(acc, l) < 0)
			bt__log(BT_LOG_ERROR, "acceptor: cannot accept on fd %d", l->fd);
	}
}

static int accepting(const bt_acceptor_t *acc)
{
	return !acc->draining && !acc->paused && !acc->standby && acc->emfile_until_ns == 0 &&
	       (!acc->direct || acc->dslots + acc->dmargin < acc->nfiles);
}

void bt__acc_accept_burst(bt_acceptor_t *acc, struct listener *l, int more_on_error)
{
	/* A bounded burst, so one busy listener does not starve the rest. */
	for (int k = 0; k < 256; k++) {
		if (l->fd < 0 || l->closing || acc->paused || acc->standby || acc->emfile_until_ns)
			break;
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			bt__acc_on_accept(acc, l, fd, 1, 0);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN)
			bt__acc_on_accept(acc, l, -errno, more_on_error, 0);
		break;
	}
}

void bt__acc_standby(bt_acceptor_t *acc, int on)
{
	if (acc->standby == !!on)
		return;
	acc->standby = !!on;
	for (unsigned i = 0; on && i < acc->nl; i++) {
		struct listener *l = &acc->l[i];
		/* io_uring: cancel its accept (the completion clears armed);
		 * epoll: the next readiness disarms it (acceptor_epoll.c). */
		if (l->fd >= 0 && l->armed && !l->closing && acc->ops->disarm_listener)
			acc->ops->disarm_listener(acc, l);
	}
	if (!on && !acc->draining) /* accepting again: at once */
		bt__acc_kick_listeners(acc);
}

void bt__acc_kick_listeners(bt_acceptor_t *acc)
{
	/* The backend's own accept stays armed (more_on_error 1). */
	for (unsigned i = 0; i < acc->nl; i++)
		bt__acc_accept_burst(acc, &acc->l[i], 1);
}

void bt__acc_on_accept(bt_acceptor_t *acc, struct listener *l, int res, int more, uint32_t flags)
{
	if (!more)
		l->armed = 0;
	if (res >= 0) {
		acc->st.accepted++;
		if (flags & BT__ITEM_DIRECT)
			acc->dslots++;
		acc->sweep_got++;
		/* Smoothed gap between accepts: tells the adaptive flush
		 * whether more connections are on their way. */
		acc->gap_ewma_ns = bt__pace_gap(acc->gap_ewma_ns, acc->last_accept_ns, acc->now_ns);
		acc->last_accept_ns = acc->now_ns;
		struct held h = {.fd = res,
				 .flags = BT_WIRE_ITEM_FD | flags | (l->proxy ? BT_WIRE_ITEM_PROXY : 0),
				 .id = ++acc->next_id, .accept_ns = acc->now_ns};
		bt__acc_dispatch(acc, &h);
		if (acc->draining)
			return; /* raced with the drain: still ours to hand over */
		if (bt__acc_backlog_len(acc) >= acc->cfg.max_backlog && !acc->paused) {
			acc->paused = 1;
			bt__log(BT_LOG_WARN,
				"acceptor: %zu connections wait for a worker: pausing accept",
				bt__acc_backlog_len(acc));
		}
		return;
	}
	if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
		/* Out of descriptors (or memory): pause, let acknowledgements
		 * close our copies, and retry on a timer.  Never spin. */
		if (acc->emfile_until_ns == 0) {
			acc->st.emfile++;
			bt__log_errno(BT_LOG_WARN, res,
				      "accept4: pausing accepts for %u ms (holding %u connections)",
				      acc->emfile_ms, bt_acceptor_held(acc));
		}
		acc->emfile_until_ns = acc->now_ns + (uint64_t)acc->emfile_ms * 1000000ull;
		if (acc->emfile_ms < 1000)
			acc->emfile_ms *= 2;
		return;
	}
	if (res == -ECANCELED || res == -EBADF)
		return; /* drain closed the listener */
	if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED) {
		acc->st.errors++;
		bt__log_errno(BT_LOG_ERROR, res, "accept4(fd %d)", l->fd);
	}
}

/*
 * Paced accept.  A connection arriving at an idle acceptor wakes it: one
 * wake-up per connection, ~6 us here, the largest cost of the hand-off.
 * Under load (accepts closer than a quarter of the adaptive hold) the
 * acceptor stops waiting on its listeners and instead sweeps them every
 * hold: one timer wake-up accepts all that queued meanwhile, and the batch
 * goes out at once.  A connection waits at most one hold in the kernel's
 * accept queue instead of in our pending batch.  When sweeps bring in
 * fewer than two connections each on average, the wait costs more latency
 * than the wake-ups it saves, and the acceptor waits on its listeners
 * again.  (A single client can never make it sweep: its next connection
 * waits for the previous answer.)
 */
static void start_sweeping(bt_acceptor_t *acc, uint64_t hold)
{
	acc->sweeping = 1;
	acc->sweep_hold_ns = hold;
	acc->yield_x8 = 32;
	acc->sweep_got = 0;
	acc->next_sweep_ns = acc->now_ns + hold;
	for (unsigned i = 0; i < acc->nl; i++) {
		struct listener *l = &acc->l[i];
		if (l->armed && !l->closing)
			acc->ops->disarm_listener(acc, l);
	}
}

void bt__acc_sweep_done(bt_acceptor_t *acc, int res)
{
	if (acc->sweeps_out)
		acc->sweeps_out--;
	if (res == -EINVAL && acc->can_sweep) {
		/* Before 6.10: no IORING_ACCEPT_DONTWAIT.  Wait on the
		 * listeners, as always. */
		bt__log(BT_LOG_DEBUG, "acceptor: no accept sweeps on this kernel");
		acc->can_sweep = 0;
		acc->sweeping = 0;
		return;
	}
	if (acc->sweeps_out)
		return;
	unsigned got = acc->sweep_got;
	acc->sweep_got = 0;
	if (!bt__pace_continue(&acc->yield_x8, got)) {
		acc->sweeping = 0;
		acc->gap_ewma_ns = acc->sweep_hold_ns; /* re-learn from the next accepts */
	}
}

void bt__acc_send_done(bt_acceptor_t *acc, unsigned idx, long res)
{
	struct worker *w = &acc->w[idx];
	w->sending = 0;
	if (!w->q)
		return;
	int rc = bt_queue_flush_complete(w->q, res);
	if (rc == 0)
		return;
	if (rc == -EAGAIN || rc == -ETOOMANYREFS) {
		/* Never wait on a worker: what it cannot take goes to
		 * others; it is skipped until it acknowledges something. */
		acc->st.full++;
		w->full = 1;
		if (!w->dead)
			bt_queue_take_pending(w->q, bt__acc_give_back, acc);
		return;
	}
	if (!w->dead) {
		bt__log_errno(BT_LOG_WARN, rc, "acceptor: worker %u's channel failed", idx);
		bt_acceptor_detach(acc, idx);
		if (acc->cfg.on_worker_gone)
			acc->cfg.on_worker_gone(acc->cfg.ctx, idx);
	}
}

int bt__acc_on_channel(bt_acceptor_t *acc, unsigned idx, int rc, struct bt_wire_msg *msg)
{
	struct worker *w = &acc->w[idx];
	w->chan_armed = 0;
	if (rc == 1) {
		if (w->dead)
			return 0;
		int bad = 0;
		if (msg->type == BT_WIRE_HELLO && w->await_hello) {
			/* An attached worker introduces itself: version 1 (the
			 * highest it speaks is at least ours). */
			bad = msg->u.hello.version < BT_WIRE_VERSION;
			if (!bad) {
				w->await_hello = 0;
				w->pid = msg->u.hello.pid;
				bt__queue_cap_batch(w->q, msg->u.hello.max_batch);
				bt__log(BT_LOG_INFO, "acceptor: worker %u attached: pid %u, takes up to %u "
						     "items per batch", idx, (unsigned)w->pid,
					msg->u.hello.max_batch ? msg->u.hello.max_batch : BT_WIRE_MAX_FDS);
			}
		} else if (w->await_hello) {
			bad = 1; /* anything before HELLO */
		} else if (msg->type == BT_WIRE_ACK) {
			/* A wire-acknowledged worker's (a forked one's go
			 * through shared memory: -EINVAL, nothing to do). */
			bad = bt_queue_on_ack(w->q, &msg->u.ack) == -EPROTO;
		} else if (msg->type != BT_WIRE_HELLO) {
			bad = 1; /* BATCH and DRAIN go the other way */
		}
		if (bad) {
			bt__log(BT_LOG_WARN, "acceptor: worker %u sent a bad %s (seq %llu): dropping it; "
					     "what it has not acknowledged goes to the others",
				idx, bt_wire_type_name(msg->type),
				(unsigned long long)(msg->type == BT_WIRE_ACK ? msg->u.ack.seq : msg->seq));
			bt_acceptor_detach(acc, idx);
			if (acc->cfg.on_worker_gone)
				acc->cfg.on_worker_gone(acc->cfg.ctx, idx);
			return 0;
		}
		return 1;
	}
	if (rc == -EAGAIN || rc == -EINTR)
		return !w->dead;
	if (!w->dead) {
		bt__log(rc == 0 ? BT_LOG_DEBUG : BT_LOG_WARN,
			"acceptor: worker %u's channel closed (%s)", idx,
			rc == 0 ? "EOF" : strerror(-rc));
		bt_acceptor_detach(acc, idx);
		if (acc->cfg.on_worker_gone)
			acc->cfg.on_worker_gone(acc->cfg.ctx, idx);
	}
	return 0;
}

/* --- listeners, watches, timers --------------------------------------------- */

int bt_acceptor_add_listener(bt_acceptor_t *acc, int fd)
{
	if (!acc || fd < 0)
		return -EINVAL;
	if (acc->nl == BT_MAX_LISTENERS)
		return -E2BIG;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "fcntl(listener %d, O_NONBLOCK)", fd);
	struct listener *l = &acc->l[acc->nl++];
	l->fd = fd;
	l->armed = 0;
	l->closing = 0;
	l->proxy = 0;
	return 0;
}

int bt__acc_listener_proxy(bt_acceptor_t *acc, int fd)
{
	for (unsigned i = 0; i < acc->nl; i++)
		if (acc->l[i].fd == fd) {
			acc->l[i].proxy = 1;
			return 0;
		}
	return -ENOENT;
}

static void watch_ready(struct bt__watch *bw, uint32_t revents)
{
	struct watch *w = (struct watch *)bw;
	(void)revents;
	w->cb(w->ctx);
}

int bt_acceptor_watch(bt_acceptor_t *acc, int fd, void (*cb)(void *ctx), void *ctx)
{
	if (!acc || fd < 0 || !cb)
		return -EINVAL;
	if (acc->nwatches == BT_MAX_WATCHES)
		return -E2BIG;
	struct watch *w = &acc->watches[acc->nwatches];
	memset(w, 0, sizeof(*w));
	w->w.fd = fd;
	w->w.events = BT__EV_IN;
	w->w.cb = watch_ready;
	w->cb = cb;
	w->ctx = ctx;
	int rc = bt__ev_watch(acc->ev, &w->w);
	if (rc == 0)
		acc->nwatches++;
	return rc;
}

static void timer_fired(struct bt__timer *t, void *arg)
{
	bt_acceptor_t *acc = arg;
	(void)t;
	void (*cb)(void *) = acc->timer_cb;
	acc->timer_cb = NULL;
	if (cb)
		cb(acc->timer_ctx);
}

void bt_acceptor_timer(bt_acceptor_t *acc, unsigned ms, void (*cb)(void *ctx), void *ctx)
{
	acc->timer_cb = cb;
	acc->timer_ctx = ctx;
	acc->timer.cb = timer_fired;
	acc->timer.arg = acc;
	/* The heap has room for its one entry once started; a failure to
	 * grow it is logged and the timer is lost. */
	if (bt__timer_start(&acc->ev->timers, &acc->timer, bt__now_ns() + (uint64_t)ms * 1000000ull,
			    0) < 0)
		bt__log(BT_LOG_ERROR, "acceptor: no memory for a timer");
}

/* --- the loop ------------------------------------------------------------------ */

/* DRAIN to every worker (the whole acceptor drains) or to the retiring
 * ones, once nothing is pending for them. */
static void send_drains(bt_acceptor_t *acc)
{
	for (unsigned i = 0; i < acc->nw; i++) {
		struct worker *w = &acc->w[i];
		if (!w->q || w->dead || w->drain_sent || w->sending || bt_queue_pending(w->q) ||
		    (!acc->draining && !w->retiring))
			continue;
		/* Non-blocking: a full channel is retried at the next wake-up. */
		if (bt_queue_send_drain(w->q, acc->draining ? acc->drain_ms : w->retire_ms) == 0)
			w->drain_sent = 1;
	}
}


static void end_of_wakeup(bt_acceptor_t *acc)
{
	int released = 0;
	for (unsigned i = 0; i < acc->nw; i++) {
		struct worker *w = &acc->w[i];
		if (!w->q)
			continue;
		if (w->dead) {
			bt__acc_reclaim(acc, i);
			continue;
		}
		uint64_t lost_before = acc->st.redelivered;
		unsigned acked = bt_queue_reap(w->q, bt__acc_give_back, acc);
		if (acked > 0) {
			w->full = 0;
			released = 1;
		}
		bt__acc_note_lag(acc, i, acked);
		if (acc->st.redelivered != lost_before) {
			/* It could not take descriptors (RLIMIT_NOFILE): sending
			 * them straight back would spin.  Rest it a while; the
			 * others, or it later, get them. */
			w->rest_until_ns = acc->now_ns + REST_NS;
		} else if (w->rest_until_ns && acc->now_ns >= w->rest_until_ns) {
			w->rest_until_ns = 0;
		}
	}
	if (released && acc->emfile_until_ns)
		acc->emfile_until_ns = acc->now_ns; /* descriptors freed: retry now */
	bt__acc_drain_backlog(acc);
	if (acc->paused && bt__acc_backlog_len(acc) < acc->cfg.max_backlog / 2) {
		acc->paused = 0;
		bt__log(BT_LOG_INFO, "acceptor: resuming accept");
	}
	if (acc->room_wanted && bt__acc_backlog_len(acc) < acc->cfg.max_backlog / 2 &&
	    !acc->draining) {
		acc->room_wanted = 0;
		if (acc->cfg.on_room)
			acc->cfg.on_room(acc->cfg.ctx);
	}
	if (acc->emfile_until_ns && acc->now_ns >= acc->emfile_until_ns)
		acc->emfile_until_ns = 0;
	if (acc->emfile_until_ns == 0 && acc->emfile_ms > acc->cfg.emfile_pause_ms && released)
		acc->emfile_ms = acc->cfg.emfile_pause_ms ? acc->cfg.emfile_pause_ms : 100;

	for (unsigned i = 0; i < acc->nw; i++) {
		struct worker *w = &acc->w[i];
		if (!w->q || w->dead || w->sending || !bt_queue_pending(w->q))
			continue;
		/* The queue's own flush policy. */
		uint64_t since = bt_queue_pending(w->q) ? w->pending_since_ns : 0;
		if (acc->draining ||
		    bt__flush_due(bt__queue_flush_policy(w->q), acc->sweeping, acc->gap_ewma_ns,
				  bt__queue_delay_ns(w->q), since, acc->now_ns))
			bt__acc_flush_worker(acc, i);
	}
	if (!acc->sweeping && acc->can_sweep && accepting(acc)) {
		/* Pace accepts when every queue flushes adaptively and
		 * accepts come closer than a quarter of its hold. */
		uint64_t hold = 0;
		for (unsigned i = 0; i < acc->nw; i++) {
			struct worker *w = &acc->w[i];
			if (!w->q || w->dead)
				continue;
			if (bt__queue_flush_policy(w->q) != BT_FLUSH_ADAPTIVE) {
				hold = 0;
				break;
			}
			uint64_t h = bt__queue_delay_ns(w->q);
			if (!hold || h < hold)
				hold = h;
		}
		if (bt__pace_start(acc->gap_ewma_ns, hold, acc->st.accepted))
			start_sweeping(acc, hold);
	}
	if (accepting(acc))
		arm_all_listeners(acc);
	if (acc->draining || acc->retiring)
		send_drains(acc);
}

static uint64_t next_deadline(bt_acceptor_t *acc)
{
	uint64_t d = 0;
#define AT(t) do { uint64_t t_ = (t); if (t_ && (!d || t_ < d)) d = t_; } while (0)
	AT(acc->emfile_until_ns);
	int holding = bt__acc_backlog_len(acc) > 0;
	for (unsigned i = 0; i < acc->nw; i++) {
		struct worker *w = &acc->w[i];
		if (!w->q)
			continue;
		if (bt_queue_inflight(w->q))
			holding = 1;
		AT(w->rest_until_ns);
		if (w->owed_since_ns && !w->lagging && !w->dead)
			AT(w->owed_since_ns + BT_LAG_NS + 1);
		uint64_t since = bt_queue_pending(w->q) ? w->pending_since_ns : 0;
		if (since && !w->sending && !w->dead) /* a dead one's go back at reclaim */
			AT(bt__flush_deadline(bt__queue_flush_policy(w->q), bt__queue_delay_ns(w->q),
					      since));
	}
	if (acc->sweeping && accepting(acc) && !acc->sweeps_out)
		AT(acc->next_sweep_ns);
	if (holding || acc->draining)
		AT(acc->now_ns + REAP_TICK_NS);
#undef AT
	return d;
}

void bt__acc_step(bt_acceptor_t *acc, uint64_t now_ns)
{
	acc->now_ns = now_ns;
	end_of_wakeup(acc);
}

uint64_t bt__acc_next_deadline(bt_acceptor_t *acc)
{
	return next_deadline(acc);
}

int bt_acceptor_run(bt_acceptor_t *acc)
{
	if (!acc)
		return -EINVAL;
	acc->stop = 0;
	acc->now_ns = bt__now_ns();
	arm_all_listeners(acc);
	while (!acc->stop) {
		int rc = bt__ev_wait(acc->ev, next_deadline(acc), 0);
		if (rc < 0)
			return rc;
		acc->st.wakeups++;
		acc->now_ns = acc->ev->now_ns; /* the core read it as it woke */
		end_of_wakeup(acc);
	}
	return 0;
}

void bt_acceptor_stop(bt_acceptor_t *acc)
{
	acc->stop = 1;
}

void bt_acceptor_drain(bt_acceptor_t *acc, unsigned deadline_ms)
{
	if (acc->draining)
		return;
	acc->draining = 1;
	acc->drain_ms = deadline_ms;
	for (unsigned i = 0; i < acc->nl; i++) {
		struct listener *l = &acc->l[i];
		if (l->fd >= 0 && !l->closing) {
			l->closing = 1;
			acc->ops->close_listener(acc, l);
		}
	}
}

void bt_acceptor_get_stats_sized(const bt_acceptor_t *acc, struct bt_acceptor_stats *dst,
				 size_t size)
{
	struct bt_acceptor_stats st = acc->st, *out = &st;
	out->size = sizeof(st);
	out->items_sent = 0;
	out->batches = 0;
	for (unsigned i = 0; i < acc->nw; i++) {
		if (!acc->w[i].q)
			continue;
		struct bt_queue_stats qs;
		bt_queue_get_stats(acc->w[i].q, &qs);
		out->items_sent += qs.items_sent;
		out->batches += qs.batches;
	}
	out->batches += acc->batches_gone;
	out->items_sent += acc->items_gone;
	bt__sized_out(dst, size, &st, sizeof(st));
}

void bt_acceptor_destroy(bt_acceptor_t *acc)
{
	if (!acc)
		return;
	for (unsigned i = 0; i < acc->nl; i++)
		if (acc->l[i].fd >= 0 && !acc->l[i].closing)
			bt__close(acc->l[i].fd);
	bt__ev_destroy(acc->ev); /* nothing is in flight after this */
	acc->ev = NULL; /* direct descriptors went with the ring */
	acc->ops->fini(acc);
	for (unsigned i = 0; i < acc->nw; i++)
		if (acc->w[i].q)
			bt_queue_destroy(acc->w[i].q); /* closes what it holds */
	size_t dropped = bt__acc_backlog_len(acc);
	while (bt__acc_backlog_len(acc))
		bt__acc_held_free(acc, &acc->backlog[acc->bhead++ % acc->bcap]);
	if (dropped)
		bt__log(BT_LOG_WARN, "acceptor: closed %zu items (connections or work) no worker took",
			dropped);
	free(acc->backlog);
	free(acc->w);
	free(acc);
}
