/* SPDX-License-Identifier: MIT */
/*
 * baton-bench conns: every server design under the same load, in one run,
 * one table.  Each design is started (bound to 127.0.0.1 on a free port),
 * warmed up for a second, measured for --seconds with our load generator
 * (bench_load.c), and stopped; designs alternate over --reps repetitions and
 * the table shows medians (min-max).
 *
 * Server CPU per connection: user+sys time of the server's processes (the
 * root, its live descendants, and children it has reaped), read from /proc
 * before and after the measured run, divided by the connections served.
 * It stays honest when the load generator shares the cores.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_REPS 15

struct design {
	const char *name;
	const char *prog; /* binary name, found next to baton-bench or in libexec/baton */
	int stop_sig;
	int kind;         /* how to build its argv */
	char path[PATH_MAX];
	int available;
	double cps[MAX_REPS], cpu[MAX_REPS], p50[MAX_REPS], p99[MAX_REPS], p999[MAX_REPS];
	uint64_t errors[MAX_REPS];
	uint64_t err_kind[BENCH_ERR_KINDS];
};

enum { K_BATON_PROC, K_BATON_THREAD, K_LISTEN, K_LISTEN_WORKERS, K_NGINX };

#define DESIGN(n, p, sig, k) {.name = (n), .prog = (p), .stop_sig = (sig), .kind = (k)}
static struct design designs[] = {
	DESIGN("baton-proc", "baton-httpd", SIGTERM, K_BATON_PROC),
	DESIGN("baton-thread", "baton-httpd", SIGTERM, K_BATON_THREAD),
	DESIGN("fork", "bench-fork", SIGTERM, K_LISTEN),
	DESIGN("prefork", "bench-prefork", SIGTERM, K_LISTEN_WORKERS),
	DESIGN("reuseport", "bench-reuseport", SIGTERM, K_LISTEN_WORKERS),
	DESIGN("inplace", "bench-inplace", SIGTERM, K_LISTEN),
	DESIGN("nginx", "nginx", SIGQUIT, K_NGINX),
};
#define NDESIGNS (sizeof(designs) / sizeof(designs[0]))

static int find_binary(struct design *d)
{
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

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) < 0)
		bench_die("cannot find a free port: %s", strerror(errno));
	close(fd);
	return ntohs(sin.sin_port);
}

/* On-CPU time of a live process in ns, summed over its threads from
 * /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat counts clock
 * ticks of 10 ms, too coarse for a short run of a stalled server).
 * Threads that already exited are only in stat: the larger of the two
 * wins. */
static unsigned long long proc_ns(const char *pid, unsigned long long stat_ns)
{
	char path[600];
	snprintf(path, sizeof(path), "/proc/%s/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return stat_ns;
	unsigned long long sum = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/task/%s/schedstat", pid, e->d_name);
		FILE *f = fopen(path, "r");
		unsigned long long ns;
		if (f && fscanf(f, "%llu", &ns) == 1)
			sum += ns;
		if (f)
			fclose(f);
	}
	closedir(d);
	return sum > stat_ns ? sum : stat_ns;
}

/* CPU seconds of pid (with the children it reaped) and its live descendants. */
static double tree_cpu(pid_t root)
{
	long tck = sysconf(_SC_CLK_TCK);
	unsigned long long tick_ns = 1000000000ull / (unsigned long long)tck;
	struct { pid_t pid, ppid; unsigned long long ns; } *all = NULL;
	size_t n = 0, cap = 0;
	unsigned long long total = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char path[300], buf[1024];
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = 0;
		char *rp = strrchr(buf, ')');
		if (!rp)
			continue;
		/* after ')': state ppid pgrp session tty tpgid flags minflt
		 * cminflt majflt cmajflt utime stime cutime cstime */
		char state;
		int ppid;
		unsigned long long v[12];
		if (sscanf(rp + 2, "%c %d %*d %*d %*d %*d %*u %llu %llu %llu %llu %llu %llu %llu %llu",
			   &state, &ppid, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 10)
			continue;
		pid_t pid = atoi(e->d_name);
		unsigned long long own = proc_ns(e->d_name, (v[4] + v[5]) * tick_ns);
		if (pid == root)
			total += own + (v[6] + v[7]) * tick_ns;
		if (n == cap) {
			cap = cap ? cap * 2 : 512;
			all = realloc(all, cap * sizeof(*all));
		}
		all[n].pid = pid;
		all[n].ppid = ppid;
		all[n].ns = own;
		n++;
	}
	if (d)
		closedir(d);
	/* Descendants, breadth first over the parent links. */
	pid_t queue[4096];
	size_t qh = 0, qt = 0;
	queue[qt++] = root;
	while (qh < qt) {
		pid_t p = queue[qh++];
		for (size_t i = 0; i < n; i++)
			if (all[i].ppid == p && qt < 4096) {
				total += all[i].ns;
				queue[qt++] = all[i].pid;
			}
	}
	free(all);
	return (double)total / 1e9;
}

