/* util/passwd.c — lookups in passwd(5) and group(5) text (see passwd.h). */
#include "util/passwd.h"

#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/macros.h"
#include "util/parse.h"

bool kiln_passwd_lookup(const char *db, const char *name, int *id, int *gid, char **home)
{
	size_t nl = strlen(name);
	if (nl == 0 || strchr(name, ':') || strchr(name, '\n'))
		return false;
	for (const char *line = db; line && *line;) {
		const char *end = strchrnul(line, '\n');
		if ((size_t)(end - line) > nl && strncmp(line, name, nl) == 0 && line[nl] == ':') {
			_cleanup_free_ char *f = xstrndup(line, (size_t)(end - line));
			char *fields[7] = {0};
			size_t n = 0;
			for (char *p = f, *tok; n < ELEMENTSOF(fields) && (tok = strsep(&p, ":"));)
				fields[n++] = tok;
			int i, g = 0;
			if (n < 3 || kiln_parse_int(fields[2], 0, 65535, &i) < 0)
				return false;
			if (gid && (n < 4 || kiln_parse_int(fields[3], 0, 65535, &g) < 0))
				return false;
			*id = i;
			if (gid)
				*gid = g;
			if (home && n >= 6 && fields[5][0] == '/')
				*home = xstrdup(fields[5]);
			return true;
		}
		line = *end ? end + 1 : NULL;
	}
	return false;
}
