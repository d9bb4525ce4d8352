/* SPDX-License-Identifier: MIT */
/*
 * The server designs baton-bench compares, defined once: how to find each
 * program, start it on a free port, know it is ready, stop it, and measure
 * it under load (ours, or wrk's) with the server's own CPU time.  Used by
 * `conns` (bench_conns.c) and `sweep` (bench_sweep.c).
 *
 * Server CPU per exchange: user+sys time of the server's processes (the
 * root, its live descendants, and children it has reaped), read from /proc
 * before and after the measured run, divided by the exchanges served.  It
 * stays honest when the load generator shares the cores.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define DESIGN(n, p, sig, k, ...) \
	{.name = (n), .prog = (p), .stop_sig = (sig), .kind = (k), .args = {__VA_ARGS__}}
#define EXTRA(n, p, sig, k, ...) \
	{.name = (n), .prog = (p), .stop_sig = (sig), .kind = (k), .extra = 1, .args = {__VA_ARGS__}}
struct design bench_designs[] = {
	DESIGN("baton-proc", "baton-httpd", SIGTERM, K_BATON_PROC),
	DESIGN("baton-thread", "baton-httpd", SIGTERM, K_BATON_THREAD),
	DESIGN("baton-attach", "baton-httpd", SIGTERM, K_ATTACH),
	DESIGN("fork", "bench-fork", SIGTERM, K_LISTEN),
	DESIGN("prefork", "bench-prefork", SIGTERM, K_LISTEN_WORKERS),
	DESIGN("reuseport", "bench-reuseport", SIGTERM, K_LISTEN_WORKERS),
	DESIGN("inplace", "bench-inplace", SIGTERM, K_LISTEN),
	/* The ceiling on direct descriptors, as baton's thread mode uses. */
	DESIGN("inplace-direct", "bench-inplace", SIGTERM, K_LISTEN, "--direct"),
	DESIGN("nginx", "nginx", SIGQUIT, K_NGINX),
	/* Variants of the ceiling, on request: without merging the FIN into
	 * the last send, and with accepts paced every 200 us like baton's. */
	EXTRA("inplace-plain", "bench-inplace", SIGTERM, K_LISTEN, "--no-fin-merge"),
	EXTRA("inplace-paced", "bench-inplace", SIGTERM, K_LISTEN, "--paced", "200"),
	/* Two acceptor rings (--acceptors 2): docs/scaling.md. */
	EXTRA("baton-proc-acc2", "baton-httpd", SIGTERM, K_BATON_PROC, "--acceptors", "2"),
	EXTRA("baton-thread-acc2", "baton-httpd", SIGTERM, K_BATON_THREAD, "--acceptors", "2"),
	/* baton-proc operated: control socket, metrics, a scraper every 100 ms. */
	EXTRA("baton-proc-ops", "baton-httpd", SIGTERM, K_BATON_OPS),
};
const size_t bench_ndesigns = sizeof(bench_designs) / sizeof(bench_designs[0]);

struct design bench_servers[BENCH_MAX_SERVERS];
int bench_nservers;

void bench_harness_init(struct harness *h)
{
	memset(h, 0, sizeof(*h));
	bench_load_cfg_init(&h->load);
	h->workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
	char err[256];
	bench_addr_parse("127.0.0.1", 0, &h->listen, err, sizeof(err));
}

int bench_in_list(const char *list, const char *name)
{
	char *copy = strdup(list), *save = NULL;
	int found = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		found |= !strcmp(t, name);
	free(copy);
	return found;
}

int bench_find_binary(struct design *d)
{
	if (d->kind == K_SERVER) /* the path the user gave */
		return access(d->path, X_OK) == 0;
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		/* Installed: bin/ and libexec/baton/; build tree: apps/ and bench/. */
		const char *tries[] = {"%s/%s", "%s/" BATON_BENCH_LIBEXEC "/%s", "%s/../apps/%s",
				       "%s/../bench/%s"};
		for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
			snprintf(d->path, sizeof(d->path), tries[i], exe, d->prog);
			if (access(d->path, X_OK) == 0)
				return 1;
		}
	}
	if (d->kind == K_NGINX) {
		const char *dirs[] = {"/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/nginx/sbin"};
		for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
			snprintf(d->path, sizeof(d->path), "%s/nginx", dirs[i]);
			if (access(d->path, X_OK) == 0)
				return 1;
		}
	}
	return 0;
}

