/* SPDX-License-Identifier: MIT */
/*
 * The acceptor on io_uring.
 *
 *  - listeners: one multishot ACCEPT each (5.19+), re-armed when a
 *    completion comes without IORING_CQE_F_MORE (an error such as EMFILE
 *    ends it; the core decides when to re-arm);
 *  - batches: SENDMSG with MSG_DONTWAIT|MSG_NOSIGNAL, one per worker in
 *    flight, so a full channel answers -EAGAIN instead of parking the send;
 *  - each worker channel: a RECVMSG in flight, whose EOF says the worker is
 *    gone (often before SIGCHLD is read);
 *  - watches: multishot POLL_ADD; timers: TIMEOUT.
 * Everything queued during a wake-up is submitted by the next
 * io_uring_submit_and_wait: one syscall per wake-up.
 *
 * Ring set-up: bt__uring_init (uring.c).
 */
#include "acceptor_internal.h"

#include "internal.h"
#include "uring.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	T_ACCEPT = 1,
	T_SEND = 2,
	T_CHANNEL = 3,
	T_WATCH = 4,
	T_TIMEOUT = 5,
	T_MISC = 6,  /* kind in the bits above the tag */
	T_SWEEP = 7,
};
#define T_IGNORE ((0ull << TAG_BITS) | T_MISC)
#define T_CLOSE ((1ull << TAG_BITS) | T_MISC)
#define TAG_BITS 3
#define TAG_MASK 7ull

/* Accept flag of 6.10: accept what is queued, then end with -EAGAIN
 * instead of waiting (liburing 2.3 predates it). */
#ifndef IORING_ACCEPT_DONTWAIT
#define IORING_ACCEPT_DONTWAIT (1U << 1)
#endif

struct accu {
	struct io_uring ring;
	struct __kernel_timespec ts, uts;
	uint64_t armed_deadline; /* the one TIMEOUT in flight, absolute */
	int armed;
};

#define TIMER_IDLE_NS 10000000000ull /* nothing due: park the timer 10 s out */
#define TIMER_SLACK_NS 20000ull       /* close enough: leave it */

static int au_init(bt_acceptor_t *acc)
{
	struct accu *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	int rc = bt__uring_init(&u->ring, 1024, 16384);
	if (rc < 0) {
		free(u);
		return rc;
	}
	/* Multishot accept needs 5.19, which has no opcode of its own to
	 * probe: IORING_OP_SOCKET came in the same release, so its presence
	 * stands for it.  An older kernel falls back to epoll rather than
	 * failing at the first accept. */
	struct io_uring_probe *probe = io_uring_get_probe_ring(&u->ring);
	if (probe) {
		int ok = io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
			 io_uring_opcode_supported(probe, IORING_OP_SENDMSG) &&
			 io_uring_opcode_supported(probe, IORING_OP_SOCKET);
		io_uring_free_probe(probe);
		if (!ok) {
			io_uring_queue_exit(&u->ring);
			free(u);
			return -ENOSYS;
		}
	}
	acc->backend = u;
	return 0;
}

static void au_fini(bt_acceptor_t *acc)
{
	struct accu *u = acc->backend;
	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	free(u);
	acc->backend = NULL;
	/* The ring is gone, and with it every operation in flight. */
	for (unsigned i = 0; i < acc->nw; i++) {
		acc->w[i].sending = 0;
		acc->w[i].chan_armed = 0;
	}
}

/* A multishot ACCEPT on l.  Waiting (tag T_ACCEPT): it stays armed and
 * posts a completion per connection.  A sweep (T_SWEEP, with
 * IORING_ACCEPT_DONTWAIT): it takes every connection queued on the
 * listener and ends with -EAGAIN, never waiting; it runs during the
 * submission that carries it. */
static int prep_accept(bt_acceptor_t *acc, struct listener *l, unsigned tag)
{
	struct accu *u = acc->backend;
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	if (tag == T_SWEEP)
		sqe->ioprio |= IORING_ACCEPT_DONTWAIT;
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)l | tag);
	l->armed = 1;
	return 0;
}

