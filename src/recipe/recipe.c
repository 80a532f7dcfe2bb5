/* Recipe parsing and validation. Strict by design: an unknown field, a
 * duplicate key or a value of the wrong type is an error rather than
 * something ignored, because a typo silently ignored builds the wrong image. */
#include "recipe/recipe.h"

#include <jansson.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/parse.h"
#include "util/utf8.h"

/* ---- JSON paths in error messages ---------------------------------------- */

static char *path_key(const char *parent, const char *key)
{
	return parent && *parent ? xasprintf("%s.%s", parent, key) : xstrdup(key);
}

static char *path_index(const char *parent, size_t i)
{
	return xasprintf("%s[%zu]", parent, i);
}

static int fail(struct kiln_error **err, const char *path, const char *fmt, ...) _printf_(3, 4);
static int fail(struct kiln_error **err, const char *path, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *m = xvasprintf(fmt, ap);
	va_end(ap);
	return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL, "%s: %s",
	                           path && *path ? path : "(root)", m);
}

static const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number with a fraction";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "unknown";
}

/* ---- typed getters -------------------------------------------------------- */

struct str {
	const char *s;
	size_t len;
};

/* A JSON string. NUL bytes are refused unless allow_nul (file content). */
static int get_string(json_t *v, const char *path, bool allow_nul, size_t max, struct str *ret,
                      struct kiln_error **err)
{
	if (!json_is_string(v))
		return fail(err, path, "must be a string, not %s", json_type_name(v));
	struct str s = {json_string_value(v), json_string_length(v)};
	if (!allow_nul && memchr(s.s, '\0', s.len))
		return fail(err, path, "must not contain NUL characters");
	if (s.len > max)
		return fail(err, path, "longer than %zu bytes", max);
	*ret = s;
	return 0;
}

static int get_int(json_t *v, const char *path, int64_t min, int64_t max, int64_t *ret,
                   struct kiln_error **err)
{
	if (!json_is_integer(v))
		return fail(err, path, "must be an integer, not %s", json_type_name(v));
	json_int_t x = json_integer_value(v);
	if (x < min || x > max)
		return fail(err, path, "must be between %lld and %lld, not %lld", (long long)min,
		            (long long)max, (long long)x);
	*ret = x;
	return 0;
}

static int get_array(json_t *v, const char *path, size_t max, const char *what,
                     struct kiln_error **err)
{
	if (!json_is_array(v))
		return fail(err, path, "must be an array, not %s", json_type_name(v));
	if (json_array_size(v) > max)
		return fail(err, path, "more than %zu %s", max, what);
	return 0;
}

/* ---- every error, not only the first ------------------------------------- */

/* A recipe's errors are collected, one per line, so that a user fixes them
 * in one round trip; each field still stops at its own first error (a value
 * of the wrong type says nothing useful about its parts). The top level caps
 * what is shown at KILN_RECIPE_MAX_ERRORS. */
struct errs {
	struct kiln_buf msg;
	size_t n;
};

static void errs_add(struct errs *e, struct kiln_error **sub)
{
	if (!sub || !*sub)
		return;
	if (e->n)
		kiln_buf_putc(&e->msg, '\n');
	kiln_buf_puts(&e->msg, (*sub)->msg);
	e->n++;
	for (const char *c = (*sub)->msg; (c = strchr(c, '\n')); c++)
		e->n++;
	*sub = kiln_error_free(*sub);
}

static int errs_finish(struct errs *e, struct kiln_error **err)
{
	if (!e->n)
		return 0;
	int rc = kiln_error_set_kind(err, KILN_ERR_USER, EINVAL, "%s", e->msg.data);
	kiln_buf_free(&e->msg);
	return rc;
}

/* Levenshtein distance of two short keys (a, b <= 63 bytes), for "did you
 * mean": a typo of one or two letters names the field it meant. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 63 || lb > 63)
		return SIZE_MAX;
	size_t row[64];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* Walks an object against a field table: unknown keys are errors. */
struct field {
	const char *key;
	int (*parse)(void *target, json_t *v, const char *path, struct kiln_error **err);
};

static int parse_object(json_t *obj, const char *path, const struct field *fields, size_t n,
                        void *target, struct kiln_error **err)
{
	if (!json_is_object(obj))
		return fail(err, path, "must be an object, not %s", json_type_name(obj));
	struct errs es = {KILN_BUF_INIT, 0};
	const char *key;
	json_t *v;
	json_object_foreach (obj, key, v) {
		const struct field *f = NULL;
		for (size_t i = 0; i < n; i++)
			if (strcmp(fields[i].key, key) == 0)
				f = &fields[i];
		_cleanup_free_ char *sub = path_key(path, key);
		_cleanup_error_ struct kiln_error *e = NULL;
		if (!f) {
			_cleanup_buf_ struct kiln_buf q = KILN_BUF_INIT;
			kiln_json_put_string(&q, key, strlen(key), true);
			const char *near = NULL;
			size_t best = SIZE_MAX;
			for (size_t i = 0; i < n; i++) {
				size_t d = edit_distance(key, fields[i].key);
				if (d < best && d <= (strlen(fields[i].key) > 4 ? 2u : 1u)) {
					best = d;
					near = fields[i].key;
				}
			}
			if (near)
				fail(&e, path, "unknown field %s (did you mean \"%s\"?)", q.data,
				     near);
			else
				fail(&e, path, "unknown field %s", q.data);
		} else {
			(void)f->parse(target, v, sub, &e);
		}
		errs_add(&es, &e);
	}
	return errs_finish(&es, err);
}

