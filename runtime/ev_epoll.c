/* SPDX-License-Identifier: MIT */
/*
 * The event core on epoll (see ev.h), for where io_uring cannot be used
 * (kernel.io_uring_disabled, a container's seccomp profile, memlock
 * limits) or BATON_BACKEND=epoll.  Level-triggered.
 *
 * A registration is removed (EPOLL_CTL_DEL) before its fd is closed: the
 * fd's open file may be shared (the acceptor and a worker, dup(2)), and
 * epoll forgets a registration only when the file itself goes away.
 */
#include "ev.h"

#include "internal.h"

#include <baton/loop.h>

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

int bt__ev_epoll_init(struct bt__ev *ev)
{
	ev->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ev->epfd < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "%s: epoll_create1", ev->who);
	ev->kind = BT_BACKEND_EPOLL;
	ev->name = "epoll";
	return 0;
}

void bt__ev_epoll_fini(struct bt__ev *ev)
{
	if (ev->epfd >= 0)
		close(ev->epfd);
	ev->epfd = -1;
}

int bt__ev_epoll_watch(struct bt__ev *ev, struct bt__watch *w)
{
	struct epoll_event e = {.events = w->events, .data.u64 = (uint64_t)(uintptr_t)w};
	if (epoll_ctl(ev->epfd, EPOLL_CTL_ADD, w->fd, &e) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "%s: epoll_ctl(ADD watch fd %d)", ev->who,
				     w->fd);
	return 0;
}

void bt__ev_epoll_unwatch(struct bt__ev *ev, struct bt__watch *w)
{
	/* ENOENT or EBADF: the fd was closed first; nothing is left. */
	if (epoll_ctl(ev->epfd, EPOLL_CTL_DEL, w->fd, NULL) < 0 && errno != ENOENT && errno != EBADF)
		bt__log_errno(BT_LOG_ERROR, -errno, "%s: epoll_ctl(DEL watch fd %d)", ev->who, w->fd);
}

int bt__ev_epoll_wait(struct bt__ev *ev, uint64_t deadline_ns, int nowait)
{
	int timeout = -1;
	if (nowait) {
		timeout = 0;
	} else if (deadline_ns) {
		uint64_t now = bt__now_ns();
		timeout = deadline_ns <= now ? 0 : (int)((deadline_ns - now + 999999) / 1000000);
	}
	struct epoll_event evs[256];
	int n = epoll_wait(ev->epfd, evs, 256, timeout);
	if (n < 0) {
		if (errno != EINTR)
			return bt__log_errno(BT_LOG_ERROR, -errno, "%s: epoll_wait", ev->who);
		n = 0;
	}
	ev->now_ns = bt__now_ns();
	if (ev->cl.on_wake)
		ev->cl.on_wake(ev->cl.ctx);
	for (int i = 0; i < n; i++) {
		uint64_t data = evs[i].data.u64;
		if (data & BT__EV_TAG_MASK) {
			ev->cl.on_event(ev->cl.ctx, data, evs[i].events);
			continue;
		}
		struct bt__watch *w = (struct bt__watch *)(uintptr_t)data;
		if (!w->dead) /* unwatched earlier in this wake-up: still here */
			w->cb(w, evs[i].events & (BT__EV_IN | BT__EV_OUT | BT__EV_ERR | BT__EV_HUP));
	}
	bt__ev_after(ev);
	return 0;
}
