/* The build pipeline: fetch → install → overlays → steps → normalize → emit.
 *
 * Isolation: every command that runs image code (apt, dpkg maintainer
 * scripts, RUN steps) runs in the sandbox with no network, over an overlay
 * whose upper layer is this build's alone. Only the fetch phase gets the
 * host network, and it runs nothing but apt against the base's sources; its
 * writable layer is thrown away, and what it downloaded is accepted only
 * after its SHA-256 matches the package index. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/archive.h"
#include "image/emit.h"
#include "image/internal.h"
#include "image/normalize.h"
#include "image/sbom.h"
#include "image/tarball.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/json.h"

struct pkg {
	char *name, *version, *arch, *sha256, *file;
};

struct pkglist {
	struct pkg *v;
	size_t n;
};

static void pkglist_clear(struct pkglist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].name);
		free(l->v[i].version);
		free(l->v[i].arch);
		free(l->v[i].sha256);
		free(l->v[i].file);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* "name version arch sha256 [file]" lines. */
static int pkglist_parse(const char *text, bool want_file, struct pkglist *ret,
                         struct kiln_error **err)
{
	struct pkglist l = {NULL, 0};
	_cleanup_free_ char *copy = xstrdup(text);
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *f[5] = {NULL};
		size_t nf = 0;
		char *s2 = NULL;
		for (char *t = strtok_r(line, " ", &s2); t && nf < 5; t = strtok_r(NULL, " ", &s2))
			f[nf++] = t;
		if (nf < (want_file ? 5u : 4u)) {
			pkglist_clear(&l);
			return kiln_error_set(err, EBADMSG, "malformed package line '%s'", line);
		}
		l.v = xreallocarray(l.v, l.n + 1, sizeof(struct pkg));
		l.v[l.n++] = (struct pkg){xstrdup(f[0]), xstrdup(f[1]), xstrdup(f[2]),
		                          xstrdup(f[3]), want_file ? xstrdup(f[4]) : NULL};
	}
	*ret = l;
	return 0;
}

struct build {
	const struct kiln_image_build_opts *o;
	const struct kiln_recipe *r;
	struct kiln_image_hooks hooks; /* o->hooks with warning wrapped */
	char *base_tree;
	char base_digest[KILN_SHA256_HEX_LEN + 1];
	char *scratch, *upper, *debs, *merged, *work, *outtmp, *context;
	bool mounted;
	int lock_fd;
	struct pkglist lock;
	struct pkglist installed;
	char build_key[KILN_SHA256_HEX_LEN + 1];
	struct timespec start;
	int64_t start_wall;
	unsigned step, total;
	bool warned;
	size_t leaks;
	/* step state */
	char **env;
	size_t n_env;
	uid_t uid;
	gid_t gid;
	char *workdir;
	struct kiln_image_result *res;
};

static double elapsed_s(const struct build *b)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - b->start.tv_sec) +
	       (double)(now.tv_nsec - b->start.tv_nsec) / 1e9;
}

static void forward_log(void *ud, const char *data, size_t len)
{
	struct build *b = ud;
	if (b->o->hooks.log)
		b->o->hooks.log(b->o->hooks.userdata, data, len);
}

static void build_warning(void *ud, unsigned elapsed)
{
	struct build *b = ud;
	if (b->warned)
		return;
	b->warned = true;
	unsigned total = (unsigned)elapsed_s(b);
	kiln_image_logf(&b->o->hooks,
	                "==> warning: the build has been running for %u seconds (timeout %" PRId64
	                " s)\n",
	                total, b->r->resources.timeout_s);
	if (b->o->hooks.warning)
		b->o->hooks.warning(b->o->hooks.userdata, total);
	(void)elapsed;
}

static void progress(struct build *b, const char *fmt, ...) _printf_(2, 3);
static void progress(struct build *b, const char *fmt, ...)
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

static bool cancelled(const struct build *b)
{
	if (b->o->hooks.cancel_fd < 0)
		return false;
	struct pollfd p = {b->o->hooks.cancel_fd, POLLIN, 0};
	return poll(&p, 1, 0) > 0;
}

/* Runs r with the time left: the step's own limit or what remains of the
 * build's, whichever is shorter; the build's warning fires inside it. */
static int clamp_upper(struct build *b, struct kiln_error **err);

/* Whole seconds, rounded up: a build is killed at its limit, not up to a
 * second before it while saying "after N seconds". x >= 0. */
static unsigned secs_up(double x)
{
	unsigned s = (unsigned)x;
	return s + (x > (double)s);
}

static int run(struct build *b, struct kiln_image_run *r, unsigned step_limit,
               struct kiln_error **err)
{
	if (r->upper && clamp_upper(b, err) < 0)
		return -EIO;
	if (cancelled(b))
		return kiln_error_set(err, ECANCELED, "build cancelled");
	double el = elapsed_s(b);
	double left = (double)b->r->resources.timeout_s - el;
	if (left < 1)
		return kiln_error_set(err, ETIME, "Build timed out after %" PRId64 " seconds",
		                      b->r->resources.timeout_s);
	unsigned t = secs_up(left);
	bool build_limit = true;
	if (step_limit && step_limit < t) {
		t = step_limit;
		build_limit = false;
	}
	r->timeout_s = t;
	double warn_in = (double)b->r->resources.warning_s - el;
	unsigned warn_t = warn_in >= 1 ? secs_up(warn_in) : 0;
	r->warning_s = !b->warned && warn_t && warn_t < t ? warn_t : 0;
	if (!b->warned && warn_in < 1)
		build_warning(b, 0);
	r->epoch = b->r->source_date_epoch;
	_cleanup_error_ struct kiln_error *e = NULL;
	int rc = kiln_image_sandbox(&b->hooks, r, &e);
	if (rc == -ETIME && build_limit)
		return kiln_error_set(err, ETIME, "Build timed out after %" PRId64 " seconds",
		                      b->r->resources.timeout_s);
	if (rc < 0 && err && !*err)
		*err = TAKE_PTR(e);
	return rc;
}

static int write_text(const char *path, const char *data, size_t len, mode_t mode,
                      struct kiln_error **err)
{
	_cleanup_free_ char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');
	*slash = '\0';
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	int r = dfd < 0 ? -errno : kiln_write_file_atomic_at(dfd, slash + 1, data, len, mode);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot write", path);
	return 0;
}

/* ---- fetch and lock ------------------------------------------------------- */

