/* SPDX-License-Identifier: MIT */
/*
 * A generation's side of a reload (the master's is master.c;
 * docs/reload.md has the whole sequence).
 *
 * The serving ("old") generation gets the handover channel from the master
 * ('H' on its control channel) and at once sends its listeners on it: one
 * BATCH whose items carry the listening sockets, tagged by their payload
 * ("L" from --listen, "S" from systemd, "A" the --attach listener, "C"
 * the control socket, "M" the --metrics listener), ended by an item "E"
 * without a descriptor.  It keeps accepting.
 *
 * The new generation takes the listeners its own flags name (matched by
 * address; a port 0 matches any port of the same address), closes the
 * others and binds what it lacks.  Once its workers run it tells the master
 * (READY=1), which tells the old generation ('T' on its control channel):
 * that one stops accepting and drains: its workers finish their
 * connections.  The listening sockets are the same
 * kernel sockets throughout, so a client connecting at any moment is
 * accepted by one generation or the other.
 *
 * If the channel ends before that (the new generation failed: the master
 * killed it), the old generation forgets it and serves on.
 */
#include "supervisor.h"

#include "internal.h"
#include "runtime_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTENERS_WAIT_MS 5000

int bt__gen_from_env(struct bt_runtime *s)
{
	s->ctl_fd = -1;
	s->prev_fd = -1;
	s->next_fd = -1;
	const char *env = getenv("BATON_GENERATION");
	if (!env)
		return 0;
	int ctl, ho;
	if (sscanf(env, "ctl=%d,handover=%d", &ctl, &ho) != 2 || ctl < 0 || ho < 0 ||
	    fcntl(ctl, F_GETFD) < 0 || fcntl(ho, F_GETFD) < 0) {
		bt__log(BT_LOG_ERROR, "BATON_GENERATION=%s: not two open descriptors", env);
		return 2;
	}
	fcntl(ctl, F_SETFD, FD_CLOEXEC);
	fcntl(ho, F_SETFD, FD_CLOEXEC);
	unsetenv("BATON_GENERATION");
	s->ctl_fd = ctl;
	s->prev_fd = ho;
	return 0;
}

/* --- the new generation ------------------------------------------------------------ */

static int wanted_spec(const struct bt_runtime *s, int fd, int *used)
{
	unsigned count;
	const char *const *specs = bt__sup_listen_specs(s, &count);
	for (unsigned i = 0; i < count; i++)
		if (!used[i] && bt__listen_matches(specs[i], fd))
			return (int)i;
	return -1;
}

/* Is fd a unix socket bound to name (a path, or @name)? */
static int unix_named(int fd, const char *name)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof(sun);
	memset(&sun, 0, sizeof(sun));
	if (getsockname(fd, (struct sockaddr *)&sun, &len) < 0 || sun.sun_family != AF_UNIX)
		return 0;
	size_t n = len > offsetof(struct sockaddr_un, sun_path)
			   ? len - offsetof(struct sockaddr_un, sun_path)
			   : 0;
	if (name[0] == '@')
		return n >= 1 && sun.sun_path[0] == 0 && n - 1 == strlen(name + 1) &&
		       !memcmp(sun.sun_path + 1, name + 1, n - 1);
	return n >= 1 && sun.sun_path[0] && !strncmp(sun.sun_path, name, sizeof(sun.sun_path));
}

