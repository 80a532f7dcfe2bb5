/* util/walk.h — walking a directory tree by directory fds.
 *
 * Owns: the one tree walker of kiln (rmtree, mtime clamping, chown of the
 * context, the leak scan, tree listings, staging times). It replaces nftw(3),
 * which builds a path string per entry and fails on a tree deeper than
 * PATH_MAX — a tree a build step can make with `mkdir d && cd d` in a loop,
 * which then could not be clamped or removed and left its scratch behind
 * (issue 11 item 8). Here every entry is reached as (parent dirfd, name):
 * each directory is opened with openat(O_DIRECTORY|O_NOFOLLOW) under its
 * parent's fd, every entry is fstatat(AT_SYMLINK_NOFOLLOW)'d, so a symlink
 * planted in the tree is reported as a symlink and never followed, and no
 * path is ever handed to the kernel but the root's.
 *
 * At most KILN_WALK_MAX_OPEN directory fds are open at a time whatever the
 * depth: an ancestor's fd is closed while the walk is deeper than that, and
 * reopened on the way back up with openat(child, "..") — accepted only when
 * its device and inode are still the ones recorded on the way down, so a
 * directory moved away meanwhile ends the walk (-ESTALE) instead of leading
 * it outside the tree.
 *
 * Callback state travels in the void *ud argument: no globals, no
 * thread-locals, so concurrent walks (two builds in `kiln serve`) never share
 * anything.
 *
 * Must not: follow a symlink below the root, cross into another file system
 * (entries on another device than the root are skipped, like nftw's
 * FTW_MOUNT), or hold an fd per level. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#define KILN_WALK_MAX_OPEN 32

enum {
	/* Directories are reported after their contents, not before (rm -rf). */
	KILN_WALK_DEPTH = 1 << 0,
};

struct kiln_walk_entry {
	/* The entry is name under dirfd: use *at(dirfd, name, ...,
	 * AT_SYMLINK_NOFOLLOW) calls. For the root, dirfd and name are the
	 * caller's (dirfd, path). */
	int dirfd;
	const char *name;
	/* The path below the root, for messages and listings: "" for the root,
	 * "/etc/passwd" below it. It may be longer than PATH_MAX: never pass it
	 * to a system call. name, rel and st are valid during the call only. */
	const char *rel;
	size_t rel_len;
	const struct stat *st; /* lstat of the entry */
	size_t depth;          /* 0 for the root */
};

/* Return 0 to go on, KILN_WALK_SKIP (from a directory's pre-order call) to
 * skip its contents, a negative errno to end the walk with it. */
#define KILN_WALK_SKIP 1
typedef int (*kiln_walk_fn)(const struct kiln_walk_entry *e, void *ud);

/* Walks the tree at path (relative to dirfd, or absolute; may be a symlink
 * or a file, then only it is reported). Entries of a directory are reported
 * in the order readdir returns them. 0, -ENOENT when path does not exist, the
 * callback's negative return, or -errno of a failed open/stat (an entry
 * that vanished during the walk is skipped). */
int kiln_walk(int dirfd, const char *path, int flags, kiln_walk_fn fn, void *ud);
