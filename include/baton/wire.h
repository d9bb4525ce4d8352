/* SPDX-License-Identifier: MIT */
/*
 * baton wire format v1: pure encode/decode of the messages exchanged over a
 * worker channel (AF_UNIX SOCK_SEQPACKET).  No syscalls, no allocation; every
 * decoder checks every length and count against the bytes it was given.
 *
 * The byte layout is specified in docs/wire.md.  All integers are
 * little-endian on the wire whatever the host order.
 *
 * Return convention: a count or 0 on success, a negative errno on failure.
 *
 * Threads: any thread; the functions share no state (each works only on
 * the buffers and records it is given).
 */
#ifndef BATON_WIRE_H
#define BATON_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <baton/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BT_WIRE_MAGIC 0x4e544142u /* bytes "BATN" */
#define BT_WIRE_VERSION 1u

#define BT_WIRE_HDR_SIZE 32u
#define BT_WIRE_ITEM_SIZE 56u
#define BT_WIRE_ACK_SIZE 24u
#define BT_WIRE_HELLO_SIZE 16u
#define BT_WIRE_DRAIN_SIZE 8u

/* SCM_MAX_FD in the kernel: the most descriptors one message can carry. */
#define BT_WIRE_MAX_FDS 253u
/* A batch holds at most this many items, with or without descriptors. */
#define BT_WIRE_MAX_ITEMS 253u
/* The largest message, header included.  Receivers size their buffer for it. */
#define BT_WIRE_MAX_MSG 65536u
/* Longest peer address bytes (sun_path). */
#define BT_WIRE_MAX_ADDR 108u

enum bt_wire_type {
	BT_WIRE_BATCH = 1, /* acceptor -> worker: items, with descriptors */
	BT_WIRE_ACK = 2,   /* worker -> acceptor: what has been received */
	BT_WIRE_HELLO = 3, /* worker -> acceptor: who I am */
	BT_WIRE_DRAIN = 4, /* acceptor -> worker: finish and exit */
};

/* Item flags.  Bits 16..31 belong to the application and are carried as is. */
#define BT_WIRE_ITEM_FD 0x1u       /* the item carries a descriptor */
#define BT_WIRE_ITEM_LOST 0x2u     /* receiver only: its descriptor did not
                                      arrive (MSG_CTRUNC); never on the wire */
/* Since 0.3, between generations of one server (docs/reload.md): */
#define BT_WIRE_ITEM_HANDOVER 0x4u /* the descriptor is a channel to the next
                                      generation: hand idle connections over
                                      on it (to a worker, before DRAIN) */
#define BT_WIRE_ITEM_RESUMED 0x8u  /* a connection handed over by the previous
                                      generation; its payload is input read
                                      there and not consumed */
/* Since 0.3, to the server's own workers only (never to an attached one): */
#define BT_WIRE_ITEM_PROXY 0x10u   /* the connection starts with a PROXY
                                      protocol header (a --listen ADDR,proxy
                                      listener): the worker loop reads it
                                      before the handler sees the connection */
#define BT_WIRE_ITEM_APP_MASK 0xffff0000u
#define BT_WIRE_ITEM_WIRE_MASK                                                                  \
	(BT_WIRE_ITEM_FD | BT_WIRE_ITEM_HANDOVER | BT_WIRE_ITEM_RESUMED | BT_WIRE_ITEM_PROXY |  \
	 BT_WIRE_ITEM_APP_MASK)

/*
 * One work item.  When encoding, fd is the descriptor to send (used only by
 * fdpass) and is ignored by the wire layer except for BT_WIRE_ITEM_FD.  When
 * decoded, payload points into the caller's message buffer and is valid as
 * long as that buffer is; fd is filled in by fdpass (-1 when none).
 */
struct bt_wire_item {
	uint64_t id;
	uint64_t accept_ns; /* CLOCK_MONOTONIC nanoseconds */
	uint32_t flags;     /* BT_WIRE_ITEM_* */
	int fd;
	socklen_t peer_len; /* 0: no peer address */
	struct sockaddr_storage peer; /* AF_INET, AF_INET6 or AF_UNIX */
	const void *payload;
	uint32_t payload_len;
};

