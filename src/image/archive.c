#include "image/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"

#define COPY_BUF_SIZE 65536

static void archive_read_freep(struct archive **a)
{
	if (*a)
		archive_read_free(*a);
}

static void closedirp(DIR **d)
{
	if (*d)
		closedir(*d);
}

void kiln_archive_limits_default(struct kiln_archive_limits *ret)
{
	*ret = (struct kiln_archive_limits){
	    .max_total_bytes = KILN_ARCHIVE_DEFAULT_MAX_TOTAL,
	    .max_entry_bytes = KILN_ARCHIVE_DEFAULT_MAX_TOTAL,
	    .max_entries = KILN_ARCHIVE_DEFAULT_MAX_ENTRIES,
	};
}

/* One row per accepted format: how it is recognised and which libarchive
 * readers it enables. Only the detected format's reader is enabled, so a file
 * that merely starts like a zip can never be parsed as, say, a cpio. */
static const struct format_row {
	const char *name;
	size_t magic_off;
	const char *magic;
	size_t magic_len;
	int (*filter)(struct archive *);
	int (*format)(struct archive *);
} formats[] = {
    [KILN_ARCHIVE_TAR] = {"tar", 257, "ustar", 5, NULL, archive_read_support_format_tar},
    [KILN_ARCHIVE_TAR_GZ] = {"tar.gz", 0, "\x1f\x8b\x08", 3, archive_read_support_filter_gzip,
                             archive_read_support_format_tar},
    [KILN_ARCHIVE_ZIP] = {"zip", 0, "PK\x03\x04", 4, NULL, archive_read_support_format_zip},
};

/* An empty zip is only an end-of-central-directory record. */
static const char zip_empty_magic[] = "PK\x05\x06";

const char *kiln_archive_format_name(enum kiln_archive_format f)
{
	return (size_t)f < ELEMENTSOF(formats) ? formats[f].name : "unknown";
}

int kiln_archive_detect(const void *head, size_t len, enum kiln_archive_format *ret,
                        struct kiln_error **err)
{
	const unsigned char *p = head;
	for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
		const struct format_row *f = &formats[i];
		if (len >= f->magic_off + f->magic_len &&
		    memcmp(p + f->magic_off, f->magic, f->magic_len) == 0) {
			*ret = (enum kiln_archive_format)i;
			return 0;
		}
	}
	if (len >= 4 && memcmp(p, zip_empty_magic, 4) == 0) {
		*ret = KILN_ARCHIVE_ZIP;
		return 0;
	}
	return kiln_error_set_kind(err, KILN_ERR_USER, EPROTONOSUPPORT,
	                           "unrecognized archive format (expected tar, tar.gz or zip)");
}

/* Entry names come from the archive: keep control characters out of messages
 * that end up in logs and terminals. */
static char *printable(const char *s)
{
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	size_t n = 0;
	for (; s && *s && n < 200; s++, n++)
		kiln_buf_putc(&b, ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s);
	if (s && *s)
		kiln_buf_puts(&b, "...");
	return kiln_buf_steal(&b, NULL);
}

/* Normalises an archive (or COPY) path to "a/b/c": empty and "." components
 * dropped; "" is the root itself. Returns NULL and *ret, or the reason the
 * path is refused. */
static const char *clean_path(const char *in, char **ret)
{
	if (!in || !*in)
		return "empty name";
	/* Absolute names ("/etc/cron.d/x") are how an archive asks to be
	 * written over the host: never reinterpret them, refuse them. */
	if (in[0] == '/')
		return "absolute path";
	if (strlen(in) >= PATH_MAX)
		return "name longer than PATH_MAX";
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	unsigned depth = 0;
	for (const char *p = in; *p;) {
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			/* Zip-slip / tar "../": climbing out of the extraction
			 * directory. Refused even when it would land back inside,
			 * so no name ever needs a second look. */
			return "\"..\" component";
		}
		if (n > 0 && !(n == 1 && p[0] == '.')) {
			/* Quadratic path resolution with thousands of components
			 * is a cheap denial of service. */
			if (++depth > KILN_ARCHIVE_MAX_DEPTH) {
				return "path deeper than 256 components";
			}
			if (b.len)
				kiln_buf_putc(&b, '/');
			kiln_buf_append(&b, p, n);
		}
		p = *e ? e + 1 : e;
	}
	*ret = kiln_buf_steal(&b, NULL);
	return NULL;
}

