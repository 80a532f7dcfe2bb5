/* store/db_pg.c — the PostgreSQL backend of store/db.h (libpq), for several
 * kiln hosts sharing one queue.
 *
 * Statements are prepared on the server once per connection (named "k<N>",
 * cached by SQL text like the SQLite backend) at their first step, when the
 * bindings say each parameter's type: text → text, int64 → int8, NULL →
 * left to the server to infer from the statement. Values travel as text,
 * results come back as text; int64 columns are parsed with a checked parser.
 *
 * A lost connection (server restart, network) is reset once, outside a
 * transaction, and the statement re-prepared: a long-running kiln serve
 * survives a database failover without a restart. Inside a transaction the
 * error is returned (-EIO) and the caller's rollback ends it.
 *
 * Error mapping (SQLSTATE classes): 23xxx integrity constraint → -EEXIST;
 * 40001 serialization failure, 40P01 deadlock, 55P03 lock not available →
 * -EAGAIN; everything else → -EIO. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "store/db_internal.h"
#include "util/alloc.h"
#include "util/parse.h"

#define STMT_CACHE 64
#define MAX_PARAMS 32

/* The key of the advisory lock that serialises migrations (any constant
 * that no other application on the same database uses: "kiln" in ASCII). */
#define MIGRATION_LOCK "1802071150"

/* pg_type OIDs (catalog/pg_type_d.h, stable since PostgreSQL 7). */
#define OID_INT8 20
#define OID_TEXT 25

struct pg_stmt {
	struct kiln_db_stmt base; /* first: store/db_internal.h */
	char *sql;
	char name[16];
	unsigned gen; /* connection generation it was prepared on; 0: never */
	bool cached, in_use;
	int n_params; /* highest $N bound */
	char *values[MAX_PARAMS];
	Oid types[MAX_PARAMS];
	int bind_rc;
	PGresult *res;
	int row, n_rows;
};

struct pg_db {
	struct kiln_db base; /* first: store/db_internal.h */
	PGconn *c;
	unsigned gen; /* bumped by every reset: named statements are gone */
	unsigned next_name;
	int64_t changes;
	struct pg_stmt cache[STMT_CACHE];
	size_t n_cache;
};

#define DB(d) ((struct pg_db *)(d))
#define ST(s) ((struct pg_stmt *)(s))

static const struct kiln_db_ops pg_ops;

/* SQLSTATE → -errno; the first match wins, "23" matches a whole class. */
static const struct {
	const char *state;
	int code;
} state_map[] = {
    {"23", -EEXIST},    {"40001", -EAGAIN}, {"40P01", -EAGAIN},
    {"55P03", -EAGAIN}, {"53300", -EAGAIN}, /* too many connections */
};

static int map_state(const char *state)
{
	for (size_t i = 0; state && i < ELEMENTSOF(state_map); i++)
		if (strncmp(state, state_map[i].state, strlen(state_map[i].state)) == 0)
			return state_map[i].code;
	return -EIO;
}

/* A libpq message without its trailing newline. */
static int set_msg(struct kiln_error **err, int code, const char *what, const char *msg)
{
	size_t n = msg ? strlen(msg) : 0;
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		n--;
	return kiln_error_set(err, -code, "database: %s: %.*s", what, (int)n,
	                      msg ? msg : "unknown error");
}

static int result_error(struct pg_db *db, PGresult *res, struct kiln_error **err, const char *what)
{
	if (!res)
		return set_msg(err, -EIO, what, PQerrorMessage(db->c));
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	return set_msg(err, map_state(state), what, msg ? msg : PQerrorMessage(db->c));
}

static bool result_ok(PGresult *res)
{
	ExecStatusType t = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	return t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK;
}

/* The server's NOTICEs ("relation ... already exists, skipping") are not
 * the user's business: a library never prints (STYLE.md §1). */
static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

int kiln_db_pg_open(const char *url, struct kiln_db **ret, struct kiln_error **err)
{
	PGconn *c = PQconnectdb(url);
	if (!c)
		return kiln_error_set(err, ENOMEM, "database: out of memory");
	if (PQstatus(c) != CONNECTION_OK) {
		int r = set_msg(err, -EIO, "cannot connect", PQerrorMessage(c));
		PQfinish(c);
		return r;
	}
	PQsetNoticeProcessor(c, quiet, NULL);
	struct pg_db *db = xcalloc(1, sizeof(*db));
	db->base.ops = &pg_ops;
	db->c = c;
	db->gen = 1;
	*ret = &db->base;
	return 0;
}

static void stmt_clear(struct pg_stmt *st)
{
	for (int i = 0; i < st->n_params; i++) {
		free(st->values[i]);
		st->values[i] = NULL;
		st->types[i] = 0;
	}
	st->n_params = 0;
	st->bind_rc = 0;
	PQclear(st->res);
	st->res = NULL;
	st->row = st->n_rows = 0;
}