/* A decoded BATCH.  items is caller storage for at least BT_WIRE_MAX_ITEMS. */
struct bt_wire_batch {
	uint64_t seq;
	uint16_t n_items;
	uint16_t n_fds;  /* descriptors the header announces */
	uint16_t n_lost; /* receiver only: items flagged BT_WIRE_ITEM_LOST */
	struct bt_wire_item *items;
};

struct bt_wire_ack {
	uint64_t seq;       /* every BATCH up to and including seq has arrived */
	uint64_t fds_total; /* descriptors received since the channel opened */
	uint32_t load;      /* the worker's open connections (or queued jobs) */
	uint32_t n_lost;    /* ids that follow in lost[] */
	uint64_t lost[BT_WIRE_MAX_FDS]; /* items whose descriptor did not arrive */
};

struct bt_wire_hello {
	uint32_t worker_id;
	uint32_t pid;
	uint32_t version; /* highest wire version the worker speaks */
	/* The most items the worker takes in one BATCH: 1..253, or 0 for
	 * 253 (this was a reserved 0 before 0.3: such a worker takes 253). */
	uint32_t max_batch;
};

struct bt_wire_drain {
	uint32_t deadline_ms; /* 0: no deadline */
	uint32_t flags;       /* reserved, 0 */
};

/* A decoded message of any type; which member is valid follows type. */
struct bt_wire_msg {
	uint16_t type;
	uint64_t seq;
	union {
		struct bt_wire_batch batch;
		struct bt_wire_ack ack;
		struct bt_wire_hello hello;
		struct bt_wire_drain drain;
	} u;
};

/*
 * Encoded size of a BATCH of n items, or -EINVAL (bad item, unsupported
 * address family), -E2BIG (more than BT_WIRE_MAX_ITEMS items or
 * BT_WIRE_MAX_FDS descriptors), -EMSGSIZE (over BT_WIRE_MAX_MSG).
 */
BT_API long bt_wire_batch_size(const struct bt_wire_item *items, size_t n);

/*
 * Encode a BATCH into buf.  Returns the message length, or the errors of
 * bt_wire_batch_size, or -ENOBUFS if cap is too small.  buf is untouched on
 * failure.
 */
BT_API long bt_wire_encode_batch(void *buf, size_t cap, uint64_t seq,
				 const struct bt_wire_item *items, size_t n);

/* Encode an ACK (seq is the header sequence, usually 0). Length or -errno. */
BT_API long bt_wire_encode_ack(void *buf, size_t cap, uint64_t seq,
			       const struct bt_wire_ack *ack);
BT_API long bt_wire_encode_hello(void *buf, size_t cap, uint64_t seq,
				 const struct bt_wire_hello *hello);
BT_API long bt_wire_encode_drain(void *buf, size_t cap, uint64_t seq,
				 const struct bt_wire_drain *drain);

/*
 * Decode one message of len bytes that arrived with nfds descriptors.
 * For a BATCH, out->u.batch.items must point to caller storage for
 * BT_WIRE_MAX_ITEMS items before the call; item fds are set to -1.
 * When truncated is non-zero (the descriptors were cut short by
 * MSG_CTRUNC), nfds may be below the announced count: the first nfds
 * descriptor-bearing items keep theirs and the rest are flagged
 * BT_WIRE_ITEM_LOST and counted in n_lost.
 * Returns 0, or -EBADMSG (malformed: bad magic, type, length, count,
 * reserved bits, descriptors on a non-BATCH message or a count that
 * disagrees with nfds), -EPROTONOSUPPORT (other version), -EINVAL (NULL
 * arguments).  out is unspecified on failure.
 */
BT_API int bt_wire_decode(const void *buf, size_t len, size_t nfds,
			  int truncated, struct bt_wire_msg *out);

/* The sequence number and type of a message without a full decode:
 * 0 or -EBADMSG / -EPROTONOSUPPORT. */
BT_API int bt_wire_peek(const void *buf, size_t len, uint16_t *type,
			uint64_t *seq);

/* Name of a message type, "unknown" for others. */
BT_API const char *bt_wire_type_name(unsigned type);

#ifdef __cplusplus
}
#endif

#endif
