/* The build: its context (struct build, image/internal.h) and the driver
 * that walks the pipeline's phase table.
 *
 * The phases live by concern in packages.c (fetch, lock, install), steps.c
 * (overlays, context, steps, time zone, locale, healthcheck), hygiene.c
 * (initramfs repack, normalize, clamping, the leak scan) and outputs.c (tar,
 * squashfs, ISO, SBOM, manifest, cache record). This file owns what they
 * share: the time budget every sandbox run is held to, cancellation,
 * progress, the merged mount, and the scratch directory's life.
 *
 * Isolation: every command that runs image code (apt, dpkg maintainer
 * scripts, RUN steps) runs in the sandbox with no network, over an overlay
 * whose upper layer is this build's alone; only the fetch phase gets the
 * host network (packages.c says what it may do). */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "image/backend.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/walk.h"

double kiln_image_elapsed_s(const struct build *b)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - b->start.tv_sec) +
	       (double)(now.tv_nsec - b->start.tv_nsec) / 1e9;
}

static void forward_log(void *ud, const char *data, size_t len)
{
	struct build *b = ud;
	kiln_tail_feed(&b->tail, data, len);
	if (b->o->hooks.log)
		b->o->hooks.log(b->o->hooks.userdata, data, len);
}

static void build_warning(void *ud, unsigned elapsed)
{
	struct build *b = ud;
	if (b->warned)
		return;
	b->warned = true;
	unsigned total = (unsigned)kiln_image_elapsed_s(b);
	kiln_image_logf(&b->o->hooks,
	                "==> warning: the build has been running for %u seconds (timeout %" PRId64
	                " s)\n",
	                total, b->r->resources.timeout_s);
	if (b->o->hooks.warning)
		b->o->hooks.warning(b->o->hooks.userdata, total);
	(void)elapsed;
}

void kiln_image_progress(struct build *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *what = xvasprintf(fmt, ap);
	va_end(ap);
	b->step++;
	kiln_image_logf(&b->o->hooks, "==> [%u/%u] %s\n", b->step, b->total, what);
	if (b->o->hooks.progress)
		b->o->hooks.progress(b->o->hooks.userdata, b->step, b->total, what);
}

bool kiln_image_cancelled(const struct build *b)
{
	if (b->o->hooks.cancel_fd < 0)
		return false;
	struct pollfd p = {b->o->hooks.cancel_fd, POLLIN, 0};
	return poll(&p, 1, 0) > 0;
}

/* Whole seconds, rounded up: a build is killed at its limit, not up to a
 * second before it while saying "after N seconds". x >= 0. */
unsigned kiln_image_secs_up(double x)
{
	unsigned s = (unsigned)x;
	return s + (x > (double)s);
}

int kiln_image_check_disk(const struct kiln_recipe *r, int64_t max_disk_mb, struct kiln_error **err)
{
	int64_t max = max_disk_mb > 0 ? max_disk_mb : KILN_DISK_MB_OPERATOR_DEFAULT;
	if (r->resources.disk_mb <= max)
		return 0;
	return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
	                           "resources.disk_mb: %" PRId64
	                           " is over this host's maximum of %" PRId64 " MB",
	                           r->resources.disk_mb, max);
}

/* Whether the build's upper layer is (all but) full: then a failed command
 * failed for want of space, and the message says which limit. */
static bool layer_full(const struct build *b)
{
	struct statfs st;
	if (!b->layer_mounted || statfs(b->layer, &st) < 0)
		return false;
	uint64_t avail = (uint64_t)st.f_bavail * (uint64_t)st.f_bsize;
	uint64_t size = (uint64_t)st.f_blocks * (uint64_t)st.f_bsize;
	return avail < (UINT64_C(1) << 20) || avail < size / 100 || st.f_ffree == 0;
}

