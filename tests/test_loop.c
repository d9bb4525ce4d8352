/* SPDX-License-Identifier: MIT */
/* The worker loop through baton/loop.h, on both backends: this test plays
 * the acceptor (accepts TCP connections on 127.0.0.1 and queues them to a
 * worker process), the worker runs an echo handler. */
#include "check.h"

#include <baton/log.h>
#include <baton/loop.h>
#include <baton/queue.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <stdlib.h>

static int backend;

/* --- the worker's handler ------------------------------------------------ */

/* Offloaded work: uppercase the text after "job:" on a pool thread, then
 * write it back from the loop thread. */
struct offload {
	bt_conn_t *c;
	size_t len;
	char buf[256];
};

static void offload_work(void *arg)
{
	struct offload *o = arg;
	usleep(20000); /* something blocking */
	for (size_t i = 0; i < o->len; i++)
		if (o->buf[i] >= 'a' && o->buf[i] <= 'z')
			o->buf[i] = (char)(o->buf[i] - 'a' + 'A');
}

static void offload_done(void *arg, int status)
{
	struct offload *o = arg;
	if (status == 0)
		bt_conn_write(o->c, o->buf, o->len);
	free(o);
}

/* What the worker saw, for the test process to check (shared memory). */
struct seen {
	int bad;            /* a callback found freed or wrong state */
	int close_reason;   /* of the last on_close */
	int closes;
	int writable;       /* on_writable calls */
	size_t max_pending; /* the most output queued when a write returned 1 */
	int rc[8];          /* results of the sendfile error cases */
	int exdev;          /* on_close with -EXDEV: handed over */
	int resumed;        /* on_open of a connection from the previous generation */
	int opens;          /* on_open calls */
	uint64_t proxy_refused, proxy_late; /* the loop's stats at on_stop */
	int fd_ok[8];
};
static struct seen *seen;

/* Per-connection state that on_close frees (and poisons first). */
struct cstate {
	unsigned magic;
	int pumping;
	int tail_on_timeout; /* "tail": on_timeout writes above the mark, */
	int tailing;         /* then on_writable writes the end and closes */
	size_t pump_left; /* "pump": bytes still to write */
	int busy;         /* "busy": never at a safe point for a handover */
};
#define CSTATE_MAGIC 0x5ea7ed

static struct cstate *cstate(bt_conn_t *c)
{
	struct cstate *st = bt_conn_data(c);
	if (!st) {
		st = calloc(1, sizeof(*st));
		st->magic = CSTATE_MAGIC;
		bt_conn_set_data(c, st);
	}
	return st;
}

/* Write 64 KiB pieces until the output is above the mark or the pump is
 * done; then close. */
static void pump(bt_conn_t *c)
{
	static char piece[65536];
	struct cstate *st = cstate(c);
	while (st->pump_left > 0) {
		size_t n = st->pump_left < sizeof(piece) ? st->pump_left : sizeof(piece);
		for (size_t i = 0; i < n; i++)
			piece[i] = (char)('a' + (st->pump_left - i) % 26);
		int rc = bt_conn_write(c, piece, n);
		if (rc < 0) {
			seen->bad = 100 - rc;
			return;
		}
		st->pump_left -= n;
		if (rc == 1) {
			if (bt_conn_pending(c) > seen->max_pending)
				seen->max_pending = bt_conn_pending(c);
			return; /* on_writable goes on */
		}
	}
	bt_conn_close(c);
}

static void echo_writable(bt_conn_t *c)
{
	seen->writable++;
	if (bt_conn_pending(c) > 64 * 1024)
		seen->bad = 2; /* called above the low-water mark */
	struct cstate *st = bt_conn_data(c);
	if (st && st->pumping)
		pump(c);
	if (st && st->tailing) {
		st->tailing = 0;
		if (bt_conn_write(c, "end\n", 4) < 0)
			seen->bad = 6;
		bt_conn_close(c);
	}
}

/* "file PATH LEN": send LEN bytes of PATH with bt_conn_sendfile, then close. */
static void send_file(bt_conn_t *c, const char *data, size_t len)
{
	char cmd[300];
	if (len >= sizeof(cmd))
		return;
	memcpy(cmd, data, len);
	cmd[len] = 0;
	char path[256];
	unsigned long long n;
	if (sscanf(cmd, "file %255s %llu", path, &n) != 2) {
		seen->bad = 3;
		return;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || bt_conn_sendfile(c, fd, 0, n) < 0) {
		seen->bad = 4;
		return;
	}
	bt_conn_close(c);
}

/* The sendfile error paths: the caller keeps its fd on every error. */
static void sendfile_errors(bt_conn_t *c)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	seen->rc[0] = bt_conn_sendfile(c, -1, 0, 10);
	seen->rc[1] = bt_conn_sendfile(c, fd, UINT64_MAX - 5, 10);
	seen->fd_ok[1] = fcntl(fd, F_GETFD) >= 0;
	seen->rc[2] = bt_conn_sendfile(c, fd, 0, 0); /* takes fd, closes it */
	seen->fd_ok[2] = fcntl(fd, F_GETFD) >= 0;
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	bt_conn_write(c, "ok\n", 3);
	bt_conn_close(c);
	seen->rc[3] = bt_conn_sendfile(c, fd, 0, 10);
	seen->fd_ok[3] = fcntl(fd, F_GETFD) >= 0;
	seen->rc[4] = bt_conn_write(c, "x", 1);
	close(fd);
}

/* "huge": one bt_conn_write of more than 2 GiB (one SEND of it all was
 * lost on io_uring: its length is 32 bits), a pattern of period HUGE_P. */
#define HUGE_LEN (((size_t)2 << 30) + 81)
#define HUGE_P 65521

static unsigned char huge_byte(size_t i)
{
	return (unsigned char)((i % HUGE_P) * 31 + 7);
}

static void huge_reply(bt_conn_t *c)
{
	unsigned char *buf = mmap(NULL, HUGE_LEN, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		seen->bad = 8;
		bt_conn_abort(c);
		return;
	}
	for (size_t i = 0; i < HUGE_P; i++)
		buf[i] = huge_byte(i);
	for (size_t k = HUGE_P; k < HUGE_LEN; k *= 2) /* k stays a multiple of the period */
		memcpy(buf + k, buf, k < HUGE_LEN - k ? k : HUGE_LEN - k);
	if (bt_conn_write(c, buf, HUGE_LEN) < 0)
		seen->bad = 9;
	munmap(buf, HUGE_LEN);
	bt_conn_close(c);
}

static int count_fds(void);

