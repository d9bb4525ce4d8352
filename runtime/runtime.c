/* SPDX-License-Identifier: MIT */
/*
 * The supervisor (baton/runtime.h): bt_runtime_run opens the listeners,
 * creates the acceptor, starts the worker set of the configured kind
 * (workers_proc.c, workers_thread.c), and runs the acceptor's loop, which
 * also carries the supervisor's signals (signals.c) and its one timer: the
 * worker set's respawns, the watchdog, the drain's deadline (drain.c).
 * supervisor.h says which file holds what.
 */
#include "supervisor.h"

#include "ev.h"

#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The watchdog looks this often: a quarter of --worker-timeout, within
 * [50 ms, 1 s]. */
static uint64_t watch_period_ns(const struct bt_runtime *s)
{
	uint64_t p = (uint64_t)s->cfg->worker_timeout_ms * 1000000ull / 4;
	return p < 50000000ull ? 50000000ull : p > 1000000000ull ? 1000000000ull : p;
}

cpu_set_t bt__sup_cpu(unsigned slot)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((int)(slot % (unsigned)(ncpu > 0 ? ncpu : 1)), &set);
	return set;
}

void bt__sup_loop_config(const struct bt_runtime *s, unsigned slot, struct bt_loop_config *lc)
{
	bt_loop_config_init(lc);
	lc->worker_id = (int)slot;
	lc->handler = s->h;
	lc->user = s->user;
	lc->backend = s->cfg->backend;
	lc->drain_timeout_ms = s->cfg->drain_timeout_ms;
	lc->out_high = s->cfg->out_high;
	lc->proxy_timeout_ms = s->cfg->proxy_timeout_ms;
}

unsigned bt__sup_running(const struct bt_runtime *s)
{
	unsigned n = 0;
	for (unsigned i = 0; i < s->nw; i++)
		n += s->ops->alive(s, i) != 0;
	return n;
}

/*
 * The watchdog.  Every worker loop counts its wake-ups where the acceptor
 * can read them (it wakes at least every 100 ms while it holds
 * connections).  A loop whose count has not moved for --worker-timeout
 * while it has work (connections open or sent to it and not acknowledged)
 * is stuck: a handler in an endless loop, a blocking call, SIGSTOP.  The
 * worker set decides what to do (workers_proc.c kills the process;
 * workers_thread.c reports the thread, which dispatch already passes over).
 * An attached worker's heartbeat is its ACKs (it repeats the last one
 * every second while it holds connections): attach.c kills it if we may.
 */
static void watchdog(struct bt_runtime *s, uint64_t now)
{
	uint64_t limit = (uint64_t)s->cfg->worker_timeout_ms * 1000000ull;
	uint64_t *stalled = calloc(s->nslots ? s->nslots : 1, sizeof(*stalled));
	if (stalled) { /* else at the next look */
		bt__accs_stalled(s, now, stalled, s->nslots);
		for (unsigned i = 0; i < s->nslots; i++)
			s->ops->watch(s, i, stalled[i], limit);
		free(stalled);
	}
	bt__sup_attach_watch(s, now, limit);
}

static void on_timer(void *ctx)
{
	struct bt_runtime *s = ctx;
	uint64_t now = bt__now_ns();
	if (s->watch_next_ns && now >= s->watch_next_ns && !s->draining) {
		watchdog(s, now);
		s->watch_next_ns = now + watch_period_ns(s);
	}
	s->ops->tick(s, now);
	bt__accs_balance(s, now);
	bt__sup_drain_due(s, now);
	bt__sup_schedule(s);
}

void bt__sup_schedule(struct bt_runtime *s)
{
	uint64_t next = s->ops->next_due(s), now = bt__now_ns();
	if (s->watch_next_ns && !s->draining && (!next || s->watch_next_ns < next))
		next = s->watch_next_ns;
	if (s->draining && s->attached && (!next || s->drain_deadline_ns < next))
		next = s->drain_deadline_ns;
	if (s->grace_until_ns && !s->draining && (!next || s->grace_until_ns < next))
		next = s->grace_until_ns;
	uint64_t bal = bt__accs_next_ns(s);
	if (bal && (!next || bal < next))
		next = bal;
	if (next)
		bt_acceptor_timer(s->acc, next > now ? (unsigned)((next - now) / 1000000ull) + 1 : 0,
				  on_timer, s);
}

