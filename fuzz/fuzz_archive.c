/* libFuzzer target: context archive extraction (and COPY of the result).
 *
 * Arbitrary bytes go to kiln_archive_extract_memory into a fresh directory
 * with small limits. Any input must either be refused with a message or
 * extract into a tree that holds only directories, regular files without
 * setuid/setgid, and relative symlinks; the tree is then COPYed into a
 * second directory. Both are removed after every run, so runs stay fast and
 * independent. */
#include <fcntl.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/archive.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[] = "/tmp/kiln-fuzz-archive-XXXXXX";
static char ctx[64], img[64];

static int check_and_remove(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)f;
	if (flag == FTW_DP)
		return rmdir(p);
	if (flag == FTW_SL || S_ISLNK(st->st_mode)) {
		char t[4096];
		ssize_t n = readlink(p, t, sizeof(t));
		if (n > 0 && t[0] == '/')
			__builtin_trap(); /* an absolute link survived */
	} else if (!S_ISREG(st->st_mode)) {
		__builtin_trap(); /* device, FIFO or socket */
	} else if (st->st_mode & (S_ISUID | S_ISGID)) {
		__builtin_trap();
	}
	return unlink(p);
}

static void remove_base(void)
{
	rmdir(base);
}

static void wipe(const char *dir)
{
	nftw(dir, check_and_remove, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ctx[0]) {
		if (!mkdtemp(base))
			abort();
		snprintf(ctx, sizeof(ctx), "%s/ctx", base);
		snprintf(img, sizeof(img), "%s/img", base);
		atexit(remove_base);
	}
	if (mkdir(ctx, 0700) < 0 || mkdir(img, 0700) < 0)
		abort();
	int cfd = open(ctx, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ifd = open(img, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cfd < 0 || ifd < 0)
		abort();
	struct kiln_archive_limits lim = {
	    .max_total_bytes = 1 << 20,
	    .max_entry_bytes = 256 << 10,
	    .max_entries = 256,
	};
	struct kiln_error *err = NULL;
	if (kiln_archive_extract_memory(data, size, cfd, &lim, NULL, &err) < 0) {
		if (!err || !err->msg || !err->msg[0])
			__builtin_trap(); /* every failure must explain itself */
	} else if (kiln_archive_copy(cfd, "/", ifd, "/copy", getuid(), getgid(), &err) < 0) {
		if (!err || !err->msg || !err->msg[0])
			__builtin_trap();
	}
	kiln_error_free(err);
	close(cfd);
	close(ifd);
	wipe(ctx);
	wipe(img);
	return 0;
}
