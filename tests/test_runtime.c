/* SPDX-License-Identifier: MIT */
/*
 * The runtime through baton/runtime.h: config init without side effects,
 * bt_runtime_take_argv, the configurations bt_runtime_run refuses, and the
 * runtime as a work queue: a producer pushing items (with and without a
 * descriptor) to worker threads and to worker processes, its watches on
 * the supervisor's loop, bt_runtime_push's errors, bt_runtime_stop; a
 * handler asking for a connection's descriptor and passing it on (in
 * thread mode on io_uring with BATON_DIRECT=1 the connection is a direct
 * descriptor: the runtime installs a regular one for it).  Each
 * case runs in a child of its own (check.h), descriptors counted around it.
 */
#include "check.h"

#include <baton/log.h>
#include <baton/runtime.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

/* --- configuration ------------------------------------------------------------------ */

static void test_config_init_pure(void)
{
	char a0[] = "/usr/bin/prog", a1[] = "--workers", a2[] = "3";
	char *argv[] = {a0, a1, a2, NULL};
	struct bt_runtime_config cfg;
	CHECK_ERR(bt_runtime_config_init(&cfg, NULL, 3, argv), 0);
	CHECK(argv[0] == a0 && argv[1] == a1 && argv[2] == a2); /* argv untouched */
	CHECK(strcmp(cfg.name, "prog") == 0);
	CHECK_EQ(cfg.argc, 3);
	CHECK_ERR(bt_runtime_config_init(NULL, "x", 0, NULL), -EINVAL);
	CHECK_ERR(bt_runtime_config_init_sized(&cfg, 8, "x", 0, NULL), -EINVAL);
}

static void test_take_argv(void)
{
	char area[] = "prog\0--listen\0x"; /* contiguous, as the kernel lays argv out */
	char *argv[] = {area, area + 5, area + 14, NULL};
	bt_runtime_take_argv(3, argv);
	CHECK(argv[0] != area && argv[1] != area + 5 && argv[2] != area + 14);
	CHECK(strcmp(argv[0], "prog") == 0 && strcmp(argv[1], "--listen") == 0 &&
	      strcmp(argv[2], "x") == 0);
	char *moved = argv[0];
	bt_runtime_take_argv(3, argv); /* once per process */
	CHECK(argv[0] == moved);
	for (int i = 0; i < 3; i++)
		free(argv[i]);
}

/* --- work items ---------------------------------------------------------------------- */

struct work {
	unsigned n;          /* items to push */
	unsigned next;       /* the next to push */
	int fd_every;        /* every k-th item carries a descriptor */
	int pipefd[2];       /* workers report "id\n" (process mode) */
	int efd;             /* thread mode: an item done */
	_Atomic unsigned done_thr, bad_thr;
	unsigned done;       /* seen by the supervisor */
	unsigned bad;        /* arrived wrong: payload, or fd where none was sent */
	unsigned char *seen;
	unsigned twice;
	unsigned rooms;
	int bad_rc, late_rc; /* bt_runtime_push of a bad item, after the stop */
	char rbuf[4096];
	size_t rlen;
	bt_runtime_watch_t *w;
	int start_rc;
};

static struct work W;

static void on_item(bt_loop_t *loop, const struct bt_wire_item *it)
{
	(void)loop;
	char want[32];
	snprintf(want, sizeof(want), "item %llu", (unsigned long long)it->id);
	int ok = it->payload_len == strlen(want) && memcmp(it->payload, want, it->payload_len) == 0 &&
		 (it->fd >= 0) == (it->id % (unsigned)W.fd_every == 0);
	if (it->fd >= 0)
		close(it->fd);
	char line[32];
	int len = snprintf(line, sizeof(line), "%llu %d\n", (unsigned long long)it->id, ok);
	if (W.efd >= 0) {
		/* Thread mode: count here, say so on the eventfd. */
		if (!ok)
			atomic_fetch_add(&W.bad_thr, 1);
		if (it->id < W.n && __atomic_fetch_add(&W.seen[it->id], 1, __ATOMIC_RELAXED))
			atomic_fetch_add(&W.bad_thr, 1); /* twice */
		atomic_fetch_add(&W.done_thr, 1);
		uint64_t one = 1;
		if (write(W.efd, &one, sizeof(one)) != sizeof(one))
			abort();
	} else if (write(W.pipefd[1], line, (size_t)len) != len) {
		abort();
	}
}

