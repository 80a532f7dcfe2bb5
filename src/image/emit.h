/* image/emit.h — squashfs and bootable ISO outputs (internal to image/). */
#pragma once

#include <stdint.h>

#include "image/internal.h"

struct kiln_emit_ctx {
	const struct kiln_image_hooks *hooks;
	const char *scratch; /* the build's scratch directory */
	const char *merged;  /* the normalized root tree (a mount) */
	int rootfd;          /* open O_DIRECTORY fd of merged */
	int64_t epoch;
	const char *name; /* recipe name, may be NULL */
};

/* mksquashfs (xz) of the tree, run in a sandbox so owners read back through
 * the id mapping (host 100000 = image root). dst is replaced atomically. */
int kiln_emit_squashfs(const struct kiln_emit_ctx *c, const char *dst, struct kiln_error **err);
/* A hybrid BIOS + UEFI ISO: the image's kernel and initrd, the squashfs as
 * live/filesystem.squashfs, GRUB for both firmware types, serial console. */
/* The tree as an ext4 image (mke2fs -d, then debugfs for the times; ext4.c),
 * its UUID and hash seed from build_key. dst is replaced atomically. */
int kiln_emit_ext4(const struct kiln_emit_ctx *c, const char *build_key, const char *dst,
                   struct kiln_error **err);
/* What the OCI config carries: the state the steps left (the build's own
 * variables are filtered out by oci.c), and the build's identity. */
struct kiln_oci_config {
	const struct kiln_recipe *recipe;
	const char *build_key;
	const char *const *env; /* "K=V" */
	size_t n_env;
	uid_t uid;
	gid_t gid;
	const char *workdir; /* NULL: none set */
};
/* image.oci.tar: an OCI image layout with the tree as its one layer (oci.c).
 * dst is a path in the scratch. */
int kiln_emit_oci(const struct kiln_emit_ctx *c, const struct kiln_oci_config *cfg, const char *dst,
                  struct kiln_error **err);
/* cfg's environment as a JSON array of "K=V": PATH first (the sandbox's
 * default unless an ENV step set it), the build's own variables left out.
 * The OCI config's Env and manifest.json's template.env. */
void kiln_oci_put_env(struct kiln_buf *j, const struct kiln_oci_config *cfg);
int kiln_emit_iso(const struct kiln_emit_ctx *c, const char *squashfs, const char *dst,
                  struct kiln_error **err);
