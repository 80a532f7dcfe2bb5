/* The pacman backend: Arch Linux bases and recipes (image/backend.h).
 *
 * Every pacman command is Debian's own pacman (pacman-package-manager) run
 * inside kiln's sandbox with the host's root read-only, the way mmdebstrap
 * runs for Debian: an Arch base need not contain pacman, and what runs is a
 * tool kiln trusts, never the image's. The image's trees are bound into
 * that sandbox; scriptlets run chrooted into the image by pacman, inside
 * the same sandbox.
 *
 * The mirrors (`kiln setup --mirror`) are the allowlist: kiln writes them
 * into the base's /etc/pacman.d/kiln.conf, the only pacman.conf any phase
 * uses, so no other host is named. Signatures: SigLevel = Required
 * DatabaseOptional against a keyring kiln makes (pacman-key --init, the
 * operator's keys added and locally signed, or the mirror's
 * archlinux-keyring); gpg's dirmngr is disabled in it, so a package signed
 * by an unknown key cannot make pacman fetch keys from a keyserver or WKD
 * (a host outside the allowlist, chosen by whoever signed the package).
 *
 * Isolation per phase: bootstrap and fetch get the host network (the
 * mirrors must be reachable, loopback ones included: the host's network
 * namespace); install, list and normalize get none. Fetch sees the base
 * read-only; what it downloaded is accepted only with the SHA-256 the sync
 * database gives for its file name. The install takes exactly the locked
 * bytes, from the store. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/backend.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"

/* ---- options and identity ---------------------------------------------------- */

/* A Server template pacman.conf can take: http(s), no white space or
 * control characters (a newline would let a "mirror" add a section or an
 * option such as XferCommand to pacman.conf). */
static bool mirror_ok(const char *m)
{
	if (strncmp(m, "http://", 7) != 0 && strncmp(m, "https://", 8) != 0)
		return false;
	for (const unsigned char *p = (const unsigned char *)m; *p; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '#')
			return false;
	return strlen(m) < 1024;
}

static char *pacman_identity(const struct kiln_image_setup_opts *o, bool *ret_none,
                             struct kiln_error **err)
{
	*ret_none = o->n_mirrors == 0 && !o->keyring && !o->n_packages && !o->allow_unsigned;
	if (*ret_none)
		return NULL;
	if (o->n_mirrors == 0) {
		kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                    "base archlinux needs at least one --mirror "
		                    "(a pacman Server template such as "
		                    "https://mirror.example/$repo/os/$arch)");
		return NULL;
	}
	if (o->keyring && o->allow_unsigned) {
		kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                    "--keyring and --allow-unsigned exclude each other");
		return NULL;
	}
	struct kiln_sha256 s;
	kiln_sha256_init(&s);
	kiln_sha256_update(&s, "kiln-pacman-base-v1\n", 20);
	for (size_t i = 0; i < o->n_mirrors; i++) {
		if (!mirror_ok(o->mirrors[i])) {
			kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
			                    "--mirror '%s': must be an http:// or https:// URL "
			                    "without spaces, control characters or '#'",
			                    o->mirrors[i]);
			return NULL;
		}
		kiln_sha256_update(&s, "mirror ", 7);
		kiln_sha256_update(&s, o->mirrors[i], strlen(o->mirrors[i]));
		kiln_sha256_update(&s, "\n", 1);
	}
	for (size_t i = 0; i < o->n_packages; i++) {
		if (!kiln_recipe_pacman_name_ok(o->packages[i], strlen(o->packages[i]))) {
			kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
			                    "--packages: '%s' is not a valid pacman package name",
			                    o->packages[i]);
			return NULL;
		}
		kiln_sha256_update(&s, "package ", 8);
		kiln_sha256_update(&s, o->packages[i], strlen(o->packages[i]));
		kiln_sha256_update(&s, "\n", 1);
	}
	if (o->keyring) {
		char hex[KILN_SHA256_HEX_LEN + 1];
		int r = kiln_sha256_file(o->keyring, hex, NULL);
		if (r < 0) {
			kiln_error_set_errno(err, -r, "--keyring %s: cannot read", o->keyring);
			kiln_error_set_kind_of(err, KILN_ERR_USER);
			return NULL;
		}
		kiln_sha256_update(&s, "keyring ", 8);
		kiln_sha256_update(&s, hex, KILN_SHA256_HEX_LEN);
	} else if (o->allow_unsigned) {
		kiln_sha256_update(&s, "unsigned", 8);
	} else {
		kiln_sha256_update(&s, "archlinux-keyring", 17);
	}
	char *hex = xmalloc(KILN_SHA256_HEX_LEN + 1);
	kiln_sha256_final_hex(&s, hex);
	return hex;
}

