/* libFuzzer target: /etc/subuid and /etc/subgid lines checked against the
 * sandbox's id range at start (kiln serve, kiln build).
 *
 * Input: the file's text. Any input must return NULL or a non-empty list,
 * without reading past size (ASan) or overflowing start + count (UBSan). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox/sandbox.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *w = kiln_sandbox_subid_overlaps((const char *)data, size);
	if (w && !*w)
		__builtin_trap();
	free(w);
	return 0;
}
