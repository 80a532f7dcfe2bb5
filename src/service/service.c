/* service/service.c — open/recover/free, submit (validate → identity → cache
 * → coalesce → enqueue), get, list, cancel, artifacts, health, and the
 * build's API JSON. Workers are in worker.c, logs in log.c, tokens in
 * token.c. Schema and queue semantics: docs/service.md. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/archive.h"
#include "image/image.h"
#include "recipe/recipe.h"
#include "service/internal.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/parse.h"

/* ---- small helpers --------------------------------------------------------- */

static const char *const status_names[] = {
    [KILN_BUILD_PENDING] = "pending",     [KILN_BUILD_BUILDING] = "building",
    [KILN_BUILD_COMPLETED] = "completed", [KILN_BUILD_FAILED] = "failed",
    [KILN_BUILD_CANCELLED] = "cancelled",
};

const char *kiln_build_status_name(enum kiln_build_status st)
{
	return (size_t)st < ELEMENTSOF(status_names) ? status_names[st] : "unknown";
}

int kiln_build_status_parse(const char *str)
{
	for (size_t i = 0; str && i < ELEMENTSOF(status_names); i++)
		if (strcmp(str, status_names[i]) == 0)
			return (int)i;
	return -1;
}

int64_t kiln_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void kiln_uuid4(char out[KILN_BUILD_ID_LEN + 1])
{
	uint8_t b[16];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		abort();             /* the kernel's CSPRNG failing is not recoverable */
	b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
	b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
	char hex[33];
	kiln_hex_encode(b, sizeof(b), hex);
	snprintf(out, KILN_BUILD_ID_LEN + 1, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12,
	         hex + 16, hex + 20);
}

