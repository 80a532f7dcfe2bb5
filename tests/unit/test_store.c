/* Unit tests of store/: the content-addressed store (cas.c) — the state
 * directory's layout, putting, hashing and verifying blobs, blobs stored
 * concurrently by several threads of one process (the workers of one `kiln
 * serve` fetching the same .deb), what the store does with a blob that
 * changed after it was written — and the SQLite layer (db_sqlite.c):
 * migrations, $N placeholders, transactions, the statement cache, the error
 * mapping callers rely on (-EEXIST, -EAGAIN) and the SQL forms the service's
 * queries use (UPDATE ... RETURNING over a subquery, ON CONFLICT DO NOTHING,
 * NULLs). Both backends behind db.h: tests/unit/test_db.c. Real files, a
 * real SQLite database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/cas.h"
#include "store/db.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/sha256.h"

#define THREADS 4
#define ROUNDS 40
#define BLOB_BYTES (1u << 20)

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

struct putter {
	const char *state;
	const char *src;
	pthread_barrier_t *go;
	int rc;
	char hex[KILN_SHA256_HEX_LEN + 1];
	char msg[256];
};

static void *put_thread(void *arg)
{
	struct putter *p = arg;
	struct kiln_error *err = NULL;
	pthread_barrier_wait(p->go);
	p->rc = kiln_cas_put_file(p->state, p->src, NULL, p->hex, NULL, &err);
	if (err)
		snprintf(p->msg, sizeof(p->msg), "%s", err->msg);
	kiln_error_free(err);
	return NULL;
}

/* With one temp name per process (.tmp-<hex>-<pid>), a second thread storing
 * the same blob unlinked the first one's temp file and created its own under
 * the same name; the first then renamed the second's half-written file into
 * place, and the second's rename failed with ENOENT. Each call must have a
 * temp file of its own: every call succeeds, the blob is whole, no temp
 * file is left. */
static void test_concurrent_put_of_one_blob(void **state)
{
	(void)state;
	char dir[] = "/tmp/kiln-test-store-XXXXXX";
	assert_non_null(mkdtemp(dir));
	_cleanup_free_ char *st = xasprintf("%s/state", dir);
	assert_int_equal(kiln_state_init(st, NULL), 0);
	char *data = xmalloc(BLOB_BYTES);
	for (unsigned round = 0; round < ROUNDS; round++) {
		for (size_t i = 0; i < BLOB_BYTES; i++)
			data[i] = (char)(i * 31 + round);
		_cleanup_free_ char *src = xasprintf("%s/src-%u", dir, round);
		_cleanup_close_ int fd = open(src, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(kiln_write_all(fd, data, BLOB_BYTES), 0);
		char want[KILN_SHA256_HEX_LEN + 1];
		uint64_t size = 0;
		assert_int_equal(kiln_sha256_file(src, want, &size), 0);

		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, THREADS);
		struct putter p[THREADS];
		pthread_t t[THREADS];
		for (int i = 0; i < THREADS; i++) {
			p[i] = (struct putter){.state = st, .src = src, .go = &go};
			assert_int_equal(pthread_create(&t[i], NULL, put_thread, &p[i]), 0);
		}
		for (int i = 0; i < THREADS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		for (int i = 0; i < THREADS; i++) {
			if (p[i].rc != 0)
				fail_msg("round %u, thread %d: %d %s", round, i, p[i].rc, p[i].msg);
			assert_string_equal(p[i].hex, want);
		}
		_cleanup_free_ char *blob = kiln_cas_path(st, want);
		char got[KILN_SHA256_HEX_LEN + 1];
		assert_int_equal(kiln_sha256_file(blob, got, &size), 0);
		assert_string_equal(got, want);
		assert_int_equal(size, BLOB_BYTES);

		_cleanup_free_ char *shard = xasprintf("%s/cas/sha256/%.2s", st, want);
		DIR *d = opendir(shard);
		assert_non_null(d);
		for (struct dirent *de; (de = readdir(d));)
			if (strncmp(de->d_name, ".tmp-", 5) == 0)
				fail_msg("round %u: temp file left behind: %s", round, de->d_name);
		closedir(d);
	}
	free(data);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- trusting what is already in the store (issue 12) ---- */

struct fixture {
	char dir[64];
	char *state;
	char *src;
	char hex[KILN_SHA256_HEX_LEN + 1];
	char *blob;
};

static unsigned notices;
static char last_notice[512];

static void on_notice(void *ud, const char *msg)
{
	(void)ud;
	notices++;
	snprintf(last_notice, sizeof(last_notice), "%s", msg);
}

static void write_file(const char *path, const char *data)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, strlen(data)), 0);
}

