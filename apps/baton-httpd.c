/* SPDX-License-Identifier: MIT */
/*
 * baton-httpd: a small HTTP/1.1 server on baton, for benchmarks and demos.
 *
 *   baton-httpd --listen 127.0.0.1:8080                 fixed response "hello\n"
 *   baton-httpd --listen 127.0.0.1:8080 --body-size 4096
 *   baton-httpd --listen 127.0.0.1:8080 --root ./www    files, never above ./www
 *
 * Keep-alive (HTTP/1.1 default, HTTP/1.0 with "Connection: keep-alive"),
 * "Connection: close", pipelined requests (answered in order), GET and
 * HEAD (other methods: 405; request bodies with Content-Length are read
 * and discarded; chunked bodies: 501).  Malformed requests get 400 and
 * oversized heads 431, then the connection closes; the server keeps
 * serving everyone else.  A client that sends nothing for --idle-timeout,
 * or takes longer than --header-timeout to send a request head, is closed
 * (408 in the second case).  --health PATH answers 200 "ok" while serving
 * and 503 from SIGTERM on (through --grace, the drain), for a balancer.
 *
 * Memory per connection is bounded: files are streamed by the loop
 * (bt_conn_sendfile: 128 KiB chunks, a read that would wait for the disk
 * goes to the thread pool), and once a connection's output is above the
 * loop's high-water mark no further pipelined request is handled until
 * on_writable (the loop stops reading it meanwhile).  Only regular files
 * are served: a FIFO, device or socket under --root is refused (403)
 * without being opened for reading, and so is a symlink as the last
 * component of the path.  The request parser is http_parse.c.
 */
#define _GNU_SOURCE
#include <baton/loop.h>
#include <baton/metrics.h>
#include <baton/runtime.h>

#include "http_parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>


static struct {
	const char *body;
	size_t body_len;
	const char *root;
	int rootfd;
	unsigned idle_ms;
	unsigned header_ms;
	const char *health; /* --health PATH, or NULL */
	size_t health_len;
	const char *peer_header; /* --peer-header NAME, or NULL */
	char *fixed_head;     /* prebuilt headers of the fixed response, keep-alive */
	size_t fixed_head_len;
	char *fixed_head_close;
	size_t fixed_head_close_len;
} opt = {.body = "hello\n", .body_len = 6, .rootfd = -1, .idle_ms = 60000, .header_ms = 10000};

/*
 * Per connection, allocated only while it is needed: a request head is
 * incomplete, a request body is being skipped, or input waits because the
 * output is above the high-water mark (bt_conn_write returned 1; reading is
 * paused by the loop, so at most a receive buffer or two waits here).
 */
#define MAX_STASH (1u << 20)
struct req_state {
	char *buf;         /* input not yet handled: buf[0..len) */
	size_t len, cap;
	uint64_t skip;     /* request body bytes still to discard */
	int blocked;       /* waiting for on_writable */
	int body_left;     /* the fixed body is still going out, from body_off */
	int close_after_body;
	size_t body_off;
};

static struct req_state *state(bt_conn_t *c, int create)
{
	struct req_state *st = bt_conn_data(c);
	if (!st && create) {
		st = calloc(1, sizeof(*st));
		if (st)
			bt_conn_set_data(c, st);
	}
	return st;
}

static void release(bt_conn_t *c)
{
	struct req_state *st = state(c, 0);
	if (st) {
		free(st->buf);
		free(st);
		bt_conn_set_data(c, NULL);
	}
}

static const char *reason(int code)
{
	switch (code) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

/* Responses by status class, exported on --metrics (baton/metrics.h):
 * httpd_responses_total{class="2xx"} and its siblings. */
static int responses[6] = {-1, -1, -1, -1, -1, -1};

static void count(bt_conn_t *c, int code)
{
	if (code >= 100 && code < 600)
		bt_loop_metric_add(bt_conn_loop(c), responses[code / 100], 1);
}

/* An error response; the connection closes after it. */
static void error_reply(bt_conn_t *c, int code)
{
	char buf[256];
	char body[64];
	int blen = snprintf(body, sizeof(body), "%d %s\n", code, reason(code));
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %d %s\r\nServer: baton\r\nContent-Type: text/plain\r\n"
			 "Content-Length: %d\r\nConnection: close\r\n%s\r\n%s",
			 code, reason(code), blen, code == 405 ? "Allow: GET, HEAD\r\n" : "", body);
	count(c, code);
	bt_conn_write(c, buf, (size_t)n);
	bt_conn_close(c);
}

