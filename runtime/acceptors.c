/* SPDX-License-Identifier: MIT */
/*
 * Several acceptor rings (--acceptors K).  Acceptor 0 is s->acc, on the
 * supervisor's thread as always: signals, timers, the control socket,
 * attached workers and the program's work items stay with it.  Acceptors
 * 1..K-1 are threads of the same process ("acceptor k"), each with its own
 * ring, a copy (dup) of every listener, and a queue to every worker loop of
 * ours (not to attached workers): a worker loop has one inlet per acceptor
 * (bt_loop_add_inlet), and drains at the last one's DRAIN.
 *
 * An acceptor is single-threaded (baton/acceptor.h), so the supervisor
 * never touches acceptor k > 0 itself: it posts a call to k's thread (a
 * mailbox: one call at a time, an eventfd watched on k's loop) and waits
 * for it to have run.  Acceptor k never waits for the supervisor, so this
 * cannot deadlock; once k's loop has returned, the call runs inline.
 *
 * Listeners are shared, not SO_REUSEPORT copies: every acceptor sweeps the
 * same accept queues, which works for inherited (systemd) sockets and
 * across a reload as it is (docs/scaling.md measures the choice).
 */
#include "supervisor.h"

#include "acceptor_internal.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

struct bt__xacc {
	struct bt_runtime *s;
	unsigned k;
	const struct bt_acceptor_config *ac; /* until made */
	unsigned slots;
	bt_acceptor_t *acc;
	pthread_t tid;
	int started; /* the thread exists (join it) */
	int evfd;    /* the mailbox's bell, while its loop runs */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* The thread's state: made (its acceptor exists, or made_rc says
	 * why not), looping (in bt_acceptor_run: ring the bell), and what
	 * it was told: go (run the loop), quit (free it all and end). */
	int made, made_rc, looping, go, quit;
	int active; /* accepts from the start (BATON_ACCEPTORS_ALWAYS=1) */
	pid_t tid_linux; /* its thread's id (schedstat) */
	/* The call posted and not yet run (fn NULL: none). */
	bt__acc_fn fn;
	void *arg;
	int rc;
	int done;
};

unsigned bt__accs_count(const struct bt_runtime *s)
{
	return 1 + s->nxacc;
}

/* Run the posted call (the mutex held). */
static void run_posted(struct bt__xacc *x)
{
	if (x->fn && !x->done) {
		x->rc = x->fn(x->s, x->acc, x->k, x->arg);
		x->done = 1;
		pthread_cond_broadcast(&x->cv);
	}
}

/* On acceptor k's thread, in its loop: the bell rang. */
static void on_mail(void *ctx)
{
	struct bt__xacc *x = ctx;
	uint64_t v;
	while (read(x->evfd, &v, sizeof(v)) == sizeof(v))
		;
	pthread_mutex_lock(&x->mu);
	run_posted(x);
	pthread_mutex_unlock(&x->mu);
}

int bt__accs_call(struct bt_runtime *s, unsigned k, bt__acc_fn fn, void *arg)
{
	if (k == 0)
		return fn(s, s->acc, 0, arg);
	struct bt__xacc *x = s->xacc[k - 1];
	if (!x->started || x->made_rc < 0)
		return -ESRCH; /* never made: nothing to call */
	pthread_mutex_lock(&x->mu);
	x->fn = fn;
	x->arg = arg;
	x->done = 0;
	if (x->looping) {
		uint64_t one = 1;
		ssize_t n = write(x->evfd, &one, sizeof(one));
		(void)n; /* an eventfd's counter does not overflow at our rate */
	}
	pthread_cond_broadcast(&x->cv);
	while (!x->done)
		pthread_cond_wait(&x->cv, &x->mu);
	int rc = x->rc;
	x->fn = NULL;
	pthread_mutex_unlock(&x->mu);
	return rc;
}

int bt__accs_each(struct bt_runtime *s, unsigned from, bt__acc_fn fn, void *arg)
{
	int rc = 0;
	for (unsigned k = from; k < bt__accs_count(s); k++) {
		int r = bt__accs_call(s, k, fn, arg);
		if (r < 0 && rc == 0)
			rc = r;
	}
	return rc;
}

