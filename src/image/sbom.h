/* image/sbom.h — the SPDX 2.3 JSON SBOM of an image's installed packages.
 *
 * Owns: rendering the build's package lock (name, version, architecture,
 * .deb sha256) as an SPDX 2.3 JSON document whose bytes depend only on its
 * inputs: packages sorted, `created` from SOURCE_DATE_EPOCH, and a
 * documentNamespace derived from a SHA-256 of the content instead of a
 * random UUID. Must not: read the tree, touch the network, or print. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

struct kiln_sbom_package {
	const char *name;    /* Debian package name */
	const char *version; /* Debian version, epoch included ("1:2.3-4") */
	const char *arch;    /* "amd64", "all", ... */
	const char *sha256;  /* of the .deb: 64 lowercase hex digits */
	/* the purl's type and namespace: NULL is "pkg:deb/debian/"; the
	 * pacman backend's packages are "pkg:alpm/arch/" */
	const char *purl_prefix;
};

/* Renders the document for image `doc_name` into *ret (NUL-terminated, also
 * *ret_len bytes, ending in a newline). The order of pkgs does not matter.
 * A package with an empty field, a malformed sha256, or a duplicate
 * (name, arch) is -EINVAL with a message naming it. */
int kiln_sbom_spdx_json(const char *doc_name, int64_t source_date_epoch,
                        const struct kiln_sbom_package *pkgs, size_t n, char **ret, size_t *ret_len,
                        struct kiln_error **err);
