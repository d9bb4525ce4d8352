/* SPDX-License-Identifier: MIT */
/*
 * baton-spool: the work queue without any network, on the runtime
 * (bt_runtime_run with a producer).  The supervisor opens files and pushes
 * each one, with a job description, as a work item: the runtime dispatches
 * it to a worker process (the descriptor travels by SCM_RIGHTS) or worker
 * thread, with its acknowledgements and redelivery.  A worker does the job
 * on the descriptor it received, on its loop's thread pool, and reports
 * back one line per file over a pipe that the supervisor watches.  A small
 * log-processing spool, built from the public headers only.
 *
 *   baton-spool [--workers N] [--mode process|thread] [--job lines|bytes|words]
 *               [--files-from LIST] [--] FILE...
 *
 * A worker that dies is replaced; files it had not acknowledged are
 * redelivered by the runtime, and files it had received but not reported
 * are pushed again from here (on_worker_gone), so every file is reported
 * exactly once.
 *
 * Output: one line per file, "PATH: N JOB (worker W)", in completion order,
 * then a summary; exit 0 if every file was processed, 1 otherwise, 2 for
 * bad arguments.
 */
#define _GNU_SOURCE
#include <baton/log.h>
#include <baton/runtime.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	/* A worker that died after this line is not sent again: the
	 * supervisor reads every line of a dead worker first. */
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
		char line[64];
		int len = snprintf(line, sizeof(line), "%llu ERR out of memory\n",
				   (unsigned long long)it->id);
		if (write(report_fd, line, (size_t)len) != len)
			perror("baton-spool: write(report)");
		if (it->fd >= 0)
			close(it->fd);
		return;
	}
	j->loop = loop;
	j->id = it->id;
	/* Say it is ours: if this worker dies before it reports, the
	 * supervisor pushes the file again. */
	char line[64];
	int len = snprintf(line, sizeof(line), "%llu START %d\n", (unsigned long long)it->id,
			   bt_loop_worker_id(loop));
	if (write(report_fd, line, (size_t)len) != len)
		perror("baton-spool: write(report)");
	j->fd = it->fd;
	size_t n = it->payload_len < sizeof(j->kind) - 1 ? it->payload_len : sizeof(j->kind) - 1;
	memcpy(j->kind, it->payload, n);
	if (j->fd < 0 || bt_loop_submit(loop, NULL, do_job, job_done, j) < 0) {
		/* No descriptor, or the pool is full: report it as failed. */
		job_done(j, -EAGAIN);
	}
}

static const struct bt_handler handler = {.size = sizeof(struct bt_handler), .on_item = on_item};

/* --- the supervisor: the producer ------------------------------------------ */

enum { F_NEW, F_SENT, F_DONE }; /* a file's state */

struct spool {
	bt_runtime_t *rt;
	const char *job;
	char **paths;   /* operands, then lines of --files-from */
	uint8_t *state; /* F_* per path */
	int *owner;     /* worker that said START, -1 */
	size_t npaths, cap;
	size_t next;    /* the next path to push */
	int queued, reported, failed;
	long long total;
	int report_rd;
	bt_runtime_watch_t *report_w;
	char rbuf[8192];
	size_t rlen;
	int list_fd; /* --files-from: -1 when done or none */
	bt_runtime_watch_t *list_w;
	char lbuf[PATH_MAX + 2];
	size_t llen;
	int stopped;
};

static int add_path(struct spool *sp, const char *path, size_t len)
{
	if (sp->npaths == sp->cap) {
		size_t ncap = sp->cap ? sp->cap * 2 : 256;
		char **p = realloc(sp->paths, ncap * sizeof(*p));
		if (p)
			sp->paths = p;
		uint8_t *st = realloc(sp->state, ncap);
		if (st)
			sp->state = st;
		int *ow = realloc(sp->owner, ncap * sizeof(*ow));
		if (ow)
			sp->owner = ow;
		if (!p || !st || !ow)
			return -1;
		sp->cap = ncap;
	}
	char *copy = strndup(path, len);
	if (!copy)
		return -1;
	sp->paths[sp->npaths] = copy;
	sp->state[sp->npaths] = F_NEW;
	sp->owner[sp->npaths] = -1;
	sp->npaths++;
	return 0;
}

