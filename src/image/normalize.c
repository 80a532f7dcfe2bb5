#include "image/normalize.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"

#define MAX_DEPTH 256

enum action {
	EMPTY,        /* truncate the matching regular files */
	REMOVE,       /* delete the matching entries (directories recursively) */
	REMOVE_FILES, /* below the directory, delete every non-directory */
	EMPTY_FILES,  /* below the directory, truncate every regular file */
};

/* The checklist (DESIGN.md "Reference facts"). dir is root-relative and is
 * reached without following symlinks; glob is matched against its entries
 * with fnmatch(3). */
static const struct rule {
	const char *dir;
	const char *glob;
	enum action act;
	bool regular_only; /* leave a symlink of that name alone */
} rules[] = {
    /* Random per machine. Emptied, not removed: systemd treats an empty
     * file as "first boot" and generates a fresh id there. */
    {"etc", "machine-id", EMPTY, true},
    /* D-Bus's copy of it (or a link to it). */
    {"var/lib/dbus", "machine-id", REMOVE, false},
    /* Records inode numbers and mtimes of the libraries it saw. */
    {"var/cache/ldconfig", "aux-cache", REMOVE, false},
    /* Package indices: a snapshot of the mirror on the build day. The
     * directories (partial/) stay so apt finds its layout. */
    {"var/lib/apt/lists", "*", REMOVE_FILES, false},
    /* pkgcache.bin/srcpkgcache.bin embed mtimes and hashes of the lists. */
    {"var/cache/apt", "*.bin", REMOVE, false},
    /* Install logs carry wall-clock times, host and build details; files
     * are kept (empty) so their owners and modes survive for the daemons
     * that append to them. */
    {"var/log", "*", EMPTY_FILES, false},
    /* "-old" backups dpkg and debconf leave behind: the previous state,
     * i.e. the state before this build's installs. */
    {"var/lib/dpkg", "*-old", REMOVE, false},
    {"var/cache/debconf", "*-old", REMOVE, false},
    /* shadow-utils backups of the account files, from useradd & co. */
    {"etc", "passwd-", REMOVE, false},
    {"etc", "group-", REMOVE, false},
    {"etc", "shadow-", REMOVE, false},
    {"etc", "gshadow-", REMOVE, false},
    {"etc", "subuid-", REMOVE, false},
    {"etc", "subgid-", REMOVE, false},
    /* Generated at install time: random, and a private key shared by
     * every machine booted from the image. */
    {"etc/ssh", "ssh_host_*", REMOVE, false},
    /* pacman (archlinux bases): the sync databases are a snapshot of the
     * mirror, the package cache holds what a build step downloaded, and
     * the keyring carries a local secret key made by pacman-key --init that
     * every machine booted from the image would share (pacman-key --init
     * --populate at first boot makes a fresh one). Install dates in
     * local/<pkg>/desc are the backend's (image/pacman.c). */
    {"var/lib/pacman/sync", "*", REMOVE_FILES, false},
    {"var/cache/pacman/pkg", "*", REMOVE_FILES, false},
    {"etc/pacman.d", "gnupg", REMOVE, false},
    /* Copied from the build host by the bootstrap: its resolvers and its
     * name. A symlink (systemd-resolved's) is package content and stays. */
    {"etc", "resolv.conf", REMOVE, true},
    {"etc", "hostname", REMOVE, true},
};

/* Removed wherever it appears: byte-compiled Python records source mtimes
 * and is rebuilt on demand. */
static const char *const anywhere[] = {"__pycache__"};

struct norm {
	int64_t epoch;
	const char *const *keep;
	struct kiln_normalize_stats stats;
};

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

static bool kept(const struct norm *n, const char *rel)
{
	for (const char *const *k = n->keep; k && *k; k++) {
		const char *p = *k;
		while (*p == '/')
			p++;
		if (strcmp(p, rel) == 0)
			return true;
	}
	return false;
}

/* Lists a directory's entries (without "." and ".."), sorted so errors and
 * stats do not depend on readdir order. */
