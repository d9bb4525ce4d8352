/* SPDX-License-Identifier: MIT */
/*
 * baton-spool: the work queue without any network.  A producer opens files
 * and queues each one, with a job description, to worker processes (the
 * descriptor travels by SCM_RIGHTS) or worker threads; a worker does the job
 * on the descriptor it received, on its loop's thread pool, and reports
 * back one line per file over a pipe.  A small log-processing spool, built
 * from the public headers only.
 *
 *   baton-spool [--workers N] [--mode process|thread] [--job lines|bytes|words] [--] FILE...
 *
 * Output: one line per file, "PATH: N JOB (worker W)", in completion order,
 * then a summary; exit 0 if every file was processed, 1 otherwise, 2 for
 * bad arguments.
 */
#define _GNU_SOURCE
#include <baton/loop.h>
#include <baton/queue.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int report_fd = -1; /* the write end, shared by every worker */

struct job {
	bt_loop_t *loop;
	uint64_t id;
	int fd;
	char kind[16];
	long long result;
	int err;
};

/* On a pool thread: read the file through and count. */
static void do_job(void *arg)
{
	struct job *j = arg;
	char buf[65536];
	long long n = 0;
	int in_word = 0;
	ssize_t r;
	while ((r = read(j->fd, buf, sizeof(buf))) > 0) {
		if (!strcmp(j->kind, "bytes")) {
			n += r;
		} else if (!strcmp(j->kind, "words")) {
			for (ssize_t i = 0; i < r; i++) {
				int space = buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\t' || buf[i] == '\r';
				if (!space && !in_word)
					n++;
				in_word = !space;
			}
		} else {
			for (ssize_t i = 0; i < r; i++)
				n += buf[i] == '\n';
		}
	}
	j->err = r < 0 ? errno : 0;
	j->result = n;
}

/* Back on the worker's loop: report and release the descriptor. */
static void job_done(void *arg, int status)
{
	struct job *j = arg;
	char line[128];
	int len;
	if (status < 0 || j->err)
		len = snprintf(line, sizeof(line), "%llu ERR %s\n", (unsigned long long)j->id,
			       strerror(status < 0 ? -status : j->err));
	else
		len = snprintf(line, sizeof(line), "%llu OK %lld %d\n", (unsigned long long)j->id,
			       j->result, bt_loop_worker_id(j->loop));
	/* One write of less than PIPE_BUF: lines of different workers never mix. */
	if (write(report_fd, line, (size_t)len) != len)
		perror("baton-spool: write(report)");
	close(j->fd);
	free(j);
}

static void on_item(bt_loop_t *loop, const struct bt_wire_item *it)
{
	struct job *j = calloc(1, sizeof(*j));
	if (!j) {
		if (it->fd >= 0)
			close(it->fd);
		return;
	}
	j->loop = loop;
	j->id = it->id;
	j->fd = it->fd;
	size_t n = it->payload_len < sizeof(j->kind) - 1 ? it->payload_len : sizeof(j->kind) - 1;
	memcpy(j->kind, it->payload, n);
	if (j->fd < 0 || bt_loop_submit(loop, NULL, do_job, job_done, j) < 0) {
		/* No descriptor, or the pool is full: report it as failed. */
		job_done(j, -EAGAIN);
	}
}

static const struct bt_handler handler = {.size = sizeof(struct bt_handler), .on_item = on_item};

static int run_loop(int id, bt_fdpass_t *ch, bt_queue_t *q, bt_queue_shm_t *shm)
{
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	lc.worker_id = id;
	lc.channel = ch;
	lc.queue = q;
	lc.shm = shm;
	lc.slot = (unsigned)id;
	lc.handler = &handler;
	bt_loop_t *loop;
	int rc = bt_loop_create(&loop, &lc);
	if (rc < 0) {
		fprintf(stderr, "baton-spool: worker %d: bt_loop_create: %s\n", id, strerror(-rc));
		return rc;
	}
	rc = bt_loop_run(loop);
	bt_loop_destroy(loop);
	return rc;
}

