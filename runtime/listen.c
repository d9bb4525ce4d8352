/* SPDX-License-Identifier: MIT */
/*
 * Listening sockets: from a --listen spec, or inherited the systemd way
 * (LISTEN_FDS sockets from fd 3 on, for LISTEN_PID = us).
 */
#include "runtime_internal.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BIND_RETRY_MS 2000

static int open_unix(const char *path, int backlog, char *desc, size_t dlen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path)) {
		bt__log(BT_LOG_ERROR, "listen %s: path too long (at most %zu bytes)", path,
			sizeof(sun.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "socket(AF_UNIX) for %s", path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 && errno == EADDRINUSE) {
		/* A socket file nobody listens on is left from an earlier run. */
		struct stat st;
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int stale = lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && probe >= 0 &&
			    connect(probe, (struct sockaddr *)&sun, sizeof(sun)) < 0 &&
			    errno == ECONNREFUSED;
		bt__close(probe);
		if (stale && unlink(path) == 0 &&
		    bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			goto bound;
		errno = EADDRINUSE;
	} else {
		goto bound;
	}
	{
		int err = -errno;
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "bind(%s)", path);
	}
bound:
	if (listen(fd, backlog) < 0) {
		int err = -errno;
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "listen(%s)", path);
	}
	snprintf(desc, dlen, "unix:%s", path);
	return fd;
}

/* An IP spec ("HOST:PORT", "[IPV6]:PORT", "*:PORT") to its address: 0 and
 * *res (freeaddrinfo it), or -EINVAL, logged unless quiet. */
static int resolve(const char *spec, struct addrinfo **res, int quiet)
{
	char host[256];
	const char *port;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host)) {
			if (!quiet)
				bt__log(BT_LOG_ERROR, "listen %s: expected [IPV6]:PORT", spec);
			return -EINVAL;
		}
		memcpy(host, spec + 1, (size_t)(close - spec - 1));
		host[close - spec - 1] = 0;
		port = close + 2;
	} else {
		const char *colon = strrchr(spec, ':');
		if (!colon || (size_t)(colon - spec) >= sizeof(host) || strchr(spec, ':') != colon) {
			if (!quiet)
				bt__log(BT_LOG_ERROR,
					"listen %s: expected HOST:PORT, [IPV6]:PORT or a path", spec);
			return -EINVAL;
		}
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = 0;
		port = colon + 1;
	}
	char *end;
	long p = strtol(port, &end, 10);
	if (!*port || *end || p < 0 || p > 65535) {
		if (!quiet)
			bt__log(BT_LOG_ERROR, "listen %s: '%s' is not a port (0..65535)", spec, port);
		return -EINVAL;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	int gai = getaddrinfo(*host && strcmp(host, "*") ? host : NULL, port, &hints, res);
	if (gai != 0) {
		if (!quiet)
			bt__log(BT_LOG_ERROR, "listen %s: getaddrinfo: %s", spec, gai_strerror(gai));
		return -EINVAL;
	}
	return 0;
}

#define PROXY_SUFFIX ",proxy"

int bt__listen_proxy(const char *spec)
{
	size_t n = spec ? strlen(spec) : 0, k = sizeof(PROXY_SUFFIX) - 1;
	return n > k && strcmp(spec + n - k, PROXY_SUFFIX) == 0;
}

/* The address part of spec: spec itself, or a copy in buf without the
 * ",proxy" suffix (NULL if it does not fit). */
static const char *address_of(const char *spec, char *buf, size_t cap)
{
	if (!bt__listen_proxy(spec))
		return spec;
	size_t n = strlen(spec) - (sizeof(PROXY_SUFFIX) - 1);
	if (n >= cap)
		return NULL;
	memcpy(buf, spec, n);
	buf[n] = 0;
	return buf;
}