bool kiln_is_uuid(const char *s)
{
	if (!s || strlen(s) != KILN_BUILD_ID_LEN)
		return false;
	for (size_t i = 0; i < KILN_BUILD_ID_LEN; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-'
		         : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

static void copy_hex(char dst[KILN_SHA256_HEX_LEN + 1], const char *src)
{
	snprintf(dst, KILN_SHA256_HEX_LEN + 1, "%s", src ? src : "");
}

static char *strdup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

struct kiln_build_info *kiln_build_info_free(struct kiln_build_info *b)
{
	if (!b)
		return NULL;
	free(b->owner);
	free(b->name);
	free(b->error);
	free(b->current_what);
	free(b->host);
	for (size_t i = 0; i < b->n_artifacts; i++)
		free(b->artifacts[i].name);
	free(b->artifacts);
	free(b);
	return NULL;
}

void kiln_build_info_list_free(struct kiln_build_info **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		kiln_build_info_free(v[i]);
	free(v);
}

/* ---- schema ---------------------------------------------------------------- */

static const struct kiln_db_migration migrations[] = {
    {1, "CREATE TABLE builds ("
        " id TEXT PRIMARY KEY,"
        " owner TEXT NOT NULL,"
        " name TEXT,"
        " config_hash TEXT NOT NULL,"
        " build_key TEXT NOT NULL,"
        " status TEXT NOT NULL CHECK (status IN"
        "  ('pending', 'building', 'completed', 'failed', 'cancelled')),"
        " created_us BIGINT NOT NULL,"
        " started_us BIGINT,"
        " completed_us BIGINT,"
        " error TEXT,"
        " current_step INTEGER NOT NULL DEFAULT 0,"
        " total_steps INTEGER NOT NULL DEFAULT 0,"
        " current_what TEXT,"
        " source_date_epoch BIGINT NOT NULL,"
        " cached INTEGER NOT NULL DEFAULT 0,"
        " cached_from TEXT,"
        " warning INTEGER NOT NULL DEFAULT 0,"
        " recipe TEXT NOT NULL,"
        " context_sha256 TEXT"
        ");"
        "CREATE INDEX builds_build_key ON builds (build_key, status);"
        "CREATE INDEX builds_config_hash ON builds (config_hash);"
        "CREATE INDEX builds_status ON builds (status, created_us);"
        "CREATE INDEX builds_created ON builds (created_us, id);"
        "CREATE INDEX builds_owner_created ON builds (owner, created_us, id);"
        "CREATE TABLE artifacts ("
        " build_id TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,"
        " name TEXT NOT NULL,"
        " sha256 TEXT NOT NULL,"
        " size BIGINT NOT NULL,"
        " PRIMARY KEY (build_id, name)"
        ");"
        "CREATE TABLE tokens ("
        " id TEXT PRIMARY KEY,"
        " owner TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " secret_sha256 TEXT NOT NULL UNIQUE,"
        " created_us BIGINT NOT NULL,"
        " last_used_us BIGINT,"
        " revoked INTEGER NOT NULL DEFAULT 0"
        ");"
        "CREATE INDEX tokens_owner ON tokens (owner);"},
    /* Browser sessions (session.c): the id is stored as its SHA-256 only,
     * like a token; token_id ties a session to the token that opened it,
     * so revoking the token ends its sessions. server_secrets holds the
     * CSRF HMAC key in the database rather than the state directory so
     * that several servers sharing one database agree on it. */
    {2, "CREATE TABLE sessions ("
        " id_sha256 TEXT PRIMARY KEY,"
        " token_id TEXT NOT NULL,"
        " owner TEXT NOT NULL,"
        " created_us BIGINT NOT NULL,"
        " expires_us BIGINT NOT NULL,"
        " revoked INTEGER NOT NULL DEFAULT 0"
        ");"
        "CREATE INDEX sessions_expires ON sessions (expires_us);"
        "CREATE TABLE server_secrets ("
        " name TEXT PRIMARY KEY,"
        " value TEXT NOT NULL"
        ");"},
    /* The cache lookup reads only builds that really ran (cached = 0), newest
     * first, straight from this index: every cache hit adds a record with
     * the same build_key, and scanning those made hits slower over time
     * (docs/benchmarks.md). */
    {3, "CREATE INDEX builds_cache ON builds (build_key, status, cached, completed_us);"},
    /* The store's maintenance (service/store.c, docs/service.md "The
     * store"): store_error says why a build's artifacts can no longer be
     * trusted (a blob found corrupt or missing by `kiln store verify` or a
     * download, or collected by `kiln store gc`) — such a build never
     * answers the cache again; pinned keeps its blobs from gc. */
    {4, "ALTER TABLE builds ADD COLUMN store_error TEXT;"
        "ALTER TABLE builds ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;"},
    /* Several hosts on one database (hosts.c): a claimed build names its
     * host and the process (worker) that holds it until lease_until;
     * attempts counts claims for --retries; cancel_requested persists a
     * cancel for the host that runs the build. hosts: one row per live
     * kiln serve, its heartbeat renewed with the leases. */
    {5, "ALTER TABLE builds ADD COLUMN host TEXT;"
        "ALTER TABLE builds ADD COLUMN worker TEXT;"
        "ALTER TABLE builds ADD COLUMN lease_until BIGINT;"
        "ALTER TABLE builds ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE builds ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE builds ADD COLUMN tools TEXT;"
        "CREATE INDEX builds_lease ON builds (status, lease_until);"
        "CREATE TABLE hosts ("
        " id TEXT PRIMARY KEY,"
        " worker TEXT NOT NULL,"
        " slots INTEGER NOT NULL,"
        " started_us BIGINT NOT NULL,"
        " heartbeat_us BIGINT NOT NULL,"
        " version TEXT NOT NULL,"
        " tools TEXT NOT NULL"
        ");"},
    /* Fleet-wide chores (ops.c): the host holding a row's lease until
     * until_us runs the chore (the scheduled backup), the others skip it. */
    {6, "CREATE TABLE ops_leases ("
        " name TEXT PRIMARY KEY,"
        " holder TEXT NOT NULL,"
        " until_us BIGINT NOT NULL"
        ");"},
    /* Templates (templates.c): a tag points at one completed build of its
     * owner; every move is a history row. */
    {7, "CREATE TABLE template_tags ("
        " owner TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " tag TEXT NOT NULL,"
        " build_id TEXT NOT NULL,"
        " protected INTEGER NOT NULL DEFAULT 0,"
        " updated_us BIGINT NOT NULL,"
        " PRIMARY KEY (owner, name, tag)"
        ");"
        "CREATE TABLE template_tag_history ("
        " owner TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " tag TEXT NOT NULL,"
        " build_id TEXT NOT NULL,"
        " tagged_us BIGINT NOT NULL"
        ");"
        "CREATE INDEX template_tag_history_tag ON template_tag_history (owner, name, tag, "
        "tagged_us);"},
};

int kiln_service_migrate(struct kiln_db *db, struct kiln_error **err)
{
	return kiln_db_migrate(db, migrations, ELEMENTSOF(migrations), NULL, err);
}

/* ---- reading builds ---------------------------------------------------------- */

#define BUILD_COLS                                                                                 \
	"id, owner, name, status, config_hash, build_key, source_date_epoch, created_us,"          \
	" started_us, completed_us, error, current_step, total_steps, current_what, cached,"       \
	" warning, host"

static struct kiln_build_info *row_to_info(struct kiln_db_stmt *st)
{
	struct kiln_build_info *b = xcalloc(1, sizeof(*b));
	snprintf(b->id, sizeof(b->id), "%s", kiln_db_column_text(st, 0));
	b->owner = strdup_or_null(kiln_db_column_text(st, 1));
	b->name = strdup_or_null(kiln_db_column_text(st, 2));
	int status = kiln_build_status_parse(kiln_db_column_text(st, 3));
	b->status = status < 0 ? KILN_BUILD_FAILED : (enum kiln_build_status)status;
	copy_hex(b->config_hash, kiln_db_column_text(st, 4));
	copy_hex(b->build_key, kiln_db_column_text(st, 5));
	b->source_date_epoch = kiln_db_column_int64(st, 6);
	b->created_us = kiln_db_column_int64(st, 7);
	b->started_us = kiln_db_column_int64(st, 8);
	b->completed_us = kiln_db_column_int64(st, 9);
	b->error = strdup_or_null(kiln_db_column_text(st, 10));
	b->current_step = (unsigned)kiln_db_column_int64(st, 11);
	b->total_steps = (unsigned)kiln_db_column_int64(st, 12);
	b->current_what = strdup_or_null(kiln_db_column_text(st, 13));
	b->cached = kiln_db_column_int64(st, 14) != 0;
	b->warning = kiln_db_column_int64(st, 15) != 0;
	b->host = strdup_or_null(kiln_db_column_text(st, 16));
	return b;
}

static int load_artifacts_on(struct kiln_db *db, struct kiln_build_info *b, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(
	    db, "SELECT name, sha256, size FROM artifacts WHERE build_id = $1 ORDER BY name", &st,
	    err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, b->id);
	while ((r = kiln_db_step(st, err)) == 1) {
		b->artifacts =
		    xreallocarray(b->artifacts, b->n_artifacts + 1, sizeof(*b->artifacts));
		struct kiln_build_artifact *a = &b->artifacts[b->n_artifacts++];
		a->name = xstrdup(kiln_db_column_text(st, 0));
		copy_hex(a->sha256, kiln_db_column_text(st, 1));
		a->size = (uint64_t)kiln_db_column_int64(st, 2);
	}
	return r;
}

static int load_artifacts_locked(struct kiln_service *s, struct kiln_build_info *b,
                                 struct kiln_error **err)
{
	return load_artifacts_on(s->db, b, err);
}

static int get_on(struct kiln_db *db, const char *id, const char *owner,
                  struct kiln_build_info **ret, struct kiln_error **err);

int svc_get_locked(struct kiln_service *s, const char *id, const char *owner,
                   struct kiln_build_info **ret, struct kiln_error **err)
{
	return get_on(s->db, id, owner, ret, err);
}

static int get_on(struct kiln_db *db, const char *id, const char *owner,
                  struct kiln_build_info **ret, struct kiln_error **err)
{
	if (!kiln_is_uuid(id))
		return kiln_error_set(err, ENOENT, "build %s: not found", id ? id : "(null)");
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(db, "SELECT " BUILD_COLS " FROM builds WHERE id = $1", &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, id);
	r = kiln_db_step(st, err);
	if (r < 0)
		return r;
	if (r == 0)
		return kiln_error_set(err, ENOENT, "build %s: not found", id);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = row_to_info(st);
	kiln_db_stmt_done(TAKE_PTR(st));
	/* Another owner's build is indistinguishable from a missing one. */
	if (owner && strcmp(owner, b->owner) != 0)
		return kiln_error_set(err, ENOENT, "build %s: not found", id);
	r = load_artifacts_on(db, b, err);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(b);
	return 0;
}

struct kiln_db *svc_read_db(struct kiln_service *s)
{
	if (!s->read_key_ok)
		return NULL;
	struct kiln_db *db = pthread_getspecific(s->read_key);
	if (db)
		return db;
	pthread_mutex_lock(&s->readers_lock);
	if (s->n_readers < SVC_READERS_MAX && kiln_db_open(s->db_url, &db, NULL) == 0) {
		s->readers[s->n_readers++] = db;
		pthread_setspecific(s->read_key, db);
	}
	pthread_mutex_unlock(&s->readers_lock);
	return db;
}

int kiln_service_get(struct kiln_service *s, const char *id, const char *owner,
                     struct kiln_build_info **ret, struct kiln_error **err)
{
	/* A read never waits for the writer (or a checkpoint): SQLite's WAL
	 * gives this thread's own connection the last committed state. */
	struct kiln_db *rd = svc_read_db(s);
	if (rd)
		return get_on(rd, id, owner, ret, err);
	pthread_mutex_lock(&s->lock);
	int r = svc_get_locked(s, id, owner, ret, err);
	pthread_mutex_unlock(&s->lock);
	return r;
}

int kiln_service_recipe(struct kiln_service *s, const char *id, const char *owner, char **ret,
                        struct kiln_error **err)
{
	pthread_mutex_lock(&s->lock);
	/* svc_get_locked first: another owner's build stays "not found". */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	int r = svc_get_locked(s, id, owner, &b, err);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	if (r == 0)
		r = kiln_db_prepare(s->db, "SELECT recipe FROM builds WHERE id = $1", &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, id);
		r = kiln_db_step(st, err);
		if (r == 0)
			r = kiln_error_set(err, ENOENT, "build %s: not found", id);
		else if (r == 1) {
			const char *t = kiln_db_column_text(st, 0);
			*ret = xstrdup(t ? t : "");
			r = 0;
		}
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- cache ---------------------------------------------------------------- */

static bool artifacts_present_locked(struct kiln_service *s, const char *id)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	if (kiln_db_prepare(s->db, "SELECT sha256, size FROM artifacts WHERE build_id = $1", &st,
	                    NULL) < 0)
		return false;
	kiln_db_bind_text(st, 1, id);
	size_t n = 0;
	int r;
	while ((r = kiln_db_step(st, NULL)) == 1) {
		/* A stat, no hashing (the hit stays as fast): a blob whose size
		 * changed (an append) cannot answer; other changes are caught
		 * when it is downloaded (kiln_service_artifact). */
		const char *h = kiln_db_column_text(st, 0);
		if (!h ||
		    !kiln_cas_looks_intact(s->state_dir, h, (uint64_t)kiln_db_column_int64(st, 1)))
			return false;
		n++;
	}
	return r == 0 && n > 0;
}

/* Per owner by default: a cache shared across owners hands Bob the bytes
 * Alice's run produced (random keys, her secrets baked into the image), and
 * its `cached: true` answers "did anyone build exactly this recipe?" — which
 * confirms a guessed recipe, secrets included. An operator whose users trust
 * each other (one team) turns sharing on with `kiln serve --shared-cache`. */
int svc_cache_lookup_locked(struct kiln_service *s, const char *build_key, const char *owner,
                            const char *exclude, char ret_id[KILN_BUILD_ID_LEN + 1],
                            bool *ret_same_owner, struct kiln_error **err)
{
	static const char *const sql[] = {
	    /* per owner */
	    "SELECT id, owner FROM builds WHERE build_key = $1 AND status = 'completed'"
	    " AND cached = 0 AND store_error IS NULL AND owner = $2"
	    " ORDER BY completed_us DESC LIMIT 8",
	    /* shared */
	    "SELECT id, owner FROM builds WHERE build_key = $1 AND status = 'completed'"
	    " AND cached = 0 AND store_error IS NULL ORDER BY completed_us DESC LIMIT 8",
	};
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db, sql[s->shared_cache], &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, build_key);
	if (!s->shared_cache)
		kiln_db_bind_text(st, 2, owner);
	char ids[8][KILN_BUILD_ID_LEN + 1];
	bool same[8];
	size_t n = 0;
	while (n < 8 && (r = kiln_db_step(st, err)) == 1) {
		const char *o = kiln_db_column_text(st, 1);
		same[n] = o && strcmp(o, owner) == 0;
		snprintf(ids[n++], KILN_BUILD_ID_LEN + 1, "%s", kiln_db_column_text(st, 0));
	}
	if (r < 0)
		return r;
	kiln_db_stmt_done(TAKE_PTR(st));
	/* A record whose blobs left the store cannot answer for the key. */
	for (size_t i = 0; i < n; i++) {
		if (exclude && strcmp(ids[i], exclude) == 0)
			continue;
		if (artifacts_present_locked(s, ids[i])) {
			memcpy(ret_id, ids[i], KILN_BUILD_ID_LEN + 1);
			*ret_same_owner = same[i];
			return 1;
		}
	}
	return 0;
}

char *svc_cache_log_line(const char *build_key, const char *from, bool same_owner)
{
	/* Another owner's build id is never shown, not even with a shared
	 * cache: it would name a build the reader cannot see, and tell them
	 * who else builds what. */
	if (same_owner)
		return xasprintf("==> cached: build key %s was built by %s; its artifacts "
		                 "answer this build, nothing ran\n",
		                 build_key, from);
	return xasprintf("==> cached: build key %s was built before (shared build cache); its "
	                 "artifacts answer this build, nothing ran\n",
	                 build_key);
}

int svc_cached_log_locked(struct kiln_service *s, const char *id, char **ret,
                          struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "SELECT b.build_key, b.cached_from,"
	                        " CASE WHEN f.owner = b.owner THEN 1 ELSE 0 END"
	                        " FROM builds b LEFT JOIN builds f ON f.id = b.cached_from"
	                        " WHERE b.id = $1 AND b.cached = 1 AND b.cached_from IS NOT NULL",
	                        &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, id);
	r = kiln_db_step(st, err);
	if (r == 1)
		*ret = svc_cache_log_line(kiln_db_column_text(st, 0), kiln_db_column_text(st, 1),
		                          kiln_db_column_int64(st, 2) != 0);
	return r;
}

