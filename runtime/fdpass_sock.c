/* SPDX-License-Identifier: MIT */
/*
 * Socket helpers for worker channels: pairs, named listeners with a
 * SO_PEERCRED check, and the type check that keeps SOCK_STREAM out.
 */

#include <baton/fdpass.h>

#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int sock_flags(int flags)
{
	return SOCK_CLOEXEC | ((flags & BT_FDPASS_NONBLOCK) ? SOCK_NONBLOCK : 0);
}

int bt_fdpass_pair(int sv[2], int flags)
{
	if (!sv || (flags & ~BT_FDPASS_NONBLOCK))
		return -EINVAL;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | sock_flags(flags), 0, sv) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "socketpair");
	return 0;
}

/*
 * Fill sun from "@abstract" or a path.  Returns the address length or
 * -errno.  Abstract names are not NUL-terminated: the length says where
 * they end, as ss(8) and systemd expect.
 */
static int make_addr(const char *name, struct sockaddr_un *sun)
{
	if (!name || !*name)
		return -EINVAL;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	size_t n = strlen(name);
	if (name[0] == '@') {
		if (n < 2 || n > sizeof(sun->sun_path))
			return n < 2 ? -EINVAL : -ENAMETOOLONG;
		memcpy(sun->sun_path + 1, name + 1, n - 1);
		return (int)(offsetof(struct sockaddr_un, sun_path) + n);
	}
	if (n >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	memcpy(sun->sun_path, name, n);
	return (int)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

/* Is there a socket file at path that nobody listens on? */
static int stale_socket(const struct sockaddr_un *sun, socklen_t len, int type)
{
	struct stat st;
	if (lstat(sun->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return 0;
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	int rc = connect(fd, (const struct sockaddr *)sun, len);
	int err = errno;
	bt__close(fd);
	return rc < 0 && err == ECONNREFUSED;
}

int bt__unix_listen(const char *name, int type, int flags)
{
	struct sockaddr_un sun;
	int len = make_addr(name, &sun);
	if (len < 0)
		return len;
	if (flags & ~BT_FDPASS_NONBLOCK)
		return -EINVAL;

	int fd = socket(AF_UNIX, type | sock_flags(flags), 0);
	if (fd < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "socket(AF_UNIX)");

	int is_path = name[0] != '@';
	/* The socket inode's mode (less the umask) becomes the file's mode at
	 * bind(2), so set it first: no window in which the path is open. */
	if (is_path && fchmod(fd, 0600) < 0) {
		int err = -errno;
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "fchmod(%s)", name);
	}
	int rc = bind(fd, (struct sockaddr *)&sun, (socklen_t)len);
	int err = rc < 0 ? -errno : 0; /* before stale_socket's connect changes errno */
	if (err == -EADDRINUSE && is_path && stale_socket(&sun, (socklen_t)len, type)) {
		bt__log(BT_LOG_INFO, "replacing stale socket %s", name);
		if (unlink(name) == 0) {
			rc = bind(fd, (struct sockaddr *)&sun, (socklen_t)len);
			err = rc < 0 ? -errno : 0;
		}
	}
	if (rc < 0) {
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "bind(%s)", name);
	}
	/* Belt and braces: mode 0600 even under a umask that cleared bits. */
	if (is_path && chmod(name, 0600) < 0) {
		err = -errno;
		bt__close(fd);
		unlink(name);
		return bt__log_errno(BT_LOG_ERROR, err, "chmod(%s)", name);
	}
	if (listen(fd, 128) < 0) {
		err = -errno;
		bt__close(fd);
		if (is_path)
			unlink(name);
		return bt__log_errno(BT_LOG_ERROR, err, "listen(%s)", name);
	}
	return fd;
}

int bt_fdpass_listen(const char *name, int flags)
{
	return bt__unix_listen(name, SOCK_SEQPACKET, flags);
}

int bt__fdpass_accept_uids(int lfd, const uid_t *uids, unsigned n, int flags)
{
	if (flags & ~BT_FDPASS_NONBLOCK)
		return -EINVAL;
	int fd;
	do
		fd = accept4(lfd, NULL, NULL, sock_flags(flags));
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		int err = -errno;
		if (err != -EAGAIN && err != -ECONNABORTED)
			bt__log_errno(BT_LOG_ERROR, err, "accept4(channel)");
		return err;
	}

	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		int err = -errno;
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "getsockopt(SO_PEERCRED)");
	}
	uid_t me = geteuid();
	int ok = cred.uid == me;
	for (unsigned i = 0; i < n && !ok; i++)
		ok = cred.uid == uids[i];
	if (!ok) {
		bt__close(fd);
		char also[96] = "";
		size_t used = 0;
		for (unsigned i = 0; i < n && used < sizeof(also); i++) {
			int w = snprintf(also + used, sizeof(also) - used, "%s%lu",
					 i + 1 == n ? " and " : ", ", (unsigned long)uids[i]);
			if (w > 0)
				used += (size_t)w;
		}
		bt__log(BT_LOG_WARN, "refused channel peer pid %ld uid %lu: only uid%s %lu%s may attach",
			(long)cred.pid, (unsigned long)cred.uid, n ? "s" : "", (unsigned long)me, also);
		return -EPERM;
	}
	return fd;
}

int bt_fdpass_accept(int lfd, uid_t allow_uid, int flags)
{
	return bt__fdpass_accept_uids(lfd, &allow_uid, allow_uid == BT_FDPASS_NO_UID ? 0 : 1, flags);
}

int bt_fdpass_connect(const char *name, int flags)
{
	struct sockaddr_un sun;
	int len = make_addr(name, &sun);
	if (len < 0)
		return len;
	if (flags & ~BT_FDPASS_NONBLOCK)
		return -EINVAL;
	/* Connect blocking: on a SEQPACKET socket it completes at once or
	 * fails, and a half-open channel is of no use to the caller. */
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "socket(AF_UNIX)");
	int rc;
	do
		rc = connect(fd, (struct sockaddr *)&sun, (socklen_t)len);
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int err = -errno;
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "connect(%s)", name);
	}
	if ((flags & BT_FDPASS_NONBLOCK) &&
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		int err = -errno;
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "fcntl(O_NONBLOCK)");
	}
	return fd;
}

int bt_fdpass_check(int sock)
{
	int domain = 0, type = 0;
	socklen_t len = sizeof(int);
	if (getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) {
		int err = -errno;
		if (err == -ENOTSOCK)
			bt__log(BT_LOG_ERROR, "fd %d is not a socket: a channel must be an AF_UNIX SOCK_SEQPACKET socket", sock);
		else
			bt__log_errno(BT_LOG_ERROR, err, "getsockopt(%d, SO_DOMAIN)", sock);
		return err;
	}
	if (domain != AF_UNIX) {
		bt__log(BT_LOG_ERROR, "fd %d is not an AF_UNIX socket (domain %d): descriptors pass only over AF_UNIX", sock, domain);
		return -EAFNOSUPPORT;
	}
	len = sizeof(int);
	if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "getsockopt(%d, SO_TYPE)", sock);
	if (type != SOCK_SEQPACKET) {
		bt__log(BT_LOG_ERROR, "fd %d is a %s socket, not SOCK_SEQPACKET: %s", sock,
			type == SOCK_STREAM ? "SOCK_STREAM" : type == SOCK_DGRAM ? "SOCK_DGRAM" : "non-SEQPACKET",
			type == SOCK_STREAM ? "a stream merges messages and separates descriptors from their batch"
					    : "batches need reliable, ordered, whole messages");
		return -EPROTOTYPE;
	}
	return 0;
}
