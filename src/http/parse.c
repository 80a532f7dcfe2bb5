/* http/parse.c — header, route and parameter parsing; see parse.h. */
#include "http/parse.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "util/parse.h"

static const struct {
	unsigned bit;
	const char *name;
} methods[] = {
    {KILN_HTTP_GET, "GET"},         {KILN_HTTP_HEAD, "HEAD"},     {KILN_HTTP_POST, "POST"},
    {KILN_HTTP_PUT, "PUT"},         {KILN_HTTP_DELETE, "DELETE"}, {KILN_HTTP_PATCH, "PATCH"},
    {KILN_HTTP_OPTIONS, "OPTIONS"},
};

unsigned kiln_http_method_parse(const char *method)
{
	for (size_t i = 0; i < ELEMENTSOF(methods); i++)
		if (strcmp(methods[i].name, method) == 0)
			return methods[i].bit;
	return 0;
}

void kiln_http_allow_header(unsigned m, struct kiln_buf *out)
{
	if (m & KILN_HTTP_GET)
		m |= KILN_HTTP_HEAD;
	m |= KILN_HTTP_OPTIONS;
	bool first = true;
	for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
		if (!(m & methods[i].bit))
			continue;
		if (!first)
			kiln_buf_puts(out, ", ");
		kiln_buf_puts(out, methods[i].name);
		first = false;
	}
}

bool kiln_http_path_match(const char *pattern, const char *path,
                          struct kiln_http_param params[KILN_HTTP_MAX_PARAMS], size_t *ret_n)
{
	size_t n = 0;
	const char *p = pattern, *s = path;
	if (*p != '/' || *s != '/')
		return false;
	while (*p && *s) {
		if (*p != '/' || *s != '/')
			return false;
		p++, s++;
		size_t plen = strcspn(p, "/"), slen = strcspn(s, "/");
		if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
			if (slen == 0 || n >= KILN_HTTP_MAX_PARAMS)
				return false;
			params[n].s = s;
			params[n].len = slen;
			n++;
		} else if (plen != slen || memcmp(p, s, plen) != 0) {
			return false;
		}
		p += plen;
		s += slen;
	}
	if (*p || *s)
		return false;
	*ret_n = n;
	return true;
}

int kiln_http_route_find(const struct kiln_http_route *table, size_t n, unsigned method,
                         const char *path, struct kiln_http_param params[KILN_HTTP_MAX_PARAMS],
                         size_t *ret_n_params, unsigned *ret_allow)
{
	unsigned allow = 0;
	int found = KILN_HTTP_ROUTE_NOT_FOUND;
	struct kiln_http_param tmp[KILN_HTTP_MAX_PARAMS];
	size_t ntmp = 0;
	for (size_t i = 0; i < n; i++) {
		if (!kiln_http_path_match(table[i].pattern, path, tmp, &ntmp))
			continue;
		allow |= table[i].method;
		bool ok = table[i].method == method ||
		          (method == KILN_HTTP_HEAD && table[i].method == KILN_HTTP_GET);
		if (ok && found < 0) {
			found = (int)i;
			memcpy(params, tmp, sizeof(tmp));
			*ret_n_params = ntmp;
		}
	}
	*ret_allow = allow;
	if (found < 0 && allow)
		return KILN_HTTP_ROUTE_BAD_METHOD;
	return found;
}

/* ---- headers --------------------------------------------------------------- */

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static bool parse_port(const char *s, size_t len, long *ret)
{
	if (len == 0 || len > 5)
		return false;
	long v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v > 65535)
		return false;
	*ret = v;
	return true;
}

bool kiln_http_host_split(const char *host, size_t len, size_t *ret_name_len, long *ret_port)
{
	size_t name_len;
	if (len == 0)
		return false;
	if (host[0] == '[') {
		const char *close = memchr(host, ']', len);
		if (!close || close == host + 1)
			return false;
		name_len = (size_t)(close - host) + 1;
		for (size_t i = 1; i + 1 < name_len; i++) {
			char c = host[i];
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			      (c >= 'A' && c <= 'F') || c == ':' || c == '.'))
				return false;
		}
	} else {
		name_len = 0;
		while (name_len < len && host[name_len] != ':')
			name_len++;
		if (name_len == 0)
			return false;
		for (size_t i = 0; i < name_len; i++) {
			char c = host[i];
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
			      (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_'))
				return false;
		}
	}
	long port = -1;
	if (name_len < len) {
		if (host[name_len] != ':' ||
		    !parse_port(host + name_len + 1, len - name_len - 1, &port))
			return false;
	}
	*ret_name_len = name_len;
	*ret_port = port;
	return true;
}