static void finish_if_done(struct spool *sp)
{
	if (!sp->stopped && sp->list_fd < 0 && sp->next == sp->npaths && sp->reported == sp->queued) {
		sp->stopped = 1;
		bt_runtime_stop(sp->rt);
	}
}

/* Open and push file i: 0, 1 (no room: try again on on_room), -1 (failed,
 * counted). */
static int push_file(struct spool *sp, size_t i)
{
	int fd = open(sp->paths[i], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "baton-spool: open(%s): %s\n", sp->paths[i], strerror(errno));
		return -1;
	}
	struct bt_wire_item it;
	memset(&it, 0, sizeof(it));
	it.id = (uint64_t)i;
	it.flags = BT_WIRE_ITEM_FD;
	it.fd = fd;
	it.payload = sp->job;
	it.payload_len = (uint32_t)strlen(sp->job);
	int rc = bt_runtime_push(sp->rt, &it);
	if (rc < 0)
		close(fd);
	if (rc == -EAGAIN)
		return 1;
	if (rc < 0) {
		fprintf(stderr, "baton-spool: %s: bt_runtime_push: %s\n", sp->paths[i], strerror(-rc));
		return -1;
	}
	return 0;
}

static void on_list(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg);

/* Push what waits, as long as the runtime takes it; read more of the list
 * only while few wait (memory stays bounded). */
static void pump(struct spool *sp)
{
	while (sp->next < sp->npaths) {
		size_t i = sp->next;
		int rc = sp->state[i] == F_NEW ? push_file(sp, i) : 0;
		if (rc == 1)
			break;
		sp->next++;
		if (rc < 0) {
			sp->failed++;
			sp->state[i] = F_DONE;
		} else if (sp->state[i] == F_NEW) {
			sp->state[i] = F_SENT;
			sp->queued++;
		}
	}
	int want_list = sp->list_fd >= 0 && sp->npaths - sp->next < 1024;
	if (want_list && !sp->list_w &&
	    bt_runtime_watch_fd(sp->rt, &sp->list_w, sp->list_fd, BT_WATCH_IN, on_list, sp) < 0) {
		fprintf(stderr, "baton-spool: cannot watch the file list\n");
		close(sp->list_fd);
		sp->list_fd = -1;
	} else if (!want_list && sp->list_w) {
		bt_runtime_unwatch(sp->rt, sp->list_w);
		sp->list_w = NULL;
	}
	finish_if_done(sp);
}

/* --files-from: one path per line. */
static void on_list(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	struct spool *sp = arg;
	(void)rt, (void)w, (void)revents;
	ssize_t n = read(fd, sp->lbuf + sp->llen, sizeof(sp->lbuf) - sp->llen);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0)
		sp->llen += (size_t)n;
	char *start = sp->lbuf, *nl;
	while ((nl = memchr(start, '\n', sp->llen - (size_t)(start - sp->lbuf)))) {
		if (nl > start && add_path(sp, start, (size_t)(nl - start)) < 0)
			fprintf(stderr, "baton-spool: out of memory: skipping a path\n");
		start = nl + 1;
	}
	sp->llen -= (size_t)(start - sp->lbuf);
	memmove(sp->lbuf, start, sp->llen);
	if (sp->llen == sizeof(sp->lbuf)) {
		fprintf(stderr, "baton-spool: a line of the file list is longer than PATH_MAX: skipped\n");
		sp->llen = 0;
	}
	if (n <= 0) { /* the end of the list (or an error) */
		if (n < 0)
			perror("baton-spool: read(file list)");
		else if (sp->llen && add_path(sp, sp->lbuf, sp->llen) < 0)
			fprintf(stderr, "baton-spool: out of memory: skipping a path\n");
		sp->llen = 0;
		bt_runtime_unwatch(sp->rt, sp->list_w);
		sp->list_w = NULL;
		close(sp->list_fd);
		sp->list_fd = -1;
	}
	pump(sp);
}