/*
 * Open rel beneath the root without ever blocking on a special file: look
 * first (O_PATH opens nothing: a FIFO, a device or a socket is never
 * opened for reading), refuse all but regular files and directories, then
 * open for reading with O_NONBLOCK (should the name be swapped for a FIFO
 * in between, the open cannot hang) and check it is still the same regular
 * file.  O_NOFOLLOW: a symlink as the last component is refused;
 * RESOLVE_BENEATH keeps every lookup inside the root.  Returns the fd with
 * *st filled, -2 for a directory (st filled), or -1 with errno (EACCES for a
 * refused type).
 */
static int open_beneath(const char *rel, struct stat *st)
{
	struct open_how how = {.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
	const char *name = rel[0] ? rel : ".";
	int pfd = (int)syscall(SYS_openat2, opt.rootfd, name, &how, sizeof(how));
	if (pfd < 0)
		return -1;
	int rc = fstat(pfd, st);
	close(pfd);
	if (rc < 0)
		return -1;
	if (S_ISDIR(st->st_mode))
		return -2;
	if (!S_ISREG(st->st_mode)) {
		errno = EACCES;
		return -1;
	}
	struct stat st2;
	how.flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;
	int fd = (int)syscall(SYS_openat2, opt.rootfd, name, &how, sizeof(how));
	if (fd < 0)
		return -1;
	if (fstat(fd, &st2) < 0 || !S_ISREG(st2.st_mode) || st2.st_ino != st->st_ino ||
	    st2.st_dev != st->st_dev) {
		close(fd);
		errno = EACCES;
		return -1;
	}
	*st = st2;
	return fd;
}

/* A response was queued (rc from bt_conn_write or bt_conn_sendfile): the
 * handler's return value (see handle_request) after ending the connection
 * if the write failed or it does not stay open. */
static int reply_sent(bt_conn_t *c, int rc, int keep)
{
	if (rc < 0) {
		bt_conn_abort(c);
		return -1;
	}
	if (!keep) {
		bt_conn_close(c);
		return -1;
	}
	return rc;
}

/* Serve a file from --root: 200, 400, 403, 404.  The body is streamed by
 * the loop (bt_conn_sendfile): memory stays bounded whatever its size.
 * Returns what bt_conn_write returned (0, or 1: above the mark), or -1 if
 * the connection closes. */
static int serve_file(bt_conn_t *c, const struct http_req *r, int keep)
{
	char rel[4096];
	if (http_clean_path(r->target, r->target_len, rel, sizeof(rel) - 16) < 0) {
		error_reply(c, 400);
		return -1;
	}
	struct stat st;
	int fd = open_beneath(rel, &st);
	if (fd == -2) {
		size_t rl = strlen(rel);
		if (rl && rel[rl - 1] != '/')
			strcat(rel, "/");
		strcat(rel, "index.html");
		fd = open_beneath(rel, &st);
		if (fd == -2) {
			fd = -1;
			errno = EACCES;
		}
	}
	if (fd < 0) {
		error_reply(c, errno == ENOENT || errno == ENOTDIR ? 404 : 403);
		return -1;
	}
	char head[256];
	int hn = snprintf(head, sizeof(head),
			  "HTTP/1.1 200 OK\r\nServer: baton\r\nContent-Length: %lld\r\n%s\r\n",
			  (long long)st.st_size, keep ? "" : "Connection: close\r\n");
	int rc = bt_conn_write(c, head, (size_t)hn);
	count(c, 200);
	if (rc >= 0 && r->method != HTTP_HEAD && st.st_size > 0) {
		/* The length promised is st_size: a file that shrinks meanwhile
		 * ends the connection after its last byte (the loop aborts it). */
		rc = bt_conn_sendfile(c, fd, 0, (uint64_t)st.st_size);
		if (rc >= 0)
			fd = -1; /* the loop's now */
	}
	if (fd >= 0)
		close(fd);
	return reply_sent(c, rc, keep);
}

/*
 * The fixed body from offset off, in pieces of BODY_PIECE while the output
 * stays under the high-water mark: a large --body-size costs each slow
 * reader the mark, not a copy of the body.  Returns 0 (all of it queued),
 * 1 (blocked: on_writable goes on from st->body_off), -1 (closing).
 */
#define BODY_PIECE ((size_t)64 * 1024)
static int fixed_body(bt_conn_t *c, size_t off, int close_after)
{
	int rc = 0;
	while (off < opt.body_len && rc == 0) {
		size_t n = opt.body_len - off < BODY_PIECE ? opt.body_len - off : BODY_PIECE;
		rc = bt_conn_write(c, opt.body + off, n);
		if (rc < 0) {
			bt_conn_abort(c);
			return -1;
		}
		off += n;
	}
	if (off < opt.body_len) {
		struct req_state *st = state(c, 1);
		if (!st) {
			bt_conn_abort(c);
			return -1;
		}
		st->body_off = off;
		st->body_left = 1;
		st->close_after_body = close_after;
		return 1;
	}
	if (close_after) {
		bt_conn_close(c);
		return -1;
	}
	return rc;
}

/* --peer-header: "NAME: ADDR\r\n\r\n" into buf (its length): the client's
 * address as bt_conn_peer gives it (from the PROXY header behind a
 * balancer), "1.2.3.4:5678", "[::1]:5678" or "unix". */
static size_t peer_line(bt_conn_t *c, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char addr[INET6_ADDRSTRLEN + 16] = "unknown";
	if (bt_conn_peer(c, &ss, &len) == 0) {
		char ip[INET6_ADDRSTRLEN];
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
			snprintf(addr, sizeof(addr), "%s:%u", ip, ntohs(a->sin_port));
		} else if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const void *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			snprintf(addr, sizeof(addr), "[%s]:%u", ip, ntohs(a->sin6_port));
		} else if (ss.ss_family == AF_UNIX) {
			snprintf(addr, sizeof(addr), "unix");
		}
	}
	int n = snprintf(buf, cap, "%s: %s\r\n\r\n", opt.peer_header, addr);
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Is the request's target the --health path (its query, if any, aside)? */
static int is_health(const struct http_req *r)
{
	if (!opt.health || r->target_len < opt.health_len ||
	    memcmp(r->target, opt.health, opt.health_len) != 0)
		return 0;
	return r->target_len == opt.health_len || r->target[opt.health_len] == '?';
}

