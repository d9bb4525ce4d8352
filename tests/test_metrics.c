/* SPDX-License-Identifier: MIT */
/*
 * A program's own metrics through baton/metrics.h: every error of
 * bt_metric_register, label families, the values a loop adds and sets,
 * and -EBUSY once bt_runtime_run has started.  (What /metrics serves is
 * tested end to end, with promtool, in test_control.py.)
 *
 * Each case runs in a child of its own (check.h), so each starts with an
 * empty registry.
 */
#include "check.h"

#include <baton/metrics.h>
#include <baton/runtime.h>

#include <sys/socket.h>

static void test_register_errors(void)
{
	CHECK_ERR(bt_metric_register(NULL, "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g", NULL, BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("9lives", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("a-b", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("baton_mine", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g", "two\nlines", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g", "a \\ b", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g", "h", (enum bt_metric_type)7), -EINVAL);
	/* A counter is named *_total. */
	CHECK_ERR(bt_metric_register("requests", "h", BT_METRIC_COUNTER), -EINVAL);
	CHECK_ERR(bt_metric_register("requests_total{a=\"1\"", "h", BT_METRIC_COUNTER), -EINVAL);
	/* Labels: {k="v",...}, plain values. */
	CHECK_ERR(bt_metric_register("g{}", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g{a=1}", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g{a=\"x\"y}", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g{a=\"x\\\"\"}", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g{a:b=\"x\"}", "h", BT_METRIC_GAUGE), -EINVAL);
	CHECK_ERR(bt_metric_register("g{a=\"x\"}junk", "h", BT_METRIC_GAUGE), -EINVAL);
	char longname[BT_METRIC_NAME_MAX + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	CHECK_ERR(bt_metric_register(longname, "h", BT_METRIC_GAUGE), -EINVAL);
	longname[BT_METRIC_NAME_MAX] = 0;
	CHECK_ERR(bt_metric_register(longname, "h", BT_METRIC_GAUGE), 0);
	/* Ids in order; a name once; a family of one type. */
	CHECK_ERR(bt_metric_register("jobs_total", "Jobs.", BT_METRIC_COUNTER), 1);
	CHECK_ERR(bt_metric_register("jobs_total", "Jobs.", BT_METRIC_COUNTER), -EEXIST);
	CHECK_ERR(bt_metric_register("resp_total{class=\"2xx\"}", "R.", BT_METRIC_COUNTER), 2);
	CHECK_ERR(bt_metric_register("resp_total{class=\"5xx\",x=\"a b\"}", "R.", BT_METRIC_COUNTER),
		  3);
	CHECK_ERR(bt_metric_register("resp_total{class=\"2xx\"}", "R.", BT_METRIC_COUNTER), -EEXIST);
	CHECK_ERR(bt_metric_register("queue_depth:now", "Q.", BT_METRIC_GAUGE), 4);
	CHECK_ERR(bt_metric_register("queue_depth:now{k=\"v\"}", "Q.", BT_METRIC_COUNTER), -EINVAL);
	/* The table is full at BT_METRICS_MAX. */
	for (int i = 5; i < BT_METRICS_MAX; i++) {
		char n[32];
		snprintf(n, sizeof(n), "g%d", i);
		CHECK_ERR(bt_metric_register(n, "h", BT_METRIC_GAUGE), i);
	}
	CHECK_ERR(bt_metric_register("one_more", "h", BT_METRIC_GAUGE), -ENOSPC);
}

/* --- a loop's values ------------------------------------------------------- */

static int c_id, g_id;
static int peer = -1;
static int64_t seen[8];

static void on_data(bt_conn_t *c, const void *d, size_t n)
{
	(void)c, (void)d, (void)n;
}

static int start_values(bt_loop_t *loop)
{
	bt_loop_metric_add(loop, c_id, 5);
	bt_loop_metric_add(loop, c_id, -1); /* a counter only grows: ignored */
	bt_loop_metric_set(loop, c_id, 100); /* a counter is not set: ignored */
	seen[0] = bt_loop_metric_get(loop, c_id);
	bt_loop_metric_set(loop, g_id, 7);
	bt_loop_metric_add(loop, g_id, -2);
	seen[1] = bt_loop_metric_get(loop, g_id);
	bt_loop_metric_add(loop, 17, 1); /* never registered */
	bt_loop_metric_add(loop, -1, 1);
	seen[2] = bt_loop_metric_get(loop, 17);
	seen[3] = bt_loop_metric_get(loop, -1);
	bt_loop_metric_add(NULL, c_id, 1);
	seen[4] = bt_loop_metric_get(NULL, c_id);
	close(peer); /* EOF: the loop drains and returns */
	peer = -1;
	return 0;
}

static void test_loop_values(void)
{
	c_id = bt_metric_register("events_total", "Events.", BT_METRIC_COUNTER);
	g_id = bt_metric_register("busy", "Busy.", BT_METRIC_GAUGE);
	CHECK_EQ(c_id, 0);
	CHECK_EQ(g_id, 1);
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *ch;
	CHECK_ERR(bt_fdpass_open(&ch, sv[0]), 0);
	struct bt_handler h = {.size = sizeof(h), .on_data = on_data, .on_start = start_values};
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	CHECK_ERR(bt_queue_inlet_wire(&lc.inlet, ch), 0);
	lc.handler = &h;
	bt_loop_t *loop;
	CHECK_ERR(bt_loop_create(&loop, &lc), 0);
	peer = sv[1];
	CHECK_ERR(bt_loop_run(loop), 0);
	bt_loop_destroy(loop);
	CHECK_EQ(seen[0], 5);
	CHECK_EQ(seen[1], 5);
	CHECK_EQ(seen[2], 0);
	CHECK_EQ(seen[3], 0);
	CHECK_EQ(seen[4], 0);
}

/* --- registering too late ---------------------------------------------------- */

static int stop_at_once(bt_runtime_t *rt, void *user)
{
	(void)user;
	bt_runtime_stop(rt);
	return 0;
}

static void on_item(bt_loop_t *loop, const struct bt_wire_item *it)
{
	(void)loop, (void)it;
}

static void test_busy_after_run(void)
{
	CHECK_ERR(bt_metric_register("early_total", "Early.", BT_METRIC_COUNTER), 0);
	struct bt_runtime_config cfg;
	bt_runtime_config_init(&cfg, "test_metrics", 0, NULL);
	cfg.mode = BT_MODE_THREAD;
	cfg.workers = 1;
	cfg.control = "none";
	struct bt_producer p = {.size = sizeof(p), .start = stop_at_once};
	cfg.producer = &p;
	struct bt_handler h = {.size = sizeof(h), .on_item = on_item};
	CHECK_ERR(bt_runtime_run(&cfg, &h, NULL), 0);
	CHECK_ERR(bt_metric_register("late_total", "Late.", BT_METRIC_COUNTER), -EBUSY);
	CHECK_ERR(bt_metric_register("early_total", "Early.", BT_METRIC_COUNTER), -EBUSY);
}

/* --- the program sees the runtime ----------------------------------------------- */

static int pipefd[2] = {-1, -1};
static int stats_calls, stats_bad;

/* In the control process: tell the supervisor's thread (first_json
 * stays in that process's memory: the pipe carries what is checked). */
static void on_stats(const char *json, size_t len, void *user)
{
	if (user != (void *)&stats_calls || len != strlen(json) || json[len - 1] != '\n')
		return;
	/* One byte per call: 1 if the JSON is the snapshot it should be. */
	char good = strstr(json, "\"workers\":[{\"worker\":0,") != NULL &&
		    strncmp(json, "{\"name\":\"test_metrics\",", 23) == 0;
	(void)!write(pipefd[1], &good, 1);
}

static void on_pipe(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)revents, (void)arg;
	char b[16];
	ssize_t n = read(fd, b, sizeof(b));
	for (ssize_t i = 0; i < n; i++) {
		stats_calls++;
		stats_bad += !b[i];
	}
	if (stats_calls >= 3) {
		bt_runtime_unwatch(rt, w);
		bt_runtime_stop(rt);
	}
}

static char pulled[4096];

static int start_pull(bt_runtime_t *rt, void *user)
{
	(void)user;
	char *json = NULL;
	size_t len = 0;
	CHECK_ERR(bt_runtime_stats_json(NULL, &json, &len), -EINVAL);
	CHECK_ERR(bt_runtime_stats_json(rt, NULL, &len), -EINVAL);
	CHECK_ERR(bt_runtime_stats_json(rt, &json, &len), 0);
	CHECK_EQ(len, strlen(json));
	snprintf(pulled, sizeof(pulled), "%s", json);
	free(json);
	bt_runtime_watch_t *w;
	CHECK_ERR(bt_runtime_watch_fd(rt, &w, pipefd[0], BT_WATCH_IN, on_pipe, NULL), 0);
	return 0;
}

static void test_runtime_stats(void)
{
	CHECK_ERR(pipe(pipefd), 0);
	struct bt_runtime_config cfg;
	bt_runtime_config_init(&cfg, "test_metrics", 0, NULL);
	cfg.mode = BT_MODE_THREAD;
	cfg.workers = 2;
	cfg.control = "none";
	cfg.on_stats = on_stats;
	cfg.stats_interval_ms = 20;
	/* on_stats runs in the control process, which keeps only these. */
	cfg.inherit_fds = &pipefd[1];
	cfg.ninherit = 1;
	struct bt_producer p = {.size = sizeof(p), .start = start_pull};
	cfg.producer = &p;
	struct bt_handler h = {.size = sizeof(h), .on_item = on_item};
	CHECK_ERR(bt_runtime_run(&cfg, &h, &stats_calls), 0);
	CHECK(stats_calls >= 3);
	CHECK(strstr(pulled, "{\"name\":\"test_metrics\",") == pulled);
	CHECK(strstr(pulled, "\"state\":\"serving\""));
	CHECK(strstr(pulled, "\"mode\":\"thread\",\"workers\":2,"));
	CHECK_EQ(stats_bad, 0);
	close(pipefd[0]);
	close(pipefd[1]);
	/* An interval below 10 ms is refused. */
	cfg.stats_interval_ms = 5;
	CHECK_ERR(bt_runtime_run(&cfg, &h, NULL), 2);
}

static const struct check_case cases[] = {
	{"runtime_stats", test_runtime_stats},
	{"register_errors", test_register_errors},
	{"loop_values", test_loop_values},
	{"busy_after_run", test_busy_after_run},
	{0},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
