/* SPDX-License-Identifier: MIT */
/*
 * Connections of the worker loop (baton/loop.h): their life, the
 * connection API, and the output queue with its flow control and file
 * streaming (file ranges: conn_file.c).  The backends (loop_uring.c, loop_epoll.c) move the bytes and
 * call back in here.
 *
 * Life of a connection:
 *   OPEN -> (bt_conn_close) CLOSING -> (output sent) DONE
 *   OPEN/CLOSING -> (abort, error, deadline) DONE
 * At DONE (bt__conn_finish) the backend shuts and closes the fd at once and
 * the connection joins the loop's close queue: on_close runs from
 * bt__loop_run_closes, never inside the call that ended the connection,
 * so a callback that closes its connection keeps every pointer it holds
 * until it returns (STYLE rule 13).  The struct itself is freed when it is
 * DONE, its on_close has run and no operation in flight names it
 * (c->ops: sends, receives, file reads), at the end of the wake-up.
 *
 * Output: a queue of segments (struct bt_outseg).  Bytes are copied into
 * MEM segments; a send reads the head segment in place, so segments are
 * never reallocated, and new bytes are only appended after their end.  A
 * file range is a FILE segment: the loop reads it 128 KiB at a time into a
 * MEM segment inserted before it, at most one chunk ahead of what is being
 * sent.  Reads try preadv2(RWF_NOWAIT) first (the page cache, no wait);
 * one that would wait for the disk goes to the thread pool, so the loop
 * never blocks on a file.
 *
 * Flow control: out_bytes counts everything unsent (file ranges included).
 * Above out_high, writes return 1, want_writable is set and reading
 * pauses (c->paused; a receive already in flight on io_uring completes into
 * c->held).  At or below out_low, on_writable runs (if a write returned 1),
 * then reading resumes: held input first.
 */
#include "loop_internal.h"

#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* A new MEM segment is a 1 KiB allocation at least (a reply's head and a
 * small body share it: one send); an emptied one is kept for the next
 * reply only up to 4 KiB, so an idle connection holds at most that. */
#define SEG_MIN (1024 - sizeof(struct bt_outseg))
#define SPARE_MAX (4096 - sizeof(struct bt_outseg))


/* --- life ------------------------------------------------------------------ */

bt_conn_t *bt__conn_new(bt_loop_t *loop, const struct bt_wire_item *it)
{
	bt_conn_t *c = calloc(1, sizeof(*c));
	if (!c) {
		/* Nothing can serve it: close, so the client sees it at once. */
		bt__log(BT_LOG_ERROR, "worker %d: out of memory for connection %llu: closing it",
			loop->cfg.worker_id, (unsigned long long)it->id);
		if (it->flags & BT__ITEM_DIRECT)
			bt__loop_uring_close_slot(loop, it->fd);
		else
			bt__close(it->fd);
		return NULL;
	}
	c->loop = loop;
	c->fd = it->fd;
	c->direct = (it->flags & BT__ITEM_DIRECT) != 0;
	c->xfd = -1;
	c->fd_open = 1;
	c->id = it->id;
	c->accept_ns = it->accept_ns;
	if (it->peer_len) {
		c->peer = malloc(sizeof(*c->peer));
		if (c->peer) {
			memcpy(c->peer, &it->peer, it->peer_len);
			c->peer_len = it->peer_len;
		}
	}
	c->next = loop->conns;
	if (loop->conns)
		loop->conns->prev = c;
	loop->conns = c;
	loop->nconns++;
	loop->st.conns++;
	bt__loop_publish_load(loop);
	return c;
}

void bt__conn_seg_free(struct bt_outseg *s)
{
	if (s->fd >= 0)
		bt__close(s->fd);
	free(s);
}

/* Drop unsent output (an abort).  A segment a send in flight reads stays
 * until the conn is freed; a file a read in flight uses is closed by that
 * read's completion. */
