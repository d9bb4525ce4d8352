/* SPDX-License-Identifier: MIT */
/* The acceptor's state, shared by acceptor.c and its backends
 * (acceptor_uring.c, acceptor_epoll.c).  Not part of the public API. */
#ifndef BATON_ACCEPTOR_INTERNAL_H
#define BATON_ACCEPTOR_INTERNAL_H

#include <baton/acceptor.h>

#include "ev.h"
#include "internal.h"

#include <stdint.h>

#define BT_MAX_LISTENERS 64
#define BT_MAX_WATCHES 8


struct listener { /* 8-aligned: the io_uring backend tags its address */
	_Alignas(8) int fd;
	uint8_t armed;   /* an accept is armed / registered */
	uint8_t closing; /* drain: being cancelled and closed */
	uint8_t proxy;   /* its connections start with a PROXY header */
};

struct worker {
	bt_queue_t *q;    /* NULL: no worker at this index */
	uint8_t dead;     /* detached: reclaim once nothing is in flight */
	uint8_t full;     /* skip in dispatch until something is reaped */
	unsigned direct_out; /* direct descriptors being passed to it (MSG_RING) */
	uint8_t table_full;  /* its file table has no room (logged once) */
	uint8_t sending;  /* a SENDMSG is in flight */
	uint8_t chan_armed; /* a RECVMSG on the channel is in flight */
	uint8_t drain_sent;
	uint64_t rest_until_ns; /* it lost descriptors (at its RLIMIT_NOFILE): let it be */
	/* Acknowledgement lag: owed_since_ns is when it last had nothing
	 * unacknowledged, or last acknowledged something (0: it owes
	 * nothing).  Lagging (no acknowledgement for BT_LAG_NS while owing):
	 * dispatch prefers the others. */
	uint64_t owed_since_ns;
	uint8_t lagging;
	uint64_t pending_since_ns; /* when its pending batch got its first item */
	/* Watchdog: the worker's heartbeat as last read, and when it last
	 * changed (bt__acc_worker_stalled_ns). */
	uint64_t beat;
	uint64_t beat_ns;
	/* An attached worker (bt__acc_attach_guest): not used until its
	 * HELLO; its pid, from the HELLO. */
	uint8_t await_hello;
	uint8_t guest;       /* attached (bt__acc_attach_guest), not ours */
	/* Retiring (bt__acc_retire): nothing new goes to it; DRAIN with
	 * retire_ms once its pending batch is back with the others. */
	uint8_t retiring;
	unsigned retire_ms;
	uint32_t pid;
	struct bt_queue_stats gone; /* of earlier queues in this slot */
	uint64_t bhist_gone[BT__BATCH_BUCKETS];
};

struct watch { /* bt_acceptor_watch */
	struct bt__watch w; /* first: 8-aligned */
	void (*cb)(void *ctx);
	void *ctx;
};

struct held { /* an item (a connection, or work) in the acceptor's backlog */
	int fd;          /* -1: none */
	uint32_t flags;  /* BT_WIRE_ITEM_FD and the application's bits */
	uint64_t id;
	uint64_t accept_ns;
	void *payload;   /* malloc'd copy, or NULL */
	uint32_t payload_len;
};

struct acc_ops {
	const char *name;
	int (*init)(bt_acceptor_t *acc);
	void (*fini)(bt_acceptor_t *acc);
	/* Begin accepting on l. */
	int (*arm_listener)(bt_acceptor_t *acc, struct listener *l);
	/* Accept what is queued on l now, without waiting (NULL: the
	 * backend cannot; the acceptor never paces). */
	int (*sweep_listener)(bt_acceptor_t *acc, struct listener *l);
	/* Stop the accept armed on l (its completion says when). */
	void (*disarm_listener)(bt_acceptor_t *acc, struct listener *l);
	/* Stop accepting on l and close it. */
	void (*close_listener)(bt_acceptor_t *acc, struct listener *l);
	/* Send what bt_queue_flush_prepare built for worker idx; the result
	 * comes back through bt__acc_send_done. */
	void (*send)(bt_acceptor_t *acc, unsigned idx, struct msghdr *msg);
	/* Watch worker idx's channel for messages and EOF. */
	void (*arm_channel)(bt_acceptor_t *acc, unsigned idx);
	void (*forget_channel)(bt_acceptor_t *acc, unsigned idx);
};

extern const struct acc_ops bt__acc_uring_ops;
/* acceptor_uring.c: pass direct descriptors to thread queue q of worker
 * idx from now on. */
void bt__acc_uring_direct_queue(bt_acceptor_t *acc, unsigned idx, bt_queue_t *q);
void bt__acc_uring_close_slot(bt_acceptor_t *acc, int slot);
extern const struct acc_ops bt__acc_epoll_ops;

/* The event core's hooks: can the kernel run the acceptor on this ring; a
 * completion (io_uring) or readiness (epoll) for the acceptor. */
int bt__acc_uring_usable(void *ctx, struct io_uring *ring);
void bt__acc_uring_cqe(void *ctx, uint64_t data, const struct io_uring_cqe *cqe);
void bt__acc_epoll_event(void *ctx, uint64_t data, uint32_t events);

struct bt_acceptor {
	struct bt_acceptor_config cfg;
	const struct acc_ops *ops;
	struct bt__ev *ev; /* the event core: wait, timers, watches */
	void *backend;

	struct listener l[BT_MAX_LISTENERS];
	unsigned nl;
	struct worker *w;
	unsigned cap;     /* capacity: slots 0..cap-1 */
	unsigned nw;      /* slots ever attached, +1 at most: the loops' bound */
	unsigned retiring; /* workers told to drain alone (bt__acc_retire) */
	unsigned alive;   /* attached and not dead */
	uint64_t newest_owed_ns; /* dispatch's fallback: the least behind's owed_since_ns */
	unsigned rr;

