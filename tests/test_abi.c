/* SPDX-License-Identifier: MIT */
/*
 * The ABI rule (docs/abi.md) through the public headers: every extensible
 * struct carries its size, and the library
 *   - refuses a struct whose size is below ABI 1's (-EINVAL),
 *   - takes a longer struct (a newer header) whose unknown tail is zero,
 *   - refuses one whose unknown tail is set (-E2BIG), never reading it,
 *   - fills stats and defaults only up to the caller's size: a shorter
 *     caller's neighbouring memory is never written.
 */
#include "check.h"

#include <baton/acceptor.h>
#include <baton/fdpass.h>
#include <baton/loop.h>
#include <baton/pool.h>
#include <baton/queue.h>
#include <baton/runtime.h>

#include <stddef.h>

/* A caller built against a newer header: the struct plus fields this
 * library does not know. */
struct newer_queue_config {
	struct bt_queue_config base;
	uint64_t unknown[4];
};

static void test_init_sets_size_and_defaults(void)
{
	struct bt_queue_config qc;
	memset(&qc, 0xa5, sizeof(qc));
	CHECK_EQ(bt_queue_config_init(&qc), 0);
	CHECK_EQ(qc.size, sizeof(qc));
	CHECK_EQ(qc.batch, 32u);
	CHECK_EQ(qc.flush, BT_FLUSH_ADAPTIVE);
	CHECK_EQ(qc.max_inflight, 4096u);

	struct bt_runtime_config rc;
	CHECK_EQ(bt_runtime_config_init(&rc, "abi", 0, NULL), 0);
	CHECK_EQ(rc.size, sizeof(rc));
	CHECK_EQ(rc.batch, 32u);
	CHECK_EQ(rc.drain_timeout_ms, 10000u);
	CHECK(!strcmp(rc.name, "abi"));

	struct bt_acceptor_config ac;
	CHECK_EQ(bt_acceptor_config_init(&ac), 0);
	CHECK_EQ(ac.size, sizeof(ac));
	CHECK_EQ(ac.max_backlog, 4096u);
	struct bt_loop_config lc;
	CHECK_EQ(bt_loop_config_init(&lc), 0);
	CHECK_EQ(lc.size, sizeof(lc));
	struct bt_pool_config pc;
	CHECK_EQ(bt_pool_config_init(&pc), 0);
	CHECK_EQ(pc.size, sizeof(pc));
	CHECK_OP(pc.threads, >=, 2u);
}

/* The init of a newer caller: the library writes its defaults and zeroes
 * the tail it does not know; the byte after the caller's struct is not
 * touched. */
static void test_init_newer_caller(void)
{
	struct {
		struct newer_queue_config c;
		unsigned char guard[16];
	} m;
	memset(&m, 0x5a, sizeof(m));
	CHECK_EQ(bt_queue_config_init_sized(&m.c.base, sizeof(m.c)), 0);
	CHECK_EQ(m.c.base.size, sizeof(m.c));
	CHECK_EQ(m.c.base.batch, 32u);
	for (int i = 0; i < 4; i++)
		CHECK_EQ(m.c.unknown[i], 0u);
	for (size_t i = 0; i < sizeof(m.guard); i++)
		CHECK_EQ(m.guard[i], 0x5a);
	/* Below ABI 1's size: refused, nothing written. */
	struct bt_queue_config qc;
	memset(&qc, 0x5a, sizeof(qc));
	CHECK_ERR(bt_queue_config_init_sized(&qc, sizeof(size_t)), -EINVAL);
	CHECK_EQ(qc.batch, 0x5a5a5a5au);
}

static void test_create_by_size(void)
{
	struct newer_queue_config n;
	CHECK_EQ(bt_queue_config_init_sized(&n.base, sizeof(n)), 0);
	bt_queue_t *q;
	/* A newer caller that left the new fields alone: taken. */
	CHECK_EQ(bt_queue_create_thread(&q, &n.base), 0);
	bt_queue_destroy(q);
	/* One that set a field this library does not know: -E2BIG. */
	n.unknown[2] = 1;
	CHECK_ERR(bt_queue_create_thread(&q, &n.base), -E2BIG);
	/* Not initialised (size 0) or cut below ABI 1: -EINVAL. */
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	qc.size = 0;
	CHECK_ERR(bt_queue_create_thread(&q, &qc), -EINVAL);
	qc.size = offsetof(struct bt_queue_config, max_inflight);
	CHECK_ERR(bt_queue_create_thread(&q, &qc), -EINVAL);
	CHECK_ERR(bt_queue_parse_flush("size", &qc), -EINVAL);

	struct bt_pool_config pc;
	bt_pool_config_init(&pc);
	pc.size = 1;
	bt_pool_t *p;
	CHECK_ERR(bt_pool_create(&p, &pc), -EINVAL);

	struct bt_acceptor_config ac;
	bt_acceptor_config_init(&ac);
	ac.size = sizeof(ac) - 1;
	bt_acceptor_t *acc;
	CHECK_ERR(bt_acceptor_create(&acc, &ac, 1), -EINVAL);
}

static void on_data(bt_conn_t *c, const void *d, size_t n)
{
	(void)c;
	(void)d;
	(void)n;
}

