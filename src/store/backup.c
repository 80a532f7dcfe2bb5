/* store/backup.c — backups of the database: see store/backup.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "store/backup.h"
#include "store/db_internal.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/macros.h"
#include "util/sha256.h"

#define MANIFEST_FORMAT "kiln-backup-1"
#define MANIFEST_MAX (1u << 20)
/* "kiln-" + "YYYYmmddTHHMMSSZ" */
#define STAMP_LEN 16

/* The dump's extension per backend: the manifest names the backend, the
 * extension follows from it, so a backup renamed as a whole stays whole. */
static const struct {
	const char *backend;
	const char *ext;
} dump_ext[] = {
    {"sqlite", ".sqlite"},
    {"postgresql", ".pgdump"},
};

static const char *ext_of(const char *backend)
{
	for (size_t i = 0; i < ELEMENTSOF(dump_ext); i++)
		if (strcmp(dump_ext[i].backend, backend) == 0)
			return dump_ext[i].ext;
	return NULL;
}

struct kiln_backup *kiln_backup_free(struct kiln_backup *b)
{
	if (!b)
		return NULL;
	free(b->manifest_path);
	free(b->dump_path);
	free(b->kiln_version);
	free(b->backend);
	for (size_t i = 0; i < b->n_tables; i++)
		free(b->tables[i].name);
	free(b->tables);
	free(b);
	return NULL;
}

void kiln_backup_list_free(struct kiln_backup **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		kiln_backup_free(v[i]);
	free(v);
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "kiln-YYYYmmddTHHMMSSZ..." → Unix microseconds, or -1. */
static int64_t stamp_parse(const char *name)
{
	static const char shape[] = "ddddddddTddddddZ";
	if (strncmp(name, "kiln-", 5) != 0)
		return -1;
	const char *s = name + 5;
	int v[STAMP_LEN];
	for (size_t i = 0; i < STAMP_LEN; i++) {
		if (shape[i] == 'd') {
			if (s[i] < '0' || s[i] > '9')
				return -1;
			v[i] = s[i] - '0';
		} else if (s[i] != shape[i]) {
			return -1;
		}
	}
	struct tm tm = {
	    .tm_year = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3] - 1900,
	    .tm_mon = v[4] * 10 + v[5] - 1,
	    .tm_mday = v[6] * 10 + v[7],
	    .tm_hour = v[9] * 10 + v[10],
	    .tm_min = v[11] * 10 + v[12],
	    .tm_sec = v[13] * 10 + v[14],
	};
	if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
	    tm.tm_min > 59 || tm.tm_sec > 60)
		return -1;
	return (int64_t)timegm(&tm) * 1000000;
}

static int fsync_path(const char *path, int flags)
{
	_cleanup_close_ int fd = open(path, flags | O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fsync(fd) < 0)
		return -errno;
	return 0;
}

/* ---- the catalog: which tables, how many rows ------------------------------------ */

