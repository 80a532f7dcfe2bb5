/* util/buf.h — a growable byte buffer, always NUL-terminated.
 *
 * Length-carrying strings for everything built piecewise (canonical JSON,
 * file contents, HTTP bodies) so nothing relies on strcat/sprintf.
 *
 * A buffer fed from outside (a socket, a step's output, an archive, a file
 * of a build tree) carries its own ceiling (STYLE.md §12): `max`, set at
 * init from the table of limits below. An append past it keeps the first
 * `max` bytes, drops the rest and sets `truncated`; the caller decides
 * whether that is an error (a response body) or a note (a log line). The
 * limit lives with the buffer, not at each call. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/macros.h"

struct kiln_buf {
	char *data; /* NUL-terminated once anything was added; NULL when empty */
	size_t len;
	size_t cap;
	size_t max;     /* ceiling on len (0: none — only for data kiln writes itself) */
	bool truncated; /* an append went over max; len == max */
};

/* The ceilings of buffers fed from outside, in one place. */
enum {
	/* one line of a step's or a tool's output, before it is logged */
	KILN_BUF_MAX_LINE = 64 * 1024,
	/* a host tool's output kept for its error message (the last line) */
	KILN_BUF_MAX_TOOL_OUTPUT = 64 * 1024,
	/* "E: ..." lines of apt's stderr kept for the error message */
	KILN_BUF_MAX_TOOL_ERRORS = 16 * 1024,
	/* a command's stdout kiln reads back from an image (ids, the package
	 * list, a script's one-word outcome) */
	KILN_BUF_MAX_CAPTURE = 16 * 1024 * 1024,
	/* the body of an API response the client reads (JSON, error bodies) */
	KILN_BUF_MAX_RESPONSE = 16 * 1024 * 1024,
	/* a whole build log the client reads (GET .../logs): the server keeps
	 * far less; this only bounds what a hostile server can make it hold */
	KILN_BUF_MAX_LOG_RESPONSE = 1024 * 1024 * 1024,
	/* one Server-Sent Event's line or data the client assembles */
	KILN_BUF_MAX_SSE_EVENT = 1024 * 1024,
	/* a header value the client keeps (ETag) */
	KILN_BUF_MAX_HEADER = 8 * 1024,
};

#define KILN_BUF_INIT                                                                              \
	{                                                                                          \
		NULL, 0, 0, 0, false                                                               \
	}
/* A buffer that stops at m bytes (one of KILN_BUF_MAX_*). */
#define KILN_BUF_INIT_MAX(m)                                                                       \
	{                                                                                          \
		NULL, 0, 0, (m), false                                                             \
	}

void kiln_buf_reserve(struct kiln_buf *b, size_t extra);
void kiln_buf_append(struct kiln_buf *b, const void *p, size_t n);
void kiln_buf_puts(struct kiln_buf *b, const char *s);
void kiln_buf_putc(struct kiln_buf *b, char c);
void kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...) _printf_(2, 3);
/* Empties b (keeps its memory and max; clears truncated). */
void kiln_buf_reset(struct kiln_buf *b);
/* Returns the data (never NULL: "" for an empty buffer) and empties b. */
char *kiln_buf_steal(struct kiln_buf *b, size_t *ret_len);
/* Frees the data; b stays usable (empty, same max). */
void kiln_buf_free(struct kiln_buf *b);
static inline void kiln_buf_freep(struct kiln_buf *b)
{
	kiln_buf_free(b);
}
#define _cleanup_buf_ _cleanup_(kiln_buf_freep)