static void append_file(const char *path, const char *data)
{
	/* As root ignores the blob's 0444: what `echo oops >> out/x` did to a
	 * hard-linked output. */
	_cleanup_close_ int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, strlen(data)), 0);
}

static int fx_setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kiln-test-cas-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->state = xasprintf("%s/state", f->dir);
	assert_int_equal(kiln_state_init(f->state, NULL), 0);
	f->src = xasprintf("%s/src", f->dir);
	write_file(f->src, "the blob's right content\n");
	assert_int_equal(kiln_cas_put_file(f->state, f->src, NULL, f->hex, NULL, NULL), 0);
	f->blob = kiln_cas_path(f->state, f->hex);
	notices = 0;
	last_notice[0] = '\0';
	kiln_cas_set_notify(on_notice, NULL);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fixture *f = *state;
	kiln_cas_set_notify(NULL, NULL);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f->state);
	free(f->src);
	free(f->blob);
	free(f);
	return 0;
}

static size_t quarantined(const struct fixture *f)
{
	_cleanup_free_ char *q = xasprintf("%s/cas/quarantine", f->state);
	DIR *d = opendir(q);
	size_t n = 0;
	for (struct dirent *de; d && (de = readdir(d));)
		n += strncmp(de->d_name, f->hex, KILN_SHA256_HEX_LEN) == 0;
	if (d)
		closedir(d);
	return n;
}

static void assert_blob_good(const struct fixture *f)
{
	char got[KILN_SHA256_HEX_LEN + 1];
	assert_int_equal(kiln_sha256_file(f->blob, got, NULL), 0);
	assert_string_equal(got, f->hex);
}

static void test_put_stamps_the_blob(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	assert_int_equal(st.st_mtim.tv_sec, KILN_CAS_MTIME);
	assert_int_equal(st.st_mtim.tv_nsec, 0);
	assert_int_equal(st.st_mode & 07777, 0444);
	assert_int_equal(st.st_nlink, 1);
}

/* The report: a rebuild kept the bad blob as "already present". */
static void test_put_replaces_a_corrupt_blob(void **state)
{
	struct fixture *f = *state;
	append_file(f->blob, "oops\n");
	char hex[KILN_SHA256_HEX_LEN + 1];
	assert_int_equal(kiln_cas_put_file(f->state, f->src, NULL, hex, NULL, NULL), 0);
	assert_string_equal(hex, f->hex);
	assert_blob_good(f);
	assert_int_equal(quarantined(f), 1);
	assert_int_equal(notices, 1);
	assert_non_null(strstr(last_notice, f->hex));
}

/* Same size, other bytes: only the mtime tells, and the hash decides. */
static void test_put_replaces_a_same_size_corruption(void **state)
{
	struct fixture *f = *state;
	_cleanup_close_ int fd = open(f->blob, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "T", 1, 0), 1);
	assert_int_equal(kiln_cas_put_file(f->state, f->src, NULL, NULL, NULL, NULL), 0);
	assert_blob_good(f);
	assert_int_equal(quarantined(f), 1);
}

static void test_open_verified_quarantines(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	int fd = -1;
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, (uint64_t)st.st_size, &fd, NULL),
	                 0);
	safe_close(fd);
	/* a wrong recorded size is enough, whatever the mtime says */
	struct kiln_error *err = NULL;
	assert_int_equal(
	    kiln_cas_open_verified(f->state, f->hex, (uint64_t)st.st_size + 1, &fd, &err),
	    -EBADMSG);
	assert_non_null(strstr(err->msg, "quarantine"));
	kiln_error_free(err);
	assert_int_equal(access(f->blob, F_OK), -1);
	assert_int_equal(quarantined(f), 1);
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, KILN_CAS_SIZE_UNKNOWN, &fd, NULL),
	                 -ENOENT);
}

