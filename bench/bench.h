/* SPDX-License-Identifier: MIT */
/* Shared helpers of baton-bench's subcommands. */
#ifndef BATON_BENCH_H
#define BATON_BENCH_H

#include <stdio.h>

#define BENCH_MAX_ROUNDS 15

/* CLOCK_MONOTONIC seconds. */
double bench_now(void);
/* user+sys CPU seconds of this process / of its waited-for children. */
double bench_cpu_self(void);
double bench_cpu_children(void);
/* Median of n values (n <= BENCH_MAX_ROUNDS); v is not changed. */
double bench_median(const double *v, int n);
/* Strict number parsing: 0, or -1 if s is not entirely a number. */
int bench_parse_double(const char *s, double *out);
int bench_parse_int(const char *s, int *out);
/* "baton-bench: message" and exit 1. */
void bench_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* The message (if any) and a hint to --help on stderr, exit 2 (usage
 * names the command's usage text, for a message-less call: printed whole). */
void bench_usage_error(void (*usage)(FILE *), const char *fmt, ...)
	__attribute__((noreturn, format(printf, 2, 3)));
/* getopt_long returned '?' or ':' (optstring "+:hV"): say which option. */
void bench_getopt_error(void (*usage)(FILE *), int o, char **argv) __attribute__((noreturn));
/* "baton-bench (baton) VERSION" and the licence, on stdout. */
void bench_version(void);
/* The subcommand being run ("conns"), for messages. */
extern const char *bench_cmd;

int bench_fdpass(int argc, char **argv);
int bench_load(int argc, char **argv);
int bench_conns(int argc, char **argv);
int bench_sweep(int argc, char **argv);

/* The load generator (bench_load.c) as a function, for the harness. */
#include <netinet/in.h>
#include <stdint.h>

enum { BENCH_ERR_REFUSED, BENCH_ERR_RESET, BENCH_ERR_TIMEOUT, BENCH_ERR_SHORT,
       BENCH_ERR_STATUS, BENCH_ERR_OTHER, BENCH_ERR_KINDS };

struct load_cfg {
	struct sockaddr_in addr;
	int clients, threads, keepalive;
	double seconds, timeout;
	const char *path;
	char req[256]; /* filled by bench_load_run */
	size_t reqlen;
};

struct load_result {
	uint64_t requests, errors;
	uint64_t err[BENCH_ERR_KINDS];
	double seconds, rps;
	uint64_t p50_us, p99_us, p999_us, max_us;
};

int bench_load_run(struct load_cfg *cfg, struct load_result *res);
const char *bench_load_error_name(int kind);

#endif
