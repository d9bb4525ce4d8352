/* SPDX-License-Identifier: MIT */
/*
 * baton-bench load: our own HTTP load generator.  Multi-threaded (one
 * epoll loop per thread), non-blocking, one new connection per request by
 * default (--keepalive: requests over kept-alive connections).
 *
 * Latency is measured from the start of connect (or of the request, with
 * --keepalive) to the last byte of the response, into a log-linear
 * histogram (16 sub-buckets per power of two: within 6.25%).  A request
 * counts as a success only if a complete "HTTP/1.x 200" response arrived
 * (the body as long as its Content-Length says); everything else is an
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
#include <unistd.h>

#define HBITS 4                    /* sub-buckets per power of two: 16 */
#define HBUCKETS (64 << HBITS)

static const char *const err_name[BENCH_ERR_KINDS] = {"refused", "reset", "timeout", "short", "status", "other"};

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


struct slot {
	int fd;
	int state; /* 0 idle, 1 connecting, 2 sending, 3 reading */
	uint64_t t0;
	size_t sent;
	char buf[8192];
	size_t got;
	uint64_t t_done; /* when the response was complete (0: not yet) */
};

struct worker {
	pthread_t tid;
	const struct load_cfg *cfg;
	int nslots;
	struct hist hist;
	uint64_t ok;
	uint64_t err[BENCH_ERR_KINDS];
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Is buf[0..len) one complete response?  1 yes (status 200 in *st),
 * 0 not yet, -1 malformed. */
static int complete_response(const char *buf, size_t len, int eof, int *status)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	if (!end)
		return eof ? -1 : 0;
	if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
		return -1;
	*status = atoi(buf + 9);
	size_t head = (size_t)(end - buf) + 4;
	const char *cl = memmem(buf, head, "Content-Length:", 15);
	if (!cl)
		return eof ? 1 : 0; /* body until EOF */
	long long n = atoll(cl + 15);
	if (n < 0)
		return -1;
	if (len - head >= (size_t)n)
		return 1;
	return eof ? -1 : 0;
}

static void slot_close(struct slot *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->state = 0;
}

static int slot_start(struct worker *w, int ep, struct slot *s, uint64_t now)
{
	const struct load_cfg *c = w->cfg;
	s->got = 0;
	s->sent = 0;
	s->t_done = 0;
	s->t0 = now;
	if (s->fd >= 0 && c->keepalive) {
		s->state = 2;
		struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
		epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
		return 0;
	}
	slot_close(s);
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return -errno;
	int one = 1;
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int rc = connect(s->fd, (const struct sockaddr *)&c->addr, sizeof(c->addr));
	if (rc < 0 && errno != EINPROGRESS) {
		int err = errno;
		slot_close(s);
		return -err;
	}
	s->state = rc == 0 ? 2 : 1;
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = s};
	epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
	return 0;
}

static void fail(struct worker *w, struct slot *s, int kind)
{
	w->err[kind]++;
	slot_close(s);
}

static int errno_kind(int e)
{
	if (e == ECONNREFUSED)
		return BENCH_ERR_REFUSED;
	if (e == ECONNRESET || e == EPIPE)
		return BENCH_ERR_RESET;
	if (e == ETIMEDOUT)
		return BENCH_ERR_TIMEOUT;
	return BENCH_ERR_OTHER;
}

