/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for baton-httpd's request parser (apps/http_parse.c):
 * any bytes a client can send.  Checks, beyond the sanitizers: a head end is
 * inside the input; a parsed request's target lies inside the head; a
 * refused request gets one of the documented statuses; a cleaned path has
 * no NUL byte and no ".." segment.
 */
#include "../../apps/http_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	/* The server never parses more than this. */
	if (size > HTTP_MAX_HEAD * 2)
		size = HTTP_MAX_HEAD * 2;
	size_t he = http_head_end(p, size);
	if (he > size)
		abort();
	/* Parse the head if complete, else the whole input (the parser must
	 * cope with a head that does not end with an empty line too). */
	size_t len = he ? he : size;
	struct http_req r;
	int status = http_parse_head(p, len, &r);
	if (status != 0 && status != 400 && status != 501 && status != 505)
		abort();
	if (status == 0) {
		if (r.target < p || r.target_len == 0 || r.target + r.target_len > p + len)
			abort();
		if (r.method < HTTP_GET || r.method > HTTP_OTHER || (r.minor != 0 && r.minor != 1))
			abort();
		char out[4096];
		int n = http_clean_path(r.target, r.target_len, out, sizeof(out));
		if (n >= 0) {
			if ((size_t)n >= sizeof(out) || strlen(out) != (size_t)n)
				abort();
			for (char *seg = out; *seg;) {
				char *slash = strchr(seg, '/');
				size_t sl = slash ? (size_t)(slash - seg) : strlen(seg);
				if (sl == 2 && seg[0] == '.' && seg[1] == '.')
					abort();
				seg += sl + (slash ? 1 : 0);
			}
		}
	}
	/* The path cleaner on raw bytes, with a tiny output. */
	char small[8];
	int n = http_clean_path(p, size, small, sizeof(small));
	if (n >= (int)sizeof(small))
		abort();
	return 0;
}
