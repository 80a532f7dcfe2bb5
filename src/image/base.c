/* Base systems: `kiln setup`. mmdebstrap runs inside the sandbox (network
 * allowed for this phase only) with the host's apt sources as the mirror
 * allowlist; the resulting tarball is stored in the CAS and unpacked, again
 * inside the sandbox, into bases/<digest>/ — owned by the sandbox's id range
 * like every tree the sandbox writes. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/backend.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"

/* Records every base package with the SHA-256 of its .deb from the index,
 * while the index is still there (mmdebstrap removes the lists afterwards):
 * the SBOM lists base packages too. One apt-cache call for all packages —
 * each call reloads apt's cache, ~1 s apiece (docs/benchmarks.md). Runs as
 * an mmdebstrap customize hook, $1 being the new root. */
static const char debian_hook[] =
    "set -eu\n"
    "chroot \"$1\" dpkg-query -W -f='${Package} ${Version} ${Architecture}\\n' > "
    "/tmp/kiln-pkgs.txt\n"
    "chroot \"$1\" apt-cache show --no-all-versions $(awk '{print $1\"=\"$2}' /tmp/kiln-pkgs.txt) "
    "2>/dev/null | awk -F': ' '/^Package: /{p=$2} /^Version: /{v=$2} /^SHA256: /{print p\"=\"v, "
    "$2}' "
    "> /tmp/kiln-hashes.txt || true\n"
    "awk 'NR==FNR {h[$1]=$2; next} {k=$1\"=\"$2; print $1, $2, $3, (k in h ? h[k] : \"unknown\")}' "
    "/tmp/kiln-hashes.txt /tmp/kiln-pkgs.txt > /mnt/base-packages.txt\n";

/* The tiny base: Debian's busybox-static extracted (the extract variant
 * runs no maintainer script and installs no dpkg), its applets linked, a
 * root and a nobody account. No package manager: recipes on it list no
 * packages (recipe.c). Runs as an mmdebstrap extract hook — customize
 * hooks do not run in the extract variant — with mmdebstrap's APT_CONFIG,
 * so apt-cache reads the index it downloaded from. It executes the
 * package's own binary (busybox --install), inside the setup sandbox like
 * all of mmdebstrap: a tampered package could reach this scratch tree and
 * the mirror, never the host's files or privileges. */
static const char busybox_hook[] =
    "set -eu\n"
    "r=$1\n"
    "apt-cache show --no-all-versions busybox-static 2>/dev/null | awk -F': ' "
    "'/^Package: /{p=$2} /^Version: /{v=$2} /^Architecture: /{a=$2} /^SHA256: /{h=$2} "
    "END {if (p != \"\") print p, v, a, h}' > /mnt/base-packages.txt\n"
    "[ -s /mnt/base-packages.txt ] || { echo 'busybox-static is not in the index' >&2; exit 1; }\n"
    /* the host's: they must not end up in the image */
    "rm -f \"$r/etc/resolv.conf\" \"$r/etc/hostname\" \"$r/etc/fstab\"\n"
    "mkdir -p \"$r/sbin\" \"$r/usr/bin\" \"$r/usr/sbin\" \"$r/root\" \"$r/home\" \"$r/srv\" "
    "\"$r/mnt\" "
    "\"$r/proc\" \"$r/sys\" \"$r/dev\" \"$r/run\" \"$r/var/tmp\"\n"
    "chroot \"$r\" /bin/busybox --install -s\n"
    "printf "
    "'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\\n' "
    "> \"$r/etc/passwd\"\n"
    "printf 'root:x:0:\\nnogroup:x:65534:\\n' > \"$r/etc/group\"\n"
    "chmod 700 \"$r/root\"\n"
    "chmod 1777 \"$r/tmp\" \"$r/var/tmp\"\n";

/* mmdebstrap's own apt and dpkg configuration, meaningless without them */
static const char *const busybox_drop[] = {"--exclude=./etc/apt", "--exclude=./etc/dpkg", NULL};

/* Every base kiln can set up. Busybox is a base of the Debian backend: it
 * is made by mmdebstrap from Debian's busybox-static and takes no packages. */
