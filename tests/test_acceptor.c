/* SPDX-License-Identifier: MIT */
/*
 * The acceptor's decisions, with the clock as an input: dispatch policies,
 * flush policies, paced accept and acknowledgement lag.
 *
 * First the pure functions of runtime/acceptor_policy.c, then the acceptor
 * itself on a fake backend: the test delivers accepted connections (real
 * TCP sockets on 127.0.0.x, so that `hash` sees real peers), ends each
 * wake-up with bt__acc_step(acc, now) at a clock value it chooses, and
 * consumes what each worker was given from thread-transport queues.  Every
 * assertion here fails if the policy it tests is ignored.
 */
#include "check.h"

#include "../runtime/acceptor_internal.h"
#include "../runtime/acceptor_policy.h"

#include <baton/log.h>
#include <baton/queue.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#define MS 1000000ull
#define US 1000ull

/* --- the pure functions ------------------------------------------------------------ */

static void test_pace_units(void)
{
	/* The gap: 1/8 weight, a gap counts at most 1 s. */
	CHECK_EQ(bt__pace_gap(0, 0, 80 * US), 10 * US);
	CHECK_EQ(bt__pace_gap(800 * US, 0, 0), 700 * US);
	CHECK_EQ(bt__pace_gap(0, 0, 10000 * MS), 125 * MS);
	/* Start: closer than a quarter of the hold, after 16 accepts. */
	CHECK_EQ(bt__pace_start(49 * US, 200 * US, 17), 1);
	CHECK_EQ(bt__pace_start(50 * US, 200 * US, 17), 0);
	CHECK_EQ(bt__pace_start(10 * US, 200 * US, 16), 0);
	CHECK_EQ(bt__pace_start(10 * US, 0, 100), 0);
	/* Keep sweeping while sweeps bring two or more on average: from 32,
	 * the seventh empty sweep in a row stops it (32, 28, 25, 22, 20, 18,
	 * 16: go on; 14: stop). */
	unsigned y = 32;
	int k = 0;
	while (bt__pace_continue(&y, 0))
		k++;
	CHECK_EQ(k, 6);
	CHECK_EQ(y, 14);
	y = 32;
	for (int i = 0; i < 100; i++)
		CHECK_EQ(bt__pace_continue(&y, 2), 1); /* steady at 16 */
}

static void test_flush_units(void)
{
	uint64_t t = 1000 * MS, hold = 200 * US;
	/* Adaptive, idle (gaps above half the hold): at once. */
	CHECK_EQ(bt__flush_due(BT_FLUSH_ADAPTIVE, 0, 100 * US, hold, t, t), 1);
	/* Adaptive, busy: held up to the hold, not longer. */
	CHECK_EQ(bt__flush_due(BT_FLUSH_ADAPTIVE, 0, 99 * US, hold, t, t + 199 * US), 0);
	CHECK_EQ(bt__flush_due(BT_FLUSH_ADAPTIVE, 0, 99 * US, hold, t, t + 200 * US), 1);
	/* Adaptive while sweeping: the sweep was the wait. */
	CHECK_EQ(bt__flush_due(BT_FLUSH_ADAPTIVE, 1, 1 * US, hold, t, t), 1);
	/* Delay: always the delay, busy or not. */
	CHECK_EQ(bt__flush_due(BT_FLUSH_DELAY, 0, 500 * MS, 5 * MS, t, t + 4 * MS), 0);
	CHECK_EQ(bt__flush_due(BT_FLUSH_DELAY, 0, 500 * MS, 5 * MS, t, t + 5 * MS), 1);
	/* Size: only the backstop sends a partial batch. */
	CHECK_EQ(bt__flush_due(BT_FLUSH_SIZE, 0, 500 * MS, hold, t, t + 49 * MS), 0);
	CHECK_EQ(bt__flush_due(BT_FLUSH_SIZE, 0, 500 * MS, hold, t, t + 50 * MS), 1);
	CHECK_EQ(bt__flush_deadline(BT_FLUSH_SIZE, hold, t), t + BT_SIZE_BACKSTOP_NS);
	CHECK_EQ(bt__flush_deadline(BT_FLUSH_DELAY, 5 * MS, t), t + 5 * MS);
	/* Lag: owing for more than 20 ms. */
	CHECK_EQ(bt__acc_lagging(0, t), 0);
	CHECK_EQ(bt__acc_lagging(t, t + 20 * MS), 0);
	CHECK_EQ(bt__acc_lagging(t, t + 20 * MS + 1), 1);
	CHECK_EQ(bt__acc_far_behind(0, t), 0);
	CHECK_EQ(bt__acc_far_behind(t, t + 100 * MS), 0);
	CHECK_EQ(bt__acc_far_behind(t, t + 100 * MS + 1), 1);
}

