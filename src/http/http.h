/* http/http.h — kiln's HTTP API server (libmicrohttpd).
 *
 * Owns: listening sockets (plain or TLS, plus an optional plain listener
 * that redirects to HTTPS), the routing table, the middleware every request
 * passes in a fixed order (security headers on every response, Host
 * allowlist, CORS, route/405/404, body limit, per-client rate limit,
 * authentication by token or session cookie, CSRF), the /api/v1 handlers,
 * Server-Sent Events for live logs, streamed artifact downloads, and the
 * web page (embedded at build time) with its sign-in sessions. docs/api.md describes the wire
 * format.
 *
 * Must not: touch the database, the store or the pipeline — every build,
 * log, artifact, token and health answer comes from service/service.h. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "service/service.h"
#include "util/error.h"

struct kiln_http_config {
	/* "ADDR:PORT" ("127.0.0.1:8080", "[::1]:8080", port 0 picks one).
	 * None: 127.0.0.1:8080. */
	const char *const *listen;
	size_t n_listen;
	/* PEM files; both or neither. With them every listener speaks TLS. */
	const char *tls_cert, *tls_key;
	/* With TLS: also listen for plain HTTP on this port (same addresses)
	 * and answer 301 to https. 0: no redirect listener. */
	unsigned redirect_port;
	/* No authentication: every request acts as owner "anonymous".
	 * Refused unless every listen address is loopback. */
	bool no_auth;
	/* Host header values accepted besides localhost, 127.0.0.1, [::1] and
	 * the listen addresses (each with the bound port): "name" (any port)
	 * or "name:port". */
	const char *const *allowed_hosts;
	size_t n_allowed_hosts;
	/* Origins ("https://ui.example.com") allowed cross-origin access. */
	const char *const *cors_origins;
	size_t n_cors_origins;
	unsigned rate_limit;              /* mutating requests/minute/client; 0: 100 */
	size_t body_limit;                /* JSON bodies; 0: 1 MiB */
	size_t upload_limit;              /* multipart bodies (context archives); 0: 512 MiB */
	unsigned connection_limit;        /* 0: 1024 */
	unsigned per_ip_connection_limit; /* 0: 128 */
	unsigned connection_timeout_s;    /* idle connections closed after, and request
	                                   * headers must be in within; 0: 30 */
	size_t connection_memory_limit;   /* request line + headers + buffers; 0: 32 KiB */
	unsigned threads;                 /* event-loop threads per listener; 0: CPUs (≤ 8) */
	unsigned sse_heartbeat_s;         /* SSE comment lines keep streams alive; 0: 15 */
	unsigned session_ttl_s;           /* web UI sessions last; 0: 12 hours */
	const char *state_dir;            /* multipart uploads go to state_dir/tmp */
	FILE *access_log; /* one JSON line per request (kiln_http_log_line), written with one
	                   * write(2) to its fd; NULL: off */
};

struct kiln_http_server;

/* Binds every listener and starts serving. The service must outlive the
 * server. */
int kiln_http_start(const struct kiln_http_config *cfg, struct kiln_service *svc,
                    struct kiln_http_server **ret, struct kiln_error **err);
/* Ends live log streams, stops accepting, finishes and closes every
 * connection. NULL-safe; returns NULL. */
struct kiln_http_server *kiln_http_stop(struct kiln_http_server *s);
/* The base URLs served ("http://127.0.0.1:8080"), with the bound ports. */
size_t kiln_http_urls(const struct kiln_http_server *s, const char *const **ret);

/* GET /metrics (Prometheus text format; http/metrics.c) on a listener of
 * its own at addr ("127.0.0.1:9090"). The service must outlive it. */
struct kiln_http_metrics;
int kiln_http_metrics_start(const char *addr, struct kiln_service *svc,
                            struct kiln_http_metrics **ret, struct kiln_error **err);
/* "http://127.0.0.1:9090/metrics", with the bound port. */
const char *kiln_http_metrics_url(const struct kiln_http_metrics *m);
struct kiln_http_metrics *kiln_http_metrics_stop(struct kiln_http_metrics *m);

/* --tls-self-signed: state_dir/tls/cert.pem and key.pem (0600), created
 * the first time (an ECDSA P-256 key, a certificate for localhost,
 * 127.0.0.1 and ::1) and reused after; made again when the certificate is
 * unreadable or within a day of expiry. *ret_created says which. Returns
 * the two paths (caller frees). */
int kiln_http_tls_self_signed(const char *state_dir, char **ret_cert, char **ret_key,
                              bool *ret_created, struct kiln_error **err);
