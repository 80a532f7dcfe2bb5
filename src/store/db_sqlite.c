/* store/db_sqlite.c — the SQLite backend of store/db.h.
 *
 * Pragmas and why:
 *   journal_mode=WAL     readers never block the writer and vice versa; the
 *                        CLI (kiln token ...) can use the database while the
 *                        server runs.
 *   synchronous=NORMAL   in WAL mode a commit survives a crash of the process
 *                        (kill -9: the WAL is in the page cache, the kernel
 *                        writes it) and the database is never corrupted; only
 *                        a power loss can drop the last commits. FULL would
 *                        add an fsync to every submit (a cache-hit POST is a
 *                        write) for protection against power loss only.
 *   busy_timeout=5000    another process holding the write lock is waited for
 *                        instead of failing at once.
 *   foreign_keys=ON      artifacts rows cannot outlive their build. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/db.h"
#include "util/alloc.h"

#define STMT_CACHE 64

struct kiln_db_stmt {
	struct kiln_db *db;
	sqlite3_stmt *st;
	char *sql;   /* cache key (owned) */
	bool cached; /* lives in db->cache; else finalized when done */
	bool in_use;
	int bind_rc; /* first bind failure, reported by the next step */
};

struct kiln_db {
	sqlite3 *h;
	struct kiln_db_stmt cache[STMT_CACHE];
	size_t n_cache;
};

static int map_rc(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT: return -EEXIST;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: return -EAGAIN;
	case SQLITE_NOMEM: return -ENOMEM;
	case SQLITE_RANGE:
	case SQLITE_MISUSE: return -EINVAL;
	default: return -EIO;
	}
}

static int db_error(struct kiln_db *db, int rc, struct kiln_error **err, const char *what)
{
	int r = map_rc(rc);
	return kiln_error_set(err, -r, "database: %s: %s", what, sqlite3_errmsg(db->h));
}

int kiln_db_open(const char *url, struct kiln_db **ret, struct kiln_error **err)
{
	const char *path = url;
	if (strncmp(url, "sqlite:", 7) == 0)
		path = url + 7;
	else if (strstr(url, "://"))
		return kiln_error_set(err, EPROTONOSUPPORT,
		                      "database %s: only SQLite is supported in this build", url);
	/* Created 0600 before SQLite does (it would use 0644 less the umask):
	 * the database holds recipes with their secrets, token and session rows
	 * and the CSRF key. SQLite gives the -wal and -shm files the database's
	 * own mode. */
	if (strcmp(path, ":memory:") != 0) {
		int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
		if (fd < 0)
			return kiln_error_set_errno(err, errno, "database %s: cannot open", path);
		close(fd);
	}
	sqlite3 *h = NULL;
	int rc = sqlite3_open_v2(path, &h,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
	                             SQLITE_OPEN_EXRESCODE,
	                         NULL);
	if (rc != SQLITE_OK) {
		int r = kiln_error_set(err, -map_rc(rc), "database %s: %s", path,
		                       h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
		sqlite3_close(h);
		return r;
	}
	struct kiln_db *db = xcalloc(1, sizeof(*db));
	db->h = h;
	sqlite3_busy_timeout(h, 5000);
	static const char *const pragmas[] = {
	    "PRAGMA journal_mode=WAL",
	    "PRAGMA synchronous=NORMAL",
	    "PRAGMA foreign_keys=ON",
	};
	for (size_t i = 0; i < ELEMENTSOF(pragmas); i++) {
		rc = sqlite3_exec(h, pragmas[i], NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			int r = db_error(db, rc, err, pragmas[i]);
			kiln_error_prefix(err, "%s", path);
			kiln_db_close(db);
			return r;
		}
	}
	*ret = db;
	return 0;
}

struct kiln_db *kiln_db_close(struct kiln_db *db)
{
	if (!db)
		return NULL;
	for (size_t i = 0; i < db->n_cache; i++) {
		sqlite3_finalize(db->cache[i].st);
		free(db->cache[i].sql);
	}
	sqlite3_close(db->h);
	free(db);
	return NULL;
}

int kiln_db_exec(struct kiln_db *db, const char *sql, struct kiln_error **err)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db->h, sql, NULL, NULL, &msg);
	if (rc == SQLITE_OK)
		return 0;
	int r = kiln_error_set(err, -map_rc(rc), "database: %s", msg ? msg : sqlite3_errstr(rc));
	sqlite3_free(msg);
	return r;
}

int kiln_db_prepare(struct kiln_db *db, const char *sql, struct kiln_db_stmt **ret,
                    struct kiln_error **err)
{
	for (size_t i = 0; i < db->n_cache; i++) {
		struct kiln_db_stmt *c = &db->cache[i];
		if (!c->in_use && strcmp(c->sql, sql) == 0) {
			c->in_use = true;
			c->bind_rc = 0;
			*ret = c;
			return 0;
		}
	}
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
	if (rc != SQLITE_OK)
		return db_error(db, rc, err, "prepare");
	struct kiln_db_stmt *s;
	if (db->n_cache < STMT_CACHE) {
		s = &db->cache[db->n_cache++];
		*s = (struct kiln_db_stmt){db, st, xstrdup(sql), true, true, 0};
	} else {
		s = xcalloc(1, sizeof(*s));
		*s = (struct kiln_db_stmt){db, st, NULL, false, true, 0};
	}
	*ret = s;
	return 0;
}

