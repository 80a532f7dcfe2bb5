#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "util/alloc.h"
#include "util/fs.h"

void cli_errorf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("kiln: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

int cli_usage_error(const struct kiln_command *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "kiln %s: ", cmd->name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	fprintf(stderr, "Try 'kiln help %s'.\n", cmd->name);
	return KILN_EXIT_USAGE;
}

void cli_print_help(const struct kiln_command *cmd)
{
	fputs(cmd->usage, stdout);
}

int cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

int cli_load_recipe(const char *path, struct kiln_recipe **ret)
{
	const char *shown = strcmp(path, "-") == 0 ? "<stdin>" : path;
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	if (kiln_read_file(path, KILN_RECIPE_MAX_BYTES, &buf, &len, &err) < 0) {
		cli_errorf("%s: %s", shown, err->msg);
		return KILN_EXIT_FAILURE;
	}
	if (kiln_recipe_parse(buf, len, ret, &err) < 0) {
		cli_errorf("%s: %s", shown, err->msg);
		return KILN_EXIT_FAILURE;
	}
	return KILN_EXIT_OK;
}