bool kiln_http_host_allowed(const char *host, const char *const *allow, size_t n_allow)
{
	if (!host)
		return false;
	size_t hlen = strlen(host), hname;
	long hport;
	if (!kiln_http_host_split(host, hlen, &hname, &hport))
		return false;
	for (size_t i = 0; i < n_allow; i++) {
		size_t aname;
		long aport;
		if (!kiln_http_host_split(allow[i], strlen(allow[i]), &aname, &aport))
			continue;
		if (aname != hname || strncasecmp(allow[i], host, hname) != 0)
			continue;
		if (aport < 0 || aport == hport)
			return true;
	}
	return false;
}

void kiln_http_framing_add(struct kiln_http_framing *f, const char *name, const char *value)
{
	if (!name)
		return;
	/* RFC 9112 §5.1: a name is a token, with no white space before the colon */
	static const char tchar[] = "!#$%&'*+-.^_`|~";
	bool token = *name != '\0';
	for (const char *p = name; token && *p; p++)
		token = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
		        (*p >= 'A' && *p <= 'Z') || strchr(tchar, *p);
	f->bad_name |= !token;
	if (strcasecmp(name, "Host") == 0) {
		f->n_host++;
	} else if (strcasecmp(name, "Content-Length") == 0) {
		f->n_content_length++;
		/* "5, 5" is a repeated header folded into one */
		bool digits = value && *value;
		for (const char *p = value; digits && *p; p++)
			digits = *p >= '0' && *p <= '9';
		f->bad_length |= !digits;
	} else if (strcasecmp(name, "Transfer-Encoding") == 0) {
		f->n_transfer_encoding++;
		f->bad_coding |= !value || strcasecmp(value, "chunked") != 0;
	}
}

const char *kiln_http_framing_check(const struct kiln_http_framing *f)
{
	if (f->n_content_length && f->n_transfer_encoding)
		return "Content-Length and Transfer-Encoding together";
	if (f->n_content_length > 1)
		return "more than one Content-Length";
	if (f->n_transfer_encoding > 1)
		return "more than one Transfer-Encoding";
	if (f->bad_length)
		return "Content-Length is not a decimal number";
	if (f->bad_coding)
		return "Transfer-Encoding other than chunked";
	if (f->n_host > 1)
		return "more than one Host";
	if (f->bad_name)
		return "a header name with white space or a character names never have";
	return NULL;
}

bool kiln_http_origin_same(const char *origin, const char *host, bool tls)
{
	if (!origin || !host)
		return false;
	const char *scheme = tls ? "https://" : "http://";
	size_t sl = strlen(scheme);
	if (strncasecmp(origin, scheme, sl) != 0)
		return false;
	const char *oh = origin + sl;
	size_t olen = strlen(oh), hlen = strlen(host), oname, hname;
	long oport, hport;
	/* An origin is scheme://host[:port] and nothing else: a path, a
	 * userinfo or a trailing slash is not an origin. */
	if (!kiln_http_host_split(oh, olen, &oname, &oport) ||
	    !kiln_http_host_split(host, hlen, &hname, &hport))
		return false;
	long def = tls ? 443 : 80;
	if (oport < 0)
		oport = def;
	if (hport < 0)
		hport = def;
	return oname == hname && strncasecmp(oh, host, hname) == 0 && oport == hport;
}

bool kiln_http_fetch_site_ok(const char *v)
{
	return !v || strcmp(v, "same-origin") == 0 || strcmp(v, "none") == 0;
}

/* Parses a run of decimal digits, saturating at UINT64_MAX. */
static const char *parse_digits(const char *s, uint64_t *ret)
{
	const char *start = s;
	uint64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		v = (v > (UINT64_MAX - d) / 10) ? UINT64_MAX : v * 10 + d;
	}
	if (s == start)
		return NULL;
	*ret = v;
	return s;
}

