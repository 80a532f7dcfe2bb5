/* http/json.h — the API's representation: builds, artifacts, lists, errors.
 *
 * Owns: every JSON body of /api/v1 that describes a build or a session
 * (docs/api.md), the
 * links between the resources (/api/v1/builds/{id}/...), the error body, the
 * one escaping rule they share (kiln_json_put_string without ascii_only:
 * UTF-8 kept, '"', '\\', C0 controls and DEL escaped) and the HTTP status
 * of a failure (errno and error kind → status and error code, one table).
 *
 * service/ hands over structs and never writes the wire format; nothing
 * here parses what another module wrote. Pure functions: no MHD, no I/O, so
 * tests/unit/test_http.c checks the bytes. */
#pragma once

#include <stddef.h>

#include "service/service.h"
#include "util/buf.h"
#include "util/error.h"

/* The build object (GET /api/v1/builds/{id}, cancel, the SSE "status"
 * event), without a trailing newline (as those have always been sent). */
void kiln_http_json_build(struct kiln_buf *b, const struct kiln_build_info *bi);
/* The submit answer: the build object with "cached" saying whether the
 * cache answered and "coalesced" whether an identical build in flight did;
 * newline-terminated. */
void kiln_http_json_submitted(struct kiln_buf *b, const struct kiln_build_info *bi,
                              enum kiln_submit_outcome outcome);
/* {"builds":[...],"next_cursor":...}, newline-terminated; next NULL: null. */
void kiln_http_json_build_list(struct kiln_buf *b, struct kiln_build_info *const *v, size_t n,
                               const char *next);
/* {"artifacts":[{"name","sha256","size","url"}...]}, newline-terminated. */
void kiln_http_json_artifacts(struct kiln_buf *b, const struct kiln_build_info *bi);
/* The session answer {"owner","csrf_token","expires_at"} (expires_at in
 * whole seconds), newline-terminated. */
void kiln_http_json_session(struct kiln_buf *b, const struct kiln_session_info *si);
/* {"error":{"code":...,"message":...}}, newline-terminated. */
/* A template tag: {"name","tag","build_id","protected","updated","history":
 * [{"build_id","tagged"}...]} (history omitted when with_history is false),
 * with links to the build. */
void kiln_http_json_tag(struct kiln_buf *b, const struct kiln_template_tag *t, bool with_history);
/* GET /api/v1/templates: {"templates":[tag...]} and a trailing newline. */
void kiln_http_json_templates(struct kiln_buf *b, const struct kiln_template_tag *v, size_t n);
void kiln_http_json_error(struct kiln_buf *b, const char *code, const char *msg);

/* What a failed service call answers: rc (negative errno) names request
 * conditions the service reports (no such build, finished already, not a
 * context archive, bad token, shutting down); everything else is decided
 * by the error's kind — USER 422, LIMIT 413, CANCELLED 409, SYSTEM 500. */
struct kiln_http_error_status {
	unsigned status;  /* HTTP status */
	const char *code; /* the error body's "code" */
};
struct kiln_http_error_status kiln_http_error_status(int rc, enum kiln_error_kind kind);