int svc_copy_artifacts_locked(struct kiln_service *s, const char *from, const char *to,
                              struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "INSERT INTO artifacts (build_id, name, sha256, size)"
	                        " SELECT $2, name, sha256, size FROM artifacts WHERE build_id = $1",
	                        &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, from);
	kiln_db_bind_text(st, 2, to);
	r = kiln_db_step(st, err);
	return r < 0 ? r : 0;
}

/* ---- submit ---------------------------------------------------------------- */

static int store_context(struct kiln_service *s, const char *path,
                         char ret_hex[KILN_SHA256_HEX_LEN + 1], struct kiln_error **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "context: cannot open");
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_error_set_errno(err, errno, "context: cannot stat");
	if (!S_ISREG(st.st_mode))
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                           "context: not a regular file");
	if ((uint64_t)st.st_size > KILN_CONTEXT_MAX_BYTES)
		return kiln_error_set_kind(err, KILN_ERR_LIMIT, EFBIG,
		                           "context: archive is over the limit of %" PRIu64
		                           " bytes",
		                           KILN_CONTEXT_MAX_BYTES);
	char head[512];
	ssize_t n = pread(fd, head, sizeof(head), 0);
	if (n < 0)
		return kiln_error_set_errno(err, errno, "context: cannot read");
	enum kiln_archive_format fmt;
	int r = kiln_archive_detect(head, (size_t)n, &fmt, err);
	if (r < 0) {
		if (err && *err)
			(*err)->code = EPROTO;
		kiln_error_set_kind_of(err, KILN_ERR_USER);
		kiln_error_prefix(err, "context");
		return -EPROTO;
	}
	r = kiln_cas_put_file(s->state_dir, path, NULL, ret_hex, NULL, err);
	if (r < 0)
		kiln_error_prefix(err, "context");
	return r;
}

