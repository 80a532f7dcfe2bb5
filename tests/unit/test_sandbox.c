/* tests/unit/test_sandbox.c — sandbox/: spec validation, result messages,
 * and real runs (namespaces, cgroups, seccomp) over the host's / mounted
 * read-only: output callbacks, exit status, signals, output caps, timeout
 * with warning, cancellation from another thread. The adversarial tests are
 * in tests/security/. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "sandbox/sandbox.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"

static const char *const host_root[] = {"/"};

static void base_spec(struct kiln_sandbox_spec *s, const char *const *argv)
{
	kiln_sandbox_spec_init(s);
	s->layers = host_root;
	s->n_layers = 1;
	s->argv = argv;
	s->memory_bytes = 256u << 20;
	s->timeout_s = 60;
}

static void expect_invalid(const struct kiln_sandbox_spec *s, const char *needle)
{
	struct kiln_error *err = NULL;
	assert_int_equal(kiln_sandbox_spec_validate(s, &err), -EINVAL);
	assert_non_null(err);
	if (!strstr(err->msg, needle))
		fail_msg("'%s' not in '%s'", needle, err->msg);
	kiln_error_free(err);
}

static void test_validate(void **state)
{
	(void)state;
	static const char *const argv[] = {"/bin/true", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	assert_int_equal(kiln_sandbox_spec_validate(&s, NULL), 0);
	assert_int_equal(s.cancel_fd, -1);
	assert_true(s.source_date_epoch < 0);

	s.n_layers = 0;
	expect_invalid(&s, "layers");
	static const char *const rel[] = {"relative"};
	s.layers = rel, s.n_layers = 1;
	expect_invalid(&s, "absolute");
	static const char *const colon[] = {"/a:b"};
	s.layers = colon;
	expect_invalid(&s, "':'");

	base_spec(&s, argv);
	s.read_only = true, s.upper_dir = "/up";
	expect_invalid(&s, "exclude");
	base_spec(&s, argv);
	s.work_dir = "/w";
	expect_invalid(&s, "needs upper_dir");

	static const char *const bad_dst[] = {"/proc/x", "/dev",      "/sys/fs",
	                                      "/",       "/a/../etc", "rel"};
	for (size_t i = 0; i < ELEMENTSOF(bad_dst); i++) {
		struct kiln_sandbox_bind b = {"/tmp", bad_dst[i], true};
		base_spec(&s, argv);
		s.binds = &b, s.n_binds = 1;
		expect_invalid(&s, "binds[0].dst");
	}
	struct kiln_sandbox_bind ok = {"/tmp", "/procfoo", true};
	base_spec(&s, argv);
	s.binds = &ok, s.n_binds = 1;
	assert_int_equal(kiln_sandbox_spec_validate(&s, NULL), 0);

	static const char *const empty[] = {NULL};
	base_spec(&s, empty);
	expect_invalid(&s, "argv");
	static const char *const bad_env[] = {"NOEQUALS"};
	base_spec(&s, argv);
	s.env = bad_env, s.n_env = 1;
	expect_invalid(&s, "env[0]");
	base_spec(&s, argv);
	s.uid = 70000;
	expect_invalid(&s, "mapping");
	base_spec(&s, argv);
	s.id_base = 10;
	expect_invalid(&s, "id_base");
	base_spec(&s, argv);
	s.workdir = "tmp";
	expect_invalid(&s, "workdir");
}

static void expect_describe(const struct kiln_sandbox_result *r, const char *want)
{
	char *d = kiln_sandbox_result_describe(r);
	assert_string_equal(d, want);
	free(d);
}

static void test_describe(void **state)
{
	(void)state;
	struct kiln_sandbox_result r = {.exit_code = 2};
	expect_describe(&r, "exited with status 2");
	r = (struct kiln_sandbox_result){.exit_code = -1, .term_signal = SIGKILL, .oom_killed = 1};
	expect_describe(&r, "killed by signal 9 (SIGKILL) (out of memory)");
	r.memory_limit = 64ULL << 20;
	expect_describe(&r,
	                "killed for exceeding the memory limit of 64 MB (out of memory, signal 9)");
	r = (struct kiln_sandbox_result){
	    .exit_code = 2, .oom_killed = 1, .memory_limit = 1ULL << 30};
	expect_describe(&r, "exited with status 2 after a process was killed for exceeding the "
	                    "memory limit of 1024 MB (out of memory)");
	r = (struct kiln_sandbox_result){.timed_out = 1, .timeout_s = 20, .term_signal = 9};
	expect_describe(&r, "timed out after 20 seconds");
	r = (struct kiln_sandbox_result){.cancelled = 1, .term_signal = 9};
	expect_describe(&r, "cancelled");
}

struct capture {
	struct kiln_buf out, err;
	unsigned warnings;
};

static void on_output(void *userdata, enum kiln_sandbox_stream stream, const char *data, size_t len)
{
	struct capture *c = userdata;
	kiln_buf_append(stream == KILN_SANDBOX_STDOUT ? &c->out : &c->err, data, len);
}

static void on_warning(void *userdata, unsigned elapsed)
{
	struct capture *c = userdata;
	assert_int_equal(elapsed, 1);
	c->warnings++;
}

static int run_capture(struct kiln_sandbox_spec *s, struct capture *c,
                       struct kiln_sandbox_result *res)
{
	memset(c, 0, sizeof(*c));
	s->on_output = on_output;
	s->on_warning = on_warning;
	s->userdata = c;
	struct kiln_error *err = NULL;
	int r = kiln_sandbox_run(s, res, &err);
	if (r < 0 && err)
		print_message("kiln_sandbox_run: %s\n", err->msg);
	kiln_error_free(err);
	return r;
}

static void capture_free(struct capture *c)
{
	kiln_buf_free(&c->out);
	kiln_buf_free(&c->err);
}

static void test_run_output_and_status(void **state)
{
	(void)state;
	static const char *const argv[] = {"sh", "-c", "echo out; echo err >&2; echo $FOO; exit 3",
	                                   NULL};
	static const char *const env[] = {"FOO=bar"};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	s.env = env, s.n_env = 1;
	struct capture c;
	struct kiln_sandbox_result res;
	assert_int_equal(run_capture(&s, &c, &res), 0);
	assert_int_equal(res.exit_code, 3);
	assert_int_equal(res.term_signal, 0);
	assert_false(res.timed_out || res.cancelled || res.oom_killed);
	/* the command's own failure: the user's */
	assert_true(res.failed);
	assert_int_equal(res.kind, KILN_ERR_USER);
	assert_string_equal(c.out.data, "out\nbar\n");
	assert_string_equal(c.err.data, "err\n");
	assert_int_equal(res.stdout_bytes, 8);
	assert_true(res.wall_usec > 0);
	capture_free(&c);
}

