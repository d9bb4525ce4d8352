/* SPDX-License-Identifier: MIT */
/*
 * bench-inplace: the ceiling design for the benchmark.  One process, one
 * io_uring, no hand-off: multishot accept, multishot receive into provided
 * buffers, a fixed HTTP response, close.  What a connection costs when
 * nothing crosses a process boundary.  Not built on baton (it is what
 * baton is measured against); same HTTP subset as baton-httpd's fixed
 * response: GET/HEAD, keep-alive unless "Connection: close" or HTTP/1.0.
 *
 *   bench-inplace --listen 127.0.0.1:PORT [--body-size N] [--no-fin-merge] [--paced US]
 *                 [--direct]
 *
 * --direct serves through direct descriptors (a registered file table: no
 * entry in the process's descriptor table, no reference per operation), as
 * baton's thread mode does: accept into the table, receive and send on
 * fixed files, and close by cancelling the receive and closing the slot
 * (there is no shutdown(2) without a descriptor; the FIN goes with the
 * last reference, after the last data sent with MSG_MORE).  So the ceiling
 * is not flattered when baton uses them.
 *
 * --paced US applies baton's paced accept to the ceiling too: under load
 * (accepts closer than US/4) stop waiting on the listener and sweep it
 * every US microseconds, back to waiting when sweeps bring fewer than two
 * connections each.  The same rule as runtime/acceptor.c, so the ceiling
 * can be measured with the trick baton uses.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_ACCEPT_DONTWAIT
#define IORING_ACCEPT_DONTWAIT (1U << 1)
#endif

#define NBUF 1024
#define BUFSZ 4096
#define BGID 0

enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3, OP_CLOSE = 4, OP_SWEEP = 5, OP_IGNORE = 6 };

struct conn {
	int fd;
	int ops;
	int closing;
	int close_after;
	char *out;
	size_t olen, ocap, off;
	int sending;
	char head[8192];
	size_t hlen;
};

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static char resp_keep[512], resp_close[512];
static size_t resp_keep_len, resp_close_len;
static char *body;
static size_t body_len;
static int lfd;
static int direct;        /* --direct: a registered file table */
static int fin_merge = 1; /* --no-fin-merge: data, then FIN, as most servers do */
static uint64_t paced_ns;  /* --paced US: sweep interval; 0: always wait on the listener */
static int sweeping, sweep_inflight;
static uint64_t next_sweep_ns, last_accept_ns, gap_ewma_ns = 1000000000ull, accepted;
static unsigned sweep_got, yield_x8;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct io_uring_sqe *sqe_get(void)
{
	struct io_uring_sqe *s = io_uring_get_sqe(&ring);
	if (!s) {
		io_uring_submit(&ring);
		s = io_uring_get_sqe(&ring);
	}
	return s;
}

static void arm_accept(void)
{
	struct io_uring_sqe *s = sqe_get();
	if (direct)
		io_uring_prep_multishot_accept_direct(s, lfd, NULL, NULL, 0);
	else
		io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(s, OP_ACCEPT);
}

static void sweep(void)
{
	struct io_uring_sqe *s = sqe_get();
	if (direct)
		io_uring_prep_multishot_accept_direct(s, lfd, NULL, NULL, 0);
	else
		io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
	s->ioprio |= IORING_ACCEPT_DONTWAIT;
	io_uring_sqe_set_data64(s, OP_SWEEP);
	sweep_inflight = 1;
}

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *s = sqe_get();
	io_uring_prep_recv_multishot(s, c->fd, NULL, 0, 0);
	s->flags |= IOSQE_BUFFER_SELECT | (direct ? IOSQE_FIXED_FILE : 0);
	s->buf_group = BGID;
	io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | OP_RECV);
	c->ops++;
}

static void do_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (direct) {
		struct io_uring_sqe *s = sqe_get();
		io_uring_prep_cancel64(s, (uint64_t)(uintptr_t)c | OP_RECV, 0);
		io_uring_sqe_set_data64(s, OP_IGNORE);
		s = sqe_get();
		io_uring_prep_close_direct(s, (unsigned)c->fd);
		io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | OP_CLOSE);
		c->ops++;
		return;
	}
	/* The multishot receive holds the socket: shut it down (a plain
	 * syscall; IORING_OP_SHUTDOWN goes through an io-wq thread) so the
	 * receive ends and FIN goes out, then close through the ring. */
	shutdown(c->fd, SHUT_RDWR);
	struct io_uring_sqe *s = sqe_get();
	io_uring_prep_close(s, c->fd);
	io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | OP_CLOSE);
	c->ops++;
}

static void flush(struct conn *c)
{
	if (c->sending || c->off >= c->olen)
		return;
	struct io_uring_sqe *s = sqe_get();
	/* The last reply before a close: MSG_MORE keeps it for the FIN that
	 * shutdown sends next, one segment for both (as baton does). */
	io_uring_prep_send(s, c->fd, c->out + c->off, c->olen - c->off,
			   MSG_NOSIGNAL | (c->close_after && fin_merge ? MSG_MORE : 0));
	if (direct)
		s->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)c | OP_SEND);
	c->sending = 1;
	c->ops++;
}

