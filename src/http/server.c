/* http/server.c — listeners, the request lifecycle and the middleware.
 *
 * Every request walks the same stages, in this order, before its handler:
 *   host → cors → route → body-limit → rate-limit → auth → csrf → content-type
 * and every response leaves through http_respond(), which adds the
 * security headers (the web page's files get their own CSP, by route
 * flag). `auth` takes a bearer token, else the web UI's session cookie;
 * `csrf` guards every state change a browser could be tricked into. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/internal.h"
#include "http/json.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/parse.h"

#define RATE_SLOTS 4096
#define RATE_PROBES 16
#define DRAIN_MAX (8u << 20)

struct rate_slot {
	bool used;
	uint8_t key[17]; /* family byte + address (IPv6: its /64) */
	struct kiln_http_bucket bucket;
};

/* One per MHD daemon: the API, or the plain-HTTP redirect to HTTPS. */
struct listener {
	struct kiln_http_server *srv;
	bool redirect;
};

/* One per open connection: MHD's socket context. */
struct http_conn {
	int fd;
	uint64_t due_us; /* request headers complete by then; 0: inside a request */
	struct http_conn *prev, *next;
};

uint64_t http_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *http_header(struct kiln_http_request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_query(struct kiln_http_request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_cookie(struct kiln_http_request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, name);
}

/* ---- responses ------------------------------------------------------------- */

/* The web page: its own scripts, styles and images only, requests only to
 * this origin. No 'unsafe-inline': an injected <script> or style=""
 * attribute does not run even if escaping failed somewhere. */
#define UI_CSP                                                                                     \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "                \
	"connect-src 'self'; form-action 'self'; object-src 'none'; base-uri 'none'; "             \
	"frame-ancestors 'none'"

static void add_security_headers(struct kiln_http_request *r, struct MHD_Response *resp)
{
	/* The API serves data, never documents: nothing may load, run or
	 * frame anything from it. */
	MHD_add_response_header(
	    resp, "Content-Security-Policy",
	    r->route && (r->route->flags & ROUTE_UI)
	        ? UI_CSP
	        : "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
	          "form-action 'none'");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(resp, "X-Frame-Options", "DENY");
	MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
	if (r->srv->tls)
		MHD_add_response_header(resp, "Strict-Transport-Security",
		                        "max-age=63072000; includeSubDomains");
	if (!MHD_get_response_header(resp, "Cache-Control"))
		MHD_add_response_header(resp, "Cache-Control", "no-store");
}

enum MHD_Result http_respond(struct kiln_http_request *r, unsigned status,
                             struct MHD_Response *resp)
{
	add_security_headers(r, resp);
	if (r->cors_origin) {
		MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors_origin);
		MHD_add_response_header(resp, "Access-Control-Expose-Headers",
		                        "Location, ETag, Content-Range, Content-Disposition, "
		                        "Retry-After, RateLimit-Limit, RateLimit-Remaining, "
		                        "RateLimit-Reset");
	}
	if (r->srv->n_cors_origins > 0)
		MHD_add_response_header(resp, "Vary", "Origin");
	if (r->rate_limited_route && r->rate.limit > 0) {
		char v[32];
		snprintf(v, sizeof(v), "%u", r->rate.limit);
		MHD_add_response_header(resp, "RateLimit-Limit", v);
		snprintf(v, sizeof(v), "%u", r->rate.remaining);
		MHD_add_response_header(resp, "RateLimit-Remaining", v);
		snprintf(v, sizeof(v), "%u", r->rate.reset_s);
		MHD_add_response_header(resp, "RateLimit-Reset", v);
	}
	r->status = status;
	enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result http_respond_json(struct kiln_http_request *r, unsigned status, const char *json,
                                  size_t len)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(len, (void *)json, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	return http_respond(r, status, resp);
}

static struct MHD_Response *error_response(const char *code, const char *msg)
{
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_http_json_error(&b, code, msg);
	size_t len;
	char *data = kiln_buf_steal(&b, &len);
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(data);
		return NULL;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	return resp;
}

static enum MHD_Result respond_error_resp(struct kiln_http_request *r, unsigned status,
                                          struct MHD_Response *resp)
{
	if (!resp)
		return MHD_NO;
	return http_respond(r, status, resp);
}

enum MHD_Result http_respond_error(struct kiln_http_request *r, unsigned status, const char *code,
                                   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	return respond_error_resp(r, status, error_response(code, msg));
}

enum MHD_Result http_respond_service_error(struct kiln_http_request *r, int rc,
                                           const struct kiln_error *err)
{
	const char *msg = err && err->msg ? err->msg : strerror(-rc);
	struct kiln_http_error_status st = kiln_http_error_status(rc, kiln_error_kind(err));
	if (st.status != MHD_HTTP_INTERNAL_SERVER_ERROR) {
		struct MHD_Response *resp = error_response(st.code, msg);
		if (resp && st.status == MHD_HTTP_UNAUTHORIZED)
			MHD_add_response_header(resp, "WWW-Authenticate",
			                        "Bearer realm=\"kiln\", error=\"invalid_token\"");
		return respond_error_resp(r, st.status, resp);
	}
	/* Internal details (paths, SQL) stay in the server's log. */
	fprintf(stderr, "kiln: %s %s: internal error: %s\n", r->method_name, r->path, msg);
	return http_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
	                          "internal error (see the server log)");
}

/* ---- middleware ------------------------------------------------------------- */

enum { STAGE_NEXT, STAGE_RESPONDED, STAGE_FAILED };
#define STAGE_DONE(x) ((x) == MHD_YES ? STAGE_RESPONDED : STAGE_FAILED)