enum kiln_http_range_result kiln_http_range_parse(const char *range, uint64_t size,
                                                  uint64_t *ret_start, uint64_t *ret_len)
{
	if (!range)
		return KILN_HTTP_RANGE_NONE;
	const char *s = range;
	while (is_ows(*s))
		s++;
	if (strncasecmp(s, "bytes", 5) != 0)
		return KILN_HTTP_RANGE_NONE;
	s += 5;
	while (is_ows(*s))
		s++;
	if (*s++ != '=')
		return KILN_HTTP_RANGE_NONE;
	while (is_ows(*s))
		s++;
	uint64_t first = 0, last = 0;
	bool has_first = false, has_last = false;
	if (*s != '-') {
		s = parse_digits(s, &first);
		if (!s)
			return KILN_HTTP_RANGE_NONE;
		has_first = true;
	}
	if (*s++ != '-')
		return KILN_HTTP_RANGE_NONE;
	if (*s >= '0' && *s <= '9') {
		s = parse_digits(s, &last);
		has_last = true;
	}
	while (is_ows(*s))
		s++;
	/* Multi-range answers (multipart/byteranges) are optional (RFC 9110
	 * §14.2): a client asking for several gets the whole resource. */
	if (*s != '\0')
		return KILN_HTTP_RANGE_NONE;
	if (!has_first && !has_last)
		return KILN_HTTP_RANGE_NONE;
	if (has_first && has_last && last < first)
		return KILN_HTTP_RANGE_NONE;
	if (!has_first) { /* suffix: the last `last` bytes */
		if (last == 0 || size == 0)
			return KILN_HTTP_RANGE_UNSATISFIABLE;
		uint64_t n = last < size ? last : size;
		*ret_start = size - n;
		*ret_len = n;
		return KILN_HTTP_RANGE_OK;
	}
	if (first >= size)
		return KILN_HTTP_RANGE_UNSATISFIABLE;
	if (!has_last || last >= size)
		last = size - 1;
	*ret_start = first;
	*ret_len = last - first + 1;
	return KILN_HTTP_RANGE_OK;
}

bool kiln_http_etag_match(const char *inm, const char *etag)
{
	if (!inm)
		return false;
	size_t elen = strlen(etag);
	const char *s = inm;
	for (;;) {
		while (is_ows(*s) || *s == ',')
			s++;
		if (!*s)
			return false;
		if (*s == '*')
			return true;
		if (s[0] == 'W' && s[1] == '/')
			s += 2;
		if (*s != '"')
			return false; /* malformed: no match */
		const char *close = strchr(s + 1, '"');
		if (!close)
			return false;
		size_t len = (size_t)(close - s) + 1;
		if (len == elen && memcmp(s, etag, len) == 0)
			return true;
		s = close + 1;
	}
}

bool kiln_http_bearer_parse(const char *authz, const char **ret_token, size_t *ret_len)
{
	if (!authz || strncasecmp(authz, "Bearer", 6) != 0 || authz[6] != ' ')
		return false;
	const char *t = authz + 7;
	while (*t == ' ')
		t++;
	size_t n = 0;
	/* token68 (RFC 9110 §11.2) */
	while (t[n] && ((t[n] >= 'A' && t[n] <= 'Z') || (t[n] >= 'a' && t[n] <= 'z') ||
	                (t[n] >= '0' && t[n] <= '9') || strchr("-._~+/", t[n]) != NULL))
		n++;
	while (t[n] == '=')
		n++;
	size_t end = n;
	while (t[end] == ' ')
		end++;
	if (n == 0 || t[end] != '\0')
		return false;
	*ret_token = t;
	*ret_len = n;
	return true;
}

/* Media-type of a header element [s, s+len): returns its type/subtype span,
 * trimmed, and where its parameters start. */
static void media_range(const char *s, size_t len, size_t *ret_tlen, const char **ret_params,
                        size_t *ret_plen)
{
	size_t t = 0;
	while (t < len && s[t] != ';')
		t++;
	size_t tl = t;
	while (tl > 0 && is_ows(s[tl - 1]))
		tl--;
	*ret_tlen = tl;
	*ret_params = s + t;
	*ret_plen = len - t;
}

