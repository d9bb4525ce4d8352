/* SPDX-License-Identifier: MIT */
/*
 * baton-bench load: our own load generator.  Multi-threaded (one epoll
 * loop per thread), non-blocking, one exchange per connection by default
 * (--keepalive: many exchanges per connection), for three protocols:
 *
 *   http   GET PATH; a success is a complete response (Content-Length, or
 *          the body up to end of file) whose status is one of --expect.
 *   echo   send a payload (--size N bytes of a pattern, or --line TEXT);
 *          a success is the same bytes back.
 *   raw    send the bytes of --send FILE; a success is --expect-bytes N
 *          bytes back.
 *
 * Closed loop by default: each client starts its next exchange when the
 * last one ended, and latency runs from the start of the connect (of the
 * request, with --keepalive) to the last byte.  With --rate R, open loop:
 * exchanges are due on a fixed schedule of R per second, spread over the
 * clients, and latency runs from each one's intended send time, so time
 * spent waiting for a busy server counts (the coordinated-omission
 * correction).  Latencies go into a log-linear histogram (16 sub-buckets
 * per power of two: within 6.25%).  Anything other than a success is an
 * error, counted by kind and never as a success.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define HBITS 4                    /* sub-buckets per power of two: 16 */
#define HBUCKETS (64 << HBITS)
#define HEAD_MAX 8192              /* an HTTP response head */
#define LATE_NS 1000000ull         /* open loop: later than this is late */

static const char *const err_name[BENCH_ERR_KINDS] = {"refused", "reset",    "timeout", "short",
						       "status",  "mismatch", "other"};

struct hist {
	uint64_t b[HBUCKETS];
	uint64_t n;
};

static unsigned hbucket(uint64_t v)
{
	if (v < (1u << HBITS))
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned sub = (unsigned)(v >> (msb - HBITS)) & ((1u << HBITS) - 1);
	return ((msb - HBITS + 1) << HBITS) + sub;
}

static uint64_t hvalue(unsigned b)
{
	if (b < (1u << HBITS))
		return b;
	unsigned e = (b >> HBITS) + HBITS - 1;
	uint64_t sub = b & ((1u << HBITS) - 1);
	return ((uint64_t)1 << e) + (sub << (e - HBITS)) + ((uint64_t)1 << (e - HBITS)) / 2;
}

static void hadd(struct hist *h, uint64_t v)
{
	h->b[hbucket(v)]++;
	h->n++;
}

static uint64_t hpct(const struct hist *h, double pct)
{
	if (!h->n)
		return 0;
	uint64_t want = (uint64_t)((double)h->n * pct / 100.0 + 0.5);
	if (want < 1)
		want = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HBUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want)
			return hvalue(i);
	}
	return hvalue(HBUCKETS - 1);
}

enum { S_IDLE, S_CONNECTING, S_BUSY };

struct slot {
	int fd;
	int state;
	uint64_t t0;         /* latency from here: start, or intended send time */
	uint64_t started;    /* when it really started (for --timeout) */
	uint64_t idle_since; /* open loop: when it became free */
	size_t sent;         /* request bytes sent */
	size_t got;          /* response bytes seen */
	/* http */
	size_t hlen;         /* bytes in head */
	long long body_left; /* -1: not known yet; -2: until end of file */
	int done;            /* the exchange is complete (http: waiting for FIN) */
	char *head;          /* HEAD_MAX bytes, http only */
};

