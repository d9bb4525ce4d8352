/* SPDX-License-Identifier: MIT */
/*
 * Job offload (baton/pool.h): a bounded FIFO of jobs, N threads, and
 * per-thread sinks where finished jobs wait for their done() call.
 *
 * Lock order: pool->mu, then sink->mu; never the other way.  A job is in
 * exactly one place: the pool's queue (QUEUED), a pool thread (RUNNING), or
 * its sink's done list (DONE), so it completes exactly once.  Its memory is
 * freed by bt_pool_sink_run after done() returns.
 */
#include <baton/pool.h>

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

enum { J_QUEUED, J_RUNNING, J_DONE };

struct bt_job {
	bt_job_t *prev, *next;
	bt_work_fn work;
	bt_done_fn done;
	void *arg;
	bt_pool_sink_t *sink;
	int state;
	int status;
};

struct bt_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bt_job_t *head, *tail;
	unsigned nqueued, max_queued;
	int stopping;
	pthread_t *threads;
	unsigned nthreads;
};

struct bt_pool_sink {
	pthread_mutex_t mu;
	bt_job_t *head, *tail; /* finished, waiting for done() */
	int efd;
	_Atomic unsigned pending;
};

/* The smallest struct bt_pool_config a caller may pass: ABI 1's. */
#define CONFIG_MIN sizeof(struct bt_pool_config)

static void config_defaults(struct bt_pool_config *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->threads = n > 2 ? (unsigned)n : 2;
	cfg->max_queued = 4096;
}

int bt_pool_config_init_sized(struct bt_pool_config *cfg, size_t size)
{
	struct bt_pool_config d;
	config_defaults(&d);
	return bt__sized_init(cfg, size, CONFIG_MIN, &d, sizeof(d));
}

/* Hand a finished (or cancelled) job to its sink and wake the owner. */
static void complete(bt_job_t *j, int status)
{
	bt_pool_sink_t *s = j->sink;
	j->status = status;
	j->next = NULL;
	pthread_mutex_lock(&s->mu);
	if (s->tail)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	/* Signal under the lock: once the owner has run this job it may
	 * destroy the sink, and the eventfd must not be closed (and its number
	 * reused) under a write still to come. */
	uint64_t one = 1;
	ssize_t n = write(s->efd, &one, sizeof(one));
	(void)n; /* EAGAIN: already signalled */
	pthread_mutex_unlock(&s->mu);
}

static void unlink_job(bt_pool_t *p, bt_job_t *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		p->head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		p->tail = j->prev;
	j->prev = j->next = NULL;
	p->nqueued--;
}

static void *pool_thread(void *arg)
{
	bt_pool_t *p = arg;
	/* Named for top -H and ps -L; otherwise it would carry the name of the
	 * thread that created it ("worker 3"). */
	pthread_setname_np(pthread_self(), "pool");
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!p->head) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		bt_job_t *j = p->head;
		unlink_job(p, j);
		j->state = J_RUNNING;
		pthread_mutex_unlock(&p->mu);
		j->work(j->arg);
		pthread_mutex_lock(&p->mu);
		j->state = J_DONE; /* under mu: bt_pool_cancel reads it */
		pthread_mutex_unlock(&p->mu);
		complete(j, 0);
	}
}

