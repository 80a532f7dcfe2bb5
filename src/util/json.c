#include "util/json.h"

#include <stdint.h>

#include "util/utf8.h"

static void put_u16(struct kiln_buf *b, uint32_t u)
{
	kiln_buf_printf(b, "\\u%04x", (unsigned)u);
}

void kiln_json_put_string(struct kiln_buf *b, const char *s, size_t n, bool ascii_only)
{
	kiln_buf_reserve(b, n + 2);
	kiln_buf_putc(b, '"');
	size_t run = 0; /* start of a run of bytes copied verbatim */
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		}
		bool literal = !esc && c >= 0x20 && c < 0x7f;
		if (!esc && !literal && c >= 0x80 && !ascii_only)
			literal = true;
		if (literal) {
			i++;
			continue;
		}
		kiln_buf_append(b, s + run, i - run);
		if (esc) {
			kiln_buf_puts(b, esc);
			i++;
		} else if (c < 0x80) {
			put_u16(b, c);
			i++;
		} else {
			uint32_t cp;
			size_t l = kiln_utf8_decode(s + i, n - i, &cp);
			if (!l)
				cp = 0xfffd, l = 1;
			if (cp >= 0x10000) {
				cp -= 0x10000;
				put_u16(b, 0xd800 | (cp >> 10));
				put_u16(b, 0xdc00 | (cp & 0x3ff));
			} else {
				put_u16(b, cp);
			}
			i += l;
		}
		run = i;
	}
	kiln_buf_append(b, s + run, n - run);
	kiln_buf_putc(b, '"');
}