int bt__listen_open(const char *full, int backlog, char *desc, size_t dlen)
{
	char abuf[512];
	const char *spec = address_of(full, abuf, sizeof(abuf));
	if (!spec || !*spec)
		return -EINVAL;
	if (spec[0] == '/' || spec[0] == '.')
		return open_unix(spec, backlog, desc, dlen);
	struct addrinfo *res = NULL;
	if (resolve(spec, &res, 0) < 0)
		return -EINVAL;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int err = -errno;
		freeaddrinfo(res);
		return bt__log_errno(BT_LOG_ERROR, err, "socket() for %s", spec);
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (res->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	/* EADDRINUSE right after a predecessor died is often its io_uring
	 * still being torn down by the kernel (asynchronously, a few ms after
	 * the process is gone: a pending ACCEPT holds the listener until
	 * then).  Retry for up to BIND_RETRY_MS, as nginx retries bind(). */
	int rc, waited = 0;
	while ((rc = bind(fd, res->ai_addr, res->ai_addrlen)) < 0 && errno == EADDRINUSE &&
	       waited < BIND_RETRY_MS) {
		if (!waited)
			bt__log(BT_LOG_INFO, "listen %s: address in use; retrying for up to %d ms",
				spec, BIND_RETRY_MS);
		struct timespec ts = {0, 20 * 1000000L};
		nanosleep(&ts, NULL);
		waited += 20;
	}
	if (rc < 0 || listen(fd, backlog) < 0) {
		int err = -errno;
		freeaddrinfo(res);
		bt__close(fd);
		return bt__log_errno(BT_LOG_ERROR, err, "bind/listen(%s)", spec);
	}
	freeaddrinfo(res);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	bt__describe_addr((struct sockaddr *)&ss, sl, desc, dlen);
	return fd;
}

int bt__listen_matches(const char *full, int fd)
{
	char abuf[512];
	const char *spec = address_of(full, abuf, sizeof(abuf));
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (!spec || getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	if (spec[0] == '/' || spec[0] == '.') {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
		return ss.ss_family == AF_UNIX && sl > offsetof(struct sockaddr_un, sun_path) &&
		       strncmp(sun->sun_path, spec, sizeof(sun->sun_path)) == 0;
	}
	struct addrinfo *res = NULL;
	if (resolve(spec, &res, 1) < 0)
		return 0;
	int same = 0;
	if (res->ai_family == ss.ss_family && res->ai_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)res->ai_addr, *b = (const void *)&ss;
		same = a->sin_addr.s_addr == b->sin_addr.s_addr &&
		       (a->sin_port == 0 || a->sin_port == b->sin_port);
	} else if (res->ai_family == ss.ss_family && res->ai_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)res->ai_addr, *b = (const void *)&ss;
		same = !memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) &&
		       (a->sin6_port == 0 || a->sin6_port == b->sin6_port);
	}
	freeaddrinfo(res);
	return same;
}

int bt__listen_inherited(int *fds, uint8_t *proxy, int max)
{
	const char *pid = getenv("LISTEN_PID");
	const char *n = getenv("LISTEN_FDS");
	if (!pid || !n)
		return 0;
	char *end;
	long lp = strtol(pid, &end, 10);
	if (*end || lp != (long)getpid())
		return 0; /* meant for another process */
	long cnt = strtol(n, &end, 10);
	if (*end || cnt < 0 || cnt > max) {
		bt__log(BT_LOG_ERROR, "LISTEN_FDS=%s: expected 0..%d", n, max);
		return -EINVAL;
	}
	for (int i = 0; i < cnt; i++) {
		int fd = 3 + i; /* SD_LISTEN_FDS_START */
		int acc = 0;
		socklen_t l = sizeof(acc);
		if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) < 0 || !acc) {
			bt__log(BT_LOG_ERROR, "LISTEN_FDS: fd %d is not a listening socket", fd);
			return -ENOTSOCK;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fds[i] = fd;
		proxy[i] = 0;
	}
	/* FileDescriptorName=proxy in the .socket unit: a PROXY listener, as
	 * --listen ADDR,proxy (names are ':'-separated, in fd order). */
	const char *names = getenv("LISTEN_FDNAMES");
	for (int i = 0; names && i < cnt; i++) {
		size_t len = strcspn(names, ":");
		proxy[i] = len == 5 && strncmp(names, "proxy", 5) == 0;
		names = names[len] ? names + len + 1 : NULL;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return (int)cnt;
}

void bt__describe_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN + 2] = "?", serv[16] = "?";
	if (sa->sa_family == AF_UNIX) {
		const struct sockaddr_un *sun = (const void *)sa;
		snprintf(buf, cap, "unix:%s", len > sizeof(sa_family_t) ? sun->sun_path : "(unnamed)");
		return;
	}
	getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
	if (sa->sa_family == AF_INET6)
		snprintf(buf, cap, "[%s]:%s", host, serv);
	else
		snprintf(buf, cap, "%s:%s", host, serv);
}