static void push_some(bt_runtime_t *rt)
{
	while (W.next < W.n) {
		char pay[32];
		snprintf(pay, sizeof(pay), "item %u", W.next);
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		it.id = W.next;
		it.payload = pay;
		it.payload_len = (uint32_t)strlen(pay);
		it.fd = -1;
		if (W.next % (unsigned)W.fd_every == 0) {
			it.fd = dup(W.pipefd[0]);
			it.flags = BT_WIRE_ITEM_FD;
		}
		int rc = bt_runtime_push(rt, &it);
		if (rc == -EAGAIN) {
			if (it.fd >= 0)
				close(it.fd);
			return; /* on_room comes */
		}
		CHECK_ERR(rc, 0);
		W.next++;
	}
}

static void finish(bt_runtime_t *rt)
{
	if (W.done == W.n) {
		bt_runtime_unwatch(rt, W.w);
		bt_runtime_stop(rt);
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		W.late_rc = bt_runtime_push(rt, &it);
	}
}

static void on_reports(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)w, (void)revents, (void)arg;
	ssize_t n = read(fd, W.rbuf + W.rlen, sizeof(W.rbuf) - 1 - W.rlen);
	if (n <= 0)
		return;
	W.rlen += (size_t)n;
	char *start = W.rbuf, *nl;
	while ((nl = memchr(start, '\n', W.rlen - (size_t)(start - W.rbuf)))) {
		unsigned id;
		int ok;
		*nl = 0;
		if (sscanf(start, "%u %d", &id, &ok) == 2 && id < W.n) {
			W.twice += W.seen[id];
			W.seen[id] = 1;
			W.bad += !ok;
			W.done++;
		}
		start = nl + 1;
	}
	W.rlen -= (size_t)(start - W.rbuf);
	memmove(W.rbuf, start, W.rlen);
	finish(rt);
}

static void on_efd(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)w, (void)revents, (void)arg;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return;
	W.done = atomic_load(&W.done_thr);
	W.bad = atomic_load(&W.bad_thr);
	finish(rt);
}

static int start(bt_runtime_t *rt, void *user)
{
	CHECK(user == &W);
	struct bt_wire_item bad;
	memset(&bad, 0, sizeof(bad));
	bad.flags = BT_WIRE_ITEM_FD; /* and fd 0 is fine, but payload_len without payload is not */
	bad.fd = 0;
	bad.payload_len = 4;
	W.bad_rc = bt_runtime_push(rt, &bad);
	if (W.start_rc)
		return W.start_rc;
	int rc = W.efd >= 0 ? bt_runtime_watch_fd(rt, &W.w, W.efd, BT_WATCH_IN, on_efd, NULL)
			    : bt_runtime_watch_fd(rt, &W.w, W.pipefd[0], BT_WATCH_IN, on_reports, NULL);
	if (rc < 0)
		return rc;
	push_some(rt);
	return 0;
}

static void on_room(bt_runtime_t *rt, void *user)
{
	(void)user;
	W.rooms++;
	push_some(rt);
}

static const struct bt_handler item_handler = {.size = sizeof(struct bt_handler),
					       .on_item = on_item};
static const struct bt_producer producer = {
	.size = sizeof(struct bt_producer), .start = start, .on_room = on_room};

static int run_items(int mode, unsigned n)
{
	bt_log_set_level(BT_LOG_ERROR);
	memset(&W, 0, sizeof(W));
	W.n = n;
	W.fd_every = 3;
	W.efd = -1;
	W.seen = calloc(n, 1);
	CHECK_SYS(pipe2(W.pipefd, O_CLOEXEC));
	CHECK_SYS(fcntl(W.pipefd[0], F_SETFL, O_NONBLOCK));
	if (mode == BT_MODE_THREAD) {
		W.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		CHECK_OP(W.efd, >=, 0);
	}
	struct bt_runtime_config cfg;
	CHECK_ERR(bt_runtime_config_init(&cfg, "test_runtime", 0, NULL), 0);
	cfg.mode = mode;
	cfg.workers = 2;
	cfg.producer = &producer;
	cfg.inherit_fds = &W.pipefd[1];
	cfg.ninherit = 1;
	int rc = bt_runtime_run(&cfg, &item_handler, &W);
	close(W.pipefd[0]);
	close(W.pipefd[1]);
	if (W.efd >= 0)
		close(W.efd);
	free(W.seen);
	return rc;
}

