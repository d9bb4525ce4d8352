/* SPDX-License-Identifier: MIT */
/* Supervisor helpers shared by runtime.c, listen.c and proctitle.c. */
#ifndef BATON_RUNTIME_INTERNAL_H
#define BATON_RUNTIME_INTERNAL_H

#include <baton/runtime.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Open a listener from a --listen spec; fd or -errno (logged). desc gets
 * the bound address ("127.0.0.1:8080", "[::1]:80", "unix:/path").  A spec
 * may end in ",proxy" (bt__listen_proxy), which is not part of the address. */
int bt__listen_open(const char *spec, int backlog, char *desc, size_t dlen);

/* Is fd listening on what spec names (a port 0 matches any port)? */
int bt__listen_matches(const char *spec, int fd);

/* Does the spec end in ",proxy": its connections start with a PROXY
 * protocol header (v1 or v2)? */
int bt__listen_proxy(const char *spec);

/* Sockets passed the systemd way, into fds: count, 0 if none, -errno.
 * proxy[i]: 1 if the .socket unit named it "proxy" (FileDescriptorName=,
 * LISTEN_FDNAMES): its connections start with a PROXY header. */
int bt__listen_inherited(int *fds, uint8_t *proxy, int max);

void bt__describe_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap);

/* Process titles as ps(1) shows them: argv's memory, once
 * bt_runtime_take_argv has moved argv's strings (the comm name is left
 * alone, so pgrep -x finds the program). */
void bt__proctitle_set(const char *title);
/* Does p point into the memory titles are written over? */
int bt__proctitle_in_area(const char *p);
/* What a reload runs again: argv as main got it (NULL if the program never
 * gave it: bt_runtime_take_argv), and /proc/self/exe as it was then. */
char *const *bt__saved_argv(void);
/* Put the flags files' texts, as this process read them, in the
 * environment for its own exec (on), or take them out again (off). */
void bt__flags_export(int on);
const char *bt__exe_path(void);
/* A thread's name (top -H, ps -L): 15 bytes, cut. */
void bt__thread_name(pthread_t t, const char *name);

/* Take a caller's config by its size into dst (defaults first): 0,
 * -EINVAL, -E2BIG (logged). */
int bt__runtime_config_take(struct bt_runtime_config *dst, const struct bt_runtime_config *cfg);
/* The queue config the runtime's batch/flush fields describe. */
void bt__runtime_queue_config(const struct bt_runtime_config *cfg, struct bt_queue_config *qc);

/* systemd's notification protocol (notify.c): one datagram of
 * newline-separated assignments to $NOTIFY_SOCKET (a path, or an abstract
 * name written with a leading '@').  A no-op without NOTIFY_SOCKET.  0 or
 * -errno (logged once). */
int bt__notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, already formatted (the master relays with it). */
int bt__notify_text(const char *text);
/* Send this process's notifications to the master on fd instead
 * ('N' and the text, one message); -1: to NOTIFY_SOCKET again. */
void bt__notify_relay(int fd);

#endif