static const struct {
	const char *backend;
	const char *tables_sql;
} catalog[] = {
    {"sqlite", "SELECT name FROM sqlite_master WHERE type = 'table'"
               " AND name NOT LIKE 'sqlite_%' ORDER BY name"},
    {"postgresql", "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                   " ORDER BY tablename"},
};

static void tables_free(struct kiln_backup_table *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(t[i].name);
	free(t);
}

/* Every table of db's schema with its row count, by name. */
static int count_rows(struct kiln_db *db, struct kiln_backup_table **ret, size_t *ret_n,
                      struct kiln_error **err)
{
	const char *sql = NULL;
	for (size_t i = 0; i < ELEMENTSOF(catalog); i++)
		if (strcmp(catalog[i].backend, kiln_db_backend(db)) == 0)
			sql = catalog[i].tables_sql;
	if (!sql)
		return kiln_error_set(err, EOPNOTSUPP, "backup: no catalog query for %s",
		                      kiln_db_backend(db));
	struct kiln_backup_table *t = NULL;
	size_t n = 0;
	int r;
	{
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		r = kiln_db_prepare(db, sql, &st, err);
		while (r == 0 && (r = kiln_db_step(st, err)) == 1) {
			t = xreallocarray(t, n + 1, sizeof(*t));
			t[n++] = (struct kiln_backup_table){xstrdup(kiln_db_column_text(st, 0)), 0};
			r = 0;
		}
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		/* The name comes from the catalog; quoted all the same, with any
		 * quote doubled, as an identifier. */
		_cleanup_buf_ struct kiln_buf q = KILN_BUF_INIT;
		kiln_buf_puts(&q, "SELECT COUNT(*) FROM \"");
		for (const char *c = t[i].name; *c; c++) {
			if (*c == '"')
				kiln_buf_putc(&q, '"');
			kiln_buf_putc(&q, *c);
		}
		kiln_buf_putc(&q, '"');
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		r = kiln_db_prepare(db, q.data, &st, err);
		if (r == 0 && (r = kiln_db_step(st, err)) == 1) {
			t[i].rows = kiln_db_column_int64(st, 0);
			r = 0;
		} else if (r == 0) {
			r = kiln_error_set(err, EIO, "backup: counting %s returned no row",
			                   t[i].name);
		}
	}
	if (r < 0) {
		tables_free(t, n);
		return r;
	}
	*ret = t;
	*ret_n = n;
	return 0;
}

static int schema_version(struct kiln_db *db, const struct kiln_backup_table *t, size_t n, int *ret,
                          struct kiln_error **err)
{
	bool found = false;
	for (size_t i = 0; i < n; i++)
		found = found || strcmp(t[i].name, "schema_version") == 0;
	*ret = 0;
	if (!found)
		return 0;
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(db, "SELECT MAX(version) FROM schema_version", &st, err);
	if (r == 0 && (r = kiln_db_step(st, err)) == 1) {
		*ret = kiln_db_column_is_null(st, 0) ? 0 : (int)kiln_db_column_int64(st, 0);
		r = 0;
	}
	return r;
}

/* ---- PostgreSQL: URLs and the client tools --------------------------------------- */

static void pct_encode(struct kiln_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
			kiln_buf_putc(b, (char)*p);
		} else {
			kiln_buf_putc(b, '%');
			kiln_buf_putc(b, hex[*p >> 4]);
			kiln_buf_putc(b, hex[*p & 15]);
		}
	}
}

/* url as a libpq URI with every parameter in the query string, the
 * database replaced by dbname (when not NULL) and the password taken out
 * into *ret_password (NULL if none): the client tools get it through
 * PGPASSWORD, not on a command line that every local user can read in
 * /proc. */
static int pg_url(const char *url, const char *dbname, char **ret_url, char **ret_password,
                  struct kiln_error **err)
{
	char *msg = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &msg);
	if (!opts) {
		int r = kiln_error_set(err, EINVAL, "database %s: %s", url,
		                       msg ? msg : "cannot parse the URL");
		PQfreemem(msg);
		return r;
	}
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	char *password = NULL;
	const char *db = dbname;
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (!db && o->val && strcmp(o->keyword, "dbname") == 0)
			db = o->val;
	kiln_buf_puts(&b, "postgresql:///");
	if (db)
		pct_encode(&b, db);
	char sep = '?';
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || strcmp(o->keyword, "dbname") == 0)
			continue;
		if (strcmp(o->keyword, "password") == 0) {
			password = xstrdup(o->val);
			continue;
		}
		kiln_buf_putc(&b, sep);
		sep = '&';
		pct_encode(&b, o->keyword);
		kiln_buf_putc(&b, '=');
		pct_encode(&b, o->val);
	}
	PQconninfoFree(opts);
	*ret_url = kiln_buf_steal(&b, NULL);
	*ret_password = password;
	return 0;
}

/* Runs a PostgreSQL client tool; its stderr (up to a ceiling) becomes the
 * error message when it fails. */