/* Splits a cleaned, non-empty path into its parent ("" for the root) and
 * final component, both pointing into a copy owned by *ret_buf. */
static void split_path(const char *path, char **ret_buf, const char **ret_parent,
                       const char **ret_base)
{
	char *b = xstrdup(path);
	char *slash = strrchr(b, '/');
	if (slash) {
		*slash = '\0';
		*ret_parent = b;
		*ret_base = slash + 1;
	} else {
		*ret_parent = b + strlen(b);
		*ret_base = b;
	}
	*ret_buf = b;
}

/* A symlink target stays inside the tree when it is relative, has ".." only
 * as leading components, and has no more of them than the link's directory is
 * deep. With ".." allowed only up front, the lexical answer is also the
 * physical one: the link's directory was reached without symlinks (see
 * open_parent), and any symlink named later in the target obeys the same
 * rule where it stands. */
static const char *check_link_target(const char *link_path, const char *target)
{
	if (!target || !*target)
		return "symlink with an empty target";
	/* "l -> /etc": whoever follows l later (a build step, a tool on the
	 * host, a careless extractor) lands in the host's /etc. */
	if (target[0] == '/')
		return "symlink to an absolute path";
	if (strlen(target) >= PATH_MAX)
		return "symlink target longer than PATH_MAX";
	long depth = 0;
	for (const char *p = link_path; *p; p++)
		depth += *p == '/';
	bool named = false;
	for (const char *p = target; *p;) {
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			/* "a/l -> ../../x" climbs out; "a/l -> b/../../x" could
			 * climb out through a symlink b the lexical count cannot
			 * see. */
			if (named)
				return "symlink target with \"..\" after a name";
			if (--depth < 0)
				return "symlink target escapes the archive";
		} else if (n > 0 && !(n == 1 && p[0] == '.')) {
			named = true;
		}
		p = *e ? e + 1 : e;
	}
	return NULL;
}

/* A set of the regular files this extraction wrote: the only things a
 * hardlink entry may point at. */
struct name_set {
	char **slots;
	size_t cap, len;
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static bool set_contains(const struct name_set *s, const char *name)
{
	if (!s->cap)
		return false;
	for (size_t i = hash_name(name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->slots[i])
			return false;
		if (strcmp(s->slots[i], name) == 0)
			return true;
	}
}

static void set_add(struct name_set *s, const char *name)
{
	if (set_contains(s, name))
		return;
	if ((s->len + 1) * 2 > s->cap) {
		size_t ncap = s->cap ? s->cap * 2 : 64;
		char **n = xcalloc(ncap, sizeof(*n));
		for (size_t i = 0; i < s->cap; i++) {
			if (!s->slots[i])
				continue;
			size_t j = hash_name(s->slots[i]) & (ncap - 1);
			while (n[j])
				j = (j + 1) & (ncap - 1);
			n[j] = s->slots[i];
		}
		free(s->slots);
		s->slots = n;
		s->cap = ncap;
	}
	size_t i = hash_name(name) & (s->cap - 1);
	while (s->slots[i])
		i = (i + 1) & (s->cap - 1);
	s->slots[i] = xstrdup(name);
	s->len++;
}

static void set_free(struct name_set *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slots[i]);
	free(s->slots);
	*s = (struct name_set){0};
}

/* openat2 under root that refuses to traverse any symlink (ELOOP).
 * util/fs.h's kiln_open_in_root takes no resolve flags; this adds
 * RESOLVE_NO_SYMLINKS so an entry's lexical location is its real one. */