/* ---- value validators ----------------------------------------------------- */

bool kiln_recipe_pacman_name_ok(const char *s, size_t n)
{
	/* makepkg's lint_pkgname and alpm: letters, digits and @ . _ + -, not
	 * starting with - (an option to pacman) or . (a hidden file). */
	if (n < 1 || n > 255 || s[0] == '-' || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("@._+-", c)) ||
		    c == '\0')
			return false;
	}
	return true;
}

static bool valid_package(const char *s, size_t n)
{
	/* Debian policy 5.6.1: [a-z0-9][a-z0-9+.-]+ */
	if (n < 2 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (i > 0)
			ok = ok || c == '+' || c == '.' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

/* An absolute, normalized path: "/" + components, none empty, "." or "..".
 * Returns NULL when valid, else the reason. */
static const char *check_abs_path(const char *s, size_t n, bool allow_root)
{
	if (n == 0)
		return "must not be empty";
	if (memchr(s, '\0', n))
		return "must not contain NUL characters";
	if (n > KILN_RECIPE_MAX_PATH)
		return "longer than 4096 bytes";
	if (s[0] != '/')
		return "must be absolute";
	if (n == 1)
		return allow_root ? NULL : "must name a file, not /";
	if (s[n - 1] == '/')
		return "must not end with /";
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && s[j] != '/')
			j++;
		size_t clen = j - i - 1;
		const char *c = s + i + 1;
		if (clen == 0)
			return "must not contain //";
		if ((clen == 1 && c[0] == '.') || (clen == 2 && c[0] == '.' && c[1] == '.'))
			return "must not contain . or .. components";
		i = j;
	}
	return NULL;
}

/* A relative path inside the context archive: no "..", not absolute. */
static const char *check_rel_path(const char *s, size_t n)
{
	if (n == 0)
		return "must not be empty";
	if (s[0] == '/')
		return "must be relative to the context archive";
	if (n == 1 && s[0] == '.')
		return NULL;
	_cleanup_free_ char *abs = xasprintf("/%.*s", (int)n, s);
	const char *why = check_abs_path(abs, n + 1, false);
	if (why && strcmp(why, "must be absolute") != 0)
		return why;
	return NULL;
}

static bool all_chars_in(const char *s, size_t n, const char *set)
{
	for (size_t i = 0; i < n; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
		    !(s[i] >= '0' && s[i] <= '9') && !strchr(set, s[i]))
			return false;
	return true;
}

/* ---- freeing -------------------------------------------------------------- */

static void step_clear(struct kiln_step *s)
{
	free(s->text);
	free(s->arg);
	free(s->arg2);
}

static void file_clear(struct kiln_file *f)
{
	free(f->path);
	free(f->raw_path);
	free(f->content);
}

static void overlay_clear(struct kiln_overlay *o)
{
	for (size_t i = 0; i < o->n_files; i++)
		file_clear(&o->files[i]);
	free(o->files);
	free(o->name);
	free(o->raw_name);
}

struct kiln_recipe *kiln_recipe_free(struct kiln_recipe *r)
{
	if (!r)
		return NULL;
	free(r->name);
	free(r->base);
	for (size_t i = 0; i < r->n_packages; i++)
		free(r->packages[i]);
	free(r->packages);
	for (size_t i = 0; i < r->n_overlays; i++)
		overlay_clear(&r->overlays[i]);
	free(r->overlays);
	free(r->locale);
	free(r->timezone);
	for (size_t i = 0; i < r->n_steps; i++)
		step_clear(&r->steps[i]);
	free(r->steps);
	if (r->healthcheck)
		free(r->healthcheck->cmd);
	free(r->healthcheck);
	free(r);
	return NULL;
}

/* ---- top-level fields ----------------------------------------------------- */

static int f_name(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	struct str s;
	int rc = get_string(v, path, false, 1024, &s, err);
	if (rc < 0)
		return rc;
	r->name = xstrndup(s.s, s.len);
	return 0;
}

static const char *const known_bases[] = {"debian/bookworm", KILN_BASE_BUSYBOX,
                                          KILN_BASE_ARCHLINUX};

static int f_base(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	struct str s;
	int rc = get_string(v, path, false, 256, &s, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < ELEMENTSOF(known_bases); i++)
		if (strcmp(s.s, known_bases[i]) == 0) {
			free(r->base);
			r->base = xstrdup(s.s);
			return 0;
		}
	_cleanup_buf_ struct kiln_buf q = KILN_BUF_INIT;
	kiln_json_put_string(&q, s.s, s.len, true);
	rc = fail(err, path, "unsupported base %s (supported: debian/bookworm, busybox, archlinux)",
	          q.data);
	return rc;
}

