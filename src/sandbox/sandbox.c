/* sandbox/sandbox.c — the host side: prepare, start, watch, collect, clean up.
 *
 * kiln (host root) prepares everything that needs host privileges or
 * memory allocation — the root mount, bind mounts, cgroups, the seccomp
 * program, argv/envp — then clones PID 1 of the sandbox into new user,
 * mount, PID, network, IPC and UTS namespaces (child.c), writes its id maps,
 * moves it into the cgroup and lets it go. While it runs kiln streams its
 * output, enforces the timeout and watches for cancellation; afterwards it
 * collects the result and removes the cgroups and scratch directories. */
#include "sandbox/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/internal.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/parse.h"

#define DEFAULT_ID_BASE 100000u
#define DEFAULT_ID_COUNT 65536u
#define DEFAULT_MEMORY (8ULL << 30)
#define DEFAULT_CPUS 4.0
#define DEFAULT_PIDS 4096
#define DEFAULT_TMPFS (1ULL << 30)
#define DEFAULT_NOFILE 4096
#define DEFAULT_TIMEOUT 1200
#define DEFAULT_WARNING 900
#define DEFAULT_OUTPUT_LIMIT (64u << 20)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Capabilities the sandbox's root keeps (inside its user namespace only —
 * none of them means anything for host objects, which are owned by ids
 * outside the mapping). Each is what package installation needs; the
 * reasons are in docs/sandbox.md. Everything else is dropped, bounding set
 * included. */
static const int caps_keep[] = {
    CAP_CHOWN,                     /* dpkg/tar restore file owners */
    CAP_DAC_OVERRIDE,              /* root writes files whatever their mode (dpkg, useradd) */
    CAP_FOWNER,                    /* chmod/utime on files root does not own */
    CAP_FSETID,                    /* keep setuid/setgid bits on installed files */
    CAP_KILL,                      /* signal processes of other users in the sandbox */
    CAP_SETUID,                    /* drop to a user (apt's _apt sandbox, su in scripts) */
    CAP_SETGID,       CAP_SETFCAP, /* maintainer scripts setcap binaries (ping) */
    CAP_SYS_CHROOT,                /* maintainer scripts and debootstrap-style tools chroot */
};

void kiln_sandbox_spec_init(struct kiln_sandbox_spec *spec)
{
	memset(spec, 0, sizeof(*spec));
	spec->cancel_fd = -1;
	spec->source_date_epoch = -1;
}

static bool path_ok(const char *p)
{
	return p && p[0] == '/' && strlen(p) < 4000;
}

static bool under(const char *p, const char *dir)
{
	size_t n = strlen(dir);
	return strncmp(p, dir, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

static bool has_dotdot(const char *p)
{
	for (const char *s = p; (s = strstr(s, "..")); s += 2)
		if ((s == p || s[-1] == '/') && (s[2] == '\0' || s[2] == '/'))
			return true;
	return false;
}

int kiln_sandbox_spec_validate(const struct kiln_sandbox_spec *s, struct kiln_error **err)
{
	if (!s->layers || s->n_layers == 0)
		return kiln_error_set(err, EINVAL, "layers: at least one root layer is required");
	for (size_t i = 0; i < s->n_layers; i++) {
		if (!path_ok(s->layers[i]))
			return kiln_error_set(err, EINVAL, "layers[%zu]: must be an absolute path",
			                      i);
		/* overlayfs separates layers with ':' and treats '\\' as an escape. */
		if (strpbrk(s->layers[i], ":\\"))
			return kiln_error_set(err, EINVAL,
			                      "layers[%zu]: must not contain ':' or '\\'", i);
	}
	if (s->upper_dir && (!path_ok(s->upper_dir) || strpbrk(s->upper_dir, ":\\,")))
		return kiln_error_set(err, EINVAL,
		                      "upper_dir: must be an absolute path without ':' ',' '\\'");
	if (s->work_dir && (!path_ok(s->work_dir) || strpbrk(s->work_dir, ":\\,")))
		return kiln_error_set(err, EINVAL,
		                      "work_dir: must be an absolute path without ':' ',' '\\'");
	if (s->work_dir && !s->upper_dir)
		return kiln_error_set(err, EINVAL, "work_dir: needs upper_dir");
	if (s->read_only && s->upper_dir)
		return kiln_error_set(err, EINVAL, "read_only and upper_dir exclude each other");
	for (size_t i = 0; i < s->n_binds; i++) {
		const struct kiln_sandbox_bind *b = &s->binds[i];
		if (!path_ok(b->src))
			return kiln_error_set(err, EINVAL,
			                      "binds[%zu].src: must be an absolute path", i);
		if (!path_ok(b->dst) || has_dotdot(b->dst))
			return kiln_error_set(
			    err, EINVAL, "binds[%zu].dst: must be an absolute path without '..'",
			    i);
		/* Over / would replace the root; over /proc, /dev or /sys it would
		 * undo the masks and the minimal device set. */
		if (strcmp(b->dst, "/") == 0 || under(b->dst, "/proc") || under(b->dst, "/dev") ||
		    under(b->dst, "/sys"))
			return kiln_error_set(err, EINVAL, "binds[%zu].dst: %s is reserved", i,
			                      b->dst);
	}
	if (!s->argv || !s->argv[0] || !s->argv[0][0])
		return kiln_error_set(err, EINVAL, "argv: a command is required");
	for (size_t i = 0; i < s->n_env; i++)
		if (!s->env[i] || !strchr(s->env[i], '=') || s->env[i][0] == '=')
			return kiln_error_set(err, EINVAL, "env[%zu]: must be KEY=VALUE", i);
	if (s->workdir && !path_ok(s->workdir))
		return kiln_error_set(err, EINVAL, "workdir: must be an absolute path");
	if (s->hostname && (strlen(s->hostname) == 0 || strlen(s->hostname) > 64))
		return kiln_error_set(err, EINVAL, "hostname: 1 to 64 characters");
	if (s->cpus < 0 || s->cpus > 1024)
		return kiln_error_set(err, EINVAL, "cpus: must be between 0 and 1024");
	if (s->id_count && (s->id_count > 65536 || (uint64_t)s->uid >= s->id_count ||
	                    (uint64_t)s->gid >= s->id_count))
		return kiln_error_set(err, EINVAL, "uid/gid must lie inside the id mapping");
	if ((s->uid != 0 || s->gid != 0) && (s->uid >= 65536 || s->gid >= 65536) && !s->id_count)
		return kiln_error_set(err, EINVAL, "uid/gid must lie inside the id mapping");
	if (s->id_base && s->id_base < 1000)
		return kiln_error_set(err, EINVAL,
		                      "id_base: mapping onto host system ids is refused");
	return 0;
}

/* --- canceller --------------------------------------------------------- */

struct kiln_sandbox_canceller {
	int fd;
};

int kiln_sandbox_canceller_new(struct kiln_sandbox_canceller **ret, struct kiln_error **err)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "eventfd");
	struct kiln_sandbox_canceller *c = xmalloc(sizeof(*c));
	c->fd = fd;
	*ret = c;
	return 0;
}