struct tworker {
	pthread_t tid;
	bt_queue_t *q;
	int id;
};

static void *thread_main(void *arg)
{
	struct tworker *w = arg;
	run_loop(w->id, NULL, w->q, NULL);
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: baton-spool [OPTION]... FILE...\n"
		   "Queue each FILE (an open descriptor plus the job) to a worker process or\n"
		   "thread, which counts its lines, bytes or words and reports back.\n"
		   "\nOptions:\n"
		   "  -w, --workers N    worker processes or threads, 1..256 (default 2)\n"
		   "  -m, --mode MODE    process | thread (default process)\n"
		   "  -j, --job JOB      lines | bytes | words (default lines)\n"
		   "  -h, --help         show this help and exit\n"
		   "  -V, --version      show the version and exit\n"
		   "\n'--' ends the options: a FILE after it may start with '-'.\n"
		   "\nOutput: one line per file, \"PATH: N JOB (worker W)\", in completion order,\n"
		   "then a summary.\n"
		   "\nExit status:\n"
		   "  0  every file was processed\n"
		   "  1  a file could not be opened or processed\n"
		   "  2  bad usage\n");
}

static int bad_usage(const char *fmt, const char *a)
{
	fprintf(stderr, "baton-spool: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, "\nTry 'baton-spool --help' for more information.\n");
	return 2;
}

int main(int argc, char **argv)
{
	int workers = 2, thread_mode = 0;
	const char *job = "lines";
	static const struct option opts[] = {
		{"workers", required_argument, NULL, 'w'}, {"mode", required_argument, NULL, 'm'},
		{"job", required_argument, NULL, 'j'},     {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
	};
	int o;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:w:m:j:hV", opts, NULL)) != -1) {
		char *e;
		long n;
		switch (o) {
		case 'w':
			n = strtol(optarg, &e, 10);
			if (!*optarg || *e || n < 1 || n > 256)
				return bad_usage("--workers wants 1 to 256, not '%s'", optarg);
			workers = (int)n;
			break;
		case 'm':
			if (strcmp(optarg, "process") && strcmp(optarg, "thread"))
				return bad_usage("--mode wants process or thread, not '%s'", optarg);
			thread_mode = !strcmp(optarg, "thread");
			break;
		case 'j':
			job = optarg;
			if (strcmp(job, "lines") && strcmp(job, "bytes") && strcmp(job, "words"))
				return bad_usage("--job wants lines, bytes or words, not '%s'", job);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("baton-spool (baton) %s\nCopyright (c) 2026 The baton authors.\n"
			       "License: MIT <https://opensource.org/licenses/MIT>.\n",
			       bt_version());
			return 0;
		case ':':
			return bad_usage("%s needs a value", argv[optind - 1]);
		default:
			return bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	int first = optind;
	if (first >= argc)
		return bad_usage("no FILE given%s", "");
	int nfiles = argc - first;
	signal(SIGPIPE, SIG_IGN);
	int rp[2];
	if (pipe2(rp, O_CLOEXEC) < 0) {
		perror("baton-spool: pipe2");
		return 1;
	}
	report_fd = rp[1];

	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	qc.flush = BT_FLUSH_SIZE; /* the producer flushes itself, below */
	bt_queue_t **qs = calloc((size_t)workers, sizeof(*qs));
	pid_t *pids = calloc((size_t)workers, sizeof(*pids));
	struct tworker *tw = calloc((size_t)workers, sizeof(*tw));
	bt_queue_shm_t *shm = NULL;
	if (!thread_mode && bt_queue_shm_create(&shm, (unsigned)workers, qc.max_inflight) < 0)
		return 1;
	for (int w = 0; w < workers; w++) {
		if (thread_mode) {
			if (bt_queue_create_thread(&qs[w], &qc) < 0)
				return 1;
			tw[w].q = qs[w];
			tw[w].id = w;
			pthread_create(&tw[w].tid, NULL, thread_main, &tw[w]);
			continue;
		}
		int sv[2];
		if (bt_fdpass_pair(sv, 0) < 0)
			return 1;
		fflush(NULL);
		pids[w] = fork();
		if (pids[w] == 0) {
			close(sv[0]);
			close(rp[0]);
			for (int k = 0; k < w; k++)
				bt_queue_destroy(qs[k]); /* the other workers' channels */
			bt_fdpass_t *ch;
			if (bt_fdpass_open(&ch, sv[1]) < 0)
				_exit(1);
			_exit(run_loop(w, ch, NULL, shm) == 0 ? 0 : 1);
		}
		close(sv[1]);
		bt_fdpass_t *ch;
		if (bt_fdpass_open(&ch, sv[0]) < 0 || bt_queue_create(&qs[w], &qc, ch, shm, (unsigned)w) < 0)
			return 1;
	}
	if (!thread_mode)
		close(rp[1]); /* the workers have theirs; threads share ours */

	/* Produce: open every file, queue it round-robin, flush batches. */
	int queued = 0, failed = 0;
	for (int f = 0; f < nfiles; f++) {
		const char *path = argv[first + f];
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "baton-spool: open(%s): %s\n", path, strerror(errno));
			failed++;
			continue;
		}
		struct bt_wire_item it;
		memset(&it, 0, sizeof(it));
		it.id = (uint64_t)f;
		it.flags = BT_WIRE_ITEM_FD;
		it.fd = fd;
		it.payload = job;
		it.payload_len = (uint32_t)strlen(job);
		bt_queue_t *q = qs[f % workers];
		int rc;
		while ((rc = bt_queue_push(q, &it)) == -EAGAIN) {
			bt_queue_flush(q);
			bt_queue_reap(q, NULL, NULL);
			usleep(1000);
		}
		if (rc < 0) {
			fprintf(stderr, "baton-spool: %s: bt_queue_push: %s\n", path, strerror(-rc));
			close(fd);
			failed++;
			continue;
		}
		if (rc == 1)
			while (bt_queue_flush(q) == -EAGAIN)
				usleep(1000);
		/* Close our copies of what workers have acknowledged. */
		bt_queue_reap(q, NULL, NULL);
		queued++;
	}
	for (int w = 0; w < workers; w++)
		while (bt_queue_flush(qs[w]) == -EAGAIN)
			usleep(1000);

	/* Collect one report per queued file. */
	FILE *rf = fdopen(rp[0], "r");
	char line[256];
	int reported = 0;
	long long total = 0;
	while (reported < queued && fgets(line, sizeof(line), rf)) {
		unsigned long long id;
		long long n;
		int wid;
		char status[8];
		if (sscanf(line, "%llu %7s", &id, status) != 2 || id >= (unsigned long long)nfiles)
			continue;
		reported++;
		if (!strcmp(status, "OK") && sscanf(line, "%llu OK %lld %d", &id, &n, &wid) == 3) {
			printf("%s: %lld %s (worker %d)\n", argv[first + id], n, job, wid);
			total += n;
		} else {
			printf("%s: failed: %s", argv[first + id], line);
			failed++;
		}
		for (int w = 0; w < workers; w++)
			bt_queue_reap(qs[w], NULL, NULL);
	}
	printf("%d files, %lld %s in all, %d failed\n", reported, total, job, failed + (queued - reported));

	/* Drain and stop the workers. */
	for (int w = 0; w < workers; w++) {
		while (bt_queue_send_drain(qs[w], 1000) == -EAGAIN)
			usleep(1000);
	}
	for (int w = 0; w < workers; w++) {
		if (thread_mode)
			pthread_join(tw[w].tid, NULL);
		else
			waitpid(pids[w], NULL, 0);
		bt_queue_reap(qs[w], NULL, NULL);
		bt_queue_destroy(qs[w]);
	}
	bt_queue_shm_destroy(shm);
	if (thread_mode)
		close(rp[1]);
	fclose(rf);
	free(qs);
	free(pids);
	free(tw);
	return failed || reported != queued ? 1 : 0;
}
