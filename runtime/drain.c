/* SPDX-License-Identifier: MIT */
/*
 * Stopping the server (after --grace, if set, below): the acceptor stops
 * accepting and hands over what it holds, every worker gets DRAIN with
 * --drain-timeout, and once no worker runs (forked, or attached) the
 * acceptor's loop returns.  The worker set enforces the deadline
 * (workers_proc.c SIGKILLs processes a second after it).
 */
#include "supervisor.h"

#include "internal.h"

void bt__sup_drain(struct bt_runtime *s, const char *why)
{
	if (s->draining)
		return;
	s->draining = 1;
	unsigned running = bt__sup_running(s);
	bt__log(BT_LOG_INFO, "%s: draining (%u ms for open connections)", why,
		s->cfg->drain_timeout_ms);
	bt__notify("STOPPING=1\nSTATUS=%s: draining, %u worker%s finishing", why, running,
		   running == 1 ? "" : "s");
	bt__accs_drain(s, s->cfg->drain_timeout_ms);
	s->drain_deadline_ns = bt__now_ns() + (uint64_t)s->cfg->drain_timeout_ms * 1000000ull +
			       1000000000ull;
	bt__sup_schedule(s);
	bt__sup_worker_ended(s);
}

/*
 * --grace: the server goes on as before, accepting and serving, but every
 * worker loop's bt_loop_state says BT_LOOP_GOING_AWAY, so that a health
 * check fails and a balancer stops sending new connections before any is
 * refused.
 */
void bt__sup_stop_signal(struct bt_runtime *s, const char *why)
{
	unsigned grace = s->cfg->grace_ms;
	if (s->draining)
		return;
	/* Not in bt__sup_drain: a reload drains too, and its connections
	 * stay open to move (BT_LOOP_HANDING_OVER once DRAIN arrives). */
	bt__metrics_going_away(s->metrics);
	if (grace == 0 || s->grace_until_ns) {
		if (s->grace_until_ns)
			bt__log(BT_LOG_INFO, "%s again: the grace ends now", why);
		bt__sup_drain(s, why);
		return;
	}
	s->grace_until_ns = bt__now_ns() + (uint64_t)grace * 1000000ull;
	s->grace_why = why;
	bt__log(BT_LOG_INFO, "%s: going away: serving %u ms more while health checks fail "
			     "(--grace), then draining; %s again drains now", why, grace, why);
	bt__notify("STOPPING=1\nSTATUS=%s: going away, draining in %u ms", why, grace);
	bt__sup_schedule(s);
}

void bt__sup_worker_ended(struct bt_runtime *s)
{
	if (s->draining && bt__sup_running(s) == 0 && s->attached == 0)
		bt_acceptor_stop(s->acc);
}

void bt__sup_drain_due(struct bt_runtime *s, uint64_t now)
{
	if (s->grace_until_ns && !s->draining && now >= s->grace_until_ns)
		bt__sup_drain(s, s->grace_why);
	if (!s->draining || now < s->drain_deadline_ns || !s->attached)
		return;
	bt__log(BT_LOG_WARN, "%u attached worker%s still there after the drain deadline: stopping "
			     "without them", s->attached, s->attached == 1 ? "" : "s");
	s->attached = 0;
	bt__sup_worker_ended(s);
}
