/* SPDX-License-Identifier: MIT */
/*
 * Command-line flags shared by every program built on the runtime, and
 * the application's own, in one getopt_long parser: --flag value,
 * --flag=value, unambiguous prefixes, -h and -V, "--" to end the flags; a
 * clear message and exit status 2 for anything wrong.  --help shows the
 * defaults as they stand in the config (an application may change them
 * before parsing), the signals, the environment and the exit status.
 */
#include <baton/runtime.h>

#include "internal.h"
#include "runtime_internal.h"

#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The smallest struct bt_runtime_config a caller may pass: ABI 1's (0.2). */
#define CONFIG_MIN offsetof(struct bt_runtime_config, worker_timeout_ms)
/* The smallest struct bt_flag: ABI 1's. */
#define FLAG_MIN sizeof(struct bt_flag)

static void config_defaults(struct bt_runtime_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->mode = BT_MODE_PROCESS;
	cfg->threads = 1;
	cfg->acceptors = 1;
	cfg->drain_timeout_ms = 10000;
	cfg->backlog = 4096;
	struct bt_queue_config qc;
	bt_queue_config_init(&qc);
	cfg->batch = qc.batch;
	cfg->flush = qc.flush;
	cfg->delay_us = qc.delay_us;
	cfg->fire_and_forget = qc.fire_and_forget;
	cfg->max_inflight = qc.max_inflight;
	cfg->dispatch = BT_DISPATCH_RR;
	cfg->backend = BT_BACKEND_AUTO;
	cfg->worker_timeout_ms = 10000;
	cfg->reload_timeout_ms = 10000;
	cfg->proxy_timeout_ms = 5000;
	struct bt_loop_config lc;
	bt_loop_config_init(&lc);
	cfg->out_high = lc.out_high;
}

static const char *basename_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

int bt_runtime_config_init_sized(struct bt_runtime_config *cfg, size_t size, const char *name,
				 int argc, char **argv)
{
	struct bt_runtime_config d;
	config_defaults(&d);
	if (size < CONFIG_MIN || !cfg)
		return -EINVAL;
	if (!name || !*name)
		name = argc > 0 && argv && argv[0] && *argv[0] ? basename_of(argv[0])
								: program_invocation_short_name;
	d.name = name;
	d.argc = argc;
	d.argv = argv;
	return bt__sized_init(cfg, size, CONFIG_MIN, &d, sizeof(d));
}

int bt__runtime_config_take(struct bt_runtime_config *dst, const struct bt_runtime_config *cfg)
{
	config_defaults(dst);
	return bt__sized_in(dst, sizeof(*dst), cfg, CONFIG_MIN, "bt_runtime_config");
}

