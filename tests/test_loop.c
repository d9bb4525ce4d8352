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

static void echo_data(bt_conn_t *c, const void *data, size_t len)
{
	if (len > 4 && memcmp(data, "job:", 4) == 0 && len - 4 <= 256) {
		struct offload *o = malloc(sizeof(*o));
		o->c = c;
		o->len = len - 4;
		memcpy(o->buf, (const char *)data + 4, o->len);
		if (bt_loop_submit(bt_conn_loop(c), NULL, offload_work, offload_done, o) < 0) {
			free(o);
			bt_conn_write(c, "busy\n", 5);
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
	if (len >= 4 && memcmp(data, "slow", 4) == 0) {
		bt_conn_set_timeout(c, 200);
		return;
	}
	bt_conn_write(c, data, len);
}

static void echo_close(bt_conn_t *c, int reason)
{
	(void)c;
	(void)reason;
}

static const struct bt_handler echo = {
	.size = sizeof(struct bt_handler),
	.on_data = echo_data,
	.on_close = echo_close,
};

struct rig {
	bt_queue_shm_t *shm;
	bt_queue_t *q;
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
	CHECK_ERR(bt_queue_shm_create(&r->shm, 1, 1024), 0);
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	r->worker = fork();
	CHECK_OP(r->worker, >=, 0);
	if (r->worker == 0) {
		close(sv[0]);
		bt_fdpass_t *ch;
		if (bt_fdpass_open(&ch, sv[1]) < 0)
			_exit(10);
		struct bt_loop_config cfg;
		bt_loop_config_init(&cfg);
		cfg.channel = ch;
		cfg.shm = r->shm;
		cfg.slot = 0;
		cfg.handler = &echo;
		cfg.backend = backend;
		cfg.drain_timeout_ms = 2000;
		bt_loop_t *loop;
		int rc = bt_loop_create(&loop, &cfg);
		if (rc < 0) {
			fprintf(stderr, "bt_loop_create: %s\n", strerror(-rc));
			_exit(rc == -ENOSYS || rc == -EPERM ? 77 : 11);
		}
		rc = bt_loop_run(loop);
		bt_loop_destroy(loop);
		_exit(rc == 0 ? 0 : 12);
	}
	close(sv[1]);
	bt_fdpass_t *ch;
	CHECK_ERR(bt_fdpass_open(&ch, sv[0]), 0);
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	qc.max_inflight = 1024;
	CHECK_ERR(bt_queue_create(&r->q, &qc, ch, r->shm, 0), 0);

	r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_OP(r->lfd, >=, 0);
	r->addr.sin_family = AF_INET;
	r->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_SYS(bind(r->lfd, (struct sockaddr *)&r->addr, sizeof(r->addr)));
	socklen_t len = sizeof(r->addr);
	CHECK_SYS(getsockname(r->lfd, (struct sockaddr *)&r->addr, &len));
	CHECK_SYS(listen(r->lfd, 1024));
}

/* A client connects; we accept and hand the connection to the worker. */
static int client(struct rig *r)
{
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_OP(c, >=, 0);
	CHECK_SYS(connect(c, (struct sockaddr *)&r->addr, sizeof(r->addr)));
	int s = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
	CHECK_OP(s, >=, 0);
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = ++r->next_id;
	it.flags = BT_WIRE_ITEM_FD;
	it.fd = s;
	CHECK_OP(bt_queue_push(r->q, &it), >=, 0);
	CHECK_OP(bt_queue_flush(r->q), >=, 1);
	bt_queue_reap(r->q, NULL, NULL);
	return c;
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
	CHECK_EQ(WEXITSTATUS(st), expect_status);
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

static const struct check_case cases[] = {
	{"offload", test_offload},
	{"offload_drain", test_offload_drain},
	{"echo_many", test_echo_many},
	{"server_close_fin", test_server_close_fin},
	{"big_reply", test_big_reply},
	{"half_close", test_half_close},
	{"timeout", test_timeout},
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