static int mw_host(struct kiln_http_request *r)
{
	/* DNS rebinding: a page on evil.example whose name now resolves to
	 * 127.0.0.1 reaches us with Host: evil.example. Only our own names
	 * are served. */
	const char *host = http_header(r, MHD_HTTP_HEADER_HOST);
	if (!kiln_http_host_allowed(host, (const char *const *)r->srv->allowed_hosts,
	                            r->srv->n_allowed_hosts))
		return STAGE_DONE(http_respond_error(r, MHD_HTTP_BAD_REQUEST, "host_not_allowed",
		                                     "Host header not allowed (see "
		                                     "--allowed-host)"));
	return STAGE_NEXT;
}

static int mw_cors(struct kiln_http_request *r)
{
	const char *origin = http_header(r, "Origin");
	if (!origin)
		return STAGE_NEXT;
	for (size_t i = 0; i < r->srv->n_cors_origins; i++)
		if (strcmp(origin, r->srv->cors_origins[i]) == 0)
			r->cors_origin = r->srv->cors_origins[i];
	return STAGE_NEXT;
}

static int mw_route(struct kiln_http_request *r)
{
	struct kiln_http_param params[KILN_HTTP_MAX_PARAMS];
	size_t n = 0;
	int i = kiln_http_route_find(http_routes, http_n_routes, r->method, r->path, params, &n,
	                             &r->allow);
	if (i == KILN_HTTP_ROUTE_NOT_FOUND)
		return STAGE_DONE(
		    http_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no such endpoint"));
	_cleanup_buf_ struct kiln_buf allow = KILN_BUF_INIT;
	kiln_http_allow_header(r->allow, &allow);
	if (r->method == KILN_HTTP_OPTIONS) {
		/* CORS preflight (or a plain OPTIONS): what this path answers. */
		struct MHD_Response *resp =
		    MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		MHD_add_response_header(resp, "Allow", allow.data);
		if (r->cors_origin) {
			MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow.data);
			MHD_add_response_header(resp, "Access-Control-Allow-Headers",
			                        "Authorization, Content-Type, Last-Event-ID, "
			                        "Range, If-None-Match, If-Range");
			MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
		}
		return STAGE_DONE(http_respond(r, MHD_HTTP_NO_CONTENT, resp));
	}
	if (i == KILN_HTTP_ROUTE_BAD_METHOD) {
		struct MHD_Response *resp =
		    error_response("method_not_allowed", "method not allowed for this endpoint");
		if (resp)
			MHD_add_response_header(resp, "Allow", allow.data);
		return STAGE_DONE(respond_error_resp(r, MHD_HTTP_METHOD_NOT_ALLOWED, resp));
	}
	r->route = &http_routes[i];
	r->n_params = n;
	for (size_t k = 0; k < n; k++)
		r->params[k] = xstrndup(params[k].s, params[k].len);
	return STAGE_NEXT;
}

static int mw_body_limit(struct kiln_http_request *r)
{
	r->media = kiln_http_media_type(http_header(r, MHD_HTTP_HEADER_CONTENT_TYPE));
	size_t limit =
	    r->media == KILN_HTTP_MEDIA_MULTIPART ? r->srv->upload_limit : r->srv->body_limit;
	const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
	uint64_t len = 0;
	if (cl && kiln_parse_u64(cl, 10, 0, UINT64_MAX, &len) == 0 && len > limit)
		return STAGE_DONE(
		    http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		                       "request body over the limit of %zu bytes", limit));
	return STAGE_NEXT;
}

void http_client_key(struct kiln_http_request *r, uint8_t key[HTTP_CLIENT_KEY_LEN])
{
	memset(key, 0, 17);
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (!ci || !ci->client_addr)
		return;
	const struct sockaddr *sa = ci->client_addr;
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			key[0] = 4;
			memcpy(key + 1, a->s6_addr + 12, 4);
		} else {
			/* One IPv6 client usually owns a whole /64. */
			key[0] = 6;
			memcpy(key + 1, a->s6_addr, 8);
		}
	}
}

static bool rate_take(struct kiln_http_server *s, const uint8_t key[17], uint64_t now,
                      struct kiln_http_rate *ret)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	pthread_mutex_lock(&s->rate_lock);
	struct rate_slot *victim = NULL, *slot = NULL;
	for (size_t p = 0; p < RATE_PROBES; p++) {
		struct rate_slot *c = &s->rate_slots[(h + p) % s->n_rate_slots];
		if (c->used && memcmp(c->key, key, 17) == 0) {
			slot = c;
			break;
		}
		/* Full table: reuse the slot whose client has been quiet longest. */
		if (!victim || !c->used ||
		    (victim->used && c->bucket.tat_us < victim->bucket.tat_us))
			if (!victim || victim->used)
				victim = c;
	}
	if (!slot) {
		slot = victim;
		slot->used = true;
		memcpy(slot->key, key, 17);
		slot->bucket.tat_us = 0;
	}
	bool ok = kiln_http_bucket_take(&slot->bucket, now, s->rate_limit, ret);
	pthread_mutex_unlock(&s->rate_lock);
	return ok;
}

static int mw_rate_limit(struct kiln_http_request *r)
{
	if (!(r->route->flags & ROUTE_MUTATING))
		return STAGE_NEXT;
	uint8_t key[17];
	http_client_key(r, key);
	r->rate_limited_route = true;
	if (rate_take(r->srv, key, http_now_us(), &r->rate))
		return STAGE_NEXT;
	struct MHD_Response *resp =
	    error_response("rate_limited", "too many requests; retry later");
	if (resp) {
		char v[32];
		snprintf(v, sizeof(v), "%u", r->rate.retry_after_s);
		MHD_add_response_header(resp, "Retry-After", v);
	}
	return STAGE_DONE(respond_error_resp(r, MHD_HTTP_TOO_MANY_REQUESTS, resp));
}

