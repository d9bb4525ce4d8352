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
 *
 * No ring is inherited by fork(): its mappings are MADV_DONTFORK and its fd
 * is O_CLOEXEC (and closed by a worker at start).  A child that kept a
 * mapping would keep the whole ring alive after its owner died, with
 * every request in flight: a pending ACCEPT keeps the listener open and a
 * pending RECVMSG keeps a channel from ever reaching EOF.  (Found when a
 * supervisor killed with SIGKILL left its workers running and its port
 * bound.)
 */
#include "uring.h"

#include "internal.h"

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
		if (rc == -EINVAL)
			continue;
		if (rc < 0)
			return rc;
		rc = io_uring_ring_dontfork(ring);
		if (rc < 0) {
			bt__log_errno(BT_LOG_ERROR, rc, "madvise(io_uring ring, MADV_DONTFORK)");
			io_uring_queue_exit(ring);
		}
		return rc;
	}
	return rc;
}