static void test_open_verified_rehashes_a_written_blob(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	_cleanup_close_ int w = open(f->blob, O_WRONLY | O_CLOEXEC);
	assert_int_equal(pwrite(w, "T", 1, 0), 1);
	int fd = -1;
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, (uint64_t)st.st_size, &fd, NULL),
	                 -EBADMSG);
	assert_int_equal(quarantined(f), 1);
}

/* A write that restores size and mtime passes the cheap check; the full
 * rehash of kiln_cas_check (`kiln store verify`) still finds it. */
static void test_check_finds_a_disguised_corruption(void **state)
{
	struct fixture *f = *state;
	{
		_cleanup_close_ int w = open(f->blob, O_WRONLY | O_CLOEXEC);
		assert_int_equal(pwrite(w, "T", 1, 0), 1);
	}
	assert_int_equal(kiln_cas_stamp(f->state, f->hex, NULL), 0);
	bool good = true;
	assert_int_equal(kiln_cas_check(f->state, f->hex, &good, NULL, NULL), 0);
	assert_false(good);
}

/* An older kiln linked blobs into output directories: the first use
 * gives the store a private copy, and the old output no longer reaches it. */
static void test_open_verified_unshares_a_hard_link(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *out = xasprintf("%s/out-rootfs.tar.gz", f->dir);
	assert_int_equal(link(f->blob, out), 0);
	int fd = -1;
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, KILN_CAS_SIZE_UNKNOWN, &fd, NULL),
	                 0);
	safe_close(fd);
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	append_file(out, "oops\n");
	assert_blob_good(f);
	assert_int_equal(quarantined(f), 0);
}

/* ---- the state directory, put and verify, the database layer ---------------------- */

struct dirfx {
	char dir[64];
};

static int dir_setup(void **state)
{
	struct dirfx *f = xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kiln-test-store-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	*state = f;
	return 0;
}

static int dir_teardown(void **state)
{
	struct dirfx *f = *state;
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void put_text(const char *path, const char *data)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(data, fp);
	assert_int_equal(fclose(fp), 0);
}

static char *read_all(const char *path)
{
	char *data = NULL;
	size_t len = 0;
	if (kiln_read_file(path, 1 << 20, &data, &len, NULL) < 0)
		return NULL;
	return data;
}

/* Entries of dir whose name starts with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
	closedir(d);
	return n;
}

/* ---- the state directory ------------------------------------------------------------ */

static void test_state_init(void **state)
{
	struct dirfx *f = *state;
	_cleanup_free_ char *root = xasprintf("%s/a/state", f->dir); /* parents created too */
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_state_init(root, &err), 0);
	static const char *const subdirs[] = {"",        "/cas",  "/cas/sha256", "/bases",
	                                      "/builds", "/logs", "/locks"};
	for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
		_cleanup_free_ char *p = xasprintf("%s%s", root, subdirs[i]);
		struct stat st;
		assert_int_equal(stat(p, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
	}
	/* Idempotent. */
	assert_int_equal(kiln_state_init(root, &err), 0);
	/* A file in the way is an error naming the path. */
	_cleanup_free_ char *blocked = xasprintf("%s/blocked", f->dir);
	put_text(blocked, "x");
	assert_true(kiln_state_init(blocked, &err) < 0);
	assert_non_null(err);
	assert_non_null(strstr(err->msg, blocked));

	/* $KILN_STATE_DIR, unless empty. */
	const char *old = getenv("KILN_STATE_DIR");
	_cleanup_free_ char *saved = old ? xstrdup(old) : NULL;
	setenv("KILN_STATE_DIR", "/srv/kiln", 1);
	assert_string_equal(kiln_state_dir_default(), "/srv/kiln");
	setenv("KILN_STATE_DIR", "", 1);
	assert_string_equal(kiln_state_dir_default(), "/var/lib/kiln");
	unsetenv("KILN_STATE_DIR");
	assert_string_equal(kiln_state_dir_default(), "/var/lib/kiln");
	if (saved)
		setenv("KILN_STATE_DIR", saved, 1);
}

