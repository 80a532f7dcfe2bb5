/* http/internal.h — shared between server.c (daemons, middleware),
 * api.c (route table and handlers) and logs.c (log streaming). */
#pragma once

#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#include "http/http.h"
#include "http/parse.h"

/* Route flags */
enum {
	ROUTE_AUTH = 1u << 0,     /* needs an owner (token, or --no-auth) */
	ROUTE_MUTATING = 1u << 1, /* counts against the rate limit */
	ROUTE_BODY = 1u << 2,     /* the handler runs once the body is in */
	ROUTE_NO_LOG_BODY = 1u << 3,
	ROUTE_UI = 1u << 4,      /* the web page's files: the UI's CSP */
	ROUTE_SESSION = 1u << 5, /* /api/v1/session: reads the session cookie itself */
};

/* How a request authenticated (mw_auth); the CSRF stage depends on it. */
enum http_auth {
	HTTP_AUTH_NONE,
	HTTP_AUTH_BEARER, /* Authorization: Bearer: no ambient credential, no CSRF check */
	HTTP_AUTH_COOKIE, /* the session cookie: Origin + Sec-Fetch-Site + CSRF token */
	HTTP_AUTH_ANON,   /* --no-auth: Origin + Sec-Fetch-Site */
};

struct log_stream;
struct http_conn;

struct kiln_http_server {
	struct kiln_service *svc;
	bool no_auth, tls;
	unsigned rate_limit;
	size_t body_limit, upload_limit;
	unsigned sse_heartbeat_s;
	unsigned https_port; /* where the redirect listener points */
	unsigned session_ttl_s;
	/* "__Host-kiln_session"/"__Host-kiln_csrf" with Secure when the
	 * browser will accept them (TLS, or loopback-only listeners: Chromium
	 * and Firefox treat http://localhost and 127.0.0.1 as secure contexts),
	 * else "kiln_session"/"kiln_csrf" without Secure. */
	const char *cookie_session, *cookie_csrf;
	bool cookie_secure;
	char *upload_dir;
	FILE *access_log;

	char **allowed_hosts;
	size_t n_allowed_hosts;
	char **cors_origins;
	size_t n_cors_origins;
	char **urls;
	size_t n_urls;

	struct MHD_Daemon **daemons;
	void *listeners; /* server.c's per-daemon context, one per daemon */
	size_t n_daemons;
	char *tls_cert_pem, *tls_key_pem;

	/* per-client buckets: open addressing over client addresses */
	pthread_mutex_t rate_lock;
	struct rate_slot *rate_slots;
	size_t n_rate_slots;

	/* live log streams: heartbeat and shutdown walk them */
	pthread_mutex_t streams_lock;
	pthread_cond_t streams_cond;
	struct log_stream *streams;
	bool stopping;
	bool heartbeat_started;
	pthread_t heartbeat;

	/* every open connection and when its request headers are due; the
	 * heartbeat thread cuts the late ones (server.c, conn_reap) */
	pthread_mutex_t conns_lock;
	struct http_conn *conns;
	uint64_t header_timeout_us;
};

struct kiln_http_request {
	struct kiln_http_server *srv;
	struct MHD_Connection *conn;
	bool redirect_listener;
	char *raw_uri;
	const char *path; /* MHD's decoded path */
	const char *method_name;
	unsigned method;
	uint64_t start_us;
	bool started;
	unsigned status; /* what was sent, for the access log */

	const struct kiln_http_route *route;
	unsigned allow;
	char *params[KILN_HTTP_MAX_PARAMS];
	size_t n_params;
	char *owner;
	enum http_auth auth;
	const char *cors_origin; /* the request's Origin when allowed */
	bool rate_limited_route;
	struct kiln_http_rate rate;

	/* body */
	enum kiln_http_media media;
	struct kiln_buf body;
	uint64_t body_seen;
	bool body_failed;       /* a response (413, ...) is already queued */
	size_t too_large_limit; /* the body passed this limit: 413 at its end */
	struct MHD_PostProcessor *pp;
	struct kiln_buf recipe_part;
	int context_fd;
	char *context_path;
	bool context_seen;
	int part_error; /* -EFBIG / -EINVAL while parsing parts */
};

/* server.c */
uint64_t http_now_us(void);
enum MHD_Result http_respond(struct kiln_http_request *r, unsigned status,
                             struct MHD_Response *resp);
enum MHD_Result http_respond_json(struct kiln_http_request *r, unsigned status, const char *json,
                                  size_t len);
enum MHD_Result http_respond_error(struct kiln_http_request *r, unsigned status, const char *code,
                                   const char *fmt, ...) _printf_(4, 5);
/* Maps a service error (negative errno + message) to its status and code. */
enum MHD_Result http_respond_service_error(struct kiln_http_request *r, int rc,
                                           const struct kiln_error *err);
const char *http_header(struct kiln_http_request *r, const char *name);
const char *http_query(struct kiln_http_request *r, const char *name);

/* The client's address as a key: a family byte and the address (an IPv6
 * client by its /64). The rate limit and the live-stream limit count by it. */
#define HTTP_CLIENT_KEY_LEN 17
void http_client_key(struct kiln_http_request *r, uint8_t key[HTTP_CLIENT_KEY_LEN]);

/* Cookie value by name (MHD parses the Cookie header), or NULL. */
const char *http_cookie(struct kiln_http_request *r, const char *name);

/* api.c */
extern const struct kiln_http_route http_routes[];
extern const size_t http_n_routes;

/* metrics.c: one answered request, for kiln_http_requests_total and the
 * latency histogram (route NULL: it matched none). */
void http_metrics_observe(const struct kiln_http_route *route, const char *method, unsigned status,
                          uint64_t duration_us);

/* web.c */
int http_ui_index(struct kiln_http_request *r);
int http_ui_file(struct kiln_http_request *r);
int http_session_create(struct kiln_http_request *r);
int http_session_get(struct kiln_http_request *r);
int http_session_delete(struct kiln_http_request *r);

/* logs.c */
enum MHD_Result http_logs_respond(struct kiln_http_request *r, const char *id, bool sse);
void http_streams_wake_all(struct kiln_http_server *s, bool heartbeat);
