/* SPDX-License-Identifier: MIT */
/*
 * The supervisor (baton/runtime.h): listeners, worker processes, signals,
 * respawn, drain, counters.  It runs the acceptor ring in its own process.
 *
 * Signals are blocked and read from a signalfd on the acceptor's loop, so
 * no handler ever runs in the middle of the acceptor's work.
 *
 * A worker is forked (not exec'd): it starts with a copy of the
 * supervisor, so it first closes every descriptor but its channel and
 * stdio (close_range), among them the listeners and the client connections
 * the acceptor holds; then it unblocks signals and runs its loop.
 */
#include "runtime_internal.h"

#include "internal.h"


#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RESPAWN_MIN_MS 100
#define RESPAWN_MAX_MS 5000
#define STABLE_NS 10000000000ull /* a worker that lived 10 s resets back-off */

struct sup;

struct wslot {
	/* thread mode */
	pthread_t tid;
	int running;          /* the thread exists and has not been joined */
	_Atomic int finished; /* set by the thread as it ends */
	int rc;
	int start_rc; /* thread mode: bt_loop_create's result */
	bt_queue_t *q;
	struct sup *sup;
	unsigned idx;
	/* process mode */
	pid_t pid;         /* 0: not running */
	uint64_t started_ns;
	uint64_t respawn_at_ns; /* 0: none due */
	unsigned backoff_ms;
	unsigned restarts;
	unsigned stuck;        /* times the watchdog found it stuck */
	int stuck_now;         /* thread mode: reported, not yet moving again */
	int killing;           /* process mode: SIGKILLed by the watchdog */
};

struct sup {
	const struct bt_runtime_config *cfg; /* &config */
	const struct bt_handler *h;          /* &handler */
	struct bt_runtime_config config;     /* the caller's, taken by size */
	struct bt_handler handler;
	struct bt_queue_config qc;           /* from config's batch and flush */
	void *user;
	bt_acceptor_t *acc;
	bt_queue_shm_t *shm;
	struct wslot *w;
	unsigned nw;     /* worker processes (process mode) or threads (thread mode) */
	unsigned tpp;    /* worker loops per process: --threads (1 in thread mode) */
	unsigned nslots; /* the acceptor's worker slots: nw x tpp; process p has
			  * slots p*tpp .. p*tpp+tpp-1 */
	int sigfd;
	int lfds[BT_RUNTIME_MAX_LISTEN + 64];
	int nl;
	int draining;
	uint64_t drain_deadline_ns;
	int killed;
	uint64_t start_ns;
	int donefd; /* thread mode: worker threads say they ended */
	/* Thread mode: each worker thread posts once its loop exists (or
	 * failed to), and the acceptor starts only after all of them.  The
	 * threads share the acceptor's descriptor table: accepting first
	 * could take every descriptor (EMFILE) before a worker has its ring
	 * and eventfd, leaving a server with no worker and no respawn. */
	sem_t ready;
	int ready_init;
	int start_failed; /* a worker could not start: exit status 1 */
	uint64_t watch_next_ns; /* the watchdog's next look (0: off) */
};

/* The watchdog looks this often: a quarter of --worker-timeout, within
 * [50 ms, 1 s]. */
static uint64_t watch_period_ns(const struct sup *s)
{
	uint64_t p = (uint64_t)s->cfg->worker_timeout_ms * 1000000ull / 4;
	return p < 50000000ull ? 50000000ull : p > 1000000000ull ? 1000000000ull : p;
}