/* ---- bootstrap ------------------------------------------------------------------ */

/* The keyring: pacman-key --init (a local master key that signs the trusted
 * keys; it never reaches an image: normalize removes /etc/pacman.d/gnupg),
 * no keyserver and no dirmngr. $1: keyring (the operator's keys in
 * /srv/keyring), archlinux (the mirror's archlinux-keyring package, trusted
 * on first use over the mirror: its keys are imported, the ones it lists as
 * trusted locally signed, the revoked ones disabled, as pacman-key
 * --populate does), or unsigned (no keyring: SigLevel = Never). Then pacman
 * installs base and the extra packages ($2...) into /mnt/root (its
 * scriptlets chrooted there: one that leaves the chroot finds the host's
 * root read-only and only this scratch writable), and records
 * every package it downloaded with the SHA-256 of its file. */
static const char bootstrap_script[] =
    "set -eu\n"
    "mode=$1; shift\n"
    "r=/mnt/root; g=$r/etc/pacman.d/gnupg; c=/srv/pacman.conf\n"
    "mkdir -p \"$r/var/lib/pacman\" \"$r/etc/pacman.d\" \"$r/var/log\" /mnt/cache\n"
    "K=\"pacman-key --config $c --gpgdir $g\"\n"
    "lsign_all() { gpg --homedir \"$g\" --batch --with-colons --import-options show-only "
    "--import \"$1\" | awk -F: '/^pub:/ {p = 1; next} p && /^fpr:/ {print $10; p = 0}' |\n"
    "  while read -r f; do $K --lsign-key \"$f\" >/dev/null; done; }\n"
    "no_dirmngr() { grep -v -e '^keyserver' -e '^disable-dirmngr' \"$g/gpg.conf\" > /tmp/gpg.conf "
    "|| true\n"
    "  echo disable-dirmngr >> /tmp/gpg.conf; rm -f \"$g/gpg.conf\"; cp /tmp/gpg.conf "
    "\"$g/gpg.conf\"; }\n"
    "if [ \"$mode\" != unsigned ]; then $K --init >/dev/null; no_dirmngr; fi\n"
    "case $mode in\n"
    "keyring)\n"
    "  $K --add /srv/keyring >/dev/null\n"
    "  lsign_all /srv/keyring ;;\n"
    "archlinux)\n"
    "  sed 's/^SigLevel.*/SigLevel = Never/' $c > /tmp/nosig.conf\n"
    "  mkdir -p /tmp/kr/db /tmp/kr/pkg /tmp/kr/root\n"
    "  pacman --noconfirm --config /tmp/nosig.conf --root /tmp/kr/root --dbpath /tmp/kr/db "
    "--cachedir /tmp/kr/pkg --gpgdir \"$g\" --logfile /dev/null -Syw archlinux-keyring\n"
    "  for p in /tmp/kr/pkg/archlinux-keyring-*.pkg.tar.*; do case $p in *.sig) ;; *)\n"
    "    bsdtar -xf \"$p\" -C /tmp/kr/root usr/share/pacman/keyrings ;; esac; done\n"
    "  k=/tmp/kr/root/usr/share/pacman/keyrings\n"
    "  $K --add \"$k/archlinux.gpg\" >/dev/null\n"
    "  while IFS=: read -r f _; do case $f in ''|'#'*) ;; *) $K --lsign-key \"$f\" >/dev/null ;; "
    "esac; done < \"$k/archlinux-trusted\"\n"
    "  if [ -f \"$k/archlinux-revoked\" ]; then while read -r f; do [ -n \"$f\" ] &&\n"
    "    printf 'disable\\nquit\\n' | gpg --homedir \"$g\" --batch --command-fd 0 --edit-key "
    "\"$f\" >/dev/null 2>&1 || true; done < \"$k/archlinux-revoked\"; fi ;;\n"
    "esac\n"
    "pacman --noconfirm --config $c --root \"$r\" --dbpath \"$r/var/lib/pacman\" --cachedir "
    "/mnt/cache --gpgdir \"$g\" --logfile /dev/null -Sy base \"$@\"\n"
    /* Written after the packages: a scriptlet could have written the
     * file (an XferCommand, another Server) or the keyring's gpg.conf (a
     * keyserver) that every later phase, the networked fetch included,
     * trusts. */
    "mkdir -p \"$r/etc/pacman.d\"; rm -f \"$r/etc/pacman.d/kiln.conf\"\n"
    "cp /srv/pacman.conf \"$r/etc/pacman.d/kiln.conf\"\n"
    "if [ \"$mode\" != unsigned ]; then no_dirmngr; fi\n"
    "for p in /mnt/cache/*.pkg.tar.*; do case $p in *.sig) continue ;; esac\n"
    "  bsdtar -xOf \"$p\" .PKGINFO | awk -F' = ' '/^pkgname = / {n = $2} /^pkgver = / {v = $2} "
    "/^arch = / {a = $2} END {printf \"%s %s %s \", n, v, a}'\n"
    "  sha256sum \"$p\" | cut -d' ' -f1\n"
    "done > /mnt/base-packages.txt\n"
    /* pacman's own non-determinism in the base: install dates (the wall
     * clock), the sync databases (a snapshot of the mirror), gpg-agent's
     * sockets (tar cannot carry them). */
    "for d in \"$r\"/var/lib/pacman/local/*/desc; do\n"
    "  sed -i \"/^%INSTALLDATE%\\$/{n;s/.*/$SOURCE_DATE_EPOCH/}\" \"$d\"\n"
    "done\n"
    "rm -rf \"$r/var/lib/pacman/sync\"\n"
    "if [ -d \"$g\" ]; then gpgconf --homedir \"$g\" --kill all 2>/dev/null || true;\n"
    "  find \"$g\" -type s -delete; fi\n"
    "tar --numeric-owner --sort=name --mtime=@$SOURCE_DATE_EPOCH --clamp-mtime -C \"$r\" -cf "
    "/mnt/base.tar .\n"
    "rm -rf \"$r\"\n";