static void on_event(struct worker *w, int ep, struct slot *s, uint32_t events, uint64_t now)
{
	const struct load_cfg *c = w->cfg;
	if (s->state == 1) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err) {
			fail(w, s, errno_kind(err));
			return;
		}
		s->state = 2;
	}
	if (s->state == 2 && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
		ssize_t n = send(s->fd, c->req + s->sent, c->reqlen - s->sent, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno != EAGAIN)
				fail(w, s, errno_kind(errno));
			return;
		}
		s->sent += (size_t)n;
		if (s->sent < c->reqlen)
			return;
		s->state = 3;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
		epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
		return;
	}
	if (s->state == 3) {
		for (;;) {
			if (s->got == sizeof(s->buf)) {
				fail(w, s, BENCH_ERR_OTHER); /* response larger than we expect */
				return;
			}
			ssize_t n = recv(s->fd, s->buf + s->got, sizeof(s->buf) - s->got, 0);
			int eof = n == 0;
			if (n < 0) {
				if (errno == EAGAIN)
					return;
				fail(w, s, errno_kind(errno));
				return;
			}
			s->got += (size_t)n;
			int status = 0;
			int done = complete_response(s->buf, s->got, eof, &status);
			if (done < 0) {
				fail(w, s, BENCH_ERR_SHORT);
				return;
			}
			if (done == 0) {
				if (eof) {
					fail(w, s, BENCH_ERR_SHORT);
					return;
				}
				continue;
			}
			if (status != 200) {
				fail(w, s, BENCH_ERR_STATUS);
				return;
			}
			if (!s->t_done)
				s->t_done = now_ns();
			/* Connect-per-request: a success once the server's FIN came
			 * too (a reset after the reply is still an error). */
			if (!c->keepalive && !eof)
				continue;
			hadd(&w->hist, (s->t_done - s->t0) / 1000);
			w->ok++;
			if (!c->keepalive)
				slot_close(s);
			if (slot_start(w, ep, s, now) < 0)
				fail(w, s, BENCH_ERR_OTHER);
			return;
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct load_cfg *c = w->cfg;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct slot *slots = calloc((size_t)w->nslots, sizeof(*slots));
	uint64_t start = now_ns(), end = start + (uint64_t)(c->seconds * 1e9);
	uint64_t tmo = (uint64_t)(c->timeout * 1e9);
	for (int i = 0; i < w->nslots; i++) {
		slots[i].fd = -1;
		if (slot_start(w, ep, &slots[i], start) < 0)
			w->err[BENCH_ERR_OTHER]++;
	}
	struct epoll_event evs[256];
	uint64_t last_sweep = start;
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end)
			break;
		int n = epoll_wait(ep, evs, 256, 10);
		now = now_ns();
		for (int i = 0; i < n; i++)
			on_event(w, ep, evs[i].data.ptr, evs[i].events, now);
		if (now - last_sweep > 10000000ull) {
			last_sweep = now;
			for (int i = 0; i < w->nslots; i++) {
				struct slot *s = &slots[i];
				if (s->state && now - s->t0 > tmo) {
					fail(w, s, BENCH_ERR_TIMEOUT);
				}
				if (s->state == 0 && now < end && slot_start(w, ep, s, now) < 0)
					w->err[BENCH_ERR_OTHER]++;
			}
		}
	}
	for (int i = 0; i < w->nslots; i++)
		slot_close(&slots[i]);
	free(slots);
	close(ep);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: baton-bench load --connect HOST:PORT [--clients C] [--threads T]\n"
		"                        [--seconds S] [--keepalive] [--path PATH] [--timeout S]\n"
		"\n"
		"HTTP load on 127.0.0.1: C concurrent clients (default 32) on T threads\n"
		"(default 1), one new connection per request unless --keepalive, for S\n"
		"seconds (default 5).  Prints requests/s, latency percentiles (connect to\n"
		"the response's last byte), and errors by kind; the last line is\n"
		"machine-readable:\n"
		"  RESULT requests=N seconds=S rps=R p50_us= p99_us= p999_us= errors=E\n");
}

int bench_load_run(struct load_cfg *c, struct load_result *res)
{
	if (c->threads > c->clients)
		c->threads = c->clients;
	char host[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &c->addr.sin_addr, host, sizeof(host));
	c->reqlen = (size_t)snprintf(c->req, sizeof(c->req), "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n",
				     c->path ? c->path : "/", host,
				     c->keepalive ? "" : "Connection: close\r\n");
	signal(SIGPIPE, SIG_IGN);
	struct worker *ws = calloc((size_t)c->threads, sizeof(*ws));
	struct hist *h = calloc(1, sizeof(*h));
	if (!ws || !h) {
		free(ws);
		free(h);
		return -ENOMEM;
	}
	uint64_t t0 = now_ns();
	for (int i = 0; i < c->threads; i++) {
		ws[i].cfg = c;
		ws[i].nslots = c->clients / c->threads + (i < c->clients % c->threads);
		pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]);
	}
	memset(res, 0, sizeof(*res));
	for (int i = 0; i < c->threads; i++) {
		pthread_join(ws[i].tid, NULL);
		for (unsigned b = 0; b < HBUCKETS; b++)
			h->b[b] += ws[i].hist.b[b];
		h->n += ws[i].hist.n;
		res->requests += ws[i].ok;
		for (int k = 0; k < BENCH_ERR_KINDS; k++) {
			res->err[k] += ws[i].err[k];
			res->errors += ws[i].err[k];
		}
	}
	res->seconds = (double)(now_ns() - t0) / 1e9;
	res->rps = (double)res->requests / res->seconds;
	res->p50_us = hpct(h, 50);
	res->p99_us = hpct(h, 99);
	res->p999_us = hpct(h, 99.9);
	res->max_us = hpct(h, 100);
	free(h);
	free(ws);
	return 0;
}

