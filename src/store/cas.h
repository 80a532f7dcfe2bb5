/* store/cas.h — the content-addressed store: $STATE/cas/sha256/ab/abcdef...
 *
 * Owns: putting blobs (artifacts, .debs, base archives) into the store under
 * their SHA-256 and finding them again. Blobs are immutable once named: they
 * are written to a temp name, fsynced and renamed, so a crash never leaves a
 * half-written blob under a digest name. Must not: trust a caller's claimed
 * digest without hashing (kiln_cas_put_file hashes what it stores). */
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

/* Path of a blob (which may not exist). Caller frees. */
char *kiln_cas_path(const char *state_dir, const char *hex);
bool kiln_cas_has(const char *state_dir, const char *hex);
/* Copies path into the store (never a hardlink: the blob must not change with the source).
 * When expect_hex is non-NULL the content must hash to it (-EBADMSG
 * otherwise). Returns the digest in ret_hex (may be NULL). */
int kiln_cas_put_file(const char *state_dir, const char *path, const char *expect_hex,
                      char ret_hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size,
                      struct kiln_error **err);
