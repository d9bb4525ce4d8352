/* SPDX-License-Identifier: MIT */
/* The work queue's process transport through baton/queue.h: batching,
 * acknowledgement through shared memory, back-pressure, redelivery after a
 * consumer dies or loses descriptors, fire-and-forget. */
#include "check.h"

#include <baton/log.h>
#include <baton/queue.h>

#include <netinet/in.h>
#include <sys/mman.h>
#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>

static void quiet(void *ctx, int level, const char *line)
{
	(void)ctx, (void)level, (void)line;
}

struct fixture {
	bt_queue_shm_t *shm;
	bt_queue_t *q;
	bt_fdpass_t *consumer;
};

/* A producer queue to f->consumer, acknowledged in shared memory (slot 1
 * of 2), or on the wire (wire: no shm). */
static void setup_as(struct fixture *f, unsigned batch, unsigned max_inflight, int fnf, int wire)
{
	bt_log_set_handler(quiet, NULL);
	f->shm = NULL;
	if (!wire)
		CHECK_ERR(bt_queue_shm_create(&f->shm, 2, max_inflight), 0);
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *prod;
	CHECK_ERR(bt_fdpass_open(&prod, sv[0]), 0);
	CHECK_ERR(bt_fdpass_open(&f->consumer, sv[1]), 0);
	CHECK_ERR(bt_fdpass_set_nonblock(f->consumer, 1), 0);
	struct bt_queue_config cfg;
	bt_queue_config_init(&cfg);
	cfg.batch = batch;
	cfg.max_inflight = max_inflight;
	cfg.fire_and_forget = fnf;
	CHECK_ERR(bt_queue_create(&f->q, &cfg, prod, f->shm, wire ? 0 : 1), 0);
}

static void setup(struct fixture *f, unsigned batch, unsigned max_inflight, int fnf)
{
	setup_as(f, batch, max_inflight, fnf, 0);
}

static void teardown(struct fixture *f)
{
	bt_queue_destroy(f->q);
	bt_fdpass_close(f->consumer);
	bt_queue_shm_destroy(f->shm);
}

static int new_file(uint64_t id)
{
	int fd = memfd_create("queue-item", MFD_CLOEXEC);
	CHECK_OP(fd, >=, 0);
	CHECK_SYS(ftruncate(fd, (off_t)id)); /* the size tells which item it is */
	return fd;
}

static uint64_t file_id(int fd)
{
	struct stat st;
	CHECK_SYS(fstat(fd, &st));
	return (uint64_t)st.st_size;
}

static int push_id(bt_queue_t *q, uint64_t id)
{
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.accept_ns = id * 10;
	it.flags = BT_WIRE_ITEM_FD;
	it.fd = new_file(id);
	int rc = bt_queue_push(q, &it);
	if (rc < 0)
		close(it.fd);
	return rc;
}

/* The consumer receives one batch; checks that every fd matches its id;
 * acknowledges it unless told not to; returns its item count (0: none). */
static int consume(struct fixture *f, uint64_t *ids, int ack)
{
	struct bt_wire_msg m;
	int rc = bt_fdpass_recv(f->consumer, &m);
	if (rc == -EAGAIN)
		return 0;
	CHECK_ERR(rc, 1);
	CHECK_EQ(m.type, BT_WIRE_BATCH);
	for (unsigned i = 0; i < m.u.batch.n_items; i++) {
		const struct bt_wire_item *it = &m.u.batch.items[i];
		if (!(it->flags & BT_WIRE_ITEM_LOST)) {
			CHECK_EQ(file_id(it->fd), it->id);
			close(it->fd);
		}
		if (ids)
			ids[i] = it->id;
	}
	if (ack)
		bt_queue_ack_batch(f->shm, 1, &m.u.batch);
	return m.u.batch.n_items;
}

struct gathered {
	int n;
	uint64_t ids[4096];
};

static void gather(void *ctx, const struct bt_wire_item *it)
{
	struct gathered *g = ctx;
	CHECK_EQ(file_id(it->fd), it->id); /* the producer's copy, still open */
	g->ids[g->n++] = it->id;
	close(it->fd);
}

