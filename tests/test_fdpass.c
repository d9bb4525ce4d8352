/* SPDX-License-Identifier: MIT */
/* Batched descriptor passing through baton/fdpass.h: round trips over every
 * kind of channel, and every kernel edge case with its exact errno.  Each
 * case runs in its own process with a descriptor-leak check (check.h). */
#include "check.h"

#include <baton/fdpass.h>
#include <baton/log.h>

#include <liburing.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>

/* --- helpers ---------------------------------------------------------- */

static char last_log[1024];
static int log_lines;

static void capture_log(void *ctx, int level, const char *line)
{
	(void)ctx;
	(void)level;
	snprintf(last_log, sizeof(last_log), "%s", line);
	log_lines++;
}

static void quiet_log(void)
{
	last_log[0] = 0;
	log_lines = 0;
	bt_log_set_handler(capture_log, NULL);
}

enum chan_kind { CH_PAIR, CH_PATH, CH_ABSTRACT };
static const char *const kind_name[] = {"socketpair", "path", "abstract"};

static char tmpdir[64];

static void make_name(enum chan_kind kind, char *name, size_t cap)
{
	static int seq;
	if (kind == CH_PATH) {
		if (!tmpdir[0]) {
			snprintf(tmpdir, sizeof(tmpdir), "/tmp/baton-test-XXXXXX");
			CHECK(mkdtemp(tmpdir) != NULL);
		}
		snprintf(name, cap, "%s/ch%d.sock", tmpdir, seq++);
	} else {
		snprintf(name, cap, "@baton-test-%d-%d", (int)getpid(), seq++);
	}
}

static void cleanup_tmpdir(void)
{
	if (tmpdir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		CHECK_EQ(system(cmd), 0);
		tmpdir[0] = 0;
	}
}

/* Two connected channels of the given kind: ch[0] sends, ch[1] receives. */
static void open_channels(enum chan_kind kind, bt_fdpass_t *ch[2], int flags)
{
	int sv[2];
	if (kind == CH_PAIR) {
		CHECK_ERR(bt_fdpass_pair(sv, flags), 0);
	} else {
		char name[128];
		make_name(kind, name, sizeof(name));
		int lfd = bt_fdpass_listen(name, 0);
		CHECK_OP(lfd, >=, 0);
		sv[0] = bt_fdpass_connect(name, flags);
		CHECK_OP(sv[0], >=, 0);
		sv[1] = bt_fdpass_accept(lfd, BT_FDPASS_NO_UID, flags);
		CHECK_OP(sv[1], >=, 0);
		close(lfd);
		if (kind == CH_PATH)
			CHECK_SYS(unlink(name));
	}
	CHECK_ERR(bt_fdpass_open(&ch[0], sv[0]), 0);
	CHECK_ERR(bt_fdpass_open(&ch[1], sv[1]), 0);
}

static void close_channels(bt_fdpass_t *ch[2])
{
	bt_fdpass_close(ch[0]);
	bt_fdpass_close(ch[1]);
	cleanup_tmpdir();
}

/* n distinct open file descriptions (memfds), each with its index written. */
static void make_files(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fds[i] = memfd_create("baton-test", MFD_CLOEXEC);
		CHECK_OP(fds[i], >=, 0);
		char b[32];
		int len = snprintf(b, sizeof(b), "file %zu\n", i);
		CHECK_EQ(write(fds[i], b, (size_t)len), len);
	}
}

static void close_all(const int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0)
			CHECK_SYS(close(fds[i]));
}

static void make_items(struct bt_wire_item *it, const int *fds, size_t n)
{
	memset(it, 0, n * sizeof(*it));
	for (size_t i = 0; i < n; i++) {
		it[i].id = 1000 + i;
		it[i].accept_ns = 5000000000ull + i;
		it[i].flags = fds ? BT_WIRE_ITEM_FD : 0;
		it[i].fd = fds ? fds[i] : -1;
		struct sockaddr_in *sin = (void *)&it[i].peer;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)(10000 + i));
		sin->sin_addr.s_addr = htonl(0x7f000001);
		it[i].peer_len = sizeof(*sin);
	}
}

/* The received fd refers to the same open file description as the sent
 * one: same inode, and a seek through one moves the other. */
static void check_same_file(int sent, int got)
{
	struct stat a, b;
	CHECK_SYS(fstat(sent, &a));
	CHECK_SYS(fstat(got, &b));
	CHECK_EQ(a.st_dev, b.st_dev);
	CHECK_EQ(a.st_ino, b.st_ino);
	off_t off = lseek(sent, 3, SEEK_SET);
	CHECK_EQ(off, 3);
	CHECK_EQ(lseek(got, 0, SEEK_CUR), 3);
	CHECK(check_fd_is_cloexec(got));
}

/* --- round trips ------------------------------------------------------- */

