/* http/ui_files.h — the web UI's files (src/http/ui/), embedded at build
 * time by embed.py --tree into ui_files.c. Read-only data. */
#pragma once

#include <stddef.h>

struct kiln_http_ui_file {
	const char *path; /* relative to src/http/ui/: "index.html", "examples/minimal.json" */
	const unsigned char *data;
	size_t len;
	const char *etag; /* "\"<sha256 hex>\"" */
};

extern const struct kiln_http_ui_file kiln_http_ui_files[];
extern const size_t kiln_http_n_ui_files;