/* The health path: 200 "ok" while serving; 503 "going away" from SIGTERM
 * on (--grace, the drain) and in a reload's old generation, with
 * Connection: close, so that a balancer's check takes the host out before
 * any connection is refused.  Never cached. */
static int health_reply(bt_conn_t *c, const struct http_req *r, int keep)
{
	int up = bt_loop_state(bt_conn_loop(c)) == BT_LOOP_SERVING;
	const char *body = up ? "ok\n" : "going away\n";
	keep = keep && up;
	char buf[256];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %s\r\nServer: baton\r\nContent-Type: text/plain\r\n"
			 "Cache-Control: no-store\r\nContent-Length: %zu\r\n%s\r\n%s",
			 up ? "200 OK" : "503 Service Unavailable", strlen(body),
			 keep ? "" : "Connection: close\r\n", r->method == HTTP_HEAD ? "" : body);
	count(c, up ? 200 : 503);
	int rc = bt_conn_write(c, buf, (size_t)n);
	return reply_sent(c, rc, keep);
}

/*
 * Answer one complete request head buf[0..len).  Returns 0 to go on with
 * the next request, 1 to wait for on_writable first (the output is above
 * the high-water mark), -1 if the connection closes.  *body_len: request
 * body bytes to skip.
 */
static int handle_request(bt_conn_t *c, const char *buf, size_t len, uint64_t *body_len)
{
	struct http_req r;
	*body_len = 0;
	int status = http_parse_head(buf, len, &r);
	if (status) {
		error_reply(c, status);
		return -1;
	}
	/* Going away or draining, a keep-alive connection closes after this
	 * response: its client's next request then opens a new connection,
	 * which a balancer sends to another host.  In a reload it stays open,
	 * to move to the next generation. */
	enum bt_loop_state ls = bt_loop_state(bt_conn_loop(c));
	int keep = r.keep_alive && (ls == BT_LOOP_SERVING || ls == BT_LOOP_HANDING_OVER);
	*body_len = r.content_length;
	if (r.method == HTTP_OTHER) {
		error_reply(c, 405);
		return -1;
	}
	if (is_health(&r))
		return health_reply(c, &r, keep);
	if (opt.root)
		return serve_file(c, &r, keep);
	const char *head = keep ? opt.fixed_head : opt.fixed_head_close;
	size_t head_len = keep ? opt.fixed_head_len : opt.fixed_head_close_len;
	int rc;
	if (opt.peer_header) {
		/* The head without its blank line, then "NAME: ADDR\r\n\r\n". */
		char line[256];
		size_t n = peer_line(c, line, sizeof(line));
		rc = bt_conn_write(c, head, head_len - 2);
		if (rc >= 0)
			rc = bt_conn_write(c, line, n);
	} else {
		rc = bt_conn_write(c, head, head_len);
	}
	count(c, 200);
	if (rc >= 0 && r.method != HTTP_HEAD)
		return fixed_body(c, 0, !keep);
	return reply_sent(c, rc, keep);
}