struct worker {
	pthread_t tid;
	const struct load_cfg *cfg;
	int nslots;
	double rate;            /* this thread's share of --rate */
	uint64_t phase_ns;      /* its schedule's offset */
	struct hist hist;
	uint64_t ok;
	uint64_t err[BENCH_ERR_KINDS];
	uint64_t due, unsent, waited, client_late;
	char scratch[65536];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void slot_close(struct slot *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->state = S_IDLE;
}

/* The events a busy slot waits for: writable while the request is not all
 * out (or the connect not done), readable once connected. */
static void arm(struct worker *w, int ep, struct slot *s, int op)
{
	uint32_t ev = 0;
	if (s->state == S_CONNECTING || s->sent < w->cfg->reqlen)
		ev |= EPOLLOUT;
	if (s->state == S_BUSY)
		ev |= EPOLLIN;
	struct epoll_event e = {.events = ev, .data.ptr = s};
	epoll_ctl(ep, op, s->fd, &e);
}

/* Begin an exchange on s: on its kept-alive connection, or a new one. */
static int slot_start(struct worker *w, int ep, struct slot *s, uint64_t t0, uint64_t now)
{
	const struct load_cfg *c = w->cfg;
	s->got = s->sent = s->hlen = 0;
	s->body_left = -1;
	s->done = 0;
	s->t0 = t0;
	s->started = now;
	if (s->fd >= 0 && c->keepalive) {
		s->state = S_BUSY;
		arm(w, ep, s, EPOLL_CTL_MOD);
		return 0;
	}
	slot_close(s);
	s->fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return -errno;
	if (c->addr.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	int rc = connect(s->fd, (const struct sockaddr *)&c->addr, c->addrlen);
	if (rc < 0 && errno != EINPROGRESS && errno != EAGAIN) {
		int err = errno;
		slot_close(s);
		return -err;
	}
	/* A unix socket whose backlog is full says EAGAIN: the server did
	 * not take the connection (counted as refused). */
	if (rc < 0 && errno == EAGAIN) {
		slot_close(s);
		return -EAGAIN;
	}
	s->state = rc == 0 ? S_BUSY : S_CONNECTING;
	arm(w, ep, s, EPOLL_CTL_ADD);
	return 0;
}

static int errno_kind(int e)
{
	if (e == ECONNREFUSED || e == ENOENT || e == EAGAIN)
		return BENCH_ERR_REFUSED;
	if (e == ECONNRESET || e == EPIPE)
		return BENCH_ERR_RESET;
	if (e == ETIMEDOUT)
		return BENCH_ERR_TIMEOUT;
	return BENCH_ERR_OTHER;
}

static void fail(struct worker *w, struct slot *s, int kind, uint64_t now)
{
	w->err[kind]++;
	slot_close(s);
	s->idle_since = now;
}

static int status_ok(const struct load_cfg *c, int status)
{
	return status >= c->expect_lo && status <= c->expect_hi;
}

/* The head of an HTTP response is in s->head[0..hlen): its status and the
 * body's length.  0, or an error kind. */
static int parse_head(const struct load_cfg *c, struct slot *s, size_t head_len)
{
	if (head_len < 12 || memcmp(s->head, "HTTP/1.", 7) != 0 || s->head[8] != ' ')
		return BENCH_ERR_OTHER;
	int status = atoi(s->head + 9);
	if (!status_ok(c, status))
		return BENCH_ERR_STATUS;
	s->body_left = -2; /* until end of file */
	for (size_t i = 0; i + 15 < head_len; i++) {
		if (s->head[i] != '\n')
			continue;
		if (strncasecmp(s->head + i + 1, "Content-Length:", 15) == 0) {
			long long n = atoll(s->head + i + 16);
			if (n < 0)
				return BENCH_ERR_OTHER;
			s->body_left = n;
		} else if (strncasecmp(s->head + i + 1, "Transfer-Encoding:", 18) == 0) {
			return BENCH_ERR_OTHER; /* chunked bodies are not supported */
		}
	}
	if (s->body_left == -2 && c->keepalive)
		return BENCH_ERR_OTHER; /* no length on a kept-alive connection */
	return 0;
}

/* n bytes of response (or eof when n == 0): 1 complete, 0 more to come,
 * or -(error kind + 1). */
static int absorb(struct worker *w, struct slot *s, const char *p, size_t n, int eof)
{
	const struct load_cfg *c = w->cfg;
	switch (c->proto) {
	case BENCH_PROTO_ECHO:
		if (eof)
			return -(BENCH_ERR_SHORT + 1);
		if (s->got + n > c->payload_len || memcmp(p, c->payload + s->got, n) != 0)
			return -(BENCH_ERR_MISMATCH + 1);
		s->got += n;
		return s->got == c->payload_len;
	case BENCH_PROTO_RAW:
		if (eof)
			return -(BENCH_ERR_SHORT + 1);
		s->got += n;
		if (s->got > c->expect_bytes)
			return -(BENCH_ERR_MISMATCH + 1); /* longer than expected */
		return s->got == c->expect_bytes;
	default:
		break;
	}
	/* http */
	if (s->done) /* complete; only the server's end of file may follow */
		return eof ? 1 : -(BENCH_ERR_OTHER + 1);
	if (s->body_left == -1) {
		size_t take = n < HEAD_MAX - s->hlen ? n : HEAD_MAX - s->hlen;
		memcpy(s->head + s->hlen, p, take);
		size_t before = s->hlen;
		s->hlen += take;
		char *end = memmem(s->head, s->hlen, "\r\n\r\n", 4);
		if (!end) {
			if (eof)
				return -(BENCH_ERR_SHORT + 1);
			return s->hlen == HEAD_MAX ? -(BENCH_ERR_OTHER + 1) : 0;
		}
		size_t head_len = (size_t)(end - s->head) + 4;
		int kind = parse_head(c, s, head_len);
		if (kind)
			return -(kind + 1);
		size_t used = head_len - before; /* of p */
		p += used;
		n -= used;
	}
	if (s->body_left == -2)
		return eof ? 1 : 0;
	if (eof)
		return s->body_left == 0 ? 1 : -(BENCH_ERR_SHORT + 1);
	if ((long long)n > s->body_left)
		return -(BENCH_ERR_OTHER + 1); /* more than the response */
	s->body_left -= (long long)n;
	return s->body_left == 0;
}

/* The exchange on s succeeded: count it, and start the next (closed loop)
 * or free the slot (open loop). */
static void succeed(struct worker *w, int ep, struct slot *s, uint64_t now)
{
	const struct load_cfg *c = w->cfg;
	hadd(&w->hist, (now - s->t0) / 1000);
	w->ok++;
	if (!c->keepalive)
		slot_close(s);
	s->state = S_IDLE;
	s->idle_since = now;
	if (s->fd >= 0) { /* kept alive: nothing to wait for until the next */
		struct epoll_event e = {.events = 0, .data.ptr = s};
		epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &e);
	}
	if (c->rate > 0)
		return;
	int rc = slot_start(w, ep, s, now, now);
	if (rc < 0)
		fail(w, s, errno_kind(-rc), now);
}

static void on_event(struct worker *w, int ep, struct slot *s, uint32_t events, uint64_t now)
{
	const struct load_cfg *c = w->cfg;
	if (s->state == S_IDLE) { /* a kept-alive connection closed by the server */
		if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			slot_close(s);
		return;
	}
	if (s->state == S_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			fail(w, s, errno_kind(err), now);
			return;
		}
		s->state = S_BUSY;
		arm(w, ep, s, EPOLL_CTL_MOD);
	}
	if (s->sent < c->reqlen && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
		for (;;) {
			ssize_t n = send(s->fd, c->req + s->sent, c->reqlen - s->sent, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN) {
					fail(w, s, errno_kind(errno), now);
					return;
				}
				break;
			}
			s->sent += (size_t)n;
			if (s->sent == c->reqlen) {
				arm(w, ep, s, EPOLL_CTL_MOD);
				break;
			}
		}
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;) {
		ssize_t n = recv(s->fd, w->scratch, sizeof(w->scratch), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				fail(w, s, errno_kind(errno), now);
			return;
		}
		int r = absorb(w, s, w->scratch, (size_t)n, n == 0);
		if (r < 0) {
			fail(w, s, -r - 1, now);
			return;
		}
		if (r == 1 && s->sent < c->reqlen) {
			fail(w, s, BENCH_ERR_OTHER, now); /* answered before it was all sent */
			return;
		}
		/* http, one exchange per connection: a success once the
		 * server's FIN came too (a reset after the reply is an error). */
		if (r == 1 && c->proto == BENCH_PROTO_HTTP && !c->keepalive && n > 0) {
			s->done = 1;
			continue;
		}
		if (r == 1) {
			succeed(w, ep, s, now);
			return;
		}
		if (n == 0)
			return;
	}
}

