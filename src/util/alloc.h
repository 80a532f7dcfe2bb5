/* util/alloc.h — allocators that abort on out-of-memory.
 *
 * Out-of-memory in a build daemon is not recoverable per call site
 * (STYLE.md §6), so these never return NULL. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "util/macros.h"

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
/* xreallocarray: overflow-checked nmemb * size. */
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);
char *xasprintf(const char *fmt, ...) _printf_(1, 2);
char *xvasprintf(const char *fmt, va_list ap) _printf_(1, 0);
