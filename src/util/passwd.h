/* util/passwd.h — lookups in passwd(5) and group(5) text.
 *
 * The text comes from an image, which kiln does not trust: lines of any
 * length or shape, missing fields, ids out of range. Nothing here follows
 * paths or reads files; callers read the file safely (kiln run uses
 * RESOLVE_IN_ROOT). */
#pragma once

#include <stdbool.h>

/* Finds the first line of db whose first field is name. Its third field
 * (the uid or gid, 0..65535) goes to *id; for passwd, *gid (if not NULL)
 * gets the fourth (primary group) and *home (if not NULL) a copy of the
 * sixth when it is an absolute path. False when there is no such line or
 * its ids are not numbers in range (nothing is written then). */
bool kiln_passwd_lookup(const char *db, const char *name, int *id, int *gid, char **home);