static int insert_build_locked(struct kiln_service *s, const char *id, const char *owner,
                               const struct kiln_recipe *rc, const char *build_key,
                               const char *recipe, size_t recipe_len, const char *context,
                               const char *cached_from, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(
	    s->db,
	    "INSERT INTO builds (id, owner, name, config_hash, build_key, status, created_us,"
	    " started_us, completed_us, source_date_epoch, cached, cached_from, recipe,"
	    " context_sha256, tools) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12,"
	    " $13, $14)",
	    &st, err);
	if (r < 0)
		return r;
	int64_t now = kiln_now_us();
	_cleanup_free_ char *text = xstrndup(recipe, recipe_len);
	kiln_db_bind_text(st, 1, id);
	kiln_db_bind_text(st, 2, owner);
	kiln_db_bind_text(st, 3, rc->name);
	kiln_db_bind_text(st, 4, rc->config_hash);
	kiln_db_bind_text(st, 5, build_key);
	kiln_db_bind_text(st, 6, cached_from ? "completed" : "pending");
	kiln_db_bind_int64(st, 7, now);
	if (cached_from)
		kiln_db_bind_int64(st, 8, now);
	else
		kiln_db_bind_null(st, 8);
	kiln_db_bind_int64(st, 9, rc->source_date_epoch);
	kiln_db_bind_int64(st, 10, cached_from ? 1 : 0);
	kiln_db_bind_text(st, 11, cached_from);
	kiln_db_bind_text(st, 12, text);
	kiln_db_bind_text(st, 13, context);
	kiln_db_bind_text(st, 14, svc_tools_hash());
	r = kiln_db_step(st, err);
	return r < 0 ? r : 0;
}

