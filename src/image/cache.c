/* The local build cache (results/<build_key>) and image tree listings.
 *
 * A cache entry is a text file of "name sha256 size" lines naming blobs in
 * the CAS; it is written atomically after a build succeeded and trusted only
 * while every blob it names is present. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/internal.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/outdir.h"
#include "util/parse.h"
#include "util/walk.h"

int kiln_image_build_key(const struct kiln_recipe *r, const char *context_path,
                         char ret[KILN_SHA256_HEX_LEN + 1], struct kiln_error **err)
{
	char ctx[KILN_SHA256_HEX_LEN + 1];
	if (context_path) {
		int rc = kiln_sha256_file(context_path, ctx, NULL);
		if (rc < 0)
			return kiln_error_set_errno(err, -rc, "%s: cannot read context archive",
			                            context_path);
	}
	struct kiln_build_inputs in = {context_path ? ctx : NULL, kiln_image_tool_versions()};
	kiln_recipe_build_key(r, &in, ret);
	return 0;
}

static char *entry_path(const char *state_dir, const char *key)
{
	return xasprintf("%s/results/%s", state_dir, key);
}

int kiln_image_cache_record(const char *state_dir, const struct kiln_image_result *res,
                            struct kiln_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/results", state_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	for (size_t i = 0; i < res->n_artifacts; i++)
		kiln_buf_printf(&b, "%s %s %" PRIu64 "\n", res->artifacts[i].name,
		                res->artifacts[i].sha256, res->artifacts[i].size);
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	int r = dfd < 0 ? -errno
	                : kiln_write_file_atomic_at(dfd, res->build_key, b.data ? b.data : "",
	                                            b.len, 0644);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s/%s: cannot write", dir, res->build_key);
	return 0;
}

static bool safe_name(const char *n)
{
	return *n && n[0] != '.' && !strchr(n, '/');
}

/* A blob answers only once checked against its name (store/cas.h): one
 * changed since it was written is rehashed, a corrupt one quarantined — and
 * the entry misses, so the build runs again and stores good bytes. */
static bool blob_ok(const char *state_dir, const char *hex, uint64_t size)
{
	int fd = -1;
	_cleanup_error_ struct kiln_error *e = NULL;
	int r = kiln_cas_open_verified(state_dir, hex, size, &fd, &e);
	safe_close(fd);
	return r == 0;
}

int kiln_image_cache_lookup(const char *state_dir, const char *build_key, const char *out_dir,
                            struct kiln_image_result **ret, struct kiln_error **err)
{
	_cleanup_free_ char *p = entry_path(state_dir, build_key);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e2 = NULL;
	if (kiln_read_file(p, 1 << 20, &text, &len, &e2) < 0)
		return -ENOENT;
	struct kiln_image_result *res = xcalloc(1, sizeof(*res));
	memcpy(res->build_key, build_key, KILN_SHA256_HEX_LEN + 1);
	res->cached = true;
	int rc = 0;
	for (char *line = text, *nl; *line && rc == 0; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		/* The file is kiln's own, but read it as untrusted all the same. */
		struct kiln_span f[3];
		struct kiln_span rest;
		uint64_t size = 0;
		if (kiln_split_fields(line, (size_t)(nl - line), f, 3, &rest) != 3 || rest.len ||
		    f[0].len > 255 || f[1].len != KILN_SHA256_HEX_LEN ||
		    kiln_parse_span_u64(f[2], 0, UINT64_MAX, &size) < 0) {
			rc = -ENOENT;
			break;
		}
		char name[256], hex[KILN_SHA256_HEX_LEN + 1];
		memcpy(name, f[0].p, f[0].len);
		name[f[0].len] = '\0';
		memcpy(hex, f[1].p, f[1].len);
		hex[f[1].len] = '\0';
		if (!safe_name(name) || !blob_ok(state_dir, hex, size)) {
			rc = -ENOENT;
			break;
		}
		res->artifacts =
		    xreallocarray(res->artifacts, res->n_artifacts + 1, sizeof(*res->artifacts));
		struct kiln_image_artifact *a = &res->artifacts[res->n_artifacts++];
		*a = (struct kiln_image_artifact){xstrdup(name), "", size};
		memcpy(a->sha256, hex, sizeof(hex));
	}
	if (rc == 0 && res->n_artifacts == 0)
		rc = -ENOENT;
	/* A copy (a reflink where the file system can), never a hard link: a
	 * write to the output must not reach the store's blob, which other
	 * builds are answered with (issue 12). */
	_cleanup_outdir_ struct kiln_outdir out = {-1, NULL};
	if (rc == 0)
		rc = kiln_outdir_open(out_dir, &out, err);
	for (size_t i = 0; rc == 0 && i < res->n_artifacts; i++) {
		/* Copied from the fd the store checked, not reopened by path. */
		const struct kiln_image_artifact *a = &res->artifacts[i];
		_cleanup_close_ int fd = -1;
		rc = kiln_cas_open_verified(state_dir, a->sha256, a->size, &fd, err);
		if (rc == 0)
			rc = kiln_outdir_copy_fd(&out, a->name, fd, 0644, err);
	}
	if (rc < 0) {
		kiln_image_result_free(res);
		return rc;
	}
	*ret = res;
	return 0;
}

