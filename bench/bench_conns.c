/* SPDX-License-Identifier: MIT */
/*
 * baton-bench conns: every server design (bench_servers.c) under the same
 * load, in one run, one table.  Each run starts the server on a free port
 * (or the given address), warms it up, measures --seconds of load with our
 * load generator (bench_load.c) in the protocol it speaks, or with wrk
 * (--client wrk), and stops it.  Runs alternate over --reps repetitions,
 * and the table shows medians.
 */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void conns_usage(FILE *f)
{
	fprintf(f,
		"Usage: baton-bench conns [OPTION]...\n"
		"Every server design under the same load, in one run: baton-proc and\n"
		"baton-thread (baton-httpd), baton-attach (baton-httpd with --worker-of\n"
		"workers attached), fork, prefork, reuseport, inplace, nginx when\n"
		"installed, and your own servers built on the runtime (--server).  Designs\n"
		"alternate over R repetitions; the table shows medians (min-max).\n"
		"\n"
		"  --designs LIST        comma-separated subset (default: all available but\n"
		"                        the variants inplace-plain, inplace-paced,\n"
		"                        baton-proc-acc2 and baton-thread-acc2 (two\n"
		"                        acceptor rings: --acceptors 2) and\n"
		"                        baton-proc-ops: baton-proc with --control and\n"
		"                        --metrics, scraped every 100 ms)\n"
		"  --client ours|wrk     the load generator: ours (default; latency from\n"
		"                        connect) or wrk, an independent client (http on TCP,\n"
		"                        closed loop; latency from writing the request)\n"
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
		"  --split               also show, for baton's designs, the acceptor's own\n"
		"                        CPU per exchange (its thread) and the rest's\n"
		"  --csv FILE            design,conns_per_s,p50_us,p99_us,p999_us,\n"
		"                        server_cpu_us_per_conn,errors\n"
		"The protocol (the built-in designs speak http only):\n" BENCH_PROTO_HELP
		"  -h, --help            this help;  -V, --version  the version\n",
		BENCH_MAX_SERVERS, BENCH_MAX_REPS);
}