/* Acceptor k, on its thread (its ring is single-issuer: every call on it
 * comes from here): its ring, copies of acceptor 0's listeners, the bell.
 * 0 or -errno. */
static int xacc_make(struct bt__xacc *x)
{
	struct bt_runtime *s = x->s;
	struct bt_acceptor_config c = *x->ac;
	c.on_worker_gone = NULL; /* attached workers are acceptor 0's */
	c.on_room = NULL;
	int rc = bt_acceptor_create(&x->acc, &c, x->slots);
	if (rc < 0)
		return bt__log_errno(BT_LOG_ERROR, rc, "cannot create acceptor %u", x->k);
	for (int i = 0; i < s->nkeep; i++) {
		int fd = fcntl(s->lkeep[i], F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return bt__log_errno(BT_LOG_ERROR, -errno, "acceptor %u: dup(listener)", x->k);
		rc = bt_acceptor_add_listener(x->acc, fd);
		if (rc < 0) {
			close(fd);
			return rc;
		}
		if (s->lproxy[i]) /* lkeep[i] is lfds[i] (runtime.c) */
			bt__acc_listener_proxy(x->acc, fd);
	}
	x->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (x->evfd < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "acceptor %u: eventfd", x->k);
	if (!x->active)
		bt__acc_standby(x->acc, 1); /* until the balancer calls it in */
	return bt_acceptor_watch(x->acc, x->evfd, on_mail, x);
}

/* Outside its loop the thread waits for calls here, until told to go
 * (until_go) or to quit. */
static void serve(struct bt__xacc *x, int until_go)
{
	pthread_mutex_lock(&x->mu);
	for (;;) {
		run_posted(x);
		if (x->quit || (until_go && x->go))
			break;
		pthread_cond_wait(&x->cv, &x->mu);
	}
	pthread_mutex_unlock(&x->mu);
}

static void *xacc_main(void *arg)
{
	struct bt__xacc *x = arg;
	/* Signals are the supervisor's (its signalfd): never this thread's. */
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	x->tid_linux = (pid_t)syscall(SYS_gettid);
	int rc = xacc_make(x);
	pthread_mutex_lock(&x->mu);
	x->made = 1;
	x->made_rc = rc;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	if (rc == 0) {
		serve(x, 1);
		pthread_mutex_lock(&x->mu);
		int go = !x->quit;
		x->looping = go;
		pthread_mutex_unlock(&x->mu);
		if (go) {
			rc = bt_acceptor_run(x->acc);
			if (rc < 0) {
				/* Its queues close: the workers count it as done
				 * (their inlet ends), and serve on from the others. */
				bt__log_errno(BT_LOG_ERROR, rc, "acceptor %u stopped: its workers' queues "
					      "close", x->k);
				for (unsigned i = 0; i < x->slots; i++)
					bt_acceptor_detach(x->acc, i);
			}
			pthread_mutex_lock(&x->mu);
			x->looping = 0;
			pthread_mutex_unlock(&x->mu);
		}
		serve(x, 0);
	}
	if (x->acc)
		bt_acceptor_destroy(x->acc);
	return NULL;
}

int bt__accs_create(struct bt_runtime *s, const struct bt_acceptor_config *ac, unsigned slots)
{
	unsigned K = s->cfg->acceptors > 1 ? s->cfg->acceptors : 1;
	const char *always = getenv("BATON_ACCEPTORS_ALWAYS");
	int all = always && !strcmp(always, "1");
	if (always && strcmp(always, "1") && strcmp(always, "0"))
		bt__log(BT_LOG_WARN, "BATON_ACCEPTORS_ALWAYS=%s: expected 0 or 1; ignored", always);
	s->accs_active = all ? K : 1;
	s->acc_tid = (pid_t)syscall(SYS_gettid); /* acceptor 0 runs on this thread */
	s->accs_always = all;
	if (K > 1)
		bt__log(BT_LOG_INFO, "%u acceptors: %s", K,
			all ? "all accept (BATON_ACCEPTORS_ALWAYS=1)"
			    : "the first accepts; the others join when the accepting ones are "
			      "busy");
	for (unsigned k = 1; k < K; k++) {
		struct bt__xacc *x = calloc(1, sizeof(*x));
		if (!x)
			return -ENOMEM;
		x->s = s;
		x->k = k;
		x->ac = ac;
		x->slots = slots;
		x->active = all;
		x->evfd = -1;
		pthread_mutex_init(&x->mu, NULL);
		pthread_cond_init(&x->cv, NULL);
		s->xacc[s->nxacc++] = x;
		int e = pthread_create(&x->tid, NULL, xacc_main, x);
		if (e)
			return bt__log_errno(BT_LOG_ERROR, -e, "pthread_create(acceptor %u)", k);
		x->started = 1;
		char name[24];
		snprintf(name, sizeof(name), "acceptor %u", k);
		bt__thread_name(x->tid, name);
		pthread_mutex_lock(&x->mu);
		while (!x->made)
			pthread_cond_wait(&x->cv, &x->mu);
		int rc = x->made_rc;
		pthread_mutex_unlock(&x->mu);
		x->ac = NULL;
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Tell the acceptor threads to go (run their loops) or to quit. */
static void tell(struct bt_runtime *s, int quit)
{
	for (unsigned i = 0; i < s->nxacc; i++) {
		struct bt__xacc *x = s->xacc[i];
		pthread_mutex_lock(&x->mu);
		if (quit)
			x->quit = 1;
		else
			x->go = 1;
		pthread_cond_broadcast(&x->cv);
		pthread_mutex_unlock(&x->mu);
	}
}

int bt__accs_start(struct bt_runtime *s)
{
	tell(s, 0);
	return 0;
}

static int stop_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k, (void)arg;
	bt_acceptor_stop(acc);
	return 0;
}

void bt__accs_join(struct bt_runtime *s)
{
	/* Their loops end; the threads still take calls. */
	bt__accs_each(s, 1, stop_fn, NULL);
}

void bt__accs_free(struct bt_runtime *s)
{
	tell(s, 1);
	for (unsigned i = 0; i < s->nxacc; i++) {
		struct bt__xacc *x = s->xacc[i];
		if (x->started)
			pthread_join(x->tid, NULL);
		if (x->evfd >= 0)
			close(x->evfd);
		pthread_mutex_destroy(&x->mu);
		pthread_cond_destroy(&x->cv);
		free(x);
	}
	s->nxacc = 0;
}

/* --- the calls every acceptor gets ------------------------------------------------ */

struct attach_arg {
	unsigned slot;
	bt_queue_t *q;
};

static int attach_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k;
	struct attach_arg *a = arg;
	return bt_acceptor_attach(acc, a->slot, a->q);
}

int bt__accs_attach(struct bt_runtime *s, unsigned k, unsigned slot, bt_queue_t *q)
{
	struct attach_arg a = {.slot = slot, .q = q};
	return bt__accs_call(s, k, attach_fn, &a);
}

static int detach_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k;
	bt_acceptor_detach(acc, *(unsigned *)arg);
	return 0;
}