static int run_tool(const char *const *argv, const char *password, struct kiln_error **err)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return kiln_error_set_errno(err, errno, "pipe");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], STDERR_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	_cleanup_free_ char *pw = password ? xasprintf("PGPASSWORD=%s", password) : NULL;
	const char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "TZ=UTC", pw, NULL};
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, (char *const *)envp);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (rc != 0) {
		close(pfd[0]);
		return kiln_error_set_errno(err, rc, "%s (Debian: postgresql-client-15)", argv[0]);
	}
	_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT_MAX(8192);
	char buf[4096];
	for (;;) {
		ssize_t n = read(pfd[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		kiln_buf_append(&out, buf, (size_t)n);
	}
	close(pfd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	while (out.len && (out.data[out.len - 1] == '\n' || out.data[out.len - 1] == ' '))
		out.data[--out.len] = '\0';
	return kiln_error_set(err, EIO, "%s failed: %s", argv[0],
	                      out.len ? out.data : "(no message)");
}

/* ---- create ---------------------------------------------------------------------- */

static int dump_sqlite(struct kiln_db *db, const char *tmp, struct kiln_error **err)
{
	/* VACUUM INTO reads the database in one read transaction: a
	 * consistent snapshot, while the server's writers go on (WAL). */
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(db, "VACUUM INTO $1", &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, tmp);
	r = kiln_db_step(st, err);
	return r < 0 ? r : 0;
}

/* The counts of the SQLite backup itself, read from the copy. */
static int count_sqlite_copy(const char *tmp, struct kiln_backup *b, struct kiln_error **err)
{
	_cleanup_free_ char *u = xasprintf("sqlite:%s", tmp);
	_cleanup_(kiln_db_closep) struct kiln_db *copy = NULL;
	int r = kiln_db_open(u, &copy, err);
	if (r == 0)
		r = count_rows(copy, &b->tables, &b->n_tables, err);
	if (r == 0)
		r = schema_version(copy, b->tables, b->n_tables, &b->schema_version, err);
	if (r == 0)
		r = kiln_db_exec(copy, "PRAGMA journal_mode=DELETE", err);
	return r;
}

static int dump_pg(struct kiln_db *db, const char *url, const char *tmp, struct kiln_backup *b,
                   struct kiln_error **err)
{
	/* The counts and pg_dump see one snapshot: exported by this
	 * transaction, imported by pg_dump --snapshot while it stays open. */
	int r = kiln_db_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", err);
	if (r < 0)
		return r;
	_cleanup_free_ char *snapshot = NULL;
	{
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		r = kiln_db_prepare(db, "SELECT pg_export_snapshot()", &st, err);
		if (r == 0 && (r = kiln_db_step(st, err)) == 1) {
			snapshot = xstrdup(kiln_db_column_text(st, 0));
			r = 0;
		}
	}
	if (r == 0)
		r = count_rows(db, &b->tables, &b->n_tables, err);
	if (r == 0)
		r = schema_version(db, b->tables, b->n_tables, &b->schema_version, err);
	_cleanup_free_ char *u = NULL, *pw = NULL;
	if (r == 0)
		r = pg_url(url, NULL, &u, &pw, err);
	if (r == 0) {
		_cleanup_free_ char *snap = xasprintf("--snapshot=%s", snapshot);
		_cleanup_free_ char *file = xasprintf("--file=%s", tmp);
		_cleanup_free_ char *dbarg = xasprintf("--dbname=%s", u);
		const char *argv[] = {"pg_dump",    "--format=custom",
		                      "--no-owner", "--no-privileges",
		                      snap,         file,
		                      dbarg,        NULL};
		r = run_tool(argv, pw, err);
	}
	kiln_db_rollback(db);
	if (pw)
		explicit_bzero(pw, strlen(pw));
	return r;
}

static int write_manifest(const struct kiln_backup *b, const char *tmp, struct kiln_error **err)
{
	json_t *tables = json_object();
	for (size_t i = 0; i < b->n_tables; i++)
		json_object_set_new(tables, b->tables[i].name, json_integer(b->tables[i].rows));
	char created[32];
	time_t t = (time_t)(b->created_us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	const char *slash = strrchr(b->dump_path, '/');
	json_t *m = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:I, s:o}", "format",
	                      MANIFEST_FORMAT, "kiln_version", b->kiln_version, "backend",
	                      b->backend, "schema_version", b->schema_version, "created", created,
	                      "dump", slash ? slash + 1 : b->dump_path, "sha256", b->sha256, "size",
	                      (json_int_t)b->size, "tables", tables);
	_cleanup_free_ char *text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(m);
	_cleanup_close_ int fd =
	    open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", tmp);
	int r = kiln_write_all(fd, text, strlen(text));
	if (r == 0)
		r = kiln_write_all(fd, "\n", 1);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot write", tmp);
	return 0;
}

/* The backup directory holds copies of kiln.db: the state directory's
 * rules hold for it (kiln_state_secure). A directory owned by another uid,
 * or one that another user can write, lets that user read or swap the
 * dumps (rename a planted file over one, replace a name between create and
 * rename): refused, saying how to fix it. A readable one only shows names,
 * every file kiln writes there is 0600. */
static int check_dir(const char *dir, struct kiln_error **err)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return kiln_error_set_errno(err, errno, "backup directory %s: cannot open", dir);
	if (st.st_uid != geteuid())
		return kiln_error_set(err, EPERM,
		                      "backup directory %s: owned by uid %u, not by kiln's uid %u: "
		                      "refusing to write the database's copy there",
		                      dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if (st.st_mode & 022)
		return kiln_error_set(
		    err, EPERM,
		    "backup directory %s: mode %04o, other local users could "
		    "replace backups there: refusing (chmod go-w it, 0700 is best)",
		    dir, (unsigned)(st.st_mode & 07777));
	return 0;
}

int kiln_backup_create(const char *url, const char *dir, const char *version,
                       struct kiln_backup **ret, struct kiln_error **err)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "backup directory %s: cannot create", dir);
	int r = check_dir(dir, err);
	if (r < 0)
		return r;
	const char *sqlite_path = kiln_db_sqlite_path(url);
	if (sqlite_path && access(sqlite_path, F_OK) < 0)
		return kiln_error_set_errno(err, errno, "database %s", sqlite_path);
	_cleanup_(kiln_db_closep) struct kiln_db *db = NULL;
	r = kiln_db_open(url, &db, err);
	if (r < 0)
		return r;
	_cleanup_(kiln_backup_freep) struct kiln_backup *b = xcalloc(1, sizeof(*b));
	b->backend = xstrdup(kiln_db_backend(db));
	b->kiln_version = xstrdup(version);
	const char *ext = ext_of(b->backend);

	/* Named by the second it was taken; a second backup in the same
	 * second gets a suffix rather than replacing the first. */
	b->created_us = now_us();
	time_t t = (time_t)(b->created_us / 1000000);
	b->created_us = (int64_t)t * 1000000;
	struct tm tm;
	gmtime_r(&t, &tm);
	char stamp[32];
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	_cleanup_free_ char *stem = NULL;
	for (int i = 1; i < 100 && !stem; i++) {
		char *s = i == 1 ? xasprintf("%s/kiln-%s", dir, stamp)
		                 : xasprintf("%s/kiln-%s-%d", dir, stamp, i);
		_cleanup_free_ char *m = xasprintf("%s.json", s), *d = xasprintf("%s%s", s, ext);
		if (access(m, F_OK) < 0 && access(d, F_OK) < 0)
			stem = s;
		else
			free(s);
	}
	if (!stem)
		return kiln_error_set(err, EEXIST, "backup directory %s: too many backups at %s",
		                      dir, stamp);
	b->manifest_path = xasprintf("%s.json", stem);
	b->dump_path = xasprintf("%s%s", stem, ext);
	_cleanup_free_ char *tmp_dump = xasprintf("%s.tmp-%d%s", stem, (int)getpid(), ext);
	_cleanup_free_ char *tmp_manifest = xasprintf("%s.tmp-%d.json", stem, (int)getpid());
	unlink(tmp_dump);
	unlink(tmp_manifest);
	/* The dump holds every secret of the database: it is 0600 from the
	 * moment it exists, not chmod'ed after (a local user could open it in
	 * between and keep the fd). VACUUM INTO takes an empty file, pg_dump
	 * --file truncates it, SQLite gives its -journal the dump's mode. */
	_cleanup_close_ int dfd =
	    open(tmp_dump, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (dfd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", tmp_dump);

	if (sqlite_path) {
		r = dump_sqlite(db, tmp_dump, err);
		if (r == 0)
			r = count_sqlite_copy(tmp_dump, b, err);
	} else {
		r = dump_pg(db, url, tmp_dump, b, err);
	}
	if (r == 0) {
		if (chmod(tmp_dump, 0600) < 0 || fsync_path(tmp_dump, 0) < 0)
			r = kiln_error_set_errno(err, errno, "%s: cannot sync", tmp_dump);
	}
	if (r == 0 && (r = kiln_sha256_file(tmp_dump, b->sha256, &b->size)) < 0)
		kiln_error_set_errno(err, -r, "%s: cannot hash", tmp_dump);
	if (r == 0)
		r = write_manifest(b, tmp_manifest, err);
	/* The dump first, the manifest last: a backup is listed only once
	 * both are complete. */
	if (r == 0 && rename(tmp_dump, b->dump_path) < 0)
		r = kiln_error_set_errno(err, errno, "%s: cannot rename", tmp_dump);
	if (r == 0 && rename(tmp_manifest, b->manifest_path) < 0)
		r = kiln_error_set_errno(err, errno, "%s: cannot rename", tmp_manifest);
	if (r == 0 && fsync_path(dir, O_DIRECTORY) < 0)
		r = kiln_error_set_errno(err, errno, "%s: cannot sync", dir);
	if (r < 0) {
		unlink(tmp_dump);
		unlink(tmp_manifest);
		_cleanup_free_ char *w = xasprintf("%s-wal", tmp_dump),
		                    *s = xasprintf("%s-shm", tmp_dump);
		unlink(w);
		unlink(s);
		return r;
	}
	*ret = TAKE_PTR(b);
	return 0;
}

/* ---- reading backups ------------------------------------------------------------- */

int kiln_backup_manifest_parse(const char *text, size_t len, const char *manifest_path,
                               struct kiln_backup **ret, struct kiln_error **err)
{
	int r = 0;
	json_error_t je;
	json_t *m = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!m)
		return kiln_error_set(err, EBADMSG, "%s: line %d: %s", manifest_path, je.line,
		                      je.text);
	const char *format = NULL, *version = NULL, *backend = NULL, *sha = NULL;
	json_int_t schema = 0, size = 0;
	json_t *tables = NULL;
	if (json_unpack_ex(m, &je, 0, "{s:s, s:s, s:s, s:I, s:s, s:I, s:o}", "format", &format,
	                   "kiln_version", &version, "backend", &backend, "schema_version", &schema,
	                   "sha256", &sha, "size", &size, "tables", &tables) < 0) {
		r = kiln_error_set(err, EBADMSG, "%s: %s", manifest_path, je.text);
		json_decref(m);
		return r;
	}
	const char *ext = ext_of(backend);
	const char *base = strrchr(manifest_path, '/');
	base = base ? base + 1 : manifest_path;
	int64_t created = stamp_parse(base);
	if (strcmp(format, MANIFEST_FORMAT) != 0)
		r = kiln_error_set(err, EBADMSG, "%s: format: expected %s", manifest_path,
		                   MANIFEST_FORMAT);
	else if (!ext)
		r = kiln_error_set(err, EBADMSG, "%s: backend: unknown %s", manifest_path, backend);
	else if (strlen(sha) != 64 || size < 0 || schema < 0 || !json_is_object(tables))
		r = kiln_error_set(err, EBADMSG,
		                   "%s: sha256, size, schema_version or tables malformed",
		                   manifest_path);
	else if (created < 0)
		r = kiln_error_set(err, EBADMSG, "%s: not named kiln-YYYYmmddTHHMMSSZ.json",
		                   manifest_path);
	if (r < 0) {
		json_decref(m);
		return r;
	}
	struct kiln_backup *b = xcalloc(1, sizeof(*b));
	b->manifest_path = xstrdup(manifest_path);
	size_t stem = strlen(manifest_path) - strlen(".json");
	b->dump_path = xasprintf("%.*s%s", (int)stem, manifest_path, ext);
	b->kiln_version = xstrdup(version);
	b->backend = xstrdup(backend);
	b->schema_version = (int)schema;
	b->created_us = created;
	snprintf(b->sha256, sizeof(b->sha256), "%s", sha);
	b->size = (uint64_t)size;
	const char *k;
	json_t *v;
	json_object_foreach (tables, k, v) {
		b->tables = xreallocarray(b->tables, b->n_tables + 1, sizeof(*b->tables));
		b->tables[b->n_tables++] = (struct kiln_backup_table){
		    xstrdup(k), json_is_integer(v) ? json_integer_value(v) : -1};
	}
	json_decref(m);
	*ret = b;
	return 0;
}

