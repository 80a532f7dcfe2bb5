/* Outputs: the tarball, the squashfs and ISO (handed to emit.c), the SPDX
 * SBOM and manifest.json, each recorded as an artifact (digest, size, a copy
 * in the store) in the order the manifest lists them, and the cache record
 * that lets an identical build be answered without building.
 *
 * Every artifact lands in out_dir under its final name only once it is
 * complete (temp name, fsync, rename). */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/backend.h"
#include "image/emit.h"
#include "image/sbom.h"
#include "image/tarball.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/json.h"

static int add_artifact(struct build *b, const char *name, struct kiln_error **err)
{
	_cleanup_free_ char *p = xasprintf("%s/%s", b->o->out_dir, name);
	struct kiln_image_artifact a = {xstrdup(name), "", 0};
	int rc = kiln_cas_put_file(b->o->state_dir, p, NULL, a.sha256, &a.size, err);
	if (rc < 0) {
		free(a.name);
		return rc;
	}
	b->res->artifacts = xreallocarray(b->res->artifacts, b->res->n_artifacts + 1, sizeof(a));
	b->res->artifacts[b->res->n_artifacts++] = a;
	kiln_image_logf(&b->o->hooks, "    %s  sha256:%s  %" PRIu64 " bytes\n", name, a.sha256,
	                a.size);
	return 0;
}

int kiln_image_phase_tar(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "emit rootfs.tar.gz");
	_cleanup_free_ char *tmp = xasprintf("%s/.rootfs.tar.gz.tmp", b->o->out_dir);
	_cleanup_free_ char *dst = xasprintf("%s/rootfs.tar.gz", b->o->out_dir);
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", tmp);
	struct kiln_tarball_opts o;
	kiln_tarball_opts_default(&o, b->r->source_date_epoch);
	o.gzip = true;
	int rc = kiln_tarball_write(b->rootfd, fd, &o, err);
	if (rc == 0 && fsync(fd) < 0)
		rc = kiln_error_set_errno(err, errno, "%s: fsync", tmp);
	if (rc == 0 && rename(tmp, dst) < 0)
		rc = kiln_error_set_errno(err, errno, "%s: cannot rename", dst);
	if (rc < 0) {
		unlink(tmp);
		kiln_error_prefix(err, "tar output");
		return rc;
	}
	return add_artifact(b, "rootfs.tar.gz", err);
}

static void put_pkg_json(struct kiln_buf *m, const struct kiln_pkglist *l)
{
	kiln_buf_putc(m, '[');
	for (size_t i = 0; i < l->n; i++) {
		kiln_buf_puts(m, i ? ",\n    {\"architecture\":" : "\n    {\"architecture\":");
		kiln_json_put_cstr(m, l->v[i].arch);
		kiln_buf_puts(m, ",\"name\":");
		kiln_json_put_cstr(m, l->v[i].name);
		kiln_buf_puts(m, ",\"sha256\":");
		kiln_json_put_cstr(m, l->v[i].sha256);
		kiln_buf_puts(m, ",\"version\":");
		kiln_json_put_cstr(m, l->v[i].version);
		kiln_buf_putc(m, '}');
	}
	kiln_buf_puts(m, l->n ? "\n  ]" : "]");
}

