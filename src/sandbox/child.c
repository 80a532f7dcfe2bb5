/* sandbox/child.c — the inside of the sandbox: PID 1 and the command.
 *
 * Runs in a process cloned from kiln (possibly from a multi-threaded
 * service), so it uses system calls and the plan the parent prepared only:
 * no malloc, no stdio, no locks. Every step says which attack it stops. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox/internal.h"

#define ROOT_MNT "/tmp" /* where the new root is attached before pivot_root */

static const struct sb_plan *plan;

/* Reports "what: errno" to the parent and exits. Async-signal-safe. */
static _noreturn_ void fail(const char *what, const char *arg, int e)
{
	struct sb_child_error ce = {.err = e > 0 ? e : EIO};
	size_t n = 0;
	for (const char *s = what; s && *s && n < sizeof(ce.what) - 1; s++)
		ce.what[n++] = *s;
	if (arg) {
		for (const char *s = " "; *s && n < sizeof(ce.what) - 1; s++)
			ce.what[n++] = *s;
		for (const char *s = arg; *s && n < sizeof(ce.what) - 1; s++)
			ce.what[n++] = *s;
	}
	ssize_t w = write(plan->err_fd, &ce, sizeof(ce));
	(void)w;
	_exit(127);
}

static size_t copy_str(char *dst, size_t cap, size_t at, const char *s)
{
	while (*s && at + 1 < cap)
		dst[at++] = *s++;
	dst[at] = '\0';
	return at;
}

/* Opens path inside the root. RESOLVE_IN_ROOT: a symlink in the (untrusted)
 * image such as /proc -> /../../host/etc resolves inside the root, so a mount
 * never lands on a host path (runc CVE-2021-30465 was a mount target raced
 * out of the rootfs). */
static int open_in_root(int rootfd, const char *path, int flags)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	for (;;) {
		long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		if (fd >= 0 || (errno != EAGAIN && errno != EINTR))
			return (int)fd;
	}
}

/* mkdir -p of an absolute path inside the root, each component resolved
 * with RESOLVE_IN_ROOT. Returns an O_PATH fd of the directory. */
static int mkdir_in_root(int rootfd, const char *path)
{
	char buf[4096];
	size_t len = copy_str(buf, sizeof(buf), 0, path);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char saved = buf[i];
		buf[i] = '\0';
		int fd = open_in_root(rootfd, buf, O_PATH | O_DIRECTORY);
		if (fd < 0 && errno == ENOENT) {
			char *slash = strrchr(buf, '/');
			*slash = '\0';
			int pfd =
			    open_in_root(rootfd, slash == buf ? "/" : buf, O_PATH | O_DIRECTORY);
			*slash = '/';
			if (pfd < 0)
				return -1;
			int r = mkdirat(pfd, slash + 1, 0755);
			int e = errno;
			close(pfd);
			if (r < 0 && e != EEXIST) {
				errno = e;
				return -1;
			}
			fd = open_in_root(rootfd, buf, O_PATH | O_DIRECTORY);
		}
		buf[i] = saved;
		if (fd < 0)
			return -1;
		if (buf[i] == '\0')
			return fd;
		close(fd);
	}
	return open_in_root(rootfd, "/", O_PATH | O_DIRECTORY);
}

