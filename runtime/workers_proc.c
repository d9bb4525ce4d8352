/* SPDX-License-Identifier: MIT */
/*
 * The worker set as processes: each worker is a forked process that runs
 * --threads loops (one by default), each loop on its own channel and the
 * acceptor's slot of the same number, acknowledging through shared memory
 * made before the fork.  A process that dies is reaped on SIGCHLD, its
 * slots' unacknowledged connections go to the others, and it is forked
 * again with back-off; the watchdog SIGKILLs one that is stuck.
 *
 * A worker is forked (not exec'd): it starts with a copy of the
 * supervisor, so it first closes every descriptor but its channels, stdio
 * and the program's inherit_fds (close_range), among them the listeners
 * and the client connections the acceptor holds; then it unblocks signals
 * and runs its loops.
 */
#include "supervisor.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define RESPAWN_MIN_MS 100
#define RESPAWN_MAX_MS 5000
#define STABLE_NS 10000000000ull /* a worker that lived 10 s resets back-off */
/* A worker's channels: --threads (at most 64) x --acceptors (at most 16). */
#define MAX_KEEP (64 * BT_RUNTIME_MAX_ACCEPTORS)

struct proc {
	pid_t pid; /* 0: not running */
	uint64_t started_ns;
	uint64_t respawn_at_ns; /* 0: none due */
	unsigned backoff_ms;
	int killing; /* SIGKILLed by the watchdog */
};

struct procs {
	bt_queue_shm_t *shm;
	int killed; /* the drain's deadline passed: every worker was SIGKILLed */
	struct proc p[];
};

static struct procs *P(const struct bt_runtime *s)
{
	return s->set;
}

/* --- in the worker process ------------------------------------------------- */

/* Acceptor k's shared-memory slot for worker loop slot: acceptor 0's is
 * the loop's own number, the others' follow, gbase apart. */
static unsigned shm_slot(const struct bt_runtime *s, unsigned k, unsigned slot)
{
	return k * s->gbase + slot;
}

/* One worker loop on its channels (chfd[k] from acceptor k), until it
 * drains or fails: 0 or -errno. */
static int run_slot(struct bt_runtime *s, unsigned slot, const int *chfd)
{
	if (s->cfg->pin) {
		cpu_set_t set = bt__sup_cpu(slot);
		if (sched_setaffinity(0, sizeof(set), &set) < 0) /* 0: the calling thread */
			bt__log_errno(BT_LOG_WARN, -errno, "worker %u: sched_setaffinity", slot);
	}
	bt_fdpass_t *ch;
	int rc = bt_fdpass_open(&ch, chfd[0]);
	if (rc < 0)
		return rc;
	struct bt_loop_config lc;
	bt__sup_loop_config(s, slot, &lc);
	rc = bt_queue_inlet_forked(&lc.inlet, ch, P(s)->shm, slot);
	if (rc < 0) {
		bt_fdpass_close(ch);
		return bt__log_errno(BT_LOG_ERROR, rc, "worker %u: its inlet", slot);
	}
	bt_loop_t *loop;
	rc = bt_loop_create(&loop, &lc);
	if (rc < 0) {
		bt_queue_inlet_destroy(lc.inlet);
		return bt__log_errno(BT_LOG_ERROR, rc, "worker %u: cannot create its loop", slot);
	}
	for (unsigned k = 1; k < bt__accs_count(s); k++) {
		bt_queue_inlet_t *in;
		rc = bt_fdpass_open(&ch, chfd[k]);
		if (rc == 0) {
			rc = bt_queue_inlet_forked(&in, ch, P(s)->shm, shm_slot(s, k, slot));
			if (rc < 0)
				bt_fdpass_close(ch);
		}
		if (rc == 0) {
			rc = bt_loop_add_inlet(loop, in);
			if (rc < 0)
				bt_queue_inlet_destroy(in);
		}
		if (rc < 0) {
			bt_loop_destroy(loop);
			return bt__log_errno(BT_LOG_ERROR, rc, "worker %u: acceptor %u's inlet", slot, k);
		}
	}
	bt__loop_use_mslot(loop, bt__metrics_slot(s->metrics, slot));
	rc = bt_loop_run(loop);
	bt_loop_destroy(loop);
	return rc;
}

