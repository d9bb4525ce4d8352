/* SPDX-License-Identifier: MIT */
/* The worker loop's state, shared by loop.c and its backends (loop_uring.c,
 * loop_epoll.c).  Not part of the public API. */
#ifndef BATON_LOOP_INTERNAL_H
#define BATON_LOOP_INTERNAL_H

#include <baton/loop.h>

#include "ev.h"
#include "internal.h"

#include <stdint.h>
#include <sys/socket.h>

/* Connection states, in order. */
enum conn_state {
	CONN_OPEN = 0,    /* reading and writing */
	CONN_CLOSING = 1, /* close asked: sending what is queued, then finish */
	CONN_DONE = 2,    /* fd shut and being closed; on_close has run */
};

/*
 * One piece of a connection's output queue: bytes (MEM: data[off..len) is
 * unsent; a send in flight reads it, so a segment is never reallocated and
 * writes only append after len), or a range of a file (FILE: len bytes from
 * foff, read chunk by chunk into MEM segments inserted before it).
 */
struct bt_outseg {
	struct bt_outseg *next;
	size_t len, off, cap; /* FILE: len = bytes of the range left; cap 0 */
	int fd;               /* FILE: owned; MEM: -1 */
	uint64_t foff;
	char data[];
};

/* A file chunk being read (inline, or on the thread pool). */
struct bt_fread;

struct bt_conn {
	bt_loop_t *loop;
	int fd;
	uint8_t state;
	uint8_t reading;   /* a receive is armed (io_uring) / input is wanted
			      (epoll: until the peer's EOF) */
	uint8_t writing;   /* a send is in flight (io_uring) */
	uint8_t closing_op; /* shutdown/close in flight */
	uint8_t drained;   /* on_drain was called */
	uint8_t fd_open;   /* fd not yet closed */
	uint8_t paused;    /* reading paused: output above the high-water mark */
	uint8_t want_writable; /* a write returned 1: on_writable is due */
	uint8_t pollout;   /* epoll: EPOLLOUT is wanted (a send blocked) */
	uint8_t registered; /* epoll: the fd is in the epoll set */
	uint8_t close_queued; /* on the loop's close queue: on_close is due */
	uint8_t handing;   /* moving to the next generation (loop_handover.c):
			      reading stopped, its receive being cancelled */
	uint8_t resumed;   /* came from the previous generation */
	uint8_t hidden;    /* its PROXY header is being read (conn_proxy.c):
			      the handler has not seen it, no on_close */
	uint8_t proxied;   /* peer is the client's address from that header */
	struct bt__pxin *pxin; /* that header's bytes so far */
	uint8_t direct;    /* fd is a slot of the loop's ring's file table (a
			      direct descriptor, ev.h); xfd: a regular
			      descriptor installed for it (bt__conn_sysfd), or -1 */
	int xfd;
	int close_reason;
	int abort_reason;  /* CLOSING towards an abort (a file range failed) */
	unsigned ops;      /* operations in flight that name this conn (sends,
			      receives, file reads) */
	uint64_t id;
	uint64_t accept_ns;
	struct bt__timer tmo; /* bt_conn_set_timeout */
	uint64_t tmo_due;     /* its deadline: tmo may be armed earlier (a
				 deadline moved later is not re-heaped; the
				 timer re-arms itself when it fires) */
	void *data;
	/* Output, in order; out_bytes counts what is unsent, file ranges
	 * included.  spare: one small emptied segment kept for the next
	 * reply. */
	struct bt_outseg *oq, *oq_tail, *spare;
	size_t out_bytes;
	struct bt_fread *fread; /* the file chunk being read, if any */
	/* Input that arrived while reading was paused (a receive already in
	 * flight), delivered when it resumes. */
	char *held;
	size_t held_len;
	/* Handing over: what the handler had read and not consumed. */
	char *carry;
	size_t carry_len;
	uint8_t flush_queued;
	struct bt_conn *flush_next;
	struct bt_conn *zombie_next;
	struct bt_conn *close_next;
	struct bt_conn *retry_next; /* waiting to submit a file read */
	socklen_t peer_len;
	struct sockaddr_storage *peer; /* only if the acceptor sent one */
	struct bt_conn *prev, *next;   /* all connections of the loop */
};

