/* Packages: the package-list format, fetch and lock, staging the locked
 * .debs, the offline install, and the list of what the image has installed.
 *
 * Isolation: the fetch phase is the only networked command of a build; it
 * runs nothing but apt against the base's sources, its writable layer is
 * thrown away, and what it downloaded is accepted only after its SHA-256
 * matches the package index. The install runs with no network over exactly
 * the locked .debs. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/backend.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/parse.h"

/* ---- package lists ------------------------------------------------------- */

void kiln_image_pkglist_clear(struct kiln_pkglist *l)
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

int kiln_image_pkglist_parse(const char *text, bool want_file, struct kiln_pkglist *ret,
                             struct kiln_error **err)
{
	struct kiln_pkglist l = {NULL, 0};
	const char *line = text;
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		struct kiln_span f[5];
		size_t nf = kiln_split_fields(line, len, f, 5, NULL);
		if (nf > 0 && nf < (want_file ? 5u : 4u)) {
			kiln_image_pkglist_clear(&l);
			return kiln_error_set(err, EBADMSG, "malformed package line '%.*s'",
			                      (int)len, line);
		}
		if (nf > 0) {
			l.v = xreallocarray(l.v, l.n + 1, sizeof(struct kiln_pkg));
			l.v[l.n++] = (struct kiln_pkg){
			    xstrndup(f[0].p, f[0].len), xstrndup(f[1].p, f[1].len),
			    xstrndup(f[2].p, f[2].len), xstrndup(f[3].p, f[3].len),
			    want_file ? xstrndup(f[4].p, f[4].len) : NULL};
		}
		line += len + (nl ? 1 : 0);
	}
	*ret = l;
	return 0;
}