struct slot_thread {
	struct bt_runtime *s;
	unsigned slot, t;
	int fd[BT_RUNTIME_MAX_ACCEPTORS];
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

/* Close every descriptor but stdio and keep[0..n) (n at most
 * MAX_KEEP + BT_RUNTIME_MAX_INHERIT). */
void bt__close_all_but(const int *keep, unsigned n)
{
	int sorted[MAX_KEEP + BT_RUNTIME_MAX_INHERIT];
	memcpy(sorted, keep, n * sizeof(int));
	qsort(sorted, n, sizeof(int), cmp_int);
	unsigned lo = 3;
	for (unsigned i = 0; i <= n; i++) {
		unsigned hi = i < n ? (unsigned)sorted[i] : ~0u; /* close [lo, hi) */
		if (hi > lo && syscall(SYS_close_range, lo, hi - 1, 0) < 0)
			for (unsigned fd = lo; fd < hi && fd < 65536; fd++)
				close((int)fd);
		if (i < n && (unsigned)sorted[i] + 1 > lo)
			lo = (unsigned)sorted[i] + 1;
	}
}

/* A worker process: --threads loops; loop t's channel from acceptor k is
 * chfd[k * tpp + t]; the first loop on this thread.  It exits when all of
 * them have drained. */
static void worker_main(struct bt_runtime *s, unsigned p, const int *chfd, pid_t parent)
	__attribute__((noreturn));
static void worker_main(struct bt_runtime *s, unsigned p, const int *chfd, pid_t parent)
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
	/* Keep stdio, the channels and the program's own; close the rest
	 * (listeners, held client connections, the acceptor's ring, other
	 * workers' channels). */
	int keep[MAX_KEEP + BT_RUNTIME_MAX_INHERIT];
	unsigned nkeep = 0;
	unsigned K = bt__accs_count(s);
	for (unsigned t = 0; t < K * s->tpp; t++)
		keep[nkeep++] = chfd[t];
	for (unsigned k = 0; k < s->cfg->ninherit; k++)
		if (s->cfg->inherit_fds[k] > 2)
			keep[nkeep++] = s->cfg->inherit_fds[k];
	bt__close_all_but(keep, nkeep);
	sigset_t all;
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGTERM, SIG_IGN); /* the acceptor's DRAIN decides */
	signal(SIGINT, SIG_IGN);  /* a terminal's ^C goes to the group */
	signal(SIGUSR1, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);

	char title[96];
	snprintf(title, sizeof(title), "%s: worker %u", s->cfg->name, p);
	bt__proctitle_set(title);

	static struct slot_thread st[64]; /* this process's own, after the fork */
	for (unsigned t = 0; t < s->tpp; t++) {
		st[t] = (struct slot_thread){.s = s, .slot = p * s->tpp + t, .t = t};
		for (unsigned k = 0; k < K; k++)
			st[t].fd[k] = chfd[k * s->tpp + t];
	}
	for (unsigned t = 1; t < s->tpp; t++) {
		int e = pthread_create(&st[t].tid, NULL, slot_thread_main, &st[t]);
		if (e) {
			/* A loop missing would strand its channel: start over. */
			bt__log_errno(BT_LOG_ERROR, -e, "worker %u: pthread_create(thread %u)", p, t);
			_exit(74);
		}
	}
	if (run_slot(s, p * s->tpp, st[0].fd) < 0)
		_exit(73); /* a failed loop strands its channel: start over */
	for (unsigned t = 1; t < s->tpp; t++)
		pthread_join(st[t].tid, NULL);
	_exit(0);
}

/* --- in the supervisor ------------------------------------------------------ */

