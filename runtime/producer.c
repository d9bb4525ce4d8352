/* SPDX-License-Identifier: MIT */
/*
 * The runtime as a work queue (baton/runtime.h): a program's producer
 * pushes work items through the acceptor's dispatch (acceptor_dispatch.c)
 * and watches descriptors of its own on the supervisor's loop.
 */
#include "supervisor.h"

#include "acceptor_internal.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

struct bt_runtime_watch {
	struct bt__watch w; /* first: the core needs it 8-aligned */
	bt_runtime_t *rt;
	bt_runtime_watch_fn cb;
	void *arg;
};

int bt_runtime_push(bt_runtime_t *rt, const struct bt_wire_item *it)
{
	if (!rt || !rt->acc)
		return -EINVAL;
	return bt_acceptor_push(rt->acc, it);
}

void bt_runtime_stop(bt_runtime_t *rt)
{
	if (rt && rt->acc)
		bt__sup_drain(rt, "stopped by the program");
}

static void watch_ready(struct bt__watch *core, uint32_t revents)
{
	struct bt_runtime_watch *w = (struct bt_runtime_watch *)core;
	w->cb(w->rt, w, core->fd, revents, w->arg);
}

int bt_runtime_watch_fd(bt_runtime_t *rt, bt_runtime_watch_t **out, int fd, unsigned events,
			bt_runtime_watch_fn cb, void *arg)
{
	if (!rt || !rt->acc || !out || !cb)
		return -EINVAL;
	int rc;
	struct bt_runtime_watch *w =
		bt__ev_user_watch(rt->acc->ev, sizeof(*w), fd, events, watch_ready, &rc);
	if (!w)
		return rc;
	w->rt = rt;
	w->cb = cb;
	w->arg = arg;
	*out = w;
	return 0;
}

void bt_runtime_unwatch(bt_runtime_t *rt, bt_runtime_watch_t *w)
{
	if (rt && rt->acc && w)
		bt__ev_unwatch(rt->acc->ev, &w->w); /* the core frees it */
}

static void on_room(void *ctx)
{
	bt_runtime_t *rt = ctx;
	if (rt->producer.on_room)
		rt->producer.on_room(rt, rt->user);
}

int bt__sup_producer_start(bt_runtime_t *rt)
{
	if (!rt->has_producer || rt->draining)
		return 0;
	int rc = rt->producer.start(rt, rt->user);
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "the producer could not start");
		rt->start_failed = 1;
		bt__sup_drain(rt, "producer failure");
	}
	return rc;
}

void bt__sup_producer_config(bt_runtime_t *rt, struct bt_acceptor_config *ac)
{
	if (rt->has_producer)
		ac->on_room = on_room;
}

void bt__sup_worker_gone(bt_runtime_t *rt, unsigned slot)
{
	if (rt->has_producer && rt->producer.on_worker_gone && !rt->draining)
		rt->producer.on_worker_gone(rt, slot, rt->user);
}