static void discard_output(bt_conn_t *c)
{
	struct bt_outseg *s = c->oq, *keep = NULL;
	if (s && c->writing) {
		keep = s;
		s = s->next;
		keep->next = NULL;
	}
	while (s) {
		struct bt_outseg *next = s->next;
		if (c->fread && s->fd == c->fread->fd) {
			c->fread->own_fd = 1;
			s->fd = -1;
		}
		bt__conn_seg_free(s);
		s = next;
	}
	c->oq = c->oq_tail = keep;
	c->out_bytes = 0;
	free(c->held);
	c->held = NULL;
	c->held_len = 0;
}

void bt__conn_finish(bt_conn_t *c, int reason, int abort)
{
	if (c->state == CONN_DONE)
		return;
	bt_loop_t *loop = c->loop;
	c->state = CONN_DONE;
	c->close_reason = reason;
	bt__timer_stop(&loop->ev->timers, &c->tmo);
	if (abort)
		discard_output(c);
	loop->nconns--;
	bt__loop_publish_load(loop);
	c->close_queued = 1; /* before conn_finish, which may try to free c */
	loop->ops->conn_finish(loop, c, abort);
	c->close_next = NULL;
	if (loop->closeq_tail)
		loop->closeq_tail->close_next = c;
	else
		loop->closeq = c;
	loop->closeq_tail = c;
}

void bt__loop_run_closes(bt_loop_t *loop)
{
	while (loop->closeq) {
		bt_conn_t *c = loop->closeq;
		loop->closeq = c->close_next;
		if (!loop->closeq)
			loop->closeq_tail = NULL;
		c->close_next = NULL;
		if (loop->h->on_close && !c->hidden)
			loop->h->on_close(c, c->close_reason);
		c->close_queued = 0;
		bt__conn_maybe_free(c);
	}
}

void bt__conn_maybe_free(bt_conn_t *c)
{
	if (c->state != CONN_DONE || c->ops != 0 || c->close_queued || c->flush_queued ||
	    c->zombie_next || c->loop->zombies == c)
		return;
	bt_loop_t *loop = c->loop;
	if (c->prev)
		c->prev->next = c->next;
	else
		loop->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	/* prev/next stay as they were: an iteration standing on c can go on. */
	c->zombie_next = loop->zombies;
	loop->zombies = c;
}

void bt__loop_free_zombies(bt_loop_t *loop)
{
	while (loop->zombies) {
		bt_conn_t *c = loop->zombies;
		loop->zombies = c->zombie_next;
		for (struct bt_outseg *s = c->oq, *next; s; s = next) {
			next = s->next;
			bt__conn_seg_free(s);
		}
		free(c->spare);
		free(c->held);
		free(c->carry);
		free(c->peer);
		free(c->pxin);
		free(c);
	}
}

void bt__conn_ended(bt_conn_t *c, int reason)
{
	if (c->state == CONN_DONE)
		return;
	if (c->hidden) {
		bt__conn_proxy_refused(c, reason); /* it ended inside its header */
		return;
	}
	if (reason == 0) {
		/* The peer finished sending: what we queued (a reply to its
		 * last request) still goes out, then FIN. */
		bt_conn_close(c);
		return;
	}
	bt__conn_finish(c, reason, 1);
}

/* --- flow control ------------------------------------------------------------ */

void bt__conn_queue_flush(bt_conn_t *c)
{
	if (!c->flush_queued) {
		c->flush_queued = 1;
		c->flush_next = c->loop->flushq;
		c->loop->flushq = c;
	}
}

/* After output was queued: 1 (and reading paused) above the mark, else 0. */
static int pressure(bt_conn_t *c)
{
	bt_loop_t *loop = c->loop;
	if (c->out_bytes <= loop->cfg.out_high)
		return 0;
	c->want_writable = 1;
	if (!c->paused) {
		c->paused = 1;
		loop->ops->conn_pause(loop, c);
	}
	return 1;
}