/* ---- tree listings ---------------------------------------------------------- */

struct tree_ctx {
	char **lines;
	size_t n, cap;
};

static int tree_entry(const struct kiln_walk_entry *e, void *ud)
{
	struct tree_ctx *t = ud;
	const struct stat *st = e->st;
	const char *rel = *e->rel ? e->rel : "/";
	char type = S_ISDIR(st->st_mode)    ? 'd'
	            : S_ISLNK(st->st_mode)  ? 'l'
	            : S_ISREG(st->st_mode)  ? 'f'
	            : S_ISCHR(st->st_mode)  ? 'c'
	            : S_ISBLK(st->st_mode)  ? 'b'
	            : S_ISFIFO(st->st_mode) ? 'p'
	                                    : 's';
	char what[KILN_SHA256_HEX_LEN + 1] = "-";
	_cleanup_free_ char *target = NULL;
	if (type == 'f') {
		_cleanup_close_ int fd =
		    openat(e->dirfd, e->name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
		if (fd < 0 || kiln_sha256_fd(fd, what, NULL) < 0)
			snprintf(what, sizeof(what), "unreadable");
	} else if (type == 'l') {
		char buf[4096];
		ssize_t n = readlinkat(e->dirfd, e->name, buf, sizeof(buf) - 1);
		target = xstrndup(buf, n > 0 ? (size_t)n : 0);
	}
	/* Owners as the image sees them: the sandbox's range mapped back. */
	long uid = (long)st->st_uid - KILN_IMAGE_ID_BASE,
	     gid = (long)st->st_gid - KILN_IMAGE_ID_BASE;
	char *line = xasprintf(
	    "%s\t%c %04o %ld:%ld %lld %lld %s", rel, type, (unsigned)(st->st_mode & 07777), uid,
	    gid, (long long)st->st_mtim.tv_sec, (long long)st->st_size, target ? target : what);
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 4096;
		t->lines = xreallocarray(t->lines, t->cap, sizeof(char *));
	}
	t->lines[t->n++] = line;
	return 0;
}

static int cmp_line(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t xl = strcspn(x, "\t"), yl = strcspn(y, "\t");
	int c = memcmp(x, y, xl < yl ? xl : yl);
	return c ? c : (xl < yl ? -1 : xl > yl);
}

char *kiln_image_tree_list(const char *root)
{
	struct tree_ctx t = {NULL, 0, 0};
	kiln_walk(AT_FDCWD, root, 0, tree_entry, &t);
	qsort(t.lines, t.n, sizeof(char *), cmp_line);
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	for (size_t i = 0; i < t.n; i++) {
		kiln_buf_puts(&b, t.lines[i]);
		kiln_buf_putc(&b, '\n');
		free(t.lines[i]);
	}
	free(t.lines);
	return kiln_buf_steal(&b, NULL);
}

/* One listing line split into its fields. */
struct tl {
	char path[4096];
	char type[4], mode[8], owner[32], mtime[32], size[32], what[4096];
};

