/* SPDX-License-Identifier: MIT */
/*
 * sd_notify without libsystemd: systemd's documented datagram protocol.
 * $NOTIFY_SOCKET names an AF_UNIX datagram socket, a path or, with a
 * leading '@', an abstract name; each message is one datagram of
 * newline-separated VAR=value assignments (READY=1, STATUS=..., STOPPING=1).
 * Without NOTIFY_SOCKET nothing is sent.  Only the main process may send
 * (a unit's default NotifyAccess=main ignores the others): under a master,
 * a generation's notifications are relayed by the master.
 */
#include "runtime_internal.h"

#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A generation under a master (master.c) is not the unit's main process:
 * its notifications go to the master, which sends them on. */
static int relay_fd = -1;

void bt__notify_relay(int fd)
{
	relay_fd = fd;
}

int bt__notify(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg + 1, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= sizeof(msg) - 1)
		n = sizeof(msg) - 2;
	if (relay_fd >= 0) {
		msg[0] = 'N';
		ssize_t w;
		do
			w = send(relay_fd, msg, (size_t)n + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (w < 0 && errno == EINTR);
		return w < 0 ? -errno : 0;
	}
	return bt__notify_text(msg + 1);
}

int bt__notify_text(const char *text)
{
	static int warned;
	const char *path = getenv("NOTIFY_SOCKET");
	if (!path || !*path)
		return 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path)) {
		if (!warned++)
			bt__log(BT_LOG_WARN, "NOTIFY_SOCKET=%s: not a unix socket path or @name; "
					     "not notifying systemd", path);
		return -EAFNOSUPPORT;
	}
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = 0; /* abstract: the name is exactly plen bytes */
	socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
	size_t n = strlen(text);

	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return warned++ ? -errno : bt__log_errno(BT_LOG_WARN, -errno, "sd_notify: socket");
	ssize_t w;
	do
		w = sendto(fd, text, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
	while (w < 0 && errno == EINTR);
	int rc = w < 0 ? -errno : 0;
	bt__close(fd);
	if (rc < 0 && !warned++)
		bt__log_errno(BT_LOG_WARN, rc, "sd_notify: sendto(%s)", path);
	return rc;
}
