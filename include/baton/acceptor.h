/* SPDX-License-Identifier: MIT */
/*
 * The acceptor: one ring that accepts on every listener (io_uring
 * multishot accept; epoll where io_uring cannot be used) and dispatches each
 * connection to a worker's queue (baton/queue.h), flushing batches by the
 * queues' policy with io_uring SENDMSG, so that it never blocks.
 *
 * It keeps every connection it accepted until a worker has acknowledged it:
 * a worker that dies, whose channel is full, or that loses descriptors
 * (MSG_CTRUNC) has its unacknowledged connections given to another worker.
 * When no worker can take one, it waits in the acceptor's backlog (and
 * accepting pauses once that holds max_backlog), never dropped.
 *
 * The acceptor also runs the supervisor's small needs on the same loop: a
 * readable-fd watch (a signalfd) and one timer.
 *
 * Single-threaded: every call from the thread that runs it (callbacks
 * included).
 */
#ifndef BATON_ACCEPTOR_H
#define BATON_ACCEPTOR_H

#include <stdint.h>

#include <baton/loop.h>
#include <baton/queue.h>
#include <baton/version.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_acceptor bt_acceptor_t;

enum bt_dispatch {
	BT_DISPATCH_RR = 0,    /* round-robin over workers that can take it */
	BT_DISPATCH_LEAST = 1, /* fewest open + unacknowledged connections */
	BT_DISPATCH_HASH = 2,  /* hash of the peer's IP address: sticky */
};

struct bt_acceptor_config {
	size_t size;               /* sizeof(struct bt_acceptor_config): docs/abi.md */
	enum bt_dispatch dispatch;
	enum bt_backend backend;   /* AUTO, URING, EPOLL */
	unsigned max_backlog;      /* connections waiting for a worker before
				      accepting pauses (default 4096) */
	unsigned emfile_pause_ms;  /* pause after EMFILE/ENFILE (default 100) */
	/* A worker's channel closed (it exited or crashed); its connections
	 * are already being redelivered.  Optional. */
	void (*on_worker_gone)(void *ctx, unsigned worker);
	void *ctx;
	/* Since 0.3 (appended), optional: bt_acceptor_push said -EAGAIN and
	 * the backlog has gone below half of max_backlog: push again. */
	void (*on_room)(void *ctx);
};

/* Defaults: rr, backend auto, backlog 4096, EMFILE pause 100 ms.  The
 * inline sets size to the caller's sizeof (docs/abi.md); 0 or -EINVAL. */
BT_API int bt_acceptor_config_init_sized(struct bt_acceptor_config *cfg, size_t size);
static inline int bt_acceptor_config_init(struct bt_acceptor_config *cfg)
{
	return bt_acceptor_config_init_sized(cfg, sizeof(*cfg));
}
/* "rr", "least" or "hash".  0 or -EINVAL. */
BT_API int bt_acceptor_parse_dispatch(const char *s, enum bt_dispatch *out);
BT_API const char *bt_acceptor_dispatch_name(enum bt_dispatch dispatch);

/* An acceptor for up to max_workers workers.  0 or -errno; with backend
 * AUTO, io_uring set-up failures fall back to epoll (logged once). */
BT_API int bt_acceptor_create(bt_acceptor_t **out, const struct bt_acceptor_config *cfg,
			      unsigned max_workers);

/* Close listeners, queues and every connection still held. */
BT_API void bt_acceptor_destroy(bt_acceptor_t *acc);

/* "io_uring" or "epoll". */
BT_API const char *bt_acceptor_backend(const bt_acceptor_t *acc);

/* Accept on a listening socket; the acceptor owns it from now on (made
 * non-blocking).  0 or -errno (-E2BIG past 64 listeners). */
BT_API int bt_acceptor_add_listener(bt_acceptor_t *acc, int fd);

/*
 * A work item from the program, dispatched like an accepted connection
 * (same policy, acknowledgements, redelivery): a descriptor
 * (BT_WIRE_ITEM_FD; the acceptor owns it from now on), a payload (copied,
 * at most 65448 bytes), or both, with the caller's id and application
 * flags (bits 16..31).  The worker's handler gets it in on_item.  Returns
 * 0; -EINVAL for a bad item; -EAGAIN when max_backlog items already wait
 * for a worker (on_room says when to push again); -ESHUTDOWN once
 * draining.  On an error the caller still owns the fd.
 */
BT_API int bt_acceptor_push(bt_acceptor_t *acc, const struct bt_wire_item *it);

