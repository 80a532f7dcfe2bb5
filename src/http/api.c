/* http/api.c — the route table and the /api/v1 build and health handlers. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/internal.h"
#include "http/json.h"
#include "http/routes.h"
#include "util/alloc.h"
#include "util/json.h"

/* The OpenAPI document, embedded at build time from openapi.json. */
extern const unsigned char kiln_http_openapi_json[];
extern const size_t kiln_http_openapi_json_len;

static enum MHD_Result respond_owned_json(struct kiln_http_request *r, unsigned status, char *json)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(json);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	return http_respond(r, status, resp);
}

/* ---- health ------------------------------------------------------------------ */

static int h_health(struct kiln_http_request *r)
{
	static const char body[] = "{\"status\":\"ok\"}\n";
	/* The scheduled chores' last outcome (kiln serve --backup-dir), as
	 * JSON members the service keeps already written. */
	_cleanup_free_ char *detail = kiln_service_ops_detail(r->srv->svc);
	if (detail)
		return respond_owned_json(
		    r, MHD_HTTP_OK, xasprintf("{\"status\":\"ok\",\"details\":{%s}}\n", detail));
	return http_respond_json(r, MHD_HTTP_OK, body, sizeof(body) - 1);
}

static int h_ready(struct kiln_http_request *r)
{
	if (!kiln_service_ready(r->srv->svc))
		return http_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
		                          "the database or the workers are not ready");
	return respond_owned_json(r, MHD_HTTP_OK,
	                          xasprintf("{\"status\":\"ready\",\"workers\":%u}\n",
	                                    kiln_service_workers(r->srv->svc)));
}

static int h_db(struct kiln_http_request *r)
{
	uint64_t us = 0;
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_service_db_ping(r->srv->svc, &us, &err) < 0)
		return http_respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "database_unavailable",
		                          "database: %s", err ? err->msg : "unreachable");
	return respond_owned_json(
	    r, MHD_HTTP_OK,
	    xasprintf("{\"status\":\"ok\",\"latency_us\":%llu}\n", (unsigned long long)us));
}

/* The document with this server's facts filled in: info.version is kiln's
 * version and servers the URLs it listens on (a client generator then
 * talks to this server, not to the file's placeholder). */
static char *openapi_for(const struct kiln_http_server *srv, size_t *ret_len)
{
	json_error_t je;
	json_t *doc =
	    json_loadb((const char *)kiln_http_openapi_json, kiln_http_openapi_json_len, 0, &je);
	if (!doc)
		return NULL;
	json_object_set_new(json_object_get(doc, "info"), "version", json_string(KILN_VERSION));
	const char *const *urls;
	size_t n = kiln_http_urls(srv, &urls);
	json_t *servers = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(servers, json_pack("{s:s}", "url", urls[i]));
	if (n)
		json_object_set_new(doc, "servers", servers);
	else
		json_decref(servers);
	char *text = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	if (text)
		*ret_len = strlen(text);
	return text;
}

