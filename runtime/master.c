/* SPDX-License-Identifier: MIT */
/*
 * The master: the process that holds the main pid (--pid-file, systemd's
 * MAINPID) while generations of the server come and go (docs/reload.md).
 * It serves nothing.  It forks the first generation (the acceptor and its
 * workers: runtime.c), forwards SIGTERM, SIGINT and SIGUSR1 to it, relays
 * its sd_notify messages, and on SIGHUP reloads:
 *
 *   1. RELOADING=1.  A new generation starts from the program's path on
 *      disk with the same arguments (fork + exec), with a control channel
 *      to us and a handover channel whose other end we give the serving
 *      generation ('H' on its control channel).
 *   2. The serving generation sends its listeners on the handover channel
 *      (handover.c); the new one takes those its flags name, binds any
 *      others and starts its workers.
 *   3. Ready, it says READY=1 (to us: we tell systemd), and we tell the old
 *      generation ('T'): it stops accepting and finishes its connections.
 *   4. We exec ourselves from the same path: the main pid stays and
 *      /proc/PID/exe is the new binary.  The generations' control channels
 *      cross the exec (BATON_MASTER in the environment says which).
 *
 * A new generation that exits or is not ready within --reload-timeout is
 * killed, and nothing else changes: the old one never stopped serving.
 *
 * The master's own loop is poll(2) on a signalfd and the control channels:
 * nothing here is on a connection's path.
 */
#include "supervisor.h"

#include "internal.h"
#include "runtime_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_GENS 8

enum role { FREE = 0, SERVING, STARTING, OLD };

struct gen {
	enum role role;
	pid_t pid;
	int ctl; /* our end of its control channel, -1 once it closed */
	uint64_t started_ns;
};

struct master {
	struct bt_runtime *s;
	struct gen g[MAX_GENS];
	int sigfd;
	unsigned reloads, failed;
	uint64_t deadline_ns; /* the starting generation's, 0: none */
	int stopping;
	int status; /* the serving generation's exit status */
};

static const char *role_name(enum role r)
{
	return r == SERVING ? "serving" : r == STARTING ? "new" : r == OLD ? "old" : "-";
}

static struct gen *find(struct master *m, enum role r)
{
	for (int i = 0; i < MAX_GENS; i++)
		if (m->g[i].role == r)
			return &m->g[i];
	return NULL;
}

static struct gen *slot(struct master *m)
{
	return find(m, FREE);
}

static void forget(struct gen *g)
{
	if (g->ctl >= 0)
		bt__close(g->ctl);
	memset(g, 0, sizeof(*g));
	g->ctl = -1;
}

/* --pid-file: written to a temporary name, then renamed over the file, so
 * that a reader never sees it half written.  0 or -errno (logged). */
static int write_pid_file(const char *path)
{
	char tmp[4200];
	snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "--pid-file: open(%s)", tmp);
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	int rc = write(fd, buf, (size_t)n) == n ? 0 : -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		return bt__log_errno(BT_LOG_ERROR, rc ? rc : -EIO, "--pid-file %s", path);
	}
	return 0;
}

static uint64_t monotonic_us(void)
{
	return bt__now_ns() / 1000u;
}

/* --- starting a generation ------------------------------------------------------- */

/* The first generation: a fork that goes on into runtime.c's serving code
 * (returns 1 in the child, with s->ctl_fd set), 0 in the master. */
static int fork_first(struct master *m)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "socketpair(control)");
	long master_pid = (long)getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		bt__close(sv[0]);
		bt__close(sv[1]);
		return bt__log_errno(BT_LOG_ERROR, err, "fork(first generation)");
	}
	if (pid == 0) {
		bt__close(sv[0]);
		m->s->ctl_fd = sv[1];
		/* systemd's sockets were passed to the master: they are ours now. */
		const char *lp = getenv("LISTEN_PID");
		if (lp && strtol(lp, NULL, 10) == master_pid) {
			char me[24];
			snprintf(me, sizeof(me), "%ld", (long)getpid());
			setenv("LISTEN_PID", me, 1);
		}
		return 1;
	}
	bt__close(sv[1]);
	struct gen *g = &m->g[0];
	*g = (struct gen){.role = SERVING, .pid = pid, .ctl = sv[0], .started_ns = bt__now_ns()};
	return 0;
}

