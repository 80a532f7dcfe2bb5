/* Unit tests of service/ (store/ has tests/unit/test_store.c): the
 * service's schema, submit (validation,
 * queue, coalescing, cache), list and its cursor, owner isolation, cancel,
 * the queue's claim/finish without the pipeline, logs and subscribers,
 * tokens, crash recovery. Every test has its own state directory and a real
 * SQLite database; the services run without workers (config.no_workers) so
 * no build touches the pipeline — except crash recovery, which needs the
 * server mode and starts one idle worker with nothing to claim. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "service/internal.h"
#include "service/service.h"
#include "store/cas.h"
#include "store/db.h"
#include "util/alloc.h"
#include "util/fs.h"

static const char recipe_a[] = "{\"name\":\"a\",\"packages\":[],\"outputs\":[\"tar\"]}";

struct fx {
	char dir[64];
	struct kiln_service *s;
};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

static struct kiln_service *open_service(const char *dir, bool no_workers)
{
	struct kiln_service_config cfg = {.state_dir = dir, .workers = 1, .no_workers = no_workers};
	struct kiln_service *s = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int r = kiln_service_open(&cfg, &s, &err);
	if (r < 0)
		fail_msg("kiln_service_open: %s", err ? err->msg : "?");
	return s;
}

static int fx_setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kiln-test-service-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->s = open_service(f->dir, true);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	kiln_service_free(f->s);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct kiln_build_info *submit(struct kiln_service *s, const char *recipe, const char *owner,
                                      enum kiln_submit_outcome want)
{
	struct kiln_submit in = {recipe, strlen(recipe), NULL, owner};
	enum kiln_submit_outcome got;
	struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int r = kiln_service_submit(s, &in, &got, &b, &err);
	if (r < 0)
		fail_msg("submit: %s", err ? err->msg : "?");
	assert_int_equal(got, want);
	return b;
}

static char *recipe_named(const char *name)
{
	/* name is not part of the identity: a step makes the builds differ. */
	return xasprintf("{\"name\":\"%s\",\"steps\":[\"RUN echo %s\"],\"outputs\":[\"tar\"]}",
	                 name, name);
}

/* ---- db ------------------------------------------------------------------------ */

/* The database layer itself (migrations, placeholders, transactions) is
 * tests/unit/test_store.c's; here the service's schema on it. */
static void test_db_migrations(void **state)
{
	struct fx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_db *db = NULL;
	struct kiln_db_stmt *st = NULL;

	/* The service's own schema: versions 1 to N without a gap (N grows with
	 * every migration; 6 is backups'), and reopening applies nothing again. */
	_cleanup_free_ char *surl = xasprintf("%s/kiln.db", f->dir);
	int64_t first_count = 0;
	for (int round = 0; round < 2; round++) {
		kiln_service_free(f->s);
		f->s = open_service(f->dir, true);
		assert_int_equal(kiln_db_open(surl, &db, &err), 0);
		assert_int_equal(
		    kiln_db_prepare(db, "SELECT COUNT(*), MAX(version) FROM schema_version", &st,
		                    &err),
		    0);
		assert_int_equal(kiln_db_step(st, &err), 1);
		int64_t count = kiln_db_column_int64(st, 0);
		assert_true(count >= 6);
		assert_int_equal(kiln_db_column_int64(st, 1), count);
		if (round == 0)
			first_count = count;
		assert_int_equal(count, first_count);
		kiln_db_stmt_done(st);
		if (round == 0)
			db = kiln_db_close(db);
	}
	assert_int_equal(kiln_db_prepare(db, "PRAGMA journal_mode", &st, &err), 0);
	assert_int_equal(kiln_db_step(st, &err), 1);
	assert_string_equal(kiln_db_column_text(st, 0), "wal");
	kiln_db_stmt_done(st);
	kiln_db_close(db);
}

/* ---- submit ----------------------------------------------------------------------- */

static void test_submit_invalid(void **state)
{
	struct fx *f = *state;
	static const char bad[] = "{\"packages\":[1]}";
	struct kiln_submit in = {bad, strlen(bad), NULL, "alice"};
	struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_submit(f->s, &in, NULL, &b, &err), -EINVAL);
	assert_null(b);
	assert_non_null(err);
	assert_int_equal(err->code, EINVAL);
	assert_true(strncmp(err->msg, "packages[0]: ", 13) == 0);
	err = kiln_error_free(err);

	in = (struct kiln_submit){"{", 1, NULL, "alice"};
	assert_int_equal(kiln_service_submit(f->s, &in, NULL, &b, &err), -EINVAL);
	err = kiln_error_free(err);

	/* Nothing was recorded. */
	struct kiln_build_info **v = NULL;
	size_t n = 9;
	char *next = NULL;
	assert_int_equal(kiln_service_list(f->s, NULL, -1, NULL, 10, &v, &n, &next, &err), 0);
	assert_int_equal(n, 0);
	kiln_build_info_list_free(v, n);
}

static void test_submit_queue_and_coalesce(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	assert_int_equal(a->status, KILN_BUILD_PENDING);
	assert_true(kiln_is_uuid(a->id));
	assert_string_equal(a->owner, "alice");
	assert_string_equal(a->name, "a");
	assert_false(a->cached);
	assert_true(a->created_us > 0);
	assert_int_equal(a->started_us, 0);
	assert_int_equal(strlen(a->build_key), 64);
	assert_int_equal(strlen(a->config_hash), 64);

	/* Identical, same owner, while pending: the same build. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_COALESCED);
	assert_string_equal(b->id, a->id);
	/* Formatting does not matter: the identity is the normalized recipe. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *c = submit(
	    f->s, "{ \"outputs\": [\"tar\"], \"name\": \"a\" }", "alice", KILN_SUBMIT_COALESCED);
	assert_string_equal(c->id, a->id);
	/* Another owner gets a build of their own. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *d =
	    submit(f->s, recipe_a, "bob", KILN_SUBMIT_QUEUED);
	assert_string_not_equal(d->id, a->id);
	assert_string_equal(d->build_key, a->build_key);

	/* Still coalesced while building. */
	char id[KILN_BUILD_ID_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	assert_string_equal(id, a->id); /* oldest first */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *e =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_COALESCED);
	assert_string_equal(e->id, a->id);
	assert_int_equal(e->status, KILN_BUILD_BUILDING);
	assert_true(e->started_us >= e->created_us);
}