static void echo_data(bt_conn_t *c, const void *data, size_t len)
{
	if (len >= 5 && memcmp(data, "abort", 5) == 0) {
		/* Callbacks may close: what on_close frees stays valid until
		 * this callback returns. */
		struct cstate *st = cstate(c);
		int closes = seen->closes;
		bt_conn_abort(c);
		if (st->magic != CSTATE_MAGIC || seen->closes != closes)
			seen->bad = 1;
		if (bt_conn_fd(c) != -1 || bt_conn_write(c, "x", 1) != -EPIPE)
			seen->bad = 5;
		return;
	}
	if (len >= 4 && memcmp(data, "pump", 4) == 0) {
		cstate(c)->pump_left = 8 << 20;
		cstate(c)->pumping = 1;
		pump(c);
		return;
	}
	if (len >= 4 && memcmp(data, "busy", 4) == 0) {
		cstate(c)->busy = 1;
		bt_conn_write(c, "busy", 4);
		return;
	}
	if (len >= 4 && memcmp(data, "tail", 4) == 0) {
		cstate(c)->tail_on_timeout = 1;
		bt_conn_set_timeout(c, 50);
		return;
	}
	if (len >= 4 && memcmp(data, "huge", 4) == 0) {
		huge_reply(c);
		return;
	}
	if (len >= 5 && memcmp(data, "file ", 5) == 0) {
		send_file(c, data, len);
		return;
	}
	if (len >= 6 && memcmp(data, "sfbad\n", 6) == 0) {
		sendfile_errors(c);
		return;
	}
	if (len > 4 && memcmp(data, "job:", 4) == 0 && len - 4 <= 256) {
		struct offload *o = malloc(sizeof(*o));
		o->c = c;
		o->len = len - 4;
		memcpy(o->buf, (const char *)data + 4, o->len);
		if (bt_loop_submit(bt_conn_loop(c), NULL, offload_work, offload_done, o) < 0) {
			free(o);
			bt_conn_write(c, "busy", 4);
		}
		return;
	}
	if (len >= 4 && memcmp(data, "quit", 4) == 0) {
		bt_conn_write(c, "bye\n", 4);
		bt_conn_close(c);
		return;
	}
	if (len >= 3 && memcmp(data, "big", 3) == 0) {
		/* More than a socket buffer: partial sends must be resumed. */
		static char big[4 << 20];
		for (size_t i = 0; i < sizeof(big); i++)
			big[i] = (char)('a' + i % 26);
		bt_conn_write(c, big, sizeof(big));
		bt_conn_close(c);
		return;
	}
	if (len >= 9 && memcmp(data, "draining?", 9) == 0) {
		bt_conn_write(c, bt_loop_draining(bt_conn_loop(c)) ? "yes\n" : "no\n",
			      bt_loop_draining(bt_conn_loop(c)) ? 4 : 3);
		return;
	}
	if (len >= 4 && memcmp(data, "fds?", 4) == 0) {
		/* "fds?": the worker's open descriptors, "N\n" */
		char out[16];
		int n = snprintf(out, sizeof(out), "%d\n", count_fds());
		bt_conn_write(c, out, (size_t)n);
		return;
	}
	if (len >= 5 && memcmp(data, "peer?", 5) == 0) {
		/* "peer?": bt_conn_peer's address, "IP:PORT\n" */
		struct sockaddr_storage ss;
		socklen_t sl;
		char ip[INET6_ADDRSTRLEN] = "?", out[INET6_ADDRSTRLEN + 16];
		unsigned port = 0;
		if (bt_conn_peer(c, &ss, &sl) == 0 && ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
			port = ntohs(a->sin_port);
		}
		int n = snprintf(out, sizeof(out), "%s:%u\n", ip, port);
		bt_conn_write(c, out, (size_t)n);
		return;
	}
	if (len >= 4 && memcmp(data, "slow", 4) == 0) {
		bt_conn_set_timeout(c, 200);
		return;
	}
	if (len >= 4 && memcmp(data, "tmo ", 4) == 0) {
		/* "tmo MS": set the timeout to MS (0 cancels), echo */
		const char *d = data;
		unsigned ms = 0;
		for (size_t i = 4; i < len && d[i] >= '0' && d[i] <= '9'; i++)
			ms = ms * 10 + (unsigned)(d[i] - '0');
		bt_conn_set_timeout(c, ms);
		bt_conn_write(c, data, len);
		return;
	}
	bt_conn_write(c, data, len);
}

#define TAIL_LEN 20000

/* Output written by a timer goes out in the loop's second flush pass of a
 * tick; on_writable runs inside it (epoll sends at once), writes again
 * and closes. */
static void echo_timeout(bt_conn_t *c)
{
	struct cstate *st = bt_conn_data(c);
	if (!st || !st->tail_on_timeout) {
		bt_conn_abort(c);
		return;
	}
	st->tail_on_timeout = 0;
	static char body[TAIL_LEN];
	memset(body, 't', sizeof(body));
	if (bt_conn_write(c, body, sizeof(body)) != 1)
		seen->bad = 7; /* above the mark (rig_out_high): on_writable is due */
	st->tailing = 1;
}

static void echo_open(bt_conn_t *c)
{
	seen->opens++;
	seen->resumed += bt_conn_resumed(c);
}

static void echo_stop(bt_loop_t *loop)
{
	struct bt_loop_stats st;
	bt_loop_get_stats(loop, &st);
	seen->proxy_refused = st.proxy_refused;
	seen->proxy_late = st.proxy_late;
}

static void echo_close(bt_conn_t *c, int reason)
{
	struct cstate *st = bt_conn_data(c);
	seen->closes++;
	seen->close_reason = reason;
	seen->exdev += reason == -EXDEV;
	if (st) {
		st->magic = 0; /* poison: a use after this is caught */
		free(st);
		bt_conn_set_data(c, NULL);
	}
}

/* A reload: every connection is at a safe point, and carries "abc"; one
 * that said "busy" is not (it finishes here, at the deadline). */
static int echo_handover(bt_conn_t *c, const void **carry, size_t *len)
{
	struct cstate *st = bt_conn_data(c);
	if (st && st->busy)
		return 0;
	*carry = "abc";
	*len = 3;
	return 1;
}

static const struct bt_handler echo = {
	.size = sizeof(struct bt_handler),
	.on_open = echo_open,
	.on_stop = echo_stop,
	.on_data = echo_data,
	.on_close = echo_close,
	.on_writable = echo_writable,
	.on_timeout = echo_timeout,
	.on_handover = echo_handover,
};

static size_t rig_out_high; /* the worker's out_high; 0: the default */
static unsigned rig_proxy_ms; /* the worker's proxy_timeout_ms; 0: the default */
static int rig_wire; /* acknowledgements on the wire (no shm), as an attached worker */
static int rig_two;  /* a second producer: q2 on a second inlet (bt_loop_add_inlet) */

struct rig {
	bt_queue_shm_t *shm;
	bt_queue_t *q, *q2;
	pid_t worker;
	int lfd;
	struct sockaddr_in addr;
	uint64_t next_id;
};

static void quiet(void *ctx, int level, const char *line)
{
	(void)ctx;
	if (level <= BT_LOG_WARN && !strstr(line, "io_uring unavailable"))
		fprintf(stderr, "log: %s\n", line);
}

