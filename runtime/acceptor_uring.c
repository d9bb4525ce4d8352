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
 *  - direct descriptors (bt__acc_direct, ev.h): the listeners accept into
 *    the ring's file table; a flush passes each connection's slot to its
 *    worker thread's ring with MSG_RING (SEND_FD), linked to a CLOSE of our
 *    slot, so the slot closes only once the worker has the connection.  A
 *    failed send cancels the CLOSE: the item comes back with our slot
 *    still open (bt__tq_direct_failed) and is dispatched again.  Each send
 *    posts its completion (counted in direct_out: a dead worker's queue is
 *    kept until none is out).
 * The ring, its wait, timers and watches are the event core's
 * (ev_uring.c): everything queued during a wake-up is submitted by the
 * next io_uring_submit_and_wait, one syscall per wake-up.
 */
#include "acceptor_internal.h"

#include "internal.h"
#include "ev.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	T_ACCEPT = 1,
	T_SEND = 2,
	T_CHANNEL = 3,
	T_MISC = 4,  /* kind in the bits above the tag */
	T_SWEEP = 5,
	T_DIRECT = 6, /* idx, our slot and the item's number in the bits above */
};
#define T_IGNORE ((0ull << TAG_BITS) | T_MISC)
#define T_CLOSE ((1ull << TAG_BITS) | T_MISC)
#define T_PASSOVER ((2ull << TAG_BITS) | T_MISC)
#define TAG_BITS 3
#define TAG_MASK 7ull

/* Accept flag of 6.10: accept what is queued, then end with -EAGAIN
 * instead of waiting (liburing 2.3 predates it). */
#ifndef IORING_ACCEPT_DONTWAIT
#define IORING_ACCEPT_DONTWAIT (1U << 1)
#endif

/* The core made its ring: can this kernel run the acceptor on it?
 * Multishot accept needs 5.19, which has no opcode of its own to probe:
 * IORING_OP_SOCKET came in the same release, so its presence stands for
 * it.  An older kernel falls back to epoll rather than failing at the
 * first accept. */
int bt__acc_uring_usable(void *ctx, struct io_uring *ring)
{
	(void)ctx;
	struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
	if (!probe)
		return 0;
	int ok = io_uring_opcode_supported(probe, IORING_OP_ACCEPT) &&
		 io_uring_opcode_supported(probe, IORING_OP_SENDMSG) &&
		 io_uring_opcode_supported(probe, IORING_OP_SOCKET);
	io_uring_free_probe(probe);
	return ok ? 0 : -ENOSYS;
}

static int au_init(bt_acceptor_t *acc)
{
	(void)acc;
	return 0;
}

/* After the core is gone: the ring, and every operation in flight. */
static void au_fini(bt_acceptor_t *acc)
{
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
	struct io_uring_sqe *sqe = bt__ev_sqe(acc->ev);
	if (!sqe)
		return -EBUSY;
	if (acc->direct) /* (SOCK_CLOEXEC is refused for a direct descriptor) */
		io_uring_prep_multishot_accept_direct(sqe, l->fd, NULL, NULL, 0);
	else
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
	struct io_uring_sqe *sqe = bt__ev_sqe(acc->ev);
	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)l | T_ACCEPT, 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, T_IGNORE);
}

static void au_close_listener(bt_acceptor_t *acc, struct listener *l)
{
	if (l->armed) {
		struct io_uring_sqe *sqe = bt__ev_sqe(acc->ev);
		if (sqe) {
			io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)l | T_ACCEPT, 0);
			io_uring_sqe_set_data64(sqe, T_IGNORE);
		}
		io_uring_submit(&acc->ev->ring);
	}
	bt__close(l->fd);
}

static void au_send(bt_acceptor_t *acc, unsigned idx, struct msghdr *msg)
{
	struct io_uring_sqe *sqe = bt__ev_sqe(acc->ev);
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
	struct io_uring_sqe *sqe = bt__ev_sqe(ctx);
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
	struct worker *w = &acc->w[idx];
	struct io_uring_sqe *sqe = bt__ev_sqe(acc->ev);
	if (!sqe)
		return;
	bt_fdpass_t *ch = bt_queue_channel(w->q);
	bt__queue_set_closer(w->q, ring_close, acc->ev);
	io_uring_prep_recvmsg(sqe, bt_fdpass_fd(ch), bt_fdpass_rx_prepare(ch), MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ((uint64_t)idx << TAG_BITS) | T_CHANNEL);
	w->chan_armed = 1;
}

static void au_forget_channel(bt_acceptor_t *acc, unsigned idx)
{
	(void)acc;
	(void)idx; /* nothing registered beyond the RECVMSG, already done */
}

/* --- direct descriptors ------------------------------------------------------ */

/* T_DIRECT's user_data: the worker (12 bits), our slot (20: the table has
 * at most BT__DIRECT_MAX_FILES), the item's number modulo 2^29 (the ring
 * has at most 2^20 slots: enough to find it). */
#define D_IDX_SHIFT 3
#define D_SRC_SHIFT 15
#define D_N_SHIFT 35
_Static_assert(BT__DIRECT_MAX_FILES <= (1u << 20), "a slot fits in 20 bits");

static uint64_t direct_data(unsigned idx, int src, uint64_t n)
{
	return ((n & ((1ull << 29) - 1)) << D_N_SHIFT) | ((uint64_t)(unsigned)src << D_SRC_SHIFT) |
	       ((uint64_t)idx << D_IDX_SHIFT) | T_DIRECT;
}

