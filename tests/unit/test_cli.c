/* Unit tests of cli/common.c: the one table from an error's kind to the
 * process exit code, and cli_fail()'s message and code. The codes are the
 * documented ones (README.md, "Exit status"); tests/integration/
 * test_error_kinds.py checks them on real builds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/alloc.h"

static void test_exit_codes(void **state)
{
	(void)state;
	static const struct {
		enum kiln_error_kind kind;
		int exit;
	} want[] = {
	    {KILN_ERR_USER, KILN_EXIT_FAILURE},      /* a failing step, a bad recipe */
	    {KILN_ERR_LIMIT, KILN_EXIT_FAILURE},     /* a timeout */
	    {KILN_ERR_CANCELLED, KILN_EXIT_FAILURE}, /* not by a signal (that is 128 + N) */
	    {KILN_ERR_SYSTEM, KILN_EXIT_FAILURE},    /* kiln or the host */
	};
	for (size_t i = 0; i < ELEMENTSOF(want); i++) {
		_cleanup_error_ struct kiln_error *err = NULL;
		kiln_error_set_kind(&err, want[i].kind, EIO, "x");
		kiln_error_prefix(&err, "build");
		assert_int_equal(cli_exit_code(err), want[i].exit);
	}
	/* Never success, never the usage code, whatever the error says. */
	assert_int_equal(cli_exit_code(NULL), KILN_EXIT_FAILURE);
	struct kiln_error odd = {.code = EIO, .kind = (enum kiln_error_kind)77, .msg = (char *)"?"};
	assert_int_equal(cli_exit_code(&odd), KILN_EXIT_FAILURE);
}

static void test_fail_prints_and_maps(void **state)
{
	(void)state;
	/* stderr into a pipe: "kiln: <what>: <message>". */
	int p[2];
	assert_int_equal(pipe(p), 0);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	_cleanup_error_ struct kiln_error *err = NULL;
	kiln_error_set_kind(&err, KILN_ERR_LIMIT, ETIME, "step 1 (RUN sleep 9): timed out");
	int rc = cli_fail("build", -ETIME, err);
	int rc2 = cli_fail("setup", -ENOENT, NULL);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(p[1]);
	char buf[512] = "";
	ssize_t n = read(p[0], buf, sizeof(buf) - 1);
	close(p[0]);
	assert_true(n > 0);
	assert_int_equal(rc, KILN_EXIT_FAILURE);
	assert_int_equal(rc2, KILN_EXIT_FAILURE);
	_cleanup_free_ char *want = xasprintf(
	    "kiln: build: step 1 (RUN sleep 9): timed out\nkiln: setup: %s\n", strerror(ENOENT));
	assert_string_equal(buf, want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exit_codes),
	    cmocka_unit_test(test_fail_prints_and_maps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