int kiln_image_write_text(const char *path, const char *data, size_t len, mode_t mode,
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

char *kiln_image_lock_path(const struct build *b)
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

bool kiln_image_lock_warm(const struct build *b, const struct kiln_pkglist *l)
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

static int debian_fetch(struct build *b, struct kiln_error **err)
{
	_cleanup_free_ char *lp = kiln_image_lock_path(b);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e2 = NULL;
	if (kiln_read_file(lp, 64 << 20, &text, &len, &e2) == 0) {
		struct kiln_pkglist l;
		if (kiln_image_pkglist_parse(text, true, &l, NULL) == 0) {
			if (kiln_image_lock_warm(b, &l)) {
				kiln_image_logf(&b->o->hooks,
				                "    lock and all %zu .debs are in the store; no "
				                "network needed\n",
				                l.n);
				b->lock = l;
				return 0;
			}
			kiln_image_pkglist_clear(&l);
		}
	}
	if (b->o->offline)
		return kiln_error_set_kind(
		    err, KILN_ERR_USER, ENETUNREACH,
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
	_cleanup_buf_ struct kiln_buf errs = KILN_BUF_INIT_MAX(KILN_BUF_MAX_TOOL_ERRORS);
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
	rc = kiln_image_run_timed(b, &r, 0, err);
	free(argv);
	if (rc < 0)
		return rc;

	_cleanup_free_ char *ltxt_path = xasprintf("%s/lock.txt", b->debs);
	_cleanup_free_ char *ltxt = NULL;
	rc = kiln_read_file(ltxt_path, 64 << 20, &ltxt, &len, err);
	if (rc < 0)
		return rc;
	struct kiln_pkglist l;
	rc = kiln_image_pkglist_parse(ltxt, true, &l, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < l.n; i++) {
		struct kiln_pkg *p = &l.v[i];
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
		kiln_image_pkglist_clear(&l);
		return rc;
	}
	kiln_image_logf(&b->o->hooks, "    locked %zu packages (verified against the index)\n",
	                l.n);
	rc = kiln_image_write_text(lp, ltxt, strlen(ltxt), 0644, err);
	b->lock = l;
	return rc;
}

/* The locked .debs, linked from the store into a directory of their own. */
int kiln_image_stage_lock(struct build *b, const char *dir, struct kiln_error **err)
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

char *kiln_image_initrd_record_dir(const struct build *b)
{
	return xasprintf("%s/initrd", b->scratch);
}

static int debian_install(struct build *b, struct kiln_error **err)
{
	_cleanup_rmtree_ char *dir = xasprintf("%s/install-debs", b->scratch);
	int rc = kiln_image_stage_lock(b, dir, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *rec = kiln_image_initrd_record_dir(b);
	if ((rc = kiln_image_mkdir_sandbox(rec, err)) < 0)
		return rc;
	char epoch[32];
	snprintf(epoch, sizeof(epoch), "%" PRId64,
	         b->r->source_date_epoch < KILN_BASE_EPOCH ? b->r->source_date_epoch
	                                                   : KILN_BASE_EPOCH);
	const char *argv[] = {"/bin/sh", "-c", install_script, "kiln-install", epoch, NULL};
	const char *layers[] = {b->base_tree};
	struct kiln_sandbox_bind binds[] = {{dir, "/srv", true}, {rec, "/mnt", false}};
	_cleanup_buf_ struct kiln_buf errs = KILN_BUF_INIT_MAX(KILN_BUF_MAX_TOOL_ERRORS);
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
	rc = kiln_image_run_timed(b, &r, 0, err);
	return rc;
}

/* "name version arch" lines of what the image has installed, with each
 * package's digest from the lock, else from the base's record. */
void kiln_image_installed_from(struct build *b, const char *text)
{
	_cleanup_free_ char *bp =
	    xasprintf("%s/bases/%s.packages", b->o->state_dir, b->base_digest);
	_cleanup_free_ char *btxt = NULL;
	size_t bl = 0;
	struct kiln_pkglist base = {NULL, 0};
	_cleanup_error_ struct kiln_error *e2 = NULL;
	if (kiln_read_file(bp, 64 << 20, &btxt, &bl, &e2) == 0)
		kiln_image_pkglist_parse(btxt, false, &base, NULL);
	struct kiln_pkglist l = {NULL, 0};
	const char *ln = text;
	while (*ln) {
		const char *nl = strchr(ln, '\n');
		size_t len = nl ? (size_t)(nl - ln) : strlen(ln);
		struct kiln_span f[3];
		if (kiln_split_fields(ln, len, f, 3, NULL) == 3) {
			_cleanup_free_ char *name = xstrndup(f[0].p, f[0].len);
			_cleanup_free_ char *ver = xstrndup(f[1].p, f[1].len);
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
			l.v = xreallocarray(l.v, l.n + 1, sizeof(struct kiln_pkg));
			l.v[l.n++] =
			    (struct kiln_pkg){TAKE_PTR(name), TAKE_PTR(ver),
			                      xstrndup(f[2].p, f[2].len), xstrdup(h), NULL};
		}
		ln += len + (nl ? 1 : 0);
	}
	kiln_image_pkglist_clear(&base);
	b->installed = l;
}

static int debian_list_installed(struct build *b, struct kiln_error **err)
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
		return r < 0 ? r : kiln_image_pkglist_parse(btxt, false, &b->installed, err);
	}
	_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT_MAX(KILN_BUF_MAX_CAPTURE);
	int rc = kiln_image_script(b, "list packages",
	                           "dpkg-query -W -f='${Package} ${Version} ${Architecture}\\n'",
	                           NULL, NULL, 0, &out, 0, err);
	/* A cut list would be a wrong SBOM, not a short one. */
	if (rc == 0 && out.truncated)
		rc = kiln_error_set(err, EFBIG, "list packages: the list is over %zu bytes",
		                    out.max);
	if (rc == 0)
		kiln_image_installed_from(b, out.data ? out.data : "");
	return rc;
}

const struct kiln_image_backend kiln_image_backend_debian = {
    .name = "debian",
    .bootstrap = kiln_image_debian_bootstrap,
    .fetch = debian_fetch,
    .install = debian_install,
    .list_installed = debian_list_installed,
};

/* ---- the phases, through the base's backend -------------------------------- */

int kiln_image_phase_fetch(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "fetch %zu package%s", b->r->n_packages,
	                    b->r->n_packages == 1 ? "" : "s");
	return b->r->n_packages ? b->be->fetch(b, err) : 0;
}

int kiln_image_phase_install(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "install %zu locked package%s (offline)", b->lock.n,
	                    b->lock.n == 1 ? "" : "s");
	return b->lock.n ? b->be->install(b, err) : 0;
}

int kiln_image_phase_list_installed(struct build *b, struct kiln_error **err)
{
	return b->be->list_installed(b, err);
}