/* Value of parameter `name` in ";a=b; c=d" (quotes stripped), or false. */
static bool media_param(const char *p, size_t plen, const char *name, const char **ret,
                        size_t *ret_len)
{
	size_t nlen = strlen(name);
	size_t i = 0;
	while (i < plen) {
		if (p[i] != ';') {
			i++;
			continue;
		}
		i++;
		while (i < plen && is_ows(p[i]))
			i++;
		if (plen - i > nlen && strncasecmp(p + i, name, nlen) == 0 && p[i + nlen] == '=') {
			const char *v = p + i + nlen + 1;
			size_t vlen = 0, rest = plen - i - nlen - 1;
			if (rest > 0 && v[0] == '"') {
				v++, rest--;
				while (vlen < rest && v[vlen] != '"')
					vlen++;
			} else {
				while (vlen < rest && v[vlen] != ';' && !is_ows(v[vlen]))
					vlen++;
			}
			*ret = v;
			*ret_len = vlen;
			return true;
		}
	}
	return false;
}

bool kiln_http_accepts(const char *accept, const char *type)
{
	if (!accept)
		return false;
	size_t tlen = strlen(type);
	const char *s = accept;
	while (*s) {
		while (is_ows(*s) || *s == ',')
			s++;
		size_t len = strcspn(s, ",");
		size_t ml, plen;
		const char *params, *q;
		size_t qlen;
		media_range(s, len, &ml, &params, &plen);
		if (ml == tlen && strncasecmp(s, type, tlen) == 0) {
			if (!media_param(params, plen, "q", &q, &qlen))
				return true;
			/* q=0, q=0.0, q=0.000 refuse the type */
			bool zero = qlen > 0 && q[0] == '0';
			for (size_t i = 1; zero && i < qlen; i++)
				zero = q[i] == '.' || q[i] == '0';
			if (!zero)
				return true;
		}
		s += len;
	}
	return false;
}

enum kiln_http_media kiln_http_media_type(const char *ct)
{
	if (!ct)
		return KILN_HTTP_MEDIA_NONE;
	while (is_ows(*ct))
		ct++;
	size_t len = strlen(ct), ml, plen, vlen;
	const char *params, *v;
	media_range(ct, len, &ml, &params, &plen);
	if (ml == 16 && strncasecmp(ct, "application/json", 16) == 0) {
		if (media_param(params, plen, "charset", &v, &vlen) &&
		    !(vlen == 5 && strncasecmp(v, "utf-8", 5) == 0))
			return KILN_HTTP_MEDIA_OTHER;
		return KILN_HTTP_MEDIA_JSON;
	}
	if (ml == 19 && strncasecmp(ct, "multipart/form-data", 19) == 0) {
		/* RFC 2046 §5.1.1: 1-70 characters */
		if (!media_param(params, plen, "boundary", &v, &vlen) || vlen == 0 || vlen > 70)
			return KILN_HTTP_MEDIA_OTHER;
		return KILN_HTTP_MEDIA_MULTIPART;
	}
	return KILN_HTTP_MEDIA_OTHER;
}

/* ---- query parameters ------------------------------------------------------ */

int kiln_http_list_query_parse(const char *status, const char *cursor, const char *limit,
                               int (*status_parse)(const char *), struct kiln_http_list_query *ret,
                               struct kiln_error **err)
{
	struct kiln_http_list_query q = {.status = -1, .cursor = NULL, .limit = 20};
	if (status && *status) {
		q.status = status_parse(status);
		if (q.status < 0)
			return kiln_error_set(err, EINVAL,
			                      "status: must be one of pending, building, "
			                      "completed, failed, cancelled");
	}
	if (cursor && *cursor) {
		size_t n = strlen(cursor);
		if (n > 512)
			return kiln_error_set(err, EINVAL, "cursor: too long");
		for (size_t i = 0; i < n; i++)
			if (cursor[i] <= 0x20 || cursor[i] >= 0x7f)
				return kiln_error_set(err, EINVAL,
				                      "cursor: not a cursor this "
				                      "server returned");
		q.cursor = cursor;
	}
	if (limit) {
		int v;
		if (kiln_parse_int(limit, 1, 100, &v) < 0)
			return kiln_error_set(err, EINVAL,
			                      "limit: must be an integer from 1 to 100");
		q.limit = (unsigned)v;
	}
	*ret = q;
	return 0;
}