static char *pacman_conf(const struct kiln_image_setup_opts *o)
{
	struct kiln_buf c = KILN_BUF_INIT;
	kiln_buf_printf(&c,
	                "# Written by kiln setup. The Server lines are the allowlist: no\n"
	                "# other host is contacted. Local files (pacman -U) are the locked\n"
	                "# bytes, whose signatures were checked when they were fetched.\n"
	                "[options]\n"
	                "Architecture = auto\n"
	                "SigLevel = %s\n"
	                "LocalFileSigLevel = Optional\n",
	                o->allow_unsigned ? "Never" : "Required DatabaseOptional");
	static const char *const repos[] = {"core", "extra"};
	for (size_t r = 0; r < ELEMENTSOF(repos); r++) {
		kiln_buf_printf(&c, "\n[%s]\n", repos[r]);
		for (size_t i = 0; i < o->n_mirrors; i++)
			kiln_buf_printf(&c, "Server = %s\n", o->mirrors[i]);
	}
	return c.data;
}

static int pacman_bootstrap(const struct kiln_image_bootstrap *bs, struct kiln_error **err)
{
	const struct kiln_image_setup_opts *o = bs->opts;
	_cleanup_free_ char *conf = pacman_conf(o);
	_cleanup_free_ char *cpath = xasprintf("%s/pacman.conf", bs->srcdir);
	int rc = kiln_image_write_text(cpath, conf, strlen(conf), 0644, err);
	if (rc < 0)
		return rc;
	if (o->keyring) {
		_cleanup_free_ char *data = NULL;
		size_t len = 0;
		rc = kiln_read_file(o->keyring, 16 << 20, &data, &len, err);
		_cleanup_free_ char *kpath = xasprintf("%s/keyring", bs->srcdir);
		if (rc == 0)
			rc = kiln_image_write_text(kpath, data, len, 0644, err);
		if (rc < 0)
			return rc;
	}
	const char *mode = o->keyring ? "keyring" : o->allow_unsigned ? "unsigned" : "archlinux";
	kiln_image_logf(bs->h, "==> bootstrapping %s with pacman (%zu mirror%s, signatures: %s)\n",
	                bs->base->name, o->n_mirrors, o->n_mirrors == 1 ? "" : "s",
	                o->keyring          ? "the --keyring keys"
	                : o->allow_unsigned ? "NOT CHECKED (--allow-unsigned)"
	                                    : "the mirror's archlinux-keyring");
	const char **argv = xcalloc(o->n_packages + 6, sizeof(char *));
	size_t a = 0;
	argv[a++] = "/bin/sh";
	argv[a++] = "-c";
	argv[a++] = bootstrap_script;
	argv[a++] = "kiln-bootstrap";
	argv[a++] = mode;
	for (size_t i = 0; i < o->n_packages; i++)
		argv[a++] = o->packages[i];
	struct kiln_sandbox_bind binds[] = {
	    {bs->srcdir, "/srv", true},
	    {bs->outdir, "/mnt", false},
	};
	struct kiln_image_run r = {
	    .what = "bootstrap (pacman)",
	    .binds = binds,
	    .n_binds = ELEMENTSOF(binds),
	    .network = true,
	    .argv = argv,
	    .timeout_s = 3600,
	    .epoch = KILN_BASE_EPOCH,
	};
	rc = kiln_image_sandbox(bs->h, &r, err);
	free(argv);
	return rc;
}