static int mw_auth(struct kiln_http_request *r)
{
	if (!(r->route->flags & ROUTE_AUTH))
		return STAGE_NEXT;
	if (r->srv->no_auth) {
		r->owner = xstrdup("anonymous");
		r->auth = HTTP_AUTH_ANON;
		return STAGE_NEXT;
	}
	const char *authz = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *sid = http_cookie(r, r->srv->cookie_session);
	const char *tok;
	size_t len;
	const char *why = "authentication required: send Authorization: Bearer <token> (or sign "
	                  "in to the web page)";
	if (!authz && sid) {
		/* The web page's session. A bearer token, when both are sent,
		 * wins: it is the explicit credential. */
		_cleanup_error_ struct kiln_error *err = NULL;
		struct kiln_session_info si = {0};
		int rc = kiln_service_session_check(r->srv->svc, sid, &si, &err);
		if (rc == 0) {
			r->owner = TAKE_PTR(si.owner);
			r->auth = HTTP_AUTH_COOKIE;
			return STAGE_NEXT;
		}
		if (rc != -EACCES)
			return STAGE_DONE(http_respond_service_error(r, rc, err));
		why = "session expired or signed out: sign in again";
	} else if (authz && kiln_http_bearer_parse(authz, &tok, &len)) {
		_cleanup_free_ char *secret = xstrndup(tok, len);
		_cleanup_error_ struct kiln_error *err = NULL;
		char *owner = NULL;
		int rc = kiln_service_token_check(r->srv->svc, secret, &owner, &err);
		if (rc == 0) {
			r->owner = owner;
			r->auth = HTTP_AUTH_BEARER;
			return STAGE_NEXT;
		}
		if (rc != -EACCES)
			return STAGE_DONE(http_respond_service_error(r, rc, err));
		why = "invalid or revoked token";
	} else if (authz) {
		why = "malformed Authorization header: expected Bearer <token>";
	}
	struct MHD_Response *resp = error_response("unauthorized", why);
	if (resp)
		MHD_add_response_header(resp, "WWW-Authenticate",
		                        authz ? "Bearer realm=\"kiln\", error=\"invalid_token\""
		                              : "Bearer realm=\"kiln\"");
	return STAGE_DONE(respond_error_resp(r, MHD_HTTP_UNAUTHORIZED, resp));
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size);

static int csrf_refuse(struct kiln_http_request *r, const char *why)
{
	return STAGE_DONE(http_respond_error(r, MHD_HTTP_FORBIDDEN, "csrf", "%s", why));
}

