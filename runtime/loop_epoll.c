/* SPDX-License-Identifier: MIT */
/*
 * The worker loop on epoll, for where io_uring cannot be used
 * (kernel.io_uring_disabled, a container's seccomp profile, memlock limits)
 * or BATON_BACKEND=epoll.  Level-triggered; sockets non-blocking.  The
 * epoll set, its wait and the timers are the event core's (ev_epoll.c).
 *
 * data: the conn pointer tagged E_CONN, an inlet tagged E_CHANNEL (each of
 * the loop's), the loop tagged E_SINK (tag 0 is the core's).
 *
 * A connection's registration is removed (EPOLL_CTL_DEL) before its fd is
 * closed: the acceptor may still hold a reference to the same open file,
 * and epoll forgets a registration only when the file itself goes away.
 */
#include "loop_internal.h"

#include "ev.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes one connection may send in one go before the loop turns to the
 * others. */
#define FLUSH_BUDGET ((size_t)1 << 20)

enum { E_CONN = 1, E_CHANNEL = 2, E_SINK = 3 };
#define TAG_MASK 7ull

struct ep {
	int epfd; /* the core's */
	unsigned char *buf;
	size_t bufsize;
};

static int ep_init(bt_loop_t *loop)
{
	struct ep *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->bufsize = loop->cfg.buf_size;
	e->buf = malloc(e->bufsize);
	e->epfd = loop->ev->epfd;
	if (!e->buf) {
		free(e);
		return -ENOMEM;
	}
	struct epoll_event pev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)loop | E_SINK};
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, bt_pool_sink_fd(loop->sink), &pev) < 0) {
		int err = -errno;
		free(e->buf);
		free(e);
		return bt__log_errno(BT_LOG_ERROR, err, "epoll_ctl(ADD job completions)");
	}
	loop->backend = e;
	return 0;
}

/* Watch an inlet's channel (or its ring's wake-up fd); its events name
 * the inlet. */
static int ep_inlet_add(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	struct ep *e = loop->backend;
	int chfd = in->q ? bt_queue_wake_fd(in->q) : bt_fdpass_fd(in->ch);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)in | E_CHANNEL};
	if (!in->q) {
		int rc = bt_fdpass_set_nonblock(in->ch, 1);
		if (rc < 0)
			return bt__log_errno(BT_LOG_ERROR, rc, "fcntl(channel, O_NONBLOCK)");
	}
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, chfd, &ev) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(ADD channel)");
	return 0;
}

static void ep_fini(bt_loop_t *loop)
{
	struct ep *e = loop->backend;
	if (!e)
		return;
	free(e->buf);
	free(e);
	loop->backend = NULL;
}

static int ep_conn_start(bt_loop_t *loop, bt_conn_t *c)
{
	struct ep *e = loop->backend;
	int fl = fcntl(c->fd, F_GETFL);
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "fcntl(connection, O_NONBLOCK)");
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)(uintptr_t)c | E_CONN};
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(ADD connection)");
	c->registered = 1;
	c->reading = 1;
	return 0;
}

/* The events a connection waits for: input unless reading is paused or
 * the peer has finished sending (c->reading cleared), output while a send
 * is blocked (c->pollout). */
static void ep_sync(struct ep *e, bt_conn_t *c)
{
	uint32_t want = (c->reading && !c->paused ? EPOLLIN | EPOLLRDHUP : 0) |
			(c->pollout ? EPOLLOUT : 0);
	struct epoll_event ev = {.events = want, .data.u64 = (uint64_t)(uintptr_t)c | E_CONN};
	if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(MOD connection)");
}

static void ep_conn_pause(bt_loop_t *loop, bt_conn_t *c)
{
	if (c->fd_open)
		ep_sync(loop->backend, c);
}

