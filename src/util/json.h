/* util/json.h — writing JSON text by hand where bytes matter.
 *
 * jansson parses; these write. The ASCII-only form is the canonical escaping
 * of the recipe identity (\" \\ \n \r \t \b \f, other C0 and U+007F+ as
 * lowercase \uXXXX, astral code points as surrogate pairs) — identical to
 * Python's json.dumps(ensure_ascii=True). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

/* Appends s[0..n) as a quoted JSON string. s must be valid UTF-8 when
 * ascii_only (invalid bytes become U+FFFD). */
void kiln_json_put_string(struct kiln_buf *b, const char *s, size_t n, bool ascii_only);
static inline void kiln_json_put_cstr(struct kiln_buf *b, const char *s)
{
	kiln_json_put_string(b, s, __builtin_strlen(s), true);
}