static int h_openapi(struct kiln_http_request *r)
{
	size_t len = 0;
	char *doc = openapi_for(r->srv, &len);
	struct MHD_Response *resp =
	    doc ? MHD_create_response_from_buffer(len, doc, MHD_RESPMEM_MUST_FREE)
	        : MHD_create_response_from_buffer(kiln_http_openapi_json_len,
	                                          (void *)kiln_http_openapi_json,
	                                          MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(doc);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	MHD_add_response_header(resp, "Cache-Control", "public, max-age=300");
	return http_respond(r, MHD_HTTP_OK, resp);
}

/* ---- builds -------------------------------------------------------------------- */

/* A body from http/json.c, sent as JSON. */
static enum MHD_Result respond_buf(struct kiln_http_request *r, unsigned status, struct kiln_buf *b)
{
	return respond_owned_json(r, status, kiln_buf_steal(b, NULL));
}

static const struct {
	int code;
	unsigned status;
	const char *err;
	const char *msg;
} part_errors[] = {
    {-EFBIG, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
     "the 'recipe' part is over the body limit"},
    {-ENOKEY, MHD_HTTP_BAD_REQUEST, "bad_request",
     "unexpected form field: the parts are 'recipe' and 'context'"},
    {-EINVAL, MHD_HTTP_BAD_REQUEST, "bad_request", "more than one 'context' part"},
    {-EEXIST, MHD_HTTP_BAD_REQUEST, "bad_request", "more than one 'recipe' part"},
    {-EBADMSG, MHD_HTTP_BAD_REQUEST, "bad_request", "malformed multipart body"},
};

static int h_submit(struct kiln_http_request *r)
{
	const char *recipe;
	size_t len;
	if (r->media == KILN_HTTP_MEDIA_MULTIPART) {
		MHD_destroy_post_processor(r->pp); /* flushes the last part */
		r->pp = NULL;
		if (r->part_error) {
			for (size_t i = 0; i < ELEMENTSOF(part_errors); i++)
				if (part_errors[i].code == r->part_error)
					return http_respond_error(r, part_errors[i].status,
					                          part_errors[i].err, "%s",
					                          part_errors[i].msg);
			return http_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR,
			                          "internal_error", "storing the upload: %s",
			                          strerror(-r->part_error));
		}
		if (r->context_fd >= 0 && fsync(r->context_fd) < 0)
			return http_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR,
			                          "internal_error", "storing the upload failed");
		recipe = r->recipe_part.data;
		len = r->recipe_part.len;
		if (len == 0)
			return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
			                          "multipart body without a 'recipe' part");
	} else {
		recipe = r->body.data;
		len = r->body.len;
		if (len == 0)
			return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
			                          "empty body: send the recipe as JSON");
	}
	/* Bad JSON is a malformed request (400); a well-formed recipe that
	 * breaks the rules is unprocessable (422, from the service). */
	json_error_t jerr;
	/* JSON_ALLOW_NUL as the recipe parser: file content may hold NUL. */
	json_t *probe = json_loadb(recipe, len, JSON_ALLOW_NUL, &jerr);
	bool bad_json = !probe;
	json_decref(probe);

	struct kiln_submit in = {
	    .recipe = recipe,
	    .recipe_len = len,
	    .context_path = r->context_seen ? r->context_path : NULL,
	    .owner = r->owner,
	};
	enum kiln_submit_outcome outcome;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_submit(r->srv->svc, &in, &outcome, &b, &err);
	/* The service copied the upload into the store (or refused it): remove
	 * it now, before the answer goes out, not when the connection ends. */
	if (r->context_path) {
		unlink(r->context_path);
		free(r->context_path);
		r->context_path = NULL;
	}
	/* Bad JSON fails in the service's parser before anything is stored:
	 * its message is the one `kiln validate` prints ("line 1, column 6:
	 * invalid JSON: ..."), with the status of a malformed request. */
	if (rc < 0 && bad_json)
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "invalid_json", "%s",
		                          err ? err->msg : "invalid JSON");
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	struct kiln_buf body = KILN_BUF_INIT;
	kiln_http_json_submitted(&body, b, outcome);
	size_t body_len;
	char *json = kiln_buf_steal(&body, &body_len);
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(body_len, json, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(json);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json; charset=utf-8");
	_cleanup_free_ char *loc = xasprintf("/api/v1/builds/%s", b->id);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc);
	return http_respond(r, outcome == KILN_SUBMIT_QUEUED ? MHD_HTTP_ACCEPTED : MHD_HTTP_OK,
	                    resp);
}

static int h_list(struct kiln_http_request *r)
{
	struct kiln_http_list_query q;
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_http_list_query_parse(http_query(r, "status"), http_query(r, "cursor"),
	                               http_query(r, "limit"), kiln_build_status_parse, &q,
	                               &err) < 0)
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", err->msg);
	struct kiln_build_info **v = NULL;
	size_t n = 0;
	_cleanup_free_ char *next = NULL;
	int rc = kiln_service_list(r->srv->svc, r->owner, q.status, q.cursor, q.limit, &v, &n,
	                           &next, &err);
	/* A bad cursor, limit or status is the query's fault: 400, like the
	 * parameters checked above. */
	if (rc < 0 && kiln_error_kind(err) == KILN_ERR_USER)
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", err->msg);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_http_json_build_list(&b, v, n, next);
	kiln_build_info_list_free(v, n);
	return respond_buf(r, MHD_HTTP_OK, &b);
}

static int h_get(struct kiln_http_request *r)
{
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_get(r->srv->svc, r->params[0], r->owner, &b, &err);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	struct kiln_buf o = KILN_BUF_INIT;
	kiln_http_json_build(&o, b);
	return respond_buf(r, MHD_HTTP_OK, &o);
}

static int h_cancel(struct kiln_http_request *r)
{
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_cancel(r->srv->svc, r->params[0], r->owner, &b, &err);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	struct kiln_buf o = KILN_BUF_INIT;
	kiln_http_json_build(&o, b);
	return respond_buf(r, MHD_HTTP_OK, &o);
}

/* The recipe as submitted: its bytes, so that "edit and rebuild" starts
 * from exactly what was built. */
static int h_recipe(struct kiln_http_request *r)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_recipe(r->srv->svc, r->params[0], r->owner, &text, &err);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	return respond_owned_json(r, MHD_HTTP_OK, TAKE_PTR(text));
}

static int h_logs(struct kiln_http_request *r)
{
	bool sse = kiln_http_accepts(http_header(r, MHD_HTTP_HEADER_ACCEPT), "text/event-stream");
	return http_logs_respond(r, r->params[0], sse);
}

/* ---- templates ----------------------------------------------------------------- */

static int h_templates(struct kiln_http_request *r)
{
	struct kiln_template_tag *v = NULL;
	size_t n = 0;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_templates(r->srv->svc, r->owner, &v, &n, &err);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	struct kiln_buf o = KILN_BUF_INIT;
	kiln_http_json_templates(&o, v, n);
	kiln_template_tags_free(v, n);
	return respond_buf(r, MHD_HTTP_OK, &o);
}

