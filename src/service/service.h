/* service/service.h — the build service: submit, query, cancel, logs, workers.
 *
 * Owns: turning a submitted recipe into a build record (validate → identity
 * → cache lookup → coalescing → persistent queue), the worker threads that
 * claim builds atomically and run the image pipeline, cancellation and
 * timeouts, the per-build log (stored with sequence numbers, fanned out to
 * live subscribers), crash recovery at start-up, API tokens and browser
 * sessions. Storage goes through store/db.h (SQLite now, PostgreSQL later).
 *
 * Must not: speak HTTP or print. Every function is thread-safe. Ownership:
 * a user (the owner string of a token; "anonymous" with --no-auth) sees and
 * cancels only their own builds; owner == NULL means "any owner" (admin and
 * CLI use).
 *
 * Errors: a negative errno and a struct kiln_error whose kind says whose
 * fault it is (util/error.h); http/json.c maps both to an HTTP status.
 *   -ENOENT     no such build / artifact / token (or not the owner's)
 *   -EBUSY      cancel of a finished build
 *   -EPROTO     context archive not tar/tar.gz/zip (USER)
 *   -EACCES     bad token or session
 *   USER        recipe or list parameters invalid (message starts with the JSON path)
 *   LIMIT       recipe or context over its limit
 *   SYSTEM      internal
 * The service returns structs; the API's JSON is http/'s (http/json.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "util/sha256.h"

#define KILN_BUILD_ID_LEN 36 /* UUID text */

enum kiln_build_status {
	KILN_BUILD_PENDING,
	KILN_BUILD_BUILDING,
	KILN_BUILD_COMPLETED,
	KILN_BUILD_FAILED,
	KILN_BUILD_CANCELLED,
};

/* "pending", "building", ...; and back (-1 when unknown). */
const char *kiln_build_status_name(enum kiln_build_status s);
int kiln_build_status_parse(const char *s);

struct kiln_build_artifact {
	char *name; /* rootfs.tar.gz, rootfs.squashfs, live.iso, sbom.spdx.json, manifest.json */
	char sha256[KILN_SHA256_HEX_LEN + 1];
	uint64_t size;
};

struct kiln_build_info {
	char id[KILN_BUILD_ID_LEN + 1];
	char *owner;
	char *name; /* the recipe's name, or NULL */
	enum kiln_build_status status;
	char config_hash[KILN_SHA256_HEX_LEN + 1];
	char build_key[KILN_SHA256_HEX_LEN + 1];
	int64_t source_date_epoch;
	int64_t created_us, started_us, completed_us; /* Unix µs; 0 when not yet */
	char *error;                                  /* failed/cancelled: why; else NULL */
	unsigned current_step, total_steps;
	char *current_what; /* "step 2 of 5: RUN make", or NULL */
	char *host;         /* the host (--host-id) that claimed it, or NULL */
	bool cached;        /* answered from the cache: no build ran for it */
	bool warning;       /* the build passed its warning_s */
	struct kiln_build_artifact *artifacts;
	size_t n_artifacts;
};

struct kiln_build_info *kiln_build_info_free(struct kiln_build_info *b);
static inline void kiln_build_info_freep(struct kiln_build_info **b)
{
	kiln_build_info_free(*b);
}

/* The default ceiling on one build's stored log (all its steps and kiln's
 * own lines together); what comes after it is dropped, and one line says how
 * much (docs/service.md, "Logs"). */
#define KILN_LOG_MAX_DEFAULT (UINT64_C(64) << 20)
/* The largest ceiling an operator may choose. */
#define KILN_LOG_MAX_LIMIT (UINT64_C(16) << 30)

struct kiln_service_config {
	const char *state_dir;
	const char
	    *database;     /* NULL: sqlite in state_dir/kiln.db; "sqlite:PATH"; "postgresql://" */
	unsigned workers;  /* 0: one per two cores (at least 1) */
	bool offline;      /* builds never fetch (warm store only) */
	bool shared_cache; /* a completed build answers identical recipes of every
	                    * owner, not only its own (docs/service.md, "cache") */
	uint64_t max_log_bytes; /* per build; 0: KILN_LOG_MAX_DEFAULT */
	int64_t max_disk_mb;    /* ceiling on resources.disk_mb; 0: KILN_DISK_MB_OPERATOR_DEFAULT */
	bool no_workers;        /* the database only: no workers, no crash recovery, no
	                         * server lock — for `kiln token ...` next to a running
	                         * server, and for tests of the queue */
	/* Several hosts on one database (docs/service.md, "Several hosts"). */
	const char *host_id; /* NULL: the host name */
	unsigned lease_s;    /* a claimed build's lease; 0: 30 s */
	unsigned retries;    /* times a build whose host died is queued again */
	const char *store;   /* NULL: STATE/cas; else a store shared by every host
	                      * (kiln_cas_set_store: process-wide) */
};

