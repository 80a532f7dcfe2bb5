/* util/parse.h — checked integer parsing (never atoi/strtol unchecked).
 *
 * Accepts optional surrounding nothing: the whole string must be the number.
 * Returns 0 and sets *ret, or -EINVAL (not a number) / -ERANGE (outside
 * [min, max]). *ret is untouched on failure. */
#pragma once

#include <stddef.h>
#include <stdint.h>

int kiln_parse_u64(const char *s, int base, uint64_t min, uint64_t max, uint64_t *ret);
int kiln_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret);
/* A size in bytes: decimal digits with an optional binary suffix K, M or G
 * (KiB, MiB, GiB: "64M" is 67108864), in [min, max]. */
int kiln_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *ret);
/* An unsigned decimal that fits int, in [min, max]. */
int kiln_parse_int(const char *s, int min, int max, int *ret);

/* A field of a line, not NUL-terminated. */
struct kiln_span {
	const char *p;
	size_t len;
};
/* Splits s[0..len) at runs of spaces into at most max fields, without
 * copying or writing (memchr, not strtok: the input may be const and need
 * not be NUL-terminated). Returns how many were found; *ret_rest (may be
 * NULL) is set to what follows the last field, leading spaces skipped. */
size_t kiln_split_fields(const char *s, size_t len, struct kiln_span *f, size_t max,
                         struct kiln_span *ret_rest);
/* kiln_parse_u64(base 10) of a span. */
int kiln_parse_span_u64(struct kiln_span s, uint64_t min, uint64_t max, uint64_t *ret);
