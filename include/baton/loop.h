/* SPDX-License-Identifier: MIT */
/*
 * The worker loop and the connection API: what a server built on baton
 * writes against.  One loop per worker (process, or thread in thread mode),
 * driven by io_uring (or epoll where io_uring cannot be used).  The loop
 * receives batches of accepted connections from the acceptor, acknowledges
 * them, and calls the handler's callbacks on the loop's own thread:
 *
 *   on_open   a connection arrived (its id, accept time and peer are
 *             readable with the bt_conn_* calls);
 *   on_data   bytes arrived: data is valid only during the call;
 *   on_close  the connection is finished: the peer closed it (reason 0),
 *             an error (-errno), bt_conn_close (0), bt_conn_abort
 *             (-ECONNABORTED), the drain deadline (-ETIMEDOUT), or a
 *             reload that moved it to the next generation (-EXDEV, see
 *             on_handover).  The conn pointer is invalid after it
 *             returns.
 *
 * Callbacks may close.  Any callback may call bt_conn_close or
 * bt_conn_abort on any connection; on_close never runs inside those calls
 * (nor inside bt_conn_write): it runs after the callback that ended the
 * connection has returned, before the loop next sleeps.  So state that an
 * application frees in on_close stays valid until its own callback
 * returns, and code after a close may still read it (bt_conn_fd returns -1
 * once the connection is ending).
 *
 * Output is flow-controlled.  Writes are queued and sent in order (partial
 * sends handled, each send at most 1 MiB); a close waits for queued
 * output, then sends FIN (shutdown) before close, so the client sees EOF
 * at once even while the acceptor still holds its copy of the socket.
 * When a connection's unsent output exceeds the high-water mark
 * (out_high, default 256 KiB), bt_conn_write and bt_conn_sendfile return
 * 1 and the loop stops reading it: a client that does not read stops
 * being read.  Once the output drains to the low-water mark (out_low,
 * default 64 KiB), on_writable is called, then reading resumes.  Files go
 * out in chunks of 128 KiB (bt_conn_sendfile), read without blocking the
 * loop.  Memory per connection is therefore bounded by
 *
 *     out_high + the largest single bt_conn_write + 2 file chunks (256 KiB)
 *     + one receive buffer (buf_size, held only while reading is paused)
 *     + 200 bytes of state and one emptied output segment of at most 4 KiB
 *       (kept for the next reply: all an idle connection holds),
 *
 * plus whatever the application keeps; the loop's receive buffers
 * (buf_count x buf_size, 8 MiB by default) are shared by all connections.
 *
 * Calls return 0 (or 1: above the mark) or a negative errno; none of them
 * blocks.
 *
 * Threads.  A loop belongs to the thread that runs it.  Every call in this
 * header that takes a loop or a connection is made on that thread: from a
 * callback, or before bt_loop_run by the thread that will run it.  The
 * exceptions: bt_loop_config_init and bt_loop_create (any thread; hand
 * the loop over before running it), bt_loop_destroy (once bt_loop_run has
 * returned, or never ran), and the work() of bt_loop_submit, which runs on
 * a pool thread and must not touch the loop or its connections.  A
 * server built with bt_runtime_run never needs another thread's access:
 * the runtime drains a loop by a message to it.
 */
#ifndef BATON_LOOP_H
#define BATON_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <baton/fdpass.h>
#include <baton/pool.h>
#include <baton/queue.h>
#include <baton/version.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_loop bt_loop_t;
typedef struct bt_conn bt_conn_t;

