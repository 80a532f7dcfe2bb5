/* util/fs.h — file I/O and path operations that stay inside a directory.
 *
 * Everything that writes into a tree kiln does not fully trust (a user's
 * output directory, a build root) resolves paths with openat2(2) and
 * RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS under a directory fd (STYLE.md §8):
 * a symlink planted in the tree — absolute or with "..", pointing at /etc on
 * the host — resolves inside the tree instead of escaping it (the class of
 * runc CVE-2019-5736 / CVE-2024-21626). Final components are replaced by
 * rename, never followed. Writes are atomic: temp name, fsync, rename. */
#pragma once

#include <stddef.h>
#include <stdlib.h>
#include <sys/types.h>

#include "util/error.h"
#include "util/macros.h"

/* Reads all of fd, failing with -EFBIG past max bytes. *ret is NUL-terminated. */
int kiln_read_fd(int fd, size_t max, char **ret, size_t *ret_len, struct kiln_error **err);
/* path "-" reads stdin. Errors name the path. */
int kiln_read_file(const char *path, size_t max, char **ret, size_t *ret_len,
                   struct kiln_error **err);

/* write(2) until all of data is written (EINTR retried); 0 or -errno. */
int kiln_write_all(int fd, const void *data, size_t len);
/* openat2(rootfd, path, flags, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS); -errno. */
int kiln_open_in_root(int rootfd, const char *path, int flags, mode_t mode);
/* Creates every directory of relpath under rootfd (like mkdir -p) and returns
 * an O_DIRECTORY fd for it, or -errno. */
int kiln_mkdir_p_in_root(int rootfd, const char *relpath, mode_t mode);
/* Writes data as dirfd/name atomically with the given mode (not umasked). */
int kiln_write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len,
                              mode_t mode);
/* Writes relpath under rootfd: parents created (0755), file replaced atomically
 * (an existing symlink at relpath is replaced, not followed). */
int kiln_write_file_in_root(int rootfd, const char *relpath, const void *data, size_t len,
                            mode_t mode);

/* rm -rf by directory fds (util/walk.h): never follows a symlink (one planted
 * in a build tree would otherwise delete host files), never descends into a
 * file system mounted below path, and removes trees deeper than PATH_MAX
 * (which a build step can make). 0 when path is gone (or never was); -errno
 * otherwise. */
int kiln_rmtree(const char *path);
/* Cleanup for a scratch path: removes the tree, then frees the string. */
static inline void kiln_rmtreep(char **p)
{
	if (*p) {
		kiln_rmtree(*p);
		free(*p);
	}
}
#define _cleanup_rmtree_ _cleanup_(kiln_rmtreep)