struct kiln_service;

/* Opens the database (applying migrations), registers this host, reaps the
 * builds this host (the same host_id) left `building` when it died — they
 * end `failed` with "interrupted: the server stopped while this build was
 * running", or go back to `pending` while cfg->retries allows; their
 * scratch is removed; `pending` ones stay queued — and starts the workers
 * and the heartbeat (lease renewal, the reaper of other hosts' expired
 * leases, the cancel poll). */
int kiln_service_open(const struct kiln_service_config *cfg, struct kiln_service **ret,
                      struct kiln_error **err);
/* The first half of a graceful stop (SIGTERM): claims nothing more and
 * waits up to timeout_s for the builds this process runs to end on their
 * own. Returns how many still run (kiln_service_free then puts them back
 * to `pending`). Requests are still served meanwhile. */
unsigned kiln_service_drain(struct kiln_service *s, unsigned timeout_s);
/* Applies kiln's migrations to db (the restore test of `kiln backup verify`
 * runs them on the restored copy: a backup this kiln cannot upgrade fails
 * the test, not the next start). */
struct kiln_db;
int kiln_service_migrate(struct kiln_db *db, struct kiln_error **err);
/* Graceful stop: stops claiming work, cancels running builds and puts them
 * back to `pending` (they run again at the next start), joins the workers,
 * closes the database. NULL-safe. (A crash instead — kill -9 — leaves them
 * `building`; kiln_service_open then ends them `failed`, "interrupted".) */
struct kiln_service *kiln_service_free(struct kiln_service *s);

/* ---- builds ---------------------------------------------------------------- */

enum kiln_submit_outcome {
	KILN_SUBMIT_QUEUED,    /* a new pending build → 202 */
	KILN_SUBMIT_CACHED,    /* completed build with the same build_key → 200, cached */
	KILN_SUBMIT_COALESCED, /* identical build already pending/building → 200 */
};

struct kiln_submit {
	const char *recipe; /* JSON text */
	size_t recipe_len;
	const char *context_path; /* uploaded context archive (a temp file) or NULL;
	                           * the service copies it into the store */
	const char *owner;
};

int kiln_service_submit(struct kiln_service *s, const struct kiln_submit *in,
                        enum kiln_submit_outcome *ret_outcome, struct kiln_build_info **ret,
                        struct kiln_error **err);
int kiln_service_get(struct kiln_service *s, const char *id, const char *owner,
                     struct kiln_build_info **ret, struct kiln_error **err);
/* The recipe as it was submitted (JSON text), for GET .../recipe and
 * "edit and rebuild"; another owner's build is -ENOENT, like a missing one. */
/* Templates (templates.c, docs/templates.md). */
struct kiln_template_move {
	char *build_id;
	int64_t tagged_us;
};
struct kiln_template_tag {
	char *name, *tag;
	char build_id[KILN_BUILD_ID_LEN + 1];
	bool protected_; /* does not move */
	int64_t updated_us;
	struct kiln_template_move *history; /* newest first, the current one included */
	size_t n_history;
};
/* Points owner's NAME:TAG at build_id, a completed build of owner's
 * (-ENOENT otherwise; -EBUSY when it is not completed or the tag is
 * protected and would move). protect makes the tag protected; a protected
 * tag stays so. ret gets name, tag, build_id and the flag (no history). */
int kiln_service_tag(struct kiln_service *s, const char *owner, const char *name, const char *tag,
                     const char *build_id, bool protect, struct kiln_template_tag *ret,
                     struct kiln_error **err);
/* owner's tags, by name and tag, each with its history. */
int kiln_service_templates(struct kiln_service *s, const char *owner,
                           struct kiln_template_tag **ret, size_t *ret_n, struct kiln_error **err);
void kiln_template_tags_free(struct kiln_template_tag *v, size_t n);

int kiln_service_recipe(struct kiln_service *s, const char *id, const char *owner, char **ret,
                        struct kiln_error **err);