/* Reading resumes: input held while paused goes to on_data first. */
void bt__conn_resume(bt_conn_t *c)
{
	bt_loop_t *loop = c->loop;
	c->paused = 0;
	if (c->held) {
		char *h = c->held;
		size_t n = c->held_len;
		c->held = NULL;
		c->held_len = 0;
		if (c->state == CONN_OPEN)
			loop->h->on_data(c, h, n);
		free(h);
	}
	if (c->state == CONN_OPEN && !c->paused)
		loop->ops->conn_pause(loop, c);
}

void bt__conn_input(bt_conn_t *c, const void *data, size_t len)
{
	bt_loop_t *loop = c->loop;
	if (c->state != CONN_OPEN)
		return;
	if (c->hidden) {
		loop->st.bytes_in += len;
		bt__conn_proxy_input(c, data, len);
		return;
	}
	if (!loop->h->on_data)
		return;
	loop->st.bytes_in += len;
	if (!c->paused) {
		loop->h->on_data(c, data, len);
		return;
	}
	/* A receive that was in flight when reading paused (io_uring): at
	 * most one buffer, kept until reading resumes. */
	char *h = realloc(c->held, c->held_len + len);
	if (!h) {
		bt__conn_finish(c, -ENOMEM, 1);
		return;
	}
	memcpy(h + c->held_len, data, len);
	c->held = h;
	c->held_len += len;
}

/* --- output queue -------------------------------------------------------------- */

struct bt_outseg *bt__conn_mem_seg(bt_conn_t *c, size_t need)
{
	struct bt_outseg *s = c->spare;
	if (s && s->cap >= need) {
		c->spare = NULL;
	} else {
		size_t cap = need < SEG_MIN ? SEG_MIN : need;
		if (cap > SIZE_MAX - sizeof(*s))
			return NULL;
		s = malloc(sizeof(*s) + cap);
		if (!s)
			return NULL;
		s->cap = cap;
	}
	s->next = NULL;
	s->len = s->off = 0;
	s->fd = -1;
	s->foff = 0;
	return s;
}

static void append_seg(bt_conn_t *c, struct bt_outseg *s)
{
	struct bt_outseg *t = c->oq_tail;
	if (t && t == c->oq && t->cap && t->len == 0) {
		/* The emptied segment kept for replies, too small for this
		 * one: it must not stay ahead of it (sends start at the head).
		 * Nothing is being sent from it: it is empty. */
		c->oq = c->oq_tail = NULL;
		if (!c->spare)
			c->spare = t;
		else
			free(t);
	}
	if (c->oq_tail)
		c->oq_tail->next = s;
	else
		c->oq = s;
	c->oq_tail = s;
}

int bt_conn_write(bt_conn_t *c, const void *data, size_t len)
{
	if (!c || c->state != CONN_OPEN)
		return -EPIPE;
	if (len == 0)
		return 0;
	if (!data)
		return -EINVAL;
	struct bt_outseg *t = c->oq_tail;
	if (t && t->cap && t->cap - t->len >= len) {
		memcpy(t->data + t->len, data, len);
		t->len += len;
	} else {
		struct bt_outseg *s = bt__conn_mem_seg(c, len);
		if (!s)
			return -ENOMEM;
		memcpy(s->data, data, len);
		s->len = len;
		append_seg(c, s);
	}
	c->out_bytes += len;
	c->loop->st.bytes_out += len;
	bt__conn_queue_flush(c);
	return pressure(c);
}

int bt_conn_sendfile(bt_conn_t *c, int fd, uint64_t off, uint64_t len)
{
	if (!c || c->state != CONN_OPEN)
		return -EPIPE;
	if (fd < 0 || off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off ||
	    len > SIZE_MAX)
		return -EINVAL;
	if (len == 0) {
		bt__close(fd);
		return pressure(c);
	}
	struct bt_outseg *s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->next = NULL;
	s->len = (size_t)len;
	s->off = s->cap = 0;
	s->fd = fd;
	s->foff = off;
	append_seg(c, s);
	c->out_bytes += (size_t)len;
	c->loop->st.bytes_out += len;
	bt__conn_queue_flush(c);
	return pressure(c);
}

