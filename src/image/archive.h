/* image/archive.h — build-context archives: safe extraction and COPY.
 *
 * Owns: recognising a context archive by its magic bytes (tar, tar.gz, zip),
 * extracting it into a directory with every write resolved inside that
 * directory, refusing whatever could escape it or hurt the host (".."
 * components, absolute paths, links that leave the extracted set, device
 * nodes, FIFOs, sockets, setuid/setgid bits, archives over a size limit), and
 * copying one path of the extracted context into an image root (the COPY
 * step), resolved in-root on both sides.
 * Must not: follow a symlink out of either tree, trust any name, size, mode
 * or owner stored in the archive, print, or touch the network. Rules and
 * reasons: docs/image.md.
 *
 * The archive is the user's: a refusal is an error of kind USER (LIMIT for
 * a size or count limit); a system call kiln could not make stays SYSTEM. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/error.h"

#define KILN_ARCHIVE_DEFAULT_MAX_TOTAL (UINT64_C(1) << 30) /* 1 GiB of file data */
#define KILN_ARCHIVE_DEFAULT_MAX_ENTRIES UINT64_C(100000)
#define KILN_ARCHIVE_MAX_DEPTH 256 /* path components per entry */

enum kiln_archive_format {
	KILN_ARCHIVE_TAR,
	KILN_ARCHIVE_TAR_GZ,
	KILN_ARCHIVE_ZIP,
};

struct kiln_archive_limits {
	uint64_t max_total_bytes; /* sum of all file data actually written */
	uint64_t max_entry_bytes; /* one file's data */
	uint64_t max_entries;     /* headers read, of any type */
};

/* What one extraction wrote. */
struct kiln_archive_stats {
	enum kiln_archive_format format;
	uint64_t entries;
	uint64_t bytes;
};

/* The defaults: 1 GiB total and per entry, 100,000 entries. */
void kiln_archive_limits_default(struct kiln_archive_limits *ret);

/* "tar", "tar.gz" or "zip". */
const char *kiln_archive_format_name(enum kiln_archive_format f);

/* Recognises the format from the first bytes of an archive (at least 262 are
 * needed to see a tar's "ustar" magic). Anything else — including a gzip
 * stream, which is only recognised as tar.gz once extraction finds a tar in
 * it — is -EPROTONOSUPPORT with a message saying what was expected. */
int kiln_archive_detect(const void *head, size_t len, enum kiln_archive_format *ret,
                        struct kiln_error **err);

/* Extracts the archive in data[0..len) into destfd (a directory). limits may
 * be NULL for the defaults. Every refusal is an error naming the entry
 * ("entry \"../x\": ..."); extraction stops at the first one and leaves what
 * was already written in destfd, which the caller must discard. Files are
 * owned by the caller, with the archive's permission bits less setuid,
 * setgid and sticky; directories always get u+rwx; mtimes are not restored
 * (normalize clamps them). ret_stats may be NULL. */
int kiln_archive_extract_memory(const void *data, size_t len, int destfd,
                                const struct kiln_archive_limits *limits,
                                struct kiln_archive_stats *ret_stats, struct kiln_error **err);

/* Same, reading the archive from fd, which must be seekable (a regular file:
 * the context archive in the CAS). */
int kiln_archive_extract_fd(int fd, int destfd, const struct kiln_archive_limits *limits,
                            struct kiln_archive_stats *ret_stats, struct kiln_error **err);

/* The COPY step: copies src (resolved under src_root; may name a file or a
 * directory) to dst (resolved under dst_root), both with RESOLVE_IN_ROOT so a
 * symlink in either tree cannot lead out of it.
 *  - src a file: written to dst, or to dst/<basename of src> when dst ends
 *    with '/' or is an existing directory; an existing non-directory at the
 *    destination is replaced, never followed.
 *  - src a directory: its contents are merged into dst (created if missing),
 *    recursively; symlinks are copied as symlinks, hardlinks become copies.
 * Parents of dst are created (0755). Everything written is owned by uid:gid
 * (the sandbox's root on the host, so the image sees root) and keeps its
 * permission bits less setuid/setgid. Device nodes, FIFOs and sockets in src
 * are refused. Errors name the offending path. */
int kiln_archive_copy(int src_root, const char *src, int dst_root, const char *dst, uid_t uid,
                      gid_t gid, struct kiln_error **err);
