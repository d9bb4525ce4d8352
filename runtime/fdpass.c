/* SPDX-License-Identifier: MIT */
/*
 * One batch per SOCK_SEQPACKET message, its descriptors in one SCM_RIGHTS
 * control message.
 *
 * Kernel rules this file is written against:
 *  - A message with no data bytes is not delivered with its descriptors,
 *    so every message carries at least its header.
 *  - The kernel caps SCM_RIGHTS at SCM_MAX_FD (253) per message; the
 *    receive control buffer is always sized for 253 so that only the
 *    receiver's RLIMIT_NOFILE can cut descriptors short.  When it does,
 *    MSG_CTRUNC is set and the descriptors installed are the first ones in
 *    send order (scm_detach_fds stops at the first failure).
 *  - MSG_TRUNC: data beyond the buffer is discarded but its descriptors are
 *    installed anyway: they must be closed.
 *  - MSG_CMSG_CLOEXEC on every receive: no window in which a fork+exec
 *    elsewhere in the process could inherit a client connection.
 *  - MSG_NOSIGNAL on every send: a vanished worker gives EPIPE, not a
 *    process-killing SIGPIPE.
 *  - An unprivileged sender whose descriptors in flight exceed its
 *    RLIMIT_NOFILE gets ETOOMANYREFS (too_many_unix_fds()); it is returned
 *    as is so the queue can bound what it has in flight.
 */

