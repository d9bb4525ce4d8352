/* SPDX-License-Identifier: MIT */
/* baton-httpd's request parser (http_parse.h): RFC 9112's request line
 * and header fields, strictly, over untrusted bytes. */
#include "http_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 tchar. */
static int tchar(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int ieq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* Does a comma-separated header value contain token tok? */
static int has_token(const char *v, size_t len, const char *tok)
{
	size_t tl = strlen(tok);
	for (size_t i = 0; i < len;) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t j = i;
		while (j < len && v[j] != ',')
			j++;
		size_t e = j;
		while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - i == tl && strncasecmp(v + i, tok, tl) == 0)
			return 1;
		i = j;
	}
	return 0;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

size_t http_head_end(const char *p, size_t len)
{
	for (size_t i = 1; i < len; i++)
		if (p[i] == '\n' && (p[i - 1] == '\n' ||
				     (i >= 3 && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')))
			return i + 1;
	return 0;
}

/* A Content-Length value: digits only, at most 19 of them. */
static int parse_length(const char *v, size_t len, uint64_t *out)
{
	if (len == 0 || len > 19)
		return -1;
	uint64_t x = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return 0;
}

int http_parse_head(const char *buf, size_t len, struct http_req *r)
{
	memset(r, 0, sizeof(*r));
	const char *end = buf + len;
	const char *eol = memchr(buf, '\n', len);
	if (!eol || eol == buf || eol[-1] != '\r')
		return 400;
	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	const char *m = buf, *p = buf;
	while (p < eol && tchar((unsigned char)*p))
		p++;
	size_t mlen = (size_t)(p - m);
	if (mlen == 0 || p >= eol || *p != ' ')
		return 400;
	const char *t = ++p;
	while (p < eol && *p != ' ' && (unsigned char)*p > 0x20 && *p != 0x7f)
		p++;
	size_t tlen = (size_t)(p - t);
	if (tlen == 0 || p >= eol || *p != ' ')
		return 400;
	const char *v = ++p;
	size_t vlen = (size_t)(eol - 1 - v);
	if (vlen != 8 || strncmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
		return vlen == 8 && !strncmp(v, "HTTP/", 5) ? 505 : 400;
	r->minor = v[7] - '0';
	r->keep_alive = r->minor == 1;
	r->target = t;
	r->target_len = tlen;
	r->method = ieq(m, mlen, "GET") ? HTTP_GET : ieq(m, mlen, "HEAD") ? HTTP_HEAD : HTTP_OTHER;
	int have_cl = 0, chunked = 0, have_host = 0;
	uint64_t cl = 0;

	for (const char *h = eol + 1; h < end;) {
		const char *hl = memchr(h, '\n', (size_t)(end - h));
		if (!hl || hl == h || hl[-1] != '\r')
			return 400;
		if (hl - h == 1)
			break; /* the empty line */
		const char *colon = h;
		while (colon < hl && tchar((unsigned char)*colon))
			colon++;
		if (colon == h || colon >= hl || *colon != ':')
			return 400; /* no name, obs-fold, or space before ':' */
		const char *val = colon + 1;
		const char *vend = hl - 1;
		while (val < vend && (*val == ' ' || *val == '\t'))
			val++;
		while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
			vend--;
		size_t nlen = (size_t)(colon - h), vl = (size_t)(vend - val);
		for (const char *q = val; q < vend; q++)
			if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
				return 400;
		if (ieq(h, nlen, "connection")) {
			if (has_token(val, vl, "close"))
				r->keep_alive = 0;
			else if (has_token(val, vl, "keep-alive"))
				r->keep_alive = 1;
		} else if (ieq(h, nlen, "content-length")) {
			uint64_t x;
			if (parse_length(val, vl, &x) < 0 || (have_cl && x != cl))
				return 400;
			cl = x;
			have_cl = 1;
		} else if (ieq(h, nlen, "transfer-encoding")) {
			chunked = 1;
		} else if (ieq(h, nlen, "host")) {
			have_host = 1;
		}
		h = hl + 1;
	}
	if (r->minor == 1 && !have_host)
		return 400; /* RFC 9112: a 1.1 request has Host */
	if (chunked)
		return have_cl ? 400 : 501;
	r->content_length = cl;
	return 0;
}

int http_clean_path(const char *t, size_t tlen, char *out, size_t cap)
{
	size_t n = 0;
	if (tlen == 0 || t[0] != '/' || cap == 0)
		return -1;
	size_t end = 0;
	while (end < tlen && t[end] != '?' && t[end] != '#')
		end++;
	for (size_t i = 1; i < end; i++) {
		int ch = (unsigned char)t[i];
		if (ch == '%') {
			if (i + 2 >= end)
				return -1;
			int h = hexval(t[i + 1]), l = hexval(t[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			ch = h * 16 + l;
			i += 2;
		}
		if (ch == 0 || n + 1 >= cap)
			return -1;
		out[n++] = (char)ch;
	}
	out[n] = 0;
	/* Segment by segment: no "..". */
	for (char *seg = out; *seg;) {
		char *slash = strchr(seg, '/');
		size_t sl = slash ? (size_t)(slash - seg) : strlen(seg);
		if (sl == 2 && seg[0] == '.' && seg[1] == '.')
			return -1;
		seg += sl + (slash ? 1 : 0);
	}
	return (int)n;
}
