/* References to store blobs that the state directory holds outside the
 * database, for `kiln store verify` and `kiln store gc` (service/store.c):
 * the local build cache's entries, the package locks and the set-up bases.
 * Every file is kiln's own, and read as untrusted all the same. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "image/internal.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/parse.h"

static bool is_hex64(const char *s, size_t n)
{
	if (n != KILN_SHA256_HEX_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);
	return n > m && strcmp(s + n - m, suf) == 0;
}

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

/* A local cache entry: "name sha256 size" lines. -EBADMSG when any line is
 * not one. */
static int each_cache_line(const char *text, const char *key, kiln_image_ref_fn fn, void *ud)
{
	for (const char *line = text; *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		struct kiln_span f[3], rest;
		uint64_t size = 0;
		if (kiln_split_fields(line, len, f, 3, &rest) != 3 || rest.len ||
		    !is_hex64(f[1].p, f[1].len) ||
		    kiln_parse_span_u64(f[2], 0, UINT64_MAX, &size) < 0)
			return -EBADMSG;
		char hex[KILN_SHA256_HEX_LEN + 1];
		memcpy(hex, f[1].p, KILN_SHA256_HEX_LEN);
		hex[KILN_SHA256_HEX_LEN] = '\0';
		_cleanup_free_ char *what =
		    xasprintf("local cache entry %.12s (%.*s)", key, (int)f[0].len, f[0].p);
		int r = fn(ud, KILN_IMAGE_REF_CACHE, key, what, hex, size);
		if (r != 0)
			return r;
		line += len + (nl ? 1 : 0);
	}
	return 0;
}

static int each_lock_line(const char *text, const char *lock, kiln_image_ref_fn fn, void *ud)
{
	struct kiln_pkglist l;
	if (kiln_image_pkglist_parse(text, true, &l, NULL) < 0)
		return -EBADMSG;
	int r = 0;
	for (size_t i = 0; r == 0 && i < l.n; i++) {
		if (!is_hex64(l.v[i].sha256, strlen(l.v[i].sha256)))
			continue; /* "none": the fetch refused it, nothing is stored */
		_cleanup_free_ char *what =
		    xasprintf("package lock %.12s (%s %s)", lock, l.v[i].name, l.v[i].version);
		r = fn(ud, KILN_IMAGE_REF_LOCK, lock, what, l.v[i].sha256, KILN_CAS_SIZE_UNKNOWN);
	}
	kiln_image_pkglist_clear(&l);
	return r;
}

static int each_base_ref(const char *text, const char *ref, kiln_image_ref_fn fn, void *ud)
{
	size_t n = strcspn(text, "\n");
	if (!is_hex64(text, n))
		return -EBADMSG;
	char hex[KILN_SHA256_HEX_LEN + 1];
	memcpy(hex, text, KILN_SHA256_HEX_LEN);
	hex[KILN_SHA256_HEX_LEN] = '\0';
	_cleanup_free_ char *what = xasprintf("base %s (its archive)", ref);
	return fn(ud, KILN_IMAGE_REF_BASE, ref, what, hex, KILN_CAS_SIZE_UNKNOWN);
}

/* Where each kind lives and how its files are read: a table, one walk. */
static const struct {
	enum kiln_image_ref kind;
	const char *dir;
	const char *suffix; /* the file names that are references ("" any) */
	bool hex_name;      /* the name (without suffix) is a digest */
	int (*each)(const char *text, const char *holder, kiln_image_ref_fn fn, void *ud);
} ref_dirs[] = {
    {KILN_IMAGE_REF_CACHE, "results", "", true, each_cache_line},
    {KILN_IMAGE_REF_LOCK, "locks", ".lock", true, each_lock_line},
    {KILN_IMAGE_REF_BASE, "bases", ".ref", false, each_base_ref},
};

int kiln_image_store_refs(const char *state_dir, kiln_image_ref_fn fn, void *ud,
                          struct kiln_error **err)
{
	for (size_t i = 0; i < ELEMENTSOF(ref_dirs); i++) {
		_cleanup_free_ char *dir = xasprintf("%s/%s", state_dir, ref_dirs[i].dir);
		_cleanup_(closedirp) DIR *d = opendir(dir);
		if (!d && errno == ENOENT)
			continue;
		if (!d)
			return kiln_error_set_errno(err, errno, "%s: cannot list", dir);
		struct dirent *de;
		while ((de = readdir(d))) {
			const char *n = de->d_name;
			if (n[0] == '.' ||
			    (*ref_dirs[i].suffix && !has_suffix(n, ref_dirs[i].suffix)))
				continue;
			size_t stem = strlen(n) - strlen(ref_dirs[i].suffix);
			if (ref_dirs[i].hex_name && !is_hex64(n, stem))
				continue;
			_cleanup_free_ char *p = xasprintf("%s/%s", dir, n);
			_cleanup_free_ char *text = NULL;
			size_t len = 0;
			_cleanup_error_ struct kiln_error *e2 = NULL;
			if (kiln_read_file(p, 64 << 20, &text, &len, &e2) < 0)
				continue; /* removed meanwhile */
			_cleanup_free_ char *holder = xstrndup(n, stem);
			int r = ref_dirs[i].each(text, holder, fn, ud);
			if (r == -EBADMSG)
				r = fn(ud, ref_dirs[i].kind, holder, p, NULL, 0);
			if (r != 0)
				return r;
		}
	}
	return 0;
}

int kiln_image_refs_parse(enum kiln_image_ref kind, const char *text, const char *holder,
                          kiln_image_ref_fn fn, void *ud)
{
	for (size_t i = 0; i < ELEMENTSOF(ref_dirs); i++)
		if (ref_dirs[i].kind == kind)
			return ref_dirs[i].each(text, holder, fn, ud);
	return -EINVAL;
}

int kiln_image_cache_forget(const char *state_dir, const char *build_key)
{
	if (!is_hex64(build_key, strlen(build_key)))
		return -EINVAL;
	_cleanup_free_ char *p = xasprintf("%s/results/%s", state_dir, build_key);
	return unlink(p) < 0 ? -errno : 0;
}
