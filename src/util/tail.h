/* util/tail.h — the last lines of a stream, for an error message.
 *
 * A failing step's final error carries the end of its output (issue 14:
 * "COPY: x: not in the context archive" was in the live log only). The tail
 * holds at most KILN_TAIL_LINES lines of at most KILN_TAIL_LINE_MAX bytes
 * each, in a fixed array: a step printing forever costs nothing more
 * (STYLE.md §12). Bytes past a line's ceiling are dropped and the line
 * ends with "...". It only copies; it never prints. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

enum {
	KILN_TAIL_LINES = 20,
	KILN_TAIL_LINE_MAX = 240,
};

struct kiln_tail {
	char line[KILN_TAIL_LINES][KILN_TAIL_LINE_MAX + 4]; /* ring of complete lines */
	size_t head, n;                                     /* next slot; lines held */
	char cur[KILN_TAIL_LINE_MAX + 4];                   /* the line being read */
	size_t cur_len;
	bool cur_long; /* cur went over KILN_TAIL_LINE_MAX */
};

void kiln_tail_reset(struct kiln_tail *t);
/* Feeds bytes; lines end at '\n'; '\r' and other control bytes but tab
 * are dropped (a progress bar's redraws are not lines). */
void kiln_tail_feed(struct kiln_tail *t, const char *data, size_t len);
/* The last line that is not blank (the partial one counts), or NULL. */
const char *kiln_tail_last(const struct kiln_tail *t);
/* The held lines (the partial one last), each "  | line\n"; NULL when none. */
char *kiln_tail_format(const struct kiln_tail *t, size_t *ret_lines);
