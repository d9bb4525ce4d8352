/* SPDX-License-Identifier: MIT */
/*
 * The acceptor's time-driven decisions as pure functions of their inputs,
 * the clock included (acceptor_policy.c): paced accept, when a batch is
 * due, acknowledgement lag.  acceptor.c applies them; tests/test_acceptor.c
 * checks them with a clock it sets.  Not part of the public API.
 */
#ifndef BATON_ACCEPTOR_POLICY_H
#define BATON_ACCEPTOR_POLICY_H

#include <stdint.h>

/* A worker that owes acknowledgements this long is lagging: a healthy loop
 * acknowledges a batch as soon as it wakes, in micro- to milliseconds. */
#define BT_LAG_NS 20000000ull
/* Size policy: a batch never waits longer than this for its last items. */
#define BT_SIZE_BACKSTOP_NS 50000000ull

/* The smoothed gap between accepts (1/8 weight) after one at now; a gap
 * counts as at most 1 s. */
uint64_t bt__pace_gap(uint64_t gap_ewma_ns, uint64_t last_accept_ns, uint64_t now_ns);

/* Start sweeping the listeners every hold instead of waiting on them:
 * accepts come closer than a quarter of the hold, after the first 16. */
int bt__pace_start(uint64_t gap_ewma_ns, uint64_t hold_ns, uint64_t accepted);

/* A sweep round brought `got` connections: update the smoothed yield
 * (x8, starts at 32); returns 1 to go on sweeping, 0 to stop (fewer than
 * two per sweep: the wait costs more latency than the wake-ups it saves). */
int bt__pace_continue(unsigned *yield_x8, unsigned got);

/*
 * Is a pending batch (pending since `since`) due at now?  flush: enum
 * bt_flush; hold: the queue's delay.  Adaptive: at once, unless accepts
 * come faster than half the hold (more are on their way), then at most the
 * hold; while sweeping, at once.  Delay: after the hold.  Size: full
 * batches go as they fill, the rest after BT_SIZE_BACKSTOP_NS.
 */
int bt__flush_due(int flush, int sweeping, uint64_t gap_ewma_ns, uint64_t hold_ns,
		  uint64_t since_ns, uint64_t now_ns);

/* When a pending batch will be due at the latest (for the wake-up timer). */
uint64_t bt__flush_deadline(int flush, uint64_t hold_ns, uint64_t since_ns);

/* Lagging: owing acknowledgements since owed_since_ns (0: owes nothing)
 * for longer than BT_LAG_NS at now_ns. */
int bt__acc_lagging(uint64_t owed_since_ns, uint64_t now_ns);

/* When every usable worker lags, dispatch still goes on, but not to one
 * that has owed acknowledgements BT_BEHIND_NS longer than the least behind
 * of them: a stopped worker is left out while the others are merely slow. */
#define BT_BEHIND_NS 100000000ull
int bt__acc_far_behind(uint64_t owed_since_ns, uint64_t newest_owed_since_ns);

#endif
