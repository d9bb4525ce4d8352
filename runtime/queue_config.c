/* SPDX-License-Identifier: MIT */
/*
 * The queue's config (baton/queue.h): defaults, taking a caller's struct by
 * its size, and the flush policies by name ("adaptive[:US]", "size",
 * "delay:US").
 */
#include <baton/queue.h>

#include "internal.h"
#include "queue_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The smallest struct bt_queue_config a caller may pass: ABI 1's. */
#define CONFIG_MIN sizeof(struct bt_queue_config)

static void config_defaults(struct bt_queue_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->batch = 32;
	cfg->flush = BT_FLUSH_ADAPTIVE;
	cfg->delay_us = 200;
	cfg->max_inflight = 4096;
}

int bt_queue_config_init_sized(struct bt_queue_config *cfg, size_t size)
{
	struct bt_queue_config d;
	config_defaults(&d);
	return bt__sized_init(cfg, size, CONFIG_MIN, &d, sizeof(d));
}

int bt__queue_config_take(struct bt_queue_config *dst, const struct bt_queue_config *cfg)
{
	config_defaults(dst);
	int rc = bt__sized_in(dst, sizeof(*dst), cfg, CONFIG_MIN, "bt_queue_config");
	if (rc < 0)
		return rc;
	if (dst->batch < 1 || dst->batch > BT_WIRE_MAX_ITEMS ||
	    dst->flush < BT_FLUSH_ADAPTIVE || dst->flush > BT_FLUSH_DELAY ||
	    dst->max_inflight < dst->batch)
		return -EINVAL;
	return 0;
}

int bt_queue_parse_flush(const char *s, struct bt_queue_config *cfg)
{
	if (!s || !cfg || cfg->size < CONFIG_MIN)
		return -EINVAL;
	if (strcmp(s, "adaptive") == 0) {
		cfg->flush = BT_FLUSH_ADAPTIVE;
		return 0;
	}
	if (strncmp(s, "adaptive:", 9) == 0) {
		char *end;
		errno = 0;
		unsigned long us = strtoul(s + 9, &end, 10);
		if (errno || end == s + 9 || *end || us > 1000000)
			return -EINVAL;
		cfg->flush = BT_FLUSH_ADAPTIVE;
		cfg->delay_us = (unsigned)us;
		return 0;
	}
	if (strcmp(s, "size") == 0) {
		cfg->flush = BT_FLUSH_SIZE;
		return 0;
	}
	if (strncmp(s, "delay:", 6) == 0) {
		char *end;
		errno = 0;
		unsigned long us = strtoul(s + 6, &end, 10);
		if (errno || end == s + 6 || *end || us < 1 || us > 1000000)
			return -EINVAL;
		cfg->flush = BT_FLUSH_DELAY;
		cfg->delay_us = (unsigned)us;
		return 0;
	}
	return -EINVAL;
}

const char *bt_queue_flush_name(const struct bt_queue_config *cfg, char *buf,
				size_t cap)
{
	if (!cfg || cfg->size < CONFIG_MIN) {
		snprintf(buf, cap, "?");
		return buf;
	}
	switch (cfg->flush) {
	case BT_FLUSH_SIZE:
		snprintf(buf, cap, "size");
		break;
	case BT_FLUSH_DELAY:
		snprintf(buf, cap, "delay:%u", cfg->delay_us);
		break;
	default:
		snprintf(buf, cap, "adaptive:%u", cfg->delay_us);
		break;
	}
	return buf;
}
