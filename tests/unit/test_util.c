/* Unit tests of util/: errors, buf, sha256, utf8, json escaping, checked
 * integer parsing, and fs's in-root writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/budget.h"
#include "util/buf.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/outdir.h"
#include "util/parse.h"
#include "util/passwd.h"
#include "util/sha256.h"
#include "util/tail.h"
#include "util/utf8.h"
#include "util/walk.h"

/* ---- error ------------------------------------------------------------------ */

static void test_error_set_and_prefix(void **state)
{
	(void)state;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_error_set(&err, EINVAL, "must be %s", "absolute"), -EINVAL);
	assert_non_null(err);
	assert_int_equal(err->code, EINVAL);
	assert_string_equal(err->msg, "must be absolute");
	kiln_error_prefix(&err, "path");
	kiln_error_prefix(&err, "overlays[%d].files[%d]", 0, 1);
	assert_string_equal(err->msg, "overlays[0].files[1]: path: must be absolute");
}

static void test_error_first_wins(void **state)
{
	(void)state;
	_cleanup_error_ struct kiln_error *err = NULL;
	kiln_error_set(&err, ENOENT, "first");
	assert_int_equal(kiln_error_set(&err, EIO, "second"), -EIO);
	assert_string_equal(err->msg, "first");
	assert_int_equal(err->code, ENOENT);
}

static void test_error_null_and_errno(void **state)
{
	(void)state;
	assert_int_equal(kiln_error_set(NULL, EPERM, "x"), -EPERM);
	kiln_error_prefix(NULL, "x");
	struct kiln_error *none = NULL;
	kiln_error_prefix(&none, "x");
	assert_null(none);
	assert_null(kiln_error_free(NULL));

	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_error_set_errno(&err, ENOENT, "%s: cannot open", "f"), -ENOENT);
	char want[256];
	snprintf(want, sizeof(want), "f: cannot open: %s", strerror(ENOENT));
	assert_string_equal(err->msg, want);

	/* a non-positive code still yields a negative return */
	_cleanup_error_ struct kiln_error *e2 = NULL;
	assert_true(kiln_error_set(&e2, 0, "zero") < 0);
	assert_true(e2->code > 0);
}

static void test_error_kind_travels(void **state)
{
	(void)state;
	/* The default is SYSTEM: a failure nobody explained is kiln's. */
	_cleanup_error_ struct kiln_error *sys = NULL;
	kiln_error_set_errno(&sys, EIO, "write");
	assert_int_equal(kiln_error_kind(sys), KILN_ERR_SYSTEM);
	assert_int_equal(kiln_error_kind(NULL), KILN_ERR_SYSTEM);

	/* Set at the source, unchanged by every prefix on the way up. */
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_error_set_kind(&err, KILN_ERR_USER, EIO, "exited with status %d", 3),
	                 -EIO);
	kiln_error_prefix(&err, "step %d (RUN false)", 2);
	kiln_error_prefix(&err, "build");
	assert_string_equal(err->msg, "build: step 2 (RUN false): exited with status 3");
	assert_int_equal(err->kind, KILN_ERR_USER);
	assert_int_equal(err->code, EIO);

	/* The first error wins, kind included. */
	assert_int_equal(kiln_error_set_kind(&err, KILN_ERR_LIMIT, ETIME, "later"), -ETIME);
	assert_int_equal(kiln_error_kind(err), KILN_ERR_USER);

	/* A caller that knows better may say so; NULL and bad kinds are no-ops. */
	kiln_error_set_kind_of(&err, KILN_ERR_CANCELLED);
	assert_int_equal(kiln_error_kind(err), KILN_ERR_CANCELLED);
	kiln_error_set_kind_of(&err, (enum kiln_error_kind)42);
	assert_int_equal(kiln_error_kind(err), KILN_ERR_CANCELLED);
	kiln_error_set_kind_of(NULL, KILN_ERR_USER);
	struct kiln_error *none = NULL;
	kiln_error_set_kind_of(&none, KILN_ERR_USER);
	assert_null(none);
	_cleanup_error_ struct kiln_error *bad = NULL;
	kiln_error_set_kind(&bad, (enum kiln_error_kind) - 1, EIO, "x");
	assert_int_equal(kiln_error_kind(bad), KILN_ERR_SYSTEM);

	assert_string_equal(kiln_error_kind_name(KILN_ERR_USER), "user");
	assert_string_equal(kiln_error_kind_name(KILN_ERR_LIMIT), "limit");
	assert_string_equal(kiln_error_kind_name(KILN_ERR_SYSTEM), "system");
	assert_string_equal(kiln_error_kind_name(KILN_ERR_CANCELLED), "cancelled");
	assert_string_equal(kiln_error_kind_name((enum kiln_error_kind)7), "system");
}

/* ---- buf ---------------------------------------------------------------------- */

