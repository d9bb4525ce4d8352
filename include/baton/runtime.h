/* SPDX-License-Identifier: MIT */
/*
 * The supervisor: a complete server from a handler (baton/loop.h).
 *
 *   listeners  from --listen (host:port for IPv4, [v6]:port, or a unix
 *              path; repeatable), or from systemd socket activation
 *              (LISTEN_FDS / LISTEN_PID), or the program's default_listen.
 *              --listen together with socket activation is refused (exit
 *              2): the .socket unit owns the addresses;
 *   workers    one process per online core by default (--workers N),
 *              optionally pinned (--pin); a crashed worker is respawned
 *              with back-off and its unacknowledged connections go to the
 *              others;
 *   signals    SIGTERM/SIGINT: stop accepting, hand over what is held, let
 *              workers finish open connections up to --drain-timeout, exit
 *              0 (after --grace, if set: see grace_ms below).  SIGUSR1: print the counters (also printed at exit).
 *              SIGHUP: reload (docs/reload.md): the program starts
 *              again from its path on disk, takes the listeners over,
 *              and the old generation finishes; the main pid stays;
 *   systemd    with NOTIFY_SOCKET set: READY=1 once listening with every
 *              worker started, STATUS= lines, STOPPING=1 when the drain
 *              starts (sd_notify's datagram protocol, no libsystemd).
 *              With JOURNAL_STREAM naming stderr, log lines carry <N>
 *              priority prefixes (baton/log.h).
 *
 * The process that calls bt_runtime_run becomes the master ("NAME:
 * master"), which holds the main pid across reloads, and its child, the
 * supervisor, runs the acceptor ring.  (A program with a producer, one run
 * with --worker-of, or one that never gave its argv to
 * bt_runtime_parse_args or bt_runtime_take_argv has no master: there the
 * calling process is the supervisor.)  Every process keeps the program's name as its comm (so
 * `pgrep -x NAME` finds them all); the command line ps shows becomes
 * "NAME: acceptor" and "NAME: worker N", NAME being cfg->name (default
 * argv[0]'s basename).  With --mode thread the workers are threads of that
 * process instead (same callbacks, each thread with its own ring; thread
 * names "worker N"); a crash then ends the whole server, so there is no
 * respawn.  The hybrid: --threads T runs T worker loops (threads named
 * "worker P.T", each with its own ring and channel) in each worker
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
#define BT_RUNTIME_MAX_INHERIT 16
#define BT_RUNTIME_MAX_ATTACH_UIDS 8
#define BT_RUNTIME_MAX_ATTACHED 64
/* --acceptors at most. */
#define BT_RUNTIME_MAX_ACCEPTORS 16
/* workers: none of the server's own (--workers 0), with attach: only
 * attached workers serve. */
#define BT_RUNTIME_WORKERS_NONE 0xffffffffu

/* The running supervisor, as the producer's callbacks see it. */
typedef struct bt_runtime bt_runtime_t;
struct bt_producer;

enum bt_mode {
	BT_MODE_PROCESS = 0, /* workers are processes (fd passing) */
	BT_MODE_THREAD = 1,  /* workers are threads of the acceptor's process */
};