struct bt_handler {
	size_t size; /* sizeof(struct bt_handler): set it, e.g.
		      * {.size = sizeof(struct bt_handler), .on_data = f} */
	void (*on_open)(bt_conn_t *c);
	void (*on_data)(bt_conn_t *c, const void *data, size_t len);
	void (*on_close)(bt_conn_t *c, int reason);
	/* Optional: the timer of bt_conn_set_timeout expired.  The default
	 * (NULL) closes the connection with -ETIMEDOUT. */
	void (*on_timeout)(bt_conn_t *c);
	/* Optional: the worker is draining (SIGTERM to the server): finish
	 * what is in progress and close.  Called once per open connection.
	 * The default (NULL) closes idle-looking connections at the deadline
	 * only. */
	void (*on_drain)(bt_conn_t *c);
	/* Optional: called once in the worker before the first connection,
	 * and once after the last; a non-zero return from on_start stops the
	 * worker. */
	int (*on_start)(bt_loop_t *loop);
	void (*on_stop)(bt_loop_t *loop);
	/* Optional: generic work items instead of connections.  When set,
	 * every item that arrives is handed to it as it is, with its
	 * descriptor (-1 if none; the handler owns it now) and its payload
	 * (valid during the call): the work-queue use of the runtime, e.g. a
	 * file to process with a job description. */
	void (*on_item)(bt_loop_t *loop, const struct bt_wire_item *it);
	/* Since 0.3 (ABI 1, appended): optional.  A bt_conn_write or
	 * bt_conn_sendfile returned 1 (the output went above the high-water
	 * mark) and the output has now drained to the low-water mark: write
	 * more.  Reading the connection resumes after it returns (if the
	 * output is still at or below the high-water mark). */
	void (*on_writable)(bt_conn_t *c);
	/* Since 0.3 (ABI 1, appended): optional.  A reload moves connections
	 * to the next generation of the server instead of closing them
	 * (docs/reload.md).  While it does, the loop asks this of every open
	 * connection with no output queued, at every turn: return 1 if c is
	 * at a safe point (between requests), with *carry and *carry_len set
	 * to the bytes it has read and not consumed (copied at once; they
	 * reach the next generation's on_data before anything else), or 0 if
	 * not now.  A connection moved ends here with on_close(c, -EXDEV).
	 * Without this callback, or one never at a safe point before the
	 * drain deadline, connections finish here as on SIGTERM. */
	int (*on_handover)(bt_conn_t *c, const void **carry, size_t *carry_len);
};

enum bt_backend {
	BT_BACKEND_AUTO = 0, /* io_uring, else epoll; BATON_BACKEND=epoll|io_uring overrides */
	BT_BACKEND_URING = 1,
	BT_BACKEND_EPOLL = 2,
};

struct bt_loop_config {
	size_t size;               /* sizeof(struct bt_loop_config): docs/abi.md */
	int worker_id;              /* shown in logs and bt_loop_worker_id */
	/* Deprecated since 0.3 (ABI 1 keeps them, and a loop still takes
	 * them when inlet is NULL): the transport's parts, now one handle
	 * in `inlet` below.  channel + shm + slot is
	 * bt_queue_inlet_forked(channel, shm, slot); channel alone,
	 * bt_queue_inlet_wire(channel); queue, bt_queue_inlet_thread(queue). */
	bt_fdpass_t *channel BT_DEPRECATED_FIELD("use inlet (bt_queue_inlet_forked or _wire)");
	bt_queue_shm_t *shm BT_DEPRECATED_FIELD("use inlet (bt_queue_inlet_forked)");
	unsigned slot BT_DEPRECATED_FIELD("use inlet (bt_queue_inlet_forked)");
	bt_queue_t *queue BT_DEPRECATED_FIELD("use inlet (bt_queue_inlet_thread)");
	const struct bt_handler *handler;
	void *user;                 /* bt_loop_user() */
	enum bt_backend backend;
	unsigned buf_size;          /* receive buffer size (default 16 KiB) */
	unsigned buf_count;         /* receive buffers, a power of 2 (default 512) */
	unsigned drain_timeout_ms;  /* default deadline for a DRAIN without one
				       and for a vanished acceptor (default 10000) */
	/* Since 0.3 (appended): flow control of each connection's output. */
	size_t out_high;            /* above it, writes return 1 and reading
				       pauses (default 262144; at least 4096) */
	size_t out_low;             /* on_writable at or below it (default 0:
				       out_high / 4; else below out_high) */
	/* Since 0.3 (appended): where batches come from and acknowledgements
	 * go (baton/queue.h: thread ring, forked or attached process).  The
	 * loop owns it once bt_loop_create succeeds. */
	bt_queue_inlet_t *inlet;
	/* Since 0.3 (appended): a connection whose item is flagged
	 * BT_WIRE_ITEM_PROXY (from a --listen ADDR,proxy listener) must
	 * complete its PROXY protocol header within this (default 5000).
	 * Until it does the handler does not see it; a missing, malformed,
	 * oversized or late header closes it, counted in bt_loop_stats. */
	unsigned proxy_timeout_ms;
};