/* Can design d listen on h's address and speak h's protocol? */
const char *bench_cannot_serve(const struct design *d, const struct harness *h)
{
	if (d->kind == K_SERVER)
		return NULL;
	if (h->load.proto != BENCH_PROTO_HTTP)
		return "speaks http only";
	if ((d->kind == K_LISTEN || d->kind == K_LISTEN_WORKERS) &&
	    bench_addr_family(&h->listen) != AF_INET)
		return "listens on IPv4 only";
	return NULL;
}

struct running {
	pid_t pid;
	char dir[64];
	char listen[300];
	pid_t extra[256]; /* K_ATTACH: the attached workers */
	int nextra;
	pid_t scraper; /* K_BATON_OPS: not the server's, its CPU not counted */
	char metrics[64];
};

/* K_BATON_OPS's scraper: GET /metrics every 100 ms, as Prometheus would,
 * until killed. */
static void scrape_forever(const char *addr)
{
	struct bench_addr at;
	char err[256];
	if (bench_addr_parse(addr, 1, &at, err, sizeof(err)) < 0)
		_exit(2);
	static char buf[1 << 16];
	static const char req[] = "GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n";
	for (;;) {
		int fd = socket(at.ss[0].ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&at.ss[0], at.len[0]) == 0 &&
		    write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1))
			while (read(fd, buf, sizeof(buf)) > 0)
				;
		if (fd >= 0)
			close(fd);
		usleep(100000);
	}
}

/* Start argv (stdout and stderr to logp, BATON_LOG=warn): its pid. */
static pid_t spawn(const char *path, const char *const *argv, const char *logp)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(null, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		setenv("BATON_LOG", "warn", 1);
		execv(path, (char *const *)argv);
		fprintf(stderr, "baton-bench: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	return pid;
}

/* Does the server take workers at its attach address (@name) yet? */
static int attach_ready(const char *name)
{
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	size_t n = strlen(name);
	memcpy(su.sun_path + 1, name + 1, n - 1); /* abstract: a NUL, then the name */
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int ok = fd >= 0 && connect(fd, (struct sockaddr *)&su,
				    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) == 0;
	if (fd >= 0)
		close(fd); /* the server logs a worker that left without HELLO */
	return ok;
}

/* The CPU seconds of a running design: its root's tree, and the attached
 * workers' (not its descendants). */
static double run_cpu(const struct running *r)
{
	double c = bench_tree_cpu(r->pid);
	for (int i = 0; i < r->nextra && c >= 0; i++) {
		double w = bench_tree_cpu(r->extra[i]);
		c = w < 0 ? -1 : c + w;
	}
	return c;
}

static void write_nginx_conf(const char *dir, const char *listen, int workers)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/nginx.conf", dir);
	FILE *f = fopen(path, "w");
	if (!f)
		bench_die("cannot write %s: %s", path, strerror(errno));
	fprintf(f,
		"worker_processes %d;\ndaemon off;\nmaster_process on;\npid %s/nginx.pid;\n"
		"error_log %s/error.log warn;\nevents { worker_connections 4096; }\n"
		"http {\n  access_log off;\n  client_body_temp_path %s;\n  proxy_temp_path %s;\n"
		"  fastcgi_temp_path %s;\n  uwsgi_temp_path %s;\n  scgi_temp_path %s;\n"
		"  server {\n    listen %s%s backlog=4096;\n"
		"    location / { default_type text/plain; return 200 \"hello\\n\"; }\n  }\n}\n",
		workers, dir, dir, dir, dir, dir, dir, dir, listen[0] == '/' || listen[0] == '.' ? "unix:" : "",
		listen);
	fclose(f);
}

/* The last lines of a failed server's output, on stderr. */
static void show_log(const char *logp)
{
	FILE *f = fopen(logp, "r");
	if (!f)
		return;
	char buf[4096];
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	if (n)
		fprintf(stderr, "---- its output (%s):\n%s%s----\n", logp, buf,
			buf[n - 1] == '\n' ? "" : "\n");
}