/* The final update is fenced on the claim, not only on the process: a
 * stale slot of this process (its build reaped and claimed again by
 * another slot here, same worker id, attempts + 1) must not write the new
 * claim's outcome (issue 11 review, item 5). */
static void test_fence_is_per_claim(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a = submit(
	    f->s, "{ \"outputs\": [\"tar\"], \"name\": \"fenced\" }", "alice", KILN_SUBMIT_QUEUED);
	char id[KILN_BUILD_ID_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	assert_string_equal(id, a->id);
	{
		_cleanup_free_ char *url = xasprintf("sqlite:%s/kiln.db", f->dir);
		_cleanup_(kiln_db_closep) struct kiln_db *db = NULL;
		assert_int_equal(kiln_db_open(url, &db, &err), 0);
		_cleanup_free_ char *sql =
		    xasprintf("UPDATE builds SET attempts = attempts + 1 WHERE id = '%s'", id);
		assert_int_equal(kiln_db_exec(db, sql, &err), 0);
	}
	assert_int_equal(kiln_service_test_finish(f->s, id, 0, NULL, NULL, 0, &err), 0);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *x = NULL;
	assert_int_equal(kiln_service_get(f->s, id, NULL, &x, &err), 0);
	assert_int_equal(x->status, KILN_BUILD_BUILDING);
}

static void test_submit_context(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *bad = xasprintf("%s/ctx.txt", f->dir);
	_cleanup_free_ char *tar = xasprintf("%s/ctx.tar", f->dir);
	static const char text[] = "just some text, not an archive\n";
	char hdr[1536] = {0};
	memcpy(hdr, "hello.txt", 9);
	memcpy(hdr + 257, "ustar", 6);
	FILE *fp = fopen(bad, "w");
	fwrite(text, 1, sizeof(text) - 1, fp);
	fclose(fp);
	fp = fopen(tar, "w");
	fwrite(hdr, 1, sizeof(hdr), fp);
	fclose(fp);

	struct kiln_submit in = {recipe_a, strlen(recipe_a), bad, "alice"};
	struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_submit(f->s, &in, NULL, &b, &err), -EPROTO);
	assert_int_equal(err->code, EPROTO);
	err = kiln_error_free(err);

	in.context_path = tar;
	enum kiln_submit_outcome o;
	assert_int_equal(kiln_service_submit(f->s, &in, &o, &b, &err), 0);
	assert_int_equal(o, KILN_SUBMIT_QUEUED);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *plain =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	/* The context is part of the build key. */
	assert_string_not_equal(b->build_key, plain->build_key);
	assert_string_equal(b->config_hash, plain->config_hash);
	char hex[KILN_SHA256_HEX_LEN + 1];
	assert_int_equal(kiln_sha256_file(tar, hex, NULL), 0);
	assert_true(kiln_cas_has(f->dir, hex));
	kiln_build_info_free(b);
}

static void *submit_many(void *arg)
{
	struct kiln_service *s = arg;
	for (int i = 0; i < 20; i++) {
		struct kiln_submit in = {recipe_a, strlen(recipe_a), NULL, "alice"};
		struct kiln_build_info *b = NULL;
		if (kiln_service_submit(s, &in, NULL, &b, NULL) < 0)
			return NULL;
		char *id = xstrdup(b->id);
		kiln_build_info_free(b);
		if (i < 19)
			free(id);
		else
			return id;
	}
	return NULL;
}

static void test_submit_concurrent_coalesce(void **state)
{
	struct fx *f = *state;
	pthread_t t[8];
	char *ids[8];
	for (size_t i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&t[i], NULL, submit_many, f->s), 0);
	for (size_t i = 0; i < 8; i++) {
		pthread_join(t[i], (void **)&ids[i]);
		assert_non_null(ids[i]);
	}
	for (size_t i = 1; i < 8; i++)
		assert_string_equal(ids[i], ids[0]);
	for (size_t i = 0; i < 8; i++)
		free(ids[i]);
	struct kiln_build_info **v = NULL;
	size_t n = 0;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_list(f->s, NULL, -1, NULL, 100, &v, &n, NULL, &err), 0);
	assert_int_equal(n, 1);
	kiln_build_info_list_free(v, n);
}

/* ---- list, owners ------------------------------------------------------------------- */

