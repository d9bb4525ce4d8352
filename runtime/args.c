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
	/* Titles are written over argv's original memory: move argv to
	 * copies first, so that a name taken from argv[0] is not overwritten. */
	static int titled;
	if (!titled && argv) {
		titled = 1;
		bt__proctitle_init(argc, argv);
	}
	if (!name || !*name)
		name = argc > 0 && argv && argv[0] && *argv[0] ? basename_of(argv[0])
								: program_invocation_short_name;
	d.name = name;
	d.argc = argc;
	d.argv = argv;
	int rc = bt__sized_init(cfg, size, CONFIG_MIN, &d, sizeof(d));
	if (rc < 0)
		return rc;
	bt__log_set_ident(name);
	return 0;
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

/* The runtime's flags; val is its index + RT_BASE (getopt_long's return). */
enum {
	RT_LISTEN, RT_WORKERS, RT_BATCH, RT_FLUSH, RT_DISPATCH, RT_MODE, RT_THREADS, RT_PIN,
	RT_DRAIN, RT_WATCHDOG, RT_OUT_HIGH, RT_FAF, RT_BACKEND, RT_HELP, RT_VERSION, RT_COUNT
};
#define RT_BASE 0x1000
#define APP_BASE 0x2000

struct rt_flag {
	const char *name;
	const char *arg;
	const char *help;   /* the default, if any, is added from the config */
	const char *expect; /* what a bad value should have been */
};

static const struct rt_flag rt_flags[RT_COUNT] = {
	[RT_LISTEN] = {"listen", "ADDR",
		       "listen on HOST:PORT, [IPV6]:PORT or a unix socket path; repeatable, "
		       "at most 16; not with socket activation",
		       "HOST:PORT, [IPV6]:PORT or a path (at most 16 listeners)"},
	[RT_WORKERS] = {"workers", "N", "worker processes (or threads in thread mode)",
			"a number from 1 to 1024"},
	[RT_BATCH] = {"batch", "N", "connections per hand-off message, 1..253",
		      "a number from 1 to 253"},
	[RT_FLUSH] = {"flush", "POLICY",
		      "when a batch goes: adaptive[:HOLD_US] | size | delay:US",
		      "adaptive, adaptive:US, size or delay:US (US from 1 to 1000000)"},
	[RT_DISPATCH] = {"dispatch", "POLICY", "which worker: rr | least | hash (of the peer's address)",
			 "rr, least or hash"},
	[RT_MODE] = {"mode", "MODE", "workers are processes or threads: process | thread",
		     "process or thread"},
	[RT_THREADS] = {"threads", "T", "process mode: T worker threads in each worker process",
			"a number from 1 to 64"},
	[RT_PIN] = {"pin", NULL, "pin worker loop i to CPU i", NULL},
	[RT_DRAIN] = {"drain-timeout", "MS", "on SIGTERM, time workers get to finish",
		      "milliseconds, 0 to 3600000"},
	[RT_WATCHDOG] = {"worker-timeout", "MS",
			 "kill and replace a worker stuck this long with work; 0: never",
			 "milliseconds, 0 or 100 to 3600000"},
	[RT_OUT_HIGH] = {"out-high", "BYTES",
			 "per connection: unsent output that pauses reading",
			 "bytes, 4096 to 1073741824"},
	[RT_FAF] = {"fire-and-forget", NULL,
		    "close the acceptor's copy once sent (no redelivery; for comparison)", NULL},
	[RT_BACKEND] = {"backend", "NAME", "auto | io_uring | epoll", "auto, io_uring or epoll"},
	[RT_HELP] = {"help", NULL, "show this help and exit", NULL},
	[RT_VERSION] = {"version", NULL, "show the version and exit", NULL},
};

static const struct bt_flag *flag_at(const struct bt_flag *app, size_t stride, size_t i)
{
	return (const struct bt_flag *)((const char *)app + i * stride);
}

static const char *mode_name(int mode)
{
	return mode == BT_MODE_THREAD ? "thread" : "process";
}

static const char *backend_name(int b)
{
	return b == BT_BACKEND_URING ? "io_uring" : b == BT_BACKEND_EPOLL ? "epoll" : "auto";
}