static char *lock_path(const struct build *b)
{
	struct kiln_sha256 s;
	kiln_sha256_init(&s);
	kiln_sha256_update(&s, "kiln-lock-v1\n", 13);
	kiln_sha256_update(&s, b->base_digest, KILN_SHA256_HEX_LEN);
	for (size_t i = 0; i < b->r->n_packages; i++) {
		kiln_sha256_update(&s, "\n", 1);
		kiln_sha256_update(&s, b->r->packages[i], strlen(b->r->packages[i]));
	}
	char hex[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_final_hex(&s, hex);
	return xasprintf("%s/locks/%s.lock", b->o->state_dir, hex);
}

static bool lock_is_warm(const struct build *b, const struct pkglist *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (!kiln_cas_has(b->o->state_dir, l->v[i].sha256))
			return false;
	return true;
}

static const char fetch_script[] =
    "set -eu\n"
    "export DEBIAN_FRONTEND=noninteractive\n"
    "apt-get update -q\n"
    "apt-get install -y -q --no-install-recommends --download-only "
    "-o Dir::Cache::archives=/mnt/ \"$@\"\n"
    "cd /mnt\n"
    "for f in *.deb; do\n"
    "  [ -e \"$f\" ] || continue\n"
    "  dpkg-deb -f \"$f\" Package Version Architecture | awk -v f=\"$f\" -F': ' "
    "'{v[$1]=$2} END {print v[\"Package\"], v[\"Version\"], v[\"Architecture\"], f}'\n"
    "done > /tmp/debs.txt\n"
    /* One apt-cache call for every package: each call reloads apt's whole
     * cache, so a call per package cost ~1 s each (docs/benchmarks.md). */
    "if [ -s /tmp/debs.txt ]; then\n"
    "  apt-cache show --no-all-versions $(awk '{print $1\"=\"$2}' /tmp/debs.txt) 2>/dev/null |\n"
    "    awk -F': ' '/^Package: /{p=$2} /^Version: /{v=$2} /^SHA256: /{print p\"=\"v, $2}' "
    "> /tmp/hashes.txt\n"
    "fi\n"
    "touch /tmp/hashes.txt\n"
    "awk 'NR==FNR {h[$1]=$2; next} {k=$1\"=\"$2; print $1, $2, $3, (k in h ? h[k] : \"none\"), "
    "$4}' "
    "/tmp/hashes.txt /tmp/debs.txt > /mnt/lock.txt\n";

static int fetch(struct build *b, struct kiln_error **err)
{
	_cleanup_free_ char *lp = lock_path(b);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e2 = NULL;
	if (kiln_read_file(lp, 64 << 20, &text, &len, &e2) == 0) {
		struct pkglist l;
		if (pkglist_parse(text, true, &l, NULL) == 0) {
			if (lock_is_warm(b, &l)) {
				kiln_image_logf(&b->o->hooks,
				                "    lock and all %zu .debs are in the store; no "
				                "network needed\n",
				                l.n);
				b->lock = l;
				return 0;
			}
			pkglist_clear(&l);
		}
	}
	if (b->o->offline)
		return kiln_error_set(err, ENETUNREACH,
		                      "fetch: offline build, but the packages of this recipe are "
		                      "not in the store yet (build once with network)");

	_cleanup_rmtree_ char *fup = xasprintf("%s/fetch-upper", b->scratch);
	int rc = kiln_image_mkdir_sandbox(fup, err);
	if (rc < 0)
		return rc;
	const char **argv = xcalloc(b->r->n_packages + 5, sizeof(char *));
	argv[0] = "/bin/sh";
	argv[1] = "-c";
	argv[2] = fetch_script;
	argv[3] = "kiln-fetch";
	for (size_t i = 0; i < b->r->n_packages; i++)
		argv[4 + i] = b->r->packages[i];
	const char *layers[] = {b->base_tree};
	struct kiln_sandbox_bind binds[] = {{b->debs, "/mnt", false}};
	struct kiln_buf errs = KILN_BUF_INIT;
	struct kiln_image_run r = {
	    .what = "fetch",
	    .layers = layers,
	    .n_layers = 1,
	    .upper = fup,
	    .binds = binds,
	    .n_binds = 1,
	    .network = true,
	    .argv = argv,
	    .errors = &errs,
	};
	rc = run(b, &r, 0, err);
	free(argv);
	kiln_buf_free(&errs);
	if (rc < 0)
		return rc;

	_cleanup_free_ char *ltxt_path = xasprintf("%s/lock.txt", b->debs);
	_cleanup_free_ char *ltxt = NULL;
	rc = kiln_read_file(ltxt_path, 64 << 20, &ltxt, &len, err);
	if (rc < 0)
		return rc;
	struct pkglist l;
	rc = pkglist_parse(ltxt, true, &l, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < l.n; i++) {
		struct pkg *p = &l.v[i];
		if (strlen(p->sha256) != KILN_SHA256_HEX_LEN || strchr(p->file, '/')) {
			rc = kiln_error_set(err, EBADMSG,
			                    "fetch: package %s: no SHA-256 in the package index",
			                    p->name);
			break;
		}
		_cleanup_free_ char *f = xasprintf("%s/%s", b->debs, p->file);
		rc = kiln_cas_put_file(b->o->state_dir, f, p->sha256, NULL, NULL, err);
		if (rc < 0) {
			kiln_error_prefix(err, "fetch: package %s %s", p->name, p->version);
			break;
		}
	}
	if (rc < 0) {
		pkglist_clear(&l);
		return rc;
	}
	kiln_image_logf(&b->o->hooks, "    locked %zu packages (verified against the index)\n",
	                l.n);
	rc = write_text(lp, ltxt, strlen(ltxt), 0644, err);
	b->lock = l;
	return rc;
}

/* The locked .debs, linked from the store into a directory of their own. */
static int stage_debs(struct build *b, const char *dir, struct kiln_error **err)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
	for (size_t i = 0; i < b->lock.n; i++) {
		_cleanup_free_ char *src = kiln_cas_path(b->o->state_dir, b->lock.v[i].sha256);
		_cleanup_free_ char *dst = xasprintf("%s/%s", dir, b->lock.v[i].file);
		unlink(dst);
		if (link(src, dst) < 0 && symlink(src, dst) < 0)
			return kiln_error_set_errno(err, errno, "%s: cannot stage", dst);
	}
	return 0;
}

/* The recipe's packages go in with one apt run and the initramfs is built
 * once, afterwards. Left alone, a kernel plus an initramfs hook package
 * (live-boot) generates it twice: linux-image's postinst runs
 * /etc/kernel/postinst.d/initramfs-tools (`update-initramfs -c`), then the
 * hook package's `update-initramfs -u` trigger builds it again — minutes of
 * mkinitramfs each, the first result thrown away. update-initramfs.conf's
 * update_initramfs=no cannot help: it only stops -u, the kernel hook uses -c.
 * INITRD=No in apt's environment is the interface the kernel hooks
 * (initramfs-tools, dracut) and linux-update-symlinks honour; the trigger
 * then finds no initrd to update. Nothing is written into the image to get
 * there, so nothing has to be restored.
 *
 * Afterwards, for each kernel left without an initrd, what its postinst did
 * is done again without INITRD: linux-update-symlinks (which left out the
 * /initrd.img links under INITRD=No; "upgrade" keeps the default kernel it
 * chose) and the /etc/kernel/postinst.d hooks, which build the initrd.
 *
 * They run with SOURCE_DATE_EPOCH=min(epoch, 2020-01-01): mkinitramfs sets
 * every mtime newer than SOURCE_DATE_EPOCH to it, and everything it writes
 * now is newer than that date whatever the clock says, while what it copies
 * from the image and is older keeps the .deb's time. With the recipe's
 * epoch (often in the future) files it creates would keep the wall clock.
 * So its cpio (sorted, --reproducible, gzip -n / single-threaded zstd) is
 * reproducible as it comes, and the initramfs repack after the steps skips
 * an initrd whose SHA-256 is still the one recorded here (outside the
 * image, in /mnt, a directory of this build's scratch).
 *
 * --force-unsafe-io: dpkg's fsync per unpacked file protects a system
 * against a crash mid-upgrade; the upper layer is scratch that a crash
 * throws away anyway. */
static const char install_script[] =
    "set -eu\n"
    "export DEBIAN_FRONTEND=noninteractive\n"
    "INITRD=No apt-get install -y -q --no-install-recommends "
    "-o DPkg::Options::=--force-unsafe-io /srv/*.deb\n"
    "for k in /boot/vmlinuz-*; do\n"
    "  v=${k#/boot/vmlinuz-}\n"
    "  if [ ! -f \"$k\" ] || [ ! -d \"/lib/modules/$v\" ] || [ -e \"/boot/initrd.img-$v\" ]; then\n"
    "    continue\n"
    "  fi\n"
    "  if command -v linux-update-symlinks >/dev/null; then\n"
    "    linux-update-symlinks upgrade \"$v\" \"$k\"\n"
    "  fi\n"
    "  if [ -d /etc/kernel/postinst.d ]; then\n"
    "    SOURCE_DATE_EPOCH=$1 run-parts --report --exit-on-error --arg=\"$v\" --arg=\"$k\" "
    "/etc/kernel/postinst.d\n"
    "  fi\n"
    "done\n"
    "for f in /boot/initrd.img-*; do\n"
    "  if [ -f \"$f\" ]; then (cd /boot && sha256sum \"${f#/boot/}\"); fi\n"
    "done > /mnt/initrd.sha256\n";

