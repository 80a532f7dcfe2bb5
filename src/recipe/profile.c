/* archiso profile export (`kiln profile --format archiso`).
 *
 * DIR is the user's, and may already hold symlinks (a previous export, or a
 * hostile checkout): every file is written through util/fs's
 * RESOLVE_IN_ROOT helpers and replaced by rename, so no overlay path and no
 * planted link can make kiln write outside DIR. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "recipe/recipe.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"

/* bash single-quoted word: ' becomes '\'' */
static void put_sh_quoted(struct kiln_buf *b, const char *s)
{
	kiln_buf_putc(b, '\'');
	for (; *s; s++) {
		if (*s == '\'')
			kiln_buf_puts(b, "'\\''");
		else
			kiln_buf_putc(b, *s);
	}
	kiln_buf_putc(b, '\'');
}

static char *profiledef(const struct kiln_recipe *r)
{
	time_t t = (time_t)r->source_date_epoch;
	struct tm tm;
	gmtime_r(&t, &tm);
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_puts(&b, "#!/usr/bin/env bash\n"
	                  "# shellcheck disable=SC2034\n"
	                  "# Written by kiln from a recipe; regenerate rather than edit.\n\n"
	                  "iso_name=\"kiln-custom\"\n");
	kiln_buf_printf(&b, "iso_label=\"KILN_%04d%02d\"\n", tm.tm_year + 1900, tm.tm_mon + 1);
	kiln_buf_puts(&b, "iso_publisher=\"kiln\"\n"
	                  "iso_application=\"kiln custom live image\"\n");
	kiln_buf_printf(&b, "iso_version=\"%04d.%02d.%02d\"\n", tm.tm_year + 1900, tm.tm_mon + 1,
	                tm.tm_mday);
	kiln_buf_puts(&b,
	              "install_dir=\"arch\"\n"
	              "buildmodes=('iso')\n"
	              "bootmodes=('bios.syslinux.mbr' 'bios.syslinux.eltorito'\n"
	              "           'uefi-x64.systemd-boot.esp' 'uefi-x64.systemd-boot.eltorito')\n"
	              "arch=\"x86_64\"\n"
	              "pacman_conf=\"pacman.conf\"\n"
	              "airootfs_image_type=\"squashfs\"\n"
	              "airootfs_image_tool_options=('-comp' 'xz' '-Xbcj' 'x86' '-b' '1M' "
	              "'-Xdict-size' '1M')\n"
	              "file_permissions=(\n"
	              "  [\"/etc/shadow\"]=\"0:0:0400\"\n"
	              "  [\"/root\"]=\"0:0:750\"\n"
	              "  [\"/etc/gshadow\"]=\"0:0:0400\"\n");
	for (size_t i = 0; i < r->n_overlays; i++)
		for (size_t k = 0; k < r->overlays[i].n_files; k++) {
			const struct kiln_file *f = &r->overlays[i].files[k];
			if (f->mode == 0644 || strcmp(f->path, "/etc/shadow") == 0 ||
			    strcmp(f->path, "/etc/gshadow") == 0)
				continue;
			kiln_buf_puts(&b, "  [");
			put_sh_quoted(&b, f->path);
			kiln_buf_printf(&b, "]=\"0:0:%04o\"\n", f->mode);
		}
	kiln_buf_puts(&b, ")\n");
	return kiln_buf_steal(&b, NULL);
}

static const char pacman_conf[] = "#\n"
                                  "# pacman.conf written by kiln\n"
                                  "#\n"
                                  "[options]\n"
                                  "HoldPkg     = pacman glibc\n"
                                  "Architecture = auto\n"
                                  "ParallelDownloads = 5\n"
                                  "SigLevel = Required DatabaseOptional\n"
                                  "LocalFileSigLevel = Optional\n"
                                  "\n"
                                  "[core]\n"
                                  "Include = /etc/pacman.d/mirrorlist\n"
                                  "\n"
                                  "[extra]\n"
                                  "Include = /etc/pacman.d/mirrorlist\n";

static int write_top(int dirfd, const char *name, const char *data, size_t len, mode_t mode,
                     const char *dir, struct kiln_error **err)
{
	int r = kiln_write_file_in_root(dirfd, name, data, len, mode);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s/%s: cannot write", dir, name);
	return 0;
}

int kiln_recipe_export_archiso(const struct kiln_recipe *r, const char *dir,
                               struct kiln_error **err)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create directory", dir);
	_cleanup_close_ int dirfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dirfd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot open directory", dir);

	_cleanup_buf_ struct kiln_buf pk = KILN_BUF_INIT;
	if (r->n_packages == 0)
		kiln_buf_puts(&pk, "base\nlinux\n");
	for (size_t i = 0; i < r->n_packages; i++)
		kiln_buf_printf(&pk, "%s\n", r->packages[i]);
	int rc = write_top(dirfd, "packages.x86_64", pk.data, pk.len, 0644, dir, err);
	if (rc < 0)
		return rc;

	_cleanup_free_ char *def = profiledef(r);
	rc = write_top(dirfd, "profiledef.sh", def, strlen(def), 0644, dir, err);
	if (rc < 0)
		return rc;
	rc = write_top(dirfd, "pacman.conf", pacman_conf, sizeof(pacman_conf) - 1, 0644, dir, err);
	if (rc < 0)
		return rc;

	_cleanup_close_ int rootfd = kiln_mkdir_p_in_root(dirfd, "airootfs", 0755);
	if (rootfd < 0)
		return kiln_error_set_errno(err, -rootfd, "%s/airootfs: cannot create", dir);
	/* Overlays are applied in identity order, so a later overlay's file wins
	 * over an earlier one's at the same path. */
	for (size_t i = 0; i < r->n_overlays; i++)
		for (size_t k = 0; k < r->overlays[i].n_files; k++) {
			const struct kiln_file *f = &r->overlays[i].files[k];
			rc = kiln_write_file_in_root(rootfd, f->path, f->content, f->content_len,
			                             f->mode);
			if (rc < 0)
				return kiln_error_set_errno(err, -rc, "%s/airootfs%s: cannot write",
				                            dir, f->path);
		}
	return 0;
}
