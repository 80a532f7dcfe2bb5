/* The OCI output: image.oci.tar, an OCI image layout (oci-layout,
 * index.json, blobs/sha256/...) tarred. One layer, the deterministic rootfs
 * tar uncompressed (so its digest is its diff_id); a config with the user,
 * working directory and environment the recipe's USER/WORKDIR/ENV steps
 * left; annotations with the build key and the source date.
 *
 * Reproducibility: every JSON text is written with its keys in a fixed
 * order and no time but SOURCE_DATE_EPOCH; the layout directory is built in
 * the scratch and tarred by the same deterministic tar writer as the rootfs
 * (names sorted, mtimes clamped, owners 0). */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/emit.h"
#include "image/tarball.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/sha256.h"

/* The sandbox's default PATH (sandbox.c): what every step ran with unless an
 * ENV step set one. */
#define OCI_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Variables that are kiln's, not the image's: the build's own clock, and
 * the HOME every step starts with (a runtime derives HOME from the user). */
static bool build_own(const struct kiln_recipe *r, const char *kv)
{
	if (strncmp(kv, "SOURCE_DATE_EPOCH=", 18) == 0)
		return true;
	if (strncmp(kv, "HOME=", 5) != 0)
		return false;
	for (size_t i = 0; i < r->n_steps; i++)
		if (r->steps[i].op == KILN_STEP_ENV && strcmp(r->steps[i].arg, "HOME") == 0)
			return false; /* the recipe's own HOME */
	return true;
}

static bool env_has(const struct kiln_oci_config *c, const char *k)
{
	size_t kl = strlen(k);
	for (size_t i = 0; i < c->n_env; i++)
		if (strncmp(c->env[i], k, kl) == 0 && c->env[i][kl] == '=')
			return true;
	return false;
}

void kiln_oci_put_env(struct kiln_buf *j, const struct kiln_oci_config *cfg)
{
	kiln_buf_putc(j, '[');
	bool first = true;
	if (!env_has(cfg, "PATH")) {
		kiln_buf_puts(j, "\"PATH=" OCI_DEFAULT_PATH "\"");
		first = false;
	}
	for (size_t i = 0; i < cfg->n_env; i++) {
		if (build_own(cfg->recipe, cfg->env[i]))
			continue;
		if (!first)
			kiln_buf_putc(j, ',');
		kiln_json_put_cstr(j, cfg->env[i]);
		first = false;
	}
	kiln_buf_putc(j, ']');
}

/* Owned by the sandbox's root so that the tar writer maps it to 0. */
static int put_file(const char *path, const void *data, size_t len, struct kiln_error **err)
{
	int rc = kiln_image_write_text(path, data, len, 0644, err);
	if (rc == 0 && chown(path, KILN_TARBALL_DEFAULT_ID_BASE, KILN_TARBALL_DEFAULT_ID_BASE) < 0)
		rc = kiln_error_set_errno(err, errno, "%s: chown", path);
	return rc;
}

static int put_blob(const char *blobs, const struct kiln_buf *j, char hex[KILN_SHA256_HEX_LEN + 1],
                    struct kiln_error **err)
{
	kiln_sha256_hex(j->data, j->len, hex);
	_cleanup_free_ char *p = xasprintf("%s/%s", blobs, hex);
	return put_file(p, j->data, j->len, err);
}

static void put_descriptor(struct kiln_buf *b, const char *media, const char *hex, uint64_t size)
{
	kiln_buf_printf(b, "{\"digest\":\"sha256:%s\",\"mediaType\":\"%s\",\"size\":%" PRIu64 "}",
	                hex, media, size);
}

int kiln_emit_oci(const struct kiln_emit_ctx *c, const struct kiln_oci_config *cfg, const char *dst,
                  struct kiln_error **err)
{
	_cleanup_rmtree_ char *dir = xasprintf("%s/oci", c->scratch);
	_cleanup_free_ char *blobs_parent = xasprintf("%s/blobs", dir);
	_cleanup_free_ char *blobs = xasprintf("%s/blobs/sha256", dir);
	int rc;
	if ((rc = kiln_image_mkdir_sandbox(dir, err)) < 0 ||
	    (rc = kiln_image_mkdir_sandbox(blobs_parent, err)) < 0 ||
	    (rc = kiln_image_mkdir_sandbox(blobs, err)) < 0)
		return rc;

