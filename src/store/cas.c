#include "store/cas.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"

const char *kiln_state_dir_default(void)
{
	const char *s = getenv("KILN_STATE_DIR");
	return s && *s ? s : "/var/lib/kiln";
}

/* Parents of the state directory are created 0755 (they are the host's:
 * /var/lib); the state directory and everything kiln creates below it 0700. */
static int mkdir_p(const char *path, mode_t parent_mode, mode_t mode)
{
	_cleanup_free_ char *p = xstrdup(path);
	for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
		p[n - 1] = '\0';
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, parent_mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int kiln_state_init(const char *state_dir, struct kiln_error **err)
{
	static const char *const subdirs[] = {"",        "/cas",  "/cas/sha256", "/bases",
	                                      "/builds", "/logs", "/locks"};
	for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
		_cleanup_free_ char *p = xasprintf("%s%s", state_dir, subdirs[i]);
		/* 0700: the state directory holds recipes with their secrets,
		 * token and session rows, the CSRF key, every artifact and the
		 * builds' upper layers (owned by the sandbox's id range, with
		 * whatever setuid files a step left there). No other local user
		 * may list, read or traverse any of it (docs/service.md, "The
		 * state directory"). kiln itself reaches it as root; the sandbox
		 * gets its layers as mount fds opened by the parent. */
		int r = mkdir_p(p, 0755, 0700);
		if (r < 0)
			return kiln_error_set_errno(err, -r, "%s: cannot create state directory",
			                            p);
	}
	return 0;
}

/* What kiln_state_secure checks: each path (relative to the state
 * directory) and the widest mode it may have. */
static const struct {
	const char *rel;
	mode_t max;
	const char *what;
} secured[] = {
    {"", 0700, "recipes, tokens, artifacts and build trees"},
    {"/kiln.db", 0600, "recipes with their secrets, token and session rows, the CSRF key"},
    {"/kiln.db-wal", 0600, "recent database writes"},
    {"/kiln.db-shm", 0600, "the database's shared index"},
};

int kiln_state_secure(const char *state_dir, char **ret_notice, struct kiln_error **err)
{
	int r = kiln_state_init(state_dir, err);
	if (r < 0)
		return r;
	struct kiln_buf notice = KILN_BUF_INIT;
	for (size_t i = 0; i < ELEMENTSOF(secured); i++) {
		_cleanup_free_ char *p = xasprintf("%s%s", state_dir, secured[i].rel);
		_cleanup_close_ int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
		                                     (i == 0 ? O_DIRECTORY : 0));
		if (fd < 0 && errno == ENOENT && i > 0)
			continue;
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			kiln_buf_free(&notice);
			return kiln_error_set_errno(err, errno, "%s: cannot check", p);
		}
		/* Someone else's directory or database is not ours to trust: its
		 * owner could read or swap anything kiln puts there. */
		if (st.st_uid != geteuid()) {
			kiln_buf_free(&notice);
			return kiln_error_set(err, EPERM,
			                      "%s: owned by uid %u, not by kiln's uid %u: refusing "
			                      "to use it (chown it or choose another --state-dir)",
			                      p, (unsigned)st.st_uid, (unsigned)geteuid());
		}
		mode_t mode = st.st_mode & 07777;
		if (!(mode & ~secured[i].max))
			continue;
		mode_t want = mode & secured[i].max;
		if (fchmod(fd, want) < 0) {
			kiln_buf_free(&notice);
			return kiln_error_set_errno(err, errno, "%s: cannot restrict mode %04o", p,
			                            (unsigned)mode);
		}
		kiln_buf_printf(
		    &notice, "%s%s: mode was %04o, other local users could read %s; now %04o",
		    notice.len ? "\n" : "", p, (unsigned)mode, secured[i].what, (unsigned)want);
	}
	*ret_notice = notice.len ? kiln_buf_steal(&notice, NULL) : NULL;
	kiln_buf_free(&notice);
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
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
		/* A temp name of its own per call, never per process: two workers
		 * of one server storing the same blob (two builds fetching the same
		 * .deb) would otherwise unlink and rename each other's half-written
		 * file. O_EXCL on a random name: a collision fails instead of
		 * sharing. */
		uint8_t rnd[12];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return kiln_error_set_errno(err, errno, "getrandom");
		char rhex[2 * sizeof(rnd) + 1];
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(rhex + 2 * i, 3, "%02x", rnd[i]);
		_cleanup_free_ char *tmp = xasprintf("%s/.tmp-%s-%s", dir, hex, rhex);
		{
			/* A copy, never a hardlink: the store's blob must not change
			 * when the caller's file does. */
			_cleanup_close_ int in = open(path, O_RDONLY | O_CLOEXEC);
			_cleanup_close_ int out =
			    open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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
		 * root's and read-only. (Other users never reach it: the state
		 * directory is 0700.) */
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
