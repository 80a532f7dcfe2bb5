/* service/store.c — `kiln store verify` and `kiln store gc`: the store's
 * blobs against every reference to them (the database's and the state
 * directory's), and the marks that stop a build with bad or collected
 * artifacts from answering the cache. docs/service.md, "The store". */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image.h"
#include "service/internal.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/buf.h"

/* One reference to a blob. */
struct ref {
	char hex[KILN_SHA256_HEX_LEN + 1];
	char *what;   /* for a person: "build ID (rootfs.tar.gz)" */
	char *holder; /* a local cache entry's build key (to forget it), or NULL */
	bool protect; /* gc never collects it */
	bool needed;  /* a missing blob is a problem (a marked build's is not) */
	int64_t used_us;
};

struct refs {
	struct ref *v;
	size_t n;
	struct kiln_store_problem *bad_files; /* reference files kiln cannot read */
	size_t n_bad;
};

static void refs_clear(struct refs *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].what);
		free(r->v[i].holder);
	}
	free(r->v);
	free(r->bad_files);
}

static void refs_clearp(struct refs *r)
{
	refs_clear(r);
}
#define _cleanup_refs_ _cleanup_(refs_clearp)

static struct ref *refs_add(struct refs *r, const char *hex, char *what)
{
	r->v = xreallocarray(r->v, r->n + 1, sizeof(*r->v));
	struct ref *f = &r->v[r->n++];
	*f = (struct ref){.what = what};
	snprintf(f->hex, sizeof(f->hex), "%s", hex);
	return f;
}

static int cmp_ref(const void *a, const void *b)
{
	return strcmp(((const struct ref *)a)->hex, ((const struct ref *)b)->hex);
}

/* The first reference to hex in the sorted r, or NULL. */
static struct ref *refs_find(const struct refs *r, const char *hex)
{
	size_t lo = 0, hi = r->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(r->v[mid].hex, hex) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < r->n && strcmp(r->v[lo].hex, hex) == 0 ? &r->v[lo] : NULL;
}

#define EACH_REF(r, first, f)                                                                      \
	for (struct ref *f = (first);                                                              \
	     f && f < (r)->v + (r)->n && strcmp(f->hex, (first)->hex) == 0; f++)

static bool active(const char *status)
{
	return strcmp(status, "pending") == 0 || strcmp(status, "building") == 0;
}

static int db_refs_locked(struct kiln_service *s, struct refs *r, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int rc =
	    kiln_db_prepare(s->db,
	                    "SELECT a.sha256, a.name, b.id, b.status, b.pinned, b.store_error,"
	                    " b.created_us FROM artifacts a JOIN builds b ON b.id = a.build_id",
	                    &st, err);
	while (rc == 0 && (rc = kiln_db_step(st, err)) == 1) {
		const char *status = kiln_db_column_text(st, 3);
		struct ref *f = refs_add(r, kiln_db_column_text(st, 0),
		                         xasprintf("build %s (%s)", kiln_db_column_text(st, 2),
		                                   kiln_db_column_text(st, 1)));
		f->protect = active(status) || kiln_db_column_int64(st, 4) != 0;
		f->needed = kiln_db_column_is_null(st, 5);
		/* A cache hit adds a build row with the same artifacts: that is a
		 * use, and recording it costs the hit nothing (no blob touched). */
		f->used_us = kiln_db_column_int64(st, 6);
		rc = 0;
	}
	if (rc < 0)
		return rc;
	kiln_db_stmt_done(TAKE_PTR(st));
	rc = kiln_db_prepare(s->db,
	                     "SELECT context_sha256, id, status, pinned, created_us FROM builds"
	                     " WHERE context_sha256 IS NOT NULL",
	                     &st, err);
	while (rc == 0 && (rc = kiln_db_step(st, err)) == 1) {
		const char *status = kiln_db_column_text(st, 2);
		struct ref *f =
		    refs_add(r, kiln_db_column_text(st, 0),
		             xasprintf("build %s (context)", kiln_db_column_text(st, 1)));
		f->protect = active(status) || kiln_db_column_int64(st, 3) != 0;
		/* Only a build still to run reads its context again. */
		f->needed = active(status);
		f->used_us = kiln_db_column_int64(st, 4);
		rc = 0;
	}
	return rc < 0 ? rc : 0;
}

