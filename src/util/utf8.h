/* util/utf8.h — UTF-8 decoding and the whitespace set of Python's str.strip().
 *
 * The recipe identity strips names and paths exactly as the reference does:
 * every code point with the Unicode White_Space property plus U+001C..U+001F. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes one code point at s[0..n). Returns its byte length (1-4) and sets
 * *cp, or 0 for an invalid, overlong, surrogate or truncated sequence. */
size_t kiln_utf8_decode(const char *s, size_t n, uint32_t *cp);
bool kiln_utf8_valid(const char *s, size_t n);
bool kiln_unicode_is_strip_space(uint32_t cp);
/* Trims strip-space from both ends of valid UTF-8 s[0..n): sets ret_off and ret_len to
 * the kept range. */
void kiln_utf8_strip(const char *s, size_t n, size_t *ret_off, size_t *ret_len);