static bool tl_parse(const char *line, size_t len, struct tl *t)
{
	const char *tab = memchr(line, '\t', len);
	if (!tab || (size_t)(tab - line) >= sizeof(t->path))
		return false;
	memcpy(t->path, line, (size_t)(tab - line));
	t->path[tab - line] = '\0';
	struct kiln_span f[5], rest;
	const char *s = tab + 1;
	if (kiln_split_fields(s, len - (size_t)(s - line), f, 5, &rest) != 5 || rest.len == 0)
		return false;
	char *dst[5] = {t->type, t->mode, t->owner, t->mtime, t->size};
	size_t cap[5] = {sizeof(t->type), sizeof(t->mode), sizeof(t->owner), sizeof(t->mtime),
	                 sizeof(t->size)};
	for (size_t i = 0; i < 5; i++) {
		if (f[i].len >= cap[i])
			return false;
		memcpy(dst[i], f[i].p, f[i].len);
		dst[i][f[i].len] = '\0';
	}
	if (rest.len >= sizeof(t->what))
		return false;
	memcpy(t->what, rest.p, rest.len);
	t->what[rest.len] = '\0';
	return true;
}

char *kiln_image_tree_diff(const char *a, const char *b, size_t max)
{
	struct kiln_buf out = KILN_BUF_INIT;
	size_t shown = 0, total = 0;
	const char *pa = a ? a : "", *pb = b ? b : "";
	struct tl *ta = xmalloc(sizeof(*ta)), *tb = xmalloc(sizeof(*tb));
	while (*pa || *pb) {
		const char *ea = strchr(pa, '\n'), *eb = strchr(pb, '\n');
		size_t la = ea ? (size_t)(ea - pa) : strlen(pa),
		       lb = eb ? (size_t)(eb - pb) : strlen(pb);
		bool ha = *pa && tl_parse(pa, la, ta), hb = *pb && tl_parse(pb, lb, tb);
		if (*pa && !ha) { /* not a listing line: skip it */
			pa = ea ? ea + 1 : pa + la;
			continue;
		}
		if (*pb && !hb) {
			pb = eb ? eb + 1 : pb + lb;
			continue;
		}
		int c = !ha ? 1 : !hb ? -1 : strcmp(ta->path, tb->path);
		_cleanup_buf_ struct kiln_buf line = KILN_BUF_INIT;
		if (c < 0) {
			kiln_buf_printf(&line, "  %s: only in the first build\n", ta->path);
		} else if (c > 0) {
			kiln_buf_printf(&line, "  %s: only in the second build\n", tb->path);
		} else if (la != lb || memcmp(pa, pb, la) != 0) {
			kiln_buf_printf(&line, "  %s:", ta->path);
			if (strcmp(ta->type, tb->type))
				kiln_buf_printf(&line, " type %s → %s", ta->type, tb->type);
			if (strcmp(ta->what, tb->what) || strcmp(ta->size, tb->size))
				kiln_buf_printf(
				    &line,
				    " content (%s bytes sha256:%.12s → %s bytes sha256:%.12s)",
				    ta->size, ta->what, tb->size, tb->what);
			if (strcmp(ta->mode, tb->mode))
				kiln_buf_printf(&line, " mode %s → %s", ta->mode, tb->mode);
			if (strcmp(ta->owner, tb->owner))
				kiln_buf_printf(&line, " owner %s → %s", ta->owner, tb->owner);
			if (strcmp(ta->mtime, tb->mtime))
				kiln_buf_printf(&line, " mtime %s → %s", ta->mtime, tb->mtime);
			kiln_buf_putc(&line, '\n');
		}
		if (line.len) {
			total++;
			if (shown < max) {
				kiln_buf_append(&out, line.data, line.len);
				shown++;
			}
		}
		if (c <= 0 && *pa)
			pa = ea ? ea + 1 : pa + la;
		if (c >= 0 && *pb)
			pb = eb ? eb + 1 : pb + lb;
	}
	free(ta);
	free(tb);
	if (total > shown)
		kiln_buf_printf(&out, "  ... and %zu more\n", total - shown);
	return kiln_buf_steal(&out, NULL);
}
