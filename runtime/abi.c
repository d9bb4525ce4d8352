/* SPDX-License-Identifier: MIT */
/*
 * The ABI rule's three moves (docs/abi.md).  Every extensible public
 * struct begins with `size_t size`, the caller's sizeof:
 *   init  the library writes its defaults into the caller's first size
 *         bytes (zeroing the rest) and stores size;
 *   in    the library takes a caller's struct into its own full copy,
 *         which already holds the defaults: a shorter (older) caller leaves
 *         the newer fields at their defaults; a longer (newer) caller must
 *         leave what this library does not know at zero, else -E2BIG;
 *   out   the library fills the caller's first size bytes (stats).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

int bt__sized_init(void *dst, size_t size, size_t min, const void *def, size_t def_size)
{
	if (!dst || size < min)
		return -EINVAL;
	memset(dst, 0, size);
	memcpy(dst, def, min_size(size, def_size));
	memcpy(dst, &size, sizeof(size));
	return 0;
}

int bt__sized_in(void *dst, size_t dst_size, const void *src, size_t min, const char *type)
{
	size_t size;
	memcpy(&size, src, sizeof(size));
	if (size < min) {
		bt__log(BT_LOG_ERROR,
			"struct %s: size %zu, expected at least %zu: initialise it with its _init() "
			"(or set .size = sizeof(struct %s)); docs/abi.md",
			type, size, min, type);
		return -EINVAL;
	}
	if (size > dst_size) {
		const unsigned char *tail = (const unsigned char *)src + dst_size;
		for (size_t i = 0; i < size - dst_size; i++)
			if (tail[i]) {
				bt__log(BT_LOG_ERROR,
					"struct %s: a field at byte %zu is set that this libbaton (%zu "
					"bytes) does not know: the program needs a newer libbaton",
					type, dst_size + i, dst_size);
				return -E2BIG;
			}
	}
	memcpy(dst, src, min_size(size, dst_size));
	memcpy(dst, &dst_size, sizeof(dst_size));
	return 0;
}

void bt__sized_out(void *dst, size_t size, const void *src, size_t src_size)
{
	if (!dst || size < sizeof(size_t))
		return;
	memset(dst, 0, size);
	memcpy(dst, src, min_size(size, src_size));
	memcpy(dst, &size, sizeof(size));
}
