/* http/json.c — the API's JSON: builds, artifacts, lists, errors (json.h). */
#include "http/json.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "util/alloc.h"
#include "util/json.h"

#define BUILDS "/api/v1/builds/"

/* The one escaping rule of the API's strings. */
static void put_str(struct kiln_buf *b, const char *s)
{
	kiln_json_put_string(b, s, strlen(s), false);
}

static void put_str_or_null(struct kiln_buf *b, const char *s)
{
	if (s)
		put_str(b, s);
	else
		kiln_buf_puts(b, "null");
}

/* RFC 3339 UTC with milliseconds; null before the event happened. */
static void put_time(struct kiln_buf *b, int64_t us)
{
	if (us <= 0) {
		kiln_buf_puts(b, "null");
		return;
	}
	time_t sec = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	char t[32];
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
	kiln_buf_printf(b, "\"%s.%03dZ\"", t, (int)((us % 1000000) / 1000));
}

static const char *bool_text(bool v)
{
	return v ? "true" : "false";
}

static void put_artifact(struct kiln_buf *b, const char *id, const struct kiln_build_artifact *a)
{
	kiln_buf_puts(b, "{\"name\":");
	put_str(b, a->name);
	kiln_buf_printf(b, ",\"sha256\":\"%s\",\"size\":%" PRIu64 ",\"url\":", a->sha256, a->size);
	_cleanup_free_ char *url = xasprintf(BUILDS "%s/artifacts/%s", id, a->name);
	put_str(b, url);
	kiln_buf_putc(b, '}');
}

static void put_artifacts(struct kiln_buf *b, const struct kiln_build_info *bi)
{
	kiln_buf_putc(b, '[');
	for (size_t i = 0; i < bi->n_artifacts; i++) {
		if (i)
			kiln_buf_putc(b, ',');
		put_artifact(b, bi->id, &bi->artifacts[i]);
	}
	kiln_buf_putc(b, ']');
}

/* The build object; cached as given, and "coalesced" appended when
 * coalesced >= 0 (the submit answer). */
static void put_build(struct kiln_buf *b, const struct kiln_build_info *bi, bool cached,
                      int coalesced)
{
	kiln_buf_printf(b, "{\"id\":\"%s\",\"name\":", bi->id);
	put_str_or_null(b, bi->name);
	kiln_buf_printf(b,
	                ",\"status\":\"%s\",\"config_hash\":\"%s\",\"build_key\":\"%s\","
	                "\"source_date_epoch\":%" PRId64 ",\"created_at\":",
	                kiln_build_status_name(bi->status), bi->config_hash, bi->build_key,
	                bi->source_date_epoch);
	put_time(b, bi->created_us);
	kiln_buf_puts(b, ",\"started_at\":");
	put_time(b, bi->started_us);
	kiln_buf_puts(b, ",\"completed_at\":");
	put_time(b, bi->completed_us);
	kiln_buf_puts(b, ",\"error\":");
	put_str_or_null(b, bi->error);
	kiln_buf_printf(b, ",\"progress\":{\"current_step\":%u,\"total_steps\":%u,\"current\":",
	                bi->current_step, bi->total_steps);
	put_str_or_null(b, bi->current_what);
	kiln_buf_puts(b, "},\"host\":");
	put_str_or_null(b, bi->host);
	kiln_buf_printf(b, ",\"cached\":%s,\"warning\":%s,\"artifacts\":", bool_text(cached),
	                bool_text(bi->warning));
	put_artifacts(b, bi);
	kiln_buf_printf(b,
	                ",\"links\":{\"self\":\"" BUILDS "%s\",\"logs\":\"" BUILDS "%s/logs\","
	                "\"cancel\":\"" BUILDS "%s/cancel\"}",
	                bi->id, bi->id, bi->id);
	if (coalesced >= 0)
		kiln_buf_printf(b, ",\"coalesced\":%s", bool_text(coalesced));
	kiln_buf_putc(b, '}');
}

void kiln_http_json_build(struct kiln_buf *b, const struct kiln_build_info *bi)
{
	put_build(b, bi, bi->cached, -1);
}

void kiln_http_json_submitted(struct kiln_buf *b, const struct kiln_build_info *bi,
                              enum kiln_submit_outcome outcome)
{
	put_build(b, bi, outcome == KILN_SUBMIT_CACHED || bi->cached,
	          outcome == KILN_SUBMIT_COALESCED);
	kiln_buf_putc(b, '\n');
}

