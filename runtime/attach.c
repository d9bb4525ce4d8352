/* SPDX-License-Identifier: MIT */
/*
 * Attached workers (--attach ADDR): worker processes that join the server
 * at any time over a named channel (docs/wire.md), in any language.  Each
 * gets one of BT_RUNTIME_MAX_ATTACHED acceptor slots after the forked
 * workers' (from s->nslots on), a queue acknowledged on the wire, and
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
#include <sys/eventfd.h>
#include <unistd.h>

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
		unsigned idx = s->nslots;
		while (idx < s->nslots + BT_RUNTIME_MAX_ATTACHED && bt_acceptor_queue(s->acc, idx))
			idx++;
		if (idx == s->nslots + BT_RUNTIME_MAX_ATTACHED) {
			bt__log(BT_LOG_WARN, "--attach %s: %d workers are attached already: refusing "
					     "one more", s->cfg->attach, BT_RUNTIME_MAX_ATTACHED);
			bt__close(fd);
			continue;
		}
		bt_fdpass_t *ch;
		bt_queue_t *q;
		int rc = bt_fdpass_open(&ch, fd);
		if (rc < 0) {
			bt__close(fd);
			continue;
		}
		rc = bt_queue_create(&q, &s->qc, ch, NULL, idx);
		if (rc < 0) {
			bt__log_errno(BT_LOG_ERROR, rc, "--attach: bt_queue_create");
			bt_fdpass_close(ch);
			continue;
		}
		rc = bt__acc_attach_guest(s->acc, idx, q);
		if (rc < 0) {
			bt__log_errno(BT_LOG_ERROR, rc, "--attach: worker slot %u", idx);
			bt_queue_destroy(q);
			continue;
		}
		s->attached++;
		bt__log(BT_LOG_DEBUG, "worker %u: a process attaches at %s", idx, s->cfg->attach);
	}
}

int bt__sup_attach_open(struct bt_runtime *s)
{
	s->attach_fd = -1;
	if (!s->cfg->attach)
		return 0;
	int fd = bt_fdpass_listen(s->cfg->attach, BT_FDPASS_NONBLOCK);
	if (fd < 0)
		return bt__log_errno(BT_LOG_ERROR, fd, "--attach %s", s->cfg->attach);
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
	if (s->cfg->attach && s->cfg->attach[0] == '/')
		unlink(s->cfg->attach);
}

/* The acceptor dropped worker slot idx (its channel closed or failed). */
void bt__sup_attach_gone(struct bt_runtime *s, unsigned idx)
{
	if (idx < s->nslots || !s->attached)
		return;
	s->attached--;
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
	bt_fdpass_t *ch;
	pthread_t tid;
	int rc;
	bt_loop_t *loop;
};

/* Connect, say HELLO: the channel of worker loop t.  0 or -errno. */
static int guest_connect(struct bt_runtime *s, unsigned t, bt_fdpass_t **out)
{
	int fd = bt_fdpass_connect(s->cfg->worker_of, 0);
	if (fd < 0)
		return bt__log_errno(BT_LOG_ERROR, fd, "--worker-of %s: connect", s->cfg->worker_of);
	int rc = bt_fdpass_open(out, fd);
	if (rc < 0) {
		bt__close(fd);
		return rc;
	}
	struct bt_wire_hello h = {.worker_id = t, .pid = (uint32_t)getpid(),
				  .version = BT_WIRE_VERSION, .flags = 0};
	unsigned char buf[BT_WIRE_HDR_SIZE + BT_WIRE_HELLO_SIZE];
	long len = bt_wire_encode_hello(buf, sizeof(buf), 0, &h);
	rc = len < 0 ? (int)len : bt_fdpass_send(*out, buf, (size_t)len, NULL, 0);
	if (rc == -EPIPE || rc == -ECONNRESET) {
		bt_fdpass_close(*out);
		bt__log(BT_LOG_ERROR, "--worker-of %s: the server closed the channel at once: refused "
				      "(see the server's log)", s->cfg->worker_of);
		return rc;
	}
	if (rc < 0) {
		bt_fdpass_close(*out);
		return bt__log_errno(BT_LOG_ERROR, rc, "--worker-of %s: HELLO", s->cfg->worker_of);
	}
	return 0;
}

/* On the loop's own thread: stop reading batches (the loop sees the
 * channel's end and drains; the server gives what we had not acknowledged
 * to the others when the channel closes). */
static void on_leave(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)fd, (void)revents, (void)arg;
	bt_loop_unwatch(loop, w); /* the eventfd stays readable for the others */
	shutdown(bt_fdpass_fd(loop->cfg.channel), SHUT_RD);
}

static int guest_run(struct guest *g)
{
	struct bt_loop_config lc;
	bt__sup_loop_config(g->s, g->t, &lc);
	lc.channel = g->ch; /* no shm: acknowledged on the wire */
	int rc = bt_loop_create(&g->loop, &lc);
	if (rc < 0) {
		bt_fdpass_close(g->ch);
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
		if (guest_connect(s, made, &gs[made].ch) < 0)
			break;
	}
	if (made < T) {
		for (unsigned t = 0; t < made; t++)
			bt_fdpass_close(gs[t].ch);
		free(gs);
		return 1;
	}
	leave_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (leave_fd < 0) {
		bt__log_errno(BT_LOG_ERROR, -errno, "eventfd");
		for (unsigned t = 0; t < T; t++)
			bt_fdpass_close(gs[t].ch);
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
				bt_fdpass_close(gs[k].ch);
			break;
		}
	int rc = started == T ? guest_run(&gs[0]) : (bt_fdpass_close(gs[0].ch), -EAGAIN);
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