struct loop_ops {
	const char *name;
	int (*init)(bt_loop_t *loop);
	void (*fini)(bt_loop_t *loop);
	/* Before each wait (may be NULL). */
	void (*prepare)(bt_loop_t *loop);
	/* Wait on an inlet's channel or wake-up fd too (each inlet, the
	 * first right after init).  0 or -errno. */
	int (*inlet_add)(bt_loop_t *loop, bt_queue_inlet_t *in);
	/* Begin receiving on a new connection. */
	int (*conn_start)(bt_loop_t *loop, bt_conn_t *c);
	/* Queued output was added: send it if no send is in flight. */
	void (*conn_flush)(bt_loop_t *loop, bt_conn_t *c);
	/* Shut the socket and close it; free c when nothing refers to it. */
	void (*conn_finish)(bt_loop_t *loop, bt_conn_t *c, int abort);
	/* Stop every operation on c without touching the socket (a handover:
	 * the fd goes to the next generation); c->reading clears when the
	 * receive in flight has completed. */
	void (*conn_detach)(bt_loop_t *loop, bt_conn_t *c);
	/* Reading was paused (c->paused set) or resumed (cleared): stop or
	 * start receiving.  An io_uring receive in flight may still complete:
	 * its bytes go through bt__conn_input, which holds them. */
	void (*conn_pause)(bt_loop_t *loop, bt_conn_t *c);
};

extern const struct loop_ops bt__loop_uring_ops;
extern const struct loop_ops bt__loop_epoll_ops;

/* The event core's hooks: the ring was made (set up the receive buffers);
 * a completion (io_uring) or readiness (epoll) for the loop. */
int bt__loop_uring_setup(void *ctx, struct io_uring *ring);
void bt__loop_uring_cqe(void *ctx, uint64_t data, const struct io_uring_cqe *cqe);
void bt__loop_epoll_event(void *ctx, uint64_t data, uint32_t events);

/* How batches reach a loop and how it acknowledges them (loop_inlet.c).
 * Every call names the inlet: a loop may have several (one per acceptor
 * ring: bt_loop_add_inlet). */
struct bt__inlet_ops {
	const char *kind; /* "thread", "forked", "attached" */
	/* The loop that takes the inlet is made. */
	int (*init)(bt_loop_t *loop, bt_queue_inlet_t *in);
	/* Before the channel closes: what is still owed. */
	void (*leave)(bt_loop_t *loop, bt_queue_inlet_t *in);
	/* Each wake-up, and each tick (heartbeat, retries). */
	void (*woke)(bt_loop_t *loop, bt_queue_inlet_t *in);
	void (*tick)(bt_loop_t *loop, bt_queue_inlet_t *in);
	/* A batch arrived on the channel: acknowledge it (first). */
	void (*ack)(bt_loop_t *loop, bt_queue_inlet_t *in, const struct bt_wire_batch *b);
	/* Publish loop->nconns for the least-loaded dispatch. */
	void (*load)(bt_loop_t *loop, bt_queue_inlet_t *in);
	/* Items wait in a ring (consume them before sleeping). */
	int (*ready)(bt_loop_t *loop, bt_queue_inlet_t *in);
	/* Something is still to say (a later tick must come, even with no
	 * connection open). */
	int (*owed)(bt_loop_t *loop, bt_queue_inlet_t *in);
};

/* The public inlet handle (baton/queue.h). */
struct bt_queue_inlet {
	const struct bt__inlet_ops *ops;
	bt_fdpass_t *ch;     /* forked, attached: batches arrive here (owned) */
	bt_queue_shm_t *shm; /* forked: acknowledgements go to its slot */
	unsigned slot;
	bt_queue_t *q;       /* thread: the ring's consumer side (not owned) */
	/* attached: the ACK not yet sent (a full channel), cumulative, and
	 * what the last one said (a heartbeat repeats it: see wire_tick). */
	struct bt_wire_ack *ack;
	int ack_due;
	uint64_t fds_total;
	uint64_t ack_sent_ns;
	uint32_t load_sent;
	/* The loop's view: the channel's receive is armed (io_uring); it
	 * reached EOF; its producer is done (DRAIN, or EOF). */
	uint8_t armed;
	uint8_t eof;
	uint8_t done;
};