static void roundtrip(enum chan_kind kind, size_t n)
{
	bt_fdpass_t *ch[2];
	open_channels(kind, ch, 0);
	int fds[BT_WIRE_MAX_FDS];
	struct bt_wire_item it[BT_WIRE_MAX_FDS];
	make_files(fds, n);
	make_items(it, fds, n);

	CHECK_ERR(bt_fdpass_send_batch(ch[0], 42, it, n), 0);
	/* The sender keeps its descriptors after a successful send. */
	for (size_t i = 0; i < n; i++)
		CHECK(check_fd_is_open(fds[i]));

	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
	CHECK_EQ(m.type, BT_WIRE_BATCH);
	CHECK_EQ(m.u.batch.seq, 42);
	CHECK_EQ(m.u.batch.n_items, n);
	CHECK_EQ(m.u.batch.n_fds, n);
	CHECK_EQ(m.u.batch.n_lost, 0);
	for (size_t i = 0; i < n; i++) {
		const struct bt_wire_item *g = &m.u.batch.items[i];
		CHECK_EQ(g->id, 1000 + i);
		CHECK_EQ(g->accept_ns, 5000000000ull + i);
		CHECK_EQ(g->flags, BT_WIRE_ITEM_FD);
		CHECK_OP(g->fd, >=, 0);
		CHECK(g->fd != fds[i]);
		CHECK_EQ(g->peer_len, sizeof(struct sockaddr_in));
		CHECK_EQ(ntohs(((const struct sockaddr_in *)&g->peer)->sin_port), 10000 + i);
		check_same_file(fds[i], g->fd);
		CHECK_SYS(close(g->fd));
	}
	struct bt_fdpass_stats st;
	bt_fdpass_get_stats(ch[0], &st);
	CHECK_EQ(st.sent_msgs, 1);
	CHECK_EQ(st.sent_fds, n);
	bt_fdpass_get_stats(ch[1], &st);
	CHECK_EQ(st.recv_msgs, 1);
	CHECK_EQ(st.recv_fds, n);
	CHECK_EQ(st.malformed, 0);
	close_all(fds, n);
	close_channels(ch);
}

#define RT(kind, n) \
	static void test_rt_##kind##_##n(void) { roundtrip(kind, n); }
RT(CH_PAIR, 1) RT(CH_PAIR, 2) RT(CH_PAIR, 16) RT(CH_PAIR, 253)
RT(CH_PATH, 1) RT(CH_PATH, 2) RT(CH_PATH, 16) RT(CH_PATH, 253)
RT(CH_ABSTRACT, 1) RT(CH_ABSTRACT, 2) RT(CH_ABSTRACT, 16) RT(CH_ABSTRACT, 253)

/* Items without descriptors (generic jobs) and mixed batches. */
static void test_mixed_items(void)
{
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[8];
	make_files(fds, 8);
	struct bt_wire_item it[20];
	make_items(it, NULL, 20);
	for (int i = 0, k = 0; i < 20; i++) {
		if (i % 3 == 1) {
			it[i].flags = BT_WIRE_ITEM_FD;
			it[i].fd = fds[k++];
		}
		it[i].payload = "payload";
		it[i].payload_len = 7;
	}
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 1, it, 20), 0);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
	CHECK_EQ(m.u.batch.n_items, 20);
	CHECK_EQ(m.u.batch.n_fds, 7);
	for (int i = 0, k = 0; i < 20; i++) {
		const struct bt_wire_item *g = &m.u.batch.items[i];
		CHECK_EQ(g->payload_len, 7);
		CHECK(memcmp(g->payload, "payload", 7) == 0);
		if (i % 3 == 1) {
			check_same_file(fds[k++], g->fd);
			close(g->fd);
		} else {
			CHECK_EQ(g->fd, -1);
		}
	}
	close_all(fds, 8);
	close_channels(ch);
}

/* A batch from another process (the way workers receive them). */
static void test_cross_process(void)
{
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[16];
	make_files(fds, 16);
	pid_t pid = fork();
	CHECK_OP(pid, >=, 0);
	if (pid == 0) {
		struct bt_wire_item it[16];
		make_items(it, fds, 16);
		for (int round = 0; round < 10; round++)
			if (bt_fdpass_send_batch(ch[0], (uint64_t)round, it, 16) != 0)
				_exit(1);
		_exit(0);
	}
	for (int round = 0; round < 10; round++) {
		struct bt_wire_msg m;
		CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
		CHECK_EQ(m.u.batch.seq, round);
		for (int i = 0; i < 16; i++) {
			struct stat a, b;
			CHECK_SYS(fstat(fds[i], &a));
			CHECK_SYS(fstat(m.u.batch.items[i].fd, &b));
			CHECK_EQ(a.st_ino, b.st_ino);
			close(m.u.batch.items[i].fd);
		}
	}
	CHECK_CHILD_OK(pid);
	close_all(fds, 16);
	close_channels(ch);
}

/* --- the kernel's edge cases -------------------------------------------- */

static void set_nofile(rlim_t soft)
{
	struct rlimit rl;
	CHECK_SYS(getrlimit(RLIMIT_NOFILE, &rl));
	rl.rlim_cur = soft;
	CHECK_SYS(setrlimit(RLIMIT_NOFILE, &rl));
}

