/* SPDX-License-Identifier: MIT */
/*
 * The work queue, process transport: batches of items (a descriptor plus
 * metadata) from a producer (the acceptor) to one consumer process over its
 * SOCK_SEQPACKET channel (baton/fdpass.h).
 *
 * The producer keeps its copy of every descriptor it sends until the
 * consumer has acknowledged the batch.  Acknowledgements cost no syscall:
 * the consumer stores the last sequence number it received in memory shared
 * with the producer (bt_queue_shm_t, created before fork), and the producer
 * reads it when it reaps.  If the consumer dies, every item it has not
 * acknowledged is taken back (bt_queue_take) and can go to another consumer;
 * items whose descriptor the consumer did not get (MSG_CTRUNC, e.g. at its
 * RLIMIT_NOFILE) come back the same way through the reap.  No accepted
 * connection is lost.
 *
 * Flush policies (who decides when to send is the acceptor; the queue says
 * when a batch is full):
 *   size      send when the batch holds `batch` items;
 *   adaptive  send when it is full, or as soon as the producer has nothing
 *             more to add right now (its completion queue is drained) -
 *             except while connections arrive faster than a hold time
 *             (delay_us, default 200; "adaptive:US" sets it, 0 never
 *             holds): then wait for more, at most that long;
 *   delay:US  send when it is full, or US microseconds after its first item.
 *
 * Threading: a producer queue belongs to one thread.  The shared slot is
 * written by one consumer and read by the producer (see the memory-order
 * notes in queue.c).
 */
#ifndef BATON_QUEUE_H
#define BATON_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <baton/fdpass.h>
#include <baton/version.h>
#include <baton/wire.h>

