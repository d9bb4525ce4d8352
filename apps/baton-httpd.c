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
 * (408 in the second case).
 */
#define _GNU_SOURCE
#include <baton/loop.h>
#include <baton/runtime.h>

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

#define MAX_HEAD 8192

static struct {
	const char *body;
	size_t body_len;
	const char *root;
	int rootfd;
	unsigned idle_ms;
	unsigned header_ms;
	char *fixed_head;     /* prebuilt headers of the fixed response, keep-alive */
	size_t fixed_head_len;
	char *fixed_head_close;
	size_t fixed_head_close_len;
} opt = {.body = "hello\n", .body_len = 6, .rootfd = -1, .idle_ms = 60000, .header_ms = 10000};

/* Per connection, allocated only while a request head is incomplete or a
 * body is being skipped. */
struct req_state {
	size_t len;
	uint64_t skip; /* request body bytes still to discard */
	int close_after_skip;
	char buf[MAX_HEAD];
};

static struct req_state *state(bt_conn_t *c, int create)
{
	struct req_state *st = bt_conn_data(c);
	if (!st && create) {
		st = malloc(sizeof(*st));
		if (st) {
			st->len = 0;
			st->skip = 0;
			st->close_after_skip = 0;
			bt_conn_set_data(c, st);
		}
	}
	return st;
}

static void release(bt_conn_t *c)
{
	free(bt_conn_data(c));
	bt_conn_set_data(c, NULL);
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
	bt_conn_write(c, buf, (size_t)n);
	bt_conn_close(c);
}

static int tchar(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int ieq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* Does a comma-separated header value contain token tok? */
static int has_token(const char *v, size_t len, const char *tok)
{
	size_t tl = strlen(tok);
	for (size_t i = 0; i < len;) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t j = i;
		while (j < len && v[j] != ',')
			j++;
		size_t e = j;
		while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - i == tl && strncasecmp(v + i, tok, tl) == 0)
			return 1;
		i = j;
	}
	return 0;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decode the path of target into out (relative, no leading '/');
 * refuse NUL, "..", and anything that is not a plain absolute path. */
static int clean_path(const char *t, size_t tlen, char *out, size_t cap)
{
	size_t n = 0;
	if (tlen == 0 || t[0] != '/')
		return -1;
	size_t end = 0;
	while (end < tlen && t[end] != '?' && t[end] != '#')
		end++;
	for (size_t i = 1; i < end; i++) {
		int ch = (unsigned char)t[i];
		if (ch == '%') {
			if (i + 2 >= end)
				return -1;
			int h = hexval(t[i + 1]), l = hexval(t[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			ch = h * 16 + l;
			i += 2;
		}
		if (ch == 0 || n + 1 >= cap)
			return -1;
		out[n++] = (char)ch;
	}
	out[n] = 0;
	/* Segment by segment: no "..", no empty-but-dot tricks. */
	for (char *seg = out; *seg;) {
		char *slash = strchr(seg, '/');
		size_t sl = slash ? (size_t)(slash - seg) : strlen(seg);
		if ((sl == 2 && seg[0] == '.' && seg[1] == '.'))
			return -1;
		seg += sl + (slash ? 1 : 0);
	}
	return (int)n;
}

static int open_beneath(const char *rel)
{
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
			       .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
	return (int)syscall(SYS_openat2, opt.rootfd, rel[0] ? rel : ".", &how, sizeof(how));
}

/* Serve a file from --root: 200, 403, 404. */
static void serve_file(bt_conn_t *c, const char *target, size_t tlen, int head_only, int keep)
{
	char rel[4096];
	if (clean_path(target, tlen, rel, sizeof(rel) - 16) < 0) {
		error_reply(c, 400);
		return;
	}
	int fd = open_beneath(rel);
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		size_t rl = strlen(rel);
		if (rl && rel[rl - 1] != '/')
			strcat(rel, "/");
		strcat(rel, "index.html");
		close(fd);
		fd = open_beneath(rel);
	}
	if (fd < 0) {
		error_reply(c, errno == ENOENT || errno == ENOTDIR ? 404 : 403);
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		error_reply(c, 403);
		return;
	}
	char head[256];
	int hn = snprintf(head, sizeof(head),
			  "HTTP/1.1 200 OK\r\nServer: baton\r\nContent-Length: %lld\r\n%s\r\n",
			  (long long)st.st_size, keep ? "" : "Connection: close\r\n");
	bt_conn_write(c, head, (size_t)hn);
	if (!head_only) {
		char buf[65536];
		off_t left = st.st_size;
		while (left > 0) {
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r <= 0) {
				/* Headers are out already: the length will not
				 * match, so closing is the only honest ending. */
				close(fd);
				bt_conn_abort(c);
				return;
			}
			bt_conn_write(c, buf, (size_t)r);
			left -= r;
		}
	}
	close(fd);
	if (!keep)
		bt_conn_close(c);
}

