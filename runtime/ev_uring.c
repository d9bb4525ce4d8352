/* SPDX-License-Identifier: MIT */
/*
 * The event core on io_uring (see ev.h).
 *
 * Ring set-up: SINGLE_ISSUER|DEFER_TASKRUN (6.1+): completions are
 * processed only when the owner enters the kernel, so a busy loop is not
 * interrupted by task work; else COOP_TASKRUN (5.19+); else no flags.
 * -EINVAL from the kernel means "flag unknown here": try the next set.
 * Anything else (EPERM from kernel.io_uring_disabled or seccomp, ENOSYS,
 * ENOMEM from memlock limits) is returned, and the caller falls back to
 * epoll.
 *
 * No ring is inherited by fork(): its mappings are MADV_DONTFORK and its fd
 * is O_CLOEXEC (and closed by a worker at start).  A child that kept a
 * mapping would keep the whole ring alive after its owner died, with
 * every request in flight: a pending ACCEPT keeps the listener open and a
 * pending RECVMSG keeps a channel from ever reaching EOF.  (Found when a
 * supervisor killed with SIGKILL left its workers running and its port
 * bound.)
 *
 * The timer: one TIMEOUT at a time, on CLOCK_MONOTONIC absolute time,
 * moved with TIMEOUT_UPDATE when the next deadline changes: a timer armed
 * per batch and left to fire after the batch went out anyway would cost
 * the acceptor one useless wake-up per batch.  Updates skip their own
 * completion.
 *
 * Watches: a single-shot POLL_ADD, armed again after each callback: that
 * is level-triggered (a poll on a ready fd completes at once), as epoll's
 * watches are.
 */
#include "ev.h"

#include "internal.h"

#include <baton/loop.h>

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>

#define TIMER_IDLE_NS 10000000000ull /* nothing due: park the timer 10 s out */
#define TIMER_SLACK_NS 20000ull       /* close enough: leave it */

int bt__ev_uring_init(struct bt__ev *ev, unsigned entries, unsigned cq_entries)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = cq_entries;
		rc = io_uring_queue_init_params(entries, &ev->ring, &p);
		if (rc == -EINVAL)
			continue;
		if (rc < 0)
			return rc;
		rc = io_uring_ring_dontfork(&ev->ring);
		if (rc < 0) {
			bt__log_errno(BT_LOG_ERROR, rc, "madvise(io_uring ring, MADV_DONTFORK)");
			io_uring_queue_exit(&ev->ring);
			return rc;
		}
		ev->kind = BT_BACKEND_URING;
		ev->name = "io_uring";
		return 0;
	}
	return rc;
}

void bt__ev_uring_fini(struct bt__ev *ev)
{
	io_uring_queue_exit(&ev->ring);
	ev->timer_armed = 0;
}

static void set_timer(struct bt__ev *ev, uint64_t deadline_ns, uint64_t now)
{
	uint64_t want = deadline_ns ? deadline_ns : now + TIMER_IDLE_NS;
	if (ev->timer_armed) {
		uint64_t d = want > ev->armed_deadline ? want - ev->armed_deadline
						       : ev->armed_deadline - want;
		if (d <= TIMER_SLACK_NS || (!deadline_ns && ev->armed_deadline > now))
			return;
		struct io_uring_sqe *sqe = bt__ev_sqe(ev);
		if (!sqe)
			return;
		ev->uts.tv_sec = (long long)(want / 1000000000ull);
		ev->uts.tv_nsec = (long long)(want % 1000000000ull);
		io_uring_prep_timeout_update(sqe, &ev->uts, (uint64_t)(uintptr_t)ev,
					     IORING_TIMEOUT_ABS);
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
		io_uring_sqe_set_data64(sqe, 0);
		ev->armed_deadline = want;
		return;
	}
	if (!deadline_ns)
		return;
	struct io_uring_sqe *sqe = bt__ev_sqe(ev);
	if (!sqe)
		return;
	ev->ts.tv_sec = (long long)(want / 1000000000ull);
	ev->ts.tv_nsec = (long long)(want % 1000000000ull);
	io_uring_prep_timeout(sqe, &ev->ts, 0, IORING_TIMEOUT_ABS);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)ev);
	ev->timer_armed = 1;
	ev->armed_deadline = want;
}

static int arm_watch(struct bt__ev *ev, struct bt__watch *w)
{
	struct io_uring_sqe *sqe = bt__ev_sqe(ev);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, w->fd, w->events);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)w);
	w->inflight = 1;
	return 0;
}

int bt__ev_uring_watch(struct bt__ev *ev, struct bt__watch *w)
{
	return arm_watch(ev, w);
}

void bt__ev_uring_unwatch(struct bt__ev *ev, struct bt__watch *w)
{
	if (!w->inflight)
		return;
	/* The poll's own completion (-ECANCELED) says when it is gone. */
	struct io_uring_sqe *sqe = bt__ev_sqe(ev);
	if (!sqe)
		return; /* it completes anyway when the fd is ready or closed */
	io_uring_prep_poll_remove(sqe, (uint64_t)(uintptr_t)w);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, 0);
}

static void on_watch(struct bt__ev *ev, struct bt__watch *w, int res)
{
	w->inflight = 0;
	if (w->dead || res == -ECANCELED)
		return;
	if (res < 0) {
		/* -EBADF: the fd was closed while watched.  Said once; the
		 * owner unwatches. */
		bt__log_errno(BT_LOG_WARN, res, "%s: poll(fd %d)", ev->who, w->fd);
		w->cb(w, BT__EV_ERR);
		return;
	}
	w->cb(w, (uint32_t)res & (BT__EV_IN | BT__EV_OUT | BT__EV_ERR | BT__EV_HUP));
	if (!w->dead && !w->inflight && arm_watch(ev, w) < 0)
		bt__log(BT_LOG_ERROR, "%s: no SQE to watch fd %d again", ev->who, w->fd);
}

