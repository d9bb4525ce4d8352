/* SPDX-License-Identifier: MIT */
/*
 * The acceptor's workers: attached, detached and reclaimed (their
 * unacknowledged items redelivered), their counters, the acknowledgement
 * lag that makes dispatch pass a worker over, and the heartbeat the
 * supervisor's watchdog reads.
 */
#include "acceptor_internal.h"
#include "acceptor_policy.h"

#include "internal.h"
#include "queue_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>

int bt_acceptor_attach(bt_acceptor_t *acc, unsigned idx, bt_queue_t *q)
{
	if (!acc || !q || idx >= acc->cap)
		return -EINVAL;
	if (acc->w[idx].q)
		return -EBUSY; /* the previous one is still being reclaimed */
	struct bt_queue_stats gone = acc->w[idx].gone;
	uint64_t bh[BT__BATCH_BUCKETS];
	memcpy(bh, acc->w[idx].bhist_gone, sizeof(bh));
	memset(&acc->w[idx], 0, sizeof(acc->w[idx]));
	acc->w[idx].gone = gone;
	memcpy(acc->w[idx].bhist_gone, bh, sizeof(bh));
	acc->w[idx].q = q;
	acc->alive++;
	if (idx >= acc->nw)
		acc->nw = idx + 1; /* the loops look no further */
	if (bt_queue_channel(q)) /* messages and EOF from the worker */
		acc->ops->arm_channel(acc, idx);
	if (acc->direct && bt_queue_is_thread(q))
		bt__acc_uring_direct_queue(acc, idx, q);
	return 0;
}

int bt__acc_attach_guest(bt_acceptor_t *acc, unsigned idx, bt_queue_t *q)
{
	int rc = bt_acceptor_attach(acc, idx, q);
	if (rc == 0)
		acc->w[idx].await_hello = acc->w[idx].guest = 1;
	return rc;
}

unsigned bt__acc_handover(bt_acceptor_t *acc, int fd)
{
	unsigned n = 0;
	for (unsigned i = 0; i < acc->nw; i++) {
		struct worker *w = &acc->w[i];
		if (!w->q || w->dead || w->guest)
			continue; /* attached workers: docs/reload.md */
		struct bt_wire_item it = {.id = ++acc->next_id, .accept_ns = acc->now_ns,
					  .flags = BT_WIRE_ITEM_FD | BT_WIRE_ITEM_HANDOVER,
					  .fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)};
		if (it.fd < 0) {
			bt__log_errno(BT_LOG_ERROR, -errno, "reload: dup(handover channel)");
			continue;
		}
		if (bt_queue_push(w->q, &it) < 0) {
			bt__close(it.fd);
			continue;
		}
		acc->internal++;
		bt__acc_flush_worker(acc, i);
		n++;
	}
	return n;
}

uint32_t bt__acc_worker_pid(const bt_acceptor_t *acc, unsigned idx)
{
	return idx < acc->cap ? acc->w[idx].pid : 0;
}

void bt_acceptor_detach(bt_acceptor_t *acc, unsigned idx)
{
	if (!acc || idx >= acc->cap)
		return;
	struct worker *w = &acc->w[idx];
	if (!w->q || w->dead)
		return;
	w->dead = 1;
	acc->alive--;
	/* End the channel's receive in flight (it completes with EOF), so
	 * the queue can be reclaimed. */
	if (bt_queue_channel(w->q))
		shutdown(bt_fdpass_fd(bt_queue_channel(w->q)), SHUT_RDWR);
}

/* A dead worker with nothing in flight: what it acknowledged is closed,
 * everything else goes back to the backlog, the queue is freed. */
void bt__acc_reclaim(bt_acceptor_t *acc, unsigned idx)
{
	struct worker *w = &acc->w[idx];
	if (!w->q || !w->dead)
		return;
	/* What it acknowledged before it died is released now, even while
	 * its channel's end or a send is still to come back: the exit
	 * counters must not count those as held. */
	bt_queue_reap(w->q, bt__acc_give_back, acc);
	if (w->sending || w->chan_armed || w->direct_out)
		return;
	if (bt_queue_channel(w->q))
		acc->ops->forget_channel(acc, idx);
	unsigned n = bt_queue_take(w->q, bt__acc_give_back, acc);
	if (n)
		bt__log(BT_LOG_INFO, "acceptor: worker %u gone: redelivering %u connections", idx, n);
	struct bt_queue_stats qs, gone = w->gone;
	bt_queue_get_stats(w->q, &qs);
	acc->batches_gone += qs.batches;
	acc->items_gone += qs.items_sent;
	gone.pushed += qs.pushed;
	gone.batches += qs.batches;
	gone.items_sent += qs.items_sent;
	gone.acked += qs.acked;
	gone.lost += qs.lost;
	gone.taken += qs.taken;
	gone.full += qs.full;
	gone.toomanyrefs += qs.toomanyrefs;
	uint64_t bh[BT__BATCH_BUCKETS];
	for (unsigned k = 0; k < BT__BATCH_BUCKETS; k++)
		bh[k] = w->bhist_gone[k] + w->q->bhist[k];
	bt_queue_destroy(w->q);
	if (w->retiring)
		acc->retiring--;
	memset(w, 0, sizeof(*w));
	w->gone = gone;
	memcpy(w->bhist_gone, bh, sizeof(bh));
}