/* A handler without its size is refused by the loop, not read short. */
static void test_handler_size(void)
{
	int sv[2];
	CHECK_EQ(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *ch;
	CHECK_EQ(bt_fdpass_open(&ch, sv[0]), 0);
	struct bt_queue_shm *shm;
	CHECK_EQ(bt_queue_shm_create(&shm, 1, 64), 0);
	struct bt_handler h = {.on_data = on_data}; /* .size forgotten */
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	CHECK_EQ(bt_queue_inlet_forked(&lc.inlet, ch, shm, 0), 0);
	lc.handler = &h;
	bt_loop_t *loop;
	CHECK_ERR(bt_loop_create(&loop, &lc), -EINVAL); /* the inlet is still ours */
	struct {
		struct bt_handler h;
		void (*on_future)(void);
	} newer = {.h = {.size = sizeof(newer), .on_data = on_data}, .on_future = NULL};
	lc.handler = &newer.h;
	CHECK_EQ(bt_loop_create(&loop, &lc), 0); /* the loop owns the inlet now */
	bt_loop_destroy(loop);
	bt_queue_shm_destroy(shm);
	close(sv[1]);
}

/* A program built against 0.2.0 gives the transport as the parts of
 * bt_loop_config that 0.3 deprecates: still taken (process and thread),
 * and never together with an inlet. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void test_deprecated_transport_fields(void)
{
	int sv[2];
	CHECK_EQ(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *ch;
	CHECK_EQ(bt_fdpass_open(&ch, sv[0]), 0);
	struct bt_queue_shm *shm;
	CHECK_EQ(bt_queue_shm_create(&shm, 1, 64), 0);
	struct bt_handler h = {.size = sizeof(h), .on_data = on_data};
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	lc.channel = ch;
	lc.shm = shm;
	lc.slot = 0;
	lc.handler = &h;
	/* both ways at once: refused, and neither is taken */
	bt_queue_t *tq;
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	CHECK_EQ(bt_queue_create_thread(&tq, &qc), 0);
	CHECK_EQ(bt_queue_inlet_thread(&lc.inlet, tq), 0);
	bt_loop_t *loop;
	CHECK_ERR(bt_loop_create(&loop, &lc), -EINVAL);
	bt_queue_inlet_destroy(lc.inlet);
	lc.inlet = NULL;
	/* a bad setting: the channel is still the caller's */
	lc.buf_count = 3;
	CHECK_ERR(bt_loop_create(&loop, &lc), -EINVAL);
	lc.buf_count = 64;
	CHECK_EQ(bt_loop_create(&loop, &lc), 0); /* the loop owns ch now */
	CHECK_EQ(strcmp(bt_loop_backend(loop), "io_uring") == 0 ||
			 strcmp(bt_loop_backend(loop), "epoll") == 0,
		 1);
	bt_loop_destroy(loop);
	/* thread mode, the 0.2.0 way */
	bt_loop_config_init(&lc);
	lc.queue = tq;
	lc.handler = &h;
	lc.buf_count = 64;
	CHECK_EQ(bt_loop_create(&loop, &lc), 0);
	bt_loop_destroy(loop);
	bt_queue_destroy(tq);
	bt_queue_shm_destroy(shm);
	close(sv[1]);
}
#pragma GCC diagnostic pop

/* Stats: an older caller (shorter struct) gets its prefix and nothing
 * past it is written. */
static void test_stats_by_size(void)
{
	int sv[2];
	CHECK_EQ(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *a, *b;
	CHECK_EQ(bt_fdpass_open(&a, sv[0]), 0);
	CHECK_EQ(bt_fdpass_open(&b, sv[1]), 0);
	struct bt_wire_item it = {.id = 1};
	CHECK_EQ(bt_fdpass_send_batch(a, 1, &it, 1), 0);
	struct bt_fdpass_stats st;
	bt_fdpass_get_stats(a, &st);
	CHECK_EQ(st.size, sizeof(st));
	CHECK_EQ(st.sent_msgs, 1u);

	size_t older = offsetof(struct bt_fdpass_stats, sent_fds);
	unsigned char buf[sizeof(struct bt_fdpass_stats) + 8];
	memset(buf, 0x77, sizeof(buf));
	bt_fdpass_get_stats_sized(a, (struct bt_fdpass_stats *)buf, older);
	size_t got;
	uint64_t msgs;
	memcpy(&got, buf, sizeof(got));
	memcpy(&msgs, buf + offsetof(struct bt_fdpass_stats, sent_msgs), sizeof(msgs));
	CHECK_EQ(got, older);
	CHECK_EQ(msgs, 1u);
	for (size_t i = older; i < sizeof(buf); i++)
		CHECK_EQ(buf[i], 0x77);
	bt_fdpass_close(a);
	bt_fdpass_close(b);
}

/* A runtime config that was never initialised is refused with exit
 * status 2 and a log line, before any listener is opened. */
static void test_runtime_refuses_unsized(void)
{
	struct bt_runtime_config rc;
	memset(&rc, 0, sizeof(rc));
	static const struct bt_handler h = {.size = sizeof(struct bt_handler), .on_data = on_data};
	CHECK_EQ(bt_runtime_run(&rc, &h, NULL), 2);
	CHECK_EQ(bt_runtime_config_init(&rc, "abi", 0, NULL), 0);
	struct bt_handler unsized = {.on_data = on_data};
	CHECK_EQ(bt_runtime_run(&rc, &unsized, NULL), 2);
}

static const struct check_case cases[] = {
	{"init_sets_size_and_defaults", test_init_sets_size_and_defaults},
	{"init_newer_caller", test_init_newer_caller},
	{"create_by_size", test_create_by_size},
	{"handler_size", test_handler_size},
	{"deprecated_transport_fields", test_deprecated_transport_fields},
	{"stats_by_size", test_stats_by_size},
	{"runtime_refuses_unsized", test_runtime_refuses_unsized},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