int kiln_http_last_event_id_parse(const char *s, uint64_t *ret)
{
	return kiln_parse_u64(s, 10, 0, UINT64_MAX, ret);
}

/* ---- listen addresses -------------------------------------------------------- */

int kiln_http_listen_parse(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len,
                           struct kiln_error **err)
{
	const char *colon = strrchr(s, ':');
	if (!colon)
		return kiln_error_set(err, EINVAL, "listen address '%s': expected ADDR:PORT", s);
	long port;
	if (!parse_port(colon + 1, strlen(colon + 1), &port))
		return kiln_error_set(err, EINVAL, "listen address '%s': bad port", s);
	size_t alen = (size_t)(colon - s);
	char addr[INET6_ADDRSTRLEN + 2];
	struct sockaddr_storage ss = {0};
	socklen_t len;
	if (alen >= sizeof(addr))
		return kiln_error_set(err, EINVAL, "listen address '%s': bad address", s);
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (alen >= 2 && addr[0] == '[' && addr[alen - 1] == ']') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		addr[alen - 1] = '\0';
		if (inet_pton(AF_INET6, addr + 1, &a6->sin6_addr) != 1)
			return kiln_error_set(err, EINVAL, "listen address '%s': bad IPv6 address",
			                      s);
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		len = sizeof(*a6);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		const char *a = strcmp(addr, "localhost") == 0 ? "127.0.0.1" : addr;
		if (inet_pton(AF_INET, a, &a4->sin_addr) != 1)
			return kiln_error_set(err, EINVAL,
			                      "listen address '%s': bad IPv4 address "
			                      "(write IPv6 as [addr]:port)",
			                      s);
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		len = sizeof(*a4);
	}
	*ret = ss;
	*ret_len = len;
	return 0;
}

bool kiln_http_addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
		return (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) && a6->sin6_addr.s6_addr[12] == 127;
	}
	return false;
}

void kiln_http_addr_format(const struct sockaddr *sa, struct kiln_buf *out, bool with_port)
{
	char txt[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &a6->sin6_addr, txt, sizeof(txt));
		kiln_buf_printf(out, "[%s]", txt);
		if (with_port)
			kiln_buf_printf(out, ":%u", ntohs(a6->sin6_port));
	} else {
		const struct sockaddr_in *a4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &a4->sin_addr, txt, sizeof(txt));
		kiln_buf_puts(out, txt);
		if (with_port)
			kiln_buf_printf(out, ":%u", ntohs(a4->sin_port));
	}
}

/* ---- rate limiting ----------------------------------------------------------- */

bool kiln_http_bucket_take(struct kiln_http_bucket *b, uint64_t now_us, unsigned limit,
                           struct kiln_http_rate *ret)
{
	const uint64_t window = 60u * 1000000u;
	if (limit == 0)
		limit = 1;
	uint64_t t = window / limit; /* one token's worth of time */
	uint64_t tat = b->tat_us > now_us ? b->tat_us : now_us;
	struct kiln_http_rate r = {.limit = limit};
	if (tat + t - now_us > window) {
		uint64_t wait = tat + t - now_us - window;
		r.remaining = 0;
		r.retry_after_s = (unsigned)((wait + 999999) / 1000000);
		r.reset_s = (unsigned)((tat - now_us + 999999) / 1000000);
		*ret = r;
		return false;
	}
	b->tat_us = tat + t;
	uint64_t used = b->tat_us - now_us; /* time until full again */
	r.remaining = (unsigned)((window - used) / t);
	r.reset_s = (unsigned)((used + 999999) / 1000000);
	*ret = r;
	return true;
}

/* ---- writers ----------------------------------------------------------------- */

