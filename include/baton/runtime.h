/* SPDX-License-Identifier: MIT */
/*
 * The supervisor: a complete server from a handler (baton/loop.h).
 *
 *   listeners  from --listen (host:port for IPv4, [v6]:port, or a unix
 *              path; repeatable) or from systemd socket activation
 *              (LISTEN_FDS / LISTEN_PID);
 *   workers    one process per online core by default (--workers N),
 *              optionally pinned (--pin); a crashed worker is respawned
 *              with back-off and its unacknowledged connections go to the
 *              others;
 *   signals    SIGTERM/SIGINT: stop accepting, hand over what is held, let
 *              workers finish open connections up to --drain-timeout, exit
 *              0.  SIGUSR1: print the counters (also printed at exit).
 *
 * The process that calls bt_runtime_run is the supervisor and runs the
 * acceptor ring; process titles read "baton: acceptor" and
 * "baton: worker N".  With --mode thread the workers are threads of that
 * process instead (same callbacks, each thread with its own ring; named
 * "baton: worker N"); a crash then ends the whole server, so there is no
 * respawn.  The hybrid: --threads T runs T worker loops (threads named
 * "baton: w P.T", each with its own ring and channel) in each worker
 * process, so P processes x T threads; a crash takes one process's T
 * loops, whose unacknowledged connections are redelivered.  Worker loop
 * i is process i / T, thread i % T, and --pin puts it on CPU i.
 */
#ifndef BATON_RUNTIME_H
#define BATON_RUNTIME_H

#include <stddef.h>

#include <baton/acceptor.h>
#include <baton/loop.h>
#include <baton/queue.h>
#include <baton/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BT_RUNTIME_MAX_LISTEN 16

enum bt_mode {
	BT_MODE_PROCESS = 0, /* workers are processes (fd passing) */
	BT_MODE_THREAD = 1,  /* workers are threads of the acceptor's process */
};

struct bt_runtime_config {
	const char *listen[BT_RUNTIME_MAX_LISTEN]; /* "127.0.0.1:8080", "[::1]:8080", "/run/x.sock" */
	unsigned nlisten;
	unsigned workers;           /* 0: one per online CPU */
	int pin;                    /* pin worker i to CPU i % ncpu */
	int mode;                   /* enum bt_mode */
	unsigned drain_timeout_ms;  /* SIGTERM: workers get this long (default 10000) */
	int backlog;                /* listen(2) backlog (default 4096) */
	struct bt_queue_config queue; /* batch, flush policy, fire-and-forget */
	int dispatch;               /* enum bt_dispatch */
	int backend;                /* enum bt_backend */
	const char *name;           /* program name, for logs ("baton-httpd") */
	int argc;                   /* main's, for process titles (optional) */
	char **argv;
	unsigned threads;           /* process mode: worker threads per worker process
	                             * (--threads; 0 or 1: one) */
};

/* Defaults: no listener (the app adds one), workers = CPUs, no pinning,
 * batch 32 adaptive, rr, drain 10 s. */
BT_API void bt_runtime_config_init(struct bt_runtime_config *cfg, const char *name,
				   int argc, char **argv);

/* One application flag for bt_runtime_parse_args. */
struct bt_flag {
	const char *name;     /* without "--" */
	const char *arg;      /* the value's name in --help, NULL for a switch */
	const char *help;
	/* Take the value (NULL for a switch).  Return 0, or -1 after writing
	 * why into err. */
	int (*set)(void *ctx, const char *value, char *err, size_t errlen);
	void *ctx;
};

/*
 * Parse argv: the application's flags (table ending with a NULL name), then
 * the runtime's own: --listen ADDR (repeatable), --workers N, --batch N,
 * --flush adaptive|size|delay:US, --dispatch rr|least|hash, --mode process,
 * --pin, --drain-timeout MS, --fire-and-forget, --backend auto|io_uring|epoll,
 * --help, --version.  "--flag value" and "--flag=value" both work.
 * Returns 0 to run, 1 when --help or --version was printed (exit 0), or 2
 * after printing a clear error and the usage to stderr (exit 2).
 */
BT_API int bt_runtime_parse_args(struct bt_runtime_config *cfg, int argc, char **argv,
				 const struct bt_flag *app_flags, const char *summary);

/*
 * Run the server until SIGTERM/SIGINT and the drain.  Returns the process
 * exit status: 0 after a clean drain, 1 on a start-up failure (logged with
 * the failing syscall).  In workers it never returns (they exit).
 */
BT_API int bt_runtime_run(const struct bt_runtime_config *cfg, const struct bt_handler *h,
			  void *user);

#ifdef __cplusplus
}
#endif

#endif