void bt__accs_detach(struct bt_runtime *s, unsigned slot)
{
	bt__accs_each(s, 0, detach_fn, &slot);
}

static int busy_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k;
	return bt_acceptor_queue(acc, *(unsigned *)arg) != NULL;
}

int bt__accs_slot_busy(struct bt_runtime *s, unsigned slot)
{
	for (unsigned k = 0; k < bt__accs_count(s); k++)
		if (bt__accs_call(s, k, busy_fn, &slot))
			return 1;
	return 0;
}

static int drain_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k;
	bt_acceptor_drain(acc, *(unsigned *)arg);
	return 0;
}

void bt__accs_drain(struct bt_runtime *s, unsigned deadline_ms)
{
	bt__accs_each(s, 0, drain_fn, &deadline_ms);
}

static int kick_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k, (void)arg;
	bt__acc_kick_listeners(acc);
	return 0;
}

void bt__accs_kick(struct bt_runtime *s)
{
	bt__accs_each(s, 0, kick_fn, NULL);
}

struct retire_arg {
	unsigned slot, deadline_ms;
	int fd;
};

static int retire_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s;
	struct retire_arg *a = arg;
	/* The channel to hand connections back on goes once, with acceptor
	 * 0's items: the loop drains at the last DRAIN, so it has it by then. */
	bt__acc_retire(acc, a->slot, a->deadline_ms, k == 0 ? a->fd : -1);
	return 0;
}

