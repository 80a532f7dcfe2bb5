/* Unit tests of recipe/: defaults, normalization and stable sorting, every
 * validation error's message and JSON path, and build_key invariants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "util/alloc.h"
#include "util/buf.h"

static struct kiln_recipe *parse_ok_n(const char *json, size_t n)
{
	struct kiln_recipe *r = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_recipe_parse(json, n, &r, &err);
	if (rc < 0)
		fail_msg("parse failed: %s\n  recipe: %s", err ? err->msg : "(no message)", json);
	assert_null(err);
	assert_non_null(r);
	return r;
}

static struct kiln_recipe *parse_ok(const char *json)
{
	return parse_ok_n(json, strlen(json));
}

/* Parses json expecting failure with exactly message want. */
static void expect_error(const char *json, const char *want)
{
	struct kiln_recipe *r = (struct kiln_recipe *)0x1; /* must stay untouched */
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_recipe_parse(json, strlen(json), &r, &err);
	if (rc >= 0)
		fail_msg("parse succeeded, expected: %s\n  recipe: %s", want, json);
	assert_true(r == (struct kiln_recipe *)0x1);
	assert_non_null(err);
	if (strcmp(err->msg, want) != 0)
		fail_msg("recipe: %s\n  got:  %s\n  want: %s", json, err->msg, want);
}

static void expect_error_prefix(const char *json, size_t n, const char *want)
{
	struct kiln_recipe *r = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_true(kiln_recipe_parse(json, n, &r, &err) < 0);
	assert_null(r);
	assert_non_null(err);
	if (strncmp(err->msg, want, strlen(want)) != 0)
		fail_msg("got: %s\n  want prefix: %s", err->msg, want);
}

/* ---- defaults ------------------------------------------------------------------- */

static void test_defaults(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok("{}");
	assert_null(r->name);
	assert_string_equal(r->base, "debian/bookworm");
	assert_string_equal(r->locale, "en_US.UTF-8");
	assert_string_equal(r->timezone, "UTC");
	assert_int_equal(r->n_packages, 0);
	assert_int_equal(r->n_overlays, 0);
	assert_int_equal(r->n_steps, 0);
	assert_int_equal(r->outputs, KILN_OUTPUT_TAR);
	assert_int_equal(r->resources.memory_mb, 8192);
	assert_int_equal(r->resources.cpus, 4);
	assert_int_equal(r->resources.timeout_s, 1200);
	assert_int_equal(r->resources.warning_s, 900);
	assert_null(r->healthcheck);
	assert_false(r->epoch_given);
	/* the issue's third vector */
	assert_string_equal(r->config_hash,
	                    "472d84c01788a2af4582f68afb3beb499c9c16f497407662a45fdf06b2c9988f");
	assert_int_equal(r->source_date_epoch, 1723636099);
}

