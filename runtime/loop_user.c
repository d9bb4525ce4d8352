/* SPDX-License-Identifier: MIT */
/*
 * The application's timers and fd watches on a worker loop: handles over
 * the event core's timers and watches (ev.h), with the rule that a handle
 * may be stopped from any callback, its own included (it is freed after
 * that callback returns).
 */
#include "loop_internal.h"

#include "internal.h"

#include <errno.h>
#include <stdlib.h>

struct bt_timer {
	struct bt__timer t;
	bt_loop_t *loop;
	bt_timer_fn cb;
	void *arg;
	struct bt_timer *prev, *next; /* the loop's list: freed at destroy */
	uint8_t running;  /* its callback is on the stack */
	uint8_t stopped;  /* stopped in its callback: free on return */
	uint8_t autofree; /* one-shot without a handle */
};

struct bt_watch {
	struct bt__watch w; /* first: the core needs it 8-aligned */
	bt_loop_t *loop;
	bt_watch_fn cb;
	void *arg;
};

static void timer_free(struct bt_timer *t)
{
	bt_loop_t *loop = t->loop;
	if (t->prev)
		t->prev->next = t->next;
	else
		loop->timers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	free(t);
}

static void timer_fire(struct bt__timer *core, void *arg)
{
	struct bt_timer *t = arg;
	(void)core;
	t->running = 1;
	t->cb(t->loop, t, t->arg);
	t->running = 0;
	if (t->stopped || (t->autofree && !bt__timer_armed(&t->t)))
		timer_free(t);
}

int bt_loop_timer_start(bt_loop_t *loop, bt_timer_t **out, uint64_t ms, uint64_t repeat_ms,
			bt_timer_fn cb, void *arg)
{
	if (!loop || !cb || (!out && repeat_ms) || ms > UINT64_MAX / 1000000ull / 2 ||
	    repeat_ms > UINT64_MAX / 1000000ull / 2)
		return -EINVAL;
	struct bt_timer *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->loop = loop;
	t->cb = cb;
	t->arg = arg;
	t->autofree = out == NULL;
	t->t.cb = timer_fire;
	t->t.arg = t;
	int rc = bt__timer_start(&loop->ev->timers, &t->t, bt__now_ns() + ms * 1000000ull,
				 repeat_ms * 1000000ull);
	if (rc < 0) {
		free(t);
		return rc;
	}
	t->next = loop->timers;
	if (t->next)
		t->next->prev = t;
	loop->timers = t;
	if (out)
		*out = t;
	return 0;
}

void bt_loop_timer_stop(bt_loop_t *loop, bt_timer_t *t)
{
	if (!loop || !t || t->stopped)
		return;
	bt__timer_stop(&loop->ev->timers, &t->t);
	if (t->running)
		t->stopped = 1;
	else
		timer_free(t);
}

void bt__loop_users_fini(bt_loop_t *loop)
{
	while (loop->timers) {
		struct bt_timer *t = loop->timers;
		bt__timer_stop(&loop->ev->timers, &t->t);
		timer_free(t);
	}
}

static void watch_ready(struct bt__watch *core, uint32_t revents)
{
	struct bt_watch *w = (struct bt_watch *)core;
	w->cb(w->loop, w, core->fd, revents, w->arg);
}

int bt_loop_watch_fd(bt_loop_t *loop, bt_watch_t **out, int fd, unsigned events, bt_watch_fn cb,
		     void *arg)
{
	if (!loop || !out || !cb)
		return -EINVAL;
	int rc;
	struct bt_watch *w = bt__ev_user_watch(loop->ev, sizeof(*w), fd, events, watch_ready, &rc);
	if (!w)
		return rc;
	w->loop = loop;
	w->cb = cb;
	w->arg = arg;
	*out = w;
	return 0;
}

void bt_loop_unwatch(bt_loop_t *loop, bt_watch_t *w)
{
	if (!loop || !w)
		return;
	bt__ev_unwatch(loop->ev, &w->w); /* the core frees it */
}