static const struct kiln_image_base bases[] = {
    {"debian/bookworm", &kiln_image_backend_debian, "bookworm", "minbase", NULL, "--customize-hook",
     debian_hook, NULL},
    {"busybox", &kiln_image_backend_debian, "bookworm", "extract", "busybox-static",
     "--extract-hook", busybox_hook, busybox_drop},
    {"archlinux", &kiln_image_backend_pacman, NULL, NULL, NULL, NULL, NULL, NULL},
};

const struct kiln_image_base *kiln_image_base_find(const char *name, struct kiln_error **err)
{
	for (size_t i = 0; i < ELEMENTSOF(bases); i++)
		if (strcmp(bases[i].name, name) == 0)
			return &bases[i];
	kiln_error_set(err, ENOENT,
	               "unknown base '%s' (supported: debian/bookworm, busybox, archlinux)", name);
	return NULL;
}

static char *ref_path(const char *state_dir, const struct kiln_image_base *b)
{
	_cleanup_free_ char *n = xstrdup(b->name);
	for (char *p = n; *p; p++)
		if (*p == '/')
			*p = '_';
	return xasprintf("%s/bases/%s.ref", state_dir, n);
}

int kiln_image_base_path(const char *state_dir, const char *base, char **ret_path,
                         char ret_digest[KILN_SHA256_HEX_LEN + 1], struct kiln_error **err)
{
	const struct kiln_image_base *b = kiln_image_base_find(base, err);
	if (!b)
		return -ENOENT;
	_cleanup_free_ char *ref = ref_path(state_dir, b);
	_cleanup_free_ char *digest = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e2 = NULL;
	if (kiln_read_file(ref, 256, &digest, &len, &e2) < 0 || len < KILN_SHA256_HEX_LEN)
		return kiln_error_set(err, ENOENT,
		                      "base %s is not set up in %s: run 'kiln setup --base %s'",
		                      base, state_dir, base);
	digest[KILN_SHA256_HEX_LEN] = '\0';
	_cleanup_free_ char *tree = xasprintf("%s/bases/%s", state_dir, digest);
	struct stat st;
	if (stat(tree, &st) < 0 || !S_ISDIR(st.st_mode))
		return kiln_error_set(err, ENOENT,
		                      "base %s: tree %s is missing: run 'kiln setup --base %s'",
		                      base, tree, base);
	if (ret_digest)
		memcpy(ret_digest, digest, KILN_SHA256_HEX_LEN + 1);
	*ret_path = TAKE_PTR(tree);
	return 0;
}

/* Copies the host's apt sources (the mirror allowlist) into dir; returns
 * their in-sandbox paths (under /srv/sources) as a NULL-terminated list. */
