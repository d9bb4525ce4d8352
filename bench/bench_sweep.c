/* SPDX-License-Identifier: MIT */
/*
 * baton-bench sweep: one server built on the runtime over batch size x
 * flush policy x dispatch policy x client count (or rate), the defaults
 * measured at every load, the best setting per load by an objective, the
 * flags to pass, and a plot.  The servers are run by bench_servers.c.
 */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCHES 32
#define MAX_FLUSHES 8
#define MAX_DISPATCHES 4
#define MAX_LOADS 8

struct point {
	int batch;            /* 0: the server's defaults (no tuning flags) */
	const char *flush, *dispatch;
	int load;             /* index of the client count or rate */
	double cps[BENCH_MAX_REPS], p50[BENCH_MAX_REPS], p99[BENCH_MAX_REPS], p999[BENCH_MAX_REPS], cpu[BENCH_MAX_REPS];
	uint64_t errors[BENCH_MAX_REPS];
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
	bench_harness_init(&h);
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
			if (bench_parse_int(optarg, &reps) < 0 || reps < 1 || reps > BENCH_MAX_REPS)
				bench_usage_error(sweep_usage, "--reps wants 1 to %d, not '%s'", BENCH_MAX_REPS, optarg);
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
		case 'A': bench_add_server_arg(&h, optarg, sweep_usage); break;
		case 'l': bench_parse_listen(&h, optarg, sweep_usage); break;
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
		d = bench_add_server(server, server, sweep_usage);
		const char *base = strrchr(server, '/');
		snprintf(name, sizeof(name), "%s-%s", base ? base + 1 : server, mode);
	} else {
		d = &bench_designs[!strcmp(mode, "thread") ? 1 : 0];
		if (!bench_find_binary(d))
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
			if (bench_measure_run(d, &h, cl, open_loop ? rates[pt->load] : 0, 0.5, seconds, &res, &cpu) < 0)
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