/* The manifest at manifest_path, without checking the dump. */
static int parse_manifest(const char *manifest_path, struct kiln_backup **ret,
                          struct kiln_error **err)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = kiln_read_file(manifest_path, MANIFEST_MAX, &text, &len, err);
	if (r < 0)
		return r;
	return kiln_backup_manifest_parse(text, len, manifest_path, ret, err);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int kiln_backup_load(const char *path, struct kiln_backup **ret, struct kiln_error **err)
{
	_cleanup_free_ char *manifest = NULL;
	if (ends_with(path, ".json")) {
		manifest = xstrdup(path);
	} else {
		for (size_t i = 0; i < ELEMENTSOF(dump_ext) && !manifest; i++)
			if (ends_with(path, dump_ext[i].ext))
				manifest =
				    xasprintf("%.*s.json",
				              (int)(strlen(path) - strlen(dump_ext[i].ext)), path);
		if (!manifest)
			return kiln_error_set(
			    err, EINVAL, "%s: not a backup (kiln-TIME.json, .sqlite or .pgdump)",
			    path);
	}
	_cleanup_(kiln_backup_freep) struct kiln_backup *b = NULL;
	int r = parse_manifest(manifest, &b, err);
	if (r < 0)
		return r;
	char hex[65];
	uint64_t size = 0;
	r = kiln_sha256_file(b->dump_path, hex, &size);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s", b->dump_path);
	if (size != b->size || strcmp(hex, b->sha256) != 0)
		return kiln_error_set(err, EBADMSG,
		                      "%s: corrupted: sha256 %s, %llu bytes; the manifest says %s, "
		                      "%llu bytes",
		                      b->dump_path, hex, (unsigned long long)size, b->sha256,
		                      (unsigned long long)b->size);
	*ret = TAKE_PTR(b);
	return 0;
}