static void start(struct rig *r)
{
	bt_log_set_handler(quiet, NULL);
	memset(r, 0, sizeof(*r));
	if (!seen) {
		seen = mmap(NULL, sizeof(*seen), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			    -1, 0);
		CHECK(seen != MAP_FAILED);
	}
	memset(seen, 0, sizeof(*seen));
	CHECK_ERR(bt_queue_shm_create(&r->shm, 2, 1024), 0);
	int sv[2], sv2[2] = {-1, -1};
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	if (rig_two)
		CHECK_ERR(bt_fdpass_pair(sv2, 0), 0);
	r->worker = fork();
	CHECK_OP(r->worker, >=, 0);
	if (r->worker == 0) {
		close(sv[0]);
		if (rig_two)
			close(sv2[0]);
		bt_fdpass_t *ch;
		if (bt_fdpass_open(&ch, sv[1]) < 0)
			_exit(10);
		struct bt_loop_config cfg;
		bt_loop_config_init(&cfg);
		if ((rig_wire ? bt_queue_inlet_wire(&cfg.inlet, ch)
			      : bt_queue_inlet_forked(&cfg.inlet, ch, r->shm, 0)) < 0)
			_exit(10);
		cfg.handler = &echo;
		cfg.backend = backend;
		cfg.drain_timeout_ms = 2000;
		if (rig_out_high)
			cfg.out_high = rig_out_high;
		if (rig_proxy_ms)
			cfg.proxy_timeout_ms = rig_proxy_ms;
		bt_loop_t *loop;
		int rc = bt_loop_create(&loop, &cfg);
		if (rc < 0) {
			fprintf(stderr, "bt_loop_create: %s\n", strerror(-rc));
			_exit(rc == -ENOSYS || rc == -EPERM ? 77 : 11);
		}
		if (rig_two) {
			bt_fdpass_t *ch2;
			bt_queue_inlet_t *in2;
			if (bt_fdpass_open(&ch2, sv2[1]) < 0 ||
			    bt_queue_inlet_forked(&in2, ch2, r->shm, 1) < 0 ||
			    bt_loop_add_inlet(loop, in2) < 0)
				_exit(14);
		}
		rc = bt_loop_run(loop);
		bt_loop_destroy(loop);
		_exit(rc != 0 ? 12 : seen->bad ? 13 : 0);
	}
	close(sv[1]);
	if (rig_two) {
		close(sv2[1]);
		bt_fdpass_t *ch2;
		CHECK_ERR(bt_fdpass_open(&ch2, sv2[0]), 0);
		struct bt_queue_config qc2;
		bt_queue_config_init(&qc2);
		qc2.max_inflight = 1024;
		CHECK_ERR(bt_queue_create(&r->q2, &qc2, ch2, r->shm, 1), 0);
	}
	bt_fdpass_t *ch;
	CHECK_ERR(bt_fdpass_open(&ch, sv[0]), 0);
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	qc.max_inflight = 1024;
	CHECK_ERR(bt_queue_create(&r->q, &qc, ch, rig_wire ? NULL : r->shm, 0), 0);

	r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_OP(r->lfd, >=, 0);
	r->addr.sin_family = AF_INET;
	r->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_SYS(bind(r->lfd, (struct sockaddr *)&r->addr, sizeof(r->addr)));
	socklen_t len = sizeof(r->addr);
	CHECK_SYS(getsockname(r->lfd, (struct sockaddr *)&r->addr, &len));
	CHECK_SYS(listen(r->lfd, 1024));
}

/* A client connects; we accept and hand the connection to the worker
 * through q. */
static int client_flags(struct rig *r, bt_queue_t *q, uint32_t flags)
{
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_OP(c, >=, 0);
	CHECK_SYS(connect(c, (struct sockaddr *)&r->addr, sizeof(r->addr)));
	int s = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
	CHECK_OP(s, >=, 0);
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = ++r->next_id;
	it.flags = BT_WIRE_ITEM_FD | flags;
	it.fd = s;
	CHECK_OP(bt_queue_push(q, &it), >=, 0);
	CHECK_OP(bt_queue_flush(q), >=, 1);
	bt_queue_reap(q, NULL, NULL);
	return c;
}

static int client_on(struct rig *r, bt_queue_t *q)
{
	return client_flags(r, q, 0);
}

static int client(struct rig *r)
{
	return client_on(r, r->q);
}

static void stop(struct rig *r, int expect_status)
{
	unsigned char buf[64];
	struct bt_wire_drain d = {.deadline_ms = 1000};
	long len = bt_wire_encode_drain(buf, sizeof(buf), 0, &d);
	CHECK_ERR(bt_fdpass_send(bt_queue_channel(r->q), buf, (size_t)len, NULL, 0), 0);
	int st;
	CHECK_EQ(waitpid(r->worker, &st, 0), r->worker);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		CHECK_SKIP("io_uring unavailable");
	CHECK(WIFEXITED(st));
	if (WEXITSTATUS(st) == 13)
		fprintf(stderr, "the worker's callbacks saw a bad state: %d\n", seen->bad);
	CHECK_EQ(WEXITSTATUS(st), expect_status);
	if (rig_wire) { /* the worker's ACKs wait in the channel */
		struct bt_wire_msg m;
		int rc;
		while ((rc = bt_fdpass_recv(bt_queue_channel(r->q), &m)) == 1) {
			CHECK_EQ(m.type, BT_WIRE_ACK);
			CHECK_ERR(bt_queue_on_ack(r->q, &m.u.ack), 0);
		}
		CHECK_OP(rc, <=, 0); /* EOF: the worker is gone */
	}
	bt_queue_reap(r->q, NULL, NULL);
	CHECK_EQ(bt_queue_inflight(r->q), 0);
	bt_queue_destroy(r->q);
	bt_queue_shm_destroy(r->shm);
	close(r->lfd);
}

static ssize_t read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t got = 0;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		ssize_t n = read(fd, buf + got, cap - got);
		if (n < 0)
			return -errno;
		if (n == 0)
			return (ssize_t)got;
		got += (size_t)n;
		if (got == cap)
			return (ssize_t)got;
	}
}

static void expect_echo(int fd, const char *msg)
{
	size_t len = strlen(msg);
	CHECK_EQ(write(fd, msg, len), len);
	char buf[256];
	size_t got = 0;
	while (got < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, 5000), 1);
		ssize_t n = read(fd, buf + got, sizeof(buf) - got);
		CHECK_OP(n, >, 0);
		got += (size_t)n;
	}
	CHECK_EQ(got, len);
	CHECK(memcmp(buf, msg, len) == 0);
}

/* --- cases ------------------------------------------------------------------ */

static void echo_data_unused(bt_conn_t *c, const void *d, size_t n)
{
	(void)c, (void)d, (void)n;
}

static void test_echo_many(void)
{
	struct rig r;
	start(&r);
	int fds[100];
	for (int i = 0; i < 100; i++)
		fds[i] = client(&r);
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 100; i++) {
			char msg[64];
			snprintf(msg, sizeof(msg), "hello %d round %d\n", i, round);
			expect_echo(fds[i], msg);
		}
	/* Clients close; the worker sees EOF and closes its side. */
	for (int i = 0; i < 100; i++)
		close(fds[i]);
	stop(&r, 0);
}

/* An attached worker's loop (a channel, no shared memory) acknowledges
 * every batch with an ACK on the channel: once the producer has read them,
 * nothing is left in flight. */
static void test_echo_wire_ack(void)
{
	rig_wire = 1;
	struct rig r;
	start(&r);
	int fds[40];
	for (int i = 0; i < 40; i++)
		fds[i] = client(&r);
	for (int i = 0; i < 40; i++)
		expect_echo(fds[i], "over the wire\n");
	for (int i = 0; i < 40; i++)
		close(fds[i]);
	stop(&r, 0);
	rig_wire = 0;
}

/* The next ACK from an attached loop, within timeout_ms. */
static struct bt_wire_ack next_ack(struct rig *r, int timeout_ms)
{
	bt_fdpass_t *ch = bt_queue_channel(r->q);
	struct pollfd p = {.fd = bt_fdpass_fd(ch), .events = POLLIN};
	CHECK_EQ(poll(&p, 1, timeout_ms), 1);
	struct bt_wire_msg m;
	CHECK_EQ(bt_fdpass_recv(ch, &m), 1);
	CHECK_EQ(m.type, BT_WIRE_ACK);
	CHECK_ERR(bt_queue_on_ack(r->q, &m.u.ack), 0);
	return m.u.ack;
}

/* An attached loop's ACKs: one per batch, one when its load changes, and
 * a heartbeat (the last ACK again) while it holds an idle connection. */