int bt__gen_take_listeners(struct bt_runtime *s)
{
	bt_fdpass_t *ch;
	int dupfd = fcntl(s->prev_fd, F_DUPFD_CLOEXEC, 0);
	int rc = dupfd < 0 ? -errno : bt_fdpass_open(&ch, dupfd);
	if (rc < 0) {
		if (dupfd >= 0)
			bt__close(dupfd);
		return bt__log_errno(BT_LOG_ERROR, rc, "reload: the handover channel");
	}
	struct pollfd p = {.fd = s->prev_fd, .events = POLLIN};
	int r;
	do
		r = poll(&p, 1, LISTENERS_WAIT_MS);
	while (r < 0 && errno == EINTR);
	struct bt_wire_msg msg;
	rc = r == 1 ? bt_fdpass_recv(ch, &msg) : r == 0 ? -ETIMEDOUT : -errno;
	if (rc <= 0 || msg.type != BT_WIRE_BATCH) {
		if (rc == 1)
			bt__log(BT_LOG_ERROR, "reload: the serving generation sent a %s, not its "
					      "listeners", bt_wire_type_name(msg.type));
		else
			bt__log_errno(BT_LOG_ERROR, rc ? rc : -ECONNRESET,
				      "reload: the serving generation's listeners");
		bt_fdpass_close(ch);
		return rc < 0 ? rc : -EPROTO;
	}
	int used[BT_RUNTIME_MAX_LISTEN] = {0};
	int slot[BT_RUNTIME_MAX_LISTEN];
	for (int i = 0; i < BT_RUNTIME_MAX_LISTEN; i++)
		slot[i] = -1;
	int activated = 0;
	const struct bt_wire_batch *b = &msg.u.batch;
	for (unsigned i = 0; i < b->n_items; i++) {
		const struct bt_wire_item *it = &b->items[i];
		char role = it->payload_len == 1 ? *(const char *)it->payload : '?';
		if (it->fd < 0)
			continue; /* "E", or a listener that did not arrive */
		int keep = 0;
		if ((role == 'S' || role == 'P') && s->cfg->nlisten == 0 &&
		    s->nl < BT_RUNTIME_MAX_LISTEN + 64) {
			s->lfds[s->nl] = it->fd;
			s->lproxy[s->nl] = role == 'P'; /* systemd named it "proxy" */
			s->lrole[s->nl++] = 'S';
			activated++;
			keep = 1;
		} else if (role == 'L') {
			int k = wanted_spec(s, it->fd, used);
			if (k >= 0) {
				used[k] = 1;
				slot[k] = it->fd;
				keep = 1;
			}
		} else if (role == 'A' && s->cfg->attach && s->attach_fd < 0) {
			s->attach_fd = it->fd;
			keep = 1;
		} else if (role == 'C' && s->ctl_name[0] && s->ctl_lfd < 0 &&
			   unix_named(it->fd, s->ctl_name)) {
			s->ctl_lfd = it->fd;
			keep = 1;
		} else if (role == 'M' && s->cfg->metrics && s->metrics_lfd < 0 &&
			   bt__listen_matches(s->cfg->metrics, it->fd)) {
			s->metrics_lfd = it->fd;
			keep = 1;
		}
		if (!keep)
			bt__close(it->fd);
	}
	bt_fdpass_close(ch); /* the items pointed into its buffer */
	if (activated)
		return 0;
	/* Ours in the order of the flags; the rest bound as at a start. */
	unsigned count;
	const char *const *specs = bt__sup_listen_specs(s, &count);
	for (unsigned i = 0; i < count; i++) {
		const char *spec = specs[i];
		char desc[160];
		int fd = slot[i];
		if (fd >= 0) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			getsockname(fd, (struct sockaddr *)&ss, &sl);
			bt__describe_addr((struct sockaddr *)&ss, sl, desc, sizeof(desc));
			bt__log(BT_LOG_INFO, "listening on %s (from the previous generation)%s", desc,
				bt__listen_proxy(spec) ? " (PROXY protocol)" : "");
		} else {
			fd = bt__listen_open(spec, s->cfg->backlog, desc, sizeof(desc));
			if (fd < 0) {
				for (unsigned k = i + 1; k < count; k++)
					if (slot[k] >= 0)
						bt__close(slot[k]);
				return fd;
			}
			bt__log(BT_LOG_INFO, "listening on %s%s", desc,
				bt__listen_proxy(spec) ? " (PROXY protocol)" : "");
		}
		s->lfds[s->nl] = fd;
		s->lproxy[s->nl] = (uint8_t)bt__listen_proxy(spec);
		s->lrole[s->nl++] = 'L';
	}
	return 0;
}

/* The channels to the previous generation (we are the new one) and to the
 * next (we are the old one): both may be open at once, when a reload
 * follows one whose old generation is still finishing. */
static bt_runtime_watch_t *prev_watch, *next_watch;

static void end_channel(struct bt_runtime *s, int *fd, bt_runtime_watch_t **w)
{
	if (*w)
		bt_runtime_unwatch(s, *w);
	*w = NULL;
	if (*fd >= 0)
		bt__close(*fd);
	*fd = -1;
}

