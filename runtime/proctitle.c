/* SPDX-License-Identifier: MIT */
/*
 * Process titles: "baton-httpd: acceptor", "baton-httpd: worker 3".  Only
 * the command line (what ps -f and pgrep -f show) changes, written over
 * argv's strings, which are contiguous; the title is cut to the room argv
 * had, never more.  The comm name (what ps -e, top and pgrep -x show)
 * stays the executable's, so that `pgrep -x baton-httpd` finds the
 * acceptor and every worker.  bt_runtime_take_argv first moves argv's
 * strings to the heap (argv[i] then points at the copies), so that nothing
 * a program parses from argv afterwards is overwritten; without it no
 * title is written.
 */
#include "runtime_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *area;
static size_t area_len;
/* For a reload (master.c): the arguments in their first order (getopt
 * permutes the caller's array), and the executable's path as it was at
 * start (a file replaced since is what runs next). */
static char **saved_argv;
static char exe_path[4096];

void bt_runtime_take_argv(int argc, char **argv)
{
	static int taken;
	if (taken || !argv || argc < 1 || !argv[0])
		return;
	taken = 1;
	char *end = argv[0] + strlen(argv[0]);
	for (int i = 1; i < argc; i++)
		if (argv[i] == end + 1)
			end = argv[i] + strlen(argv[i]);
	area = argv[0];
	area_len = (size_t)(end - area);
	ssize_t n = readlink("/proc/self/exe", exe_path, sizeof(exe_path) - 1);
	exe_path[n > 0 ? n : 0] = 0;
	saved_argv = calloc((size_t)argc + 1, sizeof(char *));
	/* Whatever the program keeps from argv must survive the titles:
	 * point argv at copies, and keep the original memory for titles. */
	for (int i = 0; i < argc; i++) {
		char *copy = strdup(argv[i]);
		if (!copy) {
			area = NULL;
			area_len = 0;
			return;
		}
		argv[i] = copy;
		if (saved_argv)
			saved_argv[i] = copy;
	}
}

char *const *bt__saved_argv(void)
{
	return saved_argv;
}

const char *bt__exe_path(void)
{
	return exe_path[0] ? exe_path : NULL;
}

int bt__proctitle_in_area(const char *p)
{
	return area && p && p >= area && p <= area + area_len;
}

void bt__proctitle_set(const char *title)
{
	if (!area || area_len == 0)
		return;
	size_t n = strlen(title);
	if (n > area_len)
		n = area_len;
	memcpy(area, title, n);
	memset(area + n, 0, area_len - n + 1);
}

void bt__thread_name(pthread_t t, const char *name)
{
	char cut[16];
	snprintf(cut, sizeof(cut), "%s", name);
	pthread_setname_np(t, cut);
}
