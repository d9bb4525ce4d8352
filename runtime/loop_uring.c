/* SPDX-License-Identifier: MIT */
/*
 * The worker loop on io_uring.
 *
 * One ring per worker (bt__uring_init: SINGLE_ISSUER|DEFER_TASKRUN where
 * the kernel has them, else COOP_TASKRUN, else plain).  The loop
 * sleeps only in io_uring_submit_and_wait: every submission of a wake-up
 * goes in the same syscall as the next wait.
 *
 *  - the channel: one RECVMSG at a time on the fdpass channel's msghdr;
 *  - each connection: one RECV at a time selecting a buffer from a
 *    provided buffer ring (the buffer goes back as soon as on_data returns);
 *  - sends: one SEND per connection in flight, from the head of its output
 *    queue (bt__conn_next_send);
 *  - close: shutdown(2), a plain syscall (see uring_conn_finish), then a
 *    CLOSE operation that completes only if it fails.
 *  - a 100 ms tick while connections are open or draining, for timers.
 *
 * user_data: the conn pointer with the operation in its low 3 bits (conns
 * come from calloc, 16-byte aligned); the channel and the tick use tags
 * with the loop pointer.
 */
#include "loop_internal.h"

#include "internal.h"
#include "uring.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

enum {
	OP_RECV = 1,
	OP_SEND = 2,
	OP_POOL = 3,
	OP_CLOSE = 4,
	OP_CHANNEL = 5,
	OP_TICK = 6,
};
#define TAG_MASK 7ull
#define BGID 0

struct uring {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	size_t br_size;
	unsigned char *bufs;
	unsigned nbufs, bufsize;
	int chan_armed;
	int tick_armed;
	int pool_armed;
	struct __kernel_timespec tick_ts;
};

static inline uint64_t ud(void *p, unsigned op)
{
	return (uint64_t)(uintptr_t)p | op;
}

/* An SQE, submitting what is queued if the SQ is full. */
static int uring_init(bt_loop_t *loop)
{
	struct uring *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	int rc = bt__uring_init(&u->ring, 512, 8192);
	if (rc < 0) {
		free(u);
		return rc;
	}
	u->nbufs = loop->cfg.buf_count;
	u->bufsize = loop->cfg.buf_size;
	u->br_size = u->nbufs * sizeof(struct io_uring_buf);
	u->br = mmap(NULL, u->br_size, PROT_READ | PROT_WRITE,
		     MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	u->bufs = malloc((size_t)u->nbufs * u->bufsize);
	if (u->br == MAP_FAILED || !u->bufs) {
		rc = -ENOMEM;
		goto fail;
	}
	struct io_uring_buf_reg reg = {
		.ring_addr = (unsigned long)u->br,
		.ring_entries = u->nbufs,
		.bgid = BGID,
	};
	rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
	if (rc < 0) {
		bt__log_errno(BT_LOG_WARN, rc, "io_uring_register_buf_ring");
		goto fail;
	}
	io_uring_buf_ring_init(u->br);
	unsigned mask = io_uring_buf_ring_mask(u->nbufs);
	for (unsigned i = 0; i < u->nbufs; i++)
		io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * u->bufsize, u->bufsize,
				      (unsigned short)i, mask, (int)i);
	io_uring_buf_ring_advance(u->br, (int)u->nbufs);
	u->tick_ts.tv_nsec = 100000000;
	loop->backend = u;
	return 0;
fail:
	if (u->br != MAP_FAILED && u->br)
		munmap(u->br, u->br_size);
	free(u->bufs);
	io_uring_queue_exit(&u->ring);
	free(u);
	return rc;
}

static void uring_fini(bt_loop_t *loop)
{
	struct uring *u = loop->backend;
	if (!u)
		return;
	io_uring_queue_exit(&u->ring);
	munmap(u->br, u->br_size);
	free(u->bufs);
	free(u);
	loop->backend = NULL;
}

static void recycle(struct uring *u, unsigned bid)
{
	io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * u->bufsize, u->bufsize,
			      (unsigned short)bid, io_uring_buf_ring_mask(u->nbufs), 0);
	io_uring_buf_ring_advance(u->br, 1);
}

/*
 * One receive at a time, single-shot, re-armed after each completion while
 * the connection is open.  Single-shot rather than multishot: a connection
 * that closes (after its reply, the common case of connect-per-request)
 * then has no receive left to end, so its close needs no completion of its
 * own and the conn is freed a loop turn sooner; keep-alive pays one SQE per
 * read, which costs no syscall.
 */
