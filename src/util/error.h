/* util/error.h — the error convention every module follows (STYLE.md §1).
 *
 * A fallible function returns int: 0 on success, a negative errno on
 * failure, and fills `struct kiln_error **err` (its last parameter) with a
 * human message. Callers add context on the way up with kiln_error_prefix().
 * Library code never prints; cli/ and http/ turn errors into output.
 *
 * `err` may be NULL when the caller does not want the message. */
#pragma once

#include "util/macros.h"

struct kiln_error {
	int code;  /* positive errno-style code */
	char *msg; /* human readable, no trailing newline */
};

/* Sets *err (if err && !*err) and returns -code. code must be > 0. */
int kiln_error_set(struct kiln_error **err, int code, const char *fmt, ...) _printf_(3, 4);
/* Like kiln_error_set, appending ": strerror(code)". */
int kiln_error_set_errno(struct kiln_error **err, int code, const char *fmt, ...) _printf_(3, 4);
/* Prepends "<prefix>: " to an existing message (no-op when err or *err is NULL). */
void kiln_error_prefix(struct kiln_error **err, const char *fmt, ...) _printf_(2, 3);
struct kiln_error *kiln_error_free(struct kiln_error *e);
static inline void kiln_error_freep(struct kiln_error **e)
{
	kiln_error_free(*e);
}
#define _cleanup_error_ _cleanup_(kiln_error_freep)
