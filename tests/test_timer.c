/* SPDX-License-Identifier: MIT */
/*
 * The application's timers and fd watches on a worker loop, through
 * baton/loop.h, on the backend BATON_TEST_BACKEND names (io_uring or
 * epoll): ordering, cancellation inside a callback, 100,000 timers, a
 * repeating timer's drift; watches of a pipe, an eventfd and a socket
 * whose peer closes; the errors.
 *
 * Each case runs a loop on a channel whose other end the test holds; a
 * callback ends the loop by closing that end (EOF: the loop drains and
 * returns).
 */
#include "check.h"

#include <baton/loop.h>

#include <sys/eventfd.h>
#include <sys/socket.h>

static int backend;
static int peer = -1;   /* the channel's other end: closing it ends the loop */
static int bad;         /* a callback saw something wrong: its line */
#define BAD() (bad = bad ? bad : __LINE__)

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void end_loop(void)
{
	if (peer >= 0)
		close(peer);
	peer = -1;
}

static void on_data(bt_conn_t *c, const void *d, size_t n)
{
	(void)c, (void)d, (void)n;
}

/* Run a loop whose on_start is start; returns bt_loop_run's result. */
static int run_loop(int (*start)(bt_loop_t *loop))
{
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *ch;
	CHECK_ERR(bt_fdpass_open(&ch, sv[0]), 0);
	struct bt_queue_shm *shm;
	CHECK_ERR(bt_queue_shm_create(&shm, 1, 64), 0);
	struct bt_handler h = {.size = sizeof(h), .on_data = on_data, .on_start = start};
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	CHECK_ERR(bt_queue_inlet_forked(&lc.inlet, ch, shm, 0), 0);
	lc.handler = &h;
	lc.backend = backend;
	bt_loop_t *loop;
	CHECK_ERR(bt_loop_create(&loop, &lc), 0);
	CHECK_EQ(strcmp(bt_loop_backend(loop), backend == BT_BACKEND_EPOLL ? "epoll" : "io_uring"), 0);
	peer = sv[1];
	bad = 0;
	int rc = bt_loop_run(loop);
	bt_loop_destroy(loop);
	bt_queue_shm_destroy(shm);
	end_loop();
	return rc;
}

/* A safety net: no case may hang. */
static void deadline_cb(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t, (void)arg;
	BAD();
	end_loop();
}

static void safety(bt_loop_t *loop)
{
	CHECK_ERR(bt_loop_timer_start(loop, NULL, 20000, 0, deadline_cb, NULL), 0);
}

/* --- ordering -------------------------------------------------------------- */

static char order[16];
static int norder;

static void note(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t;
	if (norder < (int)sizeof(order) - 1)
		order[norder++] = *(const char *)arg;
	if (*(const char *)arg == 'z')
		end_loop();
}

static int start_order(bt_loop_t *loop)
{
	safety(loop);
	norder = 0;
	memset(order, 0, sizeof(order));
	static const char *names = "abcdefz";
	/* Started out of order; equal delays keep their start order. */
	bt_loop_timer_start(loop, NULL, 30, 0, note, (void *)&names[4]); /* e */
	bt_loop_timer_start(loop, NULL, 0, 0, note, (void *)&names[0]);  /* a */
	bt_loop_timer_start(loop, NULL, 20, 0, note, (void *)&names[3]); /* d */
	bt_loop_timer_start(loop, NULL, 0, 0, note, (void *)&names[1]);  /* b */
	bt_loop_timer_start(loop, NULL, 10, 0, note, (void *)&names[2]); /* c */
	bt_loop_timer_start(loop, NULL, 45, 0, note, (void *)&names[5]); /* f */
	bt_loop_timer_start(loop, NULL, 60, 0, note, (void *)&names[6]); /* z */
	return 0;
}

static void test_order(void)
{
	CHECK_ERR(run_loop(start_order), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(strcmp(order, "abcdefz"), 0);
}

/* --- cancellation inside callbacks ---------------------------------------- */

static bt_timer_t *victim, *selfstop, *rep;
static int victim_ran, selfstop_ran, rep_ran;

static void victim_cb(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t, (void)arg;
	victim_ran++;
}

/* Stops the victim, due at the same moment, then itself. */
static void killer_cb(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)arg;
	selfstop_ran++;
	bt_loop_timer_stop(loop, victim);
	bt_loop_timer_stop(loop, t); /* its own: freed after we return */
	bt_loop_timer_stop(loop, t); /* twice is harmless */
}

