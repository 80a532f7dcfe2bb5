/* http/web.c — what the web page needs from the server: its files
 * (embedded from src/http/ui/ at build time) and its sign-in sessions
 * (POST/GET/DELETE /api/v1/session). The CSRF checks themselves are
 * middleware (server.c mw_csrf): they guard every route alike. */
#include <errno.h>
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "http/internal.h"
#include "http/json.h"
#include "http/ui_files.h"
#include "util/alloc.h"

/* ---- the page's files ---------------------------------------------------------- */

static const struct {
	const char *suffix;
	const char *type;
} ui_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json; charset=utf-8"},
    {".svg", "image/svg+xml; charset=utf-8"},
    {".txt", "text/plain; charset=utf-8"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".webmanifest", "application/manifest+json; charset=utf-8"},
};

static const char *ui_type(const char *path)
{
	size_t n = strlen(path);
	for (size_t i = 0; i < ELEMENTSOF(ui_types); i++) {
		size_t k = strlen(ui_types[i].suffix);
		if (n > k && strcmp(path + n - k, ui_types[i].suffix) == 0)
			return ui_types[i].type;
	}
	return "application/octet-stream";
}

static int ui_send(struct kiln_http_request *r, const char *rel)
{
	const struct kiln_http_ui_file *f = NULL;
	for (size_t i = 0; i < kiln_http_n_ui_files && !f; i++)
		if (strcmp(kiln_http_ui_files[i].path, rel) == 0)
			f = &kiln_http_ui_files[i];
	if (!f)
		return http_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no such file");
	bool fresh = kiln_http_etag_match(http_header(r, MHD_HTTP_HEADER_IF_NONE_MATCH), f->etag);
	struct MHD_Response *resp = MHD_create_response_from_buffer(
	    fresh ? 0 : f->len, fresh ? (void *)"" : (void *)f->data, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	if (!fresh)
		MHD_add_response_header(resp, "Content-Type", ui_type(f->path));
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, f->etag);
	/* Revalidate every time (a 304 is cheap): a new kiln binary must never
	 * run next to a stale app.js from the browser's cache. */
	MHD_add_response_header(resp, "Cache-Control", "no-cache");
	return http_respond(r, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, resp);
}

int http_ui_index(struct kiln_http_request *r)
{
	return ui_send(r, "index.html");
}

int http_ui_file(struct kiln_http_request *r)
{
	/* r->path is "/ui/<name>" or "/ui/examples/<name>" (the route table
	 * admits nothing else, so no ".." can reach here; the lookup is an
	 * exact match in the embedded table anyway). */
	return ui_send(r, r->path + strlen("/ui/"));
}

/* ---- sessions --------------------------------------------------------------------- */

static void add_cookie(struct kiln_http_request *r, struct MHD_Response *resp, const char *name,
                       const char *value, int64_t max_age, bool http_only)
{
	/* SameSite=Strict: no cross-site request carries the cookie at all,
	 * not even a top-level navigation. Path=/ and no Domain, as the
	 * __Host- prefix demands. */
	_cleanup_free_ char *c = xasprintf("%s=%s; Path=/; Max-Age=%lld%s%s; SameSite=Strict", name,
	                                   value, (long long)max_age, http_only ? "; HttpOnly" : "",
	                                   r->srv->cookie_secure ? "; Secure" : "");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, c);
}

static enum MHD_Result respond_session(struct kiln_http_request *r, const char *id,
                                       const struct kiln_session_info *si)
{
	struct kiln_buf body = KILN_BUF_INIT;
	kiln_http_json_session(&body, si);
	char *json = kiln_buf_steal(&body, NULL);
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(json);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	if (id) {
		int64_t now = (int64_t)time(NULL);
		int64_t age = si->expires_us / 1000000 - now;
		add_cookie(r, resp, r->srv->cookie_session, id, age > 0 ? age : 0, true);
		/* Readable by the page's script: that is the point of a
		 * double-submit token. */
		add_cookie(r, resp, r->srv->cookie_csrf, si->csrf_token, age > 0 ? age : 0, false);
	}
	return http_respond(r, MHD_HTTP_OK, resp);
}

static enum MHD_Result no_sessions(struct kiln_http_request *r)
{
	return http_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found",
	                          "no sessions: the server runs with --no-auth");
}

static enum MHD_Result session_unauthorized(struct kiln_http_request *r, const char *why)
{
	return http_respond_error(r, MHD_HTTP_UNAUTHORIZED, "unauthorized", "%s", why);
}

int http_session_create(struct kiln_http_request *r)
{
	if (r->srv->no_auth)
		return no_sessions(r);
	json_error_t jerr;
	json_t *o = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &jerr);
	if (!o)
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "invalid_json",
		                          "body is not valid JSON: line %d column %d: %s",
		                          jerr.line, jerr.column, jerr.text);
	json_t *t = json_is_object(o) ? json_object_get(o, "token") : NULL;
	_cleanup_free_ char *token = json_is_string(t) ? xstrdup(json_string_value(t)) : NULL;
	json_decref(o);
	if (!token)
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
		                          "expected {\"token\": \"kiln_...\"}");
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_free_ char *id = NULL;
	struct kiln_session_info si = {0};
	int rc =
	    kiln_service_session_create(r->srv->svc, token, r->srv->session_ttl_s, &id, &si, &err);
	explicit_bzero(token, strlen(token));
	if (rc == -EACCES)
		return session_unauthorized(r, "invalid or revoked token");
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	/* Signing in again replaces the session: the old id stops working,
	 * so a session id fixed in the browser beforehand gains nothing. */
	const char *old = http_cookie(r, r->srv->cookie_session);
	if (old) {
		_cleanup_error_ struct kiln_error *e2 = NULL;
		(void)kiln_service_session_revoke(r->srv->svc, old, &e2);
	}
	enum MHD_Result ret = respond_session(r, id, &si);
	explicit_bzero(id, strlen(id));
	kiln_session_info_clear(&si);
	return ret;
}

int http_session_get(struct kiln_http_request *r)
{
	if (r->srv->no_auth)
		return no_sessions(r);
	const char *id = http_cookie(r, r->srv->cookie_session);
	if (!id)
		return session_unauthorized(r, "not signed in");
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_session_info si = {0};
	int rc = kiln_service_session_check(r->srv->svc, id, &si, &err);
	if (rc == -EACCES)
		return session_unauthorized(r, "session expired or signed out");
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	enum MHD_Result ret = respond_session(r, NULL, &si);
	kiln_session_info_clear(&si);
	return ret;
}

int http_session_delete(struct kiln_http_request *r)
{
	if (r->srv->no_auth)
		return no_sessions(r);
	const char *id = http_cookie(r, r->srv->cookie_session);
	if (!id)
		return session_unauthorized(r, "not signed in");
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_session_revoke(r->srv->svc, id, &err);
	if (rc < 0 && rc != -EACCES)
		return http_respond_service_error(r, rc, err);
	/* Already ended (expired, revoked elsewhere): still clear the
	 * browser's cookies, and say so. */
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	add_cookie(r, resp, r->srv->cookie_session, "", 0, true);
	add_cookie(r, resp, r->srv->cookie_csrf, "", 0, false);
	return http_respond(r, MHD_HTTP_NO_CONTENT, resp);
}