static void print_counters(struct sup *s, const char *why)
{
	struct bt_acceptor_stats st;
	bt_acceptor_get_stats(s->acc, &st);
	char flush[32];
	double up = (double)(bt__now_ns() - s->start_ns) / 1e9;
	fprintf(stderr,
		"%s: counters (%s): uptime %.1f s, backend %s, dispatch %s, flush %s, batch %u%s\n"
		"  acceptor: accepted %llu, batches %llu, fds/batch %.2f, redelivered %llu, "
		"dropped %llu, full %llu, emfile %llu, errors %llu, held %u, wakeups %llu, sweeps %llu, "
		"lagged %llu\n",
		s->cfg->name, why, up, bt_acceptor_backend(s->acc),
		bt_acceptor_dispatch_name(s->cfg->dispatch),
		bt_queue_flush_name(&s->qc, flush, sizeof(flush)), s->qc.batch,
		s->qc.fire_and_forget ? ", fire-and-forget" : "",
		(unsigned long long)st.accepted, (unsigned long long)st.batches,
		st.batches ? (double)st.items_sent / (double)st.batches : 0.0,
		(unsigned long long)st.redelivered, (unsigned long long)st.dropped,
		(unsigned long long)st.full, (unsigned long long)st.emfile,
		(unsigned long long)st.errors, bt_acceptor_held(s->acc),
		(unsigned long long)st.wakeups, (unsigned long long)st.sweeps,
		(unsigned long long)st.lagged);
	for (unsigned i = 0; i < s->nslots; i++) {
		struct bt_queue_stats qs;
		bt_acceptor_worker_stats(s->acc, i, &qs);
		char who[48];
		struct wslot *w = &s->w[i / s->tpp];
		if (s->cfg->mode == BT_MODE_THREAD)
			snprintf(who, sizeof(who), "thread%s", w->running ? "" : " (ended)");
		else if (s->tpp > 1)
			snprintf(who, sizeof(who), "pid %ld thread %u", (long)w->pid, i % s->tpp);
		else
			snprintf(who, sizeof(who), "pid %ld", (long)w->pid);
		bt_queue_t *q = bt_acceptor_queue(s->acc, i);
		unsigned open = s->cfg->mode == BT_MODE_THREAD ? (q ? bt_queue_load(q) : 0)
							    : bt_queue_shm_load(s->shm, i);
		fprintf(stderr,
			"  worker %u: %s, restarts %u, stuck %u, batches %llu, items %llu, acked %llu, "
			"lost %llu, redelivered %llu, full %llu, open %u\n",
			i, who, w->restarts, w->stuck, (unsigned long long)qs.batches,
			(unsigned long long)qs.items_sent, (unsigned long long)qs.acked,
			(unsigned long long)qs.lost, (unsigned long long)qs.taken,
			(unsigned long long)qs.full, open);
	}
}

/* --- workers -------------------------------------------------------------- */

/* --pin: worker loop i runs on CPU i (modulo the online CPUs). */
static cpu_set_t cpu_of(unsigned slot)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((int)(slot % (unsigned)(ncpu > 0 ? ncpu : 1)), &set);
	return set;
}

/* One worker loop on its channel, until it drains or fails: 0 or -errno. */
static int run_slot(struct sup *s, unsigned slot, int chfd)
{
	if (s->cfg->pin) {
		cpu_set_t set = cpu_of(slot);
		if (sched_setaffinity(0, sizeof(set), &set) < 0) /* 0: the calling thread */
			bt__log_errno(BT_LOG_WARN, -errno, "worker %u: sched_setaffinity", slot);
	}
	bt_fdpass_t *ch;
	int rc = bt_fdpass_open(&ch, chfd);
	if (rc < 0)
		return rc;
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	lc.worker_id = (int)slot;
	lc.channel = ch;
	lc.shm = s->shm;
	lc.slot = slot;
	lc.handler = s->h;
	lc.user = s->user;
	lc.backend = s->cfg->backend;
	lc.drain_timeout_ms = s->cfg->drain_timeout_ms;
	lc.out_high = s->cfg->out_high;
	bt_loop_t *loop;
	rc = bt_loop_create(&loop, &lc);
	if (rc < 0)
		return bt__log_errno(BT_LOG_ERROR, rc, "worker %u: cannot create its loop", slot);
	rc = bt_loop_run(loop);
	bt_loop_destroy(loop);
	return rc;
}

struct slot_thread {
	struct sup *s;
	unsigned slot, t;
	int fd;
	pthread_t tid;
};

static void *slot_thread_main(void *arg)
{
	struct slot_thread *st = arg;
	char name[32];
	snprintf(name, sizeof(name), "worker %u.%u", st->slot / st->s->tpp, st->t);
	bt__thread_name(pthread_self(), name);
	if (run_slot(st->s, st->slot, st->fd) < 0)
		_exit(73); /* a failed loop strands its channel: start over */
	return NULL;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return x < y ? -1 : x > y;
}

