/* Unit tests of store/db.h on each backend: placeholders, NULLs, changes,
 * transactions, migrations, and the error mapping db.h documents (unique
 * violation → -EEXIST, a lock held elsewhere → -EAGAIN, an unknown URL
 * scheme → -EPROTONOSUPPORT, an unreachable server → -EIO).
 *
 * SQLite always runs (a file in a temp dir). PostgreSQL runs when
 * KILN_TEST_PG_URL names a database: tests/integration/test_db_backends.py
 * starts a real server (tests/pglib.py) and runs this binary against it;
 * without the variable the PostgreSQL group is skipped, not faked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/db.h"
#include "util/alloc.h"

struct fx {
	char *url;
	char dir[64];
	struct kiln_db *a, *b; /* two connections to one database */
};

static struct kiln_db *open_ok(const char *url)
{
	struct kiln_db *db = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_db_open(url, &db, &err) < 0)
		fail_msg("kiln_db_open %s: %s", url, err ? err->msg : "?");
	return db;
}

static void exec_ok(struct kiln_db *db, const char *sql)
{
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_db_exec(db, sql, &err) < 0)
		fail_msg("%s: %s", sql, err ? err->msg : "?");
}

static int setup_common(struct fx *f)
{
	f->a = open_ok(f->url);
	f->b = open_ok(f->url);
	exec_ok(f->a,
	        "DROP TABLE IF EXISTS t; DROP TABLE IF EXISTS schema_version;"
	        "CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT, n INTEGER NOT NULL DEFAULT 0)");
	return 0;
}

static int setup_sqlite(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kiln-test-db-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->url = xasprintf("sqlite:%s/t.db", f->dir);
	*state = f;
	return setup_common(f);
}

static int setup_pg(void **state)
{
	const char *url = getenv("KILN_TEST_PG_URL");
	if (!url || !*url)
		return -1; /* the group is skipped: see the header comment */
	struct fx *f = xcalloc(1, sizeof(*f));
	f->url = xstrdup(url);
	*state = f;
	return setup_common(f);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kiln_db_close(f->a);
	kiln_db_close(f->b);
	if (f->dir[0]) {
		_cleanup_free_ char *p = xasprintf("%s/t.db", f->dir);
		unlink(p);
		_cleanup_free_ char *w = xasprintf("%s/t.db-wal", f->dir);
		unlink(w);
		_cleanup_free_ char *s = xasprintf("%s/t.db-shm", f->dir);
		unlink(s);
		rmdir(f->dir);
	}
	free(f->url);
	free(f);
	return 0;
}

static int insert(struct kiln_db *db, const char *k, int64_t v, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(db, "INSERT INTO t (k, v) VALUES ($1, $2)", &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, k);
	kiln_db_bind_int64(st, 2, v);
	return kiln_db_step(st, err);
}

static void test_duplicate_key_is_eexist(void **state)
{
	struct fx *f = *state;
	assert_int_equal(insert(f->a, "x", 1, NULL), 0);
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(insert(f->a, "x", 2, &err), -EEXIST);
	assert_non_null(err);
	assert_int_equal(err->code, EEXIST);
	/* The other connection sees the first row only. */
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	assert_int_equal(kiln_db_prepare(f->b, "SELECT v FROM t WHERE k = $1", &st, NULL), 0);
	kiln_db_bind_text(st, 1, "x");
	assert_int_equal(kiln_db_step(st, NULL), 1);
	assert_int_equal(kiln_db_column_int64(st, 0), 1);
	assert_int_equal(kiln_db_step(st, NULL), 0);
}

static void test_params_nulls_changes(void **state)
{
	struct fx *f = *state;
	assert_int_equal(insert(f->a, "a", 10, NULL), 0);
	assert_int_equal(insert(f->a, "b", 20, NULL), 0);
	{
		/* A parameter used twice and out of order; a NULL bound. */
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(
		    kiln_db_prepare(f->a, "UPDATE t SET v = $2, n = $3 WHERE k = $1 OR v = $2", &st,
		                    NULL),
		    0);
		kiln_db_bind_text(st, 1, "a");
		kiln_db_bind_null(st, 2);
		kiln_db_bind_int64(st, 3, 7);
		assert_int_equal(kiln_db_step(st, NULL), 0);
		assert_int_equal(kiln_db_changes(f->a), 1);
	}
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	assert_int_equal(kiln_db_prepare(f->a, "SELECT k, v, n FROM t ORDER BY k", &st, NULL), 0);
	assert_int_equal(kiln_db_step(st, NULL), 1);
	assert_string_equal(kiln_db_column_text(st, 0), "a");
	assert_true(kiln_db_column_is_null(st, 1));
	assert_null(kiln_db_column_text(st, 1));
	assert_int_equal(kiln_db_column_int64(st, 2), 7);
	assert_int_equal(kiln_db_step(st, NULL), 1);
	assert_string_equal(kiln_db_column_text(st, 0), "b");
	assert_int_equal(kiln_db_column_int64(st, 1), 20);
	assert_false(kiln_db_column_is_null(st, 1));
	assert_int_equal(kiln_db_step(st, NULL), 0);
	kiln_db_stmt_done(TAKE_PTR(st));
	/* The cached statement is reused with new bindings. */
	for (int i = 0; i < 3; i++) {
		char k[8];
		snprintf(k, sizeof(k), "c%d", i);
		assert_int_equal(insert(f->a, k, i, NULL), 0);
	}
}