static char *thread_cgroups(void)
{
	char *buf = NULL;
	size_t len = 0;
	struct kiln_error *err = NULL;
	assert_int_equal(kiln_read_file("/proc/thread-self/cgroup", 1 << 16, &buf, &len, &err), 0);
	return buf;
}

/* The sandbox is born in its cgroups (cgroup.c: on v1 the calling thread
 * moves itself in, clones and moves back): the thread must be back where it
 * was, or a service thread would run under the last build's limits. The
 * command must see its own cgroup as the namespace's root. */
static void test_run_leaves_caller_in_its_cgroups(void **state)
{
	(void)state;
	static const char *const argv[] = {"/bin/sh", "-c", "cat /proc/self/cgroup", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	char *before = thread_cgroups();
	struct capture c;
	struct kiln_sandbox_result res;
	assert_int_equal(run_capture(&s, &c, &res), 0);
	char *after = thread_cgroups();
	assert_string_equal(before, after);
	assert_int_equal(res.exit_code, 0);
	/* Every hierarchy's line ends in ":/" (v1: "4:memory:/", v2: "0::/"). */
	assert_non_null(c.out.data);
	for (char *l = c.out.data; *l; l = strchr(l, '\n') + 1) {
		char *nl = strchr(l, '\n');
		assert_non_null(nl);
		assert_true(nl - l >= 2 && nl[-1] == '/' && nl[-2] == ':');
	}
	free(before);
	free(after);
	capture_free(&c);
}

static void test_run_signal(void **state)
{
	(void)state;
	static const char *const argv[] = {"/bin/sh", "-c", "kill -TERM $$", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	struct capture c;
	struct kiln_sandbox_result res;
	assert_int_equal(run_capture(&s, &c, &res), 0);
	assert_int_equal(res.exit_code, -1);
	assert_int_equal(res.term_signal, SIGTERM);
	assert_true(res.failed); /* a signal the command sent itself: its failure */
	assert_int_equal(res.kind, KILN_ERR_USER);
	capture_free(&c);
}

static void test_run_output_limit(void **state)
{
	(void)state;
	static const char *const argv[] = {"/bin/sh", "-c", "head -c 100000 /dev/zero", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	s.output_limit = 1000;
	struct capture c;
	struct kiln_sandbox_result res;
	assert_int_equal(run_capture(&s, &c, &res), 0);
	assert_int_equal(res.exit_code, 0);
	assert_false(res.failed); /* a capped stream is not a failure */
	assert_int_equal(c.out.len, 1000);
	assert_int_equal(res.stdout_bytes, 100000);
	assert_true(res.stdout_truncated);
	assert_false(res.stderr_truncated);
	capture_free(&c);
}

static void test_run_exec_failure(void **state)
{
	(void)state;
	static const char *const argv[] = {"no-such-command-kiln", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	struct kiln_sandbox_result res;
	struct kiln_error *err = NULL;
	assert_int_equal(kiln_sandbox_run(&s, &res, &err), -ENOENT);
	assert_non_null(strstr(err->msg, "no-such-command-kiln"));
	kiln_error_free(err);
}

static void test_run_timeout_and_warning(void **state)
{
	(void)state;
	static const char *const argv[] = {"/bin/sleep", "60", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	s.timeout_s = 2;
	s.warning_s = 1;
	struct capture c;
	struct kiln_sandbox_result res;
	assert_int_equal(run_capture(&s, &c, &res), 0);
	assert_true(res.timed_out);
	assert_false(res.cancelled);
	assert_int_equal(res.term_signal, SIGKILL);
	/* killed by SIGKILL, but the timeout's doing: a limit */
	assert_true(res.failed);
	assert_int_equal(res.kind, KILN_ERR_LIMIT);
	assert_int_equal(res.timeout_s, 2);
	assert_int_equal(c.warnings, 1);
	capture_free(&c);
}

static void *cancel_later(void *arg)
{
	struct timespec ts = {0, 200 * 1000 * 1000};
	nanosleep(&ts, NULL);
	kiln_sandbox_cancel(arg);
	return NULL;
}

static void test_run_cancel_from_thread(void **state)
{
	(void)state;
	static const char *const argv[] = {"/bin/sleep", "60", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	struct kiln_sandbox_canceller *c = NULL;
	assert_int_equal(kiln_sandbox_canceller_new(&c, NULL), 0);
	s.cancel_fd = kiln_sandbox_canceller_fd(c);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, cancel_later, c), 0);
	struct capture cap;
	struct kiln_sandbox_result res;
	assert_int_equal(run_capture(&s, &cap, &res), 0);
	pthread_join(t, NULL);
	assert_true(res.cancelled);
	assert_false(res.timed_out);
	assert_true(res.failed);
	assert_int_equal(res.kind, KILN_ERR_CANCELLED);
	kiln_sandbox_canceller_free(c);
	capture_free(&cap);
}

static void *concurrent_run(void *arg)
{
	static const char *const argv[] = {"/bin/sh", "-c", "echo $$", NULL};
	struct kiln_sandbox_spec s;
	base_spec(&s, argv);
	struct capture *c = arg;
	struct kiln_sandbox_result res;
	if (run_capture(&s, c, &res) < 0 || res.exit_code != 0) {
		print_message("concurrent run: exit %d signal %d err '%s'\n", res.exit_code,
		              res.term_signal, c->err.data ? c->err.data : "");
		return (void *)1;
	}
	return NULL;
}

static void test_run_from_threads(void **state)
{
	(void)state;
	/* Several sandboxes from one multi-threaded process at once (the
	 * build service's shape): each gets its own PID namespace. */
	pthread_t t[4];
	struct capture c[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, concurrent_run, &c[i]), 0);
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(t[i], &r);
		assert_null(r);
		assert_string_equal(c[i].out.data, "2\n"); /* PID 2: after kiln's init */
		capture_free(&c[i]);
	}
}

/* Debian's useradd gives the first regular user exactly 100000:65536, the
 * sandbox's range: that is reported; ranges beside it, comments and
 * malformed lines are not (issue 11 review, item 6). */
static void test_subid_overlaps(void **state)
{
	(void)state;
	static const char debian[] = "alice:100000:65536\n";
	char *w = kiln_sandbox_subid_overlaps(debian, strlen(debian));
	assert_non_null(w);
	assert_string_equal(w, "alice (100000-165535)");
	free(w);
	static const char apart[] = "# comment\nalice:165536:65536\nbob:34464:65536\n"
	                            "bad::5\n:100000:1\nx:1:0\ny:abc:10\nno-newline:1:1";
	assert_null(kiln_sandbox_subid_overlaps(apart, strlen(apart)));
	static const char two[] = "a:34465:65536\nb:1:1\nc:165535:1";
	w = kiln_sandbox_subid_overlaps(two, strlen(two));
	assert_non_null(w);
	assert_string_equal(w, "a (34465-100000), c (165535-165535)");
	free(w);
	assert_null(kiln_sandbox_subid_overlaps("", 0));
}

int main(void)
{
	const struct CMUnitTest pure[] = {
	    cmocka_unit_test(test_subid_overlaps),
	    cmocka_unit_test(test_validate),
	    cmocka_unit_test(test_describe),
	    cmocka_unit_test(test_run_leaves_caller_in_its_cgroups),
	};
	const struct CMUnitTest real[] = {
	    cmocka_unit_test(test_run_output_and_status),
	    cmocka_unit_test(test_run_signal),
	    cmocka_unit_test(test_run_output_limit),
	    cmocka_unit_test(test_run_exec_failure),
	    cmocka_unit_test(test_run_timeout_and_warning),
	    cmocka_unit_test(test_run_cancel_from_thread),
	    cmocka_unit_test(test_run_from_threads),
	};
	int failed = cmocka_run_group_tests_name("sandbox", pure, NULL, NULL);
	if (geteuid() != 0) {
		print_message("not root: skipping the sandbox runs\n");
		return failed ? failed : 77;
	}
	return failed + cmocka_run_group_tests_name("sandbox-run", real, NULL, NULL);
}