static void test_config(void)
{
	struct bt_queue_config c;
	bt_queue_config_init(&c);
	CHECK_EQ(c.batch, 32);
	CHECK_EQ(c.flush, BT_FLUSH_ADAPTIVE);
	char buf[32];
	CHECK_ERR(bt_queue_parse_flush("size", &c), 0);
	CHECK(strcmp(bt_queue_flush_name(&c, buf, sizeof(buf)), "size") == 0);
	CHECK_ERR(bt_queue_parse_flush("delay:150", &c), 0);
	CHECK_EQ(c.flush, BT_FLUSH_DELAY);
	CHECK_EQ(c.delay_us, 150);
	CHECK(strcmp(bt_queue_flush_name(&c, buf, sizeof(buf)), "delay:150") == 0);
	CHECK_ERR(bt_queue_parse_flush("adaptive", &c), 0);
	CHECK_EQ(c.flush, BT_FLUSH_ADAPTIVE);
	CHECK_ERR(bt_queue_parse_flush("adaptive:0", &c), 0);
	CHECK_EQ(c.delay_us, 0);
	CHECK(strcmp(bt_queue_flush_name(&c, buf, sizeof(buf)), "adaptive:0") == 0);
	CHECK_ERR(bt_queue_parse_flush("adaptive:x", &c), -EINVAL);
	const char *bad[] = {"", "delay", "delay:", "delay:0", "delay:-5", "delay:1x",
			     "delay:2000000", "Adaptive", "sizes", NULL};
	for (int i = 0; bad[i]; i++)
		CHECK_ERR(bt_queue_parse_flush(bad[i], &c), -EINVAL);

	bt_queue_shm_t *shm;
	CHECK_ERR(bt_queue_shm_create(&shm, 0, 16), -EINVAL);
	CHECK_ERR(bt_queue_shm_create(&shm, 1, 0), -EINVAL);
	CHECK_ERR(bt_queue_shm_create(&shm, 1, 16), 0);
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	bt_fdpass_t *ch;
	CHECK_ERR(bt_fdpass_open(&ch, sv[0]), 0);
	bt_queue_t *q;
	bt_queue_config_init(&c);
	CHECK_ERR(bt_queue_create(&q, &c, ch, shm, 0), -EINVAL); /* 4096 > shm's 16 */
	c.max_inflight = 16;
	c.batch = 0;
	CHECK_ERR(bt_queue_create(&q, &c, ch, shm, 0), -EINVAL);
	c.batch = 254;
	CHECK_ERR(bt_queue_create(&q, &c, ch, shm, 0), -EINVAL);
	c.batch = 8;
	CHECK_ERR(bt_queue_create(&q, &c, ch, shm, 1), -EINVAL); /* no slot 1 */
	CHECK_ERR(bt_queue_create(&q, &c, ch, shm, 0), 0);
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.flags = BT_WIRE_ITEM_FD;
	it.fd = -1;
	CHECK_ERR(bt_queue_push(q, &it), -EINVAL);
	it.flags = 0x20; /* reserved */
	CHECK_ERR(bt_queue_push(q, &it), -EINVAL);
	bt_queue_destroy(q); /* closes ch */
	close(sv[1]);
	bt_queue_shm_destroy(shm);
}

/* Items go out in batches of `batch`, in order; acknowledged copies are
 * closed by the reap, without a syscall from the consumer. */
static void batching(unsigned batch)
{
	struct fixture f;
	setup(&f, batch, 1024, 0);
	int base = check_count_fds();
	unsigned total = 3 * batch + 1;
	for (unsigned i = 0; i < total; i++) {
		int rc = push_id(f.q, i + 1);
		CHECK_ERR(rc, (i + 1) % batch == 0 ? 1 : 0);
		if (rc == 1)
			CHECK_EQ(bt_queue_flush(f.q), batch);
	}
	unsigned rest = total % batch, nbatches = total / batch + (rest ? 1 : 0);
	CHECK_EQ(bt_queue_pending(f.q), rest);
	CHECK_EQ(bt_queue_flush(f.q), rest);
	CHECK_EQ(bt_queue_flush(f.q), 0); /* nothing pending */
	CHECK_EQ(bt_queue_inflight(f.q), total);
	CHECK_EQ(check_count_fds(), base + (int)total); /* producer holds copies */

	uint64_t ids[253], next = 1;
	int n;
	while ((n = consume(&f, ids, 1)) > 0) {
		for (int i = 0; i < n; i++)
			CHECK_EQ(ids[i], next++);
		CHECK_EQ(bt_queue_reap(f.q, NULL, NULL), n);
	}
	CHECK_EQ(next, total + 1);
	CHECK_EQ(bt_queue_inflight(f.q), 0);
	CHECK_EQ(check_count_fds(), base);
	struct bt_queue_stats st;
	bt_queue_get_stats(f.q, &st);
	CHECK_EQ(st.batches, nbatches);
	CHECK_EQ(st.items_sent, total);
	CHECK_EQ(st.acked, total);
	teardown(&f);
}