/* ---- fetch and lock ------------------------------------------------------------- */

/* pacman -Syw against the base's kiln.conf, with the base (read-only) as
 * the root: what the base has installed is not downloaded again. The local
 * database and the keyring are copied (pacman and gpg write to them). Then
 * the sync databases' desc entries give each downloaded file's name,
 * version, architecture and SHA-256: "name version arch sha256 file". */
static const char fetch_script[] =
    "set -eu\n"
    "r=/srv\n"
    "mkdir -p /mnt/db /mnt/pkgs\n"
    "cp -a \"$r/var/lib/pacman/local\" /mnt/db/local\n"
    "if [ -d \"$r/etc/pacman.d/gnupg\" ]; then cp -a \"$r/etc/pacman.d/gnupg\" /mnt/gnupg; "
    "else mkdir -m 700 /mnt/gnupg; fi\n"
    "pacman --noconfirm --needed --config \"$r/etc/pacman.d/kiln.conf\" --root \"$r\" "
    "--dbpath /mnt/db --cachedir /mnt/pkgs --gpgdir /mnt/gnupg --logfile /dev/null -Syw \"$@\"\n"
    "for d in /mnt/db/sync/*.db; do bsdtar -xOf \"$d\" --include='*/desc'; done | awk '\n"
    "  function flush() { if (f != \"\") print f, n, v, a, (h == \"\" ? \"none\" : h); "
    "f = n = v = a = h = \"\" }\n"
    "  /^%FILENAME%$/ {flush(); k = \"F\"; next}\n"
    "  /^%[A-Z0-9]+%$/ {k = $0; next}\n"
    "  /^$/ {k = \"\"; next}\n"
    "  k == \"F\" {f = $0} k == \"%NAME%\" {n = $0} k == \"%VERSION%\" {v = $0}\n"
    "  k == \"%ARCH%\" {a = $0} k == \"%SHA256SUM%\" {h = $0}\n"
    "  {k = \"\"}\n"
    "  END {flush()}' > /tmp/db.txt\n"
    "cd /mnt/pkgs\n"
    "for p in *.pkg.tar.*; do case $p in *.sig) continue ;; esac\n"
    "  [ -e \"$p\" ] || continue\n"
    "  awk -v f=\"$p\" '$1 == f {print $2, $3, $4, $5, $1; found = 1} "
    "END {if (!found) print \"unknown\", \"none\", \"none\", \"none\", f}' /tmp/db.txt\n"
    "done > /mnt/lock.txt\n";