/* One line from a worker: "ID START W", "ID OK N W" or "ID ERR TEXT". */
static void report_line(struct spool *sp, char *line)
{
	unsigned long long id;
	long long n;
	int wid;
	char status[8];
	if (sscanf(line, "%llu %7s", &id, status) != 2 || id >= sp->npaths ||
	    sp->state[id] != F_SENT)
		return; /* a stray line, or a file already reported */
	if (!strcmp(status, "START")) {
		if (sscanf(line, "%llu START %d", &id, &wid) == 2)
			sp->owner[id] = wid;
		return;
	}
	sp->state[id] = F_DONE;
	sp->reported++;
	if (!strcmp(status, "OK") && sscanf(line, "%llu OK %lld %d", &id, &n, &wid) == 3) {
		printf("%s: %lld %s (worker %d)\n", sp->paths[id], n, sp->job, wid);
		sp->total += n;
	} else {
		printf("%s: failed: %s\n", sp->paths[id], line);
		sp->failed++;
	}
}

/* Every complete line the workers have written so far. */
static void read_reports(struct spool *sp)
{
	for (;;) {
		ssize_t n = read(sp->report_rd, sp->rbuf + sp->rlen, sizeof(sp->rbuf) - 1 - sp->rlen);
		if (n <= 0)
			break;
		sp->rlen += (size_t)n;
		char *start = sp->rbuf, *nl;
		while ((nl = memchr(start, '\n', sp->rlen - (size_t)(start - sp->rbuf)))) {
			*nl = 0;
			report_line(sp, start);
			start = nl + 1;
		}
		sp->rlen -= (size_t)(start - sp->rbuf);
		memmove(sp->rbuf, start, sp->rlen);
	}
}

static void on_reports(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)rt, (void)w, (void)fd, (void)revents;
	struct spool *sp = arg;
	read_reports(sp);
	finish_if_done(sp);
}

static int spool_start(bt_runtime_t *rt, void *user)
{
	struct spool *sp = user;
	sp->rt = rt;
	int rc = bt_runtime_watch_fd(rt, &sp->report_w, sp->report_rd, BT_WATCH_IN, on_reports, sp);
	if (rc < 0)
		return rc;
	pump(sp);
	return 0;
}

static void spool_room(bt_runtime_t *rt, void *user)
{
	(void)rt;
	pump(user);
}

/* A worker died: what it received and did not report is pushed again
 * (its last lines are in the pipe already: read them first). */
static void spool_worker_gone(bt_runtime_t *rt, unsigned worker, void *user)
{
	(void)rt;
	struct spool *sp = user;
	read_reports(sp);
	size_t again = 0;
	for (size_t i = 0; i < sp->next; i++)
		if (sp->state[i] == F_SENT && sp->owner[i] == (int)worker) {
			sp->state[i] = F_NEW;
			sp->owner[i] = -1;
			sp->queued--;
			again++;
		}
	if (!again)
		return;
	fprintf(stderr, "baton-spool: worker %u died with %zu files unreported: queueing them again\n",
		worker, again);
	/* Rewind to the first of them; pump skips the rest. */
	for (size_t i = 0; i < sp->next; i++)
		if (sp->state[i] == F_NEW) {
			sp->next = i;
			break;
		}
	pump(sp);
}