static int collect_sources(const char *dir, char ***ret, struct kiln_error **err)
{
	static const char *const candidates_dir = "/etc/apt/sources.list.d";
	size_t n = 0;
	char **list = xcalloc(64, sizeof(char *));
	_cleanup_free_ char *main_list = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e2 = NULL;
	const char *names[64];
	char *contents[64];
	size_t lens[64];
	size_t k = 0;
	if (kiln_read_file("/etc/apt/sources.list", 1 << 20, &main_list, &len, &e2) == 0) {
		/* Only when it has a line that is not a comment. */
		bool any = false;
		for (char *p = main_list; *p;) {
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p && *p != '#' && *p != '\n')
				any = true;
			char *nl = strchr(p, '\n');
			if (!nl)
				break;
			p = nl + 1;
		}
		if (any) {
			names[k] = "sources.list";
			contents[k] = TAKE_PTR(main_list);
			lens[k++] = len;
		}
	}
	DIR *d = opendir(candidates_dir);
	struct dirent **ents = NULL;
	int ne = d ? scandir(candidates_dir, &ents, NULL, alphasort) : 0;
	if (d)
		closedir(d);
	for (int i = 0; i < ne; i++) {
		const char *nm = ents[i]->d_name;
		size_t l = strlen(nm);
		bool ok = (l > 5 && strcmp(nm + l - 5, ".list") == 0) ||
		          (l > 8 && strcmp(nm + l - 8, ".sources") == 0);
		if (ok && k < ELEMENTSOF(names)) {
			_cleanup_free_ char *p = xasprintf("%s/%s", candidates_dir, nm);
			char *c = NULL;
			size_t cl = 0;
			_cleanup_error_ struct kiln_error *e3 = NULL;
			if (kiln_read_file(p, 1 << 20, &c, &cl, &e3) == 0) {
				names[k] = xstrdup(nm);
				contents[k] = c;
				lens[k++] = cl;
			}
		}
	}
	int rc = 0;
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		rc = kiln_error_set_errno(err, errno, "%s", dir);
	for (size_t i = 0; i < k; i++) {
		if (rc == 0) {
			int r =
			    kiln_write_file_atomic_at(dfd, names[i], contents[i], lens[i], 0644);
			if (r < 0)
				rc = kiln_error_set_errno(err, -r, "%s/%s: cannot write", dir,
				                          names[i]);
			list[n++] = xasprintf("/srv/sources/%s", names[i]);
		}
		free(contents[i]);
		if (strcmp(names[i], "sources.list") != 0)
			free((char *)names[i]);
	}
	for (int i = 0; i < ne; i++)
		free(ents[i]);
	free(ents);
	if (rc == 0 && n == 0)
		rc = kiln_error_set(err, ENOENT,
		                    "no apt sources configured on the host (/etc/apt/sources.list, "
		                    "/etc/apt/sources.list.d/): kiln only fetches from those");
	if (rc < 0) {
		strv_free(list);
		return rc;
	}
	*ret = list;
	return 0;
}

/* mmdebstrap, inside the sandbox with the host's root read-only and the
 * host network (the bootstrap is networked, like a build's fetch); the
 * mirrors are the host's apt sources, copied into srcdir. */
