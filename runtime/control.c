/* SPDX-License-Identifier: MIT */
/*
 * The control socket (--control; docs/control.md): a unix stream socket,
 * 0600, where baton-ctl (or socat) asks for the server's status and
 * changes its settings live.
 *
 * Threads.  The socket and its clients belong to a thread of their own,
 * the control thread, so that nothing a client does (connect and never
 * read, send half a line, ask for a large status) reaches the acceptor's
 * loop.  What needs the supervisor's state is a call: the control thread
 * posts it (mu), wakes the supervisor's thread through an eventfd watched
 * on the acceptor's loop, and waits on cv.  The supervisor runs it under
 * mu (copying counters, or changing a setting: microseconds) and signals.
 * Formatting happens back on the control thread.  The supervisor wakes
 * the control thread through another eventfd (stop, a reload's outcome,
 * the listener gone to the next generation).
 *
 * Lock order: mu only; nothing else is taken under it.
 *
 * Protocol: one request per line (at most 1024 bytes); the response is a
 * first line "ok", "refused: WHY" or "usage: WHY", then body lines, then
 * an empty line.  A client that sends nothing, or reads nothing, for 60 s
 * is closed; so is one past 16 at once.
 */
#include "supervisor.h"

#include "acceptor_internal.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 32     /* 16 of each kind */
#define MAX_OF_KIND 16
#define LINE_MAX_BYTES 1024 /* a control request */
#define HEAD_MAX 4096       /* an HTTP request's head (--metrics) */
#define IDLE_NS (60ull * 1000000000ull)
#define HTTP_IDLE_NS (10ull * 1000000000ull)
#define CALL_WAIT_MS 5000
#define REPLY_MAX (4u << 20) /* a client's unsent output, at most */

enum { C_OK = 0, C_REFUSED = 1, C_USAGE = 2, C_PENDING = 3 };

/* A call to the supervisor's thread. */
struct call {
	int (*fn)(struct bt_runtime *s, struct call *k); /* C_* */
	char *argv[8];
	int argc;
	struct bt__snap *snap; /* out */
	char msg[256];         /* out */
	int rc;                /* out: C_* */
	int done;
};

struct client {
	int fd; /* -1: free */
	unsigned long uid;
	long pid;
	int http; /* a --metrics client, not a control one */
	char in[HEAD_MAX + 1];
	size_t inlen;
	int eof;
	struct bt__buf out;
	size_t off;
	uint64_t last_ns;
	int waiting; /* for a reload's outcome */
	int close_after;
};

struct bt__ctl {
	struct bt_runtime *s;
	pthread_t thr;
	int thr_started;
	int lfd;        /* the control socket, -1: none (or handed over) */
	int mfd;        /* --metrics' listener, -1: none (or handed over) */
	char name[110]; /* as given: a path, or @name */
	int wake_fd;    /* the supervisor -> the control thread */
	int call_fd;    /* the control thread -> the supervisor */
	bt_runtime_watch_t *call_watch;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* Under mu. */
	struct call *call;
	int stop;        /* end the thread */
	int gone;        /* the supervisor answers no more calls */
	int handed_over; /* the listener is the next generation's */
	int reload_done, reload_ok;
	char reload_msg[256];
	/* The control thread's own. */
	struct client cl[MAX_CLIENTS];
	uint64_t reload_deadline_ns; /* clients wait for a reload's outcome */
	uint64_t stats_due_ns;       /* on_stats's next call, 0: none */
	int kept;      /* the next generation has the path: do not unlink it */
	int from_prev; /* the previous generation's listener: ours to unlink
			* only once we have served (s->ready) */
};

/* --- the supervisor's side -------------------------------------------------------- */

static void on_call(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)w, (void)revents;
	struct bt__ctl *c = arg;
	uint64_t v;
	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&c->mu);
	struct call *k = c->call;
	if (k && !k->done) {
		k->rc = k->fn(rt, k);
		k->done = 1;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
}

