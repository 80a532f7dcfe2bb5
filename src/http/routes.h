/* http/routes.h — the API's route table, in one place.
 *
 * The server (api.c) expands it with its handlers and flags; the unit test
 * (tests/unit/test_http.c) and the fuzz target (fuzz/fuzz_http.c) expand
 * the same rows with a stub handler, so what they route is what the server
 * routes. A new endpoint is one row here and its handler in api.c.
 *
 * KILN_HTTP_ROUTES(R) calls R(method, pattern, flags, handler) per row, in
 * match order. The flags (ROUTE_*, http/internal.h) and the handlers are
 * named only, so an expansion that ignores them needs neither. */
#pragma once

#define KILN_HTTP_ROUTES(R)                                                                        \
	R(KILN_HTTP_GET, "/api/v1/health", 0, h_health)                                            \
	R(KILN_HTTP_GET, "/api/v1/health/ready", 0, h_ready)                                       \
	R(KILN_HTTP_GET, "/api/v1/health/db", 0, h_db)                                             \
	R(KILN_HTTP_GET, "/api/v1/openapi.json", 0, h_openapi)                                     \
	R(KILN_HTTP_GET, "/", ROUTE_UI, http_ui_index)                                             \
	R(KILN_HTTP_GET, "/ui/{name}", ROUTE_UI, http_ui_file)                                     \
	R(KILN_HTTP_GET, "/ui/examples/{name}", ROUTE_UI, http_ui_file)                            \
	R(KILN_HTTP_POST, "/api/v1/session", ROUTE_SESSION | ROUTE_MUTATING | ROUTE_BODY,          \
	  http_session_create)                                                                     \
	R(KILN_HTTP_GET, "/api/v1/session", ROUTE_SESSION, http_session_get)                       \
	R(KILN_HTTP_DELETE, "/api/v1/session", ROUTE_SESSION | ROUTE_MUTATING,                     \
	  http_session_delete)                                                                     \
	R(KILN_HTTP_POST, "/api/v1/builds", ROUTE_AUTH | ROUTE_MUTATING | ROUTE_BODY, h_submit)    \
	R(KILN_HTTP_GET, "/api/v1/builds", ROUTE_AUTH, h_list)                                     \
	R(KILN_HTTP_GET, "/api/v1/builds/{id}", ROUTE_AUTH, h_get)                                 \
	R(KILN_HTTP_POST, "/api/v1/builds/{id}/cancel", ROUTE_AUTH | ROUTE_MUTATING, h_cancel)     \
	R(KILN_HTTP_GET, "/api/v1/builds/{id}/logs", ROUTE_AUTH, h_logs)                           \
	R(KILN_HTTP_GET, "/api/v1/builds/{id}/recipe", ROUTE_AUTH, h_recipe)                       \
	R(KILN_HTTP_GET, "/api/v1/builds/{id}/artifacts", ROUTE_AUTH, h_artifacts)                 \
	R(KILN_HTTP_GET, "/api/v1/builds/{id}/artifacts/{name}", ROUTE_AUTH, h_artifact)           \
	R(KILN_HTTP_GET, "/api/v1/templates", ROUTE_AUTH, h_templates)                             \
	R(KILN_HTTP_POST, "/api/v1/templates/{name}/tags/{tag}",                                   \
	  ROUTE_AUTH | ROUTE_MUTATING | ROUTE_BODY, h_tag)
