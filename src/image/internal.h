/* image/internal.h — helpers shared by the pipeline's files (not public). */
#pragma once

#include <stdbool.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>

#include "image/image.h"
#include "sandbox/sandbox.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/outdir.h"
#include "util/tail.h"

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
	unsigned warning_s;    /* 0: none */
	uint64_t memory_bytes; /* the recipe's resources.memory_mb; 0: the sandbox's default */
	double cpus;           /* the recipe's resources.cpus; 0: the sandbox's default */
	int64_t epoch;
	struct kiln_buf *capture; /* stdout collected here instead of the log */
	struct kiln_buf *errors;  /* "E: ..." lines of stderr collected here */
};

/* Runs r; a non-zero exit, a signal, a timeout or a cancel is an error
 * naming r->what, of the sandbox's kind: USER (the command failed), LIMIT
 * (its timeout — code ETIME — or an OOM kill), CANCELLED; a sandbox that
 * could not run it is SYSTEM. */
int kiln_image_sandbox(const struct kiln_image_hooks *h, const struct kiln_image_run *r,
                       struct kiln_error **err);
/* Whether e is kiln_image_sandbox()'s timeout (not another limit). */
bool kiln_image_timed_out(const struct kiln_error *e);
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

/* ---- one build: its context, shared by the pipeline's files ------------- */

/* One package: "name version arch sha256 [file]" (file: the .deb's name in
 * the fetch directory, lock entries only). */
struct kiln_pkg {
	char *name, *version, *arch, *sha256, *file;
};

struct kiln_pkglist {
	struct kiln_pkg *v;
	size_t n;
};

/* Everything one kiln_image_build holds, owned by build.c's driver (set up
 * before the first phase, released by build_clear) and read or filled by the
 * phases in packages.c, steps.c, hygiene.c and outputs.c. */
struct build {
	/* What was asked: the caller's options and recipe (not owned), and the
	 * hooks the sandbox runs get (the caller's log, with the warning routed
	 * through the build so that it fires once). */
	const struct kiln_image_build_opts *o;
	const struct kiln_recipe *r;
	struct kiln_image_hooks hooks;
	/* The end of the current step's output, for its error (steps.c). */
	struct kiln_tail tail;
	/* The base's distribution backend (image/backend.h): the phases that
	 * speak a package manager go through it. */
	const struct kiln_image_backend *be;

	/* The base: its root tree (a lower layer of every run) and digest. */
	char *base_tree;
	char base_digest[KILN_SHA256_HEX_LEN + 1];
	char build_key[KILN_SHA256_HEX_LEN + 1];

	/* Scratch under state_dir/builds/<id> (0700), removed with the build:
	 * the fetch directory, the merged root, the extracted context (NULL
	 * without one), and `layer`: a tmpfs of resources.disk_mb mounted
	 * nosuid,nodev in this thread's private mount namespace, holding the
	 * image's upper layer and the overlayfs workdirs (build.c says why).
	 * lock_fd holds the flock that tells the stale-scratch cleanup this
	 * build is alive. */
	char *scratch, *layer, *upper, *debs, *merged, *work, *context;
	int lock_fd;
	bool layer_mounted; /* layer is mounted (in this thread's namespace) */
	bool mounted;       /* merged is mounted (in this thread's namespace) */
	int rootfd;         /* O_DIRECTORY fd of merged once mounted, else -1 */

	/* Packages: the lock (what fetch resolved and verified, what install
	 * takes) and what the finished image has installed (for the SBOM). */
	struct kiln_pkglist lock;
	struct kiln_pkglist installed;

	/* Time and progress: the build's start (monotonic for its limit, wall
	 * clock for mtime clamping), whether the warning fired, the "[i/n]"
	 * counter (total derived from the phase table). */
	struct timespec start;
	int64_t start_wall;
	bool warned;
	unsigned step, total;

	/* Step state carried from one step to the next: ENV (plus HOME and the
	 * image's TZ), USER, WORKDIR. */
	char **env;
	size_t n_env;
	uid_t uid;
	gid_t gid;
	char *workdir;

	/* Hygiene and outputs: files found leaking the build's date/host/id,
	 * the squashfs (in out_dir, or in scratch when only the ISO wants it),
	 * and the result handed to the caller. */
	size_t leaks;
	unsigned healthcheck_attempts; /* the attempt that passed; 0: no healthcheck ran */
	char *squashfs;
	struct kiln_outdir out; /* opts.out_dir, every artifact written through it */
	struct kiln_image_result *res;
};

/* build.c: the context's services for the phases. */
/* The "[i/n]" total of b: the sum of the progress lines of every phase b
 * wants, from the phase table. */
unsigned kiln_image_progress_total(const struct build *b);
double kiln_image_elapsed_s(const struct build *b);
/* Counts and reports the next "[i/n]" line; a phase calls it as many times
 * as its row in the phase table says. */