static int arm_recv(struct uring *u, bt_conn_t *c)
{
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_recv(sqe, c->fd, NULL, u->bufsize, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, ud(c, OP_RECV));
	c->reading = 1;
	c->ops++;
	return 0;
}

static int uring_conn_start(bt_loop_t *loop, bt_conn_t *c)
{
	return arm_recv(loop->backend, c);
}

static void uring_conn_flush(bt_loop_t *loop, bt_conn_t *c)
{
	struct uring *u = loop->backend;
	size_t len;
	int flags;
	const char *p;
	if (c->writing || !(p = bt__conn_next_send(c, &len, &flags)))
		return;
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe) {
		bt__conn_ended(c, -EBUSY);
		return;
	}
	/* len is at most BT__SEND_MAX: the SQE's length is 32 bits, and a
	 * send over 2 GiB failed outright. */
	io_uring_prep_send(sqe, c->fd, p, len, MSG_NOSIGNAL | flags);
	io_uring_sqe_set_data64(sqe, ud(c, OP_SEND));
	c->writing = 1;
	c->ops++;
}

static void uring_conn_finish(bt_loop_t *loop, bt_conn_t *c, int abort)
{
	struct uring *u = loop->backend;
	(void)abort;
	if (c->closing_op || !c->fd_open)
		return;
	c->closing_op = 1;
	/* shutdown(2) directly: IORING_OP_SHUTDOWN is always punted to an
	 * io-wq thread (it may block), which costs a thread wake-up and two
	 * context switches per connection; for a TCP socket the syscall does
	 * not block.  SHUT_WR sends FIN now (with the last reply, see
	 * bt__conn_last_send_flags) whoever else holds the socket; SHUT_RD
	 * ends a receive still armed. */
	shutdown(c->fd, c->reading ? SHUT_RDWR : SHUT_WR);
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe) {
		bt__close(c->fd);
		c->fd_open = 0;
		return;
	}
	/* The CLOSE names only the fd: the conn can go before it runs (at the
	 * next submission); only a failure posts a completion. */
	io_uring_prep_close(sqe, c->fd);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, ud(loop, OP_CLOSE));
	c->fd_open = 0;
}

/* Reading paused or resumed (c->paused): a paused connection is simply
 * not re-armed; resuming arms a receive if none is in flight. */
static void uring_conn_pause(bt_loop_t *loop, bt_conn_t *c)
{
	struct uring *u = loop->backend;
	if (!c->paused && !c->reading && c->state == CONN_OPEN && arm_recv(u, c) < 0)
		bt__conn_ended(c, -EBUSY);
}

static void on_recv(struct uring *u, bt_conn_t *c, struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	c->ops--;
	c->reading = 0;
	if (res > 0) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		bt__conn_input(c, u->bufs + (size_t)bid * u->bufsize, (size_t)res);
		recycle(u, bid);
		if (c->state == CONN_OPEN && !c->paused && !c->reading && arm_recv(u, c) < 0)
			bt__conn_ended(c, -EBUSY);
	} else {
		if (cqe->flags & IORING_CQE_F_BUFFER)
			recycle(u, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		if (res == -ENOBUFS && c->state == CONN_OPEN) {
			/* Every buffer was in use at that moment; they are
			 * back by now. */
			if (!c->paused && arm_recv(u, c) < 0)
				bt__conn_ended(c, -EBUSY);
		} else if (c->state == CONN_OPEN || (c->state == CONN_CLOSING && res < 0)) {
			bt__conn_ended(c, res);
		}
	}
	bt__conn_maybe_free(c);
}

static void on_send(bt_conn_t *c, int res)
{
	c->ops--;
	c->writing = 0;
	if (res < 0) {
		if (c->state != CONN_DONE)
			bt__conn_ended(c, res);
	} else {
		bt__conn_sent(c, (size_t)res);
	}
	bt__conn_maybe_free(c);
}

static void arm_channel(bt_loop_t *loop, struct uring *u)
{
	struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
	if (!sqe)
		return;
	if (loop->cfg.queue) {
		/* Thread mode: a multishot poll on the queue's eventfd. */
		io_uring_prep_poll_multishot(sqe, bt_queue_wake_fd(loop->cfg.queue), POLLIN);
		io_uring_sqe_set_data64(sqe, ud(loop, OP_CHANNEL));
		u->chan_armed = 1;
		return;
	}
	io_uring_prep_recvmsg(sqe, bt_fdpass_fd(loop->cfg.channel),
			      bt_fdpass_rx_prepare(loop->cfg.channel), MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud(loop, OP_CHANNEL));
	u->chan_armed = 1;
}

