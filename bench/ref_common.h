/* SPDX-License-Identifier: MIT */
/*
 * What the reference servers of the benchmark share: flags, the listening
 * socket and the fixed HTTP response (the same bytes baton-httpd sends,
 * "hello\n").  Header-only, for small single-file programs.
 */
#ifndef BATON_BENCH_REF_COMMON_H
#define BATON_BENCH_REF_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

struct ref_opts {
	const char *listen;
	int workers;
	size_t body_len;
	char *body;
	char keep[256], close_[256];
	size_t keep_len, close_len;
};

/* --listen HOST:PORT [--workers N] [--body-size N]; exits 2 on bad flags. */
static inline void ref_parse(struct ref_opts *o, const char *prog, int argc, char **argv)
{
	o->listen = "127.0.0.1:8080";
	o->workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
	o->body = "hello\n";
	o->body_len = 6;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
			o->listen = argv[++i];
		} else if (!strcmp(argv[i], "--workers") && i + 1 < argc) {
			o->workers = atoi(argv[++i]);
			if (o->workers < 1 || o->workers > 256) {
				fprintf(stderr, "%s: --workers wants 1 to 256\n", prog);
				exit(2);
			}
		} else if (!strcmp(argv[i], "--body-size") && i + 1 < argc) {
			o->body_len = strtoul(argv[++i], NULL, 10);
			o->body = malloc(o->body_len + 1);
			memset(o->body, 'x', o->body_len);
		} else if (!strcmp(argv[i], "--help")) {
			printf("usage: %s [--listen HOST:PORT] [--workers N] [--body-size N]\n", prog);
			exit(0);
		} else {
			fprintf(stderr, "%s: unknown argument '%s'\n", prog, argv[i]);
			exit(2);
		}
	}
	o->keep_len = (size_t)snprintf(o->keep, sizeof(o->keep),
				       "HTTP/1.1 200 OK\r\nServer: ref\r\nContent-Type: text/plain\r\n"
				       "Content-Length: %zu\r\n\r\n", o->body_len);
	o->close_len = (size_t)snprintf(o->close_, sizeof(o->close_),
					"HTTP/1.1 200 OK\r\nServer: ref\r\nContent-Type: text/plain\r\n"
					"Content-Length: %zu\r\nConnection: close\r\n\r\n", o->body_len);
}

/* A listening IPv4 socket; reuseport sets SO_REUSEPORT.  Exits 1 on error. */
static inline int ref_listen(const char *prog, const char *spec, int reuseport, int flags)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof(host)) {
		fprintf(stderr, "%s: --listen HOST:PORT\n", prog);
		exit(2);
	}
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = 0;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
	inet_pton(AF_INET, host, &sin.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "%s: bind/listen %s: %m\n", prog, spec);
		exit(1);
	}
	return fd;
}

/* The parent of the worker processes: wait for SIGTERM or SIGINT, pass it
 * on to our own children only (never the process group: the benchmark
 * that started us may share it), reap them. */
static inline int ref_parent_wait(const pid_t *pids, int n)
{
	signal(SIGTERM, SIG_IGN);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sig;
	sigwait(&set, &sig);
	for (int i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	while (wait(NULL) > 0)
		;
	return 0;
}

/* End of one request head in buf, or 0; *close set if the client wants
 * the connection closed after the reply. */
static inline size_t ref_request(const char *buf, size_t len, int *close_it)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	if (!end)
		return 0;
	size_t n = (size_t)(end - buf) + 4;
	*close_it = memmem(buf, n, "HTTP/1.0", 8) != NULL;
	for (size_t i = 0; i + 17 <= n; i++)
		if ((buf[i] == 'C' || buf[i] == 'c') && !strncasecmp(buf + i, "connection: close", 17))
			*close_it = 1;
	return n;
}

#endif
