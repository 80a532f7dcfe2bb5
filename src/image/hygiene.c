/* Image hygiene: what keeps an image reproducible and free of the build's
 * traces — mtime clamping, the leak scan, the initramfs repack — and the
 * normalize phase that applies them to the finished tree.
 *
 * The walks run while no sandbox is alive, on this build's own trees, and
 * never follow symlinks or cross into another file system. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/backend.h"
#include "image/normalize.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/walk.h"

/* ---- time hygiene ---------------------------------------------------------- */

/* Files written by package installation and earlier steps carry the wall
 * clock as mtime; a later step that lists them (ls -l, tar, a build system
 * comparing dates) would bake the build's time into the image. Clamping the
 * upper layer to SOURCE_DATE_EPOCH before every command closes that leak.
 * The walk runs while no sandbox is alive and never follows symlinks. */
struct clamp {
	int64_t epoch, since;
	uint64_t count;
};

/* An mtime later than the epoch is clamped to it; so is any mtime from this
 * build's own run (>= its start): with an epoch in the future — the derived
 * one reaches 2031 — "clamping" alone would keep the wall clock. */
static int clamp_entry(const struct kiln_walk_entry *e, void *ud)
{
	struct clamp *c = ud;
	const struct stat *st = e->st;
	bool late = st->st_mtim.tv_sec > c->epoch ||
	            (st->st_mtim.tv_sec == c->epoch && st->st_mtim.tv_nsec != 0);
	if (!late && st->st_mtim.tv_sec < c->since)
		return 0;
	if (st->st_mtim.tv_sec == c->epoch && st->st_mtim.tv_nsec == 0)
		return 0;
	struct timespec ts[2] = {{c->epoch, 0}, {c->epoch, 0}};
	if (utimensat(e->dirfd, e->name, ts, AT_SYMLINK_NOFOLLOW) == 0)
		c->count++;
	return 0;
}

int kiln_image_clamp_tree(struct build *b, const char *dir, struct kiln_error **err)
{
	struct clamp c = {b->r->source_date_epoch, b->start_wall - 2, 0};
	int r = kiln_walk(AT_FDCWD, dir, 0, clamp_entry, &c);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot clamp mtimes", dir);
	return 0;
}

int kiln_image_clamp_upper(struct build *b, struct kiln_error **err)
{
	return kiln_image_clamp_tree(b, b->upper, err);
}

/* Looks for the build's wall-clock date, the host's name and the build id
 * in everything the build wrote (the upper layer), and reports each file
 * that contains one: such a file would differ in the next build. */
struct leak_scan {
	const char *const *needles;
	size_t n;
	struct kiln_buf *report;
	size_t found;
};

static int leak_entry(const struct kiln_walk_entry *e, void *ud)
{
	struct leak_scan *ls = ud;
	const struct stat *st = e->st;
	if (!S_ISREG(st->st_mode) || st->st_size == 0 || st->st_size > (64 << 20) ||
	    ls->found >= 20)
		return 0;
	_cleanup_close_ int fd = openat(e->dirfd, e->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	_cleanup_free_ char *data = xmalloc((size_t)st->st_size);
	ssize_t n = read(fd, data, (size_t)st->st_size);
	if (n <= 0)
		return 0;
	for (size_t i = 0; i < ls->n; i++)
		if (memmem(data, (size_t)n, ls->needles[i], strlen(ls->needles[i]))) {
			kiln_buf_printf(ls->report, "    %s contains \"%s\"\n", e->rel,
			                ls->needles[i]);
			ls->found++;
			break;
		}
	return 0;
}

void kiln_image_scan_leaks(struct build *b)
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
	_cleanup_buf_ struct kiln_buf report = KILN_BUF_INIT;
	struct leak_scan ls = {needles, n, &report, 0};
	kiln_walk(AT_FDCWD, b->upper, 0, leak_entry, &ls);
	if (ls.found) {
		kiln_image_logf(&b->o->hooks,
		                "==> warning: %zu file(s) written by this build contain its date, "
		                "host name or id; the image will not be reproducible:\n%s",
		                ls.found, report.data);
		b->leaks = ls.found;
	}
}

/* ---- initramfs -------------------------------------------------------------- */

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

int kiln_image_phase_initramfs(struct build *b, struct kiln_error **err)
{
	_cleanup_free_ char *rec = kiln_image_initrd_record_dir(b);
	struct kiln_sandbox_bind binds[] = {{rec, "/mnt", true}};
	size_t n = access(rec, F_OK) == 0 ? 1 : 0;
	return kiln_image_script(b, "initramfs", initramfs_script, NULL, binds, n, NULL, 0, err);
}

/* ---- normalize -------------------------------------------------------------- */

int kiln_image_phase_normalize(struct build *b, struct kiln_error **err)
{
	const struct kiln_recipe *r = b->r;
	kiln_image_progress(b, "normalize");
	int rc = kiln_image_mount_merged(b, err);
	if (rc < 0)
		return rc;
	const char **keep = xcalloc(r->n_files + 1, sizeof(char *));
	size_t nk = 0;
	for (size_t i = 0; i < r->n_overlays; i++)
		for (size_t k = 0; k < r->overlays[i].n_files; k++)
			keep[nk++] = r->overlays[i].files[k].path;
	struct kiln_normalize_stats ns;
	rc = b->be->normalize ? b->be->normalize(b, err) : 0;
	if (rc == 0)
		rc = kiln_normalize_tree(b->rootfd, r->source_date_epoch, keep, &ns, err);
	free(keep);
	if (rc < 0)
		return rc;
	kiln_image_logf(&b->o->hooks,
	                "    removed %" PRIu64 ", emptied %" PRIu64 ", clamped %" PRIu64
	                " mtimes\n",
	                ns.removed, ns.emptied, ns.clamped);
	/* normalize's removals touched directories just now: with an epoch in
	 * the future its min(mtime, epoch) leaves those, so the build's own
	 * times are reset here too. */
	if ((rc = kiln_image_clamp_tree(b, b->merged, err)) < 0)
		return rc;
	/* After normalize: what it removed or emptied no longer leaks. */
	kiln_image_scan_leaks(b);
	if (b->o->want_tree)
		b->res->tree = kiln_image_tree_list(b->merged);
	return 0;
}