struct bt_runtime_config {
	size_t size;                /* sizeof(struct bt_runtime_config): set by
				     * bt_runtime_config_init (docs/abi.md) */
	const char *listen[BT_RUNTIME_MAX_LISTEN]; /* "127.0.0.1:8080", "[::1]:8080", "/run/x.sock" */
	unsigned nlisten;
	const char *default_listen; /* used when neither --listen nor socket
				     * activation gives a listener; shown in
				     * --help (NULL: none, --listen required) */
	unsigned workers;           /* 0: one per online CPU */
	int pin;                    /* pin worker i to CPU i % ncpu */
	enum bt_mode mode;
	unsigned threads;           /* process mode: worker threads per worker
				     * process (--threads; 0 or 1: one) */
	unsigned drain_timeout_ms;  /* SIGTERM: workers get this long (default 10000) */
	int backlog;                /* listen(2) backlog (default 4096) */
	unsigned batch;             /* connections per hand-off message, 1..253 (32) */
	enum bt_flush flush;        /* default adaptive */
	unsigned delay_us;          /* the flush policy's hold or delay (200) */
	int fire_and_forget;        /* close the acceptor's copy once sent */
	unsigned max_inflight;      /* per worker: connections unacknowledged (4096) */
	enum bt_dispatch dispatch;
	enum bt_backend backend;
	const char *name;           /* program name for titles and logs
				     * ("baton-httpd"); default argv[0]'s basename */
	int argc;                   /* main's, for process titles (optional) */
	char **argv;
	/* Since 0.3 (appended). */
	unsigned worker_timeout_ms; /* the watchdog: a worker whose loop has not
				     * moved for this long while it has work is
				     * killed and replaced, its unacknowledged
				     * connections redelivered (default 10000;
				     * 0: never) */
	size_t out_high;            /* per connection: unsent output above which
				     * writes return 1 and reading pauses
				     * (default 262144; bt_loop_config) */
	/* Since 0.3 (appended). */
	const int *inherit_fds;     /* process mode: descriptors the worker
				     * processes keep besides stdio and their
				     * channels (every other one is closed
				     * after the fork), e.g. a pipe to report
				     * results on; the control process keeps
				     * them too (on_stats); at most
				     * BT_RUNTIME_MAX_INHERIT */
	unsigned ninherit;
	const struct bt_producer *producer; /* a program that queues its own
				     * work items (below); NULL: none */
	const char *attach;         /* --attach: a path (created 0600) or
				     * "@name" (abstract) where worker processes
				     * may attach at any time (docs/wire.md), at
				     * most BT_RUNTIME_MAX_ATTACHED at once;
				     * NULL: none */
	unsigned attach_uid[BT_RUNTIME_MAX_ATTACH_UIDS]; /* --attach-uid: uids
				     * that may attach besides our own */
	unsigned nattach_uid;
	const char *worker_of;      /* --worker-of: run as an attached worker of
				     * the server at this address (--threads T:
				     * T worker loops), not as a server */
	/* Since 0.3 (appended): live upgrade (docs/reload.md). */
	const char *pid_file;       /* --pid-file: the main pid, written
				     * atomically at start; NULL: none */
	unsigned reload_timeout_ms; /* SIGHUP: the new generation must be
				     * ready within this, else the old one
				     * serves on (default 10000) */
	/* Since 0.3 (appended): operating it (docs/control.md). */
	const char *control;        /* --control: the control socket, a path
				     * (created 0600) or "@name"; "none": no
				     * socket; NULL: $RUNTIME_DIRECTORY/control
				     * under systemd, else none */
	const char *metrics;        /* --metrics: HOST:PORT (or [V6]:PORT, or a
				     * path) where GET /metrics answers in the
				     * Prometheus text format; NULL: none */
	/* The program sees the runtime's figures: every stats_interval_ms
	 * (10 or more; 0: never), on_stats gets what `baton-ctl stats
	 * --json` prints (docs/control.md), one line of JSON, len bytes,
	 * valid during the call, and bt_runtime_run's user.  It runs in the
	 * control process (docs/control.md), forked from the supervisor
	 * before any worker, which keeps stdio and inherit_fds only: it may
	 * take its time (it delays control answers, never serving), may not
	 * call bt_runtime_* functions, and what it changes in memory stays
	 * in that process. */
	void (*on_stats)(const char *json, size_t len, void *user);
	unsigned stats_interval_ms;
	/* Since 0.3 (appended): --acceptors K, acceptor rings (threads of the
	 * acceptor process), each with a queue to every worker loop
	 * (docs/scaling.md); 0 or 1: one; at most BT_RUNTIME_MAX_ACCEPTORS. */
	unsigned acceptors;
	/* Since 0.3 (appended): --grace MS.  At SIGTERM or SIGINT the server
	 * first goes on serving and accepting for this long while it
	 * announces that it is going away (bt_loop_state: a health
	 * check answers 503, so a balancer takes the host out), and only then
	 * drains.  A second SIGTERM or SIGINT drains at once.  0 (default):
	 * drain at once. */
	unsigned grace_ms;
	/* Since 0.3 (appended): --proxy-timeout MS, a listener's PROXY header
	 * (--listen ADDR,proxy) must arrive within this (default 5000;
	 * bt_loop_config.proxy_timeout_ms). */
	unsigned proxy_timeout_ms;
};

