/* SPDX-License-Identifier: MIT */
/*
 * The worker set as threads of the supervisor's process (--mode thread):
 * each worker is a thread with its own loop, fed through a thread-transport
 * queue.  A thread that ends says so on an eventfd; it is joined and its
 * queue's items go to the others.  A thread cannot be killed alone: the
 * watchdog reports a stuck one, and dispatch passes it over.
 */
#include "supervisor.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct thr {
	pthread_t tid;
	int running;          /* the thread exists and has not been joined */
	_Atomic int finished; /* set by the thread as it ends */
	int rc;
	int start_rc;         /* bt_loop_create's result */
	int stuck_now;        /* reported, not yet moving again */
	uint64_t started_ns;
	int restart;          /* start it again once its slot is free (thrs_tick) */
	/* Its queue from each acceptor (q[0]: s->acc's); the acceptors own
	 * them. */
	bt_queue_t *q[BT_RUNTIME_MAX_ACCEPTORS];
	unsigned nq;
	struct bt_runtime *sup;
	unsigned idx;
};

struct thrs {
	int donefd; /* worker threads say they ended */
	/* Each worker thread posts once its loop exists (or failed to), and
	 * the acceptor starts only after all of them.  The threads share the
	 * acceptor's descriptor table: accepting first could take every
	 * descriptor (EMFILE) before a worker has its ring and eventfd,
	 * leaving a server with no worker and no respawn. */
	sem_t ready;
	int ready_init;
	struct thr t[];
};

static struct thrs *T(const struct bt_runtime *s)
{
	return s->set;
}

static void *worker_thread(void *arg)
{
	struct thr *w = arg;
	struct bt_runtime *s = w->sup;
	struct bt_loop_config lc;
	bt__sup_loop_config(s, w->idx, &lc);
	bt_loop_t *loop;
	int rc = bt_queue_inlet_thread(&lc.inlet, w->q[0]);
	if (rc == 0) {
		rc = bt_loop_create(&loop, &lc);
		if (rc < 0)
			bt_queue_inlet_destroy(lc.inlet);
	}
	for (unsigned k = 1; rc == 0 && k < w->nq; k++) {
		bt_queue_inlet_t *in;
		rc = bt_queue_inlet_thread(&in, w->q[k]);
		if (rc == 0) {
			rc = bt_loop_add_inlet(loop, in);
			if (rc < 0)
				bt_queue_inlet_destroy(in);
		}
		if (rc < 0)
			bt_loop_destroy(loop);
	}
	w->start_rc = rc;
	sem_post(&T(s)->ready);
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "worker %u: cannot create its loop", w->idx);
	} else {
		bt__loop_use_mslot(loop, bt__metrics_slot(s->metrics, w->idx));
		rc = bt_loop_run(loop);
		bt_loop_destroy(loop);
	}
	w->rc = rc;
	atomic_store_explicit(&w->finished, 1, memory_order_release);
	uint64_t one = 1;
	ssize_t n = write(T(s)->donefd, &one, sizeof(one));
	(void)n;
	return NULL;
}

/* Worker threads that ended: join them; their queues go (anything left in
 * them is redelivered to the others). */
static void on_thread_done(void *ctx)
{
	struct bt_runtime *s = ctx;
	struct thrs *ts = T(s);
	uint64_t v;
	while (read(ts->donefd, &v, sizeof(v)) == sizeof(v))
		;
	for (unsigned i = 0; i < s->nw; i++) {
		struct thr *w = &ts->t[i];
		if (!w->running || !atomic_load_explicit(&w->finished, memory_order_acquire))
			continue;
		pthread_join(w->tid, NULL);
		w->running = 0;
		bt__accs_detach(s, i);
		bt__metrics_worker_gone(s->metrics, i);
		int retire = s->wc[i].retire;
		s->wc[i].retire = 0;
		if (!s->draining && (retire || i >= s->want) && w->rc == 0) {
			/* It drained alone (control.c): taken away, or replaced. */
			int again = i < s->want;
			bt__log(BT_LOG_INFO, "worker %u (thread) drained: %s", i,
				again ? "replacing it" : "retired");
			w->restart = again;
			continue;
		}
		if (w->rc != 0 || !s->draining)
			bt__log(BT_LOG_ERROR, "worker %u (thread) ended%s: %s", i,
				s->draining ? "" : " while the server runs",
				w->rc ? strerror(-w->rc) : "no error");
		bt__sup_worker_gone(s, i);
	}
	bt__sup_worker_ended(s);
	bt__sup_schedule(s); /* a restart is due (thrs_next_due) */
}

static int thrs_init(struct bt_runtime *s)
{
	struct thrs *ts = calloc(1, sizeof(*ts) + s->maxw * sizeof(ts->t[0]));
	if (!ts)
		return -ENOMEM;
	s->set = ts;
	ts->donefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ts->donefd < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "eventfd");
	int rc = bt_acceptor_watch(s->acc, ts->donefd, on_thread_done, s);
	if (rc < 0)
		return rc;
	if (sem_init(&ts->ready, 0, 0) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "sem_init");
	ts->ready_init = 1;
	return 0;
}

