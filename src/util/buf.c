#include "util/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"

void kiln_buf_reserve(struct kiln_buf *b, size_t extra)
{
	if (extra > SIZE_MAX - b->len - 1)
		abort();
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void kiln_buf_append(struct kiln_buf *b, const void *p, size_t n)
{
	size_t room = b->max > b->len ? b->max - b->len : 0;
	if (b->max && n > room) {
		n = room;
		b->truncated = true;
	}
	kiln_buf_reserve(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void kiln_buf_puts(struct kiln_buf *b, const char *s)
{
	kiln_buf_append(b, s, strlen(s));
}

void kiln_buf_putc(struct kiln_buf *b, char c)
{
	kiln_buf_append(b, &c, 1);
}

void kiln_buf_printf(struct kiln_buf *b, const char *fmt, ...)
{
	va_list ap, ap2;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		va_end(ap2);
		abort();
	}
	if (b->max && (size_t)n > (b->max > b->len ? b->max - b->len : 0)) {
		/* Formatted whole, kept up to the ceiling like any append. */
		_cleanup_free_ char *s = xmalloc((size_t)n + 1);
		vsnprintf(s, (size_t)n + 1, fmt, ap2);
		va_end(ap2);
		kiln_buf_append(b, s, (size_t)n);
		return;
	}
	kiln_buf_reserve(b, (size_t)n);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	b->len += (size_t)n;
}

void kiln_buf_reset(struct kiln_buf *b)
{
	b->len = 0;
	b->truncated = false;
	if (b->data)
		b->data[0] = '\0';
}

char *kiln_buf_steal(struct kiln_buf *b, size_t *ret_len)
{
	char *d = b->data ? b->data : xstrdup("");
	if (ret_len)
		*ret_len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	b->truncated = false;
	return d;
}

void kiln_buf_free(struct kiln_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->truncated = false;
}
