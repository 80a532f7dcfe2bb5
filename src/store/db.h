/* store/db.h — the database interface: SQLite (db_sqlite.c, the embedded
 * default) and PostgreSQL (db_pg.c, for several hosts sharing one queue);
 * db.c picks one by URL and runs the migrations on either.
 *
 * Owns: connections, prepared statements (bind / step / column), explicit
 * write transactions and versioned schema migrations. The SQL that callers
 * pass is portable between SQLite (>= 3.35) and PostgreSQL:
 *
 *   - placeholders are $1..$N (PostgreSQL's own form; the SQLite backend
 *     looks each $N up by name, so a parameter may appear in any order or
 *     more than once);
 *   - types are TEXT, BIGINT (Unix microseconds, sizes) and INTEGER (0/1
 *     flags); no AUTOINCREMENT, no SQLite-only functions, no implicit
 *     casts of parameters (`$1 IS NULL` needs a cast in PostgreSQL: build a
 *     second statement instead);
 *   - UPDATE ... RETURNING and INSERT ... ON CONFLICT are allowed (both exist
 *     in SQLite >= 3.35 and PostgreSQL).
 *
 * PostgreSQL: every parameter is sent as text and typed at the first step
 * from how it was bound (text → text, int64 → bigint, NULL → inferred from
 * the statement), so every $N from 1 to the highest must be used and a
 * statement's parameter must be bound the same way each time.
 *
 * Must not: know any table. Thread-safety: a struct kiln_db is one connection
 * that one thread at a time may use (callers serialise with their own lock —
 * the service holds one mutex around every use); statements belong to their
 * connection. Several processes may open the same database (WAL mode and a
 * busy timeout on SQLite). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct kiln_db;
struct kiln_db_stmt;

/* url: "postgresql://..." or "postgres://..." (a libpq connection URI:
 * PostgreSQL), "sqlite:PATH" or a plain PATH (SQLite: creates the file if
 * missing and sets WAL mode, a busy timeout, foreign keys and
 * synchronous=NORMAL). Another "scheme://" is -EPROTONOSUPPORT. */
int kiln_db_open(const char *url, struct kiln_db **ret, struct kiln_error **err);
/* The file of a SQLite URL ("sqlite:PATH" or a plain PATH); NULL for
 * another backend's. Points into url. */
const char *kiln_db_sqlite_path(const char *url);
/* "sqlite" or "postgresql". */
const char *kiln_db_backend(struct kiln_db *db);
struct kiln_db *kiln_db_close(struct kiln_db *db);
static inline void kiln_db_closep(struct kiln_db **db)
{
	kiln_db_close(*db);
}

/* Runs one or more statements without parameters (DDL, migrations). */
int kiln_db_exec(struct kiln_db *db, const char *sql, struct kiln_error **err);

/* Prepares sql, or takes it from the connection's statement cache (keyed by
 * the SQL text), so preparing the same query again is cheap. Give it back
 * with kiln_db_stmt_done (which resets it and clears its bindings). */
int kiln_db_prepare(struct kiln_db *db, const char *sql, struct kiln_db_stmt **ret,
                    struct kiln_error **err);
void kiln_db_stmt_done(struct kiln_db_stmt *st);
static inline void kiln_db_stmt_donep(struct kiln_db_stmt **st)
{
	if (*st)
		kiln_db_stmt_done(*st);
}
#define _cleanup_stmt_ _cleanup_(kiln_db_stmt_donep)

/* $n, 1-based. text NULL binds SQL NULL. A bad index makes the next step
 * fail (-EINVAL). */
void kiln_db_bind_text(struct kiln_db_stmt *st, int n, const char *text);
void kiln_db_bind_int64(struct kiln_db_stmt *st, int n, int64_t v);
void kiln_db_bind_null(struct kiln_db_stmt *st, int n);