/* Only while no send is in flight: the kernel reads c->out then. */
static void out_add(struct conn *c, const char *p, size_t n)
{
	if (c->olen + n > c->ocap) {
		size_t cap = c->ocap ? c->ocap * 2 : 1024;
		while (cap < c->olen + n)
			cap *= 2;
		c->out = realloc(c->out, cap);
		c->ocap = cap;
	}
	memcpy(c->out + c->olen, p, n);
	c->olen += n;
}

static void maybe_free(struct conn *c)
{
	if (c->ops == 0 && c->closing) {
		free(c->out);
		free(c);
	}
}

/* Requests in c->head; answer complete ones. */
static void serve(struct conn *c)
{
	for (;;) {
		char *end = memmem(c->head, c->hlen, "\r\n\r\n", 4);
		if (!end)
			return;
		size_t n = (size_t)(end - c->head) + 4;
		int close_it = memmem(c->head, n, "HTTP/1.0", 8) != NULL;
		char *h = c->head;
		for (size_t i = 0; i + 17 <= n; i++)
			if ((h[i] == 'C' || h[i] == 'c') && !strncasecmp(h + i, "connection: close", 17))
				close_it = 1;
		int head_only = n > 4 && !memcmp(c->head, "HEAD", 4);
		if (close_it)
			out_add(c, resp_close, resp_close_len);
		else
			out_add(c, resp_keep, resp_keep_len);
		if (!head_only)
			out_add(c, body, body_len);
		memmove(c->head, c->head + n, c->hlen - n);
		c->hlen -= n;
		if (close_it) {
			c->close_after = 1;
			return;
		}
	}
}

