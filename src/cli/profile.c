#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"format", required_argument, NULL, 'f'},
	    {},
	};
	const char *format = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hf:", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_profile); return KILN_EXIT_OK;
		case 'f': format = optarg; break;
		default: return cli_option_error(&kiln_cmd_profile, "hf:", argv);
		}
	}
	if (!format)
		return cli_usage_error(&kiln_cmd_profile,
		                       "--format is required (supported: archiso)");
	if (strcmp(format, "archiso") != 0)
		return cli_usage_error(&kiln_cmd_profile,
		                       "unknown format '%s' (supported: archiso)", format);
	if (argc - optind != 2)
		return cli_usage_error(&kiln_cmd_profile, "expected RECIPE and DIR");

	_cleanup_recipe_ struct kiln_recipe *r = NULL;
	int rc = cli_load_recipe(argv[optind], &r);
	if (rc)
		return rc;
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_recipe_export_archiso(r, argv[optind + 1], &err) < 0) {
		cli_errorf("%s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	return KILN_EXIT_OK;
}

const struct kiln_command kiln_cmd_profile = {
    .name = "profile",
    .summary = "export a recipe as an archiso profile directory",
    .usage = "Usage: kiln profile --format archiso RECIPE DIR\n"
             "\n"
             "Writes an archiso profile for RECIPE into DIR (created if missing):\n"
             "  packages.x86_64  distinct package names, sorted (base and linux when\n"
             "                   the recipe lists no packages)\n"
             "  profiledef.sh    iso_name kiln-custom, label and version from\n"
             "                   source_date_epoch, BIOS + UEFI boot modes, xz squashfs\n"
             "  pacman.conf      core and extra repositories\n"
             "  airootfs/        every overlay file with its content and mode\n"
             "Every path is resolved inside DIR; symlinks already in DIR cannot\n"
             "redirect a write outside it.\n"
             "\n"
             "Exit status: 0 success, 1 failure, 2 usage error.\n",
    .run = run,
};