/* 1: a row is available; 0: done; <0: -errno — -EEXIST for a constraint
 * violation (unique key), -EAGAIN when the database stayed locked past the
 * busy timeout (PostgreSQL: a serialization failure, deadlock or lock not
 * available), -EIO otherwise (PostgreSQL: also a lost connection). */
int kiln_db_step(struct kiln_db_stmt *st, struct kiln_error **err);
/* Columns of the current row, 0-based. Text is NULL for SQL NULL and valid
 * until the next step or kiln_db_stmt_done. */
const char *kiln_db_column_text(struct kiln_db_stmt *st, int col);
int64_t kiln_db_column_int64(struct kiln_db_stmt *st, int col);
bool kiln_db_column_is_null(struct kiln_db_stmt *st, int col);

/* Rows changed by the last INSERT/UPDATE/DELETE on this connection. */
int64_t kiln_db_changes(struct kiln_db *db);

/* A write transaction. On SQLite BEGIN IMMEDIATE: the write lock is taken at
 * the start, so two processes cannot both read-then-write (and no read lock
 * has to be upgraded, which could fail with SQLITE_BUSY half-way). On
 * PostgreSQL a READ COMMITTED transaction: rows are locked as they are
 * written (or by kiln_db_sql_skip_locked), not the whole database. */
int kiln_db_begin(struct kiln_db *db, struct kiln_error **err);
int kiln_db_commit(struct kiln_db *db, struct kiln_error **err);
void kiln_db_rollback(struct kiln_db *db);

/* The clause a claim's "SELECT ... LIMIT 1" subquery ends with so that
 * concurrent claimers skip each other's row instead of queueing behind it:
 * " FOR UPDATE SKIP LOCKED" on PostgreSQL, "" on SQLite (BEGIN IMMEDIATE
 * already serialises writers). */
const char *kiln_db_sql_skip_locked(struct kiln_db *db);

/* SQLite: this connection's commits no longer run the automatic WAL
 * checkpoint (1,000 pages: three fdatasyncs inside whichever commit crosses
 * it, i.e. inside a request); a thread of the connection's own, on its own
 * connection, runs a PASSIVE checkpoint once a commit has left
 * KILN_DB_CHECKPOINT_PAGES in the WAL (writers go on meanwhile) and a
 * TRUNCATE one after a second without commits, so the WAL stays bounded
 * and is empty when the service is idle. Stopped by kiln_db_close. A no-op
 * on PostgreSQL (the server checkpoints). */
#define KILN_DB_CHECKPOINT_PAGES 256
int kiln_db_checkpoint_in_background(struct kiln_db *db, struct kiln_error **err);

/* Notifications between processes sharing the database (PostgreSQL's
 * LISTEN/NOTIFY). kiln_db_can_notify is false on SQLite: callers poll.
 * notify is a no-op there; inside a transaction it is sent at commit.
 * listen and wait_notify belong on a connection of their own (a listener
 * thread's). wait_notify: 1 with the channel and payload (caller frees),
 * 0 after timeout_ms (-1: none) or when wake_fd (>= 0) became readable. */
bool kiln_db_can_notify(struct kiln_db *db);
int kiln_db_listen(struct kiln_db *db, const char *channel, struct kiln_error **err);
int kiln_db_notify(struct kiln_db *db, const char *channel, const char *payload,
                   struct kiln_error **err);
int kiln_db_wait_notify(struct kiln_db *db, int wake_fd, int timeout_ms, char **ret_channel,
                        char **ret_payload, struct kiln_error **err);

struct kiln_db_migration {
	int version; /* 1, 2, 3... strictly increasing */
	const char *sql;
};
/* Applies, in one transaction, every migration whose version is above the
 * highest in the schema_version table (created if missing). Idempotent;
 * safe against a concurrent opener (the transaction takes the write lock
 * first; PostgreSQL: a transaction-scoped advisory lock). A database newer than the newest
 * migration is refused (-EPROTO). */
int kiln_db_migrate(struct kiln_db *db, const struct kiln_db_migration *m, size_t n,
                    int *ret_version, struct kiln_error **err);
