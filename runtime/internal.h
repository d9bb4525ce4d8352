/* SPDX-License-Identifier: MIT */
/* Helpers shared by the runtime's files; not part of the public API. */
#ifndef BATON_INTERNAL_H
#define BATON_INTERNAL_H

#include <baton/log.h>

#include <stdint.h>

#define BT__PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Log one line at level (see baton/log.h). */
void bt__log(int level, const char *fmt, ...) BT__PRINTF(2, 3);

/* Log "what: strerror(-err)" at level; returns err unchanged. */
int bt__log_errno(int level, int err, const char *fmt, ...) BT__PRINTF(3, 4);

/* close(2) that keeps errno and ignores EINTR (Linux always frees the fd). */
void bt__close(int fd);

/* CLOCK_MONOTONIC nanoseconds. */
uint64_t bt__now_ns(void);

struct bt_queue;
/* The queue's flush policy and delay, for the acceptor's scheduling. */
int bt__queue_flush_policy(const struct bt_queue *q);
uint64_t bt__queue_delay_ns(const struct bt_queue *q);
/* Close the producer's acknowledged copies with fn instead of close(2)
 * (the io_uring acceptor batches them into its ring). */
void bt__queue_set_closer(struct bt_queue *q, void (*fn)(void *ctx, int fd), void *ctx);

/* Register the pool's fork handler (once); end the process's job pool. */
void bt__pool_atfork_register(void);
void bt__pool_shutdown_global(void);

#endif