static void handle_cqe(bt_loop_t *loop, struct uring *u, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned op = (unsigned)(data & TAG_MASK);
	void *p = (void *)(uintptr_t)(data & ~TAG_MASK);
	switch (op) {
	case OP_CHANNEL: {
		if (loop->cfg.queue) {
			if (!(cqe->flags & IORING_CQE_F_MORE))
				u->chan_armed = 0;
			bt__loop_consume(loop);
			break;
		}
		u->chan_armed = 0;
		struct bt_wire_msg msg;
		int rc = bt_fdpass_rx_complete(loop->cfg.channel, cqe->res, &msg);
		if (bt__loop_on_channel(loop, rc, &msg) == 0 && !loop->channel_eof)
			arm_channel(loop, u);
		break;
	}
	case OP_TICK:
		u->tick_armed = 0;
		break;
	case OP_POOL:
		if (!(cqe->flags & IORING_CQE_F_MORE))
			u->pool_armed = 0;
		bt_pool_sink_run(loop->sink); /* offloaded jobs' done() */
		break;
	case OP_RECV:
		on_recv(u, p, cqe);
		break;
	case OP_SEND:
		on_send(p, cqe->res);
		break;
	case OP_CLOSE:
		/* Only failures complete (IOSQE_CQE_SKIP_SUCCESS). */
		bt__log_errno(BT_LOG_ERROR, cqe->res, "close(connection)");
		break;
	default:
		break;
	}
}

static int uring_run(bt_loop_t *loop)
{
	struct uring *u = loop->backend;
	for (;;) {
		if (!u->chan_armed && !loop->channel_eof)
			arm_channel(loop, u);
		if (!u->pool_armed) {
			struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
			if (sqe) {
				io_uring_prep_poll_multishot(sqe, bt_pool_sink_fd(loop->sink), POLLIN);
				io_uring_sqe_set_data64(sqe, ud(loop, OP_POOL));
				u->pool_armed = 1;
			}
		}
		/* Thread mode: never sleep on published items (see
		 * bt_queue_idle for the handshake with the producer). */
		while (loop->cfg.queue && !bt_queue_idle(loop->cfg.queue)) {
			bt__loop_consume(loop);
			bt__loop_flush(loop);
		}
		if (!u->tick_armed && (loop->conns || loop->draining)) {
			struct io_uring_sqe *sqe = bt__uring_sqe(&u->ring);
			if (sqe) {
				io_uring_prep_timeout(sqe, &u->tick_ts, 0, 0);
				io_uring_sqe_set_data64(sqe, ud(loop, OP_TICK));
				u->tick_armed = 1;
			}
		}
		/* Output queued in the last pass goes out after a look at
		 * what else is ready: no sleep (and under DEFER_TASKRUN a
		 * plain submit would reap nothing). */
		int rc = loop->flushq ? io_uring_submit_and_get_events(&u->ring)
				      : io_uring_submit_and_wait(&u->ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EBUSY && rc != -EAGAIN)
			return bt__log_errno(BT_LOG_ERROR, rc, "worker %d: io_uring_submit_and_wait",
					     loop->cfg.worker_id);
		if (loop->cfg.queue)
			bt_queue_awake(loop->cfg.queue);
		loop->now_ns = bt__now_ns();
		loop->st.wakeups++;
		/* Callbacks may queue SQEs; they go out with the next wait. */
		for (;;) {
			struct io_uring_cqe *cqe;
			unsigned head, n = 0;
			io_uring_for_each_cqe(&u->ring, head, cqe) {
				handle_cqe(loop, u, cqe);
				n++;
			}
			if (!n)
				break;
			io_uring_cq_advance(&u->ring, n);
		}
		if (bt__loop_tick(loop))
			return 0;
	}
}

const struct loop_ops bt__loop_uring_ops = {
	.name = "io_uring",
	.init = uring_init,
	.fini = uring_fini,
	.run = uring_run,
	.conn_start = uring_conn_start,
	.conn_flush = uring_conn_flush,
	.conn_finish = uring_conn_finish,
	.conn_pause = uring_conn_pause,
};