static int thrs_start(struct bt_runtime *s, unsigned idx)
{
	struct thr *w = &T(s)->t[idx];
	int rc = 0;
	w->nq = 0;
	for (unsigned k = 0; rc == 0 && k < bt__accs_count(s); k++) {
		bt_queue_t *q;
		rc = bt_queue_create_thread(&q, &s->qc);
		if (rc < 0) {
			bt__log_errno(BT_LOG_ERROR, rc, "worker %u: bt_queue_create_thread", idx);
			break;
		}
		rc = bt__accs_attach(s, k, idx, q);
		if (rc < 0)
			bt_queue_destroy(q);
		else
			w->q[w->nq++] = q;
	}
	if (rc < 0) {
		bt__accs_detach(s, idx);
		return rc;
	}
	w->sup = s;
	w->idx = idx;
	atomic_store(&w->finished, 0);
	rc = pthread_create(&w->tid, NULL, worker_thread, w);
	if (rc != 0) {
		bt__accs_detach(s, idx);
		return bt__log_errno(BT_LOG_ERROR, -rc, "pthread_create(worker %u)", idx);
	}
	w->running = 1;
	w->started_ns = bt__now_ns();
	char name[32];
	snprintf(name, sizeof(name), "worker %u", idx);
	bt__thread_name(w->tid, name);
	if (s->cfg->pin) {
		cpu_set_t set = bt__sup_cpu(idx);
		int e = pthread_setaffinity_np(w->tid, sizeof(set), &set);
		if (e)
			bt__log_errno(BT_LOG_WARN, -e, "worker %u: pthread_setaffinity_np", idx);
	}
	return 0;
}

static int thrs_ready(struct bt_runtime *s, unsigned n)
{
	struct thrs *ts = T(s);
	for (unsigned i = 0; i < n; i++)
		while (sem_wait(&ts->ready) < 0 && errno == EINTR)
			;
	for (unsigned i = 0; i < n; i++)
		if (ts->t[i].start_rc < 0)
			return -1;
	return 0;
}

static int thrs_alive(const struct bt_runtime *s, unsigned i)
{
	return T(s)->t[i].running;
}

static unsigned thrs_open(const struct bt_runtime *s, unsigned slot)
{
	bt_queue_t *q = bt_acceptor_queue(s->acc, slot);
	return q ? bt_queue_consumer_load(q) : 0;
}

static void thrs_describe(const struct bt_runtime *s, unsigned slot, char *buf, size_t cap)
{
	snprintf(buf, cap, "thread%s", T(s)->t[slot].running ? "" : " (ended)");
}

static void thrs_info(const struct bt_runtime *s, unsigned i, long *pid, uint64_t *started_ns)
{
	*pid = T(s)->t[i].running ? (long)getpid() : 0;
	*started_ns = T(s)->t[i].started_ns;
}

static void thrs_watch(struct bt_runtime *s, unsigned i, uint64_t stalled, uint64_t limit)
{
	struct thr *w = &T(s)->t[i];
	if (stalled <= limit) {
		if (w->stuck_now)
			bt__log(BT_LOG_WARN, "worker %u (thread) moves again", i);
		w->stuck_now = 0;
		return;
	}
	if (w->stuck_now)
		return;
	w->stuck_now = 1;
	s->wc[i].stuck++;
	bt__log(BT_LOG_ERROR,
		"worker %u (thread) has not moved for %llu ms with %u connections: stuck "
		"(--worker-timeout %u); a thread cannot be replaced alone: dispatch "
		"passes it over; restart the server to recover it, or run workers as "
		"processes", i, (unsigned long long)(stalled / 1000000ull), thrs_open(s, i),
		s->cfg->worker_timeout_ms);
}

/* Start worker i again, or as soon as the acceptor has its slot back. */
static int thrs_revive(struct bt_runtime *s, unsigned i)
{
	struct thr *w = &T(s)->t[i];
	if (w->running)
		return 0;
	if (bt__accs_slot_busy(s, i)) {
		w->restart = 1;
		return 0;
	}
	w->restart = 0;
	int rc = thrs_start(s, i);
	if (rc == 0)
		bt__log(BT_LOG_INFO, "worker %u (thread): started", i);
	return rc;
}

/* Threads drain on their own deadline; a drained one due to come back
 * starts once its slot is free. */
static void thrs_tick(struct bt_runtime *s, uint64_t now)
{
	(void)now;
	for (unsigned i = 0; i < s->nw && !s->draining; i++) {
		struct thr *w = &T(s)->t[i];
		if (!w->restart || w->running)
			continue;
		if (i >= s->want) {
			w->restart = 0;
			continue;
		}
		if (!bt__accs_slot_busy(s, i) && thrs_revive(s, i) == 0)
			s->wc[i].restarts++;
	}
}

static uint64_t thrs_next_due(const struct bt_runtime *s)
{
	for (unsigned i = 0; i < s->nw && !s->draining; i++)
		if (T(s)->t[i].restart && !T(s)->t[i].running)
			return bt__now_ns() + 10000000ull; /* its slot is being reclaimed */
	return 0;
}

static void thrs_stop(struct bt_runtime *s)
{
	struct thrs *ts = T(s);
	for (unsigned i = 0; ts && i < s->nw; i++) {
		struct thr *w = &ts->t[i];
		if (!w->running)
			continue;
		/* Still running (a failed start): drain it now. */
		for (unsigned k = 0; k < w->nq; k++) /* the acceptors' loops are over */
			bt_queue_send_drain(w->q[k], 1);
		pthread_join(w->tid, NULL);
		w->running = 0;
	}
}

static void thrs_fini(struct bt_runtime *s)
{
	struct thrs *ts = T(s);
	if (!ts)
		return;
	if (ts->donefd > 0)
		close(ts->donefd);
	if (ts->ready_init)
		sem_destroy(&ts->ready);
	free(ts);
	s->set = NULL;
}

const struct bt__workers_ops bt__workers_thread = {
	.noun = "threads",
	.init = thrs_init,
	.start = thrs_start,
	.ready = thrs_ready,
	.alive = thrs_alive,
	.open = thrs_open,
	.describe = thrs_describe,
	.info = thrs_info,
	.revive = thrs_revive,
	.watch = thrs_watch,
	.reap = NULL,
	.tick = thrs_tick,
	.next_due = thrs_next_due,
	.stop = thrs_stop,
	.fini = thrs_fini,
};
