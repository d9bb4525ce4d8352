/* SPDX-License-Identifier: MIT */
/* Helpers shared by the runtime's files; not part of the public API. */
#ifndef BATON_INTERNAL_H
#define BATON_INTERNAL_H

#include <baton/log.h>

#include <stddef.h>
#include <stdint.h>

#include <baton/metrics.h>
#include <sys/types.h>

#define BT__PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Log one line at level (see baton/log.h). */
void bt__log(int level, const char *fmt, ...) BT__PRINTF(2, 3);

/* Log "what: strerror(-err)" at level; returns err unchanged. */
int bt__log_errno(int level, int err, const char *fmt, ...) BT__PRINTF(3, 4);

/* close(2) that keeps errno and ignores EINTR (Linux always frees the fd). */
void bt__close(int fd);

/* The ABI rule for structs that begin with size_t size (abi.c, docs/abi.md).
 * init: defaults into the caller's first size bytes; 0 or -EINVAL (size
 * below min).  in: a caller's struct into the library's copy dst, which
 * holds the defaults; 0, -EINVAL (size below min), -E2BIG (a field this
 * library does not know is set); logged.  out: counters into the caller's
 * first size bytes. */
int bt__sized_init(void *dst, size_t size, size_t min, const void *def, size_t def_size);
int bt__sized_in(void *dst, size_t dst_size, const void *src, size_t min, const char *type);
void bt__sized_out(void *dst, size_t size, const void *src, size_t src_size);

/* Take a caller's bt_handler by its size: 0, -EINVAL, -E2BIG (loop.c). */
struct bt_handler;
int bt__handler_take(struct bt_handler *dst, const struct bt_handler *h);

/* The program name log lines start with (default: the executable's). */
void bt__log_set_ident(const char *name);
/* bt_fdpass_listen for a socket of any type (SOCK_STREAM: the control
 * socket). */
int bt__unix_listen(const char *name, int type, int flags);
/* bt_fdpass_accept with a list of uids allowed besides our own. */
int bt__fdpass_accept_uids(int lfd, const uid_t *uids, unsigned n, int flags);
/* Would a line of this level be logged? */
int bt__log_enabled(int level);

/* CLOCK_MONOTONIC nanoseconds. */
uint64_t bt__now_ns(void);

/* Metrics (metrics.c): one slot per worker loop in memory the supervisor
 * shares with its workers; the loop is the only writer of its slot. */
#define BT__HANDOFF_BUCKETS 13 /* 10 us .. 1 s, then +Inf */
#define BT__BATCH_BUCKETS 9    /* items per batch: 1, 2, 4 .. 128, 253 */
struct bt__mslot {
	_Alignas(64) _Atomic uint64_t handoff[BT__HANDOFF_BUCKETS + 1];
	_Atomic uint64_t handoff_sum_ns;
	_Atomic int64_t app[BT_METRICS_MAX];
	/* Written by the supervisor, read by the loop: 1 once the server is
	 * going away (bt_loop_state). */
	_Atomic uint32_t away;
	/* Connections closed for want of a PROXY header (conn_proxy.c). */
	_Atomic uint64_t proxy_refused, proxy_late;
};
_Static_assert(sizeof(struct bt__mslot) % 64 == 0, "a metrics slot fills whole cache lines");
void bt__mslot_handoff(struct bt__mslot *m, uint64_t ns);
struct bt__metrics;
int bt__metrics_create(struct bt__metrics **out, unsigned slots);
void bt__metrics_destroy(struct bt__metrics *m);
struct bt__mslot *bt__metrics_slot(struct bt__metrics *m, unsigned slot);
/* The server is going away (--grace, the drain): every loop's
 * bt_loop_state says so from now on. */