static int procs_init(struct bt_runtime *s)
{
	struct procs *ps = calloc(1, sizeof(*ps) + s->maxw * sizeof(ps->p[0]));
	if (!ps)
		return -ENOMEM;
	s->set = ps;
	for (unsigned i = 0; i < s->maxw; i++)
		ps->p[i].backoff_ms = RESPAWN_MIN_MS;
	/* A slot for every worker it may ever have (live scaling): untouched
	 * pages of a shared anonymous mapping cost nothing. */
	int rc = bt_queue_shm_create(&ps->shm, s->gbase * bt__accs_count(s), s->qc.max_inflight);
	if (rc < 0)
		bt__log_errno(BT_LOG_ERROR, rc, "bt_queue_shm_create");
	return rc;
}

/* Fork worker process p with its --threads channels from each acceptor,
 * and attach them to the acceptors' slots p*tpp.. . */
static int procs_start(struct bt_runtime *s, unsigned p)
{
	struct procs *ps = P(s);
	unsigned T = s->tpp, K = bt__accs_count(s), n = K * T, made = 0, attached = 0;
	/* Channel c: acceptor c / T's to loop c % T. */
	int par[MAX_KEEP], kid[MAX_KEEP];
	int rc = 0;
	for (; made < n; made++) {
		int sv[2];
		rc = bt_fdpass_pair(sv, 0);
		if (rc < 0)
			break;
		par[made] = sv[0];
		kid[made] = sv[1];
		bt_queue_shm_reset(ps->shm, shm_slot(s, made / T, p * T + made % T));
	}
	pid_t pid = -1, self = getpid();
	if (rc == 0) {
		fflush(NULL);
		pid = fork();
		if (pid < 0)
			rc = bt__log_errno(BT_LOG_ERROR, -errno, "fork(worker %u)", p);
		else if (pid == 0) {
			for (unsigned c = 0; c < n; c++)
				close(par[c]);
			worker_main(s, p, kid, self);
		}
	}
	for (unsigned c = 0; c < made; c++)
		close(kid[c]);
	for (; rc == 0 && attached < n; attached++) {
		unsigned k = attached / T, slot = p * T + attached % T;
		bt_fdpass_t *ch;
		bt_queue_t *q;
		rc = bt_fdpass_open(&ch, par[attached]);
		if (rc < 0)
			break;
		par[attached] = -1; /* the channel's now */
		rc = bt_queue_create(&q, &s->qc, ch, ps->shm, shm_slot(s, k, slot));
		if (rc < 0) {
			bt_fdpass_close(ch);
			bt__log_errno(BT_LOG_ERROR, rc, "worker %u: bt_queue_create", slot);
			break;
		}
		rc = bt__accs_attach(s, k, slot, q);
		if (rc < 0) {
			bt_queue_destroy(q);
			break;
		}
	}
	if (rc < 0) {
		for (unsigned c = attached; c < made; c++)
			if (par[c] >= 0)
				close(par[c]);
		for (unsigned t = 0; t < T; t++)
			bt__accs_detach(s, p * T + t);
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		return rc;
	}
	ps->p[p].pid = pid;
	ps->p[p].started_ns = bt__now_ns();
	ps->p[p].respawn_at_ns = 0;
	bt__log(BT_LOG_DEBUG, "worker %u: pid %ld", p, (long)pid);
	return 0;
}

static int procs_ready(struct bt_runtime *s, unsigned n)
{
	(void)s, (void)n; /* a process that cannot start exits and is respawned */
	return 0;
}

static int procs_alive(const struct bt_runtime *s, unsigned i)
{
	return P(s)->p[i].pid != 0;
}

static unsigned procs_open(const struct bt_runtime *s, unsigned slot)
{
	return bt_queue_shm_load(P(s)->shm, slot);
}

static void procs_describe(const struct bt_runtime *s, unsigned slot, char *buf, size_t cap)
{
	long pid = (long)P(s)->p[slot / s->tpp].pid;
	if (s->tpp > 1)
		snprintf(buf, cap, "pid %ld thread %u", pid, slot % s->tpp);
	else
		snprintf(buf, cap, "pid %ld", pid);
}

static void procs_info(const struct bt_runtime *s, unsigned i, long *pid, uint64_t *started_ns)
{
	*pid = (long)P(s)->p[i].pid;
	*started_ns = P(s)->p[i].started_ns;
}

/* A stuck loop takes its whole process: SIGKILL, then the usual path (its
 * unacknowledged connections to the others, a respawn). */
