/* sandbox/cgroup.c — resource limits and whole-tree kill through cgroups.
 *
 * cgroup v2 (unified): /sys/fs/cgroup/kiln/<id> with memory.max,
 * memory.swap.max, cpu.max, pids.max; killed with cgroup.kill.
 * cgroup v1 (legacy or hybrid): /sys/fs/cgroup/{memory,cpu,pids}/kiln/<id>,
 * killed by SIGKILL to every listed process. The sandbox's PID namespace is the
 * primary kill mechanism (killing its init makes the kernel kill every
 * process in it); the cgroup is the second, and the one that sets limits.
 *
 * <id> is "<kiln pid>-<n>", so a kiln started after one that was killed with
 * SIGKILL can tell which directories are orphans. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/internal.h"
#include "util/alloc.h"
#include "util/parse.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define CG_ROOT "/sys/fs/cgroup"

enum { CG_MEMORY, CG_CPU, CG_PIDS, CG_UNIFIED, CG_N };

struct sb_cgroup {
	bool v2;
	char *dir[CG_N]; /* NULL when not used */
};

static bool is_v2_root(const char *path)
{
	struct statfs s;
	return statfs(path, &s) == 0 && (unsigned long)s.f_type == CGROUP2_SUPER_MAGIC;
}

static int write_str(const char *dir, const char *file, const char *val)
{
	_cleanup_free_ char *p = xasprintf("%s/%s", dir, file);
	_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	size_t n = strlen(val);
	ssize_t w = write(fd, val, n);
	if (w < 0)
		return -errno;
	return (size_t)w == n ? 0 : -EIO;
}

/* Reads "key N" from a flat-keyed file (memory.events, memory.oom_control). */
static uint64_t read_key(const char *dir, const char *file, const char *key)
{
	_cleanup_free_ char *p = xasprintf("%s/%s", dir, file);
	_cleanup_fclose_ FILE *f = fopen(p, "re");
	if (!f)
		return 0;
	char line[256];
	size_t kl = strlen(key);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
			line[strcspn(line, "\n")] = '\0';
			uint64_t v;
			if (kiln_parse_u64(line + kl + 1, 10, 0, UINT64_MAX, &v) == 0)
				return v;
		}
	}
	return 0;
}

static uint64_t read_u64(const char *dir, const char *file)
{
	_cleanup_free_ char *p = xasprintf("%s/%s", dir, file);
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[64];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	uint64_t v;
	return kiln_parse_u64(buf, 10, 0, UINT64_MAX, &v) == 0 ? v : 0;
}

static int mkdir_ok(const char *p)
{
	return mkdir(p, 0755) == 0 || errno == EEXIST ? 0 : -errno;
}

/* How long rmdir waits for a cgroup's last tasks: a bound on the wait for
 * the event below, not a polling step. */
#define DRAIN_TIMEOUT_MS 2000

static int64_t ms_left(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (int64_t)(deadline->tv_sec - now.tv_sec) * 1000 +
	             (deadline->tv_nsec - now.tv_nsec) / 1000000;
	return ms > 0 ? ms : 0;
}

static void each_listed(const char *dir, void (*fn)(int pid, const void *ud), const void *ud);

static void wait_listed_one(int pid, const void *ud)
{
	/* v1 has no populated event: each listed task's pidfd says when it
	 * is gone. */
	const struct timespec *deadline = ud;
	_cleanup_close_ int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return; /* already gone */
	struct pollfd p = {fd, POLLIN, 0};
	while (poll(&p, 1, (int)ms_left(deadline)) < 0 && errno == EINTR)
		;
}

/* v2: "populated 0" in cgroup.events, which the kernel signals to poll
 * (POLLPRI) when it changes. */
static void wait_unpopulated(const char *dir, const struct timespec *deadline)
{
	_cleanup_free_ char *p = xasprintf("%s/cgroup.events", dir);
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	for (;;) {
		char buf[256];
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			return;
		buf[n] = '\0';
		if (strstr(buf, "populated 0"))
			return;
		struct pollfd pf = {fd, POLLPRI, 0};
		int64_t ms = ms_left(deadline);
		if (ms == 0 || (poll(&pf, 1, (int)ms) < 0 && errno != EINTR))
			return;
	}
}

/* rmdir of a sandbox cgroup. By the time it runs the tasks are gone (the
 * whole PID namespace dies with PID 1, which the caller has reaped), so the
 * first rmdir succeeds. EBUSY means a task is still on its way out (a cgroup
 * of a dead kiln, just killed): wait for the event that says it is gone —
 * never a sleep in steps (STYLE.md §13; a 10 ms step was a 10 ms tail) — and
 * try once more. */
