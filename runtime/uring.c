/* SPDX-License-Identifier: MIT */
/*
 * Ring set-up shared by the acceptor and the worker loop.
 *
 * SINGLE_ISSUER|DEFER_TASKRUN (6.1+): completions are processed only when
 * the owner enters the kernel, so a busy loop is not interrupted by task
 * work; else COOP_TASKRUN (5.19+); else no flags.  -EINVAL from the kernel
 * means "flag unknown here": try the next set.  Anything else (EPERM from
 * kernel.io_uring_disabled or seccomp, ENOSYS, ENOMEM from memlock limits)
 * is returned, and the caller falls back to epoll.
 */
#include "uring.h"

#include <errno.h>
#include <string.h>

int bt__uring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries)
{
	static const unsigned flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_COOP_TASKRUN,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
		p.cq_entries = cq_entries;
		rc = io_uring_queue_init_params(entries, ring, &p);
		if (rc != -EINVAL)
			return rc;
	}
	return rc;
}
