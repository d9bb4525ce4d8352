/* SPDX-License-Identifier: MIT */
/*
 * baton-bench conns: every server design under the same load, in one run,
 * one table; and baton-bench sweep: one server built on the runtime over
 * batch size x flush policy x dispatch policy x client count (or rate).
 *
 * Each run starts the server on a free port (or the given address), warms
 * it up, measures --seconds of load with our load generator (bench_load.c)
 * in the protocol it speaks, and stops it.  Runs alternate over --reps
 * repetitions, and the tables show medians.
 *
 * Server CPU per connection: user+sys time of the server's processes (the
 * root, its live descendants, and children it has reaped), read from /proc
 * before and after the measured run, divided by the exchanges served.  It
 * stays honest when the load generator shares the cores.
 */
#include "bench.h"

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
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPS 15
#define MAX_SERVERS 8
#define MAX_ARGS 64

struct design {
	const char *name;
	const char *prog; /* binary name, found next to baton-bench or in libexec/baton */
	int stop_sig;
	int kind;         /* how to build its argv */
	char path[PATH_MAX];
	double cps[MAX_REPS], cpu[MAX_REPS], p50[MAX_REPS], p99[MAX_REPS], p999[MAX_REPS];
	uint64_t errors[MAX_REPS];
	uint64_t err_kind[BENCH_ERR_KINDS];
};

/* K_SERVER: a program built on the runtime (--server): it takes the
 * runtime's flags. */
enum { K_BATON_PROC, K_BATON_THREAD, K_LISTEN, K_LISTEN_WORKERS, K_NGINX, K_SERVER };

#define DESIGN(n, p, sig, k) {.name = (n), .prog = (p), .stop_sig = (sig), .kind = (k)}
static struct design builtin[] = {
	DESIGN("baton-proc", "baton-httpd", SIGTERM, K_BATON_PROC),
	DESIGN("baton-thread", "baton-httpd", SIGTERM, K_BATON_THREAD),
	DESIGN("fork", "bench-fork", SIGTERM, K_LISTEN),
	DESIGN("prefork", "bench-prefork", SIGTERM, K_LISTEN_WORKERS),
	DESIGN("reuseport", "bench-reuseport", SIGTERM, K_LISTEN_WORKERS),
	DESIGN("inplace", "bench-inplace", SIGTERM, K_LISTEN),
	DESIGN("nginx", "nginx", SIGQUIT, K_NGINX),
};
#define NBUILTIN (sizeof(builtin) / sizeof(builtin[0]))

/* What every run of one command shares. */
struct harness {
	struct bench_addr listen; /* where servers listen (port 0: a free one) */
	int workers;
	struct load_cfg load;
	const char *server_args[MAX_ARGS]; /* --server-arg, after the runtime's flags */
	int nserver_args;
	const char *tuning[16];            /* --batch N --flush P ... of this run */
};

static int find_binary(struct design *d)
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
static const char *cannot_serve(const struct design *d, const struct harness *h)
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
};

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
	char nw[16], conf[128], err[128];
	snprintf(nw, sizeof(nw), "%d", h->workers);
	const char *argv[MAX_ARGS + 32];
	int a = 0;
	argv[a++] = d->path;
	switch (d->kind) {
	case K_BATON_PROC:
	case K_BATON_THREAD:
	case K_SERVER:
		argv[a++] = "--listen";
		argv[a++] = r->listen;
		argv[a++] = "--workers";
		argv[a++] = nw;
		if (d->kind != K_SERVER) {
			argv[a++] = "--mode";
			argv[a++] = d->kind == K_BATON_PROC ? "process" : "thread";
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
		fprintf(stderr, "baton-bench: cannot run %s: %s\n", d->path, strerror(errno));
		_exit(127);
	}
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
	if (r->listen[0] == '/' || r->listen[0] == '.')
		unlink(r->listen); /* a server killed by a signal leaves its socket */
}

/* Start d, warm it up, measure `seconds` of load, stop it: the load's
 * result and the server's CPU microseconds per exchange. */
static int measure_run(struct design *d, struct harness *h, int clients, double rate, double warm,
		       double seconds, struct load_result *res, double *cpu_us)
{
	struct running run;
	if (start(d, h, &run) < 0)
		return -1;
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
	int rc = bench_load_run(&lc, res);
	double c0 = bench_tree_cpu(run.pid);
	lc.seconds = seconds;
	if (rc == 0)
		rc = bench_load_run(&lc, res);
	double c1 = bench_tree_cpu(run.pid);
	free(lc.req);
	stop(d, &run);
	if (rc < 0)
		bench_die("cannot run the load: %s", strerror(-rc));
	*cpu_us = res->requests && c0 >= 0 && c1 >= 0 ? (c1 - c0) * 1e6 / (double)res->requests : 0;
	return 0;
}

/* --server NAME=PATH for conns, PATH for sweep: a design of kind K_SERVER. */
static struct design servers[MAX_SERVERS];
static int nservers;

