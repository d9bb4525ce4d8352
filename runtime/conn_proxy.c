/* SPDX-License-Identifier: MIT */
/*
 * A connection from a --listen ADDR,proxy listener (its item flagged
 * BT_WIRE_ITEM_PROXY) starts with a PROXY protocol header (proxy.c).  The
 * worker loop reads it before the handler sees the connection: until the
 * header is complete the connection is hidden (no on_open, and no
 * on_close if it ends), its deadline is proxy_timeout_ms, and its bytes
 * gather in a buffer of at most BT__PROXY_MAX bytes (freed once the header
 * is read).  Then the client's address from the header becomes the
 * connection's peer (bt_conn_peer), and the handler gets on_open and the
 * bytes that followed the header.  A refused or late header closes the
 * connection with a reset (nothing was answered) and is counted; the
 * worker serves on.
 */
#include "loop_internal.h"

#include "internal.h"
#include "proxy.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct bt__pxin {
	size_t len;
	unsigned char buf[BT__PROXY_MAX];
};

static void late(struct bt__timer *t, void *arg)
{
	(void)t;
	bt_conn_t *c = arg;
	if (c->state == CONN_DONE || !c->hidden)
		return;
	c->loop->st.proxy_late++;
	atomic_store_explicit(&c->loop->ms->proxy_late,
			      atomic_load_explicit(&c->loop->ms->proxy_late, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	bt__log(BT_LOG_DEBUG, "worker %d: connection %llu: no PROXY header within %u ms: closed",
		c->loop->cfg.worker_id, (unsigned long long)c->id, c->loop->cfg.proxy_timeout_ms);
	bt__conn_finish(c, -ETIMEDOUT, 1);
}

int bt__conn_proxy_begin(bt_conn_t *c)
{
	c->pxin = malloc(sizeof(*c->pxin));
	if (!c->pxin)
		return -ENOMEM;
	c->pxin->len = 0;
	c->hidden = 1;
	c->tmo.cb = late;
	c->tmo.arg = c;
	uint64_t due = bt__now_ns() + (uint64_t)c->loop->cfg.proxy_timeout_ms * 1000000ull;
	c->tmo_due = due;
	return bt__timer_start(&c->loop->ev->timers, &c->tmo, due, 0);
}

void bt__conn_proxy_refused(bt_conn_t *c, int why)
{
	c->loop->st.proxy_refused++;
	atomic_store_explicit(&c->loop->ms->proxy_refused,
			      atomic_load_explicit(&c->loop->ms->proxy_refused, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	bt__log(BT_LOG_DEBUG, "worker %d: connection %llu: %s: closed", c->loop->cfg.worker_id,
		(unsigned long long)c->id,
		why == -EMSGSIZE ? "its PROXY header is over 4096 bytes"
		: why == -EPROTO ? "it does not start with a valid PROXY header"
				 : "it ended inside its PROXY header");
	bt__conn_finish(c, why ? why : -EPROTO, 1);
}

void bt__conn_proxy_input(bt_conn_t *c, const void *data, size_t len)
{
	struct bt__pxin *p = c->pxin;
	size_t old = p->len, take = len < sizeof(p->buf) - old ? len : sizeof(p->buf) - old;
	memcpy(p->buf + old, data, take);
	struct bt__proxy h;
	ssize_t n = bt__proxy_parse(p->buf, old + take, &h);
	if (n == -EAGAIN && old + take < sizeof(p->buf)) {
		p->len = old + take;
		return;
	}
	if (n < 0) {
		bt__conn_proxy_refused(c, n == -EAGAIN ? -EMSGSIZE : (int)n);
		return;
	}
	/* The header ends inside this chunk (the parse does not look past
	 * it): what follows is the connection's own. */
	size_t used = (size_t)n - old;
	if (h.has_addr) {
		struct sockaddr_storage *peer = c->peer ? c->peer : malloc(sizeof(*peer));
		if (!peer) {
			bt__conn_finish(c, -ENOMEM, 1);
			return;
		}
		memcpy(peer, &h.src, h.src_len);
		c->peer = peer;
		c->peer_len = h.src_len;
		c->proxied = 1;
	}
	free(c->pxin);
	c->pxin = NULL;
	bt__timer_stop(&c->loop->ev->timers, &c->tmo);
	c->tmo_due = 0;
	bt__loop_conn_reveal(c->loop, c, (const char *)data + used, len - used);
}