/* Open loop: start the exchanges that are due on free slots.  The next
 * due time advances whether or not a slot was free: what waits is owed,
 * and its latency runs from when it was due. */
static void start_due(struct worker *w, int ep, struct slot *slots, uint64_t *next_due,
		      uint64_t *counted_due, uint64_t interval, uint64_t now, uint64_t end)
{
	while (*counted_due <= now && *counted_due < end) {
		w->due++;
		*counted_due += interval;
	}
	for (int i = 0; i < w->nslots && *next_due <= now && *next_due < end; i++) {
		struct slot *s = &slots[i];
		if (s->state != S_IDLE)
			continue;
		if (now - *next_due > LATE_NS) {
			if (s->idle_since > *next_due)
				w->waited++;      /* every client was busy at its time */
			else
				w->client_late++; /* a client was free: we were late */
		}
		int rc = slot_start(w, ep, s, *next_due, now);
		*next_due += interval;
		if (rc < 0)
			fail(w, s, errno_kind(-rc), now);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct load_cfg *c = w->cfg;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct slot *slots = calloc((size_t)w->nslots, sizeof(*slots));
	char *heads = c->proto == BENCH_PROTO_HTTP ? malloc((size_t)w->nslots * HEAD_MAX) : NULL;
	if (ep < 0 || !slots || (c->proto == BENCH_PROTO_HTTP && !heads)) {
		w->err[BENCH_ERR_OTHER]++;
		goto out;
	}
	uint64_t start = now_ns(), end = start + (uint64_t)(c->seconds * 1e9);
	uint64_t tmo = (uint64_t)(c->timeout * 1e9);
	uint64_t interval = w->rate > 0 ? (uint64_t)(1e9 / w->rate) : 0;
	if (w->rate > 0 && interval == 0)
		interval = 1;
	uint64_t next_due = start + w->phase_ns, counted_due = next_due;
	for (int i = 0; i < w->nslots; i++) {
		slots[i].fd = -1;
		slots[i].head = heads ? heads + (size_t)i * HEAD_MAX : NULL;
		slots[i].idle_since = start;
		if (c->rate > 0)
			continue;
		int rc = slot_start(w, ep, &slots[i], start, start);
		if (rc < 0)
			fail(w, &slots[i], errno_kind(-rc), start);
	}
	struct epoll_event evs[256];
	uint64_t last_sweep = start;
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end)
			break;
		if (c->rate > 0)
			start_due(w, ep, slots, &next_due, &counted_due, interval, now, end);
		int wait_ms = 10;
		if (c->rate > 0 && next_due > now) {
			uint64_t d = (next_due - now) / 1000000ull;
			wait_ms = d < 10 ? (int)d : 10;
		} else if (c->rate > 0) {
			wait_ms = 1; /* due, but no slot free: look again soon */
		}
		int n = epoll_wait(ep, evs, 256, wait_ms);
		now = now_ns();
		for (int i = 0; i < n; i++)
			on_event(w, ep, evs[i].data.ptr, evs[i].events, now);
		if (now - last_sweep > 10000000ull) {
			last_sweep = now;
			for (int i = 0; i < w->nslots; i++) {
				struct slot *s = &slots[i];
				if (s->state != S_IDLE && now - s->started > tmo)
					fail(w, s, BENCH_ERR_TIMEOUT, now);
				if (s->state == S_IDLE && c->rate <= 0 && now < end) {
					int rc = slot_start(w, ep, s, now, now);
					if (rc < 0)
						fail(w, s, errno_kind(-rc), now);
				}
			}
		}
	}
	if (c->rate > 0) {
		if (counted_due < end) /* due in the last turn */
			w->due += (end - counted_due + interval - 1) / interval;
		/* Not sent: due at least 10 ms (a turn of the loop) before
		 * the end, and never started. */
		uint64_t cut = end - 10000000ull;
		if (next_due < cut)
			w->unsent += (cut - next_due + interval - 1) / interval;
	}
