/* SPDX-License-Identifier: MIT */
/*
 * Attached workers (--attach ADDR): worker processes that join the server
 * at any time over a named channel (docs/wire.md), in any language.  Each
 * gets one of BT_RUNTIME_MAX_ATTACHED acceptor slots after the forked
 * workers' (from s->gbase on), a queue acknowledged on the wire, and
 * work once its HELLO arrives.  Its peer uid must be ours or one of
 * --attach-uid.  When it leaves, what it had not acknowledged goes to the
 * other workers.  The supervisor neither starts nor restarts them.
 *
 * The other side, a program on the runtime as an attached worker
 * (--worker-of ADDR), is bt__sup_run_worker_of below.
 */
#include "supervisor.h"

#include "internal.h"
#include "loop_internal.h"

#include <stdatomic.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5 */
#endif

/* The process at the other end of a channel: a pidfd from SO_PEERPIDFD
 * (Linux 6.5), else from pidfd_open of its SO_PEERCRED pid (5.3; that pid
 * names another process only if ours exited and the pid was reused in
 * between, and then the channel is at its end anyway).  Without either,
 * pidfd is -1 and the watchdog cannot kill it. */
static void peer_process(int fd, struct bt__guest *g)
{
	memset(g, 0, sizeof(*g));
	g->pidfd = -1;
	g->since_ns = bt__now_ns();
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		g->pid = (long)cred.pid;
		g->uid = (unsigned long)cred.uid;
	}
	int pidfd = -1;
	len = sizeof(pidfd);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0 || pidfd < 0) {
		pidfd = g->pid > 0 ? (int)syscall(SYS_pidfd_open, (pid_t)g->pid, 0) : -1;
		if (pidfd >= 0)
			(void)fcntl(pidfd, F_SETFD, FD_CLOEXEC); /* pidfd_open sets it; be sure */
	}
	g->pidfd = pidfd;
}

static void forget(struct bt__guest *g)
{
	if (g->pidfd >= 0)
		bt__close(g->pidfd);
	g->pidfd = -1;
}

/*
 * The watchdog's look at the attached workers: one that holds items it has
 * not acknowledged, or says it holds connections, and has sent no ACK for
 * --worker-timeout is stuck.  We kill it if we may (its process as the
 * kernel named it, by pidfd: never a reused pid), and its channel's end
 * then gives what it had not acknowledged to the others.  If we may not
 * (another uid, and we are not root), we say so once and leave its items
 * to it: sending them to another worker while it may still serve them
 * would answer a client twice.  Dispatch passes it over meanwhile.
 */
void bt__sup_attach_watch(struct bt_runtime *s, uint64_t now, uint64_t limit)
{
	if (s->attach_fd < 0 && !s->attached)
		return;
	for (unsigned k = 0; k < BT_RUNTIME_MAX_ATTACHED; k++) {
		unsigned idx = s->gbase + k;
		struct bt__guest *g = &s->guest[k];
		bt_queue_t *q = bt_acceptor_queue(s->acc, idx);
		if (!q || g->killing)
			continue;
		uint64_t stalled = bt__acc_worker_stalled_ns(s->acc, idx, now);
		if (stalled <= limit) {
			g->stuck_logged = 0;
			continue;
		}
		unsigned owed = bt_queue_inflight(q) - bt_queue_pending(q);
		unsigned open = bt_queue_consumer_load(q);
		unsigned long long ms = (unsigned long long)(stalled / 1000000ull);
		int err = g->pidfd < 0 ? -ESRCH
			  : syscall(SYS_pidfd_send_signal, g->pidfd, SIGKILL, NULL, 0) == 0 ? 0
			  : -errno;
		if (err == 0) {
			g->killing = 1;
			bt__log(BT_LOG_ERROR,
				"worker %u (attached, pid %ld, uid %lu): no ACK for %llu ms with %u "
				"connections open and %u unacknowledged: stuck (--worker-timeout %u): "
				"SIGKILL",
				idx, g->pid, g->uid, ms, open, owed, s->cfg->worker_timeout_ms);
			bt__notify("STATUS=attached worker pid %ld stuck for %llu ms: killed", g->pid, ms);
		} else if (!g->stuck_logged) {
			g->stuck_logged = 1;
			bt__log(BT_LOG_ERROR,
				"worker %u (attached, pid %ld, uid %lu): no ACK for %llu ms with %u "
				"connections open and %u unacknowledged: stuck (--worker-timeout %u), "
				"but pidfd_send_signal(SIGKILL): %s: its %u items wait for it; "
				"dispatch passes it over",
				idx, g->pid, g->uid, ms, open, owed, s->cfg->worker_timeout_ms,
				strerror(-err), owed);
		}
	}
}

