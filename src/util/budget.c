#include "util/budget.h"

#include <inttypes.h>

#include "util/alloc.h"

size_t kiln_budget_take(struct kiln_budget *b, size_t len)
{
	uint64_t left = b->max - b->passed;
	size_t n = (uint64_t)len < left ? len : (size_t)left;
	b->passed += n;
	b->dropped += len - n;
	return n;
}

char *kiln_budget_note(const struct kiln_budget *b)
{
	if (!b->dropped)
		return NULL;
	return xasprintf("==> log limit of %" PRIu64 " bytes reached: dropped %" PRIu64 " bytes\n",
	                 b->max, b->dropped);
}
