/* SPDX-License-Identifier: MIT */
/*
 * The control plane, the supervisor's side (control_internal.h): the
 * calls the control process makes, run on the acceptor's loop, and the
 * control process's start and end.
 *
 * Why a process, not a thread: the supervisor forks worker processes for
 * as long as it runs (respawns, workers N), and a process forked from a
 * multi-threaded one may only call async-signal-safe functions until it
 * execs: a hybrid worker starts threads, and every worker may start its job
 * pool's.  The control process is forked once, before any worker, and is
 * single-threaded itself.  What it costs the acceptor: reading a request
 * (a few words), the call (copying counters, or changing a setting), and
 * writing the answer: microseconds, with no formatting.
 */
#include "control_internal.h"

#include "acceptor_internal.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int op_snap(struct bt_runtime *s, struct call *k)
{
	k->snap = bt__snap_take(s);
	if (!k->snap)
		snprintf(k->msg, sizeof(k->msg), "out of memory");
	return k->snap ? C_OK : C_REFUSED;
}


static int op_set(struct bt_runtime *s, struct call *k)
{
	const char *key = k->argv[1], *val = k->argv[2];
	char was[40], now[40];
	if (!strcmp(key, "batch")) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(val, &end, 10);
		if (errno || *end || end == val || val[0] == '-' || n < 1 || n > 253) {
			snprintf(k->msg, sizeof(k->msg), "set batch: '%.64s' is not a number from 1 to 253",
				 val);
			return C_USAGE;
		}
		snprintf(was, sizeof(was), "%u", s->qc.batch);
		s->qc.batch = (unsigned)n;
		s->config.batch = (unsigned)n;
		snprintf(now, sizeof(now), "%u", s->qc.batch);
		bt__accs_policy(s);
	} else if (!strcmp(key, "flush")) {
		struct bt_queue_config qc = s->qc;
		if (bt_queue_parse_flush(val, &qc) < 0) {
			snprintf(k->msg, sizeof(k->msg),
				 "set flush: '%.64s' is not adaptive, adaptive:US, size or delay:US (US "
				 "from 1 to 1000000)", val);
			return C_USAGE;
		}
		bt_queue_flush_name(&s->qc, was, sizeof(was));
		s->qc.flush = qc.flush;
		s->qc.delay_us = qc.delay_us;
		s->config.flush = qc.flush;
		s->config.delay_us = qc.delay_us;
		bt_queue_flush_name(&s->qc, now, sizeof(now));
		bt__accs_policy(s);
	} else if (!strcmp(key, "dispatch")) {
		enum bt_dispatch d;
		if (bt_acceptor_parse_dispatch(val, &d) < 0) {
			snprintf(k->msg, sizeof(k->msg), "set dispatch: '%.64s' is not rr, least or hash",
				 val);
			return C_USAGE;
		}
		snprintf(was, sizeof(was), "%s", bt_acceptor_dispatch_name(s->acc->cfg.dispatch));
		s->config.dispatch = d;
		bt__accs_policy(s);
		snprintf(now, sizeof(now), "%s", bt_acceptor_dispatch_name(d));
	} else {
		snprintf(k->msg, sizeof(k->msg),
			 "set: unknown setting '%.64s' (batch, flush or dispatch)", key);
		return C_USAGE;
	}
	snprintf(k->msg, sizeof(k->msg), "%s %s (was %s)", key, now, was);
	bt__log(BT_LOG_INFO, "control: %s", k->msg);
	return C_OK;
}

static int parse_count(const char *v, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || *end || end == v || v[0] == '-' || n > max)
		return -1;
	*out = n;
	return 0;
}

/* Drain worker i alone: retire 1 (taken away) or 2 (replaced after). */
static void retire(struct bt_runtime *s, unsigned i, int how)
{
	s->wc[i].retire = how;
	for (unsigned t = 0; t < s->tpp; t++)
		bt__accs_retire(s, i * s->tpp + t, s->cfg->drain_timeout_ms,
				s->h->on_handover ? bt__sup_rehome_fd(s) : -1);
}

