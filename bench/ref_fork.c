/*
 * bench-fork: the classic fork-per-connection server, for the benchmark.
 * The parent accepts; a child per connection reads one request head,
 * writes the fixed response, closes and exits.
 *
 *   bench-fork --listen 127.0.0.1:PORT [--body-size N]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *listen_at = "127.0.0.1:8082";
	size_t body_len = 6;
	char *body = "hello\n";
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			listen_at = argv[++i];
		else if (!strcmp(argv[i], "--body-size") && i + 1 < argc) {
			body_len = strtoul(argv[++i], NULL, 10);
			body = malloc(body_len + 1);
			memset(body, 'x', body_len);
		} else if (!strcmp(argv[i], "--help")) {
			printf("usage: bench-fork [--listen HOST:PORT] [--body-size N]\n");
			return 0;
		} else {
			fprintf(stderr, "bench-fork: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	char host[64];
	const char *colon = strrchr(listen_at, ':');
	if (!colon || (size_t)(colon - listen_at) >= sizeof(host))
		return 2;
	memcpy(host, listen_at, (size_t)(colon - listen_at));
	host[colon - listen_at] = 0;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
	inet_pton(AF_INET, host, &sin.sin_addr);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 4096) < 0) {
		perror("bench-fork: bind/listen");
		return 1;
	}
	socklen_t sl = sizeof(sin);
	getsockname(lfd, (struct sockaddr *)&sin, &sl);
	fprintf(stderr, "bench-fork: listening on %s:%d\n", host, ntohs(sin.sin_port));
	/* Children are reaped with waitpid (not SIGCHLD ignored) so that their
	 * CPU time is added to ours, where the benchmark reads it. */
	signal(SIGPIPE, SIG_IGN);
	char resp[512];
	int rlen = snprintf(resp, sizeof(resp),
			    "HTTP/1.1 200 OK\r\nServer: fork\r\nContent-Type: text/plain\r\n"
			    "Content-Length: %zu\r\nConnection: close\r\n\r\n", body_len);
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				usleep(10000);
			continue;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(lfd);
			char buf[8192];
			size_t got = 0;
			while (got < sizeof(buf)) {
				ssize_t n = read(fd, buf + got, sizeof(buf) - got);
				if (n <= 0)
					_exit(0);
				got += (size_t)n;
				if (memmem(buf, got, "\r\n\r\n", 4))
					break;
			}
			if (write(fd, resp, (size_t)rlen) == rlen)
				(void)!write(fd, body, body_len);
			_exit(0);
		}
		close(fd);
	}
}
