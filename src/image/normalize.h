/* image/normalize.h — strip non-determinism from an assembled root tree.
 *
 * Owns: the reproducibility checklist of DESIGN.md "Reference facts" as one
 * table of rules applied to a root tree through its directory fd — machine
 * ids emptied or removed, caches, package lists, logs, backup files, ssh host
 * keys, bootstrap-written resolv.conf/hostname and __pycache__ removed or
 * emptied — and then every mtime clamped to SOURCE_DATE_EPOCH
 * (min(mtime, epoch), symlinks included, never through them).
 * Must not: follow any symlink (rule directories reached through one are
 * skipped; the tree is walked with O_NOFOLLOW from rootfd), touch a path the
 * recipe wrote on purpose (the keep list), run tools, or print.
 * The list with reasons: docs/image.md. */
#pragma once

#include <stdint.h>

#include "util/error.h"

struct kiln_normalize_stats {
	uint64_t removed; /* files and directory trees deleted */
	uint64_t emptied; /* files truncated to zero bytes */
	uint64_t clamped; /* entries whose mtime was lowered to the epoch */
};

/* Applies the checklist to the tree under rootfd, then clamps mtimes.
 * keep: NULL or a NULL-terminated list of paths ("/etc/hostname"; leading
 * '/' optional) the recipe wrote itself (overlay files), which no rule
 * removes or empties. ret_stats may be NULL. Errors name the path. */
int kiln_normalize_tree(int rootfd, int64_t source_date_epoch, const char *const *keep,
                        struct kiln_normalize_stats *ret_stats, struct kiln_error **err);
