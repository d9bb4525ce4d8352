/* SPDX-License-Identifier: MIT */
/* io_uring helpers shared by the acceptor and the worker loop (uring.c). */
#ifndef BATON_URING_H
#define BATON_URING_H

#include <liburing.h>

/* io_uring_queue_init with the best flags this kernel takes. */
int bt__uring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries);

/* An SQE, submitting what is queued first if the SQ is full. */
static inline struct io_uring_sqe *bt__uring_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	if (!sqe) {
		io_uring_submit(ring);
		sqe = io_uring_get_sqe(ring);
	}
	return sqe;
}

#endif