/* Defaults for everything but inlet and handler.  The inline sets
 * size to the caller's sizeof (docs/abi.md); 0 or -EINVAL. */
BT_API int bt_loop_config_init_sized(struct bt_loop_config *cfg, size_t size);
static inline int bt_loop_config_init(struct bt_loop_config *cfg)
{
	return bt_loop_config_init_sized(cfg, sizeof(*cfg));
}

/*
 * Create a loop.  On success it owns cfg->inlet (or the deprecated
 * cfg->channel).  Returns 0 or -errno
 * (-EINVAL, -ENOMEM, the ring's set-up errors when io_uring was asked for
 * explicitly).
 */
BT_API int bt_loop_create(bt_loop_t **out, const struct bt_loop_config *cfg);

/*
 * Since 0.3: another producer's inlet, for a loop fed by several acceptor
 * rings (bt_runtime_config.acceptors): batches come from all of them, and
 * each is acknowledged on its own.  Before bt_loop_run; on success the
 * loop owns in.  The loop drains at the last of their DRAINs (a channel
 * that ends counts as one).  0, -EINVAL (NULL, or in is the loop's
 * already), -EBUSY (the loop has run), -E2BIG (16 inlets already),
 * -EOPNOTSUPP (a thread queue with direct descriptors: those take one
 * inlet), or the backend's -errno.
 */
BT_API int bt_loop_add_inlet(bt_loop_t *loop, bt_queue_inlet_t *in);

/*
 * Run until drained: the acceptor sent DRAIN (or went away) and every
 * connection has closed or the deadline has passed (those left are closed
 * with -ETIMEDOUT).  With several inlets, every acceptor's DRAIN.
 * Returns 0, or -errno of a failure that stopped it.
 */
BT_API int bt_loop_run(bt_loop_t *loop);

/* Free the loop; closes whatever is still open, with on_close. */
BT_API void bt_loop_destroy(bt_loop_t *loop);

/* Begin draining now, as if DRAIN had arrived (deadline_ms 0: default). */
BT_API void bt_loop_drain(bt_loop_t *loop, unsigned deadline_ms);

BT_API void *bt_loop_user(const bt_loop_t *loop);
BT_API int bt_loop_worker_id(const bt_loop_t *loop);
BT_API int bt_loop_draining(const bt_loop_t *loop);
/* Since 0.3: where the server is on its way out, as one worker loop sees
 * it.  A health check answers 503 in any state but SERVING, so that a
 * balancer stops sending before connections are refused. */
enum bt_loop_state {
	BT_LOOP_SERVING = 0,
	/* SIGTERM with --grace (bt_runtime_config.grace_ms): the loop serves
	 * and still gets new connections, and drains when the grace ends.
	 * A keep-alive connection should close after its current response,
	 * to come back through the balancer to another host. */
	BT_LOOP_GOING_AWAY = 1,
	/* Draining (bt_loop_draining): finish and close. */
	BT_LOOP_DRAINING = 2,
	/* A reload: connections move to the next generation at their safe
	 * points (on_handover); keep them open. */
	BT_LOOP_HANDING_OVER = 3,
};
/* An attached worker's loop knows no grace: it sees DRAINING at DRAIN. */
BT_API enum bt_loop_state bt_loop_state(const bt_loop_t *loop);
/* "io_uring" or "epoll". */
BT_API const char *bt_loop_backend(const bt_loop_t *loop);
/* Connections open now. */
BT_API unsigned bt_loop_conns(const bt_loop_t *loop);

