/* SPDX-License-Identifier: MIT */
/* docs/wire.md matches the code: a Python 3 worker written from the
 * document alone (interop_wire.py, standard library only) exchanges batches,
 * descriptors and control messages with the C library. */
#include "check.h"

#include <baton/fdpass.h>
#include <baton/log.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/un.h>

static const char *python, *script;

static void ignore_log(void *ctx, int level, const char *line)
{
	(void)ctx, (void)level, (void)line;
}

static void read_fd_is(int fd, const char *want)
{
	char buf[64];
	ssize_t n = pread(fd, buf, sizeof(buf), 0);
	if (n < 0) /* a pipe: no pread */
		n = read(fd, buf, sizeof(buf));
	CHECK_EQ(n, (ssize_t)strlen(want));
	CHECK(memcmp(buf, want, (size_t)n) == 0);
}

static void test_python_interop(void)
{
	if (access(python, X_OK) != 0)
		CHECK_SKIP("no python3 at %s", python);
	bt_log_set_handler(ignore_log, NULL);
	int sv[2];
	CHECK_ERR(bt_fdpass_pair(sv, 0), 0);
	pid_t pid = fork();
	CHECK_OP(pid, >=, 0);
	if (pid == 0) {
		close(sv[1]);
		fcntl(sv[0], F_SETFD, 0); /* the worker inherits its end */
		char fdarg[16];
		snprintf(fdarg, sizeof(fdarg), "%d", sv[0]);
		execl(python, python, script, fdarg, (char *)NULL);
		_exit(127);
	}
	close(sv[0]);
	bt_fdpass_t *ch;
	CHECK_ERR(bt_fdpass_open(&ch, sv[1]), 0);

	/* 1. Python's batch. */
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch, &m), 1);
	CHECK_EQ(m.type, BT_WIRE_BATCH);
	struct bt_wire_batch *b = &m.u.batch;
	CHECK_EQ(b->seq, 7);
	CHECK_EQ(b->n_items, 4);
	CHECK_EQ(b->n_fds, 3);
	struct bt_wire_item *it = b->items;
	CHECK_EQ(it[0].id, 101);
	CHECK_EQ(it[0].accept_ns, 11);
	CHECK_EQ(it[0].flags, BT_WIRE_ITEM_FD | 0x00ab0000u);
	const struct sockaddr_in *sin = (const void *)&it[0].peer;
	CHECK_EQ(sin->sin_family, AF_INET);
	CHECK_EQ(ntohs(sin->sin_port), 8080);
	CHECK_EQ(ntohl(sin->sin_addr.s_addr), 0xc0000207u);
	read_fd_is(it[0].fd, "py-item-0");
	CHECK_EQ(it[1].fd, -1);
	CHECK_EQ(it[1].peer_len, 0);
	CHECK_EQ(it[1].payload_len, 15);
	CHECK(memcmp(it[1].payload, "job description", 15) == 0);
	const struct sockaddr_in6 *sin6 = (const void *)&it[2].peer;
	CHECK_EQ(sin6->sin6_family, AF_INET6);
	CHECK_EQ(ntohs(sin6->sin6_port), 443);
	CHECK_EQ(sin6->sin6_scope_id, 3);
	CHECK_EQ(sin6->sin6_addr.s6_addr[15], 0x42);
	CHECK_EQ(it[2].payload_len, 1);
	read_fd_is(it[2].fd, "py-item-1");
	const struct sockaddr_un *sun = (const void *)&it[3].peer;
	CHECK_EQ(sun->sun_family, AF_UNIX);
	CHECK_EQ(it[3].peer_len, offsetof(struct sockaddr_un, sun_path) + 12);
	CHECK(memcmp(sun->sun_path, "\0py-abstract", 12) == 0);
	read_fd_is(it[3].fd, "py-item-2");
	for (int i = 0; i < 4; i++)
		if (it[i].fd >= 0) {
			CHECK(check_fd_is_cloexec(it[i].fd));
			close(it[i].fd);
		}

	/* 2. A full batch to Python. */
	static struct bt_wire_item out[253];
	static char payload[253][32];
	int fds[253];
	for (int i = 0; i < 253; i++) {
		fds[i] = memfd_create("interop", MFD_CLOEXEC);
		CHECK_OP(fds[i], >=, 0);
		char content[32];
		int n = snprintf(content, sizeof(content), "c-item-%d", i);
		CHECK_EQ(write(fds[i], content, (size_t)n), n);
		memset(&out[i], 0, sizeof(out[i]));
		out[i].id = 5000u + (unsigned)i;
		out[i].accept_ns = 1000000000000ull + (unsigned)i;
		out[i].flags = BT_WIRE_ITEM_FD | ((uint32_t)i << 16);
		out[i].fd = fds[i];
		if (i % 2 == 0) {
			struct sockaddr_in6 *s6 = (void *)&out[i].peer;
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons((uint16_t)(20000 + i));
			s6->sin6_addr = in6addr_loopback;
			out[i].peer_len = sizeof(*s6);
		} else {
			struct sockaddr_un *su = (void *)&out[i].peer;
			su->sun_family = AF_UNIX;
			int n2 = snprintf(su->sun_path, sizeof(su->sun_path), "/tmp/c-peer-%d", i);
			out[i].peer_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n2 + 1);
		}
		out[i].payload_len = (uint32_t)snprintf(payload[i], sizeof(payload[i]), "c-payload-%d", i);
		out[i].payload = payload[i];
	}
	CHECK_ERR(bt_fdpass_send_batch(ch, 8, out, 253), 0);
	for (int i = 0; i < 253; i++)
		close(fds[i]);

	/* 3. HELLO and DRAIN. */
	unsigned char buf[128];
	struct bt_wire_hello h = {.worker_id = 3, .pid = 4242, .version = 1};
	long len = bt_wire_encode_hello(buf, sizeof(buf), 0, &h);
	CHECK_ERR(bt_fdpass_send(ch, buf, (size_t)len, NULL, 0), 0);
	struct bt_wire_drain d = {.deadline_ms = 2500};
	len = bt_wire_encode_drain(buf, sizeof(buf), 9, &d);
	CHECK_ERR(bt_fdpass_send(ch, buf, (size_t)len, NULL, 0), 0);

	/* 4. Python's ACK. */
	CHECK_ERR(bt_fdpass_recv(ch, &m), 1);
	CHECK_EQ(m.type, BT_WIRE_ACK);
	CHECK_EQ(m.u.ack.seq, 8);
	CHECK_EQ(m.u.ack.fds_total, 253);
	CHECK_EQ(m.u.ack.load, 17);
	CHECK_EQ(m.u.ack.n_lost, 2);
	CHECK_EQ(m.u.ack.lost[0], 5005);
	CHECK_EQ(m.u.ack.lost[1], 5006);

	/* 5. Python's hostile message: refused, its descriptor closed. */
	int before = check_count_fds();
	CHECK_ERR(bt_fdpass_recv(ch, &m), -EBADMSG);
	CHECK_EQ(check_count_fds(), before);

	/* 6. Python closed. */
	CHECK_ERR(bt_fdpass_recv(ch, &m), 0);
	CHECK_CHILD_OK(pid);
	bt_fdpass_close(ch);
}

static const struct check_case cases[] = {
	{"python_interop", test_python_interop},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s PYTHON3 interop_wire.py\n", argv[0]);
		return 2;
	}
	python = argv[1];
	script = argv[2];
	return check_main(1, argv, cases);
}