void kiln_http_json_build_list(struct kiln_buf *b, struct kiln_build_info *const *v, size_t n,
                               const char *next)
{
	kiln_buf_puts(b, "{\"builds\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			kiln_buf_putc(b, ',');
		kiln_http_json_build(b, v[i]);
	}
	kiln_buf_puts(b, "],\"next_cursor\":");
	put_str_or_null(b, next);
	kiln_buf_puts(b, "}\n");
}

void kiln_http_json_artifacts(struct kiln_buf *b, const struct kiln_build_info *bi)
{
	kiln_buf_puts(b, "{\"artifacts\":");
	put_artifacts(b, bi);
	kiln_buf_puts(b, "}\n");
}

void kiln_http_json_session(struct kiln_buf *b, const struct kiln_session_info *si)
{
	kiln_buf_puts(b, "{\"owner\":");
	put_str(b, si->owner);
	kiln_buf_puts(b, ",\"csrf_token\":");
	put_str(b, si->csrf_token);
	time_t sec = (time_t)(si->expires_us / 1000000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	char t[32];
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%SZ", &tm);
	kiln_buf_printf(b, ",\"expires_at\":\"%s\"}\n", t);
}

void kiln_http_json_error(struct kiln_buf *b, const char *code, const char *msg)
{
	kiln_buf_puts(b, "{\"error\":{\"code\":");
	put_str(b, code);
	kiln_buf_puts(b, ",\"message\":");
	put_str(b, msg);
	kiln_buf_puts(b, "}}\n");
}

void kiln_http_json_tag(struct kiln_buf *b, const struct kiln_template_tag *t, bool with_history)
{
	kiln_buf_puts(b, "{\"name\":");
	put_str(b, t->name);
	kiln_buf_puts(b, ",\"tag\":");
	put_str(b, t->tag);
	kiln_buf_printf(b, ",\"build_id\":\"%s\",\"url\":\"/api/v1/builds/%s\",\"protected\":%s",
	                t->build_id, t->build_id, t->protected_ ? "true" : "false");
	kiln_buf_puts(b, ",\"updated\":");
	put_time(b, t->updated_us);
	if (with_history) {
		kiln_buf_puts(b, ",\"history\":[");
		for (size_t i = 0; i < t->n_history; i++) {
			kiln_buf_printf(b, "%s{\"build_id\":\"%s\",\"tagged\":", i ? "," : "",
			                t->history[i].build_id);
			put_time(b, t->history[i].tagged_us);
			kiln_buf_putc(b, '}');
		}
		kiln_buf_putc(b, ']');
	}
	kiln_buf_putc(b, '}');
}

void kiln_http_json_templates(struct kiln_buf *b, const struct kiln_template_tag *v, size_t n)
{
	kiln_buf_puts(b, "{\"templates\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			kiln_buf_putc(b, ',');
		kiln_http_json_tag(b, &v[i], true);
	}
	kiln_buf_puts(b, "]}\n");
}

/* First match wins: the errno rows are request conditions whatever the
 * kind; the kind rows (code 0) answer for the rest. */
static const struct {
	int code; /* positive errno; 0: any */
	int kind; /* enum kiln_error_kind; -1: any */
	struct kiln_http_error_status s;
} error_statuses[] = {
    {ENOENT, -1, {404, "not_found"}},
    {EBUSY, -1, {409, "conflict"}},
    {EPROTO, -1, {415, "unsupported_media_type"}},
    {EACCES, -1, {401, "unauthorized"}},
    {EAGAIN, -1, {503, "unavailable"}},
    {ESHUTDOWN, -1, {503, "unavailable"}},
    {0, KILN_ERR_USER, {422, "invalid_recipe"}},
    {0, KILN_ERR_LIMIT, {413, "payload_too_large"}},
    {0, KILN_ERR_CANCELLED, {409, "cancelled"}},
    {0, KILN_ERR_SYSTEM, {500, "internal_error"}},
};

struct kiln_http_error_status kiln_http_error_status(int rc, enum kiln_error_kind kind)
{
	for (size_t i = 0; i < ELEMENTSOF(error_statuses); i++)
		if ((error_statuses[i].code == 0 || error_statuses[i].code == -rc) &&
		    (error_statuses[i].kind < 0 || error_statuses[i].kind == (int)kind))
			return error_statuses[i].s;
	return (struct kiln_http_error_status){500, "internal_error"};
}
