/* SPDX-License-Identifier: MIT */
/*
 * The acceptor's dispatch: which worker takes an item, the backlog of items
 * no worker can take now, and redelivery.  An item is an accepted
 * connection (from the listeners, acceptor.c) or a work item a program
 * pushed (bt_acceptor_push: a descriptor, a payload, or both); both take
 * the same path, with the same policies, acknowledgements and redelivery.
 *
 * Ownership: an item belongs to the acceptor until a worker acknowledges
 * it.  It is always in exactly one place: the backlog (which owns a copy of
 * its payload), or one worker's queue (pending, in flight, or sent and
 * unacknowledged).  Redelivery moves it from a queue to the backlog, then
 * to another queue.
 */
#include "acceptor_internal.h"
#include "acceptor_policy.h"

#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* --- backlog ------------------------------------------------------------- */

/* Append h; the backlog owns its fd and payload from now on.  0 or
 * -ENOMEM (the caller still owns them). */
static int backlog_push(bt_acceptor_t *acc, const struct held *h)
{
	if (bt__acc_backlog_len(acc) == acc->bcap) {
		size_t ncap = acc->bcap * 2;
		struct held *nb = malloc(ncap * sizeof(*nb));
		if (!nb)
			return -ENOMEM;
		for (size_t i = 0; i < acc->bcap; i++)
			nb[i] = acc->backlog[(acc->bhead + i) % acc->bcap];
		free(acc->backlog);
		acc->backlog = nb;
		acc->btail = acc->bcap;
		acc->bhead = 0;
		acc->bcap = ncap;
	}
	acc->backlog[acc->btail++ % acc->bcap] = *h;
	return 0;
}

/* An item the acceptor cannot keep (out of memory): closing it is the only
 * honest thing left; count it. */
static void drop(bt_acceptor_t *acc, struct held *h)
{
	bt__log(BT_LOG_ERROR, "acceptor: out of memory: dropping item %llu",
		(unsigned long long)h->id);
	bt__acc_held_free(acc, h);
	acc->st.dropped++;
}

void bt__acc_held_free(bt_acceptor_t *acc, struct held *h)
{
	if ((h->flags & BT_WIRE_ITEM_FD) && h->fd >= 0) {
		if (!(h->flags & BT__ITEM_DIRECT))
			bt__close(h->fd);
		else if (acc->ev) /* else it went with the ring */
			bt__acc_uring_close_slot(acc, h->fd);
		if (h->flags & BT__ITEM_DIRECT)
			acc->dslots--;
	}
	free(h->payload);
	h->payload = NULL;
}

int bt__acc_held_to_regular(bt_acceptor_t *acc, struct held *h)
{
	int fd = bt__ev_install(acc->ev, h->fd);
	bt__acc_uring_close_slot(acc, h->fd);
	acc->dslots--;
	h->flags &= ~BT__ITEM_DIRECT;
	h->fd = fd;
	return fd < 0 ? fd : 0;
}

/* h from an item: its payload copied.  0 or -ENOMEM. */
static int held_from(struct held *h, const struct bt_wire_item *it)
{
	h->fd = it->flags & BT_WIRE_ITEM_FD ? it->fd : -1;
	h->flags = it->flags & (BT_WIRE_ITEM_WIRE_MASK | BT__ITEM_DIRECT);
	h->id = it->id;
	h->accept_ns = it->accept_ns;
	h->payload_len = it->payload_len;
	h->payload = NULL;
	if (it->payload_len) {
		h->payload = malloc(it->payload_len);
		if (!h->payload)
			return -ENOMEM;
		memcpy(h->payload, it->payload, it->payload_len);
	}
	return 0;
}

void bt__acc_give_back(void *ctx, const struct bt_wire_item *it)
{
	bt_acceptor_t *acc = ctx;
	struct held h;
	if (it->flags & BT_WIRE_ITEM_LOST) {
		/* A direct item in the ring of a worker thread that ended
		 * without taking it: it was closed with that ring. */
		bt__log(BT_LOG_ERROR, "acceptor: item %llu was closed with the ring of a worker "
				      "that ended before taking it", (unsigned long long)it->id);
		acc->st.dropped++;
		return;
	}
	if ((it->flags & BT_WIRE_ITEM_FD) && it->fd < 0)
		return;
	if (it->flags & BT_WIRE_ITEM_HANDOVER) {
		/* A channel to hand over on was for that worker alone (a
		 * reload, or it was retiring): another must not drain on it. */
		if (it->fd >= 0)
			bt__close(it->fd);
		acc->internal--;
		return;
	}
	if (held_from(&h, it) < 0 || backlog_push(acc, &h) < 0) {
		drop(acc, &h);
		return;
	}
	acc->st.redelivered++;
}

/* --- dispatch --------------------------------------------------------------- */

