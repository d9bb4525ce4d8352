/* SPDX-License-Identifier: MIT */
/*
 * A small test harness: assertion macros that print the expression and
 * both values, a case table, and a descriptor-leak check around each case
 * (/proc/self/fd counted before and after).  Each case runs in a forked
 * child, so a crash or a failed assertion fails that case alone and the
 * others still run; the exit code is 0 if all passed, 1 otherwise, and 77
 * (ctest SKIP_RETURN_CODE) if every case skipped.
 *
 *   static void test_x(void) { CHECK_EQ(f(), 0); }
 *   static const struct check_case cases[] = {{"x", test_x}, {0}};
 *   int main(int argc, char **argv) { return check_main(argc, argv, cases); }
 */
#ifndef BATON_TESTS_CHECK_H
#define BATON_TESTS_CHECK_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK_SKIP_CODE 77

struct check_case {
	const char *name;
	void (*fn)(void);
};

static const char *check_current = "?";

static void check_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 3, 4)));
static void check_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "FAIL %s (%s:%d): ", check_current, file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	_exit(1);
}

/* Skip the current case: the kernel or machine lacks something. */
#define CHECK_SKIP(...)                                                     \
	do {                                                                \
		fprintf(stderr, "SKIP %s: ", check_current);                \
		fprintf(stderr, __VA_ARGS__);                               \
		fputc('\n', stderr);                                        \
		_exit(CHECK_SKIP_CODE);                                     \
	} while (0)

#define CHECK(cond)                                                         \
	do {                                                                \
		if (!(cond))                                                \
			check_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
	} while (0)

#define CHECK_EQ(a, b)                                                      \
	do {                                                                \
		long long check_a_ = (long long)(a);                        \
		long long check_b_ = (long long)(b);                        \
		if (check_a_ != check_b_)                                   \
			check_fail(__FILE__, __LINE__,                      \
				   "%s == %s: %lld != %lld", #a, #b,        \
				   check_a_, check_b_);                     \
	} while (0)

#define CHECK_OP(a, op, b)                                                  \
	do {                                                                \
		long long check_a_ = (long long)(a);                        \
		long long check_b_ = (long long)(b);                        \
		if (!(check_a_ op check_b_))                                \
			check_fail(__FILE__, __LINE__,                      \
				   "%s %s %s: %lld vs %lld", #a, #op, #b,   \
				   check_a_, check_b_);                     \
	} while (0)

/* An API call that returns a negative errno: compare and name both. */
#define CHECK_ERR(expr, err)                                                \
	do {                                                                \
		long long check_r_ = (long long)(expr);                     \
		long long check_e_ = (long long)(err);                      \
		if (check_r_ != check_e_)                                   \
			check_fail(__FILE__, __LINE__,                      \
				   "%s: got %lld (%s), want %lld (%s)",     \
				   #expr, check_r_,                         \
				   check_r_ < 0 ? strerror((int)-check_r_)  \
						: "not an error",           \
				   check_e_,                                \
				   check_e_ < 0 ? strerror((int)-check_e_)  \
						: "not an error");          \
	} while (0)

/* A libc call that returns -1 and sets errno must succeed. */
#define CHECK_SYS(expr)                                                     \
	do {                                                                \
		if ((expr) < 0)                                             \
			check_fail(__FILE__, __LINE__, "%s: %s", #expr,     \
				   strerror(errno));                        \
	} while (0)

static inline int check_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

static inline void check_list_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], target[300];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = 0;
		fprintf(stderr, "  fd %s -> %s\n", e->d_name, target);
	}
	if (d)
		closedir(d);
}

static inline int check_fd_is_cloexec(int fd)
{
	int fl = fcntl(fd, F_GETFD);
	return fl >= 0 && (fl & FD_CLOEXEC);
}

static inline int check_fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static inline double check_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait for a helper child and require exit status 0. */
#define CHECK_CHILD_OK(pid)                                                 \
	do {                                                                \
		int check_st_;                                              \
		pid_t check_p_;                                             \
		do                                                          \
			check_p_ = waitpid((pid), &check_st_, 0);           \
		while (check_p_ < 0 && errno == EINTR);                     \
		CHECK_EQ(check_p_, (pid));                                  \
		if (!WIFEXITED(check_st_) || WEXITSTATUS(check_st_) != 0)   \
			check_fail(__FILE__, __LINE__,                      \
				   "helper %d: %s %d", (int)(pid),          \
				   WIFEXITED(check_st_) ? "exit" : "signal", \
				   WIFEXITED(check_st_)                     \
					   ? WEXITSTATUS(check_st_)         \
					   : WTERMSIG(check_st_));          \
	} while (0)

/* Run one case in a child with the leak check; returns 0 pass, 1 fail,
 * 77 skip. */
static int check_run_one(const struct check_case *c, int timeout_s)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		check_current = c->name;
		alarm((unsigned)timeout_s); /* a hung case dies of SIGALRM */
		int before = check_count_fds();
		c->fn();
		/* Reap helpers the case forgot, so their fds are gone too. */
		int after = check_count_fds();
		if (after != before) {
			fprintf(stderr, "FAIL %s: descriptor leak: %d open before, %d after\n",
				c->name, before, after);
			check_list_fds();
			_exit(1);
		}
		fflush(NULL);
		_exit(0);
	}
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st))
		return WEXITSTATUS(st) == CHECK_SKIP_CODE ? 77 : WEXITSTATUS(st) ? 1 : 0;
	fprintf(stderr, "FAIL %s: killed by signal %d (%s)\n", c->name,
		WTERMSIG(st), strsignal(WTERMSIG(st)));
	return 1;
}

/* Usage: prog [case ...]; no argument runs every case. */
static int check_main(int argc, char **argv, const struct check_case *cases)
{
	int passed = 0, failed = 0, skipped = 0;
	int timeout = 60;
	const char *t = getenv("CHECK_CASE_TIMEOUT");
	if (t && atoi(t) > 0)
		timeout = atoi(t);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (const struct check_case *c = cases; c->name; c++) {
		if (argc > 1) {
			int want = 0;
			for (int i = 1; i < argc; i++)
				want |= strcmp(argv[i], c->name) == 0;
			if (!want)
				continue;
		}
		double t0 = check_now();
		int rc = check_run_one(c, timeout);
		double ms = (check_now() - t0) * 1e3;
		if (rc == 0) {
			passed++;
			printf("ok   %-40s %8.1f ms\n", c->name, ms);
		} else if (rc == 77) {
			skipped++;
			printf("skip %-40s\n", c->name);
		} else {
			failed++;
			printf("FAIL %-40s\n", c->name);
		}
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	if (failed)
		return 1;
	if (passed == 0 && skipped > 0)
		return CHECK_SKIP_CODE;
	return passed ? 0 : 1;
}

#endif
