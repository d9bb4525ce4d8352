/* SPDX-License-Identifier: MIT */
/*
 * Logging: one formatted line per call, written to stderr in a single
 * write(2) so lines of different processes sharing stderr do not interleave.
 * Each starts with the program's name and pid; when stderr is the journal
 * (JOURNAL_STREAM holds its device and inode), with a <N> syslog priority
 * too, which journald strips and stores as the entry's priority.
 */
#include "internal.h"

#include <baton/version.h>

#include <errno.h>
#include <sys/stat.h>
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
/* syslog(3) priorities of the levels: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const int level_prio[] = {3, 4, 6, 7};

/* The name lines start with; the runtime sets the program's (set once at
 * start-up, before threads). */
static char ident[64];
/* -1: not checked yet; 0/1: stderr is (not) the journal's stream. */
static _Atomic int journal = -1;

void bt__log_set_ident(const char *name)
{
	snprintf(ident, sizeof(ident), "%s", name && *name ? name : "baton");
	journal = -1; /* stderr may have been redirected since */
}

/* JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected stdout and
 * stderr to; a child whose stderr was redirected keeps the variable, so the
 * descriptor itself is compared. */
static int stderr_is_journal(void)
{
	int j = journal;
	if (j >= 0)
		return j;
	j = 0;
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (env && sscanf(env, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
		j = 1;
	journal = j;
	return j;
}

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

int bt__log_enabled(int level)
{
	return level <= current_level();
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
		char out[1200], prio[8] = "";
		if (stderr_is_journal())
			snprintf(prio, sizeof(prio), "<%d>", level_prio[level < 0 ? 0 : level > BT_LOG_DEBUG ? BT_LOG_DEBUG : level]);
		int m = snprintf(out, sizeof(out), "%s%s[%ld]: %s: %s\n", prio,
				 ident[0] ? ident : program_invocation_short_name, (long)getpid(),
				 bt_log_level_name(level), line);
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