static void test_list_pagination(void **state)
{
	struct fx *f = *state;
	char ids[7][KILN_BUILD_ID_LEN + 1];
	for (int i = 0; i < 7; i++) {
		_cleanup_free_ char *r2 =
		    xasprintf("{\"name\":\"b\",\"steps\":[\"RUN echo %d\"]}", i);
		struct kiln_build_info *b = submit(f->s, r2, "alice", KILN_SUBMIT_QUEUED);
		memcpy(ids[i], b->id, sizeof(ids[i]));
		kiln_build_info_free(b);
	}
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *other =
	    submit(f->s, recipe_a, "bob", KILN_SUBMIT_QUEUED);
	_cleanup_error_ struct kiln_error *err = NULL;
	/* Cancel two to have a second status. */
	struct kiln_build_info *c = NULL;
	assert_int_equal(kiln_service_cancel(f->s, ids[1], "alice", &c, &err), 0);
	kiln_build_info_free(c);
	assert_int_equal(kiln_service_cancel(f->s, ids[4], "alice", &c, &err), 0);
	kiln_build_info_free(c);

	/* Pages of 3, newest first, no duplicates, nothing of bob's. */
	char *cursor = NULL;
	int seen = 0;
	for (int page = 0; page < 4; page++) {
		struct kiln_build_info **v = NULL;
		size_t n = 0;
		char *next = NULL;
		assert_int_equal(
		    kiln_service_list(f->s, "alice", -1, cursor, 3, &v, &n, &next, &err), 0);
		for (size_t i = 0; i < n; i++) {
			assert_string_equal(v[i]->id, ids[6 - seen]);
			seen++;
		}
		kiln_build_info_list_free(v, n);
		free(cursor);
		cursor = next;
		if (!next)
			break;
		assert_int_equal(n, 3);
	}
	assert_int_equal(seen, 7);
	assert_null(cursor);

	/* Status filter. */
	struct kiln_build_info **v = NULL;
	size_t n = 0;
	char *next = NULL;
	assert_int_equal(
	    kiln_service_list(f->s, "alice", KILN_BUILD_CANCELLED, NULL, 10, &v, &n, &next, &err),
	    0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0]->id, ids[4]);
	assert_string_equal(v[1]->id, ids[1]);
	assert_null(next);
	kiln_build_info_list_free(v, n);
	/* Any owner (admin). */
	assert_int_equal(
	    kiln_service_list(f->s, NULL, KILN_BUILD_PENDING, NULL, 100, &v, &n, &next, &err), 0);
	assert_int_equal(n, 6);
	assert_string_equal(v[0]->id, other->id);
	kiln_build_info_list_free(v, n);

	/* Bad arguments. */
	assert_int_equal(kiln_service_list(f->s, NULL, -1, "garbage", 10, &v, &n, &next, &err),
	                 -EINVAL);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_list(f->s, NULL, -1, NULL, 0, &v, &n, &next, &err), -EINVAL);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_list(f->s, NULL, -1, NULL, 101, &v, &n, &next, &err),
	                 -EINVAL);
}

static void test_owner_isolation(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_get(f->s, a->id, "mallory", &b, &err), -ENOENT);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_cancel(f->s, a->id, "mallory", &b, &err), -ENOENT);
	err = kiln_error_free(err);
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool done;
	assert_int_equal(
	    kiln_service_log_read(f->s, a->id, "mallory", 0, 0, &lines, &n, &done, &err), -ENOENT);
	err = kiln_error_free(err);
	struct kiln_log_sub *sub = NULL;
	assert_int_equal(kiln_service_log_subscribe(f->s, a->id, "mallory", NULL, NULL, &sub, &err),
	                 -ENOENT);
	err = kiln_error_free(err);
	struct kiln_build_info **v = NULL;
	assert_int_equal(kiln_service_list(f->s, "mallory", -1, NULL, 10, &v, &n, NULL, &err), 0);
	assert_int_equal(n, 0);
	free(v);
	/* The owner and the admin see it; a made-up id is not found. */
	assert_int_equal(kiln_service_get(f->s, a->id, "alice", &b, &err), 0);
	b = kiln_build_info_free(b);
	assert_int_equal(kiln_service_get(f->s, a->id, NULL, &b, &err), 0);
	b = kiln_build_info_free(b);
	assert_int_equal(
	    kiln_service_get(f->s, "00000000-0000-4000-8000-000000000000", NULL, &b, &err),
	    -ENOENT);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_get(f->s, "../../etc/passwd", NULL, &b, &err), -ENOENT);
}

/* ---- queue, cancel, cache -------------------------------------------------------------- */

