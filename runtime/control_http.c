/* SPDX-License-Identifier: MIT */
/*
 * The --metrics listener's request heads: which answer one deserves.
 * Pure, so that it is fuzzed alone (tests/fuzz/fuzz_metrics.c); control.c
 * serves the answer.
 */
#include "control_http.h"

#include <string.h>

/* The end of the head: after "\r\n\r\n" or "\n\n"; 0 if not within len. */
static size_t head_end(const char *b, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (b[i] != '\n')
			continue;
		if (b[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && b[i + 1] == '\r' && b[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* The next token of line[*at..n) up to a space: its length (0: none). */
static size_t token(const char *line, size_t n, size_t *at, const char **tok)
{
	size_t i = *at;
	*tok = line + i;
	while (i < n && line[i] != ' ')
		i++;
	size_t len = i - *at;
	*at = i < n ? i + 1 : i; /* one space between tokens */
	return len;
}

int bt__metrics_route(const char *buf, size_t len, int *head_only)
{
	*head_only = 0;
	size_t end = head_end(buf, len < BT__HEAD_MAX ? len : BT__HEAD_MAX);
	if (!end)
		return len >= BT__HEAD_MAX ? 431 : 0;
	const char *nl = memchr(buf, '\n', end);
	size_t n = (size_t)(nl - buf);
	if (n && buf[n - 1] == '\r')
		n--;
	const char *method, *target, *version;
	size_t at = 0;
	size_t ml = token(buf, n, &at, &method);
	size_t tl = token(buf, n, &at, &target);
	size_t vl = token(buf, n, &at, &version);
	if (at != n || !ml || !tl || vl != 8 || memcmp(version, "HTTP/1.", 7) ||
	    (version[7] != '0' && version[7] != '1') || memchr(buf, 0, n))
		return 400;
	for (size_t i = 0; i < ml; i++)
		if (method[i] < 'A' || method[i] > 'Z')
			return 400;
	int is_head = ml == 4 && !memcmp(method, "HEAD", 4);
	if (!is_head && !(ml == 3 && !memcmp(method, "GET", 3)))
		return 405;
	size_t path = 0;
	while (path < tl && target[path] != '?')
		path++;
	if (path != 8 || memcmp(target, "/metrics", 8))
		return 404;
	*head_only = is_head;
	return 200;
}
