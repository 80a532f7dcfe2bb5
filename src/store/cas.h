/* store/cas.h — the content-addressed store: $STATE/cas/sha256/ab/abcdef...
 *
 * Owns: putting blobs (artifacts, .debs, base archives) into the store under
 * their SHA-256 and finding them again. Blobs are immutable once named: they
 * are written to a temp name, fsynced and renamed, so a crash never leaves a
 * half-written blob under a digest name. Must not: trust a caller's claimed
 * digest without hashing (kiln_cas_put_file hashes what it stores), trust a
 * blob already in the store without the checks below, print (notices go to
 * the program's kiln_cas_set_notify), or delete a corrupt blob (it goes to
 * cas/quarantine/).
 *
 * What a blob's metadata means (docs/image.md, "The store"): kiln writes
 * every blob 0444, owned by root, with its mtime set to KILN_CAS_MTIME — an
 * instant no write can leave behind, since write(2) sets the mtime to now.
 * A blob whose size differs from the size its record names, or whose mtime
 * is not KILN_CAS_MTIME, has been written to since (or was stored by a kiln
 * before this rule) and is rehashed before it is trusted. Its atime is
 * kiln's "last used": set explicitly on every use (insert of an existing
 * blob, cache hit, download), read by gc; kiln's own hashing opens blobs
 * with O_NOATIME so that verifying the store does not make it all "used". */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"
#include "util/sha256.h"

/* Creates the state directory layout (cas/, bases/, builds/, logs/, locks/)
 * where it is missing: the state directory and its subdirectories 0700. */
int kiln_state_init(const char *state_dir, struct kiln_error **err);
/* kiln_state_init, then checks what other local users must never read: the
 * state directory (at most 0700) and the SQLite database with its -wal and
 * -shm files (at most 0600). A wider mode is narrowed, and *ret_notice says
 * what changed and why, one line per path (NULL when nothing did), for the
 * command to print. Refuses (-EPERM) a directory or database owned by
 * another uid. */
int kiln_state_secure(const char *state_dir, char **ret_notice, struct kiln_error **err);
/* The state directory: $KILN_STATE_DIR or /var/lib/kiln. Never NULL. */
const char *kiln_state_dir_default(void);

/* Makes every blob of this process live in dir/sha256/... instead of
 * STATE/cas/sha256/... (kiln serve --store: one store that several hosts
 * mount). Call once, before any thread starts. */
int kiln_cas_set_store(const char *dir, struct kiln_error **err);

/* Path of a blob (which may not exist). Caller frees. */
char *kiln_cas_path(const char *state_dir, const char *hex);
bool kiln_cas_has(const char *state_dir, const char *hex);
/* Copies path into the store (never a hardlink: the blob must not change with the source).
 * When expect_hex is non-NULL the content must hash to it (-EBADMSG
 * otherwise). Returns the digest in ret_hex (may be NULL). */
int kiln_cas_put_file(const char *state_dir, const char *path, const char *expect_hex,
                      char ret_hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size,
                      struct kiln_error **err);

#define KILN_CAS_MTIME 1 /* seconds since the epoch; nanoseconds 0 */
#define KILN_CAS_SIZE_UNKNOWN UINT64_MAX

/* Where the store's notices go (a corrupt blob replaced or quarantined):
 * one line without newline each. The program sets it once at start (cli/:
 * stderr); NULL drops them. */
void kiln_cas_set_notify(void (*fn)(void *ud, const char *msg), void *ud);

/* Opens blob hex for reading after checking it: when its size is not
 * expect_size (KILN_CAS_SIZE_UNKNOWN: any) or its mtime is not
 * KILN_CAS_MTIME it is rehashed; a blob that does not hash to its name (or
 * has the wrong size) is quarantined and -EBADMSG returned, with err saying
 * so; a good one is stamped again. A blob with more than one hard link
 * (an older kiln linked store blobs into output directories) is replaced by
 * a private copy, so that a write through the other name cannot reach the
 * store again. The blob is marked used. -ENOENT when it is absent. */
int kiln_cas_open_verified(const char *state_dir, const char *hex, uint64_t expect_size,
                           int *ret_fd, struct kiln_error **err);

/* The cheap part of kiln_cas_open_verified, for a hot path that must not
 * hash (the server's cache lookup): the blob exists, is a regular file and
 * has expect_size bytes. A blob changed in place without a change of size
 * is caught when it is served or copied, and by `kiln store verify`. */
bool kiln_cas_looks_intact(const char *state_dir, const char *hex, uint64_t expect_size);

/* Rehashes blob hex (never trusting its metadata): *ret_good whether it
 * hashes to its name, *ret_size what it holds. Does not mark it used. */
int kiln_cas_check(const char *state_dir, const char *hex, bool *ret_good, uint64_t *ret_size,
                   struct kiln_error **err);
/* Moves blob hex to cas/quarantine/<hex>.<unix seconds> (never deleted:
 * the operator decides). *ret_path (may be NULL) is where it went. */
int kiln_cas_quarantine(const char *state_dir, const char *hex, char **ret_path,
                        struct kiln_error **err);
/* Sets a good blob's mtime back to KILN_CAS_MTIME (after kiln_cas_check). */
int kiln_cas_stamp(const char *state_dir, const char *hex, struct kiln_error **err);
/* Marks blob hex used now. Best effort (a blob that went is no error). */
void kiln_cas_touch(const char *state_dir, const char *hex);
/* Removes blob hex (gc's deliberate removal). -ENOENT when absent. */
int kiln_cas_remove(const char *state_dir, const char *hex, struct kiln_error **err);

/* One entry of the store as kiln_cas_each sees it: a blob, or a temporary
 * file a killed writer left (temp: hex is then the blob it was for). */
struct kiln_cas_entry {
	char hex[KILN_SHA256_HEX_LEN + 1];
	const char *path;
	uint64_t size;
	int64_t used_us;  /* atime: last use (see above) */
	int64_t mtime_us; /* for a temp file: when it was last written */
	bool stamped;     /* mtime is KILN_CAS_MTIME */
	bool temp;
};
/* Calls fn for every entry under cas/sha256/, in no particular order;
 * stops at fn's first non-zero return and returns it. Names that are
 * neither a blob nor a temp file are skipped. */
int kiln_cas_each(const char *state_dir, int (*fn)(void *ud, const struct kiln_cas_entry *e),
                  void *ud, struct kiln_error **err);
