#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/image.h"
#include "store/cas.h"

static void log_stderr(void *ud, const char *data, size_t len)
{
	(void)ud;
	fwrite(data, 1, len, stderr);
}

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"base", required_argument, NULL, 'b'},
	    {"state-dir", required_argument, NULL, 's'},
	    {},
	};
	const char *base = KILN_DEFAULT_BASE, *state = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+hb:", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_setup); return KILN_EXIT_OK;
		case 'b': base = optarg; break;
		case 's': state = optarg; break;
		default: return cli_option_error(&kiln_cmd_setup, "+hb:", argv);
		}
	}
	if (optind != argc)
		return cli_usage_error(&kiln_cmd_setup, "unexpected argument '%s'", argv[optind]);
	if (!state)
		state = kiln_state_dir_default();
	if (geteuid() != 0) {
		cli_errorf("setup: must run as root (the sandbox needs namespaces and cgroups)");
		return KILN_EXIT_FAILURE;
	}
	int rc = cli_state_secure("setup", state);
	if (rc)
		return rc;
	struct kiln_image_hooks hooks = {.log = log_stderr, .cancel_fd = -1};
	bool already = false;
	char digest[KILN_SHA256_HEX_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	rc = kiln_image_setup(state, base, &hooks, &already, digest, &err);
	if (rc < 0)
		return cli_fail("setup", rc, err);
	if (already)
		printf("base %s is already set up (sha256:%s); nothing to do\n", base, digest);
	else
		printf("base %s ready (sha256:%s) in %s\n", base, digest, state);
	return KILN_EXIT_OK;
}

const struct kiln_command kiln_cmd_setup = {
    .name = "setup",
    .summary = "bootstrap a base system into the state directory",
    .usage = "Usage: kiln setup [--base NAME] [--state-dir DIR]\n"
             "\n"
             "Bootstraps NAME with mmdebstrap inside kiln's sandbox, from the host's\n"
             "configured apt sources only, and stores it content-addressed in the state\n"
             "directory (default $KILN_STATE_DIR or /var/lib/kiln). Idempotent: a second\n"
             "call says so and does nothing. Needs root.\n"
             "\n"
             "Bases:\n"
             "  debian/bookworm  the default: Debian minbase (apt, dpkg, coreutils)\n"
             "  busybox          Debian's busybox-static alone (no packages, no ISO)\n"
             "\n"
             "Exit status: 0 success, 1 failure, 2 usage error.\n",
    .run = run,
};
