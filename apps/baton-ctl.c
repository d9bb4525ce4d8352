/* SPDX-License-Identifier: MIT */
/*
 * baton-ctl: talk to a running baton server through its control socket
 * (--control; the protocol is docs/control.md).  One request, one
 * response: the server's first line says ok, refused or usage, and the
 * exit status follows it (0, 1, 2).
 */
#include <baton/version.h>

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXIT_REFUSED 1
#define EXIT_USAGE 2

static const char *prog = "baton-ctl";

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [OPTION]... COMMAND [ARG]...\n"
		"Show and steer a running baton server through its control socket (the\n"
		"server's --control ADDR; under systemd, $RUNTIME_DIRECTORY/control).\n"
		"\n"
		"Commands:\n"
		"  status               the server, its settings and each worker, as a table\n"
		"  stats [--json]       the same figures as one JSON object\n"
		"  set batch N          connections per hand-off message, 1..253, from now on\n"
		"  set flush POLICY     adaptive[:US] | size | delay:US, from now on\n"
		"  set dispatch POLICY  rr | least | hash, from now on\n"
		"  workers N            run N worker processes (or threads): more start at once;\n"
		"                       each one taken away drains first, and its connections\n"
		"                       finish or move to the others\n"
		"  drain-worker I       drain worker I (a slot number, see status) and replace it\n"
		"  reload               start the server's program again from disk (as SIGHUP\n"
		"                       does) and wait until the new generation serves\n"
		"  help                 the commands the server knows\n"
		"\n"
		"Options:\n"
		"  -s, --socket ADDR    the control socket: a path or @name (default:\n"
		"                       $BATON_CONTROL)\n"
		"  -n, --name NAME      the socket of the systemd service NAME:\n"
		"                       /run/NAME/control (RuntimeDirectory=NAME)\n"
		"  -t, --timeout SEC    wait at most SEC seconds for the answer (default 30)\n"
		"  -h, --help           show this help and exit\n"
		"  -V, --version        show the version and exit\n"
		"\n"
		"Settings changed with set last until the server stops or reloads: the new\n"
		"generation starts from its flags.\n"
		"\n"
		"Exit status: 0 done; 1 refused or failed (the server said no, or could not\n"
		"be reached); 2 usage (a bad command or value).\n",
		prog);
}

static int fail(int status, const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	if (status == EXIT_USAGE)
		fprintf(stderr, "Try '%s --help' for more information.\n", prog);
	return status;
}

/* The request line for argv, or an exit status (2) after saying why. */
static int request(int argc, char **argv, char *line, size_t cap)
{
	if (argc == 0)
		return fail(EXIT_USAGE, "no command given%s%s", "", "");
	const char *cmd = argv[0];
	int ok = 0;
	if (!strcmp(cmd, "status") || !strcmp(cmd, "reload") || !strcmp(cmd, "help"))
		ok = argc == 1;
	else if (!strcmp(cmd, "stats"))
		ok = argc == 1 || (argc == 2 && !strcmp(argv[1], "--json"));
	else if (!strcmp(cmd, "set"))
		ok = argc == 3;
	else if (!strcmp(cmd, "workers") || !strcmp(cmd, "drain-worker"))
		ok = argc == 2;
	else
		return fail(EXIT_USAGE, "unknown command '%s'%s", cmd, "");
	if (!ok)
		return fail(EXIT_USAGE, "%s: wrong arguments (see --help)%s", cmd, "");
	size_t n = 0;
	for (int i = 0; i < argc; i++) {
		if (strpbrk(argv[i], " \t\r\n") || !argv[i][0])
			return fail(EXIT_USAGE, "'%s': an argument may not be empty or hold spaces%s",
				    argv[i], "");
		int w = snprintf(line + n, cap - n, "%s%s", i ? " " : "", argv[i]);
		if (w < 0 || (size_t)w >= cap - n)
			return fail(EXIT_USAGE, "the request is too long%s%s", "", "");
		n += (size_t)w;
	}
	if (!strcmp(cmd, "stats"))
		snprintf(line, cap, "stats"); /* JSON is what the server sends */
	return 0;
}

