/* SPDX-License-Identifier: MIT */
/*
 * The supervisor's state, shared by its files (not part of the public API):
 *
 *   runtime.c         bt_runtime_run: listeners, the acceptor, start-up,
 *                     the supervisor's clock (respawns, watchdog, drain
 *                     deadline on the acceptor's one timer)
 *   signals.c         the signalfd on the acceptor's loop
 *   drain.c           stopping: drain, its deadline, the last worker's end
 *   counters.c        the counters printed on SIGUSR1 and at exit
 *   producer.c        the program's work items (bt_runtime_push) and
 *                     watches on the supervisor's loop
 *   attach.c          workers that attach by name (--attach), and this
 *                     program as one (--worker-of)
 *   workers_proc.c    the worker set as processes (of one or more loops)
 *   workers_thread.c  the worker set as threads of this process
 *
 * Everything here runs on the supervisor's thread (the acceptor's loop),
 * except the worker threads' own code in workers_thread.c.
 */
#ifndef BATON_SUPERVISOR_H
#define BATON_SUPERVISOR_H

#include "internal.h"
#include "runtime_internal.h"

#include <baton/runtime.h>

#include <sched.h>
#include <signal.h>
#include <stdint.h>

struct bt_runtime;

/*
 * A worker set: how workers of one kind start, end and are looked after.
 * Worker i (0 <= i < nw) runs loops i*tpp .. i*tpp+tpp-1, the acceptor's
 * slots of the same numbers.
 */
struct bt__workers_ops {
	const char *noun; /* "processes", "threads" */
	/* Before any worker starts (the acceptor exists).  0 or -errno. */
	int (*init)(struct bt_runtime *s);
	/* Start worker i and attach its loops to the acceptor.  0 or -errno
	 * (logged). */
	int (*start)(struct bt_runtime *s, unsigned i);
	/* After starting the first n: wait until each has its loop; 0, or -1
	 * if one could not start (logged). */
	int (*ready)(struct bt_runtime *s, unsigned n);
	/* Worker i runs (a process not yet reaped, a thread not yet joined). */
	int (*alive)(const struct bt_runtime *s, unsigned i);
	/* Connections open on loop slot (its published load). */
	unsigned (*open)(const struct bt_runtime *s, unsigned slot);
	/* "pid 123", "pid 123 thread 1", "thread": who runs slot. */
	void (*describe)(const struct bt_runtime *s, unsigned slot, char *buf, size_t cap);
	/* Worker i as numbers: its pid (0: none runs now), and when it
	 * started (the control socket's status). */
	void (*info)(const struct bt_runtime *s, unsigned i, long *pid, uint64_t *started_ns);
	/* The watchdog's look at slot: stalled_ns without moving while it
	 * has work, against limit_ns. */
	void (*watch)(struct bt_runtime *s, unsigned slot, uint64_t stalled_ns, uint64_t limit_ns);
	/* Worker i should run (live scaling): start it now, or as soon as
	 * the acceptor has its slots back.  0 or -errno (logged). */
	int (*revive)(struct bt_runtime *s, unsigned i);
	/* SIGCHLD arrived: collect the workers that ended (NULL: the set
	 * has no processes). */
	void (*reap)(struct bt_runtime *s);
	/* What is due at now (respawns, the drain's last resort); the next
	 * time something is due (0: nothing). */
	void (*tick)(struct bt_runtime *s, uint64_t now);
	uint64_t (*next_due)(const struct bt_runtime *s);
	/* Stop whatever still runs (a failed start, the end), before the
	 * acceptor goes; then free the set, after it. */
	void (*stop)(struct bt_runtime *s);
	void (*fini)(struct bt_runtime *s);
};

/* The acceptor set (acceptors.c).  A call on acceptor k runs on its
 * thread (k 0: this one) and returns what fn returned; _each calls
 * acceptors from.. in order and returns the first failure. */
typedef int (*bt__acc_fn)(struct bt_runtime *s, bt_acceptor_t *acc, unsigned k, void *arg);
unsigned bt__accs_count(const struct bt_runtime *s);
int bt__accs_call(struct bt_runtime *s, unsigned k, bt__acc_fn fn, void *arg);
int bt__accs_each(struct bt_runtime *s, unsigned from, bt__acc_fn fn, void *arg);
/* Acceptors 1..K-1 (after acceptor 0 has its listeners), for slots
 * worker loops; their threads start (after the workers are ready); they
 * stop and are joined; they are freed (after the worker set stopped). */
