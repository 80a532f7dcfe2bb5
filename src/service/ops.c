/* service/ops.c — fleet-wide chores: a lease per chore in the database, so
 * that one host of several sharing it runs the scheduled backup, and the
 * chores' last outcome for /api/v1/health. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "service/internal.h"
#include "util/alloc.h"

const char *kiln_service_db_url(struct kiln_service *s)
{
	return s->db_url;
}

const char *kiln_service_worker_id(struct kiln_service *s)
{
	return s->worker_id;
}

int kiln_service_lease(struct kiln_service *s, const char *name, unsigned ttl_s,
                       struct kiln_error **err)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	pthread_mutex_lock(&s->lock);
	/* One statement: the row is taken when missing, renewed by its holder,
	 * or taken over once expired; a live lease of another holder is left
	 * alone and changes no row. */
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r =
	    kiln_db_prepare(s->db,
	                    "INSERT INTO ops_leases (name, holder, until_us) VALUES ($1, $2, $3)"
	                    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
	                    " until_us = excluded.until_us"
	                    " WHERE ops_leases.holder = excluded.holder"
	                    " OR ops_leases.until_us < $4",
	                    &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, name);
		kiln_db_bind_text(st, 2, s->worker_id);
		kiln_db_bind_int64(st, 3, now + (int64_t)ttl_s * 1000000);
		kiln_db_bind_int64(st, 4, now);
		r = kiln_db_step(st, err);
	}
	if (r == 0)
		r = kiln_db_changes(s->db) == 1;
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	return r;
}

void kiln_service_set_ops_detail(struct kiln_service *s, const char *json_members)
{
	char *copy = json_members ? xstrdup(json_members) : NULL;
	pthread_mutex_lock(&s->lock);
	free(s->ops_detail);
	s->ops_detail = copy;
	pthread_mutex_unlock(&s->lock);
}

char *kiln_service_ops_detail(struct kiln_service *s)
{
	pthread_mutex_lock(&s->lock);
	char *copy = s->ops_detail ? xstrdup(s->ops_detail) : NULL;
	pthread_mutex_unlock(&s->lock);
	return copy;
}

void kiln_service_set_backup_times(struct kiln_service *s, int64_t backup_us, int64_t test_us,
                                   bool test_ok)
{
	pthread_mutex_lock(&s->lock);
	s->backup_us = backup_us;
	s->restore_test_us = test_us;
	s->restore_test_ok = test_ok;
	pthread_mutex_unlock(&s->lock);
}

/* ---- numbers for the metrics ---------------------------------------------------- */

const char *const kiln_stats_failure_kinds[KILN_STATS_FAILURE_KINDS] = {"timeout", "limit", "exit",
                                                                        "system"};

void svc_count_failure(struct kiln_service *s, const struct kiln_error *why)
{
	enum kiln_error_kind k = kiln_error_kind(why);
	size_t i = k == KILN_ERR_LIMIT ? (why->code == ETIME ? 0 : 1) : k == KILN_ERR_USER ? 2 : 3;
	pthread_mutex_lock(&s->lock);
	s->failures[i]++;
	pthread_mutex_unlock(&s->lock);
}

const double kiln_stats_duration_bounds_s[KILN_STATS_DURATION_BUCKETS] = {
    1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, INFINITY,
};

void kiln_service_stats_clear(struct kiln_service_stats *st)
{
	for (size_t i = 0; i < st->n_hosts; i++)
		free(st->hosts[i].id);
	free(st->hosts);
	*st = (struct kiln_service_stats){0};
}

/* Each query fills part of the stats from its rows. */
typedef void (*row_fn)(struct kiln_db_stmt *q, struct kiln_service_stats *st);

static void row_status(struct kiln_db_stmt *q, struct kiln_service_stats *st)
{
	int i = kiln_build_status_parse(kiln_db_column_text(q, 0));
	if (i >= 0 && i < (int)ELEMENTSOF(st->by_status))
		st->by_status[i] = kiln_db_column_int64(q, 1);
}

