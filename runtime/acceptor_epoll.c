/* SPDX-License-Identifier: MIT */
/*
 * The acceptor on epoll, where io_uring cannot be used (or
 * BATON_BACKEND=epoll): accept4 on readable listeners, sendmsg with
 * MSG_DONTWAIT for batches (completing at once), channels and watches
 * polled for input.  Level-triggered: a listener that must pause (EMFILE,
 * full backlog, drain) is taken out of the interest set so it cannot spin.
 * The epoll set, its wait, timers and watches are the event core's
 * (ev_epoll.c).
 */
#include "acceptor_internal.h"

#include "ev.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { E_LISTENER = 1, E_CHANNEL = 2 };
#define TAG_BITS 3
#define TAG_MASK 7ull

struct acce {
	int epfd; /* the core's */
	uint8_t registered[BT_MAX_LISTENERS];
};

static int ae_init(bt_acceptor_t *acc)
{
	struct acce *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->epfd = acc->ev->epfd;
	acc->backend = e;
	return 0;
}

static void ae_fini(bt_acceptor_t *acc)
{
	free(acc->backend);
	acc->backend = NULL;
}

static int set_listener(bt_acceptor_t *acc, struct listener *l, int on)
{
	struct acce *e = acc->backend;
	unsigned i = (unsigned)(l - acc->l);
	struct epoll_event ev = {.events = on ? EPOLLIN : 0,
				 .data.u64 = ((uint64_t)i << TAG_BITS) | E_LISTENER};
	int op = e->registered[i] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(e->epfd, op, l->fd, &ev) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(listener %d)", l->fd);
	e->registered[i] = 1;
	return 0;
}

static int ae_arm_listener(bt_acceptor_t *acc, struct listener *l)
{
	int rc = set_listener(acc, l, 1);
	if (rc == 0)
		l->armed = 1;
	return rc;
}

static void ae_close_listener(bt_acceptor_t *acc, struct listener *l)
{
	struct acce *e = acc->backend;
	unsigned i = (unsigned)(l - acc->l);
	if (e->registered[i])
		epoll_ctl(e->epfd, EPOLL_CTL_DEL, l->fd, NULL);
	e->registered[i] = 0;
	l->armed = 0;
	bt__close(l->fd);
}

static void ae_send(bt_acceptor_t *acc, unsigned idx, struct msghdr *msg)
{
	int fd = bt_fdpass_fd(bt_queue_channel(acc->w[idx].q));
	ssize_t n;
	do
		n = sendmsg(fd, msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	bt__acc_send_done(acc, idx, n < 0 ? -errno : (long)n);
}

static void ae_arm_channel(bt_acceptor_t *acc, unsigned idx)
{
	struct acce *e = acc->backend;
	struct worker *w = &acc->w[idx];
	bt_fdpass_t *ch = bt_queue_channel(w->q);
	bt_fdpass_set_nonblock(ch, 1);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)idx << TAG_BITS) | E_CHANNEL};
	if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, bt_fdpass_fd(ch), &ev) < 0) {
		bt__log_errno(BT_LOG_ERROR, -errno, "epoll_ctl(ADD channel of worker %u)", idx);
		return;
	}
	w->chan_armed = 1;
}

static void ae_forget_channel(bt_acceptor_t *acc, unsigned idx)
{
	struct acce *e = acc->backend;
	if (acc->w[idx].q)
		epoll_ctl(e->epfd, EPOLL_CTL_DEL, bt_fdpass_fd(bt_queue_channel(acc->w[idx].q)), NULL);
}

static void on_listener(bt_acceptor_t *acc, struct listener *l)
{
	bt__acc_accept_burst(acc, l, 0); /* an error disarms it */
	if (!l->closing && (acc->paused || acc->standby || acc->emfile_until_ns || !l->armed)) {
		set_listener(acc, l, 0); /* re-armed by the core when it may */
		l->armed = 0;
	}
}

void bt__acc_epoll_event(void *ctx, uint64_t data, uint32_t events)
{
	bt_acceptor_t *acc = ctx;
	(void)events;
	switch (data & TAG_MASK) {
	case E_LISTENER:
		on_listener(acc, &acc->l[data >> TAG_BITS]);
		break;
	case E_CHANNEL: {
		unsigned idx = (unsigned)(data >> TAG_BITS);
		struct worker *w = &acc->w[idx];
		if (!w->q || !w->chan_armed)
			break;
		struct bt_wire_msg msg;
		int rc = bt_fdpass_recv(bt_queue_channel(w->q), &msg);
		if (!bt__acc_on_channel(acc, idx, rc, &msg))
			ae_forget_channel(acc, idx);
		else
			w->chan_armed = 1;
		break;
	}
	}
}

const struct acc_ops bt__acc_epoll_ops = {
	.name = "epoll",
	.init = ae_init,
	.fini = ae_fini,
	.arm_listener = ae_arm_listener,
	.close_listener = ae_close_listener,
	.send = ae_send,
	.arm_channel = ae_arm_channel,
	.forget_channel = ae_forget_channel,
};
