#include "util/parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int kiln_parse_u64(const char *s, int base, uint64_t min, uint64_t max, uint64_t *ret)
{
	/* strtoull accepts leading blanks and a '-' (wrapping around); refuse both. */
	if (!s || !*s || !isalnum((unsigned char)s[0]))
		return -EINVAL;
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (end == s || *end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

int kiln_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
	if (!s || !*s || !(isdigit((unsigned char)s[0]) || s[0] == '-'))
		return -EINVAL;
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

int kiln_parse_int(const char *s, int min, int max, int *ret)
{
	int64_t v;
	int r = kiln_parse_i64(s, min, max, &v);
	if (r < 0)
		return r;
	*ret = (int)v;
	return 0;
}

size_t kiln_split_fields(const char *s, size_t len, struct kiln_span *f, size_t max,
                         struct kiln_span *ret_rest)
{
	size_t n = 0;
	const char *p = s, *end = s + len;
	for (;;) {
		while (p < end && *p == ' ')
			p++;
		if (p == end || n == max)
			break;
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *e = sp ? sp : end;
		f[n++] = (struct kiln_span){p, (size_t)(e - p)};
		p = e;
	}
	if (ret_rest)
		*ret_rest = (struct kiln_span){p, (size_t)(end - p)};
	return n;
}

int kiln_parse_span_u64(struct kiln_span s, uint64_t min, uint64_t max, uint64_t *ret)
{
	char buf[32];
	if (s.len == 0 || s.len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s.p, s.len);
	buf[s.len] = '\0';
	return kiln_parse_u64(buf, 10, min, max, ret);
}

int kiln_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *ret)
{
	static const struct {
		char suffix;
		unsigned shift;
	} units[] = {{'K', 10}, {'M', 20}, {'G', 30}};
	if (!s || !*s)
		return -EINVAL;
	size_t n = strlen(s);
	unsigned shift = 0;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (s[n - 1] == units[i].suffix)
			shift = units[i].shift;
	if (shift)
		n--;
	char digits[24];
	if (n == 0 || n >= sizeof(digits))
		return n == 0 ? -EINVAL : -ERANGE;
	memcpy(digits, s, n);
	digits[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (digits[i] < '0' || digits[i] > '9')
			return -EINVAL;
	uint64_t v;
	int r = kiln_parse_u64(digits, 10, 0, UINT64_MAX >> shift, &v);
	if (r < 0)
		return r;
	v <<= shift;
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}