void bt__accs_retire(struct bt_runtime *s, unsigned slot, unsigned deadline_ms, int handover_fd)
{
	struct retire_arg a = {.slot = slot, .deadline_ms = deadline_ms, .fd = handover_fd};
	bt__accs_each(s, 0, retire_fn, &a);
}

static int policy_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)k, (void)arg;
	for (unsigned i = 0; i < acc->nw; i++) {
		bt_queue_t *q = bt_acceptor_queue(acc, i);
		if (q)
			bt__queue_set_policy(q, s->qc.batch, (int)s->qc.flush, s->qc.delay_us);
	}
	acc->cfg.dispatch = s->config.dispatch;
	return 0;
}

void bt__accs_policy(struct bt_runtime *s)
{
	bt__accs_each(s, 0, policy_fn, NULL);
}

static int view_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k;
	struct bt__accs_view *v = arg;
	struct bt_acceptor_stats st;
	bt_acceptor_get_stats(acc, &st);
	v->as.accepted += st.accepted;
	v->accepted[k] = st.accepted;
	v->as.batches += st.batches;
	v->as.items_sent += st.items_sent;
	v->as.redelivered += st.redelivered;
	v->as.dropped += st.dropped;
	v->as.full += st.full;
	v->as.emfile += st.emfile;
	v->as.errors += st.errors;
	v->as.wakeups += st.wakeups;
	v->as.sweeps += st.sweeps;
	v->as.lagged += st.lagged;
	v->as.pushed += st.pushed;
	v->backlog += (unsigned)bt__acc_backlog_len(acc);
	v->held += bt_acceptor_held(acc);
	v->internal += acc->internal;
	for (unsigned i = 0; i < v->n && i < acc->cap; i++) {
		struct bt__slot_view *w = &v->w[i];
		struct bt_queue_stats qs;
		bt_acceptor_get_worker_stats(acc, i, &qs);
		w->qs.pushed += qs.pushed;
		w->qs.batches += qs.batches;
		w->qs.items_sent += qs.items_sent;
		w->qs.acked += qs.acked;
		w->qs.lost += qs.lost;
		w->qs.taken += qs.taken;
		w->qs.full += qs.full;
		w->qs.toomanyrefs += qs.toomanyrefs;
		uint64_t bh[BT__BATCH_BUCKETS];
		bt__acc_worker_bhist(acc, i, bh);
		for (unsigned b = 0; b < BT__BATCH_BUCKETS; b++)
			w->bhist[b] += bh[b];
		bt_queue_t *q = bt_acceptor_queue(acc, i);
		if (q) {
			unsigned inflight;
			w->unreaped += bt__queue_unreaped(q, &inflight);
			w->inflight += inflight;
		}
		w->lagging |= i < acc->nw && acc->w[i].lagging;
	}
	return 0;
}

int bt__accs_view(struct bt_runtime *s, struct bt__accs_view *v)
{
	memset(v, 0, sizeof(*v));
	v->as.size = sizeof(v->as);
	v->n = s->acc->cap;
	v->w = calloc(v->n ? v->n : 1, sizeof(v->w[0]));
	if (!v->w)
		return -ENOMEM;
	for (unsigned i = 0; i < v->n; i++)
		v->w[i].qs.size = sizeof(v->w[i].qs);
	bt__accs_each(s, 0, view_fn, v);
	return 0;
}

void bt__accs_view_free(struct bt__accs_view *v)
{
	free(v->w);
	v->w = NULL;
}

struct stalled_arg {
	uint64_t now;
	uint64_t *out;
	unsigned n;
};

static int stalled_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k;
	struct stalled_arg *a = arg;
	for (unsigned i = 0; i < a->n; i++) {
		uint64_t ns = bt__acc_worker_stalled_ns(acc, i, a->now);
		if (ns > a->out[i])
			a->out[i] = ns;
	}
	return 0;
}

