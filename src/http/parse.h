/* http/parse.h — the pure parsers of http/: no sockets, no MHD, no service.
 *
 * Everything that interprets bytes a client controls before a handler runs
 * — the route table walk, Host/Range/If-None-Match/Authorization/Accept/
 * Content-Type headers, list query parameters, listen addresses — lives
 * here so tests/unit/test_http.c and fuzz/fuzz_http.c can drive it
 * directly. Also the rate limiter's per-client bucket arithmetic and the
 * SSE/Content-Disposition/access-log writers (their output must stay
 * well-formed for any input). Must not: allocate on the request path except into a
 * caller's kiln_buf, or touch global state. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util/buf.h"
#include "util/error.h"

/* ---- methods and routes ---------------------------------------------------- */

enum {
	KILN_HTTP_GET = 1u << 0,
	KILN_HTTP_HEAD = 1u << 1,
	KILN_HTTP_POST = 1u << 2,
	KILN_HTTP_PUT = 1u << 3,
	KILN_HTTP_DELETE = 1u << 4,
	KILN_HTTP_PATCH = 1u << 5,
	KILN_HTTP_OPTIONS = 1u << 6,
};

/* The method bit, or 0 for a method kiln does not know. */
unsigned kiln_http_method_parse(const char *method);
/* "GET, HEAD, OPTIONS" for a mask (GET implies HEAD; OPTIONS always listed). */
void kiln_http_allow_header(unsigned methods, struct kiln_buf *out);

struct kiln_http_request;
typedef int (*kiln_http_handler_fn)(struct kiln_http_request *req);

struct kiln_http_route {
	unsigned method;     /* one KILN_HTTP_* bit (GET routes also answer HEAD) */
	const char *pattern; /* "/api/v1/builds/{id}/artifacts/{name}" */
	unsigned flags;      /* server-defined (auth, mutating, body, ...) */
	kiln_http_handler_fn handler;
};

#define KILN_HTTP_MAX_PARAMS 4
struct kiln_http_param {
	const char *s; /* points into the path; not NUL-terminated */
	size_t len;
};

/* Matches one pattern: literal segments compare exactly, "{x}" matches one
 * non-empty segment. */
bool kiln_http_path_match(const char *pattern, const char *path,
                          struct kiln_http_param params[KILN_HTTP_MAX_PARAMS], size_t *ret_n);

enum {
	KILN_HTTP_ROUTE_NOT_FOUND = -1,  /* no pattern matches the path → 404 */
	KILN_HTTP_ROUTE_BAD_METHOD = -2, /* the path exists, not with this method → 405 */
};
/* Index of the route for (method, path), or one of the codes above; *ret_allow
 * collects the methods the path answers (for Allow and CORS preflight). */
int kiln_http_route_find(const struct kiln_http_route *table, size_t n, unsigned method,
                         const char *path, struct kiln_http_param params[KILN_HTTP_MAX_PARAMS],
                         size_t *ret_n_params, unsigned *ret_allow);

/* ---- headers --------------------------------------------------------------- */

/* Host allowlist (DNS-rebinding defence). host is the Host header. An entry
 * "name:port" must match exactly; an entry "name" matches any port. Names
 * compare case-insensitively; IPv6 literals are written "[::1]". A missing,
 * empty or malformed Host is never allowed. */
bool kiln_http_host_allowed(const char *host, const char *const *allow, size_t n_allow);
/* Splits "name[:port]" ("[v6][:port]"). ret_port is -1 without a port.
 * Returns false when malformed (empty name, bad port, junk). */
bool kiln_http_host_split(const char *host, size_t len, size_t *ret_name_len, long *ret_port);

/* Request framing: request smuggling (RFC 9112 §6.1, §6.3). When a proxy
 * and kiln could read a body's length differently — Content-Length and
 * Transfer-Encoding together, a repeated Content-Length or
 * Transfer-Encoding, a length that is not plain digits, a coding other
 * than exactly "chunked", a header name with white space in it
 * ("Transfer-Encoding : chunked", which libmicrohttpd files under another
 * name while a lenient proxy may not) — the bytes one of them takes for
 * the next request are the attacker's. libmicrohttpd reads only the first of
 * repeated headers, so kiln looks at all of them. A repeated Host is
 * refused too (the allowlist checks only one: RFC 9112 §3.2). Feed every
 * request header in order to _add, then ask _check. */
struct kiln_http_framing {
	unsigned n_host, n_content_length, n_transfer_encoding;
	bool bad_length, bad_coding, bad_name;
};
void kiln_http_framing_add(struct kiln_http_framing *f, const char *name, const char *value);
/* NULL when the framing is unambiguous, else why not (a constant string). */
const char *kiln_http_framing_check(const struct kiln_http_framing *f);

/* CSRF defence: Origin (as a browser serialises it, RFC 6454) names this
 * server as the client reached it through `host` (the Host header, already
 * allowlisted): scheme https when tls else http, the same host name
 * (case-insensitive) and port (a missing port is the scheme's default).
 * "null", a path, userinfo or anything malformed is not the same origin. */
bool kiln_http_origin_same(const char *origin, const char *host, bool tls);
/* Sec-Fetch-Site allows a state change: absent (not a browser, or an old
 * one), "same-origin" or "none" (typed into the address bar); not
 * "same-site" (a sibling subdomain) nor "cross-site". */
bool kiln_http_fetch_site_ok(const char *v);