static int by_time(const void *a, const void *b)
{
	const struct kiln_backup *x = *(struct kiln_backup *const *)a;
	const struct kiln_backup *y = *(struct kiln_backup *const *)b;
	if (x->created_us != y->created_us)
		return x->created_us < y->created_us ? -1 : 1;
	return strcmp(x->manifest_path, y->manifest_path);
}

int kiln_backup_list(const char *dir, struct kiln_backup ***ret, size_t *ret_n,
                     struct kiln_error **err)
{
	DIR *d = opendir(dir);
	if (!d)
		return kiln_error_set_errno(err, errno, "backup directory %s", dir);
	struct kiln_backup **v = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		/* temp files are kiln-TIME.tmp-PID.json: not a backup yet */
		if (!ends_with(de->d_name, ".json") || strstr(de->d_name, ".tmp-") ||
		    stamp_parse(de->d_name) < 0)
			continue;
		_cleanup_free_ char *p = xasprintf("%s/%s", dir, de->d_name);
		struct kiln_backup *b = NULL;
		_cleanup_error_ struct kiln_error *e = NULL;
		if (parse_manifest(p, &b, &e) < 0)
			continue;
		v = xreallocarray(v, n + 1, sizeof(*v));
		v[n++] = b;
	}
	closedir(d);
	if (n > 1)
		qsort(v, n, sizeof(*v), by_time);
	*ret = v;
	*ret_n = n;
	(void)err;
	return 0;
}