/* A new generation from the path on disk, for a reload.  0 or -errno. */
static int spawn_next(struct master *m, int *handover_keep)
{
	const char *exe = bt__exe_path();
	char *const *argv = bt__saved_argv();
	int ctl[2], ho[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0)
		return bt__log_errno(BT_LOG_ERROR, -errno, "reload: socketpair(control)");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ho) < 0) {
		int err = -errno;
		bt__close(ctl[0]);
		bt__close(ctl[1]);
		return bt__log_errno(BT_LOG_ERROR, err, "reload: socketpair(handover)");
	}
	pid_t pid = fork();
	if (pid == 0) {
		char env[64];
		snprintf(env, sizeof(env), "ctl=%d,handover=%d", ctl[1], ho[1]);
		fcntl(ctl[1], F_SETFD, 0);
		fcntl(ho[1], F_SETFD, 0);
		setenv("BATON_GENERATION", env, 1);
		unsetenv("BATON_MASTER");
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(exe, argv);
		bt__log_errno(BT_LOG_ERROR, -errno, "reload: execv(%s)", exe);
		_exit(127);
	}
	int err = pid < 0 ? -errno : 0;
	bt__close(ctl[1]);
	bt__close(ho[1]);
	if (pid < 0) {
		bt__close(ctl[0]);
		bt__close(ho[0]);
		return bt__log_errno(BT_LOG_ERROR, err, "reload: fork");
	}
	struct gen *g = slot(m);
	*g = (struct gen){.role = STARTING, .pid = pid, .ctl = ctl[0], .started_ns = bt__now_ns()};
	*handover_keep = ho[0];
	return 0;
}

/* --- reload ------------------------------------------------------------------------ */

/* Tell generation g a tag and a text: 'T' (a reload's success), 'F' (its
 * failure or refusal).  baton-ctl reload waits for them (control.c). */
