#include "util/error.h"

#include <stdarg.h>
#include <string.h>

#include "util/alloc.h"

static int error_setv(struct kiln_error **err, int code, int with_errno, const char *fmt,
                      va_list ap) _printf_(4, 0);
static int error_setv(struct kiln_error **err, int code, int with_errno, const char *fmt,
                      va_list ap)
{
	if (code <= 0)
		code = EINVAL;
	if (err && !*err) {
		_cleanup_free_ char *m = xvasprintf(fmt, ap);
		struct kiln_error *e = xmalloc(sizeof(*e));
		e->code = code;
		e->msg = with_errno ? xasprintf("%s: %s", m, strerror(code)) : TAKE_PTR(m);
		*err = e;
	}
	return -code;
}

int kiln_error_set(struct kiln_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = error_setv(err, code, 0, fmt, ap);
	va_end(ap);
	return r;
}

int kiln_error_set_errno(struct kiln_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = error_setv(err, code, 1, fmt, ap);
	va_end(ap);
	return r;
}

void kiln_error_prefix(struct kiln_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return;
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *p = xvasprintf(fmt, ap);
	va_end(ap);
	char *m = xasprintf("%s: %s", p, (*err)->msg);
	free((*err)->msg);
	(*err)->msg = m;
}

struct kiln_error *kiln_error_free(struct kiln_error *e)
{
	if (e) {
		free(e->msg);
		free(e);
	}
	return NULL;
}
