/* SPDX-License-Identifier: MIT */
/*
 * A program's own metrics, exported next to the runtime's on --metrics
 * (the Prometheus text format: docs/control.md).
 *
 * Register each metric once, from main before bt_runtime_run: a counter or
 * a gauge, with a name that follows Prometheus' rules
 * ([a-zA-Z_:][a-zA-Z0-9_:]*; a counter's name ends in _total), and may
 * carry labels: "http_responses_total{class=\"2xx\"}" and its siblings
 * are one family (one HELP, one TYPE: the first one registered says them).  The table
 * is the process's, and the worker processes inherit it.  Then, on a
 * worker loop's thread (its callbacks), bt_loop_metric_add adds to the
 * loop's own value and bt_loop_metric_set sets it: one relaxed atomic
 * store in memory the supervisor shares with the worker, no lock, no
 * syscall.  The export sums every worker loop's value.  A counter keeps
 * what a worker counted after that worker ends (a respawn counts on from
 * there); a gauge of a worker that ended reads 0.
 *
 * A loop that bt_runtime_run did not make (bt_loop_create, an attached
 * worker's process) keeps its values for itself: bt_loop_metric_get reads
 * them, and nothing is exported.
 */
#ifndef BATON_METRICS_H
#define BATON_METRICS_H

#include <stdint.h>

#include <baton/loop.h>
#include <baton/version.h>

#ifdef __cplusplus
extern "C" {
#endif

enum bt_metric_type {
	BT_METRIC_COUNTER = 0, /* only grows: bt_loop_metric_add with delta >= 0 */
	BT_METRIC_GAUGE = 1,   /* goes up and down: add (any sign) or set */
};

#define BT_METRICS_MAX 32     /* metrics a program may register */
#define BT_METRIC_NAME_MAX 127 /* bytes of a name, labels included */

/*
 * Register a metric: its id (0..BT_METRICS_MAX-1), or -EINVAL (a name
 * that breaks the rules or starts with "baton_", labels not of the form
 * {k="v",...} or with a value holding a quote, backslash or newline, a
 * counter not named *_total, a family registered with the other type, a
 * help text that is NULL or holds a newline or backslash, a bad type),
 * -EEXIST (the name is registered), -ENOSPC (BT_METRICS_MAX already),
 * -EBUSY (bt_runtime_run has started: register before it).
 */
BT_API int bt_metric_register(const char *name, const char *help, enum bt_metric_type type);

/* On the loop's thread: add delta to (any metric), or set (a gauge), the
 * loop's value of metric id.  An id that was not registered, a counter
 * given a negative delta or set: ignored. */
BT_API void bt_loop_metric_add(bt_loop_t *loop, int id, int64_t delta);
BT_API void bt_loop_metric_set(bt_loop_t *loop, int id, int64_t value);
/* The loop's own value of metric id (0 for an unknown id). */
BT_API int64_t bt_loop_metric_get(const bt_loop_t *loop, int id);

#ifdef __cplusplus
}
#endif

#endif