static bool ct_streq(const char *a, const char *b)
{
	size_t n = strlen(a);
	if (n != strlen(b))
		return false;
	unsigned char d = 0;
	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

/* Cross-site request forgery: a page elsewhere makes the browser send a
 * request here with the user's ambient credentials — the session cookie,
 * or no credential at all with --no-auth (a multipart POST is a "simple"
 * request that needs no preflight). Bearer tokens are never ambient, so
 * bearer calls skip all of this. Three independent checks, any one of
 * which stops the attack in browsers that implement it:
 *   - Sec-Fetch-Site: the browser says where the request comes from;
 *   - Origin: must be this server as the client reached it;
 *   - the double-submit token: X-CSRF-Token must equal the csrf cookie
 *     (which only a same-origin script can read) and the HMAC of the
 *     session id (so a token or cookie planted from another session, or
 *     tossed in by a sibling subdomain, does not match). */
static int mw_csrf(struct kiln_http_request *r)
{
	enum {
		STATE_CHANGING = KILN_HTTP_POST | KILN_HTTP_PUT | KILN_HTTP_PATCH | KILN_HTTP_DELETE
	};
	if (!(r->method & STATE_CHANGING) || r->auth == HTTP_AUTH_BEARER)
		return STAGE_NEXT;
	const char *sid = NULL;
	if (r->auth == HTTP_AUTH_COOKIE)
		sid = http_cookie(r, r->srv->cookie_session);
	else if (r->route->flags & ROUTE_SESSION)
		sid = r->srv->no_auth ? NULL : http_cookie(r, r->srv->cookie_session);
	else if (r->auth != HTTP_AUTH_ANON)
		return STAGE_NEXT;
	if (!kiln_http_fetch_site_ok(http_header(r, "Sec-Fetch-Site")))
		return csrf_refuse(r, "cross-site request refused (Sec-Fetch-Site)");
	const char *origin = http_header(r, "Origin");
	if (origin &&
	    !kiln_http_origin_same(origin, http_header(r, MHD_HTTP_HEADER_HOST), r->srv->tls))
		return csrf_refuse(r, "cross-origin request refused (Origin)");
	if (!sid)
		return STAGE_NEXT;
	const char *hdr = http_header(r, "X-CSRF-Token");
	const char *cookie = http_cookie(r, r->srv->cookie_csrf);
	if (!hdr || !*hdr)
		return csrf_refuse(r, "missing X-CSRF-Token header");
	if (!cookie || !ct_streq(hdr, cookie) ||
	    !kiln_service_session_csrf_ok(r->srv->svc, sid, hdr))
		return csrf_refuse(r, "wrong CSRF token: reload the page");
	return STAGE_NEXT;
}

static int mw_content_type(struct kiln_http_request *r)
{
	if (!(r->route->flags & ROUTE_BODY))
		return STAGE_NEXT;
	if (r->media == KILN_HTTP_MEDIA_MULTIPART) {
		r->pp = MHD_create_post_processor(r->conn, 64 * 1024, on_part, r);
		if (r->pp)
			return STAGE_NEXT;
	} else if (r->media == KILN_HTTP_MEDIA_JSON) {
		return STAGE_NEXT;
	}
	return STAGE_DONE(http_respond_error(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
	                                     "unsupported_media_type",
	                                     "Content-Type must be application/json or "
	                                     "multipart/form-data"));
}

static const struct {
	const char *name;
	int (*run)(struct kiln_http_request *r);
} stages[] = {
    {"host", mw_host},
    {"cors", mw_cors},
    {"route", mw_route},
    {"body-limit", mw_body_limit},
    {"rate-limit", mw_rate_limit},
    {"auth", mw_auth},
    {"csrf", mw_csrf},
    {"content-type", mw_content_type},
};

/* ---- request bodies --------------------------------------------------------- */

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
	struct kiln_http_request *r = cls;
	(void)kind, (void)filename, (void)content_type, (void)transfer_encoding;
	/* MHD calls once per chunk with the offset inside the part, so a part
	 * starts at off 0. A second part of the same name would otherwise be
	 * appended to the first: two halves a filter in front of kiln checked
	 * one by one, joined into a recipe or an archive it never saw.
	 * (A first part that is empty cannot be told from the start of the
	 * next one: harmless, nothing is joined.) */
	if (strcmp(key, "recipe") == 0) {
		if (off == 0 && r->recipe_part.len > 0) {
			r->part_error = -EEXIST;
			return MHD_NO;
		}
		kiln_buf_append(&r->recipe_part, data, size);
		if (r->recipe_part.truncated) {
			r->part_error = -EFBIG;
			return MHD_NO;
		}
		return MHD_YES;
	}
	if (strcmp(key, "context") == 0) {
		if (off == 0 && r->context_fd >= 0 && lseek(r->context_fd, 0, SEEK_CUR) > 0) {
			r->part_error = -EINVAL;
			return MHD_NO;
		}
		if (r->context_fd < 0) {
			if (r->context_seen) { /* a second context part */
				r->part_error = -EINVAL;
				return MHD_NO;
			}
			mkdir(r->srv->upload_dir, 0700);
			r->context_path = xasprintf("%s/upload-XXXXXX", r->srv->upload_dir);
			r->context_fd = mkostemp(r->context_path, O_CLOEXEC);
			if (r->context_fd < 0) {
				free(r->context_path);
				r->context_path = NULL;
				r->part_error = -errno;
				return MHD_NO;
			}
			r->context_seen = true;
		}
		/* Context archives can be large: straight to disk, never held in memory. */
		while (size > 0) {
			ssize_t w = write(r->context_fd, data, size);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				r->part_error = -EIO;
				return MHD_NO;
			}
			data += w;
			size -= (size_t)w;
		}
		return MHD_YES;
	}
	r->part_error = -ENOKEY;
	return MHD_NO;
}

/* MHD can only queue a response before the body starts or after it ends,
 * so a body found too large while streaming (chunked, no Content-Length)
 * is drained and answered 413 at its end — up to a bound past which the
 * connection is simply closed. Returns false to close. */
static bool body_too_large(struct kiln_http_request *r, size_t limit)
{
	if (r->body_seen <= limit)
		return false;
	r->too_large_limit = limit;
	return true;
}

static bool body_consume(struct kiln_http_request *r, const char *data, size_t size)
{
	r->body_seen += size;
	if (r->too_large_limit)
		return r->body_seen - r->too_large_limit <= DRAIN_MAX;
	if (!(r->route->flags & ROUTE_BODY)) {
		body_too_large(r,
		               r->srv->body_limit); /* a body nobody reads: bounded all the same */
		return true;
	}
	if (r->media == KILN_HTTP_MEDIA_MULTIPART) {
		if (body_too_large(r, r->srv->upload_limit))
			return true;
		if (r->part_error == 0 && MHD_post_process(r->pp, data, size) != MHD_YES &&
		    r->part_error == 0)
			r->part_error = -EBADMSG;
		return true;
	}
	if (body_too_large(r, r->srv->body_limit))
		return true;
	kiln_buf_append(&r->body, data, size);
	return true;
}

/* ---- slow clients ------------------------------------------------------------ */

/* Slowloris: MHD's connection timeout is an idle timeout — every byte
 * received restarts it — so a client that dribbles its request headers a
 * byte a second keeps its connection, and a place under the per-client
 * and total limits, for as long as it likes (the 32 KiB header pool lasts
 * nine hours at that rate; a few hundred such clients take every slot).
 * So the headers must also be complete within header_timeout_us of the
 * connection opening or of its previous request ending (keep-alive). Once
 * they are in, only the idle timeout applies: an upload or a log stream
 * may rightly take long, and its handler bounds it. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
	struct kiln_http_server *s = ((struct listener *)cls)->srv;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!ci)
			return;
		struct http_conn *c = xcalloc(1, sizeof(*c));
		c->fd = ci->connect_fd;
		c->due_us = http_now_us() + s->header_timeout_us;
		pthread_mutex_lock(&s->conns_lock);
		c->next = s->conns;
		if (c->next)
			c->next->prev = c;
		s->conns = c;
		pthread_mutex_unlock(&s->conns_lock);
		*socket_context = c;
		return;
	}
	struct http_conn *c = *socket_context;
	if (!c)
		return;
	/* MHD closes the descriptor after this returns: once c is off the
	 * list, conn_reap cannot shut down a number the kernel has reused. */
	pthread_mutex_lock(&s->conns_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&s->conns_lock);
	*socket_context = NULL;
	free(c);
}