static void test_cancel_pending(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *c = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_cancel(f->s, a->id, "alice", &c, &err), 0);
	assert_int_equal(c->status, KILN_BUILD_CANCELLED);
	assert_true(c->completed_us > 0);
	assert_non_null(c->error);
	/* It never runs: nothing to claim. */
	char id[KILN_BUILD_ID_LEN + 1];
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 0);
	/* Finished: a second cancel is refused. */
	struct kiln_build_info *x = NULL;
	assert_int_equal(kiln_service_cancel(f->s, a->id, "alice", &x, &err), -EBUSY);
	assert_null(x);
	err = kiln_error_free(err);
	/* The log says so and is done. */
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool done = false;
	assert_int_equal(kiln_service_log_read(f->s, a->id, "alice", 0, 0, &lines, &n, &done, &err),
	                 0);
	assert_int_equal(n, 1);
	assert_int_equal(lines[0].seq, 1);
	assert_string_equal(lines[0].text, "==> cancelled before it started");
	assert_true(done);
	kiln_log_lines_free(lines, n);
	/* A new identical submit is not coalesced with the cancelled one. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *again =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	assert_string_not_equal(again->id, a->id);
}

static void put_blob(const char *dir, const char *name, const char *content,
                     struct kiln_build_artifact *a)
{
	_cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(content, fp);
	fclose(fp);
	_cleanup_error_ struct kiln_error *err = NULL;
	a->name = (char *)name;
	assert_int_equal(kiln_cas_put_file(dir, p, NULL, a->sha256, &a->size, &err), 0);
}

static void test_queue_complete_and_cache(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *r1 = recipe_named("one");
	_cleanup_free_ char *r2 = recipe_named("two");
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, r1, "alice", KILN_SUBMIT_QUEUED);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b =
	    submit(f->s, r2, "alice", KILN_SUBMIT_QUEUED);
	char id[KILN_BUILD_ID_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	assert_string_equal(id, a->id);

	struct kiln_build_artifact arts[2];
	put_blob(f->dir, "rootfs.tar.gz", "not really a tarball", &arts[0]);
	put_blob(f->dir, "manifest.json", "{}", &arts[1]);
	assert_int_equal(kiln_service_test_finish(f->s, a->id, 0, NULL, arts, 2, &err), 0);

	_cleanup_(kiln_build_info_freep) struct kiln_build_info *done = NULL;
	assert_int_equal(kiln_service_get(f->s, a->id, "alice", &done, &err), 0);
	assert_int_equal(done->status, KILN_BUILD_COMPLETED);
	assert_false(done->cached);
	assert_int_equal(done->n_artifacts, 2);
	assert_string_equal(done->artifacts[0].name, "manifest.json"); /* sorted by name */
	assert_string_equal(done->artifacts[1].name, "rootfs.tar.gz");
	assert_string_equal(done->artifacts[1].sha256, arts[0].sha256);
	assert_int_equal(done->artifacts[1].size, 20);
	assert_null(done->error);

	/* The same recipe from another owner: a build of their own, never
	 * alice's bytes (the cache is per owner). */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *bobs =
	    submit(f->s, r1, "bob", KILN_SUBMIT_QUEUED);
	assert_false(bobs->cached);
	assert_int_equal(bobs->n_artifacts, 0);
	struct kiln_build_info *bc = NULL;
	assert_int_equal(kiln_service_cancel(f->s, bobs->id, "bob", &bc, &err), 0);
	kiln_build_info_free(bc);

	/* The same recipe again from its owner: answered from the cache. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *hit =
	    submit(f->s, r1, "alice", KILN_SUBMIT_CACHED);
	assert_string_not_equal(hit->id, a->id);
	assert_string_equal(hit->owner, "alice");
	assert_int_equal(hit->status, KILN_BUILD_COMPLETED);
	assert_true(hit->cached);
	assert_int_equal(hit->n_artifacts, 2);
	assert_string_equal(hit->artifacts[1].sha256, arts[0].sha256);
	assert_true(hit->completed_us > 0);

	/* Artifacts resolve to CAS paths, for the owner only. */
	char *path = NULL;
	struct kiln_build_artifact info;
	assert_int_equal(
	    kiln_service_artifact(f->s, hit->id, "alice", "rootfs.tar.gz", &path, &info, &err), 0);
	_cleanup_free_ char *want = kiln_cas_path(f->dir, arts[0].sha256);
	assert_string_equal(path, want);
	assert_int_equal(info.size, 20);
	free(info.name);
	free(path);
	assert_int_equal(
	    kiln_service_artifact(f->s, hit->id, "bob", "rootfs.tar.gz", &path, NULL, &err),
	    -ENOENT);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_artifact(f->s, hit->id, "alice", "nope", &path, NULL, &err),
	                 -ENOENT);
	err = kiln_error_free(err);

	/* Cancel of a finished build: -EBUSY. */
	struct kiln_build_info *x = NULL;
	assert_int_equal(kiln_service_cancel(f->s, a->id, NULL, &x, &err), -EBUSY);
	err = kiln_error_free(err);

	/* A queued build whose key completed meanwhile: a submit of r2 while
	 * pending coalesces; after completion of the first, cached. */
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	assert_string_equal(id, b->id);
	assert_int_equal(kiln_service_test_finish(f->s, b->id, -ETIME,
	                                          "Build timed out after 5 seconds", NULL, 0, &err),
	                 0);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *failed = NULL;
	assert_int_equal(kiln_service_get(f->s, b->id, NULL, &failed, &err), 0);
	assert_int_equal(failed->status, KILN_BUILD_FAILED);
	assert_string_equal(failed->error, "Build timed out after 5 seconds");
	/* A failed build is not a cache entry. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *retry =
	    submit(f->s, r2, "alice", KILN_SUBMIT_QUEUED);
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	assert_string_equal(id, retry->id);
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 0);

	/* The log of the failed build ends with the reason, and is done. */
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool fin = false;
	assert_int_equal(kiln_service_log_read(f->s, b->id, NULL, 0, 0, &lines, &n, &fin, &err), 0);
	assert_true(n >= 1);
	assert_string_equal(lines[n - 1].text, "==> failed: Build timed out after 5 seconds");
	assert_true(fin);
	kiln_log_lines_free(lines, n);
}

/* --shared-cache: another owner's completed build answers, and the answer
 * never names it in the log (the API's JSON: tests/api/test_cache_scope.py);
 * coalescing stays per owner. */
static void test_shared_cache(void **state)
{
	struct fx *f = *state;
	kiln_service_free(f->s);
	struct kiln_service_config cfg = {
	    .state_dir = f->dir, .no_workers = true, .shared_cache = true};
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_open(&cfg, &f->s, &err), 0);

	_cleanup_free_ char *r1 = recipe_named("shared");
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, r1, "alice", KILN_SUBMIT_QUEUED);
	/* In flight: bob is not handed alice's build. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b =
	    submit(f->s, r1, "bob", KILN_SUBMIT_QUEUED);
	assert_string_not_equal(a->id, b->id);
	char id[KILN_BUILD_ID_LEN + 1];
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	assert_string_equal(id, a->id);
	struct kiln_build_artifact arts[1];
	put_blob(f->dir, "rootfs.tar.gz", "shared bytes", &arts[0]);
	assert_int_equal(kiln_service_test_finish(f->s, a->id, 0, NULL, arts, 1, &err), 0);

	_cleanup_(kiln_build_info_freep) struct kiln_build_info *hit =
	    submit(f->s, r1, "carol", KILN_SUBMIT_CACHED);
	assert_true(hit->cached);
	assert_string_equal(hit->owner, "carol");
	assert_string_equal(hit->artifacts[0].sha256, arts[0].sha256);
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool fin = false;
	assert_int_equal(kiln_service_log_read(f->s, hit->id, NULL, 0, 0, &lines, &n, &fin, &err),
	                 0);
	assert_int_equal(n, 1);
	assert_non_null(strstr(lines[0].text, "shared build cache"));
	assert_null(strstr(lines[0].text, a->id));
	kiln_log_lines_free(lines, n);
	/* alice's own hit may name her build. */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *own =
	    submit(f->s, r1, "alice", KILN_SUBMIT_CACHED);
	assert_int_equal(kiln_service_log_read(f->s, own->id, NULL, 0, 0, &lines, &n, &fin, &err),
	                 0);
	assert_non_null(strstr(lines[0].text, a->id));
	kiln_log_lines_free(lines, n);
	(void)b;
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Issue 15: a cache hit leaves a row and no log file (its one line is made
 * when read), and a stream of hits never runs the WAL past the background
 * checkpointer: the WAL stays small while the hits arrive and is emptied
 * (TRUNCATE) once they stop. Without the checkpointer, the automatic one
 * would leave a WAL of up to 1,000 pages that is never truncated; with the
 * automatic checkpoint off and nothing else, it would grow by every hit. */
