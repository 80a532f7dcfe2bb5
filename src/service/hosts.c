/* service/hosts.c — this process as one host of a fleet sharing one
 * database (docs/service.md, "Several hosts").
 *
 * A host has an id (--host-id, default the host name) and, per process, a
 * worker id (host id + random suffix) that every claim records and every
 * final update is fenced by. Instead of failing every `building` record at
 * start-up — on a shared database that would fail the builds other hosts
 * are running — a claimed build carries a lease (lease_until) that the
 * heartbeat thread renews; any host's reaper ends a build whose lease ran
 * out ("interrupted: host NAME stopped answering"), or queues it again while
 * --retries allows. At start-up a host reaps at once only what its own
 * previous process left (its id: that process is dead, this one holds the
 * state directory's lock).
 *
 * Cancel and new work reach other hosts through LISTEN/NOTIFY on PostgreSQL
 * (a listener thread with its own connection); the heartbeat's poll — every
 * second, of the records of this process's running builds — is the
 * fallback and the only path on SQLite. That poll also catches a build
 * reaped while this host was not answering (SIGSTOP, a partition): it is
 * stopped here and its outcome stands. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/internal.h"
#include "util/alloc.h"
#include "util/fs.h"

#define TICK_S 1 /* the cancel poll and reaper period: cancel within 2 s */
#define REAP_BATCH 32

static const char own_why[] = "interrupted: the server stopped while this build was running";

/* A killed writer may have left half a line: end it before ours. */
static void log_interrupted(struct kiln_service *s, const char *id, const char *line)
{
	_cleanup_free_ char *p = svc_log_path(s, id);
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
	char last = '\n';
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0)
		if (pread(fd, &last, 1, st.st_size - 1) != 1)
			last = '\n';
	_cleanup_free_ char *text = xasprintf("%s%s", last == '\n' ? "" : "\n", line);
	svc_log_append(s, id, text, strlen(text));
}

struct victim {
	char id[KILN_BUILD_ID_LEN + 1];
	char *host, *worker;
	int64_t lease, attempts;
};

static void victims_free(struct victim *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].host);
		free(v[i].worker);
	}
	free(v);
}

/* Ends one reaped build, compare-and-swap on the (worker, lease) it was
 * read with: a lease renewed meanwhile (the host was alive after all) or a
 * record ended by someone else is left alone. 1 when this call ended it. */
static int reap_one_locked(struct kiln_service *s, const struct victim *v, const char *why,
                           struct kiln_error **err)
{
	bool requeue = v->attempts <= (int64_t)s->retries;
	_cleanup_free_ char *line =
	    requeue ? xasprintf("==> error: %s; queued again (attempt %lld, --retries %u)\n", why,
	                        (long long)v->attempts, s->retries)
	            : xasprintf("==> error: %s\n", why);
	static const char *const sql[] = {
	    /* fail */
	    "UPDATE builds SET status = 'failed', completed_us = $4, error = $5,"
	    " lease_until = NULL WHERE id = $1 AND status = 'building'"
	    " AND COALESCE(worker, '') = $2 AND COALESCE(lease_until, 0) = $3",
	    /* queue again */
	    "UPDATE builds SET status = 'pending', started_us = NULL, current_step = 0,"
	    " total_steps = 0, current_what = NULL, warning = 0, worker = NULL,"
	    " lease_until = NULL WHERE id = $1 AND status = 'building'"
	    " AND COALESCE(worker, '') = $2 AND COALESCE(lease_until, 0) = $3",
	};
	int r = kiln_db_begin(s->db, err);
	if (r < 0)
		return r;
	{
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		r = kiln_db_prepare(s->db, sql[requeue], &st, err);
		if (r == 0) {
			kiln_db_bind_text(st, 1, v->id);
			kiln_db_bind_text(st, 2, v->worker ? v->worker : "");
			kiln_db_bind_int64(st, 3, v->lease);
			if (!requeue) {
				kiln_db_bind_int64(st, 4, kiln_now_us());
				kiln_db_bind_text(st, 5, why);
			}
			r = kiln_db_step(st, err);
		}
	}
	bool done = r == 0 && kiln_db_changes(s->db) == 1;
	if (done && requeue)
		r = kiln_db_notify(s->db, SVC_CHANNEL_QUEUE, "", err);
	if (r < 0 || !done) {
		kiln_db_rollback(s->db);
		return r < 0 ? r : 0;
	}
	/* The line is written before the commit makes the build look ended
	 * (a reader that sees it finished has every line). */
	log_interrupted(s, v->id, line);
	r = kiln_db_commit(s->db, err);
	if (r < 0)
		return r;
	svc_log_notify(s, v->id);
	return 1;
}