static void tools_hash_compute(void);
static char tools_hex[KILN_SHA256_HEX_LEN + 1];
static void tools_hash_compute(void)
{
	const char *t = kiln_image_tool_versions();
	kiln_sha256_hex(t, strlen(t), tools_hex);
}

const char *svc_tools_hash(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, tools_hash_compute);
	return tools_hex;
}

static int find_inflight_locked(struct kiln_service *s, const char *build_key, const char *owner,
                                char ret_id[KILN_BUILD_ID_LEN + 1], struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r =
	    kiln_db_prepare(s->db,
	                    "SELECT id FROM builds WHERE build_key = $1 AND owner = $2"
	                    " AND status IN ('pending', 'building') ORDER BY created_us LIMIT 1",
	                    &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, build_key);
	kiln_db_bind_text(st, 2, owner);
	r = kiln_db_step(st, err);
	if (r == 1)
		snprintf(ret_id, KILN_BUILD_ID_LEN + 1, "%s", kiln_db_column_text(st, 0));
	return r;
}

int kiln_service_submit(struct kiln_service *s, const struct kiln_submit *in,
                        enum kiln_submit_outcome *ret_outcome, struct kiln_build_info **ret,
                        struct kiln_error **err)
{
	const char *owner = in->owner ? in->owner : "anonymous";
	if (in->recipe_len > KILN_RECIPE_MAX_BYTES)
		return kiln_error_set_kind(err, KILN_ERR_LIMIT, EFBIG,
		                           "recipe: over the limit of %u bytes",
		                           KILN_RECIPE_MAX_BYTES);
	_cleanup_recipe_ struct kiln_recipe *rc = NULL;
	_cleanup_error_ struct kiln_error *perr = NULL;
	int r = kiln_recipe_parse(in->recipe ? in->recipe : "", in->recipe_len, &rc, &perr);
	if (r < 0) /* the parser's kind: USER, or LIMIT for a recipe too large */
		return kiln_error_set_kind(err, perr ? perr->kind : KILN_ERR_USER, -r, "%s",
		                           perr ? perr->msg : "recipe: invalid");
	/* Refused at the door, not when a worker claims it. */
	if ((r = kiln_image_check_disk(rc, s->max_disk_mb, err)) < 0)
		return r;
	char ctx[KILN_SHA256_HEX_LEN + 1] = "";
	if (in->context_path && (r = store_context(s, in->context_path, ctx, err)) < 0)
		return r;
	struct kiln_build_inputs bi = {in->context_path ? ctx : NULL, kiln_image_tool_versions()};
	char key[KILN_SHA256_HEX_LEN + 1];
	kiln_recipe_build_key(rc, &bi, key);

	char id[KILN_BUILD_ID_LEN + 1];
	enum kiln_submit_outcome outcome = KILN_SUBMIT_QUEUED;
	pthread_mutex_lock(&s->lock);
	r = kiln_db_begin(s->db, err);
	if (r == 0) {
		char from[KILN_BUILD_ID_LEN + 1];
		bool same_owner = false;
		r = svc_cache_lookup_locked(s, key, owner, NULL, from, &same_owner, err);
		if (r == 1) {
			outcome = KILN_SUBMIT_CACHED;
			kiln_uuid4(id);
			r = insert_build_locked(s, id, owner, rc, key, in->recipe, in->recipe_len,
			                        in->context_path ? ctx : NULL, from, err);
			/* No log file: its one line is made when read
			 * (svc_cached_log_locked), so a hit costs a row. */
			if (r == 0)
				r = svc_copy_artifacts_locked(s, from, id, err);
		} else if (r == 0) {
			/* Coalescing stays per owner even with a shared cache: it
			 * answers with the in-flight build itself, which another
			 * owner may neither see nor cancel. A shared cache still
			 * spares the second build: it is answered at claim time. */
			r = find_inflight_locked(s, key, owner, id, err);
			if (r == 1) {
				outcome = KILN_SUBMIT_COALESCED;
				r = 0;
			} else if (r == 0) {
				outcome = KILN_SUBMIT_QUEUED;
				kiln_uuid4(id);
				r = insert_build_locked(s, id, owner, rc, key, in->recipe,
				                        in->recipe_len,
				                        in->context_path ? ctx : NULL, NULL, err);
			}
		}
		/* Idle hosts wake at once (sent at commit; polled on SQLite). */
		if (r == 0 && outcome == KILN_SUBMIT_QUEUED)
			r = kiln_db_notify(s->db, SVC_CHANNEL_QUEUE, "", err);
		if (r < 0)
			kiln_db_rollback(s->db);
		else
			r = kiln_db_commit(s->db, err);
	}
	if (r == 0 && outcome == KILN_SUBMIT_QUEUED)
		pthread_cond_signal(&s->queue_cond);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	/* A hit's record does not change any more: read it after the lock
	 * (on this thread's read connection), which makes the writer's turn
	 * one transaction long. A queued build is read under the lock, so the
	 * answer is the state it was queued in (a worker may claim it next). */
	if (r == 0 && outcome != KILN_SUBMIT_CACHED)
		r = svc_get_locked(s, id, NULL, &b, err);
	pthread_mutex_unlock(&s->lock);
	if (r == 0 && outcome == KILN_SUBMIT_CACHED)
		r = kiln_service_get(s, id, NULL, &b, err);
	if (r < 0)
		return r;
	if (ret_outcome)
		*ret_outcome = outcome;
	if (ret)
		*ret = TAKE_PTR(b);
	return 0;
}

