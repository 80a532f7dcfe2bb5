/* Unit tests of http/'s pure parsers (http/parse.h): routes, Host
 * allowlist, Range, If-None-Match, Bearer, Accept, Content-Type, list
 * parameters, listen addresses, the rate limiter's bucket, SSE framing; and
 * of its pure writers (http/json.h): the API's JSON and the status table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "http/json.h"
#include "http/parse.h"
#include "http/routes.h"
#include "util/alloc.h"

static int h(struct kiln_http_request *r)
{
	(void)r;
	return 0;
}

/* The server's own table (http/routes.h), with a stub handler. */
#define ROW(method, pattern, flags, handler) {method, pattern, 0, h},
static const struct kiln_http_route routes[] = {KILN_HTTP_ROUTES(ROW)};
#undef ROW

static int find(unsigned m, const char *path, unsigned *allow, struct kiln_http_param *p, size_t *n)
{
	return kiln_http_route_find(routes, ELEMENTSOF(routes), m, path, p, n, allow);
}

/* Whether a request lands on the row (method, pattern). */
static bool lands(unsigned m, const char *path, unsigned row_method, const char *pattern,
                  unsigned *allow, struct kiln_http_param *p, size_t *n)
{
	int i = find(m, path, allow, p, n);
	return i >= 0 && routes[i].method == row_method && strcmp(routes[i].pattern, pattern) == 0;
}

static void test_routes(void **state)
{
	(void)state;
	struct kiln_http_param p[KILN_HTTP_MAX_PARAMS];
	size_t n = 99;
	unsigned allow;
	assert_true(
	    lands(KILN_HTTP_GET, "/api/v1/health", KILN_HTTP_GET, "/api/v1/health", &allow, p, &n));
	assert_int_equal(n, 0);
	assert_true(lands(KILN_HTTP_HEAD, "/api/v1/health", KILN_HTTP_GET, "/api/v1/health", &allow,
	                  p, &n));
	assert_true(
	    lands(KILN_HTTP_GET, "/api/v1/builds", KILN_HTTP_GET, "/api/v1/builds", &allow, p, &n));
	assert_int_equal(allow, KILN_HTTP_GET | KILN_HTTP_POST);
	assert_true(lands(KILN_HTTP_POST, "/api/v1/builds", KILN_HTTP_POST, "/api/v1/builds",
	                  &allow, p, &n));
	assert_true(lands(KILN_HTTP_GET, "/api/v1/builds/abc/artifacts/x.iso", KILN_HTTP_GET,
	                  "/api/v1/builds/{id}/artifacts/{name}", &allow, p, &n));
	assert_int_equal(n, 2);
	assert_int_equal(p[0].len, 3);
	assert_memory_equal(p[0].s, "abc", 3);
	assert_int_equal(p[1].len, 5);
	assert_memory_equal(p[1].s, "x.iso", 5);
	/* wrong method on a known path */
	assert_int_equal(find(KILN_HTTP_DELETE, "/api/v1/builds/abc", &allow, p, &n),
	                 KILN_HTTP_ROUTE_BAD_METHOD);
	assert_int_equal(allow, KILN_HTTP_GET);
	assert_int_equal(find(KILN_HTTP_GET, "/api/v1/builds/abc/cancel", &allow, p, &n),
	                 KILN_HTTP_ROUTE_BAD_METHOD);
	/* not found: extra/missing/empty segments, trailing slash, no slash */
	static const char *const nf[] = {
	    "/api/v1/builds/",
	    "/api/v1/builds//cancel",
	    "/api/v1/healthz",
	    "/api/v1",
	    "/api/v1/builds/a/b",
	    "api/v1/health",
	    "",
	    "//", /* "/" itself is the web page's row */
	    "/api/v1/health/",
	    "/api/v1/builds/a/artifacts/",
	};
	for (size_t i = 0; i < ELEMENTSOF(nf); i++)
		assert_int_equal(find(KILN_HTTP_GET, nf[i], &allow, p, &n),
		                 KILN_HTTP_ROUTE_NOT_FOUND);
	assert_int_equal(kiln_http_method_parse("GET"), KILN_HTTP_GET);
	assert_int_equal(kiln_http_method_parse("get"), 0);
	assert_int_equal(kiln_http_method_parse("BREW"), 0);
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	kiln_http_allow_header(KILN_HTTP_GET | KILN_HTTP_POST, &b);
	assert_string_equal(b.data, "GET, HEAD, POST, OPTIONS");
}

