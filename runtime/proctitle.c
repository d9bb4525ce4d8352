/* SPDX-License-Identifier: MIT */
/*
 * Process titles: "baton: acceptor", "baton: worker 3".  The comm name
 * (prctl PR_SET_NAME, 15 bytes, what top shows) and the command line (what
 * ps -f shows), written over argv's strings, which are contiguous; the
 * title is cut to the room argv had, never more.  bt__proctitle_init
 * first moves argv's strings to the heap (argv[i] then points at the
 * copies), so that nothing a program parsed from argv is overwritten.
 */
#include "runtime_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

static char *area;
static size_t area_len;

void bt__proctitle_init(int argc, char **argv)
{
	if (!argv || argc < 1 || !argv[0])
		return;
	char *end = argv[0] + strlen(argv[0]);
	for (int i = 1; i < argc; i++)
		if (argv[i] == end + 1)
			end = argv[i] + strlen(argv[i]);
	area = argv[0];
	area_len = (size_t)(end - area);
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
	}
}

void bt__proctitle_set(const char *title)
{
	prctl(PR_SET_NAME, title, 0, 0, 0);
	if (!area || area_len == 0)
		return;
	size_t n = strlen(title);
	if (n > area_len)
		n = area_len;
	memcpy(area, title, n);
	memset(area + n, 0, area_len - n + 1);
}
