/* image/backend.h — the distribution backends: what differs between a
 * Debian image and an Arch Linux one.
 *
 * Owns: the table of set-up-able bases (name → backend + its bootstrap
 * parameters) and, per backend, the phases that speak a package manager:
 * bootstrap the base (mmdebstrap, pacman), resolve + fetch + lock packages
 * (the only networked build phase), install offline from the lock, list what
 * the image has installed (for the SBOM), and the package manager's own
 * normalize rules. Everything else — overlays, steps, hygiene, the generic
 * normalize checklist, tar/squashfs/ISO writing, SBOM and manifest — is the
 * same code for every backend (build.c's phase table).
 *
 * Must not: give any phase but bootstrap and fetch the network, run image
 * code outside the sandbox, or contact hosts other than the base's sources
 * (the host's apt sources for Debian, the operator's --mirror list for
 * pacman). */
#pragma once

#include <stdbool.h>

#include "image/internal.h"

/* One `kiln setup`: the inputs a backend's bootstrap gets. The bootstrap
 * writes outdir/base.tar (the root tree, numeric owners) and
 * outdir/base-packages.txt ("name version arch sha256" lines); base.c stores,
 * unpacks and names the result. */
struct kiln_image_bootstrap {
	const char *state_dir;
	const struct kiln_image_base *base;
	const struct kiln_image_setup_opts *opts; /* never NULL */
	const char *srcdir;                       /* scratch for inputs, bound read-only at /srv */
	const char *outdir; /* scratch owned by the sandbox's root, bound at /mnt */
	const struct kiln_image_hooks *h;
};

struct kiln_image_backend {
	const char *name;        /* "debian", "pacman" */
	const char *purl_prefix; /* the SBOM's package URLs: NULL "pkg:deb/debian/" */
	int (*bootstrap)(const struct kiln_image_bootstrap *bs, struct kiln_error **err);
	/* The identity of a setup beyond the base's name (mirrors, keys,
	 * packages) as a SHA-256 hex string, or NULL when the backend has
	 * none; a set-up base with another identity is bootstrapped again.
	 * Sets *err and returns NULL on unusable options. */
	char *(*identity)(const struct kiln_image_setup_opts *o, bool *ret_none,
	                  struct kiln_error **err);
	/* Resolves the recipe's packages, downloads and verifies them into the
	 * store and fills b->lock; a warm lock needs no network. */
	int (*fetch)(struct build *b, struct kiln_error **err);
	/* Installs exactly b->lock, with no network. */
	int (*install)(struct build *b, struct kiln_error **err);
	/* Fills b->installed (name version arch sha256) from the image. */
	int (*list_installed)(struct build *b, struct kiln_error **err);
	/* The package manager's own non-determinism, on the merged root
	 * (b->rootfd) before the generic checklist; NULL: none beyond it. */
	int (*normalize)(struct build *b, struct kiln_error **err);
};

/* A base `kiln setup` knows: its name, its backend, and what the backend's
 * bootstrap needs to make it. */
struct kiln_image_base {
	const char *name;
	const struct kiln_image_backend *backend;
	/* Debian (mmdebstrap): suite, variant, --include, the hook that
	 * records the packages and its mmdebstrap option, tar --exclude
	 * options for the unpack. */
	const char *suite;
	const char *variant;
	const char *include;
	const char *hook_option;
	const char *hook;
	const char *const *drop;
};

/* base.c: the base named name, or NULL (with *err set). */
const struct kiln_image_base *kiln_image_base_find(const char *name, struct kiln_error **err);

/* packages.c and base.c: Debian (apt, dpkg, mmdebstrap); busybox is a base
 * of it (mmdebstrap's extract variant). */
extern const struct kiln_image_backend kiln_image_backend_debian;
int kiln_image_debian_bootstrap(const struct kiln_image_bootstrap *bs, struct kiln_error **err);
/* pacman.c: Arch Linux (pacman). */
extern const struct kiln_image_backend kiln_image_backend_pacman;
