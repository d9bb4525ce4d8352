/* SPDX-License-Identifier: MIT */
/*
 * baton-bench: the benchmark harness.  One subcommand per benchmark; each
 * measures its points side by side in one run and prints a table.
 */
#include "bench.h"

#include <baton/version.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_of(int who)
{
	struct rusage ru;
	getrusage(who, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double bench_cpu_self(void)
{
	return cpu_of(RUSAGE_SELF);
}

double bench_cpu_children(void)
{
	return cpu_of(RUSAGE_CHILDREN);
}

double bench_median(const double *v, int n)
{
	double s[BENCH_MAX_ROUNDS];
	memcpy(s, v, sizeof(double) * (size_t)n);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && s[j - 1] > s[j]; j--) {
			double t = s[j];
			s[j] = s[j - 1];
			s[j - 1] = t;
		}
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

int bench_parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end)
		return -1;
	*out = v;
	return 0;
}

int bench_parse_int(const char *s, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < INT_MIN || v > INT_MAX)
		return -1;
	*out = (int)v;
	return 0;
}

static void vsay(const char *fmt, va_list ap)
{
	fprintf(stderr, "baton-bench: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void bench_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	exit(1);
}

const char *bench_cmd;

void bench_usage_error(void (*usage)(FILE *), const char *fmt, ...)
{
	if (!fmt) {
		usage(stderr);
		exit(2);
	}
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try 'baton-bench%s%s --help' for more information.\n", bench_cmd ? " " : "",
		bench_cmd ? bench_cmd : "");
	exit(2);
}

void bench_getopt_error(void (*usage)(FILE *), int o, char **argv)
{
	const char *opt = argv[optind - 1];
	if (o == ':')
		bench_usage_error(usage, "%s needs a value", opt);
	if (optopt)
		bench_usage_error(usage, "unknown option '-%c'", optopt);
	bench_usage_error(usage, "unknown option '%s'", opt);
}

void bench_version(void)
{
	printf("baton-bench (baton) %s\nCopyright (c) 2026 The baton authors.\n"
	       "License: MIT <https://opensource.org/licenses/MIT>.\n",
	       BATON_VERSION_STRING);
}

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *what;
} commands[] = {
	{"fdpass", bench_fdpass, "descriptors/s through SCM_RIGHTS by batch size, against dup()+close()"},
	{"conns", bench_conns, "every server design under the same load, one table (the headline)"},
	{"sweep", bench_sweep, "tune a server built on baton: batch x flush x dispatch x clients or rate"},
	{"load", bench_load, "load generator: http, echo or raw; closed loop or a fixed rate"},
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: baton-bench COMMAND [OPTION]...\n"
		   "The benchmark harness of baton %s: every design measured side by side.\n"
		   "\nCommands:\n",
		BATON_VERSION_STRING);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
	fprintf(f, "\n'baton-bench COMMAND --help' describes each command's options.\n"
		   "\nOptions:\n"
		   "  -h, --help      show this help and exit\n"
		   "  -V, --version   show the version and exit\n"
		   "\nExit status:\n"
		   "  0   done\n"
		   "  1   a run failed (a server did not start, a socket call failed)\n"
		   "  2   bad usage\n");
}

int main(int argc, char **argv)
{
	if (argc < 2)
		bench_usage_error(usage, "which benchmark?");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		bench_version();
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name)) {
			bench_cmd = commands[i].name;
			return commands[i].fn(argc - 1, argv + 1);
		}
	bench_usage_error(usage, "unknown command '%s'", argv[1]);
}