void bt__runtime_queue_config(const struct bt_runtime_config *cfg, struct bt_queue_config *qc)
{
	bt_queue_config_init(qc);
	qc->batch = cfg->batch;
	qc->flush = cfg->flush;
	qc->delay_us = cfg->delay_us;
	qc->fire_and_forget = cfg->fire_and_forget;
	qc->max_inflight = cfg->max_inflight;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+')
		return -1;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * The runtime's flags, defined once: this table drives parsing, the
 * checks of each value (and the message that says what was expected), and
 * --help with each flag's current value.  An entry is one of:
 *   F_UINT, F_SIZE  a number in [min, max] (or 0 too, with zero_ok) into an
 *                   unsigned or size_t field; expect names the unit;
 *   F_ENUM          one of names[] (value = index) into an int field;
 *   F_ON            no value: sets an int field to 1;
 *   F_FN            parsed and shown by functions of its own;
 *   F_HELP, F_VERSION.
 * getopt_long returns RT_BASE + the entry's index.
 */
enum { F_UINT, F_SIZE, F_ENUM, F_ON, F_FN, F_HELP, F_VERSION };
#define RT_BASE 0x1000
#define APP_BASE 0x2000
#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})

struct rt_flag {
	const char *name;
	const char *arg;  /* NULL: takes no value */
	const char *help; /* the current value is added from the config */
	int kind;
	size_t off;       /* the config field */
	unsigned long min, max;
	int zero_ok;
	const char *unit; /* F_UINT/F_SIZE: "a number", "milliseconds", "bytes" */
	const char *const *names; /* F_ENUM */
	const char *expect;       /* F_FN: what a bad value should have been */
	int (*set)(struct bt_runtime_config *cfg, const char *v);
	void (*show)(const struct bt_runtime_config *cfg, char *buf, size_t cap);
};

#define FIELD(f) offsetof(struct bt_runtime_config, f)

static int set_listen(struct bt_runtime_config *cfg, const char *v)
{
	if (cfg->nlisten == BT_RUNTIME_MAX_LISTEN || !*v)
		return -1;
	cfg->listen[cfg->nlisten++] = v;
	return 0;
}

static void show_listen(const struct bt_runtime_config *cfg, char *buf, size_t cap)
{
	if (cfg->default_listen)
		snprintf(buf, cap, "%s", cfg->default_listen);
}

static int set_flush(struct bt_runtime_config *cfg, const char *v)
{
	struct bt_queue_config qc;
	bt__runtime_queue_config(cfg, &qc);
	if (bt_queue_parse_flush(v, &qc) < 0)
		return -1;
	cfg->flush = qc.flush;
	cfg->delay_us = qc.delay_us;
	return 0;
}

static void show_flush(const struct bt_runtime_config *cfg, char *buf, size_t cap)
{
	struct bt_queue_config qc;
	char flush[32];
	bt__runtime_queue_config(cfg, &qc);
	snprintf(buf, cap, "%s", bt_queue_flush_name(&qc, flush, sizeof(flush)));
}

static int set_workers(struct bt_runtime_config *cfg, const char *v)
{
	unsigned long n;
	if (parse_uint(v, 0, 1024, &n) < 0)
		return -1;
	cfg->workers = n ? (unsigned)n : BT_RUNTIME_WORKERS_NONE;
	return 0;
}

static void show_workers(const struct bt_runtime_config *cfg, char *buf, size_t cap)
{
	if (cfg->workers == BT_RUNTIME_WORKERS_NONE)
		snprintf(buf, cap, "0");
	else if (cfg->workers)
		snprintf(buf, cap, "%u", cfg->workers);
	else
		snprintf(buf, cap, "one per online CPU");
}

static int set_attach(struct bt_runtime_config *cfg, const char *v)
{
	if (!*v || strlen(v) > 107)
		return -1;
	cfg->attach = v;
	return 0;
}

static int set_worker_of(struct bt_runtime_config *cfg, const char *v)
{
	if (!*v || strlen(v) > 107)
		return -1;
	cfg->worker_of = v;
	return 0;
}

static int set_pid_file(struct bt_runtime_config *cfg, const char *v)
{
	if (!*v || strlen(v) > 4000)
		return -1;
	cfg->pid_file = v;
	return 0;
}

static int set_control(struct bt_runtime_config *cfg, const char *v)
{
	if (!*v || strlen(v) > 107)
		return -1;
	cfg->control = v;
	return 0;
}

static void show_control(const struct bt_runtime_config *cfg, char *buf, size_t cap)
{
	if (cfg->control)
		snprintf(buf, cap, "%s", cfg->control);
	else
		snprintf(buf, cap, "$RUNTIME_DIRECTORY/control when set, else none");
}

static int set_metrics(struct bt_runtime_config *cfg, const char *v)
{
	if (!*v || strlen(v) > 200)
		return -1;
	cfg->metrics = v;
	return 0;
}

static int set_flags_file(struct bt_runtime_config *cfg, const char *v)
{
	(void)cfg, (void)v;
	return -1; /* read before getopt (expand_flags_files): here only when
		    * abbreviated, or inside a flags file */
}

static int set_attach_uid(struct bt_runtime_config *cfg, const char *v)
{
	unsigned long n;
	if (cfg->nattach_uid == BT_RUNTIME_MAX_ATTACH_UIDS)
		return -1;
	if (parse_uint(v, 0, 0xfffffffeul, &n) < 0) {
		struct passwd *pw = getpwnam(v);
		if (!pw)
			return -1;
		n = pw->pw_uid;
	}
	cfg->attach_uid[cfg->nattach_uid++] = (unsigned)n;
	return 0;
}

static void show_attach(const struct bt_runtime_config *cfg, char *buf, size_t cap)
{
	if (cfg->attach)
		snprintf(buf, cap, "%s", cfg->attach);
}

static const struct rt_flag rt_flags[] = {
	{"listen", "ADDR",
	 "listen on HOST:PORT, [IPV6]:PORT or a unix socket path; repeatable, at most 16; not "
	 "with socket activation; ADDR,proxy: its connections start with a PROXY protocol "
	 "header (v1 or v2, as HAProxy's send-proxy-v2 sends)",
	 F_FN, 0, 0, 0, 0, NULL, NULL, "HOST:PORT, [IPV6]:PORT or a path (at most 16 listeners)",
	 set_listen, show_listen},
	{"workers", "N", "worker processes (or threads in thread mode); 0: none of our own, "
	 "only attached ones (with --attach)", F_FN, 0, 0, 0, 0, NULL, NULL,
	 "a number from 0 to 1024", set_workers, show_workers},
	{"batch", "N", "connections per hand-off message, 1..253 (with --worker-of: the most this "
	 "worker takes, told to the server in HELLO)", F_UINT, FIELD(batch), 1, 253, 0,
	 "a number", NULL, NULL, NULL, NULL},
	{"flush", "POLICY", "when a batch goes: adaptive[:HOLD_US] | size | delay:US", F_FN, 0, 0, 0,
	 0, NULL, NULL, "adaptive, adaptive:US, size or delay:US (US from 1 to 1000000)", set_flush,
	 show_flush},
	{"dispatch", "POLICY", "which worker: rr | least | hash (of the peer's address)", F_ENUM,
	 FIELD(dispatch), 0, 0, 0, NULL, NAMES("rr", "least", "hash"), NULL, NULL, NULL},
	{"mode", "MODE", "workers are processes or threads: process | thread", F_ENUM, FIELD(mode), 0,
	 0, 0, NULL, NAMES("process", "thread"), NULL, NULL, NULL},
	{"threads", "T", "process mode: T worker threads in each worker process", F_UINT,
	 FIELD(threads), 1, 64, 0, "a number", NULL, NULL, NULL, NULL},
	{"acceptors", "K", "acceptor rings (threads); the others wait on standby until the first is busy",
	 F_UINT, FIELD(acceptors), 1, BT_RUNTIME_MAX_ACCEPTORS, 0, "a number", NULL, NULL, NULL,
	 NULL},
	{"pin", NULL, "pin worker loop i to CPU i", F_ON, FIELD(pin), 0, 0, 0, NULL, NULL, NULL, NULL,
	 NULL},
	{"drain-timeout", "MS", "on SIGTERM, time workers get to finish", F_UINT,
	 FIELD(drain_timeout_ms), 0, 3600000, 0, "milliseconds", NULL, NULL, NULL, NULL},
	{"grace", "MS", "on SIGTERM, first serve on this long while health checks fail "
	 "(bt_loop_state), then drain; a second SIGTERM drains at once", F_UINT,
	 FIELD(grace_ms), 0, 3600000, 0, "milliseconds", NULL, NULL, NULL, NULL},
	{"proxy-timeout", "MS", "a --listen ADDR,proxy connection's PROXY header must arrive within "
	 "this", F_UINT, FIELD(proxy_timeout_ms), 1, 3600000, 0, "milliseconds", NULL, NULL, NULL,
	 NULL},
	{"worker-timeout", "MS", "kill and replace a worker stuck this long with work; 0: never",
	 F_UINT, FIELD(worker_timeout_ms), 100, 3600000, 1, "milliseconds", NULL, NULL, NULL, NULL},
	{"out-high", "BYTES", "per connection: unsent output that pauses reading", F_SIZE,
	 FIELD(out_high), 4096, 1ul << 30, 0, "bytes", NULL, NULL, NULL, NULL},
	{"fire-and-forget", NULL, "close the acceptor's copy once sent (no redelivery; for comparison)",
	 F_ON, FIELD(fire_and_forget), 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
	{"attach", "ADDR",
	 "let worker processes attach at ADDR (a path, created 0600, or @name) at any time",
	 F_FN, 0, 0, 0, 0, NULL, NULL, "a path or @name (at most 107 bytes)", set_attach,
	 show_attach},
	{"attach-uid", "UID", "with --attach: a uid (or user name) that may attach besides ours; "
	 "repeatable, at most 8", F_FN, 0, 0, 0, 0, NULL, NULL,
	 "a uid or a user name (at most 8)", set_attach_uid, NULL},
	{"worker-of", "ADDR", "run as an attached worker of the server at ADDR (see --attach), "
	 "not as a server", F_FN, 0, 0, 0, 0, NULL, NULL, "a path or @name (at most 107 bytes)",
	 set_worker_of, NULL},
	{"flags-file", "FILE", "more flags from FILE, one per line ('--name value', '#' comments), "
	 "where this flag stands; read again at every reload", F_FN, 0, 0, 0, 0, NULL, NULL,
	 "a readable file, named in full (--flags-file), not inside a flags file",
	 set_flags_file, NULL},
	{"pid-file", "FILE", "write the main pid to FILE (atomically, at start)", F_FN, 0, 0, 0, 0,
	 NULL, NULL, "a file name", set_pid_file, NULL},
	{"reload-timeout", "MS", "on SIGHUP, time the new generation gets to be ready; "
	 "else the old one serves on", F_UINT, FIELD(reload_timeout_ms), 100, 3600000, 0,
	 "milliseconds", NULL, NULL, NULL, NULL},
	{"control", "ADDR", "the control socket for baton-ctl: a path (created 0600), @name, or "
	 "none", F_FN, 0, 0, 0, 0, NULL, NULL, "a path, @name or none (at most 107 bytes)",
	 set_control, show_control},
	{"metrics", "ADDR", "serve GET /metrics (Prometheus text) on HOST:PORT, [IPV6]:PORT or a "
	 "unix path", F_FN, 0, 0, 0, 0, NULL, NULL, "HOST:PORT, [IPV6]:PORT or a path", set_metrics,
	 NULL},
	{"backend", "NAME", "auto | io_uring | epoll", F_ENUM, FIELD(backend), 0, 0, 0, NULL,
	 NAMES("auto", "io_uring", "epoll"), NULL, NULL, NULL},
	{"help", NULL, "show this help and exit", F_HELP, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL},
	{"version", NULL, "show the version and exit", F_VERSION, 0, 0, 0, 0, NULL, NULL, NULL, NULL,
	 NULL},
};
#define RT_COUNT ((int)(sizeof(rt_flags) / sizeof(rt_flags[0])))

/* The enums' values are their names' indexes: checked at build time. */
_Static_assert(BT_DISPATCH_RR == 0 && BT_DISPATCH_LEAST == 1 && BT_DISPATCH_HASH == 2, "dispatch");
_Static_assert(BT_MODE_PROCESS == 0 && BT_MODE_THREAD == 1, "mode");
_Static_assert(BT_BACKEND_AUTO == 0 && BT_BACKEND_URING == 1 && BT_BACKEND_EPOLL == 2, "backend");

static const struct bt_flag *flag_at(const struct bt_flag *app, size_t stride, size_t i)
{
	return (const struct bt_flag *)((const char *)app + i * stride);
}

static void *field(struct bt_runtime_config *cfg, const struct rt_flag *r)
{
	return (char *)cfg + r->off;
}

static const void *cfield(const struct bt_runtime_config *cfg, const struct rt_flag *r)
{
	return (const char *)cfg + r->off;
}

/* The current value of a runtime flag, for "(default ...)"; "" for none. */
static void rt_default(const struct bt_runtime_config *cfg, const struct rt_flag *r, char *buf,
		       size_t cap)
{
	buf[0] = 0;
	if (r->show) {
		r->show(cfg, buf, cap);
		return;
	}
	switch (r->kind) {
	case F_UINT:
		snprintf(buf, cap, "%u", *(const unsigned *)cfield(cfg, r));
		break;
	case F_SIZE:
		snprintf(buf, cap, "%zu", *(const size_t *)cfield(cfg, r));
		break;
	case F_ENUM: {
		int v = *(const int *)cfield(cfg, r), n = 0;
		while (r->names[n])
			n++;
		snprintf(buf, cap, "%s", v >= 0 && v < n ? r->names[v] : "?");
		break;
	}
	case F_ON:
		snprintf(buf, cap, "%s", *(const int *)cfield(cfg, r) ? "on" : "off");
		break;
	}
}

/* What a bad value of r should have been: "a number from 1 to 1024",
 * "milliseconds, 0 or 100 to 3600000", "process or thread". */
static void rt_expect(const struct rt_flag *r, char *buf, size_t cap)
{
	if (r->kind == F_FN) {
		snprintf(buf, cap, "%s", r->expect);
	} else if (r->kind == F_ENUM) {
		size_t used = 0;
		buf[0] = 0;
		for (int i = 0; r->names[i] && used < cap; i++) {
			const char *sep = i == 0 ? "" : r->names[i + 1] ? ", " : " or ";
			int w = snprintf(buf + used, cap - used, "%s%s", sep, r->names[i]);
			if (w > 0)
				used += (size_t)w;
		}
	} else if (!strcmp(r->unit, "a number")) {
		snprintf(buf, cap, "a number from %s%lu to %lu", r->zero_ok ? "0 or " : "", r->min, r->max);
	} else {
		snprintf(buf, cap, "%s, %s%lu to %lu", r->unit, r->zero_ok ? "0 or " : "", r->min, r->max);
	}
}

static void print_flag(FILE *f, const char *shortopt, const char *name, const char *arg,
		       const char *help, const char *def)
{
	char left[64];
	snprintf(left, sizeof(left), "%s%s--%s%s%s", shortopt ? shortopt : "", shortopt ? ", " : "    ",
		 name, arg ? " " : "", arg ? arg : "");
	fprintf(f, "  %-26s %s", left, help ? help : "");
	if (def && *def)
		fprintf(f, " (default %s)", def);
	fputc('\n', f);
}

static void usage(FILE *f, const struct bt_runtime_config *cfg, const struct bt_flag *app,
		  size_t stride, const char *summary)
{
	fprintf(f, "Usage: %s [OPTION]...\n", cfg->name);
	if (summary)
		fprintf(f, "%s\n", summary);
	if (app && app->name) {
		fprintf(f, "\nOptions of %s:\n", cfg->name);
		for (size_t i = 0; flag_at(app, stride, i)->name; i++) {
			const struct bt_flag *a = flag_at(app, stride, i);
			print_flag(f, NULL, a->name, a->arg, a->help, NULL);
		}
	}
	fprintf(f, "\nRuntime options:\n");
	for (int i = 0; i < RT_COUNT; i++) {
		const struct rt_flag *r = &rt_flags[i];
		char def[64];
		rt_default(cfg, r, def, sizeof(def));
		print_flag(f, r->kind == F_HELP ? "-h" : r->kind == F_VERSION ? "-V" : NULL, r->name,
			   r->arg, r->help, def);
	}
	fprintf(f,
		"\n'--flag value' and '--flag=value' both work, as do unambiguous prefixes;\n"
		"'--' ends the options.\n"
		"\nSignals:\n"
		"  TERM, INT   stop accepting, hand over what is held, let workers finish\n"
		"              open connections (up to --drain-timeout), then exit 0;\n"
		"              with --grace MS, first serve on for MS while health checks\n"
		"              fail (a second TERM or INT drains at once)\n"
		"  USR1        print the counters to stderr (they are printed at exit too)\n"
		"  HUP         reload: start the program again from its path on disk,\n"
		"              with the same arguments; the new generation takes the\n"
		"              listeners over, the old one finishes its connections;\n"
		"              the main pid stays (docs/reload.md)\n"
		"\nExit status:\n"
		"  0   drained cleanly after TERM or INT, or --help/--version\n"
		"  1   start-up failure (the failing call is logged)\n"
		"  2   bad usage, or --listen together with socket activation\n"
		"\nEnvironment:\n"
		"  BATON_LOG       error | warn | info | debug (default info)\n"
		"  BATON_BACKEND   io_uring | epoll: overrides --backend auto\n"
		"  BATON_DIRECT    1: thread mode passes connections as direct descriptors\n"
		"                  (io_uring fixed files, Linux 6.8); 0 (default): regular\n"
		"  BATON_DIRECT_SLOTS  thread mode, direct descriptors: the connections one\n"
		"                  worker holds at most (default RLIMIT_NOFILE, up to 262144)\n"
		"  BATON_ACCEPTORS_ALWAYS  1: with --acceptors K, all accept from the start\n"
		"                  (default: the others on standby until the first is busy)\n"
		"  LISTEN_FDS      with LISTEN_PID: systemd socket activation; the passed\n"
		"                  sockets are served (--listen is then refused)\n"
		"  LISTEN_FDNAMES  a socket named proxy (FileDescriptorName=proxy) reads\n"
		"                  a PROXY header, as --listen ADDR,proxy\n"
		"  NOTIFY_SOCKET   systemd Type=notify: READY=1, STATUS=, STOPPING=1\n"
		"  JOURNAL_STREAM  when it names stderr, log lines carry <N> priorities\n");
}

static int bad(const struct bt_runtime_config *cfg, const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "%s: ", cfg->name);
	fprintf(stderr, fmt, a, b);
	fprintf(stderr, "\nTry '%s --help' for more information.\n", cfg->name);
	return 2;
}

#define FLAGS_FILE_MAX (64 * 1024)
#define FLAGS_MAX 1024
#define FLAGS_FILES_MAX 8

/* What expand_flags_files made: kept for the process's life (the config
 * points into it), and reachable from here so that nothing reads as a
 * leak.  Each expansion's array holds the arguments, a NULL, the files'
 * texts, and the array of the expansion before. */
static char **flags_argv;
#define TEXTS (FLAGS_MAX + 1)
#define CHAIN (TEXTS + FLAGS_FILES_MAX)

/* The text of each flags file as this process first read it (for
 * bt__flags_export). */
static char *flags_raw[FLAGS_FILES_MAX];

void bt__flags_export(int on)
{
	for (int i = 0; i < FLAGS_FILES_MAX && flags_raw[i]; i++) {
		char name[32];
		snprintf(name, sizeof(name), "BATON_FLAGS_FILE_%d", i);
		if (on)
			setenv(name, flags_raw[i], 1);
		else
			unsetenv(name);
	}
}

/* One line of a flags file into out[] (at most 2 arguments): "--name
 * value" splits at the first blank, "--name=value" and anything else stay
 * whole; blank lines and '#' comments give none.  The count. */
static int file_line(char *line, char **out)
{
	while (*line == ' ' || *line == '\t')
		line++;
	size_t n = strlen(line);
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
		line[--n] = 0;
	if (!n || line[0] == '#')
		return 0;
	char *blank = strpbrk(line, " \t");
	out[0] = line;
	if (line[0] != '-' || line[1] != '-' || !blank || memchr(line, '=', (size_t)(blank - line)))
		return 1;
	*blank++ = 0;
	while (*blank == ' ' || *blank == '\t')
		blank++;
	out[1] = blank;
	return 2;
}

/*
 * --flags-file FILE: the file's flags take its place in argv (later flags
 * still win).  The copy and its strings live as long as the process: the
 * config points into them.  0, or the exit status 2 after the message.
 */
static int expand_flags_files(const struct bt_runtime_config *cfg, int argc, char **argv,
			      int *xargc, char ***xargv)
{
	*xargc = argc;
	*xargv = argv;
	int found = 0;
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		found |= !strcmp(argv[i], "--flags-file") || !strncmp(argv[i], "--flags-file=", 13);
	if (!found)
		return 0;
	char **out = calloc(CHAIN + 1, sizeof(char *));
	if (!out)
		return bad(cfg, "out of memory%s%s", "", "");
	out[CHAIN] = (char *)flags_argv;
	flags_argv = out;
	int nfiles = 0;
	int n = 0, rest = 0;
	out[n++] = argv[0];
	for (int i = 1; i < argc; i++) {
		const char *path = NULL;
		if (!rest && !strcmp(argv[i], "--"))
			rest = 1;
		else if (!rest && !strcmp(argv[i], "--flags-file")) {
			if (i + 1 == argc)
				return bad(cfg, "--flags-file needs a value%s%s", "", "");
			path = argv[++i];
		} else if (!rest && !strncmp(argv[i], "--flags-file=", 13))
			path = argv[i] + 13;
		if (!path) {
			if (n == FLAGS_MAX)
				return bad(cfg, "more than %s arguments%s", "1024", "");
			out[n++] = argv[i];
			continue;
		}
		if (nfiles == FLAGS_FILES_MAX)
			return bad(cfg, "--flags-file: more than %s files%s", "8", "");
		char *text = out[TEXTS + nfiles] = malloc(FLAGS_FILE_MAX + 1);
		if (!text)
			return bad(cfg, "--flags-file %s: %s", path, "out of memory");
		/* A master that execs itself after a reload reads what it read
		 * at its start (bt__flags_export), not the file, which may be
		 * half-written now: a bad file must not end the master. */
		char name[32];
		snprintf(name, sizeof(name), "BATON_FLAGS_FILE_%d", nfiles);
		const char *kept = getenv("BATON_MASTER") ? getenv(name) : NULL;
		size_t len;
		if (kept) {
			len = strlen(kept);
			if (len > FLAGS_FILE_MAX)
				len = FLAGS_FILE_MAX;
			memcpy(text, kept, len);
		} else {
			FILE *f = fopen(path, "re");
			if (!f)
				return bad(cfg, "--flags-file %s: %s", path, strerror(errno));
			len = fread(text, 1, FLAGS_FILE_MAX + 1, f);
			int err = ferror(f);
			fclose(f);
			if (err || len > FLAGS_FILE_MAX)
				return bad(cfg, "--flags-file %s: %s", path,
					   err ? "cannot be read" : "larger than 64 KiB");
		}
		unsetenv(name); /* the generations this process starts read the file */
		text[len] = 0;
		if (!flags_raw[nfiles])
			flags_raw[nfiles] = strdup(text);
		nfiles++;
		for (char *line = text, *next; line; line = next) {
			next = strchr(line, '\n');
			if (next)
				*next++ = 0;
			char *args[2];
			int k = file_line(line, args);
			if (n + k > FLAGS_MAX)
				return bad(cfg, "more than %s arguments%s", "1024", "");
			for (int j = 0; j < k; j++)
				out[n++] = args[j];
		}
	}
	out[n] = NULL;
	*xargc = n;
	*xargv = out;
	return 0;
}

/* Apply one runtime flag that takes a value; 0, or -1 for a bad value. */
static int set_runtime(struct bt_runtime_config *cfg, const struct rt_flag *r, const char *v)
{
	unsigned long n;
	switch (r->kind) {
	case F_FN:
		return r->set(cfg, v);
	case F_UINT:
	case F_SIZE:
		if (parse_uint(v, r->zero_ok ? 0 : r->min, r->max, &n) < 0 || (n && n < r->min))
			return -1;
		if (r->kind == F_UINT)
			*(unsigned *)field(cfg, r) = (unsigned)n;
		else
			*(size_t *)field(cfg, r) = n;
		return 0;
	case F_ENUM:
		for (int i = 0; r->names[i]; i++)
			if (!strcmp(v, r->names[i])) {
				*(int *)field(cfg, r) = i;
				return 0;
			}
		return -1;
	}
	return -1;
}

/* Is opt ("--pre" or "--pre=value") a prefix of two or more options?  Then
 * out lists them ("--workers or --worker-timeout"). */
static int ambiguous(const struct option *opts, const char *opt, char *out, size_t cap)
{
	if (opt[0] != '-' || opt[1] != '-')
		return 0;
	const char *n = opt + 2;
	size_t len = strcspn(n, "=");
	int count = 0;
	size_t used = 0;
	out[0] = 0;
	for (const struct option *o = opts; o->name; o++) {
		if (len == 0 || strncmp(o->name, n, len) != 0)
			continue;
		int w = snprintf(out + used, cap - used, "%s--%s", count ? " or " : "", o->name);
		if (w > 0 && (size_t)w < cap - used)
			used += (size_t)w;
		count++;
	}
	return count >= 2;
}

int bt_runtime_parse_args_sized(struct bt_runtime_config *cfg, int argc, char **argv,
				const struct bt_flag *app, size_t stride, const char *summary)
{
	if (!cfg || cfg->size < CONFIG_MIN || !cfg->name || argc < 0 || (argc > 0 && !argv) ||
	    (app && stride < FLAG_MIN))
	{
		bt__log(BT_LOG_ERROR, "bt_runtime_parse_args: a config not set up by "
				      "bt_runtime_config_init, or a bad flag table");
		return 2;
	}
	/* Before any value is taken from argv: titles will be written over
	 * its original memory. */
	bt_runtime_take_argv(argc, argv);
	int xrc = expand_flags_files(cfg, argc, argv, &argc, &argv);
	if (xrc)
		return xrc;
	size_t napp = 0;
	while (app && flag_at(app, stride, napp)->name)
		napp++;
	struct option *opts = calloc(napp + RT_COUNT + 1, sizeof(*opts));
	if (!opts) {
		fprintf(stderr, "%s: out of memory\n", cfg->name);
		return 2;
	}
	size_t k = 0;
	for (size_t i = 0; i < napp; i++) {
		const struct bt_flag *a = flag_at(app, stride, i);
		opts[k++] = (struct option){a->name, a->arg ? required_argument : no_argument, NULL,
					    (int)(APP_BASE + i)};
	}
	for (int i = 0; i < RT_COUNT; i++) {
		/* An application flag of the same name wins. */
		int taken = 0;
		for (size_t j = 0; j < napp; j++)
			taken |= !strcmp(flag_at(app, stride, j)->name, rt_flags[i].name);
		if (!taken)
			opts[k++] = (struct option){rt_flags[i].name,
						    rt_flags[i].arg ? required_argument : no_argument,
						    NULL, RT_BASE + i};
	}

	/* '+': stop at the first operand (none is taken); ':': report a
	 * missing value as ':' so that the message is ours. */
	int rc = 0, o;
	char cands[256];
	opterr = 0;
	optind = 0; /* glibc: start afresh, even if getopt ran before */
	while (rc == 0 && (o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		const char *opt = argv[optind - 1];
		for (int i = 0; (o == 'h' || o == 'V') && i < RT_COUNT; i++)
			if (rt_flags[i].kind == (o == 'h' ? F_HELP : F_VERSION))
				o = RT_BASE + i;
		if (o == '?') {
			if (optopt)
				rc = bad(cfg, "unknown option '-%s'%s", (char[]){(char)optopt, 0}, "");
			else if (ambiguous(opts, opt, cands, sizeof(cands)))
				rc = bad(cfg, "ambiguous option '%s' (%s)", opt, cands);
			else
				rc = bad(cfg, "unknown option '%s'%s", opt,
					 opt[0] == '-' && opt[1] != '-' ? " (long options are spelled --name)"
									 : "");
		} else if (o == ':') {
			char name[64];
			const char *n = opt[1] == '-' ? opt + 2 : opt + 1;
			snprintf(name, sizeof(name), "%.*s", (int)strcspn(n, "="), n);
			rc = bad(cfg, "--%s needs a value%s", name, "");
		} else if (o >= APP_BASE) {
			const struct bt_flag *a = flag_at(app, stride, (size_t)(o - APP_BASE));
			char err[256] = "";
			if (a->set(a->ctx, optarg, err, sizeof(err)) < 0)
				rc = bad(cfg, "--%s: %s", a->name, err[0] ? err : "bad value");
		} else if (rt_flags[o - RT_BASE].kind == F_HELP) {
			usage(stdout, cfg, app, stride, summary);
			rc = 1;
		} else if (rt_flags[o - RT_BASE].kind == F_VERSION) {
			printf("%s (baton) %s\nCopyright (c) 2026 The baton authors.\n"
			       "License: MIT <https://opensource.org/licenses/MIT>.\n",
			       cfg->name, bt_version());
			rc = 1;
		} else if (rt_flags[o - RT_BASE].kind == F_ON) {
			*(int *)field(cfg, &rt_flags[o - RT_BASE]) = 1;
		} else if (set_runtime(cfg, &rt_flags[o - RT_BASE], optarg) < 0) {
			const struct rt_flag *r = &rt_flags[o - RT_BASE];
			char what[200], expect[128];
			rt_expect(r, expect, sizeof(expect));
			snprintf(what, sizeof(what), "'%s' is not %s", optarg, expect);
			rc = bad(cfg, "--%s: %s", r->name, what);
		}
	}
	free(opts);
	if (rc)
		return rc;
	if (optind < argc)
		return bad(cfg, "unexpected argument '%s'%s", argv[optind],
			   strcmp(argv[optind - 1], "--") ? "" : " after '--' (this program takes no operands)");
	if (cfg->threads > 1 && cfg->mode == BT_MODE_THREAD)
		return bad(cfg, "--threads is for --mode process (worker processes of T threads each); "
				"in thread mode --workers sets the number of threads%s%s", "", "");
	if (cfg->workers == BT_RUNTIME_WORKERS_NONE && !cfg->attach)
		return bad(cfg, "--workers: '0' is not %s%s",
			   "a number from 1 to 1024 without --attach (0 leaves no worker of our "
			   "own: give --attach ADDR for workers that attach)", "");
	if (cfg->worker_of && cfg->attach)
		return bad(cfg, "--worker-of and --attach: a program is a worker or a server, not "
				"both%s%s", "", "");
	if (cfg->nattach_uid && !cfg->attach)
		return bad(cfg, "--attach-uid without --attach%s%s", "", "");
	unsigned long procs = cfg->workers == BT_RUNTIME_WORKERS_NONE ? 0
			      : cfg->workers ? cfg->workers
					     : (unsigned long)sysconf(_SC_NPROCESSORS_ONLN);
	if (cfg->threads > 1 && procs * cfg->threads > 4096) {
		char n[32];
		snprintf(n, sizeof(n), "%lu", procs * cfg->threads);
		return bad(cfg, "--workers x --threads is %s: at most 4096 worker loops%s", n, "");
	}
	return 0;
}