static int list_dir(int dirfd, char ***ret, size_t *ret_n)
{
	int dupfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	if (dupfd < 0)
		return -errno;
	_cleanup_(closedirp) DIR *d = fdopendir(dupfd);
	if (!d) {
		safe_close(dupfd);
		return -errno;
	}
	rewinddir(d); /* the dup shares dirfd's offset */
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	while ((errno = 0, de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xstrdup(de->d_name);
	}
	if (errno) {
		int e = errno;
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return -e;
	}
	*ret = names;
	*ret_n = n;
	return 0;
}

static void names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static int remove_at(int dirfd, const char *name, const char *rel, unsigned depth,
                     struct kiln_error **err)
{
	if (unlinkat(dirfd, name, 0) == 0)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return kiln_error_set_errno(err, errno, "/%s: cannot remove", rel);
	if (depth > MAX_DEPTH)
		return kiln_error_set(err, ELOOP, "/%s: deeper than %d levels", rel, MAX_DEPTH);
	_cleanup_close_ int sub =
	    openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return kiln_error_set_errno(err, errno, "/%s: cannot remove", rel);
	char **names = NULL;
	size_t n = 0;
	int r = list_dir(sub, &names, &n);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "/%s: cannot read directory", rel);
	for (size_t i = 0; r == 0 && i < n; i++) {
		_cleanup_free_ char *crel = xasprintf("%s/%s", rel, names[i]);
		r = remove_at(sub, names[i], crel, depth + 1, err);
	}
	names_free(names, n);
	if (r == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
		r = kiln_error_set_errno(err, errno, "/%s: cannot remove", rel);
	return r;
}

static int empty_at(struct norm *n, int dirfd, const char *name, const char *rel,
                    struct kiln_error **err)
{
	/* O_NOFOLLOW and O_NONBLOCK: never truncate through a link, never
	 * hang on a FIFO; fstat confirms what was opened. */
	_cleanup_close_ int fd =
	    openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "/%s: cannot open", rel);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_error_set_errno(err, errno, "/%s: cannot stat", rel);
	if (!S_ISREG(st.st_mode) || st.st_size == 0)
		return 0;
	if (ftruncate(fd, 0) < 0)
		return kiln_error_set_errno(err, errno, "/%s: cannot truncate", rel);
	n->stats.emptied++;
	return 0;
}

/* REMOVE_FILES / EMPTY_FILES below dirfd (rel names it). */
static int apply_below(struct norm *n, int dirfd, const char *rel, enum action act, unsigned depth,
                       struct kiln_error **err)
{
	if (depth > MAX_DEPTH)
		return kiln_error_set(err, ELOOP, "/%s: deeper than %d levels", rel, MAX_DEPTH);
	char **names = NULL;
	size_t cnt = 0;
	int r = list_dir(dirfd, &names, &cnt);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "/%s: cannot read directory", rel);
	for (size_t i = 0; r == 0 && i < cnt; i++) {
		_cleanup_free_ char *crel = xasprintf("%s/%s", rel, names[i]);
		struct stat st;
		if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = kiln_error_set_errno(err, errno, "/%s: cannot stat", crel);
			break;
		}
		if (kept(n, crel))
			continue;
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub = openat(
			    dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				r = kiln_error_set_errno(err, errno, "/%s: cannot open", crel);
			else
				r = apply_below(n, sub, crel, act, depth + 1, err);
		} else if (act == REMOVE_FILES) {
			r = remove_at(dirfd, names[i], crel, depth, err);
			n->stats.removed += r == 0;
		} else if (S_ISREG(st.st_mode)) {
			r = empty_at(n, dirfd, names[i], crel, err);
		}
	}
	names_free(names, cnt);
	return r;
}

/* Opens a root-relative directory one component at a time with O_NOFOLLOW:
 * a rule never acts through a symlink. -ENOENT/-ENOTDIR/-ELOOP mean "not
 * there as a real directory". */
static int open_rule_dir(int rootfd, const char *dir)
{
	_cleanup_free_ char *p = xstrdup(dir);
	int cur = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
	if (cur < 0)
		return -errno;
	for (char *c = p; *c;) {
		char *e = strchrnul(c, '/');
		bool last = !*e;
		*e = '\0';
		int next = openat(cur, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int saved = errno;
		safe_close(cur);
		if (next < 0)
			return -saved;
		cur = next;
		c = last ? e : e + 1;
	}
	return cur;
}

static int apply_rule(struct norm *n, int rootfd, const struct rule *rule, struct kiln_error **err)
{
	_cleanup_close_ int dfd = open_rule_dir(rootfd, rule->dir);
	if (dfd == -ENOENT || dfd == -ENOTDIR || dfd == -ELOOP)
		return 0;
	if (dfd < 0)
		return kiln_error_set_errno(err, -dfd, "/%s: cannot open", rule->dir);
	if (rule->act == REMOVE_FILES || rule->act == EMPTY_FILES)
		return apply_below(n, dfd, rule->dir, rule->act, 1, err);

	char **names = NULL;
	size_t cnt = 0;
	int r = list_dir(dfd, &names, &cnt);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "/%s: cannot read directory", rule->dir);
	for (size_t i = 0; r == 0 && i < cnt; i++) {
		if (fnmatch(rule->glob, names[i], 0) != 0)
			continue;
		_cleanup_free_ char *rel = xasprintf("%s/%s", rule->dir, names[i]);
		struct stat st;
		if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = kiln_error_set_errno(err, errno, "/%s: cannot stat", rel);
			break;
		}
		if (kept(n, rel) || (rule->regular_only && !S_ISREG(st.st_mode)))
			continue;
		if (rule->act == EMPTY) {
			r = empty_at(n, dfd, names[i], rel, err);
		} else {
			r = remove_at(dfd, names[i], rel, 1, err);
			n->stats.removed += r == 0;
		}
	}
	names_free(names, cnt);
	return r;
}