int kiln_image_debian_bootstrap(const struct kiln_image_bootstrap *bs, struct kiln_error **err)
{
	const struct kiln_image_base *b = bs->base;
	const struct kiln_image_hooks *h = bs->h;
	const char *srcdir = bs->srcdir, *outdir = bs->outdir;
	_cleanup_strv_free_ char **sources = NULL;
	int rc = collect_sources(srcdir, &sources, err);
	if (rc == 0) {
		_cleanup_close_ int sfd = open(srcdir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
		if (sfd < 0 || kiln_write_file_atomic_at(sfd, "kiln-base-packages.sh", b->hook,
		                                         strlen(b->hook), 0644) < 0)
			rc = kiln_error_set_errno(err, errno, "%s: cannot write the hook", srcdir);
	}
	if (rc < 0)
		return rc;

	kiln_image_logf(
	    h, "==> bootstrapping %s with mmdebstrap (sources: the host's apt configuration)\n",
	    b->name);
	{
		_cleanup_free_ char *variant = xasprintf("--variant=%s", b->variant);
		_cleanup_free_ char *include =
		    b->include ? xasprintf("--include=%s", b->include) : NULL;
		/* the base's hook records its packages for the SBOM */
		_cleanup_free_ char *hook =
		    xasprintf("%s=sh /srv/kiln-base-packages.sh \"$1\"", b->hook_option);
		size_t ns = 0;
		while (sources[ns])
			ns++;
		const char **argv = xcalloc(ns + 12, sizeof(char *));
		size_t a = 0;
		argv[a++] = "mmdebstrap";
		argv[a++] = "--mode=root";
		argv[a++] = variant;
		if (include)
			argv[a++] = include;
		/* mount(2) is denied by the sandbox's seccomp filter; a minbase
		 * bootstrap needs no /proc or /dev inside its chroot. */
		argv[a++] = "--skip=chroot/mount";
		argv[a++] = hook;
		argv[a++] = "--format=tar";
		argv[a++] = b->suite;
		argv[a++] = "/mnt/base.tar";
		/* The sources dir is bound at /srv, so its files are /srv/<name>. */
		size_t first_source = a;
		for (size_t i = 0; i < ns; i++)
			argv[a++] = xasprintf("/srv/%s", strrchr(sources[i], '/') + 1);
		struct kiln_sandbox_bind binds[] = {
		    {srcdir, "/srv", true},
		    {outdir, "/mnt", false},
		};
		_cleanup_buf_ struct kiln_buf errs = KILN_BUF_INIT_MAX(KILN_BUF_MAX_TOOL_ERRORS);
		struct kiln_image_run r = {
		    .what = "bootstrap (mmdebstrap)",
		    .binds = binds,
		    .n_binds = ELEMENTSOF(binds),
		    .network = true,
		    .argv = argv,
		    .timeout_s = 3600,
		    .epoch = KILN_BASE_EPOCH,
		    .errors = &errs,
		};
		rc = kiln_image_sandbox(h, &r, err);
		for (size_t i = first_source; i < a; i++)
			free((char *)argv[i]);
		free(argv);
		if (rc < 0)
			return rc;
	}

	return 0;
}

int kiln_image_setup(const char *state_dir, const char *base, const struct kiln_image_hooks *h,
                     bool *ret_already, char ret_digest[KILN_SHA256_HEX_LEN + 1],
                     struct kiln_error **err)
{
	return kiln_image_setup_with(state_dir, base, NULL, h, ret_already, ret_digest, err);
}

/* The identity recorded in a ref ("<digest>\nidentity <hex>\n"), or NULL. */
static char *ref_identity(const char *state_dir, const struct kiln_image_base *b)
{
	_cleanup_free_ char *ref = ref_path(state_dir, b);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e = NULL;
	if (kiln_read_file(ref, 256, &data, &len, &e) < 0)
		return NULL;
	const char *p = strstr(data, "\nidentity ");
	if (!p || strlen(p + 10) < KILN_SHA256_HEX_LEN)
		return NULL;
	return xstrndup(p + 10, KILN_SHA256_HEX_LEN);
}

int kiln_image_setup_with(const char *state_dir, const char *base,
                          const struct kiln_image_setup_opts *opts,
                          const struct kiln_image_hooks *h, bool *ret_already,
                          char ret_digest[KILN_SHA256_HEX_LEN + 1], struct kiln_error **err)
{
	static const struct kiln_image_setup_opts no_opts = {0};
	if (!opts)
		opts = &no_opts;
	const struct kiln_image_base *b = kiln_image_base_find(base, err);
	if (!b)
		return -ENOENT;
	/* The backend's identity of these options (NULL: it has none, or none
	 * were given: any set-up base of that name will do). */
	_cleanup_free_ char *identity = NULL;
	bool none = true;
	if (!b->backend->identity &&
	    (opts->n_mirrors || opts->keyring || opts->n_packages || opts->allow_unsigned))
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                           "base %s takes no --mirror, --keyring, --packages or "
		                           "--allow-unsigned: its sources are the host's apt "
		                           "configuration",
		                           b->name);
	if (b->backend->identity) {
		identity = b->backend->identity(opts, &none, err);
		if (!identity && !none)
			return -EINVAL;
	}
	int rc = kiln_state_init(state_dir, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *existing = NULL;
	char digest[KILN_SHA256_HEX_LEN + 1];
	if (kiln_image_base_path(state_dir, base, &existing, digest, NULL) == 0) {
		_cleanup_free_ char *had = ref_identity(state_dir, b);
		if (!identity || (had && strcmp(had, identity) == 0)) {
			if (ret_already)
				*ret_already = true;
			if (ret_digest)
				memcpy(ret_digest, digest, sizeof(digest));
			return 0;
		}
	}
	if (b->backend->identity && !identity)
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                           "base %s is not set up: it needs at least one --mirror",
		                           b->name);

	kiln_image_cleanup_stale(state_dir);
	_cleanup_free_ char *id = kiln_image_random_id();
	_cleanup_rmtree_ char *scratch = xasprintf("%s/builds/setup-%s", state_dir, id);
	_cleanup_free_ char *srcdir = xasprintf("%s/sources", scratch);
	_cleanup_free_ char *outdir = xasprintf("%s/out", scratch);
	if (mkdir(scratch, 0700) < 0 || mkdir(srcdir, 0755) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", scratch);
	_cleanup_free_ char *lk = xasprintf("%s/.lock", scratch);
	_cleanup_close_ int lock_fd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot lock", lk);
	rc = kiln_image_mkdir_sandbox(outdir, err);
	_cleanup_rmtree_ char *tree_tmp = xasprintf("%s/bases/.tmp-%s", state_dir, id);
	if (rc < 0)
		return rc;
	struct kiln_image_bootstrap bs = {state_dir, b, opts, srcdir, outdir, h};
	if ((rc = b->backend->bootstrap(&bs, err)) < 0)
		return rc;

	_cleanup_free_ char *tar = xasprintf("%s/base.tar", outdir);
	uint64_t size = 0;
	rc = kiln_cas_put_file(state_dir, tar, NULL, digest, &size, err);
	if (rc < 0)
		return rc;
	kiln_image_logf(h, "==> base archive sha256:%s (%llu bytes); unpacking\n", digest,
	                (unsigned long long)size);
	{
		_cleanup_free_ char *pk = xasprintf("%s/base-packages.txt", outdir);
		_cleanup_free_ char *dst = xasprintf("%s/bases/%s.packages", state_dir, digest);
		_cleanup_free_ char *data = NULL;
		size_t dlen = 0;
		rc = kiln_read_file(pk, 64 << 20, &data, &dlen, err);
		_cleanup_free_ char *dir = xasprintf("%s/bases", state_dir);
		_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
		if (rc == 0 && (dfd < 0 || kiln_write_file_atomic_at(dfd, strrchr(dst, '/') + 1,
		                                                     data, dlen, 0644) < 0))
			rc = kiln_error_set_errno(err, errno, "%s: cannot write", dst);
		if (rc < 0)
			return rc;
	}
	rc = kiln_image_mkdir_sandbox(tree_tmp, err);
	if (rc < 0)
		return rc;
	{
		struct kiln_sandbox_bind binds[] = {
		    {outdir, "/srv", true},
		    {tree_tmp, "/mnt", false},
		};
		/* Device nodes cannot be created in a user namespace, and every
		 * sandbox gets its own minimal /dev anyway. */
		const char *argv[16] = {"tar",
		                        "-C",
		                        "/mnt",
		                        "-xpf",
		                        "/srv/base.tar",
		                        "--numeric-owner",
		                        "--exclude=./dev/*"};
		for (size_t i = 0, a = 7; b->drop && b->drop[i] && a < ELEMENTSOF(argv) - 1; i++)
			argv[a++] = b->drop[i];
		struct kiln_image_run r = {
		    .what = "unpack base",
		    .binds = binds,
		    .n_binds = ELEMENTSOF(binds),
		    .argv = argv,
		    .timeout_s = 1800,
		    .epoch = KILN_BASE_EPOCH,
		};
		rc = kiln_image_sandbox(h, &r, err);
		if (rc < 0)
			return rc;
	}
	{
		_cleanup_free_ char *tree = xasprintf("%s/bases/%s", state_dir, digest);
		if (access(tree, F_OK) != 0) {
			if (rename(tree_tmp, tree) < 0)
				return kiln_error_set_errno(err, errno, "%s: cannot rename", tree);
			free(TAKE_PTR(tree_tmp)); /* renamed: nothing left to remove */
		}
		_cleanup_free_ char *ref = ref_path(state_dir, b);
		_cleanup_free_ char *dir = xasprintf("%s/bases", state_dir);
		_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
		_cleanup_free_ char *line = identity
		                                ? xasprintf("%s\nidentity %s\n", digest, identity)
		                                : xasprintf("%s\n", digest);
		int r = dfd < 0 ? -errno
		                : kiln_write_file_atomic_at(dfd, strrchr(ref, '/') + 1, line,
		                                            strlen(line), 0644);
		if (r < 0)
			return kiln_error_set_errno(err, -r, "%s: cannot write", ref);
	}
	if (ret_already)
		*ret_already = false;
	if (ret_digest)
		memcpy(ret_digest, digest, sizeof(digest));
	return 0;
}
