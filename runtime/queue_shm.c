/* SPDX-License-Identifier: MIT */
/*
 * The shared acknowledgement memory of the process transport
 * (baton/queue.h): one slot per consumer, in MAP_SHARED memory made before
 * the fork.  The consumer writes it (bt_queue_ack_batch, bt_queue_set_load,
 * its heartbeat); the producer's side of it is in queue.c (bt_queue_reap).
 *
 * Shared slot, one per consumer (written by the consumer, read by the
 * producer; the producer also writes lost_tail):
 *
 *     acked_seq   last batch whose descriptors all arrived or were reported
 *     lost_head   entries (seq, id) written to lost[] so far
 *
 * Memory order: the consumer writes a batch's lost entries, then publishes
 * lost_head (release), then acked_seq (release).  The producer reads
 * acked_seq (acquire) and then lost_head (acquire): every lost entry of a
 * batch it sees acknowledged is visible.  It may also see entries of a
 * later batch; it consumes entries only up to the acknowledged sequence, in
 * order, so none is skipped.  The lost ring cannot overflow: each entry
 * stands for a record the producer has not reaped yet, and the producer
 * holds at most max_inflight records, the ring's capacity.
 */
#include <baton/queue.h>

#include "internal.h"
#include "queue_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

int bt_queue_shm_create(bt_queue_shm_t **out, unsigned slots, unsigned max_inflight)
{
	if (!out || slots == 0 || slots > 4096 || max_inflight == 0 ||
	    max_inflight > (1u << 20))
		return -EINVAL;
	bt_queue_shm_t *shm = calloc(1, sizeof(*shm));
	if (!shm)
		return -ENOMEM;
	size_t sz = sizeof(struct slot) + (size_t)max_inflight * sizeof(struct lost_entry);
	sz = (sz + CACHELINE - 1) & ~(size_t)(CACHELINE - 1);
	shm->slots = slots;
	shm->cap = max_inflight;
	shm->slot_size = sz;
	shm->map_size = sz * slots;
	void *p = mmap(NULL, shm->map_size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		int err = -errno;
		free(shm);
		return bt__log_errno(BT_LOG_ERROR, err, "mmap(shared ack memory, %zu bytes)",
				     (size_t)sz * slots);
	}
	shm->base = p; /* zero-filled */
	*out = shm;
	return 0;
}

void bt_queue_shm_destroy(bt_queue_shm_t *shm)
{
	if (!shm)
		return;
	munmap(shm->base, shm->map_size);
	free(shm);
}

void bt_queue_shm_reset(bt_queue_shm_t *shm, unsigned slot)
{
	if (!shm || slot >= shm->slots)
		return;
	struct slot *s = bt__shm_slot(shm, slot);
	atomic_store_explicit(&s->acked_seq, 0, memory_order_relaxed);
	atomic_store_explicit(&s->fds_received, 0, memory_order_relaxed);
	atomic_store_explicit(&s->lost_head, 0, memory_order_relaxed);
	atomic_store_explicit(&s->lost_tail, 0, memory_order_relaxed);
	atomic_store_explicit(&s->beat, 0, memory_order_relaxed);
	atomic_store_explicit(&s->load, 0, memory_order_release);
}

void bt_queue_ack_batch(bt_queue_shm_t *shm, unsigned slot, const struct bt_wire_batch *b)
{
	if (!shm || slot >= shm->slots || !b)
		return;
	struct slot *s = bt__shm_slot(shm, slot);
	if (b->n_lost) {
		uint64_t head = atomic_load_explicit(&s->lost_head, memory_order_relaxed);
		for (unsigned i = 0; i < b->n_items; i++) {
			if (!(b->items[i].flags & BT_WIRE_ITEM_LOST))
				continue;
			struct lost_entry *e = &s->lost[head % shm->cap];
			e->seq = b->seq;
			e->id = b->items[i].id;
			head++;
		}
		atomic_store_explicit(&s->lost_head, head, memory_order_release);
	}
	atomic_fetch_add_explicit(&s->fds_received, (uint64_t)(b->n_fds - b->n_lost),
				  memory_order_relaxed);
	atomic_store_explicit(&s->acked_seq, b->seq, memory_order_release);
}

void bt_queue_shm_set_load(bt_queue_shm_t *shm, unsigned slot, uint32_t load)
{
	if (shm && slot < shm->slots)
		atomic_store_explicit(&bt__shm_slot(shm, slot)->load, load, memory_order_relaxed);
}

void bt__queue_shm_beat(bt_queue_shm_t *shm, unsigned slot)
{
	if (shm && slot < shm->slots)
		atomic_fetch_add_explicit(&bt__shm_slot(shm, slot)->beat, 1, memory_order_relaxed);
}

uint32_t bt_queue_shm_load(const bt_queue_shm_t *shm, unsigned slot)
{
	if (!shm || slot >= shm->slots)
		return 0;
	return atomic_load_explicit(&bt__shm_slot(shm, slot)->load, memory_order_relaxed);
}
