/* Unit tests of store/cas: blobs stored concurrently by several threads of
 * one process (the workers of one `kiln serve` fetching the same .deb), and
 * what the store does with a blob that changed after it was written. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/cas.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/sha256.h"

#define THREADS 4
#define ROUNDS 40
#define BLOB_BYTES (1u << 20)

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)f;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

struct putter {
	const char *state;
	const char *src;
	pthread_barrier_t *go;
	int rc;
	char hex[KILN_SHA256_HEX_LEN + 1];
	char msg[256];
};

static void *put_thread(void *arg)
{
	struct putter *p = arg;
	struct kiln_error *err = NULL;
	pthread_barrier_wait(p->go);
	p->rc = kiln_cas_put_file(p->state, p->src, NULL, p->hex, NULL, &err);
	if (err)
		snprintf(p->msg, sizeof(p->msg), "%s", err->msg);
	kiln_error_free(err);
	return NULL;
}

/* With one temp name per process (.tmp-<hex>-<pid>), a second thread storing
 * the same blob unlinked the first one's temp file and created its own under
 * the same name; the first then renamed the second's half-written file into
 * place, and the second's rename failed with ENOENT. Each call must have a
 * temp file of its own: every call succeeds, the blob is whole, no temp
 * file is left. */
static void test_concurrent_put_of_one_blob(void **state)
{
	(void)state;
	char dir[] = "/tmp/kiln-test-store-XXXXXX";
	assert_non_null(mkdtemp(dir));
	_cleanup_free_ char *st = xasprintf("%s/state", dir);
	assert_int_equal(kiln_state_init(st, NULL), 0);
	char *data = xmalloc(BLOB_BYTES);
	for (unsigned round = 0; round < ROUNDS; round++) {
		for (size_t i = 0; i < BLOB_BYTES; i++)
			data[i] = (char)(i * 31 + round);
		_cleanup_free_ char *src = xasprintf("%s/src-%u", dir, round);
		_cleanup_close_ int fd = open(src, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		assert_true(fd >= 0);
		assert_int_equal(kiln_write_all(fd, data, BLOB_BYTES), 0);
		char want[KILN_SHA256_HEX_LEN + 1];
		uint64_t size = 0;
		assert_int_equal(kiln_sha256_file(src, want, &size), 0);

		pthread_barrier_t go;
		pthread_barrier_init(&go, NULL, THREADS);
		struct putter p[THREADS];
		pthread_t t[THREADS];
		for (int i = 0; i < THREADS; i++) {
			p[i] = (struct putter){.state = st, .src = src, .go = &go};
			assert_int_equal(pthread_create(&t[i], NULL, put_thread, &p[i]), 0);
		}
		for (int i = 0; i < THREADS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&go);
		for (int i = 0; i < THREADS; i++) {
			if (p[i].rc != 0)
				fail_msg("round %u, thread %d: %d %s", round, i, p[i].rc, p[i].msg);
			assert_string_equal(p[i].hex, want);
		}
		_cleanup_free_ char *blob = kiln_cas_path(st, want);
		char got[KILN_SHA256_HEX_LEN + 1];
		assert_int_equal(kiln_sha256_file(blob, got, &size), 0);
		assert_string_equal(got, want);
		assert_int_equal(size, BLOB_BYTES);

		_cleanup_free_ char *shard = xasprintf("%s/cas/sha256/%.2s", st, want);
		DIR *d = opendir(shard);
		assert_non_null(d);
		for (struct dirent *de; (de = readdir(d));)
			if (strncmp(de->d_name, ".tmp-", 5) == 0)
				fail_msg("round %u: temp file left behind: %s", round, de->d_name);
		closedir(d);
	}
	free(data);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- trusting what is already in the store (issue 12) ---- */

struct fixture {
	char dir[64];
	char *state;
	char *src;
	char hex[KILN_SHA256_HEX_LEN + 1];
	char *blob;
};

static unsigned notices;
static char last_notice[512];

static void on_notice(void *ud, const char *msg)
{
	(void)ud;
	notices++;
	snprintf(last_notice, sizeof(last_notice), "%s", msg);
}

static void write_file(const char *path, const char *data)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, strlen(data)), 0);
}

static void append_file(const char *path, const char *data)
{
	/* As root ignores the blob's 0444: what `echo oops >> out/x` did to a
	 * hard-linked output. */
	_cleanup_close_ int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(kiln_write_all(fd, data, strlen(data)), 0);
}

static int fx_setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kiln-test-cas-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->state = xasprintf("%s/state", f->dir);
	assert_int_equal(kiln_state_init(f->state, NULL), 0);
	f->src = xasprintf("%s/src", f->dir);
	write_file(f->src, "the blob's right content\n");
	assert_int_equal(kiln_cas_put_file(f->state, f->src, NULL, f->hex, NULL, NULL), 0);
	f->blob = kiln_cas_path(f->state, f->hex);
	notices = 0;
	last_notice[0] = '\0';
	kiln_cas_set_notify(on_notice, NULL);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fixture *f = *state;
	kiln_cas_set_notify(NULL, NULL);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f->state);
	free(f->src);
	free(f->blob);
	free(f);
	return 0;
}