/* The current value of a runtime flag, for "(default ...)"; "" for none. */
static void rt_default(const struct bt_runtime_config *cfg, int i, char *buf, size_t cap)
{
	struct bt_queue_config qc;
	char flush[32];
	buf[0] = 0;
	switch (i) {
	case RT_LISTEN:
		if (cfg->default_listen)
			snprintf(buf, cap, "%s", cfg->default_listen);
		break;
	case RT_WORKERS:
		if (cfg->workers)
			snprintf(buf, cap, "%u", cfg->workers);
		else
			snprintf(buf, cap, "one per online CPU");
		break;
	case RT_BATCH:
		snprintf(buf, cap, "%u", cfg->batch);
		break;
	case RT_FLUSH:
		bt__runtime_queue_config(cfg, &qc);
		snprintf(buf, cap, "%s", bt_queue_flush_name(&qc, flush, sizeof(flush)));
		break;
	case RT_DISPATCH:
		snprintf(buf, cap, "%s", bt_acceptor_dispatch_name(cfg->dispatch));
		break;
	case RT_MODE:
		snprintf(buf, cap, "%s", mode_name(cfg->mode));
		break;
	case RT_THREADS:
		snprintf(buf, cap, "%u", cfg->threads ? cfg->threads : 1);
		break;
	case RT_PIN:
		snprintf(buf, cap, "%s", cfg->pin ? "on" : "off");
		break;
	case RT_DRAIN:
		snprintf(buf, cap, "%u", cfg->drain_timeout_ms);
		break;
	case RT_WATCHDOG:
		snprintf(buf, cap, "%u", cfg->worker_timeout_ms);
		break;
	case RT_OUT_HIGH:
		snprintf(buf, cap, "%zu", cfg->out_high);
		break;
	case RT_FAF:
		snprintf(buf, cap, "%s", cfg->fire_and_forget ? "on" : "off");
		break;
	case RT_BACKEND:
		snprintf(buf, cap, "%s", backend_name(cfg->backend));
		break;
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
		char def[64];
		rt_default(cfg, i, def, sizeof(def));
		print_flag(f, i == RT_HELP ? "-h" : i == RT_VERSION ? "-V" : NULL, rt_flags[i].name,
			   rt_flags[i].arg, rt_flags[i].help, def);
	}
	fprintf(f,
		"\n'--flag value' and '--flag=value' both work, as do unambiguous prefixes;\n"
		"'--' ends the options.\n"
		"\nSignals:\n"
		"  TERM, INT   stop accepting, hand over what is held, let workers finish\n"
		"              open connections (up to --drain-timeout), then exit 0\n"
		"  USR1        print the counters to stderr (they are printed at exit too)\n"
		"  HUP         logged and otherwise ignored: there is no reload yet;\n"
		"              restart to change the configuration\n"
		"\nExit status:\n"
		"  0   drained cleanly after TERM or INT, or --help/--version\n"
		"  1   start-up failure (the failing call is logged)\n"
		"  2   bad usage, or --listen together with socket activation\n"
		"\nEnvironment:\n"
		"  BATON_LOG       error | warn | info | debug (default info)\n"
		"  BATON_BACKEND   io_uring | epoll: overrides --backend auto\n"
		"  LISTEN_FDS      with LISTEN_PID: systemd socket activation; the passed\n"
		"                  sockets are served (--listen is then refused)\n"
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

/* Apply one runtime flag with a value; 0, or -1 for a bad value. */
static int set_runtime(struct bt_runtime_config *cfg, int i, const char *v)
{
	unsigned long n;
	struct bt_queue_config qc;
	switch (i) {
	case RT_LISTEN:
		if (cfg->nlisten == BT_RUNTIME_MAX_LISTEN || !*v)
			return -1;
		cfg->listen[cfg->nlisten++] = v;
		return 0;
	case RT_WORKERS:
		if (parse_uint(v, 1, 1024, &n) < 0)
			return -1;
		cfg->workers = (unsigned)n;
		return 0;
	case RT_BATCH:
		if (parse_uint(v, 1, 253, &n) < 0)
			return -1;
		cfg->batch = (unsigned)n;
		return 0;
	case RT_FLUSH:
		bt__runtime_queue_config(cfg, &qc);
		if (bt_queue_parse_flush(v, &qc) < 0)
			return -1;
		cfg->flush = qc.flush;
		cfg->delay_us = qc.delay_us;
		return 0;
	case RT_DISPATCH:
		return bt_acceptor_parse_dispatch(v, &cfg->dispatch) < 0 ? -1 : 0;
	case RT_MODE:
		if (!strcmp(v, "process"))
			cfg->mode = BT_MODE_PROCESS;
		else if (!strcmp(v, "thread"))
			cfg->mode = BT_MODE_THREAD;
		else
			return -1;
		return 0;
	case RT_THREADS:
		if (parse_uint(v, 1, 64, &n) < 0)
			return -1;
		cfg->threads = (unsigned)n;
		return 0;
	case RT_DRAIN:
		if (parse_uint(v, 0, 3600000, &n) < 0)
			return -1;
		cfg->drain_timeout_ms = (unsigned)n;
		return 0;
	case RT_WATCHDOG:
		if (parse_uint(v, 0, 3600000, &n) < 0 || (n && n < 100))
			return -1;
		cfg->worker_timeout_ms = (unsigned)n;
		return 0;
	case RT_OUT_HIGH:
		if (parse_uint(v, 4096, 1ul << 30, &n) < 0)
			return -1;
		cfg->out_high = n;
		return 0;
	case RT_BACKEND:
		if (!strcmp(v, "auto"))
			cfg->backend = BT_BACKEND_AUTO;
		else if (!strcmp(v, "io_uring"))
			cfg->backend = BT_BACKEND_URING;
		else if (!strcmp(v, "epoll"))
			cfg->backend = BT_BACKEND_EPOLL;
		else
			return -1;
		return 0;
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
		if (o == 'h')
			o = RT_BASE + RT_HELP;
		else if (o == 'V')
			o = RT_BASE + RT_VERSION;
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
		} else if (o == RT_BASE + RT_HELP) {
			usage(stdout, cfg, app, stride, summary);
			rc = 1;
		} else if (o == RT_BASE + RT_VERSION) {
			printf("%s (baton) %s\nCopyright (c) 2026 The baton authors.\n"
			       "License: MIT <https://opensource.org/licenses/MIT>.\n",
			       cfg->name, bt_version());
			rc = 1;
		} else if (o == RT_BASE + RT_PIN) {
			cfg->pin = 1;
		} else if (o == RT_BASE + RT_FAF) {
			cfg->fire_and_forget = 1;
		} else if (set_runtime(cfg, o - RT_BASE, optarg) < 0) {
			const struct rt_flag *r = &rt_flags[o - RT_BASE];
			char what[160];
			snprintf(what, sizeof(what), "'%s' is not %s", optarg, r->expect);
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
	unsigned long procs = cfg->workers ? cfg->workers : (unsigned long)sysconf(_SC_NPROCESSORS_ONLN);
	if (cfg->threads > 1 && procs * cfg->threads > 4096) {
		char n[32];
		snprintf(n, sizeof(n), "%lu", procs * cfg->threads);
		return bad(cfg, "--workers x --threads is %s: at most 4096 worker loops%s", n, "");
	}
	return 0;
}