static void test_cache_hit_state(void **state)
{
	struct fx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_free_ char *r1 = recipe_named("hits");
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, r1, "alice", KILN_SUBMIT_QUEUED);
	char id[KILN_BUILD_ID_LEN + 1];
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	struct kiln_build_artifact arts[2];
	put_blob(f->dir, "rootfs.tar.gz", "hit bytes", &arts[0]);
	put_blob(f->dir, "manifest.json", "{}", &arts[1]);
	assert_int_equal(kiln_service_test_finish(f->s, a->id, 0, NULL, arts, 2, &err), 0);

	_cleanup_free_ char *wal = xasprintf("%s/kiln.db-wal", f->dir);
	off_t wal_max = 0;
	char last[KILN_BUILD_ID_LEN + 1] = "";
	for (int i = 0; i < 600; i++) {
		struct kiln_build_info *hit = submit(f->s, r1, "alice", KILN_SUBMIT_CACHED);
		assert_true(hit->cached);
		assert_int_equal(hit->n_artifacts, 2);
		snprintf(last, sizeof(last), "%s", hit->id);
		kiln_build_info_free(hit);
		off_t w = file_size(wal);
		if (w > wal_max)
			wal_max = w;
	}
	/* 600 hits write ~60 MiB of WAL frames; the checkpointer restarts the
	 * WAL once it passes 16 MiB, and past 32 MiB the next transaction
	 * waits for that (db_sqlite.c, CKPT_FORCE_PAGES): 32 MiB and one
	 * transaction at most. */
	assert_true(wal_max < (off_t)33 << 20);

	_cleanup_free_ char *log = xasprintf("%s/logs/%s.log", f->dir, last);
	assert_int_equal(access(log, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool fin = false;
	assert_int_equal(kiln_service_log_read(f->s, last, "alice", 0, 0, &lines, &n, &fin, &err),
	                 0);
	assert_int_equal(n, 1);
	assert_int_equal(lines[0].seq, 1);
	assert_non_null(strstr(lines[0].text, "==> cached: build key"));
	assert_non_null(strstr(lines[0].text, a->id));
	assert_true(fin);
	kiln_log_lines_free(lines, n);
	/* After the one line: nothing more, and done. */
	assert_int_equal(kiln_service_log_read(f->s, last, "alice", 1, 0, &lines, &n, &fin, &err),
	                 0);
	assert_int_equal(n, 0);
	assert_true(fin);
	kiln_log_lines_free(lines, n);
	/* Not bob's to read. */
	assert_int_equal(kiln_service_log_read(f->s, last, "bob", 0, 0, &lines, &n, &fin, &err),
	                 -ENOENT);
	err = kiln_error_free(err);

	/* Idle: the checkpointer empties the WAL (a generous deadline for a
	 * loaded machine; the check is that it happens, not how fast). */
	for (int i = 0; i < 600 && file_size(wal) != 0; i++)
		usleep(100 * 1000);
	assert_int_equal(file_size(wal), 0);
}

struct get_arg {
	struct kiln_service *s;
	const char *id;
	int r;
	enum kiln_build_status status;
};

static void *get_thread(void *ud)
{
	struct get_arg *g = ud;
	struct kiln_build_info *b = NULL;
	g->r = kiln_service_get(g->s, g->id, "alice", &b, NULL);
	if (b)
		g->status = b->status;
	kiln_build_info_free(b);
	return NULL;
}

/* Issue 15: a read never waits for s->lock (the writer's): it runs on the
 * thread's own read connection. Held by this thread, a read in another
 * thread still answers (before, it would wait here for ever: the test
 * runner's timeout fails it). */
static void test_read_without_writer_lock(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	struct get_arg g = {f->s, a->id, 1, KILN_BUILD_FAILED};
	pthread_mutex_lock(&f->s->lock);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, get_thread, &g), 0);
	pthread_join(t, NULL);
	pthread_mutex_unlock(&f->s->lock);
	assert_int_equal(g.r, 0);
	assert_int_equal(g.status, KILN_BUILD_PENDING);
	/* and it sees what commits after its connection was opened */
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_build_info *c = NULL;
	assert_int_equal(kiln_service_cancel(f->s, a->id, "alice", &c, &err), 0);
	kiln_build_info_free(c);
	g.r = 1;
	pthread_mutex_lock(&f->s->lock);
	assert_int_equal(pthread_create(&t, NULL, get_thread, &g), 0);
	pthread_join(t, NULL);
	pthread_mutex_unlock(&f->s->lock);
	assert_int_equal(g.r, 0);
	assert_int_equal(g.status, KILN_BUILD_CANCELLED);
}