/* ---- the content-addressed store ----------------------------------------------------- */

static void test_cas_path(void **state)
{
	(void)state;
	_cleanup_free_ char *p = kiln_cas_path("/s", "abcdef0123");
	assert_string_equal(p, "/s/cas/sha256/ab/abcdef0123");
}

static void test_cas_put(void **state)
{
	struct dirfx *f = *state;
	if (geteuid() != 0)
		skip(); /* the store's blobs are chowned to root */
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_state_init(f->dir, &err), 0);
	_cleanup_free_ char *src = xasprintf("%s/src", f->dir);
	put_text(src, "hello store\n");
	char want[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex("hello store\n", 12, want);
	assert_false(kiln_cas_has(f->dir, want));

	char hex[KILN_SHA256_HEX_LEN + 1] = "";
	uint64_t size = 0;
	assert_int_equal(kiln_cas_put_file(f->dir, src, NULL, hex, &size, &err), 0);
	assert_string_equal(hex, want); /* named by what it holds, hashed here */
	assert_int_equal(size, 12);
	assert_true(kiln_cas_has(f->dir, hex));
	_cleanup_free_ char *blob = kiln_cas_path(f->dir, hex);
	_cleanup_free_ char *got = read_all(blob);
	assert_non_null(got);
	assert_string_equal(got, "hello store\n");
	/* Immutable and root's, whoever owned the source; a copy, not a link. */
	struct stat st, sst;
	assert_int_equal(stat(blob, &st), 0);
	assert_int_equal(stat(src, &sst), 0);
	assert_int_equal(st.st_mode & 07777, 0444);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_nlink, 1);
	assert_true(st.st_ino != sst.st_ino);
	put_text(src, "changed afterwards\n");
	free(got);
	got = read_all(blob);
	assert_string_equal(got, "hello store\n");
	/* No temporary file stays behind. */
	_cleanup_free_ char *dir = xasprintf("%s/cas/sha256/%.2s", f->dir, hex);
	assert_int_equal(count_prefixed(dir, ".tmp-"), 0);

	/* The same content again: the same name, the blob untouched. */
	put_text(src, "hello store\n");
	char hex2[KILN_SHA256_HEX_LEN + 1] = "";
	assert_int_equal(kiln_cas_put_file(f->dir, src, want, hex2, NULL, &err), 0);
	assert_string_equal(hex2, want);
	struct stat st2;
	assert_int_equal(stat(blob, &st2), 0);
	assert_int_equal(st2.st_ino, st.st_ino);
}

static void test_cas_put_refuses(void **state)
{
	struct dirfx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_state_init(f->dir, &err), 0);
	_cleanup_free_ char *src = xasprintf("%s/src", f->dir);
	put_text(src, "not what was promised");
	/* A claimed digest is checked, never trusted: nothing is stored. */
	char claimed[KILN_SHA256_HEX_LEN + 1];
	memset(claimed, 'a', KILN_SHA256_HEX_LEN);
	claimed[KILN_SHA256_HEX_LEN] = '\0';
	char hex[KILN_SHA256_HEX_LEN + 1] = "untouched";
	assert_int_equal(kiln_cas_put_file(f->dir, src, claimed, hex, NULL, &err), -EBADMSG);
	assert_non_null(strstr(err->msg, "SHA-256 mismatch"));
	assert_string_equal(hex, "untouched"); /* output untouched on failure */
	assert_false(kiln_cas_has(f->dir, claimed));
	char real[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex("not what was promised", 21, real);
	assert_false(kiln_cas_has(f->dir, real));
	err = kiln_error_free(err);
	/* A missing source names itself. */
	_cleanup_free_ char *missing = xasprintf("%s/missing", f->dir);
	assert_int_equal(kiln_cas_put_file(f->dir, missing, NULL, hex, NULL, &err), -ENOENT);
	assert_non_null(strstr(err->msg, missing));
}

/* ---- the database layer ---------------------------------------------------------------- */