out:
	for (int i = 0; slots && i < w->nslots; i++)
		slot_close(&slots[i]);
	free(slots);
	free(heads);
	if (ep >= 0)
		close(ep);
	return NULL;
}

void bench_load_cfg_init(struct load_cfg *c)
{
	memset(c, 0, sizeof(*c));
	c->clients = 32;
	c->threads = 1;
	c->seconds = 5;
	c->timeout = 5;
	c->proto = BENCH_PROTO_HTTP;
	c->path = "/";
	c->expect_lo = c->expect_hi = 200;
}

void bench_load_cfg_free(struct load_cfg *c)
{
	free(c->payload);
	free(c->req);
	c->payload = c->req = NULL;
}

/* --expect: 200, 2xx, 200-399, or a comma list of those (the span from its
 * lowest to its highest). */
static int parse_expect(const char *s, int *lo, int *hi)
{
	int l = 1000, h = 0;
	char buf[128];
	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	char *save = NULL;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		int a, b;
		char x[4];
		if (strlen(t) == 3 && t[1] == 'x' && t[2] == 'x' && t[0] >= '1' && t[0] <= '5') {
			a = (t[0] - '0') * 100;
			b = a + 99;
		} else if (sscanf(t, "%d-%d%1s", &a, &b, x) == 2) {
		} else if (bench_parse_int(t, &a) == 0) {
			b = a;
		} else {
			return -1;
		}
		if (a < 100 || b > 599 || a > b)
			return -1;
		l = a < l ? a : l;
		h = b > h ? b : h;
	}
	if (h == 0)
		return -1;
	*lo = l;
	*hi = h;
	return 0;
}