/* A loop's inlets at most (acceptor rings feeding it). */
#define BT__MAX_INLETS 16

struct bt_loop {
	/* Where batches come from: inlet[0] is the config's, the others
	 * bt_loop_add_inlet's.  The loop drains once every one is done (its
	 * producer said DRAIN or went away), or when asked (bt_loop_drain). */
	bt_queue_inlet_t *inlet[BT__MAX_INLETS];
	unsigned ninlets, ndone;
	struct bt_loop_config cfg;
	struct bt_handler handler; /* the caller's, taken by size (docs/abi.md) */
	const struct bt_handler *h; /* &handler */
	const struct loop_ops *ops;
	struct bt__ev *ev; /* the event core: wait, timers, watches */
	void *backend;     /* the backend's own state */
	struct bt__timer tick; /* 100 ms while connections are open or a
				  drain runs: heartbeat, drain deadline, retries */
	struct bt_timer *timers; /* the application's (loop_user.c) */

	struct bt_conn *conns;   /* list head */
	struct bt_conn *flushq;  /* connections with output to start sending */
	struct bt_conn *zombies; /* finished, freed at the end of the wake-up */
	struct bt_conn *closeq, *closeq_tail; /* finished, on_close not yet run */
	struct bt_conn *retryq;  /* file reads the pool refused (full): retried each tick */
	unsigned nconns;
	int draining;
	uint64_t drain_deadline_ns;
	int stopping;  /* run() returns when nothing is left */
	int channel_eof; /* every inlet's channel ended */
	int drain_asked; /* a DRAIN came on an inlet */
	int started;
	struct bt_loop_stats st;
	uint64_t now_ns; /* refreshed once per wake-up */
	bt_pool_sink_t *sink; /* completions of offloaded jobs */
	/* A reload (loop_handover.c): the channel to the next generation,
	 * and whether the drain hands connections over on it. */
	bt_fdpass_t *ho;
	int handing_over;
	unsigned nhanding;
	uint64_t handed, carried; /* connections and bytes handed over */
	unsigned closed_at_deadline;
	/* Metrics (metrics.c): the slot this loop writes, the supervisor's
	 * shared one under bt_runtime_run, else ms_own. */
	struct bt__mslot *ms;
	struct bt__mslot ms_own;
};

/* The connection's descriptor for a syscall: fd, or for a direct one a
 * regular descriptor installed at the first call and kept until the end.
 * The fd or -errno. */
/* conn_proxy.c: read c's PROXY header first (0 or -errno); its input
 * while hidden; refuse it (why: -EPROTO, -EMSGSIZE, or 0 for an EOF
 * inside the header), closed and counted. */
int bt__conn_proxy_begin(bt_conn_t *c);
void bt__conn_proxy_input(bt_conn_t *c, const void *data, size_t len);
void bt__conn_proxy_refused(bt_conn_t *c, int why);
/* loop.c: c's header is read: the handler sees it now, then rest. */
void bt__loop_conn_reveal(bt_loop_t *loop, bt_conn_t *c, const void *rest, size_t len);

int bt__conn_sysfd(bt_conn_t *c);
/* Close slot of the loop's file table (io_uring: queued on its ring). */
void bt__loop_uring_close_slot(bt_loop_t *loop, int slot);
/* A direct item for a program's on_item: a regular descriptor in its
 * place (the slot closed).  0 or -errno (the item is then closed). */
int bt__loop_item_to_regular(bt_loop_t *loop, struct bt_wire_item *it);

/* Reading resumes (c->paused cleared): held input to on_data, then the
 * receive re-armed. */
void bt__conn_resume(bt_conn_t *c);

/* loop_handover.c: a channel to the next generation arrived (an item
 * BT_WIRE_ITEM_HANDOVER; the loop owns fd); the drain began; each tick. */