static int open_dir_nosymlinks(int rootfd, const char *path)
{
	struct open_how how = {
	    .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS,
	};
	for (;;) {
		long fd = syscall(SYS_openat2, rootfd, *path ? path : ".", &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
}

/* Opens (creating if needed) the directory an entry goes into. An earlier
 * entry (or whatever was in destfd before) may have put a symlink on the way:
 * "l -> /etc" then "l/passwd" is the classic escape. Creation goes through
 * RESOLVE_IN_ROOT, so even a planted absolute link resolves inside destfd;
 * then the parent must be reachable without any symlink at all, or the entry
 * is refused. */
static int open_parent(int rootfd, const char *parent)
{
	int fd = open_dir_nosymlinks(rootfd, parent);
	if (fd != -ENOENT)
		return fd;
	int r = kiln_mkdir_p_in_root(rootfd, parent, 0755);
	if (r < 0)
		return r;
	safe_close(r);
	return open_dir_nosymlinks(rootfd, parent);
}

/* Makes room for a new entry at dirfd/base: an existing non-directory is
 * removed (so a symlink there is replaced, never written through). Returns 1
 * when a directory is already there, 0 when the slot is free. */
static int clear_slot(int dirfd, const char *base)
{
	struct stat st;
	if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode))
		return 1;
	if (unlinkat(dirfd, base, 0) < 0)
		return -errno;
	return 0;
}

struct extract {
	struct archive *a;
	int root;
	struct kiln_archive_limits lim;
	struct kiln_archive_stats stats;
	struct name_set files;
	char *buf; /* COPY_BUF_SIZE */
};

/* Entry handlers: 0 or -errno with *err naming nothing (the caller adds the
 * entry). dirfd is the entry's parent, base its final component. */
typedef int (*entry_fn)(struct extract *x, struct archive_entry *e, const char *path, int dirfd,
                        const char *base, struct kiln_error **err);

static int extract_file(struct extract *x, struct archive_entry *e, const char *path, int dirfd,
                        const char *base, struct kiln_error **err)
{
	/* Honest headers of a bomb fail here, before a byte is inflated. */
	if (archive_entry_size_is_set(e)) {
		uint64_t sz = (uint64_t)archive_entry_size(e);
		if (sz > x->lim.max_entry_bytes)
			return kiln_error_set_kind(err, KILN_ERR_LIMIT, EFBIG,
			                           "%llu bytes, over the limit of %llu per file",
			                           (unsigned long long)sz,
			                           (unsigned long long)x->lim.max_entry_bytes);
		if (sz > x->lim.max_total_bytes - x->stats.bytes)
			return kiln_error_set_kind(
			    err, KILN_ERR_LIMIT, EFBIG,
			    "archive holds more than the limit of %llu bytes",
			    (unsigned long long)x->lim.max_total_bytes);
	}
	int r = clear_slot(dirfd, base);
	if (r > 0)
		return kiln_error_set_kind(err, KILN_ERR_USER, EISDIR,
		                           "a directory of that name was already extracted");
	if (r < 0)
		return kiln_error_set_errno(err, -r, "cannot replace existing entry");
	_cleanup_close_ int fd =
	    openat(dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "cannot create");
	uint64_t written = 0;
	for (;;) {
		la_ssize_t n = archive_read_data(x->a, x->buf, COPY_BUF_SIZE);
		if (n == 0)
			break;
		if (n < 0)
			return kiln_error_set_kind(err, KILN_ERR_USER, EIO, "%s",
			                           archive_error_string(x->a));
		written += (uint64_t)n;
		x->stats.bytes += (uint64_t)n;
		/* Counted on what is actually inflated, not on the header: a
		 * zip's or a sparse tar's declared size can lie (gzip/zip bombs
		 * filling the disk). */
		if (written > x->lim.max_entry_bytes)
			return kiln_error_set_kind(err, KILN_ERR_LIMIT, EFBIG,
			                           "expands past the limit of %llu bytes per file",
			                           (unsigned long long)x->lim.max_entry_bytes);
		if (x->stats.bytes > x->lim.max_total_bytes)
			return kiln_error_set_kind(err, KILN_ERR_LIMIT, EFBIG,
			                           "archive expands past the limit of %llu bytes",
			                           (unsigned long long)x->lim.max_total_bytes);
		r = kiln_write_all(fd, x->buf, (size_t)n);
		if (r < 0)
			return kiln_error_set_errno(err, -r, "write failed");
	}
	/* setuid/setgid/sticky dropped: a context file must never become a
	 * privilege-raising binary in the image or on the host. */
	if (fchmod(fd, archive_entry_perm(e) & 0777) < 0)
		return kiln_error_set_errno(err, errno, "chmod failed");
	set_add(&x->files, path);
	return 0;
}