static struct kiln_db *pg_close(struct kiln_db *d)
{
	struct pg_db *db = DB(d);
	for (size_t i = 0; i < db->n_cache; i++) {
		stmt_clear(&db->cache[i]);
		free(db->cache[i].sql);
	}
	PQfinish(db->c);
	free(db);
	return NULL;
}

/* After a lost connection, outside a transaction: reconnect once. */
static bool try_reset(struct pg_db *db)
{
	if (PQstatus(db->c) != CONNECTION_BAD)
		return false;
	PQreset(db->c);
	if (PQstatus(db->c) != CONNECTION_OK)
		return false;
	db->gen++;
	return true;
}

static int pg_exec(struct kiln_db *d, const char *sql, struct kiln_error **err)
{
	struct pg_db *db = DB(d);
	PGresult *res = PQexec(db->c, sql);
	if (!result_ok(res) && PQtransactionStatus(db->c) == PQTRANS_UNKNOWN && try_reset(db)) {
		PQclear(res);
		res = PQexec(db->c, sql);
	}
	int r = result_ok(res) ? 0 : result_error(db, res, err, "exec");
	PQclear(res);
	return r;
}

static int pg_prepare(struct kiln_db *d, const char *sql, struct kiln_db_stmt **ret,
                      struct kiln_error **err)
{
	(void)err;
	struct pg_db *db = DB(d);
	for (size_t i = 0; i < db->n_cache; i++) {
		struct pg_stmt *c = &db->cache[i];
		if (!c->in_use && strcmp(c->sql, sql) == 0) {
			c->in_use = true;
			*ret = &c->base;
			return 0;
		}
	}
	struct pg_stmt *s;
	if (db->n_cache < STMT_CACHE) {
		s = &db->cache[db->n_cache++];
		*s = (struct pg_stmt){.base = {d}, .cached = true};
		snprintf(s->name, sizeof(s->name), "k%u", db->next_name++);
	} else {
		/* Past the cache: an unnamed one-shot PQexecParams. */
		s = xcalloc(1, sizeof(*s));
		s->base.db = d;
	}
	s->sql = xstrdup(sql);
	s->in_use = true;
	*ret = &s->base;
	return 0;
}

static void pg_stmt_done(struct kiln_db_stmt *b)
{
	struct pg_stmt *st = ST(b);
	stmt_clear(st);
	if (!st->cached) {
		free(st->sql);
		free(st);
		return;
	}
	st->in_use = false;
}

static void bind(struct pg_stmt *st, int n, char *value, Oid type)
{
	if (n < 1 || n > MAX_PARAMS) {
		free(value);
		if (!st->bind_rc)
			st->bind_rc = -EINVAL;
		return;
	}
	free(st->values[n - 1]);
	st->values[n - 1] = value;
	st->types[n - 1] = type;
	if (n > st->n_params)
		st->n_params = n;
}

static void pg_bind_text(struct kiln_db_stmt *b, int n, const char *text)
{
	bind(ST(b), n, text ? xstrdup(text) : NULL, text ? OID_TEXT : 0);
}

static void pg_bind_int64(struct kiln_db_stmt *b, int n, int64_t v)
{
	bind(ST(b), n, xasprintf("%lld", (long long)v), OID_INT8);
}

static void pg_bind_null(struct kiln_db_stmt *b, int n)
{
	bind(ST(b), n, NULL, 0);
}

static PGresult *execute(struct pg_db *db, struct pg_stmt *st)
{
	const char *const *v = (const char *const *)st->values;
	if (!st->cached)
		return PQexecParams(db->c, st->sql, st->n_params, st->types, v, NULL, NULL, 0);
	if (st->gen != db->gen) {
		PGresult *p = PQprepare(db->c, st->name, st->sql, st->n_params, st->types);
		if (!result_ok(p))
			return p;
		PQclear(p);
		st->gen = db->gen;
	}
	return PQexecPrepared(db->c, st->name, st->n_params, v, NULL, NULL, 0);
}

static int pg_step(struct kiln_db_stmt *b, struct kiln_error **err)
{
	struct pg_stmt *st = ST(b);
	struct pg_db *db = DB(b->db);
	if (st->bind_rc)
		return kiln_error_set(err, -st->bind_rc, "database: bind: parameter out of range");
	if (st->res) {
		if (st->row + 1 < st->n_rows) {
			st->row++;
			return 1;
		}
		st->row = st->n_rows;
		return 0;
	}
	PGresult *res = execute(db, st);
	if (!result_ok(res) && PQtransactionStatus(db->c) == PQTRANS_UNKNOWN && try_reset(db)) {
		PQclear(res);
		res = execute(db, st);
	}
	if (!result_ok(res)) {
		int r = result_error(db, res, err, "step");
		PQclear(res);
		return r;
	}
	int64_t changes = 0;
	const char *tuples = PQcmdTuples(res);
	if (tuples && *tuples && kiln_parse_i64(tuples, 0, INT64_MAX, &changes) < 0)
		changes = 0;
	db->changes = changes;
	st->res = res;
	st->n_rows = PQntuples(res);
	st->row = 0;
	return st->n_rows > 0 ? 1 : 0;
}