static void rmdir_drained(const char *p, bool v2)
{
	if (rmdir(p) == 0 || errno != EBUSY)
		return;
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += DRAIN_TIMEOUT_MS / 1000;
	for (int i = 0; i < 3; i++) {
		if (v2)
			wait_unpopulated(p, &deadline);
		else
			each_listed(p, wait_listed_one, &deadline);
		if (rmdir(p) == 0 || errno != EBUSY || ms_left(&deadline) == 0)
			return;
	}
}

struct sb_cgroup *sb_cgroup_destroy(struct sb_cgroup *cg)
{
	if (!cg)
		return NULL;
	for (int i = 0; i < CG_N; i++) {
		if (cg->dir[i])
			rmdir_drained(cg->dir[i], i == CG_UNIFIED);
		free(cg->dir[i]);
	}
	free(cg);
	return NULL;
}

static void cgroup_destroyp(struct sb_cgroup **cg)
{
	sb_cgroup_destroy(*cg);
}

/* Enables kiln's controllers for dir's children. One write for all three:
 * the kernel vets it as a whole. Enabled one by one in a cgroup that holds
 * processes, cpu and pids (threaded controllers) would be accepted alone and
 * turn the cgroup into a thread root, after which memory is refused
 * (EOPNOTSUPP) and no process can move to a domain child any more. */
static int v2_enable(const char *dir)
{
	return write_str(dir, "cgroup.subtree_control", "+memory +cpu +pids");
}

/* Calls fn for every pid listed in dir/cgroup.procs. */
static void each_listed(const char *dir, void (*fn)(int pid, const void *ud), const void *ud)
{
	_cleanup_free_ char *p = xasprintf("%s/cgroup.procs", dir);
	_cleanup_fclose_ FILE *f = fopen(p, "re");
	if (!f)
		return;
	char line[32];
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		int pid;
		if (kiln_parse_int(line, 1, INT32_MAX, &pid) == 0)
			fn(pid, ud);
	}
}

static void move_one(int pid, const void *to)
{
	char v[16];
	snprintf(v, sizeof(v), "%d", pid);
	(void)write_str(to, "cgroup.procs", v);
}

/* Moves every process listed in from/cgroup.procs into the cgroup to.
 * Failures are ignored: a process that exited meanwhile needs no move, and
 * the caller retries the write that needed the move. */
static void move_procs(const char *from, const char *to)
{
	each_listed(from, move_one, to);
}

/* Enables the controllers at the top of the hierarchy kiln sees. On a host,
 * that is the real root, which may hold processes. In a container (docker,
 * podman, a delegated systemd unit) /sys/fs/cgroup is the container's own
 * cgroup: v2 refuses (EBUSY) to enable controllers for the children of a
 * non-root cgroup that has processes of its own ("no internal processes"),
 * so every sandbox failed there with "memory.max: No such file or
 * directory". Its processes (kiln among them) move to a leaf, "init" (the
 * name docker's dind and kind use for the same move), and the write is
 * retried; a process forked meanwhile lands in the old place, hence the
 * loop. The move changes no limit they are under: "init" sets none and its
 * parent keeps its own. */
static int v2_enable_root(void)
{
	int r = v2_enable(CG_ROOT);
	for (int i = 0; r == -EBUSY && i < 5; i++) {
		int m = mkdir_ok(CG_ROOT "/init");
		if (m < 0)
			return m;
		move_procs(CG_ROOT, CG_ROOT "/init");
		r = v2_enable(CG_ROOT);
	}
	return r;
}

/* A CPU quota of at least the CPUs this process may run on (which the
 * sandbox inherits) limits nothing — the default of 4 on a 2-CPU host — so
 * no quota is set and, on v1, no cpu cgroup made: joining one costs a
 * reschedule of the starting thread, ~1.5 ms median at load 7 here. */
static bool cpu_quota_limits(double cpus)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return true;
	return cpus < (double)CPU_COUNT(&set);
}