static void check_items(int mode)
{
	unsigned n = 3000; /* more than one batch each, more than a ring */
	int rc = run_items(mode, n);
	CHECK_EQ(rc, 0);
	CHECK_EQ(W.done, n);
	CHECK_EQ(W.twice, 0);
	CHECK_EQ(W.bad, 0);
	CHECK_ERR(W.bad_rc, -EINVAL);
	CHECK_ERR(W.late_rc, -ESHUTDOWN);
}

static void test_items_thread(void)
{
	check_items(BT_MODE_THREAD);
}

static void test_items_process(void)
{
	check_items(BT_MODE_PROCESS);
}

/* A producer whose start fails ends the server with status 1. */
static void test_producer_fails(void)
{
	bt_log_set_level(BT_LOG_ERROR);
	memset(&W, 0, sizeof(W));
	W.start_rc = -EIO;
	W.efd = -1;
	W.fd_every = 1;
	CHECK_SYS(pipe2(W.pipefd, O_CLOEXEC));
	struct bt_runtime_config cfg;
	CHECK_ERR(bt_runtime_config_init(&cfg, "test_runtime", 0, NULL), 0);
	cfg.mode = BT_MODE_THREAD;
	cfg.workers = 1;
	cfg.producer = &producer;
	CHECK_EQ(bt_runtime_run(&cfg, &item_handler, &W), 1);
	close(W.pipefd[0]);
	close(W.pipefd[1]);
}

static void nop_data(bt_conn_t *c, const void *d, size_t n)
{
	(void)c, (void)d, (void)n;
}

/* What bt_runtime_run refuses, with status 2 and nothing left open. */
static void test_run_refuses(void)
{
	bt_log_set_level(BT_LOG_ERROR);
	struct bt_runtime_config cfg;
	CHECK_ERR(bt_runtime_config_init(&cfg, "test_runtime", 0, NULL), 0);
	struct bt_handler none = {.size = sizeof(struct bt_handler)};
	CHECK_EQ(bt_runtime_run(&cfg, &none, NULL), 2); /* neither on_data nor on_item */
	struct bt_handler data = {.size = sizeof(struct bt_handler), .on_data = nop_data};
	CHECK_EQ(bt_runtime_run(&cfg, &data, NULL), 2); /* nothing to listen on */
	cfg.producer = &producer;
	CHECK_EQ(bt_runtime_run(&cfg, &data, NULL), 2); /* a producer, no on_item */
	struct bt_producer nostart = {.size = sizeof(struct bt_producer)};
	cfg.producer = &nostart;
	CHECK_EQ(bt_runtime_run(&cfg, &item_handler, NULL), 2);
	struct bt_producer nosize = {.start = start};
	cfg.producer = &nosize;
	CHECK_EQ(bt_runtime_run(&cfg, &item_handler, NULL), 2);
	cfg.producer = &producer;
	int fds[BT_RUNTIME_MAX_INHERIT + 1] = {0};
	cfg.inherit_fds = fds;
	cfg.ninherit = BT_RUNTIME_MAX_INHERIT + 1;
	CHECK_EQ(bt_runtime_run(&cfg, &item_handler, NULL), 2);
	cfg.inherit_fds = NULL;
	cfg.ninherit = 1;
	CHECK_EQ(bt_runtime_run(&cfg, &item_handler, NULL), 2);
	CHECK_EQ(bt_runtime_run(NULL, &item_handler, NULL), 2);
	CHECK_EQ(bt_runtime_run(&cfg, NULL, NULL), 2);
	/* The calls of a producer refuse a NULL runtime. */
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	CHECK_ERR(bt_runtime_push(NULL, &it), -EINVAL);
	bt_runtime_watch_t *w;
	CHECK_ERR(bt_runtime_watch_fd(NULL, &w, 0, BT_WATCH_IN, on_efd, NULL), -EINVAL);
	bt_runtime_stop(NULL);
	bt_runtime_unwatch(NULL, NULL);
}

/* --- a connection's descriptor, passed on ---------------------------------- */

static struct {
	int sp[2];         /* the handler passes the descriptor on over sp[0] */
	char path[108];    /* the server's unix listener */
	int fd, fd_again;  /* what bt_conn_fd returned, twice */
	int cloexec;
	int client_rc;     /* 0: the client saw everything */
} P;

