/* Squashfs and ISO outputs. Reproducibility: SOURCE_DATE_EPOCH for
 * mksquashfs, mtools and xorriso; every staged file's mtime set to the
 * epoch; the EFI FAT image made with mkfs.fat --invariant and a fixed volume
 * id; TZ=UTC and LC_ALL=C for every tool. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/emit.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/walk.h"

static char tool_versions[1024];
static pthread_once_t tool_once = PTHREAD_ONCE_INIT;

/* The Debian packages whose tools write the outputs. Their versions come
 * from dpkg's database, not from running each tool: a cache hit must answer
 * in milliseconds, and the package version pins the tool's behaviour more
 * precisely than its --version line. */
static const char *const tool_packages[] = {
    "squashfs-tools", "xorriso", "grub-pc-bin", "grub-efi-amd64-bin",
    "dosfstools",     "mtools",  "e2fsprogs",
};

static void compute_versions(void)
{
	const char *found[ELEMENTSOF(tool_packages)] = {NULL};
	_cleanup_free_ char *db = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e = NULL;
	if (kiln_read_file("/var/lib/dpkg/status", 64 << 20, &db, &len, &e) == 0) {
		/* Paragraphs separated by blank lines; we need Package, Status, Version. */
		for (char *para = db; para && *para;) {
			char *end = strstr(para, "\n\n");
			if (end)
				*end = '\0';
			const char *pkg = NULL, *ver = NULL;
			bool installed = false;
			for (char *line = para; line && *line;) {
				char *nl = strchr(line, '\n');
				if (nl)
					*nl = '\0';
				if (strncmp(line, "Package: ", 9) == 0)
					pkg = line + 9;
				else if (strncmp(line, "Version: ", 9) == 0)
					ver = line + 9;
				else if (strncmp(line, "Status: ", 8) == 0)
					installed = strstr(line, " installed") != NULL;
				line = nl ? nl + 1 : NULL;
			}
			for (size_t i = 0; pkg && ver && installed && i < ELEMENTSOF(tool_packages);
			     i++)
				if (strcmp(pkg, tool_packages[i]) == 0)
					found[i] = ver;
			para = end ? end + 2 : NULL;
		}
	}
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	for (size_t i = 0; i < ELEMENTSOF(tool_packages); i++)
		kiln_buf_printf(&b, "%s%s=%s", i ? "; " : "", tool_packages[i],
		                found[i] ? found[i] : "missing");
	snprintf(tool_versions, sizeof(tool_versions), "%s", b.data);
}

const char *kiln_image_tool_versions(void)
{
	pthread_once(&tool_once, compute_versions);
	return tool_versions;
}

int kiln_emit_squashfs(const struct kiln_emit_ctx *c, const char *dst, struct kiln_error **err)
{
	_cleanup_rmtree_ char *out = xasprintf("%s/squashfs-out", c->scratch);
	int rc = kiln_image_mkdir_sandbox(out, err);
	if (rc < 0)
		return rc;
	const char *argv[] = {"mksquashfs",   "/srv",   "/mnt/root.squashfs",
	                      "-noappend",    "-comp",  "xz",
	                      "-no-progress", "-quiet", NULL};
	struct kiln_sandbox_bind binds[] = {
	    {c->merged, "/srv", true},
	    {out, "/mnt", false},
	};
	struct kiln_image_run r = {
	    .what = "mksquashfs",
	    .binds = binds,
	    .n_binds = 2,
	    .argv = argv,
	    .timeout_s = 3600,
	    .epoch = c->epoch,
	};
	rc = kiln_image_sandbox(c->hooks, &r, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *src = xasprintf("%s/root.squashfs", out);
	if (chown(src, 0, 0) < 0 || chmod(src, 0644) < 0 || rename(src, dst) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot move into place", dst);
	return 0;
}

static int copy_out_of_image(int rootfd, const char *path, const char *dst, struct kiln_error **err)
{
	/* Read through RESOLVE_IN_ROOT: /vmlinuz is a symlink in the image and
	 * must resolve inside it, never to the host's /boot. */
	_cleanup_close_ int in = kiln_open_in_root(rootfd, path, O_RDONLY, 0);
	if (in < 0)
		return kiln_error_set_errno(err, -in, "image %s", path);
	struct stat st;
	if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode))
		return kiln_error_set(err, EINVAL, "image %s: not a regular file", path);
	_cleanup_close_ int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0)
		return kiln_error_set_errno(err, errno, "%s", dst);
	char buf[65536];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_set_errno(err, errno, "image %s: read", path);
		if (n == 0)
			return 0;
		if (write(out, buf, (size_t)n) != n)
			return kiln_error_set_errno(err, errno, "%s: write", dst);
	}
}