int kiln_backup_prune(const char *dir, unsigned keep_days, int64_t now, size_t *ret_removed,
                      struct kiln_error **err)
{
	struct kiln_backup **v = NULL;
	size_t n = 0, removed = 0;
	int r = kiln_backup_list(dir, &v, &n, err);
	if (r < 0)
		return r;
	int64_t cutoff = now - (int64_t)keep_days * 86400 * 1000000;
	/* n - 1: the newest is kept whatever its age — a server whose
	 * backups stopped must not prune itself down to nothing. */
	for (size_t i = 0; r == 0 && i + 1 < n; i++) {
		if (v[i]->created_us >= cutoff)
			continue;
		/* The manifest first: the backup disappears from the list at
		 * once, and a crash leaves at worst an unlisted dump. */
		if (unlink(v[i]->manifest_path) < 0 && errno != ENOENT)
			r = kiln_error_set_errno(err, errno, "%s: cannot remove",
			                         v[i]->manifest_path);
		else if (unlink(v[i]->dump_path) < 0 && errno != ENOENT)
			r = kiln_error_set_errno(err, errno, "%s: cannot remove", v[i]->dump_path);
		else
			removed++;
	}
	kiln_backup_list_free(v, n);
	if (r == 0 && ret_removed)
		*ret_removed = removed;
	return r;
}

/* ---- restore and verify ---------------------------------------------------------- */

