/* Outputs: the tarball, the squashfs and ISO (handed to emit.c), the SPDX
 * SBOM and manifest.json, each recorded as an artifact (digest, size, a copy
 * in the store) in the order the manifest lists them, and the cache record
 * that lets an identical build be answered without building.
 *
 * Every artifact reaches out_dir through the output-directory writer
 * (util/outdir.h): under its final name only once complete, never through a
 * name planted in the directory, across file systems too. */
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
#include "util/fs.h"
#include "util/json.h"
#include "util/outdir.h"

/* Records name as an artifact (digest, size, a copy in the store) from src,
 * a file kiln holds — its scratch, or its own fd of the file being written
 * — never from the output directory, where another user could have
 * swapped the file by then and so put their bytes in the cache. */
static int add_artifact(struct build *b, const char *name, const char *src, struct kiln_error **err)
{
	struct kiln_image_artifact a = {xstrdup(name), "", 0};
	int rc = kiln_cas_put_file(b->o->state_dir, src, NULL, a.sha256, &a.size, err);
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

/* f (written, not committed) is recorded, then renamed into place. */
static int finish(struct build *b, struct kiln_outfile *f, const char *name,
                  struct kiln_error **err)
{
	_cleanup_free_ char *self = xasprintf("/proc/self/fd/%d", f->fd);
	int rc = add_artifact(b, name, self, err);
	if (rc < 0) {
		kiln_outdir_abort(&b->out, f);
		return rc;
	}
	return kiln_outdir_commit(&b->out, f, name, 0644, err);
}

static int emit_buffer(struct build *b, const char *name, const void *data, size_t len,
                       struct kiln_error **err)
{
	struct kiln_outfile f = KILN_OUTFILE_INIT;
	int rc = kiln_outdir_begin(&b->out, &f, err);
	if (rc < 0)
		return rc;
	if ((rc = kiln_write_all(f.fd, data, len)) < 0) {
		kiln_outdir_abort(&b->out, &f);
		return kiln_error_set_errno(err, -rc, "%s/%s: cannot write", b->out.path, name);
	}
	return finish(b, &f, name, err);
}

int kiln_image_phase_tar(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "emit rootfs.tar.gz");
	struct kiln_outfile f = KILN_OUTFILE_INIT;
	int rc = kiln_outdir_begin(&b->out, &f, err);
	if (rc < 0)
		return rc;
	struct kiln_tarball_opts o;
	kiln_tarball_opts_default(&o, b->r->source_date_epoch);
	o.gzip = true;
	rc = kiln_tarball_write(b->rootfd, f.fd, &o, err);
	if (rc < 0) {
		kiln_outdir_abort(&b->out, &f);
		kiln_error_prefix(err, "tar output");
		return rc;
	}
	return finish(b, &f, "rootfs.tar.gz", err);
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

/* What a runtime needs to start the image (docs/templates.md): the user,
 * working directory and environment the steps left, the healthcheck's
 * result, the resources the build ran with. */
static void put_template(struct kiln_buf *m, const struct build *b)
{
	const struct kiln_resources *rs = &b->r->resources;
	struct kiln_oci_config cfg = {
	    b->r, b->build_key, (const char *const *)b->env, b->n_env, b->uid, b->gid, b->workdir};
	kiln_buf_printf(m, ",\n  \"template\": {\"user\":\"%u:%u\",\"workdir\":", (unsigned)b->uid,
	                (unsigned)b->gid);
	if (b->workdir)
		kiln_json_put_cstr(m, b->workdir);
	else
		kiln_buf_puts(m, "null");
	kiln_buf_puts(m, ",\"env\":");
	kiln_oci_put_env(m, &cfg);
	if (b->healthcheck_attempts)
		kiln_buf_printf(m,
		                ",\"healthcheck_result\":{\"status\":\"passed\",\"attempts\":%u}",
		                b->healthcheck_attempts);
	else
		kiln_buf_puts(m, ",\"healthcheck_result\":null");
	kiln_buf_printf(m,
	                ",\"resources\":{\"memory_mb\":%" PRId64 ",\"cpus\":%" PRId64
	                ",\"disk_mb\":%" PRId64 ",\"timeout_s\":%" PRId64 "}}",
	                rs->memory_mb, rs->cpus, rs->disk_mb, rs->timeout_s);
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
	put_template(&m, b);
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
	int rc = emit_buffer(b, "manifest.json", m.data, m.len, err);
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
	return emit_buffer(b, "sbom.spdx.json", doc, len, err);
}

/* mksquashfs and xorriso write into the build's scratch, a directory of
 * kiln's own; the output directory only ever gets finished files, through
 * the writer (util/outdir.h). The squashfs is an artifact of its own, the
 * ISO's input, or both (then the ISO needs it after it is placed: a copy). */
int kiln_image_phase_squashfs(struct build *b, struct kiln_error **err)
{
	bool keep_sq = b->r->outputs & KILN_OUTPUT_SQUASHFS;
	if (keep_sq)
		kiln_image_progress(b, "emit rootfs.squashfs");
	b->squashfs = xasprintf("%s/filesystem.squashfs", b->scratch);
	struct kiln_emit_ctx ec = {
	    &b->hooks, b->scratch, b->merged, b->rootfd, b->r->source_date_epoch, b->r->name};
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	int rc = kiln_emit_squashfs(&ec, b->squashfs, err);
	if (rc < 0)
		return rc;
	if (!keep_sq || (rc = add_artifact(b, "rootfs.squashfs", b->squashfs, err)) < 0)
		return rc;
	return b->r->outputs & KILN_OUTPUT_ISO
	           ? kiln_outdir_copy_file(&b->out, "rootfs.squashfs", b->squashfs, 0644, err)
	           : kiln_outdir_adopt(&b->out, "rootfs.squashfs", b->squashfs, 0644, err);
}

int kiln_image_phase_iso(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "emit live.iso");
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	struct kiln_emit_ctx ec = {
	    &b->hooks, b->scratch, b->merged, b->rootfd, b->r->source_date_epoch, b->r->name};
	_cleanup_free_ char *iso = xasprintf("%s/live.iso", b->scratch);
	int rc = kiln_emit_iso(&ec, b->squashfs, iso, err);
	if (rc < 0 || (rc = add_artifact(b, "live.iso", iso, err)) < 0)
		return rc;
	return kiln_outdir_adopt(&b->out, "live.iso", iso, 0644, err);
}