static int create_v2(struct sb_cgroup *cg, const char *id, uint64_t mem, double cpus, uint64_t pids,
                     struct kiln_error **err)
{
	/* Controllers must be enabled on every ancestor. An error is not fatal
	 * yet (they may be on already, in a hierarchy we cannot write); it is
	 * the one reported if the limit files below are missing. */
	const char *enable_dir = CG_ROOT;
	int enable_err = v2_enable_root();
	int r = mkdir_ok(CG_ROOT "/kiln");
	if (r < 0)
		return kiln_error_set_errno(err, -r, "cannot create %s/kiln", CG_ROOT);
	if ((r = v2_enable(CG_ROOT "/kiln")) < 0 && enable_err == 0)
		enable_err = r, enable_dir = CG_ROOT "/kiln";
	cg->dir[CG_UNIFIED] = xasprintf(CG_ROOT "/kiln/%s", id);
	if (mkdir(cg->dir[CG_UNIFIED], 0755) < 0) {
		r = -errno;
		free(cg->dir[CG_UNIFIED]);
		cg->dir[CG_UNIFIED] = NULL;
		return kiln_error_set_errno(err, -r, "cannot create cgroup kiln/%s", id);
	}
	char v[64];
	snprintf(v, sizeof(v), "%" PRIu64, mem);
	const char *d = cg->dir[CG_UNIFIED];
	if ((r = write_str(d, "memory.max", v)) < 0) {
		if (r == -ENOENT && enable_err < 0)
			return kiln_error_set_errno(err, -enable_err,
			                            "cannot enable the memory, cpu and pids "
			                            "controllers in %s/cgroup.subtree_control",
			                            enable_dir);
		return kiln_error_set_errno(err, -r, "%s/memory.max (memory controller missing?)",
		                            d);
	}
	/* Swap would let a memory bomb outgrow the limit slowly instead of dying. */
	(void)write_str(d, "memory.swap.max", "0");
	snprintf(v, sizeof(v), "%" PRIu64 " 100000", (uint64_t)(cpus * 100000.0));
	if (cpu_quota_limits(cpus) && (r = write_str(d, "cpu.max", v)) < 0)
		return kiln_error_set_errno(err, -r, "%s/cpu.max (cpu controller missing?)", d);
	snprintf(v, sizeof(v), "%" PRIu64, pids);
	if ((r = write_str(d, "pids.max", v)) < 0)
		return kiln_error_set_errno(err, -r, "%s/pids.max (pids controller missing?)", d);
	return 0;
}

static int create_v1(struct sb_cgroup *cg, const char *id, uint64_t mem, double cpus, uint64_t pids,
                     struct kiln_error **err)
{
	static const char *const ctrl[] = {
	    [CG_MEMORY] = "memory", [CG_CPU] = "cpu", [CG_PIDS] = "pids"};
	bool cpu = cpu_quota_limits(cpus);
	for (int i = 0; i < CG_UNIFIED; i++) {
		if (i == CG_CPU && !cpu)
			continue;
		_cleanup_free_ char *base = xasprintf(CG_ROOT "/%s/kiln", ctrl[i]);
		int r = mkdir_ok(base);
		if (r < 0)
			return kiln_error_set_errno(err, -r, "cannot create %s", base);
		char *d = xasprintf("%s/%s", base, id);
		if (mkdir(d, 0755) < 0) {
			r = -errno;
			free(d);
			return kiln_error_set_errno(err, -r, "cannot create %s/%s", base, id);
		}
		cg->dir[i] = d;
	}
	char v[64];
	int r;
	snprintf(v, sizeof(v), "%" PRIu64, mem);
	if ((r = write_str(cg->dir[CG_MEMORY], "memory.limit_in_bytes", v)) < 0)
		return kiln_error_set_errno(err, -r, "%s/memory.limit_in_bytes",
		                            cg->dir[CG_MEMORY]);
	/* memory+swap = memory: no swap (absent when swap accounting is off). */
	(void)write_str(cg->dir[CG_MEMORY], "memory.memsw.limit_in_bytes", v);
	if (cpu && (r = write_str(cg->dir[CG_CPU], "cpu.cfs_period_us", "100000")) < 0)
		return kiln_error_set_errno(err, -r, "%s/cpu.cfs_period_us", cg->dir[CG_CPU]);
	snprintf(v, sizeof(v), "%" PRIu64, (uint64_t)(cpus * 100000.0));
	if (cpu && (r = write_str(cg->dir[CG_CPU], "cpu.cfs_quota_us", v)) < 0)
		return kiln_error_set_errno(err, -r, "%s/cpu.cfs_quota_us", cg->dir[CG_CPU]);
	snprintf(v, sizeof(v), "%" PRIu64, pids);
	if ((r = write_str(cg->dir[CG_PIDS], "pids.max", v)) < 0)
		return kiln_error_set_errno(err, -r, "%s/pids.max", cg->dir[CG_PIDS]);
	/* Hybrid hosts also have a controller-less unified hierarchy with
	 * cgroup.kill; joining it too cost ~0.3 ms per run for no gain: the
	 * PID namespace already kills the whole tree atomically. */
	return 0;
}