const char *const *bt__sup_listen_specs(const struct bt_runtime *s, unsigned *count)
{
	if (s->cfg->nlisten == 0 && s->cfg->default_listen) {
		*count = 1;
		return &s->cfg->default_listen;
	}
	*count = s->cfg->nlisten;
	return s->cfg->listen;
}

/* Close the listeners opened so far. */
static void close_listeners(struct bt_runtime *s)
{
	for (int k = 0; k < s->nl; k++)
		if (s->lfds[k] >= 0)
			close(s->lfds[k]);
	s->nl = 0;
}

/* The listeners: socket activation, else --listen, else the program's
 * default.  0, 1 (a failure, logged) or 2 (refused: --listen with socket
 * activation). */
static int open_listeners(struct bt_runtime *s)
{
	const struct bt_runtime_config *cfg = s->cfg;
	char desc[160];
	int n = bt__listen_inherited(s->lfds, s->lproxy, 64);
	if (n < 0)
		return 1;
	if (n > 0) {
		s->nl = n;
		for (int i = 0; i < n; i++)
			s->lrole[i] = 'S';
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
			bt__log(BT_LOG_INFO, "listening on %s (fd %d from systemd%s)", desc, s->lfds[i],
				s->lproxy[i] ? ", PROXY protocol" : "");
		}
		return 0;
	}
	unsigned count;
	const char *const *specs = bt__sup_listen_specs(s, &count);
	if (count == 0 && s->has_producer)
		return 0; /* a work queue alone */
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
		s->lrole[s->nl] = 'L';
		s->lproxy[s->nl] = (uint8_t)bt__listen_proxy(specs[i]);
		s->lfds[s->nl++] = fd;
		bt__log(BT_LOG_INFO, "listening on %s%s", desc,
			s->lproxy[s->nl - 1] ? " (PROXY protocol)" : "");
	}
	return 0;
}

/* The config's strings that point into argv's original memory (a name
 * taken from argv[0] before bt_runtime_take_argv) are copied before the
 * first title overwrites them.  0 or -ENOMEM. */
static int own_strings(struct bt_runtime *s)
{
	const char **str[BT_RUNTIME_MAX_LISTEN + 2];
	unsigned n = 0;
	str[n++] = &s->config.name;
	str[n++] = &s->config.default_listen;
	for (unsigned i = 0; i < s->config.nlisten && i < BT_RUNTIME_MAX_LISTEN; i++)
		str[n++] = &s->config.listen[i];
	for (unsigned i = 0; i < n; i++) {
		if (!bt__proctitle_in_area(*str[i]))
			continue;
		char *copy = strdup(*str[i]);
		if (!copy)
			return -ENOMEM;
		s->owned[s->nowned++] = copy;
		*str[i] = copy;
	}
	return 0;
}

int bt__sup_slot_next(const struct bt_runtime *s, int i)
{
	for (unsigned k = (unsigned)(i + 1);; k++) {
		if (k < s->nslots)
			return (int)k;
		if (k < s->gbase)
			k = s->gbase;
		if (k >= s->gbase + BT_RUNTIME_MAX_ATTACHED)
			return -1;
		if (bt_acceptor_queue(s->acc, k))
			return (int)k;
	}
}

static void on_worker_gone(void *ctx, unsigned idx)
{
	bt__sup_attach_gone(ctx, idx); /* forked ones: SIGCHLD does the rest */
}

/*
 * Thread mode: connections may pass from the acceptor to the worker
 * threads as direct descriptors (ev.h: no entry in the process's
 * descriptor table, which all threads share), with BATON_DIRECT=1, on
 * io_uring and Linux 6.8.  Not the default: measured on Linux 6.18 here,
 * they cost more per connection than regular descriptors (a MSG_RING to
 * a worker's ring, set up with IORING_SETUP_DEFER_TASKRUN, runs as task
 * work of that thread, once per connection, and its completion wakes the
 * acceptor: 0.75 wake-ups of the acceptor per connection against 0.30;
 * docs/architecture.md).  The log
 * says which path runs, and why.
 */