#ifdef __cplusplus
extern "C" {
#endif

enum bt_flush {
	BT_FLUSH_ADAPTIVE = 0,
	BT_FLUSH_SIZE = 1,
	BT_FLUSH_DELAY = 2,
};

struct bt_queue_config {
	size_t size;               /* sizeof(struct bt_queue_config): docs/abi.md */
	unsigned batch;        /* items per message, 1..253 (default 32) */
	enum bt_flush flush;   /* default adaptive */
	unsigned delay_us;     /* BT_FLUSH_DELAY: oldest item waits at most this */
	int fire_and_forget;   /* close each descriptor right after its batch is
				  sent, without waiting for the ack (as nginx
				  does); a consumer's death then loses what it
				  had not received. For comparison only. */
	unsigned max_inflight; /* items pending or unacknowledged, at most
				  (default 4096): keeps an unprivileged producer
				  below ETOOMANYREFS and bounds what one slow
				  consumer can hold */
};

/* Defaults: batch 32, adaptive, delay 200 us, keep until acked, 4096.
 * The inline sets size to the caller's sizeof (docs/abi.md); 0 or -EINVAL. */
BT_API int bt_queue_config_init_sized(struct bt_queue_config *cfg, size_t size);
static inline int bt_queue_config_init(struct bt_queue_config *cfg)
{
	return bt_queue_config_init_sized(cfg, sizeof(*cfg));
}

/* Parse "adaptive", "adaptive:US", "size" or "delay:US" (US 1..1000000) into cfg.
 * 0 or -EINVAL. */
BT_API int bt_queue_parse_flush(const char *s, struct bt_queue_config *cfg);

/* The policy as text ("adaptive", "size", "delay:200"), into buf. */
BT_API const char *bt_queue_flush_name(const struct bt_queue_config *cfg,
				       char *buf, size_t cap);

/* --- shared acknowledgement memory ----------------------------------- */

typedef struct bt_queue_shm bt_queue_shm_t;

/*
 * Map shared memory for `slots` consumers, each able to report up to
 * `max_inflight` lost items.  MAP_SHARED|MAP_ANONYMOUS: create it before
 * forking the consumers.  0 or -errno (-EINVAL, -ENOMEM).
 */
BT_API int bt_queue_shm_create(bt_queue_shm_t **out, unsigned slots,
			       unsigned max_inflight);
BT_API void bt_queue_shm_destroy(bt_queue_shm_t *shm);
/* Zero a slot before a (re)spawned consumer uses it. */
BT_API void bt_queue_shm_reset(bt_queue_shm_t *shm, unsigned slot);

/*
 * Consumer side: a batch has been received.  Report the items of it whose
 * descriptor was lost (BT_WIRE_ITEM_LOST) and acknowledge the batch, in that
 * order, with release semantics: the producer then closes its copies of the
 * others and redelivers the lost ones.  No syscall.
 */
BT_API void bt_queue_ack_batch(bt_queue_shm_t *shm, unsigned slot,
			       const struct bt_wire_batch *b);
/* Consumer side: publish the current load (open connections, queued jobs),
 * used by the least-loaded dispatch; and read it back.  (The load calls
 * are named OBJECT_set_load / OBJECT_load: the shared slot here, the
 * queue's consumer below.) */
BT_API void bt_queue_shm_set_load(bt_queue_shm_t *shm, unsigned slot, uint32_t load);
BT_API uint32_t bt_queue_shm_load(const bt_queue_shm_t *shm, unsigned slot);
/* The former name of bt_queue_shm_set_load (ABI 1 keeps it). */
BT_API void bt_queue_set_load(bt_queue_shm_t *shm, unsigned slot, uint32_t load)
	__attribute__((deprecated("use bt_queue_shm_set_load")));

/* --- producer side ----------------------------------------------------- */

typedef struct bt_queue bt_queue_t;

/*
 * A producer queue to the consumer at the other end of ch, acknowledging
 * through shm's slot (or on the wire: shm NULL, below).  On success the
 * queue owns ch (bt_queue_destroy closes it); on failure the caller still
 * does.  0 or -errno (-EINVAL, -ENOMEM).
 */
BT_API int bt_queue_create(bt_queue_t **out, const struct bt_queue_config *cfg,
			   bt_fdpass_t *ch, bt_queue_shm_t *shm, unsigned slot);

/*
 * A queue with shm NULL is acknowledged on the wire instead: its consumer
 * (an attached worker, docs/wire.md) sends ACK messages on the channel,
 * and the producer hands each one to bt_queue_on_ack.  Sequence numbers
 * then start at 1.
 */

/* An ACK from the consumer of a wire-acknowledged queue: every batch up to
 * ack->seq has arrived; ack->lost names items whose descriptor did not
 * (they go back through the next reap's give()).  0; -EPROTO if the ACK
 * names a batch not sent yet, or a lost id that is not an unsettled item
 * with a descriptor of the batches it settles (the consumer is broken:
 * drop it and bt_queue_take its items); -EINVAL for another kind of
 * queue.  A repeated or older ACK without lost ids is harmless. */
BT_API int bt_queue_on_ack(bt_queue_t *q, const struct bt_wire_ack *ack);

/* Close the channel and every descriptor the queue still holds: call
 * bt_queue_take first to keep them. */
BT_API void bt_queue_destroy(bt_queue_t *q);

/*
 * Add one item to the pending batch.  The payload (if any) is copied; the
 * descriptor (if BT_WIRE_ITEM_FD) now belongs to the queue.  Returns 1 if
 * the batch is full (flush it now), 0 otherwise, or -EAGAIN (the queue has
 * max_inflight items it has not seen acknowledged: the item was not taken,
 * the caller still owns its fd), -EINVAL (bad item: reserved flags, fd < 0
 * with BT_WIRE_ITEM_FD, an address family the wire cannot carry).
 */
BT_API int bt_queue_push(bt_queue_t *q, const struct bt_wire_item *it);

/*
 * Build the next message for IORING_OP_SENDMSG (flags MSG_NOSIGNAL |
 * MSG_DONTWAIT).  Returns the number of items in it (moved from pending to
 * the unacknowledged list), 0 if nothing is pending, -EBUSY if a send is
 * already in flight.  *msg stays valid until bt_queue_flush_complete.
 */
BT_API int bt_queue_flush_prepare(bt_queue_t *q, struct msghdr **msg);

/*
 * The result of that send (bytes or -errno).  Returns 0 (sent; in
 * fire-and-forget mode the descriptors are closed now), -EAGAIN (the
 * channel is full: the items are pending again, in order), -ETOOMANYREFS
 * (too many descriptors in flight for this producer: pending again, retry
 * after acknowledgements), or another -errno (the consumer is gone: take
 * its items back).
 */
BT_API int bt_queue_flush_complete(bt_queue_t *q, long res);

/* prepare + sendmsg(MSG_DONTWAIT) + complete, for loops without io_uring.
 * Returns the items sent (0: nothing pending) or the errors above. */
BT_API int bt_queue_flush(bt_queue_t *q);

/* Items waiting in the pending batch. */
BT_API unsigned bt_queue_pending(const bt_queue_t *q);

/* Items pending or sent and not yet acknowledged. */
BT_API unsigned bt_queue_inflight(const bt_queue_t *q);

/* Nanoseconds (CLOCK_MONOTONIC) when the oldest pending item was pushed,
 * 0 if none: for the delay flush. */
BT_API uint64_t bt_queue_pending_since(const bt_queue_t *q);

/* Called with each item given back to the caller, who owns its fd from
 * then on; payload points into the queue and is valid during the call. */
typedef void (*bt_queue_give_fn)(void *ctx, const struct bt_wire_item *it);

/*
 * Read the consumer's acknowledgement: close the producer's copies of
 * every acknowledged descriptor, and hand each item the consumer reported
 * lost to give() for redelivery.  Returns the number of items released
 * (closed or given).  No syscall unless something was acknowledged.
 */
BT_API unsigned bt_queue_reap(bt_queue_t *q, bt_queue_give_fn give, void *ctx);

/*
 * The consumer is gone (or being replaced): hand every item not yet
 * acknowledged, sent or pending, to give(), oldest first.  A send in flight
 * must have completed first.  Returns the number of items given.
 */
BT_API unsigned bt_queue_take(bt_queue_t *q, bt_queue_give_fn give, void *ctx);

/*
 * Hand the pending items (not yet sent) to give(), oldest first: for a
 * consumer whose channel is full, so that they go elsewhere instead of
 * waiting.  Not while a send is in flight (returns 0).  Returns the number
 * given.
 */
BT_API unsigned bt_queue_take_pending(bt_queue_t *q, bt_queue_give_fn give, void *ctx);

/* The consumer's published load, on either transport. */
BT_API uint32_t bt_queue_consumer_load(const bt_queue_t *q);
/* The former name of bt_queue_consumer_load (ABI 1 keeps it). */
BT_API uint32_t bt_queue_load(const bt_queue_t *q)
	__attribute__((deprecated("use bt_queue_consumer_load")));

/* The channel (for its fd, or to receive the consumer's messages). */
BT_API bt_fdpass_t *bt_queue_channel(bt_queue_t *q);

/*
 * Ask the consumer to drain: finish what it has within deadline_ms, then
 * stop (process transport: a DRAIN message, non-blocking; thread
 * transport: a flag and a wake-up).  0, -EAGAIN (channel full: retry), or
 * another -errno.
 */
BT_API int bt_queue_send_drain(bt_queue_t *q, unsigned deadline_ms);

/* --- thread transport ------------------------------------------------------- */

/*
 * A queue whose consumer is a thread of this process: a bounded ring of
 * max_inflight (rounded up to a power of two) items, no descriptor passing,
 * nothing held back.  The producer calls are the ones above (push, flush,
 * pending, inflight, reap, take, load, send_drain; flush_prepare and
 * flush_complete are for the process transport only); payloads are copied,
 * peer addresses are not carried (-EINVAL).  0 or -errno.
 */
BT_API int bt_queue_create_thread(bt_queue_t **out, const struct bt_queue_config *cfg);
BT_API int bt_queue_is_thread(const bt_queue_t *q);

/* Consumer side, from the one consumer thread: */

/* An eventfd that becomes readable when the consumer should look again. */
BT_API int bt_queue_wake_fd(const bt_queue_t *q);
/* Take up to max published items into out: their fds are the caller's;
 * their payloads stay valid until the next call. */
BT_API int bt_queue_consume(bt_queue_t *q, struct bt_wire_item *out, size_t max);
/* Before sleeping: returns 1 if the consumer may sleep (a producer will
 * write the eventfd for what it publishes next), 0 if there is work. */
BT_API int bt_queue_idle(bt_queue_t *q);
/* After waking up: the consumer is busy, producers need not wake it. */
BT_API void bt_queue_awake(bt_queue_t *q);
/* Has a drain been asked for (once: it returns 1 the first time)? */
BT_API int bt_queue_drain_requested(bt_queue_t *q, unsigned *deadline_ms);
/* Publish the consumer's load for the least-loaded dispatch. */
BT_API void bt_queue_consumer_set_load(bt_queue_t *q, uint32_t load);
/* The former name of bt_queue_consumer_set_load (ABI 1 keeps it). */
BT_API void bt_queue_set_consumer_load(bt_queue_t *q, uint32_t load)
	__attribute__((deprecated("use bt_queue_consumer_set_load")));

/* --- the consumer's end, whatever the transport ------------------------------ */

/*
 * An inlet: the end of a queue where a worker loop receives batches and
 * acknowledges them (bt_loop_config.inlet).  One handle for the three
 * transports, so that a loop never asks which one it has:
 *   thread    the consumer side of a thread ring;
 *   forked    a channel made before fork, acknowledged in shared memory;
 *   attached  a named channel, acknowledged with ACK messages on it
 *             (docs/wire.md).
 * bt_loop_create takes the inlet on success (bt_loop_destroy frees it);
 * until then it is the caller's, freed with bt_queue_inlet_destroy.
 */
typedef struct bt_queue_inlet bt_queue_inlet_t;

/* The consumer side of q, a queue of bt_queue_create_thread (the producer
 * keeps owning q).  0, -EINVAL (not a thread queue), -ENOMEM. */
BT_API int bt_queue_inlet_thread(bt_queue_inlet_t **out, bt_queue_t *q);
/* Batches on ch, acknowledged in shm's slot.  Takes ch on success; on
 * failure the caller still owns it.  0, -EINVAL, -ENOMEM. */
BT_API int bt_queue_inlet_forked(bt_queue_inlet_t **out, bt_fdpass_t *ch, bt_queue_shm_t *shm,
				 unsigned slot);
/* Batches on ch, acknowledged with ACK messages on it: ch is a channel to
 * an acceptor that has had our HELLO.  Takes ch on success.  0, -EINVAL,
 * -ENOMEM. */
BT_API int bt_queue_inlet_wire(bt_queue_inlet_t **out, bt_fdpass_t *ch);
/*
 * Attach to a server: connect to addr (a path, or "@name" for an abstract
 * name), send HELLO {worker_id, this pid, wire version, max_batch (1..253,
 * 0 meaning 253)}, and make a wire inlet on that channel.  0, or the
 * failing call's -errno: bt_fdpass_connect's (-ENOENT, -ECONNREFUSED,
 * -EACCES, ...), -EPIPE or -ECONNRESET (the server refused us at once:
 * its log says why), -EINVAL (max_batch above 253), -ENOMEM.
 */
BT_API int bt_queue_inlet_attach(bt_queue_inlet_t **out, const char *addr, unsigned worker_id,
				 unsigned max_batch);
/* Free an inlet no loop took (closes its channel, if it has one). */
BT_API void bt_queue_inlet_destroy(bt_queue_inlet_t *in);
/* "thread", "forked" or "attached". */
BT_API const char *bt_queue_inlet_kind(const bt_queue_inlet_t *in);

struct bt_queue_stats {
	size_t size;               /* sizeof(struct bt_queue_stats): docs/abi.md */
	uint64_t pushed;      /* items accepted by push */
	uint64_t batches;     /* messages sent */
	uint64_t items_sent;  /* items in those messages */
	uint64_t acked;       /* items acknowledged and closed */
	uint64_t lost;        /* items the consumer reported lost, given back */
	uint64_t taken;       /* items given back by bt_queue_take */
	uint64_t full;        /* sends refused with EAGAIN */
	uint64_t toomanyrefs; /* sends refused with ETOOMANYREFS */
};
/* Fill the caller's first size bytes of counters (docs/abi.md). */
BT_API void bt_queue_get_stats_sized(const bt_queue_t *q, struct bt_queue_stats *out, size_t size);
static inline void bt_queue_get_stats(const bt_queue_t *q, struct bt_queue_stats *out)
{
	bt_queue_get_stats_sized(q, out, sizeof(*out));
}

#ifdef __cplusplus
}
#endif

#endif