void bt__metrics_going_away(struct bt__metrics *m);
/* Connections closed for want of a PROXY header, over every worker loop. */
void bt__metrics_proxy(const struct bt__metrics *m, uint64_t *refused, uint64_t *late);
/* Worker loop slot ended: its gauges read 0 from now on. */
void bt__metrics_worker_gone(struct bt__metrics *m, unsigned slot);
/* The loop writes its metrics to ms from now on (NULL: its own). */
struct bt_loop;
void bt__loop_use_mslot(struct bt_loop *loop, struct bt__mslot *ms);
/* The batch-size bucket of n items. */
static inline unsigned bt__batch_bucket(unsigned n)
{
	return n <= 1 ? 0 : n > 128 ? 8 : (unsigned)(32 - __builtin_clz(n - 1));
}
/* Queue slot idx's batch sizes, over every worker that has run in it. */
struct bt_acceptor;
void bt__acc_worker_bhist(const struct bt_acceptor *acc, unsigned idx, uint64_t *out);

struct bt_queue;
/* The queue's flush policy and delay, for the acceptor's scheduling. */
int bt__queue_flush_policy(const struct bt_queue *q);
/* The consumer takes at most n items per batch (an attached worker's
 * HELLO max_batch; 0: no limit of its own). */
void bt__queue_cap_batch(struct bt_queue *q, unsigned n);
/* Items the consumer took and the producer has not reaped yet (a thread
 * ring's), and inflight, read together so that they add up. */
unsigned bt__queue_unreaped(const struct bt_queue *q, unsigned *inflight);
/* Live settings (the control socket's set batch / set flush): the next
 * flush follows them; batch stays within the consumer's cap. */
void bt__queue_set_policy(struct bt_queue *q, unsigned batch, int flush, unsigned delay_us);
/* The pending batch, for the acceptor, on any transport: a message to
 * send (its item count, *msg set; bt_queue_flush_complete follows), 0 when
 * nothing is left to send (nothing pending, or published in place), or
 * -errno. */
struct msghdr;
int bt__queue_send_prepare(struct bt_queue *q, struct msghdr **msg);
uint64_t bt__queue_delay_ns(const struct bt_queue *q);
/* Close the producer's acknowledged copies with fn instead of close(2)
 * (the io_uring acceptor batches them into its ring). */
void bt__queue_set_closer(struct bt_queue *q, void (*fn)(void *ctx, int fd), void *ctx);

/* Direct descriptors on a thread queue (queue_thread.c; ev.h says what
 * they are).  An item flagged BT__ITEM_DIRECT carries a slot of the
 * producer's ring in fd until it is flushed; the flush passes it to the
 * consumer's ring (emit), whose completion names the item's sequence
 * number.  BT__ITEM_DIRECT is never on the wire. */
#define BT__ITEM_DIRECT 0x8000u /* a bit the wire reserves (never sent) */
/* The consumer of a direct item: a completion on its ring whose user_data
 * is BT__DIRECT_DATA(n): res is the slot, or < 0 when the send failed
 * and the item went back to the producer (it is passed over). */
#define BT__DIRECT_TAG 6u
#define BT__DIRECT_DATA(n) (((uint64_t)(n) << 3) | BT__DIRECT_TAG)
/* Producer: pass slot src (src < 0: tell the consumer item n is passed
 * over) to the ring ring_fd for item n of queue idx.  0 or -errno. */
typedef int (*bt__direct_emit_fn)(void *ctx, unsigned idx, int ring_fd, int src, uint64_t n);
void bt__tq_set_emitter(struct bt_queue *q, bt__direct_emit_fn emit, void *ctx, unsigned idx);
/* Producer: 1 if q takes direct items (its consumer's ring is known);
 * then *room says whether it has room for one more (its table holds the
 * connections open and in flight). */
int bt__tq_direct_ready(const struct bt_queue *q, int *room);
/* Producer: the send of item n (slot src) failed with err: the item goes
 * back through give with fd src, and the consumer is told to pass it
 * over.  0, or -ENOENT if n is not an item sent. */