static int connect_to(const char *addr)
{
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	size_t n = strlen(addr);
	socklen_t len;
	if (n == 0 || n >= sizeof(sun.sun_path) || (addr[0] == '@' && n < 2)) {
		errno = n ? ENAMETOOLONG : EINVAL;
		return -1;
	}
	if (addr[0] == '@') {
		memcpy(sun.sun_path + 1, addr + 1, n - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		memcpy(sun.sun_path, addr, n);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, len) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	const char *sock = getenv("BATON_CONTROL");
	char named[128];
	double timeout = 30;
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'}, {"name", required_argument, NULL, 'n'},
		{"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},	  {NULL, 0, NULL, 0},
	};
	int o;
	opterr = 0;
	/* '+': options end at the command, so "stats --json" is the command's. */
	while ((o = getopt_long(argc, argv, "+s:n:t:hV", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			sock = optarg;
			break;
		case 'n':
			if (!*optarg || strchr(optarg, '/') || strlen(optarg) > 80)
				return fail(EXIT_USAGE, "--name: '%s' is not a service name%s", optarg,
					    "");
			snprintf(named, sizeof(named), "/run/%s/control", optarg);
			sock = named;
			break;
		case 't': {
			char *end;
			timeout = strtod(optarg, &end);
			if (*end || end == optarg || !(timeout > 0) || timeout > 86400)
				return fail(EXIT_USAGE, "--timeout: '%s' is not a number of seconds "
							"from 0 to 86400%s", optarg, "");
			break;
		}
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("%s (baton) %s\n", prog, bt_version());
			return 0;
		default: {
			const char *opt = argv[optind - 1];
			if (optopt && strchr("snt", optopt))
				return fail(EXIT_USAGE, "'%s' needs a value%s", opt, "");
			return fail(EXIT_USAGE, "unknown option '%s'%s", opt, "");
		}
		}
	}
	char line[1024];
	int rc = request(argc - optind, argv + optind, line, sizeof(line) - 1);
	if (rc)
		return rc;
	if (!sock || !*sock)
		return fail(EXIT_USAGE, "which server? Give --socket ADDR, --name NAME or "
					"BATON_CONTROL%s%s", "", "");
	int fd = connect_to(sock);
	if (fd < 0)
		return fail(EXIT_REFUSED, "connect(%s): %s", sock, strerror(errno));
	strcat(line, "\n");
	size_t len = strlen(line), off = 0;
	while (off < len) {
		ssize_t w = send(fd, line + off, len - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
			break; /* it closed: what it said first (a refusal) is still to read */
		if (w < 0) {
			close(fd);
			return fail(EXIT_REFUSED, "send(%s): %s", sock, strerror(errno));
		}
		off += (size_t)w;
	}
	/* Read until the empty line that ends the response. */
	size_t cap = 65536, got = 0;
	char *buf = malloc(cap);
	char *end = NULL;
	long long deadline = now_ms() + (long long)(timeout * 1000);
	while (buf && !end) {
		long long left = deadline - now_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = left > 0 ? poll(&p, 1, (int)(left > 1000000000 ? 1000000000 : left)) : 0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			free(buf);
			close(fd);
			return fail(EXIT_REFUSED, "%s: no answer within the timeout (--timeout)%s",
				    sock, "");
		}
		if (got + 4096 > cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			close(fd);
			return fail(EXIT_REFUSED, "%s: the server closed the connection before "
						  "answering%s", sock, "");
		}
		got += (size_t)n;
		buf[got] = 0;
		end = strstr(buf, "\n\n");
	}
	close(fd);
	if (!buf) {
		return fail(EXIT_REFUSED, "out of memory%s%s", "", "");
	}
	if (!end) {
		free(buf);
		return fail(EXIT_REFUSED, "out of memory%s%s", "", "");
	}
	end[1] = 0; /* keep the body's last newline */
	char *body = strchr(buf, '\n') + 1;
	body[-1] = 0;
	int status;
	if (!strcmp(buf, "ok")) {
		fputs(body, stdout);
		status = 0;
	} else if (!strncmp(buf, "refused: ", 9)) {
		fprintf(stderr, "%s: %s\n", prog, buf + 9);
		status = EXIT_REFUSED;
	} else if (!strncmp(buf, "usage: ", 7)) {
		fprintf(stderr, "%s: %s\n", prog, buf + 7);
		status = EXIT_USAGE;
	} else {
		fprintf(stderr, "%s: %s: not a baton control socket (it said '%.80s')\n", prog, sock,
			buf);
		status = EXIT_REFUSED;
	}
	free(buf);
	if (fflush(stdout) != 0)
		status = EXIT_REFUSED;
	return status;
}