static void test_batch_1(void) { batching(1); }
static void test_batch_16(void) { batching(16); }
static void test_batch_253(void) { batching(253); }

/* More than max_inflight unacknowledged: push refuses, caller keeps the fd. */
static void test_inflight_bound(void)
{
	struct fixture f;
	setup(&f, 8, 32, 0);
	for (unsigned i = 0; i < 32; i++)
		CHECK_OP(push_id(f.q, i + 1), >=, 0);
	CHECK_ERR(push_id(f.q, 99), -EAGAIN);
	CHECK_EQ(bt_queue_flush(f.q), 8);
	CHECK_ERR(push_id(f.q, 99), -EAGAIN); /* sent is not acknowledged */
	CHECK_EQ(consume(&f, NULL, 1), 8);
	CHECK_EQ(bt_queue_reap(f.q, NULL, NULL), 8);
	CHECK_OP(push_id(f.q, 33), >=, 0);
	while (bt_queue_flush(f.q) > 0)
		;
	while (consume(&f, NULL, 1) > 0)
		bt_queue_reap(f.q, NULL, NULL);
	CHECK_EQ(bt_queue_inflight(f.q), 0);
	teardown(&f);
}

/* A full channel: flush says -EAGAIN and the batch is pending again, in
 * order; nothing is lost or duplicated once the consumer catches up. */
static void test_channel_full(void)
{
	struct fixture f;
	setup(&f, 4, 4096, 0);
	uint64_t pushed = 0;
	int rc = 0;
	while (rc >= 0) {
		for (int i = 0; i < 4; i++)
			CHECK_OP(push_id(f.q, ++pushed), >=, 0);
		rc = bt_queue_flush(f.q);
	}
	CHECK_ERR(rc, -EAGAIN);
	CHECK_EQ(bt_queue_pending(f.q), 4);
	struct bt_queue_stats st;
	bt_queue_get_stats(f.q, &st);
	CHECK_EQ(st.full, 1);
	uint64_t ids[253], next = 1;
	int n;
	for (;;) {
		while ((n = consume(&f, ids, 1)) > 0) {
			for (int i = 0; i < n; i++)
				CHECK_EQ(ids[i], next++);
			bt_queue_reap(f.q, NULL, NULL);
		}
		if (bt_queue_flush(f.q) == 0)
			break;
	}
	CHECK_EQ(next, pushed + 1);
	CHECK_EQ(bt_queue_inflight(f.q), 0);
	teardown(&f);
}

/* The consumer dies after acknowledging some batches and receiving others
 * without acknowledging them: take() gives back exactly the rest. */
static void test_consumer_dies(void)
{
	struct fixture f;
	setup(&f, 8, 1024, 0);
	for (int i = 0; i < 8 * 5 + 3; i++)
		CHECK_OP(push_id(f.q, (uint64_t)i + 1), >=, 0);
	for (int b = 0; b < 5; b++)
		CHECK_EQ(bt_queue_flush(f.q), 8);
	CHECK_EQ(consume(&f, NULL, 1), 8);  /* batch 1 acknowledged */
	CHECK_EQ(consume(&f, NULL, 1), 8);  /* batch 2 acknowledged */
	CHECK_EQ(consume(&f, NULL, 0), 8);  /* batch 3 received, not acked */
	bt_fdpass_close(f.consumer);        /* dies with 4 and 5 queued */
	f.consumer = NULL;
	CHECK_EQ(bt_queue_reap(f.q, NULL, NULL), 16);
	/* Unread messages in the dead peer's queue: ECONNRESET, else EPIPE. */
	int rc = bt_queue_flush(f.q);
	CHECK(rc == -ECONNRESET || rc == -EPIPE);
	struct gathered *g = calloc(1, sizeof(*g));
	CHECK_EQ(bt_queue_take(f.q, gather, g), 8 * 3 + 3);
	CHECK_EQ(g->n, 27);
	for (int i = 0; i < g->n; i++)
		CHECK_EQ(g->ids[i], 17 + (uint64_t)i); /* oldest first */
	CHECK_EQ(bt_queue_inflight(f.q), 0);
	free(g);
	teardown(&f);
}

