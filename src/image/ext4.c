/* The ext4 output: the normalized root tree as an ext4 file-system image,
 * the root a Firecracker-style microVM boots. Made by mke2fs -d in a
 * sandbox (the tree's owners read back through the id mapping, and a
 * hostile tree can make mke2fs write nothing but the output directory).
 *
 * Reproducibility: the UUID and the directory hash seed come from the build
 * key, E2FSPROGS_FAKE_TIME pins the superblock's and lost+found's times, -T
 * default pins the size-dependent defaults, and the size and inode count are
 * a function of the tree. mke2fs 1.47.0 copies each file's ctime and atime
 * as it finds them (the time the build wrote them), so a debugfs pass in the
 * same sandbox sets both to SOURCE_DATE_EPOCH on every inode; mtimes are
 * already clamped by normalize. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/emit.h"
#include "image/tarball.h"
#include "util/alloc.h"
#include "util/fs.h"

struct walk {
	struct kiln_buf cmds; /* debugfs commands */
	uint64_t bytes;       /* data rounded up to 4 KiB blocks */
	uint64_t inodes;
	const char *bad; /* first name debugfs cannot be told (a '"' or a newline) */
};

static void add_inode(struct walk *w, const char *path, const struct stat *st, int64_t epoch)
{
	w->inodes++;
	if (S_ISREG(st->st_mode) || S_ISDIR(st->st_mode) || S_ISLNK(st->st_mode))
		w->bytes += ((uint64_t)st->st_size + 4095) / 4096 * 4096;
	if (strpbrk(path, "\"\n")) {
		if (!w->bad)
			w->bad = xstrdup(path);
		return;
	}
	kiln_buf_printf(&w->cmds, "sif \"%s\" ctime @%" PRId64 "\nsif \"%s\" atime @%" PRId64 "\n",
	                path, epoch, path, epoch);
}

/* Depth-first over dirfd, never following a symlink (the tree is the
 * recipe's: a link must not lead the walk onto the host). */
static int walk_dir(struct walk *w, int dirfd, const char *path, int64_t epoch, unsigned depth)
{
	if (depth > KILN_TARBALL_MAX_DEPTH) /* the tar output's limit: fds stay bounded */
		return -ELOOP;
	int dup_fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (dup_fd < 0)
		return -errno;
	DIR *d = fdopendir(dup_fd);
	if (!d) {
		close(dup_fd);
		return -errno;
	}
	rewinddir(d); /* the duplicate shares the offset of a directory read before */
	int rc = 0;
	for (struct dirent *de; rc == 0 && (de = readdir(d));) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = -errno;
			break;
		}
		_cleanup_free_ char *sub = xasprintf("%s/%s", path, de->d_name);
		add_inode(w, sub, &st, epoch);
		if (!S_ISDIR(st.st_mode))
			continue;
		_cleanup_close_ int fd =
		    openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		rc = walk_dir(w, fd, sub, epoch, depth + 1);
	}
	closedir(d);
	return rc;
}

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" from 32 hex digits. */
static char *uuid_from_hex(const char *h)
{
	return xasprintf("%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

int kiln_emit_ext4(const struct kiln_emit_ctx *c, const char *build_key, const char *dst,
                   struct kiln_error **err)
{
	/* The root: one inode, one block; its children are "/name". */
	struct walk w = {KILN_BUF_INIT, 4096, 1, NULL};
	kiln_buf_printf(&w.cmds, "sif / ctime @%" PRId64 "\nsif / atime @%" PRId64 "\n", c->epoch,
	                c->epoch);
	int rc = walk_dir(&w, c->rootfd, "", c->epoch, 0);
	if (rc < 0) {
		kiln_buf_free(&w.cmds);
		return rc == -ELOOP ? kiln_error_set(err, ELOOP,
		                                     "ext4 output: the tree is deeper than %d "
		                                     "directories",
		                                     KILN_TARBALL_MAX_DEPTH)
		                    : kiln_error_set_errno(
		                          err, -rc, "ext4 output: cannot walk the root tree");
	}
	if (w.bad) {
		rc = kiln_error_set(err, EINVAL,
		                    "ext4 output: the image path %s has a '\"' or a newline in its "
		                    "name, which debugfs cannot set the times of (use \"tar\")",
		                    w.bad);
		free((char *)w.bad);
		kiln_buf_free(&w.cmds);
		return rc;
	}

	_cleanup_rmtree_ char *out = xasprintf("%s/ext4-out", c->scratch);
	rc = kiln_image_mkdir_sandbox(out, err);
	_cleanup_free_ char *cmdfile = xasprintf("%s/times.debugfs", out);
	if (rc == 0)
		rc = kiln_image_write_text(cmdfile, w.cmds.data, w.cmds.len, 0644, err);
	kiln_buf_free(&w.cmds);
	if (rc < 0)
		return rc;

	/* Documented in docs/image.md: data rounded to 4 KiB blocks plus a
	 * quarter plus 16 MiB (metadata, journal, room to write), whole MiB;
	 * inodes: the tree's plus a quarter plus 1024. */
	uint64_t size_mb = (w.bytes + w.bytes / 4 + (16u << 20) + (1u << 20) - 1) >> 20;
	_cleanup_free_ char *size = xasprintf("%" PRIu64 "M", size_mb);
	_cleanup_free_ char *inodes = xasprintf("%" PRIu64, w.inodes + w.inodes / 4 + 1024);
	_cleanup_free_ char *uuid = uuid_from_hex(build_key);
	_cleanup_free_ char *seed = uuid_from_hex(build_key + 32);
	_cleanup_free_ char *ext = xasprintf("hash_seed=%s,root_owner=0:0", seed);
	_cleanup_free_ char *fake = xasprintf("E2FSPROGS_FAKE_TIME=%" PRId64, c->epoch);
	const char *env[] = {fake};
	const char *mke2fs[] = {
	    "mke2fs", "-q", "-F", "-t", "ext4", "-T", "default", "-b", "4096", "-L",
	    "kiln",   "-U", uuid, "-E", ext,    "-N", inodes,    "-d", "/srv", "/mnt/root.ext4",
	    size,     NULL};
	const char *debugfs[] = {"debugfs",        "-w", "-f", "/mnt/times.debugfs",
	                         "/mnt/root.ext4", NULL};
	struct kiln_sandbox_bind binds[] = {
	    {c->merged, "/srv", true},
	    {out, "/mnt", false},
	};
	struct kiln_image_run r = {
	    .what = "mke2fs",
	    .binds = binds,
	    .n_binds = 2,
	    .argv = mke2fs,
	    .env = env,
	    .n_env = ELEMENTSOF(env),
	    .timeout_s = 3600,
	    .epoch = c->epoch,
	};
	if ((rc = kiln_image_sandbox(c->hooks, &r, err)) < 0)
		return rc;
	r.what = "debugfs (ext4 times)";
	r.argv = debugfs;
	struct kiln_buf quiet = KILN_BUF_INIT; /* debugfs echoes every command */
	r.capture = &quiet;
	rc = kiln_image_sandbox(c->hooks, &r, err);
	kiln_buf_free(&quiet);
	if (rc < 0)
		return rc;
	_cleanup_free_ char *src = xasprintf("%s/root.ext4", out);
	if (chown(src, 0, 0) < 0 || chmod(src, 0644) < 0 || rename(src, dst) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot move into place", dst);
	return 0;
}