static char *initrd_record_dir(const struct build *b)
{
	return xasprintf("%s/initrd", b->scratch);
}

static int install(struct build *b, struct kiln_error **err)
{
	_cleanup_rmtree_ char *dir = xasprintf("%s/install-debs", b->scratch);
	int rc = stage_debs(b, dir, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *rec = initrd_record_dir(b);
	if ((rc = kiln_image_mkdir_sandbox(rec, err)) < 0)
		return rc;
	char epoch[32];
	snprintf(epoch, sizeof(epoch), "%" PRId64,
	         b->r->source_date_epoch < KILN_BASE_EPOCH ? b->r->source_date_epoch
	                                                   : KILN_BASE_EPOCH);
	const char *argv[] = {"/bin/sh", "-c", install_script, "kiln-install", epoch, NULL};
	const char *layers[] = {b->base_tree};
	struct kiln_sandbox_bind binds[] = {{dir, "/srv", true}, {rec, "/mnt", false}};
	struct kiln_buf errs = KILN_BUF_INIT;
	struct kiln_image_run r = {
	    .what = "install",
	    .layers = layers,
	    .n_layers = 1,
	    .upper = b->upper,
	    .binds = binds,
	    .n_binds = 2,
	    .argv = argv,
	    .errors = &errs,
	};
	rc = run(b, &r, 0, err);
	kiln_buf_free(&errs);
	return rc;
}

/* ---- time hygiene ---------------------------------------------------------- */

/* Files written by package installation and earlier steps carry the wall
 * clock as mtime; a later step that lists them (ls -l, tar, a build system
 * comparing dates) would bake the build's time into the image. Clamping the
 * upper layer to SOURCE_DATE_EPOCH before every command closes that leak.
 * The walk runs while no sandbox is alive and never follows symlinks. */
static _Thread_local int64_t clamp_epoch;
static _Thread_local int64_t clamp_since;
static _Thread_local uint64_t clamp_count;

/* An mtime later than the epoch is clamped to it; so is any mtime from this
 * build's own run (>= its start): with an epoch in the future — the derived
 * one reaches 2031 — "clamping" alone would keep the wall clock. */
static int clamp_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)flag;
	(void)ftw;
	bool late = st->st_mtim.tv_sec > clamp_epoch ||
	            (st->st_mtim.tv_sec == clamp_epoch && st->st_mtim.tv_nsec != 0);
	if (!late && st->st_mtim.tv_sec < clamp_since)
		return 0;
	if (st->st_mtim.tv_sec == clamp_epoch && st->st_mtim.tv_nsec == 0)
		return 0;
	struct timespec ts[2] = {{clamp_epoch, 0}, {clamp_epoch, 0}};
	if (utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) == 0)
		clamp_count++;
	return 0;
}

static int clamp_tree(struct build *b, const char *dir, struct kiln_error **err)
{
	clamp_epoch = b->r->source_date_epoch;
	clamp_since = b->start_wall - 2;
	clamp_count = 0;
	if (nftw(dir, clamp_entry, 64, FTW_PHYS | FTW_MOUNT) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot clamp mtimes", dir);
	return 0;
}

static int clamp_upper(struct build *b, struct kiln_error **err)
{
	return clamp_tree(b, b->upper, err);
}

/* Looks for the build's wall-clock date, the host's name and the build id
 * in everything the build wrote (the upper layer), and reports each file
 * that contains one: such a file would differ in the next build. */
struct leak_scan {
	const char *const *needles;
	size_t n;
	const char *root;
	struct kiln_buf *report;
	size_t found;
};
static _Thread_local struct leak_scan *leak_ctx;

static int leak_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	struct leak_scan *ls = leak_ctx;
	if (flag != FTW_F || !S_ISREG(st->st_mode) || st->st_size == 0 ||
	    st->st_size > (64 << 20) || ls->found >= 20)
		return 0;
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	_cleanup_free_ char *data = xmalloc((size_t)st->st_size);
	ssize_t n = read(fd, data, (size_t)st->st_size);
	if (n <= 0)
		return 0;
	for (size_t i = 0; i < ls->n; i++)
		if (memmem(data, (size_t)n, ls->needles[i], strlen(ls->needles[i]))) {
			kiln_buf_printf(ls->report, "    %s contains \"%s\"\n",
			                p + strlen(ls->root), ls->needles[i]);
			ls->found++;
			break;
		}
	return 0;
}

static void scan_leaks(struct build *b)
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	char d1[32], d2[32], d3[32], host[256] = "";
	strftime(d1, sizeof(d1), "%Y-%m-%d", &tm);
	strftime(d2, sizeof(d2), "%a %b %e", &tm);
	strftime(d3, sizeof(d3), "%b %e %H:", &tm);
	const char *needles[5] = {d1, d2, d3, strrchr(b->scratch, '/') + 1, NULL};
	size_t n = 4;
	if (gethostname(host, sizeof(host) - 1) == 0 && strlen(host) >= 4 &&
	    strcmp(host, "kiln") != 0 && strcmp(host, "localhost") != 0)
		needles[n++] = host;
	struct kiln_buf report = KILN_BUF_INIT;
	struct leak_scan ls = {needles, n, b->upper, &report, 0};
	leak_ctx = &ls;
	nftw(b->upper, leak_entry, 64, FTW_PHYS | FTW_MOUNT);
	leak_ctx = NULL;
	if (ls.found) {
		kiln_image_logf(&b->o->hooks,
		                "==> warning: %zu file(s) written by this build contain its date, "
		                "host name or id; the image will not be reproducible:\n%s",
		                ls.found, report.data);
		b->leaks = ls.found;
	}
	kiln_buf_free(&report);
}

/* ---- overlays and steps --------------------------------------------------- */

static void sh_quote(struct kiln_buf *out, const char *s)
{
	kiln_buf_putc(out, '\'');
	for (; *s; s++) {
		if (*s == '\'')
			kiln_buf_puts(out, "'\\''");
		else
			kiln_buf_putc(out, *s);
	}
	kiln_buf_putc(out, '\'');
}

static int in_image(struct build *b, const char *what, const char *script,
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
	return run(b, &r, step_limit, err);
}