static int write_manifest(struct build *b, struct kiln_error **err)
{
	const struct kiln_recipe *r = b->r;
	_cleanup_buf_ struct kiln_buf m = KILN_BUF_INIT;
	kiln_buf_puts(&m, "{\n  \"kiln_version\": ");
	kiln_json_put_cstr(&m, KILN_VERSION);
	kiln_buf_puts(&m, ",\n  \"recipe\": {\"name\":");
	if (r->name)
		kiln_json_put_cstr(&m, r->name);
	else
		kiln_buf_puts(&m, "null");
	kiln_buf_printf(
	    &m,
	    ",\"config_hash\":\"%s\",\"build_key\":\"%s\",\"source_date_epoch\":%" PRId64 "},\n",
	    r->config_hash, b->build_key, r->source_date_epoch);
	kiln_buf_puts(&m, "  \"base\": {\"name\":");
	kiln_json_put_cstr(&m, r->base);
	kiln_buf_printf(&m, ",\"sha256\":\"%s\"},\n  \"tools\": ", b->base_digest);
	kiln_json_put_cstr(&m, kiln_image_tool_versions());
	/* For a runtime that starts the image: the recipe's check, as given. */
	kiln_buf_puts(&m, ",\n  \"healthcheck\": ");
	kiln_recipe_put_healthcheck(&m, r->healthcheck);
	kiln_buf_puts(&m, ",\n  \"lock\": ");
	put_pkg_json(&m, &b->lock);
	kiln_buf_puts(&m, ",\n  \"artifacts\": [");
	for (size_t i = 0; i < b->res->n_artifacts; i++) {
		const struct kiln_image_artifact *a = &b->res->artifacts[i];
		kiln_buf_puts(&m, i ? ",\n    {\"name\":" : "\n    {\"name\":");
		kiln_json_put_cstr(&m, a->name);
		kiln_buf_printf(&m, ",\"sha256\":\"%s\",\"size\":%" PRIu64 "}", a->sha256, a->size);
	}
	kiln_buf_puts(&m, b->res->n_artifacts ? "\n  ]\n}\n" : "]\n}\n");
	_cleanup_free_ char *p = xasprintf("%s/manifest.json", b->o->out_dir);
	int rc = kiln_image_write_text(p, m.data, m.len, 0644, err);
	return rc;
}

static int write_sbom(struct build *b, struct kiln_error **err)
{
	struct kiln_sbom_package *pk = xcalloc(b->installed.n + 1, sizeof(*pk));
	size_t n = 0;
	for (size_t i = 0; i < b->installed.n; i++) {
		const struct kiln_pkg *p = &b->installed.v[i];
		if (strlen(p->sha256) != KILN_SHA256_HEX_LEN)
			continue; /* not from an index we know: listed in manifest only */
		pk[n++] = (struct kiln_sbom_package){p->name, p->version, p->arch, p->sha256,
		                                     b->be->purl_prefix};
	}
	_cleanup_free_ char *doc = NULL;
	size_t len = 0;
	int rc = kiln_sbom_spdx_json(b->r->name ? b->r->name : "kiln-image",
	                             b->r->source_date_epoch, pk, n, &doc, &len, err);
	free(pk);
	if (rc < 0) {
		kiln_error_prefix(err, "sbom");
		return rc;
	}
	_cleanup_free_ char *p = xasprintf("%s/sbom.spdx.json", b->o->out_dir);
	return kiln_image_write_text(p, doc, len, 0644, err);
}

/* The squashfs is an artifact of its own, or only the ISO's input (then it
 * stays in scratch). */
int kiln_image_phase_squashfs(struct build *b, struct kiln_error **err)
{
	bool keep_sq = b->r->outputs & KILN_OUTPUT_SQUASHFS;
	if (keep_sq)
		kiln_image_progress(b, "emit rootfs.squashfs");
	b->squashfs = keep_sq ? xasprintf("%s/rootfs.squashfs", b->o->out_dir)
	                      : xasprintf("%s/filesystem.squashfs", b->scratch);
	struct kiln_emit_ctx ec = {
	    &b->hooks, b->scratch, b->merged, b->rootfd, b->r->source_date_epoch, b->r->name};
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	int rc = kiln_emit_squashfs(&ec, b->squashfs, err);
	if (rc < 0)
		return rc;
	return keep_sq ? add_artifact(b, "rootfs.squashfs", err) : 0;
}

int kiln_image_phase_iso(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "emit live.iso");
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	struct kiln_emit_ctx ec = {
	    &b->hooks, b->scratch, b->merged, b->rootfd, b->r->source_date_epoch, b->r->name};
	_cleanup_free_ char *iso = xasprintf("%s/live.iso", b->o->out_dir);
	int rc = kiln_emit_iso(&ec, b->squashfs, iso, err);
	if (rc < 0)
		return rc;
	return add_artifact(b, "live.iso", err);
}

int kiln_image_phase_sbom(struct build *b, struct kiln_error **err)
{
	int rc = write_sbom(b, err);
	return rc < 0 ? rc : add_artifact(b, "sbom.spdx.json", err);
}

/* Last of the artifacts: it lists every one before it. */
int kiln_image_phase_manifest(struct build *b, struct kiln_error **err)
{
	int rc = write_manifest(b, err);
	return rc < 0 ? rc : add_artifact(b, "manifest.json", err);
}

int kiln_image_phase_record(struct build *b, struct kiln_error **err)
{
	return kiln_image_cache_record(b->o->state_dir, b->res, err);
}