static int extract_dir(struct extract *x, struct archive_entry *e, const char *path, int dirfd,
                       const char *base, struct kiln_error **err)
{
	(void)x;
	(void)path;
	int r = clear_slot(dirfd, base);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "cannot replace existing entry");
	if (r == 0 && mkdirat(dirfd, base, 0700) < 0)
		return kiln_error_set_errno(err, errno, "cannot create directory");
	_cleanup_close_ int fd =
	    openat(dirfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "cannot open directory");
	/* u+rwx stays so later entries and the cleanup can always get in;
	 * setgid/sticky dropped as for files. */
	if (fchmod(fd, (archive_entry_perm(e) & 0777) | S_IRWXU) < 0)
		return kiln_error_set_errno(err, errno, "chmod failed");
	return 0;
}

static int extract_symlink(struct extract *x, struct archive_entry *e, const char *path, int dirfd,
                           const char *base, struct kiln_error **err)
{
	(void)x;
	const char *target = archive_entry_symlink(e);
	const char *why = check_link_target(path, target);
	if (why) {
		_cleanup_free_ char *t = printable(target);
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM, "%s (\"%s\")", why, t);
	}
	int r = clear_slot(dirfd, base);
	if (r > 0)
		return kiln_error_set_kind(err, KILN_ERR_USER, EISDIR,
		                           "a directory of that name was already extracted");
	if (r < 0)
		return kiln_error_set_errno(err, -r, "cannot replace existing entry");
	if (symlinkat(target, dirfd, base) < 0)
		return kiln_error_set_errno(err, errno, "cannot create symlink");
	return 0;
}

static int extract_hardlink(struct extract *x, const char *target_raw, const char *path, int dirfd,
                            const char *base, struct kiln_error **err)
{
	_cleanup_free_ char *t = printable(target_raw);
	_cleanup_free_ char *target = NULL;
	const char *why = clean_path(target_raw, &target);
	/* A hardlink to "/etc/shadow" or "../../etc/shadow" would make the
	 * host's file appear (and be writable) inside the context; only files
	 * this very archive wrote may be linked. */
	if (why)
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM, "hardlink target \"%s\": %s",
		                           t, why);
	if (!set_contains(&x->files, target))
		return kiln_error_set_kind(
		    err, KILN_ERR_USER, EPERM,
		    "hardlink to \"%s\", which is not a file extracted earlier", t);
	if (strcmp(target, path) == 0)
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM, "hardlink to itself");
	_cleanup_free_ char *tbuf = NULL;
	const char *tparent, *tbase;
	split_path(target, &tbuf, &tparent, &tbase);
	_cleanup_close_ int tdir = open_dir_nosymlinks(x->root, tparent);
	if (tdir < 0)
		return kiln_error_set_errno(err, -tdir, "hardlink target \"%s\"", t);
	/* A later entry may have replaced the file with a symlink: link only
	 * a regular file, and linkat without AT_SYMLINK_FOLLOW never
	 * dereferences. */
	struct stat st;
	if (fstatat(tdir, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM,
		                           "hardlink target \"%s\" is no longer a regular file", t);
	int r = clear_slot(dirfd, base);
	if (r > 0)
		return kiln_error_set_kind(err, KILN_ERR_USER, EISDIR,
		                           "a directory of that name was already extracted");
	if (r < 0)
		return kiln_error_set_errno(err, -r, "cannot replace existing entry");
	if (linkat(tdir, tbase, dirfd, base, 0) < 0)
		return kiln_error_set_errno(err, errno, "cannot create hardlink");
	set_add(&x->files, path);
	return 0;
}