static int au_arm_listener(bt_acceptor_t *acc, struct listener *l)
{
	return prep_accept(acc, l, T_ACCEPT);
}

static int au_sweep_listener(bt_acceptor_t *acc, struct listener *l)
{
	return prep_accept(acc, l, T_SWEEP);
}

static void au_disarm_listener(bt_acceptor_t *acc, struct listener *l)
{
	struct accu *u = acc->backend;
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)l | T_ACCEPT, 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, T_IGNORE);
}

static void au_close_listener(bt_acceptor_t *acc, struct listener *l)
{
	struct accu *u = acc->backend;
	if (l->armed) {
		struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
		if (sqe) {
			io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)l | T_ACCEPT, 0);
			io_uring_sqe_set_data64(sqe, T_IGNORE);
		}
		io_uring_submit(&u->ring);
	}
	bt__close(l->fd);
}

static void au_send(bt_acceptor_t *acc, unsigned idx, struct msghdr *msg)
{
	struct accu *u = acc->backend;
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe) {
		bt__acc_send_done(acc, idx, -EAGAIN);
		return;
	}
	io_uring_prep_sendmsg(sqe, bt_fdpass_fd(bt_queue_channel(acc->w[idx].q)), msg,
			      MSG_NOSIGNAL | MSG_DONTWAIT);
	io_uring_sqe_set_data64(sqe, ((uint64_t)idx << TAG_BITS) | T_SEND);
}

/* Acknowledged copies close through the ring: no syscall of their own,
 * they go with the next submission.  Only a failure posts a completion. */
static void ring_close(void *ctx, int fd)
{
	struct accu *u = ctx;
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe) {
		bt__close(fd);
		return;
	}
	io_uring_prep_close(sqe, fd);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, T_CLOSE);
}

static void au_arm_channel(bt_acceptor_t *acc, unsigned idx)
{
	struct accu *u = acc->backend;
	struct worker *w = &acc->w[idx];
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe)
		return;
	bt_fdpass_t *ch = bt_queue_channel(w->q);
	bt__queue_set_closer(w->q, ring_close, u);
	io_uring_prep_recvmsg(sqe, bt_fdpass_fd(ch), bt_fdpass_rx_prepare(ch), MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ((uint64_t)idx << TAG_BITS) | T_CHANNEL);
	w->chan_armed = 1;
}

static void au_forget_channel(bt_acceptor_t *acc, unsigned idx)
{
	(void)acc;
	(void)idx; /* nothing registered beyond the RECVMSG, already done */
}

static int au_add_watch(bt_acceptor_t *acc, struct watch *w)
{
	struct accu *u = acc->backend;
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_multishot(sqe, w->fd, POLLIN);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)w | T_WATCH);
	return 0;
}

static void handle(bt_acceptor_t *acc, struct accu *u, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned tag = (unsigned)(data & TAG_MASK);
	if (tag == T_MISC) {
		if (data == T_CLOSE)
			bt__log_errno(BT_LOG_ERROR, cqe->res, "acceptor: close(held connection)");
		return;
	}
	int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
	switch (tag) {
	case T_ACCEPT:
		bt__acc_on_accept(acc, (struct listener *)(uintptr_t)(data & ~TAG_MASK),
				  cqe->res, more);
		break;
	case T_SWEEP: {
		struct listener *l = (struct listener *)(uintptr_t)(data & ~TAG_MASK);
		if (cqe->res >= 0 || (cqe->res != -EAGAIN && cqe->res != -EINVAL))
			bt__acc_on_accept(acc, l, cqe->res, 1);
		if (!more) {
			l->armed = 0;
			bt__acc_sweep_done(acc, cqe->res);
		}
		break;
	}
	case T_SEND:
		bt__acc_send_done(acc, (unsigned)(data >> TAG_BITS), cqe->res);
		break;
	case T_CHANNEL: {
		unsigned idx = (unsigned)(data >> TAG_BITS);
		struct worker *w = &acc->w[idx];
		struct bt_wire_msg msg;
		int rc = bt_fdpass_rx_complete(bt_queue_channel(w->q), cqe->res, &msg);
		if (bt__acc_on_channel(acc, idx, rc, &msg))
			au_arm_channel(acc, idx);
		break;
	}
	case T_WATCH: {
		struct watch *w = (struct watch *)(uintptr_t)(data & ~TAG_MASK);
		if (cqe->res >= 0)
			w->cb(w->ctx);
		if (!more)
			au_add_watch(acc, w);
		break;
	}
	case T_TIMEOUT:
		/* -ETIME: it fired.  An update does not end it (no CQE). */
		if (cqe->res != -ECANCELED)
			u->armed = 0;
		break;
	default:
		break;
	}
}

