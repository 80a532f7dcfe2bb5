/* store/backup.h — backups of the database (docs/operations.md).
 *
 * Owns: a consistent copy of a live database in a directory, its manifest,
 * the list and retention of those copies, restoring one into a database and
 * the restore test. SQLite is copied with VACUUM INTO (a read transaction:
 * one consistent snapshot while writers go on); PostgreSQL with
 * `pg_dump -Fc` on a snapshot exported by a REPEATABLE READ transaction, in
 * which the manifest's row counts are taken too, so they describe exactly
 * the rows in the dump.
 *
 * A backup is two files in its directory, named by its UTC time:
 *   kiln-20261201T020000Z.sqlite | .pgdump   the dump
 *   kiln-20261201T020000Z.json               the manifest: kiln version,
 *       backend, schema version, rows per table, sha256 and size of the dump
 * Both are written to a temp name, fsynced and renamed, the manifest last:
 * a backup without its manifest is unfinished and never listed.
 *
 * Must not: know kiln's tables (the catalog says which tables there are;
 * the caller's check callback runs kiln's migrations). The database alone:
 * the content-addressed store is not part of a backup. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"
#include "util/error.h"

struct kiln_backup_table {
	char *name;
	int64_t rows;
};

struct kiln_backup {
	char *manifest_path; /* DIR/kiln-<time>.json */
	char *dump_path;     /* DIR/kiln-<time>.sqlite or .pgdump */
	char *kiln_version;
	char *backend; /* "sqlite" or "postgresql" */
	int schema_version;
	int64_t created_us; /* from the name: what retention goes by */
	char sha256[65];
	uint64_t size;
	struct kiln_backup_table *tables;
	size_t n_tables;
};

struct kiln_backup *kiln_backup_free(struct kiln_backup *b);
static inline void kiln_backup_freep(struct kiln_backup **b)
{
	kiln_backup_free(*b);
}
void kiln_backup_list_free(struct kiln_backup **v, size_t n);

/* Backs up the database at url into dir (created 0700 if missing). The
 * manifest's kiln_version is version. */
int kiln_backup_create(const char *url, const char *dir, const char *version,
                       struct kiln_backup **ret, struct kiln_error **err);

/* Reads a backup by its manifest or its dump's path and checks it: the
 * manifest parses, the dump exists with the manifest's size and sha256.
 * -EBADMSG when they do not match (a corrupted or truncated backup). */
int kiln_backup_load(const char *path, struct kiln_backup **ret, struct kiln_error **err);

/* A manifest's text (the parser of kiln_backup_load; fuzz/fuzz_backup_manifest.c):
 * -EBADMSG unless it is a well-formed kiln-backup-1 manifest; manifest_path
 * names it in errors and gives the backup its time and its dump's path. */
int kiln_backup_manifest_parse(const char *text, size_t len, const char *manifest_path,
                               struct kiln_backup **ret, struct kiln_error **err);

/* The backups in dir (complete ones: manifest present), oldest first. A
 * manifest that does not parse is skipped. Hashes are not checked. */
int kiln_backup_list(const char *dir, struct kiln_backup ***ret, size_t *ret_n,
                     struct kiln_error **err);

/* Removes the backups older than keep_days before now_us, never the newest.
 * *ret_removed: how many. */
int kiln_backup_prune(const char *dir, unsigned keep_days, int64_t now_us, size_t *ret_removed,
                      struct kiln_error **err);

/* Restores b (loaded, so checked) into the database at url, which must be of
 * b's backend. A database with any table is refused (-EEXIST) unless force;
 * so is a PostgreSQL database with other sessions connected (a live server).
 * With force, the database's content is replaced as one transaction. */
int kiln_backup_restore(const struct kiln_backup *b, const char *url, bool force,
                        struct kiln_error **err);

/* The restore test: restores b into a scratch database (a temp SQLite file;
 * a new PostgreSQL database next to the one at url — url is needed for
 * PostgreSQL only), runs the backend's integrity checks, compares the row
 * count of every table with the manifest, then calls check (kiln's
 * migrations) on it; the scratch database is removed in every case. */
int kiln_backup_verify(const struct kiln_backup *b, const char *url,
                       int (*check)(struct kiln_db *db, struct kiln_error **err),
                       struct kiln_error **err);