/* The newest "prefix-<version>" in the image's /boot. */
static char *find_boot_file(int rootfd, const char *prefix)
{
	_cleanup_close_ int bfd = kiln_open_in_root(rootfd, "/boot", O_DIRECTORY | O_RDONLY, 0);
	if (bfd < 0)
		return NULL;
	DIR *d = fdopendir(TAKE_FD(bfd));
	if (!d)
		return NULL;
	char *best = NULL;
	size_t pl = strlen(prefix);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, prefix, pl) != 0)
			continue;
		if (!best || strverscmp(de->d_name, best) > 0) {
			free(best);
			best = xstrdup(de->d_name);
		}
	}
	closedir(d);
	return best;
}

static int set_time(const struct kiln_walk_entry *e, void *ud)
{
	const int64_t *epoch = ud;
	struct timespec ts[2] = {{*epoch, 0}, {*epoch, 0}};
	return utimensat(e->dirfd, e->name, ts, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int stage_times(const char *dir, int64_t epoch)
{
	return kiln_walk(AT_FDCWD, dir, 0, set_time, &epoch);
}

static const char early_cfg[] = "search --no-floppy --set=root --file /.kiln-live\n"
                                "set prefix=($root)/boot/grub\n"
                                "configfile ($root)/boot/grub/grub.cfg\n";

static const char *const grub_modules_common[] = {
    "part_gpt", "part_msdos",     "iso9660", "fat",    "normal",   "linux", "configfile",
    "search",   "search_fs_file", "echo",    "serial", "terminal", "test",  "ls",
    NULL};

static int grub_image(const struct kiln_emit_ctx *c, const char *format, const char *out,
                      const char *early, const char *extra)
{
	const char *argv[40];
	size_t a = 0;
	argv[a++] = "grub-mkimage";
	argv[a++] = "-O";
	argv[a++] = format;
	argv[a++] = "-o";
	argv[a++] = out;
	argv[a++] = "-p";
	argv[a++] = "/boot/grub";
	argv[a++] = "-c";
	argv[a++] = early;
	for (size_t i = 0; grub_modules_common[i]; i++)
		argv[a++] = grub_modules_common[i];
	if (extra)
		argv[a++] = extra;
	argv[a] = NULL;
	_cleanup_error_ struct kiln_error *e = NULL;
	return kiln_image_host_cmd(c->hooks, argv, NULL, NULL, &e) < 0 ? -EIO : 0;
}

int kiln_emit_iso(const struct kiln_emit_ctx *c, const char *squashfs, const char *dst,
                  struct kiln_error **err)
{
	_cleanup_free_ char *kernel = find_boot_file(c->rootfd, "vmlinuz-");
	_cleanup_free_ char *initrd = find_boot_file(c->rootfd, "initrd.img-");
	if (!kernel || !initrd)
		return kiln_error_set(err, ENOENT,
		                      "iso output: the image has no kernel/initrd in /boot "
		                      "(add linux-image-amd64 and live-boot to packages)");
	_cleanup_rmtree_ char *stage = xasprintf("%s/iso", c->scratch);
	_cleanup_free_ char *live = xasprintf("%s/live", stage);
	_cleanup_free_ char *grubdir = xasprintf("%s/boot/grub", stage);
	_cleanup_free_ char *bios = xasprintf("%s/boot/grub/i386-pc", stage);
	if (mkdir(stage, 0755) < 0 || mkdir(live, 0755) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", stage);
	_cleanup_free_ char *boot = xasprintf("%s/boot", stage);
	if (mkdir(boot, 0755) < 0 || mkdir(grubdir, 0755) < 0 || mkdir(bios, 0755) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", grubdir);

	_cleanup_free_ char *kpath = xasprintf("/boot/%s", kernel);
	_cleanup_free_ char *ipath = xasprintf("/boot/%s", initrd);
	_cleanup_free_ char *kdst = xasprintf("%s/vmlinuz", live);
	_cleanup_free_ char *idst = xasprintf("%s/initrd.img", live);
	int rc = copy_out_of_image(c->rootfd, kpath, kdst, err);
	if (rc == 0)
		rc = copy_out_of_image(c->rootfd, ipath, idst, err);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *sqdst = xasprintf("%s/filesystem.squashfs", live);
	if (link(squashfs, sqdst) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot stage", sqdst);

	_cleanup_close_ int sfd = open(stage, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *cfg = xasprintf(
	    "serial --unit=0 --speed=115200\n"
	    "terminal_input serial console\n"
	    "terminal_output serial console\n"
	    "set timeout=1\n"
	    "set default=0\n"
	    "menuentry \"kiln live\" {\n"
	    "  linux /live/vmlinuz boot=live components console=tty0 console=ttyS0,115200n8\n"
	    "  initrd /live/initrd.img\n"
	    "}\n");
	if (sfd < 0 || kiln_write_file_in_root(sfd, ".kiln-live", "", 0, 0644) < 0 ||
	    kiln_write_file_in_root(sfd, "boot/grub/grub.cfg", cfg, strlen(cfg), 0644) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot write grub.cfg", stage);

	_cleanup_free_ char *early = xasprintf("%s/early.cfg", c->scratch);
	_cleanup_close_ int scfd = open(c->scratch, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (scfd < 0 ||
	    kiln_write_file_atomic_at(scfd, "early.cfg", early_cfg, strlen(early_cfg), 0644) < 0)
		return kiln_error_set_errno(err, errno, "%s", early);

	_cleanup_free_ char *eltorito = xasprintf("%s/eltorito.img", bios);
	_cleanup_free_ char *efi = xasprintf("%s/bootx64.efi", c->scratch);
	if (grub_image(c, "i386-pc-eltorito", eltorito, early, "biosdisk") < 0 ||
	    grub_image(c, "x86_64-efi", efi, early, "efi_gop") < 0)
		return kiln_error_set(err, EIO, "iso output: grub-mkimage failed (see log)");

	/* The EFI system partition: fixed volume id, invariant FAT, mtools
	 * dates from SOURCE_DATE_EPOCH. */
	_cleanup_free_ char *efiimg = xasprintf("%s/efiboot.img", stage);
	_cleanup_free_ char *epoch_env = xasprintf("SOURCE_DATE_EPOCH=%" PRId64, c->epoch);
	const char *env[] = {epoch_env, "MTOOLS_SKIP_CHECK=1", NULL};
	struct stat est;
	if (stat(efi, &est) < 0)
		return kiln_error_set_errno(err, errno, "%s", efi);
	_cleanup_free_ char *kb = xasprintf("%lld", (long long)(est.st_size / 1024 + 1024));
	const char *mkfs[] = {"mkfs.fat", "--invariant", "-C",   "-n", "KILNEFI",
	                      "-i",       "4b494c4e",    efiimg, kb,   NULL};
	const char *mmd[] = {"mmd", "-i", efiimg, "::/EFI", "::/EFI/BOOT", NULL};
	_cleanup_free_ char *efisrc = xstrdup(efi);
	const char *mcopy[] = {"mcopy", "-m", "-i", efiimg, efisrc, "::/EFI/BOOT/BOOTX64.EFI",
	                       NULL};
	struct timespec ts[2] = {{c->epoch, 0}, {c->epoch, 0}};
	utimensat(AT_FDCWD, efi, ts, 0);
	if ((rc = kiln_image_host_cmd(c->hooks, mkfs, env, NULL, err)) < 0 ||
	    (rc = kiln_image_host_cmd(c->hooks, mmd, env, NULL, err)) < 0 ||
	    (rc = kiln_image_host_cmd(c->hooks, mcopy, env, NULL, err)) < 0)
		return rc;

	if ((rc = stage_times(stage, c->epoch)) < 0)
		return kiln_error_set_errno(err, -rc, "%s: cannot set times", stage);
	_cleanup_free_ char *tmp = xasprintf("%s.tmp", dst);
	const char *xorriso[] = {"xorriso",
	                         "-as",
	                         "mkisofs",
	                         "-o",
	                         tmp,
	                         "-iso-level",
	                         "3",
	                         "-full-iso9660-filenames",
	                         "-r",
	                         "-J",
	                         "-joliet-long",
	                         "-V",
	                         "KILN_LIVE",
	                         "-A",
	                         "kiln",
	                         "-publisher",
	                         "kiln",
	                         "--grub2-mbr",
	                         "/usr/lib/grub/i386-pc/boot_hybrid.img",
	                         "--protective-msdos-label",
	                         "-b",
	                         "boot/grub/i386-pc/eltorito.img",
	                         "-no-emul-boot",
	                         "-boot-load-size",
	                         "4",
	                         "-boot-info-table",
	                         "--grub2-boot-info",
	                         "--efi-boot",
	                         "efiboot.img",
	                         "-efi-boot-part",
	                         "--efi-boot-image",
	                         stage,
	                         NULL};
	rc = kiln_image_host_cmd(c->hooks, xorriso, env, NULL, err);
	/* The staged squashfs is a hardlink of the squashfs output, whose
	 * mtime stage_times() just set to the epoch: give it back a real one. */
	utimensat(AT_FDCWD, squashfs, NULL, 0);
	if (rc < 0) {
		unlink(tmp);
		return rc;
	}
	if (rename(tmp, dst) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot rename", dst);
	return 0;
}