static void test_file_defaults(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r =
	    parse_ok("{\"overlays\":[{\"name\":\"o\",\"files\":[{\"path\":\"/a\"}]}]}");
	const struct kiln_file *f = &r->overlays[0].files[0];
	assert_string_equal(f->mode_str, "0644");
	assert_int_equal(f->mode, 0644);
	assert_int_equal(f->content_len, 0);
	assert_string_equal(f->content_sha256,
	                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_int_equal(r->n_files, 1);
}

static void test_healthcheck_defaults(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok("{\"healthcheck\":{\"cmd\":\"true\"}}");
	assert_non_null(r->healthcheck);
	assert_string_equal(r->healthcheck->cmd, "true");
	assert_int_equal(r->healthcheck->interval_s, 30);
	assert_int_equal(r->healthcheck->timeout_s, 30);
	assert_int_equal(r->healthcheck->start_period_s, 0);
	assert_int_equal(r->healthcheck->retries, 3);
}

static void test_warning_default_below_short_timeout(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok("{\"resources\":{\"timeout_s\":100}}");
	assert_int_equal(r->resources.timeout_s, 100);
	assert_true(r->resources.warning_s < 100);
}

/* ---- normalization ------------------------------------------------------------------- */

static void test_packages_sorted_distinct(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r =
	    parse_ok("{\"packages\":[\"vim\",\"git\",\"vim\",\"a+\",\"a-\",\"a0\",\"git\"]}");
	assert_int_equal(r->n_packages, 5);
	const char *want[] = {"a+", "a-", "a0", "git", "vim"};
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(r->packages[i], want[i]);
	assert_null(r->packages[5]);
}

static void test_overlays_sorted_stable(void **state)
{
	(void)state;
	/* names as given: " z" < "a" < "a" (stable: first "a" first) < "b" */
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok(
	    "{\"overlays\":[{\"name\":\"b\",\"files\":[]},{\"name\":\"a\",\"files\":[{\"path\":\"/"
	    "1\"}]},"
	    "{\"name\":\" z\",\"files\":[]},{\"name\":\"a\",\"files\":[{\"path\":\"/2\"}]}]}");
	assert_int_equal(r->n_overlays, 4);
	assert_string_equal(r->overlays[0].raw_name, " z");
	assert_string_equal(r->overlays[0].name, "z");
	assert_string_equal(r->overlays[1].name, "a");
	assert_string_equal(r->overlays[1].files[0].path, "/1");
	assert_string_equal(r->overlays[2].name, "a");
	assert_string_equal(r->overlays[2].files[0].path, "/2");
	assert_string_equal(r->overlays[3].name, "b");
}

static void test_files_sorted_stable(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok(
	    "{\"overlays\":[{\"name\":\"o\",\"files\":["
	    "{\"path\":\"/b\",\"content\":\"1\"},{\"path\":\"/a\",\"content\":\"2\"},"
	    "{\"path\":\" /c\",\"content\":\"3\"},{\"path\":\"/a\",\"content\":\"4\"},"
	    "{\"path\":\"/\\u00e9\",\"content\":\"5\"},{\"path\":\"/z\",\"content\":\"6\"}]}]}");
	const struct kiln_overlay *o = &r->overlays[0];
	assert_int_equal(o->n_files, 6);
	const char *want_content[] = {"3", "2", "4", "1", "6", "5"};
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(o->files[i].content, want_content[i]);
	assert_string_equal(o->files[0].path, "/c");
	assert_string_equal(o->files[0].raw_path, " /c");
}

static void test_strip_unicode_whitespace(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r =
	    parse_ok("{\"overlays\":[{\"name\":\"\\u3000\\u0085n\\u200b\\u2029\",\"files\":"
	             "[{\"path\":\"\\u001c\\u00a0/p\\u180e\\u2000\"}]}]}");
	assert_string_equal(r->overlays[0].name, "n\xe2\x80\x8b");           /* U+200B kept */
	assert_string_equal(r->overlays[0].files[0].path, "/p\xe1\xa0\x8e"); /* U+180E kept */
}

static void test_content_with_nul(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r =
	    parse_ok("{\"overlays\":[{\"name\":\"o\",\"files\":[{\"path\":\"/"
	             "a\",\"content\":\"a\\u0000b\"}]}]}");
	const struct kiln_file *f = &r->overlays[0].files[0];
	assert_int_equal(f->content_len, 3);
	assert_memory_equal(f->content, "a\0b", 3);
	char hex[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex("a\0b", 3, hex);
	assert_string_equal(f->content_sha256, hex);
}

static void test_steps_normalized(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok(
	    "{\"steps\":[\"RUN  echo hi  \",\"ENV A=b=c\",\"USER nobody\",\"WORKDIR /srv\","
	    "\"COPY src\\t/dst\",\"ENV E=\"]}");
	assert_int_equal(r->n_steps, 6);
	assert_int_equal(r->steps[0].op, KILN_STEP_RUN);
	assert_string_equal(r->steps[0].text, "RUN echo hi");
	assert_string_equal(r->steps[1].arg, "A");
	assert_string_equal(r->steps[1].arg2, "b=c");
	assert_int_equal(r->steps[2].op, KILN_STEP_USER);
	assert_string_equal(r->steps[3].arg, "/srv");
	assert_int_equal(r->steps[4].op, KILN_STEP_COPY);
	assert_string_equal(r->steps[4].arg, "src");
	assert_string_equal(r->steps[4].arg2, "/dst");
	assert_string_equal(r->steps[4].text, "COPY src /dst");
	assert_string_equal(r->steps[5].arg2, "");
}

static void test_outputs_and_epoch(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r =
	    parse_ok("{\"outputs\":[\"iso\",\"tar\"],\"source_date_epoch\":0}");
	assert_int_equal(r->outputs, KILN_OUTPUT_ISO | KILN_OUTPUT_TAR);
	assert_true(r->epoch_given);
	assert_int_equal(r->source_date_epoch, 0);
	assert_string_equal(kiln_output_name(KILN_OUTPUT_SQUASHFS), "squashfs");
	assert_null(kiln_output_name(0));
}

/* ---- identity ---------------------------------------------------------------------- */

static void test_issue_vectors(void **state)
{
	(void)state;
	static const struct {
		const char *json, *hash;
		int64_t epoch;
	} v[] = {
	    {"{\"packages\":[\"vim\",\"git\",\"base\"],\"overlays\":[{\"name\":\"test\",\"files\":"
	     "[{\"path\":\"/etc/test\",\"content\":\"hello\"}]}]}",
	     "81c1fb3290249d84b0ae72bc346acab877caf8085b121a2a11454a1b5089168a", 1830123928},
	    {"{\"packages\":[\"base\",\"git\",\"vim\"],\"overlays\":[]}",
	     "f1b96187c6de1522c5ad4a7835a07c26268f581e2693370058df60c799f086b1", 1913431986},
	    {"{\"packages\":[],\"overlays\":[]}",
	     "472d84c01788a2af4582f68afb3beb499c9c16f497407662a45fdf06b2c9988f", 1723636099},
	    {"{\"packages\":[\"vim\",\"vim\",\"emacs\"],\"overlays\":[{\"name\":\" motd "
	     "\",\"files\":"
	     "[{\"path\":\" /etc/motd\",\"content\":\"Welcome\\n\",\"mode\":\"0600\"},"
	     "{\"path\":\"/etc/issue\",\"content\":\"D\xc3\xa9"
	     "bian \xe2\x98\x83\"}]}],"
	     "\"locale\":\"de_DE.UTF-8\",\"timezone\":\"Europe/Berlin\"}",
	     "c2df80cfb5272257dbcd4f72886b3c86f8cdd3408ef7af317e4737af1a5cffc6", 1626659332},
	};
	for (size_t i = 0; i < ELEMENTSOF(v); i++) {
		_cleanup_recipe_ struct kiln_recipe *r = parse_ok(v[i].json);
		assert_string_equal(r->config_hash, v[i].hash);
		assert_int_equal(r->source_date_epoch, v[i].epoch);
		assert_int_equal(kiln_recipe_derive_epoch(v[i].hash), v[i].epoch);
	}
}

static void test_config_canonical_text(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok(
	    "{\"packages\":[\"vim\",\"git\",\"base\"],\"overlays\":[{\"name\":\"test\",\"files\":"
	    "[{\"path\":\"/etc/test\",\"content\":\"hello\"}]}]}");
	size_t n;
	_cleanup_free_ char *c = kiln_recipe_config_canonical(r, &n);
	assert_string_equal(
	    c, "{\"locale\":\"en_US.UTF-8\",\"overlays\":[{\"files\":[{\"content_hash\":"
	       "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\","
	       "\"mode\":\"0644\",\"path\":\"/etc/test\"}],\"name\":\"test\"}],"
	       "\"packages\":[\"base\",\"git\",\"vim\"],\"timezone\":\"UTC\"}");
	assert_int_equal(n, strlen(c));
}

static void test_derive_epoch(void **state)
{
	(void)state;
	char h[KILN_SHA256_HEX_LEN + 1];
	memset(h, '0', KILN_SHA256_HEX_LEN);
	h[KILN_SHA256_HEX_LEN] = '\0';
	assert_int_equal(kiln_recipe_derive_epoch(h), 1577836800);
	memset(h, 'f', 16); /* 2^64-1 mod 347155199 */
	assert_int_equal(kiln_recipe_derive_epoch(h),
	                 1577836800 + (int64_t)(UINT64_MAX % UINT64_C(347155199)));
	/* only the first 16 digits count */
	char h2[KILN_SHA256_HEX_LEN + 1];
	memcpy(h2, h, sizeof(h2));
	h2[16] = 'a';
	h2[63] = '1';
	assert_int_equal(kiln_recipe_derive_epoch(h), kiln_recipe_derive_epoch(h2));
}

static void build_key_of(const char *json, const struct kiln_build_inputs *in,
                         char ret_hash[KILN_SHA256_HEX_LEN + 1],
                         char ret_key[KILN_SHA256_HEX_LEN + 1])
{
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok(json);
	memcpy(ret_hash, r->config_hash, KILN_SHA256_HEX_LEN + 1);
	kiln_recipe_build_key(r, in, ret_key);
}

#define BASE_FIELDS                                                                                \
	"\"overlays\":[{\"name\":\"o\",\"files\":[{\"path\":\"/"                                   \
	"a\",\"content\":\"x\",\"mode\":\"0600\"}]}]"

static void test_build_key_invariants(void **state)
{
	(void)state;
	char h0[65], k0[65], h[65], k[65];
	build_key_of("{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN x\"]," BASE_FIELDS "}", NULL,
	             h0, k0);
	/* same: key order, package order, duplicates, explicit defaults */
	const char *same[] = {
	    "{\"steps\":[\"RUN x\"]," BASE_FIELDS ",\"packages\":[\"git\",\"vim\"]}",
	    "{\"packages\":[\"vim\",\"git\",\"vim\",\"git\"],\"steps\":[\"RUN x\"]," BASE_FIELDS
	    "}",
	    "{\"base\":\"debian/bookworm\",\"outputs\":[\"tar\"],\"locale\":\"en_US.UTF-8\","
	    "\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN x\"]," BASE_FIELDS "}",
	    "{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN  x \"]," BASE_FIELDS "}",
	};
	for (size_t i = 0; i < ELEMENTSOF(same); i++) {
		build_key_of(same[i], NULL, h, k);
		assert_string_equal(h, h0);
		assert_string_equal(k, k0);
	}
	/* build_key changes, config_hash does not */
	const char *differ[] = {
	    "{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN y\"]," BASE_FIELDS "}",
	    "{\"packages\":[\"vim\",\"git\"]," BASE_FIELDS "}",
	    "{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN x\",\"RUN x\"]," BASE_FIELDS "}",
	    "{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN "
	    "x\"],\"outputs\":[\"iso\"]," BASE_FIELDS "}",
	    "{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN "
	    "x\"],\"source_date_epoch\":1," BASE_FIELDS "}",
	    "{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN "
	    "x\"],\"healthcheck\":{\"cmd\":\"t\"}," BASE_FIELDS "}",
	};
	for (size_t i = 0; i < ELEMENTSOF(differ); i++) {
		build_key_of(differ[i], NULL, h, k);
		assert_string_equal(h, h0);
		if (strcmp(k, k0) == 0)
			fail_msg("build_key unchanged by %s", differ[i]);
	}
	/* context and tools inputs */
	const char *json = "{\"packages\":[\"vim\",\"git\"],\"steps\":[\"RUN x\"]," BASE_FIELDS "}";
	struct kiln_build_inputs none = {NULL, NULL}, c1 = {"aa", NULL}, c2 = {"bb", NULL},
	                         t1 = {NULL, "tar 1.34"};
	char kn[65], kc1[65], kc2[65], kt1[65];
	build_key_of(json, &none, h, kn);
	assert_string_equal(kn, k0); /* NULL inputs == no inputs */
	build_key_of(json, &c1, h, kc1);
	build_key_of(json, &c2, h, kc2);
	build_key_of(json, &t1, h, kt1);
	assert_string_not_equal(kc1, k0);
	assert_string_not_equal(kc1, kc2);
	assert_string_not_equal(kt1, k0);
	assert_string_not_equal(kt1, kc1);
}

static void test_build_canonical_is_hashed(void **state)
{
	(void)state;
	_cleanup_recipe_ struct kiln_recipe *r = parse_ok("{\"steps\":[\"RUN \\u00e9\"]}");
	size_t n;
	_cleanup_free_ char *c = kiln_recipe_build_canonical(r, NULL, &n);
	char want[65], got[65];
	kiln_sha256_hex(c, n, want);
	kiln_recipe_build_key(r, NULL, got);
	assert_string_equal(got, want);
	assert_non_null(strstr(c, r->config_hash));
	assert_non_null(strstr(c, "\"RUN \\u00e9\""));
	assert_non_null(strstr(c, "\"kiln_version\":"));
}

/* ---- every validation error ----------------------------------------------------------- */

#define OV(files) "{\"overlays\":[{\"name\":\"o\",\"files\":[" files "]}]}"

static void test_errors_structure(void **state)
{
	(void)state;
	expect_error("{\"foo\":1}", "(root): unknown field \"foo\"");
	expect_error("[]", "(root): must be an object, not an array");
	expect_error(OV("{\"path\":\"/a\",\"uid\":0}"),
	             "overlays[0].files[0]: unknown field \"uid\"");
	expect_error("{\"overlays\":[{\"x\":1}]}", "overlays[0]: unknown field \"x\"");
	expect_error("{\"resources\":{\"gpu\":1}}", "resources: unknown field \"gpu\"");
	expect_error("{\"healthcheck\":{\"cmd\":\"x\",\"y\":1}}",
	             "healthcheck: unknown field \"y\"");
	expect_error(OV("{\"content\":\"x\"}"),
	             "overlays[0].files[0]: missing required field \"path\"");
	expect_error("{\"healthcheck\":{}}", "healthcheck: missing required field \"cmd\"");
}

static void test_errors_types(void **state)
{
	(void)state;
	expect_error("{\"name\":1}", "name: must be a string, not an integer");
	expect_error("{\"name\":\"a\\u0000b\"}", "name: must not contain NUL characters");
	expect_error("{\"base\":null}", "base: must be a string, not null");
	expect_error("{\"packages\":{}}", "packages: must be an array, not an object");
	expect_error("{\"packages\":[true]}", "packages[0]: must be a string, not a boolean");
	expect_error("{\"overlays\":[1]}", "overlays[0]: must be an object, not an integer");
	expect_error("{\"overlays\":[{\"files\":{}}]}",
	             "overlays[0].files: must be an array, not an object");
	expect_error(OV("{\"path\":1}"),
	             "overlays[0].files[0].path: must be a string, not an integer");
	expect_error(OV("{\"path\":\"/a\",\"content\":[]}"),
	             "overlays[0].files[0].content: must be a string, not an array");
	expect_error("{\"steps\":[1.5]}",
	             "steps[0]: must be a string, not a number with a fraction");
	expect_error("{\"outputs\":[null]}", "outputs[0]: must be a string, not null");
	expect_error("{\"resources\":{\"cpus\":2.0}}",
	             "resources.cpus: must be an integer, not a number with a fraction");
	expect_error("{\"source_date_epoch\":true}",
	             "source_date_epoch: must be an integer, not a boolean");
	expect_error("{\"healthcheck\":{\"cmd\":1}}",
	             "healthcheck.cmd: must be a string, not an integer");
}

static void test_errors_ranges(void **state)
{
	(void)state;
	expect_error("{\"source_date_epoch\":-1}",
	             "source_date_epoch: must be between 0 and 253402300799, not -1");
	expect_error("{\"source_date_epoch\":253402300800}",
	             "source_date_epoch: must be between 0 and 253402300799, not 253402300800");
	expect_error("{\"resources\":{\"memory_mb\":63}}",
	             "resources.memory_mb: must be between 64 and 1048576, not 63");
	expect_error("{\"resources\":{\"cpus\":1025}}",
	             "resources.cpus: must be between 1 and 1024, not 1025");
	expect_error("{\"resources\":{\"timeout_s\":0}}",
	             "resources.timeout_s: must be between 1 and 604800, not 0");
	expect_error("{\"resources\":{\"timeout_s\":10,\"warning_s\":10}}",
	             "resources.warning_s: must be less than timeout_s (10)");
	expect_error("{\"healthcheck\":{\"cmd\":\"x\",\"interval_s\":0}}",
	             "healthcheck.interval_s: must be between 1 and 86400, not 0");
	expect_error("{\"healthcheck\":{\"cmd\":\"\"}}", "healthcheck.cmd: must not be empty");
	expect_error("{\"base\":\"debian/sid\"}",
	             "base: unsupported base \"debian/sid\" (supported: debian/bookworm, busybox, "
	             "archlinux)");
	/* the busybox base has no package manager and no kernel; the field is named */
	expect_error("{\"base\":\"busybox\",\"packages\":[\"vim\"]}",
	             "packages: base \"busybox\" has no package manager: packages must be empty "
	             "(use base \"debian/bookworm\" to install packages)");
	expect_error("{\"outputs\":[\"tar\",\"iso\"],\"base\":\"busybox\"}",
	             "outputs: \"iso\" needs a kernel and a boot loader, which base \"busybox\" "
	             "does not have (use \"tar\" or \"squashfs\", or base \"debian/bookworm\")");
	struct kiln_recipe *bb = parse_ok("{\"base\":\"busybox\",\"outputs\":[\"squashfs\"]}");
	assert_string_equal(bb->base, "busybox");
	kiln_recipe_free(bb);
	expect_error("{\"locale\":\"en US\"}",
	             "locale: must be a locale name like \"en_US.UTF-8\"");
	expect_error("{\"timezone\":\"Europe/../etc\"}",
	             "timezone: must be a tz database name like \"Europe/Berlin\"");
	expect_error("{\"timezone\":\"Europe//Berlin\"}",
	             "timezone: must be a tz database name like \"Europe/Berlin\"");
}

static void test_errors_packages(void **state)
{
	(void)state;
	static const char *bad[] = {"A", "a", "", "-a", "+a", ".a", "a_b", "a b", "a/b", "Vim"};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_free_ char *json = xasprintf("{\"packages\":[\"ok\",\"%s\"]}", bad[i]);
		_cleanup_free_ char *want =
		    xasprintf("packages[1]: \"%s\" is not a valid Debian package name "
		              "(lowercase letters, digits, + . -; at least 2 characters)",
		              bad[i]);
		expect_error(json, want);
	}
	static const char *good[] = {"a0", "0a", "g++", "a.b-c+d", "xz-utils"};
	for (size_t i = 0; i < ELEMENTSOF(good); i++) {
		_cleanup_free_ char *json = xasprintf("{\"packages\":[\"%s\"]}", good[i]);
		_cleanup_recipe_ struct kiln_recipe *r = parse_ok(json);
		assert_string_equal(r->packages[0], good[i]);
	}
	/* archlinux: pacman's rules, whichever comes first in the object */
	static const char *arch_bad[] = {"", "-a", ".a", "a b", "a/b", "a:b", "a\\u00e9", "a*"};
	for (size_t i = 0; i < ELEMENTSOF(arch_bad); i++) {
		_cleanup_free_ char *json =
		    xasprintf("{\"packages\":[\"ok\",\"%s\"],\"base\":\"archlinux\"}", arch_bad[i]);
		_cleanup_recipe_ struct kiln_recipe *r = NULL;
		_cleanup_error_ struct kiln_error *err = NULL;
		assert_int_equal(kiln_recipe_parse(json, strlen(json), &r, &err), -EINVAL);
		assert_non_null(strstr(err->msg, "packages[1]: "));
		assert_non_null(strstr(err->msg, "is not a valid pacman package name"));
	}
	static const char *arch_good[] = {"a", "Vim", "a_b", "lib32-glibc", "python-foo@2", "g++"};
	for (size_t i = 0; i < ELEMENTSOF(arch_good); i++) {
		_cleanup_free_ char *json =
		    xasprintf("{\"base\":\"archlinux\",\"packages\":[\"%s\"]}", arch_good[i]);
		_cleanup_recipe_ struct kiln_recipe *r = parse_ok(json);
		assert_string_equal(r->packages[0], arch_good[i]);
	}
	expect_error("{\"base\":\"archlinux\",\"outputs\":[\"iso\"]}",
	             "outputs: \"iso\" is not supported for base \"archlinux\" yet (use \"tar\" "
	             "or \"squashfs\"; docs/image.md, \"Backends\")");
}

static void test_errors_paths(void **state)
{
	(void)state;
	static const struct {
		const char *path, *msg;
	} bad[] = {
	    {"etc/x", "must be absolute"},
	    {"", "must not be empty"},
	    {"  ", "must not be empty"},
	    {"/", "must name a file, not /"},
	    {" / ", "must name a file, not /"},
	    {"/a/", "must not end with /"},
	    {"//a", "must not contain //"},
	    {"/a//b", "must not contain //"},
	    {"/.", "must not contain . or .. components"},
	    {"/..", "must not contain . or .. components"},
	    {"/a/./b", "must not contain . or .. components"},
	    {"/a/../b", "must not contain . or .. components"},
	    {"/a/..", "must not contain . or .. components"},
	    {"/a\\u0000", "must not contain NUL characters"},
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_free_ char *json =
		    xasprintf(OV("{\"path\":\"/ok\"},{\"path\":\"%s\"}"), bad[i].path);
		_cleanup_free_ char *want = xasprintf("overlays[0].files[1].path: %s", bad[i].msg);
		expect_error(json, want);
	}
	/* legal oddities: dots inside names, spaces inside */
	_cleanup_recipe_ struct kiln_recipe *r =
	    parse_ok(OV("{\"path\":\"/a/...\"},{\"path\":\"/.hidden\"},{\"path\":\"/a b/c..d\"}"));
	assert_int_equal(r->n_files, 3);

	/* 4096 bytes is the limit after stripping */
	char *p = xmalloc(4100);
	p[0] = '/';
	memset(p + 1, 'a', 4095);
	p[4096] = '\0';
	_cleanup_free_ char *ok = xasprintf(OV("{\"path\":\" %s \"}"), p);
	_cleanup_recipe_ struct kiln_recipe *r2 = parse_ok(ok);
	assert_int_equal(r2->overlays[0].files[0].path_len, 4096);
	p[4096] = 'a';
	p[4097] = '\0';
	_cleanup_free_ char *long1 = xasprintf(OV("{\"path\":\"%s\"}"), p);
	expect_error(long1, "overlays[0].files[0].path: longer than 4096 bytes");
	free(p);
}

static void test_errors_modes(void **state)
{
	(void)state;
	static const char *bad[] = {"",   "64",   "06444", "0888", "0o644",
	                            "rw", " 644", "644 ",  "-644", "9"};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_free_ char *json =
		    xasprintf(OV("{\"path\":\"/a\",\"mode\":\"%s\"}"), bad[i]);
		expect_error(json,
		             "overlays[0].files[0].mode: must be an octal mode string of 3 or 4 "
		             "digits like \"0644\"");
	}
	_cleanup_recipe_ struct kiln_recipe *r =
	    parse_ok(OV("{\"path\":\"/a\",\"mode\":\"755\"},{\"path\":\"/b\",\"mode\":\"7777\"}"));
	assert_string_equal(r->overlays[0].files[0].mode_str, "755");
	assert_int_equal(r->overlays[0].files[0].mode, 0755);
	assert_int_equal(r->overlays[0].files[1].mode, 07777);
}

