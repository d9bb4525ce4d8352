/* SPDX-License-Identifier: MIT */
/*
 * Logging.  The runtime logs where a syscall fails, naming it, and where it
 * refuses a peer.  By default lines go to stderr as
 *   "NAME[PID]: LEVEL: message"
 * in one write(2) each, NAME being the program's (the runtime's cfg->name,
 * else the executable's name).  When stderr is the systemd journal
 * (JOURNAL_STREAM names it), each line starts with its syslog priority,
 * "<3>" for error, "<4>" warn, "<6>" info, "<7>" debug, so that
 * `journalctl -p warning` works.  An application may route lines elsewhere.
 */
#ifndef BATON_LOG_H
#define BATON_LOG_H

#include <baton/version.h>

#ifdef __cplusplus
extern "C" {
#endif

enum bt_log_level {
	BT_LOG_ERROR = 0,
	BT_LOG_WARN = 1,
	BT_LOG_INFO = 2,
	BT_LOG_DEBUG = 3,
};

/* Receives one formatted line, without the trailing newline. */
typedef void (*bt_log_fn)(void *ctx, int level, const char *line);

/* Route log lines to fn (NULL: back to stderr).  Not thread-safe against
 * concurrent logging: set it once at start-up. */
BT_API void bt_log_set_handler(bt_log_fn fn, void *ctx);

/* Lines above level are dropped.  Default BT_LOG_INFO; the environment
 * variable BATON_LOG=error|warn|info|debug sets it at first use. */
BT_API void bt_log_set_level(int level);

/* Name of a level ("error", "warn", ...). */
BT_API const char *bt_log_level_name(int level);

#ifdef __cplusplus
}
#endif

#endif