static void on_attach(void *ctx)
{
	struct bt_runtime *s = ctx;
	for (;;) {
		uid_t uids[BT_RUNTIME_MAX_ATTACH_UIDS];
		for (unsigned i = 0; i < s->cfg->nattach_uid; i++)
			uids[i] = (uid_t)s->cfg->attach_uid[i];
		int fd = bt__fdpass_accept_uids(s->attach_fd, uids, s->cfg->nattach_uid,
						BT_FDPASS_NONBLOCK);
		if (fd == -EPERM || fd == -ECONNABORTED)
			continue; /* refused (logged), or gone already */
		if (fd < 0)
			return; /* -EAGAIN: nobody else waits (others are logged) */
		if (s->draining) {
			bt__close(fd);
			continue;
		}
		unsigned idx = s->gbase;
		while (idx < s->gbase + BT_RUNTIME_MAX_ATTACHED && bt_acceptor_queue(s->acc, idx))
			idx++;
		if (idx == s->gbase + BT_RUNTIME_MAX_ATTACHED) {
			bt__log(BT_LOG_WARN, "--attach %s: %d workers are attached already: refusing "
					     "one more", s->cfg->attach, BT_RUNTIME_MAX_ATTACHED);
			bt__close(fd);
			continue;
		}
		struct bt__guest *g = &s->guest[idx - s->gbase];
		peer_process(fd, g);
		bt_fdpass_t *ch;
		bt_queue_t *q;
		int rc = bt_fdpass_open(&ch, fd);
		if (rc < 0) {
			bt__close(fd);
			forget(g);
			continue;
		}
		rc = bt_queue_create(&q, &s->qc, ch, NULL, idx);
		if (rc < 0) {
			bt__log_errno(BT_LOG_ERROR, rc, "--attach: bt_queue_create");
			bt_fdpass_close(ch);
			forget(g);
			continue;
		}
		rc = bt__acc_attach_guest(s->acc, idx, q);
		if (rc < 0) {
			bt__log_errno(BT_LOG_ERROR, rc, "--attach: worker slot %u", idx);
			bt_queue_destroy(q);
			forget(g);
			continue;
		}
		s->attached++;
		bt__log(BT_LOG_DEBUG, "worker %u: a process attaches at %s", idx, s->cfg->attach);
	}
}

int bt__sup_attach_open(struct bt_runtime *s)
{
	for (unsigned k = 0; k < BT_RUNTIME_MAX_ATTACHED; k++)
		s->guest[k].pidfd = -1;
	if (!s->cfg->attach)
		return 0;
	/* After a reload, the previous generation's listener (handover.c). */
	int fd = s->attach_fd >= 0 ? s->attach_fd : bt_fdpass_listen(s->cfg->attach, BT_FDPASS_NONBLOCK);
	s->attach_fd = -1;
	if (fd < 0)
		return bt__log_errno(BT_LOG_ERROR, fd, "--attach %s", s->cfg->attach);
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	int rc = bt_acceptor_watch(s->acc, fd, on_attach, s);
	if (rc < 0) {
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, rc, "--attach %s: watching it", s->cfg->attach);
	}
	s->attach_fd = fd;
	bt__log(BT_LOG_INFO, "workers may attach at %s", s->cfg->attach);
	return 0;
}

