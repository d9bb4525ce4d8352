/* SPDX-License-Identifier: MIT */
/*
 * Metrics (baton/metrics.h, docs/control.md): the program's registry, the
 * memory the worker loops write their figures to, and the Prometheus text
 * the control process serves on --metrics.
 *
 * Memory.  The supervisor maps one region, MAP_SHARED, before it starts
 * any worker: a cache-line-aligned slot per worker loop (the acceptor's
 * slot numbers), which forked workers inherit and worker threads share.
 * A loop writes only its own slot (relaxed atomics: each value has one
 * writer), the control process reads them all.  A loop that has no slot
 * there writes a private one (baton/metrics.h).
 */
#include "supervisor.h"

#include "acceptor_internal.h"
#include "internal.h"
#include "loop_internal.h"

#include <baton/metrics.h>

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* --- the registry --------------------------------------------------------------- */

static struct {
	char name[BT_METRIC_NAME_MAX + 1];
	char help[160];
	enum bt_metric_type type;
	size_t fam; /* the family's length: name up to '{' */
} reg[BT_METRICS_MAX];
static int nreg;
static int frozen; /* bt_runtime_run started: the table is final */

static int ident(char c, int first, int colon)
{
	int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
	return alpha || (!first && c >= '0' && c <= '9');
}

/* "family" or "family{label="value",...}": the family's length, or 0 if
 * the name breaks the rules. */
static size_t name_ok(const char *n)
{
	size_t len = strlen(n), fam = strcspn(n, "{");
	if (len == 0 || len > BT_METRIC_NAME_MAX || fam == 0 || !strncmp(n, "baton_", 6))
		return 0;
	for (size_t i = 0; i < fam; i++)
		if (!ident(n[i], i == 0, 1))
			return 0;
	if (fam == len)
		return fam;
	/* Labels: {k="v"(,k="v")*}, values without a quote, backslash or
	 * newline (so nothing needs escaping). */
	const char *p = n + fam + 1;
	for (;;) {
		const char *k = p;
		while (ident(*p, p == k, 0))
			p++;
		if (p == k || p[0] != '=' || p[1] != '"')
			return 0;
		p += 2;
		while (*p && *p != '"' && *p != '\\' && *p != '\n')
			p++;
		if (*p != '"')
			return 0;
		p++;
		if (*p == '}')
			return p[1] == 0 ? fam : 0;
		if (*p++ != ',')
			return 0;
	}
}

int bt_metric_register(const char *name, const char *help, enum bt_metric_type type)
{
	size_t fam = name ? name_ok(name) : 0;
	if (!fam || !help || strlen(help) >= sizeof(reg[0].help) || strchr(help, '\n') ||
	    strchr(help, '\\') || (type != BT_METRIC_COUNTER && type != BT_METRIC_GAUGE))
		return -EINVAL;
	size_t len = strlen(name);
	if (type == BT_METRIC_COUNTER && (fam < 6 || strncmp(name + fam - 6, "_total", 6)))
		return -EINVAL;
	if (frozen)
		return -EBUSY;
	for (int i = 0; i < nreg; i++) {
		if (!strcmp(reg[i].name, name))
			return -EEXIST;
		/* One family, one type. */
		if (reg[i].fam == fam && !strncmp(reg[i].name, name, fam) && reg[i].type != type)
			return -EINVAL;
	}
	if (nreg == BT_METRICS_MAX)
		return -ENOSPC;
	memcpy(reg[nreg].name, name, len + 1);
	reg[nreg].fam = fam;
	snprintf(reg[nreg].help, sizeof(reg[nreg].help), "%s", help);
	reg[nreg].type = type;
	return nreg++;
}

/* --- the loops' side ------------------------------------------------------------ */

static const uint64_t handoff_le_ns[BT__HANDOFF_BUCKETS] = {
	10000,	 25000,	  50000,    100000,   250000,	500000,	  1000000,
	2500000, 5000000, 10000000, 25000000, 100000000, 1000000000,
};

