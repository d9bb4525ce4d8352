/* SPDX-License-Identifier: MIT */
/*
 * Stopping the server: the acceptor stops accepting and hands over what it
 * holds, every worker gets DRAIN with --drain-timeout, and once no worker
 * runs (forked, or attached) the acceptor's loop returns.  The worker set enforces the deadline
 * (workers_proc.c SIGKILLs processes a grace second after it).
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

void bt__sup_worker_ended(struct bt_runtime *s)
{
	if (s->draining && bt__sup_running(s) == 0 && s->attached == 0)
		bt_acceptor_stop(s->acc);
}

void bt__sup_drain_due(struct bt_runtime *s, uint64_t now)
{
	if (!s->draining || now < s->drain_deadline_ns || !s->attached)
		return;
	bt__log(BT_LOG_WARN, "%u attached worker%s still there after the drain deadline: stopping "
			     "without them", s->attached, s->attached == 1 ? "" : "s");
	s->attached = 0;
	bt__sup_worker_ended(s);
}
