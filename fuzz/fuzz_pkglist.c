/* libFuzzer target: the image pipeline's line parsers — package lists (lock
 * files and base records, read back from the state directory, and
 * dpkg-query's output from the image), kiln_split_fields, and the tree
 * listings compared by `kiln build --verify`.
 *
 * Input: one flag byte (bit 0: want_file), then text; for the tree diff the
 * text is split at its first NUL into two listings. A parsed list has every
 * field non-empty and free of spaces and newlines; a refused one leaves
 * *ret untouched; fields always lie inside the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/internal.h"
#include "util/alloc.h"
#include "util/parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_field(const char *s)
{
	if (!s || !*s || strpbrk(s, " \n"))
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool want_file = data[0] & 1;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;

	struct kiln_span f[6], rest;
	size_t n = kiln_split_fields(text, len, f, 6, &rest);
	for (size_t i = 0; i < n; i++)
		if (f[i].p < text || f[i].p + f[i].len > text + len || f[i].len == 0 ||
		    memchr(f[i].p, ' ', f[i].len))
			__builtin_trap();
	if (rest.p < text || rest.p + rest.len != text + len)
		__builtin_trap();

	char *s = xstrndup(text, len); /* stops at a NUL, like the files read */
	struct kiln_pkglist l = {(struct kiln_pkg *)&l, 12345};
	if (kiln_image_pkglist_parse(s, want_file, &l, NULL) == 0) {
		for (size_t i = 0; i < l.n; i++) {
			check_field(l.v[i].name);
			check_field(l.v[i].version);
			check_field(l.v[i].arch);
			check_field(l.v[i].sha256);
			if (want_file)
				check_field(l.v[i].file);
			else if (l.v[i].file)
				__builtin_trap();
		}
		kiln_image_pkglist_clear(&l);
	} else if (l.n != 12345) {
		__builtin_trap();
	}

	const char *nul = memchr(text, '\0', len);
	char *b = nul ? xstrndup(nul + 1, len - (size_t)(nul - text) - 1) : NULL;
	free(kiln_image_tree_diff(s, b, 8));
	free(kiln_image_tree_diff(s, s, 8));
	free(b);
	free(s);
	return 0;
}