static const char *send_file;
static int size_given, line_given, expect_bytes_given, path_given, expect_given;

int bench_proto_option(struct load_cfg *c, int o, const char *arg, void (*usage)(FILE *))
{
	double v;
	int n;
	switch (o) {
	case BENCH_OPT_PROTO:
		if (!strcmp(arg, "http"))
			c->proto = BENCH_PROTO_HTTP;
		else if (!strcmp(arg, "echo"))
			c->proto = BENCH_PROTO_ECHO;
		else if (!strcmp(arg, "raw"))
			c->proto = BENCH_PROTO_RAW;
		else
			bench_usage_error(usage, "--proto wants http, echo or raw, not '%s'", arg);
		return 1;
	case BENCH_OPT_PROTO + 1:
		if (arg[0] != '/' || strpbrk(arg, "\r\n") || strlen(arg) > 1024)
			bench_usage_error(usage, "--path wants a path that begins with '/' (one line), not '%s'",
					  arg);
		c->path = arg;
		path_given = 1;
		return 1;
	case BENCH_OPT_PROTO + 2:
		if (parse_expect(arg, &c->expect_lo, &c->expect_hi) < 0)
			bench_usage_error(usage, "--expect wants statuses like 200, 2xx, 200-399 or 200,301, not '%s'",
					  arg);
		expect_given = 1;
		return 1;
	case BENCH_OPT_PROTO + 3:
		if (bench_parse_int(arg, &n) < 0 || n < 1 || n > (16 << 20))
			bench_usage_error(usage, "--size wants 1 to 16777216 bytes, not '%s'", arg);
		free(c->payload);
		c->payload = malloc((size_t)n);
		if (!c->payload)
			bench_die("out of memory");
		for (int i = 0; i < n; i++) /* a pattern that shows a byte out of place */
			c->payload[i] = (char)('a' + (i * 7 + i / 26) % 26);
		c->payload_len = (size_t)n;
		size_given = 1;
		return 1;
	case BENCH_OPT_PROTO + 4: {
		if (strchr(arg, '\n'))
			bench_usage_error(usage, "--line wants one line of text (the newline is added)%s", "");
		size_t l = strlen(arg);
		free(c->payload);
		c->payload = malloc(l + 1);
		if (!c->payload)
			bench_die("out of memory");
		memcpy(c->payload, arg, l);
		c->payload[l] = '\n';
		c->payload_len = l + 1;
		line_given = 1;
		return 1;
	}
	case BENCH_OPT_PROTO + 5:
		send_file = arg;
		return 1;
	case BENCH_OPT_PROTO + 6:
		if (bench_parse_int(arg, &n) < 0 || n < 1)
			bench_usage_error(usage, "--expect-bytes wants a length of at least 1, not '%s'", arg);
		c->expect_bytes = (size_t)n;
		expect_bytes_given = 1;
		return 1;
	case BENCH_OPT_PROTO + 7:
		if (bench_parse_double(arg, &v) < 0 || v < 1 || v > 10000000)
			bench_usage_error(usage, "--rate wants 1 to 10000000 exchanges per second, not '%s'", arg);
		c->rate = v;
		return 1;
	case BENCH_OPT_PROTO + 8:
		c->keepalive = 1;
		return 1;
	case BENCH_OPT_PROTO + 9:
		if (bench_parse_double(arg, &c->timeout) < 0 || c->timeout < 0.01 || c->timeout > 600)
			bench_usage_error(usage, "--timeout wants 0.01 to 600 seconds, not '%s'", arg);
		return 1;
	}
	return 0;
}

