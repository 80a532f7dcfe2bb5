#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "image/image.h"
#include "util/buf.h"
#include "util/json.h"

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"context", required_argument, NULL, 'c'},
	    {"canonical", no_argument, NULL, 'C'},
	    {},
	};
	const char *context = NULL;
	int canonical = 0, c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hc:", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_hash); return KILN_EXIT_OK;
		case 'c': context = optarg; break;
		case 'C': canonical = 1; break;
		default: return cli_option_error(&kiln_cmd_hash, "hc:", argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error(&kiln_cmd_hash, "expected exactly one RECIPE");

	char ctx_hex[KILN_SHA256_HEX_LEN + 1];
	if (context) {
		int r = kiln_sha256_file(context, ctx_hex, NULL);
		if (r < 0) {
			cli_errorf("%s: cannot read context archive: %s", context, strerror(-r));
			return KILN_EXIT_FAILURE;
		}
	}
	_cleanup_recipe_ struct kiln_recipe *r = NULL;
	int rc = cli_load_recipe(argv[optind], &r);
	if (rc)
		return rc;

	/* The tools' versions as build and submit put them in: this key is the
	 * one the build cache and the server use on this host. */
	struct kiln_build_inputs in = {context ? ctx_hex : NULL, kiln_image_tool_versions()};
	char key[KILN_SHA256_HEX_LEN + 1];
	kiln_recipe_build_key(r, &in, key);

	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_printf(&b, "{\"build_key\":\"%s\",\"config_hash\":\"%s\"", key, r->config_hash);
	if (canonical) {
		size_t n;
		_cleanup_free_ char *cc = kiln_recipe_config_canonical(r, &n);
		_cleanup_free_ char *bc = kiln_recipe_build_canonical(r, &in, &n);
		kiln_buf_puts(&b, ",\"config_canonical\":");
		kiln_json_put_cstr(&b, cc);
		kiln_buf_puts(&b, ",\"build_canonical\":");
		kiln_json_put_cstr(&b, bc);
	}
	if (context)
		kiln_buf_printf(&b, ",\"context_sha256\":\"%s\"", ctx_hex);
	kiln_buf_puts(&b, ",\"tools\":");
	kiln_json_put_cstr(&b, in.tools);
	kiln_buf_printf(&b, ",\"source_date_epoch\":%" PRId64 ",\"source_date_epoch_given\":%s}\n",
	                r->source_date_epoch, r->epoch_given ? "true" : "false");
	fwrite(b.data, 1, b.len, stdout);
	return fflush(stdout) == 0 ? KILN_EXIT_OK : KILN_EXIT_FAILURE;
}

const struct kiln_command kiln_cmd_hash = {
    .name = "hash",
    .summary = "print a recipe's identity: config_hash, source_date_epoch, build_key",
    .usage = "Usage: kiln hash [--context ARCHIVE] [--canonical] RECIPE\n"
             "\n"
             "Validates RECIPE (a file, or - for stdin) and prints one JSON object:\n"
             "  config_hash        SHA-256 of the canonical recipe (docs/recipe.md)\n"
             "  source_date_epoch  the recipe's, or derived from config_hash\n"
             "  build_key          SHA-256 of everything that can change the output:\n"
             "                     the key kiln build and kiln submit use on this host\n"
             "  tools              the image tools' versions in build_key\n"
             "\n"
             "Options:\n"
             "  --context ARCHIVE  include the context archive's digest in build_key\n"
             "  --canonical        also print the canonical JSON texts that are hashed\n"
             "\n"
             "Exit status: 0 success, 1 invalid recipe or unreadable file, 2 usage error.\n",
    .run = run,
};