/* ---- list -------------------------------------------------------------------- */

static int parse_cursor(const char *c, int64_t *ret_us, char ret_id[KILN_BUILD_ID_LEN + 1],
                        struct kiln_error **err)
{
	const char *dot = strchr(c, '.');
	if (dot && (size_t)(dot - c) < 24 && kiln_is_uuid(dot + 1)) {
		char num[24];
		memcpy(num, c, (size_t)(dot - c));
		num[dot - c] = 0;
		if (kiln_parse_i64(num, 0, INT64_MAX, ret_us) == 0) {
			memcpy(ret_id, dot + 1, KILN_BUILD_ID_LEN + 1);
			return 0;
		}
	}
	return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
	                           "cursor: not a cursor from a previous page");
}

int kiln_service_list(struct kiln_service *s, const char *owner, int status, const char *cursor,
                      unsigned limit, struct kiln_build_info ***ret, size_t *ret_n, char **ret_next,
                      struct kiln_error **err)
{
	if (limit < 1 || limit > 100)
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                           "limit: must be between 1 and 100");
	if (status >= (int)ELEMENTSOF(status_names))
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL, "status: unknown");
	int64_t c_us = 0;
	char c_id[KILN_BUILD_ID_LEN + 1] = "";
	int r;
	if (cursor && (r = parse_cursor(cursor, &c_us, c_id, err)) < 0)
		return r;
	/* One statement per combination of filters (portable: no `$1 IS NULL`),
	 * numbered without gaps: PostgreSQL cannot type a parameter that the
	 * statement does not use. */
	struct kiln_buf q = KILN_BUF_INIT;
	int np = 0, p_owner = 0, p_status = 0, p_cursor = 0;
	kiln_buf_puts(&q, "SELECT " BUILD_COLS " FROM builds WHERE 1 = 1");
	if (owner)
		kiln_buf_printf(&q, " AND owner = $%d", p_owner = ++np);
	if (status >= 0)
		kiln_buf_printf(&q, " AND status = $%d", p_status = ++np);
	if (cursor) {
		p_cursor = ++np;
		np++;
		kiln_buf_printf(&q, " AND (created_us < $%d OR (created_us = $%d AND id < $%d))",
		                p_cursor, p_cursor, p_cursor + 1);
	}
	kiln_buf_printf(&q, " ORDER BY created_us DESC, id DESC LIMIT $%d", ++np);
	_cleanup_free_ char *sql = kiln_buf_steal(&q, NULL);

	struct kiln_build_info **v = NULL;
	size_t n = 0;
	bool more = false;
	pthread_mutex_lock(&s->lock);
	struct kiln_db_stmt *st = NULL;
	r = kiln_db_prepare(s->db, sql, &st, err);
	if (r == 0) {
		if (owner)
			kiln_db_bind_text(st, p_owner, owner);
		if (status >= 0)
			kiln_db_bind_text(st, p_status, status_names[status]);
		if (cursor) {
			kiln_db_bind_int64(st, p_cursor, c_us);
			kiln_db_bind_text(st, p_cursor + 1, c_id);
		}
		kiln_db_bind_int64(st, np, (int64_t)limit + 1);
		while ((r = kiln_db_step(st, err)) == 1) {
			if (n == limit) {
				more = true;
				break;
			}
			v = xreallocarray(v, n + 1, sizeof(*v));
			v[n++] = row_to_info(st);
		}
		kiln_db_stmt_done(st);
	}
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = load_artifacts_locked(s, v[i], err);
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		kiln_build_info_list_free(v, n);
		return r;
	}
	if (ret_next)
		*ret_next =
		    more ? xasprintf("%" PRId64 ".%s", v[n - 1]->created_us, v[n - 1]->id) : NULL;
	*ret = v;
	*ret_n = n;
	return 0;
}

/* ---- cancel ---------------------------------------------------------------- */

static int set_cancelled_locked(struct kiln_service *s, const char *id, const char *from_status,
                                const char *why, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r =
	    kiln_db_prepare(s->db,
	                    "UPDATE builds SET status = 'cancelled', error = $3, completed_us = $4,"
	                    " cancel_requested = 1, lease_until = NULL"
	                    " WHERE id = $1 AND status = $2",
	                    &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, id);
	kiln_db_bind_text(st, 2, from_status);
	kiln_db_bind_text(st, 3, why);
	kiln_db_bind_int64(st, 4, kiln_now_us());
	r = kiln_db_step(st, err);
	return r < 0 ? r : (int)kiln_db_changes(s->db);
}