static void tell(struct gen *g, char tag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void tell(struct gen *g, char tag, const char *fmt, ...)
{
	if (!g || g->ctl < 0)
		return;
	char buf[256];
	buf[0] = tag;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + 1, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	size_t len = n < 0 ? 1 : (size_t)n + 1 < sizeof(buf) ? (size_t)n + 1 : sizeof(buf) - 1;
	if (send(g->ctl, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		bt__log_errno(BT_LOG_WARN, -errno, "telling generation pid %ld", (long)g->pid);
}

static void reload(struct master *m, const char *why)
{
	struct gen *cur = find(m, SERVING);
	if (m->stopping || !cur) {
		bt__log(BT_LOG_WARN, "%s: stopping: no reload", why);
		tell(cur, 'F', "the server is stopping");
		return;
	}
	if (find(m, STARTING)) {
		/* Its outcome is the answer to whoever asked (no 'F'). */
		bt__log(BT_LOG_WARN, "%s: a reload is in progress already: ignored", why);
		return;
	}
	if (!slot(m)) {
		bt__log(BT_LOG_WARN, "%s: %d generations still finishing: reload refused until "
				     "one has ended", why, MAX_GENS - 1);
		tell(cur, 'F', "%d generations are still finishing: no reload until one has ended",
		     MAX_GENS - 1);
		return;
	}
	if (!bt__exe_path() || !bt__saved_argv()) {
		bt__log(BT_LOG_ERROR, "%s: cannot reload: the program's arguments are unknown "
				      "(it did not call bt_runtime_parse_args or bt_runtime_take_argv)", why);
		tell(cur, 'F', "the program's arguments are unknown");
		return;
	}
	bt__log(BT_LOG_INFO, "%s: reloading: starting %s", why, bt__exe_path());
	bt__notify_text("RELOADING=1\nSTATUS=reloading");
	char mono[64];
	snprintf(mono, sizeof(mono), "MONOTONIC_USEC=%llu", (unsigned long long)monotonic_us());
	bt__notify_text(mono);
	int ho = -1;
	if (spawn_next(m, &ho) < 0) {
		m->failed++;
		bt__notify_text("READY=1\nSTATUS=reload failed: serving on");
		tell(cur, 'F', "the new generation could not be started (see the log)");
		return;
	}
	/* The serving generation gets the other end of the handover channel. */
	struct msghdr mh = {0};
	char tag = 'H';
	struct iovec iov = {.iov_base = &tag, .iov_len = 1};
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	memset(&cm, 0, sizeof(cm));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.buf;
	mh.msg_controllen = sizeof(cm.buf);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &ho, sizeof(int));
	ssize_t w;
	do
		w = sendmsg(cur->ctl, &mh, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		bt__log_errno(BT_LOG_ERROR, -errno, "reload: sendmsg(handover channel to pid %ld)",
			      (long)cur->pid);
	bt__close(ho);
	m->deadline_ns = bt__now_ns() + (uint64_t)m->s->cfg->reload_timeout_ms * 1000000ull;
}

/* The new generation failed: it goes, the serving one serves on (it sees
 * the handover channel end and forgets it). */
static void rollback(struct master *m, struct gen *g, const char *why)
{
	m->failed++;
	m->deadline_ns = 0;
	bt__log(BT_LOG_ERROR, "reload failed: the new generation (pid %ld) %s; the serving "
			      "generation keeps serving, nothing changed",
		(long)g->pid, why);
	if (g->pid > 0)
		kill(g->pid, SIGKILL);
	if (g->ctl >= 0) {
		bt__close(g->ctl);
		g->ctl = -1;
	}
	g->role = OLD; /* reaped as it goes */
	bt__notify_text("READY=1\nSTATUS=reload failed: serving on");
	tell(find(m, SERVING), 'F', "the new generation (pid %ld) %s; this one serves on, nothing "
				    "changed", (long)g->pid, why);
}

/* Across our own exec: "reloads=N,failed=F;PID:FD:ROLE;..." */
static void reexec(struct master *m)
{
	const char *exe = bt__exe_path();
	char env[512];
	int n = snprintf(env, sizeof(env), "reloads=%u,failed=%u", m->reloads, m->failed);
	for (int i = 0; i < MAX_GENS; i++) {
		struct gen *g = &m->g[i];
		if (g->role == FREE)
			continue;
		n += snprintf(env + n, sizeof(env) - (size_t)n, ";%ld:%d:%d", (long)g->pid, g->ctl,
			      (int)g->role);
		if (g->ctl >= 0)
			fcntl(g->ctl, F_SETFD, 0);
	}
	setenv("BATON_MASTER", env, 1);
	bt__flags_export(1);
	execv(exe, bt__saved_argv());
	bt__flags_export(0);
	bt__log_errno(BT_LOG_WARN, -errno, "reload: execv(%s) for the master: it keeps running "
					   "the binary it started with", exe);
	unsetenv("BATON_MASTER");
	for (int i = 0; i < MAX_GENS; i++)
		if (m->g[i].role != FREE && m->g[i].ctl >= 0)
			fcntl(m->g[i].ctl, F_SETFD, FD_CLOEXEC);
}

/* The new generation is ready: it serves, the one before finishes. */
static void promote(struct master *m, struct gen *g)
{
	struct gen *cur = find(m, SERVING);
	if (cur) {
		cur->role = OLD;
	}
	g->role = SERVING;
	m->deadline_ns = 0;
	m->reloads++;
	/* It stops accepting and finishes (handover.c). */
	if (cur)
		tell(cur, 'T', "reload %u: generation pid %ld serves, ready in %llu ms", m->reloads,
		     (long)g->pid, (unsigned long long)((bt__now_ns() - g->started_ns) / 1000000ull));
	bt__log(BT_LOG_INFO, "reload %u: generation pid %ld serves (ready in %llu ms)%s", m->reloads,
		(long)g->pid, (unsigned long long)((bt__now_ns() - g->started_ns) / 1000000ull),
		cur ? "; the previous one finishes its connections" : "");
	char buf[160];
	snprintf(buf, sizeof(buf), "READY=1\nMAINPID=%ld\nSTATUS=serving (reload %u)", (long)getpid(),
		 m->reloads);
	bt__notify_text(buf);
	reexec(m);
}

/* --- the generations' messages and ends ---------------------------------------- */

/* One message from a generation's control channel: 1, or 0 when there is
 * none (now, or any more). */
static int on_ctl(struct master *m, struct gen *g)
{
	char buf[600];
	ssize_t n;
	do
		n = recv(g->ctl, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	if (n <= 0) {
		/* It is ending: its exit is reaped (a new generation that closes
		 * the channel and lives on meets the reload's deadline). */
		bt__close(g->ctl);
		g->ctl = -1;
		return 0;
	}
	buf[n] = 0;
	if (buf[0] == 'R' && g->role == SERVING) {
		/* baton-ctl reload, through the serving generation. */
		reload(m, "control socket");
		return 1;
	}
	if (buf[0] != 'N')
		return 1;
	/* sd_notify from a generation: MAINPID is ours, READY=1 of a new
	 * generation is the reload's success. */
	char out[600];
	size_t o = 0;
	int ready = 0;
	for (char *line = buf + 1, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if (!strncmp(line, "MAINPID=", 8))
			continue;
		if (!strcmp(line, "READY=1"))
			ready = 1;
		o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", o ? "\n" : "", line);
		if (o >= sizeof(out))
			o = sizeof(out) - 1;
	}
	if (ready && g->role == STARTING) {
		promote(m, g);
		return 1;
	}
	if (ready)
		o += (size_t)snprintf(out + o, sizeof(out) - o, "\nMAINPID=%ld", (long)getpid());
	if (g->role == SERVING && o)
		bt__notify_text(out);
	return 1;
}

static void reap(struct master *m)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		struct gen *g = NULL;
		for (int i = 0; i < MAX_GENS; i++)
			if (m->g[i].role != FREE && m->g[i].pid == pid)
				g = &m->g[i];
		if (!g)
			continue;
		char how[48];
		if (WIFEXITED(st))
			snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(st));
		else
			snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(st));
		int code = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
		/* What it said before it ended (STOPPING=1, say) is still
		 * queued: relay it before its channel goes.  (A new generation's
		 * late READY=1 must not promote it: it is gone.) */
		while (g->role == SERVING && g->ctl >= 0 && on_ctl(m, g))
			;
		switch (g->role) {
		case STARTING:
			rollback(m, g, how);
			break;
		case SERVING:
			m->status = code;
			if (!m->stopping) {
				bt__log(BT_LOG_ERROR, "the serving generation (pid %ld) %s: stopping",
					(long)pid, how);
				m->stopping = 1;
				for (int i = 0; i < MAX_GENS; i++)
					if (m->g[i].role != FREE && m->g[i].pid != pid)
						kill(m->g[i].pid, SIGTERM);
			}
			break;
		default:
			bt__log(code == 0 ? BT_LOG_INFO : BT_LOG_WARN, "generation pid %ld %s", (long)pid,
				how);
			break;
		}
		forget(g);
	}
}

