/* SPDX-License-Identifier: MIT */
/*
 * Command-line flags shared by every program built on the runtime, and
 * the application's own, in one parser: --flag value or --flag=value, a
 * clear message and exit status 2 for anything wrong.
 */
#include <baton/runtime.h>

#include "internal.h"
#include "runtime_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void bt_runtime_config_init(struct bt_runtime_config *cfg, const char *name, int argc,
			    char **argv)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mode = BT_MODE_PROCESS;
	cfg->threads = 1;
	cfg->drain_timeout_ms = 10000;
	cfg->backlog = 4096;
	bt_queue_config_init(&cfg->queue);
	cfg->dispatch = BT_DISPATCH_RR;
	cfg->backend = BT_BACKEND_AUTO;
	cfg->name = name ? name : "baton";
	cfg->argc = argc;
	cfg->argv = argv;
	static int titled;
	if (!titled && argv) {
		titled = 1;
		bt__proctitle_init(argc, argv);
	}
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

struct rt_flag {
	const char *name;
	const char *arg;
	const char *help;
};

static const struct rt_flag rt_flags[] = {
	{"listen", "ADDR", "listen on HOST:PORT, [IPV6]:PORT or a unix socket path (repeatable)"},
	{"workers", "N", "workers (default: one per online CPU)"},
	{"batch", "N", "connections per hand-off message, 1..253 (default 32)"},
	{"flush", "POLICY", "adaptive[:HOLD_US] | size | delay:US (default adaptive:200)"},
	{"dispatch", "POLICY", "rr | least | hash (default rr)"},
	{"mode", "MODE", "process | thread (default process)"},
	{"threads", "T", "process mode: T worker threads in each worker process (default 1)"},
	{"pin", NULL, "pin worker i to CPU i (off by default)"},
	{"drain-timeout", "MS", "on SIGTERM, time workers get to finish (default 10000)"},
	{"fire-and-forget", NULL, "close the acceptor's copy right after sending (no redelivery)"},
	{"backend", "NAME", "auto | io_uring | epoll (default auto)"},
	{"help", NULL, "this text"},
	{"version", NULL, "print the version"},
	{NULL, NULL, NULL},
};

static void usage(FILE *f, const struct bt_runtime_config *cfg, const struct bt_flag *app,
		  const char *summary)
{
	fprintf(f, "usage: %s [OPTIONS]\n", cfg->name);
	if (summary)
		fprintf(f, "\n%s\n", summary);
	if (app && app->name) {
		fprintf(f, "\n%s options:\n", cfg->name);
		for (const struct bt_flag *a = app; a->name; a++) {
			char left[64];
			snprintf(left, sizeof(left), "--%s%s%s", a->name, a->arg ? " " : "",
				 a->arg ? a->arg : "");
			fprintf(f, "  %-26s %s\n", left, a->help);
		}
	}
	fprintf(f, "\nruntime options:\n");
	for (const struct rt_flag *r = rt_flags; r->name; r++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", r->name, r->arg ? " " : "",
			 r->arg ? r->arg : "");
		fprintf(f, "  %-26s %s\n", left, r->help);
	}
	fprintf(f, "\nsignals: TERM/INT drain and exit 0, USR1 prints counters.\n"
		   "environment: BATON_LOG=error|warn|info|debug, BATON_BACKEND=io_uring|epoll\n");
}

static int bad(const struct bt_runtime_config *cfg, const struct bt_flag *app,
	       const char *summary, const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "%s: ", cfg->name);
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	usage(stderr, cfg, app, NULL);
	(void)summary;
	return 2;
}

/* Apply one runtime flag; 0, or -1 for a bad value. */
static int set_runtime(struct bt_runtime_config *cfg, const char *name, const char *v)
{
	unsigned long n;
	if (!strcmp(name, "listen")) {
		if (cfg->nlisten == BT_RUNTIME_MAX_LISTEN || !*v)
			return -1;
		cfg->listen[cfg->nlisten++] = v;
	} else if (!strcmp(name, "workers")) {
		if (parse_uint(v, 1, 1024, &n) < 0)
			return -1;
		cfg->workers = (unsigned)n;
	} else if (!strcmp(name, "batch")) {
		if (parse_uint(v, 1, 253, &n) < 0)
			return -1;
		cfg->queue.batch = (unsigned)n;
	} else if (!strcmp(name, "flush")) {
		return bt_queue_parse_flush(v, &cfg->queue) < 0 ? -1 : 0;
	} else if (!strcmp(name, "dispatch")) {
		return bt_acceptor_parse_dispatch(v, &cfg->dispatch) < 0 ? -1 : 0;
	} else if (!strcmp(name, "mode")) {
		if (!strcmp(v, "process"))
			cfg->mode = BT_MODE_PROCESS;
		else if (!strcmp(v, "thread"))
			cfg->mode = BT_MODE_THREAD;
		else
			return -1;
	} else if (!strcmp(name, "threads")) {
		if (parse_uint(v, 1, 64, &n) < 0)
			return -1;
		cfg->threads = (unsigned)n;
	} else if (!strcmp(name, "drain-timeout")) {
		if (parse_uint(v, 0, 3600000, &n) < 0)
			return -1;
		cfg->drain_timeout_ms = (unsigned)n;
	} else if (!strcmp(name, "backend")) {
		if (!strcmp(v, "auto"))
			cfg->backend = BT_BACKEND_AUTO;
		else if (!strcmp(v, "io_uring"))
			cfg->backend = BT_BACKEND_URING;
		else if (!strcmp(v, "epoll"))
			cfg->backend = BT_BACKEND_EPOLL;
		else
			return -1;
	}
	return 0;
}