const char *bench_load_error_name(int kind)
{
	return kind >= 0 && kind < BENCH_ERR_KINDS ? err_name[kind] : "?";
}

int bench_load(int argc, char **argv)
{
	struct load_cfg c;
	memset(&c, 0, sizeof(c));
	c.clients = 32;
	c.threads = 1;
	c.seconds = 5;
	c.timeout = 5;
	const char *connect_to = NULL, *path = "/";
	static const struct option opts[] = {
		{"connect", required_argument, NULL, 'c'},
		{"clients", required_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 't'},
		{"seconds", required_argument, NULL, 's'},
		{"keepalive", no_argument, NULL, 'k'},
		{"path", required_argument, NULL, 'p'},
		{"timeout", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int o;
	optind = 0; /* glibc: start afresh */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
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
		case 'o':
			if (bench_parse_double(optarg, &c.timeout) < 0 || c.timeout < 0.01 || c.timeout > 600)
				bench_usage_error(usage, "--timeout wants 0.01 to 600 seconds, not '%s'", optarg);
			break;
		case 'k': c.keepalive = 1; break;
		case 'p': path = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': bench_version(); return 0;
		default: bench_getopt_error(usage, o, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(usage, "unexpected argument '%s'", argv[optind]);
	if (!connect_to)
		bench_usage_error(usage, "--connect HOST:PORT is required");
	char host[64];
	const char *colon = strrchr(connect_to, ':');
	int port = 0;
	if (!colon || (size_t)(colon - connect_to) >= sizeof(host) || bench_parse_int(colon + 1, &port) < 0 ||
	    port < 1 || port > 65535)
		bench_usage_error(usage, "--connect wants HOST:PORT (an IPv4 address), not '%s'", connect_to);
	memcpy(host, connect_to, (size_t)(colon - connect_to));
	host[colon - connect_to] = 0;
	c.addr.sin_family = AF_INET;
	c.addr.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &c.addr.sin_addr) != 1)
		bench_usage_error(usage, "--connect: '%s' is not an IPv4 address", host);
	c.path = path;
	struct load_result r;
	if (bench_load_run(&c, &r) < 0)
		bench_die("out of memory");
	printf("%llu requests in %.2f s: %.0f/s, %d clients, %s\n", (unsigned long long)r.requests,
	       r.seconds, r.rps, c.clients, c.keepalive ? "keep-alive" : "one connection per request");
	printf("latency (connect to last byte): p50 %llu us, p99 %llu us, p99.9 %llu us, max bucket %llu us\n",
	       (unsigned long long)r.p50_us, (unsigned long long)r.p99_us,
	       (unsigned long long)r.p999_us, (unsigned long long)r.max_us);
	printf("errors: %llu", (unsigned long long)r.errors);
	for (int k = 0; k < BENCH_ERR_KINDS; k++)
		if (r.err[k])
			printf(", %s %llu", err_name[k], (unsigned long long)r.err[k]);
	printf("\nRESULT requests=%llu seconds=%.3f rps=%.0f p50_us=%llu p99_us=%llu p999_us=%llu errors=%llu\n",
	       (unsigned long long)r.requests, r.seconds, r.rps, (unsigned long long)r.p50_us,
	       (unsigned long long)r.p99_us, (unsigned long long)r.p999_us, (unsigned long long)r.errors);
	return 0;
}