int bt__accs_create(struct bt_runtime *s, const struct bt_acceptor_config *ac, unsigned slots);
int bt__accs_start(struct bt_runtime *s);
void bt__accs_join(struct bt_runtime *s);
void bt__accs_free(struct bt_runtime *s);
/* The common calls, on every acceptor. */
int bt__accs_attach(struct bt_runtime *s, unsigned k, unsigned slot, bt_queue_t *q);
void bt__accs_detach(struct bt_runtime *s, unsigned slot);
/* Does some acceptor still have a queue in slot (reclaiming it)? */
int bt__accs_slot_busy(struct bt_runtime *s, unsigned slot);
void bt__accs_drain(struct bt_runtime *s, unsigned deadline_ms);
void bt__accs_kick(struct bt_runtime *s);
void bt__accs_retire(struct bt_runtime *s, unsigned slot, unsigned deadline_ms, int handover_fd);
/* Live settings from s->qc and s->config.dispatch. */
void bt__accs_policy(struct bt_runtime *s);
/* The acceptors' counters, summed: each one's, and per worker slot its
 * queue's (over every worker that ran in it). */
struct bt__slot_view {
	struct bt_queue_stats qs;
	uint64_t bhist[BT__BATCH_BUCKETS];
	unsigned unreaped, inflight; /* bt__queue_unreaped */
	int lagging;                 /* on some acceptor */
};
struct bt__accs_view {
	struct bt_acceptor_stats as;
	unsigned backlog, held; /* bt_acceptor_held */
	uint64_t internal;
	uint64_t accepted[BT_RUNTIME_MAX_ACCEPTORS]; /* by each acceptor */
	unsigned n;             /* slots in w */
	struct bt__slot_view *w;
};
/* Fill v (v->w calloc'd: bt__accs_view_free).  0 or -ENOMEM. */
int bt__accs_view(struct bt_runtime *s, struct bt__accs_view *v);
void bt__accs_view_free(struct bt__accs_view *v);
/* The balancer, every 100 ms (acceptors.c): one more acceptor joins when
 * the accepting ones are busy, the last one leaves when the others could
 * carry its share. */
void bt__accs_balance(struct bt_runtime *s, uint64_t now);
uint64_t bt__accs_next_ns(const struct bt_runtime *s); /* 0: none due */
/* The watchdog's view of slots 0..n-1: the longest any acceptor sees
 * each stalled (bt__acc_worker_stalled_ns). */
void bt__accs_stalled(struct bt_runtime *s, uint64_t now, uint64_t *out, unsigned n);

extern const struct bt__workers_ops bt__workers_proc;
extern const struct bt__workers_ops bt__workers_thread;

/* Per worker, whatever its kind. */
struct bt__worker_count {
	unsigned restarts;
	unsigned stuck; /* times the watchdog found it stuck */
	/* Told to drain alone (control.c): 1 retires it (workers N took it
	 * away), 2 replaces it once it has drained (drain-worker). */
	int retire;
};