static void test_wire_heartbeat(void)
{
	rig_wire = 1;
	struct rig r;
	start(&r);
	int fd = client(&r);
	struct bt_wire_ack a = next_ack(&r, 5000);
	CHECK_EQ(a.seq, 1);
	CHECK_EQ(a.fds_total, 1);
	while (a.load != 1) /* the batch's ACK goes before its connection opens */
		a = next_ack(&r, 5000);
	expect_echo(fd, "idle next\n");
	/* Nothing happens now but the heartbeat: once a second. */
	for (int beat = 0; beat < 2; beat++) {
		a = next_ack(&r, 5000);
		CHECK_EQ(a.seq, 1);
		CHECK_EQ(a.load, 1);
		CHECK_EQ(a.n_lost, 0);
	}
	close(fd);
	do
		a = next_ack(&r, 5000);
	while (a.load != 0);
	CHECK_EQ(bt_queue_inflight(r.q), 1); /* reaped below */
	stop(&r, 0);
	rig_wire = 0;
}

/* A reload, the worker's side: a channel to the next generation (an item
 * flagged HANDOVER), then DRAIN.  Each connection at a safe point moves:
 * its descriptor and the handler's carried bytes arrive on the channel as
 * one RESUMED item, the client's socket goes on working through it, and the
 * worker ends it with -EXDEV; one never at a safe point is closed at the
 * deadline.  And the other way: a RESUMED item's payload reaches on_data
 * after on_open. */
static void test_handover(void)
{
	struct rig r;
	start(&r);
	int moving = client(&r);
	expect_echo(moving, "before\n");
	int busy = client(&r);
	expect_echo(busy, "busy");
	/* A connection from "the previous generation", with input carried. */
	int resumed = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_SYS(connect(resumed, (struct sockaddr *)&r.addr, sizeof(r.addr)));
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = ++r.next_id;
	it.flags = BT_WIRE_ITEM_FD | BT_WIRE_ITEM_RESUMED;
	it.fd = accept4(r.lfd, NULL, NULL, SOCK_CLOEXEC);
	it.payload = "carried\n";
	it.payload_len = 8;
	CHECK_OP(bt_queue_push(r.q, &it), >=, 0);
	CHECK_OP(bt_queue_flush(r.q), >=, 1);
	char buf[64];
	CHECK_EQ(read_all(resumed, buf, 8, 5000), 8);
	CHECK(memcmp(buf, "carried\n", 8) == 0);
	expect_echo(resumed, "and on\n");
	close(resumed);

	int ho[2];
	CHECK_ERR(bt_fdpass_pair(ho, 0), 0);
	memset(&it, 0, sizeof(it));
	it.id = ++r.next_id;
	it.flags = BT_WIRE_ITEM_FD | BT_WIRE_ITEM_HANDOVER;
	it.fd = ho[0];
	CHECK_OP(bt_queue_push(r.q, &it), >=, 0);
	CHECK_OP(bt_queue_flush(r.q), >=, 1);
	struct bt_wire_drain d = {.deadline_ms = 1000};
	unsigned char dbuf[64];
	long dlen = bt_wire_encode_drain(dbuf, sizeof(dbuf), 0, &d);
	CHECK_ERR(bt_fdpass_send(bt_queue_channel(r.q), dbuf, (size_t)dlen, NULL, 0), 0);

	bt_fdpass_t *next;
	CHECK_ERR(bt_fdpass_open(&next, ho[1]), 0);
	struct pollfd p = {.fd = ho[1], .events = POLLIN};
	CHECK_EQ(poll(&p, 1, 5000), 1);
	struct bt_wire_msg m;
	CHECK_EQ(bt_fdpass_recv(next, &m), 1);
	CHECK_EQ(m.type, BT_WIRE_BATCH);
	CHECK_EQ(m.u.batch.n_items, 1);
	const struct bt_wire_item *got = &m.u.batch.items[0];
	CHECK_EQ(got->flags & (BT_WIRE_ITEM_FD | BT_WIRE_ITEM_RESUMED),
		 BT_WIRE_ITEM_FD | BT_WIRE_ITEM_RESUMED);
	CHECK_EQ(got->payload_len, 3);
	CHECK(memcmp(got->payload, "abc", 3) == 0);
	int fd = got->fd;
	CHECK_OP(fd, >=, 0);
	/* The same connection: what the client sends now is read here. */
	CHECK_EQ(write(moving, "there\n", 6), 6);
	CHECK_EQ(read_all(fd, buf, 6, 5000), 6);
	CHECK(memcmp(buf, "there\n", 6) == 0);
	CHECK_EQ(write(fd, "ok\n", 3), 3);
	CHECK_EQ(read_all(moving, buf, 3, 5000), 3);
	close(fd);
	close(moving);
	/* The busy one is closed at the deadline (1 s): EOF. */
	CHECK_EQ(read_all(busy, buf, sizeof(buf), 5000), 0);
	close(busy);
	int st;
	CHECK_EQ(waitpid(r.worker, &st, 0), r.worker);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		CHECK_SKIP("io_uring unavailable");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK_EQ(seen->exdev, 1);
	bt_queue_reap(r.q, NULL, NULL); /* our copy of the channel's end goes */
	CHECK_EQ(bt_fdpass_recv(next, &m), 0); /* and the worker's is closed */
	bt_fdpass_close(next);
	bt_queue_destroy(r.q);
	bt_queue_shm_destroy(r.shm);
	close(r.lfd);
}

/* The inlet handles: every error leaves the caller what it had. */
static void test_inlet_errors(void)
{
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	bt_queue_t *tq;
	CHECK_ERR(bt_queue_create_thread(&tq, &qc), 0);
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *ch, *peer;
	CHECK_ERR(bt_fdpass_open(&ch, sv[0]), 0);
	CHECK_ERR(bt_fdpass_open(&peer, sv[1]), 0);
	bt_queue_t *pq;
	CHECK_ERR(bt_queue_create(&pq, &qc, peer, NULL, 0), 0); /* not a thread ring */
	bt_queue_shm_t *shm;
	CHECK_ERR(bt_queue_shm_create(&shm, 1, 64), 0);
	bt_queue_inlet_t *in = NULL;

	CHECK_ERR(bt_queue_inlet_thread(&in, pq), -EINVAL);
	CHECK_ERR(bt_queue_inlet_thread(&in, NULL), -EINVAL);
	CHECK_ERR(bt_queue_inlet_thread(NULL, tq), -EINVAL);
	CHECK_ERR(bt_queue_inlet_forked(&in, ch, NULL, 0), -EINVAL);
	CHECK_ERR(bt_queue_inlet_forked(&in, NULL, shm, 0), -EINVAL);
	CHECK_ERR(bt_queue_inlet_wire(&in, NULL), -EINVAL);
	CHECK(in == NULL);
	CHECK_ERR(bt_queue_inlet_attach(&in, "/nonexistent/baton-test", 0, 0), -ENOENT);
	CHECK_ERR(bt_queue_inlet_attach(&in, "@baton-test-inlet-nobody", 0, 0), -ECONNREFUSED);
	CHECK_ERR(bt_queue_inlet_attach(&in, "@x", 0, BT_WIRE_MAX_FDS + 1), -EINVAL);
	CHECK_ERR(bt_queue_inlet_attach(&in, NULL, 0, 0), -EINVAL);
	CHECK(strcmp(bt_queue_inlet_kind(NULL), "none") == 0);
	bt_queue_inlet_destroy(NULL);

	/* A loop that refuses its config leaves the inlet to the caller. */
	CHECK_ERR(bt_queue_inlet_thread(&in, tq), 0);
	CHECK(strcmp(bt_queue_inlet_kind(in), "thread") == 0);
	static const struct bt_handler h = {.size = sizeof(h), .on_data = echo_data_unused};
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	lc.inlet = in;
	lc.handler = &h;
	lc.buf_size = 1;
	bt_loop_t *loop;
	CHECK_ERR(bt_loop_create(&loop, &lc), -EINVAL);
	bt_queue_inlet_destroy(in);
	CHECK_ERR(bt_queue_inlet_forked(&in, ch, shm, 0), 0);
	CHECK(strcmp(bt_queue_inlet_kind(in), "forked") == 0);
	lc.inlet = in;
	CHECK_ERR(bt_loop_create(&loop, &lc), -EINVAL);
	lc.buf_size = 4096;
	lc.buf_count = 64;
	lc.backend = backend;
	int rc = bt_loop_create(&loop, &lc);
	if (rc == -ENOSYS || rc == -EPERM)
		CHECK_SKIP("io_uring unavailable");
	CHECK_ERR(rc, 0); /* the loop owns the inlet and ch now */
	bt_loop_destroy(loop);
	bt_queue_destroy(pq);
	bt_queue_destroy(tq);
	bt_queue_shm_destroy(shm);
}

