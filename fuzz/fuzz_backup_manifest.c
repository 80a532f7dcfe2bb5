/* libFuzzer target: a backup's manifest (store/backup.c), which `kiln backup
 * restore` and `verify` read from a backup directory before trusting the
 * dump it names. Any input is either refused or yields a backup whose dump
 * path is the manifest's own stem plus a known extension — a manifest must
 * never point restore at another file — with a 64-character sha256. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "store/backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char path[] = "/b/kiln-20261201T020000Z.json";
	struct kiln_backup *b = NULL;
	struct kiln_error *err = NULL;
	if (kiln_backup_manifest_parse((const char *)data, size, path, &b, &err) == 0) {
		if (strncmp(b->dump_path, "/b/kiln-20261201T020000Z.", 25) != 0 ||
		    strchr(b->dump_path + 25, '/') || strlen(b->sha256) != 64 || !b->created_us)
			__builtin_trap();
	} else if (!err) {
		__builtin_trap(); /* a refusal always says why */
	}
	kiln_backup_free(b);
	kiln_error_free(err);
	return 0;
}
