/* util/budget.h — a byte budget for a stream that must not grow without
 * bound (STYLE.md §12 for streams rather than buffers): a build's log.
 *
 * The first `max` bytes pass; the rest is counted and dropped, and one note
 * says how much, so a reader knows the log is not whole. Must not: allocate
 * per call or block. Not thread-safe: the owner of the stream serialises. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct kiln_budget {
	uint64_t max;     /* bytes that may pass (0: none) */
	uint64_t passed;  /* bytes passed so far (<= max) */
	uint64_t dropped; /* bytes refused after max was reached */
};

/* How many of the next len bytes may pass (a prefix, 0..len); the rest
 * counts as dropped. */
size_t kiln_budget_take(struct kiln_budget *b, size_t len);
/* "==> log limit of M bytes reached: dropped N bytes\n", or NULL when
 * nothing was dropped. Caller frees. */
char *kiln_budget_note(const struct kiln_budget *b);