/* The worker's answer to "draining?". */
static int asks_draining(int fd)
{
	CHECK_EQ(write(fd, "draining?", 9), 9);
	char buf[8];
	ssize_t n = 0;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	CHECK_EQ(poll(&p, 1, 5000), 1);
	n = read(fd, buf, sizeof(buf));
	CHECK_OP(n, >, 0);
	CHECK(n == 3 || n == 4);
	return n == 4;
}

static void send_drain(bt_queue_t *q, unsigned deadline_ms)
{
	unsigned char buf[64];
	struct bt_wire_drain d = {.deadline_ms = deadline_ms};
	long len = bt_wire_encode_drain(buf, sizeof(buf), 0, &d);
	CHECK_ERR(bt_fdpass_send(bt_queue_channel(q), buf, (size_t)len, NULL, 0), 0);
}

/* Two producers feed one loop (two acceptor rings): each one's batches
 * are served and acknowledged on its own inlet; the loop drains only once
 * both are done: one said DRAIN, the other's channel ended. */
static void test_two_inlets(void)
{
	rig_two = 1;
	struct rig r;
	start(&r);
	rig_two = 0;
	int a = client_on(&r, r.q), b = client_on(&r, r.q2);
	expect_echo(a, "from the first\n");
	expect_echo(b, "from the second\n");
	CHECK_EQ(asks_draining(a), 0);
	send_drain(r.q, 5000);
	/* The second producer still hands over, and nothing drains. */
	int c = client_on(&r, r.q2);
	expect_echo(c, "after the first DRAIN\n");
	CHECK_EQ(asks_draining(c), 0);
	CHECK_EQ(asks_draining(a), 0);
	/* Both producers' items are acknowledged, each in its own slot. */
	double t0 = check_now();
	while ((bt_queue_reap(r.q, NULL, NULL), bt_queue_reap(r.q2, NULL, NULL),
		bt_queue_inflight(r.q) + bt_queue_inflight(r.q2)) && check_now() - t0 < 5)
		usleep(1000);
	CHECK_EQ(bt_queue_inflight(r.q), 0);
	CHECK_EQ(bt_queue_inflight(r.q2), 0);
	/* The second channel ends: now the loop drains. */
	bt_queue_destroy(r.q2);
	t0 = check_now();
	while (!asks_draining(b) && check_now() - t0 < 4)
		usleep(1000);
	CHECK_EQ(asks_draining(a), 1);
	close(a), close(b), close(c);
	int st;
	CHECK_EQ(waitpid(r.worker, &st, 0), r.worker);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
		CHECK_SKIP("io_uring unavailable");
	CHECK(WIFEXITED(st));
	CHECK_EQ(WEXITSTATUS(st), 0);
	bt_queue_destroy(r.q);
	bt_queue_shm_destroy(r.shm);
	close(r.lfd);
}

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	CHECK(d != NULL);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* bt_loop_add_inlet's refusals leave the inlet to the caller; nothing
 * leaks. */
static void test_add_inlet_errors(void)
{
	int fds0 = count_fds();
	enum { N = 17 };
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	bt_queue_t *tq[N];
	bt_queue_inlet_t *in[N];
	for (int i = 0; i < N; i++) {
		CHECK_ERR(bt_queue_create_thread(&tq[i], &qc), 0);
		CHECK_ERR(bt_queue_inlet_thread(&in[i], tq[i]), 0);
	}
	static const struct bt_handler h = {.size = sizeof(h), .on_data = echo_data_unused};
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	lc.inlet = in[0];
	lc.handler = &h;
	lc.backend = backend;
	bt_loop_t *loop;
	int rc = bt_loop_create(&loop, &lc);
	if (rc == -ENOSYS || rc == -EPERM)
		CHECK_SKIP("io_uring unavailable");
	CHECK_ERR(rc, 0);
	CHECK_ERR(bt_loop_add_inlet(NULL, in[1]), -EINVAL);
	CHECK_ERR(bt_loop_add_inlet(loop, NULL), -EINVAL);
	CHECK_ERR(bt_loop_add_inlet(loop, in[0]), -EINVAL); /* its own already */
	for (int i = 1; i < 16; i++)
		CHECK_ERR(bt_loop_add_inlet(loop, in[i]), 0);
	CHECK_ERR(bt_loop_add_inlet(loop, in[16]), -E2BIG);
	bt_loop_drain(loop, 10); /* nothing open: run returns at once */
	CHECK_ERR(bt_loop_run(loop), 0);
	bt_queue_inlet_t *late;
	CHECK_ERR(bt_queue_inlet_thread(&late, tq[16]), 0);
	CHECK_ERR(bt_loop_add_inlet(loop, late), -EBUSY);
	bt_queue_inlet_destroy(late);
	bt_queue_inlet_destroy(in[16]);
	bt_loop_destroy(loop); /* frees in[0..15] */
	for (int i = 0; i < N; i++)
		bt_queue_destroy(tq[i]);
	CHECK_EQ(count_fds(), fds0);
}

/* bt_queue_inlet_attach: connect by name and say HELLO. */
static void test_inlet_attach(void)
{
	char name[64];
	snprintf(name, sizeof(name), "@baton-test-inlet-%d", (int)getpid());
	int lfd = bt_fdpass_listen(name, 0);
	CHECK_OP(lfd, >=, 0);
	bt_queue_inlet_t *in;
	CHECK_ERR(bt_queue_inlet_attach(&in, name, 7, 16), 0);
	CHECK(strcmp(bt_queue_inlet_kind(in), "attached") == 0);
	int fd = bt_fdpass_accept(lfd, getuid(), 0);
	CHECK_OP(fd, >=, 0);
	bt_fdpass_t *ch;
	CHECK_ERR(bt_fdpass_open(&ch, fd), 0);
	struct bt_wire_msg m;
	CHECK_EQ(bt_fdpass_recv(ch, &m), 1);
	CHECK_EQ(m.type, BT_WIRE_HELLO);
	CHECK_EQ(m.u.hello.worker_id, 7);
	CHECK_EQ(m.u.hello.pid, (uint32_t)getpid());
	CHECK_EQ(m.u.hello.version, BT_WIRE_VERSION);
	CHECK_EQ(m.u.hello.max_batch, 16);
	bt_queue_inlet_destroy(in); /* closes its channel: EOF here */
	CHECK_EQ(bt_fdpass_recv(ch, &m), 0);
	bt_fdpass_close(ch);
	close(lfd);
}

