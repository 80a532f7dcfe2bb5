/* http/metrics.c — GET /metrics in the Prometheus text format (exposition
 * format 0.0.4) on a listener of its own (kiln serve --metrics-listen), and
 * the HTTP request counters the API server feeds it. docs/operations.md
 * explains every series.
 *
 * Its own listener, not a route of the API: the numbers (queue depth, hosts,
 * routes) are for the operator's scraper, reachable only where the operator
 * binds it (loopback or a monitoring network), and a scrape never competes
 * with the API's rate limit or connection limits. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "http/http.h"
#include "http/internal.h"
#include "http/parse.h"
#include "service/service.h"
#include "util/alloc.h"
#include "util/buf.h"

#define MAX_ROUTES 64
#define MAX_SERIES 512
/* Request latency buckets, seconds. */
static const double http_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,   1,    2.5,   5,    10};
#define N_HTTP_BOUNDS (sizeof(http_bounds) / sizeof(http_bounds[0]))

struct series {
	unsigned route; /* index in http_routes; MAX_ROUTES: matched no route */
	const char *method;
	unsigned status;
	uint64_t count;
};

static struct {
	pthread_mutex_t mu;
	struct series s[MAX_SERIES];
	size_t n;
	uint64_t overflow; /* requests past MAX_SERIES label sets */
	uint64_t buckets[MAX_ROUTES + 1][N_HTTP_BOUNDS];
	uint64_t count[MAX_ROUTES + 1];
	double sum_s[MAX_ROUTES + 1];
} hm = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The request's method as one of a fixed set: a label value must not come
 * from the client unbounded. */
static const char *method_label(const char *m)
{
	static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"};
	for (size_t i = 0; m && i < ELEMENTSOF(known); i++)
		if (strcmp(m, known[i]) == 0)
			return known[i];
	return "other";
}

void http_metrics_observe(const struct kiln_http_route *route, const char *method, unsigned status,
                          uint64_t duration_us)
{
	unsigned ri = MAX_ROUTES;
	if (route && route >= http_routes && route < http_routes + http_n_routes &&
	    (size_t)(route - http_routes) < MAX_ROUTES)
		ri = (unsigned)(route - http_routes);
	const char *ml = method_label(method);
	double d = (double)duration_us / 1e6;
	pthread_mutex_lock(&hm.mu);
	size_t i = 0;
	while (i < hm.n &&
	       !(hm.s[i].route == ri && hm.s[i].status == status && hm.s[i].method == ml))
		i++;
	if (i == hm.n && hm.n < MAX_SERIES)
		hm.s[hm.n++] = (struct series){ri, ml, status, 0};
	if (i < hm.n)
		hm.s[i].count++;
	else
		hm.overflow++;
	for (size_t b = 0; b < N_HTTP_BOUNDS; b++)
		if (d <= http_bounds[b])
			hm.buckets[ri][b]++;
	hm.count[ri]++;
	hm.sum_s[ri] += d;
	pthread_mutex_unlock(&hm.mu);
}

static const char *route_label(unsigned ri)
{
	return ri < http_n_routes ? http_routes[ri].pattern : "unmatched";
}

static void put_le(struct kiln_buf *b, double bound)
{
	if (isinf(bound))
		kiln_buf_puts(b, "+Inf");
	else
		kiln_buf_printf(b, "%g", bound);
}

static void header(struct kiln_buf *b, const char *name, const char *type, const char *help)
{
	kiln_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Host ids are operator-chosen (--host-id: no '/' or space) but may still
 * hold a quote or a backslash: escaped as the format requires. */
static void put_label_value(struct kiln_buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			kiln_buf_putc(b, '\\');
		if (*v == '\n') {
			kiln_buf_puts(b, "\\n");
			continue;
		}
		kiln_buf_putc(b, *v);
	}
}

