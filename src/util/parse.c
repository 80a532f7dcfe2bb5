#include "util/parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

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
