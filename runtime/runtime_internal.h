/* SPDX-License-Identifier: MIT */
/* Supervisor helpers shared by runtime.c, listen.c and proctitle.c. */
#ifndef BATON_RUNTIME_INTERNAL_H
#define BATON_RUNTIME_INTERNAL_H

#include <baton/runtime.h>

#include <stddef.h>
#include <sys/socket.h>

/* Open a listener from a --listen spec; fd or -errno (logged). desc gets
 * the bound address ("127.0.0.1:8080", "[::1]:80", "unix:/path"). */
int bt__listen_open(const char *spec, int backlog, char *desc, size_t dlen);

/* Sockets passed the systemd way, into fds: count, 0 if none, -errno. */
int bt__listen_inherited(int *fds, int max);

void bt__describe_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t cap);

/* Process titles as ps(1) shows them: prctl name and argv's memory. */
void bt__proctitle_init(int argc, char **argv);
void bt__proctitle_set(const char *title);

#endif