static bt_fdpass_t *prev_ch;

static void end_previous(struct bt_runtime *s)
{
	if (prev_watch)
		bt_runtime_unwatch(s, prev_watch);
	prev_watch = NULL;
	if (prev_ch)
		bt_fdpass_close(prev_ch); /* it owns s->prev_fd */
	else if (s->prev_fd >= 0)
		bt__close(s->prev_fd);
	prev_ch = NULL;
	s->prev_fd = -1;
	if (s->taken || s->taken_refused)
		bt__log(BT_LOG_INFO, "reload: %llu connections taken over from the previous "
				     "generation (%llu bytes carried)%s",
			(unsigned long long)s->taken, (unsigned long long)s->taken_bytes,
			s->taken_refused ? ", some refused (logged)" : "");
}

/* Connections handed over (items flagged RESUMED) into our acceptor, which
 * dispatches them as work items; counted in n and bytes. */
static void take_resumed(struct bt_runtime *s, const struct bt_wire_batch *b, uint64_t *n,
			 uint64_t *bytes, const char *what)
{
	for (unsigned i = 0; i < b->n_items; i++) {
		struct bt_wire_item it = b->items[i];
		if (it.fd < 0)
			continue;
		if (!(it.flags & BT_WIRE_ITEM_RESUMED)) {
			bt__close(it.fd);
			continue;
		}
		it.peer_len = 0;
		int prc = bt_acceptor_push(s->acc, &it);
		if (prc < 0) {
			s->taken_refused++;
			bt__log_errno(BT_LOG_WARN, prc, "%s: taking connection %llu over", what,
				      (unsigned long long)it.id);
			bt__close(it.fd);
			continue;
		}
		(*n)++;
		*bytes += it.payload_len;
	}
}

/* The new generation's end: the old generation's workers hand their
 * connections over on it (BATCHes of items flagged RESUMED), the old
 * acceptor says DRAIN once it has stopped accepting, and the end of it is
 * the end of the old generation. */
static void on_previous(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents,
			void *arg)
{
	(void)w, (void)fd, (void)revents, (void)arg;
	struct bt_runtime *s = rt;
	for (int k = 0; k < 64; k++) {
		struct bt_wire_msg msg;
		int rc = bt_fdpass_recv(prev_ch, &msg);
		if (rc == -EAGAIN || rc == -EINTR)
			return;
		if (rc <= 0) {
			if (rc < 0)
				bt__log_errno(BT_LOG_WARN, rc, "reload: the previous generation's channel");
			bt__accs_kick(s);
			end_previous(s);
			return;
		}
		if (msg.type == BT_WIRE_DRAIN) {
			/* It stopped accepting: anything its accept woke up for
			 * and left on the listeners is ours. */
			bt__accs_kick(s);
			continue;
		}
		if (msg.type == BT_WIRE_BATCH)
			take_resumed(s, &msg.u.batch, &s->taken, &s->taken_bytes, "reload");
	}
}

/* --- live scaling: a retiring worker's connections come back ------------------- */

/* The retiring workers' end: the same items as at a reload, from workers
 * of this generation (loop_handover.c), for the others. */
static void on_rehome(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)w, (void)fd, (void)revents, (void)arg;
	struct bt_runtime *s = rt;
	uint64_t bytes = 0;
	for (int k = 0; k < 64; k++) {
		struct bt_wire_msg msg;
		int rc = bt_fdpass_recv(s->rehome_ch, &msg);
		if (rc == -EAGAIN || rc == -EINTR)
			return;
		if (rc <= 0) {
			/* We hold the other end: this is an error, not an end. */
			bt__log_errno(BT_LOG_WARN, rc ? rc : -EPIPE, "handing connections back");
			return;
		}
		if (msg.type == BT_WIRE_BATCH)
			take_resumed(s, &msg.u.batch, &s->rehomed, &bytes, "handing back");
	}
}