static int image_ref(void *ud, enum kiln_image_ref kind, const char *holder, const char *what,
                     const char *hex, uint64_t size)
{
	(void)size;
	struct refs *r = ud;
	if (!hex) {
		r->bad_files = xreallocarray(r->bad_files, r->n_bad + 1, sizeof(*r->bad_files));
		r->bad_files[r->n_bad++] = (struct kiln_store_problem){
		    .refs = xasprintf("%s: not readable as kiln wrote it", what)};
		return 0;
	}
	struct ref *f = refs_add(r, hex, xstrdup(what));
	/* A lock's .debs and a base's archive are what make a rebuild
	 * byte-identical: collected, the next build would resolve (and
	 * download) whatever versions the mirror has then. */
	f->protect = kind != KILN_IMAGE_REF_CACHE;
	f->needed = true;
	if (kind == KILN_IMAGE_REF_CACHE)
		f->holder = xstrdup(holder);
	return 0;
}

static int gather_refs(struct kiln_service *s, struct refs *r, struct kiln_error **err)
{
	pthread_mutex_lock(&s->lock);
	int rc = db_refs_locked(s, r, err);
	pthread_mutex_unlock(&s->lock);
	if (rc == 0)
		rc = kiln_image_store_refs(s->state_dir, image_ref, r, err);
	if (rc == 0 && r->n > 0)
		qsort(r->v, r->n, sizeof(*r->v), cmp_ref);
	return rc;
}

/* ---- the blobs ---------------------------------------------------------------- */

struct blob {
	char hex[KILN_SHA256_HEX_LEN + 1];
	char *path;
	uint64_t size;
	int64_t used_us, mtime_us;
	bool stamped, temp, gone;
};

struct blobs {
	struct blob *v;
	size_t n;
	uint64_t bytes; /* of the blobs, temp files not counted */
};

static int blob_add(void *ud, const struct kiln_cas_entry *e)
{
	struct blobs *b = ud;
	b->v = xreallocarray(b->v, b->n + 1, sizeof(*b->v));
	struct blob *x = &b->v[b->n++];
	*x = (struct blob){.path = xstrdup(e->path),
	                   .size = e->size,
	                   .used_us = e->used_us,
	                   .mtime_us = e->mtime_us,
	                   .stamped = e->stamped,
	                   .temp = e->temp};
	memcpy(x->hex, e->hex, sizeof(x->hex));
	if (!e->temp)
		b->bytes += e->size;
	return 0;
}

static void blobs_clear(struct blobs *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->v[i].path);
	free(b->v);
}

#define _cleanup_blobs_ _cleanup_(blobs_clear)

static int cmp_blob(const void *a, const void *b)
{
	const struct blob *x = a, *y = b;
	int c = strcmp(x->hex, y->hex);
	return c ? c : (int)x->temp - (int)y->temp;
}

static bool blob_present(const struct blobs *b, const char *hex)
{
	struct blob key = {0};
	memcpy(key.hex, hex, sizeof(key.hex));
	const struct blob *x = bsearch(&key, b->v, b->n, sizeof(*b->v), cmp_blob);
	return x && !x->gone;
}

static char *refs_text(const struct refs *r, const char *hex)
{
	struct ref *first = refs_find(r, hex);
	if (!first)
		return NULL;
	struct kiln_buf b = KILN_BUF_INIT;
	EACH_REF(r, first, f)
	kiln_buf_printf(&b, "%s%s", b.len ? "; " : "", f->what);
	return kiln_buf_steal(&b, NULL);
}

/* ---- marks ------------------------------------------------------------------------ */

