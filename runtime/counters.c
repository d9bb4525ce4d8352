/* SPDX-License-Identifier: MIT */
/*
 * The counters the supervisor prints on SIGUSR1 and at exit: the acceptor's,
 * then each worker loop's (over every worker that has run in its slot).
 */
#include "supervisor.h"

#include "internal.h"

#include <stdio.h>

void bt__sup_print_counters(struct bt_runtime *s, const char *why)
{
	struct bt__accs_view v;
	if (bt__accs_view(s, &v) < 0)
		return;
	const struct bt_acceptor_stats st = v.as;
	char flush[32], accs[40 + 21 * BT_RUNTIME_MAX_ACCEPTORS] = "";
	if (s->nxacc) { /* the line sums them; what each accepted */
		size_t n = (size_t)snprintf(accs, sizeof(accs), ", over %u acceptors (%u accepting):",
					    bt__accs_count(s), s->accs_active);
		for (unsigned k = 0; k < bt__accs_count(s) && n < sizeof(accs); k++)
			n += (size_t)snprintf(accs + n, sizeof(accs) - n, "%s%llu", k ? " + " : " ",
					      (unsigned long long)v.accepted[k]);
	}
	double up = (double)(bt__now_ns() - s->start_ns) / 1e9;
	fprintf(stderr,
		"%s: counters (%s): uptime %.1f s, backend %s, dispatch %s, flush %s, batch %u%s\n"
		"  acceptor: accepted %llu, batches %llu, fds/batch %.2f, redelivered %llu, "
		"dropped %llu, full %llu, emfile %llu, errors %llu, held %u, wakeups %llu, sweeps %llu, "
		"lagged %llu, pushed %llu%s\n",
		s->cfg->name, why, up, bt_acceptor_backend(s->acc),
		bt_acceptor_dispatch_name(s->cfg->dispatch),
		bt_queue_flush_name(&s->qc, flush, sizeof(flush)), s->qc.batch,
		s->qc.fire_and_forget ? ", fire-and-forget" : "",
		(unsigned long long)st.accepted, (unsigned long long)st.batches,
		st.batches ? (double)st.items_sent / (double)st.batches : 0.0,
		(unsigned long long)st.redelivered, (unsigned long long)st.dropped,
		(unsigned long long)st.full, (unsigned long long)st.emfile,
		(unsigned long long)st.errors, v.held,
		(unsigned long long)st.wakeups, (unsigned long long)st.sweeps,
		(unsigned long long)st.lagged, (unsigned long long)st.pushed, accs);
	if (s->taken || s->taken_refused || s->prev_fd >= 0)
		fprintf(stderr,
			"  reload: taken over %llu connections (%llu bytes carried) from the previous "
			"generation, refused %llu%s\n",
			(unsigned long long)s->taken, (unsigned long long)s->taken_bytes,
			(unsigned long long)s->taken_refused,
			s->prev_fd >= 0 ? ", the previous generation still finishing" : "");
	uint64_t pref, plate;
	bt__metrics_proxy(s->metrics, &pref, &plate);
	if (pref || plate)
		fprintf(stderr, "  proxy: refused %llu (no valid PROXY header), late %llu (not within "
				"--proxy-timeout)\n",
			(unsigned long long)pref, (unsigned long long)plate);
	for (int k = bt__sup_slot_next(s, -1); k >= 0; k = bt__sup_slot_next(s, k)) {
		unsigned i = (unsigned)k;
		bt_queue_t *q = bt_acceptor_queue(s->acc, i);
		const struct bt_queue_stats qs = v.w[i].qs;
		char who[48];
		unsigned restarts = 0, stuck = 0, open;
		if (i < s->nslots) {
			s->ops->describe(s, i, who, sizeof(who));
			restarts = s->wc[i / s->tpp].restarts;
			stuck = s->wc[i / s->tpp].stuck;
			open = s->ops->open(s, i);
		} else {
			snprintf(who, sizeof(who), "attached pid %u", (unsigned)bt__acc_worker_pid(s->acc, i));
			open = bt_queue_consumer_load(q);
		}
		fprintf(stderr,
			"  worker %u: %s, restarts %u, stuck %u, batches %llu, items %llu, acked %llu, "
			"lost %llu, redelivered %llu, full %llu, open %u\n",
			i, who, restarts, stuck, (unsigned long long)qs.batches,
			(unsigned long long)qs.items_sent, (unsigned long long)qs.acked,
			(unsigned long long)qs.lost, (unsigned long long)qs.taken,
			(unsigned long long)qs.full, open);
	}
	bt__accs_view_free(&v);
}
