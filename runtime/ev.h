/* SPDX-License-Identifier: MIT */
/*
 * The event core: what every loop thread of the runtime (the acceptor, a
 * worker loop) needs from its backend, written once per backend
 * (ev_uring.c, ev_epoll.c) and chosen once (ev.c, one rule for
 * BATON_BACKEND).  Its clients (acceptor_uring.c, acceptor_epoll.c,
 * loop_uring.c, loop_epoll.c) add only their own operations.
 *
 *  - wait: sleep until an event or a deadline, then hand every completion
 *    (io_uring) or readiness (epoll) to the client, run the timers that
 *    are due, and release what was unwatched.  io_uring: one TIMEOUT on
 *    absolute CLOCK_MONOTONIC time, moved with TIMEOUT_UPDATE; every SQE
 *    queued since the last wait goes in the same syscall.
 *  - timers: one min-heap per core (O(log n) start and stop, no scan).
 *  - watches: level-triggered readiness of any fd on either backend.
 *
 * Tags: a completion's user_data (io_uring) or a registration's data
 * (epoll) is a pointer, 8-aligned, with a tag in its low 3 bits.  Tags 1-7
 * are the client's; tag 0 is the core's (its timer, its watches, and 0 for
 * "ignore").
 *
 * Threads: a core is used by the one thread that runs it.
 */
#ifndef BATON_EV_H
#define BATON_EV_H

#include <errno.h>
#include <liburing.h>
#include <stdint.h>

#define BT__EV_TAG_MASK 7ull

/* --- timers ------------------------------------------------------------------ */

struct bt__timer {
	uint64_t due_ns;    /* absolute, CLOCK_MONOTONIC */
	uint64_t period_ns; /* 0: one-shot; else re-armed at due + period */
	uint64_t seq;       /* arming order: equal deadlines fire in it */
	unsigned idx;       /* heap slot + 1; 0: not armed */
	void (*cb)(struct bt__timer *t, void *arg);
	void *arg;
};

struct bt__timers {
	struct bt__timer **h;
	unsigned n, cap;
	uint64_t seq;
};

/* Arm t (re-arming moves it) to fire at due_ns, then every period_ns if
 * non-zero.  0, or -ENOMEM (t is then not armed). */
int bt__timer_start(struct bt__timers *ts, struct bt__timer *t, uint64_t due_ns,
		    uint64_t period_ns);
/* Disarm t; nothing if it is not armed.  Safe in any timer's callback. */
void bt__timer_stop(struct bt__timers *ts, struct bt__timer *t);
static inline int bt__timer_armed(const struct bt__timer *t)
{
	return t->idx != 0;
}
/* The earliest deadline, 0 if none. */
uint64_t bt__timers_next(const struct bt__timers *ts);
/* Fire what is due at now_ns, earliest first (equal: in arming order).  A
 * repeating timer is re-armed before its callback (which may stop it) at
 * its next period after now_ns: late wake-ups skip periods, never drift.
 * Timers armed by these callbacks wait for the next call. */
void bt__timers_run(struct bt__timers *ts, uint64_t now_ns);
void bt__timers_fini(struct bt__timers *ts);

/* --- the core ---------------------------------------------------------------- */

struct bt__ev;

/* Readiness bits of a watch (the values of POLLIN etc.). */
#define BT__EV_IN 0x001u
#define BT__EV_OUT 0x004u
#define BT__EV_ERR 0x008u
#define BT__EV_HUP 0x010u

struct bt__watch {
	int fd;
	uint32_t events; /* BT__EV_IN | BT__EV_OUT */
	/* Ready: revents holds BT__EV_* (ERR and HUP whatever was asked). */
	void (*cb)(struct bt__watch *w, uint32_t revents);
	/* Optional: the core holds w no longer (after bt__ev_unwatch, or at
	 * bt__ev_destroy): it may be freed. */
	void (*gone)(struct bt__watch *w);
	/* the core's */
	struct bt__ev *ev;
	struct bt__watch *next; /* on the core's list of watches */
	uint8_t inflight;       /* io_uring: a POLL_ADD names it */
	uint8_t dead;           /* unwatched: gone() is due */
};