#include <baton/fdpass.h>

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* CMSG_SPACE(sizeof(int) * 253), spelled so that every compiler sees a
 * constant (clang folds glibc's CMSG_SPACE as a variable size); checked
 * against CMSG_SPACE in bt_fdpass_open. */
#define ALIGN_SZ(x) (((x) + sizeof(size_t) - 1) & ~(sizeof(size_t) - 1))
#define CTL_SIZE (ALIGN_SZ(sizeof(struct cmsghdr)) + ALIGN_SZ(sizeof(int) * BT_WIRE_MAX_FDS))

struct bt_fdpass {
	int sock;

	/* Receive side: only the receiving thread touches these. */
	struct msghdr rmsg;
	struct iovec riov;
	size_t rfds_n;
	int rfds[BT_WIRE_MAX_FDS];
	struct {
		_Alignas(struct cmsghdr) char buf[CTL_SIZE];
	} rctl;
	struct bt_wire_item items[BT_WIRE_MAX_ITEMS];
	uint64_t recv_msgs, recv_fds, malformed, closed_fds, truncated, lost;
	uint64_t ctrunc_logged_ns;
	_Alignas(8) unsigned char rbuf[BT_WIRE_MAX_MSG];

	/* Send side: only the sending thread touches these. */
	uint64_t sent_msgs, sent_fds;
	struct msghdr tmsg;
	struct iovec tiov;
	size_t tlen, tnfds;
	struct {
		_Alignas(struct cmsghdr) char buf[CTL_SIZE];
	} tctl;
	int tfds[BT_WIRE_MAX_FDS];
	_Alignas(8) unsigned char tbuf[BT_WIRE_MAX_MSG];
};

int bt_fdpass_open(bt_fdpass_t **out, int sock)
{
	if (!out)
		return -EINVAL;
	if (CMSG_SPACE(sizeof(int) * BT_WIRE_MAX_FDS) > CTL_SIZE)
		return -EINVAL; /* a libc with another cmsg layout */
	int rc = bt_fdpass_check(sock);
	if (rc < 0)
		return rc;
	bt_fdpass_t *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return -ENOMEM;
	ch->sock = sock;
	*out = ch;
	return 0;
}

void bt_fdpass_close(bt_fdpass_t *ch)
{
	if (!ch)
		return;
	bt__close(ch->sock);
	free(ch);
}

int bt_fdpass_fd(const bt_fdpass_t *ch)
{
	return ch ? ch->sock : -EINVAL;
}

int bt_fdpass_set_nonblock(bt_fdpass_t *ch, int on)
{
	int fl = fcntl(ch->sock, F_GETFL);
	if (fl < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "fcntl(F_GETFL)");
	fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
	if (fcntl(ch->sock, F_SETFL, fl) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "fcntl(F_SETFL)");
	return 0;
}

/* Fill msg/iov/ctl for one message; checks as bt_fdpass_send. */
static int build_msg(struct msghdr *msg, struct iovec *iov, char *ctl,
		     const void *buf, size_t len, const int *fds, size_t nfds)
{
	if (!buf || len == 0 || len > BT_WIRE_MAX_MSG)
		return -EINVAL;
	if (nfds > BT_WIRE_MAX_FDS)
		return -E2BIG;
	if (nfds && !fds)
		return -EINVAL;
	iov->iov_base = (void *)buf;
	iov->iov_len = len;
	memset(msg, 0, sizeof(*msg));
	msg->msg_iov = iov;
	msg->msg_iovlen = 1;
	if (nfds) {
		msg->msg_control = ctl;
		msg->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	return 0;
}

int bt_fdpass_tx_prepare(bt_fdpass_t *ch, const void *buf, size_t len,
			 const int *fds, size_t nfds, struct msghdr **out)
{
	if (!ch || !out)
		return -EINVAL;
	int rc = build_msg(&ch->tmsg, &ch->tiov, ch->tctl.buf, buf, len, fds, nfds);
	if (rc < 0)
		return rc;
	ch->tlen = len;
	ch->tnfds = nfds;
	*out = &ch->tmsg;
	return 0;
}

static int send_result(bt_fdpass_t *ch, long n, size_t len, size_t nfds)
{
	if (n < 0) {
		int err = (int)n;
		/* Back-pressure and a peer's exit are the caller's events,
		 * not failures of ours. */
		if (err != -EAGAIN && err != -EPIPE && err != -ETOOMANYREFS &&
		    err != -ECONNRESET)
			bt__log_errno(BT_LOG_ERROR, err,
				      "sendmsg(channel fd %d, %zu bytes, %zu fds)",
				      ch->sock, len, nfds);
		return err;
	}
	if ((size_t)n != len) {
		/* SEQPACKET sends are atomic; a short count would be a
		 * kernel surprise, and the peer drops a short message. */
		bt__log(BT_LOG_ERROR, "sendmsg(channel fd %d): %ld of %zu bytes",
			ch->sock, n, len);
		return -EIO;
	}
	ch->sent_msgs++;
	ch->sent_fds += nfds;
	return 0;
}

int bt_fdpass_tx_complete(bt_fdpass_t *ch, long res)
{
	return send_result(ch, res, ch->tlen, ch->tnfds);
}

int bt_fdpass_send(bt_fdpass_t *ch, const void *buf, size_t len,
		   const int *fds, size_t nfds)
{
	if (!ch)
		return -EINVAL;
	struct {
		_Alignas(struct cmsghdr) char buf[CTL_SIZE];
	} ctl;
	struct iovec iov;
	struct msghdr msg;
	int rc = build_msg(&msg, &iov, ctl.buf, buf, len, fds, nfds);
	if (rc < 0)
		return rc;
	ssize_t n;
	do
		n = sendmsg(ch->sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return send_result(ch, n < 0 ? -errno : (long)n, len, nfds);
}

int bt_fdpass_send_batch(bt_fdpass_t *ch, uint64_t seq,
			 const struct bt_wire_item *items, size_t n)
{
	if (!ch)
		return -EINVAL;
	long len = bt_wire_encode_batch(ch->tbuf, sizeof(ch->tbuf), seq, items, n);
	if (len < 0)
		return (int)len;
	size_t nfds = 0;
	for (size_t i = 0; i < n; i++) {
		if (!(items[i].flags & BT_WIRE_ITEM_FD))
			continue;
		if (items[i].fd < 0)
			return -EBADF;
		ch->tfds[nfds++] = items[i].fd;
	}
	return bt_fdpass_send(ch, ch->tbuf, (size_t)len, ch->tfds, nfds);
}

struct msghdr *bt_fdpass_rx_prepare(bt_fdpass_t *ch)
{
	ch->riov.iov_base = ch->rbuf;
	ch->riov.iov_len = sizeof(ch->rbuf);
	memset(&ch->rmsg, 0, sizeof(ch->rmsg));
	ch->rmsg.msg_iov = &ch->riov;
	ch->rmsg.msg_iovlen = 1;
	ch->rmsg.msg_control = ch->rctl.buf;
	ch->rmsg.msg_controllen = sizeof(ch->rctl.buf);
	ch->rfds_n = 0;
	return &ch->rmsg;
}

static void close_rfds(bt_fdpass_t *ch)
{
	for (size_t i = 0; i < ch->rfds_n; i++)
		bt__close(ch->rfds[i]);
	ch->closed_fds += ch->rfds_n;
	ch->rfds_n = 0;
}

/*
 * Take every descriptor out of the control messages, whatever else is
 * there, so that none can leak.  Returns 0, or -EBADMSG if something other
 * than SCM_RIGHTS arrived (its descriptors are still collected and closed
 * by the caller).
 */
static int collect_fds(bt_fdpass_t *ch)
{
	int rc = 0;
	struct msghdr *m = &ch->rmsg;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			rc = -EBADMSG;
			continue;
		}
		if (c->cmsg_len < CMSG_LEN(0))
			continue;
		size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		const unsigned char *data = CMSG_DATA(c);
		for (size_t i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (ch->rfds_n < BT_WIRE_MAX_FDS) {
				ch->rfds[ch->rfds_n++] = fd;
			} else {
				/* Cannot happen with SCM_MAX_FD 253; close
				 * rather than lose track of it. */
				bt__close(fd);
				ch->closed_fds++;
				rc = -EBADMSG;
			}
		}
	}
	return rc;
}

static int refuse(bt_fdpass_t *ch, int err, const char *why)
{
	size_t n = ch->rfds_n;
	close_rfds(ch);
	ch->malformed++;
	bt__log(BT_LOG_ERROR,
		"recvmsg(channel fd %d): refused message: %s; closed the %zu descriptor%s it carried",
		ch->sock, why, n, n == 1 ? "" : "s");
	return err;
}

int bt_fdpass_rx_complete(bt_fdpass_t *ch, long res, struct bt_wire_msg *msg)
{
	if (res < 0) {
		/* No message was received, so no descriptors either. */
		if (res != -EAGAIN && res != -ECONNRESET)
			bt__log_errno(BT_LOG_ERROR, (int)res, "recvmsg(channel fd %d)", ch->sock);
		return (int)res;
	}
	int flags = ch->rmsg.msg_flags;
	int ctl_rc = collect_fds(ch);

	if (res == 0) {
		/* End of stream, or an empty message: the kernel does not
		 * deliver descriptors with one, but be sure. */
		if (ch->rfds_n)
			return refuse(ch, -EBADMSG, "empty message with descriptors");
		return 0;
	}
	if (flags & MSG_TRUNC)
		return refuse(ch, -EMSGSIZE, "larger than the 64 KiB maximum (MSG_TRUNC)");
	if (ctl_rc < 0)
		return refuse(ch, ctl_rc, "unexpected control message");

	int truncated = (flags & MSG_CTRUNC) != 0;
	msg->u.batch.items = ch->items;
	int rc = bt_wire_decode(ch->rbuf, (size_t)res, ch->rfds_n, truncated, msg);
	if (rc < 0) {
		char why[96];
		snprintf(why, sizeof(why), "%s (%zu bytes, %zu fds%s)",
			 rc == -EPROTONOSUPPORT ? "unsupported wire version" : "malformed",
			 (size_t)res, ch->rfds_n, truncated ? ", MSG_CTRUNC" : "");
		return refuse(ch, rc, why);
	}
	if (msg->type == BT_WIRE_BATCH) {
		struct bt_wire_batch *b = &msg->u.batch;
		size_t k = 0;
		for (size_t i = 0; i < b->n_items; i++) {
			struct bt_wire_item *it = &b->items[i];
			if ((it->flags & BT_WIRE_ITEM_FD) &&
			    !(it->flags & BT_WIRE_ITEM_LOST))
				it->fd = ch->rfds[k++];
		}
		if (truncated) {
			ch->truncated++;
			ch->lost += b->n_lost;
			/* At most one line a second: a worker at its limit sees
			 * this for every batch until connections close. */
			uint64_t now = bt__now_ns();
			if (now - ch->ctrunc_logged_ns >= 1000000000ull || !ch->ctrunc_logged_ns) {
				bt__log(BT_LOG_WARN,
					"recvmsg(channel fd %d): MSG_CTRUNC: %zu of %u descriptors of batch %llu arrived (RLIMIT_NOFILE?); %u items to redeliver; %llu batches cut short so far",
					ch->sock, ch->rfds_n, (unsigned)b->n_fds,
					(unsigned long long)b->seq, (unsigned)b->n_lost,
					(unsigned long long)ch->truncated);
				ch->ctrunc_logged_ns = now;
			}
		}
	} else if (truncated) {
		/* Only a BATCH may carry descriptors at all. */
		ch->truncated++;
		return refuse(ch, -EBADMSG, "descriptors on a non-BATCH message (MSG_CTRUNC)");
	}
	ch->recv_msgs++;
	ch->recv_fds += ch->rfds_n;
	ch->rfds_n = 0; /* handed over to the caller */
	return 1;
}

int bt_fdpass_recv(bt_fdpass_t *ch, struct bt_wire_msg *msg)
{
	if (!ch || !msg)
		return -EINVAL;
	struct msghdr *m = bt_fdpass_rx_prepare(ch);
	ssize_t n;
	do
		n = recvmsg(ch->sock, m, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	return bt_fdpass_rx_complete(ch, n < 0 ? -errno : (long)n, msg);
}

void bt_fdpass_get_stats_sized(const bt_fdpass_t *ch, struct bt_fdpass_stats *dst, size_t size)
{
	struct bt_fdpass_stats st, *out = &st;
	out->size = sizeof(st);
	out->sent_msgs = ch->sent_msgs;
	out->sent_fds = ch->sent_fds;
	out->recv_msgs = ch->recv_msgs;
	out->recv_fds = ch->recv_fds;
	out->malformed = ch->malformed;
	out->closed_fds = ch->closed_fds;
	out->truncated = ch->truncated;
	out->lost_fds = ch->lost;
	bt__sized_out(dst, size, &st, sizeof(st));
}