struct running {
	pid_t pid;
	char dir[64];
};

static void write_nginx_conf(const char *dir, int port, int workers)
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
		"  server {\n    listen 127.0.0.1:%d backlog=4096;\n"
		"    location / { default_type text/plain; return 200 \"hello\\n\"; }\n  }\n}\n",
		workers, dir, dir, dir, dir, dir, dir, dir, port);
	fclose(f);
}

/* Extra flags for the baton designs (the sweep's --batch and --flush). */
static const char *baton_extra[8];

static int start(struct design *d, int port, int workers, struct running *r)
{
	snprintf(r->dir, sizeof(r->dir), "/tmp/baton-bench-XXXXXX");
	if (!mkdtemp(r->dir))
		bench_die("mkdtemp: %s", strerror(errno));
	char listen_at[64], nw[16], conf[128], err[128];
	snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%d", port);
	snprintf(nw, sizeof(nw), "%d", workers);
	const char *argv[16];
	int a = 0;
	argv[a++] = d->path;
	switch (d->kind) {
	case K_BATON_PROC:
	case K_BATON_THREAD:
		argv[a++] = "--listen";
		argv[a++] = listen_at;
		argv[a++] = "--workers";
		argv[a++] = nw;
		argv[a++] = "--mode";
		argv[a++] = d->kind == K_BATON_PROC ? "process" : "thread";
		for (int i = 0; baton_extra[i] && a < 14; i++)
			argv[a++] = baton_extra[i];
		break;
	case K_LISTEN_WORKERS:
		argv[a++] = "--workers";
		argv[a++] = nw;
		/* fall through */
	case K_LISTEN:
		argv[a++] = "--listen";
		argv[a++] = listen_at;
		break;
	case K_NGINX:
		write_nginx_conf(r->dir, port, workers);
		snprintf(conf, sizeof(conf), "%s/nginx.conf", r->dir);
		snprintf(err, sizeof(err), "%s/error.log", r->dir);
		argv[a++] = "-c";
		argv[a++] = conf;
		argv[a++] = "-e";
		argv[a++] = err;
		break;
	}
	argv[a] = NULL;
	char logp[128];
	snprintf(logp, sizeof(logp), "%s/stderr", r->dir);
	fflush(NULL);
	r->pid = fork();
	if (r->pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (r->pid == 0) {
		int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		dup2(null, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		setenv("BATON_LOG", "warn", 1);
		execv(d->path, (char *const *)argv);
		_exit(127);
	}
	/* Ready when it accepts a connection (10 s at most). */
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	for (int i = 0; i < 200; i++) {
		int st;
		if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
			fprintf(stderr, "baton-bench: %s exited at start; its output is in %s\n", d->name, logp);
			return -1;
		}
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		close(fd);
		if (ok)
			return 0;
		usleep(50000);
	}
	fprintf(stderr, "baton-bench: %s did not listen within 10 s\n", d->name);
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	return -1;
}

static void stop(struct design *d, struct running *r)
{
	kill(r->pid, d->stop_sig);
	int st;
	for (int i = 0; i < 300; i++) {
		if (waitpid(r->pid, &st, WNOHANG) == r->pid)
			goto done;
		usleep(50000);
	}
	fprintf(stderr, "baton-bench: %s did not stop within 15 s: SIGKILL\n", d->name);
	kill(r->pid, SIGKILL);
	waitpid(r->pid, &st, 0);
done:;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "baton-bench: could not remove %s\n", r->dir);
}

