/* store/db.c — the front of store/db.h: picks a backend by URL, dispatches
 * every call through its table, and runs the migrations (the same code and
 * the same SQL on every backend). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "store/db_internal.h"
#include "util/alloc.h"

/* Which backend a URL names. The prefix table is the whole syntax. */
static const struct {
	const char *prefix;
	bool strip; /* the backend gets the URL without the prefix */
	int (*open)(const char *url, struct kiln_db **ret, struct kiln_error **err);
} schemes[] = {
    {"postgresql://", false, kiln_db_pg_open},
    {"postgres://", false, kiln_db_pg_open},
    {"sqlite:", true, kiln_db_sqlite_open},
};

int kiln_db_open(const char *url, struct kiln_db **ret, struct kiln_error **err)
{
	if (!url || !*url)
		return kiln_error_set(err, EINVAL, "database: empty URL");
	for (size_t i = 0; i < ELEMENTSOF(schemes); i++) {
		size_t n = strlen(schemes[i].prefix);
		if (strncmp(url, schemes[i].prefix, n) == 0)
			return schemes[i].open(schemes[i].strip ? url + n : url, ret, err);
	}
	if (strstr(url, "://"))
		return kiln_error_set(
		    err, EPROTONOSUPPORT,
		    "database %s: unknown scheme (postgresql://... or sqlite:PATH)", url);
	return kiln_db_sqlite_open(url, ret, err);
}

const char *kiln_db_sqlite_path(const char *url)
{
	for (size_t i = 0; i < ELEMENTSOF(schemes); i++) {
		size_t n = strlen(schemes[i].prefix);
		if (strncmp(url, schemes[i].prefix, n) == 0)
			return schemes[i].open == kiln_db_sqlite_open ? url + n : NULL;
	}
	return strstr(url, "://") ? NULL : url;
}

const char *kiln_db_backend(struct kiln_db *db)
{
	return db->ops->name;
}

struct kiln_db *kiln_db_close(struct kiln_db *db)
{
	return db ? db->ops->close(db) : NULL;
}

int kiln_db_exec(struct kiln_db *db, const char *sql, struct kiln_error **err)
{
	return db->ops->exec(db, sql, err);
}

int kiln_db_prepare(struct kiln_db *db, const char *sql, struct kiln_db_stmt **ret,
                    struct kiln_error **err)
{
	return db->ops->prepare(db, sql, ret, err);
}

void kiln_db_stmt_done(struct kiln_db_stmt *st)
{
	if (st)
		st->db->ops->stmt_done(st);
}

void kiln_db_bind_text(struct kiln_db_stmt *st, int n, const char *text)
{
	st->db->ops->bind_text(st, n, text);
}

void kiln_db_bind_int64(struct kiln_db_stmt *st, int n, int64_t v)
{
	st->db->ops->bind_int64(st, n, v);
}

void kiln_db_bind_null(struct kiln_db_stmt *st, int n)
{
	st->db->ops->bind_null(st, n);
}

int kiln_db_step(struct kiln_db_stmt *st, struct kiln_error **err)
{
	return st->db->ops->step(st, err);
}

const char *kiln_db_column_text(struct kiln_db_stmt *st, int col)
{
	return st->db->ops->column_text(st, col);
}

int64_t kiln_db_column_int64(struct kiln_db_stmt *st, int col)
{
	return st->db->ops->column_int64(st, col);
}

bool kiln_db_column_is_null(struct kiln_db_stmt *st, int col)
{
	return st->db->ops->column_is_null(st, col);
}

int64_t kiln_db_changes(struct kiln_db *db)
{
	return db->ops->changes(db);
}

int kiln_db_begin(struct kiln_db *db, struct kiln_error **err)
{
	return db->ops->begin(db, err);
}

int kiln_db_commit(struct kiln_db *db, struct kiln_error **err)
{
	return db->ops->commit(db, err);
}

void kiln_db_rollback(struct kiln_db *db)
{
	db->ops->rollback(db);
}

const char *kiln_db_sql_skip_locked(struct kiln_db *db)
{
	return db->ops->skip_locked;
}

int kiln_db_checkpoint_in_background(struct kiln_db *db, struct kiln_error **err)
{
	return db->ops->bg_checkpoint ? db->ops->bg_checkpoint(db, err) : 0;
}

bool kiln_db_can_notify(struct kiln_db *db)
{
	return db->ops->listen != NULL;
}

int kiln_db_listen(struct kiln_db *db, const char *channel, struct kiln_error **err)
{
	if (!db->ops->listen)
		return kiln_error_set(err, EOPNOTSUPP, "database: %s has no notifications",
		                      db->ops->name);
	return db->ops->listen(db, channel, err);
}

int kiln_db_notify(struct kiln_db *db, const char *channel, const char *payload,
                   struct kiln_error **err)
{
	return db->ops->notify ? db->ops->notify(db, channel, payload ? payload : "", err) : 0;
}

int kiln_db_wait_notify(struct kiln_db *db, int wake_fd, int timeout_ms, char **ret_channel,
                        char **ret_payload, struct kiln_error **err)
{
	if (!db->ops->wait_notify)
		return kiln_error_set(err, EOPNOTSUPP, "database: %s has no notifications",
		                      db->ops->name);
	return db->ops->wait_notify(db, wake_fd, timeout_ms, ret_channel, ret_payload, err);
}

/* ---- migrations ---------------------------------------------------------------- */

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
	if (db->ops->lock_schema)
		r = db->ops->lock_schema(db, err);
	if (r == 0)
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
