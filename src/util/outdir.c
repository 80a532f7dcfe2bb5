#include "util/outdir.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/fs.h"

int kiln_outdir_open(const char *path, struct kiln_outdir *ret, struct kiln_error **err)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create output directory", path);
	/* The directory itself is not followed either: a symlink planted at a
	 * shared name (/tmp/out) would send root's writes anywhere it points
	 * (issue 11 review, item 4). Trailing slashes are dropped: with one,
	 * O_NOFOLLOW would follow the link. */
	_cleanup_free_ char *p = xstrdup(path);
	for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
		p[n - 1] = '\0';
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISLNK(st.st_mode))
			return kiln_error_set(
			    err, ELOOP,
			    "%s: output directory is a symbolic link: refusing to "
			    "follow it (give the directory it points to)",
			    path);
		errno = ENOTDIR;
	}
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot open output directory", path);
	*ret = (struct kiln_outdir){fd, xstrdup(path)};
	return 0;
}

void kiln_outdir_close(struct kiln_outdir *d)
{
	d->fd = safe_close(d->fd);
	free(d->path);
	d->path = NULL;
}

int kiln_outdir_begin(const struct kiln_outdir *d, struct kiln_outfile *f, struct kiln_error **err)
{
	/* A name taken (by a planted file or symlink, or a concurrent kiln)
	 * is skipped, never opened: O_EXCL fails on any existing entry. */
	for (int attempt = 0; attempt < 16; attempt++) {
		uint64_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			return kiln_error_set_errno(err, errno, "getrandom");
		snprintf(f->tmp, sizeof(f->tmp), ".kiln-out-%016llx.tmp", (unsigned long long)rnd);
		int fd =
		    openat(d->fd, f->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0) {
			f->fd = fd;
			return 0;
		}
		if (errno != EEXIST)
			return kiln_error_set_errno(err, errno, "%s: cannot create a file",
			                            d->path);
	}
	return kiln_error_set(err, EEXIST, "%s: no free temporary name", d->path);
}

void kiln_outdir_abort(const struct kiln_outdir *d, struct kiln_outfile *f)
{
	if (f->fd < 0)
		return;
	unlinkat(d->fd, f->tmp, 0);
	f->fd = safe_close(f->fd);
}

int kiln_outdir_commit(const struct kiln_outdir *d, struct kiln_outfile *f, const char *name,
                       mode_t mode, struct kiln_error **err)
{
	int r = 0;
	if (fchmod(f->fd, mode) < 0 || fsync(f->fd) < 0)
		r = kiln_error_set_errno(err, errno, "%s/%s: cannot write", d->path, name);
	else if (renameat(d->fd, f->tmp, d->fd, name) < 0)
		r = kiln_error_set_errno(err, errno, "%s/%s: cannot rename into place", d->path,
		                         name);
	if (r < 0) {
		kiln_outdir_abort(d, f);
		return r;
	}
	f->fd = safe_close(f->fd);
	return 0;
}

int kiln_outdir_write(const struct kiln_outdir *d, const char *name, const void *data, size_t len,
                      mode_t mode, struct kiln_error **err)
{
	struct kiln_outfile f = KILN_OUTFILE_INIT;
	int r = kiln_outdir_begin(d, &f, err);
	if (r < 0)
		return r;
	r = kiln_write_all(f.fd, data, len);
	if (r < 0) {
		kiln_outdir_abort(d, &f);
		return kiln_error_set_errno(err, -r, "%s/%s: cannot write", d->path, name);
	}
	return kiln_outdir_commit(d, &f, name, mode, err);
}

static int copy_rw(int in, int out)
{
	static __thread char buf[1 << 16];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		int r = kiln_write_all(out, buf, (size_t)n);
		if (r < 0)
			return r;
	}
}

int kiln_copy_fd(int in, int out)
{
	/* A reflink shares blocks copy-on-write: instant, and a later write to
	 * either file leaves the other intact (unlike a hard link). */
	if (ioctl(out, FICLONE, in) == 0)
		return 0;
	if (lseek(in, 0, SEEK_SET) < 0 || ftruncate(out, 0) < 0 || lseek(out, 0, SEEK_SET) < 0)
		return -errno;
	bool first = true;
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n > 0) {
			first = false;
			continue;
		}
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		/* Not supported between these file systems (or kernels before
		 * 5.3 across them): plain copy, from where it stopped. */
		if (first && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP ||
		              errno == ENOSYS || errno == EBADF))
			return copy_rw(in, out);
		return -errno;
	}
}

int kiln_outdir_copy_fd(const struct kiln_outdir *d, const char *name, int srcfd, mode_t mode,
                        struct kiln_error **err)
{
	struct kiln_outfile f = KILN_OUTFILE_INIT;
	int r = kiln_outdir_begin(d, &f, err);
	if (r < 0)
		return r;
	r = kiln_copy_fd(srcfd, f.fd);
	if (r < 0) {
		kiln_outdir_abort(d, &f);
		return kiln_error_set_errno(err, -r, "%s/%s: cannot copy", d->path, name);
	}
	return kiln_outdir_commit(d, &f, name, mode, err);
}

int kiln_outdir_copy_file(const struct kiln_outdir *d, const char *name, const char *src,
                          mode_t mode, struct kiln_error **err)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot open", src);
	return kiln_outdir_copy_fd(d, name, in, mode, err);
}

int kiln_outdir_adopt(const struct kiln_outdir *d, const char *name, const char *src, mode_t mode,
                      struct kiln_error **err)
{
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot open", src);
	if (fchmod(in, mode) < 0 || fsync(in) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot write", src);
	/* The same file system: the file itself moves, in one step, over the
	 * final name (which rename replaces, never follows). */
	if (renameat(AT_FDCWD, src, d->fd, name) == 0)
		return 0;
	if (errno != EXDEV)
		return kiln_error_set_errno(err, errno, "%s/%s: cannot rename into place", d->path,
		                            name);
	int r = kiln_outdir_copy_fd(d, name, in, mode, err);
	if (r == 0)
		unlink(src);
	return r;
}