void bt__mslot_handoff(struct bt__mslot *m, uint64_t ns)
{
	unsigned b = 0;
	while (b < BT__HANDOFF_BUCKETS && ns > handoff_le_ns[b])
		b++;
	/* One writer (the slot's loop): a load and a store, no locked add on
	 * the per-connection path. */
	atomic_store_explicit(&m->handoff[b],
			      atomic_load_explicit(&m->handoff[b], memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_store_explicit(&m->handoff_sum_ns,
			      atomic_load_explicit(&m->handoff_sum_ns, memory_order_relaxed) + ns,
			      memory_order_relaxed);
}

void bt_loop_metric_add(bt_loop_t *loop, int id, int64_t delta)
{
	if (!loop || id < 0 || id >= nreg || (reg[id].type == BT_METRIC_COUNTER && delta < 0))
		return;
	/* One writer (this loop): a load and a store, no locked add. */
	_Atomic int64_t *v = &loop->ms->app[id];
	atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + delta,
			      memory_order_relaxed);
}

void bt_loop_metric_set(bt_loop_t *loop, int id, int64_t value)
{
	if (!loop || id < 0 || id >= nreg || reg[id].type != BT_METRIC_GAUGE)
		return;
	atomic_store_explicit(&loop->ms->app[id], value, memory_order_relaxed);
}

int64_t bt_loop_metric_get(const bt_loop_t *loop, int id)
{
	if (!loop || id < 0 || id >= nreg)
		return 0;
	return atomic_load_explicit(&loop->ms->app[id], memory_order_relaxed);
}

/* --- the shared region ------------------------------------------------------------ */

struct bt__metrics {
	struct bt__mslot *slot;
	unsigned n;
	size_t size;
};

int bt__metrics_create(struct bt__metrics **out, unsigned slots)
{
	frozen = 1;
	struct bt__metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->n = slots ? slots : 1;
	m->size = (size_t)m->n * sizeof(struct bt__mslot);
	void *p = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		int err = -errno;
		size_t size = m->size;
		free(m);
		return bt__log_errno(BT_LOG_ERROR, err, "mmap(metrics, %zu bytes)", size);
	}
	m->slot = p; /* zero-filled */
	*out = m;
	return 0;
}

void bt__metrics_destroy(struct bt__metrics *m)
{
	if (!m)
		return;
	munmap(m->slot, m->size);
	free(m);
}

struct bt__mslot *bt__metrics_slot(struct bt__metrics *m, unsigned slot)
{
	return m && slot < m->n ? &m->slot[slot] : NULL;
}

void bt__metrics_proxy(const struct bt__metrics *m, uint64_t *refused, uint64_t *late)
{
	*refused = *late = 0;
	for (unsigned i = 0; m && i < m->n; i++) {
		*refused += atomic_load_explicit(&m->slot[i].proxy_refused, memory_order_relaxed);
		*late += atomic_load_explicit(&m->slot[i].proxy_late, memory_order_relaxed);
	}
}

void bt__metrics_going_away(struct bt__metrics *m)
{
	for (unsigned i = 0; m && i < m->n; i++)
		atomic_store_explicit(&m->slot[i].away, 1, memory_order_relaxed);
}

void bt__metrics_worker_gone(struct bt__metrics *m, unsigned slot)
{
	struct bt__mslot *ms = bt__metrics_slot(m, slot);
	for (int i = 0; ms && i < nreg; i++)
		if (reg[i].type == BT_METRIC_GAUGE)
			atomic_store_explicit(&ms->app[i], 0, memory_order_relaxed);
}

/* --- the Prometheus text --------------------------------------------------------- */

#define U(x) ((unsigned long long)(x))