static void rep_cb(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)arg;
	if (++rep_ran == 3) {
		bt_loop_timer_stop(loop, t);
		end_loop();
	}
	if (rep_ran > 3)
		BAD();
}

static int start_cancel(bt_loop_t *loop)
{
	safety(loop);
	victim_ran = selfstop_ran = rep_ran = 0;
	CHECK_ERR(bt_loop_timer_start(loop, &selfstop, 10, 0, killer_cb, NULL), 0);
	CHECK_ERR(bt_loop_timer_start(loop, &victim, 10, 0, victim_cb, NULL), 0);
	CHECK_ERR(bt_loop_timer_start(loop, &rep, 5, 5, rep_cb, NULL), 0);
	/* Started and stopped before the loop runs: never fires. */
	bt_timer_t *never;
	CHECK_ERR(bt_loop_timer_start(loop, &never, 0, 0, victim_cb, NULL), 0);
	bt_loop_timer_stop(loop, never);
	/* A fired one-shot with a handle stays until stopped (or destroy). */
	bt_timer_t *kept;
	CHECK_ERR(bt_loop_timer_start(loop, &kept, 1, 0, note, (void *)"k"), 0);
	return 0;
}

static void test_cancel_in_callback(void)
{
	norder = 0;
	CHECK_ERR(run_loop(start_cancel), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(selfstop_ran, 1);
	CHECK_EQ(victim_ran, 0);
	CHECK_EQ(rep_ran, 3);
	CHECK_EQ(norder, 1);
}

/* --- 100,000 timers --------------------------------------------------------- */

#define MANY 100000
struct many {
	uint64_t earliest; /* no callback before this */
	bt_timer_t *t;
	int fired;
	int stopped;
};
static struct many *many;
static int many_left;

static void many_cb(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	struct many *m = arg;
	(void)loop;
	if (m->t != t || m->stopped || m->fired || now_ns() < m->earliest)
		BAD();
	m->fired++;
	bt_loop_timer_stop(loop, t);
	if (--many_left == 0)
		end_loop();
}

static int start_many(bt_loop_t *loop)
{
	safety(loop);
	many_left = 0;
	unsigned seed = 12345;
	for (int i = 0; i < MANY; i++) {
		seed = seed * 1103515245u + 12345u;
		uint64_t ms = (seed >> 16) % 200;
		many[i].earliest = now_ns() + ms * 1000000ull;
		CHECK_ERR(bt_loop_timer_start(loop, &many[i].t, ms, 0, many_cb, &many[i]), 0);
	}
	/* Every fourth is stopped before it can fire. */
	for (int i = 0; i < MANY; i += 4) {
		bt_loop_timer_stop(loop, many[i].t);
		many[i].stopped = 1;
	}
	for (int i = 0; i < MANY; i++)
		many_left += !many[i].stopped;
	return 0;
}

static void test_many_timers(void)
{
	many = calloc(MANY, sizeof(*many));
	CHECK(many != NULL);
	CHECK_ERR(run_loop(start_many), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(many_left, 0);
	for (int i = 0; i < MANY; i++)
		CHECK_EQ(many[i].fired, many[i].stopped ? 0 : 1);
	free(many);
}

/* --- a repeating timer does not drift ------------------------------------- */

#define PERIODS 50
static uint64_t drift_start, drift_last;
static int drift_runs;

static void drift_cb(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)arg;
	drift_last = now_ns();
	if (drift_last < drift_start + (uint64_t)(drift_runs + 1) * 10000000ull)
		BAD(); /* early */
	/* Each run costs 5 ms: a timer re-armed from its callback's end would
	 * fall 5 ms behind per period (250 ms over the run). */
	usleep(5000);
	if (++drift_runs == PERIODS) {
		bt_loop_timer_stop(loop, t);
		end_loop();
	}
}

static int start_drift(bt_loop_t *loop)
{
	safety(loop);
	drift_runs = 0;
	bt_timer_t *t;
	drift_start = now_ns();
	CHECK_ERR(bt_loop_timer_start(loop, &t, 10, 10, drift_cb, NULL), 0);
	return 0;
}

static void test_repeat_drift(void)
{
	CHECK_ERR(run_loop(start_drift), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(drift_runs, PERIODS);
	uint64_t late_ms = (drift_last - drift_start) / 1000000ull - PERIODS * 10;
	printf("repeating timer: run %d came %llu ms after its due time\n", PERIODS,
	       (unsigned long long)late_ms);
	CHECK_OP(late_ms, <, 150);
}

/* --- watches --------------------------------------------------------------- */

static int wfd[2];
static int calls, reads;
static bt_watch_t *watch;

static void write_byte(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t;
	if (write(*(int *)arg, "x", 1) != 1)
		BAD();
}

static void finish_cb(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t, (void)arg;
	end_loop();
}

/* A pipe: level-triggered (called again while unread), then read and
 * unwatched; a later write calls nothing. */
static void pipe_cb(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned ev, void *arg)
{
	(void)arg;
	if (w != watch || fd != wfd[0] || !(ev & BT_WATCH_IN))
		BAD();
	if (++calls < 3)
		return; /* not read: must come again */
	char b[8];
	reads += (int)read(fd, b, sizeof(b));
	bt_loop_unwatch(loop, w);
	bt_loop_unwatch(loop, w); /* twice: harmless until it is freed */
	bt_loop_timer_start(loop, NULL, 5, 0, write_byte, &wfd[1]);
	bt_loop_timer_start(loop, NULL, 40, 0, finish_cb, NULL);
}

static int start_pipe(bt_loop_t *loop)
{
	safety(loop);
	calls = reads = 0;
	CHECK_ERR(bt_loop_watch_fd(loop, &watch, wfd[0], BT_WATCH_IN, pipe_cb, NULL), 0);
	CHECK_ERR(bt_loop_timer_start(loop, NULL, 10, 0, write_byte, &wfd[1]), 0);
	return 0;
}

static void test_watch_pipe(void)
{
	CHECK_EQ(pipe(wfd), 0);
	CHECK_ERR(run_loop(start_pipe), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(calls, 3);
	CHECK_EQ(reads, 1);
	char b[8];
	CHECK_EQ(read(wfd[0], b, sizeof(b)), 1); /* the second byte, unseen */
	close(wfd[0]);
	close(wfd[1]);
}

static void event_cb(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned ev, void *arg)
{
	(void)arg, (void)ev;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) != sizeof(v))
		BAD();
	reads += (int)v;
	if (++calls == 2) {
		bt_loop_unwatch(loop, w);
		end_loop();
	}
}

static void event_add(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t, (void)arg;
	uint64_t v = 3;
	if (write(wfd[0], &v, sizeof(v)) != sizeof(v))
		BAD();
}

/* An eventfd: two signals (3 each) from a repeating timer, read back. */
static int start_eventfd(bt_loop_t *loop)
{
	safety(loop);
	calls = reads = 0;
	CHECK_ERR(bt_loop_watch_fd(loop, &watch, wfd[0], BT_WATCH_IN, event_cb, NULL), 0);
	bt_timer_t *t;
	CHECK_ERR(bt_loop_timer_start(loop, &t, 5, 20, event_add, NULL), 0);
	return 0;
}

static void test_watch_eventfd(void)
{
	wfd[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	CHECK(wfd[0] >= 0);
	CHECK_ERR(run_loop(start_eventfd), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(calls, 2);
	CHECK_EQ(reads, 6);
	close(wfd[0]);
}

/* A socket whose peer closes: readable, read says 0 (end of file). */
static int saw_eof;

static void sock_cb(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned ev, void *arg)
{
	(void)arg;
	char b[16];
	ssize_t n = read(fd, b, sizeof(b));
	if (n > 0) {
		reads += (int)n;
		return;
	}
	if (n == 0 && (ev & (BT_WATCH_IN | BT_WATCH_HUP)))
		saw_eof = 1;
	else
		BAD();
	bt_loop_unwatch(loop, w);
	end_loop();
}

static void peer_close(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t, (void)arg;
	if (write(wfd[1], "hello", 5) != 5)
		BAD();
	close(wfd[1]);
	wfd[1] = -1;
}

static int start_sock(bt_loop_t *loop)
{
	safety(loop);
	calls = reads = saw_eof = 0;
	CHECK_ERR(bt_loop_watch_fd(loop, &watch, wfd[0], BT_WATCH_IN, sock_cb, NULL), 0);
	CHECK_ERR(bt_loop_timer_start(loop, NULL, 10, 0, peer_close, NULL), 0);
	return 0;
}

static void test_watch_socket_closes(void)
{
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, wfd), 0);
	CHECK_ERR(run_loop(start_sock), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(reads, 5);
	CHECK_EQ(saw_eof, 1);
	close(wfd[0]);
}

/* Writable at once; a watch left in place is freed with the loop. */
static void out_cb(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned ev, void *arg)
{
	(void)loop, (void)w, (void)fd, (void)arg;
	if (!(ev & BT_WATCH_OUT))
		BAD();
	if (++calls == 1)
		end_loop();
}

static int start_out(bt_loop_t *loop)
{
	safety(loop);
	calls = 0;
	CHECK_ERR(bt_loop_watch_fd(loop, &watch, wfd[0], BT_WATCH_OUT, out_cb, NULL), 0);
	return 0;
}

static void test_watch_out_left(void)
{
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, wfd), 0);
	CHECK_ERR(run_loop(start_out), 0);
	CHECK_EQ(bad, 0);
	CHECK_OP(calls, >=, 1);
	close(wfd[0]);
	close(wfd[1]);
}

