/* Unit tests of store/cas: blobs stored concurrently by several threads of
 * one process (the workers of one `kiln serve` fetching the same .deb). */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_concurrent_put_of_one_blob),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