static int restore_pg(const struct kiln_backup *b, const char *url, bool clean,
                      struct kiln_error **err)
{
	_cleanup_free_ char *u = NULL, *pw = NULL;
	int r = pg_url(url, NULL, &u, &pw, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *dbarg = xasprintf("--dbname=%s", u);
	/* One transaction: a restore that fails half-way leaves the database
	 * as it was. */
	const char *argv[] = {"pg_restore",
	                      "--no-owner",
	                      "--no-privileges",
	                      "--exit-on-error",
	                      "--single-transaction",
	                      dbarg,
	                      NULL,
	                      NULL,
	                      NULL};
	size_t i = 6;
	if (clean) {
		argv[i++] = "--clean";
		argv[i++] = "--if-exists";
	}
	const char *full[12];
	memcpy(full, argv, (i) * sizeof(char *));
	full[i++] = b->dump_path;
	full[i] = NULL;
	r = run_tool(full, pw, err);
	if (pw)
		explicit_bzero(pw, strlen(pw));
	return r;
}

static int other_sessions(struct kiln_db *db, int64_t *ret, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(db,
	                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname ="
	                        " current_database() AND pid <> pg_backend_pid()",
	                        &st, err);
	if (r == 0 && (r = kiln_db_step(st, err)) == 1) {
		*ret = kiln_db_column_int64(st, 0);
		r = 0;
	}
	return r;
}

int kiln_backup_restore(const struct kiln_backup *b, const char *url, bool force,
                        struct kiln_error **err)
{
	_cleanup_(kiln_db_closep) struct kiln_db *db = NULL;
	int r = kiln_db_open(url, &db, err);
	if (r < 0)
		return r;
	if (strcmp(kiln_db_backend(db), b->backend) != 0)
		return kiln_error_set(err, EINVAL, "%s is a %s backup; the database %s is %s",
		                      b->manifest_path, b->backend, url, kiln_db_backend(db));
	struct kiln_backup_table *t = NULL;
	size_t n = 0;
	r = count_rows(db, &t, &n, err);
	if (r < 0)
		return r;
	tables_free(t, n);
	int64_t others = 0;
	if (!kiln_db_sqlite_path(url) && (r = other_sessions(db, &others, err)) < 0)
		return r;
	if (!force && n > 0)
		return kiln_error_set(err, EEXIST,
		                      "database %s is not empty (%zu tables): --force replaces it",
		                      url, n);
	if (!force && others > 0)
		return kiln_error_set(
		    err, EBUSY,
		    "database %s is in use (%lld other sessions, a running server?): "
		    "--force replaces it all the same",
		    url, (long long)others);
	if (kiln_db_sqlite_path(url))
		return kiln_db_sqlite_restore(db, b->dump_path, err);
	db = kiln_db_close(db);
	return restore_pg(b, url, n > 0, err);
}

/* Integrity checks that the backend has beyond the restore itself. */
static int integrity(struct kiln_db *db, struct kiln_error **err)
{
	if (strcmp(kiln_db_backend(db), "sqlite") != 0)
		return 0; /* pg_restore --exit-on-error re-creates every constraint:
		           * a row that breaks one fails the restore */
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(db, "PRAGMA integrity_check", &st, err);
	if (r == 0 && (r = kiln_db_step(st, err)) == 1) {
		const char *res = kiln_db_column_text(st, 0);
		r = res && strcmp(res, "ok") == 0
		        ? 0
		        : kiln_error_set(err, EBADMSG, "integrity_check: %s", res ? res : "(null)");
	}
	if (r < 0)
		return r;
	_cleanup_stmt_ struct kiln_db_stmt *fk = NULL;
	r = kiln_db_prepare(db, "PRAGMA foreign_key_check", &fk, err);
	if (r == 0 && (r = kiln_db_step(fk, err)) == 1)
		r = kiln_error_set(err, EBADMSG,
		                   "foreign_key_check: table %s has a row without its %s",
		                   kiln_db_column_text(fk, 0), kiln_db_column_text(fk, 2));
	return r;
}

static int compare_counts(const struct kiln_backup *b, struct kiln_db *db, struct kiln_error **err)
{
	struct kiln_backup_table *t = NULL;
	size_t n = 0;
	int r = count_rows(db, &t, &n, err);
	if (r < 0)
		return r;
	if (n != b->n_tables)
		r = kiln_error_set(err, EBADMSG, "restored %zu tables; the manifest lists %zu", n,
		                   b->n_tables);
	for (size_t i = 0; r == 0 && i < b->n_tables; i++) {
		const struct kiln_backup_table *got = NULL;
		for (size_t j = 0; j < n; j++)
			if (strcmp(t[j].name, b->tables[i].name) == 0)
				got = &t[j];
		if (!got)
			r = kiln_error_set(err, EBADMSG, "table %s: in the manifest, not restored",
			                   b->tables[i].name);
		else if (got->rows != b->tables[i].rows)
			r = kiln_error_set(
			    err, EBADMSG, "table %s: %lld rows restored, the manifest says %lld",
			    got->name, (long long)got->rows, (long long)b->tables[i].rows);
	}
	tables_free(t, n);
	return r;
}

static int check_scratch(const struct kiln_backup *b, const char *url,
                         int (*check)(struct kiln_db *db, struct kiln_error **err),
                         struct kiln_error **err)
{
	_cleanup_(kiln_db_closep) struct kiln_db *db = NULL;
	int r = kiln_db_open(url, &db, err);
	if (r == 0)
		r = integrity(db, err);
	if (r == 0)
		r = compare_counts(b, db, err);
	if (r == 0 && check)
		r = check(db, err);
	return r;
}

static void unlink_sqlite(const char *path)
{
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
		_cleanup_free_ char *p = xasprintf("%s%s", path, suffixes[i]);
		unlink(p);
	}
}