static int start(struct design *d, const struct harness *h, struct running *r)
{
	snprintf(r->dir, sizeof(r->dir), "/tmp/baton-bench-XXXXXX");
	if (!mkdtemp(r->dir))
		bench_die("mkdtemp: %s", strerror(errno));
	int rc = bench_addr_with_free_port(&h->listen, r->listen, sizeof(r->listen));
	if (rc < 0)
		bench_die("cannot find a free port on %s: %s", h->listen.text, strerror(-rc));
	char nw[16], conf[128], err[128], attach[64], ctlp[128];
	static unsigned starts;
	snprintf(nw, sizeof(nw), "%d", h->workers);
	const char *argv[BENCH_MAX_ARGS + 32];
	int a = 0;
	argv[a++] = d->path;
	switch (d->kind) {
	case K_ATTACH:
		snprintf(attach, sizeof(attach), "@baton-bench-%ld-%u", (long)getpid(), ++starts);
		argv[a++] = "--listen";
		argv[a++] = r->listen;
		argv[a++] = "--workers";
		argv[a++] = "0";
		argv[a++] = "--attach";
		argv[a++] = attach;
		for (int i = 0; h->tuning[i]; i++)
			argv[a++] = h->tuning[i];
		break;
	case K_BATON_OPS:
		rc = bench_addr_with_free_port(&h->listen, r->metrics, sizeof(r->metrics));
		if (rc < 0)
			bench_die("cannot find a free port on %s: %s", h->listen.text, strerror(-rc));
		snprintf(ctlp, sizeof(ctlp), "%s/control", r->dir);
		argv[a++] = "--control";
		argv[a++] = ctlp;
		argv[a++] = "--metrics";
		argv[a++] = r->metrics;
		/* fall through */
	case K_BATON_PROC:
	case K_BATON_THREAD:
	case K_SERVER:
		argv[a++] = "--listen";
		argv[a++] = r->listen;
		argv[a++] = "--workers";
		argv[a++] = nw;
		if (d->kind != K_SERVER) {
			argv[a++] = "--mode";
			argv[a++] = d->kind == K_BATON_THREAD ? "thread" : "process";
		}
		for (int i = 0; h->tuning[i]; i++)
			argv[a++] = h->tuning[i];
		if (d->kind == K_SERVER)
			for (int i = 0; i < h->nserver_args; i++)
				argv[a++] = h->server_args[i];
		break;
	case K_LISTEN_WORKERS:
		argv[a++] = "--workers";
		argv[a++] = nw;
		/* fall through */
	case K_LISTEN:
		argv[a++] = "--listen";
		argv[a++] = r->listen;
		break;
	case K_NGINX:
		write_nginx_conf(r->dir, r->listen, h->workers);
		snprintf(conf, sizeof(conf), "%s/nginx.conf", r->dir);
		snprintf(err, sizeof(err), "%s/error.log", r->dir);
		argv[a++] = "-c";
		argv[a++] = conf;
		argv[a++] = "-e";
		argv[a++] = err;
		break;
	}
	for (int i = 0; i < 4 && d->args[i]; i++)
		argv[a++] = d->args[i];
	argv[a] = NULL;
	char logp[128];
	snprintf(logp, sizeof(logp), "%s/stderr", r->dir);
	r->nextra = 0;
	r->scraper = 0;
	r->pid = spawn(d->path, argv, logp);
	/* Ready when it accepts a connection (10 s at most). */
	struct bench_addr at;
	char perr[512];
	if (bench_addr_parse(r->listen, 1, &at, perr, sizeof(perr)) < 0)
		bench_die("%s", perr);
	for (int i = 0; i < 200; i++) {
		int st;
		if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
			fprintf(stderr, "baton-bench: %s exited at start (%s %d)\n", d->name,
				WIFEXITED(st) ? "status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			show_log(logp);
			return -1;
		}
		int fd = socket(at.ss[0].ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int ok = fd >= 0 && connect(fd, (struct sockaddr *)&at.ss[0], at.len[0]) == 0;
		if (fd >= 0)
			close(fd);
		if (ok && d->kind == K_ATTACH && !attach_ready(attach)) {
			usleep(50000);
			continue; /* listening, not yet taking workers */
		}
		if (ok && d->kind == K_ATTACH) {
			const char *wargv[] = {d->path, "--worker-of", attach, NULL};
			for (int k = 0; k < h->workers && k < 256; k++)
				r->extra[r->nextra++] = spawn(d->path, wargv, logp);
		}
		if (ok && d->kind == K_BATON_OPS) {
			fflush(NULL);
			r->scraper = fork();
			if (r->scraper == 0)
				scrape_forever(r->metrics);
			if (r->scraper < 0)
				bench_die("fork (the scraper): %s", strerror(errno));
		}
		if (ok)
			return 0;
		usleep(50000);
	}
	fprintf(stderr, "baton-bench: %s did not listen on %s within 10 s\n", d->name, r->listen);
	show_log(logp);
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	return -1;
}

static void stop(struct design *d, struct running *r)
{
	if (r->scraper > 0) {
		kill(r->scraper, SIGKILL);
		waitpid(r->scraper, NULL, 0);
		r->scraper = 0;
	}
	kill(r->pid, d->stop_sig); /* a server drains its attached workers too */
	int st;
	for (int i = 0; i < 300; i++) {
		if (waitpid(r->pid, &st, WNOHANG) == r->pid)
			goto done;
		usleep(50000);
	}
	fprintf(stderr, "baton-bench: %s did not stop within 15 s: SIGKILL\n", d->name);
	kill(r->pid, SIGKILL);
	waitpid(r->pid, &st, 0);
done:
	for (int i = 0; i < r->nextra; i++) {
		int k = 0;
		while (waitpid(r->extra[i], &st, WNOHANG) != r->extra[i] && k++ < 100)
			usleep(50000);
		if (k > 100) {
			kill(r->extra[i], SIGKILL);
			waitpid(r->extra[i], &st, 0);
		}
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "baton-bench: could not remove %s\n", r->dir);
	if (r->listen[0] == '/' || r->listen[0] == '.')
		unlink(r->listen); /* a server killed by a signal leaves its socket */
}

/* A duration as wrk prints it ("812.00us", "1.21ms", "2.00s"), in us. */
static uint64_t wrk_us(const char *v, const char *unit)
{
	double x = strtod(v, NULL);
	double mul = !strcmp(unit, "us") ? 1 : !strcmp(unit, "ms") ? 1e3 : !strcmp(unit, "s") ? 1e6 : 0;
	return (uint64_t)(x * mul + 0.5);
}

/* Parse wrk's report (with --latency) into res.  0, or -1 if it is not one. */
static int wrk_parse(const char *out, struct load_result *res)
{
	memset(res, 0, sizeof(*res));
	const char *p = strstr(out, " requests in ");
	if (!p)
		return -1;
	const char *num = p;
	while (num > out && num[-1] >= '0' && num[-1] <= '9')
		num--;
	res->requests = strtoull(num, NULL, 10);
	res->seconds = strtod(p + 13, NULL);
	if (res->seconds <= 0)
		return -1;
	res->rps = (double)res->requests / res->seconds;
	const char *lat = strstr(out, "Latency Distribution");
	for (const char *l = lat; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		int pc;
		char v[32], unit[8];
		if (sscanf(l, " %d%% %31[0-9.]%7[a-z]", &pc, v, unit) == 3) {
			if (pc == 50)
				res->p50_us = wrk_us(v, unit);
			else if (pc == 99)
				res->p99_us = wrk_us(v, unit);
		}
	}
	unsigned long long c = 0, r = 0, w = 0, t = 0, bad = 0;
	const char *se = strstr(out, "Socket errors:");
	if (se && sscanf(se, "Socket errors: connect %llu, read %llu, write %llu, timeout %llu", &c,
			 &r, &w, &t) == 4) {
		res->err[BENCH_ERR_REFUSED] = c;
		res->err[BENCH_ERR_RESET] = r + w;
		res->err[BENCH_ERR_TIMEOUT] = t;
	}
	const char *nx = strstr(out, "Non-2xx or 3xx responses:");
	if (nx)
		bad = strtoull(nx + 25, NULL, 10);
	res->err[BENCH_ERR_STATUS] = bad;
	res->errors = c + r + w + t + bad;
	return 0;
}

/* One run of wrk (-t1, --latency) against url for `seconds`. */
static int wrk_run(const struct harness *h, const char *url, int clients, double seconds,
		   struct load_result *res)
{
	char c[16], d[32];
	snprintf(c, sizeof(c), "-c%d", clients);
	snprintf(d, sizeof(d), "-d%.0fs", seconds < 1 ? 1 : seconds);
	const char *argv[16];
	int a = 0;
	argv[a++] = "wrk";
	argv[a++] = "-t1";
	argv[a++] = c;
	argv[a++] = d;
	argv[a++] = "--latency";
	argv[a++] = "--timeout";
	argv[a++] = "5s";
	if (!h->load.keepalive) {
		argv[a++] = "-H";
		argv[a++] = "Connection: close";
	}
	argv[a++] = url;
	argv[a] = NULL;
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		bench_die("pipe2: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(pfd[1], 1);
		execvp("wrk", (char *const *)argv);
		fprintf(stderr, "baton-bench: cannot run wrk: %s\n", strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	char out[16384];
	size_t n = 0;
	ssize_t r;
	while ((r = read(pfd[0], out + n, sizeof(out) - 1 - n)) > 0 || (r < 0 && errno == EINTR))
		if (r > 0)
			n += (size_t)r;
	out[n] = 0;
	close(pfd[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || wrk_parse(out, res) < 0) {
		fprintf(stderr, "baton-bench: wrk failed (%s %d):\n%s", WIFEXITED(st) ? "status" : "signal",
			WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), out);
		return -EIO;
	}
	return 0;
}

/* Start d, warm it up, measure `seconds` of load, stop it: the load's
 * result and the server's CPU microseconds per exchange. */
int bench_measure_run(struct design *d, struct harness *h, int clients, double rate, double warm,
		      double seconds, struct load_result *res, double *cpu_us)
{
	struct running run;
	if (start(d, h, &run) < 0)
		return -1;
	int rc;
	double c0, c1, a0, a1;
	if (h->wrk) {
		char url[400];
		snprintf(url, sizeof(url), "http://%s%s", run.listen, h->load.path);
		rc = wrk_run(h, url, clients, warm, res);
		c0 = run_cpu(&run);
		a0 = bench_acceptor_cpu(run.pid);
		if (rc == 0)
			rc = wrk_run(h, url, clients, seconds, res);
		c1 = run_cpu(&run);
		a1 = bench_acceptor_cpu(run.pid);
	} else {
		struct load_cfg lc = h->load; /* the shared request bytes are rebuilt below */
		lc.req = NULL;
		struct bench_addr at;
		char err[512];
		if (bench_addr_parse(run.listen, 1, &at, err, sizeof(err)) < 0)
			bench_die("%s", err);
		bench_addr_pick(&at, &lc.addr, &lc.addrlen);
		lc.host = at.host;
		lc.clients = clients;
		lc.threads = clients >= 64 ? 2 : 1;
		lc.rate = rate;
		lc.seconds = warm;
		rc = bench_load_run(&lc, res);
		c0 = run_cpu(&run);
		a0 = bench_acceptor_cpu(run.pid);
		lc.seconds = seconds;
		if (rc == 0)
			rc = bench_load_run(&lc, res);
		c1 = run_cpu(&run);
		a1 = bench_acceptor_cpu(run.pid);
		free(lc.req);
	}
	stop(d, &run);
	if (rc < 0)
		bench_die("cannot run the load: %s", strerror(-rc));
	*cpu_us = res->requests && c0 >= 0 && c1 >= 0 ? (c1 - c0) * 1e6 / (double)res->requests : 0;
	h->acc_us = res->requests && a0 >= 0 && a1 >= a0 ? (a1 - a0) * 1e6 / (double)res->requests : -1;
	return 0;
}

struct design *bench_add_server(const char *name, const char *path, void (*usage)(FILE *))
{
	if (bench_nservers == BENCH_MAX_SERVERS)
		bench_usage_error(usage, "at most %d --server", BENCH_MAX_SERVERS);
	struct design *d = &bench_servers[bench_nservers++];
	memset(d, 0, sizeof(*d));
	d->name = name;
	d->prog = path;
	d->stop_sig = SIGTERM;
	d->kind = K_SERVER;
	if (strlen(path) >= sizeof(d->path))
		bench_usage_error(usage, "--server: the path is too long");
	snprintf(d->path, sizeof(d->path), "%s", path);
	if (access(path, X_OK) != 0)
		bench_usage_error(usage, "--server %s: %s", path,
				  errno == ENOENT ? "no such file" : "not executable");
	return d;
}

void bench_add_server_arg(struct harness *h, const char *arg, void (*usage)(FILE *))
{
	if (h->nserver_args == BENCH_MAX_ARGS)
		bench_usage_error(usage, "at most %d --server-arg", BENCH_MAX_ARGS);
	h->server_args[h->nserver_args++] = arg;
}

void bench_parse_listen(struct harness *h, const char *spec, void (*usage)(FILE *))
{
	char err[512];
	if (bench_addr_parse(spec, 0, &h->listen, err, sizeof(err)) < 0)
		bench_usage_error(usage, "--listen %s", err);
}