static void test_errors_steps(void **state)
{
	(void)state;
	static const struct {
		const char *step, *msg;
	} bad[] = {
	    {"FROM x", "unknown instruction \"FROM\" (expected RUN, ENV, USER, WORKDIR or COPY)"},
	    {"run x", "unknown instruction \"run\" (expected RUN, ENV, USER, WORKDIR or COPY)"},
	    {" RUN x", "unknown instruction \"\" (expected RUN, ENV, USER, WORKDIR or COPY)"},
	    {"RUN", "RUN needs an argument"},
	    {"ENV  ", "ENV needs an argument"},
	    {"ENV A", "ENV must be KEY=VALUE with KEY made of letters, digits and _"},
	    {"ENV =b", "ENV must be KEY=VALUE with KEY made of letters, digits and _"},
	    {"ENV 9A=b", "ENV must be KEY=VALUE with KEY made of letters, digits and _"},
	    {"ENV A-B=c", "ENV must be KEY=VALUE with KEY made of letters, digits and _"},
	    {"USER Root", "USER must be a user name or a numeric uid"},
	    {"USER 123456", "USER must be a user name or a numeric uid"},
	    {"WORKDIR srv", "WORKDIR path must be absolute"},
	    {"WORKDIR /a/", "WORKDIR path must not end with /"},
	    {"COPY a", "COPY takes exactly two arguments: SRC DST"},
	    {"COPY a b c", "COPY takes exactly two arguments: SRC DST"},
	    {"COPY /etc/shadow /x", "COPY source must be relative to the context archive"},
	    {"COPY .. /x", "COPY source must not contain . or .. components"},
	    {"COPY a/../../x /x", "COPY source must not contain . or .. components"},
	    {"COPY a//b /x", "COPY source must not contain //"},
	    {"COPY a x", "COPY destination must be absolute"},
	    {"COPY a /x/../y", "COPY destination must not contain . or .. components"},
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_free_ char *json =
		    xasprintf("{\"steps\":[\"RUN ok\",\"%s\"]}", bad[i].step);
		_cleanup_free_ char *want = xasprintf("steps[1]: %s", bad[i].msg);
		expect_error(json, want);
	}
}