static int op_workers(struct bt_runtime *s, struct call *k)
{
	unsigned long n;
	unsigned min = s->cfg->attach ? 0 : 1;
	if (parse_count(k->argv[1], 1u << 20, &n) < 0 || n < min || n > s->maxw) {
		snprintf(k->msg, sizeof(k->msg), "workers: '%.32s' is not a number from %u to %u (the "
			 "most this server can have: 4 times its start, or 2 per CPU, at least 8)",
			 k->argv[1], min, s->maxw);
		return C_USAGE;
	}
	if (s->draining) {
		snprintf(k->msg, sizeof(k->msg), "the server is draining");
		return C_REFUSED;
	}
	unsigned was = s->want, started = 0, back = 0, draining = 0;
	s->want = (unsigned)n;
	if (s->want > s->nw) {
		s->nw = s->want;
		s->nslots = s->nw * s->tpp;
	}
	int failed = 0;
	for (unsigned i = 0; i < s->nw; i++) {
		int alive = s->ops->alive(s, i);
		if (i < s->want) {
			if (alive && s->wc[i].retire == 1) {
				s->wc[i].retire = 2; /* it drains, then comes back */
				back++;
			} else if (!alive) {
				if (s->ops->revive(s, i) < 0)
					failed = 1;
				else
					started++;
			}
		} else if (alive) {
			if (!s->wc[i].retire) {
				retire(s, i, 1);
				draining++;
			}
			s->wc[i].retire = 1;
		}
	}
	bt__sup_schedule(s);
	char noun[16];
	snprintf(noun, sizeof(noun), "%s", s->ops->noun);
	snprintf(k->msg, sizeof(k->msg), "workers %u (was %u): %u %s starting, %u draining "
		 "(up to %u ms)%s%s", s->want, was, started, noun, draining,
		 s->cfg->drain_timeout_ms, back ? ", a draining one comes back" : "",
		 failed ? "; one could not start (see the log)" : "");
	bt__log(BT_LOG_INFO, "control: %s", k->msg);
	bt__notify("STATUS=%u worker %s", s->want, s->ops->noun);
	return failed ? C_REFUSED : C_OK;
}

static int op_drain_worker(struct bt_runtime *s, struct call *k)
{
	unsigned long i;
	if (parse_count(k->argv[1], 1u << 20, &i) < 0 || i >= s->gbase + BT_RUNTIME_MAX_ATTACHED) {
		snprintf(k->msg, sizeof(k->msg), "drain-worker: '%.32s' is not a worker's number (see "
			 "status)", k->argv[1]);
		return C_USAGE;
	}
	if (s->draining) {
		snprintf(k->msg, sizeof(k->msg), "the server is draining");
		return C_REFUSED;
	}
	if (i >= s->gbase) {
		snprintf(k->msg, sizeof(k->msg), "worker %lu is attached: stop it from its side "
			 "(SIGTERM), and what it holds goes to the others", i);
		return C_REFUSED;
	}
	/* In hybrid mode a worker process runs several slots: by slot. */
	unsigned p = (unsigned)i / s->tpp;
	long pid = 0;
	uint64_t since;
	if (p < s->nw)
		s->ops->info(s, p, &pid, &since);
	if (p >= s->want || !s->ops->alive(s, p)) {
		snprintf(k->msg, sizeof(k->msg), "worker %lu is not running", i);
		return C_REFUSED;
	}
	if (s->wc[p].retire) {
		snprintf(k->msg, sizeof(k->msg), "worker %lu is draining already", i);
		return C_REFUSED;
	}
	retire(s, p, 2);
	char who[48];
	s->ops->describe(s, (unsigned)i, who, sizeof(who));
	snprintf(k->msg, sizeof(k->msg), "worker %lu (%s) drains (up to %u ms) and is replaced%s",
		 i, who, s->cfg->drain_timeout_ms,
		 s->tpp > 1 ? ": its whole process, every thread" : "");
	bt__log(BT_LOG_INFO, "control: %s", k->msg);
	return C_OK;
}