int kiln_service_cancel(struct kiln_service *s, const char *id, const char *owner,
                        struct kiln_build_info **ret, struct kiln_error **err)
{
	bool notify = false;
	pthread_mutex_lock(&s->lock);
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	int r = svc_get_locked(s, id, owner, &b, err);
	if (r == 0 && b->status == KILN_BUILD_PENDING) {
		/* Written before the status changes: a reader that sees the build
		 * finished has every line (kiln_service_log_read's done). */
		static const char line[] = "==> cancelled before it started\n";
		svc_log_append(s, b->id, line, sizeof(line) - 1);
		r = set_cancelled_locked(s, b->id, "pending", "cancelled before it started", err);
		notify = r > 0;
		/* r == 0: a worker claimed it meanwhile — impossible under s->lock
		 * in this process, but another process may have. */
	} else if (r == 0 && b->status == KILN_BUILD_BUILDING) {
		struct run *run = s->running;
		while (run && strcmp(run->id, b->id) != 0)
			run = run->next;
		if (run) {
			if (run->stop == RUN_GO)
				run->stop = RUN_CANCEL;
			/* The pipe is non-blocking; one byte is enough, a full pipe
			 * already says "cancel". */
			ssize_t w = write(run->cancel_pipe[1], "c", 1);
			(void)w;
		} else {
			/* Claimed by another process (another host): the record is
			 * the truth, that worker's final update finds it no longer
			 * `building` and is discarded. The notification (or its
			 * once-a-second poll, hosts.c) makes it kill the sandbox. */
			static const char line[] = "==> cancelled\n";
			svc_log_append(s, b->id, line, sizeof(line) - 1);
			r = set_cancelled_locked(s, b->id, "building", "cancelled", err);
			notify = r > 0;
			if (notify)
				(void)kiln_db_notify(s->db, SVC_CHANNEL_CANCEL, b->id, NULL);
		}
	} else if (r == 0) {
		r = kiln_error_set(err, EBUSY, "build %s: already finished (%s)", b->id,
		                   kiln_build_status_name(b->status));
	}
	if (r >= 0) {
		b = kiln_build_info_free(b);
		r = svc_get_locked(s, id, owner, &b, err);
	}
	pthread_mutex_unlock(&s->lock);
	if (notify)
		svc_log_notify(s, id);
	if (r < 0)
		return r;
	if (ret)
		*ret = TAKE_PTR(b);
	return 0;
}

/* ---- artifacts, health ---------------------------------------------------------- */

int kiln_service_artifact(struct kiln_service *s, const char *id, const char *owner,
                          const char *name, char **ret_path, struct kiln_build_artifact *ret_info,
                          struct kiln_error **err)
{
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	int r = kiln_service_get(s, id, owner, &b, err);
	if (r < 0)
		return r;
	for (size_t i = 0; name && i < b->n_artifacts; i++) {
		struct kiln_build_artifact *a = &b->artifacts[i];
		if (strcmp(a->name, name) != 0)
			continue;
		_cleanup_free_ char *p = kiln_cas_path(s->state_dir, a->sha256);
		/* Checked before it is served (store/cas.h): a blob changed since it
		 * was written is rehashed, and a corrupt one is set aside and its
		 * builds marked, so that the next submit rebuilds. */
		_cleanup_error_ struct kiln_error *e2 = NULL;
		int fd = -1;
		r = kiln_cas_open_verified(s->state_dir, a->sha256, a->size, &fd, &e2);
		safe_close(fd);
		if (r == -EBADMSG) {
			svc_store_mark(s, a->sha256, e2->msg);
			return kiln_error_set(err, ENOENT,
			                      "artifact %s: %s; submit the recipe again to rebuild "
			                      "it",
			                      name, e2->msg);
		}
		if (r < 0)
			return kiln_error_set(err, ENOENT, "artifact %s: no longer in the store",
			                      name);
		if (ret_info) {
			*ret_info = *a;
			ret_info->name = xstrdup(a->name);
		}
		*ret_path = TAKE_PTR(p);
		return 0;
	}
	return kiln_error_set(err, ENOENT, "build %s: no artifact named %s", id,
	                      name ? name : "(null)");
}

bool kiln_service_ready(struct kiln_service *s)
{
	if (!s || !s->db)
		return false;
	pthread_mutex_lock(&s->lock);
	bool ok = !s->stopping && (s->no_workers || s->n_threads > 0);
	pthread_mutex_unlock(&s->lock);
	return ok && kiln_service_db_ping(s, NULL, NULL) == 0;
}

int kiln_service_db_ping(struct kiln_service *s, uint64_t *ret_usec, struct kiln_error **err)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db, "SELECT COUNT(*) FROM schema_version", &st, err);
	if (r == 0)
		r = kiln_db_step(st, err);
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (ret_usec)
		*ret_usec =
		    (uint64_t)((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000);
	return 0;
}

unsigned kiln_service_workers(struct kiln_service *s)
{
	return s ? s->n_threads : 0;
}

/* ---- open / recover / free ------------------------------------------------------- */

/* Start-up: this host's builds that its previous process left `building`
 * are reaped by svc_hosts_start (hosts.c: nothing can resume them, the
 * sandbox died with the server); here the scratch they left goes. */
static int remove_scratch(struct kiln_service *s)
{
	/* Scratch: the pipeline's own (flock-guarded) and our output dirs. */
	kiln_image_cleanup_stale(s->state_dir);
	_cleanup_free_ char *dir = xasprintf("%s/builds", s->state_dir);
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d))) {
			size_t len = strlen(de->d_name);
			if (len == KILN_BUILD_ID_LEN + 4 &&
			    strcmp(de->d_name + KILN_BUILD_ID_LEN, "-out") == 0) {
				_cleanup_free_ char *p = xasprintf("%s/%s", dir, de->d_name);
				kiln_rmtree(p);
			}
		}
		closedir(d);
	}
	return 0;
}