static void handle(struct bt__ev *ev, const struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	if (data & BT__EV_TAG_MASK) {
		ev->cl.on_cqe(ev->cl.ctx, data, cqe);
		return;
	}
	if (data == 0) /* ignored: cancels and updates that failed */
		return;
	if (data == (uint64_t)(uintptr_t)&ev->install_tok) {
		/* An install whose completion bt__ev_install did not find (the
		 * CQ was full): nobody has its descriptor. */
		if (cqe->res >= 0)
			bt__close(cqe->res);
		return;
	}
	if (data == (uint64_t)(uintptr_t)ev) {
		/* -ETIME: it fired.  An update does not end it (no CQE). */
		if (cqe->res != -ECANCELED)
			ev->timer_armed = 0;
		return;
	}
	on_watch(ev, (struct bt__watch *)(uintptr_t)data, cqe->res);
}

/* --- direct descriptors --------------------------------------------------- */

int bt__ev_direct_usable(struct bt__ev *ev)
{
	if (ev->kind != BT_BACKEND_URING)
		return -ENOSYS;
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ev->ring);
	if (!probe)
		return -ENOMEM;
	int ok = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) &&
		 io_uring_opcode_supported(probe, BT__IORING_OP_FIXED_FD_INSTALL);
	io_uring_free_probe(probe);
	return ok ? 0 : -ENOSYS;
}

unsigned bt__ev_files_wanted(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > BT__DIRECT_MAX_FILES)
		return BT__DIRECT_MAX_FILES;
	return (unsigned)rl.rlim_cur;
}

int bt__ev_files(struct bt__ev *ev, unsigned n)
{
	if (ev->kind != BT_BACKEND_URING || n == 0)
		return -EINVAL;
	int rc = io_uring_register_files_sparse(&ev->ring, n);
	if (rc < 0)
		return rc;
	ev->nfiles = n;
	return 0;
}

/*
 * The install's completion is found among those not yet handled: the
 * operation runs inline during the submission (it cannot block), so its
 * completion is posted before io_uring_enter returns.  It is taken out of
 * the CQ by zeroing its user_data, which the core ignores, so that a
 * handler's caller iterating the CQ (bt__ev_uring_wait) goes on
 * undisturbed.  If the CQ was full, the completion waits in the kernel's
 * overflow list: then it is not found here, and handle() closes the fd
 * when it comes.
 */
int bt__ev_install(struct bt__ev *ev, int index)
{
	if (ev->kind != BT_BACKEND_URING || index < 0)
		return -EINVAL;
	struct io_uring_sqe *sqe = bt__ev_sqe(ev);
	if (!sqe)
		return bt__log_errno(BT_LOG_ERROR, -EBUSY, "%s: no SQE to install a direct descriptor",
				     ev->who);
	uint64_t tok = (uint64_t)(uintptr_t)&ev->install_tok;
	io_uring_prep_rw(BT__IORING_OP_FIXED_FD_INSTALL, sqe, index, NULL, 0, 0);
	sqe->flags |= IOSQE_FIXED_FILE;
	sqe->rw_flags = 0; /* install_fd_flags: O_CLOEXEC */
	io_uring_sqe_set_data64(sqe, tok);
	for (int tries = 0; tries < 2; tries++) {
		int rc = io_uring_submit_and_get_events(&ev->ring);
		if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
			return bt__log_errno(BT_LOG_ERROR, rc, "%s: io_uring_enter (install slot %d)",
					     ev->who, index);
		struct io_uring_cqe *cqe;
		unsigned head;
		io_uring_for_each_cqe(&ev->ring, head, cqe) {
			if (cqe->user_data != tok)
				continue;
			int res = cqe->res;
			cqe->user_data = 0;
			if (res < 0)
				bt__log_errno(BT_LOG_ERROR, res,
					      "%s: IORING_OP_FIXED_FD_INSTALL(slot %d)", ev->who, index);
			return res;
		}
	}
	return bt__log_errno(BT_LOG_ERROR, -EBUSY,
			     "%s: IORING_OP_FIXED_FD_INSTALL(slot %d): completion queue full",
			     ev->who, index);
}

int bt__ev_uring_wait(struct bt__ev *ev, uint64_t deadline_ns, int nowait)
{
	/* The clock of the last wake-up, not a fresh read (one clock read per
	 * wake-up, on the hot path): a deadline that passed since then gets an
	 * absolute TIMEOUT already due, which completes at once. */
	uint64_t now = ev->now_ns;
	int rc;
	if (nowait || (deadline_ns && deadline_ns <= now)) {
		/* Due now: do not sleep, but do reap.  Under DEFER_TASKRUN a
		 * plain submit runs no task work, so completions would never
		 * be posted and a loop of due-now wake-ups would spin without
		 * seeing them. */
		rc = io_uring_submit_and_get_events(&ev->ring);
	} else {
		set_timer(ev, deadline_ns, now);
		rc = io_uring_submit_and_wait(&ev->ring, 1);
	}
	if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EBUSY && rc != -EAGAIN)
		return bt__log_errno(BT_LOG_ERROR, rc, "%s: io_uring_submit_and_wait", ev->who);
	ev->now_ns = bt__now_ns();
	if (ev->cl.on_wake)
		ev->cl.on_wake(ev->cl.ctx);
	/* Handlers may queue SQEs; they go out with the next wait. */
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&ev->ring, head, cqe) {
			handle(ev, cqe);
			n++;
		}
		if (!n)
			break;
		io_uring_cq_advance(&ev->ring, n);
	}
	bt__ev_after(ev);
	return 0;
}
