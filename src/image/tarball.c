#include "image/tarball.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"

#define DATA_BUF_SIZE 65536

void kiln_tarball_opts_default(struct kiln_tarball_opts *ret, int64_t source_date_epoch)
{
	*ret = (struct kiln_tarball_opts){
	    .source_date_epoch = source_date_epoch,
	    .id_base = KILN_TARBALL_DEFAULT_ID_BASE,
	    .id_count = KILN_TARBALL_DEFAULT_ID_COUNT,
	    .gzip = false,
	};
}

static void archive_write_freep(struct archive **a)
{
	if (*a)
		archive_write_free(*a);
}

static void linkresolver_freep(struct archive_entry_linkresolver **lr)
{
	if (*lr)
		archive_entry_linkresolver_free(*lr);
}

static void entry_freep(struct archive_entry **e)
{
	if (*e)
		archive_entry_free(*e);
}

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

static int cmp_names(const void *a, const void *b)
{
	/* strcmp compares as unsigned char: byte order, locale-independent. */
	return strcmp(*(char *const *)a, *(char *const *)b);
}

struct writer {
	struct archive *a;
	struct archive_entry_linkresolver *lr;
	const struct kiln_tarball_opts *o;
	char *buf;
};

static int map_id(const struct writer *w, unsigned long host, const char *what, const char *path,
                  int64_t *ret, struct kiln_error **err)
{
	if (host < w->o->id_base || host - w->o->id_base >= w->o->id_count)
		return kiln_error_set(
		    err, ERANGE, "%s: %s %lu is outside the sandbox's id range %u..%lu", path, what,
		    host, w->o->id_base, (unsigned long)w->o->id_base + w->o->id_count - 1);
	*ret = (int64_t)(host - w->o->id_base);
	return 0;
}

static int write_data(struct writer *w, int dirfd, const char *name, const struct stat *st,
                      const char *path, struct kiln_error **err)
{
	_cleanup_close_ int fd =
	    openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot open", path);
	struct stat st2;
	if (fstat(fd, &st2) < 0 || st2.st_ino != st->st_ino || st2.st_dev != st->st_dev)
		return kiln_error_set(err, ESTALE, "%s: replaced while being archived", path);
	off_t left = st->st_size;
	while (left > 0) {
		size_t want = left < DATA_BUF_SIZE ? (size_t)left : DATA_BUF_SIZE;
		ssize_t n = read(fd, w->buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kiln_error_set_errno(err, errno, "%s: read failed", path);
		/* The header already promised st_size bytes. */
		if (n == 0)
			return kiln_error_set(err, ESTALE, "%s: shrank while being archived", path);
		if (archive_write_data(w->a, w->buf, (size_t)n) != n)
			return kiln_error_set(err, EIO, "%s: %s", path, archive_error_string(w->a));
		left -= n;
	}
	return 0;
}

/* Fills e for the object st at path; `name` under dirfd (for readlink). */
static int fill_entry(struct writer *w, struct archive_entry *e, int dirfd, const char *name,
                      const struct stat *st, const char *path, struct kiln_error **err)
{
	int64_t uid = 0, gid = 0;
	int r = map_id(w, st->st_uid, "uid", path, &uid, err);
	if (r == 0)
		r = map_id(w, st->st_gid, "gid", path, &gid, err);
	if (r < 0)
		return r;
	archive_entry_set_pathname(e, path);
	archive_entry_set_mode(e, st->st_mode);
	archive_entry_set_uid(e, uid);
	archive_entry_set_gid(e, gid);
	/* Clamped, not set: files older than the epoch keep their (real,
	 * reproducible) time; anything newer was made during this build. Whole
	 * seconds, so no format is ever tempted into a sub-second record. */
	int64_t epoch = w->o->source_date_epoch;
	archive_entry_set_mtime(e, st->st_mtim.tv_sec < epoch ? st->st_mtim.tv_sec : epoch, 0);
	if (S_ISREG(st->st_mode)) {
		archive_entry_set_size(e, st->st_size);
		if (st->st_nlink > 1) {
			archive_entry_set_dev(e, st->st_dev);
			archive_entry_set_ino64(e, (int64_t)st->st_ino);
			archive_entry_set_nlink(e, (unsigned)st->st_nlink);
		}
	} else if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return kiln_error_set_errno(err, errno, "%s: cannot read symlink", path);
		target[n] = '\0';
		archive_entry_set_symlink(e, target);
	} else if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode)) {
		archive_entry_set_rdev(e, st->st_rdev);
	}
	return 0;
}

static int write_one(struct writer *w, int dirfd, const char *name, const struct stat *st,
                     const char *path, struct kiln_error **err)
{
	_cleanup_(entry_freep) struct archive_entry *e = archive_entry_new();
	if (!e) {
		fputs("kiln: out of memory\n", stderr);
		abort();
	}
	int r = fill_entry(w, e, dirfd, name, st, path, err);
	if (r < 0)
		return r;
	if (S_ISREG(st->st_mode) && st->st_nlink > 1) {
		/* The walk order is fixed, so "first path carries the data" is
		 * deterministic. For tar strategies linkify never hands back a
		 * deferred entry. */
		struct archive_entry *spare = NULL;
		archive_entry_linkify(w->lr, &e, &spare);
		if (spare)
			archive_entry_free(spare);
		/* dev/ino only served the link lookup: they must not reach any
		 * header. */
		archive_entry_unset_size(e);
		archive_entry_set_size(e, archive_entry_hardlink(e) ? 0 : st->st_size);
		archive_entry_set_dev(e, 0);
		archive_entry_set_ino64(e, 0);
		archive_entry_set_nlink(e, 1);
	}
	if (archive_write_header(w->a, e) != ARCHIVE_OK)
		return kiln_error_set(err, EIO, "%s: %s", path, archive_error_string(w->a));
	if (S_ISREG(st->st_mode) && !archive_entry_hardlink(e) && st->st_size > 0)
		return write_data(w, dirfd, name, st, path, err);
	return 0;
}

