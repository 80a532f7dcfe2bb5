#include "store/cas.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/fs.h"

const char *kiln_state_dir_default(void)
{
	const char *s = getenv("KILN_STATE_DIR");
	return s && *s ? s : "/var/lib/kiln";
}

static int mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = xstrdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int kiln_state_init(const char *state_dir, struct kiln_error **err)
{
	static const char *const subdirs[] = {"",        "/cas/sha256", "/bases",
	                                      "/builds", "/logs",       "/locks"};
	for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
		_cleanup_free_ char *p = xasprintf("%s%s", state_dir, subdirs[i]);
		/* 0711: build trees below are owned by the sandbox's id range and
		 * must not be listable by other host users. */
		int r = mkdir_p(p, 0711);
		if (r < 0)
			return kiln_error_set_errno(err, -r, "%s: cannot create state directory",
			                            p);
	}
	return 0;
}

char *kiln_cas_path(const char *state_dir, const char *hex)
{
	return xasprintf("%s/cas/sha256/%.2s/%s", state_dir, hex, hex);
}

bool kiln_cas_has(const char *state_dir, const char *hex)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	return access(p, F_OK) == 0;
}

static int copy_fd(int in, int out)
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
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -errno;
			off += w;
		}
	}
}

int kiln_cas_put_file(const char *state_dir, const char *path, const char *expect_hex,
                      char ret_hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size,
                      struct kiln_error **err)
{
	char hex[KILN_SHA256_HEX_LEN + 1];
	uint64_t size = 0;
	int r = kiln_sha256_file(path, hex, &size);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot read", path);
	if (expect_hex && strcmp(hex, expect_hex) != 0)
		return kiln_error_set(err, EBADMSG, "%s: SHA-256 mismatch: expected %s, got %s",
		                      path, expect_hex, hex);
	_cleanup_free_ char *dst = kiln_cas_path(state_dir, hex);
	if (access(dst, F_OK) != 0) {
		_cleanup_free_ char *dir = xasprintf("%s/cas/sha256/%.2s", state_dir, hex);
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
		_cleanup_free_ char *tmp = xasprintf("%s/.tmp-%s-%d", dir, hex, (int)getpid());
		unlink(tmp);
		{
			/* A copy, never a hardlink: the store's blob must not change
			 * when the caller's file does. */
			_cleanup_close_ int in = open(path, O_RDONLY | O_CLOEXEC);
			_cleanup_close_ int out =
			    open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
			if (in < 0 || out < 0)
				return kiln_error_set_errno(err, errno,
				                            "%s: cannot copy into the store", path);
			r = copy_fd(in, out);
			if (r == 0 && fsync(out) < 0)
				r = -errno;
			if (r < 0) {
				unlink(tmp);
				return kiln_error_set_errno(err, -r,
				                            "%s: cannot copy into the store", path);
			}
		}
		/* The blob is immutable: whoever owned the source, the store copy is
		 * root's and read-only. */
		if (chown(tmp, 0, 0) < 0 || chmod(tmp, 0444) < 0 || rename(tmp, dst) < 0) {
			int e = errno;
			unlink(tmp);
			return kiln_error_set_errno(err, e, "%s: cannot store", dst);
		}
	}
	if (ret_hex)
		memcpy(ret_hex, hex, sizeof(hex));
	if (ret_size)
		*ret_size = size;
	return 0;
}