const char *bt__conn_next_send(bt_conn_t *c, size_t *len, int *flags)
{
	struct bt_outseg *h = c->oq;
	if (!h || !h->cap || h->off >= h->len)
		return NULL;
	size_t left = h->len - h->off;
	size_t n = left < BT__SEND_MAX ? left : BT__SEND_MAX;
	*len = n;
	/*
	 * MSG_MORE when more bytes follow at once: the rest of this segment,
	 * or a next one already in memory (a file chunk may wait for the disk:
	 * no cork for that).  And on the last bytes of a connection that is
	 * closing: they then wait in the socket for the shutdown(SHUT_WR) that
	 * follows this send's completion, and go out in one segment with the
	 * FIN, one packet (and one trip through the receiving stack) fewer per
	 * connection than data, then FIN.
	 */
	int more = n < left || (h->next && h->next->cap) ||
		   (!h->next && c->state == CONN_CLOSING);
	*flags = more ? MSG_MORE : 0;
	return h->data + h->off;
}

void bt__conn_sent(bt_conn_t *c, size_t n)
{
	bt_loop_t *loop = c->loop;
	struct bt_outseg *h = c->oq;
	if (!h)
		return; /* discarded by an abort while the send was in flight */
	h->off += n;
	if (c->state != CONN_DONE)
		c->out_bytes -= n;
	if (h->off >= h->len) {
		if (h == c->oq_tail && h->cap <= SPARE_MAX) {
			h->off = h->len = 0; /* keep it for the next reply, */
			free(c->spare);      /* and only it */
			c->spare = NULL;
		} else {
			c->oq = h->next;
			if (!c->oq)
				c->oq_tail = NULL;
			if (!c->spare && h->cap <= SPARE_MAX)
				c->spare = h;
			else
				free(h);
		}
	}
	if (c->state == CONN_DONE)
		return;
	bt__conn_file_fill(c);
	if (c->out_bytes <= loop->cfg.out_low && (c->want_writable || c->paused)) {
		if (c->want_writable) {
			c->want_writable = 0;
			if (loop->h->on_writable && c->state == CONN_OPEN)
				loop->h->on_writable(c);
		}
		if (c->state == CONN_OPEN && c->paused && !c->want_writable &&
		    c->out_bytes <= loop->cfg.out_high)
			bt__conn_resume(c);
		if (c->state == CONN_DONE)
			return;
	}
	if (c->oq && c->oq->cap && c->oq->off < c->oq->len) {
		loop->ops->conn_flush(loop, c);
		return;
	}
	if (c->state == CONN_CLOSING && c->out_bytes == 0 && !c->writing)
		bt__conn_finish(c, c->abort_reason, c->abort_reason != 0);
}

void bt__loop_flush(bt_loop_t *loop)
{
	/* Those queued now; a connection queued again meanwhile (its
	 * on_writable wrote more) waits for the next pass, so one fast reader
	 * cannot keep the loop here (the epoll backend sends up to 1 MiB per
	 * pass, then waits for EPOLLOUT like everyone else). */
	bt_conn_t *list = loop->flushq;
	loop->flushq = NULL;
	while (list) {
		bt_conn_t *c = list;
		list = c->flush_next;
		c->flush_queued = 0;
		c->flush_next = NULL;
		if (c->state == CONN_DONE) {
			/* Ended while queued: its free waited for this. */
			bt__conn_maybe_free(c);
			continue;
		}
		bt__conn_file_fill(c);
		if (c->state == CONN_DONE || c->writing)
			continue;
		if (c->oq && c->oq->cap && c->oq->off < c->oq->len)
			loop->ops->conn_flush(loop, c);
		else if (c->state == CONN_CLOSING && c->out_bytes == 0)
			bt__conn_finish(c, c->abort_reason, c->abort_reason != 0);
	}
}

/* --- the rest of the API ---------------------------------------------------------- */

