/* SPDX-License-Identifier: MIT */
/*
 * bench-reuseport: N independent worker processes, each with its own
 * SO_REUSEPORT listener (the kernel spreads connections over them) and an
 * epoll loop: non-blocking accept, read, reply, keep-alive or close.  No
 * hand-off, no shared accept queue.
 *
 *   bench-reuseport --listen 127.0.0.1:PORT [--workers N]
 */
#include "ref_common.h"

#include <errno.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>

struct conn {
	int fd;
	size_t len;
	char buf[4096];
};

static void worker(const struct ref_opts *o)
{
	int lfd = ref_listen("bench-reuseport", o->listen, 1, SOCK_NONBLOCK);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				for (;;) {
					int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (fd < 0)
						break;
					c = calloc(1, sizeof(*c));
					c->fd = fd;
					struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
				}
				continue;
			}
			ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
			int done = r <= 0;
			if (r > 0) {
				c->len += (size_t)r;
				int close_it;
				size_t req;
				while (!done && (req = ref_request(c->buf, c->len, &close_it)) > 0) {
					/* Tiny replies fit the socket buffer: one write. */
					char out[512 + 256];
					const char *h = close_it ? o->close_ : o->keep;
					size_t hl = close_it ? o->close_len : o->keep_len;
					memcpy(out, h, hl);
					size_t bl = o->body_len < 512 ? o->body_len : 512;
					memcpy(out + hl, o->body, bl);
					if (write(c->fd, out, hl + bl) != (ssize_t)(hl + bl))
						done = 1;
					memmove(c->buf, c->buf + req, c->len - req);
					c->len -= req;
					done |= close_it;
				}
				done |= c->len == sizeof(c->buf);
			}
			if (done) {
				close(c->fd); /* no other holder: FIN goes now */
				free(c);
			}
		}
	}
}

int main(int argc, char **argv)
{
	struct ref_opts o;
	ref_parse(&o, "bench-reuseport", argc, argv);
	signal(SIGPIPE, SIG_IGN);
	/* Bind once here first, so that a bad address fails at once; closed
	 * before any worker listens (connections queued on it would be lost). */
	close(ref_listen("bench-reuseport", o.listen, 1, 0));
	fprintf(stderr, "bench-reuseport: listening on %s, %d workers\n", o.listen, o.workers);
	pid_t *pids = calloc((size_t)o.workers, sizeof(*pids));
	for (int i = 0; i < o.workers; i++) {
		if ((pids[i] = fork()) == 0) {
			signal(SIGTERM, SIG_DFL);
			worker(&o);
			_exit(0);
		}
	}
	return ref_parent_wait(pids, o.workers);
}