int svc_store_mark(struct kiln_service *s, const char *hex, const char *why)
{
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "UPDATE builds SET store_error = $2 WHERE store_error IS NULL"
	                        " AND id IN (SELECT build_id FROM artifacts WHERE sha256 = $1)",
	                        &st, NULL);
	if (r == 0) {
		kiln_db_bind_text(st, 1, hex);
		kiln_db_bind_text(st, 2, why);
		r = kiln_db_step(st, NULL);
	}
	if (r >= 0)
		r = (int)kiln_db_changes(s->db);
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	return r;
}

static void forget_entries(struct kiln_service *s, const struct refs *r, const char *hex,
                           size_t *ret_n)
{
	struct ref *first = refs_find(r, hex);
	EACH_REF(r, first, f)
	if (f->holder && kiln_image_cache_forget(s->state_dir, f->holder) == 0)
		(*ret_n)++;
}

/* ---- verify ------------------------------------------------------------------------ */

static void add_problem(struct kiln_store_verify_report *rep, const char *hex, bool corrupt,
                        char *quarantined, char *refs)
{
	rep->problems = xreallocarray(rep->problems, rep->n_problems + 1, sizeof(*rep->problems));
	struct kiln_store_problem *p = &rep->problems[rep->n_problems++];
	*p = (struct kiln_store_problem){
	    .corrupt = corrupt, .quarantined = quarantined, .refs = refs};
	snprintf(p->sha256, sizeof(p->sha256), "%s", hex);
}

void kiln_store_verify_report_clear(struct kiln_store_verify_report *r)
{
	for (size_t i = 0; i < r->n_problems; i++) {
		free(r->problems[i].quarantined);
		free(r->problems[i].refs);
	}
	free(r->problems);
	*r = (struct kiln_store_verify_report){0};
}

#define TEMP_GRACE_US (INT64_C(3600) * 1000000)

static int verify_blobs(struct kiln_service *s, bool repair, kiln_store_progress_fn progress,
                        void *ud, const struct refs *refs, struct blobs *blobs,
                        struct kiln_store_verify_report *rep, struct kiln_error **err)
{
	size_t total = 0;
	for (size_t i = 0; i < blobs->n; i++)
		total += !blobs->v[i].temp;
	int64_t now = kiln_now_us();
	uint64_t done_bytes = 0;
	for (size_t i = 0; i < blobs->n; i++) {
		struct blob *b = &blobs->v[i];
		if (b->temp) {
			/* A writer that died left it; one that is alive is younger. */
			if (repair && b->mtime_us < now - TEMP_GRACE_US && unlink(b->path) == 0)
				rep->removed++;
			continue;
		}
		bool good = false;
		uint64_t size = 0;
		_cleanup_error_ struct kiln_error *e = NULL;
		if (kiln_cas_check(s->state_dir, b->hex, &good, &size, &e) < 0) {
			b->gone = true; /* removed meanwhile: a missing reference, if any */
			continue;
		}
		rep->blobs++;
		rep->bytes += size;
		done_bytes += b->size;
		if (progress)
			progress(ud, rep->blobs, total, done_bytes, blobs->bytes);
		if (good) {
			if (!b->stamped && kiln_cas_stamp(s->state_dir, b->hex, NULL) == 0)
				rep->stamped++;
			struct stat st;
			if (lstat(b->path, &st) == 0 && st.st_nlink > 1) {
				int fd = -1;
				if (kiln_cas_open_verified(s->state_dir, b->hex,
				                           KILN_CAS_SIZE_UNKNOWN, &fd, NULL) == 0)
					rep->unshared++;
				safe_close(fd);
			}
			continue;
		}
		char *q = NULL;
		int rc = kiln_cas_quarantine(s->state_dir, b->hex, &q, err);
		if (rc < 0)
			return rc;
		b->gone = true;
		_cleanup_free_ char *why = xasprintf(
		    "artifact sha256:%s was corrupt (kiln store verify); moved to %s", b->hex, q);
		int m = svc_store_mark(s, b->hex, why);
		if (m > 0)
			rep->builds_marked += (size_t)m;
		add_problem(rep, b->hex, true, q, refs_text(refs, b->hex));
		if (repair)
			forget_entries(s, refs, b->hex, &rep->removed);
	}
	return 0;
}