static void wake(struct bt__ctl *c)
{
	uint64_t one = 1;
	while (write(c->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

void bt__ctl_reload_done(struct bt_runtime *s, int ok, const char *msg)
{
	struct bt__ctl *c = s->ctl;
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->reload_done = 1;
	c->reload_ok = ok;
	snprintf(c->reload_msg, sizeof(c->reload_msg), "%s", msg);
	pthread_mutex_unlock(&c->mu);
	wake(c);
}

void bt__ctl_handed_over(struct bt_runtime *s)
{
	struct bt__ctl *c = s->ctl;
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->handed_over = 1;
	pthread_mutex_unlock(&c->mu);
	wake(c);
}

/* Calls (on the supervisor's thread, under mu). */

static int op_snap(struct bt_runtime *s, struct call *k)
{
	k->snap = bt__snap_take(s);
	if (!k->snap)
		snprintf(k->msg, sizeof(k->msg), "out of memory");
	return k->snap ? C_OK : C_REFUSED;
}

static void policy_all(struct bt_runtime *s)
{
	for (unsigned i = 0; i < s->acc->nw; i++) {
		bt_queue_t *q = bt_acceptor_queue(s->acc, i);
		if (q)
			bt__queue_set_policy(q, s->qc.batch, (int)s->qc.flush, s->qc.delay_us);
	}
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
		policy_all(s);
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
		policy_all(s);
	} else if (!strcmp(key, "dispatch")) {
		enum bt_dispatch d;
		if (bt_acceptor_parse_dispatch(val, &d) < 0) {
			snprintf(k->msg, sizeof(k->msg), "set dispatch: '%.64s' is not rr, least or hash",
				 val);
			return C_USAGE;
		}
		snprintf(was, sizeof(was), "%s", bt_acceptor_dispatch_name(s->acc->cfg.dispatch));
		s->acc->cfg.dispatch = d;
		s->config.dispatch = d;
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
		bt__acc_retire(s->acc, i * s->tpp + t, s->cfg->drain_timeout_ms,
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

/* --- the control thread: calls ---------------------------------------------------- */

static uint64_t now_ns(void)
{
	return bt__now_ns();
}

/* Run k on the supervisor's thread; 0, or -ETIMEDOUT / -ESHUTDOWN. */
static int call_sup(struct bt__ctl *c, struct call *k)
{
	pthread_mutex_lock(&c->mu);
	if (c->gone) {
		pthread_mutex_unlock(&c->mu);
		return -ESHUTDOWN;
	}
	k->done = 0;
	c->call = k;
	pthread_mutex_unlock(&c->mu);
	uint64_t one = 1;
	while (write(c->call_fd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += CALL_WAIT_MS / 1000;
	pthread_mutex_lock(&c->mu);
	while (!k->done && !c->gone)
		if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT)
			break;
	int done = k->done;
	c->call = NULL; /* not run later, if it was not run */
	int gone = c->gone;
	pthread_mutex_unlock(&c->mu);
	return done ? 0 : gone ? -ESHUTDOWN : -ETIMEDOUT;
}

/* --- the control thread: clients -------------------------------------------------- */

static void drop(struct client *cl)
{
	if (cl->fd >= 0)
		bt__close(cl->fd);
	cl->fd = -1;
	bt__buf_free(&cl->out);
}

static void head(struct client *cl, int code, const char *msg)
{
	if (code == C_OK)
		bt__buf_printf(&cl->out, "ok\n");
	else
		bt__buf_printf(&cl->out, "%s: %s\n", code == C_USAGE ? "usage" : "refused", msg);
}

/* A whole response: the first line, a body (may be NULL), the end. */
static void reply(struct client *cl, int code, const char *msg, const char *body)
{
	head(cl, code, msg);
	if (body && *body)
		bt__buf_printf(&cl->out, "%s%s", body, body[strlen(body) - 1] == '\n' ? "" : "\n");
	bt__buf_printf(&cl->out, "\n");
	cl->off = 0;
}

static const char help_text[] =
	"status                 the server, its settings and each worker, as a table\n"
	"stats                  the same figures as one line of JSON\n"
	"set batch N            connections per hand-off message, 1..253\n"
	"set flush POLICY       adaptive[:US] | size | delay:US\n"
	"set dispatch POLICY    rr | least | hash\n"
	"workers N              run N worker processes (or threads) from now on: more start,\n"
	"                       the ones taken away drain first (their connections finish\n"
	"                       or move to the others)\n"
	"drain-worker I         drain worker I alone and replace it\n"
	"reload                 start the program again from disk, as SIGHUP does, and wait\n"
	"help                   this list\n"
	"quit                   close the connection\n";

static void snap_reply(struct bt__ctl *c, struct client *cl, int json)
{
	struct call k = {.fn = op_snap};
	int rc = call_sup(c, &k);
	if (rc < 0) {
		reply(cl, C_REFUSED, rc == -ESHUTDOWN ? "the server is stopping"
						      : "the acceptor did not answer in 5 s", NULL);
		return;
	}
	if (k.rc != C_OK) {
		reply(cl, k.rc, k.msg, NULL);
		return;
	}
	head(cl, C_OK, NULL);
	if (json)
		bt__snap_json(k.snap, &cl->out);
	else
		bt__snap_text(k.snap, &cl->out);
	bt__buf_printf(&cl->out, "\n");
	free(k.snap);
	cl->off = 0;
}

static void request(struct bt__ctl *c, struct client *cl, char *line)
{
	struct call k = {0};
	char *save = NULL;
	for (char *w = strtok_r(line, " \t\r", &save); w; w = strtok_r(NULL, " \t\r", &save)) {
		if (k.argc == (int)(sizeof(k.argv) / sizeof(k.argv[0]))) {
			reply(cl, C_USAGE, "too many words", NULL);
			return;
		}
		k.argv[k.argc++] = w;
	}
	if (k.argc == 0) {
		reply(cl, C_USAGE, "an empty request (try: help)", NULL);
		return;
	}
	const char *cmd = k.argv[0];
	int nargs = k.argc - 1;
	if (!strcmp(cmd, "help") && nargs == 0) {
		reply(cl, C_OK, NULL, help_text);
	} else if (!strcmp(cmd, "quit") && nargs == 0) {
		cl->close_after = 1;
		reply(cl, C_OK, NULL, NULL);
	} else if (!strcmp(cmd, "status") && nargs == 0) {
		snap_reply(c, cl, 0);
	} else if (!strcmp(cmd, "stats") && (nargs == 0 || (nargs == 1 && !strcmp(k.argv[1], "--json")))) {
		snap_reply(c, cl, 1);
	} else if (!strcmp(cmd, "set") && nargs == 2) {
		k.fn = op_set;
		int rc = call_sup(c, &k);
		if (rc < 0)
			reply(cl, C_REFUSED, "the server is stopping", NULL);
		else
			reply(cl, k.rc, k.msg, k.rc == C_OK ? k.msg : NULL);
	} else if ((!strcmp(cmd, "workers") || !strcmp(cmd, "drain-worker")) && nargs == 1) {
		k.fn = cmd[0] == 'w' ? op_workers : op_drain_worker;
		int rc = call_sup(c, &k);
		if (rc < 0)
			reply(cl, C_REFUSED, "the server is stopping", NULL);
		else
			reply(cl, k.rc, k.msg, k.rc == C_OK ? k.msg : NULL);
	} else if (!strcmp(cmd, "reload") && nargs == 0) {
		/* One reload at a time: a client that asks while another waits
		 * waits for the same outcome. */
		int joined = 0;
		for (int i = 0; i < MAX_CLIENTS && !joined; i++)
			joined = c->cl[i].fd >= 0 && c->cl[i].waiting;
		if (!joined) {
			k.fn = op_reload;
			int rc = call_sup(c, &k);
			if (rc < 0 || k.rc != C_PENDING) {
				reply(cl, C_REFUSED, rc < 0 ? "the server is stopping" : k.msg, NULL);
				return;
			}
			c->reload_deadline_ns =
				now_ns() + ((uint64_t)c->s->cfg->reload_timeout_ms + 5000) * 1000000ull;
		}
		cl->waiting = 1;
	} else if (!strcmp(cmd, "status") || !strcmp(cmd, "stats") || !strcmp(cmd, "set") ||
		   !strcmp(cmd, "reload") || !strcmp(cmd, "help") || !strcmp(cmd, "quit") ||
		   !strcmp(cmd, "workers") || !strcmp(cmd, "drain-worker")) {
		char m[160];
		snprintf(m, sizeof(m), "%s: wrong arguments (try: help)", cmd);
		reply(cl, C_USAGE, m, NULL);
	} else {
		char m[160];
		snprintf(m, sizeof(m), "unknown command '%.64s' (try: help)", cmd);
		reply(cl, C_USAGE, m, NULL);
	}
}

/* Serve what the client sent, one request at a time: the next waits
 * until the last response is out. */
static void serve(struct bt__ctl *c, struct client *cl)
{
	while (cl->fd >= 0 && !cl->waiting && cl->out.len == 0 && !cl->close_after) {
		char *nl = memchr(cl->in, '\n', cl->inlen);
		if (!nl) {
			if (cl->inlen == LINE_MAX_BYTES) {
				cl->close_after = 1;
				reply(cl, C_USAGE, "a request longer than 1024 bytes", NULL);
			} else if (cl->eof) {
				drop(cl);
			}
			return;
		}
		*nl = 0;
		size_t used = (size_t)(nl - cl->in) + 1;
		request(c, cl, cl->in);
		memmove(cl->in, cl->in + used, cl->inlen - used);
		cl->inlen -= used;
	}
}

/* --- the control thread: --metrics ------------------------------------------------ */

static void http_reply(struct client *cl, const char *status, const char *extra,
		       const char *type, const char *body, size_t len)
{
	bt__buf_printf(&cl->out,
		       "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: "
		       "close\r\n\r\n",
		       status, type, len, extra);
	if (body && len && !cl->out.failed) {
		bt__buf_printf(&cl->out, "%.*s", (int)len, body);
	}
	cl->off = 0;
	cl->close_after = 1;
}

/* One request head, then one response and the end of the connection (a
 * scraper connects again: nothing to keep per client). */
static void serve_http(struct bt__ctl *c, struct client *cl)
{
	if (cl->out.len || cl->close_after)
		return;
	cl->in[cl->inlen] = 0;
	char *end = strstr(cl->in, "\r\n\r\n");
	if (!end)
		end = strstr(cl->in, "\n\n");
	if (!end) {
		if (cl->inlen == HEAD_MAX) {
			static const char big[] = "request head too large\n";
			http_reply(cl, "431 Request Header Fields Too Large", "", "text/plain",
				   big, sizeof(big) - 1);
		} else if (cl->eof) {
			drop(cl);
		}
		return;
	}
	char method[16], path[256], version[16];
	if (sscanf(cl->in, "%15s %255s %15s", method, path, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7)) {
		static const char bad[] = "bad request\n";
		http_reply(cl, "400 Bad Request", "", "text/plain", bad, sizeof(bad) - 1);
		return;
	}
	int head_only = !strcmp(method, "HEAD");
	if (strcmp(method, "GET") && !head_only) {
		static const char no[] = "only GET and HEAD\n";
		http_reply(cl, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", "text/plain", no,
			   sizeof(no) - 1);
		return;
	}
	size_t plen = strcspn(path, "?");
	if (plen != 8 || strncmp(path, "/metrics", 8)) {
		static const char nf[] = "not found: the metrics are at /metrics\n";
		http_reply(cl, "404 Not Found", "", "text/plain", nf, sizeof(nf) - 1);
		return;
	}
	struct call k = {.fn = op_snap};
	int rc = call_sup(c, &k);
	if (rc < 0 || k.rc != C_OK) {
		static const char un[] = "the server is stopping or did not answer\n";
		http_reply(cl, "503 Service Unavailable", "", "text/plain", un, sizeof(un) - 1);
		free(k.snap);
		return;
	}
	struct bt__buf body = {0};
	bt__metrics_text(k.snap, c->s->metrics, &body);
	free(k.snap);
	if (body.failed) {
		static const char oom[] = "out of memory\n";
		http_reply(cl, "500 Internal Server Error", "", "text/plain", oom, sizeof(oom) - 1);
	} else {
		/* HEAD: the length GET would send, and no body. */
		http_reply(cl, "200 OK", "", "text/plain; version=0.0.4; charset=utf-8",
			   head_only ? NULL : body.p, body.len);
	}
	bt__buf_free(&body);
}

static void on_readable(struct bt__ctl *c, struct client *cl)
{
	ssize_t n;
	size_t cap = cl->http ? HEAD_MAX : LINE_MAX_BYTES;
	do
		n = recv(cl->fd, cl->in + cl->inlen, cap - cl->inlen, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n <= 0)
		cl->eof = 1;
	else
		cl->inlen += (size_t)n;
	cl->last_ns = now_ns();
	if (cl->http)
		serve_http(c, cl);
	else
		serve(c, cl);
}

static void on_writable(struct bt__ctl *c, struct client *cl)
{
	if (cl->out.failed) {
		drop(cl); /* out of memory for its response */
		return;
	}
	while (cl->off < cl->out.len) {
		ssize_t n = send(cl->fd, cl->out.p + cl->off, cl->out.len - cl->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			drop(cl);
			return;
		}
		cl->off += (size_t)n;
		cl->last_ns = now_ns();
	}
	cl->off = 0;
	cl->out.len = 0;
	if (cl->out.cap > 65536)
		bt__buf_free(&cl->out);
	if (cl->close_after) {
		drop(cl);
		return;
	}
	if (!cl->http)
		serve(c, cl);
}

static void on_accept(struct bt__ctl *c, int lfd, int http)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				bt__log_errno(BT_LOG_WARN, -errno, "control: accept4");
			return;
		}
		struct ucred cred = {0};
		socklen_t len = sizeof(cred);
		const char *no = NULL;
		char why[160];
		unsigned same = 0;
		for (int i = 0; i < MAX_CLIENTS; i++)
			same += c->cl[i].fd >= 0 && c->cl[i].http == http;
		if (http) {
			if (same >= MAX_OF_KIND) {
				/* A scraper's burst: it tries again at its next interval. */
				static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
							   "Content-Length: 0\r\nConnection: close\r\n\r\n";
				(void)!send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
				bt__close(fd);
				continue;
			}
		} else if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			no = "its credentials are unknown";
		} else if (cred.uid != geteuid() && cred.uid != 0) {
			snprintf(why, sizeof(why), "uid %lu may not use this control socket (only uid "
						   "%lu and root)",
				 (unsigned long)cred.uid, (unsigned long)geteuid());
			no = why;
		}
		struct client *cl = NULL;
		for (int i = 0; i < MAX_CLIENTS && !no && !cl && same < MAX_OF_KIND; i++)
			if (c->cl[i].fd < 0)
				cl = &c->cl[i];
		if (!no && !cl)
			no = "16 control clients are connected already";
		if (no) {
			bt__log(BT_LOG_WARN, "control: refused pid %ld uid %lu: %s", (long)cred.pid,
				(unsigned long)cred.uid, no);
			char line[200];
			int m = snprintf(line, sizeof(line), "refused: %s\n\n", no);
			(void)!send(fd, line, (size_t)m, MSG_NOSIGNAL | MSG_DONTWAIT);
			bt__close(fd);
			continue;
		}
		memset(cl, 0, sizeof(*cl));
		cl->fd = fd;
		cl->http = http;
		cl->uid = (unsigned long)cred.uid;
		cl->pid = (long)cred.pid;
		cl->last_ns = now_ns();
	}
}

/* What the supervisor said through wake_fd. */
static int on_wake(struct bt__ctl *c)
{
	uint64_t v;
	while (read(c->wake_fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&c->mu);
	int stop = c->stop, handed = c->handed_over;
	int done = c->reload_done, ok = c->reload_ok;
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", c->reload_msg);
	c->reload_done = 0;
	pthread_mutex_unlock(&c->mu);
	if (handed && c->lfd >= 0) {
		bt__close(c->lfd); /* the next generation listens on it */
		c->lfd = -1;
		c->kept = 1;
	}
	if (handed && c->mfd >= 0) {
		bt__close(c->mfd);
		c->mfd = -1;
	}
	if (done)
		for (int i = 0; i < MAX_CLIENTS; i++) {
			struct client *cl = &c->cl[i];
			if (cl->fd < 0 || !cl->waiting)
				continue;
			cl->waiting = 0;
			reply(cl, ok ? C_OK : C_REFUSED, msg, ok ? msg : NULL);
		}
	return stop;
}

/* The program's on_stats: the snapshot as JSON. */
static void give_stats(struct bt__ctl *c)
{
	struct call k = {.fn = op_snap};
	if (call_sup(c, &k) < 0 || k.rc != C_OK) {
		free(k.snap);
		return;
	}
	struct bt__buf b = {0};
	bt__snap_json(k.snap, &b);
	free(k.snap);
	if (!b.failed && b.p)
		c->s->cfg->on_stats(b.p, b.len, c->s->user);
	bt__buf_free(&b);
}

static void *ctl_main(void *arg)
{
	struct bt__ctl *c = arg;
	struct pollfd p[3 + MAX_CLIENTS];
	int who[3 + MAX_CLIENTS];
	for (;;) {
		uint64_t now = now_ns(), next = now + IDLE_NS;
		int n = 0;
		p[n++] = (struct pollfd){.fd = c->wake_fd, .events = POLLIN};
		int lslot = -1, mslot = -1;
		if (c->lfd >= 0) {
			lslot = n;
			p[n++] = (struct pollfd){.fd = c->lfd, .events = POLLIN};
		}
		if (c->mfd >= 0) {
			mslot = n;
			p[n++] = (struct pollfd){.fd = c->mfd, .events = POLLIN};
		}
		int first = n;
		int waiting = 0;
		for (int i = 0; i < MAX_CLIENTS; i++) {
			struct client *cl = &c->cl[i];
			if (cl->fd < 0)
				continue;
			if (cl->waiting) {
				waiting = 1;
				continue;
			}
			uint64_t idle = cl->http ? HTTP_IDLE_NS : IDLE_NS;
			if (cl->last_ns + idle <= now) {
				drop(cl); /* idle: nothing read or written for 60 s (10 s) */
				continue;
			}
			if (cl->last_ns + idle < next)
				next = cl->last_ns + idle;
			size_t cap = cl->http ? HEAD_MAX : LINE_MAX_BYTES;
			short ev = cl->out.len ? POLLOUT : cl->inlen < cap ? POLLIN : 0;
			who[n] = i;
			p[n++] = (struct pollfd){.fd = cl->fd, .events = ev};
		}
		if (waiting && c->reload_deadline_ns <= now) {
			for (int i = 0; i < MAX_CLIENTS; i++)
				if (c->cl[i].fd >= 0 && c->cl[i].waiting) {
					c->cl[i].waiting = 0;
					reply(&c->cl[i], C_REFUSED, "no word of the reload from the master "
								    "in time", NULL);
				}
			continue;
		}
		if (waiting && c->reload_deadline_ns < next)
			next = c->reload_deadline_ns;
		if (c->stats_due_ns && c->stats_due_ns <= now) {
			give_stats(c);
			c->stats_due_ns = now + (uint64_t)c->s->cfg->stats_interval_ms * 1000000ull;
			continue;
		}
		if (c->stats_due_ns && c->stats_due_ns < next)
			next = c->stats_due_ns;
		int ms = (int)((next - now) / 1000000ull) + 1;
		int r = poll(p, (nfds_t)n, ms);
		if (r < 0 && errno != EINTR) {
			bt__log_errno(BT_LOG_ERROR, -errno, "control: poll");
			break;
		}
		if (r <= 0)
			continue;
		if ((p[0].revents & POLLIN) && on_wake(c))
			break;
		if (lslot >= 0 && (p[lslot].revents & POLLIN) && c->lfd >= 0)
			on_accept(c, c->lfd, 0);
		if (mslot >= 0 && (p[mslot].revents & POLLIN) && c->mfd >= 0)
			on_accept(c, c->mfd, 1);
		for (int k = first; k < n; k++) {
			struct client *cl = &c->cl[who[k]];
			if (cl->fd != p[k].fd || !p[k].revents)
				continue;
			if (p[k].revents & POLLOUT)
				on_writable(c, cl);
			else if (p[k].revents & (POLLIN | POLLHUP | POLLERR))
				on_readable(c, cl);
		}
	}
	/* Stopping: what is owed goes out if the socket takes it now (a
	 * reload's answer, typically), and a request not served yet gets a
	 * refusal rather than silence. */
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *cl = &c->cl[i];
		if (cl->fd < 0)
			continue;
		if (!cl->http && (cl->waiting || memchr(cl->in, '\n', cl->inlen))) {
			char m[96];
			snprintf(m, sizeof(m), "this generation (pid %ld) has stopped: ask again",
				 (long)getpid());
			if (cl->out.len == 0)
				cl->off = 0;
			head(cl, C_REFUSED, m);
			bt__buf_printf(&cl->out, "\n");
		}
		while (!cl->out.failed && cl->off < cl->out.len) {
			ssize_t n = send(cl->fd, cl->out.p + cl->off, cl->out.len - cl->off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			cl->off += (size_t)n;
		}
		drop(cl);
	}
	return NULL;
}

/* --- open and close ------------------------------------------------------------- */

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
	if (!name && s->ctl_lfd >= 0)
		bt__close(s->ctl_lfd); /* the previous generation's: not ours to use */
	if (!name)
		s->ctl_lfd = -1;
	if (!metrics && s->metrics_lfd >= 0)
		bt__close(s->metrics_lfd);
	if (!metrics)
		s->metrics_lfd = -1;
	int stats = s->cfg->on_stats && s->cfg->stats_interval_ms;
	if (!name && !metrics && !stats)
		return 0;
	struct bt__ctl *c = calloc(1, sizeof(*c));
	if (!c)
		return bt__log_errno(BT_LOG_ERROR, -ENOMEM, "--control");
	c->s = s;
	c->lfd = c->mfd = -1;
	c->wake_fd = c->call_fd = -1;
	for (int i = 0; i < MAX_CLIENTS; i++)
		c->cl[i].fd = -1;
	snprintf(c->name, sizeof(c->name), "%s", name ? name : "");
	int rc = 0;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&c->mu, NULL);
	s->ctl = c;
	/* After a reload, the previous generation's listeners (handover.c). */
	int from_prev = s->ctl_lfd >= 0;
	c->from_prev = from_prev;
	if (name) {
		c->lfd = from_prev ? s->ctl_lfd
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
		if (mprev) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			getsockname(c->mfd, (struct sockaddr *)&ss, &sl);
			bt__describe_addr((struct sockaddr *)&ss, sl, mdesc, sizeof(mdesc));
		}
		int fl = fcntl(c->mfd, F_GETFL);
		if (fl >= 0 && !(fl & O_NONBLOCK))
			fcntl(c->mfd, F_SETFL, fl | O_NONBLOCK);
	}
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	c->call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wake_fd < 0 || c->call_fd < 0) {
		rc = bt__log_errno(BT_LOG_ERROR, -errno, "--control: eventfd");
		goto fail;
	}
	rc = bt_runtime_watch_fd(s, &c->call_watch, c->call_fd, BT_WATCH_IN, on_call, c);
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "--control: watching its eventfd");
		goto fail;
	}
	if (stats)
		c->stats_due_ns = bt__now_ns() + (uint64_t)s->cfg->stats_interval_ms * 1000000ull;
	rc = pthread_create(&c->thr, NULL, ctl_main, c);
	if (rc != 0) {
		rc = bt__log_errno(BT_LOG_ERROR, -rc, "--control: pthread_create");
		goto fail;
	}
	c->thr_started = 1;
	bt__thread_name(c->thr, "control");
	if (name)
		bt__log(BT_LOG_INFO, "control socket %s%s", name,
			from_prev ? " (from the previous generation)" : "");
	if (metrics)
		bt__log(BT_LOG_INFO, "metrics on http://%s/metrics", mdesc);
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
	pthread_mutex_lock(&c->mu);
	c->stop = 1;
	c->gone = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	if (c->thr_started) {
		wake(c);
		pthread_join(c->thr, NULL);
	}
	if (c->call_watch && s->acc)
		bt_runtime_unwatch(s, c->call_watch);
	if (c->wake_fd >= 0)
		bt__close(c->wake_fd);
	if (c->call_fd >= 0)
		bt__close(c->call_fd);
	if (c->lfd >= 0) {
		bt__close(c->lfd);
		if (c->name[0] != '@' && !c->kept && (!c->from_prev || s->ready))
			unlink(c->name);
	}
	if (c->mfd >= 0)
		bt__close(c->mfd);
	s->ctl_lfd = -1;
	s->metrics_lfd = -1;
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
	s->ctl = NULL;
}
