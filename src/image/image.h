/* image/image.h — the image pipeline: base bootstrap and recipe builds.
 *
 * Owns: `kiln setup` (mmdebstrap of a base inside the sandbox, stored
 * content-addressed), and a build's phases: fetch (the only networked
 * phase: resolve the package closure, download, verify against the index's
 * SHA-256, lock), install (offline, exactly the locked .debs), overlay
 * files, steps, normalize, and the outputs (tar, squashfs, ISO) with
 * manifest.json and an SPDX SBOM. Every command that touches the image runs
 * in sandbox/; host tools (mksquashfs, xorriso, grub-mkimage, mtools) only
 * ever read trees through the sandbox's id mapping or files kiln wrote.
 *
 * Must not: print (output goes through the hooks), contact any host but the
 * host's configured apt sources, or leave scratch behind. A build mounts
 * its merged root in a private mount namespace of the calling thread (see
 * kiln_image_build), so nothing is visible to the host and a killed kiln
 * leaves no mount. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "recipe/recipe.h"
#include "util/error.h"

struct kiln_image_hooks {
	/* Build output: kiln's own "==> ..." lines and every command's stdout and
	 * stderr, as produced. data is not NUL-terminated. */
	void (*log)(void *userdata, const char *data, size_t len);
	/* Progress: step i of n is starting (1-based). */
	void (*progress)(void *userdata, unsigned step, unsigned total, const char *what);
	/* The build has been running for warning_s seconds. */
	void (*warning)(void *userdata, unsigned elapsed_s);
	void *userdata;
	int cancel_fd; /* readable = cancel the build (-1: never) */
};

/* `kiln setup`: bootstraps base (e.g. "debian/bookworm") into
 * state_dir/bases/<digest>/ unless it is there already (*ret_already).
 * ret_digest may be NULL. */
int kiln_image_setup(const char *state_dir, const char *base, const struct kiln_image_hooks *hooks,
                     bool *ret_already, char ret_digest[KILN_SHA256_HEX_LEN + 1],
                     struct kiln_error **err);

/* What a base's bootstrap takes beyond its name (the archlinux base; the
 * Debian bases take none and refuse them). */
struct kiln_image_setup_opts {
	/* pacman Server templates ("http://m.example/$repo/os/$arch"): the
	 * allowlist, the only hosts contacted. */
	const char *const *mirrors;
	size_t n_mirrors;
	const char *keyring;         /* file of OpenPGP public keys (armored or binary), or NULL */
	const char *const *packages; /* added to the base's own ("base") */
	size_t n_packages;
	bool allow_unsigned; /* SigLevel = Never: only when the operator says so */
};

/* kiln_image_setup with options (NULL: none). With options that differ
 * from the set-up base's (its mirrors, keys, packages are its identity),
 * the base is bootstrapped again and the name points at the new one. */
int kiln_image_setup_with(const char *state_dir, const char *base,
                          const struct kiln_image_setup_opts *opts,
                          const struct kiln_image_hooks *hooks, bool *ret_already,
                          char ret_digest[KILN_SHA256_HEX_LEN + 1], struct kiln_error **err);

/* Resolves a set-up base to its root tree; -ENOENT (with a message telling
 * the user to run `kiln setup`) when it is not set up. Caller frees. */
int kiln_image_base_path(const char *state_dir, const char *base, char **ret_path,
                         char ret_digest[KILN_SHA256_HEX_LEN + 1], struct kiln_error **err);

/* Versions of the host tools that shape outputs ("mksquashfs 4.5.1; ..."),
 * for the build key. Computed once per process. */
const char *kiln_image_tool_versions(void);

struct kiln_image_artifact {
	char *name; /* file name in out_dir: rootfs.tar.gz, rootfs.squashfs, live.iso, ... */
	char sha256[KILN_SHA256_HEX_LEN + 1];
	uint64_t size;
};

struct kiln_image_result {
	char build_key[KILN_SHA256_HEX_LEN + 1];
	struct kiln_image_artifact *artifacts; /* outputs, then sbom.spdx.json, manifest.json */
	size_t n_artifacts;
	bool cached; /* answered from the local build cache: nothing was built */
	/* With opts.want_tree: the normalized image tree, one line per entry
	 * sorted by path ("path\ttype mode uid:gid mtime size sha256-or-target"),
	 * for explaining a --verify mismatch. NULL otherwise. */
	char *tree;
};