/* The receiver is at RLIMIT_NOFILE: MSG_CTRUNC.  The call says which
 * items lost their descriptor, keeps the ones that arrived, leaks nothing. */
static void ctrunc(int free_slots)
{
	quiet_log();
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[16];
	make_files(fds, 16);
	struct bt_wire_item it[16];
	make_items(it, fds, 16);
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 7, it, 16), 0);

	/* New descriptors take the lowest free numbers: a limit at the
	 * (free_slots+1)-th free number leaves exactly free_slots of them. */
	int limit = 0;
	for (int seen = 0;; limit++)
		if (!check_fd_is_open(limit) && seen++ == free_slots)
			break;
	struct rlimit saved;
	CHECK_SYS(getrlimit(RLIMIT_NOFILE, &saved));
	set_nofile((rlim_t)limit);
	struct bt_wire_msg m;
	int rc = bt_fdpass_recv(ch[1], &m);
	CHECK_SYS(setrlimit(RLIMIT_NOFILE, &saved));
	CHECK_ERR(rc, 1);
	CHECK_EQ(m.u.batch.n_fds, 16);
	CHECK_EQ(m.u.batch.n_lost, 16 - free_slots);
	for (int i = 0; i < 16; i++) {
		const struct bt_wire_item *g = &m.u.batch.items[i];
		CHECK_EQ(g->id, 1000 + i);
		if (i < free_slots) {
			CHECK_EQ(g->flags, BT_WIRE_ITEM_FD);
			check_same_file(fds[i], g->fd);
			close(g->fd);
		} else {
			CHECK_EQ(g->flags, BT_WIRE_ITEM_FD | BT_WIRE_ITEM_LOST);
			CHECK_EQ(g->fd, -1);
		}
	}
	struct bt_fdpass_stats st;
	bt_fdpass_get_stats(ch[1], &st);
	CHECK_EQ(st.truncated, 1);
	CHECK_EQ(st.lost_fds, 16 - free_slots);
	CHECK_EQ(st.recv_fds, free_slots);
	CHECK(strstr(last_log, "MSG_CTRUNC") != NULL);
	close_all(fds, 16);
	close_channels(ch);
}

static void test_ctrunc_some(void) { ctrunc(5); }
static void test_ctrunc_none(void) { ctrunc(0); }

static int raw_send(bt_fdpass_t *ch, const void *buf, size_t len,
		    const int *fds, size_t nfds)
{
	struct {
		_Alignas(struct cmsghdr) char b[2048]; /* >= CMSG_SPACE(4 * 253) */
	} ctl;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	if (nfds) {
		msg.msg_control = ctl.b;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	return sendmsg(bt_fdpass_fd(ch), &msg, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* A message larger than the maximum: MSG_TRUNC, refused, fds closed. */
static void test_msg_trunc(void)
{
	quiet_log();
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[3];
	make_files(fds, 3);
	static unsigned char big[BT_WIRE_MAX_MSG + 4096];
	memset(big, 0, sizeof(big));
	int before = check_count_fds();
	CHECK_ERR(raw_send(ch[0], big, sizeof(big), fds, 3), 0);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), -EMSGSIZE);
	CHECK_EQ(check_count_fds(), before);
	struct bt_fdpass_stats st;
	bt_fdpass_get_stats(ch[1], &st);
	CHECK_EQ(st.malformed, 1);
	CHECK_EQ(st.closed_fds, 3);
	CHECK(strstr(last_log, "MSG_TRUNC") != NULL);
	close_all(fds, 3);
	close_channels(ch);
}

/* Hostile messages: each is refused with its errno, every fd it carried
 * is closed, and the channel still works for the next good message. */
static void test_malformed(void)
{
	quiet_log();
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[4];
	make_files(fds, 4);
	struct bt_wire_item it[4];
	make_items(it, fds, 4);
	unsigned char good[4096], bad[4096];
	long len = bt_wire_encode_batch(good, sizeof(good), 1, it, 4);
	CHECK_OP(len, >, 0);

	struct {
		const char *what;
		size_t off; /* byte to change, or SIZE_MAX for none */
		unsigned char val;
		long len;   /* bytes to send */
		size_t nfds;
		int want;
	} cases[] = {
		{"bad magic", 0, 'X', len, 4, -EBADMSG},
		{"bad version", 4, 9, len, 4, -EPROTONOSUPPORT},
		{"bad type", 6, 77, len, 4, -EBADMSG},
		{"more fds than announced", SIZE_MAX, 0, len, 4, 0}, /* patched below */
		{"fewer fds than announced", SIZE_MAX, 0, len, 3, -EBADMSG},
		{"header fd count above items'", 22, 3, len, 3, -EBADMSG},
		{"truncated records", SIZE_MAX, 0, 32 + 56 + 10, 4, -EBADMSG},
		{"payload length past the end", 32 + 20, 0xff, len, 4, -EBADMSG},
		{"item count zero", 20, 0, len, 4, -EBADMSG},
		{"header only", SIZE_MAX, 0, 32, 4, -EBADMSG},
		{"short header", SIZE_MAX, 0, 7, 2, -EBADMSG},
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		memcpy(bad, good, (size_t)len);
		if (cases[c].off != SIZE_MAX)
			bad[cases[c].off] = cases[c].val;
		size_t nfds = cases[c].nfds;
		if (c == 3) { /* announce 2 fds in the header and flags, send 4 */
			bad[22] = 2;
			bad[32 + 2 * 56 + 16] = 0;
			bad[32 + 3 * 56 + 16] = 0;
			cases[c].want = -EBADMSG;
		}
		if (cases[c].len != len) /* keep the length field honest */
			for (int i = 0; i < 4; i++)
				bad[16 + i] = (unsigned char)((unsigned long)cases[c].len >> (8 * i));
		int before = check_count_fds();
		CHECK_ERR(raw_send(ch[0], bad, (size_t)cases[c].len, fds, nfds), 0);
		struct bt_wire_msg m;
		int rc = bt_fdpass_recv(ch[1], &m);
		if (rc != cases[c].want)
			fprintf(stderr, "case: %s\n", cases[c].what);
		CHECK_ERR(rc, cases[c].want);
		CHECK_EQ(check_count_fds(), before);
		CHECK(strstr(last_log, "refused message") != NULL);
	}
	/* Descriptors on an ACK. */
	struct bt_wire_ack ack = {.seq = 1};
	long alen = bt_wire_encode_ack(bad, sizeof(bad), 0, &ack);
	CHECK_ERR(raw_send(ch[0], bad, (size_t)alen, fds, 2), 0);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), -EBADMSG);

	struct bt_fdpass_stats st;
	bt_fdpass_get_stats(ch[1], &st);
	CHECK_EQ(st.malformed, 12);
	CHECK_EQ(st.recv_msgs, 0);

	/* The channel still carries a good message after all that. */
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 9, it, 4), 0);
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
	CHECK_EQ(m.u.batch.seq, 9);
	for (int i = 0; i < 4; i++)
		close(m.u.batch.items[i].fd);
	close_all(fds, 4);
	close_channels(ch);
}