/* A close by the server sends FIN at once (the client reads EOF) even
 * though the acceptor side may still hold its copy of the socket. */
static void test_server_close_fin(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	/* Do not reap: the producer keeps its copy of the socket. */
	CHECK_EQ(write(fd, "quit", 4), 4);
	char buf[64];
	ssize_t n = read_all(fd, buf, sizeof(buf), 5000);
	CHECK_EQ(n, 4);
	CHECK(memcmp(buf, "bye\n", 4) == 0);
	close(fd);
	stop(&r, 0);
}

/* A reply larger than the socket buffers goes out whole, then FIN. */
static void test_big_reply(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	CHECK_EQ(write(fd, "big", 3), 3);
	static char buf[(4 << 20) + 16];
	ssize_t n = read_all(fd, buf, sizeof(buf), 10000);
	CHECK_EQ(n, 4 << 20);
	for (size_t i = 0; i < (size_t)n; i += 4099)
		CHECK_EQ(buf[i], 'a' + i % 26);
	close(fd);
	stop(&r, 0);
}

/* The peer half-closes after its request: the reply still arrives. */
static void test_half_close(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	CHECK_EQ(write(fd, "ping\n", 5), 5);
	usleep(20000);
	CHECK_SYS(shutdown(fd, SHUT_WR));
	char buf[64];
	ssize_t n = read_all(fd, buf, sizeof(buf), 5000);
	CHECK_EQ(n, 5);
	close(fd);
	stop(&r, 0);
}

/* A timer closes a silent connection. */
static void test_timeout(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	double t0 = check_now();
	CHECK_EQ(write(fd, "slow", 4), 4);
	char buf[16];
	ssize_t n = read_all(fd, buf, sizeof(buf), 5000);
	double dt = check_now() - t0;
	CHECK_EQ(n, 0);
	CHECK_OP(dt * 1000, >=, 150);
	close(fd);
	stop(&r, 0);
}

/* A deadline moved later, moved sooner, and cancelled after it moved.  A
 * deadline moved later is not re-heaped (conn.c): its timer fires at the
 * old one and re-arms itself, which this keeps honest. */
static void test_timeout_moved(void)
{
	struct rig r;
	start(&r);
	char buf[16];
	int fd = client(&r);
	double t0 = check_now();
	expect_echo(fd, "tmo 200\n");
	expect_echo(fd, "tmo 1000\n");
	CHECK_EQ(read_all(fd, buf, sizeof(buf), 5000), 0);
	CHECK_OP((check_now() - t0) * 1000, >=, 990);
	close(fd);

	fd = client(&r);
	t0 = check_now();
	expect_echo(fd, "tmo 4000\n");
	expect_echo(fd, "tmo 100\n");
	CHECK_EQ(read_all(fd, buf, sizeof(buf), 5000), 0);
	CHECK_OP((check_now() - t0) * 1000, <, 3000);
	close(fd);

	fd = client(&r);
	expect_echo(fd, "tmo 100\n");
	expect_echo(fd, "tmo 300\n");
	expect_echo(fd, "tmo 0\n");
	CHECK_EQ(read_all(fd, buf, sizeof(buf), 700), -ETIMEDOUT); /* never fires */
	expect_echo(fd, "still\n");
	close(fd);
	stop(&r, 0);
}

/* Send q on fd; its one-line answer into buf (NUL-terminated). */
static void ask_line(int fd, const char *q, char *buf, size_t cap)
{
	CHECK_EQ(write(fd, q, strlen(q)), strlen(q));
	size_t got = 0;
	while (got == 0 || buf[got - 1] != '\n') {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, 5000), 1);
		CHECK_OP(got, <, cap - 1);
		ssize_t n = read(fd, buf + got, cap - 1 - got);
		CHECK_OP(n, >, 0);
		got += (size_t)n;
	}
	buf[got] = 0;
}

/* Items flagged BT_WIRE_ITEM_PROXY: the handler sees the connection (and
 * bt_conn_peer the header's address) only after its PROXY header, whole or
 * in pieces, with the bytes after it; no header, a broken one, or one not
 * complete within proxy_timeout_ms closes it unseen (no on_open, no
 * on_close) and counts it.  A connection without the flag is never
 * parsed. */
static void test_proxy_header(void)
{
	rig_proxy_ms = 1000;
	struct rig r;
	start(&r);
	char buf[64];
	/* A header and a request in one write. */
	int fd = client_flags(&r, r.q, BT_WIRE_ITEM_PROXY);
	const char *h = "PROXY TCP4 192.0.2.1 192.0.2.2 1111 80\r\npeer?\n";
	CHECK_EQ(write(fd, h, strlen(h)), strlen(h));
	CHECK_EQ(read_all(fd, buf, 15, 5000), 15);
	CHECK(memcmp(buf, "192.0.2.1:1111\n", 15) == 0);
	expect_echo(fd, "then echo\n");
	close(fd);
	/* In three writes, each one read apart. */
	fd = client_flags(&r, r.q, BT_WIRE_ITEM_PROXY);
	const char *parts[] = {"PROXY TCP4 198.51", ".100.7 192.0.2.2 2", "222 80\r\n"};
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(write(fd, parts[i], strlen(parts[i])), strlen(parts[i]));
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, 50), 0); /* nothing comes back meanwhile */
	}
	CHECK_EQ(write(fd, "peer?\n", 6), 6);
	CHECK_EQ(read_all(fd, buf, 18, 5000), 18);
	CHECK(memcmp(buf, "198.51.100.7:2222\n", 18) == 0);
	close(fd);
	/* The worker's descriptors, asked on a plain connection that stays
	 * open: the same after the refused and the late one (no leak). */
	int probe = client(&r);
	char fds0[16], fds1[16];
	ask_line(probe, "fds?\n", fds0, sizeof(fds0));
	/* Not a header: closed at once, unseen. */
	fd = client_flags(&r, r.q, BT_WIRE_ITEM_PROXY);
	double t0 = check_now();
	CHECK_EQ(write(fd, "GET / HTTP/1.1\r\n", 16), 16);
	ssize_t n = read_all(fd, buf, sizeof(buf), 5000);
	CHECK(n == 0 || n == -ECONNRESET);
	CHECK_OP((check_now() - t0) * 1000, <, 900); /* not at the deadline */
	close(fd);
	/* Not complete within 1000 ms: closed then. */
	fd = client_flags(&r, r.q, BT_WIRE_ITEM_PROXY);
	t0 = check_now();
	CHECK_EQ(write(fd, "PROXY TCP4 ", 11), 11);
	n = read_all(fd, buf, sizeof(buf), 5000);
	CHECK(n == 0 || n == -ECONNRESET);
	CHECK_OP((check_now() - t0) * 1000, >=, 950);
	close(fd);
	ask_line(probe, "fds?\n", fds1, sizeof(fds1));
	CHECK(strcmp(fds0, fds1) == 0);
	close(probe);
	/* Without the flag, a PROXY line is just bytes. */
	fd = client(&r);
	expect_echo(fd, "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n");
	close(fd);
	stop(&r, 0);
	rig_proxy_ms = 0;
	CHECK_EQ(seen->opens, 4);
	CHECK_EQ(seen->closes, 4);
	CHECK_EQ(seen->proxy_refused, 1);
	CHECK_EQ(seen->proxy_late, 1);
}

