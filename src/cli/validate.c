#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"

static int run(int argc, char **argv)
{
	static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'h') {
			cli_print_help(&kiln_cmd_validate);
			return KILN_EXIT_OK;
		}
		return cli_option_error(&kiln_cmd_validate, "h", argv);
	}
	if (argc - optind != 1)
		return cli_usage_error(&kiln_cmd_validate, "expected exactly one RECIPE");
	_cleanup_recipe_ struct kiln_recipe *r = NULL;
	return cli_load_recipe(argv[optind], &r);
}

const struct kiln_command kiln_cmd_validate = {
    .name = "validate",
    .summary = "check a recipe; prints nothing when it is valid",
    .usage = "Usage: kiln validate RECIPE\n"
             "\n"
             "Checks RECIPE (a file, or - for stdin) against recipe format v1.\n"
             "Prints nothing and exits 0 when it is valid; otherwise prints the\n"
             "first error with its JSON path, e.g.\n"
             "  kiln: recipe.json: overlays[0].files[1].path: must be absolute\n"
             "and exits 1. Usage errors exit 2.\n",
    .run = run,
};