int sb_cgroup_create(const char *id, uint64_t memory_bytes, double cpus, uint64_t pids_max,
                     struct sb_cgroup **ret, struct kiln_error **err)
{
	_cleanup_(cgroup_destroyp) struct sb_cgroup *cg = xcalloc(1, sizeof(*cg));
	cg->v2 = is_v2_root(CG_ROOT);
	int r = cg->v2 ? create_v2(cg, id, memory_bytes, cpus, pids_max, err)
	               : create_v1(cg, id, memory_bytes, cpus, pids_max, err);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(cg);
	return 0;
}

int sb_cgroup_attach(struct sb_cgroup *cg, pid_t pid, struct kiln_error **err)
{
	char v[32];
	snprintf(v, sizeof(v), "%d", (int)pid);
	for (int i = 0; i < CG_N; i++) {
		if (!cg->dir[i])
			continue;
		int r = write_str(cg->dir[i], "cgroup.procs", v);
		if (r < 0)
			return kiln_error_set_errno(err, -r, "cannot join %s", cg->dir[i]);
	}
	return 0;
}

/* --- starting the sandbox inside its cgroups ---------------------------
 *
 * Moving a process into a cgroup by writing its pid to cgroup.procs takes
 * the kernel's global cgroup_threadgroup_rwsem for writing, which waits for
 * an RCU grace period: 5 ms median and up to 40 ms on this 2-CPU machine
 * under load, the largest single cost of a sandbox start (issue 15's
 * profile). Two ways in that do not take it:
 *  - v2: clone3(CLONE_INTO_CGROUP), the child is born in its cgroup;
 *  - v1: the calling thread moves itself ("0" to tasks: one thread, the
 *    caller, which the kernel migrates without the global lock), clones —
 *    the child inherits every cgroup of the thread that created it — and
 *    moves itself back. In between it is the only task of those cgroups
 *    besides the child, for two system calls.
 * Either way nothing of the sandbox ever runs outside its limits. */

/* The calling thread's cgroup directory in the v1 hierarchy of ctrl. */
static char *own_v1_dir(const char *ctrl)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/thread-self/cgroup", "re");
	if (!f)
		return NULL;
	char line[4096];
	size_t cl = strlen(ctrl);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		char *c = strchr(line, ':'); /* "ID:controllers:path" */
		char *path = c ? strchr(c + 1, ':') : NULL;
		if (!path || path[1] != '/')
			continue;
		*path++ = '\0';
		for (char *t = c + 1; *t;) {
			size_t n = strcspn(t, ",");
			if (n == cl && strncmp(t, ctrl, cl) == 0)
				return xasprintf(CG_ROOT "/%s%s", ctrl,
				                 strcmp(path, "/") ? path : "");
			t += n + (t[n] == ',');
		}
	}
	return NULL;
}

static pid_t raw_clone3(unsigned long flags, int cgroup_fd, int *ret_pidfd)
{
	int pidfd = -1;
	struct clone_args ca = {
	    .flags = (flags & ~0xffUL) | CLONE_PIDFD | (cgroup_fd >= 0 ? CLONE_INTO_CGROUP : 0),
	    .pidfd = (uint64_t)(uintptr_t)&pidfd,
	    .exit_signal = flags & 0xff,
	    .cgroup = cgroup_fd >= 0 ? (uint64_t)cgroup_fd : 0,
	};
	pid_t pid = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
	if (pid > 0)
		*ret_pidfd = pidfd;
	return pid;
}