static void test_rollback_discards(void **state)
{
	struct fx *f = *state;
	assert_int_equal(kiln_db_begin(f->a, NULL), 0);
	assert_int_equal(insert(f->a, "gone", 1, NULL), 0);
	kiln_db_rollback(f->a);
	assert_int_equal(kiln_db_begin(f->a, NULL), 0);
	assert_int_equal(insert(f->a, "kept", 1, NULL), 0);
	/* A failed statement inside a transaction, then rollback: the
	 * connection is usable again (PostgreSQL aborts the transaction). */
	assert_int_equal(insert(f->a, "kept", 2, NULL), -EEXIST);
	kiln_db_rollback(f->a);
	assert_int_equal(insert(f->a, "kept", 3, NULL), 0);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	assert_int_equal(kiln_db_prepare(f->b, "SELECT COUNT(*) FROM t", &st, NULL), 0);
	assert_int_equal(kiln_db_step(st, NULL), 1);
	assert_int_equal(kiln_db_column_int64(st, 0), 1);
}

static void test_lock_held_elsewhere_is_eagain(void **state)
{
	struct fx *f = *state;
	assert_int_equal(insert(f->a, "l", 1, NULL), 0);
	assert_int_equal(kiln_db_begin(f->a, NULL), 0);
	{
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(
		    kiln_db_prepare(f->a, "UPDATE t SET v = 2 WHERE k = $1", &st, NULL), 0);
		kiln_db_bind_text(st, 1, "l");
		assert_int_equal(kiln_db_step(st, NULL), 0);
	}
	_cleanup_error_ struct kiln_error *err = NULL;
	int r;
	if (strcmp(kiln_db_backend(f->b), "postgresql") == 0) {
		/* NOWAIT: the row lock is reported, not waited for (55P03). */
		r = kiln_db_begin(f->b, NULL);
		assert_int_equal(r, 0);
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(kiln_db_prepare(f->b,
		                                 "SELECT v FROM t WHERE k = $1 FOR UPDATE NOWAIT",
		                                 &st, NULL),
		                 0);
		kiln_db_bind_text(st, 1, "l");
		r = kiln_db_step(st, &err);
		kiln_db_stmt_done(TAKE_PTR(st));
		kiln_db_rollback(f->b);
	} else {
		/* The write lock stays held past the busy timeout (5 s). */
		r = kiln_db_begin(f->b, &err);
	}
	assert_int_equal(r, -EAGAIN);
	assert_non_null(err);
	kiln_db_rollback(f->a);
}

static const struct kiln_db_migration migs[] = {
    {1, "CREATE TABLE m1 (a TEXT)"},
    {2, "ALTER TABLE m1 ADD COLUMN b BIGINT"},
};

static void test_migrate_idempotent_and_newer_refused(void **state)
{
	struct fx *f = *state;
	exec_ok(f->a, "DROP TABLE IF EXISTS m1");
	int v = 0;
	assert_int_equal(kiln_db_migrate(f->a, migs, 1, &v, NULL), 0);
	assert_int_equal(v, 1);
	assert_int_equal(kiln_db_migrate(f->b, migs, 2, &v, NULL), 0);
	assert_int_equal(v, 2);
	assert_int_equal(kiln_db_migrate(f->a, migs, 2, &v, NULL), 0);
	assert_int_equal(v, 2);
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_db_migrate(f->a, migs, 1, NULL, &err), -EPROTO);
	exec_ok(f->a, "DROP TABLE m1");
}

static void test_urls(void **state)
{
	(void)state;
	struct kiln_db *db = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_db_open("mysql://x/y", &db, &err), -EPROTONOSUPPORT);
	assert_non_null(strstr(err->msg, "mysql://x/y"));
	kiln_error_free(TAKE_PTR(err));
	/* No server on that socket: a connection error, said as such. */
	assert_int_equal(
	    kiln_db_open("postgresql:///nodb?host=/nonexistent-kiln-dir&connect_timeout=2", &db,
	                 &err),
	    -EIO);
	assert_non_null(strstr(err->msg, "cannot connect"));
}

#define ALL(setup)                                                                                 \
	cmocka_unit_test_setup_teardown(test_duplicate_key_is_eexist, setup, teardown),            \
	    cmocka_unit_test_setup_teardown(test_params_nulls_changes, setup, teardown),           \
	    cmocka_unit_test_setup_teardown(test_rollback_discards, setup, teardown),              \
	    cmocka_unit_test_setup_teardown(test_lock_held_elsewhere_is_eagain, setup, teardown),  \
	    cmocka_unit_test_setup_teardown(test_migrate_idempotent_and_newer_refused, setup,      \
	                                    teardown)

int main(void)
{
	const struct CMUnitTest sqlite[] = {ALL(setup_sqlite), cmocka_unit_test(test_urls)};
	const struct CMUnitTest pg[] = {ALL(setup_pg)};
	int failed = cmocka_run_group_tests_name("db_sqlite", sqlite, NULL, NULL);
	const char *url = getenv("KILN_TEST_PG_URL");
	if (url && *url)
		failed += cmocka_run_group_tests_name("db_pg", pg, NULL, NULL);
	else
		fprintf(stderr, "db_pg: skipped (KILN_TEST_PG_URL is not set)\n");
	return failed;
}