static void ep_conn_flush(bt_loop_t *loop, bt_conn_t *c)
{
	struct ep *e = loop->backend;
	if (c->writing)
		return; /* the loop below is already at it */
	c->writing = 1;
	int blocked = 0;
	size_t len, sent = 0;
	int flags;
	const char *p;
	while (c->state != CONN_DONE && (p = bt__conn_next_send(c, &len, &flags))) {
		if (sent >= FLUSH_BUDGET) {
			/* Fairness: a fast reader of a long response (a file
			 * in the page cache) would keep this loop here, with
			 * every other connection and the heartbeat waiting.
			 * Go on at the next wake-up: EPOLLOUT is ready at once. */
			blocked = 1;
			break;
		}
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT | flags);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				blocked = 1;
				break;
			}
			c->writing = 0;
			bt__conn_ended(c, -errno);
			return;
		}
		sent += (size_t)n;
		bt__conn_sent(c, (size_t)n); /* may queue more, call back, or finish */
	}
	c->writing = 0;
	if (c->state == CONN_DONE)
		return;
	if (blocked != c->pollout) {
		c->pollout = (uint8_t)blocked;
		ep_sync(e, c);
	}
	/* Sends done: a close waiting for them can finish. */
	if (c->state == CONN_CLOSING && c->out_bytes == 0)
		bt__conn_finish(c, c->abort_reason, c->abort_reason != 0);
}

/* A handover: out of the epoll set; the socket itself is not touched. */
static void ep_conn_detach(bt_loop_t *loop, bt_conn_t *c)
{
	struct ep *e = loop->backend;
	if (c->registered && epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL) < 0)
		bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(DEL connection)");
	c->registered = 0;
	c->reading = 0;
}

static void ep_conn_finish(bt_loop_t *loop, bt_conn_t *c, int abort)
{
	struct ep *e = loop->backend;
	(void)abort;
	if (!c->fd_open)
		return;
	if (c->registered && epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL) < 0)
		bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(DEL connection)");
	c->registered = 0;
	c->reading = 0;
	shutdown(c->fd, SHUT_RDWR); /* FIN now, whoever else holds the socket */
	bt__close(c->fd);
	c->fd_open = 0;
	bt__conn_maybe_free(c);
}

static void on_readable(struct ep *e, bt_conn_t *c, uint32_t events)
{
	if (c->paused || !c->reading) {
		/* Not reading now: only a broken connection matters (EPOLLERR
		 * and EPOLLHUP are reported whatever the mask). */
		if (events & (EPOLLERR | EPOLLHUP)) {
			int err = 0;
			socklen_t l = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
			bt__conn_ended(c, err ? -err : -ECONNRESET);
		}
		return;
	}
	ssize_t n;
	do
		n = recv(c->fd, e->buf, e->bufsize, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		bt__conn_input(c, e->buf, (size_t)n);
		return;
	}
	if (n < 0 && errno == EAGAIN)
		return;
	int reason = n == 0 ? 0 : -errno;
	if (c->state == CONN_OPEN || reason < 0)
		bt__conn_ended(c, reason);
	if (c->state != CONN_DONE) {
		/* Half-closed by the peer, replies still going out: stop
		 * polling for a readable EOF, keep EPOLLOUT if blocked. */
		c->reading = 0;
		ep_sync(e, c);
	}
}

void bt__loop_epoll_event(void *ctx, uint64_t data, uint32_t events)
{
	bt_loop_t *loop = ctx;
	struct ep *e = loop->backend;
	switch (data & TAG_MASK) {
	case E_SINK:
		bt_pool_sink_run(loop->sink);
		return;
	case E_CHANNEL: {
		bt_queue_inlet_t *in = (bt_queue_inlet_t *)(uintptr_t)(data & ~TAG_MASK);
		if (in->q) {
			bt__loop_consume(loop, in);
			return;
		}
		for (;;) {
			struct bt_wire_msg msg;
			int rc = bt_fdpass_recv(in->ch, &msg);
			if (rc == -EAGAIN)
				break;
			if (bt__loop_on_channel(loop, in, rc, &msg)) {
				epoll_ctl(e->epfd, EPOLL_CTL_DEL, bt_fdpass_fd(in->ch), NULL);
				break;
			}
		}
		return;
	}
	case E_CONN: {
		bt_conn_t *c = (bt_conn_t *)(uintptr_t)(data & ~TAG_MASK);
		if (c->state == CONN_DONE)
			return;
		if (events & EPOLLOUT)
			ep_conn_flush(loop, c);
		if (c->state != CONN_DONE && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			on_readable(e, c, events);
		return;
	}
	}
}

const struct loop_ops bt__loop_epoll_ops = {
	.name = "epoll",
	.init = ep_init,
	.inlet_add = ep_inlet_add,
	.fini = ep_fini,
	.conn_start = ep_conn_start,
	.conn_flush = ep_conn_flush,
	.conn_finish = ep_conn_finish,
	.conn_pause = ep_conn_pause,
	.conn_detach = ep_conn_detach,
};