static void choose_descriptors(struct bt_runtime *s)
{
	const char *env = getenv("BATON_DIRECT");
	if (!env || !strcmp(env, "0")) {
		bt__log(BT_LOG_INFO, "thread workers take regular descriptors%s",
			env ? " (BATON_DIRECT=0)" : "");
		return;
	}
	if (strcmp(env, "1")) {
		bt__log(BT_LOG_WARN, "BATON_DIRECT=%s: expected 0 or 1; regular descriptors", env);
		return;
	}
	if (s->nxacc) {
		/* A worker's completions name direct items by one queue's
		 * numbers (bt_loop_add_inlet). */
		bt__log(BT_LOG_INFO, "thread workers take regular descriptors: direct ones take one "
				     "acceptor (--acceptors %u)", bt__accs_count(s));
		return;
	}
	/* The tables' size is bounded by RLIMIT_NOFILE: its soft limit goes
	 * up to the hard one, as the process may do anyway. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			bt__log(BT_LOG_DEBUG, "RLIMIT_NOFILE raised from %llu to %llu",
				(unsigned long long)was, (unsigned long long)rl.rlim_max);
	}
	int rc = bt__acc_direct(s->acc);
	if (rc == 0)
		bt__log(BT_LOG_INFO, "thread workers take direct descriptors (io_uring fixed files, "
				     "passed with IORING_OP_MSG_RING; %u slots per ring)",
			bt__ev_files_wanted());
	else if (rc == -EMFILE)
		bt__log(BT_LOG_INFO, "thread workers take regular descriptors: RLIMIT_NOFILE (%u) "
				     "leaves too small a file table for direct ones (docs/architecture.md)",
			bt__ev_files_wanted());
	else
		bt__log_errno(BT_LOG_INFO, rc, "thread workers take regular descriptors: %s",
			      rc == -ENOSYS ? "direct ones need io_uring and Linux 6.8"
					    : "io_uring_register_files_sparse");
}

int bt_runtime_run(const struct bt_runtime_config *cfg_in, const struct bt_handler *h_in, void *user)
{
	struct bt_runtime sup, *s = &sup;
	memset(s, 0, sizeof(*s));
	s->ctl_lfd = -1;
	s->metrics_lfd = -1;
	s->rehome_peer = -1;
	if (!cfg_in || !h_in || bt__runtime_config_take(&s->config, cfg_in) < 0 ||
	    bt__handler_take(&s->handler, h_in) < 0)
		return 2;
	if (!s->handler.on_data && !s->handler.on_item) {
		bt__log(BT_LOG_ERROR, "bt_runtime_run: the handler has neither on_data nor on_item");
		return 2;
	}
	if (s->config.producer) {
		if (bt__sized_in(&s->producer, sizeof(s->producer), s->config.producer,
				 sizeof(struct bt_producer), "bt_producer") < 0)
			return 2;
		if (!s->producer.start || !s->handler.on_item) {
			bt__log(BT_LOG_ERROR, "bt_runtime_run: a producer needs a start callback and "
					      "the handler an on_item");
			return 2;
		}
		s->has_producer = 1;
	}
	if (s->config.on_stats && s->config.stats_interval_ms &&
	    s->config.stats_interval_ms < 10) {
		bt__log(BT_LOG_ERROR, "bt_runtime_run: stats_interval_ms below 10");
		return 2;
	}
	if (s->config.out_high < 4096 ||
	    (s->config.worker_timeout_ms && s->config.worker_timeout_ms < 100) ||
	    s->config.ninherit > BT_RUNTIME_MAX_INHERIT ||
	    (s->config.ninherit && !s->config.inherit_fds)) {
		bt__log(BT_LOG_ERROR, "bt_runtime_run: out_high below 4096, worker_timeout_ms "
				      "below 100, or inherit_fds missing or more than %d",
			BT_RUNTIME_MAX_INHERIT);
		return 2;
	}
	const struct bt_runtime_config *cfg = &s->config;
	int status = 1;
	s->cfg = cfg;
	s->h = &s->handler;
	bt__runtime_queue_config(cfg, &s->qc);
	s->user = user;
	s->start_ns = bt__now_ns();
	s->sigfd = -1;
	s->ops = cfg->mode == BT_MODE_THREAD ? &bt__workers_thread : &bt__workers_proc;
	if (own_strings(s) < 0) {
		bt__log(BT_LOG_ERROR, "bt_runtime_run: out of memory");
		status = 1;
		goto out;
	}
	bt__log_set_ident(cfg->name);
	signal(SIGPIPE, SIG_IGN);
	s->attach_fd = -1;
	s->ctl_fd = -1;
	s->prev_fd = -1;
	s->next_fd = -1;
	if (bt__gen_from_env(s) == 2) {
		status = 2;
		goto out;
	}
	if (s->ctl_fd < 0 && !cfg->worker_of && bt__master_wanted(s)) {
		/* The master holds the pid across reloads (master.c); the
		 * first generation goes on below, in a child. */
		int mrc = bt__master_run(s);
		if (mrc >= 0) {
			status = mrc;
			goto out;
		}
	}
	if (s->ctl_fd >= 0)
		bt__notify_relay(s->ctl_fd);
	if (cfg->worker_of) {
		s->tpp = cfg->threads > 1 ? cfg->threads : 1;
		status = s->tpp > 64 ? 2 : bt__sup_run_worker_of(s);
		goto out;
	}
	if (cfg->workers == BT_RUNTIME_WORKERS_NONE && !cfg->attach) {
		bt__log(BT_LOG_ERROR, "bt_runtime_run: no workers (BT_RUNTIME_WORKERS_NONE) and no "
				      "attach address");
		status = 2;
		goto out;
	}

	bt__ctl_resolve(s);
	int lrc = s->prev_fd >= 0 ? (bt__gen_take_listeners(s) < 0 ? 1 : 0) : open_listeners(s);
	if (lrc) {
		status = lrc;
		goto out;
	}

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	s->nw = cfg->workers == BT_RUNTIME_WORKERS_NONE ? 0
		: cfg->workers				 ? cfg->workers
							 : (unsigned)(ncpu > 0 ? ncpu : 1);
	s->tpp = cfg->mode == BT_MODE_PROCESS && cfg->threads > 1 ? cfg->threads : 1;
	s->nslots = s->nw * s->tpp;
	s->want = s->nw;
	/* Room to scale up live (baton-ctl workers N): 4 times the start, or
	 * 2 per CPU, at least 8, within the flags' own limits. */
	unsigned room = s->nw * 4 > (unsigned)ncpu * 2 ? s->nw * 4 : (unsigned)ncpu * 2;
	if (room < 8)
		room = 8;
	unsigned lim = 4096 / s->tpp < 1024 ? 4096 / s->tpp : 1024;
	s->maxw = room > lim ? lim : room;
	if (s->maxw < s->nw)
		s->maxw = s->nw;
	s->gbase = s->maxw * s->tpp;
	s->wc = calloc(s->maxw ? s->maxw : 1, sizeof(*s->wc));
	int rc = !s->wc ? -ENOMEM : s->tpp > 64 || s->nslots > 4096 ? -EINVAL : 0;
	if (rc < 0)
		goto out;

	struct bt_acceptor_config ac;
	bt_acceptor_config_init(&ac);
	ac.dispatch = cfg->dispatch;
	ac.backend = cfg->backend;
	ac.ctx = s;
	ac.on_worker_gone = on_worker_gone;
	bt__sup_producer_config(s, &ac);
	rc = bt_acceptor_create(&s->acc, &ac,
				s->gbase + (cfg->attach ? BT_RUNTIME_MAX_ATTACHED : 0));
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "cannot create the acceptor");
		goto out;
	}
	for (int i = 0; i < s->nl; i++) {
		if (bt_acceptor_add_listener(s->acc, s->lfds[i]) < 0)
			goto out;
		if (s->lproxy[i])
			bt__acc_listener_proxy(s->acc, s->lfds[i]);
		s->lkeep[s->nkeep++] = s->lfds[i]; /* for a reload: handover.c */
		s->lfds[i] = -1; /* the acceptor's now */
	}
	if (bt__accs_create(s, &ac, s->gbase) < 0)
		goto out;
	if (cfg->mode == BT_MODE_THREAD)
		choose_descriptors(s);
	if (bt__metrics_create(&s->metrics, s->gbase) < 0)
		goto out;
	if (bt__sup_signals(s) < 0 || bt__gen_watch(s) < 0 || s->ops->init(s) < 0 ||
	    bt__sup_attach_open(s) < 0 || bt__ctl_open(s) < 0)
		goto out;

	unsigned started = 0;
	for (; started < s->nw; started++) {
		if (s->ops->start(s, started) < 0) {
			bt__log(BT_LOG_ERROR, "cannot start worker %u", started);
			s->start_failed = 1;
			break;
		}
	}
	if (s->ops->ready(s, started) < 0)
		s->start_failed = 1;
	if (bt__accs_start(s) < 0)
		s->start_failed = 1;
	if (s->start_failed)
		bt__sup_drain(s, "start-up failure");
	char title[96];
	snprintf(title, sizeof(title), "%s: acceptor", cfg->name);
	bt__proctitle_set(title);
	char flush[32];
	char of[32] = "";
	if (s->tpp > 1)
		snprintf(of, sizeof(of), " of %u threads", s->tpp);
	char summary[400];
	char att[140] = "", accs[32] = "";
	if (cfg->attach)
		snprintf(att, sizeof(att), " (more attach at %s)", cfg->attach);
	if (s->nxacc)
		snprintf(accs, sizeof(accs), ", %u acceptors", bt__accs_count(s));
	snprintf(summary, sizeof(summary),
		 "%u worker %s%s%s%s, %s backend%s, batch %u, flush %s, dispatch %s", s->nw,
		 s->ops->noun, of, att, accs, bt_acceptor_backend(s->acc),
		 bt__acc_is_direct(s->acc) ? " (direct descriptors)" : "", s->qc.batch,
		 bt_queue_flush_name(&s->qc, flush, sizeof(flush)),
		 bt_acceptor_dispatch_name(cfg->dispatch));
	bt__log(BT_LOG_INFO, "%s: %s", cfg->name, summary);
	if (!s->draining) {
		s->ready = 1;
		bt__notify("READY=1\nMAINPID=%ld\nSTATUS=serving: %s", (long)getpid(), summary);
		bt__gen_ready(s); /* a reload's new generation: the old one stops accepting */
	}

	if (cfg->worker_timeout_ms) {
		s->watch_next_ns = bt__now_ns() + watch_period_ns(s);
		bt__sup_schedule(s);
	}
	if (s->nxacc && !s->draining) {
		s->accs_next_ns = bt__now_ns() + 100000000ull;
		bt__sup_schedule(s);
	}
	bt__sup_producer_start(s);
	rc = bt_acceptor_run(s->acc);
	if (bt__log_enabled(BT_LOG_INFO))
		bt__sup_print_counters(s, "exit");
	status = rc == 0 && s->draining && !s->start_failed ? 0 : 1;