static void test_buf_growth(void **state)
{
	(void)state;
	struct kiln_buf b = KILN_BUF_INIT;
	for (int i = 0; i < 10000; i++)
		kiln_buf_putc(&b, (char)('a' + i % 26));
	assert_int_equal(b.len, 10000);
	assert_true(b.cap > b.len);
	assert_int_equal(b.data[b.len], '\0');
	for (int i = 0; i < 10000; i++)
		assert_int_equal(b.data[i], 'a' + i % 26);
	kiln_buf_printf(&b, "%05d|%s", 42, "tail");
	assert_int_equal(b.len, 10000 + 10);
	assert_string_equal(b.data + 10000, "00042|tail");
	/* a printf longer than the current capacity */
	char big[5000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	kiln_buf_printf(&b, "%s", big);
	assert_int_equal(b.len, 10010 + 4999);
	assert_int_equal(b.data[b.len], '\0');
	kiln_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_buf_ceiling(void **state)
{
	(void)state;
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT_MAX(8);
	kiln_buf_puts(&b, "abcde");
	assert_false(b.truncated);
	kiln_buf_puts(&b, "fgh");
	assert_false(b.truncated); /* exactly at the ceiling is not over it */
	assert_string_equal(b.data, "abcdefgh");
	kiln_buf_putc(&b, 'i');
	assert_true(b.truncated);
	assert_int_equal(b.len, 8);
	assert_string_equal(b.data, "abcdefgh");
	/* everything after the ceiling is dropped, printf included */
	kiln_buf_printf(&b, "%d", 12345);
	kiln_buf_append(&b, "zz", 2);
	assert_int_equal(b.len, 8);
	assert_int_equal(b.data[8], '\0');
	/* reset starts a new fill with the same ceiling */
	kiln_buf_reset(&b);
	assert_false(b.truncated);
	kiln_buf_printf(&b, "%s-%s", "0123", "456789");
	assert_true(b.truncated);
	assert_string_equal(b.data, "0123-456");
	/* free keeps the ceiling: the buffer is reusable */
	kiln_buf_free(&b);
	assert_int_equal(b.max, 8);
	assert_false(b.truncated);
	kiln_buf_append(&b, "0123456789", 10);
	assert_int_equal(b.len, 8);
	assert_true(b.truncated);
	/* no ceiling: grows as before */
	_cleanup_buf_ struct kiln_buf u = KILN_BUF_INIT;
	for (int i = 0; i < 100000; i++)
		kiln_buf_putc(&u, 'x');
	assert_int_equal(u.len, 100000);
	assert_false(u.truncated);
}

static void test_buf_binary_and_steal(void **state)
{
	(void)state;
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_append(&b, "a\0b", 3);
	kiln_buf_append(&b, NULL, 0);
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "a\0b", 4);
	size_t n = 0;
	char *s = kiln_buf_steal(&b, &n);
	assert_int_equal(n, 3);
	assert_memory_equal(s, "a\0b", 4);
	free(s);
	assert_null(b.data);
	/* stealing an empty buffer gives "" not NULL */
	s = kiln_buf_steal(&b, &n);
	assert_non_null(s);
	assert_string_equal(s, "");
	assert_int_equal(n, 0);
	free(s);
	kiln_buf_puts(&b, "xyz");
	kiln_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	kiln_buf_free(&b);
}

/* ---- sha256 ----------------------------------------------------------------------- */

static void test_sha256_known_answers(void **state)
{
	(void)state;
	char hex[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex("", 0, hex);
	assert_string_equal(hex,
	                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	kiln_sha256_hex("abc", 3, hex);
	assert_string_equal(hex,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	kiln_sha256_hex(m, strlen(m), hex);
	assert_string_equal(hex,
	                    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	/* "hello": the content_hash of the first vector */
	kiln_sha256_hex("hello", 5, hex);
	assert_string_equal(hex,
	                    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
}

static void test_sha256_incremental_million_a(void **state)
{
	(void)state;
	char block[1000];
	memset(block, 'a', sizeof(block));
	struct kiln_sha256 s;
	kiln_sha256_init(&s);
	for (int i = 0; i < 1000; i++)
		kiln_sha256_update(&s, block, sizeof(block));
	char hex[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_final_hex(&s, hex);
	assert_string_equal(hex,
	                    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_file(void **state)
{
	(void)state;
	char path[] = "/tmp/kiln-test-sha-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "abc", 3), 3);
	close(fd);
	char hex[KILN_SHA256_HEX_LEN + 1];
	uint64_t size = 0;
	assert_int_equal(kiln_sha256_file(path, hex, &size), 0);
	assert_int_equal(size, 3);
	assert_string_equal(hex,
	                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	unlink(path);
	assert_int_equal(kiln_sha256_file(path, hex, &size), -ENOENT);
}

static void test_hex_encode(void **state)
{
	(void)state;
	const uint8_t in[] = {0x00, 0x0f, 0xa5, 0xff};
	char out[9];
	kiln_hex_encode(in, sizeof(in), out);
	assert_string_equal(out, "000fa5ff");
}

/* ---- utf8 ------------------------------------------------------------------------- */

static void assert_decode(const char *s, size_t n, size_t want_len, uint32_t want_cp)
{
	uint32_t cp = 0xdeadbeef;
	size_t l = kiln_utf8_decode(s, n, &cp);
	assert_int_equal(l, want_len);
	if (want_len)
		assert_int_equal(cp, want_cp);
}

static void test_utf8_decode_valid(void **state)
{
	(void)state;
	assert_decode("A", 1, 1, 'A');
	assert_decode("\0", 1, 1, 0);
	assert_decode("\x7f", 1, 1, 0x7f);
	assert_decode("\xc2\x80", 2, 2, 0x80);
	assert_decode("\xc3\xa9", 2, 2, 0xe9);
	assert_decode("\xdf\xbf", 2, 2, 0x7ff);
	assert_decode("\xe0\xa0\x80", 3, 3, 0x800);
	assert_decode("\xe2\x98\x83", 3, 3, 0x2603);
	assert_decode("\xed\x9f\xbf", 3, 3, 0xd7ff);
	assert_decode("\xee\x80\x80", 3, 3, 0xe000);
	assert_decode("\xef\xbf\xbf", 3, 3, 0xffff);
	assert_decode("\xf0\x90\x80\x80", 4, 4, 0x10000);
	assert_decode("\xf0\x9f\x98\x80", 4, 4, 0x1f600);
	assert_decode("\xf4\x8f\xbf\xbf", 4, 4, 0x10ffff);
	/* decodes only the first code point */
	assert_decode("\xc3\xa9xyz", 5, 2, 0xe9);
}

static void test_utf8_decode_invalid(void **state)
{
	(void)state;
	assert_decode("", 0, 0, 0);
	/* stray continuation bytes and impossible lead bytes */
	assert_decode("\x80", 1, 0, 0);
	assert_decode("\xbf", 1, 0, 0);
	assert_decode("\xf8\x88\x80\x80\x80", 5, 0, 0);
	assert_decode("\xfe", 1, 0, 0);
	assert_decode("\xff", 1, 0, 0);
	/* overlong forms */
	assert_decode("\xc0\x80", 2, 0, 0);
	assert_decode("\xc0\xaf", 2, 0, 0);
	assert_decode("\xc1\xbf", 2, 0, 0);
	assert_decode("\xe0\x80\xaf", 3, 0, 0);
	assert_decode("\xe0\x9f\xbf", 3, 0, 0);
	assert_decode("\xf0\x80\x80\xaf", 4, 0, 0);
	assert_decode("\xf0\x8f\xbf\xbf", 4, 0, 0);
	/* UTF-16 surrogates */
	assert_decode("\xed\xa0\x80", 3, 0, 0);
	assert_decode("\xed\xbf\xbf", 3, 0, 0);
	assert_decode("\xed\xb0\x80", 3, 0, 0);
	/* above U+10FFFF */
	assert_decode("\xf4\x90\x80\x80", 4, 0, 0);
	assert_decode("\xf7\xbf\xbf\xbf", 4, 0, 0);
	/* truncated: by n, and by a non-continuation byte */
	assert_decode("\xc3", 1, 0, 0);
	assert_decode("\xe2\x98", 2, 0, 0);
	assert_decode("\xf0\x9f\x98", 3, 0, 0);
	assert_decode("\xe2\x98\x83", 2, 0, 0);
	assert_decode("\xe2(\x83", 3, 0, 0);
	assert_decode("\xf0\x9f\x98"
	              "A",
	              4, 0, 0);
}

static void test_utf8_valid(void **state)
{
	(void)state;
	assert_true(kiln_utf8_valid("", 0));
	assert_true(kiln_utf8_valid("a\0b", 3));
	assert_true(kiln_utf8_valid("D\xc3\xa9"
	                            "bian \xe2\x98\x83 \xf0\x9f\x98\x80",
	                            16));
	assert_false(kiln_utf8_valid("ok\xff", 3));
	assert_false(kiln_utf8_valid("ok\xe2\x98", 4));
	assert_false(kiln_utf8_valid("\xed\xa0\x80", 3));
}

static const uint32_t strip_space[] = {
    0x09,   0x0a,   0x0b,   0x0c,   0x0d,   0x1c,   0x1d,   0x1e,   0x1f,   0x20,
    0x85,   0xa0,   0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
    0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
};

static void test_utf8_strip_set_exact(void **state)
{
	(void)state;
	/* exactly Python's str.strip() set over every code point */
	size_t k = 0;
	for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
		bool want = k < ELEMENTSOF(strip_space) && strip_space[k] == cp;
		if (want)
			k++;
		if (kiln_unicode_is_strip_space(cp) != want)
			fail_msg("U+%04X: is_strip_space says %d", cp, !want);
	}
	assert_int_equal(k, ELEMENTSOF(strip_space));
}

static void assert_strip(const char *s, const char *want)
{
	size_t off = 99, len = 99;
	kiln_utf8_strip(s, strlen(s), &off, &len);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(s + off, want, len);
}

static void test_utf8_strip(void **state)
{
	(void)state;
	assert_strip("", "");
	assert_strip("abc", "abc");
	assert_strip("  abc\t\n", "abc");
	assert_strip(" a b ", "a b");
	assert_strip("\x1c\x1f"
	             "a"
	             "\x1d",
	             "a");
	assert_strip("\xc2\x85\xc2\xa0x\xe3\x80\x80", "x");         /* U+0085 U+00A0 U+3000 */
	assert_strip("\xe2\x80\xa8x\xe2\x80\xa9\xe2\x80\xaf", "x"); /* U+2028 U+2029 U+202F */
	assert_strip("\xe1\x9a\x80x\xe2\x81\x9f", "x");             /* U+1680 U+205F */
	assert_strip("\xe2\x80\x8bx\xe2\x80\x8b", "\xe2\x80\x8bx\xe2\x80\x8b"); /* U+200B kept */
	assert_strip("\xe1\xa0\x8ex", "\xe1\xa0\x8ex");                         /* U+180E kept */
	assert_strip("\xef\xbb\xbfx", "\xef\xbb\xbfx");                         /* U+FEFF kept */
	assert_strip(" \xf0\x9f\x98\x80 ", "\xf0\x9f\x98\x80");
	assert_strip(" \t\xe3\x80\x80 ", "");
	/* NUL is not whitespace */
	size_t off, len;
	kiln_utf8_strip(" \0 ", 3, &off, &len);
	assert_int_equal(off, 1);
	assert_int_equal(len, 1);
}

/* ---- json escaping ------------------------------------------------------------------- */

static void assert_json(const char *in, size_t n, bool ascii, const char *want)
{
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_json_put_string(&b, in, n, ascii);
	assert_non_null(b.data);
	assert_string_equal(b.data, want);
	assert_int_equal(b.len, strlen(want));
	kiln_buf_free(&b);
}

static void test_json_short_escapes(void **state)
{
	(void)state;
	assert_json("", 0, true, "\"\"");
	assert_json("plain text ~!", 13, true, "\"plain text ~!\"");
	assert_json("\"", 1, true, "\"\\\"\"");
	assert_json("\\", 1, true, "\"\\\\\"");
	assert_json("\n\r\t\b\f", 5, true, "\"\\n\\r\\t\\b\\f\"");
	assert_json("/", 1, true, "\"/\""); /* not escaped */
	assert_json("'", 1, true, "\"'\"");
}

static void test_json_c0_and_del(void **state)
{
	(void)state;
	assert_json("\0", 1, true, "\"\\u0000\"");
	assert_json("a\0b", 3, true, "\"a\\u0000b\"");
	assert_json("\x01\x07\x0b\x0e\x1b\x1f", 6, true,
	            "\"\\u0001\\u0007\\u000b\\u000e\\u001b\\u001f\"");
	assert_json("\x7f", 1, true, "\"\\u007f\"");
	/* every C0 control that has no short escape is \u00xx, lowercase */
	for (unsigned c = 0; c < 0x20; c++) {
		if (strchr("\n\r\t\b\f", (int)c) && c)
			continue;
		char in[1] = {(char)c};
		char want[16];
		snprintf(want, sizeof(want), "\"\\u%04x\"", c);
		assert_json(in, 1, true, want);
	}
}

static void test_json_non_ascii(void **state)
{
	(void)state;
	assert_json("\xc2\x80", 2, true, "\"\\u0080\"");
	assert_json("\xc3\xa9", 2, true, "\"\\u00e9\"");
	assert_json("\xc3\xbf", 2, true, "\"\\u00ff\"");
	assert_json("\xe2\x98\x83", 3, true, "\"\\u2603\"");
	assert_json("\xe2\x80\xa8", 3, true, "\"\\u2028\"");
	assert_json("\xef\xbf\xbf", 3, true, "\"\\uffff\"");
	assert_json("\xf0\x9f\x98\x80", 4, true, "\"\\ud83d\\ude00\"");
	assert_json("\xf0\x90\x80\x80", 4, true, "\"\\ud800\\udc00\"");
	assert_json("\xf4\x8f\xbf\xbf", 4, true, "\"\\udbff\\udfff\"");
	assert_json("D\xc3\xa9"
	            "bian \xe2\x98\x83",
	            11, true, "\"D\\u00e9bian \\u2603\"");
	/* invalid bytes become U+FFFD, one per byte */
	assert_json("a\xff"
	            "b",
	            3, true, "\"a\\ufffdb\"");
	assert_json("\xe2\x98", 2, true, "\"\\ufffd\\ufffd\"");
	/* not ascii_only: non-ASCII passes through, controls are still escaped */
	assert_json("\xe2\x98\x83\n\x7f", 5, false, "\"\xe2\x98\x83\\n\\u007f\"");
	/* kiln_json_put_cstr is the ASCII form */
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_json_put_cstr(&b, "\xc3\xa9\"");
	assert_string_equal(b.data, "\"\\u00e9\\\"\"");
	kiln_buf_free(&b);
}

/* ---- checked integer parsing ----------------------------------------------------------- */

static void test_parse_u64(void **state)
{
	(void)state;
	uint64_t v = 7;
	assert_int_equal(kiln_parse_u64("0", 10, 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(kiln_parse_u64("18446744073709551615", 10, 0, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(kiln_parse_u64("644", 8, 0, 07777, &v), 0);
	assert_int_equal(v, 0644);
	assert_int_equal(kiln_parse_u64("ff", 16, 0, 255, &v), 0);
	assert_int_equal(v, 255);
	v = 7;
	assert_int_equal(kiln_parse_u64("18446744073709551616", 10, 0, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(kiln_parse_u64("11", 10, 0, 10, &v), -ERANGE);
	assert_int_equal(kiln_parse_u64("4", 10, 5, 10, &v), -ERANGE);
	assert_int_equal(kiln_parse_u64("-1", 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64("+1", 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64(" 1", 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64("1 ", 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64("", 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64(NULL, 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64("12abc", 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64("abc", 10, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_u64("8", 8, 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(v, 7); /* untouched on failure */
}

static void test_parse_size(void **state)
{
	(void)state;
	uint64_t v = 7;
	assert_int_equal(kiln_parse_size("4096", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(kiln_parse_size("64K", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 64 << 10);
	assert_int_equal(kiln_parse_size("4M", 0, UINT64_MAX, &v), 0);
	assert_int_equal(v, 4 << 20);
	assert_int_equal(kiln_parse_size("2G", 0, UINT64_MAX, &v), 0);
	assert_true(v == UINT64_C(2) << 30);
	v = 7;
	assert_int_equal(kiln_parse_size("17179869184G", 0, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(kiln_parse_size("1K", 2048, UINT64_MAX, &v), -ERANGE);
	assert_int_equal(kiln_parse_size("M", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_size("", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_size("-1M", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_size("1.5M", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_size("1MB", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_size("1m", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_size(" 1", 0, UINT64_MAX, &v), -EINVAL);
	assert_int_equal(v, 7);
}

static void test_budget(void **state)
{
	(void)state;
	struct kiln_budget b = {.max = 10};
	assert_null(kiln_budget_note(&b));
	assert_int_equal(kiln_budget_take(&b, 4), 4);
	assert_int_equal(kiln_budget_take(&b, 8), 6);
	assert_int_equal(kiln_budget_take(&b, 5), 0);
	assert_int_equal(b.passed, 10);
	assert_int_equal(b.dropped, 7);
	_cleanup_free_ char *note = kiln_budget_note(&b);
	assert_string_equal(note, "==> log limit of 10 bytes reached: dropped 7 bytes\n");
}

static void test_parse_i64(void **state)
{
	(void)state;
	int64_t v = 7;
	assert_int_equal(kiln_parse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v), 0);
	assert_true(v == INT64_MIN);
	assert_int_equal(kiln_parse_i64("9223372036854775807", INT64_MIN, INT64_MAX, &v), 0);
	assert_true(v == INT64_MAX);
	assert_int_equal(kiln_parse_i64("-5", -10, 10, &v), 0);
	assert_int_equal(v, -5);
	v = 7;
	assert_int_equal(kiln_parse_i64("9223372036854775808", INT64_MIN, INT64_MAX, &v), -ERANGE);
	assert_int_equal(kiln_parse_i64("-9223372036854775809", INT64_MIN, INT64_MAX, &v), -ERANGE);
	assert_int_equal(kiln_parse_i64("-1", 0, 10, &v), -ERANGE);
	assert_int_equal(kiln_parse_i64("11", 0, 10, &v), -ERANGE);
	assert_int_equal(kiln_parse_i64("-", INT64_MIN, INT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_i64("", INT64_MIN, INT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_i64(" 1", INT64_MIN, INT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_i64("+1", INT64_MIN, INT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_i64("1.5", INT64_MIN, INT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_i64("0x10", INT64_MIN, INT64_MAX, &v), -EINVAL);
	assert_int_equal(kiln_parse_i64("1e3", INT64_MIN, INT64_MAX, &v), -EINVAL);
	assert_int_equal(v, 7);
}

static void test_parse_int(void **state)
{
	(void)state;
	int v = 7;
	assert_int_equal(kiln_parse_int("2147483647", 0, INT_MAX, &v), 0);
	assert_int_equal(v, INT_MAX);
	v = 7;
	assert_int_equal(kiln_parse_int("2147483648", 0, INT_MAX, &v), -ERANGE);
	assert_int_equal(kiln_parse_int("99999999999999999999", 0, INT_MAX, &v), -ERANGE);
	assert_int_equal(kiln_parse_int("0", 1, 10, &v), -ERANGE);
	assert_int_equal(kiln_parse_int("x", 0, 10, &v), -EINVAL);
	assert_int_equal(v, 7);
}

/* ---- fs ---------------------------------------------------------------------------------- */

struct tree {
	char top[64];      /* mkdtemp */
	char root[128];    /* top/root: the directory kiln writes into */
	char outside[128]; /* top/outside: must never change */
	int rootfd;
};

static int tree_setup(void **state)
{
	struct tree *t = xcalloc(1, sizeof(*t));
	snprintf(t->top, sizeof(t->top), "/tmp/kiln-test-fs-XXXXXX");
	if (!mkdtemp(t->top))
		return -1;
	snprintf(t->root, sizeof(t->root), "%s/root", t->top);
	snprintf(t->outside, sizeof(t->outside), "%s/outside", t->top);
	if (mkdir(t->root, 0755) < 0 || mkdir(t->outside, 0755) < 0)
		return -1;
	t->rootfd = open(t->root, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	*state = t;
	return t->rootfd < 0 ? -1 : 0;
}

static int tree_teardown(void **state)
{
	struct tree *t = *state;
	close(t->rootfd);
	_cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", t->top);
	int rc = system(cmd);
	free(t);
	return rc == 0 ? 0 : -1;
}

static char *slurp(const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_read_file(path, 1 << 20, &buf, &len, &err) < 0)
		return NULL;
	return buf;
}

static void assert_outside_empty(const struct tree *t)
{
	_cleanup_free_ char *cmd = xasprintf("test -z \"$(ls -A '%s')\"", t->outside);
	assert_int_equal(system(cmd), 0);
}

static void test_fs_write_plain(void **state)
{
	struct tree *t = *state;
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "/a/b/c.txt", "hi", 2, 0600), 0);
	_cleanup_free_ char *p = xasprintf("%s/a/b/c.txt", t->root);
	_cleanup_free_ char *data = slurp(p);
	assert_string_equal(data, "hi");
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* replaced atomically, mode not umasked */
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "a/b/c.txt", "again", 5, 04755), 0);
	free(data);
	data = slurp(p);
	assert_string_equal(data, "again");
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 04755);
}

static void test_fs_write_refuses_bad_names(void **state)
{
	struct tree *t = *state;
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "", "x", 1, 0644), -EINVAL);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "/", "x", 1, 0644), -EINVAL);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "a/", "x", 1, 0644), -EINVAL);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "a/..", "x", 1, 0644), -EINVAL);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "a/.", "x", 1, 0644), -EINVAL);
	assert_true(kiln_write_file_in_root(t->rootfd, "../outside/x", "x", 1, 0644) < 0);
	assert_outside_empty(t);
}

static void test_fs_symlinked_dir_stays_inside(void **state)
{
	struct tree *t = *state;
	/* root/etc -> /<top>/outside (absolute) and root/rel -> ../outside */
	_cleanup_free_ char *l1 = xasprintf("%s/etc", t->root);
	_cleanup_free_ char *l2 = xasprintf("%s/rel", t->root);
	assert_int_equal(symlink(t->outside, l1), 0);
	assert_int_equal(symlink("../outside", l2), 0);
	int r1 = kiln_write_file_in_root(t->rootfd, "etc/passwd", "owned", 5, 0644);
	int r2 = kiln_write_file_in_root(t->rootfd, "rel/passwd", "owned", 5, 0644);
	int r3 = kiln_write_file_in_root(t->rootfd, "rel/deeper/x", "owned", 5, 0644);
	(void)r1, (void)r2, (void)r3; /* refusing or writing inside root are both fine */
	assert_outside_empty(t);
	/* and an existing absolute link target that exists *inside* root too */
	_cleanup_free_ char *inside = xasprintf("%s%s", t->root, t->outside);
	_cleanup_free_ char *mk = xasprintf("mkdir -p '%s'", inside);
	assert_int_equal(system(mk), 0);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "etc/passwd", "owned", 5, 0644), 0);
	assert_outside_empty(t);
	_cleanup_free_ char *where = xasprintf("%s/passwd", inside);
	_cleanup_free_ char *data = slurp(where);
	assert_non_null(data);
	assert_string_equal(data, "owned");
}

static void test_fs_symlink_at_final_component_replaced(void **state)
{
	struct tree *t = *state;
	_cleanup_free_ char *target = xasprintf("%s/victim", t->outside);
	int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "original", 8), 8);
	close(fd);
	_cleanup_free_ char *link = xasprintf("%s/f", t->root);
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "f", "new", 3, 0644), 0);
	_cleanup_free_ char *data = slurp(target);
	assert_string_equal(data, "original");
	struct stat st;
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_fs_open_in_root_clamps(void **state)
{
	struct tree *t = *state;
	_cleanup_free_ char *f = xasprintf("%s/secret", t->outside);
	int fd = open(f, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	/* ".." at the root stays at the root: outside/secret is not reachable */
	assert_int_equal(kiln_open_in_root(t->rootfd, "../outside/secret", O_RDONLY, 0), -ENOENT);
	_cleanup_free_ char *l = xasprintf("%s/magic", t->root);
	assert_int_equal(symlink("/proc/self/root/tmp", l), 0);
	int r = kiln_open_in_root(t->rootfd, "magic", O_RDONLY | O_DIRECTORY, 0);
	assert_true(r < 0);
	/* unlink so teardown's rm never follows it */
	unlink(l);
	unlink(f);
}

static void test_fs_mkdir_p(void **state)
{
	struct tree *t = *state;
	int fd = kiln_mkdir_p_in_root(t->rootfd, "x/y//z", 0755);
	assert_true(fd >= 0);
	close(fd);
	_cleanup_free_ char *p = xasprintf("%s/x/y/z", t->root);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(kiln_mkdir_p_in_root(t->rootfd, "x/../y", 0755), -EINVAL);
	/* a file in the way */
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "file", "", 0, 0644), 0);
	assert_int_equal(kiln_mkdir_p_in_root(t->rootfd, "file/sub", 0755), -ENOTDIR);
}

static void test_fs_read_limits(void **state)
{
	struct tree *t = *state;
	_cleanup_free_ char *p = xasprintf("%s/r", t->root);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "r", "0123456789", 10, 0644), 0);
	char *buf = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *err = NULL;
	assert_int_equal(kiln_read_file(p, 10, &buf, &len, &err), 0);
	assert_int_equal(len, 10);
	assert_string_equal(buf, "0123456789");
	free(buf);
	buf = NULL;
	assert_int_equal(kiln_read_file(p, 9, &buf, &len, &err), -EFBIG);
	assert_null(buf);
	assert_string_equal(err->msg, "larger than the limit of 9 bytes");
	err = kiln_error_free(err);
	/* an empty file reads as "" (the buffer was left unterminated) */
	_cleanup_free_ char *pe = xasprintf("%s/empty", t->root);
	assert_int_equal(kiln_write_file_in_root(t->rootfd, "empty", "", 0, 0644), 0);
	assert_int_equal(kiln_read_file(pe, 10, &buf, &len, &err), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);
	buf = NULL;
	assert_int_equal(kiln_read_file(t->root, 100, &buf, &len, &err), -EISDIR);
	assert_string_equal(err->msg, "is a directory");
	err = kiln_error_free(err);
	_cleanup_free_ char *missing = xasprintf("%s/missing", t->root);
	assert_int_equal(kiln_read_file(missing, 100, &buf, &len, &err), -ENOENT);
	assert_non_null(strstr(err->msg, "cannot open"));
	/* a pipe: size unknown until read */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(write(pfd[1], "abcdef", 6), 6);
	close(pfd[1]);
	err = kiln_error_free(err);
	assert_int_equal(kiln_read_fd(pfd[0], 5, &buf, &len, &err), -EFBIG);
	close(pfd[0]);
}

static void test_fs_rmtree_stays_inside(void **state)
{
	(void)state;
	char top[] = "/tmp/kiln-rmtree-XXXXXX";
	assert_non_null(mkdtemp(top));
	_cleanup_free_ char *outside = xasprintf("%s/outside", top);
	_cleanup_free_ char *victim = xasprintf("%s/outside/keep", top);
	_cleanup_free_ char *tree = xasprintf("%s/tree", top);
	_cleanup_free_ char *a = xasprintf("%s/tree/a", top);
	_cleanup_free_ char *sub = xasprintf("%s/tree/a/b", top);
	_cleanup_free_ char *link = xasprintf("%s/tree/a/escape", top);
	_cleanup_free_ char *file = xasprintf("%s/tree/a/b/f", top);
	assert_int_equal(mkdir(outside, 0755), 0);
	assert_int_equal(mkdir(tree, 0755), 0);
	assert_int_equal(mkdir(a, 0755), 0);
	assert_int_equal(mkdir(sub, 0755), 0);
	int fd = open(victim, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	fd = open(file, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	/* A symlink to a directory outside: removed, not followed. */
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(kiln_rmtree(tree), 0);
	assert_int_equal(access(tree, F_OK), -1);
	assert_int_equal(access(victim, F_OK), 0);
	/* Gone already: not an error. */
	assert_int_equal(kiln_rmtree(tree), 0);
	assert_int_equal(kiln_rmtree(top), 0);
	assert_int_equal(access(top, F_OK), -1);
}

/* ---- passwd ---------------------------------------------------------------- */

static void test_passwd_lookup(void **state)
{
	(void)state;
	const char *db = "root:x:0:0:root:/root:/bin/sh\n"
	                 "broken\n"
	                 "big:x:70000:1::/home/big:/bin/sh\n"
	                 "nogid:x:5\n"
	                 "builder:x:1500:1600:b:/home/builder:/bin/sh\n"
	                 "rel:x:7:8::home:/bin/sh\n"
	                 "last:x:9:10";
	int id = -1, gid = -1;
	char *home = NULL;
	assert_true(kiln_passwd_lookup(db, "builder", &id, &gid, &home));
	assert_int_equal(id, 1500);
	assert_int_equal(gid, 1600);
	assert_string_equal(home, "/home/builder");
	free(home);
	home = NULL;
	/* A prefix of a name is not the name; a relative home is not taken. */
	assert_false(kiln_passwd_lookup(db, "build", &id, &gid, NULL));
	assert_true(kiln_passwd_lookup(db, "rel", &id, &gid, &home));
	assert_null(home);
	/* Ids out of the sandbox's range or missing: refused, nothing written. */
	id = gid = -1;
	assert_false(kiln_passwd_lookup(db, "big", &id, &gid, NULL));
	assert_false(kiln_passwd_lookup(db, "nogid", &id, &gid, NULL));
	assert_int_equal(id, -1);
	assert_int_equal(gid, -1);
	/* group(5): only the id is needed. */
	assert_true(kiln_passwd_lookup(db, "nogid", &id, NULL, NULL));
	assert_int_equal(id, 5);
	/* No trailing newline; names with separators never match. */
	assert_true(kiln_passwd_lookup(db, "last", &id, &gid, NULL));
	assert_int_equal(gid, 10);
	assert_false(kiln_passwd_lookup(db, "root:x", &id, NULL, NULL));
	assert_false(kiln_passwd_lookup(db, "", &id, NULL, NULL));
	assert_false(kiln_passwd_lookup("", "root", &id, NULL, NULL));
}

static void test_split_fields(void **state)
{
	(void)state;
	struct kiln_span f[3], rest;
	const char *s = "  one two   three four  five";
	assert_int_equal(kiln_split_fields(s, strlen(s), f, 3, &rest), 3);
	assert_int_equal(f[0].len, 3);
	assert_memory_equal(f[0].p, "one", 3);
	assert_memory_equal(f[1].p, "two", 3);
	assert_int_equal(f[2].len, 5);
	assert_memory_equal(f[2].p, "three", 5);
	assert_int_equal(rest.len, strlen("four  five"));
	assert_memory_equal(rest.p, "four  five", rest.len);
	/* len bounds the input: nothing past it is read */
	assert_int_equal(kiln_split_fields("ab cd", 2, f, 3, &rest), 1);
	assert_int_equal(f[0].len, 2);
	assert_int_equal(rest.len, 0);
	assert_int_equal(kiln_split_fields("   ", 3, f, 3, NULL), 0);
	assert_int_equal(kiln_split_fields("", 0, f, 3, &rest), 0);
	assert_int_equal(rest.len, 0);

	uint64_t v = 7;
	assert_int_equal(kiln_parse_span_u64((struct kiln_span){"123x", 3}, 0, 1000, &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(kiln_parse_span_u64((struct kiln_span){"12", 0}, 0, 1000, &v), -EINVAL);
	assert_int_equal(kiln_parse_span_u64((struct kiln_span){"1001", 4}, 0, 1000, &v), -ERANGE);
	assert_int_equal(kiln_parse_span_u64((struct kiln_span){"-1", 2}, 0, 1000, &v), -EINVAL);
	assert_int_equal(v, 123);
}

static void test_tail_keeps_the_last_lines(void **state)
{
	(void)state;
	struct kiln_tail t;
	kiln_tail_reset(&t);
	assert_null(kiln_tail_last(&t));
	assert_null(kiln_tail_format(&t, NULL));
	for (int i = 1; i <= 30; i++) {
		char l[32];
		int n = snprintf(l, sizeof(l), "line %d\r\n", i);
		kiln_tail_feed(&t, l, (size_t)n);
	}
	kiln_tail_feed(&t, "\n  \n", 4); /* blank lines are not the reason */
	assert_string_equal(kiln_tail_last(&t), "line 30");
	size_t n = 0;
	char *f = kiln_tail_format(&t, &n);
	assert_int_equal(n, KILN_TAIL_LINES);
	assert_non_null(strstr(f, "  | line 13\n"));
	assert_null(strstr(f, "line 12\n"));
	free(f);
	/* a partial last line counts; an over-long one is cut with "..." */
	kiln_tail_reset(&t);
	char big[1000];
	memset(big, 'x', sizeof(big));
	kiln_tail_feed(&t, big, sizeof(big));
	kiln_tail_feed(&t, "\nno newline", 11);
	assert_string_equal(kiln_tail_last(&t), "no newline");
	f = kiln_tail_format(&t, &n);
	assert_int_equal(n, 2);
	assert_int_equal(strlen(f), 4 + KILN_TAIL_LINE_MAX + 3 + 1 + strlen("  | no newline\n"));
	free(f);
}

/* ---- the directory walker (util/walk.h) ---- */

struct walk_log {
	struct kiln_buf b;
	size_t n, max_depth;
	int fail_at;      /* return -EPERM at this entry (1-based), 0: never */
	const char *skip; /* rel path of a directory to skip */
};

static int walk_record(const struct kiln_walk_entry *e, void *ud)
{
	struct walk_log *l = ud;
	l->n++;
	if (e->depth > l->max_depth)
		l->max_depth = e->depth;
	/* (dirfd, name) reaches the entry itself, never what a symlink names */
	struct stat st;
	assert_int_equal(fstatat(e->dirfd, e->name, &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(st.st_ino, e->st->st_ino);
	assert_int_equal(strlen(e->rel), e->rel_len);
	if (e->depth < 8)
		kiln_buf_printf(&l->b, "%s%c ", *e->rel ? e->rel : "<root>",
		                S_ISDIR(e->st->st_mode)   ? '/'
		                : S_ISLNK(e->st->st_mode) ? '@'
		                                          : ' ');
	if (l->fail_at && l->n == (size_t)l->fail_at)
		return -EPERM;
	if (l->skip && strcmp(e->rel, l->skip) == 0)
		return KILN_WALK_SKIP;
	return 0;
}

/* root/{a/{f, l -> ../../outside, b/}, top} */
static void make_walk_tree(struct tree *t)
{
	assert_int_equal(mkdirat(t->rootfd, "a", 0755), 0);
	assert_int_equal(mkdirat(t->rootfd, "a/b", 0755), 0);
	assert_int_equal(kiln_write_file_atomic_at(t->rootfd, "top", "x", 1, 0644), 0);
	_cleanup_close_ int a = openat(t->rootfd, "a", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	assert_int_equal(kiln_write_file_atomic_at(a, "f", "y", 1, 0644), 0);
	assert_int_equal(symlinkat(t->outside, a, "l"), 0);
	_cleanup_close_ int o = open(t->outside, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	assert_int_equal(kiln_write_file_atomic_at(o, "secret", "s", 1, 0644), 0);
}

static void test_walk_orders_and_symlinks(void **state)
{
	struct tree *t = *state;
	make_walk_tree(t);
	struct walk_log l = {KILN_BUF_INIT, 0, 0, 0, NULL};
	assert_int_equal(kiln_walk(AT_FDCWD, t->root, 0, walk_record, &l), 0);
	assert_int_equal(l.n, 6);
	/* pre-order: a directory before what it holds; the symlink is an
	 * entry of its own and the outside file is never reached */
	assert_null(strstr(l.b.data, "secret"));
	const char *s = l.b.data;
	assert_true(strstr(s, "<root>/") == s);
	assert_true(strstr(s, "/a/ ") < strstr(s, "/a/f  "));
	assert_true(strstr(s, "/a/ ") < strstr(s, "/a/b/ "));
	assert_non_null(strstr(s, "/a/l@ "));
	assert_non_null(strstr(s, "/top  "));
	kiln_buf_free(&l.b);

	/* depth-first: contents before their directory, the root last */
	struct walk_log d = {KILN_BUF_INIT, 0, 0, 0, NULL};
	assert_int_equal(kiln_walk(AT_FDCWD, t->root, KILN_WALK_DEPTH, walk_record, &d), 0);
	assert_int_equal(d.n, 6);
	s = d.b.data;
	assert_true(strstr(s, "/a/f  ") < strstr(s, "/a/ "));
	assert_true(strstr(s, "/a/b/ ") < strstr(s, "/a/ "));
	assert_string_equal(s + d.b.len - strlen("<root>/ "), "<root>/ ");
	kiln_buf_free(&d.b);

	/* a skipped directory's contents are not reported */
	struct walk_log k = {KILN_BUF_INIT, 0, 0, 0, "/a"};
	assert_int_equal(kiln_walk(AT_FDCWD, t->root, 0, walk_record, &k), 0);
	assert_int_equal(k.n, 3);
	assert_null(strstr(k.b.data, "/a/f"));
	kiln_buf_free(&k.b);

	/* the callback's error ends the walk and is returned */
	struct walk_log f = {KILN_BUF_INIT, 0, 0, 2, NULL};
	assert_int_equal(kiln_walk(AT_FDCWD, t->root, 0, walk_record, &f), -EPERM);
	assert_int_equal(f.n, 2);
	kiln_buf_free(&f.b);

	/* a symlink as the root is reported, not followed */
	_cleanup_free_ char *ln = xasprintf("%s/a/l", t->root);
	struct walk_log y = {KILN_BUF_INIT, 0, 0, 0, NULL};
	assert_int_equal(kiln_walk(AT_FDCWD, ln, 0, walk_record, &y), 0);
	assert_int_equal(y.n, 1);
	assert_string_equal(y.b.data, "<root>@ ");
	kiln_buf_free(&y.b);

	_cleanup_free_ char *none = xasprintf("%s/nonexistent", t->root);
	assert_int_equal(kiln_walk(AT_FDCWD, none, 0, walk_record, &y), -ENOENT);

	/* rmtree removes the tree through the symlink's own entry only */
	assert_int_equal(kiln_rmtree(t->root), 0);
	assert_int_equal(access(t->root, F_OK), -1);
	_cleanup_free_ char *secret = xasprintf("%s/secret", t->outside);
	assert_int_equal(access(secret, F_OK), 0);
	assert_int_equal(kiln_rmtree(t->root), 0);                    /* gone already: fine */
	t->rootfd = open(t->top, O_DIRECTORY | O_RDONLY | O_CLOEXEC); /* for teardown */
}

/* A chain of 2100 directories "d" (4,200 bytes of path, past PATH_MAX) with
 * a file at the bottom, walked and removed with far fewer fds than levels:
 * the soft fd limit is lowered to 64 around the walks. nftw failed here
 * (ENAMETOOLONG), which left a build's scratch behind (issue 11 item 8). */
static void test_walk_deeper_than_path_max(void **state)
{
	struct tree *t = *state;
	enum { LEVELS = 2100 };
	int fd = dup(t->rootfd);
	for (int i = 0; i < LEVELS; i++) {
		assert_int_equal(mkdirat(fd, "d", 0755), 0);
		int next = openat(fd, "d", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
		assert_true(next >= 0);
		close(fd);
		fd = next;
	}
	assert_int_equal(kiln_write_file_atomic_at(fd, "bottom", "z", 1, 0644), 0);
	close(fd);
	assert_true(2 * LEVELS > PATH_MAX);

	struct rlimit old, low;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);

	struct walk_log l = {KILN_BUF_INIT, 0, 0, 0, NULL};
	int r = kiln_walk(AT_FDCWD, t->root, 0, walk_record, &l);
	struct walk_log d = {KILN_BUF_INIT, 0, 0, 0, NULL};
	int rd = kiln_walk(AT_FDCWD, t->root, KILN_WALK_DEPTH, walk_record, &d);
	int rm = kiln_rmtree(t->root);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

	assert_int_equal(r, 0);
	assert_int_equal(l.n, LEVELS + 2); /* root, the chain, the file */
	assert_int_equal(l.max_depth, LEVELS + 1);
	assert_int_equal(rd, 0);
	assert_int_equal(d.n, LEVELS + 2);
	assert_int_equal(rm, 0);
	assert_int_equal(access(t->root, F_OK), -1);
	kiln_buf_free(&l.b);
	kiln_buf_free(&d.b);
	t->rootfd = open(t->top, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
}

/* ---- the output-directory writer (util/outdir.h) ---- */

static size_t count_temps(const char *dir)
{
	_cleanup_free_ char *cmd = xasprintf("ls -A '%s' | grep -c '^.kiln-out-'", dir);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = 0;
	assert_int_equal(fscanf(f, "%zu", &n), 1);
	pclose(f);
	return n;
}

static void test_outdir_write_replaces_planted_symlinks(void **state)
{
	struct tree *t = *state;
	_cleanup_free_ char *victim = xasprintf("%s/victim", t->outside);
	_cleanup_close_ int o = open(t->outside, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	assert_int_equal(kiln_write_file_atomic_at(o, "victim", "precious", 8, 0600), 0);
	assert_int_equal(symlinkat(victim, t->rootfd, "manifest.json"), 0);

	_cleanup_free_ char *outp = xasprintf("%s/out", t->root);
	struct kiln_outdir d = {-1, NULL};
	assert_int_equal(kiln_outdir_open(outp, &d, NULL), 0); /* created */
	assert_int_equal(kiln_outdir_write(&d, "a.json", "{}", 2, 0644, NULL), 0);
	kiln_outdir_close(&d);
	assert_int_equal(d.fd, -1);

	assert_int_equal(kiln_outdir_open(t->root, &d, NULL), 0);
	assert_int_equal(kiln_outdir_write(&d, "manifest.json", "{\"x\":1}", 7, 0640, NULL), 0);
	struct stat st;
	assert_int_equal(fstatat(t->rootfd, "manifest.json", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	_cleanup_free_ char *v = slurp(victim);
	assert_string_equal(v, "precious");

	/* a failed commit (the name is a directory) leaves no temporary file */
	assert_int_equal(mkdirat(t->rootfd, "busy", 0755), 0);
	assert_int_equal(kiln_outdir_write(&d, "busy", "x", 1, 0644, NULL) < 0, 1);
	struct kiln_outfile f = KILN_OUTFILE_INIT;
	assert_int_equal(kiln_outdir_begin(&d, &f, NULL), 0);
	assert_int_equal(count_temps(t->root), 1);
	kiln_outdir_abort(&d, &f);
	assert_int_equal(f.fd, -1);
	assert_int_equal(count_temps(t->root), 0);
	kiln_outdir_close(&d);
}

/* A copy into a tmpfs from the disk: no rename or link can cross, and the
 * result shares nothing with its source. */
static void test_outdir_copy_across_file_systems(void **state)
{
	struct tree *t = *state;
	_cleanup_free_ char *src = xasprintf("%s/blob", t->outside);
	_cleanup_close_ int o = open(t->outside, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	size_t n = 3 << 20;
	_cleanup_free_ char *data = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		data[i] = (char)(i * 7 + (i >> 12));
	assert_int_equal(kiln_write_file_atomic_at(o, "blob", data, n, 0444), 0);

	char shm[] = "/dev/shm/kiln-test-outdir-XXXXXX";
	assert_non_null(mkdtemp(shm));
	struct kiln_outdir d = {-1, NULL};
	assert_int_equal(kiln_outdir_open(shm, &d, NULL), 0);
	assert_int_equal(kiln_outdir_copy_file(&d, "copy", src, 0644, NULL), 0);
	_cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
	assert_int_equal(kiln_outdir_copy_fd(&d, "copy2", in, 0644, NULL), 0);
	/* and within one file system, from the store-like source */
	struct kiln_outdir same = {-1, NULL};
	assert_int_equal(kiln_outdir_open(t->root, &same, NULL), 0);
	assert_int_equal(kiln_outdir_copy_file(&same, "copy3", src, 0644, NULL), 0);
	kiln_outdir_close(&same);

	struct stat s0, s1;
	assert_int_equal(stat(src, &s0), 0);
	const char *names[] = {"copy", "copy2"};
	for (size_t i = 0; i < 2; i++) {
		_cleanup_free_ char *p = xasprintf("%s/%s", shm, names[i]);
		assert_int_equal(stat(p, &s1), 0);
		assert_int_equal(s1.st_size, n);
		assert_int_equal(s1.st_nlink, 1);
		_cleanup_free_ char *got = NULL;
		size_t len = 0;
		assert_int_equal(kiln_read_file(p, n + 1, &got, &len, NULL), 0);
		assert_int_equal(len, n);
		assert_memory_equal(got, data, n);
	}
	_cleanup_free_ char *p3 = xasprintf("%s/copy3", t->root);
	assert_int_equal(stat(p3, &s1), 0);
	assert_int_equal(s1.st_nlink, 1);
	assert_int_not_equal(s1.st_ino, s0.st_ino);
	assert_int_equal(s0.st_nlink, 1);

	/* adopt: a file of kiln's own moves (renamed or copied) into place */
	_cleanup_free_ char *mine = xasprintf("%s/mine", t->outside);
	assert_int_equal(kiln_write_file_atomic_at(o, "mine", "m", 1, 0600), 0);
	assert_int_equal(kiln_outdir_adopt(&d, "adopted", mine, 0644, NULL), 0);
	assert_int_equal(access(mine, F_OK), -1);
	_cleanup_free_ char *pa = xasprintf("%s/adopted", shm);
	assert_int_equal(stat(pa, &s1), 0);
	assert_int_equal(s1.st_mode & 07777, 0644);
	assert_int_equal(count_temps(shm), 0);
	kiln_outdir_close(&d);
	_cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", shm);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_error_set_and_prefix),
	    cmocka_unit_test(test_error_first_wins),
	    cmocka_unit_test(test_error_null_and_errno),
	    cmocka_unit_test(test_error_kind_travels),
	    cmocka_unit_test(test_buf_ceiling),
	    cmocka_unit_test(test_buf_growth),
	    cmocka_unit_test(test_buf_binary_and_steal),
	    cmocka_unit_test(test_sha256_known_answers),
	    cmocka_unit_test(test_sha256_incremental_million_a),
	    cmocka_unit_test(test_sha256_file),
	    cmocka_unit_test(test_hex_encode),
	    cmocka_unit_test(test_utf8_decode_valid),
	    cmocka_unit_test(test_utf8_decode_invalid),
	    cmocka_unit_test(test_utf8_valid),
	    cmocka_unit_test(test_utf8_strip_set_exact),
	    cmocka_unit_test(test_utf8_strip),
	    cmocka_unit_test(test_json_short_escapes),
	    cmocka_unit_test(test_json_c0_and_del),
	    cmocka_unit_test(test_json_non_ascii),
	    cmocka_unit_test(test_parse_u64),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_budget),
	    cmocka_unit_test(test_parse_i64),
	    cmocka_unit_test(test_parse_int),
	    cmocka_unit_test(test_split_fields),
	    cmocka_unit_test_setup_teardown(test_fs_write_plain, tree_setup, tree_teardown),
	    cmocka_unit_test_setup_teardown(test_outdir_write_replaces_planted_symlinks, tree_setup,
	                                    tree_teardown),
	    cmocka_unit_test_setup_teardown(test_outdir_copy_across_file_systems, tree_setup,
	                                    tree_teardown),
	    cmocka_unit_test_setup_teardown(test_walk_orders_and_symlinks, tree_setup,
	                                    tree_teardown),
	    cmocka_unit_test_setup_teardown(test_walk_deeper_than_path_max, tree_setup,
	                                    tree_teardown),
	    cmocka_unit_test_setup_teardown(test_fs_write_refuses_bad_names, tree_setup,
	                                    tree_teardown),
	    cmocka_unit_test_setup_teardown(test_fs_symlinked_dir_stays_inside, tree_setup,
	                                    tree_teardown),
	    cmocka_unit_test_setup_teardown(test_fs_symlink_at_final_component_replaced, tree_setup,
	                                    tree_teardown),
	    cmocka_unit_test_setup_teardown(test_fs_open_in_root_clamps, tree_setup, tree_teardown),
	    cmocka_unit_test_setup_teardown(test_fs_mkdir_p, tree_setup, tree_teardown),
	    cmocka_unit_test_setup_teardown(test_fs_read_limits, tree_setup, tree_teardown),
	    cmocka_unit_test(test_fs_rmtree_stays_inside),
	    cmocka_unit_test(test_passwd_lookup),
	    cmocka_unit_test(test_tail_keeps_the_last_lines),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