/* Close every descriptor but stdio and keep[0..n). */
static void close_all_but(const int *keep, unsigned n)
{
	int sorted[64];
	memcpy(sorted, keep, n * sizeof(int));
	qsort(sorted, n, sizeof(int), cmp_int);
	unsigned lo = 3;
	for (unsigned i = 0; i <= n; i++) {
		unsigned hi = i < n ? (unsigned)sorted[i] : ~0u; /* close [lo, hi) */
		if (hi > lo && syscall(SYS_close_range, lo, hi - 1, 0) < 0)
			for (unsigned fd = lo; fd < hi && fd < 65536; fd++)
				close((int)fd);
		if (i < n)
			lo = (unsigned)sorted[i] + 1;
	}
}

/* A worker process: --threads loops, one per channel in chfd[]; the first
 * on this thread.  It exits when all of them have drained. */
static void worker_main(struct sup *s, unsigned p, const int *chfd, pid_t parent)
	__attribute__((noreturn));
static void worker_main(struct sup *s, unsigned p, const int *chfd, pid_t parent)
{
	/* Die with the supervisor, whatever kills it (SIGKILL, the OOM
	 * killer): a worker left alone would serve its connections for ever
	 * with no one to redeliver, drain or restart it.  The death signal is
	 * tied to the thread that forked us, the one that runs
	 * bt_runtime_run; the getppid check closes the race with a
	 * supervisor that died before prctl. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		bt__log_errno(BT_LOG_WARN, -errno, "worker %u: prctl(PR_SET_PDEATHSIG)", p);
	if (getppid() != parent)
		_exit(75);
	/* Keep stdio and the channels; close the rest (listeners, held client
	 * connections, the acceptor's ring, other workers' channels). */
	close_all_but(chfd, s->tpp);
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGTERM, SIG_IGN); /* the acceptor's DRAIN decides */
	signal(SIGINT, SIG_IGN);  /* a terminal's ^C goes to the group */
	signal(SIGUSR1, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);

	char title[96];
	snprintf(title, sizeof(title), "%s: worker %u", s->cfg->name, p);
	bt__proctitle_set(title);

	struct slot_thread st[64];
	for (unsigned t = 1; t < s->tpp; t++) {
		st[t] = (struct slot_thread){.s = s, .slot = p * s->tpp + t, .t = t, .fd = chfd[t]};
		int e = pthread_create(&st[t].tid, NULL, slot_thread_main, &st[t]);
		if (e) {
			/* A loop missing would strand its channel: start over. */
			bt__log_errno(BT_LOG_ERROR, -e, "worker %u: pthread_create(thread %u)", p, t);
			_exit(74);
		}
	}
	if (run_slot(s, p * s->tpp, chfd[0]) < 0)
		_exit(73); /* a failed loop strands its channel: start over */
	for (unsigned t = 1; t < s->tpp; t++)
		pthread_join(st[t].tid, NULL);
	_exit(0);
}

/* --- thread mode ---------------------------------------------------------- */

static void *worker_thread(void *arg)
{
	struct wslot *w = arg;
	struct sup *s = w->sup;
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	lc.worker_id = (int)w->idx;
	lc.queue = w->q;
	lc.handler = s->h;
	lc.user = s->user;
	lc.backend = s->cfg->backend;
	lc.drain_timeout_ms = s->cfg->drain_timeout_ms;
	lc.out_high = s->cfg->out_high;
	bt_loop_t *loop;
	int rc = bt_loop_create(&loop, &lc);
	w->start_rc = rc;
	sem_post(&s->ready);
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "worker %u: cannot create its loop", w->idx);
	} else {
		rc = bt_loop_run(loop);
		bt_loop_destroy(loop);
	}
	w->rc = rc;
	atomic_store_explicit(&w->finished, 1, memory_order_release);
	uint64_t one = 1;
	ssize_t n = write(s->donefd, &one, sizeof(one));
	(void)n;
	return NULL;
}

static int spawn_thread(struct sup *s, unsigned idx)
{
	struct wslot *w = &s->w[idx];
	bt_queue_t *q;
	int rc = bt_queue_create_thread(&q, &s->qc);
	if (rc < 0)
		return bt__log_errno(BT_LOG_ERROR, rc, "worker %u: bt_queue_create_thread", idx);
	rc = bt_acceptor_attach(s->acc, idx, q);
	if (rc < 0) {
		bt_queue_destroy(q);
		return rc;
	}
	w->q = q;
	w->sup = s;
	w->idx = idx;
	atomic_store(&w->finished, 0);
	rc = pthread_create(&w->tid, NULL, worker_thread, w);
	if (rc != 0) {
		bt_acceptor_detach(s->acc, idx);
		return bt__log_errno(BT_LOG_ERROR, -rc, "pthread_create(worker %u)", idx);
	}
	w->running = 1;
	w->started_ns = bt__now_ns();
	char name[32];
	snprintf(name, sizeof(name), "worker %u", idx);
	bt__thread_name(w->tid, name);
	if (s->cfg->pin) {
		cpu_set_t set = cpu_of(idx);
		int e = pthread_setaffinity_np(w->tid, sizeof(set), &set);
		if (e)
			bt__log_errno(BT_LOG_WARN, -e, "worker %u: pthread_setaffinity_np", idx);
	}
	return 0;
}

