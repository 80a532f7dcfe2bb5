/* service/internal.h — what the service's .c files share; not public.
 *
 * Locking (every function in service.h is thread-safe):
 *   s->lock      the database connection (one connection, used by one thread
 *                at a time), the running-build table, s->stopping, and the
 *                queue condition variable. Held only for database round
 *                trips, never across a build or a subscriber callback.
 *   s->subs_lock the subscriber list; notify() runs under it, which is what
 *                makes unsubscribe a barrier (no call after it returns).
 *   s->idx_lock  the log line index cache (log.c).
 *   s->setup_lock serialises base bootstraps (two workers needing the same
 *                missing base run mmdebstrap once).
 * Order: lock → subs_lock is never taken the other way round; idx_lock and
 * setup_lock are leaves. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "service/service.h"
#include "store/db.h"
#include "util/budget.h"
#include "util/buf.h"

#define KILN_CONTEXT_MAX_BYTES (UINT64_C(256) << 20)
#define KILN_LOG_LINE_MAX (64u << 10)

enum run_stop {
	RUN_GO,
	RUN_CANCEL,  /* kiln_service_cancel: ends `cancelled` */
	RUN_REQUEUE, /* kiln_service_free: back to `pending` */
	RUN_LOST,    /* the record is no longer ours (hosts.c): write nothing */
};

/* Notification channels (kiln_db_notify; PostgreSQL only, polled else). */
#define SVC_CHANNEL_QUEUE "kiln_queue"   /* a build became pending */
#define SVC_CHANNEL_CANCEL "kiln_cancel" /* payload: the id of a cancelled build */

/* A build a worker of this process has claimed. */
struct run {
	struct run *next;
	char id[KILN_BUILD_ID_LEN + 1];
	int cancel_pipe[2];
	enum run_stop stop;
	/* builds.attempts as this claim set it: the per-claim fence of every
	 * final update (worker.c), with the worker id. */
	int64_t attempts;
};

struct log_index;
struct log_sub_list;

#define SVC_READERS_MAX 64

struct kiln_service {
	char *state_dir;
	bool offline;
	bool no_workers;
	bool shared_cache;
	uint64_t max_log_bytes;
	int64_t max_disk_mb;
	struct kiln_db *db;
	int lock_fd; /* flock on state_dir/locks/service.lock while serving */

	/* hosts.c: this process as one host of a fleet sharing the database. */
	char *db_url;    /* for the listener's own connection */
	char *host_id;   /* --host-id, default the host name */
	char *worker_id; /* host_id/random: this process; claims and fences */
	unsigned lease_s, retries;
	pthread_t hb_thread;       /* heartbeat, lease renewal, reaper, cancel poll */
	pthread_cond_t hb_cond;    /* wakes the heartbeat to stop */
	struct kiln_db *listen_db; /* PostgreSQL: LISTEN connection, or NULL */
	pthread_t listen_thread;
	int listen_wake[2]; /* written to stop the listener */
	bool hb_started, listen_started;

	char *ops_detail;                   /* ops.c: JSON members for /api/v1/health, under lock */
	int64_t backup_us, restore_test_us; /* ops.c, under lock */
	uint64_t failures[KILN_STATS_FAILURE_KINDS]; /* ops.c: this process's, under lock */
	bool restore_test_ok;

	pthread_mutex_t lock;
	pthread_cond_t queue_cond;
	bool stopping;
	bool draining; /* kiln_service_drain: claim nothing more */
	struct run *running;
	pthread_t *threads;
	unsigned n_threads;

	pthread_mutex_t subs_lock;
	struct kiln_log_sub *subs;

	pthread_mutex_t idx_lock;
	struct log_index *idx;

	pthread_mutex_t setup_lock;

	/* SQLite: a read connection per thread (svc_read_db), so reads never
	 * queue behind s->lock. Closed at kiln_service_free. */
	pthread_key_t read_key;
	bool read_key_ok;
	pthread_mutex_t readers_lock; /* a leaf */
	struct kiln_db *readers[SVC_READERS_MAX];
	unsigned n_readers;

	uint8_t csrf_key[32]; /* HMAC key of CSRF tokens (session.c) */
};

int64_t kiln_now_us(void);
void kiln_uuid4(char out[KILN_BUILD_ID_LEN + 1]);
bool kiln_is_uuid(const char *s);

/* service.c: this thread's read-only use connection (SQLite; opened at its
 * first use, without s->lock), or NULL (PostgreSQL, or SVC_READERS_MAX
 * threads have one already): then read on s->db under s->lock. Sees every
 * committed transaction, so never use it inside a write transaction. */
struct kiln_db *svc_read_db(struct kiln_service *s);

/* service.c — with s->lock held. */
int svc_get_locked(struct kiln_service *s, const char *id, const char *owner,
                   struct kiln_build_info **ret, struct kiln_error **err);