int bench_conns(int argc, char **argv)
{
	const char *only = NULL, *csv = NULL;
	int split = 0;
	struct harness h;
	bench_harness_init(&h);
	int clients = 32, reps = 3;
	double seconds = 5;
	static const struct option opts[] = {
		{"designs", required_argument, NULL, 'd'}, {"workers", required_argument, NULL, 'w'},
		{"clients", required_argument, NULL, 'c'}, {"seconds", required_argument, NULL, 's'},
		{"reps", required_argument, NULL, 'r'},    {"csv", required_argument, NULL, 'o'},
		{"server", required_argument, NULL, 'S'},  {"server-arg", required_argument, NULL, 'A'},
		{"listen", required_argument, NULL, 'l'},  {"client", required_argument, NULL, 'C'},
		{"split", no_argument, NULL, 'P'},
		BENCH_PROTO_OPTIONS,
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
			if (bench_parse_int(optarg, &reps) < 0 || reps < 1 || reps > BENCH_MAX_REPS)
				bench_usage_error(conns_usage, "--reps wants 1 to %d, not '%s'", BENCH_MAX_REPS, optarg);
			break;
		case 'o': csv = optarg; break;
		case 'P': split = 1; break;
		case 'S': {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg || !eq[1])
				bench_usage_error(conns_usage, "--server wants NAME=PATH, not '%s'", optarg);
			*eq = 0;
			for (size_t i = 0; i < bench_ndesigns; i++)
				if (!strcmp(bench_designs[i].name, optarg))
					bench_usage_error(conns_usage, "--server %s: a built-in design has that name",
							  optarg);
			for (int i = 0; i < bench_nservers; i++)
				if (!strcmp(bench_servers[i].name, optarg))
					bench_usage_error(conns_usage, "--server %s: given twice", optarg);
			bench_add_server(optarg, eq + 1, conns_usage);
			break;
		}
		case 'A': bench_add_server_arg(&h, optarg, conns_usage); break;
		case 'l': bench_parse_listen(&h, optarg, conns_usage); break;
		case 'C':
			if (strcmp(optarg, "ours") && strcmp(optarg, "wrk"))
				bench_usage_error(conns_usage, "--client wants ours or wrk, not '%s'", optarg);
			h.wrk = !strcmp(optarg, "wrk");
			break;
		case 'h': conns_usage(stdout); return 0;
		case 'V': bench_version(); return 0;
		default: bench_getopt_error(conns_usage, o, argv);
		}
	}
	if (optind < argc)
		bench_usage_error(conns_usage, "unexpected argument '%s'", argv[optind]);
	bench_proto_check(&h.load, conns_usage);
	if (h.wrk) {
		if (h.load.proto != BENCH_PROTO_HTTP)
			bench_usage_error(conns_usage, "--client wrk speaks http only");
		if (h.load.rate > 0)
			bench_usage_error(conns_usage, "--client wrk runs a closed loop: no --rate");
		if (bench_addr_family(&h.listen) == AF_UNIX)
			bench_usage_error(conns_usage, "--client wrk connects over TCP: --listen a HOST");
		if (system("command -v wrk >/dev/null 2>&1") != 0)
			bench_die("--client wrk: wrk is not installed (apt-get install wrk)");
	}
	if (h.nserver_args && !bench_nservers)
		bench_usage_error(conns_usage, "--server-arg without --server");

	struct design *list[bench_ndesigns + BENCH_MAX_SERVERS];
	size_t nd = 0;
	if (only) { /* unknown names first */
		char *copy = strdup(only), *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			int known = 0;
			for (size_t i = 0; i < bench_ndesigns; i++)
				known |= !strcmp(t, bench_designs[i].name);
			for (int i = 0; i < bench_nservers; i++)
				known |= !strcmp(t, bench_servers[i].name);
			if (!known)
				bench_usage_error(conns_usage, "unknown design '%s'", t);
		}
		free(copy);
	}
	for (size_t i = 0; i < bench_ndesigns + (size_t)bench_nservers; i++) {
		struct design *d = i < bench_ndesigns ? &bench_designs[i] : &bench_servers[i - bench_ndesigns];
		int named = only && bench_in_list(only, d->name);
		if ((only && !named) || (d->extra && !named))
			continue;
		const char *why = bench_cannot_serve(d, &h);
		if (why && named)
			bench_usage_error(conns_usage, "design %s %s", d->name, why);
		if (why)
			continue;
		if (!bench_find_binary(d)) {
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
	if (h.wrk)
		snprintf(desc, sizeof(desc), "wrk: GET %s, %s", h.load.path,
			 h.load.keepalive ? "keep-alive" : "one connection per request");
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
			if (bench_measure_run(d, &h, clients, h.load.rate, seconds < 2 ? seconds / 2 : 1, seconds, &res,
					&cpu) < 0)
				bench_die("%s did not start", d->name);
			d->cps[r] = res.rps;
			d->cpu[r] = cpu;
			d->p50[r] = (double)res.p50_us;
			d->p99[r] = (double)res.p99_us;
			d->p999[r] = (double)res.p999_us;
			d->errors[r] = res.errors;
			d->acc[r] = h.acc_us;
			for (int e = 0; e < BENCH_ERR_KINDS; e++)
				d->err_kind[e] += res.err[e];
		}
	}

	/* The ceiling: the cheaper of the in-place designs in the run
	 * (regular or direct descriptors), so that neither flatters it. */
	double base = 0;
	const char *base_name = NULL;
	for (size_t k = 0; k < nd; k++) {
		if (strcmp(list[k]->name, "inplace") && strcmp(list[k]->name, "inplace-direct"))
			continue;
		double m = bench_median(list[k]->cpu, reps);
		if (m > 0 && (base == 0 || m < base)) {
			base = m;
			base_name = list[k]->name;
		}
	}
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
	if (h.wrk)
		printf("\nrequests/s and latency (writing the request to its response's last\n"
		       "byte) from wrk -t1 -c%d%s; wrk gives no p99.9 (0); CPU: the server's own\n"
		       "user+sys time per request; medians of %d alternating reps.\n",
		       clients, h.load.keepalive ? "" : " -H 'Connection: close'", reps);
	else
		printf("\nconns/s and latency (%s to the response's last byte) from our load\n"
		       "generator; CPU: the server's own user+sys time per exchange; medians of\n"
		       "%d alternating reps.\n",
		       h.load.rate > 0 ? "intended send time" : h.load.keepalive ? "request" : "connect",
		       reps);
	if (base_name)
		printf("x inplace: CPU per exchange over the cheaper in-place design run (%s).\n",
		       base_name);
	if (split) {
		/* Where a baton design's CPU goes: its acceptor (the thread
		 * that accepts and hands off) and the rest (workers, mostly). */
		printf("\n%-13s %24s %24s\n", "design", "acceptor us/conn (min-max)",
		       "the rest us/conn");
		for (size_t k = 0; k < nd; k++) {
			struct design *d = list[k];
			if (d->acc[0] < 0)
				continue;
			double lo = d->acc[0], hi = d->acc[0], rest[BENCH_MAX_REPS];
			for (int r = 0; r < reps; r++) {
				lo = d->acc[r] < lo ? d->acc[r] : lo;
				hi = d->acc[r] > hi ? d->acc[r] : hi;
				rest[r] = d->cpu[r] - d->acc[r];
			}
			char a[48];
			snprintf(a, sizeof(a), "%.1f (%.1f-%.1f)", bench_median(d->acc, reps), lo, hi);
			printf("%-13s %24s %24.1f\n", d->name, a, bench_median(rest, reps));
		}
	}
	if (csvf) {
		fclose(csvf);
		printf("wrote %s\n", csv);
	}
	bench_load_cfg_free(&h.load);
	return 0;
}