/* Can w take h now?  An attached worker never gets a connection that
 * starts with a PROXY header: reading it is the worker loop's job, and the
 * wire does not let an attached worker say it does (docs/wire.md). */
static int usable(const bt_acceptor_t *acc, const struct worker *w, const struct held *h)
{
	(void)acc;
	return w->q && !w->dead && !w->full && !w->rest_until_ns && !w->await_hello &&
	       !w->retiring && (!(h->flags & BT_WIRE_ITEM_PROXY) || !w->guest);
}

/* Usable, and acknowledging: the first choice of every policy. */
static int fresh(const bt_acceptor_t *acc, const struct worker *w, const struct held *h)
{
	return usable(acc, w, h) && !w->lagging;
}

/* When every usable worker lags, dispatch falls back to usable ones (work
 * is never held back only because all workers are slow), but not to one
 * far behind the least behind (acc->newest_owed_ns): under a load that
 * makes every worker lag now and then, a stopped one would otherwise keep
 * its share. */
static int behind_ok(const bt_acceptor_t *acc, const struct worker *w, const struct held *h)
{
	return usable(acc, w, h) && !bt__acc_far_behind(w->owed_since_ns, acc->newest_owed_ns);
}

static uint32_t fnv1a(const void *data, size_t n)
{
	const unsigned char *p = data;
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/* hash dispatch: a connection by its peer's IP address; a work item by its
 * payload (the same job description goes to the same worker). */
static uint32_t hash_of(bt_acceptor_t *acc, const struct held *h)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	/* A direct descriptor has no peer to ask without a regular one: a
	 * descriptor installed for the question (one io_uring_enter and a
	 * close per connection, the price of hash dispatch there). */
	int fd = h->fd, tmp = -1;
	if (fd >= 0 && (h->flags & BT__ITEM_DIRECT))
		fd = tmp = bt__ev_install(acc->ev, h->fd);
	int rc = fd >= 0 ? getpeername(fd, (struct sockaddr *)&ss, &len) : -1;
	if (tmp >= 0)
		bt__close(tmp);
	if (rc < 0)
		return fnv1a(h->payload, h->payload_len);
	if (ss.ss_family == AF_INET)
		return fnv1a(&((struct sockaddr_in *)&ss)->sin_addr, 4);
	if (ss.ss_family == AF_INET6)
		return fnv1a(&((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
	return fnv1a(&ss, len);
}

static int pick_with(bt_acceptor_t *acc, const struct held *h,
		     int (*ok)(const bt_acceptor_t *, const struct worker *, const struct held *),
		     int64_t *hash)
{
	switch (acc->cfg.dispatch) {
	case BT_DISPATCH_LEAST: {
		int best = -1;
		uint64_t best_load = UINT64_MAX;
		for (unsigned i = 0; i < acc->nw; i++) {
			struct worker *w = &acc->w[i];
			if (!ok(acc, w, h))
				continue;
			uint64_t load = (uint64_t)bt_queue_consumer_load(w->q) + bt_queue_inflight(w->q);
			if (load < best_load) {
				best_load = load;
				best = (int)i;
			}
		}
		return best;
	}
	case BT_DISPATCH_HASH: {
		if (*hash < 0)
			*hash = hash_of(acc, h); /* once per item */
		/* Stable over the worker slots, not over those alive, so a
		 * client keeps its worker while others come and go. */
		for (unsigned k = 0; k < acc->nw; k++) {
			unsigned i = (unsigned)((uint32_t)*hash + k) % acc->nw;
			if (ok(acc, &acc->w[i], h))
				return (int)i;
		}
		return -1;
	}
	default:
		if (acc->sweeping) {
			/* Round-robin by sweep: the whole catch goes to one
			 * worker, one wake-up for all of it. */
			unsigned i = acc->sweep_rr % acc->nw;
			if (ok(acc, &acc->w[i], h))
				return (int)i;
		}
		for (unsigned k = 0; k < acc->nw; k++) {
			unsigned i = acc->rr++ % acc->nw;
			if (ok(acc, &acc->w[i], h))
				return (int)i;
		}
		return -1;
	}
}

static int pick(bt_acceptor_t *acc, const struct held *h)
{
	if (acc->alive == 0)
		return -1;
	int64_t hash = -1;
	int i = pick_with(acc, h, fresh, &hash);
	if (i >= 0)
		return i;
	acc->newest_owed_ns = 0;
	for (unsigned k = 0; k < acc->nw; k++)
		if (usable(acc, &acc->w[k], h) && acc->w[k].owed_since_ns > acc->newest_owed_ns)
			acc->newest_owed_ns = acc->w[k].owed_since_ns;
	return pick_with(acc, h, behind_ok, &hash);
}

void bt__acc_flush_worker(bt_acceptor_t *acc, unsigned idx)
{
	struct worker *w = &acc->w[idx];
	if (!w->q || w->sending || w->dead)
		return;
	if (!w->owed_since_ns)
		w->owed_since_ns = acc->now_ns; /* the lag clock starts at the send */
	/* A message to send, or nothing (a thread's ring publishes in place). */
	struct msghdr *msg;
	int n = bt__queue_send_prepare(w->q, &msg);
	if (n <= 0) {
		if (n < 0)
			bt__log_errno(BT_LOG_ERROR, n, "acceptor: preparing a batch for worker %u", idx);
		return;
	}
	w->sending = 1;
	acc->ops->send(acc, idx, msg);
}

int bt__acc_dispatch(bt_acceptor_t *acc, struct held *h)
{
	struct bt_wire_item it;
	it.id = h->id;
	it.accept_ns = h->accept_ns;
	it.flags = h->flags;
	it.fd = h->fd;
	it.peer_len = 0;
	it.payload = h->payload;
	it.payload_len = h->payload_len;
	for (unsigned tries = 0; tries < acc->nw; tries++) {
		int idx = pick(acc, h);
		if (idx < 0)
			break;
		struct worker *w = &acc->w[idx];
		/* The batch's age, on the acceptor's clock (its decisions take
		 * the time as an input: tests/test_acceptor.c). */
		if (h->flags & BT__ITEM_DIRECT) {
			int room;
			if (!bt__tq_direct_ready(w->q, &room)) {
				/* It takes regular descriptors only (an attached
				 * worker, a loop without a table, one starting). */
				if (bt__acc_held_to_regular(acc, h) < 0) {
					acc->st.dropped++;
					free(h->payload);
					h->payload = NULL;
					return 0;
				}
				it.flags = h->flags;
				it.fd = h->fd;
			} else if (!room) {
				/* Its table is full: another, or the backlog (which
				 * pauses accepting when it is full in turn). */
				if (!w->table_full)
					bt__log(BT_LOG_WARN, "acceptor: worker %u's file table is full "
							     "(%u connections open): holding connections "
							     "for it until it closes some", (unsigned)idx,
						bt_queue_consumer_load(w->q));
				w->table_full = 1;
				continue;
			} else if (w->table_full) {
				w->table_full = 0;
				bt__log(BT_LOG_INFO, "acceptor: worker %u's file table has room again",
					(unsigned)idx);
			}
		}
		if (bt_queue_pending(w->q) == 0)
			w->pending_since_ns = acc->now_ns;
		int rc = bt_queue_push(w->q, &it);
		if (rc == -EAGAIN) {
			w->full = 1; /* max_inflight unacknowledged: skip it */
			continue;
		}
		if (rc == -ENOSPC || rc == -EXDEV)
			continue; /* (the checks above: not reached) */
		if (rc < 0)
			break;
		free(h->payload); /* the queue has its copy */
		h->payload = NULL;
		if (rc == 1)
			bt__acc_flush_worker(acc, (unsigned)idx);
		return 0;
	}
	if (backlog_push(acc, h) < 0)
		drop(acc, h);
	return 1;
}

void bt__acc_drain_backlog(bt_acceptor_t *acc)
{
	while (bt__acc_backlog_len(acc)) {
		struct held h = acc->backlog[acc->bhead % acc->bcap];
		acc->bhead++;
		if (bt__acc_dispatch(acc, &h) == 1) {
			/* Went straight back (at the tail): nobody can take
			 * more now.  Put it back at the head, in order. */
			acc->btail--;
			acc->bhead--;
			acc->backlog[acc->bhead % acc->bcap] = h;
			break;
		}
	}
}

/* --- work items from the program ------------------------------------------- */

int bt_acceptor_push(bt_acceptor_t *acc, const struct bt_wire_item *it)
{
	if (!acc || !it || (it->flags & ~BT_WIRE_ITEM_WIRE_MASK) ||
	    ((it->flags & BT_WIRE_ITEM_FD) && it->fd < 0) || it->peer_len ||
	    (it->payload_len && !it->payload) ||
	    it->payload_len > BT_WIRE_MAX_MSG - BT_WIRE_HDR_SIZE - BT_WIRE_ITEM_SIZE)
		return -EINVAL;
	if (acc->draining)
		return -ESHUTDOWN;
	if (bt__acc_backlog_len(acc) >= acc->cfg.max_backlog) {
		acc->room_wanted = 1; /* on_room once it is half empty */
		return -EAGAIN;
	}
	struct held h;
	if (held_from(&h, it) < 0)
		return -ENOMEM;
	/* An arrival for the adaptive flush, like an accept (on the clock of
	 * the wake-up: the acceptor's decisions take the time as an input). */
	acc->gap_ewma_ns = bt__pace_gap(acc->gap_ewma_ns, acc->last_accept_ns, acc->now_ns);
	acc->last_accept_ns = acc->now_ns;
	acc->st.pushed++;
	bt__acc_dispatch(acc, &h);
	return 0;
}