struct bt_runtime {
	const struct bt_runtime_config *cfg; /* &config */
	const struct bt_handler *h;          /* &handler */
	struct bt_runtime_config config;     /* the caller's, taken by size */
	struct bt_handler handler;
	struct bt_queue_config qc;           /* from config's batch and flush */
	void *user;
	struct bt_producer producer; /* the caller's, taken by size */
	int has_producer;
	bt_acceptor_t *acc; /* acceptor 0: on this thread (acceptors.c) */
	struct bt__xacc *xacc[BT_RUNTIME_MAX_ACCEPTORS - 1]; /* acceptors 1.. */
	unsigned nxacc;
	/* Acceptors accepting now (the others on standby), and the
	 * balancer's look at the listen queues (acceptors.c). */
	unsigned accs_active;
	int accs_always; /* BATON_ACCEPTORS_ALWAYS=1: no standby */
	unsigned accs_high, accs_low;
	uint64_t accs_next_ns;
	pid_t acc_tid; /* acceptor 0's thread */
	uint64_t accs_seen[BT_RUNTIME_MAX_ACCEPTORS], accs_seen_ns; /* their last demand */
	const struct bt__workers_ops *ops;
	void *set;       /* the worker set's own state */
	struct bt__worker_count *wc; /* maxw of them */
	unsigned nw;     /* worker processes (or threads) started so far, retired
			  * ones included: the loops' bound */
	unsigned want;   /* how many should run (--workers, then workers N) */
	unsigned maxw;   /* at most this many (the slots made at start) */
	unsigned tpp;    /* worker loops per process: --threads (1 in thread mode) */
	unsigned nslots; /* the acceptor's slots of our workers so far: nw x tpp */
	unsigned gbase;  /* attached workers' first slot: maxw x tpp */
	/* Live scaling: a retiring worker hands its connections back on this
	 * channel (handover.c), and they go to the others. */
	int rehome_peer; /* the workers' end (dups of it go out), -1 */
	bt_fdpass_t *rehome_ch; /* ours, NULL: not made yet */
	bt_runtime_watch_t *rehome_w;
	uint64_t rehomed;
	struct bt__metrics *metrics; /* the worker loops' metrics (metrics.c) */
	int metrics_lfd; /* --metrics' listener (-1): the control process's */
	char *owned[BT_RUNTIME_MAX_LISTEN + 2]; /* config strings copied out of argv */
	unsigned nowned;
	int sigfd;
	int lfds[BT_RUNTIME_MAX_LISTEN + 64];
	int nl;
	int draining;
	uint64_t drain_deadline_ns;
	uint64_t grace_until_ns; /* --grace began: it ends then (0: not begun) */
	const char *grace_why;   /* the signal that began it */
	uint64_t start_ns;
	int start_failed; /* a worker could not start: exit status 1 */
	int attach_fd;    /* --attach's listener, -1 */
	unsigned attached; /* attached workers now (slots nslots.. ) */
	/* Each attached worker's process, as the kernel named it when it
	 * connected (not as its HELLO says): for the watchdog's SIGKILL. */
	struct bt__guest {
		int pidfd; /* -1: none (gone, or the kernel gave none) */
		long pid;
		unsigned long uid;
		int killing;
		int stuck_logged; /* stuck, and we may not kill it: said once */
		uint64_t since_ns; /* when it connected */
	} guest[BT_RUNTIME_MAX_ATTACHED];
	/* Generations (master.c, handover.c). */
	int ctl_fd;      /* to the master, -1: none (no master) */
	int prev_fd;     /* the handover channel from the previous generation, -1 */
	int next_fd;     /* the handover channel to the next one, -1 */
	uint64_t taken, taken_bytes, taken_refused; /* new: connections handed to us */
	int lkeep[BT_RUNTIME_MAX_LISTEN + 64]; /* the listeners the acceptor owns */
	char lrole[BT_RUNTIME_MAX_LISTEN + 64]; /* 'L' --listen, 'S' from systemd */
	uint8_t lproxy[BT_RUNTIME_MAX_LISTEN + 64]; /* ",proxy": PROXY headers */
	int nkeep;
	int attach_kept; /* the attach listener went to the next generation: no unlink */
	int handed_over; /* a next generation serves ('T'): we finish */
	struct bt__ctl *ctl; /* the control socket (control.c), NULL: none */
	char ctl_name[110]; /* its address: --control, or under RUNTIME_DIRECTORY; "" none */
	int ctl_lfd;     /* its listener (-1): the control process's; sent at a reload */
	int ready;       /* READY=1 was said: this generation served */
	uint64_t watch_next_ns; /* the watchdog's next look (0: off) */
};

/* runtime.c */
/* The loop config of worker loop slot, but for its transport. */
void bt__sup_loop_config(const struct bt_runtime *s, unsigned slot, struct bt_loop_config *lc);
/* The --listen specs in force: the flags', else the program's default
 * (count 0: none). */
const char *const *bt__sup_listen_specs(const struct bt_runtime *s, unsigned *count);
/* --pin: the CPU of worker loop slot. */
cpu_set_t bt__sup_cpu(unsigned slot);
/* Arm the acceptor's timer for the next thing due. */
void bt__sup_schedule(struct bt_runtime *s);
/* The worker slots to show, in order: ours (0..nslots-1), then the
 * attached ones in use.  The one after slot i (-1: the first); -1 at the
 * end. */
int bt__sup_slot_next(const struct bt_runtime *s, int i);
/* Worker processes or threads running now. */
unsigned bt__sup_running(const struct bt_runtime *s);

/* workers_proc.c: in a child, close every descriptor but stdio and
 * keep[0..n) (n at most 80). */
void bt__close_all_but(const int *keep, unsigned n);

/* signals.c: block the signals the supervisor handles and read them from
 * a signalfd on the acceptor's loop.  0 or -1 (logged). */
int bt__sup_signals(struct bt_runtime *s);
/* The signals the supervisor (and the master) read from a signalfd:
 * CHLD, TERM, INT, USR1, HUP, blocked in this thread and put in set. */
void bt__sup_sigset(sigset_t *set);

/* drain.c */
void bt__sup_drain(struct bt_runtime *s, const char *why);
/* SIGTERM or SIGINT (why): --grace first if set and not begun, else the
 * drain now. */
void bt__sup_stop_signal(struct bt_runtime *s, const char *why);
/* A worker ended: once draining and none runs, the acceptor stops. */
void bt__sup_worker_ended(struct bt_runtime *s);

/* producer.c: the producer's hook on the acceptor; its start, once the
 * workers run (0, or its -errno after starting the drain). */
void bt__sup_producer_config(struct bt_runtime *s, struct bt_acceptor_config *ac);
int bt__sup_producer_start(struct bt_runtime *s);
/* Worker loop slot ended while serving: tell the producer. */
void bt__sup_worker_gone(struct bt_runtime *s, unsigned slot);

