/* util/buf.h — a growable byte buffer, always NUL-terminated.
 *
 * Length-carrying strings for everything built piecewise (canonical JSON,
 * file contents, HTTP bodies) so nothing relies on strcat/sprintf. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "util/macros.h"

struct kiln_buf {
	char *data; /* NUL-terminated once anything was added; NULL when empty */
	size_t len;
	size_t cap;
};

#define KILN_BUF_INIT                                                                              \
	{                                                                                          \
		NULL, 0, 0                                                                         \
	}

void kiln_buf_reserve(struct kiln_buf *b, size_t extra);
void kiln_buf_append(struct kiln_buf *b, const void *p, size_t n);
void kiln_buf_puts(struct kiln_buf *b, const char *s);
void kiln_buf_putc(struct kiln_buf *b, char c);
void kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...) _printf_(2, 3);
void kiln_buf_reset(struct kiln_buf *b);
/* Returns the data (never NULL: "" for an empty buffer) and empties b. */
char *kiln_buf_steal(struct kiln_buf *b, size_t *ret_len);
void kiln_buf_free(struct kiln_buf *b);
