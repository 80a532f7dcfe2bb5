/* libFuzzer target: the state directory's references to store blobs (local
 * cache entries, package locks, base refs: image/refs.c), which `kiln store
 * verify` and `gc` read and trust to name blobs.
 *
 * Input: one byte choosing the kind, then the file's text. Any input must
 * either be refused (-EBADMSG) or name only 64-digit lowercase hex digests
 * — a name that could reach outside cas/sha256/ would make gc remove it. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"
#include "store/cas.h"
#include "util/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check(void *ud, enum kiln_image_ref kind, const char *holder, const char *what,
                 const char *hex, uint64_t size)
{
	(void)ud;
	(void)kind;
	(void)holder;
	(void)size;
	if (!what || !hex || strlen(hex) != 64)
		__builtin_trap();
	for (size_t i = 0; i < 64; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
			__builtin_trap();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static const enum kiln_image_ref kinds[] = {KILN_IMAGE_REF_CACHE, KILN_IMAGE_REF_LOCK,
	                                            KILN_IMAGE_REF_BASE};
	char *text = xstrndup((const char *)data + 1, size - 1);
	int r = kiln_image_refs_parse(kinds[data[0] % 3], text, "fuzz", check, NULL);
	if (r != 0 && r != -EBADMSG)
		__builtin_trap();
	free(text);
	return 0;
}
