/* store/db_internal.h — what store/db.c (the front) and the backends share.
 *
 * Each backend fills one table of operations; struct kiln_db and struct
 * kiln_db_stmt are the first member of the backend's own structs, so the
 * front dispatches through db->ops without knowing which backend it holds.
 * Not public: callers see only store/db.h. */
#pragma once

#include "store/db.h"

struct kiln_db_ops {
	const char *name; /* "sqlite", "postgresql": for messages */
	struct kiln_db *(*close)(struct kiln_db *db);
	int (*exec)(struct kiln_db *db, const char *sql, struct kiln_error **err);
	int (*prepare)(struct kiln_db *db, const char *sql, struct kiln_db_stmt **ret,
	               struct kiln_error **err);
	void (*stmt_done)(struct kiln_db_stmt *st);
	void (*bind_text)(struct kiln_db_stmt *st, int n, const char *text);
	void (*bind_int64)(struct kiln_db_stmt *st, int n, int64_t v);
	void (*bind_null)(struct kiln_db_stmt *st, int n);
	int (*step)(struct kiln_db_stmt *st, struct kiln_error **err);
	const char *(*column_text)(struct kiln_db_stmt *st, int col);
	int64_t (*column_int64)(struct kiln_db_stmt *st, int col);
	bool (*column_is_null)(struct kiln_db_stmt *st, int col);
	int64_t (*changes)(struct kiln_db *db);
	int (*begin)(struct kiln_db *db, struct kiln_error **err);
	int (*commit)(struct kiln_db *db, struct kiln_error **err);
	void (*rollback)(struct kiln_db *db);
	/* Inside the migration's transaction, before schema_version is read:
	 * makes concurrent migrators wait for each other (NULL: begin already
	 * does, as SQLite's BEGIN IMMEDIATE). */
	int (*lock_schema)(struct kiln_db *db, struct kiln_error **err);
	/* NULL when the backend has no notifications (callers poll). */
	int (*listen)(struct kiln_db *db, const char *channel, struct kiln_error **err);
	int (*notify)(struct kiln_db *db, const char *channel, const char *payload,
	              struct kiln_error **err);
	int (*wait_notify)(struct kiln_db *db, int wake_fd, int timeout_ms, char **ret_channel,
	                   char **ret_payload, struct kiln_error **err);
	/* kiln_db_checkpoint_in_background; NULL: nothing to do (PostgreSQL). */
	int (*bg_checkpoint)(struct kiln_db *db, struct kiln_error **err);
	/* The row-locking clause a claim's subquery ends with ("" if none). */
	const char *skip_locked;
};

struct kiln_db {
	const struct kiln_db_ops *ops;
};

struct kiln_db_stmt {
	struct kiln_db *db;
};

int kiln_db_sqlite_open(const char *path, struct kiln_db **ret, struct kiln_error **err);
/* Replaces the content of the SQLite database db with that of the SQLite
 * file at src (the online backup API, into db: one write transaction, which
 * other connections to db see as any other). -EINVAL when db is not SQLite. */
int kiln_db_sqlite_restore(struct kiln_db *db, const char *src, struct kiln_error **err);
/* Defined only when kiln-full is built with libpq (always, in meson.build);
 * the declaration keeps db.c free of #ifdefs. */
int kiln_db_pg_open(const char *url, struct kiln_db **ret, struct kiln_error **err);