int bt__sup_rehome_fd(struct bt_runtime *s)
{
	if (!s->rehome_ch) {
		int sv[2];
		int rc = bt_fdpass_pair(sv, 0);
		if (rc < 0)
			return -1;
		rc = bt_fdpass_open(&s->rehome_ch, sv[0]);
		if (rc == 0) {
			bt_fdpass_set_nonblock(s->rehome_ch, 1);
			rc = bt_runtime_watch_fd(s, &s->rehome_w, sv[0], BT_WATCH_IN, on_rehome, NULL);
		} else {
			bt__close(sv[0]);
		}
		if (rc < 0) {
			bt__log_errno(BT_LOG_WARN, rc, "a channel for connections handed back");
			if (s->rehome_ch)
				bt_fdpass_close(s->rehome_ch);
			s->rehome_ch = NULL;
			bt__close(sv[1]);
			return -1;
		}
		s->rehome_peer = sv[1];
	}
	int fd = fcntl(s->rehome_peer, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		bt__log_errno(BT_LOG_WARN, -errno, "dup(handing back channel)");
	return fd;
}

void bt__sup_rehome_close(struct bt_runtime *s)
{
	if (s->rehome_w && s->acc)
		bt_runtime_unwatch(s, s->rehome_w);
	s->rehome_w = NULL;
	if (s->rehome_ch)
		bt_fdpass_close(s->rehome_ch); /* and its socket */
	s->rehome_ch = NULL;
	if (s->rehome_peer >= 0)
		bt__close(s->rehome_peer);
	s->rehome_peer = -1;
}

/* The new generation's workers run: take what the previous generation's
 * workers hand over, until it is gone. */
void bt__gen_ready(struct bt_runtime *s)
{
	if (s->prev_fd < 0 || prev_watch)
		return;
	int rc = bt_fdpass_open(&prev_ch, s->prev_fd);
	if (rc == 0) {
		bt_fdpass_set_nonblock(prev_ch, 1);
		rc = bt_runtime_watch_fd(s, &prev_watch, s->prev_fd, BT_WATCH_IN, on_previous, NULL);
	}
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "reload: the channel from the previous generation");
		end_previous(s);
	}
}

/* --- the old generation -------------------------------------------------------------- */

/* One listener (fd, or -1 for the end) tagged with its role. */
static void add_listener(struct bt_wire_item *it, size_t *n, int fd, const char *tag)
{
	it[*n].id = *n + 1;
	it[*n].flags = fd >= 0 ? BT_WIRE_ITEM_FD : 0;
	it[*n].fd = fd;
	it[*n].payload = tag;
	it[(*n)++].payload_len = 1;
}

static void send_listeners(struct bt_runtime *s)
{
	struct bt_wire_item it[BT_RUNTIME_MAX_LISTEN + 64 + 4];
	static const char tags[] = "LSAECMP";
	size_t n = 0;
	memset(it, 0, sizeof(it));
	for (int i = 0; i < s->nkeep; i++)
		add_listener(it, &n, s->lkeep[i],
			     s->lrole[i] != 'S' ? &tags[0] : s->lproxy[i] ? &tags[6] : &tags[1]);
	if (s->attach_fd >= 0)
		add_listener(it, &n, s->attach_fd, &tags[2]);
	if (s->ctl_lfd >= 0)
		add_listener(it, &n, s->ctl_lfd, &tags[4]);
	if (s->metrics_lfd >= 0)
		add_listener(it, &n, s->metrics_lfd, &tags[5]);
	add_listener(it, &n, -1, &tags[3]);
	bt_fdpass_t *ch;
	int dupfd = fcntl(s->next_fd, F_DUPFD_CLOEXEC, 0);
	int rc = dupfd < 0 ? -errno : bt_fdpass_open(&ch, dupfd);
	if (rc == 0) {
		rc = bt_fdpass_send_batch(ch, 1, it, n);
		bt_fdpass_close(ch);
	} else if (dupfd >= 0) {
		bt__close(dupfd);
	}
	if (rc < 0)
		bt__log_errno(BT_LOG_ERROR, rc, "reload: sending the listeners to the new generation");
	else
		bt__log(BT_LOG_DEBUG, "reload: %zu listeners sent to the new generation", n - 1);
}

/* The old generation's end: the new generation only closes it (it failed,
 * and the master killed it). */