struct bt__ev_client {
	/* io_uring: a completion whose user_data carries a client tag. */
	void (*on_cqe)(void *ctx, uint64_t data, const struct io_uring_cqe *cqe);
	/* epoll: readiness of a registration whose data carries a client tag. */
	void (*on_event)(void *ctx, uint64_t data, uint32_t events);
	/* Optional, io_uring only: the kernel can run this client (probe it
	 * on the new ring); an error falls back to epoll. */
	int (*uring_usable)(void *ctx, struct io_uring *ring);
	/* Optional: the wait returned, before anything is handled. */
	void (*on_wake)(void *ctx);
	void *ctx;
};

struct bt__ev {
	int kind;         /* BT_BACKEND_URING or BT_BACKEND_EPOLL */
	const char *name; /* "io_uring" or "epoll" */
	char who[32];     /* "acceptor", "worker 3": log lines */
	struct bt__ev_client cl;
	struct bt__timers timers;
	uint64_t now_ns;  /* at the last wake-up */
	struct bt__watch *watches;
	unsigned ndead;   /* watches whose gone() is due */
	/* io_uring */
	struct io_uring ring;
	struct __kernel_timespec ts, uts;
	uint64_t armed_deadline; /* the one TIMEOUT in flight, absolute */
	int timer_armed;
	uint64_t install_tok; /* its address: the user_data of bt__ev_install */
	unsigned nfiles;      /* slots of the registered file table, 0: none */
	/* epoll */
	int epfd;
};

/* BATON_BACKEND=epoll|io_uring (or uring) overrides BT_BACKEND_AUTO; any
 * other value is warned about once per call and ignored. */
int bt__ev_backend_choice(int want);

/* Open a core: io_uring (sq and cq entries) unless want is
 * BT_BACKEND_EPOLL; if that fails, epoll with a warning naming who, unless
 * want is BT_BACKEND_URING (then the error).  0 or -errno. */
int bt__ev_open(struct bt__ev **out, int want, unsigned entries, unsigned cq_entries,
		const struct bt__ev_client *cl, const char *who);
/* Close it: every watch's gone() runs, timers are forgotten. */
void bt__ev_destroy(struct bt__ev *ev);

/* Wait until an event, the earliest timer or deadline_ns (0: none;
 * nowait: do not sleep at all), then handle what is ready and fire the
 * timers due.  0, or -errno from the wait (logged). */
int bt__ev_wait(struct bt__ev *ev, uint64_t deadline_ns, int nowait);

/* Watch w->fd (level-triggered on both backends).  0 or -errno. */
int bt__ev_watch(struct bt__ev *ev, struct bt__watch *w);
/* A program's watch request (bt_loop_watch_fd, bt_runtime_watch_fd):
 * events only BT_WATCH_IN/OUT; a regular file or a directory is always
 * ready, which epoll refuses (-EPERM), and so is it refused on io_uring,
 * for one behaviour.  0, -EINVAL, -EPERM or fstat's -errno. */
int bt__ev_user_check(int fd, unsigned events);
/* Such a watch: checked, then `size` zeroed bytes that begin with its
 * struct bt__watch, armed with cb, and freed by the core once unwatched.
 * The caller fills the rest before its next wait.  NULL with *rc. */
void *bt__ev_user_watch(struct bt__ev *ev, size_t size, int fd, unsigned events,
			void (*cb)(struct bt__watch *w, uint32_t revents), int *rc);
/* Stop watching: no callback after this returns; gone() follows at the
 * end of the wake-up in progress or the next one (or at bt__ev_destroy). */
void bt__ev_unwatch(struct bt__ev *ev, struct bt__watch *w);

/* io_uring: an SQE, submitting what is queued first if the SQ is full. */
static inline struct io_uring_sqe *bt__ev_sqe(struct bt__ev *ev)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ev->ring);
	if (!sqe) {
		io_uring_submit(&ev->ring);
		sqe = io_uring_get_sqe(&ev->ring);
	}
	return sqe;
}