/* A message with no data bytes but with descriptors: nothing may leak
 * whichever way the kernel delivers it. */
static void test_empty_message(void)
{
	quiet_log();
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, BT_FDPASS_NONBLOCK);
	int fds[2];
	make_files(fds, 2);
	int before = check_count_fds();
	int src = raw_send(ch[0], "", 0, fds, 2);
	CHECK(src == 0 || src == -EINVAL);
	struct bt_wire_msg m;
	int rc = bt_fdpass_recv(ch[1], &m);
	printf("    empty message with 2 fds: sendmsg %d, bt_fdpass_recv %d\n", src, rc);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -EAGAIN);
	CHECK_EQ(check_count_fds(), before);
	/* Our own sender refuses an empty message outright. */
	CHECK_ERR(bt_fdpass_send(ch[0], "", 0, fds, 2), -EINVAL);
	close_all(fds, 2);
	close_channels(ch);
}

/* A full channel gives -EAGAIN and the sender still owns every fd; every
 * message queued before that arrives whole and in order. */
static void test_eagain_when_full(void)
{
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, BT_FDPASS_NONBLOCK);
	int fds[2];
	make_files(fds, 2);
	struct bt_wire_item it[2];
	make_items(it, fds, 2);
	int sent = 0, rc;
	while ((rc = bt_fdpass_send_batch(ch[0], (uint64_t)sent, it, 2)) == 0)
		CHECK_OP(++sent, <, 100000);
	CHECK_ERR(rc, -EAGAIN);
	printf("    channel full after %d messages\n", sent);
	CHECK_OP(sent, >, 10);
	CHECK(check_fd_is_open(fds[0]) && check_fd_is_open(fds[1]));
	for (int i = 0; i < sent; i++) {
		struct bt_wire_msg m;
		CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
		CHECK_EQ(m.u.batch.seq, i);
		CHECK_EQ(m.u.batch.n_fds, 2);
		close(m.u.batch.items[0].fd);
		close(m.u.batch.items[1].fd);
	}
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), -EAGAIN);
	/* Room again. */
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 0, it, 2), 0);
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
	close(m.u.batch.items[0].fd);
	close(m.u.batch.items[1].fd);
	close_all(fds, 2);
	close_channels(ch);
}

/* An unprivileged sender past its RLIMIT_NOFILE in flight: ETOOMANYREFS. */
static void test_etoomanyrefs(void)
{
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, BT_FDPASS_NONBLOCK);
	int fd = memfd_create("x", MFD_CLOEXEC);
	CHECK_OP(fd, >=, 0);
	pid_t pid = fork();
	CHECK_OP(pid, >=, 0);
	if (pid == 0) {
		struct rlimit rl = {64, 64};
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || setgid(65534) < 0 ||
		    setuid(65534) < 0)
			_exit(3);
		int many[16];
		for (int i = 0; i < 16; i++)
			many[i] = fd;
		int total = 0, rc;
		unsigned char hdr[64] = "x";
		while ((rc = bt_fdpass_send(ch[0], hdr, sizeof(hdr), many, 16)) == 0)
			if ((total += 16) > 10000)
				_exit(4);
		printf("    ETOOMANYREFS after %d fds in flight (RLIMIT_NOFILE 64): %s\n",
		       total, strerror(-rc));
		_exit(rc == -ETOOMANYREFS && total >= 64 && total <= 64 + 32 ? 0 : 5);
	}
	CHECK_CHILD_OK(pid);
	close(fd);
	bt_fdpass_close(ch[0]);
	/* Close the receiver last: its queue holds the in-flight messages. */
	bt_fdpass_close(ch[1]);
}