int kiln_sandbox_canceller_fd(const struct kiln_sandbox_canceller *c)
{
	return c->fd;
}

void kiln_sandbox_cancel(struct kiln_sandbox_canceller *c)
{
	uint64_t one = 1;
	ssize_t w = write(c->fd, &one, sizeof(one)); /* async-signal-safe */
	(void)w;
}

struct kiln_sandbox_canceller *kiln_sandbox_canceller_free(struct kiln_sandbox_canceller *c)
{
	if (c) {
		safe_close(c->fd);
		free(c);
	}
	return NULL;
}

/* --- result ------------------------------------------------------------ */

char *kiln_sandbox_result_describe(const struct kiln_sandbox_result *r)
{
	if (r->cancelled)
		return xstrdup("cancelled");
	if (r->timed_out)
		return xasprintf("timed out after %u seconds", r->timeout_s);
	/* An OOM kill names the limit: a step that dies of its memory limit
	 * must say so, not only "killed by signal 9", or the recipe's author
	 * looks for a bug instead of raising resources.memory_mb. MB as in
	 * memory_mb: 2^20 bytes. */
	if (r->oom_killed && r->memory_limit) {
		uint64_t mb = r->memory_limit >> 20;
		if (r->term_signal)
			return xasprintf("killed for exceeding the memory limit of %" PRIu64
			                 " MB (out of memory, signal %d)",
			                 mb, r->term_signal);
		return xasprintf("exited with status %d after a process was killed for exceeding "
		                 "the memory limit of %" PRIu64 " MB (out of memory)",
		                 r->exit_code, mb);
	}
	const char *oom = r->oom_killed ? " (out of memory)" : "";
	if (r->term_signal) {
		const char *name = sigabbrev_np(r->term_signal);
		if (name)
			return xasprintf("killed by signal %d (SIG%s)%s", r->term_signal, name,
			                 oom);
		return xasprintf("killed by signal %d%s", r->term_signal, oom);
	}
	return xasprintf("exited with status %d%s", r->exit_code, oom);
}

/* --- helpers ----------------------------------------------------------- */

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Moves fd to >= 3 (the child dup2s onto 0..2) and keeps it close-on-exec. */
static int fd_above_stdio(int fd)
{
	if (fd < 0 || fd > 2)
		return fd;
	int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return n;
}

static int make_pipe(int p[2])
{
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	p[0] = fd_above_stdio(p[0]);
	p[1] = fd_above_stdio(p[1]);
	return p[0] < 0 || p[1] < 0 ? -EMFILE : 0;
}

/* The start handshake: a socket pair, not a pipe, so that kiln's writes can
 * say MSG_NOSIGNAL. A child that failed during setup has closed its end; a
 * pipe write then raised SIGPIPE, which killed `kiln run` before it could
 * report the child's error. */
