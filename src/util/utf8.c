#include "util/utf8.h"

size_t kiln_utf8_decode(const char *str, size_t n, uint32_t *cp)
{
	const unsigned char *s = (const unsigned char *)str;
	if (n == 0)
		return 0;
	unsigned char c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t len;
	uint32_t v, min;
	if ((c & 0xe0) == 0xc0) {
		len = 2, v = c & 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3, v = c & 0x0f, min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4, v = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

bool kiln_utf8_valid(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = kiln_utf8_decode(s + i, n - i, &cp);
		if (!l)
			return false;
		i += l;
	}
	return true;
}

bool kiln_unicode_is_strip_space(uint32_t cp)
{
	/* Python's str.isspace(): bidi class WS/B/S or category Zs. */
	if ((cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20))
		return true;
	switch (cp) {
	case 0x85:
	case 0xa0:
	case 0x1680:
	case 0x2028:
	case 0x2029:
	case 0x202f:
	case 0x205f:
	case 0x3000: return true;
	}
	return cp >= 0x2000 && cp <= 0x200a;
}

void kiln_utf8_strip(const char *s, size_t n, size_t *ret_off, size_t *ret_len)
{
	size_t start = 0, end = 0;
	bool seen = false;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = kiln_utf8_decode(s + i, n - i, &cp);
		if (!l) /* callers pass valid UTF-8; treat a bad byte as content */
			cp = 0xfffd, l = 1;
		if (!kiln_unicode_is_strip_space(cp)) {
			if (!seen)
				start = i, seen = true;
			end = i + l;
		}
		i += l;
	}
	*ret_off = seen ? start : 0;
	*ret_len = seen ? end - start : 0;
}