	/* The layer: the rootfs tar, uncompressed. */
	_cleanup_free_ char *ltmp = xasprintf("%s/.layer", blobs);
	char layer[KILN_SHA256_HEX_LEN + 1];
	uint64_t layer_size = 0;
	{
		_cleanup_close_ int fd = open(ltmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			return kiln_error_set_errno(err, errno, "%s: cannot create", ltmp);
		struct kiln_tarball_opts o;
		kiln_tarball_opts_default(&o, c->epoch);
		if ((rc = kiln_tarball_write(c->rootfd, fd, &o, err)) < 0)
			return rc;
		if (lseek(fd, 0, SEEK_SET) < 0 || (rc = kiln_sha256_fd(fd, layer, &layer_size)) < 0)
			return kiln_error_set_errno(err, rc < 0 ? -rc : errno, "%s: hash", ltmp);
	}
	_cleanup_free_ char *lpath = xasprintf("%s/%s", blobs, layer);
	if (chown(ltmp, KILN_TARBALL_DEFAULT_ID_BASE, KILN_TARBALL_DEFAULT_ID_BASE) < 0 ||
	    rename(ltmp, lpath) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot move into place", lpath);

	char created[32];
	struct tm tm;
	time_t t = (time_t)c->epoch;
	if (!gmtime_r(&t, &tm) ||
	    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return kiln_error_set(err, EINVAL, "oci output: bad source date %" PRId64,
		                      c->epoch);

	/* The config (image-spec config.md), keys sorted. */
	_cleanup_buf_ struct kiln_buf j = KILN_BUF_INIT;
	kiln_buf_printf(&j, "{\"architecture\":\"amd64\",\"config\":{\"Env\":");
	kiln_oci_put_env(&j, cfg);
	kiln_buf_printf(&j, ",\"User\":\"%u:%u\"", (unsigned)cfg->uid, (unsigned)cfg->gid);
	if (cfg->workdir) {
		kiln_buf_puts(&j, ",\"WorkingDir\":");
		kiln_json_put_cstr(&j, cfg->workdir);
	}
	kiln_buf_printf(
	    &j,
	    "},\"created\":\"%s\",\"history\":[{\"created\":\"%s\",\"created_by\":\"kiln "
	    "%s\"}],\"os\":\"linux\",\"rootfs\":{\"diff_ids\":[\"sha256:%s\"],"
	    "\"type\":\"layers\"}}",
	    created, created, KILN_VERSION, layer);
	char config[KILN_SHA256_HEX_LEN + 1];
	uint64_t config_size = j.len;
	if ((rc = put_blob(blobs, &j, config, err)) < 0)
		return rc;

	/* The manifest, with the build's identity as annotations. */
	_cleanup_buf_ struct kiln_buf m = KILN_BUF_INIT;
	kiln_buf_puts(&m, "{\"annotations\":{\"dev.kiln.build-key\":");
	kiln_json_put_cstr(&m, cfg->build_key);
	kiln_buf_printf(&m,
	                ",\"dev.kiln.source-date-epoch\":\"%" PRId64 "\","
	                "\"org.opencontainers.image.created\":\"%s\"},\"config\":",
	                c->epoch, created);
	put_descriptor(&m, "application/vnd.oci.image.config.v1+json", config, config_size);
	kiln_buf_puts(&m, ",\"layers\":[");
	put_descriptor(&m, "application/vnd.oci.image.layer.v1.tar", layer, layer_size);
	kiln_buf_puts(&m, "],\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	                  "\"schemaVersion\":2}");
	char manifest[KILN_SHA256_HEX_LEN + 1];
	uint64_t manifest_size = m.len;
	if ((rc = put_blob(blobs, &m, manifest, err)) < 0)
		return rc;

	/* index.json names it "latest" (what `umoci unpack --image X:latest`
	 * and `skopeo inspect oci-archive:X` pick). */
	_cleanup_buf_ struct kiln_buf ix = KILN_BUF_INIT;
	kiln_buf_printf(&ix,
	                "{\"manifests\":[{\"annotations\":{\"org.opencontainers.image.ref.name\":"
	                "\"latest\"},\"digest\":\"sha256:%s\",\"mediaType\":\"application/"
	                "vnd.oci.image.manifest.v1+json\",\"size\":%" PRIu64
	                "}],\"schemaVersion\":2}",
	                manifest, manifest_size);
	_cleanup_free_ char *ixp = xasprintf("%s/index.json", dir);
	_cleanup_free_ char *lop = xasprintf("%s/oci-layout", dir);
	static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	if ((rc = put_file(ixp, ix.data, ix.len, err)) < 0 ||
	    (rc = put_file(lop, layout, sizeof(layout) - 1, err)) < 0)
		return rc;

	/* The layout, tarred deterministically. */
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_set_errno(err, errno, "%s", dir);
	_cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dst);
	struct kiln_tarball_opts o;
	kiln_tarball_opts_default(&o, c->epoch);
	if ((rc = kiln_tarball_write(dfd, out, &o, err)) < 0) {
		kiln_error_prefix(err, "oci output");
		return rc;
	}
	if (fsync(out) < 0)
		return kiln_error_set_errno(err, errno, "%s: fsync", dst);
	return 0;
}