int main(int argc, char **argv)
{
	const char *listen_at = "127.0.0.1:8081";
	body = "hello\n";
	body_len = 6;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			listen_at = argv[++i];
		else if (!strcmp(argv[i], "--body-size") && i + 1 < argc) {
			body_len = strtoul(argv[++i], NULL, 10);
			body = malloc(body_len + 1);
			memset(body, 'x', body_len);
		} else if (!strcmp(argv[i], "--no-fin-merge")) {
			fin_merge = 0;
		} else if (!strcmp(argv[i], "--direct")) {
			direct = 1;
		} else if (!strcmp(argv[i], "--paced") && i + 1 < argc) {
			char *end;
			unsigned long us = strtoul(argv[++i], &end, 10);
			if (*end || us == 0 || us > 1000000) {
				fprintf(stderr, "bench-inplace: --paced wants 1..1000000 microseconds\n");
				return 2;
			}
			paced_ns = us * 1000ull;
		} else if (!strcmp(argv[i], "--help")) {
			printf("usage: bench-inplace [--listen HOST:PORT] [--body-size N] [--no-fin-merge] [--paced US] [--direct]\n");
			return 0;
		} else {
			fprintf(stderr, "bench-inplace: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	char host[64];
	const char *colon = strrchr(listen_at, ':');
	if (!colon || (size_t)(colon - listen_at) >= sizeof(host)) {
		fprintf(stderr, "bench-inplace: --listen HOST:PORT\n");
		return 2;
	}
	memcpy(host, listen_at, (size_t)(colon - listen_at));
	host[colon - listen_at] = 0;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
	inet_pton(AF_INET, host, &sin.sin_addr);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 4096) < 0) {
		perror("bench-inplace: bind/listen");
		return 1;
	}
	socklen_t sl = sizeof(sin);
	getsockname(lfd, (struct sockaddr *)&sin, &sl);
	fprintf(stderr, "bench-inplace: listening on %s:%d\n", host, ntohs(sin.sin_port));

	resp_keep_len = (size_t)snprintf(resp_keep, sizeof(resp_keep),
					 "HTTP/1.1 200 OK\r\nServer: inplace\r\nContent-Type: text/plain\r\n"
					 "Content-Length: %zu\r\n\r\n", body_len);
	resp_close_len = (size_t)snprintf(resp_close, sizeof(resp_close),
					  "HTTP/1.1 200 OK\r\nServer: inplace\r\nContent-Type: text/plain\r\n"
					  "Content-Length: %zu\r\nConnection: close\r\n\r\n", body_len);

	struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
					     IORING_SETUP_CQSIZE,
				    .cq_entries = 16384};
	int rc = io_uring_queue_init_params(1024, &ring, &p);
	if (rc < 0) {
		memset(&p, 0, sizeof(p));
		rc = io_uring_queue_init_params(1024, &ring, &p);
	}
	if (rc < 0) {
		fprintf(stderr, "bench-inplace: io_uring_queue_init: %s\n", strerror(-rc));
		return 1;
	}
	br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
		  MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	bufs = malloc((size_t)NBUF * BUFSZ);
	struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID};
	if (io_uring_register_buf_ring(&ring, &reg, 0) < 0) {
		fprintf(stderr, "bench-inplace: io_uring_register_buf_ring failed\n");
		return 1;
	}
	io_uring_buf_ring_init(br);
	for (int i = 0; i < NBUF; i++)
		io_uring_buf_ring_add(br, bufs + (size_t)i * BUFSZ, BUFSZ, (unsigned short)i,
				      io_uring_buf_ring_mask(NBUF), i);
	io_uring_buf_ring_advance(br, NBUF);
	if (direct) {
		struct rlimit rl;
		unsigned nfiles = 65536;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < nfiles)
			nfiles = (unsigned)rl.rlim_cur;
		rc = io_uring_register_files_sparse(&ring, nfiles);
		if (rc < 0) {
			fprintf(stderr, "bench-inplace: io_uring_register_files_sparse(%u): %s\n", nfiles,
				strerror(-rc));
			return 1;
		}
	}
	arm_accept();

	for (;;) {
		uint64_t now = 0;
		if (sweeping) {
			now = now_ns();
			if (now >= next_sweep_ns && !sweep_inflight) {
				sweep();
				next_sweep_ns = now + paced_ns;
			}
		}
		if (sweeping && !sweep_inflight) {
			uint64_t d = next_sweep_ns - now;
			struct __kernel_timespec ts = {.tv_sec = (long long)(d / 1000000000ull),
						       .tv_nsec = (long long)(d % 1000000000ull)};
			struct io_uring_cqe *first;
			io_uring_submit_and_wait_timeout(&ring, &first, 1, &ts, NULL);
		} else {
			io_uring_submit_and_wait(&ring, 1);
		}
		if (paced_ns)
			now = now_ns();
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&ring, head, cqe) {
			n++;
			uint64_t d = cqe->user_data;
			unsigned op = d & 7;
			struct conn *c = (struct conn *)(uintptr_t)(d & ~7ull);
			int more = cqe->flags & IORING_CQE_F_MORE;
			if (op == OP_IGNORE)
				continue;
			if (op == OP_ACCEPT || op == OP_SWEEP) {
				if (op == OP_SWEEP && !more) {
					sweep_inflight = 0;
					if (cqe->res == -EINVAL) { /* before 6.10 */
						paced_ns = 0;
						sweeping = 0;
						arm_accept();
					} else {
						yield_x8 = yield_x8 - (yield_x8 >> 3) + sweep_got;
						sweep_got = 0;
						if (yield_x8 < 16) {
							sweeping = 0;
							gap_ewma_ns = paced_ns;
							arm_accept();
						}
					}
				}
				if (op == OP_ACCEPT && !more && !sweeping)
					arm_accept();
				if (cqe->res < 0)
					continue;
				accepted++;
				sweep_got++;
				if (paced_ns) {
					uint64_t gap = now - last_accept_ns;
					if (gap > 1000000000ull)
						gap = 1000000000ull;
					gap_ewma_ns = gap_ewma_ns - (gap_ewma_ns >> 3) + (gap >> 3);
					last_accept_ns = now;
				}
				c = calloc(1, sizeof(*c));
				c->fd = cqe->res;
				arm_recv(c);
			} else if (op == OP_RECV) {
				if (!more)
					c->ops--;
				if (cqe->res > 0) {
					unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
					size_t len = (size_t)cqe->res;
					if (!c->closing && c->hlen + len <= sizeof(c->head)) {
						memcpy(c->head + c->hlen, bufs + (size_t)bid * BUFSZ, len);
						c->hlen += len;
						if (!c->sending) {
							serve(c);
							flush(c);
						}
					} else if (!c->closing) {
						do_close(c);
					}
					io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ,
							      (unsigned short)bid, io_uring_buf_ring_mask(NBUF), 0);
					io_uring_buf_ring_advance(br, 1);
					if (!more && !c->closing)
						arm_recv(c);
				} else {
					if (cqe->flags & IORING_CQE_F_BUFFER) {
						unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
						io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ,
								      (unsigned short)bid,
								      io_uring_buf_ring_mask(NBUF), 0);
						io_uring_buf_ring_advance(br, 1);
					}
					if (cqe->res == -ENOBUFS && !c->closing && !more)
						arm_recv(c);
					else if (!c->closing && !c->sending)
						do_close(c);
					else if (!c->closing)
						c->close_after = 1;
				}
				maybe_free(c);
			} else if (op == OP_SEND) {
				c->ops--;
				c->sending = 0;
				if (cqe->res < 0) {
					do_close(c);
				} else {
					c->off += (size_t)cqe->res;
					if (c->off >= c->olen) {
						c->off = c->olen = 0;
						if (c->close_after) {
							do_close(c);
						} else {
							serve(c); /* what arrived meanwhile */
							flush(c);
						}
					} else {
						flush(c);
					}
				}
				maybe_free(c);
			} else if (op == OP_CLOSE) {
				c->ops--;
				maybe_free(c);
			}
		}
		io_uring_cq_advance(&ring, n);
		if (paced_ns && !sweeping && accepted > 16 && gap_ewma_ns < paced_ns / 4) {
			sweeping = 1;
			yield_x8 = 32;
			sweep_got = 0;
			next_sweep_ns = now + paced_ns;
			struct io_uring_sqe *s = sqe_get();
			io_uring_prep_cancel64(s, OP_ACCEPT, 0);
			io_uring_sqe_set_data64(s, OP_IGNORE);
		}
	}
}
