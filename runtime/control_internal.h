/* SPDX-License-Identifier: MIT */
/*
 * The control plane's two sides (docs/control.md):
 *
 *   control_sup.c  in the supervisor: the calls run on the acceptor's
 *                  loop (status, set, workers, reload...), the control
 *                  process started and ended;
 *   control.c      the control process: the control socket, the metrics
 *                  listener, their clients, the formatting.
 *
 * They talk over a unix stream socket pair, in frames: a 4-byte length (of
 * what follows the type), a type byte, then
 *   'Q' (to the supervisor): a 4-byte seq, argc, then argc NUL-terminated
 *       words;
 *   'A' (the answer): the call's seq, a 4-byte code (C_*), a 256-byte
 *       message, then a snapshot (struct bt__snap and its workers) or
 *       nothing;
 *   'E' (an event, any time): a kind byte ('H' the listeners went to the
 *       next generation, 'R' a reload's outcome), a 4-byte ok, a 256-byte
 *       message.
 * The control process is forked from the supervisor before any worker, so
 * a snapshot's pointers to static strings are valid on both sides.
 */
#ifndef BATON_CONTROL_INTERNAL_H
#define BATON_CONTROL_INTERNAL_H

#include "supervisor.h"

#include <stdint.h>
#include <sys/types.h>

#define CTL_MAX_CLIENTS 32 /* 16 of each kind */
#define CTL_MSG 256
#define CTL_MAX_ARGS 8

enum { C_OK = 0, C_REFUSED = 1, C_USAGE = 2, C_PENDING = 3 };

/* A call to the supervisor: its words in, its answer out. */
struct call {
	const char *argv[CTL_MAX_ARGS];
	int argc;
	struct bt__snap *snap; /* out, malloc'd (op snap) */
	char msg[CTL_MSG];     /* out */
	int rc;                /* out: C_* */
};

struct client;

struct bt__ctl {
	struct bt_runtime *s;
	pid_t pid;       /* the control process, 0: none (any more) */
	int sock;        /* this side's end of the pair */
	int lfd, mfd;    /* the control socket, --metrics' listener (-1: none) */
	char name[110];  /* the control socket, as given ("" none) */
	int kept;        /* the next generation has the path: no unlink */
	int from_prev;   /* the previous generation's listener: ours to unlink
			  * only once we have served (s->ready) */
	/* The supervisor's side. */
	bt_runtime_watch_t *watch;
	unsigned char rx[16384];
	size_t rxlen;
	/* The control process's side. */
	struct client *cl; /* CTL_MAX_CLIENTS */
	unsigned char *in; /* frames from the supervisor, being read */
	size_t inlen, incap;
	uint64_t reload_deadline_ns; /* clients wait for a reload's outcome */
	uint64_t stats_due_ns;       /* on_stats's next call, 0: none */
	uint32_t seq;                /* the last call's */
};

/* control_sup.c: run one call (the supervisor's thread). */
void bt__ctl_run_call(struct bt_runtime *s, struct call *k);
/* control.c: the control process's life; never returns. */
void bt__ctl_main(struct bt__ctl *c) __attribute__((noreturn));
/* Write all of buf to a socket that may be non-blocking, waiting for
 * room up to ms in all: 0 or -errno. */
int bt__ctl_write(int fd, const void *buf, size_t len, int ms);

#endif
