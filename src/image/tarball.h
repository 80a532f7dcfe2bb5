/* image/tarball.h — the deterministic rootfs tarball (recipe output "tar").
 *
 * Owns: turning a directory tree into a tar (optionally gzip) stream whose
 * bytes depend only on the tree's names, contents, modes, link structure and
 * ownership — never on inode numbers, creation order, readdir order, atimes,
 * ctimes, mtimes later than SOURCE_DATE_EPOCH, the build host's user names or
 * the time of writing:
 *  - entries in the order of GNU tar --sort=name (depth first, siblings
 *    sorted by byte value), names "./" and "./path", directories with a
 *    trailing '/';
 *  - GNU tar format: one mtime field per header, no atime/ctime, no pax
 *    records of any kind, long names through ././@LongLink;
 *  - mtime = min(mtime, SOURCE_DATE_EPOCH), whole seconds;
 *  - numeric owners only (no user/group names), mapped back from the
 *    sandbox's id range: host id base+n becomes n; an id outside the range
 *    is an error naming the file (it was written by something outside the
 *    sandbox and would otherwise leak a host id into the image);
 *  - hardlinks: the first path in that order carries the data, later ones
 *    are links to it;
 *  - no xattrs, ACLs or file flags (file capabilities are not carried);
 *    sockets are skipped, as GNU tar does;
 *  - gzip with `gzip -n` semantics: no file name, mtime 0, fixed level 9.
 * Must not: follow a symlink anywhere (the tree is walked with O_NOFOLLOW
 * from rootfd), modify the tree, or print. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

#define KILN_TARBALL_DEFAULT_ID_BASE 100000u /* sandbox root on the host (DESIGN.md) */
#define KILN_TARBALL_DEFAULT_ID_COUNT 65536u
#define KILN_TARBALL_MAX_DEPTH 256

struct kiln_tarball_opts {
	int64_t source_date_epoch; /* >= 0 */
	uint32_t id_base;          /* host uid/gid of the image's id 0 */
	uint32_t id_count;         /* size of the mapped range */
	bool gzip;
};

/* Fills the defaults for a tree written by the sandbox: ids from
 * KILN_TARBALL_DEFAULT_ID_BASE, 65536 of them, no compression. */
void kiln_tarball_opts_default(struct kiln_tarball_opts *ret, int64_t source_date_epoch);

/* Writes the tree under rootfd (a directory fd; the root itself becomes
 * "./") as a tar stream to outfd. Errors name the path ("./usr/bin/x: ...").
 * On failure, outfd has received a partial stream the caller must discard
 * (write it to a temp name and rename on success). */
int kiln_tarball_write(int rootfd, int outfd, const struct kiln_tarball_opts *opts,
                       struct kiln_error **err);