int kiln_backup_verify(const struct kiln_backup *b, const char *url,
                       int (*check)(struct kiln_db *db, struct kiln_error **err),
                       struct kiln_error **err)
{
	int r;
	if (strcmp(b->backend, "sqlite") == 0) {
		const char *tmpdir = getenv("TMPDIR");
		_cleanup_free_ char *path =
		    xasprintf("%s/kiln-verify-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
		int fd = mkstemp(path);
		if (fd < 0)
			return kiln_error_set_errno(err, errno, "%s: cannot create", path);
		close(fd);
		_cleanup_free_ char *u = xasprintf("sqlite:%s", path);
		{
			_cleanup_(kiln_db_closep) struct kiln_db *db = NULL;
			r = kiln_db_open(u, &db, err);
			if (r == 0)
				r = kiln_db_sqlite_restore(db, b->dump_path, err);
		}
		if (r == 0)
			r = check_scratch(b, u, check, err);
		unlink_sqlite(path);
	} else {
		if (!url || kiln_db_sqlite_path(url))
			return kiln_error_set(
			    err, EINVAL,
			    "%s: a PostgreSQL backup is verified on a PostgreSQL server: "
			    "--database postgresql://...",
			    b->manifest_path);
		uint8_t rnd[6];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return kiln_error_set_errno(err, errno, "getrandom");
		char hex[13];
		kiln_hex_encode(rnd, sizeof(rnd), hex);
		_cleanup_free_ char *name = xasprintf("kiln_verify_%s", hex);
		_cleanup_(kiln_db_closep) struct kiln_db *admin = NULL;
		r = kiln_db_open(url, &admin, err);
		if (r < 0)
			return r;
		_cleanup_free_ char *create = xasprintf("CREATE DATABASE %s", name);
		r = kiln_db_exec(admin, create, err);
		if (r < 0)
			return r;
		_cleanup_free_ char *u = NULL, *pw = NULL;
		r = pg_url(url, name, &u, &pw, err);
		if (r == 0) {
			/* restore_pg takes the URL with its password */
			_cleanup_buf_ struct kiln_buf full = KILN_BUF_INIT;
			kiln_buf_puts(&full, u);
			if (pw) {
				kiln_buf_puts(&full, strchr(u, '?') ? "&password=" : "?password=");
				pct_encode(&full, pw);
			}
			r = restore_pg(b, full.data, false, err);
			if (r == 0)
				r = check_scratch(b, full.data, check, err);
			explicit_bzero(full.data, full.len);
		}
		if (pw)
			explicit_bzero(pw, strlen(pw));
		_cleanup_free_ char *drop =
		    xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
		_cleanup_error_ struct kiln_error *e2 = NULL;
		(void)kiln_db_exec(admin, drop, &e2);
	}
	if (r < 0)
		kiln_error_prefix(err, "restore test of %s", b->manifest_path);
	return r;
}
