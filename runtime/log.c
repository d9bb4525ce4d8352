/* SPDX-License-Identifier: MIT */
/*
 * Logging: one formatted line per call, written to stderr in a single
 * write(2) so lines of different processes sharing stderr do not interleave.
 */
#include "internal.h"

#include <baton/version.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static bt_log_fn log_fn;
static void *log_ctx;
/* -1: not read from BATON_LOG yet.  Atomic: worker threads log too. */
static _Atomic int log_level = -1;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *bt_version(void)
{
	return BATON_VERSION_STRING;
}

const char *bt_log_level_name(int level)
{
	if (level < 0 || level > BT_LOG_DEBUG)
		return "?";
	return level_names[level];
}

void bt_log_set_handler(bt_log_fn fn, void *ctx)
{
	log_fn = fn;
	log_ctx = ctx;
}

void bt_log_set_level(int level)
{
	log_level = level;
}

static int current_level(void)
{
	if (log_level >= 0)
		return log_level;
	int lvl = BT_LOG_INFO;
	const char *env = getenv("BATON_LOG");
	for (int i = 0; env && i <= BT_LOG_DEBUG; i++)
		if (strcasecmp(env, level_names[i]) == 0)
			lvl = i;
	log_level = lvl;
	return lvl;
}

static void vlog(int level, const char *suffix, const char *fmt, va_list ap)
{
	if (level > current_level())
		return;
	int saved = errno;
	char line[1024];
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	if (suffix)
		n += snprintf(line + n, sizeof(line) - (size_t)n, ": %s", suffix);
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;

	if (log_fn) {
		log_fn(log_ctx, level, line);
	} else {
		char out[1100];
		int m = snprintf(out, sizeof(out), "baton[%ld]: %s: %s\n",
				 (long)getpid(), bt_log_level_name(level), line);
		if (m > 0) {
			if ((size_t)m >= sizeof(out))
				m = sizeof(out) - 1, out[m - 1] = '\n';
			ssize_t w = write(STDERR_FILENO, out, (size_t)m);
			(void)w;
		}
	}
	errno = saved;
}

void bt__log(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(level, NULL, fmt, ap);
	va_end(ap);
}

int bt__log_errno(int level, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(level, strerror(err < 0 ? -err : err), fmt, ap);
	va_end(ap);
	return err;
}

uint64_t bt__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bt__close(int fd)
{
	int saved = errno;
	if (fd >= 0)
		(void)close(fd);
	errno = saved;
}
