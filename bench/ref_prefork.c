/* SPDX-License-Identifier: MIT */
/*
 * bench-prefork: the classic prefork design for the benchmark.  N worker
 * processes block in accept(2) on one shared listener; each serves its
 * connection with blocking reads and writes until the client closes (or
 * asks to), then accepts the next.  Keep-alive clients beyond N wait.
 *
 *   bench-prefork --listen 127.0.0.1:PORT [--workers N]
 */
#include "ref_common.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

static void serve(const struct ref_opts *o, int fd)
{
	char buf[8192];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n <= 0)
			return;
		len += (size_t)n;
		int close_it;
		size_t req;
		while ((req = ref_request(buf, len, &close_it)) > 0) {
			const char *h = close_it ? o->close_ : o->keep;
			size_t hl = close_it ? o->close_len : o->keep_len;
			if (write(fd, h, hl) != (ssize_t)hl || write(fd, o->body, o->body_len) != (ssize_t)o->body_len)
				return;
			memmove(buf, buf + req, len - req);
			len -= req;
			if (close_it)
				return;
		}
		if (len == sizeof(buf))
			return;
	}
}

int main(int argc, char **argv)
{
	struct ref_opts o;
	ref_parse(&o, "bench-prefork", argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int lfd = ref_listen("bench-prefork", o.listen, 0, 0);
	fprintf(stderr, "bench-prefork: listening on %s, %d workers\n", o.listen, o.workers);
	pid_t *pids = calloc((size_t)o.workers, sizeof(*pids));
	for (int i = 0; i < o.workers; i++) {
		if ((pids[i] = fork()) == 0) {
			signal(SIGTERM, SIG_DFL);
			for (;;) {
				int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
				if (fd < 0) {
					if (errno == EMFILE || errno == ENFILE)
						usleep(10000);
					continue;
				}
				serve(&o, fd);
				close(fd);
			}
		}
	}
	return ref_parent_wait(pids, o.workers);
}
