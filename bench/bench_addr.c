/* SPDX-License-Identifier: MIT */
/*
 * Addresses for the harness, in the runtime's --listen syntax: HOST:PORT
 * (a name or an IPv4 address), [IPV6]:PORT, or a unix socket path (one
 * that begins with '/' or '.').  And the CPU time of a server's process
 * tree, read from /proc.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
	snprintf(err, errlen, fmt, a, b);
	return -1;
}

/* Split spec into host and port text; port is "" when absent. */
static int split(const char *spec, char *host, size_t hcap, const char **port, char *err, size_t errlen)
{
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (!close || (close[1] && close[1] != ':') || (size_t)(close - spec - 1) >= hcap)
			return fail(err, errlen, "'%s' is not [IPV6]:PORT%s", spec, "");
		memcpy(host, spec + 1, (size_t)(close - spec - 1));
		host[close - spec - 1] = 0;
		*port = close[1] ? close + 2 : "";
		return 0;
	}
	const char *colon = strrchr(spec, ':');
	if (colon && strchr(spec, ':') != colon)
		return fail(err, errlen, "'%s': an IPv6 address goes in brackets, as [%s]:PORT", spec, spec);
	size_t hl = colon ? (size_t)(colon - spec) : strlen(spec);
	if (hl >= hcap)
		return fail(err, errlen, "'%s': the host name is too long%s", spec, "");
	memcpy(host, spec, hl);
	host[hl] = 0;
	*port = colon ? colon + 1 : "";
	return 0;
}

int bench_addr_parse(const char *spec, int need_port, struct bench_addr *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!spec || !*spec)
		return fail(err, errlen, "an empty address%s%s", "", "");
	snprintf(out->text, sizeof(out->text), "%s", spec);
	if (spec[0] == '/' || spec[0] == '.') {
		struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss[0];
		if (strlen(spec) >= sizeof(sun->sun_path))
			return fail(err, errlen, "'%s': a unix socket path is at most 107 bytes%s", spec, "");
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, spec);
		out->len[0] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(spec) + 1);
		out->n = 1;
		snprintf(out->host, sizeof(out->host), "localhost");
		return 0;
	}
	const char *port;
	if (split(spec, out->host, sizeof(out->host), &port, err, errlen) < 0)
		return -1;
	if (!*out->host)
		return fail(err, errlen, "'%s': no host (127.0.0.1:PORT, [::1]:PORT, localhost:PORT)%s", spec, "");
	long p = 0;
	if (*port) {
		char *end;
		errno = 0;
		p = strtol(port, &end, 10);
		if (*end || errno || p < 0 || p > 65535)
			return fail(err, errlen, "'%s': '%s' is not a port (0..65535)", spec, port);
	}
	if (need_port && p == 0)
		return fail(err, errlen, "'%s': which port? (HOST:PORT, [IPV6]:PORT or a unix path)%s", spec, "");
	out->port = (int)p;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char ps[8];
	snprintf(ps, sizeof(ps), "%ld", p);
	int gai = getaddrinfo(out->host, ps, &hints, &res);
	if (gai != 0)
		return fail(err, errlen, "'%s': %s", spec, gai_strerror(gai));
	for (struct addrinfo *ai = res; ai && out->n < BENCH_ADDR_MAX; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		memcpy(&out->ss[out->n], ai->ai_addr, ai->ai_addrlen);
		out->len[out->n++] = ai->ai_addrlen;
	}
	freeaddrinfo(res);
	if (!out->n)
		return fail(err, errlen, "'%s': no IPv4 or IPv6 address%s", spec, "");
	return 0;
}

int bench_addr_family(const struct bench_addr *a)
{
	return a->n ? a->ss[0].ss_family : AF_UNSPEC;
}

/* Does a connection to a->ss[i] succeed within timeout_ms? */
static int reachable(const struct sockaddr_storage *ss, socklen_t len, int timeout_ms)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	int ok = connect(fd, (const struct sockaddr *)ss, len) == 0;
	if (!ok && errno == EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t l = sizeof(err);
		ok = poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 &&
		     err == 0;
	}
	close(fd);
	return ok;
}

int bench_addr_pick(const struct bench_addr *a, struct sockaddr_storage *ss, socklen_t *len)
{
	int pick = -1;
	for (int i = 0; i < a->n && pick < 0; i++)
		if (reachable(&a->ss[i], a->len[i], 1000))
			pick = i;
	memcpy(ss, &a->ss[pick < 0 ? 0 : pick], sizeof(*ss));
	*len = a->len[pick < 0 ? 0 : pick];
	return pick >= 0;
}

