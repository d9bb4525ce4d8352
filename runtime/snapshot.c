/* SPDX-License-Identifier: MIT */
/*
 * The control socket's view of a running server (docs/control.md): a
 * snapshot of the counters the acceptor and the supervisor keep anyway,
 * taken on the supervisor's thread in one go (so the figures agree with
 * each other), and written out as text or JSON in the control process.
 *
 * Taking it copies counters and reads the workers' published loads: a few
 * hundred nanoseconds per worker, no syscall.  Everything that formats
 * runs in the control process, off the acceptor's path.
 */
#include "supervisor.h"

#include "acceptor_internal.h"
#include "internal.h"
#include "queue_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- a growing output buffer ------------------------------------------------------ */

void bt__buf_printf(struct bt__buf *b, const char *fmt, ...)
{
	if (b->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->len;
		int n = vsnprintf(b->cap ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap - b->len <= (size_t)n)
			cap *= 2;
		if (cap > BT__BUF_MAX) {
			b->failed = 1;
			return;
		}
		char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

void bt__buf_free(struct bt__buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* --- taking it (the supervisor's thread) ---------------------------------------- */

static const char *mode_name(const struct bt_runtime *s)
{
	if (s->cfg->mode == BT_MODE_THREAD)
		return "thread";
	return s->tpp > 1 ? "hybrid" : "process";
}

struct bt__snap *bt__snap_take(struct bt_runtime *s)
{
	unsigned max = s->nslots + BT_RUNTIME_MAX_ATTACHED;
	struct bt__snap *sn = calloc(1, sizeof(*sn) + (size_t)max * sizeof(sn->w[0]));
	if (!sn)
		return NULL;
	uint64_t now = bt__now_ns();
	snprintf(sn->name, sizeof(sn->name), "%s", s->cfg->name);
	sn->state = s->draining ? (s->next_fd >= 0 || s->handed_over ? "handing over" : "draining")
		    : s->next_fd >= 0	  ? "reloading"
		    : s->grace_until_ns ? "going away"
					  : "serving";
	bt__metrics_proxy(s->metrics, &sn->proxy_refused, &sn->proxy_late);
	sn->pid = (long)getpid();
	sn->master_pid = s->ctl_fd >= 0 ? (long)getppid() : 0;
	sn->up_ns = now - s->start_ns;
	snprintf(sn->backend, sizeof(sn->backend), "%s", bt_acceptor_backend(s->acc));
	sn->mode = mode_name(s);
	sn->workers = s->want;
	sn->threads = s->tpp;
	sn->attached = s->attached;
	sn->batch = s->qc.batch;
	bt_queue_flush_name(&s->qc, sn->flush, sizeof(sn->flush));
	sn->dispatch = bt_acceptor_dispatch_name(s->acc->cfg.dispatch);
	sn->fire_and_forget = s->qc.fire_and_forget;
	sn->max_inflight = s->qc.max_inflight;
	sn->drain_timeout_ms = s->cfg->drain_timeout_ms;
	sn->worker_timeout_ms = s->cfg->worker_timeout_ms;
	struct bt__accs_view v;
	if (bt__accs_view(s, &v) < 0) {
		free(sn);
		return NULL;
	}
	sn->as = v.as;
	memcpy(sn->accepted_by, v.accepted, sizeof(sn->accepted_by));
	sn->acceptors = bt__accs_count(s);
	sn->accepting = s->accs_active;
	sn->held = v.backlog; /* + each queue's, below */
	sn->taken = s->taken;
	sn->taken_bytes = s->taken_bytes;
	sn->taken_refused = s->taken_refused;
	sn->rehomed = s->rehomed;
	sn->internal = v.internal;
	sn->maxw = s->maxw;
	for (int k = bt__sup_slot_next(s, -1); k >= 0; k = bt__sup_slot_next(s, k)) {
		unsigned i = (unsigned)k;
		bt_queue_t *q = bt_acceptor_queue(s->acc, i);
		struct bt__snap_worker *w = &sn->w[sn->nworkers++];
		w->slot = i;
		w->qs = v.w[i].qs;
		memcpy(w->bhist, v.w[i].bhist, sizeof(w->bhist));
		/* A thread ring's taken items count as acknowledged now, not at
		 * the next reap: then the figures add up exactly. */
		w->qs.acked += v.w[i].unreaped;
		w->inflight = v.w[i].inflight;
		sn->held += w->inflight;
		w->batch = q ? q->cfg.batch : s->qc.batch;
		w->lagging = v.w[i].lagging;
		uint64_t started = 0;
		if (i < s->nslots) {
			unsigned p = i / s->tpp;
			w->kind = s->cfg->mode == BT_MODE_THREAD ? "thread" : "process";
			w->thread = i % s->tpp;
			s->ops->info(s, p, &w->pid, &started);
			w->running = s->ops->alive(s, p) && q != NULL;
			w->retiring = s->wc[p].retire;
			w->retired = p >= s->want && !w->running; /* workers N took it away */
			w->restarts = s->wc[p].restarts;
			w->stuck = s->wc[p].stuck;
			w->open = w->running ? s->ops->open(s, i) : 0;
		} else {
			w->kind = "attached";
			w->pid = (long)bt__acc_worker_pid(s->acc, i);
			w->running = 1;
			w->open = bt_queue_consumer_load(q);
			started = s->guest[i - s->gbase].since_ns;
		}
		w->up_ns = w->running && started && started <= now ? now - started : 0;
	}
	bt__accs_view_free(&v);
	return sn;
}

/* --- writing it (the control process) --------------------------------------------- */

static double per(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0.0;
}

static double secs(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* "3.2s", "4m05s", "2h07m", "3d04h" */
static const char *ago(uint64_t ns, char *buf, size_t cap)
{
	uint64_t s = ns / 1000000000ull;
	if (s < 60)
		snprintf(buf, cap, "%.1fs", secs(ns));
	else if (s < 3600)
		snprintf(buf, cap, "%llum%02llus", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
	else if (s < 86400)
		snprintf(buf, cap, "%lluh%02llum", (unsigned long long)(s / 3600),
			 (unsigned long long)(s / 60 % 60));
	else
		snprintf(buf, cap, "%llud%02lluh", (unsigned long long)(s / 86400),
			 (unsigned long long)(s / 3600 % 24));
	return buf;
}

#define U(x) ((unsigned long long)(x))

void bt__snap_text(const struct bt__snap *sn, struct bt__buf *b)
{
	char up[32];
	bt__buf_printf(b, "%s %s: %s, pid %ld", sn->name, bt_version(), sn->state, sn->pid);
	if (sn->master_pid)
		bt__buf_printf(b, " (master %ld)", sn->master_pid);
	bt__buf_printf(b, ", up %s\n", ago(sn->up_ns, up, sizeof(up)));
	bt__buf_printf(b, "settings: mode %s, %u worker%s", sn->mode, sn->workers,
		       sn->workers == 1 ? "" : "s");
	if (sn->threads > 1)
		bt__buf_printf(b, " x %u threads", sn->threads);
	if (sn->attached)
		bt__buf_printf(b, " + %u attached", sn->attached);
	if (sn->acceptors > 1)
		bt__buf_printf(b, ", %u acceptors (%u accepting)", sn->acceptors, sn->accepting);
	bt__buf_printf(b, ", backend %s, batch %u, flush %s, dispatch %s%s\n", sn->backend,
		       sn->batch, sn->flush, sn->dispatch,
		       sn->fire_and_forget ? ", fire-and-forget" : "");
	const struct bt_acceptor_stats *a = &sn->as;
	bt__buf_printf(b,
		       "acceptor: accepted %llu, pushed %llu, held %u, batches %llu (%.2f fds/batch), "
		       "redelivered %llu, dropped %llu, full %llu, emfile %llu, errors %llu, "
		       "wakeups %llu, sweeps %llu, lagged %llu, rehomed %llu\n",
		       U(a->accepted), U(a->pushed), sn->held, U(a->batches),
		       per(a->items_sent, a->batches), U(a->redelivered), U(a->dropped), U(a->full),
		       U(a->emfile), U(a->errors), U(a->wakeups), U(a->sweeps), U(a->lagged),
		       U(sn->rehomed));
	if (sn->taken || sn->taken_refused)
		bt__buf_printf(b, "reload: taken over %llu connections (%llu bytes carried), "
				  "refused %llu\n",
			       U(sn->taken), U(sn->taken_bytes), U(sn->taken_refused));
	if (sn->proxy_refused || sn->proxy_late)
		bt__buf_printf(b, "proxy: refused %llu (no valid PROXY header), late %llu\n",
			       U(sn->proxy_refused), U(sn->proxy_late));
	bt__buf_printf(b, "%-6s %-8s %-8s %-8s %7s %6s %9s %9s %6s %10s %10s %6s %8s %8s\n",
		       "worker", "kind", "pid", "state", "up", "open", "inflight", "batches",
		       "fds/b", "items", "acked", "lost", "redeliv", "restarts");
	for (unsigned i = 0; i < sn->nworkers; i++) {
		const struct bt__snap_worker *w = &sn->w[i];
		char pid[24];
		if (w->pid && sn->threads > 1 && strcmp(w->kind, "attached"))
			snprintf(pid, sizeof(pid), "%ld.%u", w->pid, w->thread);
		else if (w->pid)
			snprintf(pid, sizeof(pid), "%ld", w->pid);
		else
			snprintf(pid, sizeof(pid), "-");
		const char *state = w->retired	  ? "retired"
				    : !w->running ? "down"
				    : w->retiring ? "draining"
				    : w->lagging  ? "lagging"
						  : "running";
		bt__buf_printf(b, "%-6u %-8s %-8s %-8s %7s %6u %9u %9llu %6.2f %10llu %10llu %6llu "
				  "%8llu %8u\n",
			       w->slot, w->kind, pid, state,
			       w->running ? ago(w->up_ns, up, sizeof(up)) : "-", w->open,
			       w->inflight, U(w->qs.batches), per(w->qs.items_sent, w->qs.batches),
			       U(w->qs.items_sent), U(w->qs.acked), U(w->qs.lost), U(w->qs.taken),
			       w->restarts);
	}
}

void bt__snap_json(const struct bt__snap *sn, struct bt__buf *b)
{
	const struct bt_acceptor_stats *a = &sn->as;
	/* The name is the program's (cfg->name): escape what JSON needs. */
	bt__buf_printf(b, "{\"name\":\"");
	for (const char *p = sn->name; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\')
			bt__buf_printf(b, "\\%c", c);
		else if (c < 0x20)
			bt__buf_printf(b, "\\u%04x", c);
		else
			bt__buf_printf(b, "%c", c);
	}
	bt__buf_printf(b,
		       "\",\"version\":\"%s\",\"state\":\"%s\",\"pid\":%ld,\"master_pid\":%ld,"
		       "\"uptime_seconds\":%.3f,",
		       bt_version(), sn->state, sn->pid, sn->master_pid, secs(sn->up_ns));
	bt__buf_printf(b,
		       "\"settings\":{\"mode\":\"%s\",\"workers\":%u,\"threads\":%u,\"backend\":\"%s\","
		       "\"batch\":%u,\"flush\":\"%s\",\"dispatch\":\"%s\",\"fire_and_forget\":%s,"
		       "\"max_inflight\":%u,\"drain_timeout_ms\":%u,\"worker_timeout_ms\":%u,"
		       "\"max_workers\":%u,\"acceptors\":%u},",
		       sn->mode, sn->workers, sn->threads, sn->backend, sn->batch, sn->flush,
		       sn->dispatch, sn->fire_and_forget ? "true" : "false", sn->max_inflight,
		       sn->drain_timeout_ms, sn->worker_timeout_ms, sn->maxw, sn->acceptors);
	bt__buf_printf(b,
		       "\"acceptor\":{\"accepted\":%llu,\"pushed\":%llu,\"held\":%u,\"batches\":%llu,"
		       "\"items\":%llu,\"fds_per_batch\":%.3f,\"redelivered\":%llu,\"dropped\":%llu,"
		       "\"full\":%llu,\"emfile\":%llu,\"errors\":%llu,\"wakeups\":%llu,"
		       "\"sweeps\":%llu,\"lagged\":%llu,\"rehomed\":%llu,\"internal\":%llu,"
		       "\"accepting\":%u,\"accepted_by\":[",
		       U(a->accepted), U(a->pushed), sn->held, U(a->batches), U(a->items_sent),
		       per(a->items_sent, a->batches), U(a->redelivered), U(a->dropped), U(a->full),
		       U(a->emfile), U(a->errors), U(a->wakeups), U(a->sweeps), U(a->lagged),
		       U(sn->rehomed), U(sn->internal), sn->accepting);
	for (unsigned k = 0; k < sn->acceptors; k++)
		bt__buf_printf(b, "%s%llu", k ? "," : "", U(sn->accepted_by[k]));
	bt__buf_printf(b, "]},");
	bt__buf_printf(b, "\"reload\":{\"taken\":%llu,\"taken_bytes\":%llu,\"refused\":%llu},",
		       U(sn->taken), U(sn->taken_bytes), U(sn->taken_refused));
	bt__buf_printf(b, "\"proxy\":{\"refused\":%llu,\"late\":%llu},", U(sn->proxy_refused),
		       U(sn->proxy_late));
	bt__buf_printf(b, "\"workers\":[");
	for (unsigned i = 0; i < sn->nworkers; i++) {
		const struct bt__snap_worker *w = &sn->w[i];
		bt__buf_printf(b,
			       "%s{\"worker\":%u,\"kind\":\"%s\",\"pid\":%ld,\"thread\":%u,\"retired\":%s,"
			       "\"running\":%s,\"draining\":%s,\"lagging\":%s,\"uptime_seconds\":%.3f,"
			       "\"restarts\":%u,"
			       "\"stuck\":%u,\"open\":%u,\"inflight\":%u,\"batch\":%u,"
			       "\"batches\":%llu,\"items\":%llu,\"fds_per_batch\":%.3f,"
			       "\"acked\":%llu,\"lost\":%llu,\"redelivered\":%llu,\"full\":%llu}",
			       i ? "," : "", w->slot, w->kind, w->pid, w->thread,
			       w->retired ? "true" : "false",
			       w->running ? "true" : "false", w->retiring ? "true" : "false",
			       w->lagging ? "true" : "false",
			       secs(w->up_ns), w->restarts, w->stuck, w->open, w->inflight, w->batch,
			       U(w->qs.batches), U(w->qs.items_sent), per(w->qs.items_sent, w->qs.batches),
			       U(w->qs.acked), U(w->qs.lost), U(w->qs.taken), U(w->qs.full));
	}
	bt__buf_printf(b, "]}\n");
}

int bt_runtime_stats_json(bt_runtime_t *rt, char **json, size_t *len)
{
	if (!rt || !rt->acc || !json || !len)
		return -EINVAL;
	struct bt__snap *sn = bt__snap_take(rt);
	if (!sn)
		return -ENOMEM;
	struct bt__buf b = {0};
	bt__snap_json(sn, &b);
	free(sn);
	if (b.failed || !b.p) {
		bt__buf_free(&b);
		return -ENOMEM;
	}
	*json = b.p;
	*len = b.len;
	return 0;
}