static const char *expected(const char *name)
{
	if (!strcmp(name, "workers"))
		return "a number from 1 to 1024";
	if (!strcmp(name, "batch"))
		return "a number from 1 to 253";
	if (!strcmp(name, "flush"))
		return "adaptive, adaptive:US, size or delay:US (US from 1 to 1000000)";
	if (!strcmp(name, "dispatch"))
		return "rr, least or hash";
	if (!strcmp(name, "mode"))
		return "process or thread";
	if (!strcmp(name, "threads"))
		return "a number from 1 to 64";
	if (!strcmp(name, "drain-timeout"))
		return "milliseconds, 0 to 3600000";
	if (!strcmp(name, "backend"))
		return "auto, io_uring or epoll";
	if (!strcmp(name, "listen"))
		return "HOST:PORT, [IPV6]:PORT or a path (at most 16 listeners)";
	return "a valid value";
}

int bt_runtime_parse_args(struct bt_runtime_config *cfg, int argc, char **argv,
			  const struct bt_flag *app, const char *summary)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) != 0 || a[2] == 0)
			return bad(cfg, app, summary, "unexpected argument '%s'%s", a,
				   a[0] == '-' ? " (options are spelled --name)" : "");
		char name[64];
		const char *eq = strchr(a + 2, '=');
		size_t nlen = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
		if (nlen >= sizeof(name))
			return bad(cfg, app, summary, "unknown option '%s'%s", a, "");
		memcpy(name, a + 2, nlen);
		name[nlen] = 0;

		const struct bt_flag *af = NULL;
		for (const struct bt_flag *f = app; f && f->name; f++)
			if (!strcmp(f->name, name))
				af = f;
		const struct rt_flag *rf = NULL;
		for (const struct rt_flag *r = rt_flags; !af && r->name; r++)
			if (!strcmp(r->name, name))
				rf = r;
		if (!af && !rf)
			return bad(cfg, app, summary, "unknown option '--%s'%s", name, "");
		const char *argname = af ? af->arg : rf->arg;
		const char *value = NULL;
		if (argname) {
			if (eq)
				value = eq + 1;
			else if (i + 1 < argc)
				value = argv[++i];
			else
				return bad(cfg, app, summary, "--%s needs a value (%s)", name, argname);
		} else if (eq) {
			return bad(cfg, app, summary, "--%s takes no value%s", name, "");
		}

		if (af) {
			char err[256] = "";
			if (af->set(af->ctx, value, err, sizeof(err)) < 0)
				return bad(cfg, app, summary, "--%s: %s", name, err[0] ? err : "bad value");
			continue;
		}
		if (!strcmp(name, "help")) {
			usage(stdout, cfg, app, summary);
			return 1;
		}
		if (!strcmp(name, "version")) {
			printf("%s (baton %s)\n", cfg->name, bt_version());
			return 1;
		}
		if (!strcmp(name, "pin")) {
			cfg->pin = 1;
			continue;
		}
		if (!strcmp(name, "fire-and-forget")) {
			cfg->queue.fire_and_forget = 1;
			continue;
		}
		if (set_runtime(cfg, name, value) < 0) {
			fprintf(stderr, "%s: --%s: '%s' is not %s\n", cfg->name, name, value,
				expected(name));
			usage(stderr, cfg, app, NULL);
			return 2;
		}
	}
	if (cfg->threads > 1 && cfg->mode == BT_MODE_THREAD) {
		fprintf(stderr, "%s: --threads is for --mode process (worker processes of T threads "
				"each); in thread mode --workers sets the number of threads\n",
			cfg->name);
		return 2;
	}
	unsigned long procs = cfg->workers ? cfg->workers : (unsigned long)sysconf(_SC_NPROCESSORS_ONLN);
	if (cfg->threads > 1 && procs * cfg->threads > 4096) {
		fprintf(stderr, "%s: --workers x --threads is %lu: at most 4096 worker loops\n",
			cfg->name, procs * cfg->threads);
		return 2;
	}
	return 0;
}
