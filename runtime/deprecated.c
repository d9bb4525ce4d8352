/* SPDX-License-Identifier: MIT */
/*
 * Former names that ABI 1 keeps exporting (baton.map, node BATON_1); the
 * headers mark them deprecated and name their successors.
 */
#include <baton/acceptor.h>
#include <baton/queue.h>

void bt_queue_set_load(bt_queue_shm_t *shm, unsigned slot, uint32_t load)
{
	bt_queue_shm_set_load(shm, slot, load);
}

uint32_t bt_queue_load(const bt_queue_t *q)
{
	return bt_queue_consumer_load(q);
}

void bt_queue_set_consumer_load(bt_queue_t *q, uint32_t load)
{
	bt_queue_consumer_set_load(q, load);
}

void bt_acceptor_worker_stats_sized(const bt_acceptor_t *acc, unsigned idx,
				    struct bt_queue_stats *out, size_t size)
{
	bt_acceptor_get_worker_stats_sized(acc, idx, out, size);
}
