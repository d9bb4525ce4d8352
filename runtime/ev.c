/* SPDX-License-Identifier: MIT */
/*
 * The event core, backend-independent part: the choice of backend, the
 * timer heap, the list of watches.  See ev.h.
 */
#include "ev.h"

#include "internal.h"

#include <baton/loop.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* --- timers: a binary min-heap on (due_ns, seq) ---------------------------- */

static int before(const struct bt__timer *a, const struct bt__timer *b)
{
	return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void place(struct bt__timers *ts, unsigned i, struct bt__timer *t)
{
	ts->h[i] = t;
	t->idx = i + 1;
}

static void sift_up(struct bt__timers *ts, unsigned i)
{
	struct bt__timer *t = ts->h[i];
	while (i > 0) {
		unsigned p = (i - 1) / 2;
		if (!before(t, ts->h[p]))
			break;
		place(ts, i, ts->h[p]);
		i = p;
	}
	place(ts, i, t);
}

static void sift_down(struct bt__timers *ts, unsigned i)
{
	struct bt__timer *t = ts->h[i];
	for (;;) {
		unsigned c = 2 * i + 1;
		if (c >= ts->n)
			break;
		if (c + 1 < ts->n && before(ts->h[c + 1], ts->h[c]))
			c++;
		if (!before(ts->h[c], t))
			break;
		place(ts, i, ts->h[c]);
		i = c;
	}
	place(ts, i, t);
}

void bt__timer_stop(struct bt__timers *ts, struct bt__timer *t)
{
	if (!t->idx)
		return;
	unsigned i = t->idx - 1;
	t->idx = 0;
	struct bt__timer *last = ts->h[--ts->n];
	if (i == ts->n)
		return;
	place(ts, i, last);
	sift_down(ts, i);
	sift_up(ts, last->idx - 1);
}

int bt__timer_start(struct bt__timers *ts, struct bt__timer *t, uint64_t due_ns,
		    uint64_t period_ns)
{
	bt__timer_stop(ts, t);
	if (ts->n == ts->cap) {
		unsigned cap = ts->cap ? ts->cap * 2 : 64;
		struct bt__timer **h = realloc(ts->h, cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		ts->h = h;
		ts->cap = cap;
	}
	t->due_ns = due_ns;
	t->period_ns = period_ns;
	t->seq = ts->seq++;
	place(ts, ts->n++, t);
	sift_up(ts, ts->n - 1);
	return 0;
}

uint64_t bt__timers_next(const struct bt__timers *ts)
{
	return ts->n ? ts->h[0]->due_ns : 0;
}

void bt__timers_run(struct bt__timers *ts, uint64_t now_ns)
{
	uint64_t first_new = ts->seq; /* armed from here on: next time */
	while (ts->n && ts->h[0]->due_ns <= now_ns && ts->h[0]->seq < first_new) {
		struct bt__timer *t = ts->h[0];
		bt__timer_stop(ts, t);
		if (t->period_ns) {
			uint64_t due = t->due_ns + t->period_ns;
			if (due <= now_ns) /* late: skip the periods missed */
				due += ((now_ns - due) / t->period_ns + 1) * t->period_ns;
			/* Re-arming a stopped timer never allocates (its slot
			 * was just freed), and it is not due again now. */
			bt__timer_start(ts, t, due, t->period_ns);
		}
		t->cb(t, t->arg);
	}
}

void bt__timers_fini(struct bt__timers *ts)
{
	for (unsigned i = 0; i < ts->n; i++)
		ts->h[i]->idx = 0;
	free(ts->h);
	memset(ts, 0, sizeof(*ts));
}

/* --- the backend, chosen once ---------------------------------------------- */

int bt__ev_backend_choice(int want)
{
	if (want != BT_BACKEND_AUTO)
		return want;
	const char *env = getenv("BATON_BACKEND");
	if (!env || !*env)
		return BT_BACKEND_AUTO;
	if (!strcmp(env, "epoll"))
		return BT_BACKEND_EPOLL;
	if (!strcmp(env, "io_uring") || !strcmp(env, "uring"))
		return BT_BACKEND_URING;
	bt__log(BT_LOG_WARN, "BATON_BACKEND=%s: unknown (io_uring or epoll); choosing automatically",
		env);
	return BT_BACKEND_AUTO;
}

int bt__ev_open(struct bt__ev **out, int want, unsigned entries, unsigned cq_entries,
		const struct bt__ev_client *cl, const char *who)
{
	struct bt__ev *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return -ENOMEM;
	ev->cl = *cl;
	ev->epfd = -1;
	ev->now_ns = bt__now_ns();
	snprintf(ev->who, sizeof(ev->who), "%s", who);
	want = bt__ev_backend_choice(want);
	int rc = -ENOSYS;
	if (want != BT_BACKEND_EPOLL) {
		rc = bt__ev_uring_init(ev, entries, cq_entries);
		if (rc == 0 && cl->uring_usable) {
			rc = cl->uring_usable(cl->ctx, &ev->ring);
			if (rc < 0)
				bt__ev_uring_fini(ev);
		}
		if (rc < 0 && want == BT_BACKEND_URING) {
			free(ev);
			return rc;
		}
		if (rc < 0)
			bt__log_errno(BT_LOG_WARN, rc, "%s: io_uring unavailable, using epoll", who);
	}
	if (rc < 0) {
		rc = bt__ev_epoll_init(ev);
		if (rc < 0) {
			free(ev);
			return rc;
		}
	}
	*out = ev;
	return 0;
}

void bt__ev_destroy(struct bt__ev *ev)
{
	if (!ev)
		return;
	if (ev->kind == BT_BACKEND_URING)
		bt__ev_uring_fini(ev);
	else
		bt__ev_epoll_fini(ev);
	/* Nothing is in flight any more: every watch goes. */
	while (ev->watches) {
		struct bt__watch *w = ev->watches;
		ev->watches = w->next;
		w->inflight = 0;
		w->ev = NULL;
		if (w->gone)
			w->gone(w);
	}
	bt__timers_fini(&ev->timers);
	free(ev);
}

int bt__ev_wait(struct bt__ev *ev, uint64_t deadline_ns, int nowait)
{
	uint64_t t = bt__timers_next(&ev->timers);
	if (t && (!deadline_ns || t < deadline_ns))
		deadline_ns = t;
	return ev->kind == BT_BACKEND_URING ? bt__ev_uring_wait(ev, deadline_ns, nowait)
					    : bt__ev_epoll_wait(ev, deadline_ns, nowait);
}

/* --- watches --------------------------------------------------------------- */

int bt__ev_watch(struct bt__ev *ev, struct bt__watch *w)
{
	if (w->fd < 0 || !w->cb || ((uintptr_t)w & BT__EV_TAG_MASK))
		return -EINVAL;
	w->ev = ev;
	w->dead = 0;
	w->inflight = 0;
	int rc = ev->kind == BT_BACKEND_URING ? bt__ev_uring_watch(ev, w) : bt__ev_epoll_watch(ev, w);
	if (rc < 0) {
		w->ev = NULL;
		return rc;
	}
	w->next = ev->watches;
	ev->watches = w;
	return 0;
}

void bt__ev_unwatch(struct bt__ev *ev, struct bt__watch *w)
{
	if (w->dead || w->ev != ev)
		return;
	w->dead = 1;
	ev->ndead++;
	if (ev->kind == BT_BACKEND_URING)
		bt__ev_uring_unwatch(ev, w);
	else
		bt__ev_epoll_unwatch(ev, w);
}

/* Release the unwatched watches nothing names any more. */
static void bury(struct bt__ev *ev)
{
	for (struct bt__watch **p = &ev->watches; *p && ev->ndead;) {
		struct bt__watch *w = *p;
		if (!w->dead || w->inflight) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		ev->ndead--;
		w->ev = NULL;
		if (w->gone)
			w->gone(w);
	}
}

void bt__ev_after(struct bt__ev *ev)
{
	bt__timers_run(&ev->timers, ev->now_ns);
	if (ev->ndead)
		bury(ev);
}

static void user_watch_gone(struct bt__watch *w)
{
	free(w);
}

void *bt__ev_user_watch(struct bt__ev *ev, size_t size, int fd, unsigned events,
			void (*cb)(struct bt__watch *w, uint32_t revents), int *rc)
{
	*rc = bt__ev_user_check(fd, events);
	if (*rc < 0)
		return NULL;
	struct bt__watch *w = calloc(1, size);
	if (!w) {
		*rc = -ENOMEM;
		return NULL;
	}
	w->fd = fd;
	w->events = events;
	w->cb = cb;
	w->gone = user_watch_gone;
	*rc = bt__ev_watch(ev, w);
	if (*rc < 0) {
		free(w);
		return NULL;
	}
	return w;
}

int bt__ev_user_check(int fd, unsigned events)
{
	if (fd < 0 || !events || (events & ~(unsigned)(BT_WATCH_IN | BT_WATCH_OUT)))
		return -EINVAL;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))
		return -EPERM;
	return 0;
}
