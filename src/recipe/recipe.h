/* recipe/recipe.h — recipe format v1: strict parsing, validation, identity.
 *
 * Owns: turning recipe JSON into a validated, normalized struct kiln_recipe
 * (every error names its JSON path), the canonical forms and hashes that
 * identify a build (config_hash, source_date_epoch, build_key), and the
 * archiso profile export. Must not: touch the network, run commands, or
 * print. Format reference: docs/recipe.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "util/sha256.h"

/* The one recipe size limit (issue 14: 16 MiB validated locally, then a
 * 413 from the server's 1 MiB body limit): kiln validate, build, submit and
 * the server's JSON body limit (cli/serve.c) are this. Larger content goes
 * in a context archive (COPY). */
#define KILN_RECIPE_MAX_BYTES (1u << 20)
/* At most this many of a recipe's errors are listed (one a line), then
 * "(and N more errors)". */
#define KILN_RECIPE_MAX_ERRORS 20
#define KILN_RECIPE_MAX_FILES 10000
#define KILN_RECIPE_MAX_PACKAGES 4096
#define KILN_RECIPE_MAX_OVERLAYS 1000
#define KILN_RECIPE_MAX_STEPS 1000
#define KILN_RECIPE_MAX_STEP_BYTES 65536
#define KILN_RECIPE_MAX_PATH 4096
#define KILN_RECIPE_MAX_DEPTH 32
#define KILN_RECIPE_MAX_EPOCH INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

#define KILN_DEFAULT_BASE "debian/bookworm"
/* Debian's busybox-static alone: no package manager, no kernel */
#define KILN_BASE_BUSYBOX "busybox"
/* Arch Linux: pacman, from the mirrors given to kiln setup */
#define KILN_BASE_ARCHLINUX "archlinux"
#define KILN_DEFAULT_LOCALE "en_US.UTF-8"
#define KILN_DEFAULT_TIMEZONE "UTC"
#define KILN_DEFAULT_MODE "0644"

enum kiln_output {
	KILN_OUTPUT_TAR = 1u << 0,
	KILN_OUTPUT_SQUASHFS = 1u << 1,
	KILN_OUTPUT_ISO = 1u << 2,
	KILN_OUTPUT_EXT4 = 1u << 3,
	KILN_OUTPUT_OCI = 1u << 4,
	KILN_OUTPUT_LAST = KILN_OUTPUT_OCI, /* the build key lists outputs in bit order */
};

enum kiln_step_op {
	KILN_STEP_RUN,
	KILN_STEP_ENV,
	KILN_STEP_USER,
	KILN_STEP_WORKDIR,
	KILN_STEP_COPY,
};

struct kiln_step {
	enum kiln_step_op op;
	char *text; /* normalized "OP ARGS" as it enters the build_key */
	char *arg;  /* RUN: the shell command; USER: the user; WORKDIR: the path; ENV: key */
	char *arg2; /* ENV: value; COPY: destination (arg is the source) */
};

struct kiln_file {
	char *path; /* stripped, validated absolute path */
	size_t path_len;
	char *raw_path; /* as given: the sort key */
	size_t raw_path_len;
	char *content; /* may contain NUL bytes */
	size_t content_len;
	char mode_str[5]; /* as given (3-4 octal digits) or "0644" */
	unsigned mode;
	char content_sha256[KILN_SHA256_HEX_LEN + 1];
};

struct kiln_overlay {
	char *name; /* stripped */
	size_t name_len;
	char *raw_name; /* as given: the sort key */
	size_t raw_name_len;
	struct kiln_file *files; /* sorted by raw_path, stable */
	size_t n_files;
};

struct kiln_healthcheck {
	char *cmd;
	int64_t interval_s, timeout_s, start_period_s, retries;
};

/* resources.disk_mb: the default, the largest a recipe may ask for, and the
 * operator's maximum unless they choose one (`kiln serve --max-disk-mb`,
 * kiln_image_build_opts.max_disk_mb): the upper layer is a tmpfs of that
 * size, i.e. memory (docs/recipe.md, "Resources"). */
#define KILN_DISK_MB_DEFAULT 4096
#define KILN_DISK_MB_MAX 1048576
#define KILN_DISK_MB_OPERATOR_DEFAULT 16384

struct kiln_resources {
	int64_t memory_mb, cpus, timeout_s, warning_s, step_timeout_s;
	int64_t disk_mb; /* everything the build's commands write (the upper layer) */
};

struct kiln_recipe {
	char *name; /* NULL when absent */
	char *base;
	char **packages; /* distinct, sorted by code point */
	size_t n_packages;
	struct kiln_overlay *overlays; /* sorted by raw_name, stable */
	size_t n_overlays;
	size_t n_files; /* across all overlays */
	char *locale;
	char *timezone;
	struct kiln_step *steps;
	size_t n_steps;
	unsigned outputs; /* enum kiln_output bits */
	struct kiln_resources resources;
	struct kiln_healthcheck *healthcheck; /* NULL when absent */
	bool epoch_given;
	int64_t source_date_epoch; /* given or derived from config_hash */
	char config_hash[KILN_SHA256_HEX_LEN + 1];
};

/* Parses and validates buf[0..len). On failure the message starts with the
 * JSON path of the offending value ("overlays[0].files[1].path: must be
 * absolute") or the line/column of a syntax error. */
/* A package name pacman accepts (makepkg's rules): letters, digits and
 * @ . _ + -, 1 to 255 characters, not starting with - or . */
bool kiln_recipe_pacman_name_ok(const char *s, size_t n);

int kiln_recipe_parse(const char *buf, size_t len, struct kiln_recipe **ret,
                      struct kiln_error **err);
struct kiln_recipe *kiln_recipe_free(struct kiln_recipe *r);
static inline void kiln_recipe_freep(struct kiln_recipe **r)
{
	kiln_recipe_free(*r);
}
#define _cleanup_recipe_ _cleanup_(kiln_recipe_freep)

/* The canonical JSON whose SHA-256 is config_hash (docs/recipe.md#identity). */
char *kiln_recipe_config_canonical(const struct kiln_recipe *r, size_t *ret_len);
/* 1577836800 + (first 16 hex digits of config_hash) mod 347155199. */
int64_t kiln_recipe_derive_epoch(const char config_hash[KILN_SHA256_HEX_LEN + 1]);

/* Inputs to the build key beyond the recipe itself. Any may be NULL. */
struct kiln_build_inputs {
	const char *context_sha256; /* digest of the context archive */
	const char *tools;          /* host tool versions that shape the output */
};
char *kiln_recipe_build_canonical(const struct kiln_recipe *r, const struct kiln_build_inputs *in,
                                  size_t *ret_len);
void kiln_recipe_build_key(const struct kiln_recipe *r, const struct kiln_build_inputs *in,
                           char ret[KILN_SHA256_HEX_LEN + 1]);

/* h as canonical JSON (keys sorted), or null: in the build key and in a
 * build's manifest.json. */
struct kiln_buf;
void kiln_recipe_put_healthcheck(struct kiln_buf *b, const struct kiln_healthcheck *h);

/* Names of output kinds, in canonical order. */
const char *kiln_output_name(enum kiln_output o);

/* Writes an archiso profile for r into dir (created if missing). Every path
 * is resolved inside dir: symlinks already there cannot redirect writes. */
int kiln_recipe_export_archiso(const struct kiln_recipe *r, const char *dir,
                               struct kiln_error **err);
