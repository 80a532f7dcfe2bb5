/* Templates (docs/templates.md): a tag NAME:TAG points at one completed
 * build of its owner; moving it records the move in template_tag_history;
 * a protected tag does not move. Owner-scoped like builds: another owner's
 * template and build are "not found". */
#include <string.h>

#include "service/internal.h"
#include "service/service.h"
#include "util/alloc.h"

/* Names and tags end up in URLs, CLI arguments and file names: a small
 * alphabet, no separators. */
static bool valid_label(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || (i > 0 && (c == '-' || c == '_' || c == '.'));
		if (!ok)
			return false;
	}
	return true;
}

static int tag_locked(struct kiln_service *s, const char *owner, const char *name, const char *tag,
                      const char *build_id, bool protect, struct kiln_template_tag *ret,
                      struct kiln_error **err)
{
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	int r = svc_get_locked(s, build_id, owner, &b, err);
	if (r < 0)
		return r;
	if (b->status != KILN_BUILD_COMPLETED)
		return kiln_error_set(err, EBUSY,
		                      "build %s is %s: only a completed build can be tagged",
		                      build_id, kiln_build_status_name(b->status));
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	r = kiln_db_prepare(s->db,
	                    "SELECT build_id, protected FROM template_tags "
	                    "WHERE owner = $1 AND name = $2 AND tag = $3",
	                    &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, owner);
	kiln_db_bind_text(st, 2, name);
	kiln_db_bind_text(st, 3, tag);
	r = kiln_db_step(st, err);
	if (r < 0)
		return r;
	bool exists = r == 1;
	_cleanup_free_ char *old = exists ? xstrdup(kiln_db_column_text(st, 0)) : NULL;
	bool was_protected = exists && kiln_db_column_int64(st, 1) != 0;
	kiln_db_stmt_done(TAKE_PTR(st));
	if (was_protected && strcmp(old, build_id) != 0)
		return kiln_error_set(err, EBUSY,
		                      "template %s:%s is protected: it stays at build %s", name,
		                      tag, old);
	int64_t now = kiln_now_us();
	if ((r = kiln_db_begin(s->db, err)) < 0)
		return r;
	r = kiln_db_prepare(s->db,
	                    "INSERT INTO template_tags (owner, name, tag, build_id, protected, "
	                    "updated_us) VALUES ($1, $2, $3, $4, $5, $6) "
	                    "ON CONFLICT (owner, name, tag) DO UPDATE SET build_id = $4, "
	                    "protected = $5, updated_us = $6",
	                    &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, owner);
		kiln_db_bind_text(st, 2, name);
		kiln_db_bind_text(st, 3, tag);
		kiln_db_bind_text(st, 4, build_id);
		kiln_db_bind_int64(st, 5, (protect || was_protected) ? 1 : 0);
		kiln_db_bind_int64(st, 6, now);
		r = kiln_db_step(st, err);
		kiln_db_stmt_done(TAKE_PTR(st));
	}
	if (r >= 0 && (!exists || strcmp(old, build_id) != 0)) {
		r = kiln_db_prepare(s->db,
		                    "INSERT INTO template_tag_history (owner, name, tag, build_id, "
		                    "tagged_us) VALUES ($1, $2, $3, $4, $5)",
		                    &st, err);
		if (r == 0) {
			kiln_db_bind_text(st, 1, owner);
			kiln_db_bind_text(st, 2, name);
			kiln_db_bind_text(st, 3, tag);
			kiln_db_bind_text(st, 4, build_id);
			kiln_db_bind_int64(st, 5, now);
			r = kiln_db_step(st, err);
			kiln_db_stmt_done(TAKE_PTR(st));
		}
	}
	if (r >= 0)
		r = kiln_db_commit(s->db, err);
	else
		kiln_db_rollback(s->db);
	if (r < 0)
		return r;
	*ret = (struct kiln_template_tag){
	    xstrdup(name), xstrdup(tag), "", (protect || was_protected), now, NULL, 0};
	snprintf(ret->build_id, sizeof(ret->build_id), "%s", build_id);
	return 0;
}

int kiln_service_tag(struct kiln_service *s, const char *owner, const char *name, const char *tag,
                     const char *build_id, bool protect, struct kiln_template_tag *ret,
                     struct kiln_error **err)
{
	if (!valid_label(name) || !valid_label(tag))
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                           "template %s:%s: a name and a tag are 1 to 128 of "
		                           "A-Z a-z 0-9 and, after the first, - _ .",
		                           name, tag);
	pthread_mutex_lock(&s->lock);
	int r = tag_locked(s, owner, name, tag, build_id, protect, ret, err);
	pthread_mutex_unlock(&s->lock);
	return r;
}

void kiln_template_tags_free(struct kiln_template_tag *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].name);
		free(v[i].tag);
		for (size_t k = 0; k < v[i].n_history; k++)
			free(v[i].history[k].build_id);
		free(v[i].history);
	}
	free(v);
}

static int history_locked(struct kiln_service *s, const char *owner, struct kiln_template_tag *t,
                          struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "SELECT build_id, tagged_us FROM template_tag_history "
	                        "WHERE owner = $1 AND name = $2 AND tag = $3 "
	                        "ORDER BY tagged_us DESC, build_id",
	                        &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, owner);
	kiln_db_bind_text(st, 2, t->name);
	kiln_db_bind_text(st, 3, t->tag);
	while ((r = kiln_db_step(st, err)) == 1) {
		t->history = xreallocarray(t->history, t->n_history + 1, sizeof(*t->history));
		t->history[t->n_history++] = (struct kiln_template_move){
		    xstrdup(kiln_db_column_text(st, 0)), kiln_db_column_int64(st, 1)};
	}
	return r < 0 ? r : 0;
}

int kiln_service_templates(struct kiln_service *s, const char *owner,
                           struct kiln_template_tag **ret, size_t *ret_n, struct kiln_error **err)
{
	*ret = NULL;
	*ret_n = 0;
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r =
	    kiln_db_prepare(s->db,
	                    "SELECT name, tag, build_id, protected, updated_us FROM template_tags "
	                    "WHERE owner = $1 ORDER BY name, tag",
	                    &st, err);
	struct kiln_template_tag *v = NULL;
	size_t n = 0;
	if (r == 0) {
		kiln_db_bind_text(st, 1, owner);
		while ((r = kiln_db_step(st, err)) == 1) {
			v = xreallocarray(v, n + 1, sizeof(*v));
			struct kiln_template_tag *t = &v[n++];
			*t = (struct kiln_template_tag){xstrdup(kiln_db_column_text(st, 0)),
			                                xstrdup(kiln_db_column_text(st, 1)),
			                                "",
			                                kiln_db_column_int64(st, 3) != 0,
			                                kiln_db_column_int64(st, 4),
			                                NULL,
			                                0};
			snprintf(t->build_id, sizeof(t->build_id), "%s",
			         kiln_db_column_text(st, 2));
		}
		kiln_db_stmt_done(TAKE_PTR(st));
	}
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = history_locked(s, owner, &v[i], err);
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		kiln_template_tags_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}