/* What each entry type becomes. A NULL handler is a refusal, with the
 * reason. */
static const struct type_row {
	mode_t type;
	entry_fn fn;
	const char *refusal;
} types[] = {
    {AE_IFREG, extract_file, NULL},
    {AE_IFDIR, extract_dir, NULL},
    {AE_IFLNK, extract_symlink, NULL},
    /* A device node gives whoever can open it the host's disks or
     * memory (/dev/sda, /dev/mem) from inside the image. */
    {AE_IFCHR, NULL, "character device nodes are not allowed"},
    {AE_IFBLK, NULL, "block device nodes are not allowed"},
    /* A FIFO makes any later reader (the COPY step, a tool on the host)
     * block forever; a socket can stand in for a host service. */
    {AE_IFIFO, NULL, "FIFOs are not allowed"},
    {AE_IFSOCK, NULL, "sockets are not allowed"},
};

static int extract_entry(struct extract *x, struct archive_entry *e, const char *path,
                         struct kiln_error **err)
{
	_cleanup_free_ char *pbuf = NULL;
	const char *parent, *base;
	split_path(path, &pbuf, &parent, &base);

	const char *hl = archive_entry_hardlink(e);
	const struct type_row *row = NULL;
	if (!hl) {
		for (size_t i = 0; i < ELEMENTSOF(types); i++)
			if (types[i].type == archive_entry_filetype(e))
				row = &types[i];
		if (!row)
			return kiln_error_set_kind(err, KILN_ERR_USER, EPERM,
			                           "unknown entry type 0%o",
			                           (unsigned)archive_entry_filetype(e));
		if (!row->fn)
			return kiln_error_set_kind(err, KILN_ERR_USER, EPERM, "%s", row->refusal);
	}

	_cleanup_close_ int dirfd = open_parent(x->root, parent);
	if (dirfd == -ELOOP)
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM,
		                           "its directory is reached through a symlink");
	if (dirfd < 0)
		return kiln_error_set_errno(err, -dirfd, "cannot open its directory");
	if (hl)
		return extract_hardlink(x, hl, path, dirfd, base, err);
	return row->fn(x, e, path, dirfd, base, err);
}

static int extract_all(struct extract *x, struct kiln_error **err)
{
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(x->a, &e);
		if (r == ARCHIVE_EOF)
			return 0;
		/* WARN: e.g. a name not convertible to the locale; the entry
		 * itself is intact and its raw name is checked below. */
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL, "entry %llu: %s",
			                           (unsigned long long)x->stats.entries + 1,
			                           archive_error_string(x->a));
		/* Millions of empty entries exhaust inodes and time without
		 * tripping any byte limit. */
		if (++x->stats.entries > x->lim.max_entries)
			return kiln_error_set_kind(err, KILN_ERR_LIMIT, EFBIG,
			                           "more than the limit of %llu entries",
			                           (unsigned long long)x->lim.max_entries);
		const char *raw = archive_entry_pathname(e);
		_cleanup_free_ char *shown = printable(raw);
		_cleanup_free_ char *path = NULL;
		const char *why = clean_path(raw, &path);
		if (why)
			return kiln_error_set_kind(err, KILN_ERR_USER, EPERM, "entry \"%s\": %s",
			                           shown, why);
		if (!*path)
			continue; /* "./": the destination itself keeps its mode */
		r = extract_entry(x, e, path, err);
		if (r < 0) {
			kiln_error_prefix(err, "entry \"%s\"", shown);
			return r;
		}
	}
}