void kiln_db_stmt_done(struct kiln_db_stmt *st)
{
	if (!st)
		return;
	if (!st->cached) {
		sqlite3_finalize(st->st);
		free(st);
		return;
	}
	sqlite3_reset(st->st);
	sqlite3_clear_bindings(st->st);
	st->in_use = false;
}

/* "$n" → the statement's parameter index for it. */
static int param_index(struct kiln_db_stmt *st, int n)
{
	char name[16];
	snprintf(name, sizeof(name), "$%d", n);
	int i = sqlite3_bind_parameter_index(st->st, name);
	if (i == 0 && !st->bind_rc)
		st->bind_rc = SQLITE_RANGE;
	return i;
}

static void bind_result(struct kiln_db_stmt *st, int rc)
{
	if (rc != SQLITE_OK && !st->bind_rc)
		st->bind_rc = rc;
}

void kiln_db_bind_text(struct kiln_db_stmt *st, int n, const char *text)
{
	int i = param_index(st, n);
	if (!i)
		return;
	bind_result(st, text ? sqlite3_bind_text(st->st, i, text, -1, SQLITE_TRANSIENT)
	                     : sqlite3_bind_null(st->st, i));
}

void kiln_db_bind_int64(struct kiln_db_stmt *st, int n, int64_t v)
{
	int i = param_index(st, n);
	if (i)
		bind_result(st, sqlite3_bind_int64(st->st, i, v));
}

void kiln_db_bind_null(struct kiln_db_stmt *st, int n)
{
	int i = param_index(st, n);
	if (i)
		bind_result(st, sqlite3_bind_null(st->st, i));
}

int kiln_db_step(struct kiln_db_stmt *st, struct kiln_error **err)
{
	if (st->bind_rc)
		return db_error(st->db, st->bind_rc, err, "bind");
	int rc = sqlite3_step(st->st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return db_error(st->db, rc, err, "step");
}

const char *kiln_db_column_text(struct kiln_db_stmt *st, int col)
{
	return (const char *)sqlite3_column_text(st->st, col);
}

int64_t kiln_db_column_int64(struct kiln_db_stmt *st, int col)
{
	return sqlite3_column_int64(st->st, col);
}

bool kiln_db_column_is_null(struct kiln_db_stmt *st, int col)
{
	return sqlite3_column_type(st->st, col) == SQLITE_NULL;
}

int64_t kiln_db_changes(struct kiln_db *db)
{
	return sqlite3_changes64(db->h);
}

int kiln_db_begin(struct kiln_db *db, struct kiln_error **err)
{
	return kiln_db_exec(db, "BEGIN IMMEDIATE", err);
}

int kiln_db_commit(struct kiln_db *db, struct kiln_error **err)
{
	int r = kiln_db_exec(db, "COMMIT", err);
	if (r < 0)
		kiln_db_rollback(db);
	return r;
}

void kiln_db_rollback(struct kiln_db *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

static int current_version(struct kiln_db *db, int *ret, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(db, "SELECT MAX(version) FROM schema_version", &st, err);
	if (r < 0)
		return r;
	r = kiln_db_step(st, err);
	if (r < 0)
		return r;
	*ret = (r == 1 && !kiln_db_column_is_null(st, 0)) ? (int)kiln_db_column_int64(st, 0) : 0;
	return 0;
}

int kiln_db_migrate(struct kiln_db *db, const struct kiln_db_migration *m, size_t n,
                    int *ret_version, struct kiln_error **err)
{
	int r = kiln_db_begin(db, err);
	if (r < 0)
		return r;
	int version = 0;
	r = kiln_db_exec(db,
	                 "CREATE TABLE IF NOT EXISTS schema_version ("
	                 " version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)",
	                 err);
	if (r == 0)
		r = current_version(db, &version, err);
	if (r == 0 && n > 0 && version > m[n - 1].version)
		r = kiln_error_set(err, EPROTO,
		                   "database schema version %d is newer than this kiln knows (%d)",
		                   version, m[n - 1].version);
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (m[i].version <= version)
			continue;
		r = kiln_db_exec(db, m[i].sql, err);
		if (r < 0) {
			kiln_error_prefix(err, "migration %d", m[i].version);
			break;
		}
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		r = kiln_db_prepare(db,
		                    "INSERT INTO schema_version (version, applied_us)"
		                    " VALUES ($1, $2)",
		                    &st, err);
		if (r == 0) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			kiln_db_bind_int64(st, 1, m[i].version);
			kiln_db_bind_int64(st, 2, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
			r = kiln_db_step(st, err);
		}
		if (r == 0)
			version = m[i].version;
	}
	if (r < 0) {
		kiln_db_rollback(db);
		return r;
	}
	r = kiln_db_commit(db, err);
	if (r == 0 && ret_version)
		*ret_version = version;
	return r;
}
