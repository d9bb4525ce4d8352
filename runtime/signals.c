/* SPDX-License-Identifier: MIT */
/*
 * The supervisor's signals: blocked, and read from a signalfd on the
 * acceptor's loop, so that no handler ever runs in the middle of the
 * acceptor's work.
 *
 *   SIGCHLD        a worker process ended: the worker set reaps it
 *   SIGTERM, INT   --grace, then drain (drain.c)
 *   SIGUSR1        print the counters (counters.c)
 *   SIGHUP         logged: the master reloads (master.c), not a generation
 */
#include "supervisor.h"

#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

static void on_signal(void *ctx)
{
	struct bt_runtime *s = ctx;
	struct signalfd_siginfo si;
	while (read(s->sigfd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			if (s->ops->reap)
				s->ops->reap(s);
			break;
		case SIGTERM:
			bt__sup_stop_signal(s, "SIGTERM");
			break;
		case SIGINT:
			bt__sup_stop_signal(s, "SIGINT");
			break;
		case SIGUSR1:
			bt__sup_print_counters(s, "SIGUSR1");
			break;
		case SIGHUP:
			if (s->ctl_fd >= 0)
				bt__log(BT_LOG_WARN, "SIGHUP to a generation (pid %ld) is ignored: send "
						     "it to the master (pid %ld) to reload",
					(long)getpid(), (long)getppid());
			else
				bt__log(BT_LOG_WARN, "SIGHUP ignored: this program cannot reload (%s); "
						     "restart it to change its configuration",
					s->has_producer ? "it queues its own work items"
							: "its arguments are unknown");
			break;
		}
	}
}

void bt__sup_sigset(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGHUP);
	sigprocmask(SIG_BLOCK, set, NULL);
}

int bt__sup_signals(struct bt_runtime *s)
{
	sigset_t set;
	bt__sup_sigset(&set);
	s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->sigfd < 0) {
		bt__log_errno(BT_LOG_ERROR, -errno, "signalfd");
		return -1;
	}
	return bt_acceptor_watch(s->acc, s->sigfd, on_signal, s) < 0 ? -1 : 0;
}
