/* SPDX-License-Identifier: MIT */
/*
 * Batched descriptor passing over AF_UNIX SOCK_SEQPACKET (SCM_RIGHTS).
 *
 * A channel (bt_fdpass_t) wraps one connected SEQPACKET socket and owns
 * the buffers for one message in each direction.  One message is one wire
 * message (baton/wire.h) plus up to BT_WIRE_MAX_FDS descriptors in a single
 * SCM_RIGHTS control message.  SOCK_SEQPACKET keeps messages whole and
 * their descriptors bound to them; SOCK_STREAM would merge them, so stream
 * sockets are refused.
 *
 * Blocking or not follows the socket's O_NONBLOCK (BT_FDPASS_NONBLOCK in
 * the helpers, or bt_fdpass_set_nonblock()); EINTR is retried in both.
 * A channel may be used by one sending thread and one receiving thread at
 * the same time, not by two senders or two receivers.
 *
 * Descriptor ownership, all-or-nothing:
 *  - Sending never closes or takes a descriptor: on success the kernel has
 *    put its own references in the message, on failure nothing was sent.
 *    Either way the caller still owns every fd it passed.
 *  - Every received descriptor belongs to the channel until the call
 *    returns success; then it belongs to the caller (item fd fields).  A
 *    call that fails closes every descriptor that arrived with the message.
 *
 * Return convention: 0 or a count on success, a negative errno on failure.
 */
#ifndef BATON_FDPASS_H
#define BATON_FDPASS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <baton/version.h>
#include <baton/wire.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_fdpass bt_fdpass_t;

/* Flags for the socket helpers. */
#define BT_FDPASS_NONBLOCK 0x1

/* No uid allowed besides our own (bt_fdpass_accept). */
#define BT_FDPASS_NO_UID ((uid_t)-1)

/*
 * Make a connected SOCK_SEQPACKET pair, close-on-exec, into sv.
 * Returns 0 or -errno from socketpair(2).
 */
BT_API int bt_fdpass_pair(int sv[2], int flags);

/*
 * Listen on a named socket.  name is a filesystem path, or "@name" for the
 * Linux abstract namespace.  A path socket is created mode 0600 whatever
 * the umask; a stale socket file nobody listens on is replaced, anything
 * else at that path gives -EADDRINUSE.  Returns the listening fd or -errno
 * (-EINVAL empty name, -ENAMETOOLONG, errors of socket/bind/listen).
 */
BT_API int bt_fdpass_listen(const char *name, int flags);

/*
 * Accept one channel.  The peer's SO_PEERCRED uid must be our effective uid
 * or allow_uid (BT_FDPASS_NO_UID: none): anyone who attaches receives
 * client connections.  A refused peer is disconnected, logged with its pid
 * and uid, and gives -EPERM.  Returns the connected fd or -errno
 * (-EAGAIN on a non-blocking listener with nobody waiting).
 */
BT_API int bt_fdpass_accept(int lfd, uid_t allow_uid, int flags);

/* Connect to a named socket (see bt_fdpass_listen).  fd or -errno. */
BT_API int bt_fdpass_connect(const char *name, int flags);

/*
 * Check that sock can carry batches: 0, or -ENOTSOCK, -EAFNOSUPPORT (not
 * AF_UNIX), -EPROTOTYPE (not SOCK_SEQPACKET, e.g. SOCK_STREAM, which
 * merges messages), -EBADF.  Logs why a socket is refused.
 */
BT_API int bt_fdpass_check(int sock);

/*
 * Open a channel on a connected socket after bt_fdpass_check().  On success
 * the channel owns sock (bt_fdpass_close closes it); on failure the caller
 * still does.  Returns 0 or -errno (errors of bt_fdpass_check, -ENOMEM).
 */
BT_API int bt_fdpass_open(bt_fdpass_t **out, int sock);

/* Close the channel and its socket.  NULL is a no-op. */
BT_API void bt_fdpass_close(bt_fdpass_t *ch);

/* The channel's socket, for polling.  The channel still owns it. */
BT_API int bt_fdpass_fd(const bt_fdpass_t *ch);

/* Switch the socket to non-blocking (on != 0) or blocking.  0 or -errno. */
BT_API int bt_fdpass_set_nonblock(bt_fdpass_t *ch, int on);

/*
 * Send one message: len (1..BT_WIRE_MAX_MSG) bytes and nfds descriptors,
 * atomically.  Returns 0, or -E2BIG (nfds > BT_WIRE_MAX_FDS, refused before
 * any syscall), -EINVAL (len 0 or too large, NULL), -EAGAIN (non-blocking
 * and the channel is full), -EPIPE (the peer is gone; no SIGPIPE is
 * raised), -ETOOMANYREFS (an unprivileged sender has more descriptors in
 * flight than its RLIMIT_NOFILE: wait for acknowledgements), or another
 * errno of sendmsg(2).  The caller keeps every fd in all cases.
 */