/* References whose blob is not (or no longer) there. */
static void verify_refs(struct kiln_service *s, bool repair, struct refs *refs,
                        const struct blobs *blobs, struct kiln_store_verify_report *rep)
{
	size_t corrupt = rep->n_problems;
	for (size_t i = 0; i < refs->n;) {
		struct ref *first = &refs->v[i];
		bool needed = false, quarantined_now = false;
		EACH_REF(refs, first, f)
		{
			needed |= f->needed;
			i++;
		}
		if (blob_present(blobs, first->hex))
			continue;
		for (size_t k = 0; k < corrupt; k++)
			quarantined_now |= strcmp(rep->problems[k].sha256, first->hex) == 0;
		if (quarantined_now || !needed)
			continue;
		_cleanup_free_ char *why = xasprintf(
		    "artifact sha256:%s is missing from the store (kiln store verify)", first->hex);
		int m = svc_store_mark(s, first->hex, why);
		if (m > 0)
			rep->builds_marked += (size_t)m;
		add_problem(rep, first->hex, false, NULL, refs_text(refs, first->hex));
		if (repair)
			forget_entries(s, refs, first->hex, &rep->removed);
	}
	for (size_t i = 0; i < refs->n_bad; i++)
		add_problem(rep, "", false, NULL, TAKE_PTR(refs->bad_files[i].refs));
}

int kiln_service_store_verify(struct kiln_service *s, bool repair, kiln_store_progress_fn progress,
                              void *ud, struct kiln_store_verify_report *ret,
                              struct kiln_error **err)
{
	_cleanup_refs_ struct refs refs = {0};
	_cleanup_blobs_ struct blobs blobs = {0};
	int rc = gather_refs(s, &refs, err);
	if (rc == 0)
		rc = kiln_cas_each(s->state_dir, blob_add, &blobs, err);
	if (rc < 0)
		return rc;
	if (blobs.n > 0)
		qsort(blobs.v, blobs.n, sizeof(*blobs.v), cmp_blob);
	struct kiln_store_verify_report rep = {0};
	rc = verify_blobs(s, repair, progress, ud, &refs, &blobs, &rep, err);
	if (rc < 0) {
		kiln_store_verify_report_clear(&rep);
		return rc;
	}
	verify_refs(s, repair, &refs, &blobs, &rep);
	*ret = rep;
	return 0;
}

/* ---- gc ----------------------------------------------------------------------------- */

void kiln_store_gc_report_clear(struct kiln_store_gc_report *r)
{
	free(r->items);
	*r = (struct kiln_store_gc_report){0};
}

static void collect(struct kiln_store_gc_report *rep, struct blob *b, int64_t used_us,
                    const char *why)
{
	rep->items = xreallocarray(rep->items, rep->n_items + 1, sizeof(*rep->items));
	struct kiln_store_gc_item *it = &rep->items[rep->n_items++];
	*it = (struct kiln_store_gc_item){.size = b->size, .used_us = used_us, .why = why};
	memcpy(it->sha256, b->hex, sizeof(it->sha256));
	rep->freed += b->size;
	b->gone = true;
}

struct cand {
	struct blob *b;
	int64_t used_us;
};

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return x->used_us < y->used_us ? -1 : x->used_us > y->used_us;
}