static int op_reload(struct bt_runtime *s, struct call *k)
{
	if (s->ctl_fd < 0) {
		snprintf(k->msg, sizeof(k->msg),
			 "this server has no master to reload it (a program with a producer, or one "
			 "that did not give its argv to bt_runtime_parse_args): restart it instead");
		return C_REFUSED;
	}
	if (s->draining) {
		snprintf(k->msg, sizeof(k->msg), "the server is %s",
			 s->handed_over ? "handing over to a newer generation" : "draining");
		return C_REFUSED;
	}
	char r = 'R';
	if (send(s->ctl_fd, &r, 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) {
		snprintf(k->msg, sizeof(k->msg), "send(to the master): %s", strerror(errno));
		return C_REFUSED;
	}
	bt__log(BT_LOG_INFO, "control: reload asked for");
	return C_PENDING;
}


static int op_run(struct bt_runtime *s, struct call *k)
{
	const char *cmd = k->argv[0];
	if (!strcmp(cmd, "snap") && k->argc == 1)
		return op_snap(s, k);
	if (!strcmp(cmd, "set") && k->argc == 3)
		return op_set(s, k);
	if (!strcmp(cmd, "workers") && k->argc == 2)
		return op_workers(s, k);
	if (!strcmp(cmd, "drain-worker") && k->argc == 2)
		return op_drain_worker(s, k);
	if (!strcmp(cmd, "reload") && k->argc == 1)
		return op_reload(s, k);
	snprintf(k->msg, sizeof(k->msg), "unknown call");
	return C_USAGE;
}

void bt__ctl_run_call(struct bt_runtime *s, struct call *k)
{
	k->rc = op_run(s, k);
}

/* --- frames ---------------------------------------------------------------------- */

int bt__ctl_write(int fd, const void *buf, size_t len, int ms)
{
	const char *p = buf;
	uint64_t deadline = bt__now_ns() + (uint64_t)ms * 1000000ull;
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		uint64_t now = bt__now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		poll(&pf, 1, (int)((deadline - now) / 1000000ull) + 1);
	}
	return 0;
}

/* A frame to the control process: the header, then parts. */
static void send_frame(struct bt__ctl *c, char type, const void *a, size_t alen, const void *b,
		       size_t blen)
{
	if (c->sock < 0)
		return;
	unsigned char h[5];
	uint32_t len = (uint32_t)(alen + blen);
	memcpy(h, &len, 4);
	h[4] = (unsigned char)type;
	/* The control process reads what it is sent at once (it waits for
	 * this answer, or polls for events): 100 ms is plenty, and bounds
	 * the acceptor's wait if it is stuck. */
	int rc = bt__ctl_write(c->sock, h, 5, 100);
	if (rc == 0 && alen)
		rc = bt__ctl_write(c->sock, a, alen, 100);
	if (rc == 0 && blen)
		rc = bt__ctl_write(c->sock, b, blen, 100);
	if (rc < 0)
		bt__log_errno(BT_LOG_WARN, rc, "control: writing to the control process");
}

static void event(struct bt_runtime *s, char kind, int ok, const char *msg)
{
	struct bt__ctl *c = s->ctl;
	if (!c)
		return;
	unsigned char e[1 + 4 + CTL_MSG] = {0};
	e[0] = (unsigned char)kind;
	int32_t v = ok;
	memcpy(e + 1, &v, 4);
	snprintf((char *)e + 5, CTL_MSG, "%s", msg ? msg : "");
	send_frame(c, 'E', e, sizeof(e), NULL, 0);
}

void bt__ctl_reload_done(struct bt_runtime *s, int ok, const char *msg)
{
	event(s, 'R', ok, msg);
}

void bt__ctl_handed_over(struct bt_runtime *s)
{
	struct bt__ctl *c = s->ctl;
	if (!c)
		return;
	c->kept = c->lfd >= 0; /* its path is the new generation's now */
	event(s, 'H', 1, "");
}

/* One request frame (type 'Q'): run it, answer. */
static void on_request(struct bt_runtime *s, struct bt__ctl *c, const unsigned char *p, size_t n)
{
	struct call k = {0};
	char words[sizeof(c->rx)];
	unsigned char seq[4] = {0};
	if (n >= 4) {
		memcpy(seq, p, 4);
		p += 4;
		n -= 4;
	}
	if (n == 0 || n > sizeof(words)) {
		snprintf(k.msg, sizeof(k.msg), "a malformed call");
		k.rc = C_USAGE;
	} else {
		memcpy(words, p + 1, n - 1);
		words[n - 1] = 0;
		unsigned argc = p[0];
		size_t at = 0;
		for (unsigned i = 0; i < argc && i < CTL_MAX_ARGS && at < n - 1; i++) {
			k.argv[k.argc++] = words + at;
			at += strlen(words + at) + 1;
		}
		if (k.argc == 0 || k.argc != (int)argc) {
			snprintf(k.msg, sizeof(k.msg), "a malformed call");
			k.rc = C_USAGE;
		} else {
			bt__ctl_run_call(s, &k);
		}
	}
	unsigned char a[8 + CTL_MSG] = {0};
	int32_t rc = k.rc;
	memcpy(a, seq, 4);
	memcpy(a + 4, &rc, 4);
	memcpy(a + 8, k.msg, CTL_MSG);
	size_t snap_len = k.snap ? sizeof(*k.snap) + k.snap->nworkers * sizeof(k.snap->w[0]) : 0;
	send_frame(c, 'A', a, sizeof(a), k.snap, snap_len);
	free(k.snap);
}

