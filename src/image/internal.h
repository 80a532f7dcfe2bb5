/* image/internal.h — helpers shared by the pipeline's files (not public). */
#pragma once

#include <stdbool.h>
#include <stdlib.h>
#include <sys/types.h>

#include "image/image.h"
#include "sandbox/sandbox.h"
#include "util/buf.h"
#include "util/fs.h"

/* One command in the sandbox. */
struct kiln_image_run {
	const char *what;          /* for messages: "fetch", "step 3 (RUN make)" */
	const char *const *layers; /* NULL: the host's / read-only (host tools) */
	size_t n_layers;
	const char *upper; /* writable overlay upper, or NULL */
	const struct kiln_sandbox_bind *binds;
	size_t n_binds;
	bool network; /* host network: the fetch and bootstrap phases only */
	const char *const *argv;
	const char *const *env;
	size_t n_env;
	uid_t uid;
	gid_t gid;
	const char *workdir;
	unsigned timeout_s;
	unsigned warning_s; /* 0: none */
	int64_t epoch;
	struct kiln_buf *capture; /* stdout collected here instead of the log */
	struct kiln_buf *errors;  /* "E: ..." lines of stderr collected here */
};

/* Runs r; a non-zero exit, a signal, a timeout or a cancel is an error
 * naming r->what (-ECANCELED, -ETIME for the latter two). */
int kiln_image_sandbox(const struct kiln_image_hooks *h, const struct kiln_image_run *r,
                       struct kiln_error **err);
/* Runs a trusted host tool on files kiln wrote itself. */
int kiln_image_host_cmd(const struct kiln_image_hooks *h, const char *const *argv,
                        const char *const *env, struct kiln_buf *capture, struct kiln_error **err);
void kiln_image_logf(const struct kiln_image_hooks *h, const char *fmt, ...) _printf_(2, 3);
/* 32 random hex digits: names of build and setup scratch directories. */
char *kiln_image_random_id(void);
/* mkdir owned by the sandbox's root (host uid/gid 100000), mode 0755. */
int kiln_image_mkdir_sandbox(const char *path, struct kiln_error **err);

/* cache.c */
int kiln_image_cache_record(const char *state_dir, const struct kiln_image_result *res,
                            struct kiln_error **err);
/* The listing of kiln_image_result.tree for the tree at root. */
char *kiln_image_tree_list(const char *root);

#define KILN_IMAGE_ID_BASE 100000u
/* The base tree's fixed SOURCE_DATE_EPOCH (2020-01-01): bases are shared by
 * recipes with different epochs; every build clamps again to its own. */
#define KILN_BASE_EPOCH INT64_C(1577836800)