void bt__sup_attach_close(struct bt_runtime *s)
{
	if (s->attach_fd < 0)
		return;
	bt__close(s->attach_fd); /* the acceptor's watch goes with the acceptor */
	s->attach_fd = -1;
	for (unsigned k = 0; k < BT_RUNTIME_MAX_ATTACHED; k++)
		forget(&s->guest[k]);
	if (s->cfg->attach && s->cfg->attach[0] == '/' && !s->attach_kept)
		unlink(s->cfg->attach);
}

/* The acceptor dropped worker slot idx (its channel closed or failed). */
void bt__sup_attach_gone(struct bt_runtime *s, unsigned idx)
{
	if (idx < s->gbase || !s->attached)
		return;
	s->attached--;
	forget(&s->guest[idx - s->gbase]);
	bt__log(s->draining ? BT_LOG_DEBUG : BT_LOG_INFO, "worker %u (attached, pid %u) left", idx,
		(unsigned)bt__acc_worker_pid(s->acc, idx));
	bt__sup_worker_ended(s);
}

/* --- --worker-of: this program as an attached worker ------------------------- */

static _Atomic int guest_stopping; /* SIGTERM/SIGINT: we leave */
static int leave_fd = -1;         /* an eventfd made readable then */

struct guest {
	struct bt_runtime *s;
	unsigned t;
	bt_queue_inlet_t *in;
	pthread_t tid;
	int rc;
	bt_loop_t *loop;
};

/* Connect, say HELLO (with --batch as the most we take per batch): the
 * inlet of worker loop t.  0 or -errno. */
static int guest_connect(struct bt_runtime *s, unsigned t, bt_queue_inlet_t **out)
{
	int rc = bt_queue_inlet_attach(out, s->cfg->worker_of, t, s->cfg->batch);
	if (rc == -EPIPE || rc == -ECONNRESET)
		bt__log(BT_LOG_ERROR, "--worker-of %s: the server closed the channel at once: refused "
				      "(see the server's log)", s->cfg->worker_of);
	else if (rc < 0)
		bt__log_errno(BT_LOG_ERROR, rc, "--worker-of %s: connect and HELLO", s->cfg->worker_of);
	return rc;
}

/* On the loop's own thread: stop reading batches (the loop sees the
 * channel's end and drains; the server gives what we had not acknowledged
 * to the others when the channel closes). */
static void on_leave(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)fd, (void)revents, (void)arg;
	bt_loop_unwatch(loop, w); /* the eventfd stays readable for the others */
	shutdown(bt_fdpass_fd(loop->inlet[0]->ch), SHUT_RD);
}

static int guest_run(struct guest *g)
{
	struct bt_loop_config lc;
	bt__sup_loop_config(g->s, g->t, &lc);
	lc.inlet = g->in;
	int rc = bt_loop_create(&g->loop, &lc);
	if (rc < 0) {
		bt_queue_inlet_destroy(g->in);
		return bt__log_errno(BT_LOG_ERROR, rc, "worker %u: cannot create its loop", g->t);
	}
	bt_watch_t *w;
	rc = bt_loop_watch_fd(g->loop, &w, leave_fd, BT_WATCH_IN, on_leave, NULL);
	if (rc < 0) {
		bt_loop_destroy(g->loop);
		return bt__log_errno(BT_LOG_ERROR, rc, "worker %u: watching for SIGTERM", g->t);
	}
	rc = bt_loop_run(g->loop);
	if (rc == 0 && g->loop->channel_eof && !g->loop->drain_asked && !atomic_load(&guest_stopping)) {
		/* The server closed the channel without a DRAIN: it refused us
		 * (uid, too many workers) or went away. */
		bt__log(BT_LOG_ERROR, "worker %u: %s closed the channel without a DRAIN: refused "
				      "(see the server's log), or gone", g->t, g->s->cfg->worker_of);
		rc = -ECONNRESET;
	}
	bt_loop_destroy(g->loop);
	return rc;
}