/* Moved from test_service.c. */
static void test_db_migrations(void **state)
{
	struct dirfx *f = *state;
	_cleanup_free_ char *url = xasprintf("sqlite:%s/t.db", f->dir);
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_db *db = NULL;
	assert_int_equal(kiln_db_open(url, &db, &err), 0);
	const struct kiln_db_migration m[] = {
	    {1, "CREATE TABLE t (a TEXT PRIMARY KEY, b BIGINT)"},
	    {2, "CREATE INDEX t_b ON t (b)"},
	};
	int v = 0;
	assert_int_equal(kiln_db_migrate(db, m, 2, &v, &err), 0);
	assert_int_equal(v, 2);
	/* Idempotent: applying again is a no-op (a second CREATE would fail). */
	assert_int_equal(kiln_db_migrate(db, m, 2, &v, &err), 0);
	assert_int_equal(v, 2);

	/* A failing migration rolls back entirely: version stays 2, no table. */
	const struct kiln_db_migration bad[] = {
	    m[0], m[1], {3, "CREATE TABLE u (x TEXT); THIS IS NOT SQL"}};
	assert_true(kiln_db_migrate(db, bad, 3, &v, &err) < 0);
	assert_non_null(err);
	assert_non_null(strstr(err->msg, "migration 3"));
	err = kiln_error_free(err);
	struct kiln_db_stmt *st = NULL;
	assert_int_equal(
	    kiln_db_prepare(db, "SELECT COUNT(*) FROM sqlite_master WHERE name = $1", &st, &err),
	    0);
	kiln_db_bind_text(st, 1, "u");
	assert_int_equal(kiln_db_step(st, &err), 1);
	assert_int_equal(kiln_db_column_int64(st, 0), 0);
	kiln_db_stmt_done(st);

	/* A database newer than the code is refused. */
	assert_int_equal(kiln_db_migrate(db, m, 1, &v, &err), -EPROTO);
	err = kiln_error_free(err);

	/* $N placeholders by name: out of order and repeated. */
	assert_int_equal(kiln_db_prepare(db, "INSERT INTO t (b, a) VALUES ($2, $1)", &st, &err), 0);
	kiln_db_bind_text(st, 1, "x");
	kiln_db_bind_int64(st, 2, 42);
	assert_int_equal(kiln_db_step(st, &err), 0);
	kiln_db_stmt_done(st);
	assert_int_equal(kiln_db_prepare(db, "INSERT INTO t (a, b) VALUES ($1, $2)", &st, &err), 0);
	kiln_db_bind_text(st, 1, "x");
	kiln_db_bind_int64(st, 2, 1);
	assert_int_equal(kiln_db_step(st, &err), -EEXIST); /* unique key */
	err = kiln_error_free(err);
	kiln_db_stmt_done(st);
	assert_int_equal(
	    kiln_db_prepare(db, "SELECT a, b FROM t WHERE b = $1 AND b >= $1", &st, &err), 0);
	kiln_db_bind_int64(st, 1, 42);
	assert_int_equal(kiln_db_step(st, &err), 1);
	assert_string_equal(kiln_db_column_text(st, 0), "x");
	assert_int_equal(kiln_db_step(st, &err), 0);
	kiln_db_stmt_done(st);
	/* A parameter the statement does not have fails the step. */
	assert_int_equal(kiln_db_prepare(db, "SELECT a FROM t WHERE b = $1", &st, &err), 0);
	kiln_db_bind_int64(st, 2, 42);
	assert_int_equal(kiln_db_step(st, &err), -EINVAL);
	err = kiln_error_free(err);
	kiln_db_stmt_done(st);
	kiln_db_close(db);
}

static struct kiln_db *open_db(const char *dir, const char *name)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_db *db = NULL;
	if (kiln_db_open(path, &db, &err) < 0)
		fail_msg("kiln_db_open %s: %s", path, err ? err->msg : "?");
	return db;
}

static int64_t count(struct kiln_db *db, const char *sql)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_db_prepare(db, sql, &st, &err), 0);
	assert_int_equal(kiln_db_step(st, &err), 1);
	return kiln_db_column_int64(st, 0);
}