static int write_overlays(struct build *b, struct kiln_error **err)
{
	if (b->r->n_files == 0)
		return 0;
	_cleanup_rmtree_ char *dir = xasprintf("%s/overlay-files", b->scratch);
	if (mkdir(dir, 0755) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_set_errno(err, errno, "%s", dir);
	struct kiln_buf script = KILN_BUF_INIT;
	/* Plain sh, cat, mkdir, chown and chmod — there in every base, busybox
	 * too (whose applets have no install(1)). rm first: an existing file
	 * or symlink at the path is replaced, never written through. */
	kiln_buf_puts(&script, "set -eu\n"
	                       "put() { mkdir -p \"$(dirname \"$3\")\"; rm -f \"$3\"; "
	                       "cat \"$2\" > \"$3\"; chown 0:0 \"$3\"; chmod \"$1\" \"$3\"; }\n");
	size_t n = 0;
	int rc = 0;
	/* The files are placed from inside the sandbox so that every path
	 * resolves in the image's own view (bookworm's /bin is a symlink to
	 * usr/bin in a lower layer): a host-side write into the upper layer would
	 * shadow such links, and could be pointed elsewhere by a planted one. */
	for (size_t i = 0; i < b->r->n_overlays && rc == 0; i++)
		for (size_t k = 0; k < b->r->overlays[i].n_files && rc == 0; k++) {
			const struct kiln_file *f = &b->r->overlays[i].files[k];
			char name[32];
			snprintf(name, sizeof(name), "%06zu", n++);
			int w =
			    kiln_write_file_atomic_at(dfd, name, f->content, f->content_len, 0644);
			if (w < 0) {
				rc =
				    kiln_error_set_errno(err, -w, "%s/%s: cannot write", dir, name);
				break;
			}
			kiln_buf_printf(&script, "put %04o /srv/%s ", f->mode, name);
			sh_quote(&script, f->path);
			kiln_buf_putc(&script, '\n');
		}
	if (rc == 0) {
		struct kiln_sandbox_bind binds[] = {{dir, "/srv", true}};
		rc = in_image(b, "overlay files", script.data, NULL, binds, 1, NULL, 0, err);
	}
	kiln_buf_free(&script);
	return rc;
}

static int chown_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return lchown(p, KILN_IMAGE_ID_BASE, KILN_IMAGE_ID_BASE) < 0 ? -1 : 0;
}