/* The consumer is at RLIMIT_NOFILE: its acknowledgement reports the items
 * whose descriptor did not arrive, and the reap gives those back. */
static void test_lost_redelivered(void)
{
	struct fixture f;
	setup(&f, 16, 1024, 0);
	for (int i = 0; i < 16; i++)
		CHECK_OP(push_id(f.q, (uint64_t)i + 1), >=, 0);
	CHECK_EQ(bt_queue_flush(f.q), 16);

	int limit = 0; /* room for exactly 6 more descriptors */
	for (int seen = 0;; limit++)
		if (!check_fd_is_open(limit) && seen++ == 6)
			break;
	struct rlimit saved, rl;
	CHECK_SYS(getrlimit(RLIMIT_NOFILE, &saved));
	rl = saved;
	rl.rlim_cur = (rlim_t)limit;
	CHECK_SYS(setrlimit(RLIMIT_NOFILE, &rl));
	struct bt_wire_msg m;
	int rc = bt_fdpass_recv(f.consumer, &m);
	CHECK_SYS(setrlimit(RLIMIT_NOFILE, &saved));
	CHECK_ERR(rc, 1);
	CHECK_EQ(m.u.batch.n_lost, 10);
	for (int i = 0; i < 6; i++)
		close(m.u.batch.items[i].fd);
	bt_queue_ack_batch(f.shm, 1, &m.u.batch);

	struct gathered *g = calloc(1, sizeof(*g));
	CHECK_EQ(bt_queue_reap(f.q, gather, g), 16);
	CHECK_EQ(g->n, 10);
	for (int i = 0; i < 10; i++)
		CHECK_EQ(g->ids[i], 7 + (uint64_t)i);
	struct bt_queue_stats st;
	bt_queue_get_stats(f.q, &st);
	CHECK_EQ(st.lost, 10);
	CHECK_EQ(st.acked, 6);
	free(g);
	teardown(&f);
}

/* Fire-and-forget: the producer closes its copies as soon as the batch is
 * sent; the consumer still gets working descriptors. */
static void test_fire_and_forget(void)
{
	struct fixture f;
	setup(&f, 8, 64, 1);
	int base = check_count_fds();
	for (int i = 0; i < 8; i++)
		CHECK_OP(push_id(f.q, (uint64_t)i + 1), >=, 0);
	CHECK_EQ(check_count_fds(), base + 8);
	CHECK_EQ(bt_queue_flush(f.q), 8);
	CHECK_EQ(check_count_fds(), base);
	CHECK_EQ(bt_queue_inflight(f.q), 0);
	CHECK_EQ(consume(&f, NULL, 0), 8);
	teardown(&f);
}

/* Payloads and peer addresses travel with the items and come back intact
 * from take(). */
static void payload_gather(void *ctx, const struct bt_wire_item *it)
{
	int *n = ctx;
	char want[32];
	snprintf(want, sizeof(want), "job %d", (int)it->id);
	CHECK_EQ(it->payload_len, strlen(want));
	CHECK(memcmp(it->payload, want, it->payload_len) == 0);
	CHECK_EQ(it->peer.ss_family, AF_INET);
	CHECK_EQ(it->fd, -1);
	(*n)++;
}

static void test_payload_items(void)
{
	struct fixture f;
	setup(&f, 4, 64, 0);
	char text[8][32];
	for (int i = 0; i < 8; i++) {
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		it.id = (uint64_t)i;
		int len = snprintf(text[i], sizeof(text[i]), "job %d", i);
		it.payload = text[i];
		it.payload_len = (uint32_t)len;
		it.peer.ss_family = AF_INET;
		it.peer_len = sizeof(struct sockaddr_in);
		CHECK_OP(bt_queue_push(f.q, &it), >=, 0);
		memset(text[i], 'x', sizeof(text[i])); /* the queue made a copy */
	}
	CHECK_EQ(bt_queue_flush(f.q), 4);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(f.consumer, &m), 1);
	CHECK_EQ(m.u.batch.n_fds, 0);
	CHECK_EQ(m.u.batch.items[2].payload_len, 5);
	CHECK(memcmp(m.u.batch.items[2].payload, "job 2", 5) == 0);
	int n = 0;
	CHECK_EQ(bt_queue_take(f.q, payload_gather, &n), 8);
	CHECK_EQ(n, 8);
	teardown(&f);
}