static void head(struct bt__buf *b, const char *name, const char *type, const char *help)
{
	bt__buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(struct bt__buf *b, const char *name, const char *type, const char *help,
		unsigned long long v)
{
	head(b, name, type, help);
	bt__buf_printf(b, "%s %llu\n", name, v);
}

/* A family with one sample per worker: field at offset off of each. */
static void per_worker(struct bt__buf *b, const struct bt__snap *sn, const char *name,
		       const char *type, const char *help, size_t off, int is_u64)
{
	head(b, name, type, help);
	for (unsigned i = 0; i < sn->nworkers; i++) {
		const struct bt__snap_worker *w = &sn->w[i];
		const char *p = (const char *)w + off;
		unsigned long long v = is_u64 ? *(const uint64_t *)p : *(const unsigned *)p;
		bt__buf_printf(b, "%s{worker=\"%u\",kind=\"%s\"} %llu\n", name, w->slot, w->kind, v);
	}
}

#define W(field, kind) offsetof(struct bt__snap_worker, field), kind

void bt__metrics_text(const struct bt__snap *sn, struct bt__metrics *m, struct bt__buf *b)
{
	const struct bt_acceptor_stats *a = &sn->as;
	one(b, "baton_accepted_total", "counter", "Connections accepted.", U(a->accepted));
	one(b, "baton_pushed_total", "counter",
	    "Work items pushed by the program, and connections taken over at a reload.",
	    U(a->pushed));
	one(b, "baton_held", "gauge",
	    "Items accepted or pushed and not acknowledged by a worker yet.", sn->held);
	one(b, "baton_redelivered_total", "counter", "Items given to another worker.",
	    U(a->redelivered));
	one(b, "baton_dropped_total", "counter", "Items closed with no worker to take them.",
	    U(a->dropped));
	one(b, "baton_channel_full_total", "counter", "Hand-offs refused by a full channel.",
	    U(a->full));
	one(b, "baton_emfile_pauses_total", "counter", "Accept pauses for EMFILE or ENFILE.",
	    U(a->emfile));
	one(b, "baton_accept_errors_total", "counter", "Other accept errors.", U(a->errors));
	one(b, "baton_acceptor_wakeups_total", "counter", "Wake-ups of the acceptor's loop.",
	    U(a->wakeups));
	one(b, "baton_accept_sweeps_total", "counter", "Paced-accept sweeps of the listeners.",
	    U(a->sweeps));
	one(b, "baton_lagged_total", "counter", "Times a worker was found lagging.", U(a->lagged));
	one(b, "baton_rehomed_total", "counter",
	    "Connections a draining worker handed back, sent to the others.", U(sn->rehomed));
	one(b, "baton_reload_taken_total", "counter",
	    "Connections taken over from the previous generation.", U(sn->taken));
	one(b, "baton_workers", "gauge", "Worker processes (or threads) wanted.", sn->workers);
	one(b, "baton_batch", "gauge", "Connections per hand-off message, at most.", sn->batch);
	head(b, "baton_uptime_seconds", "gauge", "Seconds since this generation started.");
	bt__buf_printf(b, "baton_uptime_seconds %.3f\n", (double)sn->up_ns / 1e9);

	/* Fds per batch: the acceptor's hand-offs, every worker together. */
	static const unsigned batch_le[BT__BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 253};
	uint64_t bh[BT__BATCH_BUCKETS] = {0};
	for (unsigned i = 0; i < sn->nworkers; i++)
		for (unsigned k = 0; k < BT__BATCH_BUCKETS; k++)
			bh[k] += sn->w[i].bhist[k];
	head(b, "baton_batch_fds", "histogram", "Items per hand-off message.");
	uint64_t cum = 0;
	for (unsigned k = 0; k < BT__BATCH_BUCKETS; k++) {
		cum += bh[k];
		bt__buf_printf(b, "baton_batch_fds_bucket{le=\"%u\"} %llu\n", batch_le[k], U(cum));
	}
	bt__buf_printf(b, "baton_batch_fds_bucket{le=\"+Inf\"} %llu\n", U(cum));
	bt__buf_printf(b, "baton_batch_fds_sum %llu\nbaton_batch_fds_count %llu\n", U(a->items_sent),
		       U(cum));

	/* Hand-off latency: from accept (or push) to the worker's loop taking
	 * the item, as the worker loops measured it. */
	uint64_t hh[BT__HANDOFF_BUCKETS + 1] = {0}, hsum = 0;
	for (unsigned i = 0; m && i < m->n; i++) {
		for (unsigned k = 0; k <= BT__HANDOFF_BUCKETS; k++)
			hh[k] += atomic_load_explicit(&m->slot[i].handoff[k], memory_order_relaxed);
		hsum += atomic_load_explicit(&m->slot[i].handoff_sum_ns, memory_order_relaxed);
	}
	head(b, "baton_handoff_seconds", "histogram",
	     "From accept to the worker's loop taking the connection (attached workers not "
	     "included).");
	cum = 0;
	for (unsigned k = 0; k < BT__HANDOFF_BUCKETS; k++) {
		cum += hh[k];
		bt__buf_printf(b, "baton_handoff_seconds_bucket{le=\"%g\"} %llu\n",
			       (double)handoff_le_ns[k] / 1e9, U(cum));
	}
	cum += hh[BT__HANDOFF_BUCKETS];
	bt__buf_printf(b, "baton_handoff_seconds_bucket{le=\"+Inf\"} %llu\n", U(cum));
	bt__buf_printf(b, "baton_handoff_seconds_sum %.9f\nbaton_handoff_seconds_count %llu\n",
		       (double)hsum / 1e9, U(cum));

	/* PROXY headers (--listen ADDR,proxy) that never came right. */
	uint64_t pref, plate;
	bt__metrics_proxy(m, &pref, &plate);
	head(b, "baton_proxy_refused_total", "counter",
	     "Connections closed before the program saw them: no valid PROXY header (malformed, "
	     "over 4096 bytes, or ended inside it).");
	bt__buf_printf(b, "baton_proxy_refused_total %llu\n", U(pref));
	head(b, "baton_proxy_late_total", "counter",
	     "Connections closed before the program saw them: the PROXY header did not complete "
	     "within --proxy-timeout.");
	bt__buf_printf(b, "baton_proxy_late_total %llu\n", U(plate));

	/* Per worker loop. */
	per_worker(b, sn, "baton_worker_up", "gauge", "1 while the worker runs.", W(running, 0));
	per_worker(b, sn, "baton_worker_open_connections", "gauge",
		   "Connections the worker has open.", W(open, 0));
	per_worker(b, sn, "baton_worker_inflight", "gauge",
		   "Items sent or pending to the worker and not acknowledged.", W(inflight, 0));
	per_worker(b, sn, "baton_worker_batches_total", "counter", "Hand-off messages to the worker.",
		   W(qs.batches, 1));
	per_worker(b, sn, "baton_worker_items_total", "counter", "Items handed to the worker.",
		   W(qs.items_sent, 1));
	per_worker(b, sn, "baton_worker_acked_total", "counter",
		   "Items the worker acknowledged.", W(qs.acked, 1));
	per_worker(b, sn, "baton_worker_lost_total", "counter",
		   "Items whose descriptor the worker did not get (given to another).", W(qs.lost, 1));
	per_worker(b, sn, "baton_worker_redelivered_total", "counter",
		   "Items taken back from the worker.", W(qs.taken, 1));
	per_worker(b, sn, "baton_worker_restarts_total", "counter",
		   "Times a worker was started again in this slot.", W(restarts, 0));
	per_worker(b, sn, "baton_worker_stuck_total", "counter",
		   "Times the watchdog found the worker stuck.", W(stuck, 0));

	/* The program's own, summed over every worker loop; one HELP and
	 * TYPE per family, before its first sample. */
	for (int i = 0; i < nreg; i++) {
		int first = 1;
		for (int j = 0; j < i && first; j++)
			first = !(reg[j].fam == reg[i].fam &&
				  !strncmp(reg[j].name, reg[i].name, reg[i].fam));
		if (!first)
			continue;
		bt__buf_printf(b, "# HELP %.*s %s\n# TYPE %.*s %s\n", (int)reg[i].fam, reg[i].name,
			       reg[i].help, (int)reg[i].fam, reg[i].name,
			       reg[i].type == BT_METRIC_COUNTER ? "counter" : "gauge");
		for (int j = i; j < nreg; j++) {
			if (reg[j].fam != reg[i].fam || strncmp(reg[j].name, reg[i].name, reg[i].fam))
				continue;
			int64_t sum = 0;
			for (unsigned k = 0; m && k < m->n; k++)
				sum += atomic_load_explicit(&m->slot[k].app[j], memory_order_relaxed);
			bt__buf_printf(b, "%s %lld\n", reg[j].name, (long long)sum);
		}
	}
}
