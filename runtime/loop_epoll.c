/* SPDX-License-Identifier: MIT */
/*
 * The worker loop on epoll, for where io_uring cannot be used
 * (kernel.io_uring_disabled, a container's seccomp profile, memlock limits)
 * or BATON_BACKEND=epoll.  Level-triggered; sockets non-blocking.
 *
 * A connection's registration is removed (EPOLL_CTL_DEL) before its fd is
 * closed: the acceptor may still hold a reference to the same open file,
 * and epoll forgets a registration only when the file itself goes away.
 */
#include "loop_internal.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

struct ep {
	int epfd;
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
	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!e->buf || e->epfd < 0) {
		int err = e->epfd < 0 ? -errno : -ENOMEM;
		if (e->epfd >= 0)
			close(e->epfd);
		free(e->buf);
		free(e);
		return bt__log_errno(BT_LOG_ERROR, err, "epoll_create1");
	}
	int chfd = loop->cfg.queue ? bt_queue_wake_fd(loop->cfg.queue) : bt_fdpass_fd(loop->cfg.channel);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = loop};
	if ((!loop->cfg.queue && bt_fdpass_set_nonblock(loop->cfg.channel, 1) < 0) ||
	    epoll_ctl(e->epfd, EPOLL_CTL_ADD, chfd, &ev) < 0) {
		int err = -errno;
		close(e->epfd);
		free(e->buf);
		free(e);
		return bt__log_errno(BT_LOG_ERROR, err, "epoll_ctl(ADD channel)");
	}
	loop->backend = e;
	return 0;
}

static void ep_fini(bt_loop_t *loop)
{
	struct ep *e = loop->backend;
	if (!e)
		return;
	close(e->epfd);
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
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(ADD connection)");
	c->reading = 1;
	return 0;
}

static void want_out(struct ep *e, bt_conn_t *c, int on)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c};
	if (epoll_ctl(e->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(MOD connection)");
}

static void ep_conn_flush(bt_loop_t *loop, bt_conn_t *c)
{
	struct ep *e = loop->backend;
	if (c->writing)
		return; /* the loop below is already at it */
	c->writing = 1;
	int blocked = 0;
	while (c->state != CONN_DONE && c->off < c->olen) {
		ssize_t n = send(c->fd, c->out + c->off, c->olen - c->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT | bt__conn_last_send_flags(c));
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
		bt__conn_sent(c, (size_t)n); /* may swap in more, or finish */
	}
	c->writing = 0;
	if (c->state == CONN_DONE)
		return;
	if (blocked != c->closing_op) { /* closing_op doubles as "EPOLLOUT on" */
		want_out(e, c, blocked);
		c->closing_op = (uint8_t)blocked;
	}
}

static void ep_conn_finish(bt_loop_t *loop, bt_conn_t *c, int abort)
{
	struct ep *e = loop->backend;
	(void)abort;
	if (!c->fd_open)
		return;
	if (c->reading && epoll_ctl(e->epfd, EPOLL_CTL_DEL, c->fd, NULL) < 0)
		bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(DEL connection)");
	c->reading = 0;
	shutdown(c->fd, SHUT_RDWR); /* FIN now, whoever else holds the socket */
	bt__close(c->fd);
	c->fd_open = 0;
	bt__conn_maybe_free(c);
}

static void on_readable(bt_loop_t *loop, struct ep *e, bt_conn_t *c)
{
	ssize_t n;
	do
		n = recv(c->fd, e->buf, e->bufsize, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		loop->st.bytes_in += (uint64_t)n;
		if (c->state == CONN_OPEN)
			loop->h->on_data(c, e->buf, (size_t)n);
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
		struct epoll_event ev = {.events = c->closing_op ? EPOLLOUT : 0, .data.ptr = c};
		epoll_ctl(e->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	}
}

static int ep_run(bt_loop_t *loop)
{
	struct ep *e = loop->backend;
	struct epoll_event evs[256];
	struct epoll_event pev = {.events = EPOLLIN, .data.ptr = &loop->sink};
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, bt_pool_sink_fd(loop->sink), &pev) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(ADD job completions)");
	for (;;) {
		while (loop->cfg.queue && !bt_queue_idle(loop->cfg.queue)) {
			bt__loop_consume(loop);
			bt__loop_flush(loop);
		}
		int timeout = (loop->conns || loop->draining) ? 100 : -1;
		int n = epoll_wait(e->epfd, evs, 256, timeout);
		if (n < 0) {
			if (errno == EINTR)
				n = 0;
			else
				return bt__log_errno(BT_LOG_ERROR, -errno, "worker %d: epoll_wait",
						     loop->cfg.worker_id);
		}
		if (loop->cfg.queue)
			bt_queue_awake(loop->cfg.queue);
		loop->now_ns = bt__now_ns();
		loop->st.wakeups++;
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == (void *)&loop->sink) {
				bt_pool_sink_run(loop->sink);
				continue;
			}
			if (evs[i].data.ptr == loop && loop->cfg.queue) {
				bt__loop_consume(loop);
				continue;
			}
			if (evs[i].data.ptr == loop) {
				for (;;) {
					struct bt_wire_msg msg;
					int rc = bt_fdpass_recv(loop->cfg.channel, &msg);
					if (rc == -EAGAIN)
						break;
					if (bt__loop_on_channel(loop, rc, &msg)) {
						epoll_ctl(e->epfd, EPOLL_CTL_DEL,
							  bt_fdpass_fd(loop->cfg.channel), NULL);
						break;
					}
				}
				continue;
			}
			bt_conn_t *c = evs[i].data.ptr;
			if (c->state == CONN_DONE)
				continue;
			if (evs[i].events & EPOLLOUT)
				ep_conn_flush(loop, c);
			if (c->state != CONN_DONE && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
				on_readable(loop, e, c);
		}
		if (bt__loop_tick(loop))
			return 0;
	}
}

const struct loop_ops bt__loop_epoll_ops = {
	.name = "epoll",
	.init = ep_init,
	.fini = ep_fini,
	.run = ep_run,
	.conn_start = ep_conn_start,
	.conn_flush = ep_conn_flush,
	.conn_finish = ep_conn_finish,
};