void bt__loop_handover_channel(bt_loop_t *loop, int fd);
int bt__loop_handover_begin(bt_loop_t *loop);
void bt__loop_handover_tick(bt_loop_t *loop);

uint64_t bt__now_ns(void);

/* Handle one received channel message (after bt_fdpass_rx_complete
 * returned rc).  Returns 0 to go on receiving, or 1 when the channel is
 * finished (EOF or error). */
int bt__loop_on_channel(bt_loop_t *loop, bt_queue_inlet_t *in, int rc, struct bt_wire_msg *msg);


/* Thread mode: take what inlet in's queue holds, open those connections,
 * notice a drain request (in NULL: every inlet's). */
void bt__loop_consume(bt_loop_t *loop, bt_queue_inlet_t *in);


/* Tell the acceptor how many connections the loop holds. */
void bt__loop_publish_load(bt_loop_t *loop);

/* Once per wake-up, after the events: timers, drain progress.  Returns 1
 * when the loop should return from run(). */
int bt__loop_tick(bt_loop_t *loop);

/* The connection's I/O ended (EOF 0, or -errno): close it. */
void bt__conn_ended(bt_conn_t *c, int reason);

/* Bytes received: to on_data, or held while reading is paused. */
void bt__conn_input(bt_conn_t *c, const void *data, size_t len);

/* The next bytes to send: *len (at most BT__SEND_MAX) from the returned
 * pointer, with *flags (MSG_MORE when more output follows at once, or when
 * it is the last of a closing connection: see below).  NULL when nothing
 * is ready (empty, or waiting for a file chunk). */
#define BT__SEND_MAX ((size_t)1 << 20)
const char *bt__conn_next_send(bt_conn_t *c, size_t *len, int *flags);

/* A send completed: consume n bytes (n > 0), continue closing if asked,
 * call on_writable and resume reading when the output has drained. */
void bt__conn_sent(bt_conn_t *c, size_t n);

/* A new connection (from a batch): linked, counted; NULL if out of memory
 * (then the fd is closed). */
bt_conn_t *bt__conn_new(bt_loop_t *loop, const struct bt_wire_item *it);

/* Finish now: state DONE, the backend closes the fd, on_close queued. */
void bt__conn_finish(bt_conn_t *c, int reason, int abort);

/* Run the on_close calls due (the close queue), then free what is done. */
void bt__loop_run_closes(bt_loop_t *loop);
void bt__loop_free_zombies(bt_loop_t *loop);

/* Retry file reads that the pool refused. */
void bt__loop_retry_reads(bt_loop_t *loop);

/* A file chunk being read for c (conn_file.c). */
struct bt_fread {
	bt_conn_t *c;
	struct bt_outseg *buf; /* the MEM segment being filled */
	int fd;
	int own_fd; /* the FILE segment went away (abort): close fd when done */
	uint64_t off;
	size_t want;
	ssize_t got; /* bytes read, or -errno */
};

/* The output queue's parts that conn_file.c shares with conn.c: a MEM
 * segment with room for need bytes (the spare one if it fits; NULL if out
 * of memory); free a segment (closing a FILE segment's fd); queue c for
 * this wake-up's sends; read the next file chunk when one is due. */
struct bt_outseg *bt__conn_mem_seg(bt_conn_t *c, size_t need);
void bt__conn_seg_free(struct bt_outseg *s);
void bt__conn_queue_flush(bt_conn_t *c);
void bt__conn_file_fill(bt_conn_t *c);


/* Called by the backend when an operation of c completed: a DONE conn
 * with nothing in flight is unlinked now and freed at the end of the
 * wake-up (iterations in progress may still hold it). */
void bt__conn_maybe_free(bt_conn_t *c);

/* Free the application's timers (at bt_loop_destroy; its watches go with
 * the event core). */
void bt__loop_users_fini(bt_loop_t *loop);

/* Start the sends queued during this wake-up (one send per connection
 * for everything its callbacks wrote). */
void bt__loop_flush(bt_loop_t *loop);

#endif