struct kiln_image_build_opts {
	const char *state_dir;
	const struct kiln_recipe *recipe;
	const char *context_path; /* context archive (tar, tar.gz, zip) or NULL */
	const char *out_dir;      /* artifacts land here through util/outdir.h */
	const char *build_id;     /* names the scratch dir builds/<id>; NULL: random */
	bool offline;             /* never fetch: the lock and .debs must be in the store */
	unsigned step_timeout_s;  /* per step; 0: the recipe's resources.step_timeout_s */
	bool want_tree;           /* fill kiln_image_result.tree */
	/* The operator's ceiling on resources.disk_mb; a recipe over it fails
	 * before anything runs. 0: KILN_DISK_MB_OPERATOR_DEFAULT. */
	int64_t max_disk_mb;
	struct kiln_image_hooks hooks;
};
/* Checks r's resources.disk_mb against the operator's ceiling max_disk_mb
 * (0: KILN_DISK_MB_OPERATOR_DEFAULT): -EINVAL (kind user) naming both. */
int kiln_image_check_disk(const struct kiln_recipe *r, int64_t max_disk_mb,
                          struct kiln_error **err);

/* The build key the pipeline will use for recipe r (tool versions included;
 * context_path may be NULL). */
int kiln_image_build_key(const struct kiln_recipe *r, const char *context_path,
                         char ret[KILN_SHA256_HEX_LEN + 1], struct kiln_error **err);

/* The local build cache: every successful kiln_image_build records its
 * artifacts under state_dir/results/<build_key>. When all of them are still
 * in the store, they are copied into out_dir (util/outdir.h: a reflink where
 * the file system allows, never a hard link into the store) and *ret is set
 * with cached = true; -ENOENT when there is no complete entry. */
int kiln_image_cache_lookup(const char *state_dir, const char *build_key, const char *out_dir,
                            struct kiln_image_result **ret, struct kiln_error **err);

/* References to store blobs that the state directory holds outside the
 * database (for `kiln store verify` and `gc`): the local cache's entries
 * (results/<build_key>: KILN_IMAGE_REF_CACHE, holder the key, with sizes),
 * package locks (locks/<digest>.lock: LOCK, the .debs) and set-up bases
 * (bases/<name>.ref: BASE, the base archive). fn gets one call per
 * reference: what names it for a person; size KILN_CAS_SIZE_UNKNOWN where
 * the file does not say; hex NULL for a file that cannot be read as its
 * kind (what is then its path). Stops at fn's first non-zero return. */
enum kiln_image_ref { KILN_IMAGE_REF_CACHE, KILN_IMAGE_REF_LOCK, KILN_IMAGE_REF_BASE };
typedef int (*kiln_image_ref_fn)(void *ud, enum kiln_image_ref kind, const char *holder,
                                 const char *what, const char *hex, uint64_t size);
int kiln_image_store_refs(const char *state_dir, kiln_image_ref_fn fn, void *ud,
                          struct kiln_error **err);
/* The parser behind kiln_image_store_refs, for one file's text of kind
 * (holder names the file): fn per reference, -EBADMSG when the text is not
 * one kiln writes (fn may have been called for the lines before). */
int kiln_image_refs_parse(enum kiln_image_ref kind, const char *text, const char *holder,
                          kiln_image_ref_fn fn, void *ud);
/* Removes the local cache entry of build_key (its blobs went); -ENOENT when
 * there is none. */
int kiln_image_cache_forget(const char *state_dir, const char *build_key);

/* Explains how two tree listings (kiln_image_result.tree) differ: one line
 * per entry ("/etc/foo: content", "mode 0644 → 0600", ...), at most max
 * lines. Caller frees. */
char *kiln_image_tree_diff(const char *a, const char *b, size_t max);

/* Runs the whole pipeline. The calling thread is moved into a private mount
 * namespace (unshare(CLONE_NEWNS)) if it is not in one of kiln's already.
 * On failure the error names the phase or step ("step 3 (RUN make): exited
 * with status 2") and its kind says whose fault: USER (a step or the
 * healthcheck failed, the recipe asks for what the image cannot do, the
 * context archive is refused), LIMIT (a step's or the build's timeout, the
 * memory limit), CANCELLED (hooks.cancel_fd), SYSTEM (kiln or the host). */
int kiln_image_build(const struct kiln_image_build_opts *opts, struct kiln_image_result **ret,
                     struct kiln_error **err);
/* Removes scratch directories under state_dir/builds left by a kiln that
 * died (called by kiln_image_build and kiln_image_setup too). */
void kiln_image_cleanup_stale(const char *state_dir);

struct kiln_image_result *kiln_image_result_free(struct kiln_image_result *r);
static inline void kiln_image_result_freep(struct kiln_image_result **r)
{
	kiln_image_result_free(*r);
}