/* Drain with a connection still open: closed at the deadline, exit 0. */
static void test_drain_deadline(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	expect_echo(fd, "x\n");
	double t0 = check_now();
	stop(&r, 0);
	double dt = check_now() - t0;
	CHECK_OP(dt * 1000, >=, 900);
	CHECK_OP(dt * 1000, <, 5000);
	char buf[16];
	CHECK_EQ(read_all(fd, buf, sizeof(buf), 2000), 0);
	close(fd);
}

/* The acceptor vanishes: the worker serves what it has and exits. */
static void test_acceptor_gone(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	expect_echo(fd, "before\n");
	bt_queue_reap(r.q, NULL, NULL);
	bt_queue_destroy(r.q);
	expect_echo(fd, "after\n");
	close(fd);
	int st;
	CHECK_EQ(waitpid(r.worker, &st, 0), r.worker);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	bt_queue_shm_destroy(r.shm);
	close(r.lfd);
}

/* Blocking work goes to the pool; its result comes back on the loop. */
static void test_offload(void)
{
	struct rig r;
	start(&r);
	int fds[20];
	for (int i = 0; i < 20; i++)
		fds[i] = client(&r);
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 20; i++) {
			char msg[32];
			int n = snprintf(msg, sizeof(msg), "job:abc%d-%d\n", i, round);
			CHECK_EQ(write(fds[i], msg, (size_t)n), n);
		}
		for (int i = 0; i < 20; i++) {
			char want[32], got[32];
			int n = snprintf(want, sizeof(want), "ABC%d-%d\n", i, round);
			size_t have = 0;
			while (have < (size_t)n) {
				struct pollfd p = {.fd = fds[i], .events = POLLIN};
				CHECK_EQ(poll(&p, 1, 5000), 1);
				ssize_t k = read(fds[i], got + have, sizeof(got) - have);
				CHECK_OP(k, >, 0);
				have += (size_t)k;
			}
			CHECK(memcmp(got, want, (size_t)n) == 0);
		}
	}
	for (int i = 0; i < 20; i++)
		close(fds[i]);
	stop(&r, 0);
}

/* A drain waits for offloaded jobs: their results still go out. */
static void test_offload_drain(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	CHECK_EQ(write(fd, "job:late\n", 9), 9);
	usleep(5000); /* the job is running or queued */
	stop(&r, 0);  /* DRAIN now; the worker exits only after done() */
	char buf[16];
	ssize_t n = read_all(fd, buf, sizeof(buf), 5000);
	CHECK_EQ(n, 5);
	CHECK(memcmp(buf, "LATE\n", 5) == 0);
	close(fd);
}

/* A callback that aborts its connection still holds valid state until it
 * returns: on_close runs after it (deferred), not inside bt_conn_abort. */
static void test_close_in_callback(void)
{
	struct rig r;
	start(&r);
	for (int i = 0; i < 3; i++) {
		int fd = client(&r);
		CHECK_EQ(write(fd, "abort", 5), 5);
		char buf[16];
		ssize_t n = read_all(fd, buf, sizeof(buf), 5000);
		CHECK_OP(n, <=, 0); /* EOF or RST, nothing else */
		close(fd);
	}
	stop(&r, 0);
	CHECK_EQ(seen->bad, 0);
	CHECK_EQ(seen->closes, 3);
	CHECK_EQ(seen->close_reason, -ECONNABORTED);
}

/* Read what the pump wrote and check it. */
static void expect_pump(int fd, size_t total)
{
	static char buf[1 << 20];
	size_t got = 0;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, 10000), 1);
		ssize_t n = read(fd, buf, sizeof(buf));
		CHECK_OP(n, >=, 0);
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			size_t pos = got + (size_t)i; /* byte pos of the stream */
			size_t left = total - (pos / 65536) * 65536 - (pos % 65536);
			if (buf[i] != (char)('a' + left % 26))
				CHECK_EQ(buf[i], 'a' + left % 26);
		}
		got += (size_t)n;
	}
	CHECK_EQ(got, total);
}

/* A writer that respects the return value: 8 MiB written while the client
 * does not read, never more than the mark plus one write queued; then all
 * of it arrives, in order, through on_writable. */
static void test_backpressure_writer(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	CHECK_EQ(write(fd, "pump", 4), 4);
	usleep(300000); /* let it fill every buffer on the way */
	expect_pump(fd, 8 << 20);
	close(fd);
	stop(&r, 0);
	CHECK_OP(seen->max_pending, >, 256 * 1024);
	CHECK_OP(seen->max_pending, <=, 256 * 1024 + 65536);
	CHECK_OP(seen->writable, >=, 1);
}

/* A client that sends without reading stops being read: its sends block
 * (EAGAIN) after the socket buffers on the way fill, not after the server
 * has taken everything into memory.  Then it reads all of it back. */
static void test_backpressure_reader(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	static char chunk[65536];
	memset(chunk, 'e', sizeof(chunk));
	size_t sent = 0, limit = (size_t)256 << 20;
	double deadline = check_now() + 20;
	int blocked = 0;
	/* Blocked = no progress for 300 ms in a row. */
	double last_progress = check_now();
	while (sent < limit && check_now() < deadline) {
		ssize_t n = send(fd, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			sent += (size_t)n;
			last_progress = check_now();
			continue;
		}
		CHECK(n < 0 && errno == EAGAIN);
		if (check_now() - last_progress > 0.3) {
			blocked = 1;
			break;
		}
		usleep(10000);
	}
	CHECK(blocked);
	CHECK_OP(sent, <, (size_t)64 << 20);
	CHECK_SYS(shutdown(fd, SHUT_WR));
	/* Read it all back while the rest of what was sent is echoed. */
	static char buf[1 << 20];
	size_t got = 0;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, 10000), 1);
		ssize_t n = read(fd, buf, sizeof(buf));
		CHECK_OP(n, >=, 0);
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != 'e')
				CHECK_EQ(buf[i], 'e');
		got += (size_t)n;
	}
	CHECK_EQ(got, sent);
	close(fd);
	stop(&r, 0);
}

/* on_writable writes and closes while the loop is flushing output (the
 * connection queued for a flush that comes after it has been freed was a
 * use after free, seen as a worker killed by SIGSEGV in baton-httpd). */
static void test_writable_then_close(void)
{
	struct rig r;
	rig_out_high = 16384;
	start(&r);
	rig_out_high = 0;
	for (int i = 0; i < 5; i++) {
		int fd = client(&r);
		CHECK_EQ(write(fd, "tail", 4), 4);
		static char buf[TAIL_LEN + 100];
		size_t got = 0;
		for (;;) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			CHECK_EQ(poll(&p, 1, 10000), 1);
			CHECK_OP(got, <, sizeof(buf));
			ssize_t n = read(fd, buf + got, sizeof(buf) - got);
			CHECK_OP(n, >=, 0);
			if (n == 0)
				break;
			got += (size_t)n;
		}
		CHECK_EQ(got, TAIL_LEN + 4);
		CHECK(buf[0] == 't' && buf[TAIL_LEN - 1] == 't');
		CHECK(memcmp(buf + TAIL_LEN, "end\n", 4) == 0);
		close(fd);
	}
	stop(&r, 0);
	CHECK_EQ(seen->bad, 0);
	CHECK_EQ(seen->closes, 5);
}