/*
 * Defaults: no listener (the app sets default_listen or adds one), workers
 * = CPUs, no pinning, batch 32 adaptive:200, rr, drain 10 s.  name NULL:
 * argv[0]'s basename.  It only fills cfg (no side effect).  The _sized
 * form is what the inline calls: size is the caller's sizeof
 * (docs/abi.md).  0 or -EINVAL.
 */
BT_API int bt_runtime_config_init_sized(struct bt_runtime_config *cfg, size_t size,
					const char *name, int argc, char **argv);
static inline int bt_runtime_config_init(struct bt_runtime_config *cfg, const char *name,
					 int argc, char **argv)
{
	return bt_runtime_config_init_sized(cfg, sizeof(*cfg), name, argc, argv);
}

/*
 * Process titles ("NAME: acceptor", "NAME: worker N") are written over
 * argv's original strings.  This moves them to copies first (argv[i] then
 * point at the copies), once per process, so that nothing the program
 * takes from argv afterwards is overwritten.  bt_runtime_parse_args calls
 * it; a program that parses argv itself calls it before it reads argv,
 * or runs without titles.  bt_runtime_run copies any string of its config
 * that still points into the original memory.
 */
BT_API void bt_runtime_take_argv(int argc, char **argv);

/* One application flag for bt_runtime_parse_args.  A table of them ends
 * with a NULL name; the inline bt_runtime_parse_args passes the caller's
 * sizeof(struct bt_flag), so that fields added later at its end do not
 * shift the table (docs/abi.md). */
struct bt_flag {
	const char *name;     /* without "--" */
	const char *arg;      /* the value's name in --help, NULL for a switch */
	const char *help;     /* one line; say the default here */
	/* Take the value (NULL for a switch).  Return 0, or -1 after writing
	 * why into err. */
	int (*set)(void *ctx, const char *value, char *err, size_t errlen);
	void *ctx;
};

/*
 * Parse argv with getopt_long (after bt_runtime_take_argv): the
 * application's flags, then the runtime's
 * own: --listen ADDR (repeatable), --workers N, --batch N, --flush
 * adaptive|size|delay:US, --dispatch rr|least|hash, --mode process|thread,
 * --threads T, --pin, --drain-timeout MS, --grace MS, --fire-and-forget, --backend
 * auto|io_uring|epoll, -h/--help, -V/--version.  "--flag value",
 * "--flag=value" and unambiguous prefixes work; "--" ends the flags (no
 * operand is taken after it).  --help shows every default, the signals and
 * the environment.  Returns 0 to run, 1 when --help or --version was
 * printed (exit 0), or 2 after printing a clear error and a hint to stderr
 * (exit 2).
 */
BT_API int bt_runtime_parse_args_sized(struct bt_runtime_config *cfg, int argc, char **argv,
				       const struct bt_flag *app_flags, size_t flag_size,
				       const char *summary);
static inline int bt_runtime_parse_args(struct bt_runtime_config *cfg, int argc, char **argv,
					const struct bt_flag *app_flags, const char *summary)
{
	return bt_runtime_parse_args_sized(cfg, argc, argv, app_flags, sizeof(struct bt_flag),
					   summary);
}

/*
 * Work items: the runtime as a work queue.  A program gives
 * bt_runtime_run a producer (cfg->producer) and a handler with on_item;
 * the supervisor process then pushes items (a descriptor, a payload, or
 * both: struct bt_wire_item) to the workers, with the same dispatch
 * policy, acknowledgements and redelivery as connections: an item a worker
 * had not acknowledged when it died goes to another.  Listeners are then
 * optional (a program may serve both).  Every call below is made on the
 * supervisor's thread, from the producer's callbacks or a watch's.
 */
