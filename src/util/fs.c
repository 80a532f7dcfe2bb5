#include "util/fs.h"
#include "util/walk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/buf.h"

int kiln_read_fd(int fd, size_t max, char **ret, size_t *ret_len, struct kiln_error **err)
{
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	for (;;) {
		kiln_buf_reserve(&b, 65536);
		b.data[b.len] = '\0'; /* an empty read is "", not whatever malloc gave */
		ssize_t n = read(fd, b.data + b.len, b.cap - b.len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			return kiln_error_set_errno(err, e, "read failed");
		}
		if (n == 0)
			break;
		b.len += (size_t)n;
		b.data[b.len] = '\0';
		if (b.len > max) {
			return kiln_error_set(err, EFBIG, "larger than the limit of %zu bytes",
			                      max);
		}
	}
	*ret = kiln_buf_steal(&b, ret_len);
	return 0;
}

int kiln_read_file(const char *path, size_t max, char **ret, size_t *ret_len,
                   struct kiln_error **err)
{
	if (strcmp(path, "-") == 0)
		return kiln_read_fd(STDIN_FILENO, max, ret, ret_len, err);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "cannot open");
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_error_set_errno(err, errno, "cannot stat");
	if (S_ISDIR(st.st_mode))
		return kiln_error_set(err, EISDIR, "is a directory");
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max)
		return kiln_error_set(err, EFBIG, "larger than the limit of %zu bytes", max);
	return kiln_read_fd(fd, max, ret, ret_len, err);
}

int kiln_open_in_root(int rootfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	for (;;) {
		long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
}

int kiln_mkdir_p_in_root(int rootfd, const char *relpath, mode_t mode)
{
	_cleanup_free_ char *p = xstrdup(relpath);
	_cleanup_close_ int cur = kiln_open_in_root(rootfd, ".", O_DIRECTORY | O_RDONLY, 0);
	if (cur < 0)
		return cur;
	char *s = p;
	while (*s) {
		while (*s == '/')
			s++;
		if (!*s)
			break;
		char *e = strchr(s, '/');
		if (e)
			*e = '\0';
		if (strcmp(s, "..") == 0 || strcmp(s, ".") == 0)
			return -EINVAL;
		if (mkdirat(cur, s, mode) < 0 && errno != EEXIST)
			return -errno;
		/* Re-resolve the prefix from the root: if s is a symlink, it is
		 * followed only within rootfd. */
		int nfd = kiln_open_in_root(rootfd, p, O_DIRECTORY | O_RDONLY, 0);
		if (nfd < 0)
			return nfd;
		safe_close(cur);
		cur = nfd;
		if (!e)
			break;
		*e = '/';
		s = e + 1;
	}
	return TAKE_FD(cur);
}

int kiln_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int kiln_write_file_atomic_at(int dirfd, const char *name, const void *data, size_t len,
                              mode_t mode)
{
	uint64_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint64_t)getpid() * 2654435761u;
	_cleanup_free_ char *tmp = xasprintf(".#kiln-%016llx.tmp", (unsigned long long)rnd);
	_cleanup_close_ int fd =
	    openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	int r = kiln_write_all(fd, data, len);
	if (r == 0 && fchmod(fd, mode) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(dirfd, tmp, 0);
	return r;
}

int kiln_write_file_in_root(int rootfd, const char *relpath, const void *data, size_t len,
                            mode_t mode)
{
	while (*relpath == '/')
		relpath++;
	const char *slash = strrchr(relpath, '/');
	const char *base = slash ? slash + 1 : relpath;
	if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return -EINVAL;
	_cleanup_close_ int dfd = -1;
	if (slash) {
		_cleanup_free_ char *dir = xstrndup(relpath, (size_t)(slash - relpath));
		dfd = kiln_mkdir_p_in_root(rootfd, dir, 0755);
	} else {
		dfd = kiln_open_in_root(rootfd, ".", O_DIRECTORY | O_RDONLY, 0);
	}
	if (dfd < 0)
		return dfd;
	return kiln_write_file_atomic_at(dfd, base, data, len, mode);
}

static int rm_entry(const struct kiln_walk_entry *e, void *ud)
{
	(void)ud;
	int flags = S_ISDIR(e->st->st_mode) ? AT_REMOVEDIR : 0;
	return unlinkat(e->dirfd, e->name, flags) < 0 && errno != ENOENT ? -errno : 0;
}

int kiln_rmtree(const char *path)
{
	int r = kiln_walk(AT_FDCWD, path, KILN_WALK_DEPTH, rm_entry, NULL);
	return r == -ENOENT ? 0 : r;
}
