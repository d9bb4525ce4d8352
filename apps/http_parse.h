/* SPDX-License-Identifier: MIT */
/*
 * baton-httpd's HTTP/1.x request parser: pure functions over bytes a client
 * sent (no allocation, no syscalls), fuzzed by tests/fuzz/fuzz_http.c.
 *
 * Every pointer in a parsed request points into the buffer that was parsed;
 * nothing is read outside [buf, buf + len).
 */
#ifndef BATON_HTTP_PARSE_H
#define BATON_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD 8192 /* a request head longer than this gets 431 */

enum http_method {
	HTTP_GET = 1,
	HTTP_HEAD = 2,
	HTTP_OTHER = 3, /* any other valid token: 405 */
};

struct http_req {
	int method;         /* enum http_method */
	const char *target; /* the request target, as sent */
	size_t target_len;
	int minor;          /* HTTP/1.<minor>: 0 or 1 */
	int keep_alive;     /* after this request: the version's default, or
			       what Connection: says */
	uint64_t content_length; /* a body to read past (0 if none) */
};

/*
 * The length of the request head at the start of p[0..len) (through the
 * empty line CRLFCRLF; a bare LFLF also ends it, so that such a request is
 * answered 400 at once rather than timing out), or 0 if it is incomplete.
 */
size_t http_head_end(const char *p, size_t len);

/*
 * Parse one complete request head (as measured by http_head_end).
 * Returns 0, or the status to answer with before closing: 400 (malformed:
 * request line, header syntax, control characters, a bad or conflicting
 * Content-Length, Transfer-Encoding with Content-Length, a 1.1 request
 * without Host), 501 (Transfer-Encoding: chunked bodies are not
 * supported), 505 (an HTTP version other than 1.0 and 1.1).
 */
int http_parse_head(const char *buf, size_t len, struct http_req *r);

/*
 * The path of a request target, percent-decoded, without the leading '/',
 * query or fragment, into out[0..cap) (NUL-terminated).  Refuses (-1) a
 * target that is not an absolute path, a bad escape, a NUL byte, a ".."
 * segment, or a result that does not fit.  Returns the length.
 */
int http_clean_path(const char *target, size_t len, char *out, size_t cap);

#endif
