/* store/db_sqlite.c — the SQLite backend of store/db.h (the default: a
 * single host needs no database server).
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
 *   foreign_keys=ON      artifacts rows cannot outlive their build.
 *
 * Checkpoints (kiln_db_checkpoint_in_background): the service's connection
 * replaces SQLite's automatic checkpoint (run by the commit that crosses
 * 1,000 WAL pages, with its fdatasyncs, inside a request holding the
 * service's lock) by a wal hook that only wakes a checkpointer thread; the
 * thread checkpoints on a connection of its own, so the fsyncs happen while
 * requests go on. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/db_internal.h"
#include "util/alloc.h"

#define STMT_CACHE 64

struct sq_stmt {
	struct kiln_db_stmt base; /* first: store/db_internal.h */
	sqlite3_stmt *st;
	char *sql;   /* cache key (owned) */
	bool cached; /* lives in db->cache; else finalized when done */
	bool in_use;
	int bind_rc; /* first bind failure, reported by the next step */
};

/* The background checkpointer of one connection. mu guards the flags. */
struct sq_ckpt {
	sqlite3 *h; /* its own connection: never used by the owner's threads */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool now;   /* the WAL reached KILN_DB_CHECKPOINT_PAGES: PASSIVE */
	bool dirty; /* commits since the last checkpoint: TRUNCATE when idle */
	bool stop;
	bool restarting;   /* a RESTART is waiting: new transactions wait on gate */
	bool must_restart; /* the WAL passed 2 * CKPT_FORCE_PAGES: the same */
	pthread_cond_t gate;
};

struct sq_db {
	struct kiln_db base; /* first: store/db_internal.h */
	sqlite3 *h;
	struct sq_stmt cache[STMT_CACHE];
	size_t n_cache;
	struct sq_ckpt *ckpt; /* NULL: SQLite's automatic checkpoint */
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

#define DB(d) ((struct sq_db *)(d))
#define ST(s) ((struct sq_stmt *)(s))

static int db_error(struct sq_db *db, int rc, struct kiln_error **err, const char *what)
{
	int r = map_rc(rc);
	return kiln_error_set(err, -r, "database: %s: %s", what, sqlite3_errmsg(db->h));
}

static const struct kiln_db_ops sqlite_ops;

int kiln_db_sqlite_open(const char *path, struct kiln_db **ret, struct kiln_error **err)
{
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
	struct sq_db *db = xcalloc(1, sizeof(*db));
	db->base.ops = &sqlite_ops;
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
			kiln_db_close(&db->base);
			return r;
		}
	}
	*ret = &db->base;
	return 0;
}

/* The WAL file starts over from its beginning only at a write transaction
 * that begins after a checkpoint has copied every frame, which a PASSIVE
 * checkpoint racing a stream of commits (each a few ms of copying and two
 * fdatasyncs) almost never achieves: the WAL would grow without bound.
 * Past this many pages (16 MiB) the checkpointer runs a RESTART one, which
 * waits for the writer in between two transactions and holds the next one
 * back while it copies what the PASSIVE left (a few transactions) and syncs:
 * one wait of a few ms per ~150 cache hits, instead of SQLite's automatic
 * checkpoint of 1,000 pages with its fdatasyncs inside the request every
 * ~75. An idle second ends in TRUNCATE instead. */
#define CKPT_FORCE_PAGES 4096
#define CKPT_IDLE_S 1

/* The checkpointer's busy handler while it waits for the writer lock or
 * for readers (RESTART, TRUNCATE): SQLite's own sleeps 1, 2, 5 ... 100 ms
 * between tries, and new transactions wait on the gate that whole time;
 * 50 µs steps take the lock as soon as it is free. Gives up after ~5 s. */
static int ckpt_busy(void *ud, int n)
{
	(void)ud;
	if (n >= 100000)
		return 0;
	usleep(50);
	return 1;
}