/* Walks the whole tree: removes `anywhere` directories, then (second pass,
 * after every removal has touched its parent) clamps mtimes. */
static int walk(struct norm *n, int dirfd, const char *rel, bool clamp, unsigned depth,
                struct kiln_error **err)
{
	if (depth > MAX_DEPTH)
		return kiln_error_set(err, ELOOP, "/%s: deeper than %d levels", rel, MAX_DEPTH);
	char **names = NULL;
	size_t cnt = 0;
	int r = list_dir(dirfd, &names, &cnt);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "/%s: cannot read directory", rel);
	for (size_t i = 0; r == 0 && i < cnt; i++) {
		_cleanup_free_ char *crel =
		    *rel ? xasprintf("%s/%s", rel, names[i]) : xstrdup(names[i]);
		struct stat st;
		if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = kiln_error_set_errno(err, errno, "/%s: cannot stat", crel);
			break;
		}
		if (!clamp && S_ISDIR(st.st_mode) && !kept(n, crel)) {
			bool hit = false;
			for (size_t k = 0; k < ELEMENTSOF(anywhere); k++)
				hit |= strcmp(names[i], anywhere[k]) == 0;
			if (hit) {
				r = remove_at(dirfd, names[i], crel, depth, err);
				n->stats.removed += r == 0;
				continue;
			}
		}
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub = openat(
			    dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				r = kiln_error_set_errno(err, errno, "/%s: cannot open", crel);
				break;
			}
			r = walk(n, sub, crel, clamp, depth + 1, err);
			if (r < 0)
				break;
		}
		if (clamp && (st.st_mtim.tv_sec > n->epoch ||
		              (st.st_mtim.tv_sec == n->epoch && st.st_mtim.tv_nsec))) {
			/* AT_SYMLINK_NOFOLLOW: the link's own time, never its
			 * target's (which may be outside the tree). */
			struct timespec ts[2] = {{n->epoch, 0}, {n->epoch, 0}};
			if (utimensat(dirfd, names[i], ts, AT_SYMLINK_NOFOLLOW) < 0) {
				r = kiln_error_set_errno(err, errno, "/%s: cannot set mtime", crel);
				break;
			}
			n->stats.clamped++;
		}
	}
	names_free(names, cnt);
	return r;
}

int kiln_normalize_tree(int rootfd, int64_t source_date_epoch, const char *const *keep,
                        struct kiln_normalize_stats *ret_stats, struct kiln_error **err)
{
	if (source_date_epoch < 0)
		return kiln_error_set(err, EINVAL,
		                      "normalize: SOURCE_DATE_EPOCH must not be negative");
	struct norm n = {.epoch = source_date_epoch, .keep = keep};
	int r = 0;
	for (size_t i = 0; r == 0 && i < ELEMENTSOF(rules); i++)
		r = apply_rule(&n, rootfd, &rules[i], err);
	if (r == 0)
		r = walk(&n, rootfd, "", false, 0, err);
	if (r == 0)
		r = walk(&n, rootfd, "", true, 0, err);
	struct stat st;
	if (r == 0 && fstat(rootfd, &st) < 0)
		r = kiln_error_set_errno(err, errno, "/: cannot stat");
	if (r == 0 &&
	    (st.st_mtim.tv_sec > n.epoch || (st.st_mtim.tv_sec == n.epoch && st.st_mtim.tv_nsec))) {
		struct timespec ts[2] = {{n.epoch, 0}, {n.epoch, 0}};
		if (futimens(rootfd, ts) < 0)
			r = kiln_error_set_errno(err, errno, "/: cannot set mtime");
		else
			n.stats.clamped++;
	}
	if (r < 0) {
		kiln_error_prefix(err, "normalize");
		return r;
	}
	if (ret_stats)
		*ret_stats = n.stats;
	return 0;
}