/*
 * Handle the requests in p[0..len): returns how many bytes were consumed.
 * Stops at an incomplete head, when the connection closes, or when the
 * output went above the high-water mark (st->blocked, if st).
 */
static size_t handle_input(bt_conn_t *c, uint64_t *skip, int *blocked, const char *p, size_t len)
{
	size_t used = 0;
	while (used < len && bt_conn_fd(c) >= 0) {
		if (*skip) {
			size_t k = len - used < *skip ? len - used : (size_t)*skip;
			*skip -= k;
			used += k;
			continue;
		}
		size_t he = http_head_end(p + used, len - used);
		if (!he) {
			if (len - used >= HTTP_MAX_HEAD) {
				error_reply(c, 431);
				return len;
			}
			break;
		}
		if (he > HTTP_MAX_HEAD) {
			error_reply(c, 431);
			return len;
		}
		uint64_t body;
		int rc = handle_request(c, p + used, he, &body);
		used += he;
		if (rc < 0)
			return len;
		*skip = body;
		bt_conn_set_timeout(c, opt.idle_ms);
		if (rc == 1) {
			*blocked = 1;
			break;
		}
	}
	return used;
}

/* Keep p[0..len) for later (an incomplete head, or input that waits for
 * on_writable).  0, or -1 if it cannot be kept (then the conn is ended). */
static int stash(bt_conn_t *c, struct req_state *st, const char *p, size_t len)
{
	if (len == 0)
		return 0;
	if (st->len + len > MAX_STASH) {
		error_reply(c, 431);
		return -1;
	}
	if (st->len + len > st->cap) {
		size_t cap = st->cap ? st->cap : 4096;
		while (cap < st->len + len)
			cap *= 2;
		char *b = realloc(st->buf, cap);
		if (!b) {
			bt_conn_abort(c);
			return -1;
		}
		st->buf = b;
		st->cap = cap;
	}
	memmove(st->buf + st->len, p, len);
	st->len += len;
	return 0;
}

/* Work through what the state holds; drop the state when it holds
 * nothing. */
static void run_stash(bt_conn_t *c, struct req_state *st)
{
	size_t used = handle_input(c, &st->skip, &st->blocked, st->buf, st->len);
	if (bt_conn_fd(c) < 0)
		return; /* closing: on_close frees st (after this callback) */
	memmove(st->buf, st->buf + used, st->len - used);
	st->len -= used;
	if (st->len && !st->blocked && st->len >= HTTP_MAX_HEAD) {
		error_reply(c, 431);
		return;
	}
	if (st->len && !st->blocked)
		bt_conn_set_timeout(c, opt.header_ms); /* a head is arriving */
	if (!st->len && !st->skip && !st->blocked && !st->body_left)
		release(c);
}

static void on_open(bt_conn_t *c)
{
	bt_conn_set_timeout(c, opt.header_ms);
}

static void on_data(bt_conn_t *c, const void *data, size_t len)
{
	struct req_state *st = state(c, 0);
	if (!st) {
		/* The common case: whole requests in one read, handled in place. */
		uint64_t skip = 0;
		int blocked = 0;
		size_t used = handle_input(c, &skip, &blocked, data, len);
		if (bt_conn_fd(c) < 0 || (used == len && !skip && !blocked))
			return;
		st = state(c, 1);
		if (!st) {
			bt_conn_abort(c);
			return;
		}
		st->skip = skip;
		st->blocked = blocked;
		if (stash(c, st, (const char *)data + used, len - used) < 0)
			return;
		if (!blocked && st->len)
			bt_conn_set_timeout(c, opt.header_ms); /* a head is arriving */
		if (!st->len && !st->skip && !st->blocked && !st->body_left)
			release(c);
		return;
	}
	/* Behind a partial head, a body being skipped, or blocked output. */
	if (stash(c, st, data, len) < 0)
		return;
	if (!st->blocked)
		run_stash(c, st);
}