static void ckpt_run(struct sq_ckpt *c, int mode)
{
	int n_log = 0, n_done = 0;
	int rc = sqlite3_wal_checkpoint_v2(c->h, NULL, mode, &n_log, &n_done);
	pthread_mutex_lock(&c->mu);
	bool force = c->must_restart;
	pthread_mutex_unlock(&c->mu);
	if (mode == SQLITE_CHECKPOINT_PASSIVE &&
	    (force || (rc == SQLITE_OK && n_log > CKPT_FORCE_PAGES))) {
		/* The owner's next transaction waits (sq_begin) so that the
		 * RESTART gets the write lock when the current one commits:
		 * otherwise a busy writer retakes it first, every time. */
		pthread_mutex_lock(&c->mu);
		c->restarting = true;
		pthread_mutex_unlock(&c->mu);
		sqlite3_busy_handler(c->h, ckpt_busy, NULL);
		rc = sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_RESTART, &n_log,
		                               &n_done);
		sqlite3_busy_handler(c->h, NULL, NULL);
		pthread_mutex_lock(&c->mu);
		/* Even when it failed (another process's reader in the way for
		 * 5 s): the owner goes on, and its next commit asks again. */
		c->restarting = c->must_restart = false;
		pthread_cond_broadcast(&c->gate);
		pthread_mutex_unlock(&c->mu);
	}
	/* SQLITE_BUSY: a writer or reader was in the way; the next commit or
	 * idle second tries again. */
	if (rc != SQLITE_OK || n_done < n_log) {
		pthread_mutex_lock(&c->mu);
		c->dirty = true;
		pthread_mutex_unlock(&c->mu);
	}
}

static void *ckpt_main(void *ud)
{
	struct sq_ckpt *c = ud;
	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		if (c->now) {
			c->now = false; /* dirty stays: TRUNCATE once idle */
			pthread_mutex_unlock(&c->mu);
			ckpt_run(c, SQLITE_CHECKPOINT_PASSIVE);
			pthread_mutex_lock(&c->mu);
			continue;
		}
		if (!c->dirty) {
			pthread_cond_wait(&c->cond, &c->mu);
			continue;
		}
		c->dirty = false;
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += CKPT_IDLE_S;
		int r = 0;
		while (!c->stop && !c->now && !c->dirty && r == 0)
			r = pthread_cond_timedwait(&c->cond, &c->mu, &ts);
		if (r != ETIMEDOUT || c->stop || c->now || c->dirty)
			continue;
		/* Idle: copy everything and empty the WAL file, so an idle
		 * service leaves a small WAL (and a backup copies little). */
		pthread_mutex_unlock(&c->mu);
		ckpt_run(c, SQLITE_CHECKPOINT_TRUNCATE);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* The owner's commit (any of its threads, under its lock): only a flag and
 * a signal, never I/O. Returning SQLITE_OK keeps the commit's result. */
static int ckpt_wal_hook(void *ud, sqlite3 *h, const char *name, int pages)
{
	(void)h;
	(void)name;
	struct sq_ckpt *c = ud;
	pthread_mutex_lock(&c->mu);
	if (pages >= KILN_DB_CHECKPOINT_PAGES)
		c->now = true;
	/* The checkpointer has not kept up (no CPU for it, on a loaded host):
	 * the owner's next transaction waits for a RESTART, so the WAL stays
	 * bounded by about 2 * CKPT_FORCE_PAGES. */
	if (pages >= 2 * CKPT_FORCE_PAGES)
		c->must_restart = true;
	c->dirty = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
	return SQLITE_OK;
}

static void ckpt_stop(struct sq_db *db)
{
	struct sq_ckpt *c = db->ckpt;
	if (!c)
		return;
	sqlite3_wal_hook(db->h, NULL, NULL);
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thread, NULL);
	sqlite3_close(c->h);
	pthread_cond_destroy(&c->cond);
	pthread_cond_destroy(&c->gate);
	pthread_mutex_destroy(&c->mu);
	free(c);
	db->ckpt = NULL;
}

