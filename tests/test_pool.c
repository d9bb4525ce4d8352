/* SPDX-License-Identifier: MIT */
/* Job offload through baton/pool.h: thousands of jobs, a bounded queue,
 * cancellation, shutdown with jobs in flight, many submitting threads.
 * Every job completes exactly once; no pool thread is left behind. */
#include "check.h"

#include <baton/pool.h>

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

/* Threads of this process, after a throwaway pool has come and gone (so
 * that a sanitizer's helper thread, started at the first pthread_create,
 * is already counted). */
static int count_threads_raw(void);
static int count_threads_settled(void)
{
	static int warmed;
	if (!warmed) {
		struct bt_pool_config c;
		bt_pool_config_init(&c);
		c.threads = 1;
		bt_pool_t *p;
		if (bt_pool_create(&p, &c) == 0)
			bt_pool_destroy(p);
		warmed = 1;
	}
	return count_threads_raw();
}

static int count_threads_raw(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

/* A joined thread can stay listed in /proc/self/task for a moment after
 * pthread_join returns (the kernel reaps it just after it wakes the
 * joiner): wait, with a 5 s deadline, for the count to come down to want.
 * Returns the last count seen. */
static int count_threads_until(int want)
{
	int n = count_threads_raw();
	for (int i = 0; i < 5000 && n != want; i++) {
		usleep(1000);
		n = count_threads_raw();
	}
	return n;
}

struct job {
	_Atomic int ran;
	int done;
	int status;
	_Atomic int *gate; /* if set, work waits until *gate != 0 */
	_Atomic int *started;
	unsigned sleep_us;
};

static void work(void *arg)
{
	struct job *j = arg;
	if (j->started)
		atomic_fetch_add(j->started, 1);
	while (j->gate && !atomic_load(j->gate))
		usleep(1000);
	if (j->sleep_us)
		usleep(j->sleep_us);
	atomic_fetch_add(&j->ran, 1);
}

static void done(void *arg, int status)
{
	struct job *j = arg;
	j->done++;
	j->status = status;
}

/* Run the sink until nothing is pending (bounded in time). */
static void run_until_idle(bt_pool_sink_t *s)
{
	double t0 = check_now();
	while (bt_pool_sink_pending(s)) {
		struct pollfd p = {.fd = bt_pool_sink_fd(s), .events = POLLIN};
		poll(&p, 1, 100);
		bt_pool_sink_run(s);
		CHECK_OP(check_now() - t0, <, 30);
	}
}

static bt_pool_t *make_pool(unsigned threads, unsigned max_queued)
{
	struct bt_pool_config c;
	bt_pool_config_init(&c);
	c.threads = threads;
	c.max_queued = max_queued;
	bt_pool_t *p;
	CHECK_ERR(bt_pool_create(&p, &c), 0);
	return p;
}

static void test_thousands(void)
{
	int threads_before = count_threads_settled();
	bt_pool_t *p = make_pool(4, 8192);
	bt_pool_sink_t *s;
	CHECK_ERR(bt_pool_sink_create(&s), 0);
	enum { N = 5000 };
	static struct job jobs[N];
	for (int i = 0; i < N; i++)
		CHECK_ERR(bt_pool_submit(p, s, NULL, work, done, &jobs[i]), 0);
	run_until_idle(s);
	for (int i = 0; i < N; i++) {
		CHECK_EQ(atomic_load(&jobs[i].ran), 1);
		CHECK_EQ(jobs[i].done, 1);
		CHECK_EQ(jobs[i].status, 0);
	}
	CHECK_ERR(bt_pool_sink_destroy(s), 0);
	bt_pool_destroy(p);
	CHECK_EQ(count_threads_until(threads_before), threads_before);
}

/* One thread held busy: exactly max_queued more are accepted, then
 * -EAGAIN; once released, everything accepted completes. */
static void test_bounded(void)
{
	bt_pool_t *p = make_pool(1, 4);
	bt_pool_sink_t *s;
	CHECK_ERR(bt_pool_sink_create(&s), 0);
	_Atomic int gate = 0, started = 0;
	struct job jobs[8];
	memset(jobs, 0, sizeof(jobs));
	jobs[0].gate = &gate;
	jobs[0].started = &started;
	CHECK_ERR(bt_pool_submit(p, s, NULL, work, done, &jobs[0]), 0);
	while (!atomic_load(&started))
		usleep(1000);
	for (int i = 1; i <= 4; i++)
		CHECK_ERR(bt_pool_submit(p, s, NULL, work, done, &jobs[i]), 0);
	CHECK_ERR(bt_pool_submit(p, s, NULL, work, done, &jobs[5]), -EAGAIN);
	CHECK_EQ(bt_pool_sink_pending(s), 5);
	CHECK_ERR(bt_pool_sink_destroy(s), -EBUSY);
	atomic_store(&gate, 1);
	run_until_idle(s);
	for (int i = 0; i <= 4; i++)
		CHECK_EQ(jobs[i].done, 1);
	CHECK_EQ(jobs[5].done, 0); /* refused: no callback */
	CHECK_ERR(bt_pool_submit(NULL, s, NULL, work, done, &jobs[6]), -EINVAL);
	CHECK_ERR(bt_pool_submit(p, s, NULL, NULL, done, &jobs[6]), -EINVAL);
	CHECK_ERR(bt_pool_sink_destroy(s), 0);
	bt_pool_destroy(p);
}

static void test_cancel(void)
{
	bt_pool_t *p = make_pool(1, 64);
	bt_pool_sink_t *s;
	CHECK_ERR(bt_pool_sink_create(&s), 0);
	_Atomic int gate = 0, started = 0;
	struct job jobs[11];
	memset(jobs, 0, sizeof(jobs));
	bt_job_t *h[11];
	jobs[0].gate = &gate;
	jobs[0].started = &started;
	CHECK_ERR(bt_pool_submit(p, s, &h[0], work, done, &jobs[0]), 0);
	while (!atomic_load(&started))
		usleep(1000);
	for (int i = 1; i < 11; i++)
		CHECK_ERR(bt_pool_submit(p, s, &h[i], work, done, &jobs[i]), 0);
	CHECK_ERR(bt_pool_cancel(p, h[0]), -EBUSY); /* running */
	for (int i = 1; i < 11; i += 2)
		CHECK_ERR(bt_pool_cancel(p, h[i]), 0);
	CHECK_ERR(bt_pool_cancel(p, h[1]), -EBUSY); /* already cancelled, not yet run */
	atomic_store(&gate, 1);
	run_until_idle(s);
	for (int i = 0; i < 11; i++) {
		CHECK_EQ(jobs[i].done, 1);
		int cancelled = i % 2 == 1;
		CHECK_EQ(jobs[i].status, cancelled ? -ECANCELED : 0);
		CHECK_EQ(atomic_load(&jobs[i].ran), cancelled ? 0 : 1);
	}
	CHECK_ERR(bt_pool_sink_destroy(s), 0);
	bt_pool_destroy(p);
}

/* Destroy with jobs running and queued: running ones finish, queued ones
 * are cancelled, each completes once, no thread remains. */
static void test_shutdown_in_flight(void)
{
	int threads_before = count_threads_settled();
	bt_pool_t *p = make_pool(2, 1024);
	bt_pool_sink_t *s;
	CHECK_ERR(bt_pool_sink_create(&s), 0);
	enum { N = 200 };
	static struct job jobs[N];
	for (int i = 0; i < N; i++) {
		jobs[i].sleep_us = 2000;
		CHECK_ERR(bt_pool_submit(p, s, NULL, work, done, &jobs[i]), 0);
	}
	usleep(5000);
	bt_pool_destroy(p);
	CHECK_EQ(count_threads_until(threads_before), threads_before);
	run_until_idle(s);
	int ran = 0, cancelled = 0;
	for (int i = 0; i < N; i++) {
		CHECK_EQ(jobs[i].done, 1);
		if (jobs[i].status == 0) {
			CHECK_EQ(atomic_load(&jobs[i].ran), 1);
			ran++;
		} else {
			CHECK_EQ(jobs[i].status, -ECANCELED);
			CHECK_EQ(atomic_load(&jobs[i].ran), 0);
			cancelled++;
		}
	}
	CHECK_OP(ran, >=, 1);
	CHECK_OP(cancelled, >=, 1);
	printf("    shutdown: %d ran, %d cancelled\n", ran, cancelled);
	CHECK_ERR(bt_pool_sink_destroy(s), 0);
}

/* Many submitting threads, each with its own sink. */
struct submitter {
	bt_pool_t *p;
	struct job jobs[1000];
	int ok;
};

static void *submit_thread(void *arg)
{
	struct submitter *sm = arg;
	bt_pool_sink_t *s;
	if (bt_pool_sink_create(&s) < 0)
		return NULL;
	for (int i = 0; i < 1000; i++) {
		int rc;
		while ((rc = bt_pool_submit(sm->p, s, NULL, work, done, &sm->jobs[i])) == -EAGAIN)
			bt_pool_sink_run(s);
		if (rc < 0)
			return NULL;
	}
	double t0 = check_now();
	while (bt_pool_sink_pending(s) && check_now() - t0 < 30) {
		struct pollfd pf = {.fd = bt_pool_sink_fd(s), .events = POLLIN};
		poll(&pf, 1, 100);
		bt_pool_sink_run(s);
	}
	int ok = 1;
	for (int i = 0; i < 1000; i++)
		ok &= sm->jobs[i].done == 1 && atomic_load(&sm->jobs[i].ran) == 1;
	sm->ok = ok && bt_pool_sink_destroy(s) == 0;
	return NULL;
}

static void test_many_submitters(void)
{
	bt_pool_t *p = make_pool(3, 256);
	enum { T = 6 };
	static struct submitter sm[T];
	pthread_t th[T];
	for (int i = 0; i < T; i++) {
		memset(&sm[i], 0, sizeof(sm[i]));
		sm[i].p = p;
		CHECK_EQ(pthread_create(&th[i], NULL, submit_thread, &sm[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		CHECK(sm[i].ok);
	}
	bt_pool_destroy(p);
}

static void test_config_errors(void)
{
	struct bt_pool_config c;
	bt_pool_config_init(&c);
	CHECK_OP(c.threads, >=, 2);
	CHECK_EQ(c.max_queued, 4096);
	bt_pool_t *p;
	c.threads = 0;
	CHECK_ERR(bt_pool_create(&p, &c), -EINVAL);
	c.threads = 2;
	c.max_queued = 0;
	CHECK_ERR(bt_pool_create(&p, &c), -EINVAL);
	CHECK_ERR(bt_pool_create(NULL, &c), -EINVAL);
	CHECK_ERR(bt_pool_sink_create(NULL), -EINVAL);
}

static const struct check_case cases[] = {
	{"thousands", test_thousands},
	{"bounded", test_bounded},
	{"cancel", test_cancel},
	{"shutdown_in_flight", test_shutdown_in_flight},
	{"many_submitters", test_many_submitters},
	{"config_errors", test_config_errors},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