static void test_errors_outputs(void **state)
{
	(void)state;
	expect_error("{\"outputs\":[\"zip\"]}", "outputs[0]: unknown output (expected \"tar\", "
	                                        "\"squashfs\", \"iso\", \"ext4\" or \"oci\")");
	expect_error("{\"outputs\":[\"iso\",\"iso\"]}", "outputs[1]: duplicate output \"iso\"");
	expect_error(
	    "{\"outputs\":[]}",
	    "outputs: must name at least one of \"tar\", \"squashfs\", \"iso\", \"ext4\", \"oci\"");
	expect_error("{\"outputs\":[\"tar\",\"iso\",\"squashfs\",\"ext4\",\"oci\",\"tar\"]}",
	             "outputs: more than 5 outputs");
}

static void test_errors_json_level(void **state)
{
	(void)state;
	const char *dup = "{\"name\":\"a\",\"name\":\"b\"}";
	expect_error_prefix(dup, strlen(dup), "name: line 1, column ");
	const char *dup2 = "{\"overlays\":[{\"name\":\"o\",\"files\":[{\"path\":\"/"
	                   "a\"},{\"mode\":\"644\",\"mode\":\"600\"}]}]}";
	expect_error_prefix(dup2, strlen(dup2), "overlays[0].files[1].mode: ");
	const char *utf = "{\"steps\":[\"RUN ok\",\"RUN \xc0\xaf\"]}";
	expect_error_prefix(utf, strlen(utf), "steps[1]: ");
	const char *big = "{\"resources\":{\"cpus\":18446744073709551616}}";
	expect_error_prefix(big, strlen(big), "resources.cpus: ");
	const char *syntax = "{\"name\":\"x\",}";
	expect_error_prefix(syntax, strlen(syntax), "line 1, column ");
	expect_error_prefix("", 0, "line 1, column 1: invalid JSON");

	/* nesting: 32 levels parse (and then fail on type), 33 are refused up front */
	char deep[200];
	size_t n = 0;
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"steps\":");
	for (int i = 0; i < 31; i++)
		deep[n++] = '[';
	for (int i = 0; i < 31; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	expect_error_prefix(deep, n, "steps[0]: must be a string");
	n = (size_t)snprintf(deep, sizeof(deep), "{\"steps\":");
	for (int i = 0; i < 32; i++)
		deep[n++] = '[';
	for (int i = 0; i < 32; i++)
		deep[n++] = ']';
	deep[n++] = '}';
	expect_error_prefix(deep, n, "steps[0][0][0]");
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_recipe *r = NULL;
	assert_true(kiln_recipe_parse(deep, n, &r, &err) < 0);
	assert_non_null(strstr(err->msg, "nesting deeper than 32 levels"));
	/* brackets inside strings do not count */
	char s[300];
	n = (size_t)snprintf(s, sizeof(s), "{\"name\":\"");
	for (int i = 0; i < 100; i++)
		s[n++] = '[';
	n += (size_t)snprintf(s + n, sizeof(s) - n, "\\\"\"}");
	_cleanup_recipe_ struct kiln_recipe *ok = parse_ok_n(s, n);
	assert_int_equal(strlen(ok->name), 101);
}