int kiln_image_run_timed(struct build *b, struct kiln_image_run *r, unsigned step_limit,
                         struct kiln_error **err)
{
	if (r->upper && kiln_image_clamp_upper(b, err) < 0)
		return -EIO;
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	double el = kiln_image_elapsed_s(b);
	double left = (double)b->r->resources.timeout_s - el;
	if (left < 1)
		return kiln_error_set_kind(err, KILN_ERR_LIMIT, ETIME,
		                           "Build timed out after %" PRId64 " seconds",
		                           b->r->resources.timeout_s);
	unsigned t = kiln_image_secs_up(left);
	bool build_limit = true;
	if (step_limit && step_limit < t) {
		t = step_limit;
		build_limit = false;
	}
	r->timeout_s = t;
	double warn_in = (double)b->r->resources.warning_s - el;
	unsigned warn_t = warn_in >= 1 ? kiln_image_secs_up(warn_in) : 0;
	r->warning_s = !b->warned && warn_t && warn_t < t ? warn_t : 0;
	if (!b->warned && warn_in < 1)
		build_warning(b, 0);
	r->epoch = b->r->source_date_epoch;
	/* The recipe's limits hold for every sandbox run of the build (fetch,
	 * install, steps, healthcheck): they were ignored, and a build
	 * declared at 64 MB held 400 MB with the 8 GiB / 4 CPU defaults. */
	r->memory_bytes = (uint64_t)b->r->resources.memory_mb << 20;
	r->cpus = (double)b->r->resources.cpus;
	_cleanup_error_ struct kiln_error *e = NULL;
	int rc = kiln_image_sandbox(&b->hooks, r, &e);
	/* A command that failed (USER) while its layer is full failed of the
	 * disk limit (LIMIT). */
	if (rc < 0 && kiln_error_kind(e) == KILN_ERR_USER && r->upper && layer_full(b)) {
		/* "step 2 (RUN dd ...): disk limit of 64 MB reached (...): exited
		 * with status 1": the sandbox's message without its own prefix. */
		const char *why = e ? e->msg : "failed";
		size_t n = strlen(r->what);
		if (strncmp(why, r->what, n) == 0 && strncmp(why + n, ": ", 2) == 0)
			why += n + 2;
		return kiln_error_set_kind(err, KILN_ERR_LIMIT, ENOSPC,
		                           "%s: disk limit of %" PRId64
		                           " MB reached (resources.disk_mb): %s",
		                           r->what, b->r->resources.disk_mb, why);
	}
	/* The sandbox's timeout was the build's when that was the shorter one
	 * (a LIMIT that is a timeout, not an OOM kill). */
	if (rc < 0 && build_limit && kiln_image_timed_out(e))
		return kiln_error_set_kind(err, KILN_ERR_LIMIT, ETIME,
		                           "Build timed out after %" PRId64 " seconds",
		                           b->r->resources.timeout_s);
	if (rc < 0 && err && !*err)
		*err = TAKE_PTR(e);
	return rc;
}

int kiln_image_script(struct build *b, const char *what, const char *script,
                      const char *const *extra_args, const struct kiln_sandbox_bind *binds,
                      size_t n_binds, struct kiln_buf *capture, unsigned step_limit,
                      struct kiln_error **err)
{
	const char *argv[16] = {"/bin/sh", "-c", script, "kiln"};
	size_t a = 4;
	for (size_t i = 0; extra_args && extra_args[i] && a < 15; i++)
		argv[a++] = extra_args[i];
	argv[a] = NULL;
	const char *layers[] = {b->base_tree};
	struct kiln_image_run r = {
	    .what = what,
	    .layers = layers,
	    .n_layers = 1,
	    .upper = b->upper,
	    .binds = binds,
	    .n_binds = n_binds,
	    .argv = argv,
	    .capture = capture,
	};
	return kiln_image_run_timed(b, &r, step_limit, err);
}