static int extract_context(struct build *b, struct kiln_error **err)
{
	if (!b->o->context_path)
		return 0;
	b->context = xasprintf("%s/context", b->scratch);
	if (mkdir(b->context, 0755) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", b->context);
	_cleanup_close_ int fd = open(b->o->context_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot open context archive",
		                            b->o->context_path);
	_cleanup_close_ int dfd = open(b->context, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_set_errno(err, errno, "%s", b->context);
	int rc = kiln_archive_extract_fd(fd, dfd, NULL, NULL, err);
	if (rc < 0) {
		kiln_error_prefix(err, "context archive %s", b->o->context_path);
		return rc;
	}
	/* Owned by the sandbox's root, so COPY inside the sandbox can read
	 * files whatever their mode. */
	if (nftw(b->context, chown_entry, 64, FTW_PHYS | FTW_MOUNT) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot chown", b->context);
	return 0;
}

/* The context's files are the sandbox root's (extract_context), so cp's
 * -a/-p give them owner 0:0 — in plain options busybox's cp has too. */
static const char copy_script[] =
    "set -eu\n"
    "src=\"/srv/$1\"; dst=\"$2\"\n"
    "[ -e \"$src\" ] || [ -L \"$src\" ] || { echo \"COPY: $1: not in the context archive\" "
    ">&2; exit 1; }\n"
    "if [ -d \"$src\" ] && [ ! -L \"$src\" ]; then\n"
    "  mkdir -p \"$dst\"; cp -a \"$src/.\" \"$dst/\"\n"
    "elif [ -d \"$dst\" ] || [ \"${dst%/}\" != \"$dst\" ]; then\n"
    "  mkdir -p \"$dst\"; cp -P -p \"$src\" \"$dst/\"\n"
    "else\n"
    "  mkdir -p \"$(dirname \"$dst\")\"; cp -P -p \"$src\" \"$dst\"\n"
    "fi\n";

static void env_set(struct build *b, const char *k, const char *v)
{
	size_t kl = strlen(k);
	char *kv = xasprintf("%s=%s", k, v);
	for (size_t i = 0; i < b->n_env; i++)
		if (strncmp(b->env[i], k, kl) == 0 && b->env[i][kl] == '=') {
			free(b->env[i]);
			b->env[i] = kv;
			return;
		}
	b->env = xreallocarray(b->env, b->n_env + 2, sizeof(char *));
	b->env[b->n_env++] = kv;
	b->env[b->n_env] = NULL;
}

static int run_step(struct build *b, size_t i, struct kiln_error **err)
{
	const struct kiln_step *s = &b->r->steps[i];
	_cleanup_free_ char *what =
	    xasprintf("step %zu (%.60s%s)", i + 1, s->text, strlen(s->text) > 60 ? "..." : "");
	progress(b, "step %zu of %zu: %s", i + 1, b->r->n_steps, s->text);
	unsigned limit =
	    b->o->step_timeout_s ? b->o->step_timeout_s : (unsigned)b->r->resources.step_timeout_s;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = 0;
	switch (s->op) {
	case KILN_STEP_ENV: env_set(b, s->arg, s->arg2); break;
	case KILN_STEP_WORKDIR: {
		const char *args[] = {s->arg, NULL};
		rc = in_image(b, what, "mkdir -p \"$1\"", args, NULL, 0, NULL, limit, err);
		if (rc == 0) {
			free(b->workdir);
			b->workdir = xstrdup(s->arg);
		}
		break;
	}
	case KILN_STEP_USER: {
		struct kiln_buf out = KILN_BUF_INIT;
		const char *args[] = {s->arg, NULL};
		rc = in_image(b, what, "id -u \"$1\" && id -g \"$1\"", args, NULL, 0, &out, limit,
		              err);
		unsigned long uid = 0, gid = 0;
		char *end = NULL;
		if (rc == 0) {
			uid = strtoul(out.data ? out.data : "", &end, 10);
			if (!end || *end != '\n')
				rc = kiln_error_set(err, EINVAL, "%s: cannot resolve user", what);
			else
				gid = strtoul(end + 1, &end, 10);
		}
		if (rc == 0 && (uid > 65535 || gid > 65535))
			rc = kiln_error_set(err, ERANGE, "%s: uid/gid outside the sandbox's range",
			                    what);
		if (rc == 0) {
			b->uid = (uid_t)uid;
			b->gid = (gid_t)gid;
		}
		kiln_buf_free(&out);
		break;
	}
	case KILN_STEP_COPY: {
		if (!b->context)
			return kiln_error_set(err, EINVAL,
			                      "%s: COPY needs a context archive (--context)", what);
		struct kiln_sandbox_bind binds[] = {{b->context, "/srv", true}};
		const char *args[] = {s->arg, s->arg2, NULL};
		rc = in_image(b, what, copy_script, args, binds, 1, NULL, limit, err);
		break;
	}
	case KILN_STEP_RUN: {
		const char *argv[] = {"/bin/sh", "-c", s->arg, NULL};
		const char *layers[] = {b->base_tree};
		struct kiln_image_run r = {
		    .what = what,
		    .layers = layers,
		    .n_layers = 1,
		    .upper = b->upper,
		    .argv = argv,
		    .env = (const char *const *)b->env,
		    .n_env = b->n_env,
		    .uid = b->uid,
		    .gid = b->gid,
		    .workdir = b->workdir,
		};
		rc = run(b, &r, limit, err);
		break;
	}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (rc == 0)
		kiln_image_logf(&b->o->hooks, "    step %zu: ok (%.2f s)\n", i + 1, dt);
	else
		kiln_image_logf(&b->o->hooks, "    step %zu: failed after %.2f s\n", i + 1, dt);
	return rc;
}

/* ---- time zone and locale -------------------------------------------------- */

/* An overlay file at one of the paths this stage writes is the recipe's
 * explicit choice and wins over the generated one. */
static bool recipe_writes(const struct kiln_recipe *r, const char *path)
{
	for (size_t i = 0; i < r->n_overlays; i++)
		for (size_t k = 0; k < r->overlays[i].n_files; k++)
			if (strcmp(r->overlays[i].files[k].path, path) == 0)
				return true;
	return false;
}

/* An overlay file at path is kept (and the log says so). */
static bool overlay_kept(struct build *b, const char *path)
{
	if (!recipe_writes(b->r, path))
		return false;
	kiln_image_logf(&b->o->hooks, "    %s: the recipe's overlay file kept\n", path);
	return true;
}

/* Runs a configuration script in the image; its outcome is the one word it
 * prints on stdout (its other output goes to stderr, the build log). */
static int config_script(struct build *b, const char *what, const char *script,
                         const char *const *args, char outcome[static 32], struct kiln_error **err)
{
	struct kiln_buf out = KILN_BUF_INIT;
	int rc = in_image(b, what, script, args, NULL, 0, &out, 0, err);
	size_t n = 0;
	for (const char *s = out.data ? out.data : ""; *s && *s != '\n' && n < 31; s++)
		outcome[n++] = *s;
	outcome[n] = '\0';
	kiln_buf_free(&out);
	return rc;
}

/* $1 the zone, $2 "1" when kiln sets /etc/localtime, $3 "1" when it writes
 * /etc/timezone. UTC needs no zone file: glibc falls back to UTC when
 * /etc/localtime is missing, so an image without tzdata stays correct. */
static const char timezone_script[] =
    "set -eu\n"
    "tz=$1\n"
    "if [ \"$2\" = 1 ]; then\n"
    "  if [ -f \"/usr/share/zoneinfo/$tz\" ]; then\n"
    "    ln -sfn \"/usr/share/zoneinfo/$tz\" /etc/localtime\n"
    "  elif [ \"$tz\" != UTC ] && [ \"$tz\" != Etc/UTC ]; then\n"
    "    if dpkg-query -W -f='${db:Status-Status}' tzdata 2>/dev/null | grep -qx installed; then\n"
    "      echo no-zone\n"
    "    else\n"
    "      echo no-tzdata\n"
    "    fi\n"
    "    exit 0\n"
    "  fi\n"
    "fi\n"
    "if [ \"$3\" = 1 ]; then printf '%s\\n' \"$tz\" > /etc/timezone; fi\n"
    "echo ok\n";

static const struct {
	const char *outcome, *why;
} timezone_failures[] = {
    {"no-tzdata", "add the tzdata package"},
    {"no-zone", "not a zone of the image's tzdata"},
};

/* Runs after the overlays and before the steps, so steps (and the image at
 * run time) see the recipe's zone. In the sandbox, like every command that
 * touches the image: a package or overlay may have replaced ln or
 * dpkg-query, and what they run can reach nothing but this build's upper
 * layer. The zone goes in as $1, never into the script text: the recipe's
 * validation already limits it to [A-Za-z0-9_+-/], but a script built from
 * it would turn any gap in that check into shell injection. */
static int configure_timezone(struct build *b, struct kiln_error **err)
{
	const char *tz = b->r->timezone;
	progress(b, "timezone %s", tz);
	bool link = !overlay_kept(b, "/etc/localtime");
	bool name = !overlay_kept(b, "/etc/timezone");
	const char *args[] = {tz, link ? "1" : "0", name ? "1" : "0", NULL};
	char outcome[32];
	int rc = config_script(b, "timezone", timezone_script, args, outcome, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < ELEMENTSOF(timezone_failures); i++)
		if (strcmp(outcome, timezone_failures[i].outcome) == 0)
			return kiln_error_set(
			    err, ENOENT,
			    "timezone \"%s\": /usr/share/zoneinfo/%s is not in the "
			    "image (%s)",
			    tz, tz, timezone_failures[i].why);
	if (strcmp(outcome, "ok") != 0)
		return kiln_error_set(err, EBADMSG, "timezone: unexpected answer '%s'", outcome);
	/* The sandbox pins TZ=UTC so that host settings cannot change tool
	 * output; the steps get the image's own zone instead, which is part of
	 * the recipe's identity and so just as reproducible. */
	env_set(b, "TZ", ":/etc/localtime");
	return 0;
}

/* $1 the locale, $2 "1" when kiln writes /etc/default/locale. With the
 * locales package the locale is generated (its SUPPORTED line added to
 * /etc/locale.gen, keeping what is there, then locale-gen); its output goes
 * to stderr, the build log, and stdout carries only the outcome. The line is
 * compared through ENVIRON, not awk -v, which would interpret escapes. */
static const char locale_script[] =
    "set -eu\n"
    "loc=$1\n"
    "if [ \"$2\" = 1 ]; then\n"
    "  mkdir -p /etc/default\n"
    "  printf 'LANG=%s\\n' \"$loc\" > /etc/default/locale\n"
    "fi\n"
    "case $loc in C|C.UTF-8|C.utf8|POSIX) echo ok; exit 0 ;; esac\n"
    "if [ ! -x /usr/sbin/locale-gen ] || [ ! -f /usr/share/i18n/SUPPORTED ]; then\n"
    "  echo not-generated; exit 0\n"
    "fi\n"
    "line=$(L=\"$loc\" awk '$1 == ENVIRON[\"L\"] { print; exit }' /usr/share/i18n/SUPPORTED)\n"
    "if [ -z \"$line\" ]; then echo unknown; exit 0; fi\n"
    "touch /etc/locale.gen\n"
    "if ! grep -qxF \"$line\" /etc/locale.gen; then\n"
    "  if grep -qxF \"# $line\" /etc/locale.gen; then\n"
    "    L=\"$line\" awk '$0 == \"# \" ENVIRON[\"L\"] { print ENVIRON[\"L\"]; next } { print }' "
    "/etc/locale.gen > /tmp/locale.gen\n"
    "    cat /tmp/locale.gen > /etc/locale.gen\n"
    "  else\n"
    "    printf '%s\\n' \"$line\" >> /etc/locale.gen\n"
    "  fi\n"
    "fi\n"
    "locale-gen >&2\n"
    "echo ok\n";

/* In the sandbox for the same reasons as the time zone, the locale passed
 * as $1 for the same reason; locale-gen and localedef are the image's own
 * binaries, run over the image's own data. */
static int configure_locale(struct build *b, struct kiln_error **err)
{
	const char *loc = b->r->locale;
	progress(b, "locale %s", loc);
	bool write = !overlay_kept(b, "/etc/default/locale");
	const char *args[] = {loc, write ? "1" : "0", NULL};
	char outcome[32];
	int rc = config_script(b, "locale", locale_script, args, outcome, err);
	if (rc < 0)
		return rc;
	if (strcmp(outcome, "unknown") == 0)
		return kiln_error_set(err, ENOENT,
		                      "locale \"%s\": not a locale the image can generate (not in "
		                      "its /usr/share/i18n/SUPPORTED)",
		                      loc);
	if (strcmp(outcome, "not-generated") == 0)
		kiln_image_logf(&b->o->hooks,
		                "    locale %s: set in /etc/default/locale but not generated: the "
		                "locales package is not in the recipe\n",
		                loc);
	else if (strcmp(outcome, "ok") != 0)
		return kiln_error_set(err, EBADMSG, "locale: unexpected answer '%s'", outcome);
	return 0;
}

/* ---- healthcheck ------------------------------------------------------------ */

/* Waits s seconds, or less when the build is cancelled or its time runs
 * out first (run() then reports which). */
static void wait_s(struct build *b, int64_t s)
{
	double left = (double)b->r->resources.timeout_s - elapsed_s(b);
	double t = (double)s < left ? (double)s : left;
	if (t <= 0)
		return;
	struct pollfd p = {b->o->hooks.cancel_fd, POLLIN, 0};
	if (b->o->hooks.cancel_fd >= 0) {
		poll(&p, 1, (int)(t * 1000));
		return;
	}
	struct timespec ts = {(time_t)t, (long)((t - (double)(time_t)t) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The healthcheck runs `sh -c CMD` over the finished image with no network,
 * no binds and a fresh upper layer per attempt that is thrown away: the
 * image's upper layer is only a lower layer here, so nothing the check
 * writes (a pid file, a cache, a deliberate change) can reach the image, and
 * the image is the same bytes whether it ran or not. The command is the
 * recipe's, so it is untrusted like any RUN step. */
static int healthcheck(struct build *b, struct kiln_error **err)
{
	const struct kiln_healthcheck *hc = b->r->healthcheck;
	progress(b, "healthcheck: %.60s%s", hc->cmd, strlen(hc->cmd) > 60 ? "..." : "");
	if (hc->start_period_s > 0) {
		kiln_image_logf(&b->o->hooks, "    waiting the start period (%" PRId64 " s)\n",
		                hc->start_period_s);
		wait_s(b, hc->start_period_s);
	}
	int64_t attempts = hc->retries + 1;
	_cleanup_free_ char *last = NULL;
	for (int64_t i = 1; i <= attempts; i++) {
		if (i > 1)
			wait_s(b, hc->interval_s);
		_cleanup_rmtree_ char *up = xasprintf("%s/healthcheck-upper", b->scratch);
		int rc = kiln_image_mkdir_sandbox(up, err);
		if (rc < 0)
			return rc;
		const char *argv[] = {"/bin/sh", "-c", hc->cmd, NULL};
		const char *layers[] = {b->upper, b->base_tree};
		/* the steps' environment: the image's zone, ENV steps */
		struct kiln_image_run r = {
		    .what = "healthcheck",
		    .layers = layers,
		    .n_layers = 2,
		    .upper = up,
		    .argv = argv,
		    .env = (const char *const *)b->env,
		    .n_env = b->n_env,
		};
		kiln_image_logf(&b->o->hooks,
		                "    healthcheck attempt %" PRId64 " of %" PRId64 "\n", i,
		                attempts);
		/* run() reports the build's own timeout when it is the shorter
		 * limit; that, a cancel and a sandbox that cannot start end the
		 * build, only the command's failure is a failed attempt. */
		bool build_limit =
		    (double)hc->timeout_s >= (double)b->r->resources.timeout_s - elapsed_s(b);
		_cleanup_error_ struct kiln_error *e = NULL;
		rc = run(b, &r, (unsigned)hc->timeout_s, &e);
		if (rc == 0) {
			kiln_image_logf(&b->o->hooks,
			                "    healthcheck attempt %" PRId64 ": ok (exit status 0)\n",
			                i);
			return 0;
		}
		if (!(rc == -EIO || (rc == -ETIME && !build_limit))) {
			if (err && !*err)
				*err = TAKE_PTR(e);
			return rc;
		}
		const char *why = e ? e->msg : "failed";
		if (strncmp(why, "healthcheck: ", 13) == 0)
			why += 13;
		free(last);
		last = xstrdup(why);
		kiln_image_logf(&b->o->hooks, "    healthcheck attempt %" PRId64 ": %s\n", i, why);
	}
	return kiln_error_set(err, EIO, "healthcheck failed after %" PRId64 " attempt%s: %s",
	                      attempts, attempts == 1 ? "" : "s", last ? last : "failed");
}

/* ---- normalize and emit --------------------------------------------------- */

/* mkinitramfs clamps only mtimes newer than SOURCE_DATE_EPOCH; with an epoch
 * in the future the cpio keeps the wall clock of the build. The initrds the
 * install generated are reproducible already (install_script) and are left
 * alone while their SHA-256 is the one recorded then. Any other initrd in
 * /boot — made or changed by a step — is unpacked and packed again with
 * fixed times, sorted names, renumbered inodes and gzip -n, inside the
 * sandbox, with the image's own tools. The record is only a shortcut: an
 * image that forges it can spoil its own reproducibility, nothing more. */
static const char initramfs_script[] =
    "set -eu\n"
    "for f in /boot/initrd.img-*; do\n"
    "  [ -f \"$f\" ] || continue\n"
    "  if [ -f /mnt/initrd.sha256 ] &&\n"
    "     grep -qxF \"$(cd /boot && sha256sum \"${f#/boot/}\")\" /mnt/initrd.sha256; then\n"
    "    echo \"    $f: as generated after the install (reproducible), not repacked\"\n"
    "    continue\n"
    "  fi\n"
    "  if ! command -v unmkinitramfs >/dev/null || ! command -v cpio >/dev/null; then\n"
    "    echo \"kiln: $f: unmkinitramfs/cpio missing, initramfs not repacked\" >&2; exit 0\n"
    "  fi\n"
    "  d=$(mktemp -d /var/tmp/kiln-initrd.XXXXXX)\n"
    "  unmkinitramfs \"$f\" \"$d/x\"\n"
    "  find \"$d/x\" -exec touch -h -d \"@$SOURCE_DATE_EPOCH\" {} +\n"
    "  out=\"$d/initrd\"; : > \"$out\"\n"
    "  main=\"$d/x\"\n"
    "  if [ -d \"$d/x/main\" ]; then\n"
    "    for e in \"$d\"/x/early*; do\n"
    "      (cd \"$e\" && find . | LC_ALL=C sort | cpio --quiet --reproducible -o -H newc -R 0:0) "
    ">> \"$out\"\n"
    "    done\n"
    "    main=\"$d/x/main\"\n"
    "  fi\n"
    "  (cd \"$main\" && find . | LC_ALL=C sort | cpio --quiet --reproducible -o -H newc -R 0:0 | "
    "gzip -n -9) >> \"$out\"\n"
    "  cat \"$out\" > \"$f\"\n"
    "  rm -rf \"$d\"\n"
    "  echo \"    $f: repacked reproducibly\"\n"
    "done\n";

static int repack_initramfs(struct build *b, struct kiln_error **err)
{
	_cleanup_free_ char *rec = initrd_record_dir(b);
	struct kiln_sandbox_bind binds[] = {{rec, "/mnt", true}};
	size_t n = access(rec, F_OK) == 0 ? 1 : 0;
	return in_image(b, "initramfs", initramfs_script, NULL, binds, n, NULL, 0, err);
}

static int mount_merged(struct build *b, struct kiln_error **err)
{
	/* A private mount namespace for this thread: the merged view is never
	 * visible to the host and disappears with kiln, even on SIGKILL. */
	if (unshare(CLONE_NEWNS) < 0)
		return kiln_error_set_errno(err, errno, "unshare(CLONE_NEWNS)");
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		return kiln_error_set_errno(err, errno, "cannot make mounts private");
	if (mkdir(b->merged, 0755) < 0 || mkdir(b->work, 0700) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", b->merged);
	_cleanup_free_ char *opts =
	    xasprintf("lowerdir=%s,upperdir=%s,workdir=%s", b->base_tree, b->upper, b->work);
	if (mount("overlay", b->merged, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
		return kiln_error_set_errno(err, errno, "cannot mount the image's merged root");
	b->mounted = true;
	return 0;
}

static int list_installed(struct build *b, struct kiln_error **err)
{
	/* A base without dpkg (busybox) had its packages extracted, never
	 * installed, and takes no more: its record is the whole list. */
	_cleanup_free_ char *query = xasprintf("%s/usr/bin/dpkg-query", b->base_tree);
	if (b->lock.n == 0 && faccessat(AT_FDCWD, query, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		_cleanup_free_ char *bp =
		    xasprintf("%s/bases/%s.packages", b->o->state_dir, b->base_digest);
		_cleanup_free_ char *btxt = NULL;
		size_t bl = 0;
		int r = kiln_read_file(bp, 64 << 20, &btxt, &bl, err);
		return r < 0 ? r : pkglist_parse(btxt, false, &b->installed, err);
	}
	struct kiln_buf out = KILN_BUF_INIT;
	int rc = in_image(b, "list packages",
	                  "dpkg-query -W -f='${Package} ${Version} ${Architecture}\\n'", NULL, NULL,
	                  0, &out, 0, err);
	if (rc == 0) {
		/* Add the .deb digests: the lock's, else the base's record. */
		_cleanup_free_ char *bp =
		    xasprintf("%s/bases/%s.packages", b->o->state_dir, b->base_digest);
		_cleanup_free_ char *btxt = NULL;
		size_t bl = 0;
		struct pkglist base = {NULL, 0};
		_cleanup_error_ struct kiln_error *e2 = NULL;
		if (kiln_read_file(bp, 64 << 20, &btxt, &bl, &e2) == 0)
			pkglist_parse(btxt, false, &base, NULL);
		struct kiln_buf lines = KILN_BUF_INIT;
		_cleanup_free_ char *copy = xstrdup(out.data ? out.data : "");
		char *save = NULL;
		for (char *ln = strtok_r(copy, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
			char name[256], ver[256], arch[64];
			char *s2 = NULL;
			char *f0 = strtok_r(ln, " ", &s2), *f1 = strtok_r(NULL, " ", &s2),
			     *f2 = strtok_r(NULL, " ", &s2);
			if (!f0 || !f1 || !f2)
				continue;
			snprintf(name, sizeof(name), "%s", f0);
			snprintf(ver, sizeof(ver), "%s", f1);
			snprintf(arch, sizeof(arch), "%s", f2);
			const char *h = NULL;
			for (size_t i = 0; i < b->lock.n && !h; i++)
				if (!strcmp(b->lock.v[i].name, name) &&
				    !strcmp(b->lock.v[i].version, ver))
					h = b->lock.v[i].sha256;
			for (size_t i = 0; i < base.n && !h; i++)
				if (!strcmp(base.v[i].name, name) &&
				    !strcmp(base.v[i].version, ver))
					h = base.v[i].sha256;
			if (!h || strlen(h) != KILN_SHA256_HEX_LEN)
				h = "unknown";
			kiln_buf_printf(&lines, "%s %s %s %s\n", name, ver, arch, h);
		}
		pkglist_clear(&base);
		rc = pkglist_parse(lines.data ? lines.data : "", false, &b->installed, err);
		kiln_buf_free(&lines);
	}
	kiln_buf_free(&out);
	return rc;
}

static int add_artifact(struct build *b, const char *name, struct kiln_error **err)
{
	_cleanup_free_ char *p = xasprintf("%s/%s", b->o->out_dir, name);
	struct kiln_image_artifact a = {xstrdup(name), "", 0};
	int rc = kiln_cas_put_file(b->o->state_dir, p, NULL, a.sha256, &a.size, err);
	if (rc < 0) {
		free(a.name);
		return rc;
	}
	b->res->artifacts = xreallocarray(b->res->artifacts, b->res->n_artifacts + 1, sizeof(a));
	b->res->artifacts[b->res->n_artifacts++] = a;
	kiln_image_logf(&b->o->hooks, "    %s  sha256:%s  %" PRIu64 " bytes\n", name, a.sha256,
	                a.size);
	return 0;
}

static int emit_tar(struct build *b, int rootfd, struct kiln_error **err)
{
	_cleanup_free_ char *tmp = xasprintf("%s/.rootfs.tar.gz.tmp", b->o->out_dir);
	_cleanup_free_ char *dst = xasprintf("%s/rootfs.tar.gz", b->o->out_dir);
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", tmp);
	struct kiln_tarball_opts o;
	kiln_tarball_opts_default(&o, b->r->source_date_epoch);
	o.gzip = true;
	int rc = kiln_tarball_write(rootfd, fd, &o, err);
	if (rc == 0 && fsync(fd) < 0)
		rc = kiln_error_set_errno(err, errno, "%s: fsync", tmp);
	if (rc == 0 && rename(tmp, dst) < 0)
		rc = kiln_error_set_errno(err, errno, "%s: cannot rename", dst);
	if (rc < 0) {
		unlink(tmp);
		kiln_error_prefix(err, "tar output");
		return rc;
	}
	return add_artifact(b, "rootfs.tar.gz", err);
}

static void put_pkg_json(struct kiln_buf *m, const struct pkglist *l)
{
	kiln_buf_putc(m, '[');
	for (size_t i = 0; i < l->n; i++) {
		kiln_buf_puts(m, i ? ",\n    {\"architecture\":" : "\n    {\"architecture\":");
		kiln_json_put_cstr(m, l->v[i].arch);
		kiln_buf_puts(m, ",\"name\":");
		kiln_json_put_cstr(m, l->v[i].name);
		kiln_buf_puts(m, ",\"sha256\":");
		kiln_json_put_cstr(m, l->v[i].sha256);
		kiln_buf_puts(m, ",\"version\":");
		kiln_json_put_cstr(m, l->v[i].version);
		kiln_buf_putc(m, '}');
	}
	kiln_buf_puts(m, l->n ? "\n  ]" : "]");
}

static int write_manifest(struct build *b, struct kiln_error **err)
{
	const struct kiln_recipe *r = b->r;
	struct kiln_buf m = KILN_BUF_INIT;
	kiln_buf_puts(&m, "{\n  \"kiln_version\": ");
	kiln_json_put_cstr(&m, KILN_VERSION);
	kiln_buf_puts(&m, ",\n  \"recipe\": {\"name\":");
	if (r->name)
		kiln_json_put_cstr(&m, r->name);
	else
		kiln_buf_puts(&m, "null");
	kiln_buf_printf(
	    &m,
	    ",\"config_hash\":\"%s\",\"build_key\":\"%s\",\"source_date_epoch\":%" PRId64 "},\n",
	    r->config_hash, b->build_key, r->source_date_epoch);
	kiln_buf_puts(&m, "  \"base\": {\"name\":");
	kiln_json_put_cstr(&m, r->base);
	kiln_buf_printf(&m, ",\"sha256\":\"%s\"},\n  \"tools\": ", b->base_digest);
	kiln_json_put_cstr(&m, kiln_image_tool_versions());
	/* For a runtime that starts the image: the recipe's check, as given. */
	kiln_buf_puts(&m, ",\n  \"healthcheck\": ");
	kiln_recipe_put_healthcheck(&m, r->healthcheck);
	kiln_buf_puts(&m, ",\n  \"lock\": ");
	put_pkg_json(&m, &b->lock);
	kiln_buf_puts(&m, ",\n  \"artifacts\": [");
	for (size_t i = 0; i < b->res->n_artifacts; i++) {
		const struct kiln_image_artifact *a = &b->res->artifacts[i];
		kiln_buf_puts(&m, i ? ",\n    {\"name\":" : "\n    {\"name\":");
		kiln_json_put_cstr(&m, a->name);
		kiln_buf_printf(&m, ",\"sha256\":\"%s\",\"size\":%" PRIu64 "}", a->sha256, a->size);
	}
	kiln_buf_puts(&m, b->res->n_artifacts ? "\n  ]\n}\n" : "]\n}\n");
	_cleanup_free_ char *p = xasprintf("%s/manifest.json", b->o->out_dir);
	int rc = write_text(p, m.data, m.len, 0644, err);
	kiln_buf_free(&m);
	return rc;
}

static int write_sbom(struct build *b, struct kiln_error **err)
{
	struct kiln_sbom_package *pk = xcalloc(b->installed.n + 1, sizeof(*pk));
	size_t n = 0;
	for (size_t i = 0; i < b->installed.n; i++) {
		const struct pkg *p = &b->installed.v[i];
		if (strlen(p->sha256) != KILN_SHA256_HEX_LEN)
			continue; /* not from an index we know: listed in manifest only */
		pk[n++] = (struct kiln_sbom_package){p->name, p->version, p->arch, p->sha256};
	}
	_cleanup_free_ char *doc = NULL;
	size_t len = 0;
	int rc = kiln_sbom_spdx_json(b->r->name ? b->r->name : "kiln-image",
	                             b->r->source_date_epoch, pk, n, &doc, &len, err);
	free(pk);
	if (rc < 0) {
		kiln_error_prefix(err, "sbom");
		return rc;
	}
	_cleanup_free_ char *p = xasprintf("%s/sbom.spdx.json", b->o->out_dir);
	return write_text(p, doc, len, 0644, err);
}

/* ---- driver --------------------------------------------------------------- */

static void build_clear(struct build *b)
{
	if (b->mounted)
		umount2(b->merged, MNT_DETACH);
	if (b->scratch)
		kiln_rmtree(b->scratch);
	safe_close(b->lock_fd);
	free(b->base_tree);
	free(b->scratch);
	free(b->upper);
	free(b->debs);
	free(b->merged);
	free(b->work);
	free(b->outtmp);
	free(b->context);
	free(b->workdir);
	for (size_t i = 0; i < b->n_env; i++)
		free(b->env[i]);
	free(b->env);
	pkglist_clear(&b->lock);
	pkglist_clear(&b->installed);
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

static int build_run(struct build *b, struct kiln_error **err)
{
	const struct kiln_image_build_opts *o = b->o;
	const struct kiln_recipe *r = b->r;
	if (!path_safe_for_mount(o->state_dir))
		return kiln_error_set(err, EINVAL, "state directory %s: must not contain , : or \\",
		                      o->state_dir);
	int rc = kiln_state_init(o->state_dir, err);
	if (rc < 0)
		return rc;
	if (mkdir(o->out_dir, 0755) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create output directory",
		                            o->out_dir);
	rc = kiln_image_base_path(o->state_dir, r->base, &b->base_tree, b->base_digest, err);
	if (rc < 0)
		return rc;

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
	if (mkdir(b->scratch, 0711) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", b->scratch);
	_cleanup_free_ char *lk = xasprintf("%s/.lock", b->scratch);
	b->lock_fd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (b->lock_fd < 0 || flock(b->lock_fd, LOCK_EX | LOCK_NB) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot lock", lk);
	b->upper = xasprintf("%s/upper", b->scratch);
	b->debs = xasprintf("%s/fetch-debs", b->scratch);
	b->merged = xasprintf("%s/merged", b->scratch);
	b->work = xasprintf("%s/work", b->scratch);
	if ((rc = kiln_image_mkdir_sandbox(b->upper, err)) < 0 ||
	    (rc = kiln_image_mkdir_sandbox(b->debs, err)) < 0)
		return rc;

	unsigned n_out = (unsigned)__builtin_popcount(r->outputs);
	/* fetch, install, overlays, timezone, locale, steps, [healthcheck],
	 * normalize, outputs */
	b->total = 5 + (unsigned)r->n_steps + (r->healthcheck ? 1 : 0) + 1 + n_out;
	kiln_image_logf(&o->hooks,
	                "==> building %s: config %.12s, build key %.12s, SOURCE_DATE_EPOCH=%" PRId64
	                "\n",
	                r->name ? r->name : "(unnamed recipe)", r->config_hash, b->build_key,
	                r->source_date_epoch);

	progress(b, "fetch %zu packages", r->n_packages);
	if (r->n_packages && (rc = fetch(b, err)) < 0)
		return rc;
	progress(b, "install %zu locked packages (offline)", b->lock.n);
	if (b->lock.n && (rc = install(b, err)) < 0)
		return rc;
	progress(b, "write %zu overlay files", r->n_files);
	if ((rc = write_overlays(b, err)) < 0)
		return rc;
	if ((rc = extract_context(b, err)) < 0)
		return rc;
	env_set(b, "HOME", "/root");
	if ((rc = configure_timezone(b, err)) < 0 || (rc = configure_locale(b, err)) < 0)
		return rc;
	for (size_t i = 0; i < r->n_steps; i++)
		if ((rc = run_step(b, i, err)) < 0)
			return rc;
	if ((rc = repack_initramfs(b, err)) < 0)
		return rc;
	if (r->healthcheck && (rc = healthcheck(b, err)) < 0)
		return rc;
	if ((rc = list_installed(b, err)) < 0)
		return rc;

	progress(b, "normalize");
	if ((rc = mount_merged(b, err)) < 0)
		return rc;
	_cleanup_close_ int rootfd = open(b->merged, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (rootfd < 0)
		return kiln_error_set_errno(err, errno, "%s", b->merged);
	const char **keep = xcalloc(r->n_files + 1, sizeof(char *));
	size_t nk = 0;
	for (size_t i = 0; i < r->n_overlays; i++)
		for (size_t k = 0; k < r->overlays[i].n_files; k++)
			keep[nk++] = r->overlays[i].files[k].path;
	struct kiln_normalize_stats ns;
	rc = kiln_normalize_tree(rootfd, r->source_date_epoch, keep, &ns, err);
	free(keep);
	if (rc < 0)
		return rc;
	kiln_image_logf(
	    &o->hooks, "    removed %" PRIu64 ", emptied %" PRIu64 ", clamped %" PRIu64 " mtimes\n",
	    ns.removed, ns.emptied, ns.clamped);
	/* normalize's removals touched directories just now: with an epoch in
	 * the future its min(mtime, epoch) leaves those, so the build's own
	 * times are reset here too. */
	if ((rc = clamp_tree(b, b->merged, err)) < 0)
		return rc;
	/* After normalize: what it removed or emptied no longer leaks. */
	scan_leaks(b);
	if (o->want_tree)
		b->res->tree = kiln_image_tree_list(b->merged);

	if (r->outputs & KILN_OUTPUT_TAR) {
		progress(b, "emit rootfs.tar.gz");
		if ((rc = emit_tar(b, rootfd, err)) < 0)
			return rc;
	}
	_cleanup_free_ char *sq = NULL;
	if (r->outputs & (KILN_OUTPUT_SQUASHFS | KILN_OUTPUT_ISO)) {
		bool keep_sq = r->outputs & KILN_OUTPUT_SQUASHFS;
		if (keep_sq)
			progress(b, "emit rootfs.squashfs");
		sq = keep_sq ? xasprintf("%s/rootfs.squashfs", o->out_dir)
		             : xasprintf("%s/filesystem.squashfs", b->scratch);
		struct kiln_emit_ctx ec = {&b->hooks, b->scratch,           b->merged,
		                           rootfd,    r->source_date_epoch, r->name};
		if (cancelled(b))
			return kiln_error_set(err, ECANCELED, "build cancelled");
		if ((rc = kiln_emit_squashfs(&ec, sq, err)) < 0)
			return rc;
		if (keep_sq && (rc = add_artifact(b, "rootfs.squashfs", err)) < 0)
			return rc;
		if (r->outputs & KILN_OUTPUT_ISO) {
			progress(b, "emit live.iso");
			if (cancelled(b))
				return kiln_error_set(err, ECANCELED, "build cancelled");
			_cleanup_free_ char *iso = xasprintf("%s/live.iso", o->out_dir);
			if ((rc = kiln_emit_iso(&ec, sq, iso, err)) < 0)
				return rc;
			if ((rc = add_artifact(b, "live.iso", err)) < 0)
				return rc;
		}
	}
	if ((rc = write_sbom(b, err)) < 0)
		return rc;
	if ((rc = add_artifact(b, "sbom.spdx.json", err)) < 0)
		return rc;
	if ((rc = write_manifest(b, err)) < 0)
		return rc;
	if ((rc = add_artifact(b, "manifest.json", err)) < 0)
		return rc;
	return kiln_image_cache_record(o->state_dir, b->res, err);
}

int kiln_image_build(const struct kiln_image_build_opts *opts, struct kiln_image_result **ret,
                     struct kiln_error **err)
{
	struct build b = {.o = opts, .r = opts->recipe, .lock_fd = -1};
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
