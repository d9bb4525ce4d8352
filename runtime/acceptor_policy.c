/* SPDX-License-Identifier: MIT */
/* The acceptor's time-driven decisions (acceptor_policy.h). */
#include "acceptor_policy.h"

#include <baton/queue.h>

uint64_t bt__pace_gap(uint64_t gap_ewma_ns, uint64_t last_accept_ns, uint64_t now_ns)
{
	uint64_t gap = now_ns - last_accept_ns;
	if (gap > 1000000000ull)
		gap = 1000000000ull;
	return gap_ewma_ns - (gap_ewma_ns >> 3) + (gap >> 3);
}

int bt__pace_start(uint64_t gap_ewma_ns, uint64_t hold_ns, uint64_t accepted)
{
	return hold_ns && gap_ewma_ns < hold_ns / 4 && accepted > 16;
}

int bt__pace_continue(unsigned *yield_x8, unsigned got)
{
	*yield_x8 = *yield_x8 - (*yield_x8 >> 3) + got;
	return *yield_x8 >= 16;
}

int bt__flush_due(int flush, int sweeping, uint64_t gap_ewma_ns, uint64_t hold_ns,
		  uint64_t since_ns, uint64_t now_ns)
{
	switch (flush) {
	case BT_FLUSH_ADAPTIVE:
		if (sweeping || gap_ewma_ns >= hold_ns / 2)
			return 1;
		return now_ns >= since_ns + hold_ns;
	case BT_FLUSH_DELAY:
		return now_ns >= since_ns + hold_ns;
	case BT_FLUSH_SIZE:
		return now_ns >= since_ns + BT_SIZE_BACKSTOP_NS;
	default:
		return 1;
	}
}

uint64_t bt__flush_deadline(int flush, uint64_t hold_ns, uint64_t since_ns)
{
	return since_ns + (flush == BT_FLUSH_SIZE ? BT_SIZE_BACKSTOP_NS : hold_ns);
}

int bt__acc_lagging(uint64_t owed_since_ns, uint64_t now_ns)
{
	return owed_since_ns && now_ns - owed_since_ns > BT_LAG_NS;
}

int bt__acc_far_behind(uint64_t owed_since_ns, uint64_t newest_owed_since_ns)
{
	return owed_since_ns && owed_since_ns + BT_BEHIND_NS < newest_owed_since_ns;
}