static int make_sync(int p[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0)
		return -errno;
	p[0] = fd_above_stdio(p[0]);
	p[1] = fd_above_stdio(p[1]);
	return p[0] < 0 || p[1] < 0 ? -EMFILE : 0;
}

static bool send_sync(int fd, char c)
{
	return send(fd, &c, 1, MSG_NOSIGNAL) == 1;
}

static int write_file(const char *path, const char *s)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t n = strlen(s);
	ssize_t w = write(fd, s, n);
	return w < 0 ? -errno : (size_t)w == n ? 0 : -EIO;
}

static int cap_last(void)
{
	static atomic_int cached;
	int c = atomic_load(&cached);
	if (c)
		return c;
	c = CAP_LAST_CAP;
	_cleanup_close_ int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	char buf[16];
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (n > 0) {
		buf[n] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		int v;
		if (kiln_parse_int(buf, 1, 63, &v) == 0)
			c = v;
	}
	atomic_store(&cached, c);
	return c;
}

/* Where kiln's argv and environment strings lie (fields 48-51 of
 * /proc/self/stat): PID 1 overwrites them in its copy of this process. The
 * same in every run of a process, so read once. */
static void arg_area(uintptr_t ret[4])
{
	static atomic_uintptr_t cached[4];
	static atomic_bool done;
	if (!atomic_load(&done)) {
		uintptr_t v[4] = {0};
		_cleanup_close_ int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
		char buf[4096];
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		char *p = NULL;
		if (n > 0) {
			buf[n] = '\0';
			p = strrchr(buf, ')'); /* the name may hold spaces and ')' */
		}
		/* p + 2 is field 3 (state); fields 48..51 follow 45 more. */
		for (int field = 3; p && field <= 51; field++) {
			p += field == 3 ? 2 : 1;
			char *end = p + strcspn(p, " \n");
			char save = *end;
			*end = '\0';
			uint64_t x;
			if (field >= 48 && kiln_parse_u64(p, 10, 0, UINTPTR_MAX, &x) == 0)
				v[field - 48] = (uintptr_t)x;
			*end = save;
			p = *end ? end : NULL;
		}
		for (int i = 0; i < 4; i++)
			atomic_store(&cached[i], v[i]);
		atomic_store(&done, true);
	}
	for (int i = 0; i < 4; i++)
		ret[i] = atomic_load(&cached[i]);
}

/* --- the run ----------------------------------------------------------- */

struct run {
	struct kiln_sandbox_spec s;
	struct sb_cgroup *cg;
	char *work_tmp; /* overlay workdir we created */
	int root_fd;
	struct sb_mount_fd *binds;
	size_t n_binds;
	char **envp;
	char **argv; /* copies for the child: see sb_plan.arg_start */
	char *workdir, *hostname;
	pid_t pid;
	int pidfd;
	int sync_w, err_r, status_r, out_r, errout_r;
	int child_fds[5]; /* the child's ends, closed after clone */
	bool stale_cleaned;
};