static void write_service(struct kiln_buf *b, const struct kiln_service_stats *st, double now)
{
	header(b, "kiln_builds", "gauge", "Build records in the database by status.");
	for (int i = 0; i < 5; i++)
		kiln_buf_printf(b, "kiln_builds{status=\"%s\"} %lld\n",
		                kiln_build_status_name((enum kiln_build_status)i),
		                (long long)st->by_status[i]);
	header(b, "kiln_queue_depth", "gauge", "Builds waiting for a worker (status pending).");
	kiln_buf_printf(b, "kiln_queue_depth %lld\n", (long long)st->by_status[KILN_BUILD_PENDING]);
	header(b, "kiln_queue_oldest_pending_age_seconds", "gauge",
	       "Age of the oldest pending build; 0 when none is pending.");
	double age = st->oldest_pending_us ? now - (double)st->oldest_pending_us / 1e6 : 0.0;
	kiln_buf_printf(b, "kiln_queue_oldest_pending_age_seconds %.3f\n", age > 0 ? age : 0.0);
	header(b, "kiln_build_cache_hits", "gauge",
	       "Build records answered from the cache (cached = true).");
	kiln_buf_printf(b, "kiln_build_cache_hits %lld\n", (long long)st->cache_hits);
	header(b, "kiln_build_cache_misses", "gauge",
	       "Build records that ran or will run (not answered from the cache).");
	kiln_buf_printf(b, "kiln_build_cache_misses %lld\n", (long long)st->cache_misses);
	header(b, "kiln_build_duration_seconds", "histogram",
	       "Start to end of the builds that ran and ended completed or failed.");
	for (size_t i = 0; i < KILN_STATS_DURATION_BUCKETS; i++) {
		kiln_buf_puts(b, "kiln_build_duration_seconds_bucket{le=\"");
		put_le(b, kiln_stats_duration_bounds_s[i]);
		kiln_buf_printf(b, "\"} %llu\n", (unsigned long long)st->duration_buckets[i]);
	}
	kiln_buf_printf(b, "kiln_build_duration_seconds_sum %.6f\n", st->duration_sum_s);
	kiln_buf_printf(b, "kiln_build_duration_seconds_count %llu\n",
	                (unsigned long long)st->duration_count);
	header(b, "kiln_build_failures_total", "counter",
	       "Builds this process ran that failed, by kind: timeout, limit (OOM, output "
	       "ceilings), exit (a step failed), system (kiln failed).");
	for (size_t i = 0; i < KILN_STATS_FAILURE_KINDS; i++)
		kiln_buf_printf(b, "kiln_build_failures_total{kind=\"%s\"} %llu\n",
		                kiln_stats_failure_kinds[i], (unsigned long long)st->failures[i]);
	header(b, "kiln_worker_slots", "gauge",
	       "Worker slots of each registered host, busy or free.");
	for (size_t i = 0; i < st->n_hosts; i++) {
		const struct kiln_stats_host *h = &st->hosts[i];
		int64_t busy = h->busy, free_ = h->slots > h->busy ? h->slots - h->busy : 0;
		for (int k = 0; k < 2; k++) {
			kiln_buf_puts(b, "kiln_worker_slots{host=\"");
			put_label_value(b, h->id);
			kiln_buf_printf(b, "\",state=\"%s\"} %lld\n", k ? "free" : "busy",
			                (long long)(k ? free_ : busy));
		}
	}
	header(b, "kiln_backup_last_timestamp_seconds", "gauge",
	       "When the newest backup in --backup-dir was taken (Unix time); 0: none.");
	kiln_buf_printf(b, "kiln_backup_last_timestamp_seconds %lld\n",
	                (long long)(st->backup_us / 1000000));
	header(b, "kiln_restore_test_last_timestamp_seconds", "gauge",
	       "When the last restore test ran (Unix time); 0: never.");
	kiln_buf_printf(b, "kiln_restore_test_last_timestamp_seconds %lld\n",
	                (long long)(st->restore_test_us / 1000000));
	header(b, "kiln_restore_test_success", "gauge",
	       "1 when the last restore test passed, else 0.");
	kiln_buf_printf(b, "kiln_restore_test_success %d\n", st->restore_test_ok ? 1 : 0);
}

