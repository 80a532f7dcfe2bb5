/* sandbox/internal.h — shared between the sandbox/ sources only.
 *
 * Not part of the module's public surface (that is sandbox.h): the plan the
 * parent prepares for the child, and the cgroup and seccomp helpers. */
#pragma once

#include <linux/filter.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "sandbox/sandbox.h"

/* Everything the child needs, computed by the parent before clone(). The
 * child runs in a copy of a possibly multi-threaded process, so it may only
 * use async-signal-safe calls: no malloc, no stdio, no locks (a lock held by
 * another thread at clone time would never be released in the copy). */
struct sb_mount_fd {
	int fd;          /* detached mount (open_tree/fsmount) from the parent */
	const char *dst; /* absolute path inside the root */
	bool is_dir;
};

struct sb_plan {
	int root_fd; /* detached mount of the root file system */
	const struct sb_mount_fd *binds;
	size_t n_binds;

	int sync_fd;        /* child reads "1" (maps written) then "2" (cgroups joined) */
	int sync_parent_fd; /* the parent's write end, which the child must close */
	int err_fd;         /* child writes a struct sb_child_error on failure */
	int status_fd;      /* init writes the command's wait status (int) */
	int out_fd, errout_fd;

	bool host_network, no_sys;
	const char *hostname;
	const char *tmpfs_size; /* decimal bytes, for fsconfig "size" */
	char *const *argv;
	char *const *envp;
	const char *path; /* PATH used to find argv[0] */
	uid_t uid;
	gid_t gid;
	const char *workdir;
	uint64_t nofile;
	int cap_last;
	uint64_t caps_keep; /* bit n = capability n */
	const struct sock_fprog *seccomp;
	const struct sock_fprog *seccomp_personality;
	/* kiln's argv and environment strings (from /proc/self/stat), which PID 1
	 * overwrites; 0 when unknown. Nothing above may point into them: the
	 * parent passes copies of argv, workdir, hostname and the bind
	 * targets. */
	uintptr_t arg_start, arg_end, env_start, env_end;
};

struct sb_child_error {
	int err; /* positive errno */
	char what[200];
};

/* Runs in the cloned child (PID 1 of the new PID namespace). Never returns. */
_noreturn_ void sb_child_main(const struct sb_plan *p);

/* seccomp.c: the filters, built once per process. */
int sb_seccomp_get(const struct sock_fprog **ret_main, const struct sock_fprog **ret_personality,
                   struct kiln_error **err);

/* cgroup.c */
struct sb_cgroup;
int sb_cgroup_create(const char *id, uint64_t memory_bytes, double cpus, uint64_t pids_max,
                     struct sb_cgroup **ret, struct kiln_error **err);
int sb_cgroup_attach(struct sb_cgroup *cg, pid_t pid, struct kiln_error **err);
/* clone(2) with flags (namespaces | exit signal) so that the child starts in
 * cg (v2: CLONE_INTO_CGROUP; v1: through the calling thread, see cgroup.c).
 * Returns 0 in the child, the pid in the parent with *ret_pidfd set, -1 with
 * errno on failure. *ret_joined false: the child was cloned outside (clone3
 * refused) and the caller must sb_cgroup_attach() it before it runs. */
pid_t sb_cgroup_clone(struct sb_cgroup *cg, unsigned long flags, int *ret_pidfd, bool *ret_joined);
/* Kills every process in the cgroup (cgroup.kill where the kernel has it). */
void sb_cgroup_kill(struct sb_cgroup *cg);
bool sb_cgroup_oom_killed(struct sb_cgroup *cg);
uint64_t sb_cgroup_peak_memory(struct sb_cgroup *cg);
/* Removes the cgroup directories (waiting for the kernel to empty them). */
struct sb_cgroup *sb_cgroup_destroy(struct sb_cgroup *cg);
void sb_cgroup_cleanup_stale(void);