/* --- direct descriptors (io_uring fixed files) ------------------------------
 *
 * A direct descriptor is a slot of one ring's registered file table: no
 * entry in the process's descriptor table, no reference taken per
 * operation.  The acceptor accepts into its table and passes each
 * connection to a worker thread's ring with IORING_OP_MSG_RING
 * (IORING_MSG_SEND_FD), which installs it in that ring's table and posts
 * the worker a completion.  Kernel: MSG_RING's SEND_FD came in 6.0,
 * IORING_OP_FIXED_FD_INSTALL (a regular descriptor for a slot, for
 * bt_conn_fd) in 6.8; the runtime uses direct descriptors only where the
 * probe finds both.  liburing 2.3 has no helper for the second, nor for
 * MSG_RING's SEND_FD: the SQEs are filled as the kernel's uapi header
 * documents. */
#define BT__IORING_OP_FIXED_FD_INSTALL 54 /* enum io_uring_op, 6.8 */
#define BT__DIRECT_MAX_FILES (1u << 18)   /* slots per table, at most */

/* Can this kernel pass and install direct descriptors?  0, or -ENOSYS
 * (or the probe's -errno). */
int bt__ev_direct_usable(struct bt__ev *ev);
/* Register a sparse table of n slots on the ring (n at most
 * RLIMIT_NOFILE).  0 or -errno. */
int bt__ev_files(struct bt__ev *ev, unsigned n);
/* The table size to ask for: RLIMIT_NOFILE's soft limit, at most
 * BT__DIRECT_MAX_FILES. */
unsigned bt__ev_files_wanted(void);
/* A regular descriptor (O_CLOEXEC) for slot `index`, installed now: one
 * io_uring_enter, which also submits what is queued.  Callable from a
 * completion's handler.  The new fd, or -errno (logged). */
int bt__ev_install(struct bt__ev *ev, int index);

/* MSG_RING: pass slot src of this ring to the ring ring_fd, in a slot the
 * kernel picks; the target gets a completion with user_data target_data
 * and res the slot (or nothing if it fails: this ring's completion says
 * why). */
static inline void bt__ev_prep_send_fd(struct io_uring_sqe *sqe, int ring_fd, int src,
				       uint64_t target_data)
{
	io_uring_prep_rw(IORING_OP_MSG_RING, sqe, ring_fd, (void *)(uintptr_t)IORING_MSG_SEND_FD, 0,
			 target_data);
	sqe->addr3 = (uint64_t)(unsigned)src;
	sqe->file_index = IORING_FILE_INDEX_ALLOC;
}

/* MSG_RING: a completion (user_data target_data, res) on the ring ring_fd. */
static inline void bt__ev_prep_msg_data(struct io_uring_sqe *sqe, int ring_fd,
					uint64_t target_data, int res)
{
	io_uring_prep_rw(IORING_OP_MSG_RING, sqe, ring_fd, (void *)(uintptr_t)IORING_MSG_DATA,
			 (unsigned)res, target_data);
}

/* Room for n SQEs in a row (a linked chain must go in one submission):
 * what is queued is submitted first if there is not.  0 or -EBUSY. */
static inline int bt__ev_room(struct bt__ev *ev, unsigned n)
{
	if (io_uring_sq_space_left(&ev->ring) < n)
		io_uring_submit(&ev->ring);
	return io_uring_sq_space_left(&ev->ring) < n ? -EBUSY : 0;
}

/* The backends (ev_uring.c, ev_epoll.c), for ev.c. */
int bt__ev_uring_init(struct bt__ev *ev, unsigned entries, unsigned cq_entries);
void bt__ev_uring_fini(struct bt__ev *ev);
int bt__ev_uring_wait(struct bt__ev *ev, uint64_t deadline_ns, int nowait);
int bt__ev_uring_watch(struct bt__ev *ev, struct bt__watch *w);
void bt__ev_uring_unwatch(struct bt__ev *ev, struct bt__watch *w);
int bt__ev_epoll_init(struct bt__ev *ev);
void bt__ev_epoll_fini(struct bt__ev *ev);
int bt__ev_epoll_wait(struct bt__ev *ev, uint64_t deadline_ns, int nowait);
int bt__ev_epoll_watch(struct bt__ev *ev, struct bt__watch *w);
void bt__ev_epoll_unwatch(struct bt__ev *ev, struct bt__watch *w);
/* After the events of a wake-up: fire timers, release unwatched watches. */
void bt__ev_after(struct bt__ev *ev);

#endif
