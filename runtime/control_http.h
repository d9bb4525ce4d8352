/* SPDX-License-Identifier: MIT */
/* The --metrics listener's request heads (control_http.c): pure, no
 * syscall, no allocation; fuzzed (tests/fuzz/fuzz_metrics.c). */
#ifndef BATON_CONTROL_HTTP_H
#define BATON_CONTROL_HTTP_H

#include <stddef.h>

#define BT__HEAD_MAX 4096 /* bytes of a request head, at most */

/*
 * What to answer the len bytes a metrics client sent so far (they may hold
 * any byte, NUL included): 0 when the head is not complete yet (read
 * more), 200 for GET or HEAD of /metrics (a query string allowed;
 * *head_only says HEAD), 400 (not "METHOD TARGET HTTP/1.x"), 404 (another
 * path), 405 (another method), 431 (no end of head within BT__HEAD_MAX
 * bytes).
 */
int bt__metrics_route(const char *buf, size_t len, int *head_only);

#endif