static void test_errors_limits(void **state)
{
	(void)state;
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_puts(&b, "{\"packages\":[");
	for (int i = 0; i <= KILN_RECIPE_MAX_PACKAGES; i++)
		kiln_buf_printf(&b, "%s\"p%d\"", i ? "," : "", i);
	kiln_buf_puts(&b, "]}");
	expect_error(b.data, "packages: more than 4096 packages");
	kiln_buf_reset(&b);

	kiln_buf_puts(&b, "{\"overlays\":[{\"name\":\"a\",\"files\":[");
	for (int i = 0; i < 6000; i++)
		kiln_buf_printf(&b, "%s{\"path\":\"/a%d\"}", i ? "," : "", i);
	kiln_buf_puts(&b, "]},{\"name\":\"b\",\"files\":[");
	for (int i = 0; i < 4001; i++)
		kiln_buf_printf(&b, "%s{\"path\":\"/b%d\"}", i ? "," : "", i);
	kiln_buf_puts(&b, "]}]}");
	expect_error(b.data,
	             "overlays[1].files: the recipe has more than 10000 overlay files in all");

	/* the size limit is checked before parsing */
	size_t big = KILN_RECIPE_MAX_BYTES + 1;
	char *buf = xmalloc(big);
	memset(buf, ' ', big);
	buf[0] = '{';
	buf[big - 1] = '}';
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_recipe *r = NULL;
	assert_int_equal(kiln_recipe_parse(buf, big, &r, &err), -EFBIG);
	assert_null(r);
	assert_non_null(strstr(err->msg, "larger than the limit of 1048576 bytes"));
	err = kiln_error_free(err);
	assert_int_equal(kiln_recipe_parse(buf, big - 1 - 1, &r, &err) < 0, 1); /* "{   " */
	err = kiln_error_free(err);
	buf[big - 2] = '}';
	assert_int_equal(kiln_recipe_parse(buf, big - 1, &r, &err), 0);
	kiln_recipe_free(r);
	free(buf);
}