/* An empty regular file to bind a file over (created if missing). */
static int file_in_root(int rootfd, const char *path)
{
	int fd = open_in_root(rootfd, path, O_PATH);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	char buf[4096];
	copy_str(buf, sizeof(buf), 0, path);
	char *slash = strrchr(buf, '/');
	*slash = '\0';
	int dfd = mkdir_in_root(rootfd, slash == buf ? "/" : buf);
	if (dfd < 0)
		return -1;
	/* O_PATH parents cannot be used with openat(O_CREAT); reopen. */
	int wfd =
	    openat(dfd, slash + 1, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	close(dfd);
	if (wfd < 0 && errno != EEXIST)
		return -1;
	if (wfd >= 0)
		close(wfd);
	return open_in_root(rootfd, path, O_PATH);
}

static void attach(int mfd, int target, const char *what)
{
	if (move_mount(mfd, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		fail("cannot attach", what, errno);
}

/* A fresh kernel file system (proc, tmpfs, devpts, sysfs) as a detached mount. */
struct fs_opt {
	const char *key, *val;
};
static int new_fs(const char *type, const struct fs_opt *opts, size_t n, unsigned attrs)
{
	int fs = fsopen(type, FSOPEN_CLOEXEC);
	if (fs < 0)
		fail("fsopen", type, errno);
	for (size_t i = 0; i < n; i++)
		if (fsconfig(fs, opts[i].val ? FSCONFIG_SET_STRING : FSCONFIG_SET_FLAG, opts[i].key,
		             opts[i].val, 0) < 0)
			fail("fsconfig", opts[i].key, errno);
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		fail("cannot create file system", type, errno);
	int m = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
	if (m < 0)
		fail("fsmount", type, errno);
	close(fs);
	return m;
}

static void mount_fs_at(int rootfd, const char *dst, const char *type, const struct fs_opt *opts,
                        size_t n, unsigned attrs)
{
	int t = mkdir_in_root(rootfd, dst);
	if (t < 0)
		fail("cannot create mount point", dst, errno);
	int m = new_fs(type, opts, n, attrs);
	attach(m, t, dst);
	close(m);
	close(t);
}

/* Binds a host path (resolved in kiln's view, still reachable before
 * pivot_root) over dst inside the root. */
static void bind_host(int rootfd, const char *src, const char *dst, unsigned attrs, bool is_dir)
{
	int m = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (m < 0)
		fail("open_tree", src, errno);
	struct mount_attr a = {.attr_set = attrs};
	if (attrs && mount_setattr(m, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
		fail("mount_setattr", dst, errno);
	int t = is_dir ? mkdir_in_root(rootfd, dst) : file_in_root(rootfd, dst);
	if (t < 0)
		fail("cannot create mount point", dst, errno);
	attach(m, t, dst);
	close(m);
	close(t);
}

/* Files under /proc that leak host kernel state or act on the host: hidden
 * behind /dev/null (same list as crun/runc's default masked paths). */
static const char *const proc_masked_files[] = {
    "/proc/kcore",                             /* physical memory of the host */
    "/proc/keys",                              /* keyring names of every user */
    "/proc/key-users",     "/proc/timer_list", /* kernel pointers, host timers */
    "/proc/sched_debug",                       /* every host task's name */
    "/proc/latency_stats", "/proc/kallsyms",   /* kernel symbol addresses: KASLR */
    "/proc/sysrq-trigger",                     /* reboot/crash the host */
    "/proc/kmsg",          "/proc/vmallocinfo",
    "/proc/cmdline", /* the host kernel's command line (boot options, on a VM
                      * the hypervisor agent's ports and flags) */
};
/* Directories hidden behind an empty read-only tmpfs. */
static const char *const proc_masked_dirs[] = {
    "/proc/acpi", /* host ACPI tables and controls */
    "/proc/scsi", /* rescan/remove host disks */
    "/proc/asound",
    "/proc/driver",
};
/* Read-only: /proc/sys writes would change host-wide kernel settings for the
 * entries that are not namespaced (e.g. vm.*, kernel.core_pattern, which runs
 * a helper as host root on a crash). */
static const char *const proc_readonly[] = {
    "/proc/sys",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
};

/* Device nodes bound from the host: the minimal set programs expect. Block
 * devices and everything else stay out; /dev is a fresh tmpfs (noexec). */
static const char *const dev_nodes[] = {
    "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty",
};
static const struct {
	const char *target, *path;
} dev_links[] = {
    {"/proc/self/fd", "/dev/fd"},       {"/proc/self/fd/0", "/dev/stdin"},
    {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
    {"pts/ptmx", "/dev/ptmx"},
};

/* The source of every /proc mask: the host's /dev/null, looked up in kiln's
 * own view (this process has not left the host's mount tree yet), never
 * in the root. The root is the layer's: open_tree(rootfd, "dev/null")
 * followed a hostile `dev -> /proc/self/cwd/x` (or /proc/self/fd/N) out of
 * it and bound whatever x/null named on the host — a symlink to a host
 * secret, a FIFO — over /proc/keys and the rest, readable by the build.
 * The result must be the null device itself (character device 1:3), or
 * nothing is masked with it. */
static int mask_source(const char *for_path)
{
	int m = open_tree(AT_FDCWD, "/dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (m < 0)
		fail("open_tree /dev/null for", for_path, errno);
	struct stat st;
	if (fstat(m, &st) < 0)
		fail("stat /dev/null for", for_path, errno);
	if (!S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
		fail("the host's /dev/null is not the null device; masking", for_path, EINVAL);
	return m;
}

static void mask_with_null(int rootfd, const char *path)
{
	int t = open_in_root(rootfd, path, O_PATH | O_NOFOLLOW);
	if (t < 0)
		return; /* this kernel has no such file */
	/* nodev on top makes even opening the mask fail, which is what a mask
	 * should do. */
	int m = mask_source(path);
	struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
	                                   MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
	if (mount_setattr(m, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
		fail("mount_setattr", path, errno);
	attach(m, t, path);
	close(m);
	close(t);
}

static void setup_proc(int rootfd)
{
	/* A fresh proc for this PID namespace: host processes are not visible. */
	mount_fs_at(rootfd, "/proc", "proc", NULL, 0,
	            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
	for (size_t i = 0; i < ELEMENTSOF(proc_masked_files); i++)
		mask_with_null(rootfd, proc_masked_files[i]);
	static const struct fs_opt empty[] = {{"size", "0"}, {"mode", "0555"}};
	for (size_t i = 0; i < ELEMENTSOF(proc_masked_dirs); i++) {
		int t = open_in_root(rootfd, proc_masked_dirs[i], O_PATH | O_DIRECTORY);
		if (t < 0)
			continue;
		int m = new_fs("tmpfs", empty, ELEMENTSOF(empty),
		               MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
		                   MOUNT_ATTR_NOEXEC);
		attach(m, t, proc_masked_dirs[i]);
		close(m);
		close(t);
	}
	for (size_t i = 0; i < ELEMENTSOF(proc_readonly); i++) {
		int t = open_in_root(rootfd, proc_readonly[i], O_PATH | O_DIRECTORY);
		if (t < 0)
			continue;
		int m = open_tree(
		    t, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
		if (m < 0)
			fail("open_tree", proc_readonly[i], errno);
		struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
		                                   MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
		if (mount_setattr(m, "", AT_EMPTY_PATH | AT_RECURSIVE, &a, sizeof(a)) < 0)
			fail("mount_setattr", proc_readonly[i], errno);
		attach(m, t, proc_readonly[i]);
		close(m);
		close(t);
	}
}

static void setup_dev(int rootfd)
{
	/* tmpfs, not the host's devtmpfs: only the nodes below exist, so no
	 * host disk (/dev/sda), memory (/dev/mem) or kmsg is reachable. noexec:
	 * /dev is no place for binaries. */
	static const struct fs_opt devopts[] = {{"mode", "0755"}, {"size", "65536"}};
	mount_fs_at(rootfd, "/dev", "tmpfs", devopts, ELEMENTSOF(devopts),
	            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
	for (size_t i = 0; i < ELEMENTSOF(dev_nodes); i++)
		bind_host(rootfd, dev_nodes[i], dev_nodes[i], MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
		          false);
	int d = open_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY);
	if (d < 0)
		fail("open", "/dev", errno);
	for (size_t i = 0; i < ELEMENTSOF(dev_links); i++)
		if (symlinkat(dev_links[i].target, d, dev_links[i].path + 5) < 0)
			fail("symlink", dev_links[i].path, errno);
	close(d);
	/* A private devpts instance: ptys of the host and of other sandboxes
	 * are not visible, and ptmx creates ptys only here. */
	static const struct fs_opt ptsopts[] = {
	    {"newinstance", NULL}, {"ptmxmode", "0666"}, {"mode", "0620"}, {"gid", "5"}};
	mount_fs_at(rootfd, "/dev/pts", "devpts", ptsopts, ELEMENTSOF(ptsopts),
	            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
	const struct fs_opt shmopts[] = {{"mode", "1777"}, {"size", plan->tmpfs_size}};
	mount_fs_at(rootfd, "/dev/shm", "tmpfs", shmopts, ELEMENTSOF(shmopts),
	            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
}

static void setup_mounts(void)
{
	/* Nothing mounted in here may propagate back to the host (a mount
	 * event leaking out would place the sandbox's files in kiln's view),
	 * and nothing the host mounts later may appear inside. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		fail("cannot make / private", NULL, errno);
	/* The root was mounted by the parent (host root, so overlayfs reads its
	 * layers with full rights) as a detached mount: it never appears in the
	 * host's mount table, and it disappears with this mount namespace even
	 * if kiln is killed with SIGKILL — nothing to clean up. It carries
	 * nodev (a device node in a hostile image, e.g. a copy of the host's
	 * /dev/sda, would otherwise open the host disk: this mount belongs to
	 * the host user namespace, so the kernel's implicit nodev for user
	 * namespace mounts does not apply) and nosuid. */
	int t = open(ROOT_MNT, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (t < 0)
		fail("open", ROOT_MNT, errno);
	attach(plan->root_fd, t, "root");
	close(plan->root_fd);
	close(t);
	int rootfd = open(ROOT_MNT, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		fail("open", ROOT_MNT, errno);

	setup_dev(rootfd);
	setup_proc(rootfd);
	/* /sys: read-only, and only with our own network namespace (sysfs shows
	 * the network devices of the namespace that mounts it). */
	if (!plan->no_sys && !plan->host_network)
		mount_fs_at(rootfd, "/sys", "sysfs", NULL, 0,
		            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
		                MOUNT_ATTR_NOEXEC);
	/* Size-limited tmpfs: a step filling /tmp gets ENOSPC instead of
	 * exhausting the host's memory or disk. */
	const struct fs_opt tmpopts[] = {{"mode", "1777"}, {"size", plan->tmpfs_size}};
	mount_fs_at(rootfd, "/tmp", "tmpfs", tmpopts, ELEMENTSOF(tmpopts),
	            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	/* /var/tmp only where the image has (or the writable root can take)
	 * one: a read-only root without it simply has none. */
	int v = mkdir_in_root(rootfd, "/var/tmp");
	if (v >= 0) {
		int m = new_fs("tmpfs", tmpopts, ELEMENTSOF(tmpopts),
		               MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
		attach(m, v, "/var/tmp");
		close(m);
		close(v);
	}
	/* Binds from the spec, prepared by the parent with nosuid,nodev (and
	 * read-only unless asked otherwise). Last, so a bind can be placed
	 * over anything above except what validation forbids. */
	for (size_t i = 0; i < plan->n_binds; i++) {
		const struct sb_mount_fd *b = &plan->binds[i];
		int bt = b->is_dir ? mkdir_in_root(rootfd, b->dst) : file_in_root(rootfd, b->dst);
		if (bt < 0)
			fail("cannot create mount point", b->dst, errno);
		attach(b->fd, bt, b->dst);
		close(b->fd);
		close(bt);
	}

	/* pivot_root, then detach the old root: unlike chroot, no path (and no
	 * chroot-escape trick with a directory fd and "..") leads back to the
	 * host's tree. */
	if (fchdir(rootfd) < 0)
		fail("chdir", "root", errno);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		fail("pivot_root", NULL, errno);
	if (umount2(".", MNT_DETACH) < 0)
		fail("cannot detach the old root", NULL, errno);
	if (chdir("/") < 0)
		fail("chdir", "/", errno);
	close(rootfd);
}

static void loopback_up(void)
{
	/* The new network namespace has only lo, and it starts down; bring it
	 * up so builds can talk to themselves on 127.0.0.1. Nothing else exists:
	 * no route leads out of the sandbox. */
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		fail("socket", NULL, errno);
	struct ifreq ifr = {0};
	copy_str(ifr.ifr_name, sizeof(ifr.ifr_name), 0, "lo");
	ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		fail("cannot bring lo up", NULL, errno);
	close(s);
}

static void drop_caps(void)
{
	/* Bounding set: what no exec (not even of a setuid-root file) can
	 * regain. */
	for (int c = 0; c <= plan->cap_last; c++)
		if (!(plan->caps_keep & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 &&
		    errno != EINVAL)
			fail("PR_CAPBSET_DROP", NULL, errno);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
		fail("PR_CAP_AMBIENT_CLEAR_ALL", NULL, errno);
}

static void set_caps(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {0};
	uint64_t keep = plan->uid == 0 ? plan->caps_keep : 0;
	d[0].effective = d[0].permitted = (uint32_t)keep;
	d[1].effective = d[1].permitted = (uint32_t)(keep >> 32);
	if (syscall(SYS_capset, &h, d) < 0)
		fail("capset", NULL, errno);
}

static _noreturn_ void exec_command(void)
{
	const char *cmd = plan->argv[0];
	if (strchr(cmd, '/')) {
		execve(cmd, plan->argv, plan->envp);
		fail("cannot execute", cmd, errno);
	}
	int last = ENOENT;
	const char *p = plan->path;
	while (p && *p) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		char buf[4096];
		if (n > 0 && n + strlen(cmd) + 2 < sizeof(buf)) {
			memcpy(buf, p, n);
			buf[n] = '/';
			copy_str(buf, sizeof(buf), n + 1, cmd);
			execve(buf, plan->argv, plan->envp);
			if (errno != ENOENT && errno != ENOTDIR)
				last = errno;
		}
		p = end ? end + 1 : NULL;
	}
	fail("cannot execute", cmd, last);
}

/* Every signal back to its default action and none blocked. PID 1 is a copy
 * of kiln: a signal sent to it from inside would otherwise run kiln's
 * handler in that copy, and the command inherits the rest across exec —
 * kiln serve blocks SIGINT/SIGTERM and ignores SIGPIPE, so in service
 * builds `kill` and `timeout` did nothing and `yes | head` spun until the
 * step timeout. Raw system calls: glibc's sigaction() refuses the two
 * signals it reserves for itself. (SIG_DFL in PID 1 is safe: the kernel
 * drops default-action signals sent to a namespace's init from inside.) */
struct ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

/* What a terminal sends kiln's process group (PID 1 is in it; the command
 * is not, it has its own session): PID 1 ignores them, so that kiln — which
 * gets them too — decides, and cancels the run cleanly. The command gets
 * them back at their default before exec. */
static const int terminal_signals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU};

static void set_terminal_signals(void *handler)
{
	struct ksigaction a = {handler, 0, NULL, 0};
	for (size_t i = 0; i < ELEMENTSOF(terminal_signals); i++)
		(void)syscall(SYS_rt_sigaction, terminal_signals[i], &a, NULL, sizeof(a.mask));
}

static void reset_signals(void)
{
	struct ksigaction dfl = {SIG_DFL, 0, NULL, 0};
	for (int sig = 1; sig < _NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
	set_terminal_signals(SIG_IGN);
	uint64_t none = 0;
	if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(none)) < 0)
		fail("rt_sigprocmask", NULL, errno);
}

static _noreturn_ void command_main(void)
{
	/* A new session: the command has no controlling terminal, so it cannot
	 * reach the terminal kiln was started from (TIOCSTI aside, also job
	 * control signals and /dev/tty). */
	if (setsid() < 0)
		fail("setsid", NULL, errno);
	set_terminal_signals(SIG_DFL);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		fail("open", "/dev/null", errno);
	if (dup2(null, 0) < 0 || dup2(plan->out_fd, 1) < 0 || dup2(plan->errout_fd, 2) < 0)
		fail("dup2", NULL, errno);
	/* Every other inherited fd closed: a leaked descriptor of a host
	 * directory would be a way out of the root (fchdir + "..", or
	 * /proc/self/fd/N; runc CVE-2024-21626). The error pipe stays until
	 * exec (it is close-on-exec); plan->err_fd > 2 (see fd_above_stdio). */
	unsigned ef = (unsigned)plan->err_fd;
	if (close_range(3, ef - 1, 0) < 0 || close_range(ef + 1, ~0U, 0) < 0)
		fail("close_range", NULL, errno);

	/* Core dumps of a hostile process are written by the host's
	 * core_pattern handler; nofile bounds kernel memory per process. The
	 * hard limits cannot be raised again without CAP_SYS_RESOURCE in the
	 * initial namespace. */
	struct rlimit core = {0, 0}, nofile = {plan->nofile, plan->nofile};
	if (setrlimit(RLIMIT_CORE, &core) < 0 || setrlimit(RLIMIT_NOFILE, &nofile) < 0)
		fail("setrlimit", NULL, errno);

	drop_caps();
	gid_t g = plan->gid;
	if (syscall(SYS_setgroups, 1, &g) < 0 || syscall(SYS_setresgid, g, g, g) < 0)
		fail("setgid", NULL, errno);
	if (syscall(SYS_setresuid, plan->uid, plan->uid, plan->uid) < 0)
		fail("setuid", NULL, errno);
	set_caps();

	const char *wd = plan->workdir ? plan->workdir : "/";
	if (chdir(wd) < 0)
		fail("cannot enter the working directory", wd, errno);
	/* The working directory must lie inside the root (CVE-2024-21626: a
	 * cwd outside it is an escape). getcwd fails with ENOENT, or returns a
	 * path starting "(unreachable)", for one that does not. */
	char cwd[4096];
	long n = syscall(SYS_getcwd, cwd, sizeof(cwd));
	if (n < 0 ? errno == ENOENT : cwd[0] != '/')
		fail("working directory outside the root", wd, EPERM);
	exec_command();
}

static void apply_seccomp(void)
{
	/* no_new_privs: a setuid binary (su, a planted setuid-root shell, one
	 * left in the image) cannot raise privileges, and it lets an
	 * unprivileged process keep the filter across exec. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail("PR_SET_NO_NEW_PRIVS", NULL, errno);
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, plan->seccomp_personality) < 0)
		fail("seccomp (personality)", NULL, errno);
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, plan->seccomp) < 0)
		fail("seccomp", NULL, errno);
}

/* The lowest fd >= from that the plan needs, or ~0U. */
static unsigned next_kept(unsigned from)
{
	const int fixed[] = {plan->root_fd,   plan->sync_fd, plan->err_fd,
	                     plan->status_fd, plan->out_fd,  plan->errout_fd};
	unsigned best = ~0U;
	for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
		if (fixed[i] >= 0 && (unsigned)fixed[i] >= from && (unsigned)fixed[i] < best)
			best = (unsigned)fixed[i];
	for (size_t i = 0; i < plan->n_binds; i++) {
		int fd = plan->binds[i].fd;
		if (fd >= 0 && (unsigned)fd >= from && (unsigned)fd < best)
			best = (unsigned)fd;
	}
	return best;
}

/* PID 1 lives for the whole run with a copy of every fd of the kiln that
 * cloned it. In kiln serve those are the listening sockets (a restarted
 * server could not bind its port while a build ran), the database, client
 * connections and other builds' lock files (their flocks stayed held until
 * this build ended). Only what the plan names stays; stdio becomes the
 * host's /dev/null, so PID 1 holds no terminal or log of kiln's either. */
static void close_inherited(void)
{
	for (unsigned from = 3;;) {
		unsigned keep = next_kept(from);
		if (keep > from && close_range(from, keep == ~0U ? ~0U : keep - 1, 0) < 0)
			fail("close_range", NULL, errno);
		if (keep == ~0U)
			break;
		from = keep + 1;
	}
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		fail("open", "/dev/null", errno);
	for (int fd = 0; fd <= 2; fd++)
		if (dup2(null, fd) < 0)
			fail("dup2", NULL, errno);
	close(null);
}

/* /proc/1/cmdline is readable by everything in the sandbox, and PID 1 never
 * execs: it showed kiln's host argv (state and layer paths, bind sources,
 * the whole `kiln run` command line). The argv and environment strings are
 * overwritten in this copy of kiln's memory; the parent gave the plan
 * copies of every string it needs (see sb_plan.arg_start). The last byte of
 * the argv area is made non-zero so that the kernel reads it as a
 * setproctitle(3) title and stops at the first NUL, hiding the length of
 * the original command line too. The environment was not readable
 * (/proc/1/environ needs ptrace access, which PR_SET_DUMPABLE denies); it is
 * cleared anyway. */
static void hide_host_argv(void)
{
	static const char title[] = "kiln-init";
	if (plan->env_end > plan->env_start)
		memset((void *)plan->env_start, 0, plan->env_end - plan->env_start);
	if (plan->arg_end <= plan->arg_start)
		return;
	char *a = (char *)plan->arg_start;
	size_t n = plan->arg_end - plan->arg_start;
	memset(a, 0, n);
	if (n > sizeof(title)) {
		memcpy(a, title, sizeof(title));
		a[n - 1] = ' ';
	}
	(void)prctl(PR_SET_NAME, title, 0, 0, 0);
}

_noreturn_ void sb_child_main(const struct sb_plan *p)
{
	plan = p;
	/* Our copy of the parent's write end: closed, so that EOF (and the
	 * POLLHUP check below) means the parent gave up or died. */
	close(p->sync_parent_fd);
	reset_signals();
	close_inherited();
	hide_host_argv();
	/* What needs no id mapping is done while the parent writes the maps:
	 * this process already holds every capability over its new UTS and
	 * network namespaces (and touches no file). */
	const char *hn = p->hostname;
	if (sethostname(hn, strlen(hn)) < 0 || setdomainname("", 0) < 0)
		fail("sethostname", NULL, errno);
	if (!p->host_network)
		loopback_up();
	/* Wait until the parent wrote uid_map/gid_map. */
	char go;
	if (read(p->sync_fd, &go, 1) != 1)
		_exit(127);

	/* Become the namespace's root: host ids id_base.. which own nothing on
	 * the host, so an escape from the mount namespace holds no privilege. */
	/* Raw system calls: glibc's set*id() would signal every thread it
	 * believes this process has (those of the kiln that cloned us, which
	 * do not exist here) and wait for them forever. */
	if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setgroups, 0, NULL) < 0 ||
	    syscall(SYS_setresuid, 0, 0, 0) < 0)
		fail("cannot become root in the user namespace", NULL, errno);
	/* If kiln dies, so does the sandbox: PID 1 gets SIGKILL, and the kernel
	 * kills everything in the PID namespace with it. Set after the set*id
	 * calls above, which clear it (commit_creds resets pdeath_signal). */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		fail("PR_SET_PDEATHSIG", NULL, errno);
	setup_mounts();

	/* Non-dumpable: PID 1 holds a copy of kiln's memory and full
	 * capabilities in the namespace; this makes /proc/1/mem, /proc/1/exe
	 * (kiln's binary on the host: runc CVE-2019-5736), /proc/1/root and
	 * ptrace unreachable for the command. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fail("PR_SET_DUMPABLE", NULL, errno);
	/* The parent creates and joins the cgroups while the mounts above are
	 * set up; nothing may run before they hold (a fork bomb started before
	 * the pids limit would be unbounded). EOF: the parent gave up. */
	if (read(p->sync_fd, &go, 1) != 1)
		_exit(127);
	/* The parent keeps its end open for the whole run. If it is closed
	 * now, kiln died — possibly before PR_SET_PDEATHSIG above took effect
	 * (the parent can write both bytes and die before this process first
	 * runs) — so nothing may start. */
	struct pollfd pf = {p->sync_fd, POLLIN, 0};
	if (poll(&pf, 1, 0) < 0 || (pf.revents & (POLLHUP | POLLERR)))
		_exit(127);
	close(p->sync_fd);
	/* A cgroup namespace rooted at our cgroup: /proc/self/cgroup shows "/"
	 * and the host's hierarchy stays out of sight. After the parent moved
	 * us, so the namespace's root is the sandbox's own cgroup. */
	if (unshare(CLONE_NEWCGROUP) < 0)
		fail("unshare(CLONE_NEWCGROUP)", NULL, errno);
	apply_seccomp();

	/* PID 1 stays ours: it reaps orphans (a build that leaves zombies
	 * cannot fill the pid limit with them) and reports the command's
	 * status. vfork: no copy of kiln's page tables (the slowest step of
	 * starting the command otherwise), and unlike glibc's fork() it takes
	 * no locks a thread of the original kiln process may have held. The
	 * command's side writes no memory before exec or _exit. */
	pid_t cmd = vfork();
	if (cmd < 0)
		fail("fork", NULL, errno);
	if (cmd == 0)
		command_main();
	/* The output pipes stay open here until PID 1 exits: kiln then sees
	 * their end and PID 1's exit at once, instead of waking once when the
	 * command closes them and again for the exit (each wake-up is a
	 * scheduler slot on a busy machine). */
	close(p->err_fd);
	for (;;) {
		int st;
		pid_t w = waitpid(-1, &st, 0);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			_exit(1);
		if (w == cmd) {
			ssize_t n = write(p->status_fd, &st, sizeof(st));
			/* Exiting kills every process left in the namespace. */
			_exit(n == sizeof(st) ? 0 : 1);
		}
	}
}