static void test_db_open(void **state)
{
	struct dirfx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	/* "sqlite:PATH" and a plain PATH are the same database. */
	_cleanup_free_ char *url = xasprintf("sqlite:%s/o.db", f->dir);
	struct kiln_db *a = NULL;
	assert_int_equal(kiln_db_open(url, &a, &err), 0);
	assert_int_equal(kiln_db_exec(a, "CREATE TABLE t (x TEXT)", &err), 0);
	struct kiln_db *b = open_db(f->dir, "o.db");
	assert_int_equal(count(b, "SELECT COUNT(*) FROM sqlite_master WHERE name = 't'"), 1);
	/* The pragmas the header promises. */
	assert_int_equal(count(b, "PRAGMA foreign_keys"), 1);
	assert_int_equal(count(b, "PRAGMA synchronous"), 1); /* NORMAL */
	kiln_db_close(b);
	kiln_db_close(a);
	assert_null(kiln_db_close(NULL));
	/* An engine kiln does not know is refused by name, not opened as a file. */
	struct kiln_db *pg = NULL;
	assert_int_equal(kiln_db_open("mysql://db.example/kiln", &pg, &err), -EPROTONOSUPPORT);
	assert_null(pg);
	assert_non_null(strstr(err->msg, "mysql://db.example/kiln"));
	err = kiln_error_free(err);
	/* A directory that does not exist: an error naming the path. */
	_cleanup_free_ char *bad = xasprintf("%s/no/such/dir/x.db", f->dir);
	assert_true(kiln_db_open(bad, &pg, &err) < 0);
	assert_non_null(strstr(err->msg, bad));
	/* SQL that does not parse is an error, not a crash. */
	struct kiln_db *c = open_db(f->dir, "o.db");
	err = kiln_error_free(err);
	struct kiln_db_stmt *st = NULL;
	assert_true(kiln_db_prepare(c, "SELEKT 1", &st, &err) < 0);
	assert_non_null(strstr(err->msg, "prepare"));
	err = kiln_error_free(err);
	assert_true(kiln_db_exec(c, "NOT SQL", &err) < 0);
	kiln_db_close(c);
}

static void test_db_transactions(void **state)
{
	struct dirfx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_db *a = open_db(f->dir, "tx.db");
	struct kiln_db *b = open_db(f->dir, "tx.db");
	assert_int_equal(kiln_db_exec(a, "CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT)", &err), 0);

	/* A rolled-back write leaves nothing. */
	assert_int_equal(kiln_db_begin(a, &err), 0);
	assert_int_equal(kiln_db_exec(a, "INSERT INTO t VALUES ('x', 1)", &err), 0);
	assert_int_equal(kiln_db_changes(a), 1);
	kiln_db_rollback(a);
	kiln_db_rollback(a); /* outside a transaction: a no-op */
	assert_int_equal(count(b, "SELECT COUNT(*) FROM t"), 0);

	/* A committed one is seen by the other connection. */
	assert_int_equal(kiln_db_begin(a, &err), 0);
	assert_int_equal(kiln_db_exec(a, "INSERT INTO t VALUES ('x', 1), ('y', 2)", &err), 0);
	assert_int_equal(kiln_db_changes(a), 2);
	assert_int_equal(kiln_db_commit(a, &err), 0);
	assert_int_equal(count(b, "SELECT COUNT(*) FROM t"), 2);

	/* BEGIN IMMEDIATE takes the write lock at once: a second writer waits
	 * out the busy timeout and gets -EAGAIN (the service answers 503). */
	assert_int_equal(kiln_db_begin(a, &err), 0);
	assert_int_equal(kiln_db_begin(b, &err), -EAGAIN);
	assert_non_null(err);
	err = kiln_error_free(err);
	/* Readers are not blocked by the writer (WAL). */
	assert_int_equal(count(b, "SELECT COUNT(*) FROM t"), 2);
	kiln_db_rollback(a);
	assert_int_equal(kiln_db_begin(b, &err), 0);
	assert_int_equal(kiln_db_commit(b, &err), 0);
	/* COMMIT with no transaction fails and leaves the connection usable. */
	assert_true(kiln_db_commit(b, &err) < 0);
	err = kiln_error_free(err);
	assert_int_equal(count(b, "SELECT COUNT(*) FROM t"), 2);
	kiln_db_close(b);
	kiln_db_close(a);
}