/* The build's own file system for everything its commands write: a tmpfs
 * of resources.disk_mb at builds/<id>/layer, in a private mount namespace
 * of this thread (the sandboxes and host tools the build starts inherit
 * it), holding the upper layer and every overlayfs workdir.
 *  - disk: a step filling it gets ENOSPC at disk_mb (and the message says
 *    so) instead of filling the state directory's disk (issue 11, 10b);
 *  - setuid: the upper layer's files are owned by the sandbox's ids, and a
 *    step can leave a setuid-100000 binary there. The host's mount table
 *    never shows this mount, so no host path leads to those files (the
 *    plain directory under it is empty), and nosuid,nodev would void the
 *    bit and any device node even through a path that did (issue 11, 2);
 *  - cleanup: unmounting discards the layer whatever a step left in it (a
 *    tree deeper than PATH_MAX included), and a killed kiln's mount dies
 *    with its namespace. */
static int mount_layer(struct build *b, struct kiln_error **err)
{
	/* A private mount namespace for this thread: the layer and the merged
	 * view are never visible to the host and disappear with kiln, even on
	 * SIGKILL. */
	if (unshare(CLONE_NEWNS) < 0)
		return kiln_error_set_errno(err, errno, "unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return kiln_error_set_errno(err, errno, "cannot make mounts private");
	if (mkdir(b->layer, 0700) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", b->layer);
	/* nr_inodes: an inode costs kernel memory that size= does not count,
	 * and tmpfs's default (half the RAM's pages) let a step of empty files
	 * take far more than disk_mb. One inode per 16 KB of disk_mb, at
	 * least 16384 (docs/sandbox.md). */
	int64_t inodes = b->r->resources.disk_mb * 64;
	_cleanup_free_ char *opts =
	    xasprintf("size=%" PRId64 "m,nr_inodes=%" PRId64 ",mode=0700,uid=0,gid=0",
	              b->r->resources.disk_mb, inodes < 16384 ? 16384 : inodes);
	if (mount("kiln-build", b->layer, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot mount the build's layer",
		                            b->layer);
	b->layer_mounted = true;
	return 0;
}

int kiln_image_mount_merged(struct build *b, struct kiln_error **err)
{
	if (mkdir(b->merged, 0755) < 0 || mkdir(b->work, 0700) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", b->merged);
	/* xino=on: the upper layer is on the build's tmpfs, the base on the
	 * state directory's disk; without it the files of each report their
	 * layer's st_dev, and the walks over merged that stay on one file
	 * system (clamping, the tree listing) skip them (sandbox.c says more). */
	_cleanup_free_ char *opts = xasprintf("lowerdir=%s,upperdir=%s,workdir=%s,xino=on",
	                                      b->base_tree, b->upper, b->work);
	if (mount("overlay", b->merged, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
		return kiln_error_set_errno(err, errno, "cannot mount the image's merged root");
	b->mounted = true;
	b->rootfd = open(b->merged, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (b->rootfd < 0)
		return kiln_error_set_errno(err, errno, "%s", b->merged);
	return 0;
}

static void build_clear(struct build *b)
{
	safe_close(b->rootfd);
	if (b->mounted)
		umount2(b->merged, MNT_DETACH);
	if (b->layer_mounted)
		umount2(b->layer, MNT_DETACH);
	if (b->scratch)
		kiln_rmtree(b->scratch);
	safe_close(b->lock_fd);
	free(b->base_tree);
	free(b->scratch);
	free(b->layer);
	free(b->upper);
	free(b->debs);
	free(b->merged);
	free(b->work);
	free(b->squashfs);
	kiln_outdir_close(&b->out);
	free(b->context);
	free(b->workdir);
	for (size_t i = 0; i < b->n_env; i++)
		free(b->env[i]);
	free(b->env);
	kiln_image_pkglist_clear(&b->lock);
	kiln_image_pkglist_clear(&b->installed);
	kiln_image_result_free(b->res);
}

struct kiln_image_result *kiln_image_result_free(struct kiln_image_result *r)
{
	if (!r)
		return NULL;
	for (size_t i = 0; i < r->n_artifacts; i++)
		free(r->artifacts[i].name);
	free(r->artifacts);
	free(r->tree);
	free(r);
	return NULL;
}

/* A build holds an exclusive flock on builds/<id>/.lock for its whole life.
 * A directory whose lock can be taken belongs to a kiln that died (SIGKILL,
 * power loss): its scratch is removed. One without a lock file is removed
 * once it is older than ten minutes (a kiln killed between mkdir and lock). */
void kiln_image_cleanup_stale(const char *state_dir)
{
	_cleanup_free_ char *dir = xasprintf("%s/builds", state_dir);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *p = xasprintf("%s/%s", dir, de->d_name);
		_cleanup_free_ char *lk = xasprintf("%s/.lock", p);
		_cleanup_close_ int fd = open(lk, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		bool stale;
		if (fd >= 0) {
			stale = flock(fd, LOCK_EX | LOCK_NB) == 0;
		} else {
			struct stat st;
			stale = lstat(p, &st) == 0 && time(NULL) - st.st_mtime > 600;
		}
		if (stale)
			kiln_rmtree(p);
	}
	closedir(d);
}

static bool path_safe_for_mount(const char *p)
{
	/* overlayfs options are comma separated and ':' separates layers. */
	return !strpbrk(p, ",:\\\n");
}

/* ---- the size of the image ------------------------------------------------ */

static int add_size(const struct kiln_walk_entry *e, void *ud)
{
	uint64_t *sum = ud;
	if (S_ISREG(e->st->st_mode))
		*sum += (uint64_t)e->st->st_size;
	return 0;
}

/* The disk limit holds for what the image's files say they hold, not only
 * for the blocks they take: `truncate -s 3G /big` takes no block of the
 * layer, but the tarball, the ext4 image (sized from st_size) and the
 * store's copy (which does not keep holes) would each write 3 GB, in
 * kiln's own process and past the build's timeout (issue 11 review, item
 * 1). So before any output is written, the regular files' st_size must add
 * up to no more than resources.disk_mb. */
static int phase_size(struct build *b, struct kiln_error **err)
{
	uint64_t sum = 0;
	int rc = kiln_walk(b->rootfd, ".", 0, add_size, &sum);
	if (rc < 0)
		return kiln_error_set_errno(err, -rc, "measuring the image's files");
	uint64_t max = (uint64_t)b->r->resources.disk_mb << 20;
	if (sum <= max)
		return 0;
	return kiln_error_set_kind(err, KILN_ERR_LIMIT, EFBIG,
	                           "the image's files add up to %" PRIu64
	                           " MB, over the disk limit of %" PRId64 " MB (resources.disk_mb)",
	                           (sum + (1u << 20) - 1) >> 20, b->r->resources.disk_mb);
}

/* Between phases: the output phases run in kiln's own process, not in a
 * timed sandbox, so the build's timeout and a cancel are checked here too
 * (a slow output phase must not run the next one past the limit). */
static int check_deadline(const struct build *b, struct kiln_error **err)
{
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	if (kiln_image_elapsed_s(b) >= (double)b->r->resources.timeout_s)
		return kiln_error_set_kind(err, KILN_ERR_LIMIT, ETIME,
		                           "Build timed out after %" PRId64 " seconds",
		                           b->r->resources.timeout_s);
	return 0;
}

/* ---- the phase table ------------------------------------------------------ */

static bool always(const struct build *b)
{
	(void)b;
	return true;
}
static bool has_context(const struct build *b)
{
	return b->o->context_path != NULL;
}
/* Phases with nothing to do on this recipe are neither run nor printed
 * (issue 14: "fetch 0 packages" on busybox). */
static bool has_packages(const struct build *b)
{
	return b->r->n_packages > 0;
}
static bool has_files(const struct build *b)
{
	return b->r->n_files > 0;
}
static bool has_steps(const struct build *b)
{
	return b->r->n_steps > 0;
}
static bool has_healthcheck(const struct build *b)
{
	return b->r->healthcheck != NULL;
}
static bool wants_tar(const struct build *b)
{
	return b->r->outputs & KILN_OUTPUT_TAR;
}
/* The ISO is made from the squashfs, so it wants one too. */
static bool wants_squashfs(const struct build *b)
{
	return b->r->outputs & (KILN_OUTPUT_SQUASHFS | KILN_OUTPUT_ISO);
}
static bool wants_iso(const struct build *b)
{
	return b->r->outputs & KILN_OUTPUT_ISO;
}

static bool wants_ext4(const struct build *b)
{
	return b->r->outputs & KILN_OUTPUT_EXT4;
}

static bool wants_oci(const struct build *b)
{
	return b->r->outputs & KILN_OUTPUT_OCI;
}

static unsigned none(const struct build *b)
{
	(void)b;
	return 0;
}
static unsigned one(const struct build *b)
{
	(void)b;
	return 1;
}
static unsigned per_step(const struct build *b)
{
	return (unsigned)b->r->n_steps;
}
/* A squashfs made only as the ISO's input is not reported on its own. */
static unsigned if_squashfs_kept(const struct build *b)
{
	return b->r->outputs & KILN_OUTPUT_SQUASHFS ? 1 : 0;
}

/* The pipeline, in order. A phase runs when wanted(b); reports(b) is how
 * many "[i/n]" progress lines it prints (kiln_image_progress), which is all
 * the total is made of. A new phase (a distribution backend, an output
 * format) is one row. */
static const struct phase {
	const char *name;
	bool (*wanted)(const struct build *b);
	unsigned (*reports)(const struct build *b);
	int (*run)(struct build *b, struct kiln_error **err);
} phases[] = {
    {"fetch", has_packages, one, kiln_image_phase_fetch},
    {"install", has_packages, one, kiln_image_phase_install},
    {"overlays", has_files, one, kiln_image_phase_overlays},
    {"context", has_context, none, kiln_image_phase_context},
    {"timezone", always, one, kiln_image_phase_timezone},
    {"locale", always, one, kiln_image_phase_locale},
    {"steps", has_steps, per_step, kiln_image_phase_steps},
    {"initramfs", always, none, kiln_image_phase_initramfs},
    {"healthcheck", has_healthcheck, one, kiln_image_phase_healthcheck},
    {"list packages", always, none, kiln_image_phase_list_installed},
    {"normalize", always, one, kiln_image_phase_normalize},
    {"size", always, none, phase_size},
    {"tar", wants_tar, one, kiln_image_phase_tar},
    {"squashfs", wants_squashfs, if_squashfs_kept, kiln_image_phase_squashfs},
    {"iso", wants_iso, one, kiln_image_phase_iso},
    {"ext4", wants_ext4, one, kiln_image_phase_ext4},
    {"oci", wants_oci, one, kiln_image_phase_oci},
    {"sbom", always, none, kiln_image_phase_sbom},
    {"manifest", always, none, kiln_image_phase_manifest},
    {"cache record", always, none, kiln_image_phase_record},
};

unsigned kiln_image_progress_total(const struct build *b)
{
	unsigned n = 0;
	for (size_t i = 0; i < ELEMENTSOF(phases); i++)
		if (phases[i].wanted(b))
			n += phases[i].reports(b);
	return n;
}

/* ---- driver --------------------------------------------------------------- */

/* Everything before the first phase: state and output directories, the
 * base, the build key, the locked scratch directory. */
static int build_prepare(struct build *b, struct kiln_error **err)
{
	const struct kiln_image_build_opts *o = b->o;
	const struct kiln_recipe *r = b->r;
	int rc = kiln_image_check_disk(r, o->max_disk_mb, err);
	if (rc < 0)
		return rc;
	if (!path_safe_for_mount(o->state_dir))
		return kiln_error_set(err, EINVAL, "state directory %s: must not contain , : or \\",
		                      o->state_dir);
	rc = kiln_state_init(o->state_dir, err);
	if (rc < 0)
		return rc;
	if ((rc = kiln_outdir_open(o->out_dir, &b->out, err)) < 0)
		return rc;
	rc = kiln_image_base_path(o->state_dir, r->base, &b->base_tree, b->base_digest, err);
	if (rc < 0)
		return rc;
	b->be = kiln_image_base_find(r->base, err)->backend;

	char ctx_hex[KILN_SHA256_HEX_LEN + 1];
	if (o->context_path) {
		rc = kiln_sha256_file(o->context_path, ctx_hex, NULL);
		if (rc < 0)
			return kiln_error_set_errno(err, -rc, "%s: cannot read context archive",
			                            o->context_path);
	}
	struct kiln_build_inputs in = {o->context_path ? ctx_hex : NULL,
	                               kiln_image_tool_versions()};
	kiln_recipe_build_key(r, &in, b->build_key);
	memcpy(b->res->build_key, b->build_key, sizeof(b->build_key));

	_cleanup_free_ char *id = o->build_id ? xstrdup(o->build_id) : kiln_image_random_id();
	kiln_image_cleanup_stale(o->state_dir);
	b->scratch = xasprintf("%s/builds/%s", o->state_dir, id);
	/* 0700, like everything up to the state directory: nothing of a build
	 * is for other local users. */
	if (mkdir(b->scratch, 0700) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", b->scratch);
	_cleanup_free_ char *lk = xasprintf("%s/.lock", b->scratch);
	b->lock_fd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (b->lock_fd < 0 || flock(b->lock_fd, LOCK_EX | LOCK_NB) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot lock", lk);
	b->layer = xasprintf("%s/layer", b->scratch);
	b->upper = xasprintf("%s/upper", b->layer);
	b->debs = xasprintf("%s/fetch-debs", b->scratch);
	b->merged = xasprintf("%s/merged", b->scratch);
	b->work = xasprintf("%s/work", b->layer);
	if ((rc = mount_layer(b, err)) < 0)
		return rc;
	if ((rc = kiln_image_mkdir_sandbox(b->upper, err)) < 0 ||
	    (rc = kiln_image_mkdir_sandbox(b->debs, err)) < 0)
		return rc;
	/* Every step's environment starts with HOME; the time zone phase adds
	 * TZ, ENV steps the rest. */
	kiln_image_env_set(b, "HOME", "/root");
	return 0;
}

static int build_run(struct build *b, struct kiln_error **err)
{
	int rc = build_prepare(b, err);
	if (rc < 0)
		return rc;
	b->total = kiln_image_progress_total(b);
	const struct kiln_recipe *r = b->r;
	kiln_image_logf(&b->o->hooks,
	                "==> building %s: config %.12s, build key %.12s, SOURCE_DATE_EPOCH=%" PRId64
	                "\n",
	                r->name ? r->name : "(unnamed recipe)", r->config_hash, b->build_key,
	                r->source_date_epoch);
	for (size_t i = 0; i < ELEMENTSOF(phases); i++) {
		if (!phases[i].wanted(b))
			continue;
		if ((rc = check_deadline(b, err)) < 0 || (rc = phases[i].run(b, err)) < 0)
			return rc;
	}
	return 0;
}

int kiln_image_build(const struct kiln_image_build_opts *opts, struct kiln_image_result **ret,
                     struct kiln_error **err)
{
	struct build b = {
	    .o = opts, .r = opts->recipe, .lock_fd = -1, .rootfd = -1, .out = {-1, NULL}};
	/* Commands' output goes to the caller's log; their warning comes to
	 * build_warning, which tells the caller once, with the build's time. */
	b.hooks = (struct kiln_image_hooks){
	    .log = forward_log,
	    .warning = build_warning,
	    .userdata = &b,
	    .cancel_fd = opts->hooks.cancel_fd,
	};
	clock_gettime(CLOCK_MONOTONIC, &b.start);
	b.start_wall = (int64_t)time(NULL);
	b.res = xcalloc(1, sizeof(*b.res));
	int rc = build_run(&b, err);
	if (rc == 0)
		*ret = TAKE_PTR(b.res);
	build_clear(&b);
	return rc;
}