static int sq_bg_checkpoint(struct kiln_db *d, struct kiln_error **err)
{
	struct sq_db *db = DB(d);
	const char *path = sqlite3_db_filename(db->h, "main");
	if (db->ckpt || !path || !path[0])
		return 0; /* already running, or :memory: (no WAL) */
	struct sq_ckpt *c = xcalloc(1, sizeof(*c));
	int rc = sqlite3_open_v2(path, &c->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		int r = kiln_error_set(err, -map_rc(rc), "database %s: checkpointer: %s", path,
		                       c->h ? sqlite3_errmsg(c->h) : sqlite3_errstr(rc));
		sqlite3_close(c->h);
		free(c);
		return r;
	}
	/* Its own commits (none) must not checkpoint either; it never waits
	 * except when forcing (ckpt_run). */
	sqlite3_exec(c->h, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
	/* Reads the header, so the connection knows the file is in WAL mode
	 * (until then a checkpoint on it is a no-op). */
	sqlite3_exec(c->h, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&c->gate, NULL);
	int r = pthread_create(&c->thread, NULL, ckpt_main, c);
	if (r != 0) {
		sqlite3_close(c->h);
		pthread_cond_destroy(&c->gate);
		pthread_cond_destroy(&c->cond);
		pthread_mutex_destroy(&c->mu);
		free(c);
		return kiln_error_set_errno(err, r, "database %s: checkpointer thread", path);
	}
	db->ckpt = c;
	/* Replaces the automatic checkpoint (which is itself a wal hook). */
	sqlite3_wal_hook(db->h, ckpt_wal_hook, c);
	return 0;
}

static struct kiln_db *sq_close(struct kiln_db *d)
{
	struct sq_db *db = DB(d);
	ckpt_stop(db);
	for (size_t i = 0; i < db->n_cache; i++) {
		sqlite3_finalize(db->cache[i].st);
		free(db->cache[i].sql);
	}
	sqlite3_close(db->h);
	free(db);
	return NULL;
}

static int sq_exec(struct kiln_db *d, const char *sql, struct kiln_error **err)
{
	char *msg = NULL;
	int rc = sqlite3_exec(DB(d)->h, sql, NULL, NULL, &msg);
	if (rc == SQLITE_OK)
		return 0;
	int r = kiln_error_set(err, -map_rc(rc), "database: %s", msg ? msg : sqlite3_errstr(rc));
	sqlite3_free(msg);
	return r;
}

static int sq_prepare(struct kiln_db *d, const char *sql, struct kiln_db_stmt **ret,
                      struct kiln_error **err)
{
	struct sq_db *db = DB(d);
	for (size_t i = 0; i < db->n_cache; i++) {
		struct sq_stmt *c = &db->cache[i];
		if (!c->in_use && strcmp(c->sql, sql) == 0) {
			c->in_use = true;
			c->bind_rc = 0;
			*ret = &c->base;
			return 0;
		}
	}
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
	if (rc != SQLITE_OK)
		return db_error(db, rc, err, "prepare");
	struct sq_stmt *s;
	if (db->n_cache < STMT_CACHE) {
		s = &db->cache[db->n_cache++];
		*s = (struct sq_stmt){{d}, st, xstrdup(sql), true, true, 0};
	} else {
		s = xcalloc(1, sizeof(*s));
		*s = (struct sq_stmt){{d}, st, NULL, false, true, 0};
	}
	*ret = &s->base;
	return 0;
}

static void sq_stmt_done(struct kiln_db_stmt *b)
{
	struct sq_stmt *st = ST(b);
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
static int param_index(struct sq_stmt *st, int n)
{
	char name[16];
	snprintf(name, sizeof(name), "$%d", n);
	int i = sqlite3_bind_parameter_index(st->st, name);
	if (i == 0 && !st->bind_rc)
		st->bind_rc = SQLITE_RANGE;
	return i;
}

static void bind_result(struct sq_stmt *st, int rc)
{
	if (rc != SQLITE_OK && !st->bind_rc)
		st->bind_rc = rc;
}

static void sq_bind_text(struct kiln_db_stmt *b, int n, const char *text)
{
	struct sq_stmt *st = ST(b);
	int i = param_index(st, n);
	if (!i)
		return;
	bind_result(st, text ? sqlite3_bind_text(st->st, i, text, -1, SQLITE_TRANSIENT)
	                     : sqlite3_bind_null(st->st, i));
}

static void sq_bind_int64(struct kiln_db_stmt *b, int n, int64_t v)
{
	struct sq_stmt *st = ST(b);
	int i = param_index(st, n);
	if (i)
		bind_result(st, sqlite3_bind_int64(st->st, i, v));
}

static void sq_bind_null(struct kiln_db_stmt *b, int n)
{
	struct sq_stmt *st = ST(b);
	int i = param_index(st, n);
	if (i)
		bind_result(st, sqlite3_bind_null(st->st, i));
}

static int sq_step(struct kiln_db_stmt *b, struct kiln_error **err)
{
	struct sq_stmt *st = ST(b);
	if (st->bind_rc)
		return db_error(DB(b->db), st->bind_rc, err, "bind");
	int rc = sqlite3_step(st->st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return db_error(DB(b->db), rc, err, "step");
}

static const char *sq_column_text(struct kiln_db_stmt *b, int col)
{
	return (const char *)sqlite3_column_text(ST(b)->st, col);
}

static int64_t sq_column_int64(struct kiln_db_stmt *b, int col)
{
	return sqlite3_column_int64(ST(b)->st, col);
}

static bool sq_column_is_null(struct kiln_db_stmt *b, int col)
{
	return sqlite3_column_type(ST(b)->st, col) == SQLITE_NULL;
}

static int64_t sq_changes(struct kiln_db *d)
{
	return sqlite3_changes64(DB(d)->h);
}

static void sq_rollback(struct kiln_db *d)
{
	if (!sqlite3_get_autocommit(DB(d)->h))
		sqlite3_exec(DB(d)->h, "ROLLBACK", NULL, NULL, NULL);
}

static int sq_begin(struct kiln_db *d, struct kiln_error **err)
{
	struct sq_ckpt *c = DB(d)->ckpt;
	if (c) {
		pthread_mutex_lock(&c->mu);
		while (c->restarting || c->must_restart)
			pthread_cond_wait(&c->gate, &c->mu);
		pthread_mutex_unlock(&c->mu);
	}

	return sq_exec(d, "BEGIN IMMEDIATE", err);
}

static int sq_commit(struct kiln_db *d, struct kiln_error **err)
{
	int r = sq_exec(d, "COMMIT", err);
	if (r < 0)
		sq_rollback(d);
	return r;
}

/* No notifications: another process's submit or cancel is seen by the
 * callers' poll. BEGIN IMMEDIATE already serialises claims, so a claim
 * needs no row lock. */
static const struct kiln_db_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .exec = sq_exec,
    .prepare = sq_prepare,
    .stmt_done = sq_stmt_done,
    .bind_text = sq_bind_text,
    .bind_int64 = sq_bind_int64,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .column_text = sq_column_text,
    .column_int64 = sq_column_int64,
    .column_is_null = sq_column_is_null,
    .changes = sq_changes,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .bg_checkpoint = sq_bg_checkpoint,
    .skip_locked = "",
};

int kiln_db_sqlite_restore(struct kiln_db *d, const char *src, struct kiln_error **err)
{
	if (d->ops != &sqlite_ops)
		return kiln_error_set(err, EINVAL, "database: %s is not SQLite", d->ops->name);
	struct sq_db *db = DB(d);
	sqlite3 *from = NULL;
	int rc = sqlite3_open_v2(src, &from, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		int r = kiln_error_set(err, -map_rc(rc), "%s: %s", src,
		                       from ? sqlite3_errmsg(from) : sqlite3_errstr(rc));
		sqlite3_close(from);
		return r;
	}
	sqlite3_backup *bk = sqlite3_backup_init(db->h, "main", from, "main");
	if (!bk) {
		int r = db_error(db, sqlite3_errcode(db->h), err, "restore");
		sqlite3_close(from);
		return r;
	}
	/* All pages in one step: the destination is locked once, and readers
	 * see the old content or the new, never a mix. */
	rc = sqlite3_backup_step(bk, -1);
	int fin = sqlite3_backup_finish(bk);
	if (rc == SQLITE_DONE)
		rc = fin;
	int r = 0;
	if (rc != SQLITE_OK && rc != SQLITE_DONE)
		r = kiln_error_set(err, -map_rc(rc), "restore from %s: %s", src,
		                   sqlite3_errmsg(db->h)[0] ? sqlite3_errmsg(db->h)
		                                            : sqlite3_errstr(rc));
	sqlite3_close(from);
	return r;
}