/* What the policy collects (marked gone in blobs, listed in rep). */
static void gc_select(const struct kiln_store_gc_policy *p, const struct refs *refs,
                      struct blobs *blobs, struct kiln_store_gc_report *rep)
{
	_cleanup_free_ struct cand *cands = NULL;
	size_t n_cands = 0;
	int64_t now = kiln_now_us();
	for (size_t i = 0; i < blobs->n; i++) {
		struct blob *b = &blobs->v[i];
		if (b->temp) {
			if (b->mtime_us < now - p->grace_us && b->mtime_us < now - TEMP_GRACE_US)
				collect(rep, b, b->mtime_us,
				        "temporary file of a writer that died");
			continue;
		}
		rep->blobs++;
		struct ref *first = refs_find(refs, b->hex);
		bool protect = false;
		int64_t used = b->used_us;
		EACH_REF(refs, first, f)
		{
			protect |= f->protect;
			if (f->used_us > used)
				used = f->used_us;
		}
		if (protect) {
			rep->kept_protected++;
			continue;
		}
		if (used >= now - p->grace_us)
			continue;
		if (!first) {
			collect(rep, b, used, "referenced by nothing");
		} else if (p->keep_us >= 0 && used < now - p->keep_us) {
			collect(rep, b, used, "not used within --keep-days");
		} else {
			cands = xreallocarray(cands, n_cands + 1, sizeof(*cands));
			cands[n_cands++] = (struct cand){b, used};
		}
	}
	/* Least recently used first until the store fits. */
	uint64_t left = 0;
	for (size_t i = 0; i < blobs->n; i++)
		if (!blobs->v[i].temp && !blobs->v[i].gone)
			left += blobs->v[i].size;
	if (n_cands > 0) /* qsort(NULL, 0, ...) is undefined */
		qsort(cands, n_cands, sizeof(*cands), cmp_cand);
	for (size_t i = 0; p->max_size && left > p->max_size && i < n_cands; i++) {
		left -= cands[i].b->size;
		collect(rep, cands[i].b, cands[i].used_us, "least recently used, over --max-size");
	}
}

int kiln_service_store_gc(struct kiln_service *s, const struct kiln_store_gc_policy *p,
                          struct kiln_store_gc_report *ret, struct kiln_error **err)
{
	_cleanup_refs_ struct refs refs = {0};
	_cleanup_blobs_ struct blobs blobs = {0};
	int rc = gather_refs(s, &refs, err);
	if (rc == 0)
		rc = kiln_cas_each(s->state_dir, blob_add, &blobs, err);
	if (rc < 0)
		return rc;
	if (blobs.n > 0)
		qsort(blobs.v, blobs.n, sizeof(*blobs.v), cmp_blob);
	struct kiln_store_gc_report rep = {.total = blobs.bytes};
	gc_select(p, &refs, &blobs, &rep);
	for (size_t i = 0; !p->dry_run && i < blobs.n; i++) {
		struct blob *b = &blobs.v[i];
		if (!b->gone)
			continue;
		if (b->temp) {
			(void)unlink(b->path);
			continue;
		}
		_cleanup_error_ struct kiln_error *e = NULL;
		rc = kiln_cas_remove(s->state_dir, b->hex, &e);
		if (rc < 0 && rc != -ENOENT) {
			kiln_store_gc_report_clear(&rep);
			return kiln_error_set(err, -rc, "%s", e->msg);
		}
		if (!refs_find(&refs, b->hex))
			continue;
		_cleanup_free_ char *why =
		    xasprintf("artifact sha256:%s was collected by kiln store gc", b->hex);
		int m = svc_store_mark(s, b->hex, why);
		if (m > 0)
			rep.builds_marked += (size_t)m;
		forget_entries(s, &refs, b->hex, &rep.entries_removed);
	}
	*ret = rep;
	return 0;
}

/* ---- pins ---------------------------------------------------------------------------- */

int kiln_service_pin(struct kiln_service *s, const char *id, bool pinned, struct kiln_error **err)
{
	if (!kiln_is_uuid(id))
		return kiln_error_set_kind(err, KILN_ERR_USER, ENOENT, "build %s: not found", id);
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db, "UPDATE builds SET pinned = $2 WHERE id = $1", &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, id);
		kiln_db_bind_int64(st, 2, pinned ? 1 : 0);
		r = kiln_db_step(st, err);
	}
	if (r >= 0 && kiln_db_changes(s->db) == 0)
		r = kiln_error_set_kind(err, KILN_ERR_USER, ENOENT, "build %s: not found", id);
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : 0;
}
