/* SPDX-License-Identifier: MIT */
/*
 * The worker loop on io_uring.
 *
 * The ring, its wait and its timers are the event core's (ev_uring.c):
 * every submission of a wake-up goes in the same syscall as the next wait.
 * This file adds the worker's own operations:
 *
 *  - each inlet's channel: one RECVMSG at a time on the fdpass channel's
 *    msghdr (a thread ring's: a multishot poll on its eventfd);
 *  - each connection: one RECV at a time selecting a buffer from a
 *    provided buffer ring (the buffer goes back as soon as on_data returns);
 *  - sends: one SEND per connection in flight, from the head of its output
 *    queue (bt__conn_next_send);
 *  - close: shutdown(2), a plain syscall (see uring_conn_finish), then a
 *    CLOSE operation that completes only if it fails.
 *  - the job pool's completions: a multishot poll on its eventfd.
 *  - thread mode with direct descriptors (ev.h): the loop registers a file
 *    table and gives its ring to the queue; each connection arrives as a
 *    completion tagged BT__DIRECT_TAG (its slot in res), and is served
 *    through that slot (IOSQE_FIXED_FILE).  Its close is a CLOSE of the
 *    slot: no shutdown(2), which needs a descriptor.  Nobody else holds
 *    the socket (the acceptor closed its slot as it passed it), so the
 *    last reference goes with the slot and the FIN with it, after the
 *    last data (sent with MSG_MORE) as with shutdown.  A receive still
 *    armed holds the socket: it is cancelled first.
 *
 * user_data: the conn pointer with the operation in its low 3 bits (conns
 * come from calloc, 16-byte aligned); a channel's operations carry its
 * inlet's pointer (one per inlet: the loop may have several), the pool's
 * sink the loop's.  Tag 0 is the core's.
 */
#include "loop_internal.h"

#include "internal.h"
#include "ev.h"

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
	OP_CLOSE = 3,
	OP_CHANNEL = 4,
	OP_SINK = 5,
};
#define TAG_MASK 7ull
#define BGID 0
_Static_assert(BT__DIRECT_TAG > OP_SINK && BT__DIRECT_TAG <= TAG_MASK,
	       "the direct descriptors' completions have a tag of their own");

struct uring {
	struct bt__ev *ev;
	struct io_uring_buf_ring *br;
	size_t br_size;
	unsigned char *bufs;
	unsigned nbufs, bufsize;
	int pool_armed;
};

static inline uint64_t ud(void *p, unsigned op)
{
	return (uint64_t)(uintptr_t)p | op;
}

/* The core's ring was made: register the receive buffers on it (an error
 * falls back to epoll). */
int bt__loop_uring_setup(void *ctx, struct io_uring *ring)
{
	bt_loop_t *loop = ctx;
	struct uring *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	int rc;
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
	rc = io_uring_register_buf_ring(ring, &reg, 0);
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
	loop->backend = u;
	return 0;
fail:
	if (u->br != MAP_FAILED && u->br)
		munmap(u->br, u->br_size);
	free(u->bufs);
	free(u);
	return rc;
}

static int uring_init(bt_loop_t *loop)
{
	struct uring *u = loop->backend; /* from bt__loop_uring_setup */
	u->ev = loop->ev;
	bt_queue_t *q = loop->inlet[0]->q;
	if (q && bt__tq_direct_wanted(q)) {
		/* Without a table of its own the loop takes regular
		 * descriptors: the acceptor installs one per connection. */
		/* BATON_DIRECT_SLOTS: the table's size, the most connections
		 * the worker holds (default: RLIMIT_NOFILE, at most 2^18). */
		unsigned n = bt__ev_files_wanted();
		const char *env = getenv("BATON_DIRECT_SLOTS");
		if (env && *env) {
			char *end;
			unsigned long v = strtoul(env, &end, 10);
			if (*end || v < 8 || v > n)
				bt__log(BT_LOG_WARN, "BATON_DIRECT_SLOTS=%s: expected 8 to %u; ignored", env, n);
			else
				n = (unsigned)v;
		}
		int rc = bt__ev_direct_usable(loop->ev);
		if (rc == 0)
			rc = bt__ev_files(loop->ev, n);
		if (rc == 0)
			rc = bt__tq_direct_consumer(q, loop->ev->ring.ring_fd, n);
		if (rc < 0)
			bt__log_errno(BT_LOG_WARN, rc, "worker %d: no direct descriptors (io_uring_register_files_sparse(%u))",
				      loop->cfg.worker_id, n);
	}
	return 0;
}

void bt__loop_uring_close_slot(bt_loop_t *loop, int slot)
{
	struct uring *u = loop->backend;
	struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
	if (!sqe) {
		bt__log(BT_LOG_ERROR, "worker %d: no SQE to close slot %d", loop->cfg.worker_id, slot);
		return;
	}
	io_uring_prep_close_direct(sqe, (unsigned)slot);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, ud(loop, OP_CLOSE));
}

