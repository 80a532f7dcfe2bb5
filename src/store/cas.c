#include "store/cas.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
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
	_cleanup_buf_ struct kiln_buf notice = KILN_BUF_INIT;
	for (size_t i = 0; i < ELEMENTSOF(secured); i++) {
		_cleanup_free_ char *p = xasprintf("%s%s", state_dir, secured[i].rel);
		_cleanup_close_ int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
		                                     (i == 0 ? O_DIRECTORY : 0));
		if (fd < 0 && errno == ENOENT && i > 0)
			continue;
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			return kiln_error_set_errno(err, errno, "%s: cannot check", p);
		}
		/* Someone else's directory or database is not ours to trust: its
		 * owner could read or swap anything kiln puts there. */
		if (st.st_uid != geteuid()) {
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
			return kiln_error_set_errno(err, errno, "%s: cannot restrict mode %04o", p,
			                            (unsigned)mode);
		}
		kiln_buf_printf(
		    &notice, "%s%s: mode was %04o, other local users could read %s; now %04o",
		    notice.len ? "\n" : "", p, (unsigned)mode, secured[i].what, (unsigned)want);
	}
	*ret_notice = notice.len ? kiln_buf_steal(&notice, NULL) : NULL;
	return 0;
}

/* kiln serve --store DIR: the blobs of every host in one directory. Set
 * once at start-up, before any thread exists, and never changed: readers
 * need no lock. */
static char *shared_store;

int kiln_cas_set_store(const char *dir, struct kiln_error **err)
{
	_cleanup_free_ char *sub = xasprintf("%s/sha256", dir);
	/* 0700 like the state directory: the blobs include contexts and
	 * artifacts with whatever secrets their recipes baked in. */
	int r = mkdir_p(sub, 0700, 0700);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "store %s: cannot create", dir);
	free(shared_store);
	shared_store = xstrdup(dir);
	return 0;
}

/* The directory holding sha256/: the shared store, or STATE/cas. */
static char *cas_root(const char *state_dir)
{
	return shared_store ? xstrdup(shared_store) : xasprintf("%s/cas", state_dir);
}

char *kiln_cas_path(const char *state_dir, const char *hex)
{
	_cleanup_free_ char *root = cas_root(state_dir);
	return xasprintf("%s/sha256/%.2s/%s", root, hex, hex);
}

bool kiln_cas_has(const char *state_dir, const char *hex)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	return access(p, F_OK) == 0;
}

/* ---- notices ------------------------------------------------------------ */

static struct {
	void (*fn)(void *ud, const char *msg);
	void *ud;
} notify;

void kiln_cas_set_notify(void (*fn)(void *ud, const char *msg), void *ud)
{
	notify.fn = fn;
	notify.ud = ud;
}

static void notifyf(const char *fmt, ...) _printf_(1, 2);
static void notifyf(const char *fmt, ...)
{
	if (!notify.fn)
		return;
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *msg = xvasprintf(fmt, ap);
	va_end(ap);
	notify.fn(notify.ud, msg);
}

/* ---- blob metadata ----------------------------------------------------------- */

static bool stamped(const struct stat *st)
{
	return st->st_mtim.tv_sec == KILN_CAS_MTIME && st->st_mtim.tv_nsec == 0;
}