static int running_workers(const struct sup *s);

/* Worker threads that ended: join them; their queues go (anything left in
 * them is redelivered to the others). */
static void on_thread_done(void *ctx)
{
	struct sup *s = ctx;
	uint64_t v;
	while (read(s->donefd, &v, sizeof(v)) == sizeof(v))
		;
	for (unsigned i = 0; i < s->nw; i++) {
		struct wslot *w = &s->w[i];
		if (!w->running || !atomic_load_explicit(&w->finished, memory_order_acquire))
			continue;
		pthread_join(w->tid, NULL);
		w->running = 0;
		bt_acceptor_detach(s->acc, i);
		if (w->rc != 0 || !s->draining)
			bt__log(BT_LOG_ERROR, "worker %u (thread) ended%s: %s", i,
				s->draining ? "" : " while the server runs",
				w->rc ? strerror(-w->rc) : "no error");
	}
	if (s->draining && running_workers(s) == 0)
		bt_acceptor_stop(s->acc);
}

/* Fork worker process p with its --threads channels, and attach them to
 * the acceptor's slots p*tpp.. . */
static int spawn(struct sup *s, unsigned p)
{
	unsigned T = s->tpp, made = 0, attached = 0;
	int par[64], kid[64];
	int rc = 0;
	for (; made < T; made++) {
		int sv[2];
		rc = bt_fdpass_pair(sv, 0);
		if (rc < 0)
			break;
		par[made] = sv[0];
		kid[made] = sv[1];
		bt_queue_shm_reset(s->shm, p * T + made);
	}
	pid_t pid = -1, self = getpid();
	if (rc == 0) {
		fflush(NULL);
		pid = fork();
		if (pid < 0)
			rc = bt__log_errno(BT_LOG_ERROR, -errno, "fork(worker %u)", p);
		else if (pid == 0) {
			for (unsigned t = 0; t < T; t++)
				close(par[t]);
			worker_main(s, p, kid, self);
		}
	}
	for (unsigned t = 0; t < made; t++)
		close(kid[t]);
	for (; rc == 0 && attached < T; attached++) {
		unsigned slot = p * T + attached;
		bt_fdpass_t *ch;
		bt_queue_t *q;
		rc = bt_fdpass_open(&ch, par[attached]);
		if (rc < 0)
			break;
		par[attached] = -1; /* the channel's now */
		rc = bt_queue_create(&q, &s->qc, ch, s->shm, slot);
		if (rc < 0) {
			bt_fdpass_close(ch);
			bt__log_errno(BT_LOG_ERROR, rc, "worker %u: bt_queue_create", slot);
			break;
		}
		rc = bt_acceptor_attach(s->acc, slot, q);
		if (rc < 0) {
			bt_queue_destroy(q);
			break;
		}
	}
	if (rc < 0) {
		for (unsigned t = attached; t < made; t++)
			if (par[t] >= 0)
				close(par[t]);
		for (unsigned t = 0; t < attached; t++)
			bt_acceptor_detach(s->acc, p * T + t);
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		return rc;
	}
	s->w[p].pid = pid;
	s->w[p].started_ns = bt__now_ns();
	s->w[p].respawn_at_ns = 0;
	bt__log(BT_LOG_DEBUG, "worker %u: pid %ld", p, (long)pid);
	return 0;
}

/* Every slot of process p reclaimed by the acceptor (its connections
 * handed back): it may be started again. */
static int slots_free(struct sup *s, unsigned p)
{
	for (unsigned t = 0; t < s->tpp; t++)
		if (bt_acceptor_queue(s->acc, p * s->tpp + t))
			return 0;
	return 1;
}

static void schedule(struct sup *s);

