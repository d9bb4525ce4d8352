/* SPDX-License-Identifier: MIT */
/*
 * The control process (docs/control.md; control_internal.h has the
 * frames): the control socket (--control), a unix stream socket, 0600,
 * where baton-ctl (or socat) asks for the server's status and changes its
 * settings live; and --metrics' listener, where GET /metrics answers in the
 * Prometheus text format.
 *
 * It is a process of its own, forked by the supervisor before any worker,
 * so that nothing a client does (connect and never read, send half a line,
 * ask for a large status) reaches the acceptor's loop.  What needs the
 * supervisor's state is a call: a request frame, then the answer (a
 * snapshot of the counters, or what a setting became).  All formatting is
 * done here.  The supervisor ends it by closing its end of the pair; it
 * then answers what it owes and exits.
 *
 * Protocol: one request per line (at most 1024 bytes); the response is a
 * first line "ok", "refused: WHY" or "usage: WHY", then body lines, then
 * an empty line.  A client that sends nothing, or reads nothing, for 60 s
 * is closed; so is one past 16 at once.
 */
#include "control_internal.h"

#include "control_http.h"
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CLIENTS CTL_MAX_CLIENTS
#define MAX_OF_KIND 16
#define LINE_MAX_BYTES 1024 /* a control request */
#define HEAD_MAX BT__HEAD_MAX /* an HTTP request's head (--metrics) */
#define IDLE_NS (60ull * 1000000000ull)
#define HTTP_IDLE_NS (10ull * 1000000000ull)
#define CALL_WAIT_MS 5000
/* A call without an answer: the supervisor stopped, or did not answer in
 * CALL_WAIT_MS (then this process makes no more calls). */
#define NO_ANSWER "the server did not answer (it is stopping, or was busy for 5 s)"

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

static uint64_t now_ns(void)
{
	return bt__now_ns();
}

/* --- the supervisor: calls and events -------------------------------------------- */

static void reply(struct client *cl, int code, const char *msg, const char *body);

/* An event frame: the listeners went to the next generation, or a
 * reload's outcome for the clients that wait for it. */
static void on_event(struct bt__ctl *c, const unsigned char *p, size_t n)
{
	if (n < 5 + CTL_MSG)
		return;
	int32_t ok;
	memcpy(&ok, p + 1, 4);
	char msg[CTL_MSG];
	memcpy(msg, p + 5, CTL_MSG);
	msg[CTL_MSG - 1] = 0;
	if (p[0] == 'H') {
		if (c->lfd >= 0)
			bt__close(c->lfd); /* the next generation listens on it */
		if (c->mfd >= 0)
			bt__close(c->mfd);
		c->lfd = c->mfd = -1;
		return;
	}
	if (p[0] != 'R')
		return;
	for (int i = 0; i < MAX_CLIENTS; i++) {
		struct client *cl = &c->cl[i];
		if (cl->fd < 0 || !cl->waiting)
			continue;
		cl->waiting = 0;
		reply(cl, ok ? C_OK : C_REFUSED, msg, ok ? msg : NULL);
	}
}

/*
 * Read what the supervisor sent, handling events, until an answer (when
 * k is not NULL: it fills k, 1) or, with k NULL, until nothing is left to
 * read now (0).  -1: the answer did not come within ms; -2: the
 * supervisor is gone (its end closed).
 */