static unsigned default_workers(void)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	return cores >= 4 ? (unsigned)(cores / 2) : 1;
}

int kiln_service_open(const struct kiln_service_config *cfg, struct kiln_service **ret,
                      struct kiln_error **err)
{
	const char *state = cfg->state_dir ? cfg->state_dir : kiln_state_dir_default();
	int r = kiln_state_init(state, err);
	if (r == 0 && cfg->store)
		r = kiln_cas_set_store(cfg->store, err);
	if (r < 0)
		return r;
	struct kiln_service *s = xcalloc(1, sizeof(*s));
	s->state_dir = xstrdup(state);
	s->offline = cfg->offline;
	s->no_workers = cfg->no_workers;
	s->shared_cache = cfg->shared_cache;
	s->max_log_bytes = cfg->max_log_bytes ? cfg->max_log_bytes : KILN_LOG_MAX_DEFAULT;
	s->max_disk_mb = cfg->max_disk_mb;
	s->lock_fd = -1;
	s->listen_wake[0] = s->listen_wake[1] = -1;
	s->lease_s = cfg->lease_s ? cfg->lease_s : 30;
	s->retries = cfg->retries;
	char hn[256] = "";
	if (!cfg->host_id && gethostname(hn, sizeof(hn) - 1) < 0)
		snprintf(hn, sizeof(hn), "localhost");
	s->host_id = xstrdup(cfg->host_id ? cfg->host_id : hn);
	/* This process's worker id: claims and final updates carry it, so a
	 * restarted host (same host id) never passes the fence of its
	 * predecessor's builds. */
	uint8_t rnd[4];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		abort(); /* the kernel's CSPRNG failing is not recoverable */
	char hex[9];
	kiln_hex_encode(rnd, sizeof(rnd), hex);
	s->worker_id = xasprintf("%s/%s", s->host_id, hex);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->queue_cond, NULL);
	pthread_cond_init(&s->hb_cond, NULL);
	pthread_mutex_init(&s->subs_lock, NULL);
	pthread_mutex_init(&s->idx_lock, NULL);
	pthread_mutex_init(&s->setup_lock, NULL);
	pthread_mutex_init(&s->readers_lock, NULL);

	s->db_url = cfg->database ? xstrdup(cfg->database) : xasprintf("sqlite:%s/kiln.db", state);
	r = kiln_db_open(s->db_url, &s->db, err);
	if (r == 0)
		r = kiln_db_migrate(s->db, migrations, ELEMENTSOF(migrations), NULL, err);
	/* No WAL checkpoint inside a request, which holds s->lock. */
	if (r == 0)
		r = kiln_db_checkpoint_in_background(s->db, err);
	if (r == 0 && kiln_db_sqlite_path(s->db_url) &&
	    strcmp(kiln_db_sqlite_path(s->db_url), ":memory:") != 0)
		s->read_key_ok = pthread_key_create(&s->read_key, NULL) == 0;
	if (r == 0)
		r = svc_session_secret_load(s, err);
	if (r == 0 && !s->no_workers) {
		/* One server per state directory: crash recovery must never fail
		 * the builds of a server that is alive. */
		_cleanup_free_ char *lk = xasprintf("%s/locks/service.lock", state);
		s->lock_fd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (s->lock_fd < 0)
			r = kiln_error_set_errno(err, errno, "%s: cannot open", lk);
		else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0)
			r = kiln_error_set(err, EBUSY,
			                   "%s: another kiln server is using this state directory",
			                   state);
	}
	if (r == 0 && !s->no_workers)
		r = svc_hosts_start(s, cfg->workers ? cfg->workers : default_workers(), err);
	if (r == 0 && !s->no_workers)
		r = remove_scratch(s);
	/* The tool versions (part of every build key) run a few host tools the
	 * first time: do it now, not in the first submit's request. */
	if (r == 0 && !s->no_workers)
		(void)kiln_image_tool_versions();
	if (r == 0 && !s->no_workers) {
		r = svc_workers_start(s, cfg->workers ? cfg->workers : default_workers(), err);
	}
	if (r < 0) {
		kiln_service_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

struct kiln_service *kiln_service_free(struct kiln_service *s)
{
	if (!s)
		return NULL;
	svc_workers_stop(s);
	svc_hosts_stop(s);
	svc_log_free_all(s);
	for (unsigned i = 0; i < s->n_readers; i++)
		kiln_db_close(s->readers[i]);
	if (s->read_key_ok)
		pthread_key_delete(s->read_key);
	pthread_mutex_destroy(&s->readers_lock);
	kiln_db_close(s->db);
	safe_close(s->lock_fd);
	explicit_bzero(s->csrf_key, sizeof(s->csrf_key));
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->queue_cond);
	pthread_cond_destroy(&s->hb_cond);
	safe_close(s->listen_wake[0]);
	safe_close(s->listen_wake[1]);
	pthread_mutex_destroy(&s->subs_lock);
	pthread_mutex_destroy(&s->idx_lock);
	pthread_mutex_destroy(&s->setup_lock);
	free(s->state_dir);
	free(s->db_url);
	free(s->host_id);
	free(s->worker_id);
	free(s->ops_detail);
	free(s);
	return NULL;
}