/*
 * The watchdog.  Every worker loop counts its wake-ups in shared memory (it
 * wakes at least every 100 ms while it holds connections).  A loop whose
 * count has not moved for --worker-timeout while it has work (connections
 * open or sent to it and not acknowledged) is stuck: a handler in an
 * endless loop, a blocking call, SIGSTOP.  Its process is killed; the
 * usual path follows: its unacknowledged connections go to the others, it
 * is respawned.  A worker thread cannot be killed alone: it is reported,
 * and dispatch already passes it over (acknowledgement lag).
 */
static void watchdog(struct sup *s, uint64_t now)
{
	uint64_t limit = (uint64_t)s->cfg->worker_timeout_ms * 1000000ull;
	for (unsigned i = 0; i < s->nslots; i++) {
		struct wslot *w = &s->w[i / s->tpp];
		uint64_t stalled = bt__acc_worker_stalled_ns(s->acc, i, now);
		bt_queue_t *q = bt_acceptor_queue(s->acc, i);
		if (s->cfg->mode == BT_MODE_THREAD) {
			if (stalled <= limit) {
				if (w->stuck_now)
					bt__log(BT_LOG_WARN, "worker %u (thread) moves again", i);
				w->stuck_now = 0;
				continue;
			}
			if (w->stuck_now)
				continue;
			w->stuck_now = 1;
			w->stuck++;
			bt__log(BT_LOG_ERROR,
				"worker %u (thread) has not moved for %llu ms with %u connections: stuck "
				"(--worker-timeout %u); a thread cannot be replaced alone: dispatch "
				"passes it over; restart the server to recover it, or run workers as "
				"processes", i, (unsigned long long)(stalled / 1000000ull),
				q ? bt_queue_load(q) : 0, s->cfg->worker_timeout_ms);
			continue;
		}
		if (stalled <= limit || !w->pid || w->killing)
			continue;
		w->killing = 1;
		w->stuck++;
		unsigned owed = q ? bt_queue_inflight(q) - bt_queue_pending(q) : 0;
		bt__log(BT_LOG_ERROR,
			"worker %u (pid %ld): loop %u has not moved for %llu ms with %u connections "
			"open and %u unacknowledged: stuck (--worker-timeout %u): SIGKILL",
			i / s->tpp, (long)w->pid, i, (unsigned long long)(stalled / 1000000ull),
			q ? bt_queue_load(q) : 0, owed, s->cfg->worker_timeout_ms);
		bt__notify("STATUS=worker %u (pid %ld) stuck for %llu ms: killed", i / s->tpp,
			   (long)w->pid, (unsigned long long)(stalled / 1000000ull));
		kill(w->pid, SIGKILL);
	}
}

static void on_timer(void *ctx)
{
	struct sup *s = ctx;
	uint64_t now = bt__now_ns();
	if (s->watch_next_ns && now >= s->watch_next_ns && !s->draining) {
		watchdog(s, now);
		s->watch_next_ns = now + watch_period_ns(s);
	}
	for (unsigned i = 0; i < s->nw && !s->draining; i++) {
		struct wslot *w = &s->w[i];
		if (w->pid || !w->respawn_at_ns || w->respawn_at_ns > now)
			continue;
		if (!slots_free(s, i)) {
			/* Its connections are still being handed back. */
			w->respawn_at_ns = now + 10000000ull;
			continue;
		}
		w->restarts++;
		if (spawn(s, i) == 0) {
			bt__log(BT_LOG_INFO, "worker %u: respawned as pid %ld", i, (long)w->pid);
		} else {
			w->respawn_at_ns = now + (uint64_t)w->backoff_ms * 1000000ull;
			if (w->backoff_ms < RESPAWN_MAX_MS)
				w->backoff_ms *= 2;
		}
	}
	if (s->draining && !s->killed && now >= s->drain_deadline_ns && s->cfg->mode == BT_MODE_PROCESS) {
		/* Workers got their deadline and a grace second: stop waiting. */
		for (unsigned i = 0; i < s->nw; i++)
			if (s->w[i].pid) {
				bt__log(BT_LOG_WARN, "worker %u (pid %ld) still running after the drain deadline: SIGKILL",
					i, (long)s->w[i].pid);
				kill(s->w[i].pid, SIGKILL);
			}
		s->killed = 1;
	}
	schedule(s);
}