static int from_sup(struct bt__ctl *c, struct call *k, int ms)
{
	uint64_t deadline = now_ns() + (uint64_t)ms * 1000000ull;
	for (;;) {
		while (c->inlen >= 5) {
			uint32_t len;
			memcpy(&len, c->in, 4);
			if (c->inlen < 5 + (size_t)len)
				break;
			unsigned char type = c->in[4];
			const unsigned char *p = c->in + 5;
			int answered = 0;
			if (type == 'E') {
				on_event(c, p, len);
			} else if (type == 'A' && k && len >= 8 + CTL_MSG &&
				   !memcmp(p, &c->seq, 4)) {
				/* (An answer to an earlier call that timed out has
				 * another seq: dropped.) */
				int32_t rc;
				memcpy(&rc, p + 4, 4);
				k->rc = rc;
				memcpy(k->msg, p + 8, CTL_MSG);
				k->msg[CTL_MSG - 1] = 0;
				size_t snap = len - 8 - CTL_MSG;
				if (snap >= sizeof(struct bt__snap)) {
					k->snap = malloc(snap);
					if (k->snap)
						memcpy(k->snap, p + 8 + CTL_MSG, snap);
					if (k->snap && sizeof(*k->snap) + k->snap->nworkers *
							       sizeof(k->snap->w[0]) != snap) {
						free(k->snap); /* not what it says it is */
						k->snap = NULL;
					}
					if (!k->snap) {
						k->rc = C_REFUSED;
						snprintf(k->msg, sizeof(k->msg), "no snapshot");
					}
				}
				answered = 1;
			}
			memmove(c->in, c->in + 5 + len, c->inlen - 5 - len);
			c->inlen -= 5 + len;
			if (answered)
				return 1;
		}
		if (c->inlen == c->incap) {
			size_t cap = c->incap ? c->incap * 2 : 65536;
			unsigned char *in = cap <= (64u << 20) ? realloc(c->in, cap) : NULL;
			if (!in)
				return -2;
			c->in = in;
			c->incap = cap;
		}
		ssize_t n = recv(c->sock, c->in + c->inlen, c->incap - c->inlen, MSG_DONTWAIT);
		if (n > 0) {
			c->inlen += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return -2;
		if (!k)
			return 0;
		uint64_t now = now_ns();
		if (now >= deadline)
			return -1;
		struct pollfd pf = {.fd = c->sock, .events = POLLIN};
		poll(&pf, 1, (int)((deadline - now) / 1000000ull) + 1);
	}
}

/* Run k on the supervisor's thread: 0, or -ESHUTDOWN (it is gone) or
 * -ETIMEDOUT (no answer within 5 s; a late one is dropped). */
static int call_sup(struct bt__ctl *c, struct call *k)
{
	if (c->sock < 0)
		return -ESHUTDOWN;
	unsigned char buf[5 + 4 + 1 + CTL_MAX_ARGS * (LINE_MAX_BYTES + 1)];
	c->seq++;
	memcpy(buf + 5, &c->seq, 4);
	size_t n = 10;
	buf[9] = (unsigned char)k->argc;
	for (int i = 0; i < k->argc; i++) {
		size_t l = strlen(k->argv[i]) + 1;
		if (n + l > sizeof(buf))
			return -EINVAL;
		memcpy(buf + n, k->argv[i], l);
		n += l;
	}
	uint32_t len = (uint32_t)(n - 5);
	memcpy(buf, &len, 4);
	buf[4] = 'Q';
	k->snap = NULL;
	if (bt__ctl_write(c->sock, buf, n, CALL_WAIT_MS) < 0) {
		bt__close(c->sock); /* a request half written: no more calls */
		c->sock = -1;
		return -ESHUTDOWN;
	}
	int rc = from_sup(c, k, CALL_WAIT_MS);
	if (rc == -2) {
		bt__close(c->sock);
		c->sock = -1;
	}
	return rc == 1 ? 0 : rc == -2 ? -ESHUTDOWN : -ETIMEDOUT;
}

/* --- clients ------------------------------------------------------------------------- */

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
	struct call k = {.argv = {"snap"}, .argc = 1};
	int rc = call_sup(c, &k);
	if (rc < 0) {
		reply(cl, C_REFUSED, NO_ANSWER, NULL);
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
		int rc = call_sup(c, &k);
		if (rc < 0)
			reply(cl, C_REFUSED, NO_ANSWER, NULL);
		else
			reply(cl, k.rc, k.msg, k.rc == C_OK ? k.msg : NULL);
	} else if ((!strcmp(cmd, "workers") || !strcmp(cmd, "drain-worker")) && nargs == 1) {
		int rc = call_sup(c, &k);
		if (rc < 0)
			reply(cl, C_REFUSED, NO_ANSWER, NULL);
		else
			reply(cl, k.rc, k.msg, k.rc == C_OK ? k.msg : NULL);
	} else if (!strcmp(cmd, "reload") && nargs == 0) {
		/* One reload at a time: a client that asks while another waits
		 * waits for the same outcome. */
		int joined = 0;
		for (int i = 0; i < MAX_CLIENTS && !joined; i++)
			joined = c->cl[i].fd >= 0 && c->cl[i].waiting;
		if (!joined) {
			int rc = call_sup(c, &k);
			if (rc < 0 || k.rc != C_PENDING) {
				reply(cl, C_REFUSED, rc < 0 ? NO_ANSWER : k.msg, NULL);
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
	int head_only;
	int route = bt__metrics_route(cl->in, cl->inlen, &head_only);
	if (route == 0) {
		if (cl->eof)
			drop(cl);
		return;
	}
	static const struct {
		int route;
		const char *status, *extra, *body;
	} refusals[] = {
		{431, "431 Request Header Fields Too Large", "", "request head too large\n"},
		{400, "400 Bad Request", "", "bad request\n"},
		{405, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", "only GET and HEAD\n"},
		{404, "404 Not Found", "", "not found: the metrics are at /metrics\n"},
	};
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
		if (refusals[i].route == route) {
			http_reply(cl, refusals[i].status, refusals[i].extra, "text/plain",
				   refusals[i].body, strlen(refusals[i].body));
			return;
		}
	struct call k = {.argv = {"snap"}, .argc = 1};
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

/* The program's on_stats: the snapshot as JSON. */
static void give_stats(struct bt__ctl *c)
{
	struct call k = {.argv = {"snap"}, .argc = 1};
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

void bt__ctl_main(struct bt__ctl *c)
{
	c->cl = calloc(MAX_CLIENTS, sizeof(*c->cl));
	if (!c->cl)
		_exit(1);
	for (int i = 0; i < MAX_CLIENTS; i++)
		c->cl[i].fd = -1;
	struct pollfd p[3 + MAX_CLIENTS];
	int who[3 + MAX_CLIENTS];
	for (;;) {
		uint64_t now = now_ns(), next = now + IDLE_NS;
		int n = 0;
		if (c->sock < 0)
			break; /* the supervisor is gone */
		p[n++] = (struct pollfd){.fd = c->sock, .events = POLLIN};
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
		if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && from_sup(c, NULL, 0) == -2)
			break; /* the supervisor closed its end: stop */
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
	_exit(0);
}