/* After the core is gone (nothing in flight): the buffers. */
static void uring_fini(bt_loop_t *loop)
{
	struct uring *u = loop->backend;
	if (!u)
		return;
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
	struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
	if (!sqe)
		return -EBUSY;
	io_uring_prep_recv(sqe, c->fd, NULL, u->bufsize, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT | (c->direct ? IOSQE_FIXED_FILE : 0);
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
	struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
	if (!sqe) {
		bt__conn_ended(c, -EBUSY);
		return;
	}
	/* len is at most BT__SEND_MAX: the SQE's length is 32 bits, and a
	 * send over 2 GiB failed outright. */
	io_uring_prep_send(sqe, c->fd, p, len, MSG_NOSIGNAL | flags);
	if (c->direct)
		sqe->flags |= IOSQE_FIXED_FILE;
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
	if (c->direct) {
		if (c->xfd >= 0) {
			/* A regular descriptor was installed (bt_conn_fd): the
			 * program may have passed it on; FIN now, as below. */
			shutdown(c->xfd, c->reading ? SHUT_RDWR : SHUT_WR);
			bt__close(c->xfd);
			c->xfd = -1;
		} else if (c->reading) {
			struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
			if (sqe) {
				io_uring_prep_cancel64(sqe, ud(c, OP_RECV), 0);
				sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
				io_uring_sqe_set_data64(sqe, 0);
			}
		}
		bt__loop_uring_close_slot(loop, c->fd);
		c->fd_open = 0;
		return;
	}
	/* shutdown(2) directly: IORING_OP_SHUTDOWN is always punted to an
	 * io-wq thread (it may block), which costs a thread wake-up and two
	 * context switches per connection; for a TCP socket the syscall does
	 * not block.  SHUT_WR sends FIN now (with the last reply, see
	 * bt__conn_last_send_flags) whoever else holds the socket; SHUT_RD
	 * ends a receive still armed. */
	shutdown(c->fd, c->reading ? SHUT_RDWR : SHUT_WR);
	struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
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

/* A handover: the receive in flight is cancelled (its completion, with
 * data or -ECANCELED, clears c->reading); the socket is not touched. */
static void uring_conn_detach(bt_loop_t *loop, bt_conn_t *c)
{
	struct uring *u = loop->backend;
	if (!c->reading)
		return;
	struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
	if (!sqe)
		return; /* the receive completes when the next bytes come */
	io_uring_prep_cancel64(sqe, ud(c, OP_RECV), 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	io_uring_sqe_set_data64(sqe, 0); /* the core ignores it: -ENOENT/-EALREADY, it completes anyway */
}

static void on_recv(struct uring *u, bt_conn_t *c, const struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	c->ops--;
	c->reading = 0;
	if (c->handing) {
		/* Bytes that came as it was cancelled go with it (held: reading
		 * is paused); the end of it is for the next generation to see. */
		if (res > 0)
			bt__conn_input(c, u->bufs + (size_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) *
						     u->bufsize,
				       (size_t)res);
		if (cqe->flags & IORING_CQE_F_BUFFER)
			recycle(u, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		bt__conn_maybe_free(c);
		return;
	}
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

/* An inlet's channel: its completions name the inlet (calloc'd, so
 * aligned past the tag bits). */
static void arm_channel(struct uring *u, bt_queue_inlet_t *in)
{
	struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
	if (!sqe)
		return;
	if (in->q) {
		/* Thread mode: a multishot poll on the queue's eventfd. */
		io_uring_prep_poll_multishot(sqe, bt_queue_wake_fd(in->q), POLLIN);
		io_uring_sqe_set_data64(sqe, ud(in, OP_CHANNEL));
		in->armed = 1;
		return;
	}
	io_uring_prep_recvmsg(sqe, bt_fdpass_fd(in->ch), bt_fdpass_rx_prepare(in->ch),
			      MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud(in, OP_CHANNEL));
	in->armed = 1;
}

void bt__loop_uring_cqe(void *ctx, uint64_t data, const struct io_uring_cqe *cqe)
{
	bt_loop_t *loop = ctx;
	struct uring *u = loop->backend;
	unsigned op = (unsigned)(data & TAG_MASK);
	void *p = (void *)(uintptr_t)(data & ~TAG_MASK);
	switch (op) {
	case OP_CHANNEL: {
		bt_queue_inlet_t *in = p;
		if (in->q) {
			if (!(cqe->flags & IORING_CQE_F_MORE))
				in->armed = 0;
			bt__loop_consume(loop, in);
			break;
		}
		in->armed = 0;
		struct bt_wire_msg msg;
		int rc = bt_fdpass_rx_complete(in->ch, cqe->res, &msg);
		if (bt__loop_on_channel(loop, in, rc, &msg) == 0 && !in->eof)
			arm_channel(u, in);
		break;
	}
	case BT__DIRECT_TAG:
		/* A connection's descriptor arrived (or the item is passed
		 * over): the items up to it can be taken now. */
		bt__tq_direct_arrived(loop->inlet[0]->q, data >> 3, cqe->res);
		bt__loop_consume(loop, loop->inlet[0]);
		break;
	case OP_SINK:
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

/* Its channel is armed before the next wait (uring_prepare). */
static int uring_inlet_add(bt_loop_t *loop, bt_queue_inlet_t *in)
{
	(void)loop, (void)in;
	return 0;
}

/* Before each wait: the channels' receives and the pool's poll armed. */
static void uring_prepare(bt_loop_t *loop)
{
	struct uring *u = loop->backend;
	for (unsigned i = 0; i < loop->ninlets; i++)
		if (!loop->inlet[i]->armed && !loop->inlet[i]->eof)
			arm_channel(u, loop->inlet[i]);
	if (!u->pool_armed) {
		struct io_uring_sqe *sqe = bt__ev_sqe(u->ev);
		if (sqe) {
			io_uring_prep_poll_multishot(sqe, bt_pool_sink_fd(loop->sink), POLLIN);
			io_uring_sqe_set_data64(sqe, ud(loop, OP_SINK));
			u->pool_armed = 1;
		}
	}
}

const struct loop_ops bt__loop_uring_ops = {
	.name = "io_uring",
	.init = uring_init,
	.fini = uring_fini,
	.prepare = uring_prepare,
	.inlet_add = uring_inlet_add,
	.conn_start = uring_conn_start,
	.conn_flush = uring_conn_flush,
	.conn_finish = uring_conn_finish,
	.conn_pause = uring_conn_pause,
	.conn_detach = uring_conn_detach,
};