/* The completed build that answers build_key for owner: one of owner's own
 * (any owner's with s->shared_cache), never `exclude`. 1 with ret_id (and
 * *ret_same_owner: whether it is owner's, i.e. whether its id may be shown
 * to owner), 0 when none, or -errno. */
int svc_cache_lookup_locked(struct kiln_service *s, const char *build_key, const char *owner,
                            const char *exclude, char ret_id[KILN_BUILD_ID_LEN + 1],
                            bool *ret_same_owner, struct kiln_error **err);
/* The log line of a build answered from the cache by `from`: names `from`
 * only when it is the same owner's build. Caller frees. */
char *svc_cache_log_line(const char *build_key, const char *from, bool same_owner);
/* A build answered from the cache at submit has no log file: its one line,
 * made from its row (1 with *ret, caller frees), or 0 if id is no such
 * build. */
int svc_cached_log_locked(struct kiln_service *s, const char *id, char **ret,
                          struct kiln_error **err);
int svc_copy_artifacts_locked(struct kiln_service *s, const char *from, const char *to,
                              struct kiln_error **err);

/* store.c: marks every build whose artifacts or context include blob hex
 * as no longer answering the cache (store_error = why). Takes s->lock.
 * Returns how many builds were marked, or -errno. */
int svc_store_mark(struct kiln_service *s, const char *hex, const char *why);

/* service.c: SHA-256 of kiln_image_tool_versions() (computed once per
 * process): a build records its submitter's, and only a host with the same
 * may claim it — the build key names those tools (hosts.c, worker.c). */
const char *svc_tools_hash(void);

/* token.c: base64url without padding of n bytes into out (4n/3+2 bytes). */
void svc_base64url(const uint8_t *p, size_t n, char *out);

/* token.c: kiln_service_token_check that also returns the token's id. */
int svc_token_check(struct kiln_service *s, const char *secret, char ret_id[KILN_BUILD_ID_LEN + 1],
                    char **ret_owner, struct kiln_error **err);

/* session.c: loads (creating it on first use) the CSRF key into s. */
int svc_session_secret_load(struct kiln_service *s, struct kiln_error **err);

/* hosts.c — registration, start-up reaping of this host's own builds,
 * then the heartbeat and listener threads; stop ends them and deregisters. */
int svc_hosts_start(struct kiln_service *s, unsigned slots, struct kiln_error **err);
void svc_hosts_stop(struct kiln_service *s);
/* ops.c: counts a build this process ran that failed, by why's kind. */
void svc_count_failure(struct kiln_service *s, const struct kiln_error *why);

/* One pass of the heartbeat (lease renewal, reaper, cancel poll): the
 * thread's body, and for tests. */
void svc_hosts_tick(struct kiln_service *s, bool renew);

/* worker.c */
int svc_workers_start(struct kiln_service *s, unsigned n, struct kiln_error **err);
void svc_workers_stop(struct kiln_service *s);

/* log.c */
char *svc_log_path(struct kiln_service *s, const char *id);
/* Appends text (split into lines) to a build's log. */
void svc_log_append(struct kiln_service *s, const char *id, const char *text, size_t len);
void svc_log_notify(struct kiln_service *s, const char *id);
void svc_log_free_all(struct kiln_service *s);

/* A streaming log writer for one running build. */
struct log_writer {
	struct kiln_service *s;
	char id[KILN_BUILD_ID_LEN + 1];
	int fd;
	pthread_mutex_t mu;        /* the pipeline may log from more than one thread */
	struct kiln_buf partial;   /* an unfinished line */
	struct kiln_budget budget; /* s->max_log_bytes for the whole build */
};
int svc_log_writer_open(struct log_writer *w, struct kiln_service *s, const char *id);
/* Within the build's budget: what is over it is dropped (and counted). */
void svc_log_writer_write(struct log_writer *w, const char *data, size_t len);
/* The build's last line, outside the budget: ends an unfinished line, then
 * says how much the budget dropped (if anything), then line. */
void svc_log_writer_end(struct log_writer *w, const char *line);
void svc_log_writer_close(struct log_writer *w);

/* For tests (tests/unit/test_service.c): the queue without the pipeline.
 * claim: the oldest pending build becomes `building` and is registered as
 * running (1, with its id), or 0 when none is pending. finish: ends a claimed
 * build as the worker would after the pipeline returned rc (0: completed
 * with the given artifacts; -ECANCELED: an error of kind CANCELLED; other:
 * failed with msg). */
int kiln_service_test_claim(struct kiln_service *s, char ret_id[KILN_BUILD_ID_LEN + 1],
                            struct kiln_error **err);
int kiln_service_test_finish(struct kiln_service *s, const char *id, int rc, const char *msg,
                             const struct kiln_build_artifact *a, size_t n,
                             struct kiln_error **err);
/* The read end of a claimed build's cancel pipe (-1 if not running). */
int kiln_service_test_cancel_fd(struct kiln_service *s, const char *id);