static void row_cache(struct kiln_db_stmt *q, struct kiln_service_stats *st)
{
	if (kiln_db_column_int64(q, 0))
		st->cache_hits = kiln_db_column_int64(q, 1);
	else
		st->cache_misses = kiln_db_column_int64(q, 1);
}

static void row_oldest(struct kiln_db_stmt *q, struct kiln_service_stats *st)
{
	st->oldest_pending_us = kiln_db_column_is_null(q, 0) ? 0 : kiln_db_column_int64(q, 0);
}

static void row_duration(struct kiln_db_stmt *q, struct kiln_service_stats *st)
{
	double d = (double)kiln_db_column_int64(q, 0) / 1e6;
	for (size_t i = 0; i < KILN_STATS_DURATION_BUCKETS; i++)
		if (d <= kiln_stats_duration_bounds_s[i])
			st->duration_buckets[i]++;
	st->duration_sum_s += d;
	st->duration_count++;
}

static void row_host(struct kiln_db_stmt *q, struct kiln_service_stats *st)
{
	st->hosts = xreallocarray(st->hosts, st->n_hosts + 1, sizeof(*st->hosts));
	st->hosts[st->n_hosts++] =
	    (struct kiln_stats_host){xstrdup(kiln_db_column_text(q, 0)), kiln_db_column_int64(q, 1),
	                             kiln_db_column_int64(q, 2)};
}

static const struct {
	const char *sql;
	row_fn row;
} stats_queries[] = {
    {"SELECT status, COUNT(*) FROM builds GROUP BY status", row_status},
    {"SELECT cached, COUNT(*) FROM builds GROUP BY cached", row_cache},
    {"SELECT MIN(created_us) FROM builds WHERE status = 'pending'", row_oldest},
    /* every finished build that ran: a scan, as long as builds are kept */
    {"SELECT completed_us - started_us FROM builds WHERE status IN ('completed', 'failed')"
     " AND cached = 0 AND started_us IS NOT NULL AND completed_us IS NOT NULL",
     row_duration},
    {"SELECT h.id, h.slots, (SELECT COUNT(*) FROM builds b WHERE b.status = 'building'"
     " AND b.host = h.id) FROM hosts h ORDER BY h.id",
     row_host},
};

int kiln_service_stats(struct kiln_service *s, struct kiln_service_stats *ret,
                       struct kiln_error **err)
{
	struct kiln_service_stats st = {0};
	int r = 0;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; r == 0 && i < ELEMENTSOF(stats_queries); i++) {
		_cleanup_stmt_ struct kiln_db_stmt *q = NULL;
		r = kiln_db_prepare(s->db, stats_queries[i].sql, &q, err);
		while (r == 0 && (r = kiln_db_step(q, err)) == 1) {
			stats_queries[i].row(q, &st);
			r = 0;
		}
	}
	st.backup_us = s->backup_us;
	st.restore_test_us = s->restore_test_us;
	st.restore_test_ok = s->restore_test_ok;
	memcpy(st.failures, s->failures, sizeof(st.failures));
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		kiln_service_stats_clear(&st);
		return r;
	}
	*ret = st;
	return 0;
}

/* ---- draining ---------------------------------------------------------------------- */

unsigned kiln_service_drain(struct kiln_service *s, unsigned timeout_s)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_s;
	pthread_mutex_lock(&s->lock);
	s->draining = true;
	/* Woken by each build's end (worker.c's end_build broadcasts while
	 * draining); the deadline bounds the wait. */
	while (s->running && timeout_s > 0)
		if (pthread_cond_timedwait(&s->queue_cond, &s->lock, &deadline) == ETIMEDOUT)
			break;
	unsigned n = 0;
	for (struct run *r = s->running; r; r = r->next)
		n++;
	pthread_mutex_unlock(&s->lock);
	return n;
}