enum kiln_http_range_result {
	KILN_HTTP_RANGE_NONE,          /* absent, malformed or multi-range: send it all (200) */
	KILN_HTTP_RANGE_OK,            /* one satisfiable range (206) */
	KILN_HTTP_RANGE_UNSATISFIABLE, /* 416 */
};
/* "bytes=a-b" | "bytes=a-" | "bytes=-n" against a resource of size bytes. */
enum kiln_http_range_result kiln_http_range_parse(const char *range, uint64_t size,
                                                  uint64_t *ret_start, uint64_t *ret_len);

/* If-None-Match against a strong etag (with its quotes): "*" or any listed
 * tag, weak or not (RFC 9110 §13.1.2 uses the weak comparison). */
bool kiln_http_etag_match(const char *if_none_match, const char *etag);

/* "Bearer <token68>": the token (pointing into authz). */
bool kiln_http_bearer_parse(const char *authz, const char **ret_token, size_t *ret_len);

/* True when an Accept header lists media type `type` ("text/event-stream")
 * with a non-zero q. */
bool kiln_http_accepts(const char *accept, const char *type);

enum kiln_http_media {
	KILN_HTTP_MEDIA_NONE,      /* no Content-Type */
	KILN_HTTP_MEDIA_JSON,      /* application/json (charset absent or utf-8) */
	KILN_HTTP_MEDIA_MULTIPART, /* multipart/form-data with a boundary */
	KILN_HTTP_MEDIA_OTHER,
};
enum kiln_http_media kiln_http_media_type(const char *content_type);

/* ---- query parameters ------------------------------------------------------ */

struct kiln_http_list_query {
	int status;         /* -1: any */
	const char *cursor; /* NULL: first page; points into the input */
	unsigned limit;     /* 1..100, default 20 */
};
/* Validates GET /api/v1/builds parameters (each NULL when absent). Errors
 * (-EINVAL) name the parameter. status_parse maps a status name to its
 * value or -1 (kiln_build_status_parse; a parameter so this stays pure). */
int kiln_http_list_query_parse(const char *status, const char *cursor, const char *limit,
                               int (*status_parse)(const char *), struct kiln_http_list_query *ret,
                               struct kiln_error **err);

/* Last-Event-ID: a decimal sequence number. */
int kiln_http_last_event_id_parse(const char *s, uint64_t *ret);

/* ---- listen addresses -------------------------------------------------------- */

/* "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0", "localhost:8080". */
int kiln_http_listen_parse(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len,
                           struct kiln_error **err);
bool kiln_http_addr_is_loopback(const struct sockaddr *sa);
/* "127.0.0.1:8080" / "[::1]:8080" for a bound address. */
void kiln_http_addr_format(const struct sockaddr *sa, struct kiln_buf *out, bool with_port);

/* ---- rate limiting ----------------------------------------------------------- */

/* GCRA form of a token bucket: `limit` requests per minute, bursting to
 * `limit`. One per client. Integer-only, so no drift. */
struct kiln_http_bucket {
	uint64_t tat_us; /* theoretical arrival time; 0: full bucket */
};
struct kiln_http_rate {
	unsigned limit;         /* RateLimit-Limit */
	unsigned remaining;     /* RateLimit-Remaining */
	unsigned reset_s;       /* RateLimit-Reset: seconds until the bucket is full */
	unsigned retry_after_s; /* when refused: Retry-After */
};
/* Takes one token at now_us. Returns false (and fills retry_after_s) when
 * the bucket is empty. */
bool kiln_http_bucket_take(struct kiln_http_bucket *b, uint64_t now_us, unsigned limit,
                           struct kiln_http_rate *ret);

/* ---- writers ----------------------------------------------------------------- */

/* One SSE event: "id: <id>\n" (when id > 0), "event: <event>\n", a "data: "
 * line per line of data (CR, LF and CRLF all split), then a blank line. */
void kiln_http_sse_event(struct kiln_buf *out, const char *event, uint64_t id, const char *data,
                         size_t len);
/* One access-log line: a JSON object on one line (JSON Lines), fields
 *   {"time":"2026-12-01T22:14:31.123Z","remote":"127.0.0.1","method":"GET",
 *    "uri":"/api/v1/health","status":200,"ms":0.017,"user":null}
 * plus "aborted":true when the response did not complete and
 * "truncated":true when the URI was cut to fit. Log injection: in method,
 * URI, user and remote every byte outside printable ASCII, and `"` and `\`,
 * is written %HH, so a line is printable ASCII, valid JSON and ends at its
 * one '\n'. status 0: no response was sent (null). The line is at most
 * KILN_HTTP_LOG_LINE_MAX bytes — one write(2), which the kernel does not
 * interleave with another thread's on a pipe (PIPE_BUF) or an O_APPEND
 * file. Returns its length. */
#define KILN_HTTP_LOG_LINE_MAX 4096
struct kiln_http_log_entry {
	const char *time; /* RFC 3339 UTC */
	const char *remote, *method, *uri;
	const char *user; /* NULL: no authenticated owner */
	unsigned status;
	uint64_t duration_us;
	bool aborted;
};
size_t kiln_http_log_line(char out[KILN_HTTP_LOG_LINE_MAX], const struct kiln_http_log_entry *e);
/* attachment; filename="<ascii, quotes escaped>"; filename*=UTF-8''<pct> */
void kiln_http_content_disposition(struct kiln_buf *out, const char *name);