static int extract(struct archive *a, enum kiln_archive_format fmt, int destfd,
                   const struct kiln_archive_limits *limits, struct kiln_archive_stats *ret_stats,
                   struct kiln_error **err)
{
	struct extract x = {.a = a, .root = destfd};
	if (limits)
		x.lim = *limits;
	else
		kiln_archive_limits_default(&x.lim);
	x.stats.format = fmt;
	_cleanup_free_ char *buf = xmalloc(COPY_BUF_SIZE);
	x.buf = buf;
	int r = extract_all(&x, err);
	set_free(&x.files);
	if (r < 0) {
		kiln_error_prefix(err, "%s archive", formats[fmt].name);
		return r;
	}
	if (ret_stats)
		*ret_stats = x.stats;
	return 0;
}

static struct archive *reader_new(enum kiln_archive_format fmt)
{
	struct archive *a = archive_read_new();
	if (!a) {
		fputs("kiln: out of memory\n", stderr);
		abort();
	}
	if (formats[fmt].filter)
		formats[fmt].filter(a);
	formats[fmt].format(a);
	return a;
}

int kiln_archive_extract_memory(const void *data, size_t len, int destfd,
                                const struct kiln_archive_limits *limits,
                                struct kiln_archive_stats *ret_stats, struct kiln_error **err)
{
	enum kiln_archive_format fmt;
	int r = kiln_archive_detect(data, len, &fmt, err);
	if (r < 0)
		return r;
	_cleanup_(archive_read_freep) struct archive *a = reader_new(fmt);
	if (archive_read_open_memory(a, data, len) != ARCHIVE_OK)
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL, "%s archive: %s",
		                           formats[fmt].name, archive_error_string(a));
	return extract(a, fmt, destfd, limits, ret_stats, err);
}

int kiln_archive_extract_fd(int fd, int destfd, const struct kiln_archive_limits *limits,
                            struct kiln_archive_stats *ret_stats, struct kiln_error **err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return kiln_error_set_errno(err, errno, "context archive: cannot stat");
	if (!S_ISREG(st.st_mode))
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
		                           "context archive: not a regular file");
	unsigned char head[512];
	ssize_t n;
	do
		n = pread(fd, head, sizeof(head), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return kiln_error_set_errno(err, errno, "context archive: cannot read");
	enum kiln_archive_format fmt;
	int r = kiln_archive_detect(head, (size_t)n, &fmt, err);
	if (r < 0)
		return r;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return kiln_error_set_errno(err, errno, "context archive: cannot seek");
	_cleanup_(archive_read_freep) struct archive *a = reader_new(fmt);
	if (archive_read_open_fd(a, fd, COPY_BUF_SIZE) != ARCHIVE_OK)
		return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL, "%s archive: %s",
		                           formats[fmt].name, archive_error_string(a));
	return extract(a, fmt, destfd, limits, ret_stats, err);
}

/* ---- COPY ---- */

struct copy {
	uid_t uid;
	gid_t gid;
	char *buf;
};