/* A consumer in another process acknowledges through the shared memory. */
static void test_cross_process_ack(void)
{
	struct fixture f;
	setup(&f, 32, 4096, 0);
	pid_t pid = fork();
	CHECK_OP(pid, >=, 0);
	if (pid == 0) {
		CHECK_ERR(bt_fdpass_set_nonblock(f.consumer, 0), 0);
		int got = 0;
		while (got < 1000) {
			int n = consume(&f, NULL, 1);
			if (n <= 0)
				_exit(1);
			got += n;
		}
		_exit(0);
	}
	int base = check_count_fds();
	for (int i = 0; i < 1000; i++) {
		int rc;
		while ((rc = push_id(f.q, (uint64_t)i + 1)) == -EAGAIN) {
			bt_queue_flush(f.q);
			bt_queue_reap(f.q, NULL, NULL);
		}
		if (rc == 1)
			while (bt_queue_flush(f.q) == -EAGAIN)
				bt_queue_reap(f.q, NULL, NULL);
	}
	while (bt_queue_flush(f.q) == -EAGAIN)
		bt_queue_reap(f.q, NULL, NULL);
	CHECK_CHILD_OK(pid);
	bt_queue_reap(f.q, NULL, NULL);
	CHECK_EQ(bt_queue_inflight(f.q), 0);
	CHECK_EQ(check_count_fds(), base);
	teardown(&f);
}

/* --- thread transport ----------------------------------------------------- */

static bt_queue_t *thread_queue(unsigned batch, unsigned max_inflight)
{
	struct bt_queue_config cfg;
	bt_queue_config_init(&cfg);
	cfg.batch = batch;
	cfg.max_inflight = max_inflight;
	bt_queue_t *q;
	CHECK_ERR(bt_queue_create_thread(&q, &cfg), 0);
	CHECK(bt_queue_is_thread(q));
	CHECK(bt_queue_channel(q) == NULL);
	return q;
}

/* Payloads are copied through the ring and stay valid until the next
 * consume. */
static void test_thread_payloads(void)
{
	bt_queue_t *q = thread_queue(4, 16);
	char text[32];
	for (int i = 0; i < 10; i++) {
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		it.id = (uint64_t)i;
		int n = snprintf(text, sizeof(text), "job-%d", i);
		it.payload = text;
		it.payload_len = (uint32_t)n;
		CHECK_OP(bt_queue_push(q, &it), >=, 0);
		memset(text, 'x', sizeof(text));
	}
	bt_queue_flush(q);
	struct bt_wire_item out[6];
	CHECK_EQ(bt_queue_consume(q, out, 6), 6);
	for (int i = 0; i < 6; i++) {
		snprintf(text, sizeof(text), "job-%d", i);
		CHECK_EQ(out[i].payload_len, strlen(text));
		CHECK(memcmp(out[i].payload, text, out[i].payload_len) == 0);
	}
	CHECK_EQ(bt_queue_consume(q, out, 6), 4);
	CHECK(memcmp(out[3].payload, "job-9", 5) == 0);
	bt_queue_destroy(q); /* frees what the last consume handed out */
}

static int push_plain(bt_queue_t *q, uint64_t id, int fd)
{
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = id;
	it.flags = fd >= 0 ? BT_WIRE_ITEM_FD : 0;
	it.fd = fd;
	return bt_queue_push(q, &it);
}

/* Items wrap around a small ring many times, in order; a full ring
 * refuses the push; nothing is visible before the flush. */
