/* libFuzzer target: passwd(5)/group(5) lookups (kiln run --user NAME reads
 * these files from an untrusted image).
 *
 * Input: a name, a NUL byte, then the file's text. Any input must either
 * find nothing (and write nothing) or return ids in 0..65535 and a home
 * that is an absolute path from the matching line. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/passwd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	if (!nul)
		return 0;
	char *name = xstrndup((const char *)data, (size_t)(nul - data));
	char *db = xstrndup((const char *)nul + 1, size - (size_t)(nul - data) - 1);
	int id = -1, gid = -1;
	char *home = NULL;
	if (kiln_passwd_lookup(db, name, &id, &gid, &home)) {
		if (id < 0 || id > 65535 || gid < 0 || gid > 65535)
			__builtin_trap();
		if (home && (home[0] != '/' || !strstr(db, home)))
			__builtin_trap();
	} else if (id != -1 || gid != -1 || home) {
		__builtin_trap(); /* nothing is written on a miss */
	}
	int gid_only = -1;
	if (kiln_passwd_lookup(db, name, &gid_only, NULL, NULL) &&
	    (gid_only < 0 || gid_only > 65535))
		__builtin_trap();
	free(home);
	free(name);
	free(db);
	return 0;
}
