/* util/parse.h — checked integer parsing (never atoi/strtol unchecked).
 *
 * Accepts optional surrounding nothing: the whole string must be the number.
 * Returns 0 and sets *ret, or -EINVAL (not a number) / -ERANGE (outside
 * [min, max]). *ret is untouched on failure. */
#pragma once

#include <stdint.h>

int kiln_parse_u64(const char *s, int base, uint64_t min, uint64_t max, uint64_t *ret);
int kiln_parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret);
/* An unsigned decimal that fits int, in [min, max]. */
int kiln_parse_int(const char *s, int min, int max, int *ret);