static void test_thread_wrap_and_full(void)
{
	bt_queue_t *q = thread_queue(4, 8);
	struct bt_wire_item out[16];
	CHECK_EQ(bt_queue_consume(q, out, 16), 0);
	uint64_t next_in = 1, next_out = 1;
	for (int round = 0; round < 2000; round++) {
		int k = 1 + round % 8;
		for (int i = 0; i < k; i++) {
			int rc = push_plain(q, next_in, -1);
			if (rc == -EAGAIN)
				break;
			CHECK_OP(rc, >=, 0);
			next_in++;
		}
		CHECK_EQ(bt_queue_consume(q, out, 16), 0); /* not flushed yet */
		bt_queue_flush(q);
		int n = bt_queue_consume(q, out, 16);
		for (int i = 0; i < n; i++)
			CHECK_EQ(out[i].id, next_out++);
		bt_queue_reap(q, NULL, NULL);
	}
	CHECK_EQ(next_in, next_out);
	/* Full: 8 items in flight, the 9th refused until one is consumed. */
	for (int i = 0; i < 8; i++)
		CHECK_OP(push_plain(q, 100 + (uint64_t)i, -1), >=, 0);
	CHECK_ERR(push_plain(q, 200, -1), -EAGAIN);
	CHECK_EQ(bt_queue_inflight(q), 8);
	bt_queue_flush(q);
	CHECK_EQ(bt_queue_consume(q, out, 1), 1);
	CHECK_OP(push_plain(q, 201, -1), >=, 0);
	/* Bad items: no peer addresses through this ring, no NULL payload. */
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.peer.ss_family = AF_INET;
	it.peer_len = sizeof(struct sockaddr_in);
	CHECK_ERR(bt_queue_push(q, &it), -EINVAL);
	it.peer_len = 0;
	it.payload_len = 3;
	CHECK_ERR(bt_queue_push(q, &it), -EINVAL);
	bt_queue_destroy(q);
}

/* Descriptors change hands; what the consumer never took is closed by
 * destroy (or given back by take). */
static void give_close(void *ctx, const struct bt_wire_item *it)
{
	(*(int *)ctx)++;
	close(it->fd);
}

static void test_thread_fds(void)
{
	int base = check_count_fds();
	bt_queue_t *q = thread_queue(8, 64);
	for (int i = 0; i < 6; i++)
		CHECK_OP(push_plain(q, (uint64_t)i + 1, new_file((uint64_t)i + 1)), >=, 0);
	bt_queue_flush(q);
	struct bt_wire_item out[4];
	CHECK_EQ(bt_queue_consume(q, out, 4), 4);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(file_id(out[i].fd), out[i].id);
		close(out[i].fd);
	}
	for (int i = 6; i < 9; i++)
		CHECK_OP(push_plain(q, (uint64_t)i + 1, new_file((uint64_t)i + 1)), >=, 0);
	int given = 0;
	CHECK_EQ(bt_queue_take_pending(q, give_close, &given), 3);
	CHECK_EQ(given, 3);
	bt_queue_destroy(q); /* closes the 2 published, unconsumed */
	CHECK_EQ(check_count_fds(), base);
}

/* A consumer thread that sleeps on the eventfd: no wake-up is lost, and
 * while it is awake the producer does not need to write the eventfd. */
struct consumer {
	bt_queue_t *q;
	uint64_t want;
	uint64_t got;
	int in_order;
	int drained;
};

static void *consumer_thread(void *arg)
{
	struct consumer *c = arg;
	struct bt_wire_item out[64];
	uint64_t next = 1;
	c->in_order = 1;
	double t0 = check_now();
	while (c->got < c->want && check_now() - t0 < 30) {
		int n = bt_queue_consume(c->q, out, 64);
		for (int i = 0; i < n; i++) {
			c->in_order &= out[i].id == next++;
			if (out[i].fd >= 0)
				close(out[i].fd);
		}
		c->got += (uint64_t)n;
		if (n == 0 && bt_queue_idle(c->q)) {
			struct pollfd p = {.fd = bt_queue_wake_fd(c->q), .events = POLLIN};
			poll(&p, 1, 1000);
			bt_queue_awake(c->q);
		}
	}
	/* Then the drain request. */
	while (!c->drained && check_now() - t0 < 30) {
		unsigned ms = 0;
		if (bt_queue_drain_requested(c->q, &ms)) {
			c->drained = ms == 777;
			break;
		}
		if (bt_queue_idle(c->q)) {
			struct pollfd p = {.fd = bt_queue_wake_fd(c->q), .events = POLLIN};
			poll(&p, 1, 1000);
			bt_queue_awake(c->q);
		}
	}
	return NULL;
}