/* attach.c: open and close --attach's listener (0, or -errno logged); a
 * worker slot the acceptor dropped; run as --worker-of (exit status). */
int bt__sup_attach_open(struct bt_runtime *s);
void bt__sup_attach_close(struct bt_runtime *s);
void bt__sup_attach_gone(struct bt_runtime *s, unsigned idx);
/* The watchdog's look at the attached workers. */
void bt__sup_attach_watch(struct bt_runtime *s, uint64_t now, uint64_t limit);
int bt__sup_run_worker_of(struct bt_runtime *s);

/* master.c: is a master wanted (a program on the command line that can be
 * run again), and run it: its exit status, or -1 in the first generation's
 * process (which goes on serving, with s->ctl_fd). */
int bt__master_wanted(const struct bt_runtime *s);
int bt__master_run(struct bt_runtime *s);

/* handover.c: a generation's side of a reload.  From BATON_GENERATION: our
 * control and handover channels (0, or -1 when it names none; 2: bad).
 * The listeners the previous generation passed that our flags name (count
 * into s->lfds, or -errno).  Watch the control channel (under a master)
 * and the handover channel. Say we are ready (to the previous generation). */
int bt__gen_from_env(struct bt_runtime *s);
int bt__gen_take_listeners(struct bt_runtime *s);
int bt__gen_watch(struct bt_runtime *s);
void bt__gen_ready(struct bt_runtime *s);

/* handover.c: a channel end for a retiring worker's connections to come
 * back on (a dup, the caller's; -1 if there is none), and its end. */
int bt__sup_rehome_fd(struct bt_runtime *s);
void bt__sup_rehome_close(struct bt_runtime *s);

/* drain.c: the grace is over (the drain begins), or past the drain's
 * deadline (stop waiting for attached workers). */
void bt__sup_drain_due(struct bt_runtime *s, uint64_t now);

/* counters.c */
void bt__sup_print_counters(struct bt_runtime *s, const char *why);

/* snapshot.c: the control socket's view of the server (docs/control.md). */
#define BT__BUF_MAX (16u << 20)
struct bt__buf {
	char *p;
	size_t len, cap;
	int failed; /* out of memory, or past BT__BUF_MAX */
};
void bt__buf_printf(struct bt__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bt__buf_free(struct bt__buf *b);

struct bt__snap_worker {
	unsigned slot;
	const char *kind; /* "process", "thread", "attached" (static strings) */
	long pid;         /* 0: none runs now */
	unsigned thread;  /* hybrid: the loop's thread in its process */
	int running, lagging, retiring, retired;
	unsigned restarts, stuck, open, inflight, batch;
	uint64_t up_ns;
	struct bt_queue_stats qs;
	uint64_t bhist[BT__BATCH_BUCKETS];
};
struct bt__snap {
	char name[64];
	const char *state; /* "serving", "reloading", "draining", "handing over" */
	long pid, master_pid;
	uint64_t up_ns;
	char backend[16];
	const char *mode; /* "process", "thread", "hybrid" */
	unsigned workers, threads, attached, acceptors, accepting;
	unsigned batch, max_inflight, drain_timeout_ms, worker_timeout_ms;
	char flush[32];
	const char *dispatch;
	int fire_and_forget;
	struct bt_acceptor_stats as;
	uint64_t accepted_by[BT_RUNTIME_MAX_ACCEPTORS]; /* each acceptor's accepted */
	unsigned held;
	uint64_t taken, taken_bytes, taken_refused, rehomed, internal;
	uint64_t proxy_refused, proxy_late; /* PROXY headers (metrics.c) */
	unsigned maxw;
	unsigned nworkers;
	struct bt__snap_worker w[];
};
/* On the supervisor's thread: malloc'd (free it), NULL without memory. */
struct bt__snap *bt__snap_take(struct bt_runtime *s);
/* On any thread: status as text (a table), or one line of JSON. */
void bt__snap_text(const struct bt__snap *sn, struct bt__buf *b);
void bt__snap_json(const struct bt__snap *sn, struct bt__buf *b);

/* metrics.c: the Prometheus text of a snapshot and the worker loops'
 * metrics (m may be NULL). */
void bt__metrics_text(const struct bt__snap *sn, struct bt__metrics *m, struct bt__buf *b);

/* control.c: the control socket (--control) and its thread.  Open it
 * (0, or -errno logged: exit status 1); the supervisor's side of a reload
 * asked for on it (ok, and what to say); the listener went to the next
 * generation; stop the thread and close everything. */
void bt__ctl_resolve(struct bt_runtime *s);
int bt__ctl_open(struct bt_runtime *s);
void bt__ctl_reload_done(struct bt_runtime *s, int ok, const char *msg);
void bt__ctl_handed_over(struct bt_runtime *s);
void bt__ctl_close(struct bt_runtime *s);

#endif