/* Worker idx is up, fed through q; the acceptor owns q from now on. */
BT_API int bt_acceptor_attach(bt_acceptor_t *acc, unsigned idx, bt_queue_t *q);

/* Worker idx is gone: every connection it had not acknowledged goes to
 * the others; its queue is destroyed.  Idempotent. */
BT_API void bt_acceptor_detach(bt_acceptor_t *acc, unsigned idx);

/* Workers attached now. */
BT_API unsigned bt_acceptor_workers(const bt_acceptor_t *acc);

/* Call cb when fd is readable (until the acceptor is destroyed).  0 or -errno. */
BT_API int bt_acceptor_watch(bt_acceptor_t *acc, int fd, void (*cb)(void *ctx), void *ctx);

/* Call cb once, ms milliseconds from now (replaces an earlier one). */
BT_API void bt_acceptor_timer(bt_acceptor_t *acc, unsigned ms, void (*cb)(void *ctx), void *ctx);

/* Run until bt_acceptor_stop.  0 or -errno. */
BT_API int bt_acceptor_run(bt_acceptor_t *acc);
BT_API void bt_acceptor_stop(bt_acceptor_t *acc);

/*
 * Drain: stop accepting (listeners closed), send every held connection to
 * a worker, then DRAIN with deadline_ms to every worker.  Connections left
 * in the backlog with no worker to take them are closed and counted as
 * dropped.
 */
BT_API void bt_acceptor_drain(bt_acceptor_t *acc, unsigned deadline_ms);

/* Connections accepted and not yet acknowledged by a worker (backlog,
 * pending and in flight).
 *
 * Every dispatch policy first chooses among workers that acknowledge: one
 * that owes acknowledgements and has acknowledged nothing for 20 ms (a
 * stopped or stuck worker) is passed over, and its pending batch goes to
 * the others, until it acknowledges again.  If every worker lags, they are
 * used anyway. */
BT_API unsigned bt_acceptor_held(const bt_acceptor_t *acc);

struct bt_acceptor_stats {
	size_t size;               /* sizeof(struct bt_acceptor_stats): docs/abi.md */
	uint64_t accepted;
	uint64_t batches;      /* messages sent to workers */
	uint64_t items_sent;   /* connections in those (fds per batch = items_sent / batches) */
	uint64_t redelivered;  /* connections given to another worker */
	uint64_t dropped;      /* closed without a worker (drain) */
	uint64_t full;         /* sends refused by a full channel */
	uint64_t emfile;       /* accept pauses for EMFILE/ENFILE */
	uint64_t errors;       /* other accept errors */
	uint64_t wakeups;
	uint64_t sweeps;       /* paced accept: listener sweeps (adaptive flush under load) */
	/* Since 0.3 (appended): times a worker was found lagging (owing
	 * acknowledgements for 20 ms): dispatch then prefers the others. */
	uint64_t lagged;
	/* Since 0.3 (appended): work items pushed by the program
	 * (bt_acceptor_push). */
	uint64_t pushed;
};
/* Fill the caller's first size bytes of counters (docs/abi.md). */
BT_API void bt_acceptor_get_stats_sized(const bt_acceptor_t *acc, struct bt_acceptor_stats *out,
					size_t size);
static inline void bt_acceptor_get_stats(const bt_acceptor_t *acc, struct bt_acceptor_stats *out)
{
	bt_acceptor_get_stats_sized(acc, out, sizeof(*out));
}
/* Counters of worker slot idx since the acceptor started, over every
 * worker that has run in it.  (Stats calls are named OBJECT_get_stats /
 * OBJECT_get_WHAT_stats, with a _sized form.) */
BT_API void bt_acceptor_get_worker_stats_sized(const bt_acceptor_t *acc, unsigned idx,
					       struct bt_queue_stats *out, size_t size);
static inline void bt_acceptor_get_worker_stats(const bt_acceptor_t *acc, unsigned idx,
						struct bt_queue_stats *out)
{
	bt_acceptor_get_worker_stats_sized(acc, idx, out, sizeof(*out));
}
/* The former name of bt_acceptor_get_worker_stats_sized (ABI 1 keeps it). */
BT_API void bt_acceptor_worker_stats_sized(const bt_acceptor_t *acc, unsigned idx,
					   struct bt_queue_stats *out, size_t size)
	__attribute__((deprecated("use bt_acceptor_get_worker_stats")));
/* The queue of worker idx (NULL if none), for its own counters. */
BT_API bt_queue_t *bt_acceptor_queue(bt_acceptor_t *acc, unsigned idx);

#ifdef __cplusplus
}
#endif

#endif