void bt__acc_worker_bhist(const bt_acceptor_t *acc, unsigned idx, uint64_t *out)
{
	const struct worker *w = &acc->w[idx];
	for (unsigned k = 0; k < BT__BATCH_BUCKETS; k++)
		out[k] = w->bhist_gone[k] + (w->q ? w->q->bhist[k] : 0);
}

void bt__acc_retire(bt_acceptor_t *acc, unsigned idx, unsigned deadline_ms, int handover_fd)
{
	struct worker *w = idx < acc->cap ? &acc->w[idx] : NULL;
	if (!w || !w->q || w->dead || w->retiring) {
		if (handover_fd >= 0)
			bt__close(handover_fd);
		return;
	}
	w->retiring = 1;
	w->retire_ms = deadline_ms;
	acc->retiring++;
	/* Dispatch passes it over from now on.  What is pending for it still
	 * goes (it serves it), then the channel to hand its connections
	 * back on, then DRAIN (send_drains, once nothing is pending). */
	if (handover_fd >= 0) {
		struct bt_wire_item it = {.id = ++acc->next_id, .accept_ns = acc->now_ns,
					  .flags = BT_WIRE_ITEM_FD | BT_WIRE_ITEM_HANDOVER,
					  .fd = handover_fd};
		if (bt_queue_push(w->q, &it) < 0) {
			bt__close(handover_fd);
		} else {
			acc->internal++;
			bt__acc_flush_worker(acc, idx);
		}
	}
}

void bt_acceptor_get_worker_stats_sized(const bt_acceptor_t *acc, unsigned idx,
				    struct bt_queue_stats *dst, size_t size)
{
	struct bt_queue_stats st, *out = &st;
	memset(out, 0, sizeof(*out));
	out->size = sizeof(st);
	if (!acc || idx >= acc->cap) {
		bt__sized_out(dst, size, &st, sizeof(st));
		return;
	}
	*out = acc->w[idx].gone;
	out->size = sizeof(st);
	if (acc->w[idx].q) {
		struct bt_queue_stats qs;
		bt_queue_get_stats(acc->w[idx].q, &qs);
		out->pushed += qs.pushed;
		out->batches += qs.batches;
		out->items_sent += qs.items_sent;
		out->acked += qs.acked;
		out->lost += qs.lost;
		out->taken += qs.taken;
		out->full += qs.full;
		out->toomanyrefs += qs.toomanyrefs;
	}
	bt__sized_out(dst, size, &st, sizeof(st));
}

unsigned bt_acceptor_workers(const bt_acceptor_t *acc)
{
	return acc->alive;
}

bt_queue_t *bt_acceptor_queue(bt_acceptor_t *acc, unsigned idx)
{
	return acc && idx < acc->cap ? acc->w[idx].q : NULL;
}

unsigned bt_acceptor_held(const bt_acceptor_t *acc)
{
	size_t n = bt__acc_backlog_len(acc);
	for (unsigned i = 0; i < acc->nw; i++)
		if (acc->w[i].q)
			n += bt_queue_inflight(acc->w[i].q);
	return (unsigned)n;
}

/*
 * Acknowledgement lag, after a reap that released `acked` items.  A worker
 * that owes acknowledgements and has acknowledged nothing for BT_LAG_NS is
 * stopped or stuck (SIGSTOP, a handler in a loop, swapping): dispatch
 * prefers the others from now on, and what waits in its pending batch goes
 * back to be dispatched again.  What it was already sent stays with it
 * until it acknowledges or dies (the supervisor's watchdog).
 */
void bt__acc_note_lag(bt_acceptor_t *acc, unsigned idx, unsigned acked)
{
	struct worker *w = &acc->w[idx];
	unsigned owed = bt_queue_inflight(w->q) - bt_queue_pending(w->q);
	if (owed == 0)
		w->owed_since_ns = 0;
	else if (acked || !w->owed_since_ns)
		w->owed_since_ns = acc->now_ns;
	int lag = bt__acc_lagging(w->owed_since_ns, acc->now_ns);
	if (lag && !w->lagging) {
		w->lagging = 1;
		acc->st.lagged++;
		unsigned back = w->sending ? 0 : bt_queue_take_pending(w->q, bt__acc_give_back, acc);
		bt__log(BT_LOG_WARN,
			"acceptor: worker %u has acknowledged nothing for %llu ms (%u connections "
			"owed): dispatching to the others%s",
			idx, (unsigned long long)((acc->now_ns - w->owed_since_ns) / 1000000ull), owed,
			back ? ", its pending batch too" : "");
	} else if (!lag && w->lagging) {
		w->lagging = 0;
		bt__log(BT_LOG_INFO, "acceptor: worker %u acknowledges again", idx);
	}
}

uint64_t bt__acc_worker_stalled_ns(bt_acceptor_t *acc, unsigned idx, uint64_t now_ns)
{
	struct worker *w = &acc->w[idx];
	if (!w->q || w->dead)
		return 0;
	uint64_t beat = bt__queue_beats(w->q);
	if (beat != w->beat || !w->beat_ns) {
		w->beat = beat;
		w->beat_ns = now_ns;
	}
	int has_work = bt_queue_inflight(w->q) > bt_queue_pending(w->q) || bt_queue_consumer_load(w->q) > 0;
	if (!has_work) {
		w->beat_ns = now_ns; /* an idle loop sleeps: not stalled */
		return 0;
	}
	return now_ns - w->beat_ns;
}