/*
 * One TIMEOUT at a time, on CLOCK_MONOTONIC absolute time, moved with
 * TIMEOUT_UPDATE when the next deadline changes: a timer armed per batch
 * and left to fire after the batch went out anyway would cost the acceptor
 * one useless wake-up per batch.  Updates skip their own completion.
 */
static void set_timer(struct accu *u, uint64_t deadline_ns, uint64_t now)
{
	uint64_t want = deadline_ns ? deadline_ns : now + TIMER_IDLE_NS;
	if (u->armed) {
		uint64_t d = want > u->armed_deadline ? want - u->armed_deadline : u->armed_deadline - want;
		if (d <= TIMER_SLACK_NS || (!deadline_ns && u->armed_deadline > now))
			return;
		struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
		if (!sqe)
			return;
		u->uts.tv_sec = (long long)(want / 1000000000ull);
		u->uts.tv_nsec = (long long)(want % 1000000000ull);
		io_uring_prep_timeout_update(sqe, &u->uts, T_TIMEOUT, IORING_TIMEOUT_ABS);
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
		io_uring_sqe_set_data64(sqe, T_IGNORE);
		u->armed_deadline = want;
		return;
	}
	if (!deadline_ns)
		return;
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe)
		return;
	u->ts.tv_sec = (long long)(want / 1000000000ull);
	u->ts.tv_nsec = (long long)(want % 1000000000ull);
	io_uring_prep_timeout(sqe, &u->ts, 0, IORING_TIMEOUT_ABS);
	io_uring_sqe_set_data64(sqe, T_TIMEOUT);
	u->armed = 1;
	u->armed_deadline = want;
}

static int au_wait(bt_acceptor_t *acc, uint64_t deadline_ns)
{
	struct accu *u = acc->backend;
	uint64_t now = bt__now_ns();
	int rc;
	if (deadline_ns && deadline_ns <= now) {
		/* Due now: do not sleep, but do reap.  Under DEFER_TASKRUN a
		 * plain submit runs no task work, so completions (a channel's
		 * EOF, the signalfd) would never be posted and a loop of
		 * due-now wake-ups would spin without seeing them. */
		rc = io_uring_submit_and_get_events(&u->ring);
	} else {
		set_timer(u, deadline_ns, now);
		rc = io_uring_submit_and_wait(&u->ring, 1);
	}
	if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EBUSY && rc != -EAGAIN)
		return bt__log_errno(BT_LOG_ERROR, rc, "acceptor: io_uring_submit_and_wait");
	acc->now_ns = bt__now_ns();
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&u->ring, head, cqe) {
			handle(acc, u, cqe);
			n++;
		}
		if (!n)
			break;
		io_uring_cq_advance(&u->ring, n);
	}
	return 0;
}

const struct acc_ops bt__acc_uring_ops = {
	.name = "io_uring",
	.init = au_init,
	.fini = au_fini,
	.arm_listener = au_arm_listener,
	.sweep_listener = au_sweep_listener,
	.disarm_listener = au_disarm_listener,
	.close_listener = au_close_listener,
	.send = au_send,
	.arm_channel = au_arm_channel,
	.forget_channel = au_forget_channel,
	.add_watch = au_add_watch,
	.wait = au_wait,
};