static void run_free(struct run *r)
{
	if (r->pid > 0) {
		/* Error path with a live child: kill and reap it. */
		kill(r->pid, SIGKILL);
		while (waitpid(r->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	sb_cgroup_destroy(r->cg);
	safe_close(r->root_fd);
	for (size_t i = 0; i < r->n_binds; i++) {
		safe_close(r->binds[i].fd);
		free((char *)r->binds[i].dst);
	}
	free(r->binds);
	if (r->work_tmp) {
		kiln_rmtree(r->work_tmp);
		free(r->work_tmp);
	}
	strv_free(r->envp);
	strv_free(r->argv);
	free(r->workdir);
	free(r->hostname);
	safe_close(r->pidfd);
	safe_close(r->sync_w);
	safe_close(r->err_r);
	safe_close(r->status_r);
	safe_close(r->out_r);
	safe_close(r->errout_r);
	for (size_t i = 0; i < ELEMENTSOF(r->child_fds); i++)
		safe_close(r->child_fds[i]);
}

static void apply_defaults(struct kiln_sandbox_spec *s)
{
	if (!s->id_base)
		s->id_base = DEFAULT_ID_BASE;
	if (!s->id_count)
		s->id_count = DEFAULT_ID_COUNT;
	if (!s->memory_bytes)
		s->memory_bytes = DEFAULT_MEMORY;
	if (s->cpus <= 0)
		s->cpus = DEFAULT_CPUS;
	if (!s->pids_max)
		s->pids_max = DEFAULT_PIDS;
	if (!s->tmpfs_bytes)
		s->tmpfs_bytes = DEFAULT_TMPFS;
	if (!s->nofile)
		s->nofile = DEFAULT_NOFILE;
	if (!s->timeout_s)
		s->timeout_s = DEFAULT_TIMEOUT;
	if (!s->warning_s)
		s->warning_s = DEFAULT_WARNING;
	if (!s->output_limit)
		s->output_limit = DEFAULT_OUTPUT_LIMIT;
	if (!s->hostname)
		s->hostname = "kiln";
}

struct layer_fds {
	int *fd;
	size_t n;
};

static void layer_fds_closep(struct layer_fds *l)
{
	for (size_t i = 0; i < l->n; i++)
		safe_close(l->fd[i]);
	free(l->fd);
}

/* Opens the directory path into l and appends "/proc/self/fd/N" to out
 * (after a ':' when sep is given). */
static int layer_ref(struct layer_fds *l, const char *path, struct kiln_buf *sep,
                     struct kiln_buf *out)
{
	int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	l->fd[l->n++] = fd;
	if (sep)
		kiln_buf_putc(sep, ':');
	kiln_buf_printf(out, "/proc/self/fd/%d", fd);
	return 0;
}

static int prepare_root(struct run *r, struct kiln_error **err)
{
	const struct kiln_sandbox_spec *s = &r->s;
	unsigned attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
	if (s->n_layers == 1 && !s->upper_dir) {
		/* One read-only layer: a bind is cheaper than overlayfs. Not
		 * recursive: mounts below the layer on the host stay out. */
		r->root_fd = open_tree(AT_FDCWD, s->layers[0], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (r->root_fd < 0)
			return kiln_error_set_errno(err, errno, "root layer %s", s->layers[0]);
		struct mount_attr a = {.attr_set = attrs | MOUNT_ATTR_RDONLY};
		if (mount_setattr(r->root_fd, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
			return kiln_error_set_errno(err, errno, "root layer %s: mount_setattr",
			                            s->layers[0]);
		return 0;
	}
	const char *work = s->work_dir;
	if (s->upper_dir && !work) {
		size_t n = strlen(s->upper_dir);
		while (n > 1 && s->upper_dir[n - 1] == '/')
			n--;
		r->work_tmp = xasprintf("%.*s.kiln-work-XXXXXX", (int)n, s->upper_dir);
		if (!mkdtemp(r->work_tmp)) {
			int e = errno;
			free(r->work_tmp);
			r->work_tmp = NULL;
			return kiln_error_set_errno(
			    err, e, "cannot create the overlay workdir beside %s", s->upper_dir);
		}
		work = r->work_tmp;
	}
	/* overlayfs shows its options in /proc/self/mountinfo, which the build
	 * reads: given as host paths they named the state directory, the build
	 * id and every base. Each directory is opened here and named as
	 * /proc/self/fd/N instead — overlayfs resolves the name once, at
	 * fsconfig, and keeps the string, which says nothing. */
	_cleanup_(layer_fds_closep) struct layer_fds fds = {xcalloc(s->n_layers + 2, sizeof(int)),
	                                                    0};
	_cleanup_buf_ struct kiln_buf lower = KILN_BUF_INIT;
	for (size_t i = 0; i < s->n_layers; i++) {
		int e = layer_ref(&fds, s->layers[i], i ? &lower : NULL, &lower);
		if (e < 0)
			return kiln_error_set_errno(err, -e, "root layer %s", s->layers[i]);
	}
	_cleanup_free_ char *lowerdirs = kiln_buf_steal(&lower, NULL);
	_cleanup_buf_ struct kiln_buf upper = KILN_BUF_INIT;
	_cleanup_buf_ struct kiln_buf workb = KILN_BUF_INIT;
	if (s->upper_dir) {
		int e = layer_ref(&fds, s->upper_dir, NULL, &upper);
		if (e >= 0)
			e = layer_ref(&fds, work, NULL, &workb);
		if (e < 0)
			return kiln_error_set_errno(err, -e, "overlay upper %s", s->upper_dir);
	}
	_cleanup_free_ char *upperdir = s->upper_dir ? kiln_buf_steal(&upper, NULL) : NULL;
	_cleanup_free_ char *workdir = s->upper_dir ? kiln_buf_steal(&workb, NULL) : NULL;
	_cleanup_close_ int fs = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fs < 0)
		return kiln_error_set_errno(err, errno, "overlayfs");
	struct {
		const char *k, *v, *named;
	} opts[] = {{"lowerdir", lowerdirs, s->layers[0]},
	            {"upperdir", upperdir, s->upper_dir},
	            {"workdir", workdir, work}};
	for (size_t i = 0; i < ELEMENTSOF(opts); i++)
		if (opts[i].v && fsconfig(fs, FSCONFIG_SET_STRING, opts[i].k, opts[i].v, 0) < 0)
			return kiln_error_set_errno(err, errno, "overlayfs %s (%s)", opts[i].k,
			                            opts[i].named);
	/* An upper layer on another file system than the lower ones (the
	 * image pipeline's per-build tmpfs): without xino a file reports its
	 * layer's st_dev, not the root's, and every walk that stays on one
	 * file system (find -xdev, du -x, nftw FTW_MOUNT) silently skips it.
	 * The composed inode numbers are 64-bit; 32-bit programs, which could
	 * see EOVERFLOW, cannot run here (seccomp kills non-native ABIs). */
	if (upperdir && fsconfig(fs, FSCONFIG_SET_STRING, "xino", "on", 0) < 0)
		return kiln_error_set_errno(err, errno, "overlayfs xino=on");
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return kiln_error_set_errno(err, errno, "cannot mount overlayfs (top layer %s)",
		                            s->layers[0]);
	if (s->read_only || !s->upper_dir)
		attrs |= MOUNT_ATTR_RDONLY;
	r->root_fd = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
	if (r->root_fd < 0)
		return kiln_error_set_errno(err, errno, "fsmount overlayfs");
	return 0;
}

static int prepare_binds(struct run *r, struct kiln_error **err)
{
	const struct kiln_sandbox_spec *s = &r->s;
	r->binds = xcalloc(s->n_binds ? s->n_binds : 1, sizeof(*r->binds));
	for (size_t i = 0; i < s->n_binds; i++) {
		const struct kiln_sandbox_bind *b = &s->binds[i];
		struct stat st;
		if (stat(b->src, &st) < 0)
			return kiln_error_set_errno(err, errno, "bind source %s", b->src);
		/* Opened here, as host root: the sandbox's ids could not reach a
		 * source under a 0700 directory, and a path the child resolved
		 * itself could be swapped for a symlink in between. */
		int fd = open_tree(AT_FDCWD, b->src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (fd < 0)
			return kiln_error_set_errno(err, errno, "bind source %s", b->src);
		/* dst copied: the child overwrites kiln's argv, where it may point. */
		r->binds[r->n_binds++] =
		    (struct sb_mount_fd){fd, xstrdup(b->dst), S_ISDIR(st.st_mode)};
		/* nosuid,nodev always: a writable bind is how a build would plant a
		 * setuid binary or device node for the host to trip over. */
		struct mount_attr a = {.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
		                                   (b->read_only ? MOUNT_ATTR_RDONLY : 0)};
		if (mount_setattr(fd, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
			return kiln_error_set_errno(err, errno, "bind %s: mount_setattr", b->src);
	}
	return 0;
}

static char **build_env(const struct kiln_sandbox_spec *s)
{
	/* A clean environment: nothing of kiln's (tokens, proxies, paths)
	 * leaks in, and the variables that change tool output are pinned. */
	size_t cap = s->n_env + 8, n = 0;
	char **env = xcalloc(cap, sizeof(char *));
	env[n++] = xstrdup("PATH=" DEFAULT_PATH);
	env[n++] = xstrdup(s->uid == 0 ? "HOME=/root" : "HOME=/");
	env[n++] = xstrdup("LC_ALL=C");
	env[n++] = xstrdup("TZ=UTC");
	if (s->source_date_epoch >= 0)
		env[n++] = xasprintf("SOURCE_DATE_EPOCH=%" PRId64, s->source_date_epoch);
	for (size_t i = 0; i < s->n_env; i++) {
		size_t kl = (size_t)(strchr(s->env[i], '=') - s->env[i]) + 1;
		size_t j = 0;
		while (j < n && strncmp(env[j], s->env[i], kl) != 0)
			j++;
		if (j < n)
			free(env[j]);
		else
			n++;
		env[j] = xstrdup(s->env[i]);
	}
	env[n] = NULL;
	return env;
}

static const char *env_path(char **env)
{
	for (char **e = env; *e; e++)
		if (strncmp(*e, "PATH=", 5) == 0)
			return *e + 5;
	return DEFAULT_PATH;
}

static int write_id_maps(struct run *r, struct kiln_error **err)
{
	/* Root of the sandbox = host id_base, an id that owns nothing on the
	 * host. kiln (root in the initial namespace) writes the maps itself,
	 * so no /etc/subuid entry or newuidmap helper is involved. setgroups
	 * stays allowed: package scripts drop to service users with it. */
	char path[64], map[64];
	snprintf(map, sizeof(map), "0 %" PRIu32 " %" PRIu32 "\n", r->s.id_base, r->s.id_count);
	static const char *const files[] = {"uid_map", "gid_map"};
	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		snprintf(path, sizeof(path), "/proc/%d/%s", (int)r->pid, files[i]);
		int e = write_file(path, map);
		if (e < 0)
			return kiln_error_set_errno(err, -e, "cannot write %s", path);
	}
	return 0;
}

struct stream {
	int *fd;
	enum kiln_sandbox_stream which;
	uint64_t *count;
	bool *truncated;
};

/* Reads what is available; returns false at EOF (or error). */
static bool pump(struct run *r, struct stream *st)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(*st->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0)
			return false;
		uint64_t before = *st->count;
		*st->count += (uint64_t)n;
		if (before < r->s.output_limit) {
			size_t pass = (size_t)n;
			if (before + pass > r->s.output_limit) {
				pass = (size_t)(r->s.output_limit - before);
				*st->truncated = true;
			}
			if (r->s.on_output)
				r->s.on_output(r->s.userdata, st->which, buf, pass);
		} else {
			*st->truncated = true;
		}
	}
}

static void kill_sandbox(struct run *r)
{
	/* Everything dies: SIGKILL also ends stopped processes, and ones that
	 * daemonized (setsid, double fork) are still in the cgroup and in the
	 * PID namespace, whose init we kill last. */
	sb_cgroup_kill(r->cg);
	syscall(SYS_pidfd_send_signal, r->pidfd, SIGKILL, NULL, 0);
}

static int supervise(struct run *r, struct kiln_sandbox_result *res, int *ret_status,
                     struct sb_child_error *ce, size_t *ce_len)
{
	uint64_t start = now_usec();
	uint64_t warn_at = start + (uint64_t)r->s.warning_s * 1000000u;
	uint64_t kill_at = start + (uint64_t)r->s.timeout_s * 1000000u;
	bool warned = r->s.warning_s >= r->s.timeout_s || !r->s.on_warning, killed = false;
	struct stream out = {&r->out_r, KILN_SANDBOX_STDOUT, &res->stdout_bytes,
	                     &res->stdout_truncated};
	struct stream errs = {&r->errout_r, KILN_SANDBOX_STDERR, &res->stderr_bytes,
	                      &res->stderr_truncated};
	struct rusage ru = {0};
	int status = 0;
	for (;;) {
		struct pollfd p[5] = {
		    {r->out_r, POLLIN, 0},
		    {r->errout_r, POLLIN, 0},
		    /* The error pipe is read once PID 1 is gone (below): polling
		     * it would wake kiln when the command execs (close-on-exec
		     * closes it), right when the command and PID 1 need the CPUs. */
		    {-1, 0, 0},
		    {r->pidfd, POLLIN, 0},
		    {killed ? -1 : r->s.cancel_fd, POLLIN, 0},
		};
		uint64_t now = now_usec();
		uint64_t next = killed ? now + 1000000u : warned ? kill_at : warn_at;
		int ms = next > now ? (int)((next - now + 999) / 1000) : 0;
		if (poll(p, ELEMENTSOF(p), ms) < 0 && errno != EINTR)
			return -errno;
		if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(r, &out))
			r->out_r = safe_close(r->out_r);
		if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(r, &errs))
			r->errout_r = safe_close(r->errout_r);
		if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(r->err_r, (char *)ce + *ce_len, sizeof(*ce) - *ce_len);
			if (n > 0)
				*ce_len += (size_t)n;
			else if (n == 0 || errno != EINTR)
				r->err_r = safe_close(r->err_r);
		}
		if (!killed && p[4].revents) {
			res->cancelled = true;
			killed = true;
			kill_sandbox(r);
		}
		now = now_usec();
		if (!warned && now >= warn_at) {
			warned = true;
			r->s.on_warning(r->s.userdata, r->s.warning_s);
		}
		if (!killed && now >= kill_at) {
			res->timed_out = true;
			killed = true;
			kill_sandbox(r);
		}
		if (p[3].revents & POLLIN) {
			pid_t w;
			while ((w = wait4(r->pid, &status, 0, &ru)) < 0 && errno == EINTR)
				;
			if (w == r->pid)
				r->pid = 0;
			break;
		}
	}
	/* Every process of the sandbox is gone (they die with PID 1), so what
	 * is left in the pipes is all there is: drain without blocking. */
	if (r->out_r >= 0)
		pump(r, &out);
	if (r->errout_r >= 0)
		pump(r, &errs);
	if (r->err_r >= 0) {
		ssize_t n = read(r->err_r, (char *)ce + *ce_len, sizeof(*ce) - *ce_len);
		if (n > 0)
			*ce_len += (size_t)n;
	}
	res->wall_usec = now_usec() - start;
	res->cpu_usec = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
	                (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
	*ret_status = status;
	return 0;
}

static int start_and_wait(struct run *r, struct kiln_sandbox_result *res, struct kiln_error **err)
{
	const struct kiln_sandbox_spec *s = &r->s;
	static atomic_uint counter;
	char id[48];
	snprintf(id, sizeof(id), "%d-%u", (int)getpid(), atomic_fetch_add(&counter, 1));

	const struct sock_fprog *filter, *personality;
	int e = sb_seccomp_get(&filter, &personality, err);
	if (e < 0)
		return e;
	if ((e = prepare_root(r, err)) < 0 || (e = prepare_binds(r, err)) < 0)
		return e;
	r->envp = build_env(s);
	size_t argc = 0;
	while (s->argv[argc])
		argc++;
	r->argv = xcalloc(argc + 1, sizeof(char *));
	for (size_t i = 0; i < argc; i++)
		r->argv[i] = xstrdup(s->argv[i]);
	r->workdir = s->workdir ? xstrdup(s->workdir) : NULL;
	r->hostname = xstrdup(s->hostname);
	uintptr_t area[4];
	arg_area(area);

	int sync[2], errp[2], status[2], out[2], errout[2];
	if ((e = make_sync(sync)) < 0 || (e = make_pipe(errp)) < 0 || (e = make_pipe(status)) < 0 ||
	    (e = make_pipe(out)) < 0 || (e = make_pipe(errout)) < 0)
		return kiln_error_set_errno(err, -e, "pipe");
	r->sync_w = sync[1], r->err_r = errp[0], r->status_r = status[0], r->out_r = out[0],
	r->errout_r = errout[0];
	int child_fds[5] = {sync[0], errp[1], status[1], out[1], errout[1]};
	memcpy(r->child_fds, child_fds, sizeof(child_fds));
	fcntl(r->out_r, F_SETFL, O_NONBLOCK);
	fcntl(r->errout_r, F_SETFL, O_NONBLOCK);
	fcntl(r->status_r, F_SETFL, O_NONBLOCK);

	uint64_t keep = 0;
	for (size_t i = 0; i < ELEMENTSOF(caps_keep); i++)
		keep |= 1ULL << caps_keep[i];
	char tmpfs_size[32];
	snprintf(tmpfs_size, sizeof(tmpfs_size), "%" PRIu64, s->tmpfs_bytes);
	struct sb_plan plan = {
	    .root_fd = r->root_fd,
	    .binds = r->binds,
	    .n_binds = r->n_binds,
	    .sync_fd = sync[0],
	    .sync_parent_fd = sync[1],
	    .err_fd = errp[1],
	    .status_fd = status[1],
	    .out_fd = out[1],
	    .errout_fd = errout[1],
	    .host_network = s->host_network,
	    .no_sys = s->no_sys,
	    .hostname = r->hostname,
	    .tmpfs_size = tmpfs_size,
	    .argv = r->argv,
	    .envp = r->envp,
	    .path = env_path(r->envp),
	    .uid = s->uid,
	    .gid = s->gid,
	    .workdir = r->workdir,
	    .nofile = s->nofile,
	    .cap_last = cap_last(),
	    .caps_keep = keep,
	    .seccomp = filter,
	    .seccomp_personality = personality,
	    .arg_start = area[0],
	    .arg_end = area[1],
	    .env_start = area[2],
	    .env_end = area[3],
	};

	/* The cgroups first, so that PID 1 is born in them (sb_cgroup_clone): no
	 * pid is ever written to cgroup.procs, which waits for an RCU grace
	 * period (5-40 ms here). Nothing of the sandbox runs outside its
	 * limits. The cgroup namespace is unshared by the child once it runs;
	 * the others are created here, all at once. Without CLONE_VM the clone
	 * is fork() with namespace flags: the child is PID 1 of the new PID
	 * namespace and runs on a copy of this stack. */
	if ((e = sb_cgroup_create(id, s->memory_bytes, s->cpus, s->pids_max, &r->cg, err)) < 0)
		return e;
	unsigned long flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC |
	                      CLONE_NEWUTS | (s->host_network ? 0 : CLONE_NEWNET) | SIGCHLD;
	uint64_t t0 = now_usec();
	bool joined = false;
	pid_t pid = sb_cgroup_clone(r->cg, flags, &r->pidfd, &joined);
	if (pid < 0)
		return kiln_error_set_errno(err, errno, "clone");
	if (pid == 0)
		sb_child_main(&plan);
	r->pid = pid;
	for (size_t i = 0; i < ELEMENTSOF(r->child_fds); i++)
		r->child_fds[i] = safe_close(r->child_fds[i]);
	if ((e = write_id_maps(r, err)) < 0)
		return e;
	/* Phase 1: the child sets up its mounts; phase 2 lets it start the
	 * command once it is in its cgroups — at once, unless clone3 was
	 * refused and it must be moved now. */
	if (!send_sync(r->sync_w, '1'))
		return kiln_error_set_errno(err, errno, "cannot start the sandbox");
	if (!joined && (e = sb_cgroup_attach(r->cg, pid, err)) < 0)
		return e;
	/* EPIPE: the child failed during its setup and is gone; supervise()
	 * below collects the error it reported. */
	if (!send_sync(r->sync_w, '2') && errno != EPIPE)
		return kiln_error_set_errno(err, errno, "cannot start the sandbox");
	/* Orphans of a kiln killed with SIGKILL are removed now, while the
	 * command runs, instead of before the clone where it delayed the start.
	 * (Our own cgroup's name holds our pid, which no orphan can have.) */
	kiln_sandbox_cleanup_stale();
	r->stale_cleaned = true;
	/* sync_w stays open until the end: the child checks it for a dead kiln. */

	int st = 0;
	struct sb_child_error ce = {0};
	size_t ce_len = 0;
	if ((e = supervise(r, res, &st, &ce, &ce_len)) < 0)
		return kiln_error_set_errno(err, -e, "poll");
	res->wall_usec = now_usec() - t0;
	res->timeout_s = s->timeout_s;
	res->oom_killed = sb_cgroup_oom_killed(r->cg);
	res->memory_limit = s->memory_bytes;
	res->peak_memory = sb_cgroup_peak_memory(r->cg);
	int cmd_status = 0;
	bool have_status = read(r->status_r, &cmd_status, sizeof(cmd_status)) == sizeof(cmd_status);

	if (ce_len == sizeof(ce) && !res->timed_out && !res->cancelled) {
		ce.what[sizeof(ce.what) - 1] = '\0';
		return kiln_error_set_errno(err, ce.err, "%s", ce.what);
	}
	if (have_status && !res->timed_out && !res->cancelled) {
		res->exit_code = WIFEXITED(cmd_status) ? WEXITSTATUS(cmd_status) : -1;
		res->term_signal = WIFSIGNALED(cmd_status) ? WTERMSIG(cmd_status) : 0;
	} else if (!have_status && !res->timed_out && !res->cancelled && WIFEXITED(st)) {
		/* PID 1 exited without a status: it failed before the command ran. */
		return kiln_error_set(err, EIO, "sandbox init failed (status %d)", WEXITSTATUS(st));
	} else {
		/* Killed from outside (timeout, cancel) or PID 1 itself was killed
		 * (the OOM killer may pick it): the whole tree got SIGKILL. */
		res->exit_code = -1;
		res->term_signal = SIGKILL;
	}
	return 0;
}

/* Whose fault a finished run is, in the order the causes override each
 * other: a cancel or a timeout kills with SIGKILL, so the signal alone does
 * not say it; a failure after an OOM kill is the limit's doing (a command
 * that survived one of its processes being killed and exited 0 did not
 * fail). */
static void classify(struct kiln_sandbox_result *res)
{
	res->failed =
	    res->cancelled || res->timed_out || res->exit_code != 0 || res->term_signal != 0;
	res->kind = res->cancelled                      ? KILN_ERR_CANCELLED
	            : res->timed_out || res->oom_killed ? KILN_ERR_LIMIT
	                                                : KILN_ERR_USER;
}

int kiln_sandbox_run(const struct kiln_sandbox_spec *spec, struct kiln_sandbox_result *ret,
                     struct kiln_error **err)
{
	int e = kiln_sandbox_spec_validate(spec, err);
	if (e < 0)
		return e;
	if (geteuid() != 0)
		return kiln_error_set(err, EPERM, "the sandbox needs root on the host");
	struct run r = {
	    .s = *spec,
	    .root_fd = -1,
	    .pidfd = -1,
	    .sync_w = -1,
	    .err_r = -1,
	    .status_r = -1,
	    .out_r = -1,
	    .errout_r = -1,
	    .child_fds = {-1, -1, -1, -1, -1},
	};
	apply_defaults(&r.s);
	struct kiln_sandbox_result res = {0};
	e = start_and_wait(&r, &res, err);
	run_free(&r);
	if (!r.stale_cleaned)
		kiln_sandbox_cleanup_stale(); /* the run failed before it got there */
	if (e < 0)
		return e;
	classify(&res);
	*ret = res;
	return 0;
}

void kiln_sandbox_cleanup_stale(void)
{
	sb_cgroup_cleanup_stale();
}

char *kiln_sandbox_subid_overlaps(const char *text, size_t len)
{
	const uint64_t lo = DEFAULT_ID_BASE, hi = (uint64_t)DEFAULT_ID_BASE + DEFAULT_ID_COUNT;
	_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT;
	for (size_t i = 0; i < len;) {
		const char *line = text + i;
		const char *nl = memchr(line, '\n', len - i);
		size_t n = nl ? (size_t)(nl - line) : len - i;
		i += n + 1;
		const char *c1 = memchr(line, ':', n);
		const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - line)) : NULL;
		if (!c2 || line[0] == '#' || c1 == line)
			continue;
		_cleanup_free_ char *start_s = xstrndup(c1 + 1, (size_t)(c2 - c1 - 1));
		_cleanup_free_ char *count_s = xstrndup(c2 + 1, n - (size_t)(c2 + 1 - line));
		uint64_t start, count;
		if (kiln_parse_u64(start_s, 10, 0, UINT32_MAX, &start) != 0 ||
		    kiln_parse_u64(count_s, 10, 1, UINT32_MAX, &count) != 0)
			continue;
		if (start >= hi || start + count <= lo)
			continue;
		kiln_buf_printf(&out, "%s%.*s (%" PRIu64 "-%" PRIu64 ")", out.len ? ", " : "",
		                (int)(c1 - line), line, start, start + count - 1);
	}
	return out.len ? kiln_buf_steal(&out, NULL) : NULL;
}
