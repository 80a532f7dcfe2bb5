/* service/ops.c — fleet-wide chores: a lease per chore in the database, so
 * that one host of several sharing it runs the scheduled backup, and the
 * chores' last outcome for /api/v1/health. */
#include <pthread.h>
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