static void conn_set_due(struct kiln_http_server *s, struct MHD_Connection *conn, uint64_t due_us)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct http_conn *c = ci ? ci->socket_context : NULL;
	if (!c)
		return;
	pthread_mutex_lock(&s->conns_lock);
	c->due_us = due_us;
	pthread_mutex_unlock(&s->conns_lock);
}

static void conn_reap(struct kiln_http_server *s, uint64_t now)
{
	pthread_mutex_lock(&s->conns_lock);
	for (struct http_conn *c = s->conns; c; c = c->next) {
		if (!c->due_us || c->due_us > now)
			continue;
		/* Not close(): the descriptor stays MHD's. Its event loop
		 * sees the hang-up and closes the connection itself, on its
		 * own thread. */
		shutdown(c->fd, SHUT_RDWR);
		c->due_us = 0;
	}
	pthread_mutex_unlock(&s->conns_lock);
}

/* ---- the request lifecycle -------------------------------------------------- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct listener *l = cls;
	struct kiln_http_request *r = xcalloc(1, sizeof(*r));
	r->srv = l->srv;
	r->redirect_listener = l->redirect;
	r->conn = conn;
	r->raw_uri = xstrdup(uri ? uri : "");
	r->start_us = http_now_us();
	r->context_fd = -1;
	r->path = "";
	r->method_name = "";
	/* Bodies held in memory stop at the body limit (STYLE.md §12). */
	r->body.max = r->recipe_part.max = r->srv->body_limit;
	return r;
}

static enum MHD_Result redirect_to_https(struct kiln_http_request *r)
{
	const char *host = http_header(r, MHD_HTTP_HEADER_HOST);
	size_t name_len;
	long port;
	if (!kiln_http_host_allowed(host, (const char *const *)r->srv->allowed_hosts,
	                            r->srv->n_allowed_hosts) ||
	    !kiln_http_host_split(host, strlen(host), &name_len, &port))
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "host_not_allowed",
		                          "Host header not allowed (see --allowed-host)");
	_cleanup_buf_ struct kiln_buf loc = KILN_BUF_INIT;
	kiln_buf_puts(&loc, "https://");
	kiln_buf_append(&loc, host, name_len);
	if (r->srv->https_port != 443)
		kiln_buf_printf(&loc, ":%u", r->srv->https_port);
	kiln_buf_puts(&loc, r->raw_uri[0] == '/' ? r->raw_uri : "/");
	struct MHD_Response *resp = error_response("moved", "use HTTPS");
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc.data);
	return respond_error_resp(r, MHD_HTTP_MOVED_PERMANENTLY, resp);
}

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
	(void)kind;
	kiln_http_framing_add(cls, key, value);
	return MHD_YES;
}

/* Request smuggling (kiln_http_framing_check): answered 400 and the
 * connection closed (RFC 9112 §6.3), so no byte after the headers is ever
 * read as a request. Before the redirect listener and every stage. */
static bool framing_refused(struct kiln_http_request *r, enum MHD_Result *ret)
{
	struct kiln_http_framing f = {0};
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, framing_header, &f);
	const char *why = kiln_http_framing_check(&f);
	if (!why)
		return false;
	_cleanup_free_ char *msg = xasprintf("ambiguous request: %s", why);
	struct MHD_Response *resp = error_response("bad_request", msg);
	if (resp)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	*ret = respond_error_resp(r, MHD_HTTP_BAD_REQUEST, resp);
	r->body_failed = true;
	return true;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
	(void)cls, (void)version;
	struct kiln_http_request *r = *con_cls;
	if (!r)
		return MHD_NO;
	if (!r->started) {
		r->started = true;
		conn_set_due(r->srv, conn, 0);
		r->conn = conn;
		r->path = url;
		r->method_name = method;
		r->method = kiln_http_method_parse(method);
		enum MHD_Result refused;
		if (framing_refused(r, &refused))
			return refused;
		if (r->redirect_listener)
			return redirect_to_https(r);
		for (size_t i = 0; i < ELEMENTSOF(stages); i++) {
			int rc = stages[i].run(r);
			if (rc == STAGE_RESPONDED) {
				r->body_failed = true;
				return MHD_YES;
			}
			if (rc == STAGE_FAILED)
				return MHD_NO;
		}
		/* The handler runs on the final call, once the request is
		 * complete: answering on this first call would cost the
		 * keep-alive (MHD cannot reuse a connection whose request it
		 * has not finished reading). */
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		bool keep = r->body_failed || body_consume(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return keep ? MHD_YES : MHD_NO;
	}
	if (r->body_failed)
		return MHD_YES;
	r->body_failed = true;
	if (r->too_large_limit)
		return http_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
		                          "request body over the limit of %zu bytes",
		                          r->too_large_limit);
	return (enum MHD_Result)r->route->handler(r);
}

/* The access log: the line is built on the stack and written with one
 * write(2). Writing it piece by piece through stdio (unbuffered stderr,
 * under flockfile) cost 21 write calls per request and made the pool
 * threads take turns on the stream's lock (docs/benchmarks.md). One write
 * of at most KILN_HTTP_LOG_LINE_MAX bytes is not interleaved with another
 * thread's line on a pipe or an O_APPEND file. */