static void procs_watch(struct bt_runtime *s, unsigned slot, uint64_t stalled, uint64_t limit)
{
	unsigned i = slot / s->tpp;
	struct proc *w = &P(s)->p[i];
	if (stalled <= limit || !w->pid || w->killing)
		return;
	w->killing = 1;
	s->wc[i].stuck++;
	bt_queue_t *q = bt_acceptor_queue(s->acc, slot);
	unsigned owed = q ? bt_queue_inflight(q) - bt_queue_pending(q) : 0;
	bt__log(BT_LOG_ERROR,
		"worker %u (pid %ld): loop %u has not moved for %llu ms with %u connections "
		"open and %u unacknowledged: stuck (--worker-timeout %u): SIGKILL",
		i, (long)w->pid, slot, (unsigned long long)(stalled / 1000000ull),
		q ? bt_queue_consumer_load(q) : 0, owed, s->cfg->worker_timeout_ms);
	bt__notify("STATUS=worker %u (pid %ld) stuck for %llu ms: killed", i, (long)w->pid,
		   (unsigned long long)(stalled / 1000000ull));
	kill(w->pid, SIGKILL);
}

static void procs_reap(struct bt_runtime *s)
{
	struct procs *ps = P(s);
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		unsigned i;
		for (i = 0; i < s->nw; i++)
			if (ps->p[i].pid == pid)
				break;
		if (i == s->nw)
			continue;
		struct proc *w = &ps->p[i];
		uint64_t lived = bt__now_ns() - w->started_ns;
		w->pid = 0;
		w->killing = 0;
		for (unsigned t = 0; t < s->tpp; t++) {
			bt__accs_detach(s, i * s->tpp + t);
			bt__metrics_worker_gone(s->metrics, i * s->tpp + t);
		}
		int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
		const char *how = WIFEXITED(st) ? "exited with status" : "killed by signal";
		int code = WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st);
		int retire = s->wc[i].retire;
		s->wc[i].retire = 0;
		if (s->draining) {
			bt__log(clean ? BT_LOG_DEBUG : BT_LOG_WARN, "worker %u (pid %ld) %s %d", i,
				(long)pid, how, code);
			continue;
		}
		if (i >= s->want) {
			/* Taken away (workers N): it drained; no respawn. */
			bt__log(clean ? BT_LOG_INFO : BT_LOG_WARN, "worker %u (pid %ld) retired: %s %d",
				i, (long)pid, how, code);
			if (!clean)
				for (unsigned t = 0; t < s->tpp; t++)
					bt__sup_worker_gone(s, i * s->tpp + t);
			continue;
		}
		if (retire) {
			/* drain-worker, or workers N brought it back while it
			 * drained: its replacement starts at once. */
			bt__log(clean ? BT_LOG_INFO : BT_LOG_WARN, "worker %u (pid %ld) drained (%s %d): "
				"replacing it", i, (long)pid, how, code);
			w->backoff_ms = RESPAWN_MIN_MS;
			w->respawn_at_ns = bt__now_ns();
			if (!clean)
				for (unsigned t = 0; t < s->tpp; t++)
					bt__sup_worker_gone(s, i * s->tpp + t);
			continue;
		}
		if (lived > STABLE_NS || !w->backoff_ms)
			w->backoff_ms = RESPAWN_MIN_MS;
		bt__log(BT_LOG_WARN, "worker %u (pid %ld) %s %d after %.1f s: respawning in %u ms", i,
			(long)pid, how, code, (double)lived / 1e9, w->backoff_ms);
		bt__notify("STATUS=worker %u (pid %ld) %s %d; respawning", i, (long)pid, how, code);
		w->respawn_at_ns = bt__now_ns() + (uint64_t)w->backoff_ms * 1000000ull;
		if (w->backoff_ms < RESPAWN_MAX_MS)
			w->backoff_ms *= 2;
		for (unsigned t = 0; t < s->tpp; t++)
			bt__sup_worker_gone(s, i * s->tpp + t);
	}
	bt__sup_schedule(s);
	bt__sup_worker_ended(s);
}