void bt_conn_close(bt_conn_t *c)
{
	if (!c || c->state != CONN_OPEN)
		return;
	c->state = CONN_CLOSING;
	free(c->held); /* input not yet delivered is never answered now */
	c->held = NULL;
	c->held_len = 0;
	if (c->writing || c->out_bytes) {
		/* bt__conn_finish follows the last send (bt__conn_sent). */
		if (!c->writing)
			bt__conn_queue_flush(c);
		return;
	}
	bt__conn_finish(c, 0, 0);
}

void bt_conn_abort(bt_conn_t *c)
{
	if (!c || c->state == CONN_DONE)
		return;
	bt__conn_finish(c, -ECONNABORTED, 1);
}

static void conn_timeout(struct bt__timer *t, void *arg)
{
	bt_conn_t *c = arg;
	if (c->state == CONN_DONE)
		return;
	struct bt__timers *ts = &c->loop->ev->timers;
	if (c->tmo_due > c->loop->ev->now_ns) {
		/* Moved later since it was armed: not due yet.  Its heap slot
		 * was just freed, so this cannot fail. */
		bt__timer_start(ts, t, c->tmo_due, 0);
		return;
	}
	if (c->loop->h->on_timeout)
		c->loop->h->on_timeout(c);
	else
		bt__conn_finish(c, -ETIMEDOUT, 1);
}

void bt_conn_set_timeout(bt_conn_t *c, unsigned ms)
{
	if (!c || c->state == CONN_DONE)
		return;
	struct bt__timers *ts = &c->loop->ev->timers;
	if (!ms) {
		bt__timer_stop(ts, &c->tmo);
		return;
	}
	uint64_t due = bt__now_ns() + (uint64_t)ms * 1000000ull;
	c->tmo_due = due;
	/* A keep-alive server moves the deadline on at every request: when
	 * it only moves later, the armed timer stays where it is and re-arms
	 * itself at the new deadline when it fires (no heap work per request). */
	if (c->tmo.idx && due >= c->tmo.due_ns)
		return;
	c->tmo.cb = conn_timeout;
	c->tmo.arg = c;
	if (bt__timer_start(ts, &c->tmo, due, 0) < 0)
		bt__log(BT_LOG_ERROR, "worker %d: no memory for a connection's timer",
			c->loop->cfg.worker_id);
}

uint64_t bt_conn_id(const bt_conn_t *c)
{
	return c->id;
}

uint64_t bt_conn_accept_ns(const bt_conn_t *c)
{
	return c->accept_ns;
}

int bt_conn_peer(bt_conn_t *c, struct sockaddr_storage *ss, socklen_t *len)
{
	if (!c || !ss || !len)
		return -EINVAL;
	if (c->peer) {
		memcpy(ss, c->peer, c->peer_len);
		*len = c->peer_len;
		return 0;
	}
	if (c->state == CONN_DONE)
		return -EBADF;
	int fd = bt__conn_sysfd(c);
	if (fd < 0)
		return fd;
	socklen_t l = sizeof(*ss);
	if (getpeername(fd, (struct sockaddr *)ss, &l) < 0)
		return -errno;
	*len = l;
	return 0;
}

int bt__conn_sysfd(bt_conn_t *c)
{
	if (!c->direct)
		return c->fd;
	if (c->xfd < 0)
		c->xfd = bt__ev_install(c->loop->ev, c->fd);
	return c->xfd;
}

int bt_conn_resumed(const bt_conn_t *c)
{
	return c ? c->resumed : 0;
}

int bt_conn_fd(const bt_conn_t *c)
{
	if (c->state == CONN_DONE)
		return -1;
	/* A direct descriptor gets its regular one here, once (the loop
	 * owns both; installing changes nothing the caller can see but the
	 * fd, hence the const). */
	int fd = bt__conn_sysfd((bt_conn_t *)c);
	return fd < 0 ? -1 : fd;
}

void bt_conn_set_data(bt_conn_t *c, void *data)
{
	c->data = data;
}

void *bt_conn_data(const bt_conn_t *c)
{
	return c->data;
}

bt_loop_t *bt_conn_loop(const bt_conn_t *c)
{
	return c->loop;
}

size_t bt_conn_pending(const bt_conn_t *c)
{
	return c->out_bytes;
}