/*
 * Handle one complete request head in buf[0..len) (ending in CRLFCRLF).
 * Returns 0 to go on with the next request, -1 if the connection closes.
 */
static int handle_request(bt_conn_t *c, const char *buf, size_t len, uint64_t *body_len)
{
	*body_len = 0;
	const char *end = buf + len;
	const char *eol = memchr(buf, '\n', len);
	if (!eol || eol == buf || eol[-1] != '\r') {
		error_reply(c, 400);
		return -1;
	}
	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	const char *m = buf, *p = buf;
	while (p < eol && tchar((unsigned char)*p))
		p++;
	size_t mlen = (size_t)(p - m);
	if (mlen == 0 || p >= eol || *p != ' ') {
		error_reply(c, 400);
		return -1;
	}
	const char *t = ++p;
	while (p < eol && *p != ' ' && (unsigned char)*p > 0x20 && *p != 0x7f)
		p++;
	size_t tlen = (size_t)(p - t);
	if (tlen == 0 || p >= eol || *p != ' ') {
		error_reply(c, 400);
		return -1;
	}
	const char *v = ++p;
	size_t vlen = (size_t)(eol - 1 - v);
	int minor;
	if (vlen != 8 || strncmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1')) {
		error_reply(c, vlen == 8 && !strncmp(v, "HTTP/", 5) ? 505 : 400);
		return -1;
	}
	minor = v[7] - '0';
	int keep = minor == 1;
	int have_cl = 0, chunked = 0, have_host = 0;
	uint64_t cl = 0;

	for (const char *h = eol + 1; h < end;) {
		const char *hl = memchr(h, '\n', (size_t)(end - h));
		if (!hl || hl[-1] != '\r') {
			error_reply(c, 400);
			return -1;
		}
		if (hl - h == 1)
			break; /* the empty line */
		const char *colon = h;
		while (colon < hl && tchar((unsigned char)*colon))
			colon++;
		if (colon == h || colon >= hl || *colon != ':') {
			error_reply(c, 400); /* no name, obs-fold, or space before ':' */
			return -1;
		}
		const char *val = colon + 1;
		while (val < hl && (*val == ' ' || *val == '\t'))
			val++;
		const char *vend = hl - 1;
		while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
			vend--;
		size_t nlen = (size_t)(colon - h), vl = (size_t)(vend - val);
		for (const char *q = val; q < vend; q++)
			if ((unsigned char)*q < 0x20 && *q != '\t') {
				error_reply(c, 400);
				return -1;
			}
		if (ieq(h, nlen, "connection")) {
			if (has_token(val, vl, "close"))
				keep = 0;
			else if (has_token(val, vl, "keep-alive"))
				keep = 1;
		} else if (ieq(h, nlen, "content-length")) {
			char *e2;
			char num[24];
			if (vl == 0 || vl >= sizeof(num)) {
				error_reply(c, 400);
				return -1;
			}
			memcpy(num, val, vl);
			num[vl] = 0;
			errno = 0;
			unsigned long long x = strtoull(num, &e2, 10);
			if (errno || *e2 || num[0] == '-' || num[0] == '+' || (have_cl && x != cl)) {
				error_reply(c, 400);
				return -1;
			}
			cl = x;
			have_cl = 1;
		} else if (ieq(h, nlen, "transfer-encoding")) {
			chunked = 1;
		} else if (ieq(h, nlen, "host")) {
			have_host = 1;
		}
		h = hl + 1;
	}
	if (minor == 1 && !have_host) {
		error_reply(c, 400); /* RFC 9112: a 1.1 request has Host */
		return -1;
	}
	if (chunked) {
		error_reply(c, have_cl ? 400 : 501);
		return -1;
	}
	if (bt_loop_draining(bt_conn_loop(c)))
		keep = 0;

	int head_only = ieq(m, mlen, "HEAD");
	if (!head_only && !ieq(m, mlen, "GET")) {
		*body_len = cl;
		error_reply(c, 405);
		return -1;
	}
	*body_len = cl;
	if (opt.root) {
		serve_file(c, t, tlen, head_only, keep);
	} else {
		if (keep)
			bt_conn_write(c, opt.fixed_head, opt.fixed_head_len);
		else
			bt_conn_write(c, opt.fixed_head_close, opt.fixed_head_close_len);
		if (!head_only)
			bt_conn_write(c, opt.body, opt.body_len);
		if (!keep)
			bt_conn_close(c);
	}
	return keep ? 0 : -1;
}