static void gone(struct bt_runtime *s, struct bt__ctl *c);

static void on_sock(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)w, (void)revents, (void)arg;
	struct bt_runtime *s = rt;
	struct bt__ctl *c = s->ctl;
	for (;;) {
		ssize_t n = recv(fd, c->rx + c->rxlen, sizeof(c->rx) - c->rxlen, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			gone(s, c);
			return;
		}
		c->rxlen += (size_t)n;
		while (c->rxlen >= 5) {
			uint32_t len;
			memcpy(&len, c->rx, 4);
			if (len > sizeof(c->rx) - 5 || c->rx[4] != 'Q') {
				bt__log(BT_LOG_ERROR, "control: the control process spoke nonsense");
				gone(s, c);
				return;
			}
			if (c->rxlen < 5 + len)
				break;
			on_request(s, c, c->rx + 5, len);
			memmove(c->rx, c->rx + 5 + len, c->rxlen - 5 - len);
			c->rxlen -= 5 + len;
		}
		if (c->rxlen == sizeof(c->rx))
			break;
	}
}

/* Our end of the pair: no more calls.  shutdown, not only close: a
 * ring's poll may still hold a reference to the socket, and the control
 * process must see the EOF now. */
static void end_sock(struct bt_runtime *s, struct bt__ctl *c)
{
	if (c->watch && s->acc)
		bt_runtime_unwatch(s, c->watch);
	c->watch = NULL;
	if (c->sock >= 0) {
		shutdown(c->sock, SHUT_RDWR);
		bt__close(c->sock);
	}
	c->sock = -1;
}

/* The control process ended, or spoke nonsense. */
static void gone(struct bt_runtime *s, struct bt__ctl *c)
{
	end_sock(s, c);
	if (c->pid > 0 && !s->draining)
		bt__log(BT_LOG_ERROR, "control: the control process (pid %ld) ended: no control "
				      "socket or metrics until the next reload or restart",
			(long)c->pid);
}

/* --- start and end ----------------------------------------------------------------- */

void bt__ctl_resolve(struct bt_runtime *s)
{
	s->ctl_name[0] = 0;
	const char *c = s->cfg->control;
	if (c && !strcmp(c, "none"))
		return;
	if (c) {
		snprintf(s->ctl_name, sizeof(s->ctl_name), "%s", c);
		return;
	}
	/* Under systemd with RuntimeDirectory=: its first directory. */
	const char *rd = getenv("RUNTIME_DIRECTORY");
	if (!rd || rd[0] != '/')
		return;
	size_t n = strcspn(rd, ":");
	if (n + sizeof("/control") > 108) {
		bt__log(BT_LOG_WARN, "RUNTIME_DIRECTORY=%s: too long for a control socket's path: "
				     "no control socket (give --control PATH)", rd);
		return;
	}
	snprintf(s->ctl_name, sizeof(s->ctl_name), "%.*s/control", (int)n, rd);
}