void bench_proto_check(struct load_cfg *c, void (*usage)(FILE *))
{
	const char *p = c->proto == BENCH_PROTO_HTTP ? "http" : c->proto == BENCH_PROTO_ECHO ? "echo" : "raw";
	if ((size_given || line_given) && c->proto != BENCH_PROTO_ECHO)
		bench_usage_error(usage, "--size and --line are for --proto echo, not %s", p);
	if (size_given && line_given)
		bench_usage_error(usage, "--size or --line, not both%s", "");
	if ((send_file || expect_bytes_given) && c->proto != BENCH_PROTO_RAW)
		bench_usage_error(usage, "--send and --expect-bytes are for --proto raw, not %s", p);
	if ((path_given || expect_given) && c->proto != BENCH_PROTO_HTTP)
		bench_usage_error(usage, "--path and --expect are for --proto http, not %s", p);
	if (c->proto == BENCH_PROTO_ECHO && !c->payload)
		bench_proto_option(c, BENCH_OPT_PROTO + 3, "64", usage);
	if (c->proto == BENCH_PROTO_RAW) {
		if (!send_file || !expect_bytes_given)
			bench_usage_error(usage, "--proto raw needs --send FILE and --expect-bytes N%s", "");
		FILE *f = fopen(send_file, "rb");
		if (!f)
			bench_usage_error(usage, "--send %s: %s", send_file, strerror(errno));
		struct stat st;
		if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 1 ||
		    st.st_size > (16 << 20)) {
			fclose(f);
			bench_usage_error(usage, "--send %s: not a regular file of 1 byte to 16 MiB", send_file);
		}
		free(c->payload);
		c->payload = malloc((size_t)st.st_size);
		if (!c->payload || fread(c->payload, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
			bench_die("--send %s: cannot read it", send_file);
		c->payload_len = (size_t)st.st_size;
		fclose(f);
	}
}

void bench_load_describe(const struct load_cfg *c, char *out, size_t cap)
{
	char what[1200];
	if (c->proto == BENCH_PROTO_HTTP) {
		char st[32];
		if (c->expect_lo == c->expect_hi)
			snprintf(st, sizeof(st), "%d", c->expect_lo);
		else
			snprintf(st, sizeof(st), "%d-%d", c->expect_lo, c->expect_hi);
		snprintf(what, sizeof(what), "http GET %s expecting %s", c->path, st);
	} else if (c->proto == BENCH_PROTO_ECHO) {
		snprintf(what, sizeof(what), "echo of %zu bytes", c->payload_len);
	} else {
		snprintf(what, sizeof(what), "raw, %zu bytes for %zu", c->payload_len, c->expect_bytes);
	}
	char loop[64];
	if (c->rate > 0)
		snprintf(loop, sizeof(loop), "open loop at %.0f/s", c->rate);
	else
		snprintf(loop, sizeof(loop), "closed loop");
	snprintf(out, cap, "%s, %s, %s", what,
		 c->keepalive ? "keep-alive" : "one exchange per connection", loop);
}

static int build_request(struct load_cfg *c)
{
	free(c->req);
	c->req = NULL;
	if (c->proto == BENCH_PROTO_HTTP) {
		size_t cap = strlen(c->path) + strlen(c->host ? c->host : "") + 128;
		c->req = malloc(cap);
		if (!c->req)
			return -ENOMEM;
		c->reqlen = (size_t)snprintf(c->req, cap, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
					     c->path ? c->path : "/", c->host ? c->host : "localhost",
					     c->keepalive ? "" : "Connection: close\r\n");
		return 0;
	}
	if (!c->payload || !c->payload_len)
		return -EINVAL;
	c->req = malloc(c->payload_len);
	if (!c->req)
		return -ENOMEM;
	memcpy(c->req, c->payload, c->payload_len);
	c->reqlen = c->payload_len;
	return 0;
}

int bench_load_run(struct load_cfg *c, struct load_result *res)
{
	memset(res, 0, sizeof(*res));
	if (c->threads > c->clients)
		c->threads = c->clients;
	int rc = build_request(c);
	if (rc < 0)
		return rc;
	signal(SIGPIPE, SIG_IGN);
	struct worker *ws = calloc((size_t)c->threads, sizeof(*ws));
	struct hist *h = calloc(1, sizeof(*h));
	if (!ws || !h) {
		free(ws);
		free(h);
		return -ENOMEM;
	}
	uint64_t t0 = now_ns();
	int started = 0;
	for (int i = 0; i < c->threads; i++) {
		ws[i].cfg = c;
		ws[i].nslots = c->clients / c->threads + (i < c->clients % c->threads);
		if (c->rate > 0) {
			ws[i].rate = c->rate / c->threads;
			/* The threads' schedules interleave: R/s overall. */
			ws[i].phase_ns = (uint64_t)(1e9 / c->rate * i);
		}
		if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0)
			break;
		started++;
	}
	for (int i = 0; i < started; i++) {
		pthread_join(ws[i].tid, NULL);
		for (unsigned b = 0; b < HBUCKETS; b++)
			h->b[b] += ws[i].hist.b[b];
		h->n += ws[i].hist.n;
		res->requests += ws[i].ok;
		for (int k = 0; k < BENCH_ERR_KINDS; k++) {
			res->err[k] += ws[i].err[k];
			res->errors += ws[i].err[k];
		}
		res->due += ws[i].due;
		res->unsent += ws[i].unsent;
		res->waited += ws[i].waited;
		res->client_late += ws[i].client_late;
	}
	res->seconds = (double)(now_ns() - t0) / 1e9;
	res->rps = (double)res->requests / res->seconds;
	res->p50_us = hpct(h, 50);
	res->p99_us = hpct(h, 99);
	res->p999_us = hpct(h, 99.9);
	res->max_us = hpct(h, 100);
	free(h);
	free(ws);
	return started == c->threads ? 0 : -EAGAIN;
}

