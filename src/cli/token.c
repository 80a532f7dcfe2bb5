#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "service/service.h"
#include "store/cas.h"

static void fmt_time(int64_t us, char *out, size_t n)
{
	if (!us) {
		snprintf(out, n, "never");
		return;
	}
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int open_db(const char *state, const char *database, struct kiln_service **ret)
{
	struct kiln_service_config cfg = {
	    .state_dir = state, .database = database, .no_workers = true};
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = cli_state_secure("token", state);
	if (rc)
		return rc;
	if (kiln_service_open(&cfg, ret, &err) < 0) {
		cli_errorf("token: %s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	return KILN_EXIT_OK;
}

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},           {"state-dir", required_argument, NULL, 's'},
	    {"database", required_argument, NULL, 'd'}, {"owner", required_argument, NULL, 'u'},
	    {"name", required_argument, NULL, 'n'},     {},
	};
	const char *state = NULL, *owner = NULL, *name = NULL;
	const char *database = getenv("KILN_DATABASE");
	const char *verb = NULL;
	int c;
	/* kiln token VERB [OPTIONS] [ARGS]: the verb comes first. */
	if (argc >= 2 && argv[1][0] != '-') {
		verb = argv[1];
		argc--;
		argv++;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "hu:n:", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_token); return KILN_EXIT_OK;
		case 's': state = optarg; break;
		case 'd': database = optarg; break;
		case 'u': owner = optarg; break;
		case 'n': name = optarg; break;
		default: return cli_option_error(&kiln_cmd_token, "hu:n:", argv);
		}
	}
	if (!verb)
		return cli_usage_error(&kiln_cmd_token, "expected create, list or revoke");
	if (!state)
		state = kiln_state_dir_default();
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_service *s = NULL;

	if (strcmp(verb, "create") == 0) {
		if (optind != argc)
			return cli_usage_error(&kiln_cmd_token, "create takes no arguments");
		int rc = open_db(state, database, &s);
		if (rc)
			return rc;
		char *secret = NULL;
		struct kiln_token_info info = {0};
		if (kiln_service_token_create(s, owner ? owner : "admin", name ? name : "", &secret,
		                              &info, &err) < 0) {
			cli_errorf("token create: %s", err->msg);
			kiln_service_free(s);
			return KILN_EXIT_FAILURE;
		}
		printf("%s\n", secret);
		fprintf(stderr, "token %s for user '%s' created; the secret above is shown once\n",
		        info.id, info.owner);
		free(secret);
		kiln_token_info_clear(&info);
		kiln_service_free(s);
		return KILN_EXIT_OK;
	}
	if (strcmp(verb, "list") == 0) {
		if (optind != argc)
			return cli_usage_error(&kiln_cmd_token, "list takes no arguments");
		int rc = open_db(state, database, &s);
		if (rc)
			return rc;
		struct kiln_token_info *v = NULL;
		size_t n = 0;
		if (kiln_service_token_list(s, &v, &n, &err) < 0) {
			cli_errorf("token list: %s", err->msg);
			kiln_service_free(s);
			return KILN_EXIT_FAILURE;
		}
		printf("%-36s  %-16s  %-20s  %-20s  %-20s  %s\n", "ID", "USER", "NAME", "CREATED",
		       "LAST USED", "STATE");
		for (size_t i = 0; i < n; i++) {
			char cr[32], lu[32];
			fmt_time(v[i].created_us, cr, sizeof(cr));
			fmt_time(v[i].last_used_us, lu, sizeof(lu));
			printf("%-36s  %-16s  %-20s  %-20s  %-20s  %s\n", v[i].id, v[i].owner,
			       v[i].name ? v[i].name : "", cr, lu,
			       v[i].revoked ? "revoked" : "active");
			kiln_token_info_clear(&v[i]);
		}
		free(v);
		kiln_service_free(s);
		return KILN_EXIT_OK;
	}
	if (strcmp(verb, "revoke") == 0) {
		if (argc - optind != 1)
			return cli_usage_error(&kiln_cmd_token, "revoke takes one token ID");
		int rc = open_db(state, database, &s);
		if (rc)
			return rc;
		if (kiln_service_token_revoke(s, argv[optind], &err) < 0) {
			cli_errorf("token revoke: %s", err->msg);
			kiln_service_free(s);
			return KILN_EXIT_FAILURE;
		}
		printf("revoked %s\n", argv[optind]);
		kiln_service_free(s);
		return KILN_EXIT_OK;
	}
	return cli_usage_error(&kiln_cmd_token, "unknown action '%s' (create, list, revoke)", verb);
}

const struct kiln_command kiln_cmd_token = {
    .name = "token",
    .summary = "create, list and revoke API tokens",
    .usage = "Usage: kiln token create [--owner USER] [--name LABEL] [--state-dir DIR]\n"
             "                         [--database URL]\n"
             "       kiln token list [--state-dir DIR] [--database URL]\n"
             "       kiln token revoke ID [--state-dir DIR] [--database URL]\n"
             "\n"
             "API tokens authenticate `kiln serve` clients (Authorization: Bearer TOKEN)\n"
             "and web UI sign-ins. A token acts as USER (default admin): a user sees and\n"
             "cancels only their own builds. `create` prints the secret once on stdout;\n"
             "the server stores only its SHA-256. Safe to run next to a running server.\n"
             "\n"
             "      --database URL   the server's database, as for kiln serve (default\n"
             "                       $KILN_DATABASE, else STATE/kiln.db)\n"
             "\n"
             "Exit status: 0 success, 1 failure, 2 usage error.\n",
    .run = run,
};