/* A vanished peer: -EPIPE, and no SIGPIPE kills us. */
static void test_epipe(void)
{
	signal(SIGPIPE, SIG_DFL);
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[1];
	make_files(fds, 1);
	struct bt_wire_item it[1];
	make_items(it, fds, 1);
	bt_fdpass_close(ch[1]);
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 1, it, 1), -EPIPE);
	CHECK_ERR(bt_fdpass_send(ch[0], "abc", 3, NULL, 0), -EPIPE);
	CHECK(check_fd_is_open(fds[0]));
	close_all(fds, 1);
	bt_fdpass_close(ch[0]);
}

/* Receiving from a peer that closed gives 0; a non-blocking empty channel
 * gives -EAGAIN. */
static void test_eof_and_eagain(void)
{
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, BT_FDPASS_NONBLOCK);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), -EAGAIN);
	bt_fdpass_close(ch[0]);
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), 0);
	bt_fdpass_close(ch[1]);
}

static volatile sig_atomic_t interrupted;
static void on_usr1(int sig)
{
	(void)sig;
	interrupted++;
}

/* EINTR is retried: a signal without SA_RESTART arrives while blocked in
 * recvmsg, and then while blocked in sendmsg on a full channel. */
static void test_eintr(void)
{
	struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
	CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[1];
	make_files(fds, 1);
	struct bt_wire_item it[1];
	make_items(it, fds, 1);
	pid_t parent = getpid();

	pid_t pid = fork();
	CHECK_OP(pid, >=, 0);
	if (pid == 0) {
		usleep(100000);
		kill(parent, SIGUSR1);
		usleep(100000);
		_exit(bt_fdpass_send_batch(ch[0], 5, it, 1) == 0 ? 0 : 1);
	}
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
	CHECK_EQ(interrupted, 1);
	CHECK_EQ(m.u.batch.seq, 5);
	close(m.u.batch.items[0].fd);
	CHECK_CHILD_OK(pid);

	/* Fill the channel, then block in send while a child signals us and
	 * drains it. */
	CHECK_ERR(bt_fdpass_set_nonblock(ch[0], 1), 0);
	int sent = 0;
	while (bt_fdpass_send_batch(ch[0], (uint64_t)sent, it, 1) == 0)
		sent++;
	CHECK_ERR(bt_fdpass_set_nonblock(ch[0], 0), 0);
	pid = fork();
	CHECK_OP(pid, >=, 0);
	if (pid == 0) {
		usleep(100000);
		kill(parent, SIGUSR1);
		usleep(100000);
		for (int i = 0; i <= sent; i++) {
			struct bt_wire_msg mm;
			if (bt_fdpass_recv(ch[1], &mm) != 1)
				_exit(1);
			close(mm.u.batch.items[0].fd);
		}
		_exit(0);
	}
	CHECK_ERR(bt_fdpass_send_batch(ch[0], (uint64_t)sent, it, 1), 0);
	CHECK_EQ(interrupted, 2);
	CHECK_CHILD_OK(pid);
	close_all(fds, 1);
	close_channels(ch);
}

/* More than 253 descriptors is refused before any syscall: nothing sent. */
static void test_too_many_fds(void)
{
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, BT_FDPASS_NONBLOCK);
	int fd = memfd_create("x", MFD_CLOEXEC);
	int many[254];
	for (int i = 0; i < 254; i++)
		many[i] = fd;
	CHECK_ERR(bt_fdpass_send(ch[0], "hdr", 3, many, 254), -E2BIG);
	struct bt_wire_item it[254];
	make_items(it, many, 254);
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 0, it, 254), -E2BIG);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), -EAGAIN);
	struct bt_fdpass_stats st;
	bt_fdpass_get_stats(ch[0], &st);
	CHECK_EQ(st.sent_msgs, 0);
	/* 253 of them is fine. */
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 0, it, 253), 0);
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
	CHECK_EQ(m.u.batch.n_fds, 253);
	for (int i = 0; i < 253; i++)
		close(m.u.batch.items[i].fd);
	close(fd);
	close_channels(ch);
}