static void test_db_statement_cache(void **state)
{
	struct dirfx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_db *db = open_db(f->dir, "c.db");
	assert_int_equal(kiln_db_exec(db, "CREATE TABLE t (k TEXT, v BIGINT)", &err), 0);
	static const char q[] = "SELECT $1 + 1";
	struct kiln_db_stmt *a = NULL, *b = NULL, *c = NULL;
	assert_int_equal(kiln_db_prepare(db, q, &a, &err), 0);
	/* In use: the same SQL gets a second statement, not the busy one. */
	assert_int_equal(kiln_db_prepare(db, q, &b, &err), 0);
	assert_ptr_not_equal(a, b);
	kiln_db_bind_int64(a, 1, 1);
	kiln_db_bind_int64(b, 1, 10);
	assert_int_equal(kiln_db_step(a, &err), 1);
	assert_int_equal(kiln_db_step(b, &err), 1);
	assert_int_equal(kiln_db_column_int64(a, 0), 2);
	assert_int_equal(kiln_db_column_int64(b, 0), 11);
	kiln_db_stmt_done(a);
	/* Given back, it is reused — reset, its bindings cleared. */
	assert_int_equal(kiln_db_prepare(db, q, &c, &err), 0);
	assert_ptr_equal(c, a);
	assert_int_equal(kiln_db_step(c, &err), 1);
	assert_true(kiln_db_column_is_null(c, 0)); /* NULL + 1 */
	kiln_db_stmt_done(c);
	kiln_db_stmt_done(b);
	kiln_db_stmt_done(NULL);
	/* More distinct statements than the cache holds still work. */
	for (int i = 0; i < 100; i++) {
		_cleanup_free_ char *sql = xasprintf("SELECT %d", i);
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(kiln_db_prepare(db, sql, &st, &err), 0);
		assert_int_equal(kiln_db_step(st, &err), 1);
		assert_int_equal(kiln_db_column_int64(st, 0), i);
	}
	kiln_db_close(db);
}

/* The forms the service's queries are written in (src/service/), on a
 * table shaped like theirs: they must behave the same on every backend. */