static void test_cancel_building(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	char id[KILN_BUILD_ID_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	int fd = kiln_service_test_cancel_fd(f->s, id);
	assert_true(fd >= 0);
	struct pollfd p = {fd, POLLIN, 0};
	assert_int_equal(poll(&p, 1, 0), 0); /* not cancelled yet */

	_cleanup_(kiln_build_info_freep) struct kiln_build_info *c = NULL;
	assert_int_equal(kiln_service_cancel(f->s, a->id, "alice", &c, &err), 0);
	/* The worker's sandbox sees the pipe readable at once... */
	assert_int_equal(poll(&p, 1, 0), 1);
	assert_int_equal(c->status, KILN_BUILD_BUILDING);
	/* ... and the pipeline returns -ECANCELED: the build ends cancelled. */
	assert_int_equal(
	    kiln_service_test_finish(f->s, id, -ECANCELED, "build cancelled", NULL, 0, &err), 0);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *d = NULL;
	assert_int_equal(kiln_service_get(f->s, a->id, NULL, &d, &err), 0);
	assert_int_equal(d->status, KILN_BUILD_CANCELLED);
	assert_int_equal(kiln_service_test_cancel_fd(f->s, id), -1);
}

/* ---- logs ------------------------------------------------------------------------ */

static void count_notify(void *ud)
{
	(*(int *)ud)++;
}

static void test_logs(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	char id[KILN_BUILD_ID_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);

	int calls = 0;
	struct kiln_log_sub *sub = NULL;
	assert_int_equal(
	    kiln_service_log_subscribe(f->s, id, "alice", count_notify, &calls, &sub, &err), 0);

	struct log_writer w;
	assert_int_equal(svc_log_writer_open(&w, f->s, id), 0);
	/* Chunks split anywhere; a partial line is not a line yet. */
	svc_log_writer_write(&w, "==> [1/3] fet", 13);
	assert_int_equal(calls, 0);
	svc_log_writer_write(&w, "ch\nline 2\nnul\0byte\npart", 23);
	assert_int_equal(calls, 1);
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool done = true;
	assert_int_equal(kiln_service_log_read(f->s, id, "alice", 0, 0, &lines, &n, &done, &err),
	                 0);
	assert_int_equal(n, 3);
	assert_string_equal(lines[0].text, "==> [1/3] fetch");
	assert_string_equal(lines[1].text, "line 2");
	assert_string_equal(lines[2].text, "nul?byte");
	assert_int_equal(lines[2].seq, 3);
	assert_false(done); /* still building */
	kiln_log_lines_free(lines, n);

	/* Enough lines to cross several index checkpoints, and a long line. */
	svc_log_writer_write(&w, "ial\n", 4);
	for (int i = 5; i <= 1000; i++) {
		char line[32];
		int len = snprintf(line, sizeof(line), "line %d\n", i);
		svc_log_writer_write(&w, line, (size_t)len);
	}
	size_t big = KILN_LOG_LINE_MAX + 10;
	char *long_line = xmalloc(big + 1);
	memset(long_line, 'x', big);
	long_line[big] = '\n';
	svc_log_writer_write(&w, long_line, big + 1);
	free(long_line);

	/* Read in the middle, several times (the index is reused). */
	for (int round = 0; round < 2; round++) {
		assert_int_equal(
		    kiln_service_log_read(f->s, id, "alice", 600, 3, &lines, &n, &done, &err), 0);
		assert_int_equal(n, 3);
		assert_int_equal(lines[0].seq, 601);
		assert_string_equal(lines[0].text, "line 601");
		assert_string_equal(lines[2].text, "line 603");
		kiln_log_lines_free(lines, n);
	}
	assert_int_equal(kiln_service_log_read(f->s, id, "alice", 256, 1, &lines, &n, &done, &err),
	                 0);
	assert_string_equal(lines[0].text, "line 257");
	kiln_log_lines_free(lines, n);
	assert_int_equal(kiln_service_log_read(f->s, id, "alice", 999, 0, &lines, &n, &done, &err),
	                 0);
	assert_int_equal(n, 3); /* line 1000 and the long line in two pieces */
	assert_string_equal(lines[0].text, "line 1000");
	assert_int_equal(strlen(lines[1].text), KILN_LOG_LINE_MAX);
	assert_string_equal(lines[2].text, "xxxxxxxxxx");
	assert_int_equal(lines[2].seq, 1002);
	kiln_log_lines_free(lines, n);
	/* A byte budget stops at the line that crosses it (returned whole). */
	assert_int_equal(
	    kiln_service_log_read_bounded(f->s, id, "alice", 998, 0, 10, &lines, &n, &done, &err),
	    0);
	assert_int_equal(n, 2); /* "line 999" (8 bytes), "line 1000" crosses 10 */
	assert_string_equal(lines[1].text, "line 1000");
	kiln_log_lines_free(lines, n);
	assert_int_equal(
	    kiln_service_log_read_bounded(f->s, id, "alice", 1000, 0, 1, &lines, &n, &done, &err),
	    0);
	assert_int_equal(n, 1);
	assert_int_equal(strlen(lines[0].text), KILN_LOG_LINE_MAX);
	assert_false(done);
	kiln_log_lines_free(lines, n);
	assert_int_equal(kiln_service_log_read(f->s, id, "alice", 5000, 0, &lines, &n, &done, &err),
	                 0);
	assert_int_equal(n, 0);
	assert_false(done);
	free(lines);

	/* Finishing appends the final line, notifies, and makes the log done. */
	int before = calls;
	assert_int_equal(kiln_service_test_finish(f->s, id, -EIO,
	                                          "step 1 (RUN false): exited with "
	                                          "status 1",
	                                          NULL, 0, &err),
	                 0);
	assert_true(calls > before);
	svc_log_writer_close(&w);
	assert_int_equal(kiln_service_log_read(f->s, id, "alice", 1002, 0, &lines, &n, &done, &err),
	                 0);
	assert_int_equal(n, 1);
	assert_string_equal(lines[0].text, "==> failed: step 1 (RUN false): exited with status 1");
	assert_true(done);
	kiln_log_lines_free(lines, n);
	/* Not done when lines remain past max_lines. */
	assert_int_equal(kiln_service_log_read(f->s, id, "alice", 0, 10, &lines, &n, &done, &err),
	                 0);
	assert_int_equal(n, 10);
	assert_false(done);
	kiln_log_lines_free(lines, n);

	/* After unsubscribe, no more calls. */
	kiln_service_log_unsubscribe(f->s, sub);
	before = calls;
	svc_log_append(f->s, id, "late\n", 5);
	svc_log_notify(f->s, id);
	assert_int_equal(calls, before);
	(void)a;
}

/* ---- status names (the build's JSON is http/'s: tests/unit/test_http.c) ---------- */

static void test_status_names(void **state)
{
	(void)state;
	assert_int_equal(kiln_build_status_parse("cancelled"), KILN_BUILD_CANCELLED);
	assert_int_equal(kiln_build_status_parse("done"), -1);
	assert_string_equal(kiln_build_status_name(KILN_BUILD_BUILDING), "building");
}

/* ---- tokens ------------------------------------------------------------------------- */

static bool file_contains(const char *path, const char *needle)
{
	char *data = NULL;
	size_t len = 0;
	if (kiln_read_file(path, 1 << 26, &data, &len, NULL) < 0)
		return false;
	bool found = memmem(data, len, needle, strlen(needle)) != NULL;
	free(data);
	return found;
}

static void test_tokens(void **state)
{
	struct fx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_free_ char *secret = NULL;
	struct kiln_token_info t;
	assert_int_equal(kiln_service_token_create(f->s, "alice", "laptop", &secret, &t, &err), 0);
	assert_int_equal(strlen(secret), 48);
	assert_true(strncmp(secret, "kiln_", 5) == 0);
	assert_true(kiln_is_uuid(t.id));
	assert_string_equal(t.owner, "alice");
	assert_int_equal(t.last_used_us, 0);
	_cleanup_free_ char *secret2 = NULL;
	struct kiln_token_info t2;
	assert_int_equal(kiln_service_token_create(f->s, "bob", NULL, &secret2, &t2, &err), 0);
	assert_string_not_equal(secret, secret2);

	char *owner = NULL;
	assert_int_equal(kiln_service_token_check(f->s, secret, &owner, &err), 0);
	assert_string_equal(owner, "alice");
	free(owner);
	assert_int_equal(kiln_service_token_check(f->s, secret2, &owner, &err), 0);
	assert_string_equal(owner, "bob");
	free(owner);

	/* Wrong, malformed, one character off. */
	_cleanup_free_ char *off = xstrdup(secret);
	off[47] = off[47] == 'A' ? 'B' : 'A';
	const char *bad[] = {off, "kiln_", "", "Bearer x", secret + 1};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(kiln_service_token_check(f->s, bad[i], &owner, &err), -EACCES);
		err = kiln_error_free(err);
	}

	struct kiln_token_info *v = NULL;
	size_t n = 0;
	assert_int_equal(kiln_service_token_list(f->s, &v, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].id, t.id);
	assert_string_equal(v[0].name, "laptop");
	assert_true(v[0].last_used_us >= v[0].created_us); /* check updated it */
	assert_false(v[0].revoked);
	for (size_t i = 0; i < n; i++)
		kiln_token_info_clear(&v[i]);
	free(v);

	/* The database holds only the digest. */
	_cleanup_free_ char *db = xasprintf("%s/kiln.db", f->dir);
	_cleanup_free_ char *wal = xasprintf("%s/kiln.db-wal", f->dir);
	char digest[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex(secret, strlen(secret), digest);
	assert_true(file_contains(db, digest) || file_contains(wal, digest));
	assert_false(file_contains(db, secret + 5));
	assert_false(file_contains(wal, secret + 5));

	/* Revoked: refused; unknown id: -ENOENT. */
	assert_int_equal(kiln_service_token_revoke(f->s, t.id, &err), 0);
	assert_int_equal(kiln_service_token_check(f->s, secret, &owner, &err), -EACCES);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_token_check(f->s, secret2, &owner, &err), 0);
	free(owner);
	assert_int_equal(
	    kiln_service_token_revoke(f->s, "00000000-0000-4000-8000-000000000000", &err), -ENOENT);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_token_create(f->s, "", "x", &secret2, NULL, &err), -EINVAL);
	kiln_token_info_clear(&t);
	kiln_token_info_clear(&t2);
}