/* Arm the acceptor's timer for the next thing due. */
static void schedule(struct sup *s)
{
	uint64_t next = 0, now = bt__now_ns();
	for (unsigned i = 0; i < s->nw; i++)
		if (!s->w[i].pid && s->w[i].respawn_at_ns && !s->draining &&
		    (!next || s->w[i].respawn_at_ns < next))
			next = s->w[i].respawn_at_ns;
	if (s->draining && !s->killed && (!next || s->drain_deadline_ns < next))
		next = s->drain_deadline_ns;
	if (s->watch_next_ns && !s->draining && (!next || s->watch_next_ns < next))
		next = s->watch_next_ns;
	if (next)
		bt_acceptor_timer(s->acc, next > now ? (unsigned)((next - now) / 1000000ull) + 1 : 0,
				  on_timer, s);
}

static int running_workers(const struct sup *s)
{
	int n = 0;
	for (unsigned i = 0; i < s->nw; i++)
		n += s->w[i].pid != 0 || s->w[i].running;
	return n;
}

static void reap_children(struct sup *s)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		unsigned i;
		for (i = 0; i < s->nw; i++)
			if (s->w[i].pid == pid)
				break;
		if (i == s->nw)
			continue;
		struct wslot *w = &s->w[i];
		uint64_t lived = bt__now_ns() - w->started_ns;
		w->pid = 0;
		w->killing = 0;
		for (unsigned t = 0; t < s->tpp; t++)
			bt_acceptor_detach(s->acc, i * s->tpp + t);
		int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
		if (s->draining) {
			bt__log(clean ? BT_LOG_DEBUG : BT_LOG_WARN, "worker %u (pid %ld) exited: %s %d", i,
				(long)pid, WIFEXITED(st) ? "status" : "signal",
				WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			continue;
		}
		if (lived > STABLE_NS || !w->backoff_ms)
			w->backoff_ms = RESPAWN_MIN_MS;
		bt__log(BT_LOG_WARN, "worker %u (pid %ld) %s %d after %.1f s: respawning in %u ms", i,
			(long)pid, WIFEXITED(st) ? "exited with status" : "killed by signal",
			WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), (double)lived / 1e9,
			w->backoff_ms);
		bt__notify("STATUS=worker %u (pid %ld) %s %d; respawning", i, (long)pid,
			   WIFEXITED(st) ? "exited with status" : "killed by signal",
			   WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		w->respawn_at_ns = bt__now_ns() + (uint64_t)w->backoff_ms * 1000000ull;
		if (w->backoff_ms < RESPAWN_MAX_MS)
			w->backoff_ms *= 2;
	}
	schedule(s);
	if (s->draining && running_workers(s) == 0)
		bt_acceptor_stop(s->acc);
}

static void start_drain(struct sup *s, const char *why)
{
	if (s->draining)
		return;
	s->draining = 1;
	bt__log(BT_LOG_INFO, "%s: draining (%u ms for open connections)", why,
		s->cfg->drain_timeout_ms);
	bt__notify("STOPPING=1\nSTATUS=%s: draining, %d worker%s finishing", why,
		   running_workers(s), running_workers(s) == 1 ? "" : "s");
	bt_acceptor_drain(s->acc, s->cfg->drain_timeout_ms);
	s->drain_deadline_ns = bt__now_ns() + (uint64_t)s->cfg->drain_timeout_ms * 1000000ull +
			       1000000000ull;
	for (unsigned i = 0; i < s->nw; i++)
		s->w[i].respawn_at_ns = 0;
	schedule(s);
	if (running_workers(s) == 0)
		bt_acceptor_stop(s->acc);
}

static void on_signal(void *ctx)
{
	struct sup *s = ctx;
	struct signalfd_siginfo si;
	while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap_children(s);
			break;
		case SIGTERM:
			start_drain(s, "SIGTERM");
			break;
		case SIGINT:
			start_drain(s, "SIGINT");
			break;
		case SIGUSR1:
			print_counters(s, "SIGUSR1");
			break;
		case SIGHUP:
			bt__log(BT_LOG_WARN, "SIGHUP ignored: there is no reload yet; restart to change "
					     "the configuration");
			break;
		}
	}
}

static void on_worker_gone(void *ctx, unsigned idx)
{
	(void)ctx;
	(void)idx; /* SIGCHLD follows and does the rest */
}