/* One write of more than 2 GiB arrives whole and in order. */
static void test_write_over_2gib(void)
{
#ifdef __SANITIZE_THREAD__
	CHECK_SKIP("the worker holds 4 GiB: ThreadSanitizer's shadow of it is over 12 GB");
#endif
	struct rig r;
	start(&r);
	int fd = client(&r);
	CHECK_EQ(write(fd, "huge", 4), 4);
	static unsigned char want[2 * HUGE_P], buf[HUGE_P];
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = huge_byte(i);
	size_t got = 0;
	for (;;) {
		/* The first byte waits for the worker to fill and copy over
		 * 2 GiB of fresh memory: up to a minute and a half on a loaded
		 * VM; then 30 s of silence at most. */
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, got ? 30000 : 90000), 1);
		ssize_t n = read(fd, buf, sizeof(buf));
		CHECK_OP(n, >=, 0);
		if (n == 0)
			break;
		if (memcmp(buf, want + got % HUGE_P, (size_t)n) != 0)
			CHECK_EQ(got, (size_t)-1); /* wrong bytes at about this offset */
		got += (size_t)n;
	}
	CHECK_EQ(got, HUGE_LEN);
	close(fd);
	stop(&r, 0);
	CHECK_EQ(seen->bad, 0);
}

/* A small reply, then one larger than the segment kept from it: both go
 * out (the emptied segment once stalled the queue, stuck ahead of the
 * larger one). */
static void test_small_then_large(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	expect_echo(fd, "x\n");
	static char big[20000], back[20000];
	memset(big, 'b', sizeof(big));
	CHECK_EQ(write(fd, big, sizeof(big)), sizeof(big));
	size_t got = 0;
	while (got < sizeof(back)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, 5000), 1);
		ssize_t n = read(fd, back + got, sizeof(back) - got);
		CHECK_OP(n, >, 0);
		got += (size_t)n;
	}
	CHECK(memcmp(back, big, sizeof(big)) == 0);
	expect_echo(fd, "y\n");
	close(fd);
	stop(&r, 0);
}

/* A temporary file of n bytes (a pattern); its path in path. */
static void make_file(char *path, size_t cap, size_t n, int drop_cache)
{
	snprintf(path, cap, "/tmp/bt_test_loop_%d_XXXXXX", (int)getpid());
	int fd = mkstemp(path);
	CHECK_OP(fd, >=, 0);
	static char block[65536];
	for (size_t off = 0; off < n; off += sizeof(block)) {
		size_t k = n - off < sizeof(block) ? n - off : sizeof(block);
		for (size_t i = 0; i < k; i++)
			block[i] = (char)((off + i) * 7 % 251);
		CHECK_EQ(write(fd, block, k), k);
	}
	if (drop_cache) {
		/* Out of the page cache: the reads must wait for the disk,
		 * which sends them to the thread pool. */
		CHECK_SYS(fsync(fd));
		CHECK_ERR(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	}
	close(fd);
}

static void expect_file(int fd, size_t n)
{
	static char buf[1 << 20];
	size_t got = 0;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		CHECK_EQ(poll(&p, 1, 10000), 1);
		ssize_t k = read(fd, buf, sizeof(buf));
		if (k < 0 && errno == ECONNRESET)
			break;
		CHECK_OP(k, >=, 0);
		if (k == 0)
			break;
		for (ssize_t i = 0; i < k; i++)
			if (buf[i] != (char)((got + (size_t)i) * 7 % 251))
				CHECK_EQ(buf[i], (char)((got + (size_t)i) * 7 % 251));
		got += (size_t)k;
	}
	CHECK_EQ(got, n);
}

/* Files of 0 bytes to 5 MiB, hot and cold in the page cache, go out whole
 * through bt_conn_sendfile, in order after what was written before. */
static void test_sendfile(void)
{
	struct rig r;
	start(&r);
	static const size_t sizes[] = {1, 4096, 131072, 131073, 5 << 20};
	for (int cold = 0; cold < 2; cold++)
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			char path[64], cmd[128];
			make_file(path, sizeof(path), sizes[i], cold);
			int fd = client(&r);
			int n = snprintf(cmd, sizeof(cmd), "file %s %zu", path, sizes[i]);
			CHECK_EQ(write(fd, cmd, (size_t)n), n);
			expect_file(fd, sizes[i]);
			close(fd);
			unlink(path);
		}
	stop(&r, 0);
	CHECK_EQ(seen->bad, 0);
	CHECK_EQ(seen->close_reason, 0);
}

/* A file shorter than the length asked for: the peer was promised more, so
 * the connection is aborted (-EIO) after the bytes that exist. */
static void test_sendfile_short(void)
{
	struct rig r;
	start(&r);
	for (int cold = 0; cold < 2; cold++) {
		char path[64], cmd[128];
		make_file(path, sizeof(path), 300000, cold);
		int fd = client(&r);
		int n = snprintf(cmd, sizeof(cmd), "file %s %d", path, 400000);
		CHECK_EQ(write(fd, cmd, (size_t)n), n);
		expect_file(fd, 300000);
		close(fd);
		unlink(path);
	}
	stop(&r, 0);
	CHECK_EQ(seen->bad, 0);
	CHECK_EQ(seen->close_reason, -EIO);
}

/* Every error of bt_conn_sendfile leaves the caller its descriptor. */
static void test_sendfile_errors(void)
{
	struct rig r;
	start(&r);
	int fd = client(&r);
	CHECK_EQ(write(fd, "sfbad\n", 6), 6);
	char buf[16];
	CHECK_EQ(read_all(fd, buf, sizeof(buf), 5000), 3);
	close(fd);
	stop(&r, 0);
	CHECK_EQ(seen->rc[0], -EINVAL);
	CHECK_EQ(seen->rc[1], -EINVAL);
	CHECK_EQ(seen->fd_ok[1], 1);
	CHECK_EQ(seen->rc[2], 0);
	CHECK_EQ(seen->fd_ok[2], 0);
	CHECK_EQ(seen->rc[3], -EPIPE);
	CHECK_EQ(seen->fd_ok[3], 1);
	CHECK_EQ(seen->rc[4], -EPIPE);
}

static const struct check_case cases[] = {
	{"close_in_callback", test_close_in_callback},
	{"small_then_large", test_small_then_large},
	{"writable_then_close", test_writable_then_close},
	{"write_over_2gib", test_write_over_2gib},
	{"backpressure_writer", test_backpressure_writer},
	{"backpressure_reader", test_backpressure_reader},
	{"sendfile", test_sendfile},
	{"sendfile_short", test_sendfile_short},
	{"sendfile_errors", test_sendfile_errors},
	{"offload", test_offload},
	{"offload_drain", test_offload_drain},
	{"echo_many", test_echo_many},
	{"echo_wire_ack", test_echo_wire_ack},
	{"wire_heartbeat", test_wire_heartbeat},
	{"handover", test_handover},
	{"inlet_errors", test_inlet_errors},
	{"inlet_attach", test_inlet_attach},
	{"two_inlets", test_two_inlets},
	{"add_inlet_errors", test_add_inlet_errors},
	{"server_close_fin", test_server_close_fin},
	{"big_reply", test_big_reply},
	{"half_close", test_half_close},
	{"timeout", test_timeout},
	{"timeout_moved", test_timeout_moved},
	{"proxy_header", test_proxy_header},
	{"drain_deadline", test_drain_deadline},
	{"acceptor_gone", test_acceptor_gone},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	const char *b = getenv("BATON_TEST_BACKEND");
	backend = b && !strcmp(b, "epoll") ? BT_BACKEND_EPOLL : BT_BACKEND_URING;
	printf("backend: %s\n", backend == BT_BACKEND_EPOLL ? "epoll" : "io_uring");
	return check_main(argc, argv, cases);
}