/* Start d, warm it up, measure `seconds` of load, stop it: the load's
 * result and the server's CPU microseconds per connection. */
static int measure_run(struct design *d, int workers, int clients, int keepalive, double warm,
		       double seconds, struct load_result *res, double *cpu_us)
{
	struct running run;
	int port = free_port();
	if (start(d, port, workers, &run) < 0)
		return -1;
	struct load_cfg lc;
	memset(&lc, 0, sizeof(lc));
	lc.addr.sin_family = AF_INET;
	lc.addr.sin_port = htons((uint16_t)port);
	lc.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lc.clients = clients;
	lc.threads = clients >= 64 ? 2 : 1;
	lc.keepalive = keepalive;
	lc.timeout = 5;
	lc.seconds = warm;
	bench_load_run(&lc, res);
	double c0 = tree_cpu(run.pid);
	lc.seconds = seconds;
	bench_load_run(&lc, res);
	double c1 = tree_cpu(run.pid);
	stop(d, &run);
	*cpu_us = res->requests ? (c1 - c0) * 1e6 / (double)res->requests : 0;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: baton-bench conns [--designs LIST] [--workers N] [--clients C]\n"
		"                         [--seconds S] [--reps R] [--keepalive] [--csv FILE]\n"
		"\n"
		"Every server design under the same HTTP load on 127.0.0.1, in one run:\n"
		"baton-proc, baton-thread, fork, prefork, reuseport, inplace, and nginx\n"
		"when installed.  Designs alternate over R repetitions; the table shows\n"
		"medians (min-max).\n"
		"\n"
		"  --designs LIST  comma-separated subset (default: all available)\n"
		"  --workers N     workers of the multi-worker designs (default: CPUs)\n"
		"  --clients C     concurrent clients (default 32)\n"
		"  --seconds S     measured seconds per design and repetition (default 5)\n"
		"  --reps R        repetitions, 1..%d (default 3)\n"
		"  --keepalive     requests over kept-alive connections\n"
		"  --csv FILE      design,conns_per_s,p50_us,p99_us,p999_us,\n"
		"                  server_cpu_us_per_conn,errors\n",
		MAX_REPS);
}