BT_API int bt_fdpass_send(bt_fdpass_t *ch, const void *buf, size_t len,
			  const int *fds, size_t nfds);

/*
 * Encode and send a BATCH of n items; the fd of every item flagged
 * BT_WIRE_ITEM_FD rides along, in item order.  Returns 0, the errors of
 * bt_wire_encode_batch (before any syscall), or those of bt_fdpass_send.
 * The caller keeps every fd in all cases.
 */
BT_API int bt_fdpass_send_batch(bt_fdpass_t *ch, uint64_t seq,
				const struct bt_wire_item *items, size_t n);

/*
 * Receive and decode one message into msg.  For a BATCH, msg->u.batch.items
 * points into the channel and is valid until the next receive; each item's
 * fd (or -1) now belongs to the caller.
 *
 * Returns 1 (a message), 0 (the peer closed the channel, or sent a 0-byte
 * message, which reads the same on SOCK_SEQPACKET), or:
 *  -EAGAIN        non-blocking and nothing to read;
 *  -EMSGSIZE      the message was larger than BT_WIRE_MAX_MSG (MSG_TRUNC);
 *  -EBADMSG       malformed: bad magic, type, lengths, counts that disagree
 *                 with the descriptors that arrived, descriptors on a
 *                 message that may not carry them, a message shorter
 *                 than the header;
 *  -EPROTONOSUPPORT  another wire version;
 *  other errnos of recvmsg(2).
 * On every error all descriptors that arrived are closed and counted; after
 * -EMSGSIZE, -EBADMSG or -EPROTONOSUPPORT the peer should be dropped.
 *
 * Descriptors cut short by the kernel (MSG_CTRUNC, e.g. the receiver is at
 * RLIMIT_NOFILE) are not an error: the call succeeds, the items whose fd
 * did not arrive are flagged BT_WIRE_ITEM_LOST with fd -1, and
 * msg->u.batch.n_lost counts them, so the sender can redeliver them.
 */
BT_API int bt_fdpass_recv(bt_fdpass_t *ch, struct bt_wire_msg *msg);

/*
 * For event loops that issue the recvmsg themselves (io_uring RECVMSG):
 * bt_fdpass_rx_prepare returns the msghdr to receive into, to be used with
 * flags MSG_CMSG_CLOEXEC; bt_fdpass_rx_complete takes the operation's result
 * (bytes or -errno) and finishes exactly like bt_fdpass_recv, same returns.
 */
BT_API struct msghdr *bt_fdpass_rx_prepare(bt_fdpass_t *ch);
BT_API int bt_fdpass_rx_complete(bt_fdpass_t *ch, long res,
				 struct bt_wire_msg *msg);

/*
 * The same for sends: bt_fdpass_tx_prepare builds, in the channel, the
 * msghdr of one message (checks as bt_fdpass_send: -EINVAL, -E2BIG) for an
 * IORING_OP_SENDMSG issued with MSG_NOSIGNAL (and MSG_DONTWAIT to be told
 * -EAGAIN instead of waiting).  buf and the descriptors must stay valid until
 * the operation completes; bt_fdpass_tx_complete takes its result and returns
 * 0 or -errno as bt_fdpass_send would.  One prepared send at a time.
 */
BT_API int bt_fdpass_tx_prepare(bt_fdpass_t *ch, const void *buf, size_t len,
				const int *fds, size_t nfds, struct msghdr **out);
BT_API int bt_fdpass_tx_complete(bt_fdpass_t *ch, long res);

struct bt_fdpass_stats {
	size_t size;               /* sizeof(struct bt_fdpass_stats): docs/abi.md */
	uint64_t sent_msgs;
	uint64_t sent_fds;
	uint64_t recv_msgs;
	uint64_t recv_fds;   /* descriptors handed to the caller */
	uint64_t malformed;  /* messages refused (-EBADMSG, -EMSGSIZE, ...) */
	uint64_t closed_fds; /* descriptors closed because of such messages */
	uint64_t truncated;  /* messages with MSG_CTRUNC */
	uint64_t lost_fds;   /* descriptors announced but cut short */
};

/* A snapshot of the channel's counters (read it from the receiving thread
 * or when the channel is idle). */
BT_API void bt_fdpass_get_stats_sized(const bt_fdpass_t *ch, struct bt_fdpass_stats *out,
				      size_t size);
static inline void bt_fdpass_get_stats(const bt_fdpass_t *ch, struct bt_fdpass_stats *out)
{
	bt_fdpass_get_stats_sized(ch, out, sizeof(*out));
}

#ifdef __cplusplus
}
#endif

#endif