static bool has_cell(struct pg_stmt *st, int col)
{
	return st->res && st->row < st->n_rows && col >= 0 && col < PQnfields(st->res) &&
	       !PQgetisnull(st->res, st->row, col);
}

static const char *pg_column_text(struct kiln_db_stmt *b, int col)
{
	struct pg_stmt *st = ST(b);
	return has_cell(st, col) ? PQgetvalue(st->res, st->row, col) : NULL;
}

static int64_t pg_column_int64(struct kiln_db_stmt *b, int col)
{
	struct pg_stmt *st = ST(b);
	int64_t v = 0;
	if (has_cell(st, col) &&
	    kiln_parse_i64(PQgetvalue(st->res, st->row, col), INT64_MIN, INT64_MAX, &v) < 0)
		v = 0;
	return v;
}

static bool pg_column_is_null(struct kiln_db_stmt *b, int col)
{
	return !has_cell(ST(b), col);
}

static int64_t pg_changes(struct kiln_db *d)
{
	return DB(d)->changes;
}

static int pg_begin(struct kiln_db *d, struct kiln_error **err)
{
	return pg_exec(d, "BEGIN", err);
}

static void pg_rollback(struct kiln_db *d)
{
	if (PQtransactionStatus(DB(d)->c) != PQTRANS_IDLE)
		PQclear(PQexec(DB(d)->c, "ROLLBACK"));
}

static int pg_commit(struct kiln_db *d, struct kiln_error **err)
{
	struct pg_db *db = DB(d);
	PGresult *res = PQexec(db->c, "COMMIT");
	int r = 0;
	if (!result_ok(res))
		r = result_error(db, res, err, "commit");
	else if (strcmp(PQcmdStatus(res), "ROLLBACK") == 0)
		/* COMMIT of a transaction that had failed answers "ROLLBACK". */
		r = kiln_error_set(err, EIO, "database: commit: the transaction was rolled back");
	PQclear(res);
	if (r < 0)
		pg_rollback(d);
	return r;
}

static int pg_lock_schema(struct kiln_db *d, struct kiln_error **err)
{
	return pg_exec(d, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")", err);
}

static int pg_listen(struct kiln_db *d, const char *channel, struct kiln_error **err)
{
	struct pg_db *db = DB(d);
	char *id = PQescapeIdentifier(db->c, channel, strlen(channel));
	if (!id)
		return set_msg(err, -EINVAL, "listen", PQerrorMessage(db->c));
	_cleanup_free_ char *sql = xasprintf("LISTEN %s", id);
	PQfreemem(id);
	return pg_exec(d, sql, err);
}

static int pg_notify(struct kiln_db *d, const char *channel, const char *payload,
                     struct kiln_error **err)
{
	struct pg_db *db = DB(d);
	const char *v[2] = {channel, payload};
	Oid t[2] = {OID_TEXT, OID_TEXT};
	PGresult *res = PQexecParams(db->c, "SELECT pg_notify($1, $2)", 2, t, v, NULL, NULL, 0);
	int r = result_ok(res) ? 0 : result_error(db, res, err, "notify");
	PQclear(res);
	return r;
}

static int pg_wait_notify(struct kiln_db *d, int wake_fd, int timeout_ms, char **ret_channel,
                          char **ret_payload, struct kiln_error **err)
{
	struct pg_db *db = DB(d);
	for (;;) {
		if (!PQconsumeInput(db->c))
			return set_msg(err, -EIO, "listen", PQerrorMessage(db->c));
		PGnotify *n = PQnotifies(db->c);
		if (n) {
			*ret_channel = xstrdup(n->relname);
			*ret_payload = xstrdup(n->extra ? n->extra : "");
			PQfreemem(n);
			return 1;
		}
		struct pollfd p[2] = {{PQsocket(db->c), POLLIN, 0}, {wake_fd, POLLIN, 0}};
		int r = poll(p, wake_fd >= 0 ? 2 : 1, timeout_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return kiln_error_set_errno(err, errno, "database: listen: poll");
		if (r == 0 || (wake_fd >= 0 && p[1].revents))
			return 0;
	}
}

static const struct kiln_db_ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .exec = pg_exec,
    .prepare = pg_prepare,
    .stmt_done = pg_stmt_done,
    .bind_text = pg_bind_text,
    .bind_int64 = pg_bind_int64,
    .bind_null = pg_bind_null,
    .step = pg_step,
    .column_text = pg_column_text,
    .column_int64 = pg_column_int64,
    .column_is_null = pg_column_is_null,
    .changes = pg_changes,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .lock_schema = pg_lock_schema,
    .listen = pg_listen,
    .notify = pg_notify,
    .wait_notify = pg_wait_notify,
    .skip_locked = " FOR UPDATE SKIP LOCKED",
};
