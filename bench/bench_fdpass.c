/* SPDX-License-Identifier: MIT */
/*
 * baton-bench fdpass: descriptors per second passed from a parent to a
 * child process over SOCK_SEQPACKET with the fdpass API, by batch size,
 * beside SOCK_STREAM (raw sendmsg, for reference) and the floor of
 * dup()+close() in one process.  All points are measured in one run, in
 * rounds that alternate the points, and the median of the rounds reported.
 *
 * What one point measures: the parent sends batches of B distinct
 * descriptors (each its own open file description, like accepted sockets)
 * for S seconds, as fast as the channel takes them (blocking sends); the
 * child receives every batch, closes every descriptor, and counts them.
 * fds/s = descriptors the child received and closed / wall time from the
 * first send to the child's last close.  CPU is both processes' user+sys.
 */
#include "bench.h"

#include <baton/fdpass.h>
#include <baton/wire.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum transport { T_FLOOR, T_SEQPACKET, T_STREAM };
static const char *const tname[] = {"dup+close", "seqpacket", "stream"};

struct point {
	enum transport t;
	int batch;
	double fds_s[BENCH_MAX_ROUNDS];
	double cpu_ns[BENCH_MAX_ROUNDS]; /* CPU per descriptor, both sides */
	double msgs_s[BENCH_MAX_ROUNDS];
	double med_fds_s, med_cpu_ns;
};

struct result {
	uint64_t fds, msgs;
	double secs, cpu_s;
};

static int src_fds[BT_WIRE_MAX_FDS];

static void open_sources(void)
{
	for (int i = 0; i < (int)BT_WIRE_MAX_FDS; i++) {
		src_fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (src_fds[i] < 0)
			bench_die("open(/dev/null): %s", strerror(errno));
	}
}

static void close_sources(void)
{
	for (int i = 0; i < (int)BT_WIRE_MAX_FDS; i++)
		close(src_fds[i]);
}

static struct result measure_floor(double secs)
{
	struct result r = {0};
	double c0 = bench_cpu_self(), t0 = bench_now(), t;
	uint64_t n = 0;
	do {
		for (int i = 0; i < 1024; i++) {
			int fd = dup(src_fds[i & 127]);
			if (fd < 0)
				bench_die("dup: %s", strerror(errno));
			close(fd);
		}
		n += 1024;
	} while ((t = bench_now()) - t0 < secs);
	r.fds = n;
	r.msgs = n;
	r.secs = t - t0;
	r.cpu_s = bench_cpu_self() - c0;
	return r;
}

/* --- child side ------------------------------------------------------- */

/* Receive batches through the library until DRAIN, closing every fd. */
static uint64_t child_seqpacket(int sock, uint64_t *msgs)
{
	bt_fdpass_t *ch;
	if (bt_fdpass_open(&ch, sock) < 0)
		_exit(2);
	uint64_t n = 0;
	for (;;) {
		struct bt_wire_msg m;
		int rc = bt_fdpass_recv(ch, &m);
		if (rc != 1)
			_exit(3);
		if (m.type == BT_WIRE_DRAIN)
			break;
		for (unsigned i = 0; i < m.u.batch.n_items; i++)
			if (m.u.batch.items[i].fd >= 0)
				close(m.u.batch.items[i].fd);
		n += m.u.batch.n_fds;
		(*msgs)++;
	}
	bt_fdpass_close(ch);
	return n;
}

/* Raw recvmsg on a stream: read each message's exact length; a message
 * with zero descriptors ends the run. */
static uint64_t child_stream(int sock, size_t msglen, uint64_t *msgs)
{
	static unsigned char buf[BT_WIRE_MAX_MSG];
	char ctl[2048] __attribute__((aligned(8)));
	uint64_t n = 0;
	for (;;) {
		size_t got = 0;
		size_t fds_now = 0;
		while (got < msglen) {
			struct iovec iov = {buf + got, msglen - got};
			struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
					    .msg_control = ctl, .msg_controllen = sizeof(ctl)};
			ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				_exit(4);
			}
			got += (size_t)r;
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
				if (c->cmsg_type != SCM_RIGHTS)
					continue;
				size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				int *fds = (int *)CMSG_DATA(c);
				for (size_t i = 0; i < k; i++)
					close(fds[i]);
				fds_now += k;
			}
		}
		if (fds_now == 0)
			break;
		n += fds_now;
		(*msgs)++;
	}
	return n;
}