int bench_conns(int argc, char **argv)
{
	const char *only = NULL, *csv = NULL;
	int workers = (int)sysconf(_SC_NPROCESSORS_ONLN), clients = 32, reps = 3, keepalive = 0;
	double seconds = 5;
	static const struct option opts[] = {
		{"designs", required_argument, NULL, 'd'}, {"workers", required_argument, NULL, 'w'},
		{"clients", required_argument, NULL, 'c'}, {"seconds", required_argument, NULL, 's'},
		{"reps", required_argument, NULL, 'r'},    {"keepalive", no_argument, NULL, 'k'},
		{"csv", required_argument, NULL, 'o'},     {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int o;
	optind = 0; /* glibc: start afresh */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (o) {
		case 'd': only = optarg; break;
		case 'w':
			if (bench_parse_int(optarg, &workers) < 0 || workers < 1 || workers > 256)
				bench_usage_error(usage, "--workers wants 1 to 256, not '%s'", optarg);
			break;
		case 'c':
			if (bench_parse_int(optarg, &clients) < 0 || clients < 1 || clients > 10000)
				bench_usage_error(usage, "--clients wants 1 to 10000, not '%s'", optarg);
			break;
		case 's':
			if (bench_parse_double(optarg, &seconds) < 0 || seconds < 0.2 || seconds > 600)
				bench_usage_error(usage, "--seconds wants 0.2 to 600, not '%s'", optarg);
			break;
		case 'r':
			if (bench_parse_int(optarg, &reps) < 0 || reps < 1 || reps > MAX_REPS)
				bench_usage_error(usage, "--reps wants 1 to %d, not '%s'", MAX_REPS, optarg);
			break;
		case 'k': keepalive = 1; break;
		case 'o': csv = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': bench_version(); return 0;
		default: bench_getopt_error(usage, o, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(usage, "unexpected argument '%s'", argv[optind]);

	struct design *list[NDESIGNS];
	size_t nd = 0;
	for (size_t i = 0; i < NDESIGNS; i++) {
		struct design *d = &designs[i];
		int wanted = !only;
		if (only) {
			char *copy = strdup(only), *save = NULL;
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
				wanted |= !strcmp(t, d->name);
			free(copy);
		}
		d->available = find_binary(d);
		if (wanted && d->available)
			list[nd++] = d;
		else if (wanted && only)
			bench_die("design %s: cannot find %s", d->name, d->prog);
	}
	if (only) { /* unknown names */
		char *copy = strdup(only), *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			int known = 0;
			for (size_t i = 0; i < NDESIGNS; i++)
				known |= !strcmp(t, designs[i].name);
			if (!known)
				bench_usage_error(usage, "unknown design '%s'", t);
		}
		free(copy);
	}
	if (nd == 0)
		bench_die("no design to run");
	FILE *csvf = NULL;
	if (csv && !(csvf = fopen(csv, "w")))
		bench_die("cannot write %s: %s", csv, strerror(errno));
	signal(SIGPIPE, SIG_IGN);

	double total = (double)nd * reps * (seconds + 1.5);
	printf("baton-bench conns: %zu designs x %d reps x %.1f s, %d clients, %s, %d workers "
	       "(about %.0f s)\n", nd, reps, seconds, clients,
	       keepalive ? "keep-alive" : "one connection per request", workers, total);
	fflush(stdout);
	double t0 = bench_now();
	for (int r = 0; r < reps; r++) {
		for (size_t k = 0; k < nd; k++) {
			struct design *d = list[r % 2 ? nd - 1 - k : k];
			fprintf(stderr, "  rep %d/%d  %-13s (%.0f s left)\n", r + 1, reps, d->name,
				total - (bench_now() - t0) > 0 ? total - (bench_now() - t0) : 0);
			struct load_result res;
			double cpu;
			if (measure_run(d, workers, clients, keepalive, seconds < 2 ? seconds / 2 : 1, seconds,
					&res, &cpu) < 0)
				bench_die("%s did not start", d->name);
			d->cps[r] = res.rps;
			d->cpu[r] = cpu;
			d->p50[r] = (double)res.p50_us;
			d->p99[r] = (double)res.p99_us;
			d->p999[r] = (double)res.p999_us;
			d->errors[r] = res.errors;
			for (int e = 0; e < BENCH_ERR_KINDS; e++)
				d->err_kind[e] += res.err[e];
		}
	}

	double base = 0;
	for (size_t k = 0; k < nd; k++)
		if (!strcmp(list[k]->name, "inplace"))
			base = bench_median(list[k]->cpu, reps);
	printf("\n%-13s %21s %8s %8s %8s %21s %9s %7s\n", "design", "conns/s (min-max)", "p50 us",
	       "p99 us", "p99.9 us", "CPU us/conn (min-max)", "x inplace", "errors");
	if (csvf)
		fprintf(csvf, "design,conns_per_s,p50_us,p99_us,p999_us,server_cpu_us_per_conn,errors\n");
	for (size_t k = 0; k < nd; k++) {
		struct design *d = list[k];
		double lo = d->cps[0], hi = d->cps[0], clo = d->cpu[0], chi = d->cpu[0];
		uint64_t errs = 0;
		for (int r = 0; r < reps; r++) {
			lo = d->cps[r] < lo ? d->cps[r] : lo;
			hi = d->cps[r] > hi ? d->cps[r] : hi;
			clo = d->cpu[r] < clo ? d->cpu[r] : clo;
			chi = d->cpu[r] > chi ? d->cpu[r] : chi;
			errs += d->errors[r];
		}
		double cps = bench_median(d->cps, reps), cpu = bench_median(d->cpu, reps);
		char a[48], b[48], ratio[16];
		snprintf(a, sizeof(a), "%.0f (%.0f-%.0f)", cps, lo, hi);
		snprintf(b, sizeof(b), "%.1f (%.1f-%.1f)", cpu, clo, chi);
		snprintf(ratio, sizeof(ratio), base > 0 ? "%.2f" : "-", cpu / base);
		printf("%-13s %21s %8.0f %8.0f %8.0f %21s %9s %7llu\n", d->name, a,
		       bench_median(d->p50, reps), bench_median(d->p99, reps), bench_median(d->p999, reps), b,
		       ratio, (unsigned long long)errs);
		if (csvf)
			fprintf(csvf, "%s,%.0f,%.0f,%.0f,%.0f,%.2f,%llu\n", d->name, cps,
				bench_median(d->p50, reps), bench_median(d->p99, reps),
				bench_median(d->p999, reps), cpu, (unsigned long long)errs);
		if (errs) {
			printf("%13s errors:", "");
			for (int e = 0; e < BENCH_ERR_KINDS; e++)
				if (d->err_kind[e])
					printf(" %s %llu", bench_load_error_name(e), (unsigned long long)d->err_kind[e]);
			printf("\n");
		}
	}
	printf("\nconns/s and latency (connect to the response's last byte) from our load\n"
	       "generator; CPU: the server's own user+sys time per connection; medians of\n"
	       "%d alternating reps.\n", reps);
	if (csvf) {
		fclose(csvf);
		printf("wrote %s\n", csv);
	}
	return 0;
}

/* --- baton-bench sweep -------------------------------------------------------- */

struct point {
	int batch;
	const char *flush;
	int clients;
	double cps, p99, cpu;
	uint64_t errors;
};

/* One measured run of design d with the current baton_extra. */
static int measure(struct design *d, int workers, int clients, double seconds, struct point *pt)
{
	struct load_result res;
	if (measure_run(d, workers, clients, 0, 0.5, seconds, &res, &pt->cpu) < 0)
		return -1;
	pt->cps = res.rps;
	pt->p99 = (double)res.p99_us;
	pt->errors = res.errors;
	return 0;
}

static void sweep_usage(FILE *f)
{
	fprintf(f,
		"usage: baton-bench sweep [--mode process|thread] [--batches LIST] [--flushes LIST]\n"
		"                         [--clients LIST] [--seconds S] [--workers N] [--out DIR]\n"
		"\n"
		"baton-httpd over batch size x flush policy x client concurrency, one new\n"
		"connection per request: writes DIR/sweep-MODE.csv and, with gnuplot,\n"
		"DIR/sweep-MODE.svg (conns/s, p99 latency and server CPU per connection\n"
		"against batch size), and prints the recommended settings.\n"
		"\n"
		"  --batches LIST  default 1,2,4,8,16,32,64,128,253\n"
		"  --flushes LIST  default size,adaptive,delay:200\n"
		"  --clients LIST  default 8,64,256\n"
		"  --seconds S     per point (default 2)\n"
		"  --out DIR       default build/results\n");
}

static int split_list(const char *s, const char **out, int max)
{
	static char buf[1024];
	snprintf(buf, sizeof(buf), "%s", s);
	int n = 0;
	char *save = NULL;
	for (char *t = strtok_r(buf, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save))
		out[n++] = t;
	return n;
}

int bench_sweep(int argc, char **argv)
{
	const char *mode = "process", *out = "build/results";
	const char *blist = "1,2,4,8,16,32,64,128,253", *flist = "size,adaptive,delay:200", *clist = "8,64,256";
	double seconds = 2;
	int workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
	static const struct option opts[] = {
		{"mode", required_argument, NULL, 'm'},    {"batches", required_argument, NULL, 'b'},
		{"flushes", required_argument, NULL, 'f'}, {"clients", required_argument, NULL, 'c'},
		{"seconds", required_argument, NULL, 's'}, {"workers", required_argument, NULL, 'w'},
		{"out", required_argument, NULL, 'o'},     {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int o;
	optind = 0; /* glibc: start afresh */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		switch (o) {
		case 'm':
			if (strcmp(optarg, "process") && strcmp(optarg, "thread"))
				bench_usage_error(sweep_usage, "--mode wants process or thread, not '%s'", optarg);
			mode = optarg;
			break;
		case 'b': blist = optarg; break;
		case 'f': flist = optarg; break;
		case 'c': clist = optarg; break;
		case 's':
			if (bench_parse_double(optarg, &seconds) < 0 || seconds < 0.2 || seconds > 600)
				bench_usage_error(sweep_usage, "--seconds wants 0.2 to 600, not '%s'", optarg);
			break;
		case 'w':
			if (bench_parse_int(optarg, &workers) < 0 || workers < 1 || workers > 256)
				bench_usage_error(sweep_usage, "--workers wants 1 to 256, not '%s'", optarg);
			break;
		case 'o': out = optarg; break;
		case 'h': sweep_usage(stdout); return 0;
		case 'V': bench_version(); return 0;
		default: bench_getopt_error(sweep_usage, o, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(sweep_usage, "unexpected argument '%s'", argv[optind]);

	static char bbuf[1024], fbuf[1024], cbuf[1024];
	const char *bs[32], *fs[8], *cs[8];
	int nb, nf, nc;
	snprintf(bbuf, sizeof(bbuf), "%s", blist);
	nb = split_list(bbuf, bs, 32);
	for (int i = 0; i < nb; i++) bs[i] = strdup(bs[i]);
	snprintf(fbuf, sizeof(fbuf), "%s", flist);
	nf = split_list(fbuf, fs, 8);
	for (int i = 0; i < nf; i++) fs[i] = strdup(fs[i]);
	snprintf(cbuf, sizeof(cbuf), "%s", clist);
	nc = split_list(cbuf, cs, 8);
	for (int i = 0; i < nc; i++) cs[i] = strdup(cs[i]);
	int batches[32], clients[8];
	for (int i = 0; i < nb; i++)
		if (bench_parse_int(bs[i], &batches[i]) < 0 || batches[i] < 1 || batches[i] > 253)
			bench_usage_error(sweep_usage, "--batches: '%s' is not 1..253", bs[i]);
	for (int i = 0; i < nc; i++)
		if (bench_parse_int(cs[i], &clients[i]) < 0 || clients[i] < 1 || clients[i] > 10000)
			bench_usage_error(sweep_usage, "--clients: '%s' is not 1..10000", cs[i]);
	for (int i = 0; i < nf; i++)
		if (strcmp(fs[i], "size") && strcmp(fs[i], "adaptive") && strncmp(fs[i], "adaptive:", 9) &&
		    strncmp(fs[i], "delay:", 6))
			bench_usage_error(sweep_usage, "--flushes: '%s' is not size, adaptive[:US] or delay:US", fs[i]);

	struct design *d = &designs[!strcmp(mode, "thread") ? 1 : 0];
	if (!find_binary(d))
		bench_die("cannot find %s", d->prog);
	mkdir(out, 0755);
	char csvp[512], svgp[512], gp[512];
	snprintf(csvp, sizeof(csvp), "%s/sweep-%s.csv", out, mode);
	snprintf(svgp, sizeof(svgp), "%s/sweep-%s.svg", out, mode);
	snprintf(gp, sizeof(gp), "%s/sweep-%s.gp", out, mode);
	FILE *csv = fopen(csvp, "w");
	if (!csv)
		bench_die("cannot write %s: %s", csvp, strerror(errno));
	fprintf(csv, "mode,clients,flush,batch,conns_per_s,p99_us,server_cpu_us_per_conn,errors\n");
	signal(SIGPIPE, SIG_IGN);

	int npts = nb * nf * nc;
	struct point *pts = calloc((size_t)npts, sizeof(*pts));
	printf("baton-bench sweep: baton-%s, %d batch sizes x %d flush policies x %d client counts, "
	       "%.1f s each (about %.0f s)\n", mode, nb, nf, nc, seconds, npts * (seconds + 1.2));
	fflush(stdout);
	int k = 0;
	double t0 = bench_now();
	char batch_s[16];
	for (int ci = 0; ci < nc; ci++)
		for (int fi = 0; fi < nf; fi++)
			for (int bi = 0; bi < nb; bi++, k++) {
				struct point *pt = &pts[k];
				pt->batch = batches[bi];
				pt->flush = fs[fi];
				pt->clients = clients[ci];
				snprintf(batch_s, sizeof(batch_s), "%d", pt->batch);
				baton_extra[0] = "--batch";
				baton_extra[1] = batch_s;
				baton_extra[2] = "--flush";
				baton_extra[3] = pt->flush;
				baton_extra[4] = NULL;
				fprintf(stderr, "  %3d/%d clients %d flush %s batch %d (%.0f s left)\n", k + 1, npts,
					pt->clients, pt->flush, pt->batch,
					(npts - k) * (seconds + 1.2) - 0 * (bench_now() - t0));
				if (measure(d, workers, pt->clients, seconds, pt) < 0)
					bench_die("baton-%s did not start", mode);
				fprintf(csv, "%s,%d,%s,%d,%.0f,%.0f,%.2f,%llu\n", mode, pt->clients, pt->flush,
					pt->batch, pt->cps, pt->p99, pt->cpu, (unsigned long long)pt->errors);
				fflush(csv);
			}
	baton_extra[0] = NULL;
	fclose(csv);

	/* The recommendation, at each client count: the lowest CPU per
	 * connection among points with no errors and a p99 within 10% of the
	 * best p99 at that count. */
	printf("\n%-8s %-14s %6s %10s %8s %12s\n", "clients", "flush", "batch", "conns/s", "p99 us", "CPU us/conn");
	for (int ci = 0; ci < nc; ci++) {
		double best_p99 = 0;
		for (int i = 0; i < npts; i++)
			if (pts[i].clients == clients[ci] && !pts[i].errors && (!best_p99 || pts[i].p99 < best_p99))
				best_p99 = pts[i].p99;
		int pick = -1;
		for (int i = 0; i < npts; i++)
			if (pts[i].clients == clients[ci] && !pts[i].errors && pts[i].p99 <= best_p99 * 1.1 &&
			    (pick < 0 || pts[i].cpu < pts[pick].cpu))
				pick = i;
		if (pick >= 0)
			printf("%-8d %-14s %6d %10.0f %8.0f %12.1f   <- recommended at %d clients\n",
			       clients[ci], pts[pick].flush, pts[pick].batch, pts[pick].cps, pts[pick].p99,
			       pts[pick].cpu, clients[ci]);
	}
	printf("wrote %s\n", csvp);

	/* The plot, if gnuplot is there. */
	FILE *g = fopen(gp, "w");
	if (g) {
		int mid = clients[nc / 2];
		fprintf(g,
			"set terminal svg size 1200,400 dynamic font 'sans,11'\n"
			"set output '%s'\n"
			"set datafile separator ','\n"
			"set logscale x 2\nset xlabel 'batch size'\nset key bottom right\n"
			"set multiplot layout 1,3 title 'baton-%s, %d clients, one connection per request'\n",
			svgp, mode, mid);
		const char *cols[3][2] = {{"5", "connections/s"}, {"6", "p99 latency (us)"},
					  {"7", "server CPU per connection (us)"}};
		for (int c = 0; c < 3; c++) {
			fprintf(g, "set title '%s'\nplot ", cols[c][1]);
			for (int fi = 0; fi < nf; fi++)
				fprintf(g, "%s'%s' using ($2==%d && strcol(3) eq '%s' ? $4 : NaN):%s with linespoints title '%s'",
					fi ? ", " : "", csvp, mid, fs[fi], cols[c][0], fs[fi]);
			fprintf(g, "\n");
		}
		fprintf(g, "unset multiplot\n");
		fclose(g);
		char cmd[1200];
		snprintf(cmd, sizeof(cmd), "gnuplot '%s' 2>/dev/null", gp);
		if (system(cmd) == 0)
			printf("wrote %s\n", svgp);
		else
			printf("gnuplot failed or is not installed: %s not drawn (apt-get install gnuplot-nox)\n", svgp);
	}
	free(pts);
	for (int i = 0; i < nb; i++)
		free((char *)bs[i]);
	for (int i = 0; i < nf; i++)
		free((char *)fs[i]);
	for (int i = 0; i < nc; i++)
		free((char *)cs[i]);
	return 0;
}