int kiln_image_phase_ext4(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "emit rootfs.ext4");
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	struct kiln_emit_ctx ec = {
	    &b->hooks, b->scratch, b->merged, b->rootfd, b->r->source_date_epoch, b->r->name};
	_cleanup_free_ char *img = xasprintf("%s/rootfs.ext4", b->scratch);
	int rc = kiln_emit_ext4(&ec, b->build_key, img, err);
	if (rc < 0 || (rc = add_artifact(b, "rootfs.ext4", img, err)) < 0)
		return rc;
	return kiln_outdir_adopt(&b->out, "rootfs.ext4", img, 0644, err);
}

int kiln_image_phase_oci(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "emit image.oci.tar");
	if (kiln_image_cancelled(b))
		return kiln_error_set_kind(err, KILN_ERR_CANCELLED, ECANCELED, "build cancelled");
	struct kiln_emit_ctx ec = {
	    &b->hooks, b->scratch, b->merged, b->rootfd, b->r->source_date_epoch, b->r->name};
	struct kiln_oci_config cfg = {
	    b->r, b->build_key, (const char *const *)b->env, b->n_env, b->uid, b->gid, b->workdir};
	_cleanup_free_ char *img = xasprintf("%s/image.oci.tar", b->scratch);
	int rc = kiln_emit_oci(&ec, &cfg, img, err);
	if (rc < 0 || (rc = add_artifact(b, "image.oci.tar", img, err)) < 0)
		return rc;
	return kiln_outdir_adopt(&b->out, "image.oci.tar", img, 0644, err);
}

int kiln_image_phase_sbom(struct build *b, struct kiln_error **err)
{
	return write_sbom(b, err);
}

/* Last of the artifacts: it lists every one before it. */
int kiln_image_phase_manifest(struct build *b, struct kiln_error **err)
{
	return write_manifest(b, err);
}

int kiln_image_phase_record(struct build *b, struct kiln_error **err)
{
	return kiln_image_cache_record(b->o->state_dir, b->res, err);
}