void kiln_http_sse_event(struct kiln_buf *out, const char *event, uint64_t id, const char *data,
                         size_t len)
{
	if (id > 0)
		kiln_buf_printf(out, "id: %llu\n", (unsigned long long)id);
	kiln_buf_printf(out, "event: %s\n", event);
	size_t i = 0;
	for (;;) {
		size_t j = i;
		while (j < len && data[j] != '\n' && data[j] != '\r')
			j++;
		kiln_buf_puts(out, "data: ");
		/* a NUL would end the line for some parsers; drop it */
		for (size_t k = i; k < j; k++)
			if (data[k] != '\0')
				kiln_buf_putc(out, data[k]);
		kiln_buf_putc(out, '\n');
		if (j == len)
			break;
		if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
			j++;
		i = j + 1;
	}
	kiln_buf_putc(out, '\n');
}

void kiln_http_content_disposition(struct kiln_buf *out, const char *name)
{
	kiln_buf_puts(out, "attachment; filename=\"");
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if (*p < 0x20 || *p >= 0x7f)
			kiln_buf_putc(out, '_');
		else if (*p == '"' || *p == '\\')
			kiln_buf_putc(out, '_');
		else
			kiln_buf_putc(out, (char)*p);
	}
	kiln_buf_puts(out, "\"; filename*=UTF-8''");
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || strchr("!#$&+-.^_`|~", *p))
			kiln_buf_putc(out, (char)*p);
		else
			kiln_buf_printf(out, "%%%02X", *p);
	}
}

/* A writer into a fixed buffer: what does not fit is dropped, and `full`
 * says so. */
struct line_w {
	char *p;
	size_t len, cap;
	bool full;
};

static void lw_put(struct line_w *w, const char *s, size_t n)
{
	if (n > w->cap - w->len) {
		n = w->cap - w->len;
		w->full = true;
	}
	memcpy(w->p + w->len, s, n);
	w->len += n;
}

static void lw_puts(struct line_w *w, const char *s)
{
	lw_put(w, s, strlen(s));
}

/* A JSON string whose content is printable ASCII: the rest as %HH. Stops
 * before `limit` (an escape is never cut in half); returns false if s did
 * not fit. */
static bool lw_string(struct line_w *w, const char *s, size_t limit)
{
	static const char hex[] = "0123456789ABCDEF";
	lw_put(w, "\"", 1);
	bool whole = true;
	for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
		bool plain = *c > 0x20 && *c < 0x7f && *c != '"' && *c != '\\';
		if (w->len + (plain ? 1 : 3) > limit) {
			whole = false;
			break;
		}
		if (plain) {
			lw_put(w, (const char *)c, 1);
		} else {
			char e[3] = {'%', hex[*c >> 4], hex[*c & 15]};
			lw_put(w, e, 3);
		}
	}
	lw_put(w, "\"", 1);
	return whole;
}

size_t kiln_http_log_line(char out[KILN_HTTP_LOG_LINE_MAX], const struct kiln_http_log_entry *e)
{
	/* Room for everything after the URI: status, ms, user (cut at 256),
	 * the flags and the newline. */
	enum { TAIL = 512, USER_MAX = 256 };
	struct line_w w = {out, 0, KILN_HTTP_LOG_LINE_MAX, false};
	char num[64];
	lw_puts(&w, "{\"time\":");
	lw_string(&w, e->time, w.len + 64);
	lw_puts(&w, ",\"remote\":");
	lw_string(&w, e->remote, w.len + 64);
	lw_puts(&w, ",\"method\":");
	lw_string(&w, e->method, w.len + 64);
	lw_puts(&w, ",\"uri\":");
	bool whole = lw_string(&w, e->uri, KILN_HTTP_LOG_LINE_MAX - TAIL);
	if (e->status)
		snprintf(num, sizeof(num), ",\"status\":%u", e->status);
	else
		snprintf(num, sizeof(num), ",\"status\":null");
	lw_puts(&w, num);
	snprintf(num, sizeof(num), ",\"ms\":%llu.%03llu",
	         (unsigned long long)(e->duration_us / 1000),
	         (unsigned long long)(e->duration_us % 1000));
	lw_puts(&w, num);
	lw_puts(&w, ",\"user\":");
	if (e->user)
		lw_string(&w, e->user, w.len + USER_MAX);
	else
		lw_puts(&w, "null");
	if (e->aborted)
		lw_puts(&w, ",\"aborted\":true");
	if (!whole)
		lw_puts(&w, ",\"truncated\":true");
	lw_puts(&w, "}\n");
	return w.len;
}