static void on_signals(struct master *m)
{
	struct signalfd_siginfo si;
	while (read(m->sigfd, &si, sizeof(si)) == sizeof(si)) {
		int sig = (int)si.ssi_signo;
		switch (sig) {
		case SIGCHLD:
			reap(m);
			break;
		case SIGTERM:
		case SIGINT:
			if (!m->stopping)
				bt__log(BT_LOG_DEBUG, "master: %s to every generation",
					sig == SIGTERM ? "SIGTERM" : "SIGINT");
			m->stopping = 1;
			for (int i = 0; i < MAX_GENS; i++)
				if (m->g[i].role != FREE)
					kill(m->g[i].pid, m->g[i].role == STARTING ? SIGKILL : sig);
			break;
		case SIGUSR1: {
			struct gen *g = find(m, SERVING);
			if (g)
				kill(g->pid, SIGUSR1);
			bt__log(BT_LOG_INFO, "master: %u reload%s, %u failed", m->reloads,
				m->reloads == 1 ? "" : "s", m->failed);
			break;
		}
		case SIGHUP:
			reload(m, "SIGHUP");
			break;
		}
	}
}

static int any(const struct master *m)
{
	for (int i = 0; i < MAX_GENS; i++)
		if (m->g[i].role != FREE)
			return 1;
	return 0;
}

