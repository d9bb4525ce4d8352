/* SPDX-License-Identifier: MIT */
/*
 * Job offload: a thread pool for blocking work (a disk read, a compression,
 * a DNS lookup) whose completions come back to the thread that submitted
 * them, like libuv's uv_queue_work.
 *
 *   work(arg)           runs on a pool thread;
 *   done(arg, status)   runs later on the submitter's thread, from
 *                       bt_pool_sink_run: status 0 (work ran) or
 *                       -ECANCELED (cancelled before it started, or the
 *                       pool shut down first).
 *
 * Every accepted job gets exactly one done() call, and work() runs at most
 * once: no job is lost or run twice, whatever the order of cancel and
 * shutdown.  A job that could not be accepted (-EAGAIN: the bounded queue is
 * full; -ESHUTDOWN) gets no call at all.
 *
 * In a worker loop, use bt_loop_submit/bt_loop_cancel (baton/loop.h): the
 * loop owns a sink and runs completions on its thread.
 *
 * Threads: bt_pool_submit and bt_pool_cancel from any thread (the pool
 * locks); a sink's calls (bt_pool_sink_run, _fd, _pending, _destroy) from
 * the one thread that owns it; bt_pool_destroy once no thread submits.
 */
#ifndef BATON_POOL_H
#define BATON_POOL_H

#include <stddef.h>

#include <baton/version.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_pool bt_pool_t;
typedef struct bt_pool_sink bt_pool_sink_t;
typedef struct bt_job bt_job_t;

typedef void (*bt_work_fn)(void *arg);
typedef void (*bt_done_fn)(void *arg, int status);

struct bt_pool_config {
	size_t size;               /* sizeof(struct bt_pool_config): docs/abi.md */
	unsigned threads;    /* default: online CPUs, at least 2 */
	unsigned max_queued; /* jobs waiting for a thread, at most (default 4096) */
};

/* The inline sets size to the caller's sizeof (docs/abi.md); 0 or -EINVAL. */
BT_API int bt_pool_config_init_sized(struct bt_pool_config *cfg, size_t size);
static inline int bt_pool_config_init(struct bt_pool_config *cfg)
{
	return bt_pool_config_init_sized(cfg, sizeof(*cfg));
}

/* Start the pool's threads.  0 or -errno (-EINVAL, -ENOMEM, pthread_create's). */
BT_API int bt_pool_create(bt_pool_t **out, const struct bt_pool_config *cfg);

/* Stop: jobs not started are cancelled (their done() will see -ECANCELED
 * when their sink runs), running ones finish, every thread is joined. */
BT_API void bt_pool_destroy(bt_pool_t *pool);

/*
 * Queue work(arg); done(arg, status) will run from bt_pool_sink_run(sink).
 * *job (optional) identifies it for bt_pool_cancel until done() has run.
 * 0, or -EAGAIN (max_queued jobs are waiting), -ESHUTDOWN, -EINVAL, -ENOMEM.
 */
BT_API int bt_pool_submit(bt_pool_t *pool, bt_pool_sink_t *sink, bt_job_t **job,
			  bt_work_fn work, bt_done_fn done, void *arg);

/* Cancel a job that has not started: 0 (done() will see -ECANCELED), or
 * -EBUSY (it is running or has finished). */
BT_API int bt_pool_cancel(bt_pool_t *pool, bt_job_t *job);

/* A sink: where one thread's finished jobs wait for their done() call. */
BT_API int bt_pool_sink_create(bt_pool_sink_t **out);
/* Destroy; every job submitted through it must have completed
 * (bt_pool_sink_pending() == 0), else -EBUSY and nothing is freed. */
BT_API int bt_pool_sink_destroy(bt_pool_sink_t *sink);
/* An eventfd that becomes readable when completions wait. */
BT_API int bt_pool_sink_fd(const bt_pool_sink_t *sink);
/* Call done() for every finished job, on this thread.  Returns how many. */
BT_API unsigned bt_pool_sink_run(bt_pool_sink_t *sink);
/* Jobs submitted through this sink whose done() has not run yet. */
BT_API unsigned bt_pool_sink_pending(const bt_pool_sink_t *sink);

#ifdef __cplusplus
}
#endif

#endif