static int cmp_cstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int f_packages(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	int rc = get_array(v, path, KILN_RECIPE_MAX_PACKAGES, "packages", err);
	if (rc < 0)
		return rc;
	size_t n = json_array_size(v);
	char **pk = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *sub = path_index(path, i);
		struct str s;
		/* The names' rules are the base's: checked once the base is
		 * known (check_package_names). */
		rc = get_string(json_array_get(v, i), sub, false, 255, &s, err);
		if (rc < 0) {
			strv_free(pk);
			return rc;
		}
		pk[i] = xstrndup(s.s, s.len);
	}
	/* Package names are ASCII, so strcmp order is code point order. */
	qsort(pk, n, sizeof(char *), cmp_cstr);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (k > 0 && strcmp(pk[k - 1], pk[i]) == 0) {
			free(pk[i]);
			continue;
		}
		pk[k++] = pk[i];
	}
	pk[k] = NULL;
	strv_free(r->packages);
	r->packages = pk;
	r->n_packages = k;
	return 0;
}

/* Every package name by the base's rules, named by its place in the
 * recipe (packages[i]): Debian policy for the Debian bases, pacman's for
 * archlinux (a name pacman would refuse fails here, not at fetch). */
static int check_package_names(json_t *root, const struct kiln_recipe *r, struct kiln_error **err)
{
	json_t *v = json_object_get(root, "packages");
	bool arch = strcmp(r->base, KILN_BASE_ARCHLINUX) == 0;
	for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++) {
		const char *s = json_string_value(json_array_get(v, i));
		size_t n = json_string_length(json_array_get(v, i));
		if (!s || (arch ? kiln_recipe_pacman_name_ok(s, n) : valid_package(s, n)))
			continue;
		_cleanup_free_ char *sub = path_index("packages", i);
		_cleanup_buf_ struct kiln_buf q = KILN_BUF_INIT;
		kiln_json_put_string(&q, s, n, true);
		return arch ? fail(err, sub,
		                   "%s is not a valid pacman package name (letters, digits, "
		                   "@ . _ + -; not starting with - or .)",
		                   q.data)
		            : fail(err, sub,
		                   "%s is not a valid Debian package name "
		                   "(lowercase letters, digits, + . -; at least 2 characters)",
		                   q.data);
	}
	return 0;
}

/* overlays[i].files[j] */
struct file_ctx {
	struct kiln_file *f;
	bool has_path;
};

static int ff_path(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct file_ctx *c = t;
	struct str s;
	int rc = get_string(v, path, false, 16 * KILN_RECIPE_MAX_PATH, &s, err);
	if (rc < 0)
		return rc;
	size_t off, len;
	kiln_utf8_strip(s.s, s.len, &off, &len);
	const char *why = check_abs_path(s.s + off, len, false);
	if (why)
		return fail(err, path, "%s", why);
	c->f->raw_path = xmemdup(s.s, s.len + 1);
	c->f->raw_path_len = s.len;
	c->f->path = xstrndup(s.s + off, len);
	c->f->path_len = len;
	c->has_path = true;
	return 0;
}

static int ff_content(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct file_ctx *c = t;
	struct str s;
	int rc = get_string(v, path, true, KILN_RECIPE_MAX_BYTES, &s, err);
	if (rc < 0)
		return rc;
	c->f->content = xmemdup(s.s, s.len + 1);
	c->f->content_len = s.len;
	return 0;
}

static int ff_mode(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct file_ctx *c = t;
	struct str s;
	int rc = get_string(v, path, false, 16, &s, err);
	if (rc < 0)
		return rc;
	bool ok = s.len >= 3 && s.len <= 4;
	for (size_t i = 0; ok && i < s.len; i++)
		ok = s.s[i] >= '0' && s.s[i] <= '7';
	if (!ok)
		return fail(err, path,
		            "must be an octal mode string of 3 or 4 digits like \"0644\"");
	memcpy(c->f->mode_str, s.s, s.len);
	c->f->mode_str[s.len] = '\0';
	uint64_t mode = 0;
	if (kiln_parse_u64(c->f->mode_str, 8, 0, 07777, &mode) < 0)
		return fail(err, path,
		            "must be an octal mode string of 3 or 4 digits like \"0644\"");
	c->f->mode = (unsigned)mode;
	return 0;
}

static const struct field file_fields[] = {
    {"content", ff_content},
    {"mode", ff_mode},
    {"path", ff_path},
};

struct overlay_ctx {
	struct kiln_recipe *r;
	struct kiln_overlay *o;
};

