/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the --metrics listener's request heads
 * (runtime/control_http.c): any bytes a TCP client can send.  Checks,
 * beyond the sanitizers: the answer is one of the documented ones; "read
 * more" only while no head has ended and there is room; HEAD only with a
 * 200; the answer does not depend on bytes after the head's end.
 */
#include "../../runtime/control_http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	if (size > BT__HEAD_MAX * 2)
		size = BT__HEAD_MAX * 2;
	int head_only = -1;
	int r = bt__metrics_route(p, size, &head_only);
	if (r != 0 && r != 200 && r != 400 && r != 404 && r != 405 && r != 431)
		abort();
	if (head_only != 0 && !(head_only == 1 && r == 200))
		abort();
	if (r == 0 && size >= BT__HEAD_MAX)
		abort();
	if (r == 431 && size < BT__HEAD_MAX)
		abort();
	/* A prefix: an answer reached on it is the answer on the whole. */
	size_t cut = size / 2;
	if (cut) {
		int h2;
		int r2 = bt__metrics_route(p, cut, &h2);
		if (r2 != 0 && r2 != 431 && (r2 != r || h2 != head_only))
			abort();
	}
	return 0;
}
