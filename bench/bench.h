/* SPDX-License-Identifier: MIT */
/* Shared helpers of baton-bench's subcommands. */
#ifndef BATON_BENCH_H
#define BATON_BENCH_H

#include <stdio.h>

#define BENCH_MAX_ROUNDS 15

/* CLOCK_MONOTONIC seconds. */
double bench_now(void);
/* user+sys CPU seconds of this process / of its waited-for children. */
double bench_cpu_self(void);
double bench_cpu_children(void);
/* Median of n values (n <= BENCH_MAX_ROUNDS); v is not changed. */
double bench_median(const double *v, int n);
/* Strict number parsing: 0, or -1 if s is not entirely a number. */
int bench_parse_double(const char *s, double *out);
int bench_parse_int(const char *s, int *out);
/* "baton-bench: message" and exit 1. */
void bench_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* The message (if any) and a hint to --help on stderr, exit 2 (usage
 * names the command's usage text, for a message-less call: printed whole). */
void bench_usage_error(void (*usage)(FILE *), const char *fmt, ...)
	__attribute__((noreturn, format(printf, 2, 3)));
/* getopt_long returned '?' or ':' (optstring "+:hV"): say which option. */
void bench_getopt_error(void (*usage)(FILE *), int o, char **argv) __attribute__((noreturn));
/* "baton-bench (baton) VERSION" and the licence, on stdout. */
void bench_version(void);
/* The subcommand being run ("conns"), for messages. */
extern const char *bench_cmd;

int bench_fdpass(int argc, char **argv);
int bench_load(int argc, char **argv);
int bench_conns(int argc, char **argv);
int bench_sweep(int argc, char **argv);

/* --- addresses and CPU (bench_addr.c) ------------------------------------ */
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define BENCH_ADDR_MAX 4

/* HOST:PORT (a name or IPv4), [IPV6]:PORT, or a unix socket path (it
 * begins with '/' or '.'): the runtime's --listen syntax.  A name may
 * resolve to several addresses (localhost: ::1 and 127.0.0.1). */
struct bench_addr {
	struct sockaddr_storage ss[BENCH_ADDR_MAX];
	socklen_t len[BENCH_ADDR_MAX];
	int n;
	int port;       /* 0: none given */
	char host[256]; /* for an HTTP Host header ("localhost" for a path) */
	char text[256]; /* as given */
};

/* 0, or -1 with a message in err.  need_port: a port is required. */
int bench_addr_parse(const char *spec, int need_port, struct bench_addr *a, char *err, size_t errlen);
/* AF_INET, AF_INET6 or AF_UNIX (of the first address). */
int bench_addr_family(const struct bench_addr *a);
/* The first of a's addresses that accepts a connection: 1; or the first
 * of them, when none does: 0. */
int bench_addr_pick(const struct bench_addr *a, struct sockaddr_storage *ss, socklen_t *len);
/* A --listen argument for a server: a's address with its port, or a free
 * port of its family when none was given; a path as it is.  0 or -errno. */
int bench_addr_with_free_port(const struct bench_addr *a, char *out, size_t cap);
/* CPU seconds (user+sys) of pid, the children it reaped, and its live
 * descendants; -1 if pid is not there. */
double bench_tree_cpu(pid_t root);
/* A baton server's acceptor (the process titled "NAME: acceptor" under
 * root): the CPU seconds (schedstat) of its main thread and its acceptor
 * threads (--acceptors K), or -1 if none. */
double bench_acceptor_cpu(pid_t root);

/* --- the load generator (bench_load.c), for the harness -------------------- */

enum { BENCH_ERR_REFUSED, BENCH_ERR_RESET, BENCH_ERR_TIMEOUT, BENCH_ERR_SHORT,
       BENCH_ERR_STATUS, BENCH_ERR_MISMATCH, BENCH_ERR_OTHER, BENCH_ERR_KINDS };

enum { BENCH_PROTO_HTTP, BENCH_PROTO_ECHO, BENCH_PROTO_RAW };

struct load_cfg {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	const char *host;         /* the HTTP Host header */
	int clients, threads, keepalive;
	double seconds, timeout;
	double rate;              /* > 0: open loop, exchanges per second */
	int proto;
	/* http */
	const char *path;
	int expect_lo, expect_hi; /* accepted status codes */
	/* echo: the payload, which comes back; raw: the request */
	char *payload;
	size_t payload_len;
	size_t expect_bytes;      /* raw: the response's length */
	char *req;                /* built by bench_load_run */
	size_t reqlen;
};

struct load_result {
	uint64_t requests, errors;
	uint64_t err[BENCH_ERR_KINDS];
	double seconds, rps;
	uint64_t p50_us, p99_us, p999_us, max_us;
	/* open loop */
	uint64_t due;          /* exchanges whose send time came in the run */
	uint64_t unsent;       /* due, but not started by the end */
	uint64_t waited;       /* started late: every client was busy */
	uint64_t client_late;  /* started over 1 ms late with a client free */
};

int bench_load_run(struct load_cfg *cfg, struct load_result *res);
void bench_load_cfg_free(struct load_cfg *cfg);
const char *bench_load_error_name(int kind);

/* The protocol flags shared by load, conns and sweep. */
#define BENCH_OPT_PROTO 1000
#define BENCH_PROTO_OPTIONS                                                        \
	{"proto", required_argument, NULL, BENCH_OPT_PROTO},                      \
	{"path", required_argument, NULL, BENCH_OPT_PROTO + 1},                   \
	{"expect", required_argument, NULL, BENCH_OPT_PROTO + 2},                 \
	{"size", required_argument, NULL, BENCH_OPT_PROTO + 3},                   \
	{"line", required_argument, NULL, BENCH_OPT_PROTO + 4},                   \
	{"send", required_argument, NULL, BENCH_OPT_PROTO + 5},                   \
	{"expect-bytes", required_argument, NULL, BENCH_OPT_PROTO + 6},           \
	{"rate", required_argument, NULL, BENCH_OPT_PROTO + 7},                   \
	{"keepalive", no_argument, NULL, BENCH_OPT_PROTO + 8},                    \
	{"timeout", required_argument, NULL, BENCH_OPT_PROTO + 9}
#define BENCH_PROTO_HELP                                                                     \
	"  --proto P         http (default), echo or raw\n"                                    \
	"  --path PATH       http: the path to GET (default /)\n"                              \
	"  --expect CODES    http: the statuses that count as success: 200, 2xx, 200-399\n"   \
	"                    or a list (default 200)\n"                                        \
	"  --size N          echo: send N bytes (default 64) and expect them back\n"           \
	"  --line TEXT       echo: send TEXT and a newline instead\n"                          \
	"  --send FILE       raw: the request's bytes\n"                                       \
	"  --expect-bytes N  raw: the response's length\n"                                     \
	"  --keepalive       many exchanges per connection (default: one, then close)\n"      \
	"  --rate R          open loop: R exchanges per second on a fixed schedule, latency\n" \
	"                    from each one's intended send time (default: closed loop)\n"      \
	"  --timeout S       an exchange not done in S seconds is an error (default 5)\n"

/* The defaults (closed loop, http GET /, 200). */
void bench_load_cfg_init(struct load_cfg *c);
/* o is one of BENCH_PROTO_OPTIONS: apply it (a bad value exits 2 through
 * usage); 1 if o was one of them, else 0. */
int bench_proto_option(struct load_cfg *c, int o, const char *arg, void (*usage)(FILE *));
/* The options' combination is sound (else exits 2); reads --send. */
void bench_proto_check(struct load_cfg *c, void (*usage)(FILE *));
/* "http GET /", "echo 64 B", "raw 120 B -> 4096 B", with the loop kind. */
void bench_load_describe(const struct load_cfg *c, char *out, size_t cap);


/* --- server designs: bench_servers.c ------------------------------------- */

#include <limits.h>

#define BENCH_MAX_REPS 15
#define BENCH_MAX_SERVERS 8
#define BENCH_MAX_ARGS 64

struct design {
	const char *name;
	const char *prog; /* binary name, found next to baton-bench or in libexec/baton */
	int stop_sig;
	int kind;         /* how to build its argv */
	int extra;        /* run only when --designs names it */
	const char *args[4]; /* its own arguments, after the usual ones */
	char path[PATH_MAX];
	double cps[BENCH_MAX_REPS], cpu[BENCH_MAX_REPS], p50[BENCH_MAX_REPS], p99[BENCH_MAX_REPS], p999[BENCH_MAX_REPS];
	uint64_t errors[BENCH_MAX_REPS];
	uint64_t err_kind[BENCH_ERR_KINDS];
	/* --split: the acceptor's own CPU per exchange (its thread; -1: no
	 * acceptor in this design) */
	double acc[BENCH_MAX_REPS];
};

/* K_SERVER: a program built on the runtime (--server): it takes the
 * runtime's flags. */
/* K_ATTACH: baton-httpd with no worker of its own (--workers 0 --attach)
 * and N processes of baton-httpd --worker-of attached to it. */
/* K_BATON_OPS: baton-proc with --control and --metrics on, and a scraper
 * (a process of baton-bench's, its CPU not counted) asking for /metrics
 * every 100 ms: what operating it costs. */
enum { K_BATON_PROC, K_BATON_THREAD, K_LISTEN, K_LISTEN_WORKERS, K_NGINX, K_SERVER, K_ATTACH,
       K_BATON_OPS };

/* What every run of one command shares. */
struct harness {
	struct bench_addr listen; /* where servers listen (port 0: a free one) */
	int workers;
	struct load_cfg load;
	const char *server_args[BENCH_MAX_ARGS]; /* --server-arg, after the runtime's flags */
	int nserver_args;
	const char *tuning[16];            /* --batch N --flush P ... of this run */
	int wrk;                           /* the load comes from wrk, not ours */
	double acc_us;                     /* the last run's acceptor CPU per
					    * exchange (-1: none found) */
};


/* Every design there is (bench_ndesigns), and the --server ones. */
extern struct design bench_designs[];
extern const size_t bench_ndesigns;
extern struct design bench_servers[BENCH_MAX_SERVERS];
extern int bench_nservers;

void bench_harness_init(struct harness *h);
/* Is name in the comma-separated list? */
int bench_in_list(const char *list, const char *name);
/* Find d's program: 1, or 0 if it is not there. */
int bench_find_binary(struct design *d);
/* Why d cannot serve h's address and protocol, or NULL. */
const char *bench_cannot_serve(const struct design *d, const struct harness *h);
/* Start d, warm it up, measure `seconds` of load, stop it: the load's
 * result and the server's CPU microseconds per exchange.  0 or -1 (it did
 * not start; said on stderr). */
int bench_measure_run(struct design *d, struct harness *h, int clients, double rate, double warm,
		      double seconds, struct load_result *res, double *cpu_us);
/* --server NAME=PATH (conns), PATH (sweep): a design of kind K_SERVER. */
struct design *bench_add_server(const char *name, const char *path, void (*usage)(FILE *));
void bench_add_server_arg(struct harness *h, const char *arg, void (*usage)(FILE *));
void bench_parse_listen(struct harness *h, const char *spec, void (*usage)(FILE *));

#endif
