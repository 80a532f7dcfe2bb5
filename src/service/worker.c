/* service/worker.c — the persistent queue's consumers.
 *
 * A worker claims the oldest pending build in one atomic UPDATE (inside a
 * write transaction, so two workers — or two processes — never claim the
 * same row), checks the cache again (an identical build may have completed
 * while this one waited), sets up the base if it is missing, runs the image
 * pipeline in its own thread (kiln_image_build moves the thread into a
 * private mount namespace), and records the outcome. A build's cancel pipe
 * exists from the moment it is claimed, so a cancel during base setup or
 * before the pipeline starts is seen too. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/image.h"
#include "recipe/recipe.h"
#include "service/internal.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/parse.h"

struct claim {
	char id[KILN_BUILD_ID_LEN + 1];
	char build_key[KILN_SHA256_HEX_LEN + 1];
	char *owner;
	char *recipe;
	char *context; /* sha256 or NULL */
	int64_t attempts;
	struct run *run;
};

static void claim_clear(struct claim *c)
{
	free(c->owner);
	free(c->recipe);
	free(c->context);
}

static struct run *run_find_locked(struct kiln_service *s, const char *id)
{
	for (struct run *r = s->running; r; r = r->next)
		if (strcmp(r->id, id) == 0)
			return r;
	return NULL;
}

static void run_remove_locked(struct kiln_service *s, struct run *run)
{
	for (struct run **p = &s->running; *p; p = &(*p)->next) {
		if (*p == run) {
			*p = run->next;
			break;
		}
	}
	safe_close(run->cancel_pipe[0]);
	safe_close(run->cancel_pipe[1]);
	free(run);
}