static void access_log_write(struct kiln_http_request *r, struct MHD_Connection *conn,
                             enum MHD_RequestTerminationCode toe)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct tm tm;
	gmtime_r(&now.tv_sec, &tm);
	char when[64];
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         now.tv_nsec / 1000000);
	char remote[INET6_ADDRSTRLEN] = "";
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	if (sa && sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, remote,
		          sizeof(remote));
	} else if (sa && sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6))
			inet_ntop(AF_INET, a6->s6_addr + 12, remote, sizeof(remote));
		else
			inet_ntop(AF_INET6, a6, remote, sizeof(remote));
	}
	struct kiln_http_log_entry e = {
	    .time = when,
	    .remote = remote,
	    .method = r->method_name,
	    .uri = r->raw_uri,
	    .user = r->owner,
	    .status = r->status,
	    .duration_us = http_now_us() - r->start_us,
	    .aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK,
	};
	char line[KILN_HTTP_LOG_LINE_MAX];
	size_t n = kiln_http_log_line(line, &e);
	/* A full disk or a closed pipe loses log lines, never requests. */
	(void)kiln_write_all(fileno(r->srv->access_log), line, n);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	struct kiln_http_request *r = *con_cls;
	if (!r)
		return;
	*con_cls = NULL;
	/* keep-alive: the next request's headers are due like the first's */
	conn_set_due(r->srv, conn, http_now_us() + r->srv->header_timeout_us);
	if (r->srv->access_log && r->started)
		access_log_write(r, conn, toe);
	if (r->started)
		http_metrics_observe(r->route, r->method_name, r->status,
		                     http_now_us() - r->start_us);
	if (r->pp)
		MHD_destroy_post_processor(r->pp);
	safe_close(r->context_fd);
	if (r->context_path)
		unlink(r->context_path);
	free(r->context_path);
	kiln_buf_free(&r->body);
	kiln_buf_free(&r->recipe_part);
	for (size_t i = 0; i < r->n_params; i++)
		free(r->params[i]);
	free(r->owner);
	free(r->raw_uri);
	free(r);
}

_printf_(2, 0) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	/* Diagnostics, not requests: stderr, whatever --access-log says. */
	(void)cls;
	flockfile(stderr);
	fputs("kiln: libmicrohttpd: ", stderr);
	vfprintf(stderr, fmt, ap);
	size_t n = strlen(fmt);
	if (n == 0 || fmt[n - 1] != '\n')
		fputc('\n', stderr);
	funlockfile(stderr);
}

/* ---- start / stop ----------------------------------------------------------- */

static void strv_push(char ***v, size_t *n, char *s)
{
	*v = xreallocarray(*v, *n + 1, sizeof(char *));
	(*v)[(*n)++] = s;
}

static int bind_socket(const struct sockaddr_storage *ss, socklen_t len, int *ret_fd,
                       struct sockaddr_storage *ret_bound, struct kiln_error **err,
                       const char *what)
{
	_cleanup_close_ int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: socket", what);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) < 0)
		return kiln_error_set_errno(err, errno, "%s: bind", what);
	if (listen(fd, 1024) < 0)
		return kiln_error_set_errno(err, errno, "%s: listen", what);
	socklen_t blen = sizeof(*ret_bound);
	if (getsockname(fd, (struct sockaddr *)ret_bound, &blen) < 0)
		return kiln_error_set_errno(err, errno, "%s: getsockname", what);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

static unsigned addr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static void allow_defaults(struct kiln_http_server *s, const struct sockaddr_storage *bound)
{
	unsigned port = addr_port(bound);
	static const char *const local[] = {"localhost", "127.0.0.1", "[::1]"};
	for (size_t i = 0; i < ELEMENTSOF(local); i++)
		strv_push(&s->allowed_hosts, &s->n_allowed_hosts,
		          xasprintf("%s:%u", local[i], port));
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_http_addr_format((const struct sockaddr *)bound, &b, true);
	strv_push(&s->allowed_hosts, &s->n_allowed_hosts, kiln_buf_steal(&b, NULL));
}

struct daemon_opts {
	const struct kiln_http_config *cfg;
	unsigned threads;
};

static struct MHD_Daemon *start_daemon(struct kiln_http_server *s, const struct daemon_opts *o,
                                       int fd, bool tls, struct listener *l)
{
	unsigned flags =
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	flags |=
	    MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_AUTO;
	if (tls)
		flags |= MHD_USE_TLS;
	const struct kiln_http_config *c = o->cfg;
	struct MHD_OptionItem opts[16];
	size_t n = 0;
#define OPT(o_, v_, p_) (opts[n++] = (struct MHD_OptionItem){(o_), (intptr_t)(v_), (p_)})
	OPT(MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, s);
	OPT(MHD_OPTION_LISTEN_SOCKET, fd, NULL);
	OPT(MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, l);
	OPT(MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, l);
	OPT(MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, l);
	/* Slowloris: idle connections time out (and late headers, see
	 * on_connection); connections are bounded in total and per client
	 * address; headers must fit a small pool. */
	OPT(MHD_OPTION_CONNECTION_TIMEOUT, s->header_timeout_us / 1000000, NULL);
	OPT(MHD_OPTION_CONNECTION_LIMIT, c->connection_limit ? c->connection_limit : 1024, NULL);
	OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    c->per_ip_connection_limit ? c->per_ip_connection_limit : 128, NULL);
	OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    c->connection_memory_limit ? c->connection_memory_limit : 32 * 1024, NULL);
	if (o->threads > 1)
		OPT(MHD_OPTION_THREAD_POOL_SIZE, o->threads, NULL);
	if (tls) {
		OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert_pem);
		OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key_pem);
		OPT(MHD_OPTION_HTTPS_PRIORITIES, 0,
		    (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2");
	}
	OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
	return MHD_start_daemon(flags, 0, NULL, NULL, on_access, l, MHD_OPTION_ARRAY, opts,
	                        MHD_OPTION_END);
}