static void thread_pairs(int pairs, uint64_t items)
{
	struct consumer *c = calloc((size_t)pairs, sizeof(*c));
	pthread_t *th = calloc((size_t)pairs, sizeof(*th));
	for (int k = 0; k < pairs; k++) {
		c[k].q = thread_queue(16, 256);
		c[k].want = items;
		CHECK_EQ(pthread_create(&th[k], NULL, consumer_thread, &c[k]), 0);
	}
	/* One producer thread (this one) per queue, round-robin, with bursts
	 * and pauses so the consumers sleep and wake. */
	uint64_t *next = calloc((size_t)pairs, sizeof(*next));
	for (int k = 0; k < pairs; k++)
		next[k] = 1;
	int busy = 1;
	double t0 = check_now();
	while (busy && check_now() - t0 < 30) {
		busy = 0;
		for (int k = 0; k < pairs; k++) {
			for (int i = 0; i < 37 && next[k] <= items; i++) {
				int rc = push_plain(c[k].q, next[k], -1);
				if (rc == -EAGAIN)
					break;
				next[k]++;
			}
			bt_queue_flush(c[k].q);
			bt_queue_reap(c[k].q, NULL, NULL);
			busy |= next[k] <= items;
		}
		if ((next[0] & 1023) < 37)
			usleep(200);
	}
	for (int k = 0; k < pairs; k++)
		CHECK_ERR(bt_queue_send_drain(c[k].q, 777), 0);
	for (int k = 0; k < pairs; k++) {
		pthread_join(th[k], NULL);
		CHECK_EQ(c[k].got, items);
		CHECK(c[k].in_order);
		CHECK(c[k].drained);
		struct bt_queue_stats st;
		bt_queue_get_stats(c[k].q, &st);
		CHECK_EQ(st.items_sent, items);
		bt_queue_destroy(c[k].q);
	}
	free(next);
	free(th);
	free(c);
}

static void test_thread_one_pair(void) { thread_pairs(1, 200000); }
static void test_thread_many_pairs(void) { thread_pairs(6, 50000); }

/* --- acknowledgements on the wire (an attached consumer) ---------------------- */

static void setup_wire(struct fixture *f, unsigned batch)
{
	struct bt_queue_config d;
	bt_queue_config_init(&d);
	setup_as(f, batch, d.max_inflight, 0, 1);
}

/* The consumer sends ACK (seq, lost ids) on the channel; the producer
 * receives it there and hands it to the queue, as the acceptor does. */
static void wire_ack(struct fixture *f, uint64_t seq, const uint64_t *lost, unsigned nlost)
{
	struct bt_wire_ack a;
	memset(&a, 0, sizeof(a));
	a.seq = seq;
	a.n_lost = nlost;
	for (unsigned i = 0; i < nlost; i++)
		a.lost[i] = lost[i];
	unsigned char buf[BT_WIRE_HDR_SIZE + BT_WIRE_ACK_SIZE + 8 * BT_WIRE_MAX_FDS];
	long len = bt_wire_encode_ack(buf, sizeof(buf), 0, &a);
	CHECK_OP(len, >, 0);
	CHECK_ERR(bt_fdpass_send(f->consumer, buf, (size_t)len, NULL, 0), 0);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(bt_queue_channel(f->q), &m), 1);
	CHECK_EQ(m.type, BT_WIRE_ACK);
	CHECK_ERR(bt_queue_on_ack(f->q, &m.u.ack), 0);
}

/* Acknowledged batches are released; when the consumer dies, only what it
 * had not acknowledged comes back: nothing is delivered twice. */
static void test_wire_ack(void)
{
	struct fixture f;
	setup_wire(&f, 8);
	for (int i = 0; i < 8 * 3; i++)
		CHECK_OP(push_id(f.q, (uint64_t)i + 1), >=, 0);
	for (int b = 0; b < 3; b++)
		CHECK_EQ(bt_queue_flush(f.q), 8);
	CHECK_EQ(consume(&f, NULL, 0), 8); /* seq 1 */
	CHECK_EQ(consume(&f, NULL, 0), 8); /* seq 2 */
	CHECK_EQ(bt_queue_reap(f.q, NULL, NULL), 0); /* no ACK yet */
	wire_ack(&f, 2, NULL, 0);           /* cumulative: 1 and 2 */
	CHECK_EQ(bt_queue_reap(f.q, NULL, NULL), 16);
	wire_ack(&f, 1, NULL, 0);           /* an old one again: harmless */
	CHECK_EQ(bt_queue_inflight(f.q), 8);
	bt_fdpass_close(f.consumer);        /* dies with batch 3 unread */
	f.consumer = NULL;
	struct gathered *g = calloc(1, sizeof(*g));
	CHECK_EQ(bt_queue_take(f.q, gather, g), 8);
	for (int i = 0; i < g->n; i++)
		CHECK_EQ(g->ids[i], 17 + (uint64_t)i);
	struct bt_queue_stats st;
	bt_queue_get_stats(f.q, &st);
	CHECK_EQ(st.acked, 16);
	free(g);
	teardown(&f);
}