static int copy_data(struct copy *c, int in, int out)
{
	for (;;) {
		ssize_t n = read(in, c->buf, COPY_BUF_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		int r = kiln_write_all(out, c->buf, (size_t)n);
		if (r < 0)
			return r;
	}
}

/* Writes the regular file `in` as dirfd/base. rel names it in errors. */
static int copy_file(struct copy *c, int in, const struct stat *st, int dirfd, const char *base,
                     const char *rel, struct kiln_error **err)
{
	int r = clear_slot(dirfd, base);
	if (r > 0)
		return kiln_error_set_kind(err, KILN_ERR_USER, EISDIR,
		                           "%s: a directory is in the way", rel);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot replace", rel);
	_cleanup_close_ int out =
	    openat(dirfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", rel);
	r = copy_data(c, in, out);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: copy failed", rel);
	/* chown first: it would clear setuid anyway, and none is wanted. */
	if (fchown(out, c->uid, c->gid) < 0)
		return kiln_error_set_errno(err, errno, "%s: chown failed", rel);
	if (fchmod(out, st->st_mode & 0777) < 0)
		return kiln_error_set_errno(err, errno, "%s: chmod failed", rel);
	return 0;
}

static int copy_symlink(struct copy *c, int sdir, const char *name, int dirfd, const char *rel,
                        struct kiln_error **err)
{
	char target[PATH_MAX];
	ssize_t n = readlinkat(sdir, name, target, sizeof(target) - 1);
	if (n < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot read symlink", rel);
	target[n] = '\0';
	int r = clear_slot(dirfd, name);
	if (r > 0)
		return kiln_error_set_kind(err, KILN_ERR_USER, EISDIR,
		                           "%s: a directory is in the way", rel);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "%s: cannot replace", rel);
	if (symlinkat(target, dirfd, name) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create symlink", rel);
	if (fchownat(dirfd, name, c->uid, c->gid, AT_SYMLINK_NOFOLLOW) < 0)
		return kiln_error_set_errno(err, errno, "%s: chown failed", rel);
	return 0;
}

/* Opens dst_root/drel as a directory, creating it (owned by uid:gid, with
 * mode) when missing. An existing directory keeps its owner and mode: copying
 * into /usr/bin must not change /usr/bin. */
static int open_dst_dir(struct copy *c, int dst_root, const char *drel, mode_t mode,
                        struct kiln_error **err)
{
	const char *p = *drel ? drel : ".";
	int fd = kiln_open_in_root(dst_root, p, O_RDONLY | O_DIRECTORY, 0);
	if (fd >= 0)
		return fd;
	if (fd != -ENOENT)
		return kiln_error_set_errno(err, -fd, "/%s: cannot open", drel);
	_cleanup_close_ int nfd = kiln_mkdir_p_in_root(dst_root, drel, 0755);
	if (nfd < 0)
		return kiln_error_set_errno(err, -nfd, "/%s: cannot create", drel);
	if (fchown(nfd, c->uid, c->gid) < 0 || fchmod(nfd, mode & 0777) < 0)
		return kiln_error_set_errno(err, errno, "/%s: cannot set owner and mode", drel);
	return TAKE_FD(nfd);
}

static int copy_tree(struct copy *c, int sdir, const char *srel, int dst_root, const char *drel,
                     mode_t mode, unsigned depth, struct kiln_error **err)
{
	if (depth > KILN_ARCHIVE_MAX_DEPTH)
		return kiln_error_set_kind(err, KILN_ERR_USER, ELOOP, "%s: deeper than %d levels",
		                           srel, KILN_ARCHIVE_MAX_DEPTH);
	/* Resolved from the root each time, in-root: a merged-/usr symlink
	 * (/bin -> usr/bin) in the image is followed, but only inside it. */
	_cleanup_close_ int dfd = open_dst_dir(c, dst_root, drel, mode, err);
	if (dfd < 0)
		return dfd;
	int dupfd = fcntl(sdir, F_DUPFD_CLOEXEC, 3);
	if (dupfd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot read directory", srel);
	_cleanup_(closedirp) DIR *d = fdopendir(dupfd);
	if (!d) {
		safe_close(dupfd);
		return kiln_error_set_errno(err, errno, "%s: cannot read directory", srel);
	}
	rewinddir(d); /* the dup shares sdir's offset */
	struct dirent *de;
	while ((errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		_cleanup_free_ char *s = *srel ? xasprintf("%s/%s", srel, name) : xstrdup(name);
		_cleanup_free_ char *dn = *drel ? xasprintf("%s/%s", drel, name) : xstrdup(name);
		struct stat st;
		if (fstatat(sdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return kiln_error_set_errno(err, errno, "%s: cannot stat", s);
		int r;
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub =
			    openat(sdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				return kiln_error_set_errno(err, errno, "%s: cannot open", s);
			r = copy_tree(c, sub, s, dst_root, dn, st.st_mode, depth + 1, err);
		} else if (S_ISREG(st.st_mode)) {
			_cleanup_close_ int in =
			    openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			if (in < 0)
				return kiln_error_set_errno(err, errno, "%s: cannot open", s);
			r = copy_file(c, in, &st, dfd, name, s, err);
		} else if (S_ISLNK(st.st_mode)) {
			r = copy_symlink(c, sdir, name, dfd, s, err);
		} else {
			/* Same reasons as the extraction's device/FIFO/socket
			 * refusals: the context tree may not be ours. */
			r = kiln_error_set_kind(err, KILN_ERR_USER, EPERM,
			                        "%s: special files are not copied", s);
		}
		if (r < 0)
			return r;
	}
	if (errno)
		return kiln_error_set_errno(err, errno, "%s: cannot read directory", srel);
	return 0;
}

int kiln_archive_copy(int src_root, const char *src, int dst_root, const char *dst, uid_t uid,
                      gid_t gid, struct kiln_error **err)
{
	_cleanup_free_ char *sshow = printable(src);
	_cleanup_free_ char *dshow = printable(dst);
	_cleanup_free_ char *scl = NULL;
	_cleanup_free_ char *dcl = NULL;
	while (*src == '/')
		src++;
	while (*dst == '/')
		dst++;
	bool dst_is_dir = !*dst || dst[strlen(dst) - 1] == '/';
	const char *why = clean_path(*src ? src : ".", &scl);
	if (why)
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM, "COPY source \"%s\": %s",
		                           sshow, why);
	why = clean_path(*dst ? dst : ".", &dcl);
	if (why)
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM, "COPY destination \"%s\": %s",
		                           dshow, why);

	struct copy c = {.uid = uid, .gid = gid};
	_cleanup_free_ char *buf = xmalloc(COPY_BUF_SIZE);
	c.buf = buf;

	/* O_PATH first: opening a device or FIFO for reading has side effects
	 * (or blocks) before fstat could refuse it. */
	_cleanup_close_ int probe = kiln_open_in_root(src_root, *scl ? scl : ".", O_PATH, 0);
	if (probe < 0)
		return kiln_error_set_errno(err, -probe, "COPY source \"%s\"", sshow);
	struct stat st, st2;
	if (fstat(probe, &st) < 0)
		return kiln_error_set_errno(err, errno, "COPY source \"%s\"", sshow);
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		return kiln_error_set_kind(err, KILN_ERR_USER, EPERM,
		                           "COPY source \"%s\": not a file or directory", sshow);
	_cleanup_close_ int sfd = kiln_open_in_root(
	    src_root, *scl ? scl : ".",
	    S_ISDIR(st.st_mode) ? O_RDONLY | O_DIRECTORY : O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
	if (sfd < 0)
		return kiln_error_set_errno(err, -sfd, "COPY source \"%s\"", sshow);
	if (fstat(sfd, &st2) < 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino)
		return kiln_error_set_kind(err, KILN_ERR_USER, ESTALE,
		                           "COPY source \"%s\": changed while opening", sshow);

	int r;
	if (S_ISDIR(st.st_mode)) {
		r = copy_tree(&c, sfd, scl, dst_root, dcl, st.st_mode, 0, err);
	} else {
		_cleanup_free_ char *target = NULL;
		if (!dst_is_dir) {
			_cleanup_close_ int probe_dst =
			    kiln_open_in_root(dst_root, dcl, O_PATH | O_DIRECTORY, 0);
			dst_is_dir = probe_dst >= 0;
		}
		const char *sbase = strrchr(scl, '/');
		sbase = sbase ? sbase + 1 : scl;
		if (dst_is_dir)
			target = *dcl ? xasprintf("%s/%s", dcl, sbase) : xstrdup(sbase);
		else
			target = xstrdup(dcl);
		_cleanup_free_ char *tbuf = NULL;
		const char *parent, *base;
		split_path(target, &tbuf, &parent, &base);
		_cleanup_close_ int pfd = kiln_mkdir_p_in_root(dst_root, parent, 0755);
		if (pfd < 0)
			return kiln_error_set_errno(err, -pfd, "COPY destination \"%s\"", dshow);
		r = copy_file(&c, sfd, &st, pfd, base, scl, err);
	}
	if (r < 0)
		kiln_error_prefix(err, "COPY \"%s\" to \"%s\"", sshow, dshow);
	return r;
}