/* Body: {"build": ID, "protected": false}. */
static int h_tag(struct kiln_http_request *r)
{
	json_error_t jerr;
	json_t *body = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &jerr);
	json_t *id = body ? json_object_get(body, "build") : NULL;
	json_t *prot = body ? json_object_get(body, "protected") : NULL;
	if (!json_is_string(id) || (prot && !json_is_boolean(prot))) {
		json_decref(body);
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
		                          "send {\"build\": \"BUILD-ID\", \"protected\": false}");
	}
	_cleanup_free_ char *build = xstrdup(json_string_value(id));
	bool protect = prot && json_is_true(prot);
	json_decref(body);
	struct kiln_template_tag t = {0};
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_tag(r->srv->svc, r->owner, r->params[0], r->params[1], build, protect,
	                          &t, &err);
	if (rc == -EINVAL)
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "%s",
		                          err ? err->msg : "bad template name");
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	struct kiln_buf o = KILN_BUF_INIT;
	kiln_http_json_tag(&o, &t, false);
	kiln_buf_putc(&o, '\n');
	free(t.name);
	free(t.tag);
	return respond_buf(r, MHD_HTTP_OK, &o);
}

static int h_artifacts(struct kiln_http_request *r)
{
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_get(r->srv->svc, r->params[0], r->owner, &b, &err);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	struct kiln_buf o = KILN_BUF_INIT;
	kiln_http_json_artifacts(&o, b);
	return respond_buf(r, MHD_HTTP_OK, &o);
}

static const char *artifact_type(const char *name)
{
	size_t n = strlen(name);
	if (n >= 5 && strcmp(name + n - 5, ".json") == 0)
		return "application/json; charset=utf-8";
	if (n >= 4 && strcmp(name + n - 4, ".iso") == 0)
		return "application/x-iso9660-image";
	if (n >= 7 && strcmp(name + n - 7, ".tar.gz") == 0)
		return "application/gzip";
	return "application/octet-stream";
}

static int h_artifact(struct kiln_http_request *r)
{
	_cleanup_free_ char *path = NULL;
	struct kiln_build_artifact info = {0};
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_artifact(r->srv->svc, r->params[0], r->owner, r->params[1], &path,
	                               &info, &err);
	free(info.name);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		struct kiln_error e = {.code = EIO, .msg = (char *)"artifact file unreadable"};
		return http_respond_service_error(r, -EIO, &e);
	}
	uint64_t size = (uint64_t)st.st_size;
	char etag[KILN_SHA256_HEX_LEN + 3];
	snprintf(etag, sizeof(etag), "\"%s\"", info.sha256);

	if (kiln_http_etag_match(http_header(r, MHD_HTTP_HEADER_IF_NONE_MATCH), etag)) {
		struct MHD_Response *resp =
		    MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
		MHD_add_response_header(resp, "Cache-Control", "private, no-cache");
		return http_respond(r, MHD_HTTP_NOT_MODIFIED, resp);
	}

	const char *range = http_header(r, MHD_HTTP_HEADER_RANGE);
	const char *if_range = http_header(r, MHD_HTTP_HEADER_IF_RANGE);
	if (if_range && strcmp(if_range, etag) != 0)
		range = NULL; /* the client's copy is stale: send it all */
	uint64_t start = 0, len = size;
	unsigned status = MHD_HTTP_OK;
	char content_range[96] = "";
	switch (kiln_http_range_parse(range, size, &start, &len)) {
	case KILN_HTTP_RANGE_NONE: start = 0, len = size; break;
	case KILN_HTTP_RANGE_OK:
		status = MHD_HTTP_PARTIAL_CONTENT;
		snprintf(content_range, sizeof(content_range), "bytes %llu-%llu/%llu",
		         (unsigned long long)start, (unsigned long long)(start + len - 1),
		         (unsigned long long)size);
		break;
	case KILN_HTTP_RANGE_UNSATISFIABLE: {
		struct MHD_Response *resp =
		    MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
		snprintf(content_range, sizeof(content_range), "bytes */%llu",
		         (unsigned long long)size);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, content_range);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
		return http_respond(r, MHD_HTTP_RANGE_NOT_SATISFIABLE, resp);
	}
	}
	/* MHD sends straight from the fd (sendfile on plain HTTP). */
	struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, start);
	if (!resp)
		return MHD_NO;
	TAKE_FD(fd);
	MHD_add_response_header(resp, "Content-Type", artifact_type(r->params[1]));
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
	MHD_add_response_header(resp, "Cache-Control", "private, no-cache");
	if (status == MHD_HTTP_PARTIAL_CONTENT)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, content_range);
	_cleanup_buf_ struct kiln_buf cd = KILN_BUF_INIT;
	kiln_http_content_disposition(&cd, r->params[1]);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, cd.data);
	return http_respond(r, status, resp);
}

/* ---- the table ------------------------------------------------------------------ */

#define ROW(method, pattern, flags, handler) {method, pattern, flags, handler},
const struct kiln_http_route http_routes[] = {KILN_HTTP_ROUTES(ROW)};
#undef ROW
const size_t http_n_routes = ELEMENTSOF(http_routes);