pid_t sb_cgroup_clone(struct sb_cgroup *cg, unsigned long flags, int *ret_pidfd, bool *ret_joined)
{
	*ret_joined = false;
	if (cg->v2) {
		_cleanup_close_ int dfd =
		    open(cg->dir[CG_UNIFIED], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			pid_t pid = raw_clone3(flags, dfd, ret_pidfd);
			if (pid == 0)
				return 0;
			if (pid > 0) {
				*ret_joined = true;
				return pid;
			}
			if (errno != ENOSYS && errno != EINVAL)
				return -1;
		}
		/* clone3 refused (a container's seccomp profile says ENOSYS):
		 * a plain clone, and the caller moves the child. */
	} else {
		static const int ctrl_ids[] = {CG_MEMORY, CG_CPU, CG_PIDS};
		static const char *const names[] = {
		    [CG_MEMORY] = "memory", [CG_CPU] = "cpu", [CG_PIDS] = "pids"};
		char *back[CG_N] = {0};
		bool in = true;
		for (size_t i = 0; i < ELEMENTSOF(ctrl_ids) && in; i++) {
			int c = ctrl_ids[i];
			if (!cg->dir[c])
				continue;
			back[c] = own_v1_dir(names[c]);
			in = back[c] && write_str(cg->dir[c], "tasks", "0") == 0;
		}
		pid_t pid = -1;
		if (in) {
			pid = raw_clone3(flags, -1, ret_pidfd);
			if (pid == 0)
				return 0; /* the child: allocates and frees nothing */
		}
		int e = errno;
		for (size_t i = 0; i < ELEMENTSOF(ctrl_ids); i++) {
			int c = ctrl_ids[i];
			/* Back where the thread was; a failure here would leave a
			 * kiln thread under the sandbox's limits (and keep its
			 * cgroups from being removed), so it is retried through the
			 * hierarchy's root, which always exists. */
			if (back[c] && write_str(back[c], "tasks", "0") < 0) {
				_cleanup_free_ char *root = xasprintf(CG_ROOT "/%s", names[c]);
				(void)write_str(root, "tasks", "0");
			}
			free(back[c]);
		}
		if (pid > 0) {
			*ret_joined = true;
			return pid;
		}
		errno = e;
		if (in && errno != ENOSYS)
			return -1;
	}
	pid_t pid = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, 0);
	if (pid > 0) {
		*ret_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (*ret_pidfd < 0) {
			int e = errno;
			kill(pid, SIGKILL);
			errno = e;
			return -1;
		}
	}
	return pid;
}

static void kill_one(int pid, const void *ud)
{
	(void)ud;
	kill(pid, SIGKILL);
}

static void kill_listed(const char *dir)
{
	each_listed(dir, kill_one, NULL);
}

void sb_cgroup_kill(struct sb_cgroup *cg)
{
	if (!cg)
		return;
	/* cgroup.kill is atomic against concurrent forks. */
	if (cg->dir[CG_UNIFIED] && write_str(cg->dir[CG_UNIFIED], "cgroup.kill", "1") == 0)
		return;
	/* v1 (or a kernel before 5.14): SIGKILL what is listed. A process forked
	 * in between is still in the PID namespace, which dies with its init. */
	for (int i = 0; i < CG_N; i++)
		if (cg->dir[i]) {
			kill_listed(cg->dir[i]);
			return;
		}
}

bool sb_cgroup_oom_killed(struct sb_cgroup *cg)
{
	if (cg->v2)
		return read_key(cg->dir[CG_UNIFIED], "memory.events", "oom_kill") > 0;
	return read_key(cg->dir[CG_MEMORY], "memory.oom_control", "oom_kill") > 0;
}

uint64_t sb_cgroup_peak_memory(struct sb_cgroup *cg)
{
	if (cg->v2)
		return read_u64(cg->dir[CG_UNIFIED], "memory.peak");
	return read_u64(cg->dir[CG_MEMORY], "memory.max_usage_in_bytes");
}

/* A directory named "<pid>-<n>" whose pid is not alive. Our own pid's
 * directories belong to runs in progress in other threads. */
static bool is_orphan(const char *name)
{
	char pidpart[16];
	size_t n = strcspn(name, "-");
	if (n == 0 || n >= sizeof(pidpart) || name[n] != '-')
		return false;
	memcpy(pidpart, name, n);
	pidpart[n] = '\0';
	int pid;
	if (kiln_parse_int(pidpart, 1, INT32_MAX, &pid) < 0)
		return false;
	if (pid == getpid())
		return false;
	return kill(pid, 0) < 0 && errno == ESRCH;
}

static void cleanup_dir(const char *base)
{
	_cleanup_close_ int fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(fd);
	if (!d)
		return;
	fd = -1;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_type != DT_DIR || e->d_name[0] == '.' || !is_orphan(e->d_name))
			continue;
		_cleanup_free_ char *p = xasprintf("%s/%s", base, e->d_name);
		/* Its processes died with their PID-namespace init when the owning
		 * kiln died (PR_SET_PDEATHSIG); kill anything left anyway. */
		(void)write_str(p, "cgroup.kill", "1");
		kill_listed(p);
		rmdir_drained(p, is_v2_root(base));
	}
	closedir(d);
}

void sb_cgroup_cleanup_stale(void)
{
	static const char *const bases[] = {
	    CG_ROOT "/kiln",      CG_ROOT "/memory/kiln",  CG_ROOT "/cpu/kiln",
	    CG_ROOT "/pids/kiln", CG_ROOT "/unified/kiln",
	};
	for (size_t i = 0; i < ELEMENTSOF(bases); i++)
		cleanup_dir(bases[i]);
}