static void test_error_null_err_ok(void **state)
{
	(void)state;
	struct kiln_recipe *r = NULL;
	assert_true(kiln_recipe_parse("{\"foo\":1}", 9, &r, NULL) < 0);
	assert_null(r);
	assert_null(kiln_recipe_free(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_file_defaults),
	    cmocka_unit_test(test_healthcheck_defaults),
	    cmocka_unit_test(test_warning_default_below_short_timeout),
	    cmocka_unit_test(test_packages_sorted_distinct),
	    cmocka_unit_test(test_overlays_sorted_stable),
	    cmocka_unit_test(test_files_sorted_stable),
	    cmocka_unit_test(test_strip_unicode_whitespace),
	    cmocka_unit_test(test_content_with_nul),
	    cmocka_unit_test(test_steps_normalized),
	    cmocka_unit_test(test_outputs_and_epoch),
	    cmocka_unit_test(test_issue_vectors),
	    cmocka_unit_test(test_config_canonical_text),
	    cmocka_unit_test(test_derive_epoch),
	    cmocka_unit_test(test_build_key_invariants),
	    cmocka_unit_test(test_build_canonical_is_hashed),
	    cmocka_unit_test(test_errors_structure),
	    cmocka_unit_test(test_errors_types),
	    cmocka_unit_test(test_errors_ranges),
	    cmocka_unit_test(test_errors_packages),
	    cmocka_unit_test(test_errors_paths),
	    cmocka_unit_test(test_errors_modes),
	    cmocka_unit_test(test_errors_steps),
	    cmocka_unit_test(test_errors_outputs),
	    cmocka_unit_test(test_errors_json_level),
	    cmocka_unit_test(test_errors_limits),
	    cmocka_unit_test(test_error_null_err_ok),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