int bench_addr_with_free_port(const struct bench_addr *a, char *out, size_t cap)
{
	int family = bench_addr_family(a);
	if (family == AF_UNIX) {
		snprintf(out, cap, "%s", a->text);
		return 0;
	}
	struct sockaddr_storage ss;
	memcpy(&ss, &a->ss[0], sizeof(ss));
	socklen_t len = a->len[0];
	int port = a->port;
	if (!port) {
		int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = 0;
		if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
		    getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
			int e = errno;
			close(fd);
			return -e;
		}
		close(fd);
		port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					       : ((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	char host[INET6_ADDRSTRLEN];
	if (family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
	snprintf(out, cap, family == AF_INET ? "%s:%d" : "[%s]:%d", host, port);
	return 0;
}

/* --- the CPU time of a process tree ----------------------------------------- */

/* On-CPU time of a live process in ns, summed over its threads from
 * /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat counts clock
 * ticks of 10 ms, too coarse for a short run of a stalled server).
 * Threads that already exited are only in stat: the larger of the two
 * wins. */
static unsigned long long proc_ns(const char *pid, unsigned long long stat_ns)
{
	char path[600];
	snprintf(path, sizeof(path), "/proc/%s/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return stat_ns;
	unsigned long long sum = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/task/%s/schedstat", pid, e->d_name);
		FILE *f = fopen(path, "r");
		unsigned long long ns;
		if (f && fscanf(f, "%llu", &ns) == 1)
			sum += ns;
		if (f)
			fclose(f);
	}
	closedir(d);
	return sum > stat_ns ? sum : stat_ns;
}

/* /proc/PID/WHAT into buf (NUL-terminated); its length, or -1. */
static long proc_read(const char *pid, const char *what, char *buf, size_t cap)
{
	char path[300];
	snprintf(path, sizeof(path), "/proc/%s/%s", pid, what);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t len = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[len] = 0;
	return (long)len;
}

double bench_tree_cpu(pid_t root)
{
	long tck = sysconf(_SC_CLK_TCK);
	unsigned long long tick_ns = 1000000000ull / (unsigned long long)tck;
	struct proc { pid_t pid, ppid; unsigned long long ns; } *all = NULL;
	size_t n = 0, cap = 0;
	unsigned long long total = 0;
	int found = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char buf[1024];
		if (proc_read(e->d_name, "stat", buf, sizeof(buf)) < 0)
			continue;
		char *rp = strrchr(buf, ')');
		if (!rp)
			continue;
		/* after ')': state ppid pgrp session tty tpgid flags minflt
		 * cminflt majflt cmajflt utime stime cutime cstime */
		char state;
		int ppid;
		unsigned long long v[8];
		if (sscanf(rp + 2, "%c %d %*d %*d %*d %*d %*u %llu %llu %llu %llu %llu %llu %llu %llu",
			   &state, &ppid, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 10)
			continue;
		pid_t pid = atoi(e->d_name);
		unsigned long long own = proc_ns(e->d_name, (v[4] + v[5]) * tick_ns);
		if (pid == root) {
			total += own + (v[6] + v[7]) * tick_ns;
			found = 1;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 512;
			struct proc *grown = realloc(all, ncap * sizeof(*all));
			if (!grown)
				break;
			all = grown;
			cap = ncap;
		}
		all[n].pid = pid;
		all[n].ppid = ppid;
		all[n].ns = own;
		n++;
	}
	if (d)
		closedir(d);
	/* Descendants, breadth first over the parent links. */
	pid_t queue[4096];
	size_t qh = 0, qt = 0;
	queue[qt++] = root;
	while (qh < qt) {
		pid_t p = queue[qh++];
		for (size_t i = 0; i < n; i++)
			if (all[i].ppid == p && qt < 4096) {
				total += all[i].ns;
				queue[qt++] = all[i].pid;
			}
	}
	free(all);
	return found ? (double)total / 1e9 : -1;
}

double bench_acceptor_cpu(pid_t root)
{
	/* The newest process titled ": acceptor" whose parent is root (the
	 * master) or root itself. */
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t best = -1;
	unsigned long long best_start = 0;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char buf[1024];
		if (proc_read(e->d_name, "cmdline", buf, sizeof(buf)) < 0 || !strstr(buf, ": acceptor") ||
		    proc_read(e->d_name, "stat", buf, sizeof(buf)) < 0)
			continue;
		char *rp = strrchr(buf, ')');
		int ppid;
		unsigned long long start = 0;
		/* after ')': state ppid, then 17 fields to starttime (22nd) */
		if (!rp || sscanf(rp + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
				  &ppid, &start) != 2)
			continue;
		pid_t pid = atoi(e->d_name);
		if ((ppid == root || pid == root) && (best < 0 || start >= best_start)) {
			best = pid;
			best_start = start;
		}
	}
	if (d)
		closedir(d);
	if (best < 0)
		return -1;
	/* Its main thread, and the threads of --acceptors K ("acceptor k"). */
	char pid[16], dir[48], what[64], buf[128];
	snprintf(pid, sizeof(pid), "%d", (int)best);
	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)best);
	DIR *td = opendir(dir);
	if (!td)
		return -1;
	unsigned long long total = 0;
	int found = 0;
	while ((e = readdir(td))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		unsigned long long ns;
		int tid = atoi(e->d_name);
		snprintf(what, sizeof(what), "task/%d/comm", tid);
		if (tid != best &&
		    (proc_read(pid, what, buf, sizeof(buf)) < 0 || strncmp(buf, "acceptor ", 9)))
			continue;
		snprintf(what, sizeof(what), "task/%d/schedstat", tid);
		if (proc_read(pid, what, buf, sizeof(buf)) < 0 || sscanf(buf, "%llu", &ns) != 1)
			continue;
		total += ns;
		found = 1;
	}
	closedir(td);
	return found ? (double)total / 1e9 : -1;
}