/* --- a fake backend ------------------------------------------------------------------ */

static struct {
	int arms, disarms, sweeps;
	int can_send; /* a channel worker's batches really go out */
} fake;

static int f_init(bt_acceptor_t *acc)
{
	acc->backend = &fake;
	memset(&fake, 0, sizeof(fake));
	return 0;
}
static void f_fini(bt_acceptor_t *acc)
{
	(void)acc;
}
static int f_arm(bt_acceptor_t *acc, struct listener *l)
{
	(void)acc;
	l->armed = 1;
	fake.arms++;
	return 0;
}
static int f_sweep(bt_acceptor_t *acc, struct listener *l)
{
	(void)acc;
	(void)l;
	fake.sweeps++;
	return 0;
}
static void f_disarm(bt_acceptor_t *acc, struct listener *l)
{
	(void)acc;
	l->armed = 0;
	fake.disarms++;
}
static void f_close(bt_acceptor_t *acc, struct listener *l)
{
	(void)acc;
	close(l->fd);
	l->fd = -1;
}
static void f_send(bt_acceptor_t *acc, unsigned idx, struct msghdr *msg)
{
	CHECK(fake.can_send); /* else: thread queues publish; nothing is sent */
	ssize_t n = sendmsg(bt_fdpass_fd(bt_queue_channel(acc->w[idx].q)), msg,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
	bt__acc_send_done(acc, idx, n < 0 ? -errno : (long)n);
}
static void f_channel(bt_acceptor_t *acc, unsigned idx)
{
	(void)acc, (void)idx;
}

static const struct acc_ops fake_ops = {
	.name = "fake",
	.init = f_init,
	.fini = f_fini,
	.arm_listener = f_arm,
	.sweep_listener = f_sweep,
	.disarm_listener = f_disarm,
	.close_listener = f_close,
	.send = f_send,
	.arm_channel = f_channel,
	.forget_channel = f_channel,
};

/* --- the rig ------------------------------------------------------------------------- */

#define NW_MAX 4
#define CLIENTS_MAX 400

struct rig {
	bt_acceptor_t *acc;
	bt_queue_t *q[NW_MAX];
	unsigned nw;
	int lfd;
	struct sockaddr_in addr;
	int clients[CLIENTS_MAX];
	unsigned nclients;
	uint64_t now;
	unsigned got[NW_MAX];     /* connections each worker consumed */
	int order[CLIENTS_MAX];   /* which worker got the i-th consumed */
	unsigned norder;
};

static void quiet(void *ctx, int level, const char *line)
{
	(void)ctx, (void)level, (void)line;
}

static void rig_start(struct rig *r, unsigned nw, int dispatch, const char *flush, unsigned batch)
{
	bt_log_set_handler(quiet, NULL);
	memset(r, 0, sizeof(*r));
	r->nw = nw;
	r->now = 1000 * MS;
	struct bt_acceptor_config ac;
	bt_acceptor_config_init(&ac);
	ac.dispatch = dispatch;
	CHECK_ERR(bt__acc_create_with(&r->acc, &ac, nw, &fake_ops), 0);
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	qc.batch = batch;
	CHECK_ERR(bt_queue_parse_flush(flush, &qc), 0);
	for (unsigned i = 0; i < nw; i++) {
		CHECK_ERR(bt_queue_create_thread(&r->q[i], &qc), 0);
		CHECK_ERR(bt_acceptor_attach(r->acc, i, r->q[i]), 0);
	}
	r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_OP(r->lfd, >=, 0);
	r->addr.sin_family = AF_INET;
	r->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_SYS(bind(r->lfd, (struct sockaddr *)&r->addr, sizeof(r->addr)));
	socklen_t len = sizeof(r->addr);
	CHECK_SYS(getsockname(r->lfd, (struct sockaddr *)&r->addr, &len));
	CHECK_SYS(listen(r->lfd, 1024));
	int acc_lfd = dup(r->lfd); /* the acceptor owns its own copy */
	CHECK_ERR(bt_acceptor_add_listener(r->acc, acc_lfd), 0);
	bt__acc_step(r->acc, r->now); /* arms the listener */
}

/* A client from 127.0.0.<host> connects; the acceptor "accepts" it at the
 * rig's clock (r->now, advanced by gap_ns first). */
static void accept_from(struct rig *r, int host, uint64_t gap_ns)
{
	CHECK_OP(r->nclients, <, CLIENTS_MAX);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK_OP(c, >=, 0);
	struct sockaddr_in src = {.sin_family = AF_INET};
	src.sin_addr.s_addr = htonl(0x7f000000u | (unsigned)host);
	CHECK_SYS(bind(c, (struct sockaddr *)&src, sizeof(src)));
	CHECK_SYS(connect(c, (struct sockaddr *)&r->addr, sizeof(r->addr)));
	int s = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
	CHECK_OP(s, >=, 0);
	r->clients[r->nclients++] = c;
	r->now += gap_ns;
	r->acc->now_ns = r->now;
	bt__acc_on_accept(r->acc, &r->acc->l[0], s, 1, 0);
}

/* Worker w takes what it was given (acknowledging it); returns how many. */
static unsigned consume(struct rig *r, unsigned w)
{
	struct bt_wire_item items[64];
	unsigned total = 0;
	int n;
	while ((n = bt_queue_consume(r->q[w], items, 64)) > 0) {
		for (int i = 0; i < n; i++) {
			CHECK_OP(items[i].fd, >=, 0);
			close(items[i].fd);
			if (r->norder < CLIENTS_MAX)
				r->order[r->norder++] = (int)w;
		}
		total += (unsigned)n;
	}
	r->got[w] += total;
	return total;
}

static void consume_all(struct rig *r)
{
	for (unsigned w = 0; w < r->nw; w++)
		consume(r, w);
}

static void step(struct rig *r, uint64_t advance_ns)
{
	r->now += advance_ns;
	bt__acc_step(r->acc, r->now);
}

static void rig_stop(struct rig *r)
{
	consume_all(r);
	bt_acceptor_destroy(r->acc); /* destroys the queues, closes what they hold */
	for (unsigned i = 0; i < r->nclients; i++)
		close(r->clients[i]);
	close(r->lfd);
}

/* --- dispatch ------------------------------------------------------------------------- */

/* rr: one connection each in turn. */
static void test_rr_alternates(void)
{
	struct rig r;
	rig_start(&r, 3, BT_DISPATCH_RR, "adaptive", 32);
	for (int i = 0; i < 9; i++) {
		accept_from(&r, 1, 10 * MS);
		step(&r, 0);
		consume_all(&r);
	}
	for (unsigned i = 0; i < 9; i++)
		CHECK_EQ(r.order[i], i % 3);
	rig_stop(&r);
}

static unsigned fnv_ip(int host)
{
	uint32_t ip = htonl(0x7f000000u | (unsigned)host);
	const unsigned char *p = (const unsigned char *)&ip;
	uint32_t h = 2166136261u;
	for (int i = 0; i < 4; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

/* hash: every connection of a peer goes to the worker its address hashes
 * to (FNV-1a of the address, modulo the worker slots). */
static void test_hash_sticks_to_peer(void)
{
	struct rig r;
	rig_start(&r, 4, BT_DISPATCH_HASH, "adaptive", 32);
	unsigned used = 0;
	for (int host = 1; host <= 6; host++) {
		unsigned want = fnv_ip(host) % 4, before[NW_MAX];
		memcpy(before, r.got, sizeof(before));
		for (int i = 0; i < 8; i++) {
			accept_from(&r, host, 10 * MS);
			step(&r, 0);
			consume_all(&r);
		}
		for (unsigned w = 0; w < 4; w++)
			CHECK_EQ(r.got[w] - before[w], w == want ? 8u : 0u);
		used |= 1u << want;
	}
	CHECK_OP(__builtin_popcount(used), >=, 2); /* the peers do not all map to one */
	rig_stop(&r);
}

/* least: the worker with the fewest connections (open + unacknowledged). */
static void test_least_prefers_idle(void)
{
	struct rig r;
	rig_start(&r, 3, BT_DISPATCH_LEAST, "adaptive", 32);
	uint32_t load[3] = {5, 0, 3};
	for (unsigned w = 0; w < 3; w++)
		bt_queue_consumer_set_load(r.q[w], load[w]);
	/* Nothing is consumed: each connection stays unacknowledged and adds
	 * to its worker's count.  Expected: the lowest count, first index on
	 * a tie. */
	unsigned count[3] = {5, 0, 3};
	for (int i = 0; i < 7; i++) { /* 1 ms apart: nobody lags (20 ms) */
		unsigned best = 0;
		for (unsigned w = 1; w < 3; w++)
			if (count[w] < count[best])
				best = w;
		unsigned before = bt_queue_inflight(r.q[best]);
		accept_from(&r, 1, 1 * MS);
		step(&r, 0);
		CHECK_EQ(bt_queue_inflight(r.q[best]), before + 1);
		count[best]++;
	}
	CHECK_EQ(count[0], 5u); /* the busiest got nothing: {5, 5, 5} */
	CHECK_EQ(count[1], 5u);
	CHECK_EQ(count[2], 5u);
	CHECK_EQ(bt_queue_inflight(r.q[0]), 0);
	rig_stop(&r);
}

/* A worker that stops acknowledging is passed over after 20 ms, under rr
 * and under hash, and taken again once it acknowledges. */
static void lag_case(int dispatch)
{
	struct rig r;
	rig_start(&r, 2, dispatch, "adaptive", 32);
	/* hash: a peer that maps to worker 0, and one to worker 1. */
	int h0 = 1, h1 = 1;
	while (fnv_ip(h0) % 2 != 0)
		h0++;
	while (fnv_ip(h1) % 2 != 1)
		h1++;
	int host0 = dispatch == BT_DISPATCH_HASH ? h0 : 1;
	/* Worker 0 gets one connection and does not take it. */
	accept_from(&r, host0, 10 * MS);
	step(&r, 0);
	CHECK_EQ(bt_queue_inflight(r.q[0]), 1);
	if (dispatch == BT_DISPATCH_RR) {
		accept_from(&r, 1, 1 * MS); /* rr: the next one is worker 1's */
		step(&r, 0);
		consume(&r, 1);
	}
	step(&r, 10 * MS); /* 10 ms: still in good standing */
	CHECK_EQ(r.acc->w[0].lagging, 0);
	unsigned before = bt_queue_inflight(r.q[0]);
	accept_from(&r, host0, 0);
	step(&r, 0);
	CHECK_EQ(bt_queue_inflight(r.q[0]), before + 1); /* still chosen */
	step(&r, 21 * MS); /* over 20 ms owed */
	CHECK_EQ(r.acc->w[0].lagging, 1);
	struct bt_acceptor_stats st;
	bt_acceptor_get_stats(r.acc, &st);
	CHECK_EQ(st.lagged, 1);
	before = bt_queue_inflight(r.q[0]);
	unsigned got1 = r.got[1];
	for (int i = 0; i < 6; i++) {
		accept_from(&r, host0, 1 * MS);
		step(&r, 0);
		consume(&r, 1);
	}
	CHECK_EQ(bt_queue_inflight(r.q[0]), before); /* passed over */
	CHECK_EQ(r.got[1] - got1, 6u);
	/* It acknowledges: chosen again. */
	consume(&r, 0);
	step(&r, 1 * MS);
	CHECK_EQ(r.acc->w[0].lagging, 0);
	accept_from(&r, host0, 1 * MS);
	accept_from(&r, host0, 1 * MS);
	step(&r, 0);
	CHECK_OP(bt_queue_inflight(r.q[0]), >=, 1);
	rig_stop(&r);
	(void)h1;
}

static void test_lag_rr(void)
{
	lag_case(BT_DISPATCH_RR);
}

static void test_lag_hash(void)
{
	lag_case(BT_DISPATCH_HASH);
}

/* Every worker lags: connections are still dispatched, not held. */
static void test_lag_all(void)
{
	struct rig r;
	rig_start(&r, 2, BT_DISPATCH_RR, "adaptive", 32);
	accept_from(&r, 1, 10 * MS);
	accept_from(&r, 1, 10 * MS);
	step(&r, 0);
	step(&r, 21 * MS);
	CHECK(r.acc->w[0].lagging && r.acc->w[1].lagging);
	accept_from(&r, 1, 1 * MS);
	step(&r, 0);
	CHECK_EQ(bt_queue_inflight(r.q[0]) + bt_queue_inflight(r.q[1]), 3);
	CHECK_EQ(bt_acceptor_held(r.acc), 3);
	rig_stop(&r);
}

/* Every worker lags, but one is far behind (stopped, say): the fallback
 * leaves it out while the others are merely slow. */
static void test_lag_far_behind(void)
{
	struct rig r;
	rig_start(&r, 2, BT_DISPATCH_RR, "size", 1);
	accept_from(&r, 1, 10 * MS); /* worker 0's, never taken */
	step(&r, 0);
	accept_from(&r, 1, 1 * MS); /* worker 1's */
	step(&r, 0);
	CHECK_EQ(bt_queue_inflight(r.q[0]), 1);
	CHECK_EQ(bt_queue_inflight(r.q[1]), 1);
	step(&r, 200 * MS);
	CHECK(r.acc->w[0].lagging && r.acc->w[1].lagging);
	/* Both 200 ms behind: neither is far behind the other. */
	accept_from(&r, 1, 0);
	accept_from(&r, 1, 0);
	step(&r, 0);
	CHECK_EQ(bt_queue_inflight(r.q[0]) + bt_queue_inflight(r.q[1]), 4);
	CHECK_OP(bt_queue_inflight(r.q[0]), >=, 2);
	/* Worker 1 catches up and falls behind again, 21 ms this time. */
	consume(&r, 1);
	step(&r, 1 * MS);
	CHECK_EQ(r.acc->w[1].lagging, 0);
	accept_from(&r, 1, 0);
	step(&r, 0);
	step(&r, 21 * MS);
	CHECK(r.acc->w[0].lagging && r.acc->w[1].lagging);
	unsigned before0 = bt_queue_inflight(r.q[0]), before1 = bt_queue_inflight(r.q[1]);
	for (int i = 0; i < 4; i++)
		accept_from(&r, 1, 0);
	step(&r, 0);
	CHECK_EQ(bt_queue_inflight(r.q[0]), before0); /* over 200 ms behind: left out */
	CHECK_EQ(bt_queue_inflight(r.q[1]), before1 + 4);
	rig_stop(&r);
}

/* --- flush policies -------------------------------------------------------------------- */

/* size: full batches at once, the remainder only at the 50 ms backstop. */
static void test_flush_size(void)
{
	struct rig r;
	rig_start(&r, 1, BT_DISPATCH_RR, "size", 8);
	for (int i = 0; i < 20; i++)
		accept_from(&r, 1, 10 * US);
	CHECK_EQ(consume(&r, 0), 16); /* two full batches went as they filled */
	step(&r, 0);
	CHECK_EQ(consume(&r, 0), 0);
	step(&r, 49 * MS);
	CHECK_EQ(consume(&r, 0), 0);
	CHECK_EQ(bt__acc_next_deadline(r.acc) <= r.now + 1 * MS + BT_SIZE_BACKSTOP_NS, 1);
	step(&r, 2 * MS);
	CHECK_EQ(consume(&r, 0), 4);
	struct bt_queue_stats qs;
	bt_queue_get_stats(r.q[0], &qs);
	CHECK_EQ(qs.items_sent, 20);
	CHECK_EQ(qs.batches, 3); /* 8 + 8 + 4: 6.67 per batch */
	rig_stop(&r);
}

/* delay: every batch waits its delay, even when idle. */
static void test_flush_delay(void)
{
	struct rig r;
	rig_start(&r, 1, BT_DISPATCH_RR, "delay:5000", 32);
	accept_from(&r, 1, 100 * MS);
	step(&r, 0);
	CHECK_EQ(consume(&r, 0), 0);
	step(&r, 4 * MS);
	CHECK_EQ(consume(&r, 0), 0);
	step(&r, 1 * MS);
	CHECK_EQ(consume(&r, 0), 1);
	rig_stop(&r);
}

/* adaptive: idle, at once; connections 10 us apart, held up to the hold
 * (200 us) so that they share a batch. */
static void test_flush_adaptive(void)
{
	struct rig r;
	rig_start(&r, 1, BT_DISPATCH_RR, "adaptive:200", 32);
	r.acc->can_sweep = 0; /* the flush alone (sweeping sends at once) */
	accept_from(&r, 1, 100 * MS);
	step(&r, 0);
	CHECK_EQ(consume(&r, 0), 1);
	/* Teach it a fast rate: accepts 10 us apart, one wake-up each (from
	 * idle, the smoothed gap needs about 60 to come down). */
	for (int i = 0; i < 100; i++) {
		accept_from(&r, 1, 10 * US);
		step(&r, 0);
		consume(&r, 0);
	}
	CHECK_OP(r.acc->gap_ewma_ns, <, 100 * US);
	step(&r, 200 * US); /* what the warm-up left held */
	consume(&r, 0);
	struct bt_queue_stats qs0;
	bt_queue_get_stats(r.q[0], &qs0);
	/* Now 40 more: held up to the hold, so they share batches. */
	for (int i = 0; i < 40; i++) {
		accept_from(&r, 1, 10 * US);
		step(&r, 0);
	}
	unsigned early = consume(&r, 0);
	step(&r, 200 * US);
	unsigned rest = consume(&r, 0);
	CHECK_EQ(early + rest, 40);
	struct bt_queue_stats qs;
	bt_queue_get_stats(r.q[0], &qs);
	CHECK_OP(qs.batches - qs0.batches, <=, 1 + 40 * 10 / 200); /* one per hold */
	rig_stop(&r);
}

/* --- paced accept ------------------------------------------------------------------------ */

/* Accepts closer than a quarter of the hold: the acceptor stops waiting on
 * its listener and sweeps it every hold; seven empty sweeps in a row and
 * it waits on the listener again. */
static void test_pacing(void)
{
	struct rig r;
	rig_start(&r, 1, BT_DISPATCH_RR, "adaptive:200", 32);
	CHECK_EQ(fake.arms, 1);
	int n = 0;
	while (!r.acc->sweeping && n < 200) {
		accept_from(&r, 1, 10 * US);
		step(&r, 0);
		consume(&r, 0);
		n++;
	}
	/* From idle, the smoothed gap comes under hold/4 (50 us) after about
	 * 60 accepts 10 us apart. */
	CHECK_OP(n, >, 50);
	CHECK_OP(n, <, 80);
	CHECK_EQ(r.acc->sweeping, 1);
	CHECK_EQ(fake.disarms, 1);
	CHECK_EQ(fake.sweeps, 0);
	uint64_t next = r.acc->next_sweep_ns;
	CHECK_OP(bt__acc_next_deadline(r.acc), <=, next);
	CHECK_EQ(next, r.now + 200 * US);
	/* A sweep brings in 3: it goes on. */
	step(&r, next - r.now);
	CHECK_EQ(fake.sweeps, 1);
	for (int i = 0; i < 3; i++)
		accept_from(&r, 1, 0);
	bt__acc_sweep_done(r.acc, -EAGAIN);
	CHECK_EQ(r.acc->sweeping, 1);
	/* Empty sweeps: the seventh stops it (pace_units). */
	int rounds = 0;
	while (r.acc->sweeping && rounds < 20) {
		CHECK_OP(bt__acc_next_deadline(r.acc), <=, r.acc->next_sweep_ns);
		step(&r, r.acc->next_sweep_ns - r.now);
		bt__acc_sweep_done(r.acc, -EAGAIN);
		rounds++;
	}
	CHECK_EQ(rounds, 7);
	step(&r, 1 * MS);
	CHECK_EQ(fake.arms, 2); /* waiting on the listener again */
	rig_stop(&r);
}

/* --- work items pushed by the program ---------------------------------------------- */

static unsigned rooms;
static void on_room(void *ctx)
{
	(void)ctx;
	rooms++;
}

static struct bt_wire_item item(uint64_t id, int fd, const char *payload)
{
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.fd = fd;
	it.flags = fd >= 0 ? BT_WIRE_ITEM_FD : 0;
	it.payload = payload;
	it.payload_len = payload ? (uint32_t)strlen(payload) : 0;
	return it;
}

/* Bad items are refused and leave the caller's fd alone; a full backlog
 * says -EAGAIN, then on_room once half of it is gone; items carry their
 * descriptor, id and payload to the worker; after the drain, -ESHUTDOWN. */
static void test_push(void)
{
	bt_log_set_handler(quiet, NULL);
	struct bt_acceptor_config ac;
	bt_acceptor_config_init(&ac);
	ac.max_backlog = 4;
	ac.on_room = on_room;
	bt_acceptor_t *acc;
	CHECK_ERR(bt__acc_create_with(&acc, &ac, 2, &fake_ops), 0);
	int p[2];
	CHECK_SYS(pipe2(p, O_CLOEXEC));

	struct bt_wire_item it = item(1, -1, "x");
	it.flags = BT_WIRE_ITEM_LOST;
	CHECK_ERR(bt_acceptor_push(acc, &it), -EINVAL);
	it = item(1, -1, NULL);
	it.flags = BT_WIRE_ITEM_FD; /* a descriptor promised, none given */
	CHECK_ERR(bt_acceptor_push(acc, &it), -EINVAL);
	it = item(1, -1, NULL);
	it.payload_len = 3; /* no payload behind the length */
	CHECK_ERR(bt_acceptor_push(acc, &it), -EINVAL);
	it = item(1, -1, "x");
	it.payload_len = BT_WIRE_MAX_MSG; /* longer than a message */
	CHECK_ERR(bt_acceptor_push(acc, &it), -EINVAL);
	it = item(1, p[0], NULL);
	it.peer_len = 4; /* a peer is the acceptor's to fill */
	CHECK_ERR(bt_acceptor_push(acc, &it), -EINVAL);
	CHECK_ERR(bt_acceptor_push(NULL, &it), -EINVAL);
	CHECK_SYS(fcntl(p[0], F_GETFD)); /* still the caller's */

	/* No worker yet: the backlog takes four, then refuses. */
	char pay[8];
	for (unsigned i = 0; i < 4; i++) {
		snprintf(pay, sizeof(pay), "job%u", i);
		int fd = i == 0 ? dup(p[0]) : -1;
		it = item(100 + i, fd, pay);
		it.flags |= 0x10000; /* an application bit travels */
		CHECK_ERR(bt_acceptor_push(acc, &it), 0);
	}
	it = item(104, -1, "job4");
	CHECK_ERR(bt_acceptor_push(acc, &it), -EAGAIN);
	CHECK_EQ(bt_acceptor_held(acc), 4);
	CHECK_EQ(rooms, 0);

	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	bt_queue_t *q;
	CHECK_ERR(bt_queue_create_thread(&q, &qc), 0);
	CHECK_ERR(bt_acceptor_attach(acc, 0, q), 0);
	bt__acc_step(acc, 1000 * MS);
	CHECK_EQ(rooms, 1);
	bt__acc_step(acc, 1001 * MS); /* past the adaptive hold */
	struct bt_wire_item got[8];
	CHECK_EQ(bt_queue_consume(q, got, 8), 4);
	for (unsigned i = 0; i < 4; i++) {
		snprintf(pay, sizeof(pay), "job%u", i);
		CHECK_EQ(got[i].id, 100 + i);
		CHECK_EQ(got[i].flags & 0x10000, 0x10000);
		CHECK_EQ(got[i].payload_len, strlen(pay));
		CHECK(memcmp(got[i].payload, pay, got[i].payload_len) == 0);
		CHECK_EQ(got[i].fd >= 0, i == 0);
		if (got[i].fd >= 0)
			close(got[i].fd);
	}
	struct bt_acceptor_stats st;
	bt_acceptor_get_stats(acc, &st);
	CHECK_EQ(st.pushed, 4);

	bt_acceptor_drain(acc, 0);
	it = item(105, -1, "late");
	CHECK_ERR(bt_acceptor_push(acc, &it), -ESHUTDOWN);
	bt_acceptor_destroy(acc);
	close(p[0]);
	close(p[1]);
}

/* Items with and without a descriptor, unacknowledged by a worker that
 * goes, reach the other one with their payloads; the backlog's copies are
 * freed at destroy (ASan's leak check). */
static void test_push_redelivered(void)
{
	bt_log_set_handler(quiet, NULL);
	struct bt_acceptor_config ac;
	bt_acceptor_config_init(&ac);
	bt_acceptor_t *acc;
	CHECK_ERR(bt__acc_create_with(&acc, &ac, 2, &fake_ops), 0);
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	bt_queue_t *q[2];
	for (unsigned i = 0; i < 2; i++) {
		CHECK_ERR(bt_queue_create_thread(&q[i], &qc), 0);
		CHECK_ERR(bt_acceptor_attach(acc, i, q[i]), 0);
	}
	int p[2];
	CHECK_SYS(pipe2(p, O_CLOEXEC));
	char pay[8];
	for (unsigned i = 0; i < 6; i++) {
		snprintf(pay, sizeof(pay), "w%u", i);
		struct bt_wire_item it = item(i, i % 3 == 0 ? dup(p[0]) : -1, pay);
		CHECK_ERR(bt_acceptor_push(acc, &it), 0);
	}
	bt__acc_step(acc, 1000 * MS); /* rr: 0, 2, 4 to worker 0 */
	bt__acc_step(acc, 1001 * MS); /* past the adaptive hold: published */
	bt_acceptor_detach(acc, 0);
	bt__acc_step(acc, 1002 * MS); /* reclaimed: redelivered to worker 1 */
	bt__acc_step(acc, 1003 * MS);
	struct bt_wire_item got[16];
	int n = bt_queue_consume(q[1], got, 16);
	CHECK_EQ(n, 6);
	unsigned seen = 0;
	for (int i = 0; i < n; i++) {
		snprintf(pay, sizeof(pay), "w%u", (unsigned)got[i].id);
		CHECK_EQ(got[i].payload_len, strlen(pay));
		CHECK(memcmp(got[i].payload, pay, got[i].payload_len) == 0);
		CHECK_EQ(got[i].fd >= 0, got[i].id % 3 == 0);
		if (got[i].fd >= 0)
			close(got[i].fd);
		seen |= 1u << got[i].id;
	}
	CHECK_EQ(seen, 0x3f);
	struct bt_acceptor_stats st;
	bt_acceptor_get_stats(acc, &st);
	CHECK_EQ(st.redelivered, 3);
	/* Two more wait in the backlog (no worker takes them) at destroy. */
	bt_acceptor_detach(acc, 1);
	bt__acc_step(acc, 1004 * MS);
	struct bt_wire_item it = item(50, dup(p[0]), "left");
	CHECK_ERR(bt_acceptor_push(acc, &it), 0);
	it = item(51, -1, "left");
	CHECK_ERR(bt_acceptor_push(acc, &it), 0);
	CHECK_EQ(bt_acceptor_held(acc), 2);
	bt_acceptor_destroy(acc);
	close(p[0]);
	close(p[1]);
}

/* --- a worker that acknowledges on the wire ------------------------------------------ */

/* What the backend does when a worker's channel has a message. */
static int channel_msg(bt_acceptor_t *acc, unsigned idx)
{
	struct bt_wire_msg m;
	int rc = bt_fdpass_recv(bt_queue_channel(acc->w[idx].q), &m);
	return bt__acc_on_channel(acc, idx, rc, &m);
}

static void send_ack(bt_fdpass_t *ch, uint64_t seq)
{
	struct bt_wire_ack a;
	memset(&a, 0, sizeof(a));
	a.seq = seq;
	unsigned char buf[256];
	long len = bt_wire_encode_ack(buf, sizeof(buf), 0, &a);
	CHECK_ERR(bt_fdpass_send(ch, buf, (size_t)len, NULL, 0), 0);
}

/* An attached worker's ACKs release what it took; a bad ACK drops it, and
 * what it had not acknowledged goes to another worker, once. */
static void test_wire_worker(void)
{
	bt_log_set_handler(quiet, NULL);
	struct bt_acceptor_config ac;
	bt_acceptor_config_init(&ac);
	bt_acceptor_t *acc;
	CHECK_ERR(bt__acc_create_with(&acc, &ac, 2, &fake_ops), 0);
	fake.can_send = 1;
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *prod, *cons;
	CHECK_ERR(bt_fdpass_open(&prod, sv[0]), 0);
	CHECK_ERR(bt_fdpass_open(&cons, sv[1]), 0);
	CHECK_ERR(bt_fdpass_set_nonblock(prod, 1), 0);
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	qc.flush = BT_FLUSH_SIZE;
	qc.batch = 2;
	bt_queue_t *wq, *tq;
	CHECK_ERR(bt_queue_create(&wq, &qc, prod, NULL, 0), 0);
	CHECK_ERR(bt_acceptor_attach(acc, 0, wq), 0);
	int p[2];
	CHECK_SYS(pipe2(p, O_CLOEXEC));
	for (unsigned i = 1; i <= 2; i++) {
		struct bt_wire_item it = item(i, dup(p[0]), NULL);
		CHECK_ERR(bt_acceptor_push(acc, &it), 0); /* a full batch: sent */
	}
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(cons, &m), 1);
	CHECK_EQ(m.u.batch.n_items, 2);
	for (unsigned i = 0; i < 2; i++)
		close(m.u.batch.items[i].fd);
	CHECK_EQ(bt_acceptor_held(acc), 2);
	send_ack(cons, m.u.batch.seq);
	CHECK_EQ(channel_msg(acc, 0), 1);
	bt__acc_step(acc, 1000 * MS);
	CHECK_EQ(bt_acceptor_held(acc), 0); /* acknowledged: the copies are closed */

	/* Two more, then an ACK for a batch never sent. */
	for (unsigned i = 3; i <= 4; i++) {
		struct bt_wire_item it = item(i, dup(p[0]), NULL);
		CHECK_ERR(bt_acceptor_push(acc, &it), 0);
	}
	CHECK_ERR(bt_fdpass_recv(cons, &m), 1);
	for (unsigned i = 0; i < 2; i++)
		close(m.u.batch.items[i].fd);
	CHECK_ERR(bt_queue_create_thread(&tq, &qc), 0);
	CHECK_ERR(bt_acceptor_attach(acc, 1, tq), 0);
	send_ack(cons, 77);
	CHECK_EQ(channel_msg(acc, 0), 0); /* dropped */
	bt__acc_step(acc, 1001 * MS);     /* reclaimed: to worker 1 */
	bt__acc_step(acc, 1002 * MS);
	struct bt_wire_item got[8];
	CHECK_EQ(bt_queue_consume(tq, got, 8), 2);
	CHECK_EQ(got[0].id + got[1].id, 7);
	close(got[0].fd);
	close(got[1].fd);
	struct bt_acceptor_stats st;
	bt_acceptor_get_stats(acc, &st);
	CHECK_EQ(st.redelivered, 2);
	bt_fdpass_close(cons);
	bt_acceptor_destroy(acc);
	close(p[0]);
	close(p[1]);
}

static const struct check_case cases[] = {
	{"pace_units", test_pace_units},
	{"flush_units", test_flush_units},
	{"rr_alternates", test_rr_alternates},
	{"hash_sticks_to_peer", test_hash_sticks_to_peer},
	{"least_prefers_idle", test_least_prefers_idle},
	{"lag_rr", test_lag_rr},
	{"lag_hash", test_lag_hash},
	{"lag_all", test_lag_all},
	{"lag_far_behind", test_lag_far_behind},
	{"flush_size", test_flush_size},
	{"flush_delay", test_flush_delay},
	{"flush_adaptive", test_flush_adaptive},
	{"pacing", test_pacing},
	{"push", test_push},
	{"push_redelivered", test_push_redelivered},
	{"wire_worker", test_wire_worker},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