/* Newest first. status < 0: any. cursor: NULL for the first page, else the
 * next_cursor of the previous page (opaque; one the service did not issue is
 * -EINVAL → 400). limit 1..100. *ret_next is NULL on the last page. */
int kiln_service_list(struct kiln_service *s, const char *owner, int status, const char *cursor,
                      unsigned limit, struct kiln_build_info ***ret, size_t *ret_n, char **ret_next,
                      struct kiln_error **err);
void kiln_build_info_list_free(struct kiln_build_info **v, size_t n);

/* Pending: never runs. Building: its sandbox is killed (within 2 s) and it
 * ends `cancelled`. Finished: -EBUSY. Returns the build as it is after. */
int kiln_service_cancel(struct kiln_service *s, const char *id, const char *owner,
                        struct kiln_build_info **ret, struct kiln_error **err);

/* Where an artifact's bytes are (a CAS path, read-only). */
int kiln_service_artifact(struct kiln_service *s, const char *id, const char *owner,
                          const char *name, char **ret_path, struct kiln_build_artifact *ret_info,
                          struct kiln_error **err);

/* ---- logs -------------------------------------------------------------------
 * A build's log is a sequence of lines numbered from 1 (kiln's "==> " lines
 * and every command's output, split at newlines; a line over 64 KiB is
 * split). Reading returns lines after `after_seq`. */

struct kiln_log_line {
	uint64_t seq;
	char *text; /* without the newline */
};

/* Lines with seq > after_seq, at most max_lines (0: all). *ret_done is true
 * when the build has finished and no line after the returned ones exists. */
int kiln_service_log_read(struct kiln_service *s, const char *id, const char *owner,
                          uint64_t after_seq, size_t max_lines, struct kiln_log_line **ret,
                          size_t *ret_n, bool *ret_done, struct kiln_error **err);
/* The same, also stopping once the returned lines hold max_bytes of text
 * (0: no limit; the line that crosses it is returned whole): a reader's
 * memory is bounded by bytes, not by a count of lines up to 64 KiB each. */
int kiln_service_log_read_bounded(struct kiln_service *s, const char *id, const char *owner,
                                  uint64_t after_seq, size_t max_lines, size_t max_bytes,
                                  struct kiln_log_line **ret, size_t *ret_n, bool *ret_done,
                                  struct kiln_error **err);
void kiln_log_lines_free(struct kiln_log_line *v, size_t n);

/* Live subscription: notify(ud) is called (from a worker thread; it must
 * not block) after new lines were appended or the build finished. */
struct kiln_log_sub;
int kiln_service_log_subscribe(struct kiln_service *s, const char *id, const char *owner,
                               void (*notify)(void *ud), void *ud, struct kiln_log_sub **ret,
                               struct kiln_error **err);
/* Once this returns, no notify call for sub is running and none will start:
 * the caller may free what ud points to. */
void kiln_service_log_unsubscribe(struct kiln_service *s, struct kiln_log_sub *sub);

/* ---- health ---------------------------------------------------------------- */

/* Database and workers are up. */
bool kiln_service_ready(struct kiln_service *s);
/* A database round-trip; its latency. */
int kiln_service_db_ping(struct kiln_service *s, uint64_t *ret_usec, struct kiln_error **err);
unsigned kiln_service_workers(struct kiln_service *s);

/* ---- fleet-wide chores (ops.c) ------------------------------------------------ */

/* The database URL this service uses. */
const char *kiln_service_db_url(struct kiln_service *s);
/* This process's id in the fleet (host_id/random). */
const char *kiln_service_worker_id(struct kiln_service *s);
/* Takes the named lease, or renews it when this process holds it, until
 * now + ttl_s: 1 when this process holds it afterwards, 0 when another
 * process's lease has not expired. One host of a fleet runs the chore. */
int kiln_service_lease(struct kiln_service *s, const char *name, unsigned ttl_s,
                       struct kiln_error **err);
/* JSON object members ("\"backup\":{...}") that /api/v1/health shows under
 * "details"; NULL: none. The getter returns a copy (caller frees) or NULL. */
void kiln_service_set_ops_detail(struct kiln_service *s, const char *json_members);
char *kiln_service_ops_detail(struct kiln_service *s);

/* The last backup (its time, whichever host took it) and this host's last
 * restore test, for the metrics; 0: none. */