/* Find the end of a request head (CRLFCRLF); returns its length or 0.
 * A bare LFLF also ends it, so that such a request gets its 400 now
 * rather than a 408 later. */
static size_t head_end(const char *p, size_t len)
{
	for (size_t i = 1; i < len; i++)
		if (p[i] == '\n' && (p[i - 1] == '\n' ||
				     (i >= 3 && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')))
			return i + 1;
	return 0;
}

static void on_open(bt_conn_t *c)
{
	bt_conn_set_timeout(c, opt.header_ms);
}

static void on_data(bt_conn_t *c, const void *data, size_t len)
{
	const char *p = data;
	struct req_state *st = state(c, 0);
	while (len > 0 && bt_conn_fd(c) >= 0) {
		if (st && st->skip) {
			size_t k = len < st->skip ? len : (size_t)st->skip;
			st->skip -= k;
			p += k;
			len -= k;
			continue;
		}
		const char *req = p;
		size_t avail = len, consumed;
		if (st && st->len) {
			/* Join with the partial head we hold. */
			size_t room = MAX_HEAD - st->len;
			size_t take = len < room ? len : room;
			memcpy(st->buf + st->len, p, take);
			size_t old = st->len;
			st->len += take;
			size_t he = head_end(st->buf, st->len);
			if (!he) {
				if (st->len == MAX_HEAD) {
					error_reply(c, 431);
					return;
				}
				return;
			}
			consumed = he - old;
			uint64_t body;
			int rc = handle_request(c, st->buf, he, &body);
			st->len = 0;
			p += consumed;
			len -= consumed;
			if (rc < 0)
				return;
			st->skip = body;
			bt_conn_set_timeout(c, opt.idle_ms);
			continue;
		}
		size_t he = head_end(req, avail);
		if (!he) {
			if (avail >= MAX_HEAD) {
				error_reply(c, 431);
				return;
			}
			st = state(c, 1);
			if (!st) {
				bt_conn_abort(c);
				return;
			}
			memcpy(st->buf, req, avail);
			st->len = avail;
			bt_conn_set_timeout(c, opt.header_ms);
			return;
		}
		if (he > MAX_HEAD) {
			error_reply(c, 431);
			return;
		}
		uint64_t body;
		if (handle_request(c, req, he, &body) < 0)
			return;
		p += he;
		len -= he;
		if (body) {
			st = state(c, 1);
			if (!st) {
				bt_conn_abort(c);
				return;
			}
			st->skip = body;
		}
		bt_conn_set_timeout(c, opt.idle_ms);
	}
	if (st && !st->len && !st->skip)
		release(c);
}

static void on_timeout(bt_conn_t *c)
{
	struct req_state *st = state(c, 0);
	if (st && st->len)
		error_reply(c, 408); /* a request head arrived too slowly */
	else
		bt_conn_close(c);
}

static void on_drain(bt_conn_t *c)
{
	struct req_state *st = state(c, 0);
	/* Idle keep-alive connections go now; one mid-request closes after
	 * its response (handle_request sees the drain). */
	if (!st || (!st->len && !st->skip))
		if (bt_conn_pending(c) == 0)
			bt_conn_close(c);
}

static void on_close(bt_conn_t *c, int why)
{
	(void)why;
	release(c);
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

int main(int argc, char **argv)
{
	static const struct bt_flag flags[] = {
		{"body", "TEXT", "the fixed response body (default \"hello\\n\")", set_body, NULL},
		{"body-size", "N", "a fixed response body of N bytes", set_body_size, NULL},
		{"root", "DIR", "serve files from DIR instead (nothing above it)", set_root, NULL},
		{"idle-timeout", "MS", "close keep-alive connections idle this long (default 60000)", set_idle, NULL},
		{"header-timeout", "MS", "408 and close if a request head takes longer (default 10000)", set_header, NULL},
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
		.on_drain = on_drain,
		.on_start = on_start,
	};
	return bt_runtime_run(&cfg, &h, NULL);
}