/* Lost descriptors reported in the ACK are given back by the reap. */
static void test_wire_ack_lost(void)
{
	struct fixture f;
	setup_wire(&f, 4);
	for (int i = 0; i < 4; i++)
		CHECK_OP(push_id(f.q, (uint64_t)i + 1), >=, 0);
	CHECK_EQ(bt_queue_flush(f.q), 4);
	uint64_t ids[4];
	CHECK_EQ(consume(&f, ids, 0), 4);
	uint64_t lost[2] = {2, 4}; /* as if MSG_CTRUNC had taken them */
	wire_ack(&f, 1, lost, 2);
	struct gathered *g = calloc(1, sizeof(*g));
	CHECK_EQ(bt_queue_reap(f.q, gather, g), 4);
	CHECK_EQ(g->n, 2);
	CHECK_EQ(g->ids[0], 2);
	CHECK_EQ(g->ids[1], 4);
	struct bt_queue_stats st;
	bt_queue_get_stats(f.q, &st);
	CHECK_EQ(st.lost, 2);
	CHECK_EQ(st.acked, 2);
	free(g);
	teardown(&f);
}

/* An ACK that cannot be true is refused (-EPROTO): a batch never sent, a
 * lost id that was never sent or is settled.  The queue stays as it was. */
static void test_wire_ack_refused(void)
{
	struct fixture f;
	setup_wire(&f, 4);
	for (int i = 0; i < 4; i++)
		CHECK_OP(push_id(f.q, (uint64_t)i + 1), >=, 0);
	CHECK_EQ(bt_queue_flush(f.q), 4);
	CHECK_EQ(consume(&f, NULL, 0), 4);
	struct bt_wire_ack a;
	memset(&a, 0, sizeof(a));
	a.seq = 2; /* only seq 1 went out */
	CHECK_ERR(bt_queue_on_ack(f.q, &a), -EPROTO);
	a.seq = 1;
	a.n_lost = 1;
	a.lost[0] = 99; /* never sent */
	CHECK_ERR(bt_queue_on_ack(f.q, &a), -EPROTO);
	a.lost[0] = 3;
	a.n_lost = 2;
	a.lost[1] = 3; /* the same one twice */
	CHECK_ERR(bt_queue_on_ack(f.q, &a), -EPROTO);
	CHECK_EQ(bt_queue_inflight(f.q), 4);
	a.n_lost = 1;
	a.lost[0] = 4;
	CHECK_ERR(bt_queue_on_ack(f.q, &a), 0); /* nothing of the refused ones stuck */
	struct gathered *g = calloc(1, sizeof(*g));
	CHECK_EQ(bt_queue_reap(f.q, gather, g), 4);
	CHECK_EQ(g->n, 1);
	CHECK_EQ(g->ids[0], 4);
	free(g);
	a.lost[0] = 1; /* settled already */
	CHECK_ERR(bt_queue_on_ack(f.q, &a), -EPROTO);
	CHECK_ERR(bt_queue_on_ack(NULL, &a), -EINVAL);
	teardown(&f);
	/* A queue acknowledged through shared memory takes no ACK. */
	setup(&f, 4, 64, 0);
	a.n_lost = 0;
	CHECK_ERR(bt_queue_on_ack(f.q, &a), -EINVAL);
	teardown(&f);
}

static const struct check_case cases[] = {
	{"thread_wrap_and_full", test_thread_wrap_and_full},
	{"thread_fds", test_thread_fds},
	{"thread_payloads", test_thread_payloads},
	{"thread_one_pair", test_thread_one_pair},
	{"thread_many_pairs", test_thread_many_pairs},
	{"config", test_config},
	{"batch_1", test_batch_1},
	{"batch_16", test_batch_16},
	{"batch_253", test_batch_253},
	{"inflight_bound", test_inflight_bound},
	{"channel_full", test_channel_full},
	{"consumer_dies", test_consumer_dies},
	{"lost_redelivered", test_lost_redelivered},
	{"fire_and_forget", test_fire_and_forget},
	{"payload_items", test_payload_items},
	{"cross_process_ack", test_cross_process_ack},
	{"wire_ack", test_wire_ack},
	{"wire_ack_lost", test_wire_ack_lost},
	{"wire_ack_refused", test_wire_ack_refused},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	return check_main(argc, argv, cases);
}