/* Close the listeners opened so far. */
static void close_listeners(struct sup *s)
{
	for (int k = 0; k < s->nl; k++)
		if (s->lfds[k] >= 0)
			close(s->lfds[k]);
	s->nl = 0;
}

/* The listeners: socket activation, else --listen, else the program's
 * default.  0, 1 (a failure, logged) or 2 (refused: --listen with socket
 * activation). */
static int open_listeners(struct sup *s)
{
	const struct bt_runtime_config *cfg = s->cfg;
	char desc[160];
	int n = bt__listen_inherited(s->lfds, 64);
	if (n < 0)
		return 1;
	if (n > 0) {
		s->nl = n;
		if (cfg->nlisten > 0) {
			bt__log(BT_LOG_ERROR,
				"--listen %s given together with %d socket%s from systemd (LISTEN_FDS): "
				"the .socket unit owns the addresses; drop --listen or the socket unit",
				cfg->listen[0], n, n == 1 ? "" : "s");
			close_listeners(s);
			return 2;
		}
		for (int i = 0; i < n; i++) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			getsockname(s->lfds[i], (struct sockaddr *)&ss, &sl);
			bt__describe_addr((struct sockaddr *)&ss, sl, desc, sizeof(desc));
			bt__log(BT_LOG_INFO, "listening on %s (fd %d from systemd)", desc, s->lfds[i]);
		}
		return 0;
	}
	const char *const *specs = cfg->listen;
	unsigned count = cfg->nlisten;
	if (count == 0 && cfg->default_listen) {
		specs = &cfg->default_listen;
		count = 1;
	}
	if (count == 0) {
		bt__log(BT_LOG_ERROR, "nothing to listen on: give --listen HOST:PORT (or socket activation)");
		return 2;
	}
	for (unsigned i = 0; i < count; i++) {
		int fd = bt__listen_open(specs[i], cfg->backlog, desc, sizeof(desc));
		if (fd < 0) {
			close_listeners(s);
			return 1;
		}
		s->lfds[s->nl++] = fd;
		bt__log(BT_LOG_INFO, "listening on %s", desc);
	}
	return 0;
}