int bt__ctl_open(struct bt_runtime *s)
{
	const char *name = s->ctl_name[0] ? s->ctl_name : NULL;
	const char *metrics = s->cfg->metrics;
	int stats = s->cfg->on_stats && s->cfg->stats_interval_ms;
	if (!name && s->ctl_lfd >= 0)
		bt__close(s->ctl_lfd); /* the previous generation's: not ours to use */
	if (!name)
		s->ctl_lfd = -1;
	if (!metrics && s->metrics_lfd >= 0)
		bt__close(s->metrics_lfd);
	if (!metrics)
		s->metrics_lfd = -1;
	if (!name && !metrics && !stats)
		return 0;
	struct bt__ctl *c = calloc(1, sizeof(*c));
	if (!c)
		return bt__log_errno(BT_LOG_ERROR, -ENOMEM, "--control");
	c->s = s;
	c->lfd = c->mfd = c->sock = -1;
	snprintf(c->name, sizeof(c->name), "%s", name ? name : "");
	s->ctl = c;
	int rc = 0;
	/* After a reload, the previous generation's listeners (handover.c). */
	c->from_prev = s->ctl_lfd >= 0;
	if (name) {
		c->lfd = c->from_prev ? s->ctl_lfd
				      : bt__unix_listen(name, SOCK_STREAM, BT_FDPASS_NONBLOCK);
		s->ctl_lfd = c->lfd;
		if (c->lfd < 0) {
			rc = c->lfd;
			bt__log_errno(BT_LOG_ERROR, rc, "--control %s", name);
			goto fail;
		}
	}
	char mdesc[160] = "";
	if (metrics) {
		int mprev = s->metrics_lfd >= 0;
		c->mfd = mprev ? s->metrics_lfd : bt__listen_open(metrics, 64, mdesc, sizeof(mdesc));
		s->metrics_lfd = c->mfd;
		if (c->mfd < 0) {
			rc = c->mfd;
			bt__log(BT_LOG_ERROR, "--metrics %s: cannot listen", metrics);
			goto fail;
		}
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (mprev && getsockname(c->mfd, (struct sockaddr *)&ss, &sl) == 0)
			bt__describe_addr((struct sockaddr *)&ss, sl, mdesc, sizeof(mdesc));
		int fl = fcntl(c->mfd, F_GETFL);
		if (fl >= 0 && !(fl & O_NONBLOCK))
			fcntl(c->mfd, F_SETFL, fl | O_NONBLOCK);
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = bt__log_errno(BT_LOG_ERROR, -errno, "control: socketpair");
		goto fail;
	}
	if (stats)
		c->stats_due_ns = bt__now_ns() + (uint64_t)s->cfg->stats_interval_ms * 1000000ull;
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		rc = bt__log_errno(BT_LOG_ERROR, -errno, "control: fork");
		close(sv[0]);
		close(sv[1]);
		goto fail;
	}
	if (pid == 0) {
		/* The control process: die with the supervisor; keep stdio, its
		 * end and the listeners; no signal of the server's is ours (the
		 * supervisor ends us by closing its end). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		int keep[3 + BT_RUNTIME_MAX_INHERIT] = {sv[1]};
		unsigned nk = 1;
		if (c->lfd >= 0)
			keep[nk++] = c->lfd;
		if (c->mfd >= 0)
			keep[nk++] = c->mfd;
		for (unsigned k = 0; k < s->cfg->ninherit; k++) /* for on_stats */
			if (s->cfg->inherit_fds[k] > 2)
				keep[nk++] = s->cfg->inherit_fds[k];
		bt__close_all_but(keep, nk);
		sigset_t none;
		sigemptyset(&none);
		signal(SIGTERM, SIG_IGN);
		signal(SIGINT, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		signal(SIGUSR1, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		signal(SIGCHLD, SIG_DFL);
		sigprocmask(SIG_SETMASK, &none, NULL);
		c->sock = sv[1];
		char title[96];
		snprintf(title, sizeof(title), "%s: control", s->cfg->name);
		bt__proctitle_set(title);
		bt__ctl_main(c);
	}
	close(sv[1]);
	c->pid = pid;
	c->sock = sv[0];
	fcntl(c->sock, F_SETFL, fcntl(c->sock, F_GETFL) | O_NONBLOCK);
	rc = bt_runtime_watch_fd(s, &c->watch, c->sock, BT_WATCH_IN, on_sock, NULL);
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "control: watching the control process");
		goto fail;
	}
	if (name)
		bt__log(BT_LOG_INFO, "control socket %s%s", name,
			c->from_prev ? " (from the previous generation)" : "");
	if (metrics)
		bt__log(BT_LOG_INFO, "metrics on http://%s/metrics", mdesc);
	bt__log(BT_LOG_DEBUG, "control process: pid %ld", (long)pid);
	return 0;
fail:
	bt__ctl_close(s);
	return rc;
}

void bt__ctl_close(struct bt_runtime *s)
{
	struct bt__ctl *c = s->ctl;
	if (!c)
		return;
	/* Its end: it answers what it owes, refuses what it has not
	 * answered, and exits. */
	end_sock(s, c);
	if (c->pid > 0) {
		int st;
		int k = 0;
		pid_t r;
		while ((r = waitpid(c->pid, &st, WNOHANG)) == 0 && k++ < 200)
			usleep(10000);
		if (r == 0) {
			bt__log(BT_LOG_WARN, "control: the control process (pid %ld) did not end in "
					     "2 s: SIGKILL", (long)c->pid);
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
		}
	}
	if (c->lfd >= 0) {
		bt__close(c->lfd);
		if (c->name[0] != '@' && !c->kept && (!c->from_prev || s->ready))
			unlink(c->name);
	}
	if (c->mfd >= 0)
		bt__close(c->mfd);
	s->ctl_lfd = -1;
	s->metrics_lfd = -1;
	free(c);
	s->ctl = NULL;
}