/* --- errors ---------------------------------------------------------------- */

static void nop_timer(bt_loop_t *loop, bt_timer_t *t, void *arg)
{
	(void)loop, (void)t, (void)arg;
}
static void nop_watch(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned ev, void *arg)
{
	(void)loop, (void)w, (void)fd, (void)ev, (void)arg;
}

static int start_errors(bt_loop_t *loop)
{
	bt_timer_t *t;
	bt_watch_t *w;
	CHECK_ERR(bt_loop_timer_start(NULL, &t, 1, 0, nop_timer, NULL), -EINVAL);
	CHECK_ERR(bt_loop_timer_start(loop, &t, 1, 0, NULL, NULL), -EINVAL);
	CHECK_ERR(bt_loop_timer_start(loop, NULL, 1, 5, nop_timer, NULL), -EINVAL);
	CHECK_ERR(bt_loop_timer_start(loop, &t, UINT64_MAX, 0, nop_timer, NULL), -EINVAL);
	CHECK_ERR(bt_loop_watch_fd(loop, &w, -1, BT_WATCH_IN, nop_watch, NULL), -EINVAL);
	CHECK_ERR(bt_loop_watch_fd(loop, &w, 0, 0, nop_watch, NULL), -EINVAL);
	CHECK_ERR(bt_loop_watch_fd(loop, &w, 0, 0x100, nop_watch, NULL), -EINVAL);
	CHECK_ERR(bt_loop_watch_fd(loop, &w, 0, BT_WATCH_IN, NULL, NULL), -EINVAL);
	CHECK_ERR(bt_loop_watch_fd(loop, NULL, 0, BT_WATCH_IN, nop_watch, NULL), -EINVAL);
	/* A regular file is always ready: refused on both backends. */
	int f = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	CHECK(f >= 0);
	CHECK_ERR(bt_loop_watch_fd(loop, &w, f, BT_WATCH_IN, nop_watch, NULL), -EPERM);
	close(f);
	/* A closed descriptor. */
	int p[2];
	CHECK_EQ(pipe(p), 0);
	close(p[0]);
	close(p[1]);
	CHECK_ERR(bt_loop_watch_fd(loop, &w, p[0], BT_WATCH_IN, nop_watch, NULL), -EBADF);
	bt_loop_timer_stop(loop, NULL);
	bt_loop_unwatch(loop, NULL);
	end_loop();
	return 0;
}

static void test_errors(void)
{
	CHECK_ERR(run_loop(start_errors), 0);
}

static const struct check_case cases[] = {
	{"order", test_order},
	{"cancel_in_callback", test_cancel_in_callback},
	{"many_timers", test_many_timers},
	{"repeat_drift", test_repeat_drift},
	{"watch_pipe", test_watch_pipe},
	{"watch_eventfd", test_watch_eventfd},
	{"watch_socket_closes", test_watch_socket_closes},
	{"watch_out_left", test_watch_out_left},
	{"errors", test_errors},
	{0},
};

int main(int argc, char **argv)
{
	const char *b = getenv("BATON_TEST_BACKEND");
	backend = b && !strcmp(b, "epoll") ? BT_BACKEND_EPOLL : BT_BACKEND_URING;
	printf("backend: %s\n", backend == BT_BACKEND_EPOLL ? "epoll" : "io_uring");
	return check_main(argc, argv, cases);
}