static int of_name(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct overlay_ctx *c = t;
	struct str s;
	int rc = get_string(v, path, true, KILN_RECIPE_MAX_PATH, &s, err);
	if (rc < 0)
		return rc;
	size_t off, len;
	kiln_utf8_strip(s.s, s.len, &off, &len);
	free(c->o->raw_name);
	free(c->o->name);
	c->o->raw_name = xmemdup(s.s, s.len + 1);
	c->o->raw_name_len = s.len;
	c->o->name = xmemdup(s.s + off, len + 1);
	c->o->name[len] = '\0';
	c->o->name_len = len;
	return 0;
}

/* Length-aware byte comparison of UTF-8 strings = code point order. */
static int cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);
	if (c)
		return c;
	return an < bn ? -1 : an > bn;
}

/* Stable insertion-merge sort helpers: qsort is not stable, so ties are
 * broken by the original index. */
struct file_sort {
	struct kiln_file f;
	size_t idx;
};

static int cmp_file_sort(const void *a, const void *b)
{
	const struct file_sort *x = a, *y = b;
	int c = cmp_bytes(x->f.raw_path, x->f.raw_path_len, y->f.raw_path, y->f.raw_path_len);
	if (c)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int of_files(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct overlay_ctx *c = t;
	int rc = get_array(v, path, KILN_RECIPE_MAX_FILES, "files", err);
	if (rc < 0)
		return rc;
	size_t n = json_array_size(v);
	if (c->r->n_files + n > KILN_RECIPE_MAX_FILES)
		return fail(err, path, "the recipe has more than %d overlay files in all",
		            KILN_RECIPE_MAX_FILES);
	struct file_sort *fs = xcalloc(n, sizeof(*fs));
	size_t done = 0;
	for (size_t i = 0; i < n; i++, done++) {
		_cleanup_free_ char *sub = path_index(path, i);
		struct file_ctx fc = {&fs[i].f, false};
		fs[i].idx = i;
		rc = parse_object(json_array_get(v, i), sub, file_fields, ELEMENTSOF(file_fields),
		                  &fc, err);
		if (rc == 0 && !fc.has_path)
			rc = fail(err, sub, "missing required field \"path\"");
		if (rc < 0) {
			done++;
			break;
		}
		if (!fs[i].f.content) {
			fs[i].f.content = xstrdup("");
			fs[i].f.content_len = 0;
		}
		if (!fs[i].f.mode_str[0]) {
			memcpy(fs[i].f.mode_str, KILN_DEFAULT_MODE, sizeof(KILN_DEFAULT_MODE));
			fs[i].f.mode = 0644;
		}
		kiln_sha256_hex(fs[i].f.content, fs[i].f.content_len, fs[i].f.content_sha256);
	}
	if (rc < 0) {
		for (size_t i = 0; i < done; i++)
			file_clear(&fs[i].f);
		free(fs);
		return rc;
	}
	qsort(fs, n, sizeof(*fs), cmp_file_sort);
	for (size_t i = 0; i < c->o->n_files; i++)
		file_clear(&c->o->files[i]);
	free(c->o->files);
	c->o->files = xcalloc(n, sizeof(struct kiln_file));
	for (size_t i = 0; i < n; i++)
		c->o->files[i] = fs[i].f;
	c->o->n_files = n;
	c->r->n_files += n;
	free(fs);
	return 0;
}

static const struct field overlay_fields[] = {
    {"files", of_files},
    {"name", of_name},
};

struct overlay_sort {
	struct kiln_overlay o;
	size_t idx;
};

static int cmp_overlay_sort(const void *a, const void *b)
{
	const struct overlay_sort *x = a, *y = b;
	int c = cmp_bytes(x->o.raw_name, x->o.raw_name_len, y->o.raw_name, y->o.raw_name_len);
	if (c)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int f_overlays(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	int rc = get_array(v, path, KILN_RECIPE_MAX_OVERLAYS, "overlays", err);
	if (rc < 0)
		return rc;
	size_t n = json_array_size(v);
	struct overlay_sort *os = xcalloc(n, sizeof(*os));
	size_t done = 0;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *sub = path_index(path, i);
		struct overlay_ctx oc = {r, &os[i].o};
		os[i].idx = i;
		done++;
		rc = parse_object(json_array_get(v, i), sub, overlay_fields,
		                  ELEMENTSOF(overlay_fields), &oc, err);
		if (rc < 0)
			break;
		if (!os[i].o.raw_name) {
			os[i].o.raw_name = xstrdup("");
			os[i].o.name = xstrdup("");
		}
	}
	if (rc < 0) {
		for (size_t i = 0; i < done; i++)
			overlay_clear(&os[i].o);
		free(os);
		return rc;
	}
	qsort(os, n, sizeof(*os), cmp_overlay_sort);
	r->overlays = xcalloc(n, sizeof(struct kiln_overlay));
	for (size_t i = 0; i < n; i++)
		r->overlays[i] = os[i].o;
	r->n_overlays = n;
	free(os);
	return 0;
}

static int f_locale(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	struct str s;
	int rc = get_string(v, path, false, 64, &s, err);
	if (rc < 0)
		return rc;
	if (s.len == 0 || !all_chars_in(s.s, s.len, "_.@-+"))
		return fail(err, path, "must be a locale name like \"en_US.UTF-8\"");
	free(r->locale);
	r->locale = xstrdup(s.s);
	return 0;
}

static int f_timezone(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	struct str s;
	int rc = get_string(v, path, false, 128, &s, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *abs = xasprintf("/%s", s.s);
	if (s.len == 0 || !all_chars_in(s.s, s.len, "_+-/") ||
	    check_abs_path(abs, s.len + 1, false))
		return fail(err, path, "must be a tz database name like \"Europe/Berlin\"");
	free(r->timezone);
	r->timezone = xstrdup(s.s);
	return 0;
}

/* ---- steps ---------------------------------------------------------------- */

static bool valid_env_key(const char *s, size_t n)
{
	if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
		return false;
	return all_chars_in(s, n, "_");
}

static bool valid_user(const char *s, size_t n)
{
	/* A login name (useradd's default NAME_REGEX) or a numeric uid. */
	if (n == 0 || n > 32)
		return false;
	bool numeric = true;
	for (size_t i = 0; i < n; i++)
		numeric = numeric && s[i] >= '0' && s[i] <= '9';
	if (numeric)
		return n <= 5;
	if (!((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

struct step_op {
	const char *word;
	enum kiln_step_op op;
};

static const struct step_op step_ops[] = {
    {"RUN", KILN_STEP_RUN},         {"ENV", KILN_STEP_ENV},   {"USER", KILN_STEP_USER},
    {"WORKDIR", KILN_STEP_WORKDIR}, {"COPY", KILN_STEP_COPY},
};

static int parse_step(const char *s, size_t n, const char *path, struct kiln_step *ret,
                      struct kiln_error **err)
{
	size_t w = 0;
	while (w < n && !is_blank(s[w]))
		w++;
	const struct step_op *op = NULL;
	for (size_t i = 0; i < ELEMENTSOF(step_ops); i++)
		if (strlen(step_ops[i].word) == w && memcmp(step_ops[i].word, s, w) == 0)
			op = &step_ops[i];
	if (!op) {
		_cleanup_buf_ struct kiln_buf q = KILN_BUF_INIT;
		kiln_json_put_string(&q, s, w, true);
		int rc = fail(err, path,
		              "unknown instruction %s (expected RUN, ENV, USER, WORKDIR or COPY)",
		              q.data);
		return rc;
	}
	const char *a = s + w;
	size_t an = n - w;
	while (an && is_blank(*a))
		a++, an--;
	/* Trailing blanks never matter to RUN's shell nor to the other forms. */
	while (an && (is_blank(a[an - 1]) || a[an - 1] == '\n' || a[an - 1] == '\r'))
		an--;
	if (an == 0)
		return fail(err, path, "%s needs an argument", op->word);

	struct kiln_step st = {.op = op->op};
	const char *why = NULL;
	switch (op->op) {
	case KILN_STEP_RUN: st.arg = xstrndup(a, an); break;
	case KILN_STEP_ENV: {
		const char *eq = memchr(a, '=', an);
		if (!eq || !valid_env_key(a, (size_t)(eq - a)))
			return fail(err, path,
			            "ENV must be KEY=VALUE with KEY made of letters, digits and _");
		st.arg = xstrndup(a, (size_t)(eq - a));
		st.arg2 = xstrndup(eq + 1, an - (size_t)(eq - a) - 1);
		break;
	}
	case KILN_STEP_USER:
		if (!valid_user(a, an))
			return fail(err, path, "USER must be a user name or a numeric uid");
		st.arg = xstrndup(a, an);
		break;
	case KILN_STEP_WORKDIR:
		why = check_abs_path(a, an, true);
		if (why)
			return fail(err, path, "WORKDIR path %s", why);
		st.arg = xstrndup(a, an);
		break;
	case KILN_STEP_COPY: {
		size_t i = 0;
		while (i < an && !is_blank(a[i]))
			i++;
		size_t j = i;
		while (j < an && is_blank(a[j]))
			j++;
		if (i == an || memchr(a + j, ' ', an - j) || memchr(a + j, '\t', an - j))
			return fail(err, path, "COPY takes exactly two arguments: SRC DST");
		why = check_rel_path(a, i);
		if (why)
			return fail(err, path, "COPY source %s", why);
		why = check_abs_path(a + j, an - j, true);
		if (why)
			return fail(err, path, "COPY destination %s", why);
		st.arg = xstrndup(a, i);
		st.arg2 = xstrndup(a + j, an - j);
		break;
	}
	}
	switch (op->op) {
	case KILN_STEP_ENV: st.text = xasprintf("ENV %s=%s", st.arg, st.arg2); break;
	case KILN_STEP_COPY: st.text = xasprintf("COPY %s %s", st.arg, st.arg2); break;
	default: st.text = xasprintf("%s %s", op->word, st.arg); break;
	}
	*ret = st;
	return 0;
}

static int f_steps(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	int rc = get_array(v, path, KILN_RECIPE_MAX_STEPS, "steps", err);
	if (rc < 0)
		return rc;
	size_t n = json_array_size(v);
	struct kiln_step *steps = xcalloc(n, sizeof(*steps));
	struct errs es = {KILN_BUF_INIT, 0};
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *sub = path_index(path, i);
		_cleanup_error_ struct kiln_error *e = NULL;
		struct str s;
		rc = get_string(json_array_get(v, i), sub, false, KILN_RECIPE_MAX_STEP_BYTES, &s,
		                &e);
		if (rc == 0)
			rc = parse_step(s.s, s.len, sub, &steps[i], &e);
		errs_add(&es, &e);
	}
	if (es.n) {
		for (size_t k = 0; k < n; k++)
			step_clear(&steps[k]);
		free(steps);
		return errs_finish(&es, err);
	}
	r->steps = steps;
	r->n_steps = n;
	return 0;
}

static const char *const output_names[] = {"tar", "squashfs", "iso", "ext4", "oci"};

const char *kiln_output_name(enum kiln_output o)
{
	for (size_t i = 0; i < ELEMENTSOF(output_names); i++)
		if (o == (1u << i))
			return output_names[i];
	return NULL;
}

static int f_outputs(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	int rc = get_array(v, path, ELEMENTSOF(output_names), "outputs", err);
	if (rc < 0)
		return rc;
	if (json_array_size(v) == 0)
		return fail(
		    err, path,
		    "must name at least one of \"tar\", \"squashfs\", \"iso\", \"ext4\", \"oci\"");
	unsigned mask = 0;
	for (size_t i = 0; i < json_array_size(v); i++) {
		_cleanup_free_ char *sub = path_index(path, i);
		struct str s;
		rc = get_string(json_array_get(v, i), sub, false, 64, &s, err);
		if (rc < 0)
			return rc;
		unsigned bit = 0;
		for (size_t k = 0; k < ELEMENTSOF(output_names); k++)
			if (strcmp(s.s, output_names[k]) == 0)
				bit = 1u << k;
		if (!bit)
			return fail(err, sub,
			            "unknown output (expected \"tar\", \"squashfs\", \"iso\", "
			            "\"ext4\" or \"oci\")");
		if (mask & bit)
			return fail(err, sub, "duplicate output \"%s\"", s.s);
		mask |= bit;
	}
	r->outputs = mask;
	return 0;
}

/* resources */
struct res_ctx {
	struct kiln_resources *res;
	bool warning_given;
};

#define INT_FIELD(fn, ctx_type, member, min, max)                                                  \
	static int fn(void *t, json_t *v, const char *path, struct kiln_error **err)               \
	{                                                                                          \
		ctx_type *c = t;                                                                   \
		return get_int(v, path, min, max, &c->member, err);                                \
	}

INT_FIELD(rf_memory, struct kiln_resources, memory_mb, 64, 1048576)
INT_FIELD(rf_cpus, struct kiln_resources, cpus, 1, 1024)
INT_FIELD(rf_timeout, struct kiln_resources, timeout_s, 1, 7 * 86400)
INT_FIELD(rf_warning, struct kiln_resources, warning_s, 0, 7 * 86400)
INT_FIELD(rf_step_timeout, struct kiln_resources, step_timeout_s, 1, 7 * 86400)
INT_FIELD(rf_disk, struct kiln_resources, disk_mb, 16, KILN_DISK_MB_MAX)

static const struct field resource_fields[] = {
    {"cpus", rf_cpus},         {"disk_mb", rf_disk},
    {"memory_mb", rf_memory},  {"step_timeout_s", rf_step_timeout},
    {"timeout_s", rf_timeout}, {"warning_s", rf_warning},
};

static int f_resources(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	struct kiln_resources res = r->resources;
	res.warning_s = -1;
	int rc = parse_object(v, path, resource_fields, ELEMENTSOF(resource_fields), &res, err);
	if (rc < 0)
		return rc;
	if (res.warning_s < 0) {
		/* Default 900 s, kept below a shorter timeout so it can still fire. */
		res.warning_s = res.timeout_s > 1200 ? 900 : res.timeout_s * 3 / 4;
	} else if (res.warning_s >= res.timeout_s) {
		_cleanup_free_ char *sub = path_key(path, "warning_s");
		return fail(err, sub, "must be less than timeout_s (%lld)",
		            (long long)res.timeout_s);
	}
	r->resources = res;
	return 0;
}

static int f_epoch(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	int rc = get_int(v, path, 0, KILN_RECIPE_MAX_EPOCH, &r->source_date_epoch, err);
	if (rc < 0)
		return rc;
	r->epoch_given = true;
	return 0;
}

/* healthcheck */
static int hf_cmd(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_healthcheck *h = t;
	struct str s;
	int rc = get_string(v, path, false, 4096, &s, err);
	if (rc < 0)
		return rc;
	if (s.len == 0)
		return fail(err, path, "must not be empty");
	free(h->cmd);
	h->cmd = xstrdup(s.s);
	return 0;
}

INT_FIELD(hf_interval, struct kiln_healthcheck, interval_s, 1, 86400)
INT_FIELD(hf_timeout, struct kiln_healthcheck, timeout_s, 1, 86400)
INT_FIELD(hf_start, struct kiln_healthcheck, start_period_s, 0, 86400)
INT_FIELD(hf_retries, struct kiln_healthcheck, retries, 0, 100)

static const struct field health_fields[] = {
    {"cmd", hf_cmd},           {"interval_s", hf_interval},
    {"retries", hf_retries},   {"start_period_s", hf_start},
    {"timeout_s", hf_timeout},
};

static int f_healthcheck(void *t, json_t *v, const char *path, struct kiln_error **err)
{
	struct kiln_recipe *r = t;
	struct kiln_healthcheck *h = xcalloc(1, sizeof(*h));
	*h = (struct kiln_healthcheck){NULL, 30, 30, 0, 3};
	int rc = parse_object(v, path, health_fields, ELEMENTSOF(health_fields), h, err);
	if (rc == 0 && !h->cmd)
		rc = fail(err, path, "missing required field \"cmd\"");
	if (rc < 0) {
		free(h->cmd);
		free(h);
		return rc;
	}
	r->healthcheck = h;
	return 0;
}

static const struct field recipe_fields[] = {
    {"base", f_base},         {"healthcheck", f_healthcheck}, {"locale", f_locale},
    {"name", f_name},         {"outputs", f_outputs},         {"overlays", f_overlays},
    {"packages", f_packages}, {"resources", f_resources},     {"source_date_epoch", f_epoch},
    {"steps", f_steps},       {"timezone", f_timezone},
};

/* ---- JSON paths of errors jansson finds ----------------------------------- */

/* Duplicate keys, invalid UTF-8, integers beyond 64 bits and absurd nesting
 * are found while jansson parses, before any value reaches a field table, so
 * its errors carry only a byte position. The spec wants every error to name
 * its JSON path: this scans buf[0..pos) tracking the open containers and
 * returns the path of the value being read at pos ("" at the top level).
 * With max_depth, it instead stops at the first container nested deeper than
 * that and returns its path through ret_path (else sets *ret_path NULL). */
struct scan_frame {
	bool obj;
	bool has_key;  /* obj: a key was read for the current member */
	bool has_elem; /* array: an element was started */
	size_t idx;
	const char *key; /* obj: the current key's raw bytes, unescaped only as given */
	size_t key_len;
};

static char *scan_path(const struct scan_frame *st, size_t n)
{
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_puts(&b, "");
	for (size_t i = 0; i < n; i++) {
		if (st[i].obj && st[i].has_key) {
			if (b.len)
				kiln_buf_putc(&b, '.');
			kiln_buf_append(&b, st[i].key, st[i].key_len);
		} else if (!st[i].obj && st[i].has_elem) {
			kiln_buf_printf(&b, "[%zu]", st[i].idx);
		} else {
			break;
		}
	}
	return kiln_buf_steal(&b, NULL);
}

static char *json_path_at(const char *buf, size_t len, size_t pos, size_t max_depth,
                          size_t *ret_line)
{
	struct scan_frame st[KILN_RECIPE_MAX_DEPTH + 1];
	size_t n = 0, skipped = 0, line = 1; /* skipped: frames deeper than st holds */
	if (pos > len)
		pos = len;
	for (size_t i = 0; i < pos; i++) {
		char c = buf[i];
		struct scan_frame *top = n && !skipped ? &st[n - 1] : NULL;
		if (c == '\n') {
			line++;
		} else if (c == '"') {
			size_t j = i + 1;
			while (j < pos && buf[j] != '"')
				j += buf[j] == '\\' ? 2 : 1;
			bool is_key = top && top->obj && !top->has_key;
			if (is_key && j < pos) {
				top->key = buf + i + 1;
				top->key_len = j - i - 1;
				top->has_key = true;
			} else if (top && !top->obj) {
				top->has_elem = true;
			}
			i = j;
		} else if (c == '{' || c == '[') {
			if (top && !top->obj)
				top->has_elem = true;
			if (n - skipped >= max_depth || skipped || n == ELEMENTSOF(st)) {
				if (max_depth != SIZE_MAX) {
					*ret_line = line;
					return scan_path(st, n);
				}
				skipped++;
			} else {
				st[n] = (struct scan_frame){.obj = c == '{'};
			}
			n++;
		} else if (c == '}' || c == ']') {
			if (n) {
				n--;
				if (skipped)
					skipped--;
			}
		} else if (c == ',') {
			if (top && top->obj)
				top->has_key = false;
			else if (top)
				top->idx++, top->has_elem = false;
		} else if (top && !top->obj && c != ' ' && c != '\t' && c != '\r' && c != ':') {
			top->has_elem = true;
		}
	}
	if (ret_line)
		*ret_line = line;
	if (max_depth != SIZE_MAX)
		return NULL;
	return scan_path(st, n - skipped);
}

/* jansson recurses per nesting level (up to its compiled limit of 2048);
 * refuse absurd nesting up front with a clear message instead. */
static int check_depth(const char *buf, size_t len, struct kiln_error **err)
{
	size_t line = 0;
	_cleanup_free_ char *path = json_path_at(buf, len, len, KILN_RECIPE_MAX_DEPTH, &line);
	if (!path)
		return 0;
	return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
	                           "%s: line %zu: nesting deeper than %d levels",
	                           *path ? path : "(root)", line, KILN_RECIPE_MAX_DEPTH);
}

static void json_decref_p(json_t **j)
{
	if (*j)
		json_decref(*j);
}

int kiln_recipe_parse(const char *buf, size_t len, struct kiln_recipe **ret,
                      struct kiln_error **err)
{
	if (len > KILN_RECIPE_MAX_BYTES)
		return kiln_error_set_kind(
		    err, KILN_ERR_LIMIT, EFBIG,
		    "recipe is larger than the limit of %u bytes (%zu bytes)",
		    KILN_RECIPE_MAX_BYTES, len);
	int rc = check_depth(buf, len, err);
	if (rc < 0)
		return rc;
	json_error_t jerr;
	_cleanup_(json_decref_p) json_t *root =
	    json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (!root) {
		/* Syntax errors at the top level keep the documented "line, column"
		 * form; anything inside a value names that value's path first. */
		_cleanup_free_ char *where =
		    json_path_at(buf, len, (size_t)jerr.position, SIZE_MAX, NULL);
		return kiln_error_set_kind(
		    err, KILN_ERR_USER, EINVAL, "%s%sline %d, column %d: invalid JSON: %s", where,
		    *where ? ": " : "", jerr.line, jerr.column < 1 ? 1 : jerr.column, jerr.text);
	}

	_cleanup_recipe_ struct kiln_recipe *r = xcalloc(1, sizeof(*r));
	r->base = xstrdup(KILN_DEFAULT_BASE);
	r->locale = xstrdup(KILN_DEFAULT_LOCALE);
	r->timezone = xstrdup(KILN_DEFAULT_TIMEZONE);
	r->packages = xcalloc(1, sizeof(char *));
	r->outputs = KILN_OUTPUT_TAR;
	r->resources = (struct kiln_resources){8192, 4, 1200, 900, 600, KILN_DISK_MB_DEFAULT};
	struct errs es = {KILN_BUF_INIT, 0};
	_cleanup_error_ struct kiln_error *e = NULL;
	(void)parse_object(root, "", recipe_fields, ELEMENTSOF(recipe_fields), r, &e);
	errs_add(&es, &e);
	check_package_names(root, r, &e);
	errs_add(&es, &e);
	if (strcmp(r->base, KILN_BASE_ARCHLINUX) == 0 && (r->outputs & KILN_OUTPUT_ISO))
		fail(&e, "outputs",
		     "\"iso\" is not supported for base \"archlinux\" yet (use \"tar\" "
		     "or \"squashfs\"; docs/image.md, \"Backends\")");
	errs_add(&es, &e);
	/* The busybox base has no package manager, no kernel and no tzdata. */
	bool busybox = strcmp(r->base, KILN_BASE_BUSYBOX) == 0;
	if (busybox && r->n_packages > 0)
		fail(&e, "packages",
		     "base \"busybox\" has no package manager: packages must be empty "
		     "(use base \"debian/bookworm\" to install packages)");
	errs_add(&es, &e);
	if (busybox && (r->outputs & KILN_OUTPUT_ISO))
		fail(&e, "outputs",
		     "\"iso\" needs a kernel and a boot loader, which base \"busybox\" "
		     "does not have (use \"tar\" or \"squashfs\", or base \"debian/bookworm\")");
	errs_add(&es, &e);
	if (busybox && strcmp(r->timezone, "UTC") != 0 && strcmp(r->timezone, "Etc/UTC") != 0)
		fail(&e, "timezone",
		     "base \"busybox\" has no time zone data: only \"UTC\" (use base "
		     "\"debian/bookworm\" with the tzdata package for \"%s\")",
		     r->timezone);
	errs_add(&es, &e);
	if (es.n > KILN_RECIPE_MAX_ERRORS) {
		/* The first KILN_RECIPE_MAX_ERRORS lines, then how many more. */
		char *c = es.msg.data;
		for (size_t i = 0; i < KILN_RECIPE_MAX_ERRORS && c; i++)
			c = strchr(c + (i ? 1 : 0), '\n');
		if (c) {
			es.msg.len = (size_t)(c - es.msg.data);
			*c = '\0';
		}
		kiln_buf_printf(&es.msg, "\n(and %zu more errors)", es.n - KILN_RECIPE_MAX_ERRORS);
	}
	if (es.n)
		return errs_finish(&es, err);

	size_t clen;
	_cleanup_free_ char *canon = kiln_recipe_config_canonical(r, &clen);
	kiln_sha256_hex(canon, clen, r->config_hash);
	if (!r->epoch_given)
		r->source_date_epoch = kiln_recipe_derive_epoch(r->config_hash);
	*ret = TAKE_PTR(r);
	return 0;
}