const char *bench_load_error_name(int kind)
{
	return kind >= 0 && kind < BENCH_ERR_KINDS ? err_name[kind] : "?";
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: baton-bench load --connect ADDRESS [OPTION]...\n"
		"Load a server: C concurrent clients on T threads for S seconds, closed loop\n"
		"or at a fixed rate.  Prints exchanges/s, latency percentiles, errors by\n"
		"kind, and with --server-pid the server's CPU time per exchange; the last\n"
		"line is machine-readable:\n"
		"  RESULT requests=N seconds=S rps=R p50_us= p99_us= p999_us= errors=E\n"
		"         [due= unsent= waited= client_late=] [server_cpu_us=]\n"
		"\n"
		"  --connect ADDRESS  HOST:PORT (a name or an IPv4 address), [IPV6]:PORT,\n"
		"                     or a unix socket path (beginning with / or .)\n"
		"  --clients C        concurrent clients (connections), default 32\n"
		"  --threads T        client threads, default 1\n"
		"  --seconds S        default 5\n"
		"  --server-pid PID   add the CPU time of PID and its descendants per\n"
		"                     exchange (same host only)\n" BENCH_PROTO_HELP
		"  -h, --help         this help;  -V, --version  the version\n"
		"\n"
		"Latency: closed loop, from the start of the connect (of the request, with\n"
		"--keepalive) to the last byte; open loop (--rate), from each exchange's\n"
		"intended send time.  In open loop, 'waited' counts exchanges that started\n"
		"late because all C clients were busy (the server was behind: raise C if\n"
		"it is not), and 'client late' those that started late with a client free:\n"
		"the load generator itself could not keep up (add --threads).\n"
		"\nExit status: 0 done, 1 a run failed, 2 bad usage.\n");
}