void kiln_service_set_backup_times(struct kiln_service *s, int64_t backup_us, int64_t test_us,
                                   bool test_ok);

/* Numbers for GET /metrics, read from the database (so the whole fleet's)
 * at the time of the call. Build durations are those of builds that ran
 * (not cache hits) and ended completed or failed, in the buckets below. */
#define KILN_STATS_DURATION_BUCKETS 11
/* Failed builds by why: timeout (a LIMIT error with ETIME), limit (another
 * limit: the memory limit's OOM kill, output ceilings), exit (USER: a step
 * exited non-zero or died of a signal), system (kiln failed). */
#define KILN_STATS_FAILURE_KINDS 4
extern const char *const kiln_stats_failure_kinds[KILN_STATS_FAILURE_KINDS];
extern const double kiln_stats_duration_bounds_s[KILN_STATS_DURATION_BUCKETS]; /* last +Inf */
struct kiln_stats_host {
	char *id;
	int64_t slots, busy;
};
struct kiln_service_stats {
	int64_t by_status[5];      /* enum kiln_build_status */
	int64_t cache_hits;        /* builds answered from the cache */
	int64_t cache_misses;      /* builds that had to run (or will) */
	int64_t oldest_pending_us; /* created_us of the oldest pending build; 0: none */
	uint64_t duration_buckets[KILN_STATS_DURATION_BUCKETS]; /* cumulative */
	double duration_sum_s;
	uint64_t duration_count;
	struct kiln_stats_host *hosts;
	size_t n_hosts;
	int64_t backup_us, restore_test_us;
	bool restore_test_ok;
	uint64_t failures[KILN_STATS_FAILURE_KINDS]; /* this process's, since it started */
};
int kiln_service_stats(struct kiln_service *s, struct kiln_service_stats *ret,
                       struct kiln_error **err);
void kiln_service_stats_clear(struct kiln_service_stats *st);

/* ---- API tokens (stored as SHA-256 only) ------------------------------------ */

struct kiln_token_info {
	char id[KILN_BUILD_ID_LEN + 1];
	char *owner; /* the user the token acts as */
	char *name;  /* a label */
	int64_t created_us, last_used_us;
	bool revoked;
};

/* Creates a token for owner; *ret_secret is shown once ("kiln_" + 43 chars). */
int kiln_service_token_create(struct kiln_service *s, const char *owner, const char *name,
                              char **ret_secret, struct kiln_token_info *ret_info,
                              struct kiln_error **err);
int kiln_service_token_list(struct kiln_service *s, struct kiln_token_info **ret, size_t *ret_n,
                            struct kiln_error **err);
int kiln_service_token_revoke(struct kiln_service *s, const char *id, struct kiln_error **err);
/* The owner a secret authenticates as (caller frees), or -EACCES. */
int kiln_service_token_check(struct kiln_service *s, const char *secret, char **ret_owner,
                             struct kiln_error **err);
void kiln_token_info_clear(struct kiln_token_info *t);

/* ---- browser sessions (stored as SHA-256 only) --------------------------------
 * The web UI signs in with a token once and then holds a session id in a
 * cookie. A session acts as the owner of the token that opened it, ends at
 * expires_us, when revoked (sign-out), or when that token is revoked. */

#define KILN_SESSION_ID_LEN 43 /* base64url of 32 random bytes */
#define KILN_CSRF_TOKEN_LEN 43 /* base64url of an HMAC-SHA256 */

struct kiln_session_info {
	char *owner;
	int64_t created_us, expires_us; /* Unix µs */
	char csrf_token[KILN_CSRF_TOKEN_LEN + 1];
};
void kiln_session_info_clear(struct kiln_session_info *i);

/* Checks token (-EACCES when bad or revoked) and opens a session lasting
 * ttl_s seconds (0: 12 hours). *ret_id is the secret session id, shown once. */
int kiln_service_session_create(struct kiln_service *s, const char *token, unsigned ttl_s,
                                char **ret_id, struct kiln_session_info *ret,
                                struct kiln_error **err);
/* The live session with this id, or -EACCES (unknown, expired, revoked, its
 * token revoked). */
int kiln_service_session_check(struct kiln_service *s, const char *id,
                               struct kiln_session_info *ret, struct kiln_error **err);
