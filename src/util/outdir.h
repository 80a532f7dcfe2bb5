/* util/outdir.h — writing artifacts into an output directory.
 *
 * Owns: every write kiln makes into a user's output directory (`kiln build
 * -o DIR`, the cache answering a build, `kiln download`'s target). That
 * directory is not kiln's: another user may have planted names in it, and
 * kiln often runs as root. So:
 *   - the directory is opened once (O_DIRECTORY|O_NOFOLLOW: a symlink at
 *     its own name is refused) and everything after goes through that fd,
 *     never through a path that could be swapped;
 *   - each artifact is written under a fresh temporary name created with
 *     O_CREAT|O_EXCL|O_NOFOLLOW (a symlink planted at any name — the
 *     ".rootfs.tar.gz.tmp" of old kilns included — is never followed: the
 *     create fails and another name is tried), fsynced, then renamed over
 *     its final name with renameat on the same fd (rename replaces a
 *     planted symlink, it does not write through it);
 *   - a file kiln made elsewhere (its scratch, the store) is copied in —
 *     FICLONE reflink where the file systems allow, copy_file_range
 *     otherwise, read/write as the last resort — so the output directory may
 *     be on another file system than the state directory (tmpfs, a network
 *     mount) and never shares an inode with the content-addressed store
 *     (a hard link would let a write to the output corrupt a store blob).
 *
 * Must not: follow a symlink inside the directory, leave a temporary file
 * behind on failure, or expose a partial artifact under its final name. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "util/error.h"
#include "util/macros.h"

struct kiln_outdir {
	int fd;     /* O_DIRECTORY, or -1 when closed */
	char *path; /* for messages */
};

/* Opens (creating it 0755 if missing; its parent must exist) the output
 * directory at path. */
int kiln_outdir_open(const char *path, struct kiln_outdir *ret, struct kiln_error **err);
void kiln_outdir_close(struct kiln_outdir *d);
#define _cleanup_outdir_ _cleanup_(kiln_outdir_close)

/* An artifact being written: fd is the temporary file (O_RDWR|O_CLOEXEC: the
 * caller may read back what it wrote, e.g. to hash it from its own fd). */
struct kiln_outfile {
	int fd;
	char tmp[48];
};
#define KILN_OUTFILE_INIT                                                                          \
	{                                                                                          \
		-1, ""                                                                             \
	}

/* Creates a unique temporary file in d. */
int kiln_outdir_begin(const struct kiln_outdir *d, struct kiln_outfile *f, struct kiln_error **err);
/* Sets mode, fsyncs, renames the temporary file over name and closes it; on
 * failure the temporary file is removed. */
int kiln_outdir_commit(const struct kiln_outdir *d, struct kiln_outfile *f, const char *name,
                       mode_t mode, struct kiln_error **err);
/* Removes and closes an uncommitted file (no-op once committed or if never
 * begun). */
void kiln_outdir_abort(const struct kiln_outdir *d, struct kiln_outfile *f);

/* name := data, atomically. */
int kiln_outdir_write(const struct kiln_outdir *d, const char *name, const void *data, size_t len,
                      mode_t mode, struct kiln_error **err);
/* name := a copy of the whole of srcfd (read from offset 0), atomically:
 * reflink, else copy_file_range, else read/write. Never a hard link. */
int kiln_outdir_copy_fd(const struct kiln_outdir *d, const char *name, int srcfd, mode_t mode,
                        struct kiln_error **err);
/* kiln_outdir_copy_fd of the file at src (a path kiln owns). */
int kiln_outdir_copy_file(const struct kiln_outdir *d, const char *name, const char *src,
                          mode_t mode, struct kiln_error **err);
/* Moves src, a file kiln wrote in a directory of its own (the build's
 * scratch), to name: renamed when d is on the same file system, else copied
 * (and src removed). */
int kiln_outdir_adopt(const struct kiln_outdir *d, const char *name, const char *src, mode_t mode,
                      struct kiln_error **err);

/* Copies the whole of in (from its offset 0) to out: FICLONE, else
 * copy_file_range, else read/write. 0 or -errno. */
int kiln_copy_fd(int in, int out);