static int write_dir(struct writer *w, int dirfd, const char *path, unsigned depth,
                     struct kiln_error **err)
{
	if (depth > KILN_TARBALL_MAX_DEPTH)
		return kiln_error_set(err, ELOOP, "%s: deeper than %d levels", path,
		                      KILN_TARBALL_MAX_DEPTH);
	int dupfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	if (dupfd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot read directory", path);
	_cleanup_(closedirp) DIR *d = fdopendir(dupfd);
	if (!d) {
		safe_close(dupfd);
		return kiln_error_set_errno(err, errno, "%s: cannot read directory", path);
	}
	/* The dup shares its offset with dirfd: a second walk of the same
	 * fd would otherwise start at the end. */
	rewinddir(d);
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	int r = 0;
	while ((errno = 0, de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xstrdup(de->d_name);
	}
	if (errno)
		r = kiln_error_set_errno(err, errno, "%s: cannot read directory", path);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);

	for (size_t i = 0; r == 0 && i < n; i++) {
		/* path is "." or "./a/b"; children "./a/b/c", dirs with a '/'. */
		_cleanup_free_ char *child = xasprintf("%s/%s", path, names[i]);
		struct stat st;
		if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = kiln_error_set_errno(err, errno, "%s: cannot stat", child);
			break;
		}
		if (S_ISSOCK(st.st_mode))
			continue;
		if (S_ISDIR(st.st_mode)) {
			_cleanup_free_ char *shown = xasprintf("%s/", child);
			r = write_one(w, dirfd, names[i], &st, shown, err);
			if (r < 0)
				break;
			_cleanup_close_ int sub = openat(
			    dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				r = kiln_error_set_errno(err, errno, "%s: cannot open", shown);
				break;
			}
			r = write_dir(w, sub, child, depth + 1, err);
		} else {
			r = write_one(w, dirfd, names[i], &st, child, err);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

int kiln_tarball_write(int rootfd, int outfd, const struct kiln_tarball_opts *opts,
                       struct kiln_error **err)
{
	if (opts->source_date_epoch < 0)
		return kiln_error_set(err, EINVAL,
		                      "tarball: SOURCE_DATE_EPOCH must not be negative");
	_cleanup_(archive_write_freep) struct archive *a = archive_write_new();
	_cleanup_(linkresolver_freep) struct archive_entry_linkresolver *lr =
	    archive_entry_linkresolver_new();
	if (!a || !lr) {
		fputs("kiln: out of memory\n", stderr);
		abort();
	}
	/* GNU format rather than pax: it cannot carry atime/ctime or any
	 * per-file extended record, so nothing but the fields set here reaches
	 * the bytes. */
	if (archive_write_set_format_gnutar(a) != ARCHIVE_OK)
		return kiln_error_set(err, EIO, "tarball: %s", archive_error_string(a));
	archive_entry_linkresolver_set_strategy(lr, archive_format(a));
	if (opts->gzip && (archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
	                   /* gzip -n: no name, no mtime; a fixed level so the stream only
	                    * depends on zlib's deflate. */
	                   archive_write_set_options(
	                       a, "gzip:!timestamp,gzip:compression-level=9") != ARCHIVE_OK))
		return kiln_error_set(err, EIO, "tarball: gzip: %s", archive_error_string(a));
	/* libarchive pads the last block according to what outfd is (a
	 * regular file, a pipe, a tape); pin it so the bytes do not depend on
	 * where they go. */
	archive_write_set_bytes_per_block(a, 10240);
	archive_write_set_bytes_in_last_block(a, 1);
	if (archive_write_open_fd(a, outfd) != ARCHIVE_OK)
		return kiln_error_set(err, EIO, "tarball: %s", archive_error_string(a));

	_cleanup_free_ char *buf = xmalloc(DATA_BUF_SIZE);
	struct writer w = {.a = a, .lr = lr, .o = opts, .buf = buf};
	struct stat st;
	if (fstat(rootfd, &st) < 0)
		return kiln_error_set_errno(err, errno, "tarball: ./: cannot stat");
	if (!S_ISDIR(st.st_mode))
		return kiln_error_set(err, ENOTDIR, "tarball: ./: not a directory");
	int r = write_one(&w, rootfd, ".", &st, "./", err);
	if (r == 0)
		r = write_dir(&w, rootfd, ".", 0, err);
	if (r < 0) {
		kiln_error_prefix(err, "tarball");
		return r;
	}
	if (archive_write_close(a) != ARCHIVE_OK)
		return kiln_error_set(err, EIO, "tarball: %s", archive_error_string(a));
	return 0;
}