int bench_load(int argc, char **argv)
{
	struct load_cfg c;
	bench_load_cfg_init(&c);
	const char *connect_to = NULL;
	int server_pid = 0;
	static const struct option opts[] = {
		{"connect", required_argument, NULL, 'c'},
		{"clients", required_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 't'},
		{"seconds", required_argument, NULL, 's'},
		{"server-pid", required_argument, NULL, 'P'},
		BENCH_PROTO_OPTIONS,
		{"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int o;
	optind = 0; /* glibc: start afresh */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		if (bench_proto_option(&c, o, optarg, usage))
			continue;
		switch (o) {
		case 'c': connect_to = optarg; break;
		case 'n':
			if (bench_parse_int(optarg, &c.clients) < 0 || c.clients < 1 || c.clients > 10000)
				bench_usage_error(usage, "--clients wants 1 to 10000, not '%s'", optarg);
			break;
		case 't':
			if (bench_parse_int(optarg, &c.threads) < 0 || c.threads < 1 || c.threads > 64)
				bench_usage_error(usage, "--threads wants 1 to 64, not '%s'", optarg);
			break;
		case 's':
			if (bench_parse_double(optarg, &c.seconds) < 0 || c.seconds < 0.1 || c.seconds > 3600)
				bench_usage_error(usage, "--seconds wants 0.1 to 3600, not '%s'", optarg);
			break;
		case 'P':
			if (bench_parse_int(optarg, &server_pid) < 0 || server_pid < 1)
				bench_usage_error(usage, "--server-pid wants a process id, not '%s'", optarg);
			if (bench_tree_cpu(server_pid) < 0)
				bench_usage_error(usage, "--server-pid %s: no such process on this host", optarg);
			break;
		case 'h': usage(stdout); return 0;
		case 'V': bench_version(); return 0;
		default: bench_getopt_error(usage, o, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(usage, "unexpected argument '%s'", argv[optind]);
	if (!connect_to)
		bench_usage_error(usage, "--connect ADDRESS is required%s", "");
	bench_proto_check(&c, usage);
	struct bench_addr a;
	char err[512];
	if (bench_addr_parse(connect_to, 1, &a, err, sizeof(err)) < 0)
		bench_usage_error(usage, "--connect %s", err);
	if (!bench_addr_pick(&a, &c.addr, &c.addrlen)) {
		char list[600] = "";
		for (int i = 0; i < a.n; i++) {
			char one[INET6_ADDRSTRLEN] = "";
			const struct sockaddr_storage *ss = &a.ss[i];
			if (ss->ss_family == AF_INET)
				inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, one, sizeof(one));
			else if (ss->ss_family == AF_INET6)
				inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, one, sizeof(one));
			else
				snprintf(one, sizeof(one), "a unix socket");
			size_t l = strlen(list);
			snprintf(list + l, sizeof(list) - l, "%s%s", i ? ", " : "", one);
		}
		fprintf(stderr, "baton-bench: warning: nothing accepted a connection at %s (%s); "
				"loading it anyway\n", connect_to, list);
	}
	c.host = a.host;
	char desc[1400];
	bench_load_describe(&c, desc, sizeof(desc));
	double cpu0 = server_pid ? bench_tree_cpu(server_pid) : 0;
	struct load_result r;
	if (bench_load_run(&c, &r) < 0)
		bench_die("cannot start the load: out of memory or threads");
	double cpu1 = server_pid ? bench_tree_cpu(server_pid) : 0;
	printf("%llu exchanges in %.2f s: %.0f/s, %d clients, %s\n", (unsigned long long)r.requests,
	       r.seconds, r.rps, c.clients, desc);
	printf("latency (%s to last byte): p50 %llu us, p99 %llu us, p99.9 %llu us, max bucket %llu us\n",
	       c.rate > 0 ? "intended send time" : c.keepalive ? "request" : "connect",
	       (unsigned long long)r.p50_us, (unsigned long long)r.p99_us,
	       (unsigned long long)r.p999_us, (unsigned long long)r.max_us);
	printf("errors: %llu", (unsigned long long)r.errors);
	for (int k = 0; k < BENCH_ERR_KINDS; k++)
		if (r.err[k])
			printf(", %s %llu", err_name[k], (unsigned long long)r.err[k]);
	printf("\n");
	if (c.rate > 0) {
		printf("rate: %.0f/s asked, %.0f/s achieved; %llu due, %llu not sent (due over 10 ms before the end), "
		       "%llu waited for a busy client, %llu client late\n",
		       c.rate, r.rps, (unsigned long long)r.due, (unsigned long long)r.unsent,
		       (unsigned long long)r.waited, (unsigned long long)r.client_late);
		if (r.due && (double)r.client_late > 0.01 * (double)r.due)
			printf("warning: the load generator could not keep up (%.1f%% of exchanges started "
			       "over 1 ms late with a client free): add --threads or lower --rate\n",
			       100.0 * (double)r.client_late / (double)r.due);
		if (r.due && (double)(r.unsent + r.waited) > 0.01 * (double)r.due)
			printf("note: the server was behind the schedule (%llu exchanges waited for one of "
			       "the %d clients): their latency includes the wait\n",
			       (unsigned long long)(r.unsent + r.waited), c.clients);
	}
	double cpu_us = 0;
	if (server_pid) {
		if (cpu1 < 0)
			printf("server CPU: pid %d went away during the run\n", server_pid);
		else {
			cpu_us = r.requests ? (cpu1 - cpu0) * 1e6 / (double)r.requests : 0;
			printf("server CPU (pid %d and descendants): %.1f us per exchange, %.2f cores\n",
			       server_pid, cpu_us, (cpu1 - cpu0) / r.seconds);
		}
	}
	printf("RESULT requests=%llu seconds=%.3f rps=%.0f p50_us=%llu p99_us=%llu p999_us=%llu errors=%llu",
	       (unsigned long long)r.requests, r.seconds, r.rps, (unsigned long long)r.p50_us,
	       (unsigned long long)r.p99_us, (unsigned long long)r.p999_us, (unsigned long long)r.errors);
	if (c.rate > 0)
		printf(" due=%llu unsent=%llu waited=%llu client_late=%llu", (unsigned long long)r.due,
		       (unsigned long long)r.unsent, (unsigned long long)r.waited,
		       (unsigned long long)r.client_late);
	if (server_pid && cpu1 >= 0)
		printf(" server_cpu_us=%.2f", cpu_us);
	printf("\n");
	bench_load_cfg_free(&c);
	return 0;
}