static void pass_data(bt_conn_t *c, const void *d, size_t n)
{
	if (n >= 3 && !memcmp(d, "bye", 3)) {
		bt_conn_write(c, "bye\n", 4);
		bt_conn_close(c);
		return;
	}
	P.fd = bt_conn_fd(c);
	P.fd_again = bt_conn_fd(c);
	int fl = P.fd >= 0 ? fcntl(P.fd, F_GETFD) : -1;
	P.cloexec = fl >= 0 && (fl & FD_CLOEXEC);
	if (P.fd < 0)
		return;
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	char b = 'f';
	struct iovec iov = {.iov_base = &b, .iov_len = 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			   .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &P.fd, sizeof(int));
	if (sendmsg(P.sp[0], &m, MSG_NOSIGNAL) != 1)
		P.fd = -2;
}

static int read_exact(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10000) != 1)
			return -1;
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* The client: "hi", then what arrives through the descriptor passed on
 * (written by this thread, on the descriptor it received), "bye", EOF. */
static void *pass_client(void *arg)
{
	(void)arg;
	int rc = 1;
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	memcpy(a.sun_path, P.path, strlen(P.path));
	for (int i = 0; i < 500 && connect(s, (struct sockaddr *)&a, sizeof(a)) < 0; i++)
		usleep(10000); /* until the server listens */
	char buf[16], cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = buf, .iov_len = 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			   .msg_controllen = sizeof(cbuf)};
	struct pollfd p = {.fd = P.sp[1], .events = POLLIN};
	if (write(s, "hi", 2) != 2 || poll(&p, 1, 10000) != 1 ||
	    recvmsg(P.sp[1], &m, MSG_CMSG_CLOEXEC) != 1)
		goto out;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		goto out;
	int fd2;
	memcpy(&fd2, CMSG_DATA(cm), sizeof(int));
	ssize_t w = write(fd2, "passed on\n", 10);
	close(fd2);
	if (w != 10 || read_exact(s, buf, 10) < 0 || memcmp(buf, "passed on\n", 10) ||
	    write(s, "bye", 3) != 3 || read_exact(s, buf, 4) < 0 || memcmp(buf, "bye\n", 4))
		goto out;
	p.fd = s;
	rc = poll(&p, 1, 10000) == 1 && read(s, buf, 1) == 0 ? 0 : 2; /* EOF */
out:
	P.client_rc = rc;
	close(s);
	kill(getpid(), SIGTERM); /* the server drains and returns */
	return NULL;
}

static void test_conn_fd_passed_on(void)
{
	bt_log_set_level(BT_LOG_ERROR);
	memset(&P, 0, sizeof(P));
	P.client_rc = -1;
	snprintf(P.path, sizeof(P.path), "/tmp/baton-test-pass-%d.sock", (int)getpid());
	unlink(P.path);
	CHECK_SYS(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, P.sp));
	/* The client thread keeps SIGTERM blocked, as the runtime's threads
	 * do: the signal it sends is read by the supervisor's signalfd. */
	sigset_t term, old;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	CHECK_EQ(pthread_sigmask(SIG_BLOCK, &term, &old), 0);
	pthread_t t;
	CHECK_EQ(pthread_create(&t, NULL, pass_client, NULL), 0);
	/* Direct descriptors where the backend is io_uring (this case runs
	 * in a child of its own: the variable goes with it). */
	setenv("BATON_DIRECT", "1", 1);
	struct bt_runtime_config cfg;
	CHECK_ERR(bt_runtime_config_init(&cfg, "test_runtime", 0, NULL), 0);
	cfg.mode = BT_MODE_THREAD;
	cfg.workers = 1;
	cfg.listen[0] = P.path;
	cfg.nlisten = 1;
	cfg.drain_timeout_ms = 2000;
	struct bt_handler h = {.size = sizeof(struct bt_handler), .on_data = pass_data};
	CHECK_EQ(bt_runtime_run(&cfg, &h, NULL), 0);
	CHECK_EQ(pthread_join(t, NULL), 0);
	CHECK_EQ(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
	close(P.sp[0]);
	close(P.sp[1]);
	unlink(P.path);
	CHECK_OP(P.fd, >=, 0);
	CHECK_EQ(P.fd_again, P.fd); /* installed once */
	CHECK_EQ(P.cloexec, 1);
	CHECK_EQ(P.client_rc, 0);
}

static const struct check_case cases[] = {
	{"config_init_pure", test_config_init_pure},
	{"take_argv", test_take_argv},
	{"run_refuses", test_run_refuses},
	{"items_thread", test_items_thread},
	{"items_process", test_items_process},
	{"producer_fails", test_producer_fails},
	{"conn_fd_passed_on", test_conn_fd_passed_on},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