out:
	bt__ctl_close(s); /* before the acceptor: its calls run there */
	if (s->ctl_lfd >= 0)
		close(s->ctl_lfd); /* from the previous generation, never opened */
	if (s->metrics_lfd >= 0)
		close(s->metrics_lfd);
	bt__accs_join(s); /* the others' loops end: calls run here from now on */
	if (s->set)
		s->ops->stop(s);
	bt__sup_rehome_close(s);
	bt__accs_free(s);
	if (s->acc)
		bt_acceptor_destroy(s->acc);
	bt__sup_attach_close(s);
	if (s->ops)
		s->ops->fini(s);
	bt__metrics_destroy(s->metrics);
	bt__pool_shutdown_global(); /* thread mode: the workers' job pool */
	for (int k = 0; k < s->nl; k++)
		if (s->lfds[k] >= 0)
			close(s->lfds[k]);
	if (s->sigfd >= 0)
		close(s->sigfd);
	if (s->prev_fd >= 0)
		close(s->prev_fd);
	if (s->next_fd >= 0)
		close(s->next_fd);
	if (s->ctl_fd >= 0) {
		bt__notify_relay(-1);
		close(s->ctl_fd);
	}
	free(s->wc);
	for (unsigned i = 0; i < s->nowned; i++)
		free(s->owned[i]);
	return status;
}