static void test_origin_and_fetch_site(void **state)
{
	(void)state;
	assert_true(kiln_http_origin_same("http://127.0.0.1:8080", "127.0.0.1:8080", false));
	assert_true(kiln_http_origin_same("http://LOCALHOST:8080", "localhost:8080", false));
	assert_true(kiln_http_origin_same("https://kiln.example", "kiln.example:443", true));
	assert_true(kiln_http_origin_same("https://kiln.example:443", "kiln.example", true));
	assert_true(kiln_http_origin_same("http://[::1]:8080", "[::1]:8080", false));
	/* scheme, host or port differ */
	assert_false(kiln_http_origin_same("https://127.0.0.1:8080", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://127.0.0.1:8080", "127.0.0.1:8080", true));
	assert_false(kiln_http_origin_same("http://evil.example:8080", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://127.0.0.1:8081", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://127.0.0.1", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://127.0.0.10:8080", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://127.0.0.1:8080.evil", "127.0.0.1:8080", false));
	/* not an origin */
	assert_false(kiln_http_origin_same("null", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://127.0.0.1:8080/", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://u@127.0.0.1:8080", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://", "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same(NULL, "127.0.0.1:8080", false));
	assert_false(kiln_http_origin_same("http://127.0.0.1:8080", NULL, false));

	assert_true(kiln_http_fetch_site_ok(NULL));
	assert_true(kiln_http_fetch_site_ok("same-origin"));
	assert_true(kiln_http_fetch_site_ok("none"));
	assert_false(kiln_http_fetch_site_ok("same-site"));
	assert_false(kiln_http_fetch_site_ok("cross-site"));
	assert_false(kiln_http_fetch_site_ok("Same-Origin"));
	assert_false(kiln_http_fetch_site_ok(""));
}

static void test_host_allowlist(void **state)
{
	(void)state;
	static const char *const allow[] = {"localhost:8080", "127.0.0.1:8080", "[::1]:8080",
	                                    "kiln.example"};
	const size_t n = ELEMENTSOF(allow);
	assert_true(kiln_http_host_allowed("localhost:8080", allow, n));
	assert_true(kiln_http_host_allowed("LocalHost:8080", allow, n));
	assert_true(kiln_http_host_allowed("[::1]:8080", allow, n));
	assert_true(kiln_http_host_allowed("kiln.example", allow, n));
	assert_true(kiln_http_host_allowed("kiln.example:9999", allow, n));
	assert_false(kiln_http_host_allowed("localhost", allow, n)); /* port 80 is not ours */
	assert_false(kiln_http_host_allowed("localhost:8081", allow, n));
	assert_false(kiln_http_host_allowed("evil.example:8080", allow, n));
	assert_false(kiln_http_host_allowed("localhost.evil.example:8080", allow, n));
	assert_false(kiln_http_host_allowed("kiln.example.evil", allow, n));
	assert_false(kiln_http_host_allowed("127.0.0.1:8080@evil", allow, n));
	assert_false(kiln_http_host_allowed("", allow, n));
	assert_false(kiln_http_host_allowed(NULL, allow, n));
	assert_false(kiln_http_host_allowed(":8080", allow, n));
	assert_false(kiln_http_host_allowed("localhost:", allow, n));
	assert_false(kiln_http_host_allowed("localhost:99999", allow, n));
	assert_false(kiln_http_host_allowed("localhost:8080 ", allow, n));
	assert_false(kiln_http_host_allowed("[::1", allow, n));
	assert_false(kiln_http_host_allowed("[]:8080", allow, n));
	assert_false(kiln_http_host_allowed("[::1]x", allow, n));
}

static const char *framing(const char *const *h, size_t n)
{
	struct kiln_http_framing f = {0};
	for (size_t i = 0; i + 1 < n; i += 2)
		kiln_http_framing_add(&f, h[i], h[i + 1]);
	return kiln_http_framing_check(&f);
}

static void test_framing(void **state)
{
	(void)state;
#define FRAMING(...)                                                                               \
	framing((const char *const[]){__VA_ARGS__},                                                \
	        ELEMENTSOF(((const char *const[]){__VA_ARGS__})))
	assert_null(FRAMING("Host", "a", "Content-Length", "12"));
	assert_null(FRAMING("host", "a", "transfer-encoding", "Chunked"));
	assert_null(FRAMING("Host", "a", "Accept", "*/*"));
	assert_non_null(FRAMING("Content-Length", "5", "Transfer-Encoding", "chunked"));
	assert_non_null(FRAMING("transfer-encoding", "chunked", "CONTENT-LENGTH", "5"));
	assert_non_null(FRAMING("Content-Length", "5", "Content-Length", "5"));
	assert_non_null(FRAMING("Content-Length", "5, 5"));
	assert_non_null(FRAMING("Content-Length", "+5"));
	assert_non_null(FRAMING("Content-Length", ""));
	assert_non_null(FRAMING("Transfer-Encoding", "chunked", "Transfer-Encoding", "chunked"));
	assert_non_null(FRAMING("Transfer-Encoding", "gzip"));
	assert_non_null(FRAMING("Transfer-Encoding", "chunked, identity"));
	assert_non_null(FRAMING("Host", "a", "Host", "a"));
	assert_non_null(FRAMING("Transfer-Encoding ", "chunked", "Content-Length", "5"));
	assert_non_null(FRAMING("X\tY", "1"));
	assert_non_null(FRAMING("", "1"));
	assert_null(FRAMING("X-Ok_1.2~", "1", "Accept", "*/*"));
	assert_string_equal(FRAMING("Host", "a", "HOST", "b"), "more than one Host");
#undef FRAMING
}

static void test_access_log_line(void **state)
{
	(void)state;
	char line[KILN_HTTP_LOG_LINE_MAX];
	struct kiln_http_log_entry e = {.time = "2026-12-01T22:14:31.123Z",
	                                .remote = "127.0.0.1",
	                                .method = "GET",
	                                .uri = "/api/v1/health",
	                                .status = 200,
	                                .duration_us = 17};
	size_t n = kiln_http_log_line(line, &e);
	const char *want = "{\"time\":\"2026-12-01T22:14:31.123Z\",\"remote\":\"127.0.0.1\","
	                   "\"method\":\"GET\",\"uri\":\"/api/v1/health\",\"status\":200,"
	                   "\"ms\":0.017,\"user\":null}\n";
	assert_int_equal(n, strlen(want));
	assert_memory_equal(line, want, n);

	/* log injection: a forged line, a terminal escape, quotes */
	e.uri = "/x\r\n{\"forged\":1}\x1b[2J\\\xff";
	e.user = "al\"ice";
	e.status = 0;
	e.aborted = true;
	n = kiln_http_log_line(line, &e);
	want = "{\"time\":\"2026-12-01T22:14:31.123Z\",\"remote\":\"127.0.0.1\","
	       "\"method\":\"GET\",\"uri\":\"/x%0D%0A{%22forged%22:1}%1B[2J%5C%FF\","
	       "\"status\":null,\"ms\":0.017,\"user\":\"al%22ice\",\"aborted\":true}\n";
	assert_int_equal(n, strlen(want));
	assert_memory_equal(line, want, n);

	/* a URI over the line: cut at a whole escape, flagged, still one line */
	char *big = xmalloc(3 * KILN_HTTP_LOG_LINE_MAX + 1);
	memset(big, '\x01', 3 * KILN_HTTP_LOG_LINE_MAX);
	big[3 * KILN_HTTP_LOG_LINE_MAX] = '\0';
	e.uri = big;
	n = kiln_http_log_line(line, &e);
	assert_true(n <= KILN_HTTP_LOG_LINE_MAX);
	assert_int_equal(line[n - 1], '\n');
	assert_null(memchr(line, '\n', n - 1));
	assert_non_null(memmem(line, n, "%01\",\"status\"", strlen("%01\",\"status\"")));
	assert_non_null(memmem(line, n, ",\"truncated\":true}", 18));
	free(big);
}

static void test_range(void **state)
{
	(void)state;
	uint64_t s = 7, l = 7;
	assert_int_equal(kiln_http_range_parse(NULL, 100, &s, &l), KILN_HTTP_RANGE_NONE);
	assert_int_equal(kiln_http_range_parse("bytes=0-9", 100, &s, &l), KILN_HTTP_RANGE_OK);
	assert_int_equal(s, 0);
	assert_int_equal(l, 10);
	assert_int_equal(kiln_http_range_parse("bytes=90-", 100, &s, &l), KILN_HTTP_RANGE_OK);
	assert_int_equal(s, 90);
	assert_int_equal(l, 10);
	assert_int_equal(kiln_http_range_parse("bytes=90-1000", 100, &s, &l), KILN_HTTP_RANGE_OK);
	assert_int_equal(l, 10);
	assert_int_equal(kiln_http_range_parse("bytes=-10", 100, &s, &l), KILN_HTTP_RANGE_OK);
	assert_int_equal(s, 90);
	assert_int_equal(l, 10);
	assert_int_equal(kiln_http_range_parse("bytes=-1000", 100, &s, &l), KILN_HTTP_RANGE_OK);
	assert_int_equal(s, 0);
	assert_int_equal(l, 100);
	assert_int_equal(kiln_http_range_parse(" Bytes = 5-5 ", 100, &s, &l), KILN_HTTP_RANGE_OK);
	assert_int_equal(s, 5);
	assert_int_equal(l, 1);
	assert_int_equal(kiln_http_range_parse("bytes=100-", 100, &s, &l),
	                 KILN_HTTP_RANGE_UNSATISFIABLE);
	assert_int_equal(kiln_http_range_parse("bytes=-0", 100, &s, &l),
	                 KILN_HTTP_RANGE_UNSATISFIABLE);
	assert_int_equal(kiln_http_range_parse("bytes=0-", 0, &s, &l),
	                 KILN_HTTP_RANGE_UNSATISFIABLE);
	assert_int_equal(kiln_http_range_parse("bytes=99999999999999999999999-", 100, &s, &l),
	                 KILN_HTTP_RANGE_UNSATISFIABLE);
	static const char *const ignored[] = {
	    "bytes=5-1", "bytes=0-1,5-6", "bytes=",     "bytes=-",   "items=0-1",
	    "bytes 0-1", "bytes=a-b",     "bytes=1-2x", "bytes=--1", "",
	};
	for (size_t i = 0; i < ELEMENTSOF(ignored); i++)
		assert_int_equal(kiln_http_range_parse(ignored[i], 100, &s, &l),
		                 KILN_HTTP_RANGE_NONE);
	/* the largest sizes do not overflow */
	assert_int_equal(kiln_http_range_parse("bytes=0-", UINT64_MAX, &s, &l), KILN_HTTP_RANGE_OK);
	assert_true(l == UINT64_MAX);
}

static void test_etag(void **state)
{
	(void)state;
	const char *e = "\"abc\"";
	assert_true(kiln_http_etag_match("\"abc\"", e));
	assert_true(kiln_http_etag_match("W/\"abc\"", e));
	assert_true(kiln_http_etag_match("\"x\", \"abc\"", e));
	assert_true(kiln_http_etag_match("*", e));
	assert_false(kiln_http_etag_match("\"abcd\"", e));
	assert_false(kiln_http_etag_match("abc", e));
	assert_false(kiln_http_etag_match("\"abc", e));
	assert_false(kiln_http_etag_match("", e));
	assert_false(kiln_http_etag_match(NULL, e));
}

static void test_bearer_accept_media(void **state)
{
	(void)state;
	const char *t;
	size_t n;
	assert_true(kiln_http_bearer_parse("Bearer kiln_abc-DEF_123", &t, &n));
	assert_int_equal(n, strlen("kiln_abc-DEF_123"));
	assert_true(kiln_http_bearer_parse("bearer  tok==", &t, &n));
	assert_int_equal(n, 5);
	assert_false(kiln_http_bearer_parse("Bearer", &t, &n));
	assert_false(kiln_http_bearer_parse("Bearer ", &t, &n));
	assert_false(kiln_http_bearer_parse("Basic eDp5", &t, &n));
	assert_false(kiln_http_bearer_parse("Bearer a b", &t, &n));
	assert_false(kiln_http_bearer_parse("Bearer a\"b", &t, &n));
	assert_false(kiln_http_bearer_parse("Bearertok", &t, &n));

	assert_true(kiln_http_accepts("text/event-stream", "text/event-stream"));
	assert_true(kiln_http_accepts("text/html, Text/Event-Stream;q=0.5", "text/event-stream"));
	assert_false(kiln_http_accepts("text/event-stream;q=0", "text/event-stream"));
	assert_false(kiln_http_accepts("text/event-streams", "text/event-stream"));
	assert_false(kiln_http_accepts("*/*", "text/event-stream"));
	assert_false(kiln_http_accepts(NULL, "text/event-stream"));

	assert_int_equal(kiln_http_media_type("application/json"), KILN_HTTP_MEDIA_JSON);
	assert_int_equal(kiln_http_media_type("Application/JSON; charset=UTF-8"),
	                 KILN_HTTP_MEDIA_JSON);
	assert_int_equal(kiln_http_media_type("application/json; charset=latin1"),
	                 KILN_HTTP_MEDIA_OTHER);
	assert_int_equal(kiln_http_media_type("multipart/form-data; boundary=xyz"),
	                 KILN_HTTP_MEDIA_MULTIPART);
	assert_int_equal(kiln_http_media_type("multipart/form-data; boundary=\"a b\""),
	                 KILN_HTTP_MEDIA_MULTIPART);
	assert_int_equal(kiln_http_media_type("multipart/form-data"), KILN_HTTP_MEDIA_OTHER);
	assert_int_equal(kiln_http_media_type("application/jsonx"), KILN_HTTP_MEDIA_OTHER);
	assert_int_equal(kiln_http_media_type("text/plain"), KILN_HTTP_MEDIA_OTHER);
	assert_int_equal(kiln_http_media_type(NULL), KILN_HTTP_MEDIA_NONE);
}

static int status_parse(const char *s)
{
	return strcmp(s, "pending") == 0 ? 0 : strcmp(s, "failed") == 0 ? 3 : -1;
}

static void test_list_query(void **state)
{
	(void)state;
	struct kiln_http_list_query q;
	struct kiln_error *err = NULL;
	assert_int_equal(kiln_http_list_query_parse(NULL, NULL, NULL, status_parse, &q, &err), 0);
	assert_int_equal(q.status, -1);
	assert_null(q.cursor);
	assert_int_equal(q.limit, 20);
	assert_int_equal(
	    kiln_http_list_query_parse("failed", "abc=", "100", status_parse, &q, &err), 0);
	assert_int_equal(q.status, 3);
	assert_string_equal(q.cursor, "abc=");
	assert_int_equal(q.limit, 100);
	static const char *const bad[][3] = {
	    {"bogus", NULL, NULL}, {NULL, NULL, "0"},    {NULL, NULL, "101"},
	    {NULL, NULL, "-1"},    {NULL, NULL, "1x"},   {NULL, "a b", NULL},
	    {NULL, "\x01", NULL},  {NULL, "\xff", NULL}, {NULL, NULL, ""},
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(kiln_http_list_query_parse(bad[i][0], bad[i][1], bad[i][2],
		                                            status_parse, &q, &err),
		                 -EINVAL);
		assert_non_null(err);
		err = kiln_error_free(err);
	}
	uint64_t v;
	assert_int_equal(kiln_http_last_event_id_parse("42", &v), 0);
	assert_int_equal(v, 42);
	assert_true(kiln_http_last_event_id_parse("4x", &v) < 0);
}

static void test_listen(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	socklen_t len;
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	assert_int_equal(kiln_http_listen_parse("127.0.0.1:8080", &ss, &len, NULL), 0);
	assert_true(kiln_http_addr_is_loopback((struct sockaddr *)&ss));
	kiln_http_addr_format((struct sockaddr *)&ss, &b, true);
	assert_string_equal(b.data, "127.0.0.1:8080");
	kiln_buf_reset(&b);
	assert_int_equal(kiln_http_listen_parse("[::1]:0", &ss, &len, NULL), 0);
	assert_true(kiln_http_addr_is_loopback((struct sockaddr *)&ss));
	kiln_http_addr_format((struct sockaddr *)&ss, &b, true);
	assert_string_equal(b.data, "[::1]:0");
	assert_int_equal(kiln_http_listen_parse("localhost:1", &ss, &len, NULL), 0);
	assert_true(kiln_http_addr_is_loopback((struct sockaddr *)&ss));
	assert_int_equal(kiln_http_listen_parse("127.8.9.10:1", &ss, &len, NULL), 0);
	assert_true(kiln_http_addr_is_loopback((struct sockaddr *)&ss));
	assert_int_equal(kiln_http_listen_parse("0.0.0.0:8080", &ss, &len, NULL), 0);
	assert_false(kiln_http_addr_is_loopback((struct sockaddr *)&ss));
	assert_int_equal(kiln_http_listen_parse("[::]:8080", &ss, &len, NULL), 0);
	assert_false(kiln_http_addr_is_loopback((struct sockaddr *)&ss));
	static const char *const bad[] = {
	    "8080",     "127.0.0.1", "127.0.0.1:",     "127.0.0.1:70000",
	    "::1:8080", "[::1:8080", "example.com:80", "127.0.0.1:8080x"};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		struct kiln_error *err = NULL;
		assert_int_equal(kiln_http_listen_parse(bad[i], &ss, &len, &err), -EINVAL);
		assert_non_null(strstr(err->msg, bad[i]));
		kiln_error_free(err);
	}
}

static void test_bucket(void **state)
{
	(void)state;
	struct kiln_http_bucket b = {0};
	struct kiln_http_rate r;
	uint64_t t = 1000000000;
	/* a full bucket: `limit` requests at once, then refused */
	for (unsigned i = 0; i < 100; i++) {
		assert_true(kiln_http_bucket_take(&b, t, 100, &r));
		assert_int_equal(r.limit, 100);
		assert_int_equal(r.remaining, 99 - i);
	}
	assert_false(kiln_http_bucket_take(&b, t, 100, &r));
	assert_int_equal(r.remaining, 0);
	assert_int_equal(r.retry_after_s, 1); /* 0.6 s until the next token, rounded up */
	assert_int_equal(r.reset_s, 60);
	/* a refused request costs nothing; one token every 0.6 s */
	assert_false(kiln_http_bucket_take(&b, t + 500000, 100, &r));
	assert_true(kiln_http_bucket_take(&b, t + 600000, 100, &r));
	assert_false(kiln_http_bucket_take(&b, t + 600000, 100, &r));
	/* after a quiet minute it is full again, and never more than full */
	t += 10 * 60 * 1000000ull;
	for (unsigned i = 0; i < 100; i++)
		assert_true(kiln_http_bucket_take(&b, t, 100, &r));
	assert_false(kiln_http_bucket_take(&b, t, 100, &r));
	/* limit 1: one per minute */
	struct kiln_http_bucket one = {0};
	assert_true(kiln_http_bucket_take(&one, t, 1, &r));
	assert_false(kiln_http_bucket_take(&one, t + 59000000, 1, &r));
	assert_int_equal(r.retry_after_s, 1);
	assert_true(kiln_http_bucket_take(&one, t + 60000000, 1, &r));
}

static void test_sse_and_disposition(void **state)
{
	(void)state;
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	kiln_http_sse_event(&b, "log", 7, "hello", 5);
	assert_string_equal(b.data, "id: 7\nevent: log\ndata: hello\n\n");
	kiln_buf_reset(&b);
	/* a line can never break the framing: CR, LF and CRLF all split */
	kiln_http_sse_event(&b, "log", 8, "a\rb\r\nc\nd\n", 9);
	assert_string_equal(b.data,
	                    "id: 8\nevent: log\ndata: a\ndata: b\ndata: c\ndata: d\ndata: \n\n");
	kiln_buf_reset(&b);
	kiln_http_sse_event(&b, "status", 0, "", 0);
	assert_string_equal(b.data, "event: status\ndata: \n\n");
	kiln_buf_reset(&b);
	kiln_http_content_disposition(&b, "live.iso");
	assert_string_equal(b.data, "attachment; filename=\"live.iso\"; filename*=UTF-8''live.iso");
	kiln_buf_reset(&b);
	kiln_http_content_disposition(&b, "a\"b\r\nc é");
	assert_string_equal(b.data, "attachment; filename=\"a_b__c __\"; "
	                            "filename*=UTF-8''a%22b%0D%0Ac%20%C3%A9");
}

/* ---- the API's JSON (http/json.c; moved here from test_service.c) ------------------ */

static void test_build_json(void **state)
{
	(void)state;
	struct kiln_build_artifact art = {(char *)"live.iso", "", 123};
	memset(art.sha256, 'a', 64);
	art.sha256[64] = 0;
	struct kiln_build_info b = {
	    .id = "0b0e0c3a-1234-4abc-8def-0123456789ab",
	    .name = (char *)"web \"server\"",
	    .status = KILN_BUILD_COMPLETED,
	    .source_date_epoch = 1700000000,
	    .created_us = 1700000000123456,
	    .completed_us = 1700000001999999,
	    .current_step = 2,
	    .total_steps = 5,
	    .current_what = (char *)"step 2 of 5: RUN make",
	    .cached = true,
	    .artifacts = &art,
	    .n_artifacts = 1,
	};
	memset(b.config_hash, 'c', 64);
	memset(b.build_key, 'k', 64);
	_cleanup_buf_ struct kiln_buf jb = KILN_BUF_INIT;
	kiln_http_json_build(&jb, &b);
	const char *j = jb.data;
	static const char *const want[] = {
	    "{\"id\":\"0b0e0c3a-1234-4abc-8def-0123456789ab\",\"name\":\"web \\\"server\\\"\","
	    "\"status\":\"completed\",",
	    "\"source_date_epoch\":1700000000,",
	    "\"created_at\":\"2023-11-14T22:13:20.123Z\",\"started_at\":null,"
	    "\"completed_at\":\"2023-11-14T22:13:21.999Z\",\"error\":null,",
	    "\"progress\":{\"current_step\":2,\"total_steps\":5,\"current\":\"step 2 of 5: RUN "
	    "make\"}",
	    "\"cached\":true,\"warning\":false,",
	    "\"url\":\"/api/v1/builds/0b0e0c3a-1234-4abc-8def-0123456789ab/artifacts/live.iso\"",
	    "\"size\":123,",
	    "\"links\":{\"self\":\"/api/v1/builds/0b0e0c3a-1234-4abc-8def-0123456789ab\",",
	    "\"cancel\":\"/api/v1/builds/0b0e0c3a-1234-4abc-8def-0123456789ab/cancel\"}}",
	};
	for (size_t i = 0; i < ELEMENTSOF(want); i++)
		if (!strstr(j, want[i]))
			fail_msg("missing %s\n  in %s", want[i], j);
	assert_int_equal(j[jb.len - 1], '}'); /* GET answers without a newline */

	/* The submit answer: the same object, cached and coalesced explicit. */
	_cleanup_buf_ struct kiln_buf sb = KILN_BUF_INIT;
	b.cached = false;
	kiln_http_json_submitted(&sb, &b, KILN_SUBMIT_COALESCED);
	assert_non_null(strstr(sb.data, "\"cached\":false,\"warning\":false,"));
	assert_non_null(strstr(sb.data, "/cancel\"},\"coalesced\":true}\n"));
	kiln_buf_reset(&sb);
	kiln_http_json_submitted(&sb, &b, KILN_SUBMIT_CACHED);
	assert_non_null(strstr(sb.data, "\"cached\":true,"));
	assert_non_null(strstr(sb.data, "\"coalesced\":false}\n"));

	/* A list is the same objects, and the artifacts list the same entries. */
	_cleanup_buf_ struct kiln_buf lb = KILN_BUF_INIT;
	struct kiln_build_info *v[] = {&b, &b};
	kiln_http_json_build_list(&lb, v, 2, "17.x\"y");
	_cleanup_buf_ struct kiln_buf one = KILN_BUF_INIT;
	kiln_http_json_build(&one, &b);
	_cleanup_free_ char *want_list =
	    xasprintf("{\"builds\":[%s,%s],\"next_cursor\":\"17.x\\\"y\"}\n", one.data, one.data);
	assert_string_equal(lb.data, want_list);
	kiln_buf_reset(&lb);
	kiln_http_json_build_list(&lb, NULL, 0, NULL);
	assert_string_equal(lb.data, "{\"builds\":[],\"next_cursor\":null}\n");
	_cleanup_buf_ struct kiln_buf ab = KILN_BUF_INIT;
	kiln_http_json_artifacts(&ab, &b);
	assert_string_equal(
	    ab.data, "{\"artifacts\":[{\"name\":\"live.iso\",\"sha256\":"
	             "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
	             "\"size\":123,\"url\":\"/api/v1/builds/0b0e0c3a-1234-4abc-8def-0123456789ab/"
	             "artifacts/live.iso\"}]}\n");
	assert_non_null(strstr(j, "\"artifacts\":[{\"name\":\"live.iso\",\"sha256\":\"aaaa"));

	/* The session answer (moved here from web.c). */
	_cleanup_buf_ struct kiln_buf ses = KILN_BUF_INIT;
	struct kiln_session_info si = {.owner = (char *)"alice", .expires_us = 1700000000123456};
	memset(si.csrf_token, 'c', KILN_CSRF_TOKEN_LEN);
	si.csrf_token[KILN_CSRF_TOKEN_LEN] = '\0';
	kiln_http_json_session(&ses, &si);
	_cleanup_free_ char *want_ses =
	    xasprintf("{\"owner\":\"alice\",\"csrf_token\":\"%s\",\"expires_at\":"
	              "\"2023-11-14T22:13:20Z\"}\n",
	              si.csrf_token);
	assert_string_equal(ses.data, want_ses);

	/* One escaping rule: UTF-8 kept, controls escaped, in names and errors. */
	_cleanup_buf_ struct kiln_buf eb = KILN_BUF_INIT;
	kiln_http_json_error(&eb, "invalid_recipe", "name: \"caf\xc3\xa9\"\n\x01");
	assert_string_equal(eb.data, "{\"error\":{\"code\":\"invalid_recipe\",\"message\":"
	                             "\"name: \\\"caf\xc3\xa9\\\"\\n\\u0001\"}}\n");
}

/* ---- kind and errno → HTTP status (the one table) ---------------------------------- */

static void test_error_status(void **state)
{
	(void)state;
	static const struct {
		int rc;
		enum kiln_error_kind kind;
		unsigned status;
		const char *code;
	} cases[] = {
	    /* the kind decides for everything that is not a request condition */
	    {-EINVAL, KILN_ERR_USER, 422, "invalid_recipe"},
	    {-EIO, KILN_ERR_USER, 422, "invalid_recipe"},
	    {-EFBIG, KILN_ERR_LIMIT, 413, "payload_too_large"},
	    {-ETIME, KILN_ERR_LIMIT, 413, "payload_too_large"},
	    {-ECANCELED, KILN_ERR_CANCELLED, 409, "cancelled"},
	    {-EIO, KILN_ERR_SYSTEM, 500, "internal_error"},
	    /* the same errno from kiln's own failure is not the user's */
	    {-EINVAL, KILN_ERR_SYSTEM, 500, "internal_error"},
	    {-EFBIG, KILN_ERR_SYSTEM, 500, "internal_error"},
	    /* request conditions, whatever the kind */
	    {-ENOENT, KILN_ERR_SYSTEM, 404, "not_found"},
	    {-ENOENT, KILN_ERR_USER, 404, "not_found"},
	    {-EBUSY, KILN_ERR_SYSTEM, 409, "conflict"},
	    {-EPROTO, KILN_ERR_USER, 415, "unsupported_media_type"},
	    {-EACCES, KILN_ERR_SYSTEM, 401, "unauthorized"},
	    {-EAGAIN, KILN_ERR_SYSTEM, 503, "unavailable"},
	    {-ESHUTDOWN, KILN_ERR_SYSTEM, 503, "unavailable"},
	    /* a kind out of range is kiln's bug: 500 */
	    {-EIO, (enum kiln_error_kind)99, 500, "internal_error"},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct kiln_http_error_status st =
		    kiln_http_error_status(cases[i].rc, cases[i].kind);
		if (st.status != cases[i].status || strcmp(st.code, cases[i].code) != 0)
			fail_msg("case %zu (rc %d, kind %d): got %u %s, want %u %s", i, cases[i].rc,
			         (int)cases[i].kind, st.status, st.code, cases[i].status,
			         cases[i].code);
	}

	/* The kind set at the source survives the context callers add. */
	_cleanup_error_ struct kiln_error *err = NULL;
	kiln_error_set_kind(&err, KILN_ERR_LIMIT, EFBIG, "recipe is larger than 16 MiB");
	kiln_error_prefix(&err, "recipe");
	struct kiln_http_error_status st = kiln_http_error_status(-EFBIG, kiln_error_kind(err));
	assert_int_equal(st.status, 413);
	assert_int_equal(kiln_http_error_status(-EIO, kiln_error_kind(NULL)).status, 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_routes),
	    cmocka_unit_test(test_host_allowlist),
	    cmocka_unit_test(test_origin_and_fetch_site),
	    cmocka_unit_test(test_framing),
	    cmocka_unit_test(test_access_log_line),
	    cmocka_unit_test(test_range),
	    cmocka_unit_test(test_etag),
	    cmocka_unit_test(test_bearer_accept_media),
	    cmocka_unit_test(test_list_query),
	    cmocka_unit_test(test_listen),
	    cmocka_unit_test(test_bucket),
	    cmocka_unit_test(test_sse_and_disposition),
	    cmocka_unit_test(test_build_json),
	    cmocka_unit_test(test_error_status),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