static int slots_free(struct bt_runtime *s, unsigned p);

static int procs_revive(struct bt_runtime *s, unsigned i)
{
	struct proc *w = &P(s)->p[i];
	if (w->pid || w->respawn_at_ns)
		return 0; /* running, or on its way */
	if (!slots_free(s, i)) {
		w->respawn_at_ns = bt__now_ns(); /* once its slots are back (procs_tick) */
		return 0;
	}
	w->backoff_ms = RESPAWN_MIN_MS;
	int rc = procs_start(s, i);
	if (rc == 0)
		bt__log(BT_LOG_INFO, "worker %u: started as pid %ld", i, (long)w->pid);
	return rc;
}

/* Every slot of process p reclaimed by the acceptor (its connections
 * handed back): it may be started again. */
static int slots_free(struct bt_runtime *s, unsigned p)
{
	for (unsigned t = 0; t < s->tpp; t++)
		if (bt__accs_slot_busy(s, p * s->tpp + t))
			return 0;
	return 1;
}

static void procs_tick(struct bt_runtime *s, uint64_t now)
{
	struct procs *ps = P(s);
	for (unsigned i = 0; i < s->nw && !s->draining; i++) {
		struct proc *w = &ps->p[i];
		if (w->pid || !w->respawn_at_ns || w->respawn_at_ns > now)
			continue;
		if (i >= s->want) {
			w->respawn_at_ns = 0; /* taken away meanwhile (workers N) */
			continue;
		}
		if (!slots_free(s, i)) {
			/* Its connections are still being handed back. */
			w->respawn_at_ns = now + 10000000ull;
			continue;
		}
		s->wc[i].restarts++;
		if (procs_start(s, i) == 0) {
			bt__log(BT_LOG_INFO, "worker %u: respawned as pid %ld", i, (long)w->pid);
		} else {
			w->respawn_at_ns = now + (uint64_t)w->backoff_ms * 1000000ull;
			if (w->backoff_ms < RESPAWN_MAX_MS)
				w->backoff_ms *= 2;
		}
	}
	if (s->draining && !ps->killed && now >= s->drain_deadline_ns) {
		/* Workers got their deadline and a grace second: stop waiting. */
		for (unsigned i = 0; i < s->nw; i++)
			if (ps->p[i].pid) {
				bt__log(BT_LOG_WARN, "worker %u (pid %ld) still running after the drain "
						     "deadline: SIGKILL", i, (long)ps->p[i].pid);
				kill(ps->p[i].pid, SIGKILL);
			}
		ps->killed = 1;
	}
}

static uint64_t procs_next_due(const struct bt_runtime *s)
{
	const struct procs *ps = P(s);
	uint64_t next = 0;
	for (unsigned i = 0; i < s->nw && !s->draining; i++)
		if (!ps->p[i].pid && ps->p[i].respawn_at_ns &&
		    (!next || ps->p[i].respawn_at_ns < next))
			next = ps->p[i].respawn_at_ns;
	if (s->draining && !ps->killed)
		next = s->drain_deadline_ns;
	return next;
}

static void procs_stop(struct bt_runtime *s)
{
	struct procs *ps = P(s);
	for (unsigned i = 0; ps && i < s->nw; i++)
		if (ps->p[i].pid) {
			kill(ps->p[i].pid, SIGKILL);
			waitpid(ps->p[i].pid, NULL, 0);
			ps->p[i].pid = 0;
		}
}

static void procs_fini(struct bt_runtime *s)
{
	struct procs *ps = P(s);
	if (!ps)
		return;
	bt_queue_shm_destroy(ps->shm);
	free(ps);
	s->set = NULL;
}

const struct bt__workers_ops bt__workers_proc = {
	.noun = "processes",
	.init = procs_init,
	.start = procs_start,
	.ready = procs_ready,
	.alive = procs_alive,
	.open = procs_open,
	.describe = procs_describe,
	.info = procs_info,
	.revive = procs_revive,
	.watch = procs_watch,
	.reap = procs_reap,
	.tick = procs_tick,
	.next_due = procs_next_due,
	.stop = procs_stop,
	.fini = procs_fini,
};