static int pacman_fetch(struct build *b, struct kiln_error **err)
{
	_cleanup_free_ char *lp = kiln_image_lock_path(b);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e2 = NULL;
	if (kiln_read_file(lp, 64 << 20, &text, &len, &e2) == 0) {
		struct kiln_pkglist l;
		if (kiln_image_pkglist_parse(text, true, &l, NULL) == 0) {
			if (kiln_image_lock_warm(b, &l)) {
				kiln_image_logf(
				    &b->o->hooks,
				    "    lock and all %zu packages are in the store; no "
				    "network needed\n",
				    l.n);
				b->lock = l;
				return 0;
			}
			kiln_image_pkglist_clear(&l);
		}
	}
	if (b->o->offline)
		return kiln_error_set(err, ENETUNREACH,
		                      "fetch: offline build, but the packages of this recipe are "
		                      "not in the store yet (build once with network)");
	const char **argv = xcalloc(b->r->n_packages + 5, sizeof(char *));
	argv[0] = "/bin/sh";
	argv[1] = "-c";
	argv[2] = fetch_script;
	argv[3] = "kiln-fetch";
	for (size_t i = 0; i < b->r->n_packages; i++)
		argv[4 + i] = b->r->packages[i];
	struct kiln_sandbox_bind binds[] = {{b->base_tree, "/srv", true}, {b->debs, "/mnt", false}};
	struct kiln_buf errs = KILN_BUF_INIT;
	struct kiln_image_run r = {
	    .what = "fetch (pacman)",
	    .binds = binds,
	    .n_binds = ELEMENTSOF(binds),
	    .network = true,
	    .argv = argv,
	    .errors = &errs,
	};
	int rc = kiln_image_run_timed(b, &r, 0, err);
	free(argv);
	kiln_buf_free(&errs);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *ltxt_path = xasprintf("%s/lock.txt", b->debs);
	_cleanup_free_ char *ltxt = NULL;
	if ((rc = kiln_read_file(ltxt_path, 64 << 20, &ltxt, &len, err)) < 0)
		return rc;
	struct kiln_pkglist l;
	if ((rc = kiln_image_pkglist_parse(ltxt, true, &l, err)) < 0)
		return rc;
	for (size_t i = 0; i < l.n && rc == 0; i++) {
		struct kiln_pkg *p = &l.v[i];
		if (strlen(p->sha256) != KILN_SHA256_HEX_LEN || strchr(p->file, '/')) {
			rc = kiln_error_set(err, EBADMSG,
			                    "fetch: %s: no SHA-256 for it in the sync database",
			                    p->file);
			break;
		}
		_cleanup_free_ char *f = xasprintf("%s/pkgs/%s", b->debs, p->file);
		rc = kiln_cas_put_file(b->o->state_dir, f, p->sha256, NULL, NULL, err);
		if (rc < 0)
			kiln_error_prefix(err, "fetch: package %s %s", p->name, p->version);
	}
	if (rc < 0) {
		kiln_image_pkglist_clear(&l);
		return rc;
	}
	kiln_image_logf(&b->o->hooks,
	                "    locked %zu packages (signatures checked, SHA-256 from the sync "
	                "database)\n",
	                l.n);
	rc = kiln_image_write_text(lp, ltxt, strlen(ltxt), 0644, err);
	b->lock = l;
	return rc;
}

/* ---- install -------------------------------------------------------------------- */

static const char install_script[] =
    "set -eu\n"
    "r=/mnt\n"
    "if [ -d \"$r/etc/pacman.d/gnupg\" ]; then cp -a \"$r/etc/pacman.d/gnupg\" /tmp/gnupg; "
    "else mkdir -m 700 /tmp/gnupg; fi\n"
    "mkdir -p /tmp/cache\n"
    "pacman --noconfirm --config \"$r/etc/pacman.d/kiln.conf\" --root \"$r\" --dbpath "
    "\"$r/var/lib/pacman\" --cachedir /tmp/cache --gpgdir /tmp/gnupg --logfile /dev/null "
    "-U /srv/*\n";

/* The image (base + upper) mounted at dir in the build's own mount
 * namespace (build.c's mount_layer: never visible to the host), so that a
 * sandbox with the host's tools as its root can have it bound. The workdir
 * is on the build's layer with the upper one, as overlayfs requires; xino=on
 * for the reason kiln_image_mount_merged gives. */