static void write_http(struct kiln_buf *b)
{
	pthread_mutex_lock(&hm.mu);
	header(b, "kiln_http_requests_total", "counter",
	       "HTTP requests answered by the API server, by route pattern, method and status.");
	for (size_t i = 0; i < hm.n; i++)
		kiln_buf_printf(
		    b,
		    "kiln_http_requests_total{route=\"%s\",method=\"%s\",status=\"%u\"} "
		    "%llu\n",
		    route_label(hm.s[i].route), hm.s[i].method, hm.s[i].status,
		    (unsigned long long)hm.s[i].count);
	header(b, "kiln_http_requests_unlabelled_total", "counter",
	       "Requests past the limit of label sets, counted without labels.");
	kiln_buf_printf(b, "kiln_http_requests_unlabelled_total %llu\n",
	                (unsigned long long)hm.overflow);
	header(b, "kiln_http_request_duration_seconds", "histogram",
	       "Time from the request's first byte to its response's last, by route pattern.");
	for (unsigned ri = 0; ri <= MAX_ROUTES; ri++) {
		if (!hm.count[ri])
			continue;
		for (size_t k = 0; k < N_HTTP_BOUNDS; k++)
			kiln_buf_printf(
			    b,
			    "kiln_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
			    "%llu\n",
			    route_label(ri), http_bounds[k], (unsigned long long)hm.buckets[ri][k]);
		kiln_buf_printf(
		    b,
		    "kiln_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} "
		    "%llu\n",
		    route_label(ri), (unsigned long long)hm.count[ri]);
		kiln_buf_printf(b, "kiln_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
		                route_label(ri), hm.sum_s[ri]);
		kiln_buf_printf(b, "kiln_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
		                route_label(ri), (unsigned long long)hm.count[ri]);
	}
	pthread_mutex_unlock(&hm.mu);
}

struct kiln_http_metrics {
	struct MHD_Daemon *d;
	struct kiln_service *svc;
	char *url;
};

static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned status, char *text,
                                    size_t len, const char *type)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	enum MHD_Result r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result on_metrics(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	(void)version;
	(void)upload_data;
	(void)con_cls;
	struct kiln_http_metrics *m = cls;
	if (*upload_data_size) /* no body is read: GET only */
		return MHD_NO;
	if (strcmp(url, "/metrics") != 0)
		return respond_text(c, MHD_HTTP_NOT_FOUND, xstrdup("not found: GET /metrics\n"), 24,
		                    "text/plain; charset=utf-8");
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return respond_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, xstrdup("GET /metrics only\n"),
		                    18, "text/plain; charset=utf-8");
	struct kiln_service_stats st;
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	header(&b, "kiln_database_up", "gauge", "1 when the numbers below came from the database.");
	if (kiln_service_stats(m->svc, &st, &err) == 0) {
		kiln_buf_puts(&b, "kiln_database_up 1\n");
		write_service(&b, &st, now);
		kiln_service_stats_clear(&st);
	} else {
		kiln_buf_puts(&b, "kiln_database_up 0\n");
	}
	write_http(&b);
	size_t len = b.len;
	char *text = kiln_buf_steal(&b, NULL);
	return respond_text(c, MHD_HTTP_OK, text, len, "text/plain; version=0.0.4; charset=utf-8");
}

int kiln_http_metrics_start(const char *addr, struct kiln_service *svc,
                            struct kiln_http_metrics **ret, struct kiln_error **err)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int r = kiln_http_listen_parse(addr, &ss, &sl, err);
	if (r < 0)
		return r;
	if (http_n_routes > MAX_ROUTES)
		return kiln_error_set(err, E2BIG, "metrics: more routes than %d", MAX_ROUTES);
	struct kiln_http_metrics *m = xcalloc(1, sizeof(*m));
	m->svc = svc;
	m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
	                        on_metrics, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	                        MHD_OPTION_CONNECTION_LIMIT, 16, MHD_OPTION_CONNECTION_TIMEOUT, 10,
	                        MHD_OPTION_END);
	if (!m->d) {
		free(m);
		return kiln_error_set(err, EADDRINUSE, "--metrics-listen %s: cannot listen", addr);
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_LISTEN_FD);
	struct sockaddr_storage bound;
	socklen_t bl = sizeof(bound);
	_cleanup_buf_ struct kiln_buf name = KILN_BUF_INIT;
	if (di && getsockname(di->listen_fd, (struct sockaddr *)&bound, &bl) == 0)
		kiln_http_addr_format((struct sockaddr *)&bound, &name, true);
	m->url = xasprintf("http://%s/metrics", name.data ? name.data : addr);
	*ret = m;
	return 0;
}

const char *kiln_http_metrics_url(const struct kiln_http_metrics *m)
{
	return m->url;
}

struct kiln_http_metrics *kiln_http_metrics_stop(struct kiln_http_metrics *m)
{
	if (!m)
		return NULL;
	MHD_stop_daemon(m->d);
	free(m->url);
	free(m);
	return NULL;
}