static void *guest_thread(void *arg)
{
	struct guest *g = arg;
	char name[32];
	snprintf(name, sizeof(name), "worker %u", g->t);
	bt__thread_name(pthread_self(), name);
	g->rc = guest_run(g);
	return NULL;
}

static _Atomic int guest_done; /* the loops have ended: the signal thread returns */

/* SIGTERM/SIGINT to an attached worker: every loop leaves (on_leave).
 * SIGUSR2, sent by us once the loops have ended, ends the thread (no
 * pthread_cancel: cancelling a thread in sigwait upsets the sanitizers'
 * runtimes). */
static void *signal_thread(void *arg)
{
	(void)arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			return NULL;
		if (atomic_load(&guest_done))
			return NULL;
		if (sig == SIGUSR2 || atomic_load(&guest_stopping))
			continue;
		bt__log(BT_LOG_INFO, "%s: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		atomic_store(&guest_stopping, 1);
		uint64_t one = 1;
		if (write(leave_fd, &one, sizeof(one)) != sizeof(one))
			bt__log_errno(BT_LOG_ERROR, -errno, "write(eventfd)");
	}
}

int bt__sup_run_worker_of(struct bt_runtime *s)
{
	unsigned T = s->tpp;
	struct guest *gs = calloc(T, sizeof(*gs));
	if (!gs)
		return 1;
	int status = 1;
	unsigned made = 0;
	for (; made < T; made++) {
		gs[made].s = s;
		gs[made].t = made;
		if (guest_connect(s, made, &gs[made].in) < 0)
			break;
	}
	if (made < T) {
		for (unsigned t = 0; t < made; t++)
			bt_queue_inlet_destroy(gs[t].in);
		free(gs);
		return 1;
	}
	leave_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (leave_fd < 0) {
		bt__log_errno(BT_LOG_ERROR, -errno, "eventfd");
		for (unsigned t = 0; t < T; t++)
			bt_queue_inlet_destroy(gs[t].in);
		free(gs);
		return 1;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread: sigwait takes them */
	pthread_t sig_tid;
	int sig_ok = pthread_create(&sig_tid, NULL, signal_thread, NULL) == 0;
	char title[160];
	snprintf(title, sizeof(title), "%s: worker of %s", s->cfg->name, s->cfg->worker_of);
	bt__proctitle_set(title);
	bt__log(BT_LOG_INFO, "%s: attached to %s with %u worker loop%s", s->cfg->name,
		s->cfg->worker_of, T, T == 1 ? "" : "s");
	unsigned started = 1;
	for (unsigned t = 1; t < T; t++, started++)
		if (pthread_create(&gs[t].tid, NULL, guest_thread, &gs[t]) != 0) {
			bt__log(BT_LOG_ERROR, "worker %u: pthread_create failed", t);
			for (unsigned k = t; k < T; k++)
				bt_queue_inlet_destroy(gs[k].in);
			break;
		}
	int rc = started == T ? guest_run(&gs[0]) : (bt_queue_inlet_destroy(gs[0].in), -EAGAIN);
	status = rc == 0 ? 0 : 1;
	for (unsigned t = 1; t < started; t++) {
		pthread_join(gs[t].tid, NULL);
		if (gs[t].rc != 0)
			status = 1;
	}
	if (sig_ok) {
		atomic_store(&guest_done, 1);
		pthread_kill(sig_tid, SIGUSR2);
		pthread_join(sig_tid, NULL);
	}
	bt__close(leave_fd);
	leave_fd = -1;
	bt__pool_shutdown_global();
	free(gs);
	return status;
}