/* ---- crash recovery ---------------------------------------------------------------- */

static void test_sessions(void **state)
{
	struct fx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_free_ char *tok = NULL, *tok2 = NULL;
	struct kiln_token_info ti = {0}, ti2 = {0};
	assert_int_equal(kiln_service_token_create(f->s, "alice", "web", &tok, &ti, &err), 0);
	assert_int_equal(kiln_service_token_create(f->s, "bob", "web", &tok2, &ti2, &err), 0);

	/* A bad token opens nothing. */
	_cleanup_free_ char *id = NULL, *id2 = NULL, *id3 = NULL;
	struct kiln_session_info si = {0}, si2 = {0}, chk = {0};
	assert_int_equal(kiln_service_session_create(f->s, "kiln_nope", 0, &id, &si, &err),
	                 -EACCES);
	err = kiln_error_free(err);
	assert_null(id);

	assert_int_equal(kiln_service_session_create(f->s, tok, 0, &id, &si, &err), 0);
	assert_int_equal(strlen(id), KILN_SESSION_ID_LEN);
	assert_string_equal(si.owner, "alice");
	/* Default lifetime: 12 hours. */
	assert_true(si.expires_us - si.created_us == (int64_t)12 * 3600 * 1000000);
	assert_int_equal(strlen(si.csrf_token), KILN_CSRF_TOKEN_LEN);
	assert_int_equal(kiln_service_session_create(f->s, tok2, 60, &id2, &si2, &err), 0);
	assert_string_equal(si2.owner, "bob");
	assert_string_not_equal(id, id2);
	assert_string_not_equal(si.csrf_token, si2.csrf_token);

	/* The CSRF token is bound to its session. */
	assert_true(kiln_service_session_csrf_ok(f->s, id, si.csrf_token));
	assert_false(kiln_service_session_csrf_ok(f->s, id, si2.csrf_token));
	assert_false(kiln_service_session_csrf_ok(f->s, id2, si.csrf_token));
	assert_false(kiln_service_session_csrf_ok(f->s, id, ""));
	assert_false(kiln_service_session_csrf_ok(f->s, id, NULL));

	assert_int_equal(kiln_service_session_check(f->s, id, &chk, &err), 0);
	assert_string_equal(chk.owner, "alice");
	assert_string_equal(chk.csrf_token, si.csrf_token);
	kiln_session_info_clear(&chk);

	/* Only the hash is stored. */
	_cleanup_free_ char *dbp = xasprintf("%s/kiln.db", f->dir);
	kiln_service_free(f->s);
	assert_false(file_contains(dbp, id));
	/* The CSRF key persists: tokens stay valid across a restart. */
	f->s = open_service(f->dir, true);
	assert_true(kiln_service_session_csrf_ok(f->s, id, si.csrf_token));
	assert_int_equal(kiln_service_session_check(f->s, id, &chk, &err), 0);
	kiln_session_info_clear(&chk);

	/* Sign-out ends it; a second sign-out finds nothing. */
	assert_int_equal(kiln_service_session_revoke(f->s, id, &err), 0);
	assert_int_equal(kiln_service_session_check(f->s, id, &chk, &err), -EACCES);
	err = kiln_error_free(err);
	assert_int_equal(kiln_service_session_revoke(f->s, id, &err), -EACCES);
	err = kiln_error_free(err);
	/* Malformed ids are refused before any lookup. */
	assert_int_equal(kiln_service_session_check(f->s, "x';--", &chk, &err), -EACCES);
	err = kiln_error_free(err);

	/* Revoking the token ends the sessions it opened. */
	assert_int_equal(kiln_service_session_check(f->s, id2, &chk, &err), 0);
	kiln_session_info_clear(&chk);
	assert_int_equal(kiln_service_token_revoke(f->s, ti2.id, &err), 0);
	assert_int_equal(kiln_service_session_check(f->s, id2, &chk, &err), -EACCES);
	err = kiln_error_free(err);

	/* Expiry. */
	struct kiln_session_info si3 = {0};
	assert_int_equal(kiln_service_session_create(f->s, tok, 1, &id3, &si3, &err), 0);
	assert_int_equal(kiln_service_session_check(f->s, id3, &chk, &err), 0);
	kiln_session_info_clear(&chk);
	usleep(1100 * 1000);
	assert_int_equal(kiln_service_session_check(f->s, id3, &chk, &err), -EACCES);
	err = kiln_error_free(err);

	kiln_session_info_clear(&si);
	kiln_session_info_clear(&si2);
	kiln_session_info_clear(&si3);
	kiln_token_info_clear(&ti);
	kiln_token_info_clear(&ti2);
}