static int mount_image(struct build *b, const char *dir, const char *work, struct kiln_error **err)
{
	if (mkdir(dir, 0755) < 0 || mkdir(work, 0700) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
	_cleanup_free_ char *opts =
	    xasprintf("lowerdir=%s,upperdir=%s,workdir=%s,xino=on", b->base_tree, b->upper, work);
	if (mount("overlay", dir, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
		return kiln_error_set_errno(err, errno, "cannot mount the image for pacman");
	return 0;
}

static int pacman_install(struct build *b, struct kiln_error **err)
{
	_cleanup_rmtree_ char *dir = xasprintf("%s/install-pkgs", b->scratch);
	_cleanup_rmtree_ char *work = xasprintf("%s/pacman-work", b->layer);
	_cleanup_free_ char *root = xasprintf("%s/pacman-root", b->scratch);
	int rc = kiln_image_stage_lock(b, dir, err);
	if (rc < 0)
		return rc;
	if ((rc = kiln_image_clamp_upper(b, err)) < 0)
		return rc;
	rc = mount_image(b, root, work, err);
	if (rc == 0) {
		const char *argv[] = {"/bin/sh", "-c", install_script, "kiln-install", NULL};
		struct kiln_sandbox_bind binds[] = {{dir, "/srv", true}, {root, "/mnt", false}};
		struct kiln_buf errs = KILN_BUF_INIT;
		struct kiln_image_run r = {
		    .what = "install (pacman -U)",
		    .binds = binds,
		    .n_binds = ELEMENTSOF(binds),
		    .argv = argv,
		    .errors = &errs,
		};
		rc = kiln_image_run_timed(b, &r, 0, err);
		kiln_buf_free(&errs);
	}
	if (umount2(root, MNT_DETACH) == 0)
		rmdir(root);
	return rc;
}

/* ---- installed list and normalize ------------------------------------------------ */

/* Runs in the image (an Arch base has sh and awk): name, version and
 * architecture of every package in pacman's local database. */
static const char list_script[] =
    "for d in /var/lib/pacman/local/*/desc; do [ -f \"$d\" ] || continue\n"
    "  awk '/^%NAME%$/ {getline; n = $0} /^%VERSION%$/ {getline; v = $0} "
    "/^%ARCH%$/ {getline; a = $0} END {print n, v, a}' \"$d\"\n"
    "done\n";

static int pacman_list_installed(struct build *b, struct kiln_error **err)
{
	struct kiln_buf out = KILN_BUF_INIT;
	int rc = kiln_image_script(b, "list packages", list_script, NULL, NULL, 0, &out, 0, err);
	if (rc == 0)
		kiln_image_installed_from(b, out.data ? out.data : "");
	kiln_buf_free(&out);
	return rc;
}

/* pacman writes the wall clock into every installed package's desc
 * (%INSTALLDATE%): set to the recipe's SOURCE_DATE_EPOCH, by the host's sed
 * in the sandbox (no network, the image bound at /mnt). The rest of
 * pacman's non-determinism (sync databases, the package cache, the
 * keyring with its local secret key, pacman.log) is in normalize.c's table. */
static const char normalize_script[] =
    "for d in /mnt/var/lib/pacman/local/*/desc; do\n"
    "  [ -f \"$d\" ] && [ ! -L \"$d\" ] || continue\n"
    "  sed -i \"/^%INSTALLDATE%\\$/{n;s/.*/$SOURCE_DATE_EPOCH/}\" \"$d\"\n"
    "done\n";

static int pacman_normalize(struct build *b, struct kiln_error **err)
{
	const char *argv[] = {"/bin/sh", "-c", normalize_script, "kiln-normalize", NULL};
	struct kiln_sandbox_bind binds[] = {{b->merged, "/mnt", false}};
	struct kiln_image_run r = {
	    .what = "normalize (pacman)",
	    .binds = binds,
	    .n_binds = ELEMENTSOF(binds),
	    .argv = argv,
	};
	return kiln_image_run_timed(b, &r, 0, err);
}

const struct kiln_image_backend kiln_image_backend_pacman = {
    .name = "pacman",
    .purl_prefix = "pkg:alpm/arch/",
    .bootstrap = pacman_bootstrap,
    .identity = pacman_identity,
    .fetch = pacman_fetch,
    .install = pacman_install,
    .list_installed = pacman_list_installed,
    .normalize = pacman_normalize,
};