static void on_handover(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents,
			void *arg)
{
	(void)w, (void)revents, (void)arg;
	unsigned char buf[64];
	ssize_t n;
	do
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return;
	if (n > 0)
		return;
	bt__log(BT_LOG_WARN, "reload: the new generation went away before it served: serving on");
	end_channel(rt, &rt->next_fd, &next_watch);
}

/* The master promoted the new generation ('T', and what it says of it):
 * stop accepting, finish. */
static void take_over(struct bt_runtime *s, const char *what)
{
	bt__log(BT_LOG_INFO, "reload: a new generation serves: this one stops accepting and "
			     "finishes its connections");
	char msg[200];
	snprintf(msg, sizeof(msg), "%.120s; the previous generation (pid %ld) finishes its connections",
		 *what ? what : "a new generation serves", (long)getpid());
	if (s->attach_fd >= 0 && s->next_fd >= 0)
		s->attach_kept = 1; /* its path is the new generation's now */
	if (s->next_fd >= 0) {
		s->handed_over = 1;
		/* The control socket's too: it stops accepting before it answers
		 * the reload, so that the next request reaches the new one. */
		bt__ctl_handed_over(s);
	}
	bt__ctl_reload_done(s, 1, msg);
	/* Our workers get the channel ahead of their DRAIN, and hand their
	 * connections over on it at safe points (loop_handover.c). */
	unsigned n = s->next_fd >= 0 ? bt__acc_handover(s->acc, s->next_fd) : 0;
	bt__log(BT_LOG_DEBUG, "reload: %u workers hand their connections over", n);
	bt__sup_drain(s, "reload"); /* the listeners' accepts cancelled, */
	if (s->next_fd >= 0) {      /* then the new generation looks at them */
		struct bt_wire_drain d = {.deadline_ms = 0};
		unsigned char buf[BT_WIRE_HDR_SIZE + BT_WIRE_DRAIN_SIZE];
		long len = bt_wire_encode_drain(buf, sizeof(buf), 0, &d);
		if (len > 0 && send(s->next_fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			bt__log_errno(BT_LOG_WARN, -errno, "reload: send(DRAIN) to the new generation");
	}
	end_channel(s, &s->next_fd, &next_watch);
}

static void on_ctl(bt_runtime_t *rt, bt_runtime_watch_t *w, int fd, unsigned revents, void *arg)
{
	(void)revents, (void)arg;
	struct bt_runtime *s = rt;
	char text[256];
	struct iovec iov = {.iov_base = text, .iov_len = sizeof(text) - 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} cm;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
			    .msg_controllen = sizeof(cm.buf)};
	ssize_t n;
	do
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return;
	int got = -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
				int f;
				memcpy(&f, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
				if (got < 0 && n == 1 && text[0] == 'H')
					got = f;
				else
					bt__close(f);
			}
	if (n <= 0) {
		bt_runtime_unwatch(rt, w);
		bt__notify_relay(-1);
		bt__close(s->ctl_fd);
		s->ctl_fd = -1;
		bt__sup_drain(s, "the master went away");
		return;
	}
	text[n] = 0;
	if (text[0] == 'T') {
		take_over(s, text + 1);
		return;
	}
	if (text[0] == 'F') {
		/* A reload failed or was refused (what the master says). */
		bt__ctl_reload_done(s, 0, text + 1);
		return;
	}
	if (got < 0)
		return;
	if (s->draining || s->next_fd >= 0) {
		bt__close(got); /* too late, or one is going on: its end tells the master */
		return;
	}
	s->next_fd = got;
	send_listeners(s);
	int rc = bt_runtime_watch_fd(s, &next_watch, got, BT_WATCH_IN, on_handover, NULL);
	if (rc < 0) {
		bt__log_errno(BT_LOG_ERROR, rc, "reload: watching the handover channel");
		end_channel(s, &s->next_fd, &next_watch);
	}
}

int bt__gen_watch(struct bt_runtime *s)
{
	if (s->ctl_fd < 0)
		return 0;
	bt__notify_relay(s->ctl_fd);
	bt_runtime_watch_t *w;
	int rc = bt_runtime_watch_fd(s, &w, s->ctl_fd, BT_WATCH_IN, on_ctl, NULL);
	if (rc < 0)
		bt__log_errno(BT_LOG_ERROR, rc, "watching the master's channel");
	return rc;
}