struct bt_producer {
	size_t size; /* sizeof(struct bt_producer) */
	/* Once every worker has started: begin pushing, now or later from a
	 * watch.  0, or -errno to stop the server (exit status 1). */
	int (*start)(bt_runtime_t *rt, void *user);
	/* Optional: bt_runtime_push said -EAGAIN, and there is room again. */
	void (*on_room)(bt_runtime_t *rt, void *user);
	/* Optional: worker loop `worker` (bt_loop_worker_id) ended while the
	 * server ran (a crash, the watchdog).  Items it had not acknowledged
	 * are redelivered by the runtime; an item is acknowledged as its
	 * batch arrives, so the ones it had received and not finished are the
	 * program's to push again if it wants them done (baton-spool does,
	 * from its workers' reports). */
	void (*on_worker_gone)(bt_runtime_t *rt, unsigned worker, void *user);
};

/* Queue one item (see bt_acceptor_push: the runtime owns its fd from now
 * on; the payload is copied, at most 65448 bytes).  0, -EINVAL, -EAGAIN
 * (the acceptor's backlog is full: wait for on_room), -ESHUTDOWN (the
 * server is draining). */
BT_API int bt_runtime_push(bt_runtime_t *rt, const struct bt_wire_item *it);

/* The runtime's figures now, as `baton-ctl stats --json` prints them
 * (docs/control.md): one line of JSON in *json (malloc'd: free it), its
 * length in *len.  From the supervisor's thread (a producer's or a
 * watch's callback; see on_stats in the config for any program).  0,
 * -EINVAL, -ENOMEM. */
BT_API int bt_runtime_stats_json(bt_runtime_t *rt, char **json, size_t *len);

/* Drain and end bt_runtime_run with exit status 0, as SIGTERM does: what
 * was pushed is still delivered, and workers finish (a producer calls it
 * once its work is done). */
BT_API void bt_runtime_stop(bt_runtime_t *rt);

/* Watch fd on the supervisor's loop (level-triggered, like
 * bt_loop_watch_fd: BT_WATCH_IN/OUT; a regular file gives -EPERM) until
 * bt_runtime_unwatch, which may be called from the callback.  0 or
 * -errno. */
typedef struct bt_runtime_watch bt_runtime_watch_t;
typedef void (*bt_runtime_watch_fn)(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd,
				    unsigned revents, void *arg);
BT_API int bt_runtime_watch_fd(bt_runtime_t *rt, bt_runtime_watch_t **w, int fd, unsigned events,
			       bt_runtime_watch_fn cb, void *arg);
BT_API void bt_runtime_unwatch(bt_runtime_t *rt, bt_runtime_watch_t *w);

/*
 * Run the server until SIGTERM/SIGINT (or bt_runtime_stop) and the drain.
 * Returns the process exit status: 0 after a clean drain, 1 on a start-up
 * failure (logged with the failing syscall) or a producer's failed start, 2
 * for a configuration it refuses (logged: --listen together with socket
 * activation, a struct whose size field is wrong, a handler with neither
 * on_data nor on_item, on_item alone without a producer or a listener).
 * In workers it never returns (they exit).  It copies cfg and h at the
 * start: later changes to them have no effect.
 *
 * Threads: call bt_runtime_config_init, bt_runtime_parse_args and
 * bt_runtime_run from the program's main thread, before it starts threads
 * of its own (the supervisor forks, and blocks signals for a signalfd).
 * The handler's callbacks run on each worker loop's own thread (see
 * baton/loop.h); the producer's on the thread that called bt_runtime_run.
 */
BT_API int bt_runtime_run(const struct bt_runtime_config *cfg, const struct bt_handler *h,
			  void *user);

#ifdef __cplusplus
}
#endif

#endif