static struct design *add_server(const char *name, const char *path, void (*usage)(FILE *))
{
	if (nservers == MAX_SERVERS)
		bench_usage_error(usage, "at most %d --server", MAX_SERVERS);
	struct design *d = &servers[nservers++];
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

static void add_server_arg(struct harness *h, const char *arg, void (*usage)(FILE *))
{
	if (h->nserver_args == MAX_ARGS)
		bench_usage_error(usage, "at most %d --server-arg", MAX_ARGS);
	h->server_args[h->nserver_args++] = arg;
}

static void parse_listen(struct harness *h, const char *spec, void (*usage)(FILE *))
{
	char err[512];
	if (bench_addr_parse(spec, 0, &h->listen, err, sizeof(err)) < 0)
		bench_usage_error(usage, "--listen %s", err);
}

static void conns_usage(FILE *f)
{
	fprintf(f,
		"Usage: baton-bench conns [OPTION]...\n"
		"Every server design under the same load, in one run: baton-proc and\n"
		"baton-thread (baton-httpd), fork, prefork, reuseport, inplace, nginx when\n"
		"installed, and your own servers built on the runtime (--server).  Designs\n"
		"alternate over R repetitions; the table shows medians (min-max).\n"
		"\n"
		"  --designs LIST        comma-separated subset (default: all available)\n"
		"  --server NAME=PATH    also run the program PATH, built on the runtime, as\n"
		"                        design NAME; it gets --listen ADDR --workers N and\n"
		"                        the --server-arg arguments (repeatable, up to %d)\n"
		"  --server-arg ARG      an argument for every --server program (repeatable)\n"
		"  --listen ADDR         where the servers listen: 127.0.0.1 (default),\n"
		"                        [::1], HOST:PORT, or a unix socket path\n"
		"  --workers N           workers of the multi-worker designs (default: CPUs)\n"
		"  --clients C           concurrent clients (default 32)\n"
		"  --seconds S           measured seconds per design and repetition (default 5)\n"
		"  --reps R              repetitions, 1..%d (default 3)\n"
		"  --csv FILE            design,conns_per_s,p50_us,p99_us,p999_us,\n"
		"                        server_cpu_us_per_conn,errors\n"
		"The protocol (the built-in designs speak http only):\n" BENCH_PROTO_HELP
		"  -h, --help            this help;  -V, --version  the version\n",
		MAX_SERVERS, MAX_REPS);
}

static void harness_init(struct harness *h)
{
	memset(h, 0, sizeof(*h));
	bench_load_cfg_init(&h->load);
	h->workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
	char err[256];
	bench_addr_parse("127.0.0.1", 0, &h->listen, err, sizeof(err));
}

static int in_list(const char *list, const char *name)
{
	char *copy = strdup(list), *save = NULL;
	int found = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		found |= !strcmp(t, name);
	free(copy);
	return found;
}

int bench_conns(int argc, char **argv)
{
	const char *only = NULL, *csv = NULL;
	struct harness h;
	harness_init(&h);
	int clients = 32, reps = 3;
	double seconds = 5;
	static const struct option opts[] = {
		{"designs", required_argument, NULL, 'd'}, {"workers", required_argument, NULL, 'w'},
		{"clients", required_argument, NULL, 'c'}, {"seconds", required_argument, NULL, 's'},
		{"reps", required_argument, NULL, 'r'},    {"csv", required_argument, NULL, 'o'},
		{"server", required_argument, NULL, 'S'},  {"server-arg", required_argument, NULL, 'A'},
		{"listen", required_argument, NULL, 'l'},  BENCH_PROTO_OPTIONS,
		{"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int o;
	optind = 0; /* glibc: start afresh */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		if (bench_proto_option(&h.load, o, optarg, conns_usage))
			continue;
		switch (o) {
		case 'd': only = optarg; break;
		case 'w':
			if (bench_parse_int(optarg, &h.workers) < 0 || h.workers < 1 || h.workers > 256)
				bench_usage_error(conns_usage, "--workers wants 1 to 256, not '%s'", optarg);
			break;
		case 'c':
			if (bench_parse_int(optarg, &clients) < 0 || clients < 1 || clients > 10000)
				bench_usage_error(conns_usage, "--clients wants 1 to 10000, not '%s'", optarg);
			break;
		case 's':
			if (bench_parse_double(optarg, &seconds) < 0 || seconds < 0.2 || seconds > 600)
				bench_usage_error(conns_usage, "--seconds wants 0.2 to 600, not '%s'", optarg);
			break;
		case 'r':
			if (bench_parse_int(optarg, &reps) < 0 || reps < 1 || reps > MAX_REPS)
				bench_usage_error(conns_usage, "--reps wants 1 to %d, not '%s'", MAX_REPS, optarg);
			break;
		case 'o': csv = optarg; break;
		case 'S': {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg || !eq[1])
				bench_usage_error(conns_usage, "--server wants NAME=PATH, not '%s'", optarg);
			*eq = 0;
			for (size_t i = 0; i < NBUILTIN; i++)
				if (!strcmp(builtin[i].name, optarg))
					bench_usage_error(conns_usage, "--server %s: a built-in design has that name",
							  optarg);
			for (int i = 0; i < nservers; i++)
				if (!strcmp(servers[i].name, optarg))
					bench_usage_error(conns_usage, "--server %s: given twice", optarg);
			add_server(optarg, eq + 1, conns_usage);
			break;
		}
		case 'A': add_server_arg(&h, optarg, conns_usage); break;
		case 'l': parse_listen(&h, optarg, conns_usage); break;
		case 'h': conns_usage(stdout); return 0;
		case 'V': bench_version(); return 0;
		default: bench_getopt_error(conns_usage, o, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(conns_usage, "unexpected argument '%s'", argv[optind]);
	bench_proto_check(&h.load, conns_usage);
	if (h.nserver_args && !nservers)
		bench_usage_error(conns_usage, "--server-arg without --server");

	struct design *list[NBUILTIN + MAX_SERVERS];
	size_t nd = 0;
	if (only) { /* unknown names first */
		char *copy = strdup(only), *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			int known = 0;
			for (size_t i = 0; i < NBUILTIN; i++)
				known |= !strcmp(t, builtin[i].name);
			for (int i = 0; i < nservers; i++)
				known |= !strcmp(t, servers[i].name);
			if (!known)
				bench_usage_error(conns_usage, "unknown design '%s'", t);
		}
		free(copy);
	}
	for (size_t i = 0; i < NBUILTIN + (size_t)nservers; i++) {
		struct design *d = i < NBUILTIN ? &builtin[i] : &servers[i - NBUILTIN];
		int named = only && in_list(only, d->name);
		if (only && !named)
			continue;
		const char *why = cannot_serve(d, &h);
		if (why && named)
			bench_usage_error(conns_usage, "design %s %s", d->name, why);
		if (why)
			continue;
		if (!find_binary(d)) {
			if (named)
				bench_die("design %s: cannot find %s", d->name, d->prog);
			continue;
		}
		list[nd++] = d;
	}
	if (nd == 0)
		bench_usage_error(conns_usage, h.load.proto != BENCH_PROTO_HTTP
				  ? "no design speaks this protocol: give --server NAME=PATH"
				  : "no design to run");
	FILE *csvf = NULL;
	if (csv && !(csvf = fopen(csv, "w")))
		bench_die("cannot write %s: %s", csv, strerror(errno));
	signal(SIGPIPE, SIG_IGN);

	char desc[1400];
	h.load.clients = clients;
	bench_load_describe(&h.load, desc, sizeof(desc));
	double total = (double)nd * reps * (seconds + 1.5);
	printf("baton-bench conns: %zu designs x %d reps x %.1f s, %d clients, %s, %d workers, on %s "
	       "(about %.0f s)\n", nd, reps, seconds, clients, desc, h.workers, h.listen.text, total);
	fflush(stdout);
	double t0 = bench_now();
	for (int r = 0; r < reps; r++) {
		for (size_t k = 0; k < nd; k++) {
			struct design *d = list[r % 2 ? nd - 1 - k : k];
			double left = total - (bench_now() - t0);
			fprintf(stderr, "  rep %d/%d  %-13s (%.0f s left)\n", r + 1, reps, d->name,
				left > 0 ? left : 0);
			struct load_result res;
			double cpu;
			if (measure_run(d, &h, clients, h.load.rate, seconds < 2 ? seconds / 2 : 1, seconds, &res,
					&cpu) < 0)
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
	printf("\nconns/s and latency (%s to the response's last byte) from our load\n"
	       "generator; CPU: the server's own user+sys time per exchange; medians of\n"
	       "%d alternating reps.\n",
	       h.load.rate > 0 ? "intended send time" : h.load.keepalive ? "request" : "connect", reps);
	if (csvf) {
		fclose(csvf);
		printf("wrote %s\n", csv);
	}
	bench_load_cfg_free(&h.load);
	return 0;
}

/* --- baton-bench sweep -------------------------------------------------------- */

#define MAX_BATCHES 32
#define MAX_FLUSHES 8
#define MAX_DISPATCHES 4
#define MAX_LOADS 8

struct point {
	int batch;            /* 0: the server's defaults (no tuning flags) */
	const char *flush, *dispatch;
	int load;             /* index of the client count or rate */
	double cps[MAX_REPS], p50[MAX_REPS], p99[MAX_REPS], p999[MAX_REPS], cpu[MAX_REPS];
	uint64_t errors[MAX_REPS];
	double m_cps, m_p50, m_p99, m_p999, m_cpu; /* medians */
	uint64_t m_errors;    /* total */
};

static void sweep_usage(FILE *f)
{
	fprintf(f,
		"Usage: baton-bench sweep [OPTION]...\n"
		"A server built on the runtime (baton-httpd unless --server) over batch size x\n"
		"flush policy x dispatch policy x client count (or rate): writes\n"
		"DIR/sweep-NAME.csv and, with gnuplot, DIR/sweep-NAME.svg, and prints the\n"
		"best setting at each client count or rate by --objective, the flags to pass,\n"
		"and how far the server's defaults (also measured) are from it.\n"
		"\n"
		"  --server PATH       the program to tune; it gets --listen ADDR --workers N\n"
		"                      --mode M [--threads T] --batch B --flush F [--dispatch D]\n"
		"                      and then the --server-arg arguments\n"
		"  --server-arg ARG    an argument for the server (repeatable)\n"
		"  --mode M            process or thread (default process)\n"
		"  --threads T         threads per worker process (hybrid; with --mode process)\n"
		"  --workers N         default: CPUs\n"
		"  --listen ADDR       127.0.0.1 (default), [::1], HOST:PORT or a unix path\n"
		"  --batches LIST      default 1,2,4,8,16,32,64,128,253\n"
		"  --flushes LIST      default size,adaptive,delay:200\n"
		"  --dispatches LIST   rr, least, hash (default: the server's own)\n"
		"  --clients LIST      closed loop at these client counts (default 8,64,256);\n"
		"                      with --rates, the most of them is the open loop's clients\n"
		"  --rates LIST        open loop at these rates instead (exchanges/s)\n"
		"  --objective O       cpu (default): the least CPU per exchange among the\n"
		"                      points whose p99 is at most 1.5x the best p99 there;\n"
		"                      p99: the lowest p99; throughput: the most exchanges/s\n"
		"  --seconds S         per point (default 2)\n"
		"  --reps R            repetitions, alternating the order (default 1): medians\n"
		"  --out DIR           default build/results\n"
		"The protocol:\n" BENCH_PROTO_HELP
		"  -h, --help          this help;  -V, --version  the version\n");
}

/* Split s at commas into out (strdup'd); the count, or -1 if over max. */
static int split_list(const char *s, char **out, int max)
{
	char *copy = strdup(s), *save = NULL;
	int n = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (n == max) {
			free(copy);
			return -1;
		}
		out[n++] = strdup(t);
	}
	free(copy);
	return n;
}

static const char *const objectives[] = {"cpu", "p99", "throughput"};

/* Is a better than b by the objective? */
static int better(int objective, const struct point *a, const struct point *b)
{
	switch (objective) {
	case 1: return a->m_p99 < b->m_p99 || (a->m_p99 == b->m_p99 && a->m_cpu < b->m_cpu);
	case 2: return a->m_cps > b->m_cps;
	default: return a->m_cpu < b->m_cpu;
	}
}

static void point_flags(const struct point *p, char *out, size_t cap)
{
	if (!p->batch) {
		snprintf(out, cap, "(no tuning flags: the defaults)");
		return;
	}
	snprintf(out, cap, "--batch %d --flush %s%s%s", p->batch, p->flush, p->dispatch ? " --dispatch " : "",
		 p->dispatch ? p->dispatch : "");
}

static double pct(double best, double def)
{
	return def > 0 ? 100.0 * (best - def) / def : 0;
}

static void write_plot(const char *gp, const char *svgp, const char *csvp, const char *title,
		       char **fs, int nf, char **ds, int nd, const int *batches, int nb, const char *load_col,
		       const double *loads, int nl, int open_loop, const struct point *pts, int npts)
{
	FILE *g = fopen(gp, "w");
	if (!g)
		return;
	fprintf(g,
		"set terminal svg size 1350,%d dynamic font 'sans,11'\n"
		"set output '%s'\n"
		"set datafile separator ','\n"
		"set logscale x 2\nset xlabel 'batch size'\nset grid\n"
		"set key below font ',9'\n"
		"set xtics (",
		60 + 340 * nl, svgp);
	for (int i = 0; i < nb; i++)
		fprintf(g, "%s\"%d\" %d", i ? ", " : "", batches[i], batches[i]);
	fprintf(g, ")\nset xrange [%g:%g]\n", batches[0] / 1.3, batches[nb - 1] * 1.3);
	fprintf(g, "set multiplot layout %d,3 title \"%s\"\n", nl, title);
	/* CSV columns: 3 clients, 4 rate, 5 dispatch, 6 flush, 7 batch,
	 * 8 conns/s, 10 p99, 12 CPU. */
	const char *cols[3][3] = {{"8", "conns/s", ""}, {"10", "p99 latency (us, log)", ""},
				  {"12", "server CPU per exchange (us)", ""}};
	for (int l = 0; l < nl; l++) {
		for (int c = 0; c < 3; c++) {
			char at[64];
			if (open_loop)
				snprintf(at, sizeof(at), "%.0f/s", loads[l]);
			else
				snprintf(at, sizeof(at), "%.0f clients", loads[l]);
			fprintf(g, "set title '%s, %s'\n", cols[c][1], at);
			if (c == 1)
				fprintf(g, "set logscale y\nset yrange [*:*]\n");
			else
				fprintf(g, "unset logscale y\nset yrange [0:*]\n");
			/* The defaults, a dashed line across. */
			double def = -1;
			for (int i = 0; i < npts; i++)
				if (!pts[i].batch && pts[i].load == l)
					def = c == 0 ? pts[i].m_cps : c == 1 ? pts[i].m_p99 : pts[i].m_cpu;
			fprintf(g, "plot ");
			int first = 1;
			for (int di = 0; di < (nd ? nd : 1); di++)
				for (int fi = 0; fi < nf; fi++) {
					char name[96];
					snprintf(name, sizeof(name), "%s%s%s", fs[fi], nd ? " " : "", nd ? ds[di] : "");
					fprintf(g,
						"%s'%s' using ($%s==%g && strcol(5) eq '%s' && strcol(6) eq '%s' ? $7 : NaN):%s "
						"with linespoints title '%s'",
						first ? "" : ", ", csvp, load_col, loads[l], nd ? ds[di] : "-", fs[fi],
						cols[c][0], name);
					first = 0;
				}
			if (def > 0)
				fprintf(g, ", %g with lines dashtype 2 lc rgb 'black' title 'defaults'", def);
			fprintf(g, "\n");
		}
	}
	fprintf(g, "unset multiplot\n");
	fclose(g);
	char cmd[1400];
	snprintf(cmd, sizeof(cmd), "gnuplot '%s' 2>'%s.err'", gp, gp);
	if (system(cmd) == 0) {
		snprintf(cmd, sizeof(cmd), "%s.err", gp);
		unlink(cmd);
		printf("wrote %s\n", svgp);
	}
	else
		printf("gnuplot failed or is not installed: %s not drawn (apt-get install gnuplot-nox; "
		       "%s.err)\n", svgp, gp);
}

int bench_sweep(int argc, char **argv)
{
	struct harness h;
	harness_init(&h);
	const char *mode = "process", *out = "build/results", *server = NULL, *threads = NULL;
	const char *blist = "1,2,4,8,16,32,64,128,253", *flist = "size,adaptive,delay:200", *clist = "8,64,256";
	const char *dlist = NULL, *rlist = NULL;
	int objective = 0, reps = 1;
	double seconds = 2;
	static const struct option opts[] = {
		{"mode", required_argument, NULL, 'm'},     {"batches", required_argument, NULL, 'b'},
		{"flushes", required_argument, NULL, 'f'},  {"clients", required_argument, NULL, 'c'},
		{"seconds", required_argument, NULL, 's'},  {"workers", required_argument, NULL, 'w'},
		{"out", required_argument, NULL, 'o'},      {"server", required_argument, NULL, 'S'},
		{"server-arg", required_argument, NULL, 'A'}, {"threads", required_argument, NULL, 't'},
		{"dispatches", required_argument, NULL, 'D'}, {"rates", required_argument, NULL, 'R'},
		{"objective", required_argument, NULL, 'O'}, {"reps", required_argument, NULL, 'r'},
		{"listen", required_argument, NULL, 'l'},   BENCH_PROTO_OPTIONS,
		{"help", no_argument, NULL, 'h'},           {"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int o, n;
	optind = 0; /* glibc: start afresh */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "+:hV", opts, NULL)) != -1) {
		if (o == BENCH_OPT_PROTO + 7) { /* --rate R: one rate */
			rlist = optarg;
			continue;
		}
		if (bench_proto_option(&h.load, o, optarg, sweep_usage))
			continue;
		switch (o) {
		case 'm':
			if (strcmp(optarg, "process") && strcmp(optarg, "thread"))
				bench_usage_error(sweep_usage, "--mode wants process or thread, not '%s'", optarg);
			mode = optarg;
			break;
		case 'b': blist = optarg; break;
		case 'f': flist = optarg; break;
		case 'c': clist = optarg; break;
		case 'D': dlist = optarg; break;
		case 'R': rlist = optarg; break;
		case 's':
			if (bench_parse_double(optarg, &seconds) < 0 || seconds < 0.2 || seconds > 600)
				bench_usage_error(sweep_usage, "--seconds wants 0.2 to 600, not '%s'", optarg);
			break;
		case 'w':
			if (bench_parse_int(optarg, &h.workers) < 0 || h.workers < 1 || h.workers > 256)
				bench_usage_error(sweep_usage, "--workers wants 1 to 256, not '%s'", optarg);
			break;
		case 't':
			if (bench_parse_int(optarg, &n) < 0 || n < 1 || n > 256)
				bench_usage_error(sweep_usage, "--threads wants 1 to 256, not '%s'", optarg);
			threads = optarg;
			break;
		case 'r':
			if (bench_parse_int(optarg, &reps) < 0 || reps < 1 || reps > MAX_REPS)
				bench_usage_error(sweep_usage, "--reps wants 1 to %d, not '%s'", MAX_REPS, optarg);
			break;
		case 'O':
			objective = -1;
			for (int i = 0; i < 3; i++)
				if (!strcmp(optarg, objectives[i]))
					objective = i;
			if (objective < 0)
				bench_usage_error(sweep_usage, "--objective wants cpu, p99 or throughput, not '%s'",
						  optarg);
			break;
		case 'S': server = optarg; break;
		case 'A': add_server_arg(&h, optarg, sweep_usage); break;
		case 'l': parse_listen(&h, optarg, sweep_usage); break;
		case 'o': out = optarg; break;
		case 'h': sweep_usage(stdout); return 0;
		case 'V': bench_version(); return 0;
		default: bench_getopt_error(sweep_usage, o, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(sweep_usage, "unexpected argument '%s'", argv[optind]);
	bench_proto_check(&h.load, sweep_usage);
	if (h.nserver_args && !server)
		bench_usage_error(sweep_usage, "--server-arg without --server");
	if (threads && strcmp(mode, "process"))
		bench_usage_error(sweep_usage, "--threads is for --mode process (hybrid)");
	if (!server && h.load.proto != BENCH_PROTO_HTTP)
		bench_usage_error(sweep_usage, "baton-httpd speaks http: give --server PATH for this protocol");

	char *bs[MAX_BATCHES], *fs[MAX_FLUSHES], *cs[MAX_LOADS], *ds[MAX_DISPATCHES], *rs[MAX_LOADS];
	int nb = split_list(blist, bs, MAX_BATCHES), nf = split_list(flist, fs, MAX_FLUSHES);
	int nc = split_list(clist, cs, MAX_LOADS);
	int ndp = dlist ? split_list(dlist, ds, MAX_DISPATCHES) : 0;
	int nr = rlist ? split_list(rlist, rs, MAX_LOADS) : 0;
	if (nb < 1)
		bench_usage_error(sweep_usage, "--batches wants 1 to %d sizes", MAX_BATCHES);
	if (nf < 1)
		bench_usage_error(sweep_usage, "--flushes wants 1 to %d policies", MAX_FLUSHES);
	if (nc < 1)
		bench_usage_error(sweep_usage, "--clients wants 1 to %d counts", MAX_LOADS);
	if (dlist && ndp < 1)
		bench_usage_error(sweep_usage, "--dispatches wants 1 to %d policies", MAX_DISPATCHES);
	if (rlist && nr < 1)
		bench_usage_error(sweep_usage, "--rates wants 1 to %d rates", MAX_LOADS);
	int batches[MAX_BATCHES], clients[MAX_LOADS];
	double rates[MAX_LOADS];
	for (int i = 0; i < nb; i++) {
		if (bench_parse_int(bs[i], &batches[i]) < 0 || batches[i] < 1 || batches[i] > 253)
			bench_usage_error(sweep_usage, "--batches: '%s' is not 1..253", bs[i]);
		if (i && batches[i] <= batches[i - 1])
			bench_usage_error(sweep_usage, "--batches: give the sizes in increasing order");
	}
	for (int i = 0; i < nc; i++)
		if (bench_parse_int(cs[i], &clients[i]) < 0 || clients[i] < 1 || clients[i] > 10000)
			bench_usage_error(sweep_usage, "--clients: '%s' is not 1..10000", cs[i]);
	for (int i = 0; i < nr; i++)
		if (bench_parse_double(rs[i], &rates[i]) < 0 || rates[i] < 1 || rates[i] > 10000000)
			bench_usage_error(sweep_usage, "--rates: '%s' is not 1..10000000", rs[i]);
	for (int i = 0; i < nf; i++)
		if (strcmp(fs[i], "size") && strcmp(fs[i], "adaptive") && strncmp(fs[i], "adaptive:", 9) &&
		    strncmp(fs[i], "delay:", 6))
			bench_usage_error(sweep_usage, "--flushes: '%s' is not size, adaptive[:US] or delay:US", fs[i]);
	for (int i = 0; i < ndp; i++)
		if (strcmp(ds[i], "rr") && strcmp(ds[i], "least") && strcmp(ds[i], "hash"))
			bench_usage_error(sweep_usage, "--dispatches: '%s' is not rr, least or hash", ds[i]);

	struct design *d;
	char name[128];
	if (server) {
		d = add_server(server, server, sweep_usage);
		const char *base = strrchr(server, '/');
		snprintf(name, sizeof(name), "%s-%s", base ? base + 1 : server, mode);
	} else {
		d = &builtin[!strcmp(mode, "thread") ? 1 : 0];
		if (!find_binary(d))
			bench_die("cannot find %s", d->prog);
		snprintf(name, sizeof(name), "%s", mode); /* sweep-process.csv, as always */
	}
	int open_loop = nr > 0;
	int nl = open_loop ? nr : nc;
	int max_clients = 0;
	for (int i = 0; i < nc; i++)
		max_clients = clients[i] > max_clients ? clients[i] : max_clients;
	double loads[MAX_LOADS];
	for (int i = 0; i < nl; i++)
		loads[i] = open_loop ? rates[i] : clients[i];

	mkdir(out, 0755);
	char csvp[600], svgp[600], gp[600];
	snprintf(csvp, sizeof(csvp), "%s/sweep-%s.csv", out, name);
	snprintf(svgp, sizeof(svgp), "%s/sweep-%s.svg", out, name);
	snprintf(gp, sizeof(gp), "%s/sweep-%s.gp", out, name);
	FILE *csv = fopen(csvp, "w");
	if (!csv)
		bench_die("cannot write %s: %s", csvp, strerror(errno));
	signal(SIGPIPE, SIG_IGN);

	/* The points: every setting at every load, and the defaults at each. */
	int per_load = nb * nf * (ndp ? ndp : 1) + 1;
	int npts = per_load * nl;
	struct point *pts = calloc((size_t)npts, sizeof(*pts));
	if (!pts)
		bench_die("out of memory");
	int k = 0;
	for (int l = 0; l < nl; l++) {
		pts[k].load = l; /* the defaults first */
		pts[k].flush = "default";
		pts[k++].dispatch = NULL;
		for (int di = 0; di < (ndp ? ndp : 1); di++)
			for (int fi = 0; fi < nf; fi++)
				for (int bi = 0; bi < nb; bi++, k++) {
					pts[k].load = l;
					pts[k].batch = batches[bi];
					pts[k].flush = fs[fi];
					pts[k].dispatch = ndp ? ds[di] : NULL;
				}
	}
	char desc[1400];
	h.load.clients = open_loop ? max_clients : clients[0];
	bench_load_describe(&h.load, desc, sizeof(desc));
	char *word = strstr(desc, "closed loop");
	if (open_loop && word) /* the rate is per point */
		snprintf(word, sizeof(desc) - (size_t)(word - desc), "open loop at each rate, %d clients at most",
			 max_clients);
	double eta = (double)npts * reps * (seconds + 1.2);
	printf("baton-bench sweep: %s (%s), %d batch sizes x %d flush policies x %d dispatch x %d %s + the "
	       "defaults, %d reps of %.1f s, %d workers; %s (about %.0f s)\n",
	       server ? server : "baton-httpd", mode, nb, nf, ndp ? ndp : 1, nl,
	       open_loop ? "rates" : "client counts", reps, seconds, h.workers, desc, eta);
	fflush(stdout);
	double t0 = bench_now();
	char batch_s[16], thread_s[16];
	int done = 0;
	for (int r = 0; r < reps; r++)
		for (int j = 0; j < npts; j++, done++) {
			struct point *pt = &pts[r % 2 ? npts - 1 - j : j];
			int a = 0;
			if (server) { /* baton-httpd's designs put --mode themselves */
				h.tuning[a++] = "--mode";
				h.tuning[a++] = mode;
			}
			if (threads) {
				snprintf(thread_s, sizeof(thread_s), "%s", threads);
				h.tuning[a++] = "--threads";
				h.tuning[a++] = thread_s;
			}
			if (pt->batch) {
				snprintf(batch_s, sizeof(batch_s), "%d", pt->batch);
				h.tuning[a++] = "--batch";
				h.tuning[a++] = batch_s;
				h.tuning[a++] = "--flush";
				h.tuning[a++] = pt->flush;
				if (pt->dispatch) {
					h.tuning[a++] = "--dispatch";
					h.tuning[a++] = pt->dispatch;
				}
			}
			h.tuning[a] = NULL;
			double left = eta - (bench_now() - t0);
			fprintf(stderr, "  %4d/%d %s %.0f%s, %s (%.0f s left)\n", done + 1, npts * reps,
				open_loop ? "rate" : "clients", loads[pt->load], open_loop ? "/s" : "",
				pt->batch ? "" : "defaults", left > 0 ? left : 0);
			if (pt->batch)
				fprintf(stderr, "         --batch %d --flush %s%s%s\n", pt->batch, pt->flush,
					pt->dispatch ? " --dispatch " : "", pt->dispatch ? pt->dispatch : "");
			struct load_result res;
			double cpu;
			int cl = open_loop ? max_clients : clients[pt->load];
			if (measure_run(d, &h, cl, open_loop ? rates[pt->load] : 0, 0.5, seconds, &res, &cpu) < 0)
				bench_die("%s did not start", d->name);
			pt->cps[r] = res.rps;
			pt->p50[r] = (double)res.p50_us;
			pt->p99[r] = (double)res.p99_us;
			pt->p999[r] = (double)res.p999_us;
			pt->cpu[r] = cpu;
			/* Open loop: an exchange that never went out failed the
			 * schedule as surely as one that errored. */
			pt->errors[r] = res.errors + res.unsent;
		}
	h.tuning[0] = NULL;

	fprintf(csv, "server,mode,clients,rate,dispatch,flush,batch,conns_per_s,p50_us,p99_us,p999_us,"
		     "server_cpu_us_per_conn,errors\n");
	for (int i = 0; i < npts; i++) {
		struct point *p = &pts[i];
		p->m_cps = bench_median(p->cps, reps);
		p->m_p50 = bench_median(p->p50, reps);
		p->m_p99 = bench_median(p->p99, reps);
		p->m_p999 = bench_median(p->p999, reps);
		p->m_cpu = bench_median(p->cpu, reps);
		p->m_errors = 0;
		for (int r = 0; r < reps; r++)
			p->m_errors += p->errors[r];
		char b[16];
		snprintf(b, sizeof(b), "%d", p->batch);
		fprintf(csv, "%s,%s,%d,%.0f,%s,%s,%s,%.0f,%.0f,%.0f,%.0f,%.2f,%llu\n",
			server ? server : "baton-httpd", mode, open_loop ? max_clients : clients[p->load],
			open_loop ? rates[p->load] : 0.0, p->batch ? (p->dispatch ? p->dispatch : "-") : "default",
			p->batch ? p->flush : "default", p->batch ? b : "default", p->m_cps, p->m_p50, p->m_p99,
			p->m_p999, p->m_cpu, (unsigned long long)p->m_errors);
	}
	fclose(csv);

	/* The best setting at each load, by the objective, among points with
	 * no errors (open loop: and the whole schedule sent). */
	printf("\nbest by %s%s (medians of %d rep%s; points with errors are left out):\n",
	       objectives[objective], objective == 0 ? " with p99 at most 1.5x the best" : "", reps,
	       reps > 1 ? "s" : "");
	printf("%-14s %-28s %10s %8s %12s\n", open_loop ? "rate" : "clients", "setting", "conns/s", "p99 us",
	       "CPU us/conn");
	for (int l = 0; l < nl; l++) {
		const struct point *best = NULL, *def = NULL;
		double best_p99 = 0;
		for (int i = 0; i < npts; i++)
			if (pts[i].load == l && !pts[i].m_errors && (!best_p99 || pts[i].m_p99 < best_p99))
				best_p99 = pts[i].m_p99;
		for (int i = 0; i < npts; i++) {
			const struct point *p = &pts[i];
			if (p->load != l)
				continue;
			if (!p->batch)
				def = p;
			if (p->m_errors) /* the defaults compete too */
				continue;
			/* cpu: a setting that saves CPU by making clients wait
			 * (a full batch held for its backstop) is no answer. */
			if (objective == 0 && p->m_p99 > best_p99 * 1.5)
				continue;
			if (!best || better(objective, p, best))
				best = p;
		}
		char at[32], flags[160];
		snprintf(at, sizeof(at), open_loop ? "%.0f/s" : "%.0f", loads[l]);
		if (!best) {
			printf("%-14s no setting ran without errors\n", at);
			continue;
		}
		char setting[64];
		if (best->batch)
			snprintf(setting, sizeof(setting), "batch %d, %s%s%s", best->batch, best->flush,
				 best->dispatch ? ", " : "", best->dispatch ? best->dispatch : "");
		else
			snprintf(setting, sizeof(setting), "the defaults");
		printf("%-14s %-28s %10.0f %8.0f %12.1f   <- best at %s%s\n", at, setting, best->m_cps,
		       best->m_p99, best->m_cpu, at, open_loop ? "" : " clients");
		if (best == def) {
			printf("%-14s flags: none (the defaults are the best measured here)\n", "");
			continue;
		}
		if (def)
			printf("%-14s %-28s %10.0f %8.0f %12.1f%s\n", "", "the defaults", def->m_cps, def->m_p99,
			       def->m_cpu, def->m_errors ? "   (with errors)" : "");
		point_flags(best, flags, sizeof(flags));
		printf("%-14s flags: %s\n", "", flags);
		if (def && !def->m_errors)
			printf("%-14s vs the defaults: CPU %+.0f%%, p99 %+.0f%%, conns/s %+.0f%%\n", "",
			       pct(best->m_cpu, def->m_cpu), pct(best->m_p99, def->m_p99),
			       pct(best->m_cps, def->m_cps));
	}
	printf("wrote %s\n", csvp);

	/* The plot: one row of panels per client count or rate. */
	struct utsname u;
	uname(&u);
	char date[32];
	time_t now = time(NULL);
	strftime(date, sizeof(date), "%Y-%m-%d", localtime(&now));
	char title[512];
	const char *base = server ? strrchr(server, '/') : NULL;
	snprintf(title, sizeof(title), "%s (%s), %s: %s, %ld cores, Linux %s, %d workers, %s", 
		 server ? (base ? base + 1 : server) : "baton-httpd", mode, date,
		 h.load.proto == BENCH_PROTO_HTTP ? "http" : h.load.proto == BENCH_PROTO_ECHO ? "echo" : "raw",
		 sysconf(_SC_NPROCESSORS_ONLN), u.release, h.workers,
		 open_loop ? "open loop" : h.load.keepalive ? "keep-alive" : "one exchange per connection");
	if (open_loop) {
		size_t tl = strlen(title);
		snprintf(title + tl, sizeof(title) - tl, ", %d clients", max_clients);
	}
	write_plot(gp, svgp, csvp, title, fs, nf, ds, ndp, batches, nb, open_loop ? "4" : "3", loads, nl,
		   open_loop, pts, npts);
	free(pts);
	for (int i = 0; i < nb; i++)
		free(bs[i]);
	for (int i = 0; i < nf; i++)
		free(fs[i]);
	for (int i = 0; i < nc; i++)
		free(cs[i]);
	for (int i = 0; i < ndp; i++)
		free(ds[i]);
	for (int i = 0; i < nr; i++)
		free(rs[i]);
	bench_load_cfg_free(&h.load);
	return 0;
}
