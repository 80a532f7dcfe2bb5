#include "util/error.h"

#include <stdarg.h>
#include <string.h>

#include "util/alloc.h"

static int error_setv(struct kiln_error **err, enum kiln_error_kind kind, int code, int with_errno,
                      const char *fmt, va_list ap) _printf_(5, 0);
static int error_setv(struct kiln_error **err, enum kiln_error_kind kind, int code, int with_errno,
                      const char *fmt, va_list ap)
{
	if (code <= 0)
		code = EINVAL;
	if (err && !*err) {
		_cleanup_free_ char *m = xvasprintf(fmt, ap);
		struct kiln_error *e = xmalloc(sizeof(*e));
		e->code = code;
		e->kind = (unsigned)kind < KILN_ERR_KIND_COUNT ? kind : KILN_ERR_SYSTEM;
		e->msg = with_errno ? xasprintf("%s: %s", m, strerror(code)) : TAKE_PTR(m);
		*err = e;
	}
	return -code;
}

int kiln_error_set(struct kiln_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = error_setv(err, KILN_ERR_SYSTEM, code, 0, fmt, ap);
	va_end(ap);
	return r;
}

int kiln_error_set_kind(struct kiln_error **err, enum kiln_error_kind kind, int code,
                        const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = error_setv(err, kind, code, 0, fmt, ap);
	va_end(ap);
	return r;
}

int kiln_error_set_errno(struct kiln_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = error_setv(err, KILN_ERR_SYSTEM, code, 1, fmt, ap);
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

void kiln_error_set_kind_of(struct kiln_error **err, enum kiln_error_kind kind)
{
	if (err && *err && (unsigned)kind < KILN_ERR_KIND_COUNT)
		(*err)->kind = kind;
}

enum kiln_error_kind kiln_error_kind(const struct kiln_error *e)
{
	return e ? e->kind : KILN_ERR_SYSTEM;
}

const char *kiln_error_kind_name(enum kiln_error_kind kind)
{
	static const char *const names[KILN_ERR_KIND_COUNT] = {
	    [KILN_ERR_SYSTEM] = "system",
	    [KILN_ERR_USER] = "user",
	    [KILN_ERR_LIMIT] = "limit",
	    [KILN_ERR_CANCELLED] = "cancelled",
	};
	return (unsigned)kind < KILN_ERR_KIND_COUNT ? names[kind] : "system";
}

struct kiln_error *kiln_error_free(struct kiln_error *e)
{
	if (e) {
		free(e->msg);
		free(e);
	}
	return NULL;
}