void bt__acc_uring_close_slot(bt_acceptor_t *acc, int slot)
{
	struct io_uring_sqe *sqe = bt__ev_sqe(acc->ev);
	if (!sqe) {
		bt__log(BT_LOG_ERROR, "acceptor: no SQE to close slot %d", slot);
		return;
	}
	io_uring_prep_close_direct(sqe, (unsigned)slot);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, T_CLOSE);
}

/* The thread queue's emitter (bt__direct_emit_fn): item n's slot src to
 * the worker's ring, or (src < 0) word to pass item n over. */
static int emit(void *ctx, unsigned idx, int ring_fd, int src, uint64_t n)
{
	bt_acceptor_t *acc = ctx;
	if (src < 0) {
		struct io_uring_sqe *sqe = bt__ev_sqe(acc->ev);
		if (!sqe)
			return -EBUSY;
		bt__ev_prep_msg_data(sqe, ring_fd, BT__DIRECT_DATA(n), -ECANCELED);
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
		io_uring_sqe_set_data64(sqe, T_PASSOVER); /* a failure is logged */
		return 0;
	}
	if (bt__ev_room(acc->ev, 2) < 0)
		return -EBUSY;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&acc->ev->ring);
	bt__ev_prep_send_fd(sqe, ring_fd, src, BT__DIRECT_DATA(n));
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, direct_data(idx, src, n));
	sqe = io_uring_get_sqe(&acc->ev->ring);
	io_uring_prep_close_direct(sqe, (unsigned)src);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, T_IGNORE); /* -ECANCELED when the send failed */
	acc->w[idx].direct_out++;
	return 0;
}

void bt__acc_uring_direct_queue(bt_acceptor_t *acc, unsigned idx, bt_queue_t *q)
{
	bt__tq_set_emitter(q, emit, acc, idx);
}

static void direct_done(bt_acceptor_t *acc, uint64_t data, int res)
{
	unsigned idx = (unsigned)((data >> D_IDX_SHIFT) & 0xfff);
	int src = (int)((data >> D_SRC_SHIFT) & 0xfffff);
	uint64_t n = data >> D_N_SHIFT;
	struct worker *w = &acc->w[idx];
	if (w->direct_out)
		w->direct_out--;
	if (res >= 0) {
		acc->dslots--; /* the linked CLOSE of our slot runs */
		return;
	}
	/* Our slot is still open (the linked CLOSE was cancelled): the item
	 * goes back to be dispatched again. */
	bt__log_errno(BT_LOG_WARN, res, "acceptor: IORING_OP_MSG_RING(slot %d to worker %u)", src,
		      idx);
	if (!w->q || bt__tq_direct_failed(w->q, n, src, res, bt__acc_give_back, acc) < 0) {
		bt__log(BT_LOG_ERROR, "acceptor: slot %d matches no item of worker %u: closed", src,
			idx);
		bt__acc_uring_close_slot(acc, src);
		acc->dslots--;
		acc->st.dropped++;
		return;
	}
	w->full = 1; /* until it acknowledges something */
}

int bt__acc_direct(bt_acceptor_t *acc)
{
	if (acc->ops != &bt__acc_uring_ops)
		return -ENOSYS;
	int rc = bt__ev_direct_usable(acc->ev);
	if (rc < 0)
		return rc;
	/* What the listeners can queue: each at most somaxconn + 1 (the
	 * kernel caps every backlog there), all taken by one accept. */
	unsigned somax = 4096;
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
	if (f) {
		if (fscanf(f, "%u", &somax) != 1)
			somax = 4096;
		fclose(f);
	}
	unsigned margin = acc->nl * (somax + 1);
	unsigned n = bt__ev_files_wanted();
	/* Room for that, the backlog and the batches on their way. */
	if ((uint64_t)margin + acc->cfg.max_backlog + 1024 > n)
		return -EMFILE;
	rc = bt__ev_files(acc->ev, n);
	if (rc < 0)
		return rc;
	acc->direct = 1;
	acc->nfiles = n;
	acc->dmargin = margin;
	for (unsigned i = 0; i < acc->nw; i++)
		if (acc->w[i].q && bt_queue_is_thread(acc->w[i].q))
			bt__acc_uring_direct_queue(acc, i, acc->w[i].q);
	return 0;
}

int bt__acc_is_direct(const bt_acceptor_t *acc)
{
	return acc->direct;
}

void bt__acc_uring_cqe(void *ctx, uint64_t data, const struct io_uring_cqe *cqe)
{
	bt_acceptor_t *acc = ctx;
	unsigned tag = (unsigned)(data & TAG_MASK);
	if (tag == T_MISC) {
		if (data == T_CLOSE)
			bt__log_errno(BT_LOG_ERROR, cqe->res, "acceptor: close(held connection)");
		else if (data == T_PASSOVER)
			bt__log_errno(BT_LOG_ERROR, cqe->res,
				      "acceptor: IORING_OP_MSG_RING(pass an item over)");
		return;
	}
	int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
	switch (tag) {
	case T_ACCEPT:
		bt__acc_on_accept(acc, (struct listener *)(uintptr_t)(data & ~TAG_MASK),
				  cqe->res, more, acc->direct ? BT__ITEM_DIRECT : 0);
		break;
	case T_DIRECT:
		direct_done(acc, data, cqe->res);
		break;
	case T_SWEEP: {
		struct listener *l = (struct listener *)(uintptr_t)(data & ~TAG_MASK);
		if (cqe->res >= 0 || (cqe->res != -EAGAIN && cqe->res != -EINVAL))
			bt__acc_on_accept(acc, l, cqe->res, 1, acc->direct ? BT__ITEM_DIRECT : 0);
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
	default:
		break;
	}
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
};