int bt_pool_create(bt_pool_t **out, const struct bt_pool_config *cfg)
{
	if (!out || !cfg)
		return -EINVAL;
	struct bt_pool_config c;
	config_defaults(&c);
	int rc = bt__sized_in(&c, sizeof(c), cfg, CONFIG_MIN, "bt_pool_config");
	if (rc < 0)
		return rc;
	cfg = &c;
	if (cfg->threads == 0 || cfg->threads > 1024 || cfg->max_queued == 0)
		return -EINVAL;
	bt_pool_t *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->threads = calloc(cfg->threads, sizeof(*p->threads));
	if (!p->threads) {
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->max_queued = cfg->max_queued;
	for (unsigned i = 0; i < cfg->threads; i++) {
		rc = pthread_create(&p->threads[i], NULL, pool_thread, p);
		if (rc != 0) {
			p->nthreads = i;
			bt_pool_destroy(p);
			return bt__log_errno(BT_LOG_ERROR, -rc, "pthread_create(pool thread %u)", i);
		}
		p->nthreads = i + 1;
	}
	*out = p;
	return 0;
}

void bt_pool_destroy(bt_pool_t *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	while (p->head) {
		bt_job_t *j = p->head;
		unlink_job(p, j);
		j->state = J_DONE;
		complete(j, -ECANCELED);
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}

int bt_pool_submit(bt_pool_t *p, bt_pool_sink_t *sink, bt_job_t **job, bt_work_fn work,
		   bt_done_fn done, void *arg)
{
	if (!p || !sink || !work || !done)
		return -EINVAL;
	bt_job_t *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->work = work;
	j->done = done;
	j->arg = arg;
	j->sink = sink;
	j->state = J_QUEUED;
	pthread_mutex_lock(&p->mu);
	int rc = 0;
	if (p->stopping)
		rc = -ESHUTDOWN;
	else if (p->nqueued >= p->max_queued)
		rc = -EAGAIN;
	if (rc) {
		pthread_mutex_unlock(&p->mu);
		free(j);
		return rc;
	}
	j->prev = p->tail;
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	p->nqueued++;
	atomic_fetch_add_explicit(&sink->pending, 1, memory_order_relaxed);
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (job)
		*job = j;
	return 0;
}

int bt_pool_cancel(bt_pool_t *p, bt_job_t *j)
{
	if (!p || !j)
		return -EINVAL;
	pthread_mutex_lock(&p->mu);
	if (j->state != J_QUEUED) {
		pthread_mutex_unlock(&p->mu);
		return -EBUSY;
	}
	unlink_job(p, j);
	j->state = J_DONE;
	complete(j, -ECANCELED);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

int bt_pool_sink_create(bt_pool_sink_t **out)
{
	if (!out)
		return -EINVAL;
	bt_pool_sink_t *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0) {
		int err = -errno;
		free(s);
		return bt__log_errno(BT_LOG_ERROR, err, "eventfd");
	}
	pthread_mutex_init(&s->mu, NULL);
	*out = s;
	return 0;
}

int bt_pool_sink_destroy(bt_pool_sink_t *s)
{
	if (!s)
		return 0;
	if (atomic_load_explicit(&s->pending, memory_order_acquire))
		return -EBUSY;
	/* A pool thread that completed our last job may still hold the lock
	 * (see complete()): wait for it. */
	pthread_mutex_lock(&s->mu);
	pthread_mutex_unlock(&s->mu);
	close(s->efd);
	pthread_mutex_destroy(&s->mu);
	free(s);
	return 0;
}

int bt_pool_sink_fd(const bt_pool_sink_t *s)
{
	return s ? s->efd : -EINVAL;
}

unsigned bt_pool_sink_run(bt_pool_sink_t *s)
{
	uint64_t v;
	while (read(s->efd, &v, sizeof(v)) == sizeof(v))
		; /* reset first: a completion after this writes again */
	pthread_mutex_lock(&s->mu);
	bt_job_t *j = s->head;
	s->head = s->tail = NULL;
	pthread_mutex_unlock(&s->mu);
	unsigned n = 0;
	while (j) {
		bt_job_t *next = j->next;
		j->done(j->arg, j->status);
		atomic_fetch_sub_explicit(&s->pending, 1, memory_order_release);
		free(j);
		j = next;
		n++;
	}
	return n;
}

unsigned bt_pool_sink_pending(const bt_pool_sink_t *s)
{
	return atomic_load_explicit(&s->pending, memory_order_acquire);
}

/* --- the process-wide pool of the worker loops (bt_loop_submit) ------------- */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static bt_pool_t *pool_global;

/* A forked child has none of its parent's pool threads: start afresh. */
static void pool_atfork_child(void)
{
	pool_global = NULL;
	pthread_mutex_init(&pool_lock, NULL);
}

bt_pool_t *bt__pool_global(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, bt__pool_atfork_register);
	pthread_mutex_lock(&pool_lock);
	if (!pool_global) {
		struct bt_pool_config pc;
		bt_pool_config_init(&pc);
		int rc = bt_pool_create(&pool_global, &pc);
		if (rc < 0)
			pool_global = NULL;
	}
	bt_pool_t *p = pool_global;
	pthread_mutex_unlock(&pool_lock);
	return p;
}

void bt__pool_atfork_register(void)
{
	pthread_atfork(NULL, NULL, pool_atfork_child);
}

void bt__pool_shutdown_global(void)
{
	pthread_mutex_lock(&pool_lock);
	bt_pool_t *p = pool_global;
	pool_global = NULL;
	pthread_mutex_unlock(&pool_lock);
	bt_pool_destroy(p);
}