/* Ticks every second (the resolution of the header deadline): cuts
 * connections whose headers are late, and every sse_heartbeat_s wakes the
 * live log streams. */
static void *heartbeat_main(void *ud)
{
	struct kiln_http_server *s = ud;
	uint64_t beat_us = (uint64_t)s->sse_heartbeat_s * 1000000u;
	uint64_t next_beat = http_now_us() + beat_us;
	pthread_mutex_lock(&s->streams_lock);
	while (!s->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		int rc = 0;
		while (!s->stopping && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&s->streams_cond, &s->streams_lock, &ts);
		if (s->stopping)
			break;
		pthread_mutex_unlock(&s->streams_lock);
		uint64_t now = http_now_us();
		conn_reap(s, now);
		if (now >= next_beat) {
			http_streams_wake_all(s, true);
			next_beat = now + beat_us;
		}
		pthread_mutex_lock(&s->streams_lock);
	}
	pthread_mutex_unlock(&s->streams_lock);
	return NULL;
}

static int read_pem(const char *path, char **ret, struct kiln_error **err)
{
	size_t len;
	return kiln_read_file(path, 1 << 20, ret, &len, err);
}

int kiln_http_start(const struct kiln_http_config *cfg, struct kiln_service *svc,
                    struct kiln_http_server **ret, struct kiln_error **err)
{
	static const char *const default_listen[] = {"127.0.0.1:8080"};
	const char *const *listen = cfg->n_listen ? cfg->listen : default_listen;
	size_t n_listen = cfg->n_listen ? cfg->n_listen : 1;
	if (!!cfg->tls_cert != !!cfg->tls_key)
		return kiln_error_set(err, EINVAL, "--tls-cert and --tls-key go together");
	if (cfg->redirect_port && !cfg->tls_cert)
		return kiln_error_set(
		    err, EINVAL, "--redirect-http needs --tls-cert/--tls-key or --tls-self-signed");
	if (cfg->tls_cert && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
		return kiln_error_set(err, ENOTSUP, "this libmicrohttpd was built without TLS");

	struct sockaddr_storage addrs[n_listen];
	socklen_t lens[n_listen];
	for (size_t i = 0; i < n_listen; i++) {
		if (kiln_http_listen_parse(listen[i], &addrs[i], &lens[i], err) < 0)
			return -EINVAL;
		/* --no-auth hands every build to whoever connects: only where
		 * "whoever" is this machine. */
		if (cfg->no_auth && !kiln_http_addr_is_loopback((struct sockaddr *)&addrs[i]))
			return kiln_error_set(err, EPERM,
			                      "--no-auth is only allowed when every listen address "
			                      "is loopback (%s is not)",
			                      listen[i]);
	}

	struct kiln_http_server *s = xcalloc(1, sizeof(*s));
	s->svc = svc;
	s->no_auth = cfg->no_auth;
	s->tls = cfg->tls_cert != NULL;
	s->rate_limit = cfg->rate_limit ? cfg->rate_limit : 100;
	s->body_limit = cfg->body_limit ? cfg->body_limit : 1 << 20;
	s->upload_limit = cfg->upload_limit ? cfg->upload_limit : (size_t)512 << 20;
	s->sse_heartbeat_s = cfg->sse_heartbeat_s ? cfg->sse_heartbeat_s : 15;
	s->session_ttl_s = cfg->session_ttl_s ? cfg->session_ttl_s : 12 * 3600;
	s->header_timeout_us =
	    (uint64_t)(cfg->connection_timeout_s ? cfg->connection_timeout_s : 30) * 1000000u;
	/* The __Host- prefix needs Secure, and a browser keeps a Secure
	 * cookie only from a secure context: https, or http to a loopback
	 * address (tests/browser checks Chromium does). Plain HTTP on a
	 * network address gets unprefixed names (docs/web-ui.md). */
	bool all_loopback = true;
	for (size_t i = 0; i < n_listen; i++)
		all_loopback &= kiln_http_addr_is_loopback((struct sockaddr *)&addrs[i]);
	s->cookie_secure = s->tls || all_loopback;
	s->cookie_session = s->cookie_secure ? "__Host-kiln_session" : "kiln_session";
	s->cookie_csrf = s->cookie_secure ? "__Host-kiln_csrf" : "kiln_csrf";
	s->access_log = cfg->access_log;
	s->upload_dir = xasprintf("%s/tmp", cfg->state_dir ? cfg->state_dir : "/var/lib/kiln");
	s->n_rate_slots = RATE_SLOTS;
	s->rate_slots = xcalloc(RATE_SLOTS, sizeof(struct rate_slot));
	pthread_mutex_init(&s->rate_lock, NULL);
	pthread_mutex_init(&s->streams_lock, NULL);
	pthread_mutex_init(&s->conns_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->streams_cond, &ca);
	pthread_condattr_destroy(&ca);
	for (size_t i = 0; i < cfg->n_cors_origins; i++)
		strv_push(&s->cors_origins, &s->n_cors_origins, xstrdup(cfg->cors_origins[i]));
	for (size_t i = 0; i < cfg->n_allowed_hosts; i++)
		strv_push(&s->allowed_hosts, &s->n_allowed_hosts, xstrdup(cfg->allowed_hosts[i]));

	int r = 0;
	if (s->tls) {
		if ((r = read_pem(cfg->tls_cert, &s->tls_cert_pem, err)) < 0 ||
		    (r = read_pem(cfg->tls_key, &s->tls_key_pem, err)) < 0) {
			kiln_http_stop(s);
			return r;
		}
	}

	/* Bind everything first: the allowlist needs the bound ports before
	 * the first request can arrive. */
	size_t n_fds = n_listen * (cfg->redirect_port ? 2 : 1);
	int fds[n_fds];
	bool is_redirect[n_fds];
	for (size_t i = 0; i < n_fds; i++)
		fds[i] = -1;
	for (size_t i = 0; i < n_fds && r >= 0; i++) {
		size_t a = i % n_listen;
		is_redirect[i] = i >= n_listen;
		struct sockaddr_storage want = addrs[a], bound;
		if (is_redirect[i]) {
			if (want.ss_family == AF_INET6)
				((struct sockaddr_in6 *)&want)->sin6_port =
				    htons((uint16_t)cfg->redirect_port);
			else
				((struct sockaddr_in *)&want)->sin_port =
				    htons((uint16_t)cfg->redirect_port);
		}
		r = bind_socket(&want, lens[a], &fds[i], &bound, err, listen[a]);
		if (r < 0)
			break;
		allow_defaults(s, &bound);
		if (!is_redirect[i]) {
			if (i == 0)
				s->https_port = addr_port(&bound);
			struct kiln_buf u = KILN_BUF_INIT;
			kiln_buf_puts(&u, s->tls ? "https://" : "http://");
			kiln_http_addr_format((struct sockaddr *)&bound, &u, true);
			strv_push(&s->urls, &s->n_urls, kiln_buf_steal(&u, NULL));
		}
	}
	if (r < 0) {
		for (size_t i = 0; i < n_fds; i++)
			safe_close(fds[i]);
		kiln_http_stop(s);
		return r;
	}

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct daemon_opts o = {.cfg = cfg,
	                        .threads = cfg->threads ? cfg->threads
	                                                : (unsigned)(ncpu < 1   ? 1
	                                                             : ncpu > 8 ? 8
	                                                                        : ncpu)};
	s->daemons = xcalloc(n_fds, sizeof(struct MHD_Daemon *));
	s->listeners = xcalloc(n_fds, sizeof(struct listener));
	for (size_t i = 0; i < n_fds; i++) {
		struct listener *l = &((struct listener *)s->listeners)[i];
		l->srv = s;
		l->redirect = is_redirect[i];
		struct daemon_opts oi = o;
		if (is_redirect[i])
			oi.threads = 1;
		struct MHD_Daemon *d = start_daemon(s, &oi, fds[i], s->tls && !is_redirect[i], l);
		if (!d) {
			for (size_t k = i; k < n_fds; k++)
				safe_close(fds[k]);
			kiln_http_stop(s);
			return kiln_error_set(err, EIO, "%s: could not start the HTTP server%s",
			                      listen[i % n_listen],
			                      s->tls ? " (check the TLS certificate and key)" : "");
		}
		s->daemons[s->n_daemons++] = d;
	}
	if (pthread_create(&s->heartbeat, NULL, heartbeat_main, s) == 0)
		s->heartbeat_started = true;
	*ret = s;
	return 0;
}

struct kiln_http_server *kiln_http_stop(struct kiln_http_server *s)
{
	if (!s)
		return NULL;
	pthread_mutex_lock(&s->streams_lock);
	__atomic_store_n(&s->stopping, true, __ATOMIC_SEQ_CST);
	pthread_cond_broadcast(&s->streams_cond);
	pthread_mutex_unlock(&s->streams_lock);
	if (s->heartbeat_started)
		pthread_join(s->heartbeat, NULL);
	/* MHD must not be stopped with suspended connections: end every live
	 * log stream first, then give them a moment to flush. */
	http_streams_wake_all(s, false);
	uint64_t deadline = http_now_us() + 2000000;
	pthread_mutex_lock(&s->streams_lock);
	while (s->streams && http_now_us() < deadline) {
		pthread_mutex_unlock(&s->streams_lock);
		http_streams_wake_all(s, false);
		usleep(10000);
		pthread_mutex_lock(&s->streams_lock);
	}
	pthread_mutex_unlock(&s->streams_lock);
	for (size_t i = 0; i < s->n_daemons; i++)
		MHD_stop_daemon(s->daemons[i]);
	/* MHD reports every connection closed before it returns; should
	 * one not be, its record must not outlive the server. */
	while (s->conns) {
		struct http_conn *c = s->conns;
		s->conns = c->next;
		free(c);
	}
	free(s->daemons);
	free(s->listeners);
	for (size_t i = 0; i < s->n_allowed_hosts; i++)
		free(s->allowed_hosts[i]);
	free(s->allowed_hosts);
	for (size_t i = 0; i < s->n_cors_origins; i++)
		free(s->cors_origins[i]);
	free(s->cors_origins);
	for (size_t i = 0; i < s->n_urls; i++)
		free(s->urls[i]);
	free(s->urls);
	free(s->tls_cert_pem);
	free(s->tls_key_pem);
	free(s->upload_dir);
	free(s->rate_slots);
	pthread_mutex_destroy(&s->rate_lock);
	pthread_mutex_destroy(&s->streams_lock);
	pthread_mutex_destroy(&s->conns_lock);
	pthread_cond_destroy(&s->streams_cond);
	free(s);
	return NULL;
}

size_t kiln_http_urls(const struct kiln_http_server *s, const char *const **ret)
{
	*ret = (const char *const *)s->urls;
	return s->n_urls;
}