/* 1 with c filled, 0 when nothing is pending (or the service is stopping). */
static int claim_locked(struct kiln_service *s, struct claim *c, struct kiln_error **err)
{
	if (s->stopping || s->draining)
		return 0;
	int r = kiln_db_begin(s->db, err);
	if (r < 0)
		return r;
	{
		/* The claim names this host and this process (worker) and starts
		 * the lease that hosts.c's heartbeat extends; SKIP LOCKED (on
		 * PostgreSQL) lets concurrent hosts take different rows instead of
		 * queueing behind one; the re-check of status makes a lost race
		 * claim nothing rather than the same build twice. */
		_cleanup_free_ char *sql =
		    xasprintf("UPDATE builds SET status = 'building', started_us = $1, host = $2,"
		              " worker = $3, lease_until = $4, attempts = attempts + 1"
		              " WHERE id = (SELECT id FROM builds WHERE status = 'pending'"
		              "  AND (tools IS NULL OR tools = $5)"
		              "  ORDER BY created_us, id LIMIT 1%s) AND status = 'pending'"
		              " RETURNING id, build_key, recipe, context_sha256, owner, attempts",
		              kiln_db_sql_skip_locked(s->db));
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		r = kiln_db_prepare(s->db, sql, &st, err);
		if (r == 0) {
			int64_t now = kiln_now_us();
			kiln_db_bind_int64(st, 1, now);
			kiln_db_bind_text(st, 2, s->host_id);
			kiln_db_bind_text(st, 3, s->worker_id);
			kiln_db_bind_int64(st, 4, now + (int64_t)s->lease_s * 1000000);
			kiln_db_bind_text(st, 5, svc_tools_hash());
			r = kiln_db_step(st, err);
		}
		if (r == 1) {
			snprintf(c->id, sizeof(c->id), "%s", kiln_db_column_text(st, 0));
			snprintf(c->build_key, sizeof(c->build_key), "%s",
			         kiln_db_column_text(st, 1));
			c->recipe = xstrdup(kiln_db_column_text(st, 2));
			const char *ctx = kiln_db_column_text(st, 3);
			c->context = ctx ? xstrdup(ctx) : NULL;
			c->owner = xstrdup(kiln_db_column_text(st, 4));
			c->attempts = kiln_db_column_int64(st, 5);
		}
	}
	if (r <= 0) {
		kiln_db_rollback(s->db);
		return r;
	}
	struct run *run = xcalloc(1, sizeof(*run));
	memcpy(run->id, c->id, sizeof(run->id));
	run->attempts = c->attempts;
	if (pipe2(run->cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = kiln_error_set_errno(err, errno, "cancel pipe");
		free(run);
		kiln_db_rollback(s->db);
		claim_clear(c);
		return r;
	}
	r = kiln_db_commit(s->db, err);
	if (r < 0) {
		safe_close(run->cancel_pipe[0]);
		safe_close(run->cancel_pipe[1]);
		free(run);
		claim_clear(c);
		return r;
	}
	run->next = s->running;
	s->running = run;
	c->run = run;
	return 1;
}

enum outcome { OUT_COMPLETED, OUT_CACHED, OUT_CANCELLED, OUT_REQUEUED, OUT_FAILED, OUT_LOST };

/* Every final update is fenced: `status = 'building' AND worker = $2` (this
 * process's worker id) AND attempts as this claim set it (a stale slot of
 * this same process — its build reaped and claimed again here — must not
 * write the new claim's outcome: issue 11 review, item 5), so a host whose lease expired — its
 * build reaped by another host, failed or queued again and perhaps claimed elsewhere — cannot
 * overwrite the outcome when it comes back. The status goes first: when the fence refuses, no
 * artifact row is touched either. OUT_LOST (the record is no longer ours) writes nothing. */
static int update_status_locked(struct kiln_service *s, const char *id, int64_t attempts,
                                enum outcome o, const char *msg,
                                const struct kiln_build_artifact *a, size_t n,
                                const char *cached_from, struct kiln_error **err)
{
	static const char *const sql[] = {
	    [OUT_COMPLETED] = "UPDATE builds SET status = 'completed', completed_us = $3,"
	                      " lease_until = NULL, error = NULL"
	                      " WHERE id = $1 AND status = 'building' AND worker = $2",
	    [OUT_CACHED] = "UPDATE builds SET status = 'completed', completed_us = $3,"
	                   " lease_until = NULL, error = NULL, cached = 1, cached_from = $4"
	                   " WHERE id = $1 AND status = 'building' AND worker = $2",
	    [OUT_CANCELLED] = "UPDATE builds SET status = 'cancelled', completed_us = $3,"
	                      " lease_until = NULL, error = $4"
	                      " WHERE id = $1 AND status = 'building' AND worker = $2",
	    /* A graceful stop is not an attempt (--retries counts crashes). */
	    [OUT_REQUEUED] = "UPDATE builds SET status = 'pending', started_us = NULL,"
	                     " current_step = 0, total_steps = 0, current_what = NULL,"
	                     " warning = 0, worker = NULL, lease_until = NULL,"
	                     " attempts = attempts - 1"
	                     " WHERE id = $1 AND status = 'building' AND worker = $2",
	    [OUT_FAILED] = "UPDATE builds SET status = 'failed', completed_us = $3,"
	                   " lease_until = NULL, error = $4"
	                   " WHERE id = $1 AND status = 'building' AND worker = $2",
	};
	/* The claim's attempts: the first parameter each statement leaves free. */
	static const int attempts_param[] = {
	    [OUT_COMPLETED] = 4, [OUT_CACHED] = 5, [OUT_CANCELLED] = 5,
	    [OUT_REQUEUED] = 3,  [OUT_FAILED] = 5,
	};
	if (o == OUT_LOST)
		return 0;
	int r = kiln_db_begin(s->db, err);
	if (r < 0)
		return r;
	{
		_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
		_cleanup_free_ char *q =
		    xasprintf("%s AND attempts = $%d", sql[o], attempts_param[o]);
		r = kiln_db_prepare(s->db, q, &st, err);
		if (r == 0) {
			kiln_db_bind_text(st, 1, id);
			kiln_db_bind_text(st, 2, s->worker_id);
			kiln_db_bind_int64(st, attempts_param[o], attempts);
			if (o != OUT_REQUEUED)
				kiln_db_bind_int64(st, 3, kiln_now_us());
			if (o == OUT_CACHED)
				kiln_db_bind_text(st, 4, cached_from);
			else if (o == OUT_CANCELLED || o == OUT_FAILED)
				kiln_db_bind_text(st, 4, msg);
			r = kiln_db_step(st, err);
		}
		if (r == 0 && kiln_db_changes(s->db) == 0) {
			kiln_db_rollback(s->db);
			return 0; /* fenced: ended or taken over by someone else */
		}
	}
	if (r == 0 && o == OUT_COMPLETED) {
		_cleanup_stmt_ struct kiln_db_stmt *del = NULL;
		r = kiln_db_prepare(s->db, "DELETE FROM artifacts WHERE build_id = $1", &del, err);
		if (r == 0) {
			kiln_db_bind_text(del, 1, id);
			r = kiln_db_step(del, err);
		}
		for (size_t i = 0; r == 0 && i < n; i++) {
			_cleanup_stmt_ struct kiln_db_stmt *ins = NULL;
			r = kiln_db_prepare(s->db,
			                    "INSERT INTO artifacts (build_id, name, sha256, size)"
			                    " VALUES ($1, $2, $3, $4)",
			                    &ins, err);
			if (r == 0) {
				kiln_db_bind_text(ins, 1, id);
				kiln_db_bind_text(ins, 2, a[i].name);
				kiln_db_bind_text(ins, 3, a[i].sha256);
				kiln_db_bind_int64(ins, 4, (int64_t)a[i].size);
				r = kiln_db_step(ins, err);
			}
		}
	} else if (r == 0 && o == OUT_CACHED) {
		r = svc_copy_artifacts_locked(s, cached_from, id, err);
	}
	if (r == 0 && o == OUT_REQUEUED)
		r = kiln_db_notify(s->db, SVC_CHANNEL_QUEUE, "", err);
	if (r < 0) {
		kiln_db_rollback(s->db);
		return r;
	}
	return kiln_db_commit(s->db, err);
}

/* Test-only fault injection (docs/service.md, "Testing"): with
 * KILN_TEST_FAIL_FINAL_UPDATE=N in the environment, the first N final
 * updates of this process fail as a database error would. Compiled out of
 * builds with NDEBUG (release). */
static bool final_update_fails(void)
{
#ifndef NDEBUG
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static long left = -1;
	pthread_mutex_lock(&mu);
	if (left < 0) {
		const char *v = getenv("KILN_TEST_FAIL_FINAL_UPDATE");
		int n = 0;
		left = v && kiln_parse_int(v, 0, 1000000, &n) == 0 ? n : 0;
	}
	bool fail = left > 0;
	if (fail)
		left--;
	pthread_mutex_unlock(&mu);
	return fail;
#else
	return false;
#endif
}

static void log_line(struct kiln_service *s, struct log_writer *w, const char *id, const char *line)
{
	if (w)
		svc_log_writer_write(w, line, strlen(line));
	else
		svc_log_append(s, id, line, strlen(line));
}

/* The final update, retried: a build whose outcome could not be recorded
 * would stay `building` with no worker behind it (until the next start's
 * recovery, or for ever on a server that keeps running). The outcome is
 * tried 6 times over ~3 s; then the build is recorded `failed` (saying why),
 * tried until it works or the service stops — waiting on queue_cond with
 * s->lock released, so that the other threads go on and a stop wakes it.
 * With s->lock held. */
static int record_outcome_locked(struct kiln_service *s, struct log_writer *w, const char *id,
                                 int64_t attempts, enum outcome o, const char *msg,
                                 const struct kiln_build_artifact *a, size_t n,
                                 const char *cached_from, struct kiln_error **err)
{
	static const unsigned delay_ms[] = {100, 200, 400, 800, 1600, 5000};
	_cleanup_error_ struct kiln_error *e = NULL;
	_cleanup_free_ char *why = NULL;
	for (unsigned attempt = 0;; attempt++) {
		e = kiln_error_free(e);
		int r =
		    final_update_fails()
		        ? kiln_error_set(&e, EIO, "injected failure (KILN_TEST_FAIL_FINAL_UPDATE)")
		        : update_status_locked(s, id, attempts, o, why ? why : msg, a, n,
		                               cached_from, &e);
		if (r == 0)
			return 0;
		bool give_up_outcome = !why && attempt + 1 >= ELEMENTSOF(delay_ms);
		if (s->stopping && (why || o == OUT_FAILED)) {
			/* Left `building`: the next start's recovery ends it. */
			if (err)
				*err = TAKE_PTR(e);
			return r;
		}
		_cleanup_free_ char *line = NULL;
		if (give_up_outcome && o != OUT_FAILED) {
			why = xasprintf(
			    "kiln could not record the build's outcome (%s): %s",
			    kiln_build_status_name(o == OUT_REQUEUED    ? KILN_BUILD_PENDING
			                           : o == OUT_CANCELLED ? KILN_BUILD_CANCELLED
			                                                : KILN_BUILD_COMPLETED),
			    e ? e->msg : strerror(-r));
			o = OUT_FAILED;
			line = xasprintf("==> failed: %s\n", why);
		} else {
			line =
			    xasprintf("==> warning: recording the outcome failed (%s); retrying\n",
			              e ? e->msg : strerror(-r));
		}
		log_line(s, w, id, line);
		unsigned ms =
		    delay_ms[attempt < ELEMENTSOF(delay_ms) ? attempt : ELEMENTSOF(delay_ms) - 1];
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += ms / 1000;
		ts.tv_nsec += (long)(ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (!s->stopping)
			pthread_cond_timedwait(&s->queue_cond, &s->lock, &ts);
	}
}

/* Records how a claimed build ended: its last log line first (so a reader
 * that sees the build finished has every line), then the record, then the
 * subscribers. rc is the pipeline's result; cached_from non-NULL means the
 * cache answered at claim time (from_same_owner: with a build of the same
 * owner, whose id the log may name). */
static int end_build(struct kiln_service *s, struct run *run, struct log_writer *w, int rc,
                     const struct kiln_error *why, const struct kiln_build_artifact *a, size_t n,
                     const char *cached_from, bool from_same_owner, struct kiln_error **err)
{
	char id[KILN_BUILD_ID_LEN + 1];
	memcpy(id, run->id, sizeof(id));
	pthread_mutex_lock(&s->lock);
	enum run_stop stop = run->stop;
	pthread_mutex_unlock(&s->lock);

	const char *msg = why ? why->msg : NULL;
	enum outcome o;
	_cleanup_free_ char *line = NULL;
	if (rc == 0 && cached_from) {
		o = OUT_CACHED;
		/* Never another owner's build id (svc_cache_log_line says why). */
		line = from_same_owner
		           ? xasprintf("==> cached: build %s completed with the same build key "
		                       "meanwhile; its artifacts answer this build\n",
		                       cached_from)
		           : xstrdup("==> cached: a build with the same build key completed "
		                     "meanwhile (shared build cache); its artifacts answer this "
		                     "build\n");
	} else if (rc == 0) {
		o = OUT_COMPLETED;
		line = xasprintf("==> completed: %zu artifacts\n", n);
	} else if (stop == RUN_LOST) {
		o = OUT_LOST;
		line =
		    xstrdup("==> stopped: the build's record is no longer this host's (cancelled"
		            " or reaped elsewhere while this host was not answering); its outcome"
		            " stands\n");
	} else if (stop == RUN_REQUEUE) {
		o = OUT_REQUEUED;
		line = xstrdup("==> stopped: the server is shutting down; the build is queued again"
		               " and starts over at the next start\n");
	} else if (kiln_error_kind(why) == KILN_ERR_CANCELLED || stop == RUN_CANCEL) {
		o = OUT_CANCELLED;
		msg = "cancelled";
		line = xstrdup("==> cancelled\n");
	} else {
		o = OUT_FAILED;
		svc_count_failure(s, why);
		if (!msg)
			msg = "build failed";
		line = xasprintf("==> failed: %s\n", msg);
	}
	if (w)
		svc_log_writer_end(w, line);
	else
		svc_log_append(s, id, line, strlen(line));

	pthread_mutex_lock(&s->lock);
	int r = record_outcome_locked(s, w, id, run->attempts, o, msg, a, n, cached_from, err);
	run_remove_locked(s, run);
	if (s->draining) /* kiln_service_drain waits for the last one */
		pthread_cond_broadcast(&s->queue_cond);
	pthread_mutex_unlock(&s->lock);
	svc_log_notify(s, id);
	return r;
}

/* ---- the pipeline's hooks --------------------------------------------------- */

struct job {
	struct kiln_service *s;
	const char *id;
	struct log_writer *log;
};

static void on_log(void *ud, const char *data, size_t len)
{
	struct job *j = ud;
	svc_log_writer_write(j->log, data, len);
}

static void on_progress(void *ud, unsigned step, unsigned total, const char *what)
{
	struct job *j = ud;
	pthread_mutex_lock(&j->s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	if (kiln_db_prepare(j->s->db,
	                    "UPDATE builds SET current_step = $2, total_steps = $3,"
	                    " current_what = $4 WHERE id = $1 AND worker = $5",
	                    &st, NULL) == 0) {
		kiln_db_bind_text(st, 1, j->id);
		kiln_db_bind_text(st, 5, j->s->worker_id);
		kiln_db_bind_int64(st, 2, step);
		kiln_db_bind_int64(st, 3, total);
		kiln_db_bind_text(st, 4, what);
		(void)kiln_db_step(st, NULL);
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&j->s->lock);
	svc_log_notify(j->s, j->id);
}

/* The pipeline logs its own "==> warning: ..." line; this records the flag. */
static void on_warning(void *ud, unsigned elapsed_s)
{
	struct job *j = ud;
	(void)elapsed_s;
	pthread_mutex_lock(&j->s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	if (kiln_db_prepare(j->s->db, "UPDATE builds SET warning = 1 WHERE id = $1 AND worker = $2",
	                    &st, NULL) == 0) {
		kiln_db_bind_text(st, 1, j->id);
		kiln_db_bind_text(st, 2, j->s->worker_id);
		(void)kiln_db_step(st, NULL);
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&j->s->lock);
	svc_log_notify(j->s, j->id);
}

static void logf_job(struct log_writer *w, const char *fmt, ...) _printf_(2, 3);
static void logf_job(struct log_writer *w, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *line = xvasprintf(fmt, ap);
	va_end(ap);
	svc_log_writer_write(w, line, strlen(line));
}

static bool stop_requested(struct kiln_service *s, struct run *run)
{
	pthread_mutex_lock(&s->lock);
	bool stop = run->stop != RUN_GO;
	pthread_mutex_unlock(&s->lock);
	return stop;
}

static int ensure_base(struct kiln_service *s, const struct kiln_recipe *r,
                       const struct kiln_image_hooks *hooks, struct log_writer *w,
                       struct kiln_error **err)
{
	_cleanup_free_ char *p = NULL;
	if (kiln_image_base_path(s->state_dir, r->base, &p, NULL, NULL) == 0)
		return 0;
	pthread_mutex_lock(&s->setup_lock);
	int rc = 0;
	if (kiln_image_base_path(s->state_dir, r->base, &p, NULL, NULL) < 0) {
		logf_job(w, "==> base %s is not set up yet; running kiln setup\n", r->base);
		rc = kiln_image_setup(s->state_dir, r->base, hooks, NULL, NULL, err);
		if (rc < 0)
			kiln_error_prefix(err, "setup of base %s", r->base);
	}
	pthread_mutex_unlock(&s->setup_lock);
	return rc;
}

static void run_claimed(struct kiln_service *s, struct claim *c)
{
	struct log_writer w;
	svc_log_writer_open(&w, s, c->id);
	struct job j = {s, c->id, &w};
	struct kiln_image_hooks hooks = {
	    .log = on_log,
	    .progress = on_progress,
	    .warning = on_warning,
	    .userdata = &j,
	    .cancel_fd = c->run->cancel_pipe[0],
	};
	_cleanup_error_ struct kiln_error *err = NULL;
	logf_job(&w, "==> build %s: started on host %s\n", c->id, s->host_id);

	_cleanup_recipe_ struct kiln_recipe *recipe = NULL;
	int rc = kiln_recipe_parse(c->recipe, strlen(c->recipe), &recipe, &err);
	if (rc < 0)
		kiln_error_prefix(&err, "stored recipe");

	/* An identical build may have completed while this one was queued. */
	if (rc == 0) {
		char from[KILN_BUILD_ID_LEN + 1];
		pthread_mutex_lock(&s->lock);
		bool same_owner = false;
		int hit = svc_cache_lookup_locked(s, c->build_key, c->owner, c->id, from,
		                                  &same_owner, NULL);
		pthread_mutex_unlock(&s->lock);
		if (hit == 1) {
			end_build(s, c->run, &w, 0, NULL, NULL, 0, from, same_owner, NULL);
			svc_log_writer_close(&w);
			return;
		}
	}
	if (rc == 0)
		rc = ensure_base(s, recipe, &hooks, &w, &err);
	if (rc == 0 && stop_requested(s, c->run))
		rc = kiln_error_set_kind(&err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");

	_cleanup_free_ char *ctx = c->context ? kiln_cas_path(s->state_dir, c->context) : NULL;
	if (rc == 0 && ctx) {
		/* The context is a store blob like any other: checked before the
		 * build reads it (store/cas.h), so a changed one fails the build
		 * instead of baking other bytes into the image. */
		int fd = -1;
		rc = kiln_cas_open_verified(s->state_dir, c->context, KILN_CAS_SIZE_UNKNOWN, &fd,
		                            &err);
		safe_close(fd);
		if (rc == -ENOENT)
			rc = kiln_error_set(&err, ENOENT, "no longer in the store");
		if (rc < 0)
			kiln_error_prefix(&err, "context sha256:%s", c->context);
	}
	_cleanup_free_ char *out = xasprintf("%s/builds/%s-out", s->state_dir, c->id);
	_cleanup_(kiln_image_result_freep) struct kiln_image_result *res = NULL;
	struct kiln_build_artifact *arts = NULL;
	size_t n = 0;
	_cleanup_close_ int lock_fd = -1;
	if (rc == 0) {
		kiln_rmtree(out);
		if (mkdir(out, 0700) < 0)
			rc = kiln_error_set_errno(&err, errno, "%s: cannot create", out);
	}
	if (rc == 0) {
		/* kiln_image_cleanup_stale (run by every build) removes dirs under
		 * builds/ whose .lock is not held: hold it while we own out. */
		_cleanup_free_ char *lk = xasprintf("%s/.lock", out);
		lock_fd = open(lk, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0)
			rc = kiln_error_set_errno(&err, errno, "%s: cannot lock", lk);
	}
	if (rc == 0) {
		struct kiln_image_build_opts o = {
		    .state_dir = s->state_dir,
		    .recipe = recipe,
		    .context_path = ctx,
		    .out_dir = out,
		    .build_id = c->id,
		    .offline = s->offline,
		    .max_disk_mb = s->max_disk_mb,
		    .hooks = hooks,
		};
		rc = kiln_image_build(&o, &res, &err);
	}
	if (rc == 0) {
		/* The pipeline's artifacts include manifest.json, in the CAS. */
		arts = xcalloc(res->n_artifacts + 1, sizeof(*arts));
		for (; n < res->n_artifacts; n++) {
			arts[n].name = res->artifacts[n].name;
			memcpy(arts[n].sha256, res->artifacts[n].sha256, sizeof(arts[n].sha256));
			arts[n].size = res->artifacts[n].size;
		}
	}
	end_build(s, c->run, &w, rc, err, arts, n, NULL, false, NULL);
	svc_log_writer_close(&w);
	free(arts);
	safe_close(TAKE_FD(lock_fd));
	kiln_rmtree(out);
}

static void *worker_main(void *arg)
{
	struct kiln_service *s = arg;
	pthread_mutex_lock(&s->lock);
	while (!s->stopping) {
		struct claim c = {0};
		int r = claim_locked(s, &c, NULL);
		if (r == 1) {
			pthread_mutex_unlock(&s->lock);
			run_claimed(s, &c);
			claim_clear(&c);
			pthread_mutex_lock(&s->lock);
			continue;
		}
		/* Nothing pending (or the database was busy): wait for a submit.
		 * The timeout also picks up builds queued by another process. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 2;
		pthread_cond_timedwait(&s->queue_cond, &s->lock, &ts);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int svc_workers_start(struct kiln_service *s, unsigned n, struct kiln_error **err)
{
	s->threads = xcalloc(n, sizeof(*s->threads));
	for (unsigned i = 0; i < n; i++) {
		int r = pthread_create(&s->threads[i], NULL, worker_main, s);
		if (r != 0)
			return kiln_error_set_errno(err, r, "cannot start worker %u", i + 1);
		s->n_threads++;
	}
	return 0;
}

void svc_workers_stop(struct kiln_service *s)
{
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	for (struct run *r = s->running; r; r = r->next) {
		/* A build the user cancelled stays cancelled: queued again, the
		 * next start would run it. */
		if (r->stop == RUN_GO)
			r->stop = RUN_REQUEUE;
		ssize_t w = write(r->cancel_pipe[1], "s", 1);
		(void)w;
	}
	pthread_cond_broadcast(&s->queue_cond);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < s->n_threads; i++)
		pthread_join(s->threads[i], NULL);
	free(s->threads);
	s->threads = NULL;
	s->n_threads = 0;
	/* Only builds claimed through the test hooks are left: no worker runs
	 * them; their records stay `building`, as after a crash. */
	pthread_mutex_lock(&s->lock);
	while (s->running)
		run_remove_locked(s, s->running);
	pthread_mutex_unlock(&s->lock);
}

/* ---- test hooks (internal.h) -------------------------------------------------- */

int kiln_service_test_claim(struct kiln_service *s, char ret_id[KILN_BUILD_ID_LEN + 1],
                            struct kiln_error **err)
{
	struct claim c = {0};
	pthread_mutex_lock(&s->lock);
	int r = claim_locked(s, &c, err);
	pthread_mutex_unlock(&s->lock);
	if (r == 1)
		memcpy(ret_id, c.id, sizeof(c.id));
	claim_clear(&c);
	return r;
}

int kiln_service_test_finish(struct kiln_service *s, const char *id, int rc, const char *msg,
                             const struct kiln_build_artifact *a, size_t n, struct kiln_error **err)
{
	pthread_mutex_lock(&s->lock);
	struct run *run = run_find_locked(s, id);
	pthread_mutex_unlock(&s->lock);
	if (!run)
		return kiln_error_set(err, ENOENT, "build %s: not claimed", id);
	/* The pipeline's error as the worker would get it; -ECANCELED stands
	 * for its CANCELLED kind. */
	struct kiln_error why = {
	    .code = -rc,
	    .kind = rc == -ECANCELED ? KILN_ERR_CANCELLED : KILN_ERR_USER,
	    .msg = (char *)msg,
	};
	return end_build(s, run, NULL, rc, rc < 0 ? &why : NULL, a, n, NULL, false, err);
}

int kiln_service_test_cancel_fd(struct kiln_service *s, const char *id)
{
	pthread_mutex_lock(&s->lock);
	struct run *run = run_find_locked(s, id);
	int fd = run ? run->cancel_pipe[0] : -1;
	pthread_mutex_unlock(&s->lock);
	return fd;
}