static int select_victims_locked(struct kiln_service *s, const char *sql, bool own,
                                 struct victim **ret, size_t *ret_n, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db, sql, &st, err);
	if (r < 0)
		return r;
	if (own) {
		kiln_db_bind_text(st, 1, s->host_id);
	} else {
		kiln_db_bind_int64(st, 1, kiln_now_us());
		kiln_db_bind_text(st, 2, s->worker_id);
	}
	struct victim *v = NULL;
	size_t n = 0;
	while ((r = kiln_db_step(st, err)) == 1) {
		v = xreallocarray(v, n + 1, sizeof(*v));
		struct victim *x = &v[n++];
		snprintf(x->id, sizeof(x->id), "%s", kiln_db_column_text(st, 0));
		const char *h = kiln_db_column_text(st, 1), *w = kiln_db_column_text(st, 2);
		x->host = h ? xstrdup(h) : NULL;
		x->worker = w ? xstrdup(w) : NULL;
		x->lease = kiln_db_column_int64(st, 3);
		x->attempts = kiln_db_column_int64(st, 4);
	}
	if (r < 0) {
		victims_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* Builds whose lease ran out, of any host but this process (which renews
 * its own; a late renewal is not a death). */
static void reap_expired_locked(struct kiln_service *s)
{
	struct victim *v = NULL;
	size_t n = 0;
	if (select_victims_locked(s,
	                          "SELECT id, host, worker, COALESCE(lease_until, 0), attempts"
	                          " FROM builds WHERE status = 'building'"
	                          " AND COALESCE(lease_until, 0) < $1"
	                          " AND COALESCE(worker, '') <> $2 LIMIT 32",
	                          false, &v, &n, NULL) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *why = xasprintf("interrupted: host %s stopped answering",
		                                     v[i].host ? v[i].host : "(unknown)");
		(void)reap_one_locked(s, &v[i], why, NULL);
	}
	victims_free(v, n);
}

/* The cancel poll: a running build whose record was cancelled, reaped or
 * claimed by another process is stopped here. */
static void poll_running_locked(struct kiln_service *s)
{
	for (struct run *run = s->running; run; run = run->next) {
		if (run->stop != RUN_GO)
			continue;
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		if (kiln_db_prepare(s->db,
		                    "SELECT status, COALESCE(worker, ''), cancel_requested"
		                    " FROM builds WHERE id = $1",
		                    &st, NULL) < 0)
			return;
		kiln_db_bind_text(st, 1, run->id);
		if (kiln_db_step(st, NULL) != 1)
			continue;
		const char *status = kiln_db_column_text(st, 0);
		bool ours = status && strcmp(status, "building") == 0 &&
		            strcmp(kiln_db_column_text(st, 1), s->worker_id) == 0;
		if (ours && kiln_db_column_int64(st, 2) == 0)
			continue;
		run->stop =
		    ours || (status && strcmp(status, "cancelled") == 0) ? RUN_CANCEL : RUN_LOST;
		ssize_t w = write(run->cancel_pipe[1], "c", 1);
		(void)w;
	}
}

static void renew_locked(struct kiln_service *s)
{
	int64_t now = kiln_now_us();
	static const char *const sql[] = {
	    "UPDATE builds SET lease_until = $1 WHERE worker = $2 AND status = 'building'",
	    "UPDATE hosts SET heartbeat_us = $1 WHERE worker = $2",
	};
	for (size_t i = 0; i < ELEMENTSOF(sql); i++) {
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		if (kiln_db_prepare(s->db, sql[i], &st, NULL) < 0)
			return;
		kiln_db_bind_int64(st, 1, i == 0 ? now + (int64_t)s->lease_s * 1000000 : now);
		kiln_db_bind_text(st, 2, s->worker_id);
		(void)kiln_db_step(st, NULL);
	}
}

void svc_hosts_tick(struct kiln_service *s, bool renew)
{
	if (renew)
		renew_locked(s);
	poll_running_locked(s);
	reap_expired_locked(s);
}

static void *heartbeat_main(void *arg)
{
	struct kiln_service *s = arg;
	/* Renew at a third of the lease: two renewals may be lost (a busy
	 * database, a slow tick) before another host reaps. */
	unsigned every = s->lease_s / 3 ? s->lease_s / 3 : 1, n = 0;
	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		svc_hosts_tick(s, n++ % every == 0);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += TICK_S;
		pthread_cond_timedwait(&s->hb_cond, &s->lock, &ts);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- the listener (PostgreSQL) -------------------------------------------------- */

static void on_notify(struct kiln_service *s, const char *channel, const char *payload)
{
	pthread_mutex_lock(&s->lock);
	if (strcmp(channel, SVC_CHANNEL_QUEUE) == 0) {
		pthread_cond_broadcast(&s->queue_cond);
	} else if (strcmp(channel, SVC_CHANNEL_CANCEL) == 0) {
		for (struct run *run = s->running; run; run = run->next) {
			if (strcmp(run->id, payload) != 0)
				continue;
			if (run->stop == RUN_GO)
				run->stop = RUN_CANCEL;
			ssize_t w = write(run->cancel_pipe[1], "c", 1);
			(void)w;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static int listen_open(struct kiln_service *s, struct kiln_db **ret, struct kiln_error **err)
{
	struct kiln_db *db = NULL;
	int r = kiln_db_open(s->db_url, &db, err);
	if (r == 0)
		r = kiln_db_listen(db, SVC_CHANNEL_QUEUE, err);
	if (r == 0)
		r = kiln_db_listen(db, SVC_CHANNEL_CANCEL, err);
	if (r < 0) {
		kiln_db_close(db);
		return r;
	}
	*ret = db;
	return 0;
}

static bool stopping(struct kiln_service *s)
{
	pthread_mutex_lock(&s->lock);
	bool st = s->stopping;
	pthread_mutex_unlock(&s->lock);
	return st;
}

static void *listener_main(void *arg)
{
	struct kiln_service *s = arg;
	while (!stopping(s)) {
		if (!s->listen_db && listen_open(s, &s->listen_db, NULL) < 0) {
			/* The database is away: the polls carry on; retry in a
			 * second (or stop at once when woken). */
			struct pollfd p = {s->listen_wake[0], POLLIN, 0};
			(void)poll(&p, 1, 1000);
			continue;
		}
		char *channel = NULL, *payload = NULL;
		int r = kiln_db_wait_notify(s->listen_db, s->listen_wake[0], -1, &channel, &payload,
		                            NULL);
		if (r == 1)
			on_notify(s, channel, payload);
		else if (r < 0)
			s->listen_db = kiln_db_close(s->listen_db);
		free(channel);
		free(payload);
	}
	return NULL;
}

/* ---- start / stop ------------------------------------------------------------------ */

static int register_host(struct kiln_service *s, unsigned slots, struct kiln_error **err)
{
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "INSERT INTO hosts (id, worker, slots, started_us, heartbeat_us,"
	                        " version, tools) VALUES ($1, $2, $3, $4, $4, $5, $6)"
	                        " ON CONFLICT (id) DO UPDATE SET worker = $2, slots = $3,"
	                        " started_us = $4, heartbeat_us = $4, version = $5, tools = $6",
	                        &st, err);
	if (r < 0)
		return r;
	kiln_db_bind_text(st, 1, s->host_id);
	kiln_db_bind_text(st, 2, s->worker_id);
	kiln_db_bind_int64(st, 3, slots);
	kiln_db_bind_int64(st, 4, kiln_now_us());
	kiln_db_bind_text(st, 5, KILN_VERSION);
	kiln_db_bind_text(st, 6, svc_tools_hash());
	r = kiln_db_step(st, err);
	return r < 0 ? r : 0;
}

/* What this host's previous process left `building` (records from before
 * leases have no host: whoever starts first takes them). */
static int reap_own(struct kiln_service *s, struct kiln_error **err)
{
	struct victim *v = NULL;
	size_t n = 0;
	int r = select_victims_locked(s,
	                              "SELECT id, host, worker, COALESCE(lease_until, 0), attempts"
	                              " FROM builds WHERE status = 'building'"
	                              " AND (host = $1 OR host IS NULL)",
	                              true, &v, &n, err);
	for (size_t i = 0; r == 0 && i < n; i++) {
		int x = reap_one_locked(s, &v[i], own_why, err);
		r = x < 0 ? x : 0;
	}
	victims_free(v, n);
	return r;
}

int svc_hosts_start(struct kiln_service *s, unsigned slots, struct kiln_error **err)
{
	int r = register_host(s, slots, err);
	if (r == 0)
		r = reap_own(s, err);
	if (r < 0)
		return r;
	r = pthread_create(&s->hb_thread, NULL, heartbeat_main, s);
	if (r != 0)
		return kiln_error_set_errno(err, r, "cannot start the heartbeat");
	s->hb_started = true;
	if (!kiln_db_can_notify(s->db))
		return 0;
	if (pipe2(s->listen_wake, O_CLOEXEC | O_NONBLOCK) < 0)
		return kiln_error_set_errno(err, errno, "listener pipe");
	r = listen_open(s, &s->listen_db, err);
	if (r < 0)
		return r;
	r = pthread_create(&s->listen_thread, NULL, listener_main, s);
	if (r != 0)
		return kiln_error_set_errno(err, r, "cannot start the listener");
	s->listen_started = true;
	return 0;
}

void svc_hosts_stop(struct kiln_service *s)
{
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->hb_cond);
	pthread_mutex_unlock(&s->lock);
	if (s->hb_started)
		pthread_join(s->hb_thread, NULL);
	if (s->listen_started) {
		ssize_t w = write(s->listen_wake[1], "s", 1);
		(void)w;
		pthread_join(s->listen_thread, NULL);
	}
	s->hb_started = s->listen_started = false;
	s->listen_db = kiln_db_close(s->listen_db);
	if (s->worker_id && s->db) {
		pthread_mutex_lock(&s->lock);
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		if (kiln_db_prepare(s->db, "DELETE FROM hosts WHERE id = $1 AND worker = $2", &st,
		                    NULL) == 0) {
			kiln_db_bind_text(st, 1, s->host_id);
			kiln_db_bind_text(st, 2, s->worker_id);
			(void)kiln_db_step(st, NULL);
		}
		kiln_db_stmt_done(TAKE_PTR(st));
		pthread_mutex_unlock(&s->lock);
	}
}