static size_t quarantined(const struct fixture *f)
{
	_cleanup_free_ char *q = xasprintf("%s/cas/quarantine", f->state);
	DIR *d = opendir(q);
	size_t n = 0;
	for (struct dirent *de; d && (de = readdir(d));)
		n += strncmp(de->d_name, f->hex, KILN_SHA256_HEX_LEN) == 0;
	if (d)
		closedir(d);
	return n;
}

static void assert_blob_good(const struct fixture *f)
{
	char got[KILN_SHA256_HEX_LEN + 1];
	assert_int_equal(kiln_sha256_file(f->blob, got, NULL), 0);
	assert_string_equal(got, f->hex);
}

static void test_put_stamps_the_blob(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	assert_int_equal(st.st_mtim.tv_sec, KILN_CAS_MTIME);
	assert_int_equal(st.st_mtim.tv_nsec, 0);
	assert_int_equal(st.st_mode & 07777, 0444);
	assert_int_equal(st.st_nlink, 1);
}

/* The report: a rebuild kept the bad blob as "already present". */
static void test_put_replaces_a_corrupt_blob(void **state)
{
	struct fixture *f = *state;
	append_file(f->blob, "oops\n");
	char hex[KILN_SHA256_HEX_LEN + 1];
	assert_int_equal(kiln_cas_put_file(f->state, f->src, NULL, hex, NULL, NULL), 0);
	assert_string_equal(hex, f->hex);
	assert_blob_good(f);
	assert_int_equal(quarantined(f), 1);
	assert_int_equal(notices, 1);
	assert_non_null(strstr(last_notice, f->hex));
}

/* Same size, other bytes: only the mtime tells, and the hash decides. */
static void test_put_replaces_a_same_size_corruption(void **state)
{
	struct fixture *f = *state;
	_cleanup_close_ int fd = open(f->blob, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "T", 1, 0), 1);
	assert_int_equal(kiln_cas_put_file(f->state, f->src, NULL, NULL, NULL, NULL), 0);
	assert_blob_good(f);
	assert_int_equal(quarantined(f), 1);
}

static void test_open_verified_quarantines(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	int fd = -1;
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, (uint64_t)st.st_size, &fd, NULL),
	                 0);
	safe_close(fd);
	/* a wrong recorded size is enough, whatever the mtime says */
	struct kiln_error *err = NULL;
	assert_int_equal(
	    kiln_cas_open_verified(f->state, f->hex, (uint64_t)st.st_size + 1, &fd, &err),
	    -EBADMSG);
	assert_non_null(strstr(err->msg, "quarantine"));
	kiln_error_free(err);
	assert_int_equal(access(f->blob, F_OK), -1);
	assert_int_equal(quarantined(f), 1);
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, KILN_CAS_SIZE_UNKNOWN, &fd, NULL),
	                 -ENOENT);
}

static void test_open_verified_rehashes_a_written_blob(void **state)
{
	struct fixture *f = *state;
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	_cleanup_close_ int w = open(f->blob, O_WRONLY | O_CLOEXEC);
	assert_int_equal(pwrite(w, "T", 1, 0), 1);
	int fd = -1;
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, (uint64_t)st.st_size, &fd, NULL),
	                 -EBADMSG);
	assert_int_equal(quarantined(f), 1);
}

/* A write that restores size and mtime passes the cheap check; the full
 * rehash of kiln_cas_check (`kiln store verify`) still finds it. */
static void test_check_finds_a_disguised_corruption(void **state)
{
	struct fixture *f = *state;
	{
		_cleanup_close_ int w = open(f->blob, O_WRONLY | O_CLOEXEC);
		assert_int_equal(pwrite(w, "T", 1, 0), 1);
	}
	assert_int_equal(kiln_cas_stamp(f->state, f->hex, NULL), 0);
	bool good = true;
	assert_int_equal(kiln_cas_check(f->state, f->hex, &good, NULL, NULL), 0);
	assert_false(good);
}

/* An older kiln linked blobs into output directories: the first use
 * gives the store a private copy, and the old output no longer reaches it. */
static void test_open_verified_unshares_a_hard_link(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *out = xasprintf("%s/out-rootfs.tar.gz", f->dir);
	assert_int_equal(link(f->blob, out), 0);
	int fd = -1;
	assert_int_equal(kiln_cas_open_verified(f->state, f->hex, KILN_CAS_SIZE_UNKNOWN, &fd, NULL),
	                 0);
	safe_close(fd);
	struct stat st;
	assert_int_equal(stat(f->blob, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	append_file(out, "oops\n");
	assert_blob_good(f);
	assert_int_equal(quarantined(f), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_concurrent_put_of_one_blob),
	    cmocka_unit_test_setup_teardown(test_put_stamps_the_blob, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_put_replaces_a_corrupt_blob, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_put_replaces_a_same_size_corruption, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_verified_quarantines, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_verified_rehashes_a_written_blob, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_check_finds_a_disguised_corruption, fx_setup,
	                                    fx_teardown),
	    cmocka_unit_test_setup_teardown(test_open_verified_unshares_a_hard_link, fx_setup,
	                                    fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
