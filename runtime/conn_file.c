/* SPDX-License-Identifier: MIT */
/*
 * File ranges on a connection's output (bt_conn_sendfile): a FILE segment
 * is read 128 KiB at a time into a MEM segment inserted before it, at most
 * one chunk ahead of what is being sent.  Reads try preadv2(RWF_NOWAIT)
 * first (the page cache, no wait); one that would wait for the disk goes
 * to the job pool, so the loop never blocks on a file.  conn.c holds the
 * rest of the output queue.
 */
#include "loop_internal.h"

#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define CHUNK ((size_t)128 * 1024) /* file bytes read at a time */

/* A chunk of file f's range arrived in buf (got > 0 bytes): it goes before
 * f; f shrinks, and goes when its range is done. */
static void chunk_ready(bt_conn_t *c, struct bt_outseg *buf, size_t got)
{
	struct bt_outseg **pp = &c->oq, *prev = NULL;
	while (*pp && (*pp)->cap) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	struct bt_outseg *f = *pp; /* the first FILE segment */
	buf->len = got;
	buf->next = f;
	*pp = buf;
	f->len -= got;
	f->foff += got;
	if (f->len == 0) {
		buf->next = f->next;
		if (c->oq_tail == f)
			c->oq_tail = buf;
		bt__conn_seg_free(f);
	}
	(void)prev;
}

/*
 * A file range cannot be completed (the file ended early, got 0, or a read
 * failed): the bytes before it still go out, then the connection is
 * aborted with -EIO (or the read's error), since the peer was promised the
 * whole range.  Nothing queued after the range is sent: it would be read
 * as part of the body.
 */
static void fread_failed(bt_conn_t *c, ssize_t got)
{
	if (got == 0)
		bt__log(BT_LOG_DEBUG, "worker %d: connection %llu: the file ended before the "
				      "length promised: aborting after the bytes read",
			c->loop->cfg.worker_id, (unsigned long long)c->id);
	else
		bt__log_errno(BT_LOG_WARN, (int)got, "worker %d: connection %llu: read(file)",
			      c->loop->cfg.worker_id, (unsigned long long)c->id);
	struct bt_outseg **pp = &c->oq, *last = NULL;
	while (*pp && (*pp)->cap) {
		last = *pp;
		pp = &(*pp)->next;
	}
	for (struct bt_outseg *s = *pp, *next; s; s = next) {
		next = s->next;
		c->out_bytes -= s->cap ? s->len - s->off : s->len;
		bt__conn_seg_free(s);
	}
	*pp = NULL;
	c->oq_tail = last;
	c->abort_reason = got == 0 ? -EIO : (int)got;
	if (c->state == CONN_OPEN)
		c->state = CONN_CLOSING; /* no more writes, no more reading */
	free(c->held);
	c->held = NULL;
	c->held_len = 0;
	if (c->out_bytes == 0 && !c->writing)
		bt__conn_finish(c, c->abort_reason, 1);
}

static void fread_work(void *arg)
{
	struct bt_fread *r = arg;
	ssize_t n;
	do
		n = pread(r->fd, r->buf->data, r->want, (off_t)r->off);
	while (n < 0 && errno == EINTR);
	r->got = n < 0 ? -errno : n;
}

static void fread_done(void *arg, int status)
{
	struct bt_fread *r = arg;
	bt_conn_t *c = r->c;
	c->ops--;
	c->fread = NULL;
	if (status < 0)
		r->got = status;
	if (c->state == CONN_DONE) {
		if (r->own_fd)
			bt__close(r->fd);
		free(r->buf);
	} else if (r->got > 0) {
		chunk_ready(c, r->buf, (size_t)r->got);
		bt__conn_queue_flush(c);
	} else {
		free(r->buf);
		fread_failed(c, r->got);
	}
	free(r);
	bt__conn_maybe_free(c);
}

/*
 * Read the next chunk of the first file range if the bytes in memory ahead
 * of it are less than a chunk (read-ahead of one chunk while the previous
 * one is being sent) and no read is in flight.
 */
void bt__conn_file_fill(bt_conn_t *c)
{
	bt_loop_t *loop = c->loop;
	while (!c->fread && !c->retry_next && loop->retryq != c && c->state != CONN_DONE) {
		size_t ahead = 0;
		struct bt_outseg *f = c->oq;
		for (; f && f->cap; f = f->next)
			ahead += f->len - f->off;
		if (!f || ahead >= CHUNK)
			return;
		size_t want = f->len < CHUNK ? f->len : CHUNK;
		struct bt_outseg *buf = bt__conn_mem_seg(c, want);
		struct bt_fread *r = malloc(sizeof(*r));
		if (!buf || !r) {
			free(buf);
			free(r);
			bt__conn_finish(c, -ENOMEM, 1);
			return;
		}
		/* The page cache first: no thread, no wait. */
		struct iovec iov = {.iov_base = buf->data, .iov_len = want};
		ssize_t n;
		do
			n = preadv2(f->fd, &iov, 1, (off_t)f->foff, RWF_NOWAIT);
		while (n < 0 && errno == EINTR);
		if (n > 0) {
			free(r);
			chunk_ready(c, buf, (size_t)n);
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EOPNOTSUPP && errno != ENOSYS &&
			       errno != EINVAL)) {
			int err = n == 0 ? 0 : -errno;
			free(r);
			free(buf);
			fread_failed(c, err);
			return;
		}
		/* It would wait for the disk: a pool thread reads it. */
		*r = (struct bt_fread){.c = c, .buf = buf, .fd = f->fd, .off = f->foff, .want = want};
		int rc = bt_loop_submit(loop, NULL, fread_work, fread_done, r);
		if (rc == 0) {
			c->fread = r;
			c->ops++;
			return;
		}
		free(r);
		free(buf);
		if (rc != -EAGAIN) {
			fread_failed(c, rc);
			return;
		}
		/* The pool's queue is full: try again at the next tick. */
		c->ops++;
		c->retry_next = loop->retryq;
		loop->retryq = c;
		return;
	}
}

void bt__loop_retry_reads(bt_loop_t *loop)
{
	bt_conn_t *list = loop->retryq;
	loop->retryq = NULL;
	while (list) {
		bt_conn_t *c = list;
		list = c->retry_next;
		c->retry_next = NULL;
		c->ops--;
		if (c->state != CONN_DONE) {
			bt__conn_file_fill(c);
			bt__conn_queue_flush(c);
		}
		bt__conn_maybe_free(c);
	}
}