int bt_runtime_run(const struct bt_runtime_config *cfg_in, const struct bt_handler *h_in, void *user)
{
	struct sup sup, *s = &sup;
	memset(s, 0, sizeof(*s));
	if (!cfg_in || !h_in || bt__runtime_config_take(&s->config, cfg_in) < 0 ||
	    bt__handler_take(&s->handler, h_in) < 0)
		return 2;
	if (!s->handler.on_data) {
		bt__log(BT_LOG_ERROR, "bt_runtime_run: the handler has no on_data");
		return 2;
	}
	if (s->config.out_high < 4096 ||
	    (s->config.worker_timeout_ms && s->config.worker_timeout_ms < 100)) {
		bt__log(BT_LOG_ERROR, "bt_runtime_run: out_high below 4096 or worker_timeout_ms "
				      "below 100");
		return 2;
	}
	const struct bt_runtime_config *cfg = &s->config;
	s->cfg = cfg;
	s->h = &s->handler;
	bt__runtime_queue_config(cfg, &s->qc);
	s->user = user;
	s->start_ns = bt__now_ns();
	s->sigfd = -1;
	s->donefd = -1;
	signal(SIGPIPE, SIG_IGN);

	int lrc = open_listeners(s);
	if (lrc)
		return lrc;

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->nw = cfg->workers ? cfg->workers : (unsigned)(ncpu > 0 ? ncpu : 1);
	s->tpp = cfg->mode == BT_MODE_PROCESS && cfg->threads > 1 ? cfg->threads : 1;
	s->nslots = s->nw * s->tpp;
	s->w = calloc(s->nw, sizeof(*s->w));
	int status = 1;
	int rc = !s->w ? -ENOMEM
		 : s->tpp > 64 || s->nslots > 4096 ? -EINVAL
		 : cfg->mode == BT_MODE_THREAD ? 0
		 : bt_queue_shm_create(&s->shm, s->nslots, s->qc.max_inflight);
	if (rc < 0)
		goto out;

	struct bt_acceptor_config ac;
	bt_acceptor_config_init(&ac);
	ac.dispatch = cfg->dispatch;
	ac.backend = cfg->backend;
	ac.on_worker_gone = on_worker_gone;
	ac.ctx = s;
	rc = bt_acceptor_create(&s->acc, &ac, s->nslots);
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "cannot create the acceptor");
		goto out;
	}
	for (int i = 0; i < s->nl; i++) {
		if (bt_acceptor_add_listener(s->acc, s->lfds[i]) < 0)
			goto out;
		s->lfds[i] = -1; /* the acceptor's now */
	}

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->sigfd < 0) {
		bt__log_errno(BT_LOG_ERROR, -errno, "signalfd");
		goto out;
	}
	if (bt_acceptor_watch(s->acc, s->sigfd, on_signal, s) < 0)
		goto out;
	if (cfg->mode == BT_MODE_THREAD) {
		s->donefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (s->donefd < 0) {
			bt__log_errno(BT_LOG_ERROR, -errno, "eventfd");
			goto out;
		}
		if (bt_acceptor_watch(s->acc, s->donefd, on_thread_done, s) < 0)
			goto out;
	}

	if (cfg->mode == BT_MODE_THREAD) {
		if (sem_init(&s->ready, 0, 0) < 0) {
			bt__log_errno(BT_LOG_ERROR, -errno, "sem_init");
			goto out;
		}
		s->ready_init = 1;
	}
	unsigned spawned = 0;
	for (unsigned i = 0; i < s->nw; i++, spawned++) {
		s->w[i].backoff_ms = RESPAWN_MIN_MS;
		if ((cfg->mode == BT_MODE_THREAD ? spawn_thread(s, i) : spawn(s, i)) < 0) {
			bt__log(BT_LOG_ERROR, "cannot start worker %u", i);
			s->start_failed = 1;
			break;
		}
	}
	if (cfg->mode == BT_MODE_THREAD) {
		for (unsigned i = 0; i < spawned; i++) {
			while (sem_wait(&s->ready) < 0 && errno == EINTR)
				;
		}
		for (unsigned i = 0; i < spawned; i++)
			if (s->w[i].start_rc < 0)
				s->start_failed = 1;
	}
	if (s->start_failed)
		start_drain(s, "start-up failure");
	char title[96];
	snprintf(title, sizeof(title), "%s: acceptor", cfg->name);
	bt__proctitle_set(title);
	char flush[32];
	char of[32] = "";
	if (s->tpp > 1)
		snprintf(of, sizeof(of), " of %u threads", s->tpp);
	char summary[256];
	snprintf(summary, sizeof(summary), "%u worker %s%s, %s backend, batch %u, flush %s, dispatch %s",
		 s->nw, cfg->mode == BT_MODE_THREAD ? "threads" : "processes", of,
		 bt_acceptor_backend(s->acc), s->qc.batch,
		 bt_queue_flush_name(&s->qc, flush, sizeof(flush)),
		 bt_acceptor_dispatch_name(cfg->dispatch));
	bt__log(BT_LOG_INFO, "%s: %s", cfg->name, summary);
	if (!s->draining)
		bt__notify("READY=1\nMAINPID=%ld\nSTATUS=serving: %s", (long)getpid(), summary);

	if (cfg->worker_timeout_ms) {
		s->watch_next_ns = bt__now_ns() + watch_period_ns(s);
		schedule(s);
	}
	rc = bt_acceptor_run(s->acc);
	print_counters(s, "exit");
	status = rc == 0 && s->draining && !s->start_failed ? 0 : 1;
out:
	if (s->acc) {
		for (unsigned i = 0; i < s->nw; i++) {
			if (s->w && s->w[i].pid) {
				kill(s->w[i].pid, SIGKILL);
				waitpid(s->w[i].pid, NULL, 0);
			}
			if (s->w && s->w[i].running) {
				/* Still running (a failed start): drain it now. */
				bt_queue_send_drain(s->w[i].q, 1);
				pthread_join(s->w[i].tid, NULL);
				s->w[i].running = 0;
			}
		}
		bt_acceptor_destroy(s->acc);
	}
	if (s->donefd > 0)
		close(s->donefd);
	if (s->ready_init)
		sem_destroy(&s->ready);
	bt__pool_shutdown_global(); /* thread mode: the workers' job pool */
	for (int k = 0; k < s->nl; k++)
		if (s->lfds[k] >= 0)
			close(s->lfds[k]);
	if (s->sigfd >= 0)
		close(s->sigfd);
	bt_queue_shm_destroy(s->shm);
	free(s->w);
	return status;
}