/* --- parent side ------------------------------------------------------ */

static struct result measure_pass(enum transport t, int batch, double secs)
{
	int sv[2];
	if (t == T_SEQPACKET) {
		int rc = bt_fdpass_pair(sv, 0);
		if (rc < 0)
			bench_die("bt_fdpass_pair: %s", strerror(-rc));
	} else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		bench_die("socketpair(SOCK_STREAM): %s", strerror(errno));
	}
	int res[2];
	if (pipe2(res, O_CLOEXEC) < 0)
		bench_die("pipe2: %s", strerror(errno));

	struct bt_wire_item items[BT_WIRE_MAX_FDS];
	memset(items, 0, sizeof(items));
	for (int i = 0; i < batch; i++) {
		items[i].id = (uint64_t)i;
		items[i].flags = BT_WIRE_ITEM_FD;
		items[i].fd = src_fds[i];
	}
	static unsigned char msg[BT_WIRE_MAX_MSG];
	long msglen = bt_wire_encode_batch(msg, sizeof(msg), 0, items, (size_t)batch);
	if (msglen < 0)
		bench_die("bt_wire_encode_batch: %s", strerror((int)-msglen));

	double cpu_children0 = bench_cpu_children();
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(sv[0]);
		close(res[0]);
		uint64_t msgs = 0;
		uint64_t n = t == T_SEQPACKET ? child_seqpacket(sv[1], &msgs)
					      : child_stream(sv[1], (size_t)msglen, &msgs);
		uint64_t out[2] = {n, msgs};
		if (write(res[1], out, sizeof(out)) != sizeof(out))
			_exit(5);
		_exit(0);
	}
	close(sv[1]);
	close(res[1]);

	bt_fdpass_t *ch = NULL;
	if (t == T_SEQPACKET && bt_fdpass_open(&ch, sv[0]) < 0)
		bench_die("bt_fdpass_open failed");

	double c0 = bench_cpu_self(), t0 = bench_now();
	uint64_t seq = 0;
	do {
		for (int k = 0; k < 16; k++) {
			if (t == T_SEQPACKET) {
				int rc = bt_fdpass_send_batch(ch, seq++, items, (size_t)batch);
				if (rc < 0)
					bench_die("bt_fdpass_send_batch: %s", strerror(-rc));
			} else {
				char ctl[2048] __attribute__((aligned(8)));
				struct iovec iov = {msg, (size_t)msglen};
				struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
						    .msg_control = ctl,
						    .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)batch)};
				struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
				c->cmsg_level = SOL_SOCKET;
				c->cmsg_type = SCM_RIGHTS;
				c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)batch);
				memcpy(CMSG_DATA(c), src_fds, sizeof(int) * (size_t)batch);
				if (sendmsg(sv[0], &mh, MSG_NOSIGNAL) != msglen)
					bench_die("sendmsg(SOCK_STREAM): %s", strerror(errno));
			}
		}
	} while (bench_now() - t0 < secs);

	/* The end marker: a DRAIN, or a stream message with no descriptor. */
	if (t == T_SEQPACKET) {
		unsigned char d[64];
		struct bt_wire_drain dr = {0};
		long dl = bt_wire_encode_drain(d, sizeof(d), seq, &dr);
		if (bt_fdpass_send(ch, d, (size_t)dl, NULL, 0) < 0)
			bench_die("bt_fdpass_send(DRAIN) failed");
	} else if (write(sv[0], msg, (size_t)msglen) != msglen) {
		bench_die("write(SOCK_STREAM): %s", strerror(errno));
	}
	uint64_t out[2];
	ssize_t got = read(res[0], out, sizeof(out));
	double t1 = bench_now();
	double c1 = bench_cpu_self();
	int st;
	waitpid(pid, &st, 0);
	if (got != sizeof(out) || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		bench_die("receiver failed (status %d)", st);
	if (ch)
		bt_fdpass_close(ch);
	else
		close(sv[0]);
	close(res[0]);

	struct result r;
	r.fds = out[0];
	r.msgs = out[1];
	r.secs = t1 - t0;
	r.cpu_s = (c1 - c0) + (bench_cpu_children() - cpu_children0);
	return r;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: baton-bench fdpass [--seconds S] [--rounds N] [--batches LIST] [--csv FILE]\n"
		"\n"
		"Descriptors per second passed from a parent to a child process over\n"
		"AF_UNIX SOCK_SEQPACKET with baton's fdpass layer, for batch sizes\n"
		"1 2 4 8 16 32 64 128 253, beside SOCK_STREAM (raw sendmsg, batches 1,\n"
		"32, 253) and the floor of dup()+close() in one process.\n"
		"\n"
		"  --seconds S   time per point per round (default 0.5)\n"
		"  --rounds N    rounds, alternating the points; medians are reported\n"
		"                (default 3, at most %d)\n"
		"  --batches L   SOCK_SEQPACKET batch sizes, comma-separated, 1..253\n"
		"                (default 1,2,4,8,16,32,64,128,253); batch 1 is always\n"
		"                measured, as the reference of the x batch1 column\n"
		"  --no-stream   leave out the SOCK_STREAM reference rows\n"
		"  --csv FILE    also write transport,batch,fds_per_s,ratio_to_floor,\n"
		"                ratio_to_batch1\n"
		"  -h, --help    this text\n",
		BENCH_MAX_ROUNDS);
}