/* The output drained to the low-water mark: go on with waiting requests. */
static void on_writable(bt_conn_t *c)
{
	struct req_state *st = state(c, 0);
	if (!st)
		return;
	if (st->body_left) {
		st->body_left = 0;
		int rc = fixed_body(c, st->body_off, st->close_after_body);
		if (rc != 0)
			return; /* blocked again, or closing */
	}
	if (!st->blocked)
		return;
	st->blocked = 0;
	run_stash(c, st);
}

static void on_timeout(bt_conn_t *c)
{
	struct req_state *st = state(c, 0);
	if (st && st->len && !st->blocked)
		error_reply(c, 408); /* a request head arrived too slowly */
	else if (st && st->blocked)
		bt_conn_set_timeout(c, opt.idle_ms); /* a slow reader: not idle */
	else
		bt_conn_close(c);
}

/*
 * The drain (SIGTERM) has no callback here: a request answered while the
 * worker drains says "Connection: close" and the connection closes after
 * it (handle_request), and a keep-alive connection idle between requests
 * stays open until its next request, its --idle-timeout or the drain's
 * deadline, whichever comes first.  Closing idle connections at once
 * would race a request already on its way: the client would meet a
 * closed connection, not an answer.
 */

/*
 * A reload moves connections to the next generation (docs/reload.md):
 * one is at a safe point when no request is in progress (a partial head
 * goes along as the carried bytes, and is completed over there); one with
 * a response going out or a body being skipped moves after it.
 */
static int on_handover(bt_conn_t *c, const void **carry, size_t *len)
{
	struct req_state *st = state(c, 0);
	if (st && (st->skip || st->blocked || st->body_left))
		return 0;
	*carry = st ? st->buf : NULL;
	*len = st ? st->len : 0;
	return 1;
}

static void on_close(bt_conn_t *c, int why)
{
	(void)why;
	release(c);
	bt_conn_set_data(c, NULL);
}

/* --- flags ------------------------------------------------------------------ */

static int set_body(void *ctx, const char *v, char *err, size_t n)
{
	(void)ctx, (void)err, (void)n;
	opt.body = v;
	opt.body_len = strlen(v);
	return 0;
}

static int set_body_size(void *ctx, const char *v, char *err, size_t n)
{
	(void)ctx;
	char *e;
	errno = 0;
	unsigned long long sz = strtoull(v, &e, 10);
	if (errno || *e || !*v || v[0] == '-' || sz > (64ull << 20)) {
		snprintf(err, n, "'%s' is not a size in bytes (0 to 67108864)", v);
		return -1;
	}
	char *b = malloc(sz ? sz : 1);
	if (!b) {
		snprintf(err, n, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < sz; i++)
		b[i] = (char)('a' + i % 26);
	if (sz)
		b[sz - 1] = '\n';
	opt.body = b;
	opt.body_len = sz;
	return 0;
}

static int set_root(void *ctx, const char *v, char *err, size_t n)
{
	(void)ctx;
	/* Checked now for a clear error; each worker opens its own in
	 * on_start (a worker starts with only its channel open). */
	int fd = open(v, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, n, "cannot open directory '%s': %s", v, strerror(errno));
		return -1;
	}
	close(fd);
	opt.root = v;
	return 0;
}

/* Per worker: each worker process opens --root for itself; worker threads
 * share one descriptor, opened by the first of them. */
static int on_start(bt_loop_t *loop)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	if (!opt.root)
		return 0;
	int rc = 0;
	pthread_mutex_lock(&lock);
	if (opt.rootfd < 0)
		opt.rootfd = open(opt.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (opt.rootfd < 0) {
		fprintf(stderr, "baton-httpd: worker %d: cannot open --root %s: %s\n",
			bt_loop_worker_id(loop), opt.root, strerror(errno));
		rc = -1;
	}
	pthread_mutex_unlock(&lock);
	return rc;
}