static int run(struct master *m)
{
	char title[96];
	snprintf(title, sizeof(title), "%s: master", m->s->cfg->name);
	bt__proctitle_set(title);
	while (any(m)) {
		struct pollfd p[MAX_GENS + 1];
		struct gen *who[MAX_GENS + 1];
		int n = 0;
		p[n++] = (struct pollfd){.fd = m->sigfd, .events = POLLIN};
		for (int i = 0; i < MAX_GENS; i++)
			if (m->g[i].role != FREE && m->g[i].ctl >= 0) {
				who[n] = &m->g[i];
				p[n++] = (struct pollfd){.fd = m->g[i].ctl, .events = POLLIN};
			}
		int timeout = -1;
		if (m->deadline_ns) {
			uint64_t now = bt__now_ns();
			timeout = now >= m->deadline_ns ? 0
							 : (int)((m->deadline_ns - now) / 1000000ull) + 1;
		}
		int r = poll(p, (nfds_t)n, timeout);
		if (r < 0 && errno != EINTR)
			return bt__log_errno(BT_LOG_ERROR, -errno, "master: poll"), 1;
		if (p[0].revents)
			on_signals(m);
		for (int k = 1; k < n; k++)
			if (p[k].revents && who[k]->role != FREE && who[k]->ctl == p[k].fd)
				on_ctl(m, who[k]);
		if (m->deadline_ns && bt__now_ns() >= m->deadline_ns) {
			struct gen *g = find(m, STARTING);
			char why[64];
			snprintf(why, sizeof(why), "was not ready within %u ms (--reload-timeout)",
				 m->s->cfg->reload_timeout_ms);
			if (g)
				rollback(m, g, why);
			m->deadline_ns = 0;
		}
	}
	return m->status;
}

/* After our own exec: the generations we had, from BATON_MASTER. */
static int restore(struct master *m, const char *env)
{
	if (sscanf(env, "reloads=%u,failed=%u", &m->reloads, &m->failed) != 2)
		return -EINVAL;
	int k = 0;
	for (const char *p = strchr(env, ';'); p && k < MAX_GENS; p = strchr(p + 1, ';')) {
		long pid;
		int fd, role;
		if (sscanf(p + 1, "%ld:%d:%d", &pid, &fd, &role) != 3 || pid <= 0 ||
		    role < SERVING || role > OLD)
			return -EINVAL;
		if (fd >= 0)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
		m->g[k++] = (struct gen){.role = (enum role)role, .pid = (pid_t)pid, .ctl = fd,
					 .started_ns = bt__now_ns()};
	}
	return k > 0 ? 0 : -EINVAL;
}

int bt__master_wanted(const struct bt_runtime *s)
{
	return !s->has_producer && !s->cfg->worker_of && bt__saved_argv() && bt__exe_path();
}

int bt__master_run(struct bt_runtime *s)
{
	struct master m;
	memset(&m, 0, sizeof(m));
	m.s = s;
	m.sigfd = -1;
	for (int i = 0; i < MAX_GENS; i++)
		m.g[i].ctl = -1;
	sigset_t set;
	bt__sup_sigset(&set); /* the supervisor's signals, read the same way */
	const char *env = getenv("BATON_MASTER");
	if (env) {
		char copy[512];
		snprintf(copy, sizeof(copy), "%s", env);
		unsetenv("BATON_MASTER");
		if (restore(&m, copy) < 0) {
			bt__log(BT_LOG_ERROR, "BATON_MASTER=%s: not a master's state", copy);
			return 1;
		}
		bt__log(BT_LOG_DEBUG, "master: exec'd after reload %u", m.reloads);
	} else {
		if (s->cfg->pid_file && write_pid_file(s->cfg->pid_file) < 0)
			return 1;
		int rc = fork_first(&m);
		if (rc != 0) {
			if (rc > 0) { /* the first generation */
				sigprocmask(SIG_UNBLOCK, &set, NULL);
				return -1;
			}
			return 1;
		}
	}
	if (s->cfg->pid_file && env && write_pid_file(s->cfg->pid_file) < 0)
		bt__log(BT_LOG_WARN, "--pid-file: not rewritten after the reload");
	m.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (m.sigfd < 0) {
		bt__log_errno(BT_LOG_ERROR, -errno, "master: signalfd");
		for (int i = 0; i < MAX_GENS; i++)
			if (m.g[i].role != FREE)
				kill(m.g[i].pid, SIGTERM);
		return 1;
	}
	reap(&m); /* a generation that ended across the exec */
	for (int i = 0; i < MAX_GENS; i++)
		bt__log(BT_LOG_DEBUG, "master: generation %d: pid %ld %s", i, (long)m.g[i].pid,
			role_name(m.g[i].role));
	int status = run(&m);
	bt__close(m.sigfd);
	if (s->cfg->pid_file)
		unlink(s->cfg->pid_file);
	return status;
}