int bench_fdpass(int argc, char **argv)
{
	double secs = 0.5;
	int rounds = 3;
	const char *csv = NULL;
	int sizes[32] = {1, 2, 4, 8, 16, 32, 64, 128, 253};
	int n_sizes = 9, with_stream = 1;
	static const struct option opts[] = {
		{"seconds", required_argument, NULL, 's'},
		{"rounds", required_argument, NULL, 'r'},
		{"csv", required_argument, NULL, 'c'},
		{"batches", required_argument, NULL, 'b'},
		{"no-stream", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int c;
	optind = 0; /* glibc: start afresh */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (bench_parse_double(optarg, &secs) < 0 || secs < 0.01 || secs > 600)
				bench_usage_error(usage, "--seconds wants a number of seconds from 0.01 to 600, not '%s'", optarg);
			break;
		case 'r':
			if (bench_parse_int(optarg, &rounds) < 0 || rounds < 1 || rounds > BENCH_MAX_ROUNDS)
				bench_usage_error(usage, "--rounds wants 1 to %d, not '%s'", BENCH_MAX_ROUNDS, optarg);
			break;
		case 'c':
			csv = optarg;
			break;
		case 'b': {
			n_sizes = 0;
			sizes[n_sizes++] = 1;
			char *list = strdup(optarg), *save = NULL;
			for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				int b;
				if (bench_parse_int(tok, &b) < 0 || b < 1 || b > (int)BT_WIRE_MAX_FDS)
					bench_usage_error(usage, "--batches wants sizes from 1 to 253, not '%s'", tok);
				if (b != 1 && n_sizes < 32)
					sizes[n_sizes++] = b;
			}
			free(list);
			break;
		}
		case 'n':
			with_stream = 0;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			bench_version();
			return 0;
		default:
			bench_getopt_error(usage, c, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(usage, "unexpected argument '%s'", argv[optind]);

	FILE *csvf = NULL;
	if (csv && !(csvf = fopen(csv, "w")))
		bench_die("cannot write %s: %s", csv, strerror(errno));

	/* 253 sources plus what each side needs. */
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < 1024 && rl.rlim_max >= 1024) {
		rl.rlim_cur = 1024;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	open_sources();

	static const int stream_sizes[] = {1, 32, 253};
	struct point pts[1 + 32 + 3];
	int np = 0;
	pts[np++] = (struct point){.t = T_FLOOR, .batch = 1};
	int i_seq1 = np, i_seq32 = -1, i_seq253 = -1, i_str1 = -1;
	for (int i = 0; i < n_sizes; i++) {
		if (sizes[i] == 32)
			i_seq32 = np;
		if (sizes[i] == 253)
			i_seq253 = np;
		pts[np++] = (struct point){.t = T_SEQPACKET, .batch = sizes[i]};
	}
	for (int i = 0; with_stream && i < 3; i++) {
		if (i == 0)
			i_str1 = np;
		pts[np++] = (struct point){.t = T_STREAM, .batch = stream_sizes[i]};
	}

	printf("baton-bench fdpass: %d rounds x %.2f s per point, %ld CPUs online\n",
	       rounds, secs, sysconf(_SC_NPROCESSORS_ONLN));
	fflush(stdout);
	for (int r = 0; r < rounds; r++) {
		/* Alternate the order so slow drift of the machine does not
		 * favour one end of the table. */
		for (int k = 0; k < np; k++) {
			struct point *p = &pts[r % 2 ? np - 1 - k : k];
			struct result res = p->t == T_FLOOR ? measure_floor(secs)
							    : measure_pass(p->t, p->batch, secs);
			p->fds_s[r] = (double)res.fds / res.secs;
			p->msgs_s[r] = (double)res.msgs / res.secs;
			p->cpu_ns[r] = res.cpu_s * 1e9 / (double)res.fds;
		}
		fprintf(stderr, "  round %d of %d done\n", r + 1, rounds);
	}
	for (int k = 0; k < np; k++) {
		pts[k].med_fds_s = bench_median(pts[k].fds_s, rounds);
		pts[k].med_cpu_ns = bench_median(pts[k].cpu_ns, rounds);
	}

	double floor = pts[0].med_fds_s;
	double seq1 = pts[i_seq1].med_fds_s;
	double str1 = i_str1 >= 0 ? pts[i_str1].med_fds_s : 1;
	printf("\n%-10s %5s %12s %9s %9s %12s %10s\n", "transport", "batch",
	       "fds/s", "x floor", "x batch1", "CPU ns/fd", "spread");
	if (csvf)
		fprintf(csvf, "transport,batch,fds_per_s,ratio_to_floor,ratio_to_batch1\n");
	for (int k = 0; k < np; k++) {
		struct point *p = &pts[k];
		double base = p->t == T_STREAM ? str1 : seq1;
		double lo = p->fds_s[0], hi = p->fds_s[0];
		for (int r = 1; r < rounds; r++) {
			lo = p->fds_s[r] < lo ? p->fds_s[r] : lo;
			hi = p->fds_s[r] > hi ? p->fds_s[r] : hi;
		}
		char spread[32];
		snprintf(spread, sizeof(spread), "%.0f%%", p->med_fds_s > 0 ? 100.0 * (hi - lo) / p->med_fds_s : 0.0);
		printf("%-10s %5d %10.3f M %9.2f %9.2f %12.0f %10s\n", tname[p->t],
		       p->batch, p->med_fds_s / 1e6, p->med_fds_s / floor,
		       p->med_fds_s / base, p->med_cpu_ns, spread);
		if (csvf)
			fprintf(csvf, "%s,%d,%.0f,%.4f,%.4f\n", tname[p->t], p->batch,
				p->med_fds_s, p->med_fds_s / floor, p->med_fds_s / base);
	}
	printf("\nfds/s: medians of %d rounds; x batch1 is against the same transport's\n"
	       "batch 1 (dup+close against seqpacket batch 1); spread = (max-min)/median.\n"
	       "CPU ns/fd: sender + receiver user+sys time per descriptor.\n",
	       rounds);
	if (i_seq253 >= 0)
		printf("target: seqpacket 253 >= 0.80x floor: %s (%.2fx)\n",
		       pts[i_seq253].med_fds_s / floor >= 0.8 ? "met" : "MISSED",
		       pts[i_seq253].med_fds_s / floor);
	if (i_seq32 >= 0)
		printf("target: seqpacket 32 >= 3.5x batch 1: %s (%.2fx)\n",
		       pts[i_seq32].med_fds_s / seq1 >= 3.5 ? "met" : "MISSED",
		       pts[i_seq32].med_fds_s / seq1);
	if (csvf) {
		fclose(csvf);
		printf("wrote %s\n", csv);
	}
	close_sources();
	return 0;
}
