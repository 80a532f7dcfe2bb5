/* libFuzzer target: http/'s request parsing (http/parse.h).
 *
 * The input is split at NUL bytes into fields that go to every parser a
 * request reaches before its handler: the path through the real route
 * patterns, Host against an allowlist, Range against a size taken from the
 * input, If-None-Match, Authorization, Accept, Content-Type, the list
 * query parameters, Last-Event-ID, a listen address; plus the SSE and
 * Content-Disposition writers, whose output must stay well-formed; and the
 * same fields as header name/value pairs through the framing check, and
 * as an access-log entry (one line of printable ASCII for any input). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "http/parse.h"
#include "http/routes.h"
#include "util/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int h(struct kiln_http_request *r)
{
	(void)r;
	return 0;
}

/* the server's own table (src/http/routes.h), with a stub handler */
#define ROW(method, pattern, flags, handler) {method, pattern, 0, h},
static const struct kiln_http_route routes[] = {KILN_HTTP_ROUTES(ROW)};
#undef ROW

static int status_parse(const char *s)
{
	return strcmp(s, "pending") == 0 ? 0 : -1;
}

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x))                                                                          \
			__builtin_trap();                                                          \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = xmalloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	const char *f[12];
	size_t nf = 0;
	char *p = buf;
	while (nf < ELEMENTSOF(f)) {
		f[nf++] = p;
		size_t l = strlen(p);
		if (p + l >= buf + size)
			break;
		p += l + 1;
	}
	while (nf < ELEMENTSOF(f))
		f[nf++] = "";

	struct kiln_http_param params[KILN_HTTP_MAX_PARAMS];
	size_t np = 0;
	unsigned allow = 0;
	unsigned method = kiln_http_method_parse(f[0]);
	int i = kiln_http_route_find(routes, ELEMENTSOF(routes), method, f[1], params, &np, &allow);
	if (i >= 0) {
		CHECK((size_t)i < ELEMENTSOF(routes) && np <= KILN_HTTP_MAX_PARAMS);
		for (size_t k = 0; k < np; k++) {
			/* a parameter is one non-empty segment inside the path */
			CHECK(params[k].len > 0 && params[k].s >= f[1] &&
			      params[k].s + params[k].len <= f[1] + strlen(f[1]));
			CHECK(memchr(params[k].s, '/', params[k].len) == NULL);
		}
	}
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_http_allow_header(allow, &b);
	kiln_buf_free(&b);

	static const char *const hosts[] = {"localhost:8080", "[::1]:8080", "kiln.example"};
	if (kiln_http_host_allowed(f[2], hosts, ELEMENTSOF(hosts)))
		CHECK(strlen(f[2]) > 0 && strchr(f[2], '/') == NULL && strchr(f[2], '@') == NULL);

	/* Origin: same-origin only when it is exactly scheme://host[:port] */
	for (int tls = 0; tls < 2; tls++) {
		const char *scheme = tls ? "https://" : "http://";
		size_t sl = strlen(scheme);
		if (kiln_http_origin_same(f[5], f[2], tls))
			CHECK(strncasecmp(f[5], scheme, sl) == 0 && strlen(f[5]) > sl &&
			      strchr(f[5] + sl, '/') == NULL && strchr(f[5], '@') == NULL);
	}
	(void)kiln_http_fetch_site_ok(f[7]);

	/* framing: the fields as header name/value pairs; accepted framing
	 * never has both lengths, nor a coding other than chunked */
	struct kiln_http_framing fr = {0};
	for (size_t k = 0; k + 1 < nf; k += 2)
		kiln_http_framing_add(&fr, f[k], f[k + 1]);
	if (!kiln_http_framing_check(&fr))
		CHECK(!fr.bad_name && fr.n_host <= 1 && fr.n_content_length <= 1 &&
		      fr.n_transfer_encoding <= 1 &&
		      !(fr.n_content_length && fr.n_transfer_encoding));

	uint64_t rsize = 0;
	for (size_t k = 0; k < 8 && k < strlen(f[4]); k++)
		rsize = rsize << 8 | (uint8_t)f[4][k];
	uint64_t start = 0, len = 0;
	if (kiln_http_range_parse(f[3], rsize, &start, &len) == KILN_HTTP_RANGE_OK)
		CHECK(len > 0 && start < rsize && len <= rsize - start);

	(void)kiln_http_etag_match(f[5], "\"0123abcd\"");
	const char *tok;
	size_t tlen;
	if (kiln_http_bearer_parse(f[6], &tok, &tlen))
		CHECK(tlen > 0 && tok + tlen <= f[6] + strlen(f[6]));
	(void)kiln_http_accepts(f[7], "text/event-stream");
	(void)kiln_http_media_type(f[7]);

	struct kiln_http_list_query q;
	struct kiln_error *err = NULL;
	if (kiln_http_list_query_parse(f[8], f[9], f[10][0] ? f[10] : NULL, status_parse, &q,
	                               &err) == 0)
		CHECK(q.limit >= 1 && q.limit <= 100);
	else
		CHECK(err && err->msg && err->msg[0]);
	kiln_error_free(err);
	err = NULL;
	uint64_t seq;
	(void)kiln_http_last_event_id_parse(f[9], &seq);

	struct sockaddr_storage ss;
	socklen_t sl;
	if (kiln_http_listen_parse(f[11], &ss, &sl, &err) == 0) {
		kiln_http_addr_format((struct sockaddr *)&ss, &b, true);
		(void)kiln_http_addr_is_loopback((struct sockaddr *)&ss);
		kiln_buf_free(&b);
	}
	kiln_error_free(err);

	/* writers: an event is always "...\n\n" with no stray line breaks */
	kiln_http_sse_event(&b, "log", 1, (const char *)data, size);
	CHECK(b.len >= 2 && b.data[b.len - 1] == '\n' && b.data[b.len - 2] == '\n');
	CHECK(strstr(b.data, "\r") == NULL && memmem(b.data, b.len - 2, "\n\n", 2) == NULL);
	kiln_buf_free(&b);
	/* the access-log line: one line of printable ASCII within the limit */
	char line[KILN_HTTP_LOG_LINE_MAX];
	struct kiln_http_log_entry le = {.time = f[9],
	                                 .remote = f[11],
	                                 .method = f[0],
	                                 .uri = f[1],
	                                 .user = f[6][0] ? f[6] : NULL,
	                                 .status = (unsigned)size,
	                                 .duration_us = rsize,
	                                 .aborted = size & 1};
	size_t ln = kiln_http_log_line(line, &le);
	CHECK(ln >= 2 && ln <= sizeof(line) && line[ln - 1] == '\n' && line[ln - 2] == '}');
	for (size_t k = 0; k + 1 < ln; k++)
		CHECK((unsigned char)line[k] >= 0x20 && (unsigned char)line[k] < 0x7f);
	kiln_http_content_disposition(&b, f[1]);
	for (size_t k = 0; k < b.len; k++)
		CHECK((unsigned char)b.data[k] >= 0x20 && (unsigned char)b.data[k] < 0x7f);
	kiln_buf_free(&b);
	free(buf);
	return 0;
}