struct bt_loop_stats {
	size_t size;               /* sizeof(struct bt_loop_stats): docs/abi.md */
	uint64_t batches;    /* batches received */
	uint64_t conns;      /* connections opened */
	uint64_t lost;       /* items reported lost (MSG_CTRUNC) */
	uint64_t bytes_in, bytes_out;
	uint64_t wakeups;    /* times the loop woke up with work */
	/* Since 0.3 (appended): connections closed before the handler saw
	 * them for want of a valid PROXY header: refused (not one, malformed,
	 * over 4096 bytes, or the client closed first), or late (not complete
	 * within proxy_timeout_ms). */
	uint64_t proxy_refused, proxy_late;
};
BT_API void bt_loop_get_stats_sized(const bt_loop_t *loop, struct bt_loop_stats *out, size_t size);
static inline void bt_loop_get_stats(const bt_loop_t *loop, struct bt_loop_stats *out)
{
	bt_loop_get_stats_sized(loop, out, sizeof(*out));
}

/*
 * Offload blocking work: work(arg) runs on the process's thread pool
 * (created at first use: one thread per online CPU, at least 2; 4096 jobs
 * queued at most), then done(arg, status) runs on this loop's thread: status
 * 0, or -ECANCELED if bt_loop_cancel got it first.  *job (optional) names
 * it for bt_loop_cancel until done() has run.  0, or -EAGAIN (the pool's
 * queue is full), -ESHUTDOWN, -ENOMEM.  A draining loop waits for its jobs'
 * done() before it returns.
 */
BT_API int bt_loop_submit(bt_loop_t *loop, bt_job_t **job, bt_work_fn work, bt_done_fn done,
			  void *arg);
/* Cancel a job not yet started: 0 (done() sees -ECANCELED) or -EBUSY. */
BT_API int bt_loop_cancel(bt_loop_t *loop, bt_job_t *job);
/* Jobs submitted from this loop whose done() has not run. */
BT_API unsigned bt_loop_jobs(const bt_loop_t *loop);

/*
 * Timers and watches of the application, run on the loop's thread by the
 * same wait as its connections (no thread, no scan: a heap of timers,
 * O(log n) to start or stop).  Call these on the loop's thread only: from
 * its callbacks (on_start is the place to begin), or before bt_loop_run.
 */
typedef struct bt_timer bt_timer_t;
typedef struct bt_watch bt_watch_t;
typedef void (*bt_timer_fn)(bt_loop_t *loop, bt_timer_t *t, void *arg);

/*
 * Run cb(loop, t, arg) after ms milliseconds, then every repeat_ms if it is
 * not 0.  A repeating timer does not drift: each run is due one period
 * after the previous due time (periods missed by a late wake-up are
 * skipped, not run in a burst).  Timers due at the same time run in the
 * order they were started.  *t (optional) names it for bt_loop_timer_stop;
 * it stays valid until that call, even after a one-shot timer has fired.
 * With t NULL a one-shot timer frees itself after its callback (a
 * repeating one needs t).  0, or -EINVAL, -ENOMEM.
 */
BT_API int bt_loop_timer_start(bt_loop_t *loop, bt_timer_t **t, uint64_t ms, uint64_t repeat_ms,
			       bt_timer_fn cb, void *arg);
/* Cancel t (its callback will not run again) and free it.  Allowed in any
 * callback, its own included.  NULL is ignored. */
BT_API void bt_loop_timer_stop(bt_loop_t *loop, bt_timer_t *t);

/* Readiness of a watched fd (the values of poll(2)'s POLLIN, POLLOUT,
 * POLLERR and POLLHUP). */
enum bt_watch_events {
	BT_WATCH_IN = 0x001,  /* readable (or the peer closed: read says 0) */
	BT_WATCH_OUT = 0x004, /* writable */
	BT_WATCH_ERR = 0x008, /* error: reported whether asked or not */
	BT_WATCH_HUP = 0x010, /* hung up: reported whether asked or not */
};
typedef void (*bt_watch_fn)(bt_loop_t *loop, bt_watch_t *w, int fd, unsigned events, void *arg);

/*
 * Watch fd (a pipe, an eventfd, a timerfd, an outbound socket...) for
 * events (BT_WATCH_IN and/or BT_WATCH_OUT) on the loop: cb(loop, w, fd,
 * revents, arg) runs while it is ready (level-triggered, on both
 * backends), until bt_loop_unwatch.  The fd stays the caller's: unwatch
 * it before closing it.  *w names the watch.  0, or -EINVAL, -ENOMEM, or
 * the backend's error (epoll_ctl's -EPERM for a regular file, -EBADF).
 */