static int set_ms(unsigned *dst, const char *v, char *err, size_t n)
{
	char *e;
	errno = 0;
	unsigned long x = strtoul(v, &e, 10);
	if (errno || *e || !*v || v[0] == '-' || x < 1 || x > 3600000) {
		snprintf(err, n, "'%s' is not milliseconds (1 to 3600000)", v);
		return -1;
	}
	*dst = (unsigned)x;
	return 0;
}

static int set_idle(void *ctx, const char *v, char *err, size_t n)
{
	(void)ctx;
	return set_ms(&opt.idle_ms, v, err, n);
}

static int set_header(void *ctx, const char *v, char *err, size_t n)
{
	(void)ctx;
	return set_ms(&opt.header_ms, v, err, n);
}

static int set_health(void *ctx, const char *v, char *err, size_t n)
{
	(void)ctx;
	size_t len = strlen(v);
	int ok = len >= 1 && len <= 200 && v[0] == '/';
	for (size_t i = 0; ok && i < len; i++)
		ok = v[i] > ' ' && v[i] < 0x7f && v[i] != '?' && v[i] != '#';
	if (!ok) {
		snprintf(err, n, "'%s' is not a path: '/' then at most 199 printable characters, "
			 "no space, '?' or '#'", v);
		return -1;
	}
	opt.health = v;
	opt.health_len = len;
	return 0;
}

static int set_peer_header(void *ctx, const char *v, char *err, size_t n)
{
	(void)ctx;
	size_t len = strlen(v);
	int ok = len >= 1 && len <= 64;
	for (size_t i = 0; ok && i < len; i++)
		ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
		     (v[i] >= '0' && v[i] <= '9') || v[i] == '-' || v[i] == '_';
	if (!ok) {
		snprintf(err, n, "'%s' is not a header name: 1 to 64 letters, digits, '-' or '_'", v);
		return -1;
	}
	opt.peer_header = v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct bt_flag flags[] = {
		{"body", "TEXT", "the fixed response body (default \"hello\\n\")", set_body, NULL},
		{"body-size", "N", "a fixed response body of N bytes", set_body_size, NULL},
		{"root", "DIR", "serve files from DIR instead (nothing above it)", set_root, NULL},
		{"idle-timeout", "MS", "close keep-alive connections idle this long (default 60000)", set_idle, NULL},
		{"header-timeout", "MS", "408 and close if a request head takes longer (default 10000)", set_header, NULL},
		{"peer-header", "NAME", "add 'NAME: ADDR:PORT', the client's address (from the PROXY header behind a balancer), to each fixed response", set_peer_header, NULL},
		{"health", "PATH", "answer GET PATH with 200 while serving, 503 from SIGTERM on (see --grace)", set_health, NULL},
		{NULL, NULL, NULL, NULL, NULL},
	};
	struct bt_runtime_config cfg;
	bt_runtime_config_init(&cfg, "baton-httpd", argc, argv);
	cfg.default_listen = "127.0.0.1:8080";
	int rc = bt_runtime_parse_args(&cfg, argc, argv, flags,
				       "A small HTTP/1.1 server: a fixed response, or files from --root.");
	if (rc)
		return rc == 1 ? 0 : 2;

	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 200 OK\r\nServer: baton\r\nContent-Type: text/plain\r\n"
			 "Content-Length: %zu\r\n\r\n", opt.body_len);
	opt.fixed_head = strdup(head);
	opt.fixed_head_len = (size_t)n;
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 200 OK\r\nServer: baton\r\nContent-Type: text/plain\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n", opt.body_len);
	opt.fixed_head_close = strdup(head);
	opt.fixed_head_close_len = (size_t)n;

	static const struct bt_handler h = {
		.size = sizeof(struct bt_handler),
		.on_open = on_open,
		.on_data = on_data,
		.on_close = on_close,
		.on_timeout = on_timeout,
		.on_handover = on_handover,
		.on_start = on_start,
		.on_writable = on_writable,
	};
	for (int k = 1; k <= 5; k++) {
		char name[64];
		snprintf(name, sizeof(name), "httpd_responses_total{class=\"%dxx\"}", k);
		responses[k] = bt_metric_register(name, "HTTP responses sent, by status class.",
						  BT_METRIC_COUNTER);
	}
	return bt_runtime_run(&cfg, &h, NULL);
}