static int64_t ts_us(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* atime now (kiln's "last used"), mtime the fixed stamp (cas.h). */
static int stamp_fd(int fd)
{
	const struct timespec t[2] = {{0, UTIME_NOW}, {KILN_CAS_MTIME, 0}};
	return futimens(fd, t) < 0 ? -errno : 0;
}

/* Opens a blob for reading without updating its atime (O_NOATIME needs the
 * file's owner or CAP_FOWNER: without it, a plain open). */
static int open_blob(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	return fd < 0 ? -errno : fd;
}

static int hash_fd_from_start(int fd, char hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size)
{
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	int r = kiln_sha256_fd(fd, hex, ret_size);
	if (r == 0 && lseek(fd, 0, SEEK_SET) < 0)
		r = -errno;
	return r;
}

/* ---- writing blobs ------------------------------------------------------------ */

static int copy_fd(int in, int out)
{
	/* In the kernel where it can (no copy through user space); read and
	 * write where copy_file_range does not apply. */
	for (;;) {
		ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
		if (n == 0)
			return 0;
		if (n > 0)
			continue;
		if (errno == EINTR)
			continue;
		if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return -errno;
		break;
	}
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

/* Writes a new blob named hex with the content of in (read from offset 0),
 * replacing whatever is at that name: a temp name of its own, the copy
 * hashed again (the source may have changed since the caller hashed it),
 * fsynced, stamped, renamed. */
static int install_fd(const char *state_dir, const char *hex, int in, const char *what,
                      struct kiln_error **err)
{
	_cleanup_free_ char *root = cas_root(state_dir);
	_cleanup_free_ char *dir = xasprintf("%s/sha256/%.2s", root, hex);
	_cleanup_free_ char *dst = kiln_cas_path(state_dir, hex);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
	/* A temp name of its own per call, never per process: two workers of
	 * one server storing the same blob (two builds fetching the same .deb)
	 * would otherwise unlink and rename each other's half-written file.
	 * O_EXCL on a random name: a collision fails instead of sharing. */
	uint8_t rnd[12];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return kiln_error_set_errno(err, errno, "getrandom");
	char rhex[2 * sizeof(rnd) + 1];
	kiln_hex_encode(rnd, sizeof(rnd), rhex);
	_cleanup_free_ char *tmp = xasprintf("%s/.tmp-%s-%s", dir, hex, rhex);
	_cleanup_close_ int out =
	    open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot copy into the store", what);
	int r = lseek(in, 0, SEEK_SET) < 0 ? -errno : copy_fd(in, out);
	char got[KILN_SHA256_HEX_LEN + 1] = "";
	if (r == 0)
		r = hash_fd_from_start(out, got, NULL);
	if (r == 0 && strcmp(got, hex) != 0) {
		unlink(tmp);
		return kiln_error_set(err, EBADMSG,
		                      "%s: changed while it was copied into the store (sha256 "
		                      "%s, then %s)",
		                      what, hex, got);
	}
	/* The blob is immutable: whoever owned the source, the store copy is
	 * root's and read-only (other users never reach it: the state
	 * directory is 0700), and its mtime is the stamp that says no write
	 * touched it since (cas.h). */
	if (r == 0 && fsync(out) < 0)
		r = -errno;
	if (r == 0 && (fchown(out, 0, 0) < 0 || fchmod(out, 0444) < 0))
		r = -errno;
	if (r == 0)
		r = stamp_fd(out);
	if (r == 0 && rename(tmp, dst) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return kiln_error_set_errno(err, -r, "%s: cannot store %s", what, dst);
	}
	return 0;
}

int kiln_cas_quarantine(const char *state_dir, const char *hex, char **ret_path,
                        struct kiln_error **err)
{
	_cleanup_free_ char *src = kiln_cas_path(state_dir, hex);
	_cleanup_free_ char *root = cas_root(state_dir);
	_cleanup_free_ char *dir = xasprintf("%s/quarantine", root);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
	long long now = (long long)time(NULL);
	/* RENAME_NOREPLACE: a blob quarantined twice in one second keeps both
	 * copies. */
	for (unsigned n = 0; n < 100; n++) {
		_cleanup_free_ char *dst = n ? xasprintf("%s/%s.%lld.%u", dir, hex, now, n)
		                             : xasprintf("%s/%s.%lld", dir, hex, now);
		if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0) {
			if (ret_path)
				*ret_path = TAKE_PTR(dst);
			return 0;
		}
		if (errno != EEXIST)
			return kiln_error_set_errno(err, errno, "%s: cannot move to %s", src, dir);
	}
	return kiln_error_set(err, EEXIST, "%s: cannot move to %s", src, dir);
}

int kiln_cas_put_file(const char *state_dir, const char *path, const char *expect_hex,
                      char ret_hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size,
                      struct kiln_error **err)
{
	/* A copy, never a hardlink: the store's blob must not change when the
	 * caller's file does. */
	_cleanup_close_ int in = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (in < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot read", path);
	char hex[KILN_SHA256_HEX_LEN + 1];
	uint64_t size = 0;
	int r = kiln_sha256_fd(in, hex, &size);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot read", path);
	if (expect_hex && strcmp(hex, expect_hex) != 0)
		return kiln_error_set(err, EBADMSG, "%s: SHA-256 mismatch: expected %s, got %s",
		                      path, expect_hex, hex);
	/* "Already present" is trusted only after the checks of
	 * kiln_cas_open_verified: a store whose blob was changed in place (an
	 * older kiln's hard link into an output directory, a disk error) would
	 * otherwise keep the bad bytes forever, every rebuild finding the name
	 * taken. A bad one is quarantined and replaced by these bytes. */
	_cleanup_error_ struct kiln_error *e2 = NULL;
	int fd = -1;
	r = kiln_cas_open_verified(state_dir, hex, size, &fd, &e2);
	safe_close(fd);
	if (r == -ENOENT || r == -EBADMSG)
		r = install_fd(state_dir, hex, in, path, err);
	else if (r < 0)
		r = kiln_error_set(err, -r, "%s", e2->msg);
	if (r < 0)
		return r;
	if (ret_hex)
		memcpy(ret_hex, hex, sizeof(hex));
	if (ret_size)
		*ret_size = size;
	return 0;
}

/* ---- trusting blobs ------------------------------------------------------------ */

int kiln_cas_open_verified(const char *state_dir, const char *hex, uint64_t expect_size,
                           int *ret_fd, struct kiln_error **err)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	int fd0 = open_blob(p);
	if (fd0 == -ENOENT)
		return -ENOENT;
	if (fd0 < 0)
		return kiln_error_set_errno(err, -fd0, "%s: cannot open", p);
	_cleanup_close_ int fd = fd0;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot stat", p);
	bool size_ok = S_ISREG(st.st_mode) && (expect_size == KILN_CAS_SIZE_UNKNOWN ||
	                                       (uint64_t)st.st_size == expect_size);
	bool good = size_ok && stamped(&st) && st.st_nlink == 1;
	if (size_ok && !good) {
		char got[KILN_SHA256_HEX_LEN + 1];
		int r = hash_fd_from_start(fd, got, NULL);
		if (r < 0)
			return kiln_error_set_errno(err, -r, "%s: cannot read", p);
		good = strcmp(got, hex) == 0;
	}
	if (!good) {
		/* Another thread may have quarantined this inode and stored good
		 * bytes under the name meanwhile: move only what was checked. */
		struct stat now;
		if (lstat(p, &now) < 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev)
			return kiln_error_set(err, EBADMSG,
			                      "store: blob sha256:%s was corrupt and was replaced "
			                      "meanwhile; try again",
			                      hex);
		_cleanup_free_ char *q = NULL;
		int r = kiln_cas_quarantine(state_dir, hex, &q, err);
		if (r < 0)
			return r;
		notifyf("store: blob sha256:%s was corrupt (%s): moved to %s", hex,
		        !S_ISREG(st.st_mode) ? "not a regular file"
		        : size_ok            ? "its content does not hash to its name"
		                             : "its size is not the recorded one",
		        q);
		return kiln_error_set(err, EBADMSG,
		                      "store: blob sha256:%s was corrupt; moved to %s", hex, q);
	}
	if (st.st_nlink > 1) {
		/* Another name shares this inode (an older kiln's hard link in an
		 * output directory): a write there would change the blob. A
		 * private copy takes the store's name; the caller reads the old
		 * inode, which was just verified. */
		int r = install_fd(state_dir, hex, fd, p, err);
		if (r < 0)
			return r;
		notifyf("store: blob sha256:%s had %ju hard links outside the store: replaced by a "
		        "private copy",
		        hex, (uintmax_t)st.st_nlink - 1);
	} else if (stamp_fd(fd) < 0) {
		return kiln_error_set_errno(err, errno, "%s: cannot mark used", p);
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

bool kiln_cas_looks_intact(const char *state_dir, const char *hex, uint64_t expect_size)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	struct stat st;
	return lstat(p, &st) == 0 && S_ISREG(st.st_mode) &&
	       (expect_size == KILN_CAS_SIZE_UNKNOWN || (uint64_t)st.st_size == expect_size);
}

int kiln_cas_check(const char *state_dir, const char *hex, bool *ret_good, uint64_t *ret_size,
                   struct kiln_error **err)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	int fd0 = open_blob(p);
	if (fd0 < 0)
		return kiln_error_set_errno(err, -fd0, "%s: cannot open", p);
	_cleanup_close_ int fd = fd0;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot stat", p);
	char got[KILN_SHA256_HEX_LEN + 1] = "";
	uint64_t size = 0;
	int r = S_ISREG(st.st_mode) ? hash_fd_from_start(fd, got, &size) : 0;
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot read", p);
	*ret_good = S_ISREG(st.st_mode) && strcmp(got, hex) == 0;
	if (ret_size)
		*ret_size = size;
	return 0;
}

int kiln_cas_stamp(const char *state_dir, const char *hex, struct kiln_error **err)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	/* The atime is left as it was: stamping is not a use. */
	const struct timespec t[2] = {{0, UTIME_OMIT}, {KILN_CAS_MTIME, 0}};
	if (utimensat(AT_FDCWD, p, t, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot stamp", p);
	return 0;
}

void kiln_cas_touch(const char *state_dir, const char *hex)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	const struct timespec t[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
	(void)utimensat(AT_FDCWD, p, t, AT_SYMLINK_NOFOLLOW);
}

int kiln_cas_remove(const char *state_dir, const char *hex, struct kiln_error **err)
{
	_cleanup_free_ char *p = kiln_cas_path(state_dir, hex);
	if (unlink(p) < 0)
		return errno == ENOENT ? -ENOENT
		                       : kiln_error_set_errno(err, errno, "%s: cannot remove", p);
	return 0;
}

/* ---- walking the store ------------------------------------------------------------ */

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int kiln_cas_each(const char *state_dir, int (*fn)(void *ud, const struct kiln_cas_entry *e),
                  void *ud, struct kiln_error **err)
{
	_cleanup_free_ char *root = cas_root(state_dir);
	_cleanup_free_ char *top = xasprintf("%s/sha256", root);
	_cleanup_(closedirp) DIR *d = opendir(top);
	if (!d)
		return errno == ENOENT ? 0
		                       : kiln_error_set_errno(err, errno, "%s: cannot list", top);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strlen(de->d_name) != 2 || !is_hex(de->d_name, 2))
			continue;
		_cleanup_free_ char *sub = xasprintf("%s/%s", top, de->d_name);
		_cleanup_(closedirp) DIR *d2 = opendir(sub);
		if (!d2)
			return kiln_error_set_errno(err, errno, "%s: cannot list", sub);
		struct dirent *e;
		while ((e = readdir(d2))) {
			const char *n = e->d_name;
			struct kiln_cas_entry ce = {0};
			if (strlen(n) == KILN_SHA256_HEX_LEN && is_hex(n, KILN_SHA256_HEX_LEN) &&
			    memcmp(n, de->d_name, 2) == 0) {
				memcpy(ce.hex, n, KILN_SHA256_HEX_LEN + 1);
			} else if (strncmp(n, ".tmp-", 5) == 0 &&
			           strlen(n) > 5 + KILN_SHA256_HEX_LEN &&
			           is_hex(n + 5, KILN_SHA256_HEX_LEN)) {
				memcpy(ce.hex, n + 5, KILN_SHA256_HEX_LEN);
				ce.temp = true;
			} else {
				continue;
			}
			_cleanup_free_ char *p = xasprintf("%s/%s", sub, n);
			struct stat st;
			if (lstat(p, &st) < 0) {
				if (errno == ENOENT) /* removed meanwhile */
					continue;
				return kiln_error_set_errno(err, errno, "%s: cannot stat", p);
			}
			ce.path = p;
			ce.size = (uint64_t)st.st_size;
			ce.used_us = ts_us(st.st_atim);
			ce.mtime_us = ts_us(st.st_mtim);
			ce.stamped = stamped(&st);
			int r = fn(ud, &ce);
			if (r != 0)
				return r;
		}
	}
	return 0;
}
