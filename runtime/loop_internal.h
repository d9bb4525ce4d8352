/* SPDX-License-Identifier: MIT */
/* The worker loop's state, shared by loop.c and its backends (loop_uring.c,
 * loop_epoll.c).  Not part of the public API. */
#ifndef BATON_LOOP_INTERNAL_H
#define BATON_LOOP_INTERNAL_H

#include <baton/loop.h>

#include <stdint.h>
#include <sys/socket.h>

/* Connection states, in order. */
enum conn_state {
	CONN_OPEN = 0,    /* reading and writing */
	CONN_CLOSING = 1, /* close asked: sending what is queued, then finish */
	CONN_DONE = 2,    /* fd shut and being closed; on_close has run */
};

struct bt_conn {
	bt_loop_t *loop;
	int fd;
	uint8_t state;
	uint8_t reading;   /* a receive is armed (io_uring) / registered (epoll) */
	uint8_t writing;   /* a send is in flight (io_uring) */
	uint8_t closing_op; /* shutdown/close in flight */
	uint8_t drained;   /* on_drain was called */
	uint8_t fd_open;   /* fd not yet closed */
	int close_reason;
	unsigned ops;      /* operations in flight that name this conn */
	uint64_t id;
	uint64_t accept_ns;
	uint64_t deadline_ns; /* 0: no timer */
	void *data;
	/* Output: out[off..olen) is being sent (a send in flight points into
	 * it, so it is never reallocated then); pend[0..plen) waits for it. */
	char *out, *pend;
	size_t off, olen, ocap, plen, pcap;
	uint8_t flush_queued;
	struct bt_conn *flush_next;
	struct bt_conn *zombie_next;
	socklen_t peer_len;
	struct sockaddr_storage *peer; /* only if the acceptor sent one */
	struct bt_conn *prev, *next;   /* all connections of the loop */
};

struct loop_ops {
	const char *name;
	int (*init)(bt_loop_t *loop);
	void (*fini)(bt_loop_t *loop);
	int (*run)(bt_loop_t *loop);
	/* Begin receiving on a new connection. */
	int (*conn_start)(bt_loop_t *loop, bt_conn_t *c);
	/* Queued output was added: send it if no send is in flight. */
	void (*conn_flush)(bt_loop_t *loop, bt_conn_t *c);
	/* Shut the socket and close it; free c when nothing refers to it. */
	void (*conn_finish)(bt_loop_t *loop, bt_conn_t *c, int abort);
};

extern const struct loop_ops bt__loop_uring_ops;
extern const struct loop_ops bt__loop_epoll_ops;

struct bt_loop {
	struct bt_loop_config cfg;
	struct bt_handler handler; /* the caller's, taken by size (docs/abi.md) */
	const struct bt_handler *h; /* &handler */
	const struct loop_ops *ops;
	void *backend; /* the backend's own state */

	struct bt_conn *conns;   /* list head */
	struct bt_conn *flushq;  /* connections with output to start sending */
	struct bt_conn *zombies; /* finished, freed at the end of the wake-up */
	unsigned nconns;
	int draining;
	uint64_t drain_deadline_ns;
	int stopping;  /* run() returns when nothing is left */
	int channel_eof;
	int started;
	struct bt_loop_stats st;
	uint64_t now_ns; /* refreshed once per wake-up */
	uint64_t last_scan_ns;
	bt_pool_sink_t *sink; /* completions of offloaded jobs */
};

uint64_t bt__now_ns(void);

/* Handle one received channel message (after bt_fdpass_rx_complete
 * returned rc).  Returns 0 to go on receiving, or 1 when the channel is
 * finished (EOF or error). */
int bt__loop_on_channel(bt_loop_t *loop, int rc, struct bt_wire_msg *msg);

/* The process's job pool, created at first use. */
bt_pool_t *bt__pool_global(void);

/* Thread mode: take what the queue holds, open those connections, notice
 * a drain request. */
void bt__loop_consume(bt_loop_t *loop);

/* Once per wake-up, after the events: timers, drain progress.  Returns 1
 * when the loop should return from run(). */
int bt__loop_tick(bt_loop_t *loop);

/* The connection's I/O ended (EOF 0, or -errno): close it. */
void bt__conn_ended(bt_conn_t *c, int reason);

/* A send completed: consume n bytes (n > 0), continue closing if asked. */
void bt__conn_sent(bt_conn_t *c, size_t n);


/* Called by the backend when an operation of c completed: a DONE conn
 * with nothing in flight is unlinked now and freed at the end of the
 * wake-up (iterations in progress may still hold it). */
void bt__conn_maybe_free(bt_conn_t *c);

/*
 * Flags for a send: MSG_MORE when it carries the last bytes of a
 * connection that is closing.  The data then waits in the socket for the
 * shutdown(SHUT_WR) that follows the send's completion, and goes out in
 * one segment with the FIN: one packet (and one trip through the
 * receiving side's stack) fewer per connection than data, then FIN.
 */
static inline int bt__conn_last_send_flags(const bt_conn_t *c)
{
	return c->state == CONN_CLOSING && c->plen == 0 ? MSG_MORE : 0;
}

/* Start the sends queued during this wake-up (one send per connection
 * for everything its callbacks wrote). */
void bt__loop_flush(bt_loop_t *loop);

#endif