	struct held *backlog; /* FIFO: [bhead, btail) of a ring of bcap */
	size_t bhead, btail, bcap;
	int paused;          /* accepting paused: backlog full */
	int standby;         /* accepting left to the other acceptors
				(bt__acc_standby) */
	uint64_t emfile_until_ns; /* accepting paused: EMFILE/ENFILE */
	unsigned emfile_ms;

	struct watch watches[BT_MAX_WATCHES];
	unsigned nwatches;
	struct bt__timer timer; /* bt_acceptor_timer */
	void (*timer_cb)(void *ctx);
	void *timer_ctx;

	int stop;
	int draining;
	int room_wanted; /* bt_acceptor_push said -EAGAIN: on_room when there is */
	unsigned drain_ms;
	uint64_t next_id;
	uint64_t last_accept_ns;
	uint64_t gap_ewma_ns; /* smoothed time between accepts */
	/* Paced accept (adaptive flush under load): sweep the listeners
	 * every hold instead of waking per connection. */
	int can_sweep;      /* the backend and kernel support sweeps */
	int sweeping;
	uint64_t next_sweep_ns;
	uint64_t sweep_hold_ns;
	unsigned sweeps_out;  /* listeners being swept */
	unsigned sweep_got;   /* accepted by the sweep in progress */
	unsigned sweep_rr;    /* rr dispatch while sweeping: this sweep's worker */
	unsigned yield_x8;    /* smoothed connections per sweep, x8 */
	uint64_t now_ns;
	struct bt_acceptor_stats st;
	uint64_t batches_gone, items_gone; /* of queues since destroyed */
	/* Channels given to our own workers to hand connections over on (a
	 * reload, a retiring worker), less those closed unread because their
	 * worker died: items that are neither accepted nor pushed. */
	uint64_t internal;
	/* Thread workers get direct descriptors (bt__acc_direct): the
	 * listeners accept into the ring's file table, of nfiles slots, of
	 * which dslots are in use.  A multishot accept takes all that is
	 * queued, and a connection accepted into a full table is lost (the
	 * kernel closes it): accepts are armed only while dmargin, what the
	 * listeners can queue, fits in what is free. */
	int direct;
	unsigned nfiles, dslots, dmargin;
};

uint64_t bt__now_ns(void);

/* acceptor_dispatch.c */
static inline size_t bt__acc_backlog_len(const bt_acceptor_t *acc)
{
	return acc->btail - acc->bhead;
}
/* Hand h to a worker, or to the backlog, which then owns its fd and
 * payload.  Returns 0 if a worker took it, 1 if it went to the backlog. */
int bt__acc_dispatch(bt_acceptor_t *acc, struct held *h);
/* Move the backlog to workers, oldest first, while they take it. */
void bt__acc_drain_backlog(bt_acceptor_t *acc);
/* Send worker idx's pending batch. */
void bt__acc_flush_worker(bt_acceptor_t *acc, unsigned idx);
/* bt_queue_give_fn: an item given back by a queue (dead worker, full
 * channel, lost descriptor) goes to the backlog for redelivery. */
void bt__acc_give_back(void *ctx, const struct bt_wire_item *it);
/* Close h's fd (a direct one: its slot) and free its payload. */
void bt__acc_held_free(bt_acceptor_t *acc, struct held *h);
/* A direct item for a worker that takes only regular descriptors: one
 * installed in its place, the slot closed.  0 or -errno (h->fd is then
 * -1: the connection is closed). */
int bt__acc_held_to_regular(bt_acceptor_t *acc, struct held *h);

/* acceptor_workers.c: a dead worker with nothing in flight: what it
 * acknowledged is closed, the rest redelivered, its queue freed; the
 * acknowledgement lag after a reap that released `acked` items. */
void bt__acc_reclaim(bt_acceptor_t *acc, unsigned idx);

void bt__acc_note_lag(bt_acceptor_t *acc, unsigned idx, unsigned acked);

/* Events, from the backends. */
/* res: the new connection (flags 0: a descriptor; BT__ITEM_DIRECT: a slot
 * of the ring's file table), or -errno. */
void bt__acc_on_accept(bt_acceptor_t *acc, struct listener *l, int res, int more, uint32_t flags);
/* accept4 on l until EAGAIN, a pause or 256 connections; an error goes to
 * bt__acc_on_accept with more = more_on_error. */
void bt__acc_accept_burst(bt_acceptor_t *acc, struct listener *l, int more_on_error);
/* A listener's sweep ended (its last completion). res < 0 other than -EAGAIN:
 * the sweep failed (-EINVAL: the kernel cannot sweep). */
void bt__acc_sweep_done(bt_acceptor_t *acc, int res);
void bt__acc_send_done(bt_acceptor_t *acc, unsigned idx, long res);
/* A message or EOF arrived on worker idx's channel: rc as from
 * bt_fdpass_rx_complete.  Returns 1 to keep watching, 0 to stop. */
int bt__acc_on_channel(bt_acceptor_t *acc, unsigned idx, int rc, struct bt_wire_msg *msg);

/* For tests: an acceptor on a given backend (NULL: the usual choice), and
 * one wake-up's end (reap, backlog, flush, pacing, timers) at the clock
 * value now_ns, with the deadline it would sleep until next. */
int bt__acc_create_with(bt_acceptor_t **out, const struct bt_acceptor_config *cfg,
			unsigned max_workers, const struct acc_ops *ops);
void bt__acc_step(bt_acceptor_t *acc, uint64_t now_ns);
uint64_t bt__acc_next_deadline(bt_acceptor_t *acc);

#endif