/* Ends a session (-EACCES when it is not live). */
int kiln_service_session_revoke(struct kiln_service *s, const char *id, struct kiln_error **err);
/* The session's CSRF token: base64url(HMAC-SHA256(server key, id)). Pure
 * computation, defined for any string, live session or not. */
void kiln_service_session_csrf(struct kiln_service *s, const char *id,
                               char ret[KILN_CSRF_TOKEN_LEN + 1]);
/* token == the CSRF token of id, compared in constant time. */
bool kiln_service_session_csrf_ok(struct kiln_service *s, const char *id, const char *token);

/* ---- the store (service/store.c; docs/service.md, "The store") ----------------
 * The content-addressed store's blobs and every reference to them: the
 * database's (artifact rows, build contexts) and the state directory's
 * (local cache entries, package locks, bases: image/image.h). A build whose
 * artifacts cannot be trusted any more (a blob corrupt or missing, or
 * collected) is marked and never answers the cache again: a later submit of
 * its recipe builds it anew. */

struct kiln_store_problem {
	char sha256[KILN_SHA256_HEX_LEN + 1]; /* "" for a reference file kiln cannot read */
	bool corrupt;                         /* it did not hash to its name (else it is missing) */
	char *quarantined;                    /* corrupt: where it was moved */
	char *refs;                           /* what references it, "; "-separated, or NULL */
};

struct kiln_store_verify_report {
	size_t blobs;   /* rehashed */
	uint64_t bytes; /* their size */
	struct kiln_store_problem *problems;
	size_t n_problems;
	size_t builds_marked;
	size_t stamped;  /* good blobs whose mtime stamp was restored */
	size_t unshared; /* good blobs that had hard links outside the store */
	size_t removed;  /* with repair: local cache entries naming a bad blob and
	                  * temporary files of dead writers, removed */
};
void kiln_store_verify_report_clear(struct kiln_store_verify_report *r);

/* Called after each blob: done of total blobs, bytes_done of bytes_total. */
typedef void (*kiln_store_progress_fn)(void *ud, size_t done, size_t total, uint64_t bytes_done,
                                       uint64_t bytes_total);

/* Rehashes every blob (never trusting its metadata), quarantines the
 * corrupt ones (cas/quarantine/), checks that every reference resolves,
 * and marks the builds whose artifacts are corrupt or missing. repair also
 * removes what can only mislead: local cache entries naming a bad blob and
 * temporary files older than an hour. *ret is filled even when problems
 * were found; <0 only when the check itself could not run. */
int kiln_service_store_verify(struct kiln_service *s, bool repair, kiln_store_progress_fn progress,
                              void *ud, struct kiln_store_verify_report *ret,
                              struct kiln_error **err);

#define KILN_STORE_GC_GRACE_US (INT64_C(3600) * 1000000) /* the default grace_us */

struct kiln_store_gc_policy {
	int64_t keep_us;   /* collect what was not used for this long; < 0: no age limit */
	uint64_t max_size; /* then least recently used first until the store holds at
	                    * most this many bytes; 0: no limit */
	int64_t grace_us;  /* never what was used or written this recently (a build may
	                    * have stored a blob and not recorded it yet) */
	bool dry_run;      /* list only */
};

struct kiln_store_gc_item {
	char sha256[KILN_SHA256_HEX_LEN + 1];
	uint64_t size;
	int64_t used_us; /* last use */
	const char *why; /* static text */
};

struct kiln_store_gc_report {
	struct kiln_store_gc_item *items; /* what went (or, dry run, would go) */
	size_t n_items;
	uint64_t freed; /* bytes */
	uint64_t total; /* the store's bytes before */
	size_t blobs, kept_protected;
	size_t builds_marked;   /* builds whose artifacts went */
	size_t entries_removed; /* local cache entries whose blobs went */
};
void kiln_store_gc_report_clear(struct kiln_store_gc_report *r);

/* Collects blobs by policy. Never one that a pending, building or pinned
 * build references, nor a lock's .debs or a base's archive (they make a
 * rebuild byte-identical; docs/service.md says why). A blob nothing
 * references goes whatever the policy (after the grace period). */
int kiln_service_store_gc(struct kiln_service *s, const struct kiln_store_gc_policy *p,
                          struct kiln_store_gc_report *ret, struct kiln_error **err);

/* A pinned build's blobs are never collected. -ENOENT: no such build. */
int kiln_service_pin(struct kiln_service *s, const char *id, bool pinned, struct kiln_error **err);
