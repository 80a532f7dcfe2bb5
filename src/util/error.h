/* util/error.h — the error convention every module follows (STYLE.md §1).
 *
 * A fallible function returns int: 0 on success, a negative errno on
 * failure, and fills `struct kiln_error **err` (its last parameter) with a
 * human message. Callers add context on the way up with kiln_error_prefix().
 * Library code never prints; cli/ and http/ turn errors into output.
 *
 * `err` may be NULL when the caller does not want the message.
 *
 * The code says what went wrong, the kind says whose fault it is: "step 3
 * exited with status 2" (USER) and "could not mount the overlay" (SYSTEM)
 * may share an errno, never a kind. The kind is set where the outcome is
 * known (a step's exit status, a timeout, a cancel, a recipe rule) and
 * travels up unchanged through kiln_error_prefix(); callers branch on it,
 * never on errno values, and cli/ and http/ map it to an exit code and an
 * HTTP status, each in one table. */
#pragma once

#include "util/macros.h"

enum kiln_error_kind {
	KILN_ERR_SYSTEM = 0, /* kiln or the host failed (the default: not the user's doing) */
	KILN_ERR_USER,       /* the recipe, a request or a step is at fault: a retry fails again */
	KILN_ERR_LIMIT,      /* a limit was hit: a timeout, the memory limit, a size limit */
	KILN_ERR_CANCELLED,  /* someone asked the work to stop */
	KILN_ERR_KIND_COUNT,
};

struct kiln_error {
	int code;                  /* positive errno-style code */
	enum kiln_error_kind kind; /* whose fault: see above */
	char *msg;                 /* human readable, no trailing newline */
};

/* Sets *err (if err && !*err) and returns -code. code must be > 0. The kind
 * is KILN_ERR_SYSTEM. */
int kiln_error_set(struct kiln_error **err, int code, const char *fmt, ...) _printf_(3, 4);
/* Like kiln_error_set, with an explicit kind. */
int kiln_error_set_kind(struct kiln_error **err, enum kiln_error_kind kind, int code,
                        const char *fmt, ...) _printf_(4, 5);
/* Like kiln_error_set, appending ": strerror(code)". */
int kiln_error_set_errno(struct kiln_error **err, int code, const char *fmt, ...) _printf_(3, 4);
/* Prepends "<prefix>: " to an existing message (no-op when err or *err is NULL). */
void kiln_error_prefix(struct kiln_error **err, const char *fmt, ...) _printf_(2, 3);
/* Sets the kind of an existing error (no-op when err or *err is NULL): for a
 * caller that knows better than the callee, e.g. a file the recipe names. */
void kiln_error_set_kind_of(struct kiln_error **err, enum kiln_error_kind kind);
/* The kind of e; KILN_ERR_SYSTEM for NULL (a failure nobody explained). */
enum kiln_error_kind kiln_error_kind(const struct kiln_error *e);
/* "system", "user", "limit", "cancelled". */
const char *kiln_error_kind_name(enum kiln_error_kind kind);
struct kiln_error *kiln_error_free(struct kiln_error *e);
static inline void kiln_error_freep(struct kiln_error **e)
{
	kiln_error_free(*e);
}
#define _cleanup_error_ _cleanup_(kiln_error_freep)
