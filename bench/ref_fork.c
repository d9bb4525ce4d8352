/* SPDX-License-Identifier: MIT */
/*
 * bench-fork: the classic fork-per-connection server, for the benchmark.
 * The parent accepts; a child per connection reads one request head,
 * writes the fixed response, closes and exits.  Children are reaped with
 * waitpid (not SIGCHLD ignored) so that their CPU time is added to the
 * parent's, where the benchmark reads it.
 *
 *   bench-fork --listen 127.0.0.1:PORT [--body-size N]
 */
#include "ref_common.h"

#include <errno.h>

int main(int argc, char **argv)
{
	struct ref_opts o;
	ref_parse(&o, "bench-fork", argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int lfd = ref_listen("bench-fork", o.listen, 0, 0);
	fprintf(stderr, "bench-fork: listening on %s\n", o.listen);
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				usleep(10000);
			continue;
		}
		if (fork() == 0) {
			close(lfd);
			char buf[8192];
			size_t got = 0;
			int close_it;
			while (got < sizeof(buf)) {
				ssize_t n = read(fd, buf + got, sizeof(buf) - got);
				if (n <= 0)
					_exit(0);
				got += (size_t)n;
				if (ref_request(buf, got, &close_it))
					break;
			}
			if (write(fd, o.close_, o.close_len) == (ssize_t)o.close_len)
				(void)!write(fd, o.body, o.body_len);
			_exit(0);
		}
		close(fd);
	}
}
