/* SPDX-License-Identifier: MIT */
/*
 * A worker's side of a reload (docs/reload.md): its connections move to the
 * next generation of the server at safe points instead of closing.
 *
 * Before its DRAIN the worker gets a channel to the next generation (an
 * item flagged BT_WIRE_ITEM_HANDOVER).  If the handler has on_handover, the
 * drain then hands connections over instead of ending them: at every tick
 * each open connection with no output queued is offered to on_handover,
 * which says whether it is at a safe point (between requests) and gives
 * the bytes it has read and not consumed.  The loop stops reading it
 * (cancelling the receive in flight; bytes that arrive meanwhile go with
 * it), sends its descriptor with those bytes on the channel (a BATCH of
 * one item flagged BT_WIRE_ITEM_RESUMED), closes its own copy without a
 * shutdown (the socket lives on in the next generation) and ends it with
 * on_close(-EXDEV).  A connection that never reaches a safe point is
 * closed at the drain's deadline, as on SIGTERM.
 */
#include "loop_internal.h"

#include "internal.h"
#include "proxy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CARRY_MAX (BT_WIRE_MAX_MSG - BT_WIRE_HDR_SIZE - BT_WIRE_ITEM_SIZE)

void bt__loop_handover_channel(bt_loop_t *loop, int fd)
{
	if (fd < 0)
		return;
	if (loop->ho) {
		bt__close(fd); /* a second one (the item was redelivered) */
		return;
	}
	bt_fdpass_t *ch;
	int rc = bt_fdpass_open(&ch, fd);
	if (rc < 0) {
		bt__close(fd);
		bt__log_errno(BT_LOG_ERROR, rc, "worker %d: the channel to the next generation",
			      loop->cfg.worker_id);
		return;
	}
	bt_fdpass_set_nonblock(ch, 1);
	loop->ho = ch;
}

int bt__loop_handover_begin(bt_loop_t *loop)
{
	if (!loop->ho || !loop->h->on_handover)
		return 0;
	loop->handing_over = 1;
	bt__log(BT_LOG_DEBUG, "worker %d: handing %u connections over to the next generation",
		loop->cfg.worker_id, loop->nconns);
	return 1;
}

/* Offer c to the handler; at a safe point, stop reading it. */
static void try_handover(bt_loop_t *loop, bt_conn_t *c)
{
	if (c->out_bytes || c->fread || c->writing || c->hidden)
		return; /* output first; a PROXY header read first */
	const void *carry = NULL;
	size_t len = 0;
	if (!loop->h->on_handover(c, &carry, &len) || c->state != CONN_OPEN)
		return;
	/* A client's address from a PROXY header goes with the connection,
	 * as a header of our own ahead of the carried bytes (the next
	 * generation reads it as any PROXY header). */
	unsigned char hdr[16 + 216];
	ssize_t hl = 0;
	if (c->proxied) {
		struct sockaddr_storage local;
		socklen_t ll = sizeof(local);
		int fd = bt__conn_sysfd(c);
		if (fd < 0 || getsockname(fd, (struct sockaddr *)&local, &ll) < 0)
			local.ss_family = AF_UNSPEC;
		hl = bt__proxy_encode_v2(hdr, sizeof(hdr), (const struct sockaddr *)c->peer,
					 (const struct sockaddr *)&local);
		if (hl < 0)
			return; /* (not reached: the peer came from a header) */
	}
	if ((size_t)hl + len + c->held_len > CARRY_MAX || (len && !carry))
		return; /* more than one message carries: it finishes here */
	if (hl + len) {
		c->carry = malloc((size_t)hl + len);
		if (!c->carry)
			return;
		memcpy(c->carry, hdr, (size_t)hl);
		if (len)
			memcpy(c->carry + hl, carry, len);
		c->carry_len = (size_t)hl + len;
	}
	c->handing = 1;
	c->paused = 1; /* input that still arrives is held, and goes too */
	bt__timer_stop(&loop->ev->timers, &c->tmo);
	loop->ops->conn_detach(loop, c);
	loop->nhanding++;
}

/* Not moved after all (the channel failed): c is served here again. */
static void keep(bt_loop_t *loop, bt_conn_t *c)
{
	c->handing = 0;
	loop->nhanding--;
	free(c->carry);
	c->carry = NULL;
	c->carry_len = 0;
	bt__conn_resume(c);
}

/* Nothing is in flight on c any more: send it. */
static void send_one(bt_loop_t *loop, bt_conn_t *c)
{
	if (c->held_len) {
		if (c->carry_len + c->held_len > CARRY_MAX) {
			keep(loop, c);
			return;
		}
		char *b = realloc(c->carry, c->carry_len + c->held_len);
		if (!b)
			return; /* the next tick tries again */
		memcpy(b + c->carry_len, c->held, c->held_len);
		c->carry = b;
		c->carry_len += c->held_len;
		free(c->held);
		c->held = NULL;
		c->held_len = 0;
	}
	int fd = bt__conn_sysfd(c); /* a direct descriptor gets a regular one */
	if (fd < 0) {
		keep(loop, c);
		return;
	}
	struct bt_wire_item it = {.id = c->id, .accept_ns = c->accept_ns,
				  .flags = BT_WIRE_ITEM_FD | BT_WIRE_ITEM_RESUMED |
					   (c->proxied ? BT_WIRE_ITEM_PROXY : 0),
				  .fd = fd,
				  .payload = c->carry, .payload_len = (uint32_t)c->carry_len};
	int rc = bt_fdpass_send_batch(loop->ho, 0, &it, 1);
	if (rc == -EAGAIN)
		return; /* the channel is full: the next tick */
	if (rc < 0) {
		bt__log_errno(BT_LOG_WARN, rc, "worker %d: handing connection %llu over",
			      loop->cfg.worker_id, (unsigned long long)c->id);
		loop->handing_over = 0; /* the next generation is gone: finish here */
		keep(loop, c);
		return;
	}
	loop->handed++;
	loop->carried += c->carry_len;
	loop->nhanding--;
	c->handing = 0;
	/* Our copy only: no shutdown, the connection goes on over there. */
	if (c->direct) {
		bt__close(c->xfd);
		c->xfd = -1;
		bt__loop_uring_close_slot(loop, c->fd);
	} else {
		bt__close(c->fd);
	}
	c->fd_open = 0;
	bt__conn_finish(c, -EXDEV, 1);
	bt__conn_maybe_free(c);
}

void bt__loop_handover_tick(bt_loop_t *loop)
{
	if (!loop->handing_over && !loop->nhanding)
		return;
	for (bt_conn_t *c = loop->conns, *next; c; c = next) {
		next = c->next;
		if (c->state != CONN_OPEN)
			continue;
		if (!c->handing && loop->handing_over)
			try_handover(loop, c);
		if (c->handing && !c->reading && !c->writing)
			send_one(loop, c);
	}
}