static const struct bt_producer producer = {
	.size = sizeof(struct bt_producer),
	.start = spool_start,
	.on_room = spool_room,
	.on_worker_gone = spool_worker_gone,
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: baton-spool [OPTION]... FILE...\n"
		   "Queue each FILE (an open descriptor plus the job) to a worker process or\n"
		   "thread, which counts its lines, bytes or words and reports back.\n"
		   "\nOptions:\n"
		   "  -w, --workers N       worker processes or threads, 1..256 (default 2)\n"
		   "  -m, --mode MODE       process | thread (default process)\n"
		   "  -j, --job JOB         lines | bytes | words (default lines)\n"
		   "  -f, --files-from LIST read more FILEs from LIST, one per line ('-': stdin),\n"
		   "                        as they come\n"
		   "  -h, --help            show this help and exit\n"
		   "  -V, --version         show the version and exit\n"
		   "\n'--' ends the options: a FILE after it may start with '-'.\n"
		   "\nOutput: one line per file, \"PATH: N JOB (worker W)\", in completion order,\n"
		   "then a summary.  A worker that dies is replaced and its files go to the\n"
		   "others.  BATON_LOG=info shows the runtime's log and counters.\n"
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
	bt_runtime_take_argv(argc, argv); /* before reading it: titles go there */
	struct bt_runtime_config cfg;
	if (bt_runtime_config_init(&cfg, "baton-spool", argc, argv) < 0)
		return 2;
	cfg.workers = 2;
	const char *job = "lines", *list = NULL;
	static const struct option opts[] = {
		{"workers", required_argument, NULL, 'w'}, {"mode", required_argument, NULL, 'm'},
		{"job", required_argument, NULL, 'j'},     {"files-from", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int o;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:w:m:j:f:hV", opts, NULL)) != -1) {
		char *e;
		long n;
		switch (o) {
		case 'w':
			n = strtol(optarg, &e, 10);
			if (!*optarg || *e || n < 1 || n > 256)
				return bad_usage("--workers wants 1 to 256, not '%s'", optarg);
			cfg.workers = (unsigned)n;
			break;
		case 'm':
			if (strcmp(optarg, "process") && strcmp(optarg, "thread"))
				return bad_usage("--mode wants process or thread, not '%s'", optarg);
			cfg.mode = strcmp(optarg, "thread") ? BT_MODE_PROCESS : BT_MODE_THREAD;
			break;
		case 'j':
			job = optarg;
			if (strcmp(job, "lines") && strcmp(job, "bytes") && strcmp(job, "words"))
				return bad_usage("--job wants lines, bytes or words, not '%s'", job);
			break;
		case 'f':
			list = optarg;
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
	if (optind >= argc && !list)
		return bad_usage("no FILE given%s", "");
	if (!getenv("BATON_LOG"))
		bt_log_set_level(BT_LOG_WARN); /* a command, not a daemon: quiet */

	struct spool sp;
	memset(&sp, 0, sizeof(sp));
	sp.job = job;
	sp.list_fd = -1;
	for (int i = optind; i < argc; i++)
		if (add_path(&sp, argv[i], strlen(argv[i])) < 0) {
			fprintf(stderr, "baton-spool: out of memory\n");
			return 1;
		}
	if (list) {
		sp.list_fd = strcmp(list, "-") ? open(list, O_RDONLY | O_CLOEXEC) : dup(0);
		if (sp.list_fd < 0) {
			fprintf(stderr, "baton-spool: open(%s): %s\n", list, strerror(errno));
			return 1;
		}
		struct stat st;
		if (fstat(sp.list_fd, &st) == 0 && S_ISREG(st.st_mode)) {
			/* A regular file is always readable: read it all now. */
			FILE *lf = fdopen(sp.list_fd, "r");
			char line[PATH_MAX + 2];
			while (lf && fgets(line, sizeof(line), lf)) {
				size_t len = strcspn(line, "\n");
				if (len && add_path(&sp, line, len) < 0)
					return 1;
			}
			if (lf)
				fclose(lf);
			sp.list_fd = -1;
		} else {
			fcntl(sp.list_fd, F_SETFL, fcntl(sp.list_fd, F_GETFL) | O_NONBLOCK);
		}
	}

	int rp[2];
	if (pipe2(rp, O_CLOEXEC) < 0) {
		perror("baton-spool: pipe2");
		return 1;
	}
	fcntl(rp[0], F_SETFL, O_NONBLOCK);
	report_fd = rp[1];
	sp.report_rd = rp[0];
	int keep[1] = {rp[1]};
	cfg.inherit_fds = keep; /* worker processes report on it */
	cfg.ninherit = 1;
	cfg.producer = &producer;
	cfg.flush = BT_FLUSH_ADAPTIVE;

	int rc = bt_runtime_run(&cfg, &handler, &sp);
	read_reports(&sp);
	printf("%d files, %lld %s in all, %d failed\n", sp.reported, sp.total, job,
	       sp.failed + (sp.queued - sp.reported));
	close(rp[0]);
	close(rp[1]);
	if (sp.list_fd >= 0)
		close(sp.list_fd);
	for (size_t i = 0; i < sp.npaths; i++)
		free(sp.paths[i]);
	free(sp.paths);
	free(sp.state);
	free(sp.owner);
	if (rc)
		return rc;
	return sp.failed || sp.reported != sp.queued ? 1 : 0;
}