static void test_crash_recovery(void **state)
{
	struct fx *f = *state;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *a =
	    submit(f->s, recipe_a, "alice", KILN_SUBMIT_QUEUED);
	char id[KILN_BUILD_ID_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_service_test_claim(f->s, id, &err), 1);
	/* Half a line in the log and a leftover output dir, as a kill -9 leaves. */
	struct log_writer w;
	assert_int_equal(svc_log_writer_open(&w, f->s, id), 0);
	assert_int_equal(write(w.fd, "==> [2/4] inst", 14), 14);
	safe_close(w.fd);
	w.fd = -1;
	svc_log_writer_close(&w);
	_cleanup_free_ char *out = xasprintf("%s/builds/%s-out", f->dir, id);
	assert_int_equal(mkdir(out, 0755), 0);
	_cleanup_free_ char *junk = xasprintf("%s/rootfs.tar.gz", out);
	FILE *fp = fopen(junk, "w");
	fclose(fp);
	kiln_service_free(f->s);

	/* Server mode: recovery runs; one idle worker, nothing to claim. */
	f->s = open_service(f->dir, false);
	assert_true(kiln_service_ready(f->s));
	assert_int_equal(kiln_service_workers(f->s), 1);
	/* A second server on the same state directory is refused. */
	struct kiln_service_config cfg = {.state_dir = f->dir, .workers = 1};
	struct kiln_service *s2 = NULL;
	assert_int_equal(kiln_service_open(&cfg, &s2, &err), -EBUSY);
	err = kiln_error_free(err);

	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	assert_int_equal(kiln_service_get(f->s, id, NULL, &b, &err), 0);
	assert_int_equal(b->status, KILN_BUILD_FAILED);
	assert_string_equal(b->error,
	                    "interrupted: the server stopped while this build was running");
	assert_true(b->completed_us > 0);
	struct stat st;
	assert_int_equal(stat(out, &st), -1);
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool done = false;
	assert_int_equal(kiln_service_log_read(f->s, id, NULL, 0, 0, &lines, &n, &done, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(lines[0].text, "==> [2/4] inst");
	assert_string_equal(
	    lines[1].text,
	    "==> error: interrupted: the server stopped while this build was running");
	assert_true(done);
	kiln_log_lines_free(lines, n);
	uint64_t us = 0;
	assert_int_equal(kiln_service_db_ping(f->s, &us, &err), 0);
	(void)a;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_db_migrations, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_submit_invalid, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_submit_queue_and_coalesce, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_submit_context, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_fence_is_per_claim, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_submit_concurrent_coalesce, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_list_pagination, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_owner_isolation, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_pending, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_queue_complete_and_cache, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_shared_cache, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cache_hit_state, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_read_without_writer_lock, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_building, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_logs, fx_setup, fx_teardown),
	    cmocka_unit_test(test_status_names),
	    cmocka_unit_test_setup_teardown(test_tokens, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_sessions, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_crash_recovery, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