void bt__accs_stalled(struct bt_runtime *s, uint64_t now, uint64_t *out, unsigned n)
{
	memset(out, 0, n * sizeof(*out));
	struct stalled_arg a = {.now = now, .out = out, .n = n};
	bt__accs_each(s, 0, stalled_fn, &a);
}

/* --- the balancer ---------------------------------------------------------------- */

/*
 * One acceptor keeps up on most machines, and a second one that takes
 * half the connections makes both cheaper to wake and slower to batch:
 * measured here, two accepting cost 1.3x one per connection on 2 cores
 * (docs/scaling.md).  So the others wait on standby, and join only when
 * the accepting ones are the limit: their threads ran or waited to run
 * (schedstat: on-CPU time plus run-queue delay, which a CPU quota's
 * throttling counts in) for most of the last 300 ms.  The last one
 * leaves when the rest could carry its share at half their time, for
 * 10 s.
 */
#define BALANCE_NS 100000000ull /* it looks every 100 ms */
#define JOIN_BUSY 0.75          /* of their time, on average */
#define JOIN_TICKS 3
#define LEAVE_BUSY 0.5          /* what the others would have */
#define LEAVE_TICKS 100

static int standby_fn(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg)
{
	(void)s, (void)k;
	bt__acc_standby(acc, *(int *)arg);
	return 0;
}

/* Acceptor k's thread: nanoseconds on a CPU plus waiting for one. */
static uint64_t demand_ns(const struct bt_runtime *s, unsigned k)
{
	pid_t tid = k == 0 ? s->acc_tid : s->xacc[k - 1]->tid_linux;
	char path[64], buf[96];
	snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	unsigned long long run = 0, wait = 0;
	if (n <= 0)
		return 0;
	buf[n] = 0;
	if (sscanf(buf, "%llu %llu", &run, &wait) != 2)
		return 0;
	return run + wait;
}

void bt__accs_balance(struct bt_runtime *s, uint64_t now)
{
	if (!s->nxacc || s->accs_always || s->draining || now < s->accs_next_ns)
		return;
	s->accs_next_ns = now + BALANCE_NS;
	unsigned K = bt__accs_count(s), n = s->accs_active;
	uint64_t sum = 0;
	for (unsigned k = 0; k < n; k++) {
		uint64_t d = demand_ns(s, k);
		sum += d > s->accs_seen[k] ? d - s->accs_seen[k] : 0;
		s->accs_seen[k] = d;
	}
	uint64_t span = s->accs_seen_ns ? now - s->accs_seen_ns : 0;
	s->accs_seen_ns = now;
	if (!span)
		return;
	double busy = (double)sum / (double)span / n; /* per accepting acceptor */
	s->accs_high = busy >= JOIN_BUSY ? s->accs_high + 1 : 0;
	s->accs_low = n > 1 && busy * n / (n - 1) <= LEAVE_BUSY ? s->accs_low + 1 : 0;
	if (s->accs_high >= JOIN_TICKS && n < K) {
		int off = 0;
		s->accs_seen[n] = demand_ns(s, n);
		bt__accs_call(s, n, standby_fn, &off);
		s->accs_active = n + 1;
		bt__log(BT_LOG_INFO, "acceptor %u joins (%u of %u accept): the accepting one%s ran or "
				     "waited to run %.0f%% of the time", n, n + 1, K, n > 1 ? "s" : "",
			busy * 100);
		s->accs_high = 0;
	} else if (s->accs_low >= LEAVE_TICKS) {
		int on = 1;
		bt__accs_call(s, n - 1, standby_fn, &on);
		s->accs_active = n - 1;
		bt__log(BT_LOG_INFO, "acceptor %u on standby (%u of %u accept): %u would have run "
				     "%.0f%% of the time for %llu s", n - 1, n - 1, K, n - 1,
			busy * n / (n - 1) * 100,
			(unsigned long long)(LEAVE_TICKS * BALANCE_NS / 1000000000ull));
		s->accs_low = 0;
	}
}

uint64_t bt__accs_next_ns(const struct bt_runtime *s)
{
	return s->nxacc && !s->accs_always && !s->draining ? s->accs_next_ns : 0;
}