struct bt_wire_item;
int bt__tq_direct_failed(struct bt_queue *q, uint64_t n, int src, int err,
			 void (*give)(void *ctx, const struct bt_wire_item *it), void *ctx);
/* Consumer: does the producer send direct items (register then)? */
int bt__tq_direct_wanted(const struct bt_queue *q);
/* Consumer: its ring (duplicated: the queue keeps the copy) and table
 * size.  0 or -errno. */
int bt__tq_direct_consumer(struct bt_queue *q, int ring_fd, unsigned nfiles);
/* Consumer: item n's descriptor arrived in slot res (or res < 0: passed
 * over). */
void bt__tq_direct_arrived(struct bt_queue *q, uint64_t n, int res);
/* Consumer: published direct items not yet taken (the loop waits for them
 * before it ends). */
unsigned bt__tq_direct_owed(const struct bt_queue *q);

/* Heartbeats for the watchdog: a worker loop counts its wake-ups
 * (process transport: in the shared slot; thread transport: in the ring),
 * the producer reads the count. */
struct bt_queue_shm;
void bt__queue_shm_beat(struct bt_queue_shm *shm, unsigned slot);
void bt__tq_beat(struct bt_queue *q);
uint64_t bt__queue_beats(const struct bt_queue *q);

/* The watchdog's view of acceptor worker idx at now_ns: how long its
 * heartbeat has not moved while it has work (connections open or
 * unacknowledged), else 0 (acceptor.c). */
struct bt_acceptor;
/* An attached worker at slot idx: like bt_acceptor_attach, but dispatch
 * passes it over until its HELLO.  0 or -errno. */
int bt__acc_attach_guest(struct bt_acceptor *acc, unsigned idx, struct bt_queue *q);
/* Accept what waits on the listeners now.  After a reload the previous
 * generation's accept, on the same sockets, may have taken a wake-up that
 * was this one's (the kernel wakes one waiter of a listener): the new
 * generation looks once that one has stopped. */
void bt__acc_kick_listeners(struct bt_acceptor *acc);
/* Connections accepted on listener fd start with a PROXY protocol header
 * (their items are flagged BT_WIRE_ITEM_PROXY).  0 or -ENOENT. */
int bt__acc_listener_proxy(struct bt_acceptor *acc, int fd);
/* A reload: every worker of ours (not attached ones) gets a copy of fd, the
 * channel to the next generation, ahead of its DRAIN.  How many did. */
unsigned bt__acc_handover(struct bt_acceptor *acc, int fd);
/* Worker idx takes nothing new: what is pending goes to it, then
 * handover_fd (a channel to hand its connections back on: taken, -1:
 * none), then DRAIN with deadline_ms (live scaling, drain-worker). */
void bt__acc_retire(struct bt_acceptor *acc, unsigned idx, unsigned deadline_ms, int handover_fd);
/* The pid an attached worker's HELLO gave (0: none yet, or forked). */
uint32_t bt__acc_worker_pid(const struct bt_acceptor *acc, unsigned idx);
/* Accept into the ring's file table and pass connections to thread
 * workers as direct descriptors (ev.h), before the first run and attach.
 * 0, or -errno: why not (then regular descriptors, as before). */
int bt__acc_direct(struct bt_acceptor *acc);
/* Are direct descriptors in use? */
int bt__acc_is_direct(const struct bt_acceptor *acc);
uint64_t bt__acc_worker_stalled_ns(struct bt_acceptor *acc, unsigned idx, uint64_t now_ns);
/* Leave accepting to the other acceptors (on 1), or take part again (on
 * 0: at once).  Listeners stay open; a drain works the same. */
void bt__acc_standby(struct bt_acceptor *acc, int on);

/* Register the pool's fork handler (once); end the process's job pool. */
/* pool.c: the process's job pool of the worker loops, created at first
 * use, started afresh in a forked child. */
struct bt_pool *bt__pool_global(void);
void bt__pool_atfork_register(void);
void bt__pool_shutdown_global(void);

#endif