BT_API int bt_loop_watch_fd(bt_loop_t *loop, bt_watch_t **w, int fd, unsigned events,
			    bt_watch_fn cb, void *arg);
/* Stop watching and free w: cb does not run again.  Allowed in any
 * callback, its own included.  NULL is ignored. */
BT_API void bt_loop_unwatch(bt_loop_t *loop, bt_watch_t *w);

/*
 * Queue len bytes for sending (copied; any length).  0, or 1 (queued, and
 * the unsent output is now above the high-water mark: reading pauses; wait
 * for on_writable before writing more), or -EPIPE (the connection is
 * closing or closed), -EINVAL, -ENOMEM (nothing queued).
 */
BT_API int bt_conn_write(bt_conn_t *c, const void *data, size_t len);

/*
 * Queue len bytes of the file fd from offset off, after what is queued.
 * The loop reads it in 128 KiB chunks without blocking (a read that would
 * wait for the disk runs on the thread pool) and sends each chunk; memory
 * stays bounded whatever the file's size.  On success the loop owns fd and
 * closes it when the range is sent or the connection ends; if the file
 * turns out shorter than off + len, the connection is aborted (on_close
 * sees -EIO), since the peer was promised len bytes.  Returns as
 * bt_conn_write (0 or 1), or -EPIPE, -EINVAL (fd < 0, or off + len
 * overflows), -ENOMEM: then the caller still owns fd.  len 0 closes fd.
 */
BT_API int bt_conn_sendfile(bt_conn_t *c, int fd, uint64_t off, uint64_t len);

/* Close after the queued writes are sent: FIN, then close.  on_close
 * follows (reason 0).  Idempotent. */
BT_API void bt_conn_close(bt_conn_t *c);

/* Close now, discarding queued writes (RST if the peer sent unread data). */
BT_API void bt_conn_abort(bt_conn_t *c);

/* Call on_timeout (or close with -ETIMEDOUT) if ms pass before the next
 * call of bt_conn_set_timeout; 0 cancels.  A timer of the loop (see
 * bt_loop_timer_start): millisecond resolution, O(log n); moving the
 * deadline later (a keep-alive server, at every request) costs no heap
 * work. */
BT_API void bt_conn_set_timeout(bt_conn_t *c, unsigned ms);

BT_API uint64_t bt_conn_id(const bt_conn_t *c);
/* CLOCK_MONOTONIC nanoseconds at which the acceptor accepted it. */
BT_API uint64_t bt_conn_accept_ns(const bt_conn_t *c);
/* The peer address (getpeername, or what the acceptor sent).  0 or -errno. */
BT_API int bt_conn_peer(bt_conn_t *c, struct sockaddr_storage *ss, socklen_t *len);
/* The connection's socket, for getsockopt and the like: the loop owns it
 * (never close it; dup it to keep or pass it on).  The one exception to
 * the -errno rule: -1 once the connection is ending (closed or aborted,
 * on_close due), the value a descriptor check `fd < 0` expects; no errno
 * is set.  A connection on a direct descriptor (thread mode on io_uring,
 * Linux 6.8: a slot of the worker's io_uring file table, no regular
 * descriptor) gets a regular one installed at the first call, which costs
 * one io_uring_enter; the loop keeps it until the connection ends and
 * closes both (shutdown first, as for any connection).  -1 also if that
 * install fails (logged).  bt_conn_peer does the same when the acceptor
 * sent no address. */
BT_API int bt_conn_fd(const bt_conn_t *c);
/* 1 if c was handed over by the previous generation of the server (a
 * reload: docs/reload.md), else 0. */
BT_API int bt_conn_resumed(const bt_conn_t *c);
BT_API void bt_conn_set_data(bt_conn_t *c, void *data);
BT_API void *bt_conn_data(const bt_conn_t *c);
BT_API bt_loop_t *bt_conn_loop(const bt_conn_t *c);
/* Bytes queued and not yet sent (file ranges included). */
BT_API size_t bt_conn_pending(const bt_conn_t *c);

#ifdef __cplusplus
}
#endif

#endif