/* Bad descriptors in a batch: refused, nothing sent. */
static void test_bad_item_fd(void)
{
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, BT_FDPASS_NONBLOCK);
	struct bt_wire_item it[2];
	int fds[2] = {-1, -1};
	make_items(it, fds, 2);
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 0, it, 2), -EBADF);
	quiet_log();
	int closed_fd = 1000; /* not open in this process */
	CHECK(!check_fd_is_open(closed_fd));
	it[0].fd = it[1].fd = closed_fd;
	CHECK_ERR(bt_fdpass_send_batch(ch[0], 0, it, 2), -EBADF);
	CHECK(strstr(last_log, "sendmsg") != NULL);
	struct bt_wire_msg m;
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), -EAGAIN);
	close_channels(ch);
}

/* Only AF_UNIX SOCK_SEQPACKET sockets make channels. */
static void test_refuse_socket_types(void)
{
	quiet_log();
	int sv[2];
	CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	bt_fdpass_t *c = NULL;
	CHECK_ERR(bt_fdpass_check(sv[0]), -EPROTOTYPE);
	CHECK(strstr(last_log, "SOCK_STREAM") != NULL);
	CHECK_ERR(bt_fdpass_open(&c, sv[0]), -EPROTOTYPE);
	CHECK(c == NULL);
	CHECK(check_fd_is_open(sv[0])); /* still the caller's */
	close(sv[0]);
	close(sv[1]);

	CHECK_SYS(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	CHECK_ERR(bt_fdpass_open(&c, sv[0]), -EPROTOTYPE);
	close(sv[0]);
	close(sv[1]);

	int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK_ERR(bt_fdpass_check(udp), -EAFNOSUPPORT);
	close(udp);
	int p[2];
	CHECK_SYS(pipe2(p, O_CLOEXEC));
	CHECK_ERR(bt_fdpass_check(p[0]), -ENOTSOCK);
	CHECK(strstr(last_log, "not a socket") != NULL);
	close(p[0]);
	close(p[1]);
	CHECK_ERR(bt_fdpass_check(999), -EBADF);
	CHECK_ERR(bt_fdpass_open(NULL, 0), -EINVAL);
	CHECK_ERR(bt_fdpass_pair(NULL, 0), -EINVAL);
	CHECK_ERR(bt_fdpass_pair(sv, 0x100), -EINVAL);
}

/* An event loop that issues the recvmsg itself: io_uring RECVMSG on the
 * msghdr of bt_fdpass_rx_prepare, finished by bt_fdpass_rx_complete.  The
 * kernel writes msg_flags and msg_controllen back into that msghdr. */
static void test_io_uring_recvmsg(void)
{
	struct io_uring ring;
	int rc = io_uring_queue_init(8, &ring, 0);
	if (rc == -ENOSYS || rc == -EPERM || rc == -ENOMEM)
		CHECK_SKIP("io_uring unavailable: %s", strerror(-rc));
	CHECK_ERR(rc, 0);
	bt_fdpass_t *ch[2];
	open_channels(CH_PAIR, ch, 0);
	int fds[16];
	make_files(fds, 16);
	struct bt_wire_item it[16];
	make_items(it, fds, 16);

	for (int round = 0; round < 3; round++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		io_uring_prep_recvmsg(sqe, bt_fdpass_fd(ch[1]), bt_fdpass_rx_prepare(ch[1]),
				      MSG_CMSG_CLOEXEC);
		CHECK_EQ(io_uring_submit(&ring), 1);
		if (round < 2) /* the last round: the peer closes instead */
			CHECK_ERR(bt_fdpass_send_batch(ch[0], (uint64_t)round, it, 16), 0);
		else
			bt_fdpass_close(ch[0]);
		struct io_uring_cqe *cqe;
		CHECK_ERR(io_uring_wait_cqe(&ring, &cqe), 0);
		int res = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
		struct bt_wire_msg m;
		if (round == 2) {
			CHECK_ERR(bt_fdpass_rx_complete(ch[1], res, &m), 0);
			break;
		}
		CHECK_ERR(bt_fdpass_rx_complete(ch[1], res, &m), 1);
		CHECK_EQ(m.u.batch.seq, round);
		CHECK_EQ(m.u.batch.n_fds, 16);
		for (int i = 0; i < 16; i++) {
			check_same_file(fds[i], m.u.batch.items[i].fd);
			close(m.u.batch.items[i].fd);
		}
	}
	/* A failed operation is passed through, nothing to close. */
	struct bt_wire_msg m;
	bt_fdpass_rx_prepare(ch[1]);
	CHECK_ERR(bt_fdpass_rx_complete(ch[1], -ECONNRESET, &m), -ECONNRESET);
	bt_fdpass_close(ch[1]);

	/* Sends through io_uring SENDMSG: until the channel is full, then
	 * MSG_DONTWAIT gives -EAGAIN rather than a wait. */
	open_channels(CH_PAIR, ch, 0);
	static unsigned char msg[4096];
	long len = bt_wire_encode_batch(msg, sizeof(msg), 0, it, 16);
	CHECK_ERR(bt_fdpass_tx_prepare(ch[0], msg, (size_t)len, fds, 254, &(struct msghdr *){0}), -E2BIG);
	int sent = 0, res;
	do {
		struct msghdr *mh;
		CHECK_ERR(bt_fdpass_tx_prepare(ch[0], msg, (size_t)len, fds, 16, &mh), 0);
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		io_uring_prep_sendmsg(sqe, bt_fdpass_fd(ch[0]), mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		CHECK_EQ(io_uring_submit(&ring), 1);
		struct io_uring_cqe *cqe;
		CHECK_ERR(io_uring_wait_cqe(&ring, &cqe), 0);
		res = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
		rc = bt_fdpass_tx_complete(ch[0], res);
		if (rc == 0)
			sent++;
	} while (rc == 0 && sent < 100000);
	CHECK_ERR(rc, -EAGAIN);
	CHECK_OP(sent, >, 10);
	struct bt_fdpass_stats st;
	bt_fdpass_get_stats(ch[0], &st);
	CHECK_EQ(st.sent_msgs, sent);
	CHECK_ERR(bt_fdpass_set_nonblock(ch[1], 1), 0);
	for (int i = 0; i < sent; i++) {
		CHECK_ERR(bt_fdpass_recv(ch[1], &m), 1);
		for (int k = 0; k < 16; k++)
			close(m.u.batch.items[k].fd);
	}
	CHECK_ERR(bt_fdpass_recv(ch[1], &m), -EAGAIN);
	io_uring_queue_exit(&ring);
	close_all(fds, 16);
	close_channels(ch);
}

/* --- named sockets ------------------------------------------------------ */

static void test_named_path_mode(void)
{
	char name[128];
	make_name(CH_PATH, name, sizeof(name));
	mode_t old = umask(0); /* would give 0777 without our care */
	int lfd = bt_fdpass_listen(name, 0);
	umask(old);
	CHECK_OP(lfd, >=, 0);
	struct stat st;
	CHECK_SYS(stat(name, &st));
	CHECK(S_ISSOCK(st.st_mode));
	CHECK_EQ(st.st_mode & 07777, 0600);
	CHECK(check_fd_is_cloexec(lfd));

	/* In use: a second listener is refused. */
	quiet_log();
	CHECK_ERR(bt_fdpass_listen(name, 0), -EADDRINUSE);
	close(lfd);
	/* Stale (nobody listens): replaced. */
	lfd = bt_fdpass_listen(name, 0);
	CHECK_OP(lfd, >=, 0);
	CHECK(strstr(last_log, "stale") != NULL);
	close(lfd);
	unlink(name);

	/* A live socket of another type (a stream server) is in use too:
	 * -EADDRINUSE, not the probe's -EPROTOTYPE. */
	int st_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	CHECK_OP(strlen(name), <, sizeof(su.sun_path));
	memcpy(su.sun_path, name, strlen(name) + 1);
	CHECK_SYS(bind(st_fd, (struct sockaddr *)&su, sizeof(su)));
	CHECK_SYS(listen(st_fd, 1));
	CHECK_ERR(bt_fdpass_listen(name, 0), -EADDRINUSE);
	close(st_fd);
	unlink(name);

	/* A regular file is never replaced. */
	int f = open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	close(f);
	CHECK_ERR(bt_fdpass_listen(name, 0), -EADDRINUSE);
	unlink(name);

	/* Nobody at the name. */
	CHECK_ERR(bt_fdpass_connect(name, 0), -ENOENT);
	CHECK_ERR(bt_fdpass_connect("@baton-test-nobody-here", 0), -ECONNREFUSED);

	/* Bad names. */
	char longname[200];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = 0;
	CHECK_ERR(bt_fdpass_listen(longname, 0), -ENAMETOOLONG);
	longname[0] = '@';
	CHECK_ERR(bt_fdpass_listen(longname, 0), -ENAMETOOLONG);
	CHECK_ERR(bt_fdpass_listen("", 0), -EINVAL);
	CHECK_ERR(bt_fdpass_listen("@", 0), -EINVAL);
	CHECK_ERR(bt_fdpass_listen(NULL, 0), -EINVAL);
	CHECK_ERR(bt_fdpass_connect("", 0), -EINVAL);
	cleanup_tmpdir();
}

static void test_named_nonblock_accept(void)
{
	char name[128];
	make_name(CH_ABSTRACT, name, sizeof(name));
	int lfd = bt_fdpass_listen(name, BT_FDPASS_NONBLOCK);
	CHECK_OP(lfd, >=, 0);
	CHECK_ERR(bt_fdpass_accept(lfd, BT_FDPASS_NO_UID, 0), -EAGAIN);
	int c = bt_fdpass_connect(name, BT_FDPASS_NONBLOCK);
	CHECK_OP(c, >=, 0);
	CHECK(fcntl(c, F_GETFL) & O_NONBLOCK);
	int a = bt_fdpass_accept(lfd, BT_FDPASS_NO_UID, BT_FDPASS_NONBLOCK);
	CHECK_OP(a, >=, 0);
	CHECK(fcntl(a, F_GETFL) & O_NONBLOCK);
	CHECK(check_fd_is_cloexec(a) && check_fd_is_cloexec(c));
	CHECK_ERR(bt_fdpass_check(a), 0);
	close(a);
	close(c);
	close(lfd);
}

/* A helper that becomes nobody and connects to name; exits with 0 when
 * connect gave want_connect and the channel then behaved as expected. */
static pid_t connect_as_nobody(const char *name, int want_connect, int expect_refused)
{
	pid_t pid = fork();
	CHECK_OP(pid, >=, 0);
	if (pid != 0)
		return pid;
	bt_log_set_handler(capture_log, NULL);
	if (setgid(65534) < 0 || setuid(65534) < 0)
		_exit(3);
	int fd = bt_fdpass_connect(name, 0);
	if (fd != want_connect && !(want_connect == 0 && fd >= 0))
		_exit(4);
	if (fd < 0)
		_exit(0);
	char b[8];
	ssize_t n = recv(fd, b, sizeof(b), 0); /* wait for accept's verdict */
	if (expect_refused)
		_exit(n <= 0 ? 0 : 5);
	_exit(n == 2 ? 0 : 6);
}

/* Only our uid (or the one allowed) may attach: SO_PEERCRED. */
static void test_peercred_refused(void)
{
	if (geteuid() != 0)
		CHECK_SKIP("needs root to run a helper as another uid");
	quiet_log();
	char name[128];
	make_name(CH_ABSTRACT, name, sizeof(name));
	int lfd = bt_fdpass_listen(name, 0);
	CHECK_OP(lfd, >=, 0);

	/* Abstract sockets have no file mode: SO_PEERCRED is the guard. */
	pid_t pid = connect_as_nobody(name, 0, 1);
	CHECK_ERR(bt_fdpass_accept(lfd, BT_FDPASS_NO_UID, 0), -EPERM);
	CHECK(strstr(last_log, "refused channel peer") != NULL);
	CHECK(strstr(last_log, "uid 65534") != NULL);
	CHECK_CHILD_OK(pid);

	/* Allowed when configured. */
	pid = connect_as_nobody(name, 0, 0);
	int a = bt_fdpass_accept(lfd, 65534, 0);
	CHECK_OP(a, >=, 0);
	CHECK_EQ(send(a, "ok", 2, MSG_NOSIGNAL), 2);
	CHECK_CHILD_OK(pid);
	close(a);

	/* Another uid allowed does not let nobody in. */
	pid = connect_as_nobody(name, 0, 1);
	CHECK_ERR(bt_fdpass_accept(lfd, 4242, 0), -EPERM);
	CHECK_CHILD_OK(pid);
	close(lfd);

	/* A path socket is mode 0600: nobody cannot even connect. */
	make_name(CH_PATH, name, sizeof(name));
	CHECK_SYS(chmod(tmpdir, 0755));
	lfd = bt_fdpass_listen(name, 0);
	CHECK_OP(lfd, >=, 0);
	pid = connect_as_nobody(name, -EACCES, 1);
	CHECK_CHILD_OK(pid);
	close(lfd);
	cleanup_tmpdir();
}

static const struct check_case cases[] = {
	{"roundtrip_socketpair_1", test_rt_CH_PAIR_1},
	{"roundtrip_socketpair_2", test_rt_CH_PAIR_2},
	{"roundtrip_socketpair_16", test_rt_CH_PAIR_16},
	{"roundtrip_socketpair_253", test_rt_CH_PAIR_253},
	{"roundtrip_path_1", test_rt_CH_PATH_1},
	{"roundtrip_path_2", test_rt_CH_PATH_2},
	{"roundtrip_path_16", test_rt_CH_PATH_16},
	{"roundtrip_path_253", test_rt_CH_PATH_253},
	{"roundtrip_abstract_1", test_rt_CH_ABSTRACT_1},
	{"roundtrip_abstract_2", test_rt_CH_ABSTRACT_2},
	{"roundtrip_abstract_16", test_rt_CH_ABSTRACT_16},
	{"roundtrip_abstract_253", test_rt_CH_ABSTRACT_253},
	{"mixed_items", test_mixed_items},
	{"cross_process", test_cross_process},
	{"ctrunc_some", test_ctrunc_some},
	{"ctrunc_none", test_ctrunc_none},
	{"msg_trunc", test_msg_trunc},
	{"malformed", test_malformed},
	{"empty_message", test_empty_message},
	{"eagain_when_full", test_eagain_when_full},
	{"etoomanyrefs", test_etoomanyrefs},
	{"epipe", test_epipe},
	{"eof_and_eagain", test_eof_and_eagain},
	{"eintr", test_eintr},
	{"too_many_fds", test_too_many_fds},
	{"bad_item_fd", test_bad_item_fd},
	{"refuse_socket_types", test_refuse_socket_types},
	{"io_uring_recvmsg", test_io_uring_recvmsg},
	{"named_path_mode", test_named_path_mode},
	{"named_nonblock_accept", test_named_nonblock_accept},
	{"peercred_refused", test_peercred_refused},
	{NULL, NULL},
};

int main(int argc, char **argv)
{
	(void)kind_name;
	return check_main(argc, argv, cases);
}
