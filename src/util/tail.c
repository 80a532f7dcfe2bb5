#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/tail.h"

void kiln_tail_reset(struct kiln_tail *t)
{
	t->head = t->n = t->cur_len = 0;
	t->cur[0] = '\0';
	t->cur_long = false;
}

static void end_line(struct kiln_tail *t)
{
	char *dst = t->line[t->head];
	memcpy(dst, t->cur, t->cur_len);
	size_t n = t->cur_len;
	if (t->cur_long) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
	t->head = (t->head + 1) % KILN_TAIL_LINES;
	if (t->n < KILN_TAIL_LINES)
		t->n++;
	t->cur_len = 0;
	t->cur[0] = '\0';
	t->cur_long = false;
}

void kiln_tail_feed(struct kiln_tail *t, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];
		if (c == '\n') {
			end_line(t);
			continue;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			continue;
		if (t->cur_len < KILN_TAIL_LINE_MAX) {
			t->cur[t->cur_len++] = (char)c;
			t->cur[t->cur_len] = '\0'; /* kiln_tail_last hands it out */
		} else
			t->cur_long = true;
	}
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return false;
	return true;
}

const char *kiln_tail_last(const struct kiln_tail *t)
{
	if (t->cur_len && !blank(t->cur, t->cur_len))
		return t->cur;
	for (size_t k = 0; k < t->n; k++) {
		const char *l = t->line[(t->head + KILN_TAIL_LINES - 1 - k) % KILN_TAIL_LINES];
		if (!blank(l, strlen(l)))
			return l;
	}
	return NULL;
}

char *kiln_tail_format(const struct kiln_tail *t, size_t *ret_lines)
{
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	size_t shown = 0;
	size_t keep = t->n;
	bool partial = t->cur_len && !blank(t->cur, t->cur_len);
	if (partial && keep == KILN_TAIL_LINES)
		keep--;
	for (size_t k = t->n - keep; k < t->n; k++) {
		const char *l = t->line[(t->head + KILN_TAIL_LINES - t->n + k) % KILN_TAIL_LINES];
		kiln_buf_printf(&b, "  | %s\n", l);
		shown++;
	}
	if (partial) {
		kiln_buf_puts(&b, "  | ");
		kiln_buf_append(&b, t->cur, t->cur_len);
		kiln_buf_puts(&b, "\n");
		shown++;
	}
	if (ret_lines)
		*ret_lines = shown;
	if (!shown)
		return NULL;
	return TAKE_PTR(b.data);
}