static void test_db_service_query_forms(void **state)
{
	struct dirfx *f = *state;
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_db *db = open_db(f->dir, "q.db");
	assert_int_equal(
	    kiln_db_exec(db,
	                 "CREATE TABLE builds (id TEXT PRIMARY KEY, status TEXT NOT NULL,"
	                 " created_us BIGINT NOT NULL, started_us BIGINT, ctx TEXT);"
	                 "CREATE TABLE secrets (name TEXT PRIMARY KEY, v TEXT)",
	                 &err),
	    0);
	static const char ins[] = "INSERT INTO builds (id, status, created_us, ctx)"
	                          " VALUES ($1, $2, $3, $4)";
	static const struct {
		const char *id, *status;
		int64_t created;
		const char *ctx;
	} rows[] = {
	    {"b", "pending", 20, NULL},
	    {"a", "pending", 20, "c0ffee"},
	    {"c", "pending", 10, NULL},
	    {"d", "completed", 5, NULL},
	};
	for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(kiln_db_prepare(db, ins, &st, &err), 0);
		kiln_db_bind_text(st, 1, rows[i].id);
		kiln_db_bind_text(st, 2, rows[i].status);
		kiln_db_bind_int64(st, 3, rows[i].created);
		kiln_db_bind_text(st, 4, rows[i].ctx); /* NULL binds SQL NULL */
		assert_int_equal(kiln_db_step(st, &err), 0);
	}
	/* The claim: UPDATE ... WHERE id = (oldest pending) ... RETURNING —
	 * oldest first, ties by id, each row claimed once, then none. */
	static const char claim[] = "UPDATE builds SET status = 'building', started_us = $1"
	                            " WHERE id = (SELECT id FROM builds WHERE status = 'pending'"
	                            "  ORDER BY created_us, id LIMIT 1) AND status = 'pending'"
	                            " RETURNING id, ctx";
	static const char *const order[] = {"c", "a", "b"};
	for (size_t i = 0; i <= ELEMENTSOF(order); i++) {
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(kiln_db_begin(db, &err), 0);
		assert_int_equal(kiln_db_prepare(db, claim, &st, &err), 0);
		kiln_db_bind_int64(st, 1, 100 + (int64_t)i);
		int r = kiln_db_step(st, &err);
		if (i == ELEMENTSOF(order)) {
			assert_int_equal(r, 0);
		} else {
			assert_int_equal(r, 1);
			assert_string_equal(kiln_db_column_text(st, 0), order[i]);
			if (strcmp(order[i], "a") == 0)
				assert_string_equal(kiln_db_column_text(st, 1), "c0ffee");
			else
				assert_true(kiln_db_column_is_null(st, 1));
		}
		kiln_db_stmt_done(TAKE_PTR(st));
		assert_int_equal(kiln_db_commit(db, &err), 0);
	}
	assert_int_equal(count(db, "SELECT COUNT(*) FROM builds WHERE status = 'building'"), 3);
	assert_int_equal(count(db, "SELECT started_us FROM builds WHERE id = 'c'"), 100);

	/* A guarded update (cancel: WHERE status = $2) changes 0 rows once the
	 * status moved: kiln_db_changes says so. */
	static const char cancel[] = "UPDATE builds SET status = 'cancelled' WHERE id = $1 AND"
	                             " status = $2";
	for (int i = 0; i < 2; i++) {
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(kiln_db_prepare(db, cancel, &st, &err), 0);
		kiln_db_bind_text(st, 1, "c");
		kiln_db_bind_text(st, 2, "building");
		assert_int_equal(kiln_db_step(st, &err), 0);
		assert_int_equal(kiln_db_changes(db), i == 0 ? 1 : 0);
	}

	/* First opener wins: INSERT ... ON CONFLICT DO NOTHING keeps the first
	 * value and reports 0 changes for the second; a plain INSERT of a
	 * duplicate key is -EEXIST. */
	static const char put[] = "INSERT INTO secrets (name, v) VALUES ($1, $2)"
	                          " ON CONFLICT (name) DO NOTHING";
	static const char *const vals[] = {"first", "second"};
	for (size_t i = 0; i < ELEMENTSOF(vals); i++) {
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(kiln_db_prepare(db, put, &st, &err), 0);
		kiln_db_bind_text(st, 1, "csrf");
		kiln_db_bind_text(st, 2, vals[i]);
		assert_int_equal(kiln_db_step(st, &err), 0);
		assert_int_equal(kiln_db_changes(db), i == 0 ? 1 : 0);
	}
	{
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(
		    kiln_db_prepare(db, "SELECT v FROM secrets WHERE name = $1", &st, &err), 0);
		kiln_db_bind_text(st, 1, "csrf");
		assert_int_equal(kiln_db_step(st, &err), 1);
		assert_string_equal(kiln_db_column_text(st, 0), "first");
	}
	{
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		assert_int_equal(
		    kiln_db_prepare(db, "INSERT INTO secrets (name, v) VALUES ($1, $2)", &st, &err),
		    0);
		kiln_db_bind_text(st, 1, "csrf");
		kiln_db_bind_null(st, 2);
		assert_int_equal(kiln_db_step(st, &err), -EEXIST);
	}
	kiln_db_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_concurrent_put_of_one_blob),
	    cmocka_unit_test_setup_teardown(test_put_stamps_the_blob, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_put_replaces_a_corrupt_blob, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_put_replaces_a_same_size_corruption, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_verified_quarantines, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_verified_rehashes_a_written_blob, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_check_finds_a_disguised_corruption, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_verified_unshares_a_hard_link, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_state_init, dir_setup, dir_teardown),
	    cmocka_unit_test(test_cas_path),
	    cmocka_unit_test_setup_teardown(test_cas_put, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(test_cas_put_refuses, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(test_db_migrations, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(test_db_open, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(test_db_transactions, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(test_db_statement_cache, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(test_db_service_query_forms, dir_setup, dir_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