void kiln_image_progress(struct build *b, const char *fmt, ...) _printf_(2, 3);
bool kiln_image_cancelled(const struct build *b);
/* Whole seconds, rounded up (x >= 0). */
unsigned kiln_image_secs_up(double x);
/* Runs r with the time left: the step's own limit (0: none) or what remains
 * of the build's, whichever is shorter; the build's warning fires inside it.
 * A run with an upper layer clamps it first (hygiene.c). */
int kiln_image_run_timed(struct build *b, struct kiln_image_run *r, unsigned step_limit,
                         struct kiln_error **err);
/* `sh -c script kiln extra_args...` over the image (base + upper) as root. */
int kiln_image_script(struct build *b, const char *what, const char *script,
                      const char *const *extra_args, const struct kiln_sandbox_bind *binds,
                      size_t n_binds, struct kiln_buf *capture, unsigned step_limit,
                      struct kiln_error **err);
/* Mounts the merged root (base + upper) in a private mount namespace of the
 * calling thread and opens b->rootfd. */
int kiln_image_mount_merged(struct build *b, struct kiln_error **err);

/* packages.c: package lists, fetch, lock, stage, install, list installed. */
/* Writes data as the file at path (a directory kiln owns: locks, pacman's
 * configuration) atomically. */
int kiln_image_write_text(const char *path, const char *data, size_t len, mode_t mode,
                          struct kiln_error **err);
void kiln_image_pkglist_clear(struct kiln_pkglist *l);
/* Parses "name version arch sha256 [file]" lines (file required when
 * want_file); fields are separated by single spaces, empty lines skipped.
 * *ret is set only on success. */
int kiln_image_pkglist_parse(const char *text, bool want_file, struct kiln_pkglist *ret,
                             struct kiln_error **err);
/* Scratch directory recording the initrds the install generated. */
char *kiln_image_initrd_record_dir(const struct build *b);
/* The lock file of b's base and packages (state_dir/locks/<digest>.lock). */
char *kiln_image_lock_path(const struct build *b);
/* Every package of l is in the store. */
bool kiln_image_lock_warm(const struct build *b, const struct kiln_pkglist *l);
/* Links the locked packages from the store into dir under their file names. */
int kiln_image_stage_lock(struct build *b, const char *dir, struct kiln_error **err);
/* Fills b->installed from "name version arch" lines, with each package's
 * digest from the lock, else the base's record, else "unknown". */
void kiln_image_installed_from(struct build *b, const char *text);
int kiln_image_phase_fetch(struct build *b, struct kiln_error **err);
int kiln_image_phase_install(struct build *b, struct kiln_error **err);
int kiln_image_phase_list_installed(struct build *b, struct kiln_error **err);

/* steps.c: overlays, context, the recipe's steps, time zone, locale,
 * healthcheck. */
/* Sets (or replaces) k=v in the steps' environment. */
void kiln_image_env_set(struct build *b, const char *k, const char *v);
int kiln_image_phase_overlays(struct build *b, struct kiln_error **err);
int kiln_image_phase_context(struct build *b, struct kiln_error **err);
int kiln_image_phase_timezone(struct build *b, struct kiln_error **err);
int kiln_image_phase_locale(struct build *b, struct kiln_error **err);
int kiln_image_phase_steps(struct build *b, struct kiln_error **err);
int kiln_image_phase_healthcheck(struct build *b, struct kiln_error **err);

/* hygiene.c: mtime clamping, the leak scan, initramfs repack, normalize. */
int kiln_image_clamp_tree(struct build *b, const char *dir, struct kiln_error **err);
int kiln_image_clamp_upper(struct build *b, struct kiln_error **err);
void kiln_image_scan_leaks(struct build *b);
int kiln_image_phase_initramfs(struct build *b, struct kiln_error **err);
int kiln_image_phase_normalize(struct build *b, struct kiln_error **err);

/* outputs.c: tar, squashfs and ISO hand-off to emit.c, SBOM, manifest, the
 * artifact list and the cache record. */
int kiln_image_phase_tar(struct build *b, struct kiln_error **err);
int kiln_image_phase_squashfs(struct build *b, struct kiln_error **err);
int kiln_image_phase_ext4(struct build *b, struct kiln_error **err);
int kiln_image_phase_oci(struct build *b, struct kiln_error **err);
int kiln_image_phase_iso(struct build *b, struct kiln_error **err);
int kiln_image_phase_sbom(struct build *b, struct kiln_error **err);
int kiln_image_phase_manifest(struct build *b, struct kiln_error **err);
int kiln_image_phase_record(struct build *b, struct kiln_error **err);

#define KILN_IMAGE_ID_BASE 100000u
/* The base tree's fixed SOURCE_DATE_EPOCH (2020-01-01): bases are shared by
 * recipes with different epochs; every build clamps again to its own. */
#define KILN_BASE_EPOCH INT64_C(1577836800)
