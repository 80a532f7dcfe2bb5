/* Unit tests for src/image: context archive extraction and COPY, the
 * deterministic tarball writer, normalize, SBOM.
 *
 * Every refusal is exercised with a real archive crafted here with
 * libarchive's writer, extracted into a fresh temp directory, and checked
 * both for the error (which must name the entry) and for what did NOT happen
 * outside the destination. */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "image/archive.h"
#include "image/image.h"
#include "image/internal.h"
#include "image/normalize.h"
#include "image/sbom.h"
#include "image/tarball.h"
#include "util/alloc.h"
#include "util/fs.h"

/* ---- temp dirs ---- */

struct tmp {
	char path[64]; /* /tmp/kiln-test-XXXXXX */
	char *root;    /* path/root: the destination tree */
	int rootfd;
};

static void tmp_init(struct tmp *t)
{
	snprintf(t->path, sizeof(t->path), "/tmp/kiln-test-XXXXXX");
	assert_non_null(mkdtemp(t->path));
	t->root = xasprintf("%s/root", t->path);
	assert_int_equal(mkdir(t->root, 0755), 0);
	t->rootfd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(t->rootfd >= 0);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

static void tmp_done(struct tmp *t)
{
	close(t->rootfd);
	if (getenv("KILN_TEST_KEEP")) /* debugging: leave the trees */
		print_message("kept %s\n", t->path);
	else
		nftw(t->path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
	free(t->root);
}

static char *tmp_path(const struct tmp *t, const char *rel)
{
	return xasprintf("%s/%s", t->path, rel);
}

static bool exists_at(int dirfd, const char *rel)
{
	struct stat st;
	return fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static char *slurp_at(int dirfd, const char *rel)
{
	int fd = openat(dirfd, rel, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(kiln_read_fd(fd, 1 << 26, &data, &len, NULL), 0);
	close(fd);
	return data;
}

/* ---- crafting archives ---- */

enum kind { TAR, TGZ, ZIP };

struct ab {
	struct archive *a;
	char *buf;
	size_t cap, used;
};

static void ab_init(struct ab *b, enum kind k, size_t cap)
{
	b->buf = xmalloc(cap);
	b->cap = cap;
	b->used = 0;
	b->a = archive_write_new();
	if (k == ZIP) {
		archive_write_set_format_zip(b->a);
	} else {
		archive_write_set_format_pax_restricted(b->a);
		if (k == TGZ)
			archive_write_add_filter_gzip(b->a);
	}
	archive_write_set_bytes_in_last_block(b->a, 1);
	assert_int_equal(archive_write_open_memory(b->a, b->buf, b->cap, &b->used), ARCHIVE_OK);
}

static struct archive_entry *ab_entry(const char *name, mode_t type, mode_t perm, int64_t size)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, perm);
	archive_entry_set_size(e, size);
	archive_entry_set_mtime(e, 1700000000, 0);
	return e;
}

static void ab_write(struct ab *b, struct archive_entry *e, const void *data, size_t len)
{
	assert_int_equal(archive_write_header(b->a, e), ARCHIVE_OK);
	if (len)
		assert_int_equal(archive_write_data(b->a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
}

static void ab_file(struct ab *b, const char *name, const char *data, mode_t perm)
{
	ab_write(b, ab_entry(name, AE_IFREG, perm, (int64_t)strlen(data)), data, strlen(data));
}

static void ab_dir(struct ab *b, const char *name)
{
	ab_write(b, ab_entry(name, AE_IFDIR, 0755, 0), NULL, 0);
}

static void ab_symlink(struct ab *b, const char *name, const char *target)
{
	struct archive_entry *e = ab_entry(name, AE_IFLNK, 0777, 0);
	archive_entry_set_symlink(e, target);
	ab_write(b, e, NULL, 0);
}

static void ab_hardlink(struct ab *b, const char *name, const char *target)
{
	struct archive_entry *e = ab_entry(name, AE_IFREG, 0644, 0);
	archive_entry_set_hardlink(e, target);
	ab_write(b, e, NULL, 0);
}

static void ab_special(struct ab *b, const char *name, mode_t type)
{
	struct archive_entry *e = ab_entry(name, type, 0666, 0);
	archive_entry_set_rdev(e, makedev(1, 3));
	ab_write(b, e, NULL, 0);
}

/* A file of `size` zero bytes, streamed: the gzip bomb. */
static void ab_zeros(struct ab *b, const char *name, size_t size)
{
	struct archive_entry *e = ab_entry(name, AE_IFREG, 0644, (int64_t)size);
	assert_int_equal(archive_write_header(b->a, e), ARCHIVE_OK);
	static const char zero[65536];
	for (size_t off = 0; off < size; off += sizeof(zero))
		assert_true(archive_write_data(b->a, zero, sizeof(zero)) > 0);
	archive_entry_free(e);
}

static void ab_finish(struct ab *b)
{
	assert_int_equal(archive_write_close(b->a), ARCHIVE_OK);
	archive_write_free(b->a);
	b->a = NULL;
}

static void ab_free(struct ab *b)
{
	free(b->buf);
}

/* Extracts b into a fresh tmp; expects a refusal whose message contains
 * every needle (NULL-terminated). Returns the error code. */
static int expect_refused(struct ab *b, const struct kiln_archive_limits *lim, struct tmp *t, ...)
{
	struct kiln_error *err = NULL;
	int r = kiln_archive_extract_memory(b->buf, b->used, t->rootfd, lim, NULL, &err);
	assert_true(r < 0);
	assert_non_null(err);
	va_list ap;
	va_start(ap, t);
	for (const char *n; (n = va_arg(ap, const char *));) {
		if (!strstr(err->msg, n))
			fail_msg("error \"%s\" does not contain \"%s\"", err->msg, n);
	}
	va_end(ap);
	kiln_error_free(err);
	return r;
}

static void extract_ok(struct ab *b, struct tmp *t)
{
	struct kiln_error *err = NULL;
	int r = kiln_archive_extract_memory(b->buf, b->used, t->rootfd, NULL, NULL, &err);
	if (r < 0)
		fail_msg("extraction failed: %s", err ? err->msg : "?");
}

/* ---- archive: detection and good archives ---- */

static void test_detect(void **state)
{
	(void)state;
	enum kiln_archive_format f;
	struct ab b;
	const enum kind kinds[] = {TAR, TGZ, ZIP};
	const enum kiln_archive_format want[] = {KILN_ARCHIVE_TAR, KILN_ARCHIVE_TAR_GZ,
	                                         KILN_ARCHIVE_ZIP};
	for (size_t i = 0; i < 3; i++) {
		ab_init(&b, kinds[i], 1 << 16);
		ab_file(&b, "a", "x", 0644);
		ab_finish(&b);
		assert_int_equal(kiln_archive_detect(b.buf, b.used, &f, NULL), 0);
		assert_int_equal(f, want[i]);
		ab_free(&b);
	}
	struct kiln_error *err = NULL;
	const char junk[600] = "#!/bin/sh\necho not an archive\n";
	assert_int_equal(kiln_archive_detect(junk, sizeof(junk), &f, &err), -EPROTONOSUPPORT);
	assert_non_null(strstr(err->msg, "expected tar, tar.gz or zip"));
	err = kiln_error_free(err);
	/* Too short to hold a tar header's magic. */
	assert_true(kiln_archive_detect("ustar", 5, &f, NULL) < 0);

	/* A gzip stream that is not a tar is refused by extraction. */
	struct tmp t;
	tmp_init(&t);
	struct archive *a = archive_write_new();
	archive_write_set_format_raw(a);
	archive_write_add_filter_gzip(a);
	char buf[4096];
	size_t used = 0;
	archive_write_open_memory(a, buf, sizeof(buf), &used);
	struct archive_entry *e = ab_entry("data", AE_IFREG, 0644, 600);
	archive_write_header(a, e);
	archive_write_data(a, junk, sizeof(junk));
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	assert_true(kiln_archive_extract_memory(buf, used, t.rootfd, NULL, NULL, &err) < 0);
	assert_non_null(strstr(err->msg, "tar.gz"));
	err = kiln_error_free(err);
	/* Truncated tar: an error, never a crash. */
	ab_init(&b, TAR, 1 << 16);
	ab_file(&b, "big", "0123456789abcdef0123456789abcdef", 0644);
	ab_finish(&b);
	assert_true(kiln_archive_extract_memory(b.buf, 520, t.rootfd, NULL, NULL, &err) < 0);
	assert_non_null(err);
	err = kiln_error_free(err);
	ab_free(&b);
	tmp_done(&t);
}

static void check_good_tree(struct tmp *t, bool links)
{
	_cleanup_free_ char *hello = slurp_at(t->rootfd, "dir/hello.txt");
	assert_string_equal(hello, "hello\n");
	struct stat st;
	assert_int_equal(fstatat(t->rootfd, "dir/run.sh", &st, AT_SYMLINK_NOFOLLOW), 0);
	/* setuid and setgid stripped, the rest kept */
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(fstatat(t->rootfd, "implicit/deep/f", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	if (!links)
		return;
	char target[64] = {0};
	assert_true(readlinkat(t->rootfd, "dir/link", target, sizeof(target) - 1) > 0);
	assert_string_equal(target, "hello.txt");
	assert_true(readlinkat(t->rootfd, "dir/up", target, sizeof(target) - 1) > 0);
	struct stat a, b;
	assert_int_equal(fstatat(t->rootfd, "dir/hello.txt", &a, 0), 0);
	assert_int_equal(fstatat(t->rootfd, "hard", &b, 0), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	/* a later entry of the same name replaces the earlier one */
	_cleanup_free_ char *dup = slurp_at(t->rootfd, "dup");
	assert_string_equal(dup, "second");
}

static void build_good(struct ab *b, enum kind k)
{
	ab_init(b, k, 1 << 20);
	if (k != ZIP)
		ab_dir(b, "./");
	ab_dir(b, "dir/");
	ab_file(b, "dir/hello.txt", "hello\n", 0644);
	ab_file(b, "./dir//run.sh", "#!/bin/sh\n", 06755);
	ab_file(b, "implicit/deep/f", "", 0600);
	if (k != ZIP) {
		ab_symlink(b, "dir/link", "hello.txt");
		ab_symlink(b, "dir/up", "../implicit/./deep");
		ab_hardlink(b, "hard", "dir/hello.txt");
		ab_file(b, "dup", "first", 0644);
		ab_file(b, "dup", "second", 0644);
	}
	ab_finish(b);
}

static void test_extract_good(void **state)
{
	(void)state;
	const enum kind kinds[] = {TAR, TGZ, ZIP};
	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		struct tmp t;
		struct ab b;
		tmp_init(&t);
		build_good(&b, kinds[i]);
		struct kiln_archive_stats st;
		struct kiln_error *err = NULL;
		int r = kiln_archive_extract_memory(b.buf, b.used, t.rootfd, NULL, &st, &err);
		if (r < 0)
			fail_msg("%s", err->msg);
		assert_int_equal(st.bytes, strlen("hello\n") + strlen("#!/bin/sh\n") +
		                               (kinds[i] != ZIP ? strlen("firstsecond") : 0));
		check_good_tree(&t, kinds[i] != ZIP);
		ab_free(&b);
		tmp_done(&t);
	}
}

static void test_extract_fd(void **state)
{
	(void)state;
	struct tmp t;
	struct ab b;
	tmp_init(&t);
	build_good(&b, TGZ);
	_cleanup_free_ char *p = tmp_path(&t, "ctx.tar.gz");
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b.buf, b.used), (ssize_t)b.used);
	struct kiln_archive_stats st;
	assert_int_equal(kiln_archive_extract_fd(fd, t.rootfd, NULL, &st, NULL), 0);
	assert_int_equal(st.format, KILN_ARCHIVE_TAR_GZ);
	check_good_tree(&t, true);
	close(fd);
	/* A pipe is refused: extraction needs to look at the magic first. */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	struct kiln_error *err = NULL;
	assert_true(kiln_archive_extract_fd(pfd[0], t.rootfd, NULL, NULL, &err) < 0);
	assert_non_null(strstr(err->msg, "regular file"));
	kiln_error_free(err);
	close(pfd[0]);
	close(pfd[1]);
	ab_free(&b);
	tmp_done(&t);
}

/* ---- archive: refusals ---- */

static void test_refuse_dotdot(void **state)
{
	(void)state;
	const char *names[] = {"../x", "a/../../x", "ok/../x"};
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		struct tmp t;
		struct ab b;
		tmp_init(&t);
		ab_init(&b, TAR, 1 << 16);
		ab_file(&b, names[i], "pwned", 0644);
		ab_finish(&b);
		assert_int_equal(expect_refused(&b, NULL, &t, names[i], "\"..\" component", NULL),
		                 -EPERM);
		_cleanup_free_ char *outside = tmp_path(&t, "x");
		assert_int_equal(access(outside, F_OK), -1);
		ab_free(&b);
		tmp_done(&t);
	}
}

static void test_refuse_absolute(void **state)
{
	(void)state;
	struct tmp t;
	struct ab b;
	tmp_init(&t);
	_cleanup_free_ char *abs = tmp_path(&t, "abs");
	ab_init(&b, TAR, 1 << 16);
	ab_file(&b, abs, "pwned", 0644);
	ab_finish(&b);
	expect_refused(&b, NULL, &t, abs, "absolute path", NULL);
	assert_int_equal(access(abs, F_OK), -1);
	ab_free(&b);
	tmp_done(&t);
}

static void test_refuse_symlink_escape(void **state)
{
	(void)state;
	static const struct {
		const char *name, *target, *why;
	} cases[] = {
	    {"l", "/etc", "symlink to an absolute path"},
	    {"a/l", "../../x", "escapes the archive"},
	    {"l", "..", "escapes the archive"},
	    {"a/l", "b/../../x", "\"..\" after a name"},
	    {"l", "", "empty target"},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct tmp t;
		struct ab b;
		tmp_init(&t);
		ab_init(&b, TAR, 1 << 16);
		ab_symlink(&b, cases[i].name, cases[i].target);
		/* the write that would go through the link, had it been made */
		_cleanup_free_ char *through = xasprintf("%s/passwd", cases[i].name);
		ab_file(&b, through, "root::0:0::/:/bin/sh\n", 0644);
		ab_finish(&b);
		expect_refused(&b, NULL, &t, cases[i].name, cases[i].why, NULL);
		assert_false(exists_at(t.rootfd, cases[i].name));
		ab_free(&b);
		tmp_done(&t);
	}
}

/* A symlink already in the destination (planted by an earlier entry or
 * present before extraction) must not redirect a write out of it. */
static void test_planted_symlinks(void **state)
{
	(void)state;
	struct tmp t;
	struct ab b;
	tmp_init(&t);
	_cleanup_free_ char *outside = tmp_path(&t, "outside");
	assert_int_equal(mkdir(outside, 0755), 0);
	_cleanup_free_ char *victim = tmp_path(&t, "outside/victim");
	int fd = open(victim, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_int_equal(write(fd, "safe", 4), 4);
	close(fd);
	assert_int_equal(symlinkat(outside, t.rootfd, "l"), 0);
	assert_int_equal(symlinkat(victim, t.rootfd, "f"), 0);

	ab_init(&b, TAR, 1 << 16);
	ab_file(&b, "f", "replaced", 0644);
	ab_file(&b, "l/passwd", "pwned", 0644);
	ab_finish(&b);
	expect_refused(&b, NULL, &t, "l/passwd", "through a symlink", NULL);
	/* "f" replaced the link instead of writing through it */
	struct stat st;
	assert_int_equal(fstatat(t.rootfd, "f", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	int ofd = open(outside, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_free_ char *v = slurp_at(ofd, "victim");
	assert_string_equal(v, "safe");
	assert_false(exists_at(ofd, "passwd"));
	close(ofd);
	ab_free(&b);

	/* An in-archive link to a directory inside the tree is created, but a
	 * later entry still may not be written through it. */
	ab_init(&b, TAR, 1 << 16);
	ab_dir(&b, "d");
	ab_symlink(&b, "s", "d");
	ab_file(&b, "s/x", "via link", 0644);
	ab_finish(&b);
	expect_refused(&b, NULL, &t, "s/x", "through a symlink", NULL);
	assert_false(exists_at(t.rootfd, "d/x"));
	ab_free(&b);
	tmp_done(&t);
}

static void test_refuse_hardlinks(void **state)
{
	(void)state;
	static const struct {
		const char *target, *why;
	} cases[] = {
	    {"/etc/shadow", "absolute path"},
	    {"../../etc/shadow", "\"..\" component"},
	    {"etc/shadow", "not a file extracted earlier"},
	    {"d", "not a file extracted earlier"},
	    {"h", "not a file extracted earlier"},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct tmp t;
		struct ab b;
		tmp_init(&t);
		/* the same name present in the tree, but not from this archive */
		assert_int_equal(kiln_write_file_in_root(t.rootfd, "etc/shadow", "s", 1, 0600), 0);
		ab_init(&b, TAR, 1 << 16);
		ab_dir(&b, "d");
		ab_hardlink(&b, "h", cases[i].target);
		ab_finish(&b);
		expect_refused(&b, NULL, &t, "entry \"h\"", cases[i].why, NULL);
		assert_false(exists_at(t.rootfd, "h"));
		ab_free(&b);
		tmp_done(&t);
	}
}

static void test_refuse_special(void **state)
{
	(void)state;
	static const struct {
		mode_t type;
		const char *why;
	} cases[] = {
	    {AE_IFCHR, "character device"},
	    {AE_IFBLK, "block device"},
	    {AE_IFIFO, "FIFO"},
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct tmp t;
		struct ab b;
		tmp_init(&t);
		ab_init(&b, TAR, 1 << 16);
		ab_special(&b, "dev/mem", cases[i].type);
		ab_finish(&b);
		expect_refused(&b, NULL, &t, "dev/mem", cases[i].why, NULL);
		assert_false(exists_at(t.rootfd, "dev/mem"));
		ab_free(&b);
		tmp_done(&t);
	}
}

static void test_refuse_limits(void **state)
{
	(void)state;
	struct tmp t;
	struct ab b;
	tmp_init(&t);
	struct kiln_archive_limits lim;
	kiln_archive_limits_default(&lim);
	assert_int_equal(lim.max_total_bytes, 1u << 30);
	assert_int_equal(lim.max_entries, 100000);

	/* entries */
	lim.max_entries = 10;
	ab_init(&b, TAR, 1 << 20);
	for (int i = 0; i < 11; i++) {
		char n[16];
		snprintf(n, sizeof(n), "f%02d", i);
		ab_file(&b, n, "", 0644);
	}
	ab_finish(&b);
	expect_refused(&b, &lim, &t, "limit of 10 entries", NULL);
	assert_false(exists_at(t.rootfd, "f10"));
	ab_free(&b);

	/* gzip bomb: 16 MiB of zeros in ~16 KiB, against a 1 MiB limit */
	kiln_archive_limits_default(&lim);
	lim.max_total_bytes = 1 << 20;
	ab_init(&b, TGZ, 4 << 20);
	ab_zeros(&b, "bomb", 16 << 20);
	ab_finish(&b);
	assert_true(b.used < 1 << 20);
	assert_int_equal(expect_refused(&b, &lim, &t, "bomb", "1048576 bytes", NULL), -EFBIG);
	ab_free(&b);

	/* the total counts across entries: 3 x 400 KiB */
	ab_init(&b, TGZ, 4 << 20);
	ab_zeros(&b, "a", 400 << 10);
	ab_zeros(&b, "b", 400 << 10);
	ab_zeros(&b, "c", 400 << 10);
	ab_finish(&b);
	expect_refused(&b, &lim, &t, "entry \"c\"", "1048576 bytes", NULL);
	ab_free(&b);

	/* zip bomb against the per-file limit */
	kiln_archive_limits_default(&lim);
	lim.max_entry_bytes = 1 << 20;
	ab_init(&b, ZIP, 4 << 20);
	ab_zeros(&b, "zbomb", 8 << 20);
	ab_finish(&b);
	expect_refused(&b, &lim, &t, "zbomb", "per file", NULL);
	ab_free(&b);
	tmp_done(&t);
}

static void test_refuse_zip_dotdot(void **state)
{
	(void)state;
	struct tmp t;
	struct ab b;
	tmp_init(&t);
	ab_init(&b, ZIP, 1 << 16);
	ab_file(&b, "fine.txt", "ok", 0644);
	ab_file(&b, "../../zipslip", "pwned", 0644);
	ab_finish(&b);
	expect_refused(&b, NULL, &t, "zip archive", "../../zipslip", "\"..\"", NULL);
	_cleanup_free_ char *outside = tmp_path(&t, "zipslip");
	assert_int_equal(access(outside, F_OK), -1);
	ab_free(&b);
	tmp_done(&t);
}

/* ---- COPY ---- */

static void test_copy(void **state)
{
	(void)state;
	struct tmp ctx, img;
	tmp_init(&ctx);
	tmp_init(&img);
	struct ab b;
	build_good(&b, TAR);
	extract_ok(&b, &ctx);
	ab_free(&b);
	bool root = geteuid() == 0;
	uid_t uid = root ? 100000 : geteuid();
	gid_t gid = root ? 100000 : getegid();

	/* a file to a new name, parents created */
	assert_int_equal(kiln_archive_copy(ctx.rootfd, "dir/hello.txt", img.rootfd,
	                                   "/opt/app/greeting", uid, gid, NULL),
	                 0);
	_cleanup_free_ char *g = slurp_at(img.rootfd, "opt/app/greeting");
	assert_string_equal(g, "hello\n");
	struct stat st;
	assert_int_equal(fstatat(img.rootfd, "opt/app/greeting", &st, 0), 0);
	assert_int_equal(st.st_uid, uid);
	assert_int_equal(st.st_mode & 07777, 0644);
	/* a file into an existing directory keeps its name */
	assert_int_equal(
	    kiln_archive_copy(ctx.rootfd, "dir/run.sh", img.rootfd, "/opt/app", uid, gid, NULL), 0);
	assert_true(exists_at(img.rootfd, "opt/app/run.sh"));
	/* a directory merges recursively; symlinks stay symlinks */
	assert_int_equal(mkdirat(img.rootfd, "usr", 0755), 0);
	assert_int_equal(mkdirat(img.rootfd, "usr/bin", 0700), 0);
	assert_int_equal(symlinkat("usr/bin", img.rootfd, "bin"), 0);
	assert_int_equal(kiln_archive_copy(ctx.rootfd, "dir", img.rootfd, "/bin", uid, gid, NULL),
	                 0);
	/* merged-/usr: written through the in-root link, dir mode untouched */
	assert_true(exists_at(img.rootfd, "usr/bin/hello.txt"));
	assert_int_equal(fstatat(img.rootfd, "usr/bin", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	char target[64] = {0};
	assert_true(readlinkat(img.rootfd, "usr/bin/link", target, sizeof(target) - 1) > 0);
	assert_string_equal(target, "hello.txt");
	assert_int_equal(fstatat(img.rootfd, "usr/bin/link", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(st.st_uid, uid);
	/* the whole context into a new directory */
	assert_int_equal(
	    kiln_archive_copy(ctx.rootfd, "/", img.rootfd, "/srv/ctx/", uid, gid, NULL), 0);
	assert_true(exists_at(img.rootfd, "srv/ctx/implicit/deep/f"));
	assert_int_equal(fstatat(img.rootfd, "srv/ctx", &st, 0), 0);
	assert_int_equal(st.st_uid, uid);

	/* Links planted in either tree resolve inside it: the context's link
	 * to /etc/passwd is the context's own (missing) etc/passwd, and the
	 * image's link to the outside lands inside the image. */
	_cleanup_free_ char *outside = tmp_path(&img, "outside");
	assert_int_equal(mkdir(outside, 0755), 0);
	assert_int_equal(symlinkat("/etc/passwd", ctx.rootfd, "evil"), 0);
	assert_int_equal(symlinkat(outside, img.rootfd, "out"), 0);
	struct kiln_error *err = NULL;
	assert_int_equal(kiln_archive_copy(ctx.rootfd, "evil", img.rootfd, "/x", uid, gid, &err),
	                 -ENOENT);
	assert_non_null(strstr(err->msg, "COPY source \"evil\""));
	err = kiln_error_free(err);
	assert_int_equal(kiln_archive_copy(ctx.rootfd, "../../../../etc/passwd", img.rootfd, "/x",
	                                   uid, gid, &err),
	                 -EPERM);
	err = kiln_error_free(err);
	/* "out" resolves to <image>/<outside's path>, which does not exist */
	assert_int_equal(kiln_archive_copy(ctx.rootfd, "dir/hello.txt", img.rootfd,
	                                   "/out/hello.txt", uid, gid, &err),
	                 -ENOENT);
	err = kiln_error_free(err);
	int ofd = open(outside, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_false(exists_at(ofd, "hello.txt"));
	close(ofd);
	/* a FIFO in the source tree is refused, not opened */
	assert_int_equal(mkfifoat(ctx.rootfd, "dir/fifo", 0644), 0);
	assert_int_equal(
	    kiln_archive_copy(ctx.rootfd, "dir/fifo", img.rootfd, "/f", uid, gid, &err), -EPERM);
	err = kiln_error_free(err);
	assert_int_equal(kiln_archive_copy(ctx.rootfd, "dir", img.rootfd, "/d2", uid, gid, &err),
	                 -EPERM);
	assert_non_null(strstr(err->msg, "dir/fifo"));
	err = kiln_error_free(err);
	tmp_done(&ctx);
	tmp_done(&img);
}

/* ---- tarball ---- */

#define EPOCH INT64_C(1700000000)

static void put(int rootfd, const char *rel, const char *data, mode_t mode)
{
	assert_int_equal(kiln_write_file_in_root(rootfd, rel, data, strlen(data), mode), 0);
}

static void set_mtime(int rootfd, const char *rel, int64_t t)
{
	struct timespec ts[2] = {{(time_t)t, 123456789}, {(time_t)t, 987654321}};
	assert_int_equal(utimensat(rootfd, rel, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static const char long_name[] =
    "usr/share/doc/a-package-with-a-rather-long-name/examples/and-a-subdirectory/"
    "with-a-file-name-that-is-long-too.txt";

/* The same logical tree, built in a different order (so different inode
 * numbers and readdir order) with different post-epoch mtimes. When running
 * as root, owners are in the sandbox range (100000 + n). */
static int chown_sandbox_root(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return lchown(p, 100000, 100000);
}

static void make_tree(const struct tmp *t, bool reverse, int64_t later)
{
	int rootfd = t->rootfd;
	const char *path = t->root;
	static const char *const dirs[] = {"etc", "usr", "usr/bin", "var", "var/empty", "z"};
	for (size_t k = 0; k < ELEMENTSOF(dirs); k++) {
		size_t i = reverse ? ELEMENTSOF(dirs) - 1 - k : k;
		_cleanup_close_ int fd = kiln_mkdir_p_in_root(rootfd, dirs[i], 0755);
		assert_true(fd >= 0);
		assert_int_equal(fchmod(fd, i == 4 ? 0700 : 0755), 0);
	}
	if (reverse) {
		/* churn inode numbers */
		put(rootfd, "tmpjunk", "x", 0644);
		assert_int_equal(unlinkat(rootfd, "tmpjunk", 0), 0);
		put(rootfd, "usr/bin/su2", "#!su\n", 04755);
		assert_int_equal(linkat(rootfd, "usr/bin/su2", rootfd, "usr/bin/su", 0), 0);
		put(rootfd, long_name, "long\n", 0644);
		put(rootfd, "etc/shadow", "root:*:19000:0:99999:7:::\n", 0640);
		put(rootfd, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644);
		put(rootfd, "etc/a.b", "", 0644);
	} else {
		put(rootfd, "etc/a.b", "", 0644);
		put(rootfd, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644);
		put(rootfd, "etc/shadow", "root:*:19000:0:99999:7:::\n", 0640);
		put(rootfd, long_name, "long\n", 0644);
		put(rootfd, "usr/bin/su", "#!su\n", 04755);
		assert_int_equal(linkat(rootfd, "usr/bin/su", rootfd, "usr/bin/su2", 0), 0);
	}
	assert_int_equal(symlinkat("usr/bin", rootfd, "bin"), 0);
	assert_int_equal(mkfifoat(rootfd, "z/fifo", 0600), 0);
	put(rootfd, "old", "older than the epoch\n", 0644);
	if (geteuid() == 0) {
		assert_int_equal(mknodat(rootfd, "z/null", S_IFCHR | 0666, makedev(1, 3)), 0);
		assert_int_equal(fchmodat(rootfd, "z/null", 0666, 0), 0); /* umask */
		assert_int_equal(nftw(path, chown_sandbox_root, 32, FTW_PHYS), 0);
		assert_int_equal(fchownat(rootfd, "etc/shadow", 100000, 100042, 0), 0);
		/* chown cleared it */
		assert_int_equal(fchmodat(rootfd, "usr/bin/su", 04755, 0), 0);
	}
	/* mtimes: everything after the epoch, except "old" */
	static const char *const stamp[] = {"etc",    "etc/passwd", "usr/bin/su", "bin",
	                                    "z/fifo", "var/empty",  "usr",        "."};
	for (size_t i = 0; i < ELEMENTSOF(stamp); i++)
		set_mtime(rootfd, stamp[i], later + (int64_t)i);
	set_mtime(rootfd, "old", EPOCH - 1000);
}

static char *write_tarball(struct tmp *t, const char *name, const struct kiln_tarball_opts *o,
                           size_t *ret_len)
{
	_cleanup_free_ char *p = tmp_path(t, name);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	struct kiln_error *err = NULL;
	if (kiln_tarball_write(t->rootfd, fd, o, &err) < 0)
		fail_msg("tarball: %s", err->msg);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	char *data = NULL;
	assert_int_equal(kiln_read_fd(fd, 1 << 26, &data, ret_len, NULL), 0);
	close(fd);
	return data;
}

static int run_check(const char *tarball, char *const extra[])
{
	const char *script = getenv("KILN_TARCHECK");
	if (!script) {
		print_message("KILN_TARCHECK unset: skipping the tar/Python check\n");
		return 0;
	}
	char epoch[32];
	snprintf(epoch, sizeof(epoch), "%lld", (long long)EPOCH);
	char *argv[32] = {"python3", (char *)script, (char *)tarball, epoch};
	size_t n = 4;
	for (size_t i = 0; extra[i] && n < ELEMENTSOF(argv) - 1; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid_t pid;
	extern char **environ;
	assert_int_equal(posix_spawnp(&pid, "python3", NULL, NULL, argv, environ), 0);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_tarball_reproducible(void **state)
{
	(void)state;
	bool root = geteuid() == 0;
	struct tmp a, b;
	tmp_init(&a);
	tmp_init(&b);
	make_tree(&a, false, EPOCH + 100);
	make_tree(&b, true, EPOCH + 99999);
	struct kiln_tarball_opts o;
	kiln_tarball_opts_default(&o, EPOCH);
	if (!root)
		o.id_base = geteuid() == getegid() ? geteuid() : 0, o.id_count = UINT32_MAX;
	for (int gz = 0; gz < 2; gz++) {
		o.gzip = gz;
		size_t la, lb;
		_cleanup_free_ char *da = write_tarball(&a, gz ? "a.tar.gz" : "a.tar", &o, &la);
		_cleanup_free_ char *db = write_tarball(&b, gz ? "b.tar.gz" : "b.tar", &o, &lb);
		assert_int_equal(la, lb);
		assert_memory_equal(da, db, la);
		if (gz) {
			/* gzip -n: FLG has no FNAME, MTIME is zero */
			assert_int_equal((unsigned char)da[3], 0);
			assert_memory_equal(da + 4, "\0\0\0\0", 4);
		}
	}
	/* Still identical when the same tree is written twice in a row. */
	size_t l1, l2;
	o.gzip = false;
	_cleanup_free_ char *d1 = write_tarball(&a, "again1.tar", &o, &l1);
	_cleanup_free_ char *d2 = write_tarball(&a, "again2.tar", &o, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(d1, d2, l1);
	/* The same bytes through a pipe (libarchive pads by output type). */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(kiln_tarball_write(a.rootfd, pfd[1], &o, NULL), 0);
	close(pfd[1]);
	char *piped = NULL;
	size_t lp = 0;
	assert_int_equal(kiln_read_fd(pfd[0], 1 << 20, &piped, &lp, NULL), 0);
	close(pfd[0]);
	assert_int_equal(lp, l1);
	assert_memory_equal(piped, d1, l1);
	free(piped);
	/* No dev/ino/pax/time noise: the epoch appears, the later times do not. */
	assert_null(memmem(d1, l1, "PaxHeader", 9));
	assert_null(memmem(d1, l1, "atime", 5));

	_cleanup_free_ char *pa = tmp_path(&a, "a.tar");
	_cleanup_free_ char *pz = tmp_path(&a, "a.tar.gz");
	_cleanup_free_ char *want_long = xasprintf("./%s=0:0:644", long_name);
	char *want_root[] = {"./etc/shadow=0:42:640", "./usr/bin/su=0:0:4755",
	                     "./var/empty=0:0:700",   want_long,
	                     "./z/null=0:0:666",      NULL};
	char *none[] = {NULL};
	assert_int_equal(run_check(pa, root ? want_root : none), 0);
	assert_int_equal(run_check(pz, root ? want_root : none), 0);
	tmp_done(&a);
	tmp_done(&b);
}

static void test_tarball_content(void **state)
{
	(void)state;
	struct tmp t;
	tmp_init(&t);
	make_tree(&t, false, EPOCH + 5);
	struct kiln_tarball_opts o;
	kiln_tarball_opts_default(&o, EPOCH);
	o.id_base = 0;
	o.id_count = UINT32_MAX;
	size_t len;
	_cleanup_free_ char *data = write_tarball(&t, "t.tar", &o, &len);
	/* read it back with libarchive and look at each field */
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	assert_int_equal(archive_read_open_memory(a, data, len), ARCHIVE_OK);
	struct archive_entry *e;
	char *names[64];
	size_t n = 0;
	bool saw_hardlink = false, saw_fifo = false;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		assert_true(n < ELEMENTSOF(names));
		names[n++] = xstrdup(archive_entry_pathname(e));
		assert_true(archive_entry_mtime(e) <= EPOCH);
		assert_false(archive_entry_atime_is_set(e));
		assert_false(archive_entry_ctime_is_set(e));
		const char *uname = archive_entry_uname(e), *gname = archive_entry_gname(e);
		assert_true(!uname || !*uname);
		assert_true(!gname || !*gname);
		if (strcmp(archive_entry_pathname(e), "./old") == 0)
			assert_int_equal(archive_entry_mtime(e), EPOCH - 1000);
		if (strcmp(archive_entry_pathname(e), "./etc/passwd") == 0)
			assert_int_equal(archive_entry_mtime(e), EPOCH);
		if (strcmp(archive_entry_pathname(e), "./usr/bin/su2") == 0) {
			assert_string_equal(archive_entry_hardlink(e), "./usr/bin/su");
			saw_hardlink = true;
		}
		if (strcmp(archive_entry_pathname(e), "./z/fifo") == 0)
			saw_fifo = archive_entry_filetype(e) == AE_IFIFO;
		if (strcmp(archive_entry_pathname(e), "./bin") == 0)
			assert_string_equal(archive_entry_symlink(e), "usr/bin");
	}
	archive_read_free(a);
	assert_true(saw_hardlink);
	assert_true(saw_fifo);
	/* --sort=name order: "etc/" before "etc/a.b" before "etc/passwd"; "./old"
	 * after "./etc/..." and before "./usr/". */
	assert_string_equal(names[0], "./");
	assert_string_equal(names[1], "./bin");
	assert_string_equal(names[2], "./etc/");
	assert_string_equal(names[3], "./etc/a.b");
	assert_string_equal(names[4], "./etc/passwd");
	assert_string_equal(names[5], "./etc/shadow");
	assert_string_equal(names[6], "./old");
	assert_string_equal(names[7], "./usr/");
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	tmp_done(&t);
}

static void test_tarball_id_range(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();
	struct tmp t;
	tmp_init(&t);
	assert_int_equal(fchown(t.rootfd, 100000, 100000), 0);
	put(t.rootfd, "host-owned", "", 0644); /* uid 0: written outside the sandbox */
	assert_int_equal(fchownat(t.rootfd, "host-owned", 0, 100000, 0), 0);
	struct kiln_tarball_opts o;
	kiln_tarball_opts_default(&o, EPOCH);
	_cleanup_free_ char *p = tmp_path(&t, "x.tar");
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	struct kiln_error *err = NULL;
	assert_int_equal(kiln_tarball_write(t.rootfd, fd, &o, &err), -ERANGE);
	assert_non_null(strstr(err->msg, "./host-owned: uid 0 is outside"));
	kiln_error_free(err);
	close(fd);
	tmp_done(&t);
}

/* ---- normalize ---- */

static off_t size_at(int dirfd, const char *rel)
{
	struct stat st;
	assert_int_equal(fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW), 0);
	return st.st_size;
}

static void test_normalize(void **state)
{
	(void)state;
	struct tmp t;
	tmp_init(&t);
	int r = t.rootfd;
	static const char *const files[] = {
	    "etc/machine-id",
	    "var/lib/dbus/machine-id",
	    "var/cache/ldconfig/aux-cache",
	    "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
	    "var/lib/apt/lists/partial/x",
	    "var/lib/apt/lists/lock",
	    "var/cache/apt/pkgcache.bin",
	    "var/cache/apt/srcpkgcache.bin",
	    "var/cache/apt/archives/keep.deb",
	    "var/log/dpkg.log",
	    "var/log/apt/history.log",
	    "var/lib/dpkg/status-old",
	    "var/lib/dpkg/status",
	    "var/cache/debconf/config.dat-old",
	    "etc/passwd-",
	    "etc/group-",
	    "etc/shadow-",
	    "etc/gshadow-",
	    "etc/passwd",
	    "etc/ssh/ssh_host_ed25519_key",
	    "etc/ssh/ssh_host_ed25519_key.pub",
	    "etc/ssh/sshd_config",
	    "etc/resolv.conf",
	    "etc/hostname",
	    "usr/lib/python3/dist-packages/foo/__pycache__/m.cpython-311.pyc",
	    "usr/lib/python3/dist-packages/foo/m.py",
	    "srv/app/__pycache__/x.pyc",
	    "old-file",
	};
	for (size_t i = 0; i < ELEMENTSOF(files); i++)
		put(r, files[i], "content from the build\n", 0644);
	/* outside the tree, reachable only through symlinks */
	_cleanup_free_ char *outside = tmp_path(&t, "outside");
	assert_int_equal(mkdir(outside, 0755), 0);
	int ofd = open(outside, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	put(ofd, "host.log", "host data\n", 0644);
	put(ofd, "machine-id", "0123456789abcdef\n", 0644);
	set_mtime(ofd, "host.log", EPOCH + 500);
	assert_int_equal(symlinkat(outside, r, "var/lib/dbus-link"), 0);
	_cleanup_free_ char *ohost = tmp_path(&t, "outside/host.log");
	assert_int_equal(symlinkat(ohost, r, "var/log/host.log"), 0);
	/* a rule directory that is itself a symlink out */
	assert_int_equal(mkdirat(r, "var/cache/ldconfig2", 0755), 0);
	assert_int_equal(renameat(r, "var/cache/ldconfig", r, "var/cache/ldconfig2/real"), 0);
	assert_int_equal(symlinkat(outside, r, "var/cache/ldconfig"), 0);
	put(ofd, "aux-cache", "host cache\n", 0644);
	/* times: most after the epoch, one before */
	set_mtime(r, "etc/passwd", EPOCH + 10);
	set_mtime(r, "var/lib/dbus-link", EPOCH + 10);
	set_mtime(r, "old-file", EPOCH - 50);

	static const char *const keep[] = {"/etc/hostname", NULL};
	struct kiln_normalize_stats st;
	struct kiln_error *err = NULL;
	if (kiln_normalize_tree(r, EPOCH, keep, &st, &err) < 0)
		fail_msg("%s", err->msg);

	assert_int_equal(size_at(r, "etc/machine-id"), 0);
	static const char *const gone[] = {
	    "var/lib/dbus/machine-id",
	    "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
	    "var/lib/apt/lists/partial/x",
	    "var/lib/apt/lists/lock",
	    "var/cache/apt/pkgcache.bin",
	    "var/cache/apt/srcpkgcache.bin",
	    "var/lib/dpkg/status-old",
	    "var/cache/debconf/config.dat-old",
	    "etc/passwd-",
	    "etc/group-",
	    "etc/shadow-",
	    "etc/gshadow-",
	    "etc/ssh/ssh_host_ed25519_key",
	    "etc/ssh/ssh_host_ed25519_key.pub",
	    "etc/resolv.conf",
	    "usr/lib/python3/dist-packages/foo/__pycache__",
	    "srv/app/__pycache__",
	};
	for (size_t i = 0; i < ELEMENTSOF(gone); i++)
		if (exists_at(r, gone[i]))
			fail_msg("%s survived", gone[i]);
	static const char *const stay[] = {
	    "var/lib/apt/lists/partial",
	    "var/cache/apt/archives/keep.deb",
	    "var/lib/dpkg/status",
	    "etc/passwd",
	    "etc/ssh/sshd_config",
	    "etc/hostname",
	    "usr/lib/python3/dist-packages/foo/m.py",
	    "var/cache/ldconfig2/real/aux-cache",
	};
	for (size_t i = 0; i < ELEMENTSOF(stay); i++)
		if (!exists_at(r, stay[i]))
			fail_msg("%s was removed", stay[i]);
	assert_int_equal(size_at(r, "var/log/dpkg.log"), 0);
	assert_int_equal(size_at(r, "var/log/apt/history.log"), 0);
	assert_true(size_at(r, "etc/hostname") > 0); /* kept: the recipe wrote it */
	assert_true(size_at(r, "etc/passwd") > 0);
	assert_int_equal(st.emptied, 3);
	assert_int_equal(st.removed, 17);
	assert_true(st.clamped > 10);

	/* nothing outside was touched, through either link */
	_cleanup_free_ char *h = slurp_at(ofd, "host.log");
	assert_string_equal(h, "host data\n");
	_cleanup_free_ char *mid = slurp_at(ofd, "machine-id");
	assert_string_equal(mid, "0123456789abcdef\n");
	assert_true(exists_at(ofd, "aux-cache"));
	struct stat os;
	assert_int_equal(fstatat(ofd, "host.log", &os, 0), 0);
	assert_int_equal(os.st_mtim.tv_sec, EPOCH + 500);
	close(ofd);

	/* every mtime clamped (min), links included, the root too */
	struct stat ls;
	assert_int_equal(fstatat(r, "var/lib/dbus-link", &ls, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(ls.st_mtim.tv_sec, EPOCH);
	assert_int_equal(fstatat(r, "etc/passwd", &ls, 0), 0);
	assert_int_equal(ls.st_mtim.tv_sec, EPOCH);
	assert_int_equal(ls.st_mtim.tv_nsec, 0);
	assert_int_equal(fstatat(r, "old-file", &ls, 0), 0);
	assert_int_equal(ls.st_mtim.tv_sec, EPOCH - 50);
	assert_int_equal(fstat(r, &ls), 0);
	assert_int_equal(ls.st_mtim.tv_sec, EPOCH);
	assert_int_equal(fstatat(r, "var/log", &ls, 0), 0);
	assert_true(ls.st_mtim.tv_sec <= EPOCH);

	/* idempotent: a second pass finds nothing to do */
	assert_int_equal(kiln_normalize_tree(r, EPOCH, keep, &st, NULL), 0);
	assert_int_equal(st.removed + st.emptied + st.clamped, 0);
	tmp_done(&t);
}

/* ---- SBOM ---- */

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_sbom(void **state)
{
	(void)state;
	const struct kiln_sbom_package fwd[] = {
	    {"bash", "5.2.15-2+b2", "amd64", SHA_A, NULL},
	    {"libc6", "2.36-9+deb12u4", "amd64", SHA_B, NULL},
	    {"tzdata", "2024a-0+deb12u1", "all", SHA_A, NULL},
	    {"dpkg", "1:1.21.22", "amd64", SHA_B, NULL},
	};
	const struct kiln_sbom_package rev[] = {fwd[3], fwd[2], fwd[1], fwd[0]};
	char *a = NULL, *b = NULL;
	size_t la, lb;
	assert_int_equal(kiln_sbom_spdx_json("live", EPOCH, fwd, 4, &a, &la, NULL), 0);
	assert_int_equal(kiln_sbom_spdx_json("live", EPOCH, rev, 4, &b, &lb, NULL), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(a, b, la); /* input order does not matter */
	assert_int_equal(a[la - 1], '\n');

	json_error_t je;
	json_t *doc = json_loadb(a, la, JSON_REJECT_DUPLICATES, &je);
	if (!doc)
		fail_msg("not JSON: %s", je.text);
	assert_string_equal(json_string_value(json_object_get(doc, "spdxVersion")), "SPDX-2.3");
	assert_string_equal(json_string_value(json_object_get(doc, "dataLicense")), "CC0-1.0");
	json_t *ci = json_object_get(doc, "creationInfo");
	assert_string_equal(json_string_value(json_object_get(ci, "created")),
	                    "2023-11-14T22:13:20Z");
	const char *nsv = json_string_value(json_object_get(doc, "documentNamespace"));
	assert_non_null(nsv);
	_cleanup_free_ char *ns = xstrdup(nsv);
	assert_int_equal(strlen(ns), strlen("https://kiln.invalid/spdx/") + 64);
	json_t *pk = json_object_get(doc, "packages");
	assert_int_equal(json_array_size(pk), 4);
	/* sorted by name; purl escapes the epoch's ':' and the '+' */
	json_t *dpkg = json_array_get(pk, 1);
	assert_string_equal(json_string_value(json_object_get(dpkg, "name")), "dpkg");
	assert_string_equal(json_string_value(json_object_get(dpkg, "SPDXID")),
	                    "SPDXRef-Package-2-dpkg");
	json_t *ref = json_array_get(json_object_get(dpkg, "externalRefs"), 0);
	assert_string_equal(json_string_value(json_object_get(ref, "referenceLocator")),
	                    "pkg:deb/debian/dpkg@1%3A1.21.22?arch=amd64");
	json_t *ck = json_array_get(json_object_get(dpkg, "checksums"), 0);
	assert_string_equal(json_string_value(json_object_get(ck, "checksumValue")), SHA_B);
	assert_int_equal(json_array_size(json_object_get(doc, "relationships")), 4);
	json_decref(doc);

	/* a different lock gives a different namespace */
	struct kiln_sbom_package changed[4];
	memcpy(changed, fwd, sizeof(fwd));
	changed[0].version = "5.2.15-2+b3";
	char *c = NULL;
	size_t lc;
	assert_int_equal(kiln_sbom_spdx_json("live", EPOCH, changed, 4, &c, &lc, NULL), 0);
	json_t *cdoc = json_loadb(c, lc, 0, NULL);
	assert_string_not_equal(json_string_value(json_object_get(cdoc, "documentNamespace")), ns);
	json_decref(cdoc);
	free(c);
	free(a);
	free(b);

	/* bad input names the package */
	struct kiln_error *err = NULL;
	changed[2].sha256 = "ABC";
	assert_int_equal(kiln_sbom_spdx_json("live", EPOCH, changed, 4, &c, &lc, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "tzdata"));
	err = kiln_error_free(err);
	const struct kiln_sbom_package dup[] = {fwd[0], fwd[0]};
	assert_int_equal(kiln_sbom_spdx_json("live", EPOCH, dup, 2, &c, &lc, &err), -EINVAL);
	assert_non_null(strstr(err->msg, "bash:amd64 listed twice"));
	err = kiln_error_free(err);
	/* no packages is still a valid document */
	assert_int_equal(kiln_sbom_spdx_json("empty", EPOCH, NULL, 0, &c, &lc, NULL), 0);
	json_t *edoc = json_loadb(c, lc, 0, NULL);
	assert_non_null(edoc);
	json_decref(edoc);
	free(c);
}

/* ---- the pipeline's pure helpers (image/internal.h) ---- */

static void test_pkglist_parse(void **state)
{
	(void)state;
	struct kiln_pkglist l = {NULL, 0};
	const char *sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	_cleanup_free_ char *text = xasprintf("bash 5.2-1 amd64 %s bash_5.2-1_amd64.deb\n"
	                                      "\n"
	                                      "libc6  2.36  amd64 %s   libc6.deb extra\n"
	                                      "last 1 all none last.deb",
	                                      sha, sha);
	assert_int_equal(kiln_image_pkglist_parse(text, true, &l, NULL), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.v[0].name, "bash");
	assert_string_equal(l.v[0].version, "5.2-1");
	assert_string_equal(l.v[0].arch, "amd64");
	assert_string_equal(l.v[0].sha256, sha);
	assert_string_equal(l.v[0].file, "bash_5.2-1_amd64.deb");
	/* runs of spaces separate fields; a sixth field is ignored */
	assert_string_equal(l.v[1].name, "libc6");
	assert_string_equal(l.v[1].version, "2.36");
	assert_string_equal(l.v[1].file, "libc6.deb");
	/* the last line needs no newline */
	assert_string_equal(l.v[2].sha256, "none");
	assert_string_equal(l.v[2].file, "last.deb");
	kiln_image_pkglist_clear(&l);
	assert_null(l.v);
	assert_int_equal(l.n, 0);

	/* without files: four fields suffice, and file stays NULL */
	assert_int_equal(kiln_image_pkglist_parse("a 1 all x\nb 2 all y\n", false, &l, NULL), 0);
	assert_int_equal(l.n, 2);
	assert_null(l.v[1].file);
	assert_string_equal(l.v[1].sha256, "y");
	kiln_image_pkglist_clear(&l);

	assert_int_equal(kiln_image_pkglist_parse("", true, &l, NULL), 0);
	assert_int_equal(l.n, 0);

	/* a short line is an error naming the whole line; *ret untouched */
	struct kiln_pkglist untouched = {(struct kiln_pkg *)&untouched, 42};
	_cleanup_error_ struct kiln_error *e = NULL;
	assert_int_equal(
	    kiln_image_pkglist_parse("a 1 all x a.deb\nb 2 all y\n", true, &untouched, &e),
	    -EBADMSG);
	assert_non_null(e);
	assert_non_null(strstr(e->msg, "'b 2 all y'"));
	assert_int_equal(untouched.n, 42);
	kiln_error_free(TAKE_PTR(e));
	assert_int_equal(kiln_image_pkglist_parse("a 1 all\n", false, &untouched, &e), -EBADMSG);
	assert_int_equal(untouched.n, 42);
}

static void test_progress_total(void **state)
{
	(void)state;
	struct kiln_recipe r = {0};
	struct kiln_image_build_opts o = {0};
	struct build b = {.o = &o, .r = &r};
	/* timezone, locale, normalize: fetch, install and overlays have
	 * nothing to do without packages and files, and are not counted */
	assert_int_equal(kiln_image_progress_total(&b), 3);
	r.n_packages = 2;
	r.n_files = 1;
	/* fetch, install, overlays, timezone, locale, normalize */
	assert_int_equal(kiln_image_progress_total(&b), 6);
	r.outputs = KILN_OUTPUT_TAR;
	assert_int_equal(kiln_image_progress_total(&b), 7);
	r.n_steps = 3;
	struct kiln_healthcheck hc = {0};
	r.healthcheck = &hc;
	assert_int_equal(kiln_image_progress_total(&b), 11);
	/* the ISO's squashfs is reported only when it is an output itself */
	r.outputs = KILN_OUTPUT_TAR | KILN_OUTPUT_ISO;
	assert_int_equal(kiln_image_progress_total(&b), 12);
	r.outputs = KILN_OUTPUT_TAR | KILN_OUTPUT_SQUASHFS | KILN_OUTPUT_ISO;
	assert_int_equal(kiln_image_progress_total(&b), 13);
	/* a context archive adds a phase but no progress line */
	o.context_path = "/nonexistent";
	assert_int_equal(kiln_image_progress_total(&b), 13);
}

static void test_tree_diff(void **state)
{
	(void)state;
	const char *a = "/\td 0755 0:0 0 4096 -\n"
	                "/etc/a\tf 0644 0:0 100 5 aaaaaaaaaaaaaaaa\n"
	                "/etc/l\tl 0777 0:0 100 6 target with spaces\n"
	                "/only-a\tf 0644 0:0 100 1 bbbbbbbbbbbb\n";
	const char *b = "/\td 0755 0:0 0 4096 -\n"
	                "/etc/a\tf 0600 0:0 100 5 aaaaaaaaaaaaaaaa\n"
	                "/etc/l\tl 0777 0:0 100 6 target with spaces\n"
	                "not a listing line\n"
	                "/only-b\tf 0644 0:0 100 1 cccccccccccc\n";
	_cleanup_free_ char *d = kiln_image_tree_diff(a, b, 10);
	assert_string_equal(d, "  /etc/a: mode 0644 → 0600\n"
	                       "  /only-a: only in the first build\n"
	                       "  /only-b: only in the second build\n");
	_cleanup_free_ char *d1 = kiln_image_tree_diff(a, b, 1);
	assert_string_equal(d1, "  /etc/a: mode 0644 → 0600\n  ... and 2 more\n");
	_cleanup_free_ char *same = kiln_image_tree_diff(a, a, 10);
	assert_string_equal(same, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_detect),
	    cmocka_unit_test(test_extract_good),
	    cmocka_unit_test(test_extract_fd),
	    cmocka_unit_test(test_refuse_dotdot),
	    cmocka_unit_test(test_refuse_absolute),
	    cmocka_unit_test(test_refuse_symlink_escape),
	    cmocka_unit_test(test_planted_symlinks),
	    cmocka_unit_test(test_refuse_hardlinks),
	    cmocka_unit_test(test_refuse_special),
	    cmocka_unit_test(test_refuse_limits),
	    cmocka_unit_test(test_refuse_zip_dotdot),
	    cmocka_unit_test(test_copy),
	    cmocka_unit_test(test_tarball_reproducible),
	    cmocka_unit_test(test_tarball_content),
	    cmocka_unit_test(test_tarball_id_range),
	    cmocka_unit_test(test_normalize),
	    cmocka_unit_test(test_sbom),
	    cmocka_unit_test(test_pkglist_parse),
	    cmocka_unit_test(test_progress_total),
	    cmocka_unit_test(test_tree_diff),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
