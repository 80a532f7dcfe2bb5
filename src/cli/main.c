/* kiln — entry point and subcommand dispatch. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct kiln_command *const commands[] = {
	&kiln_cmd_validate,
	&kiln_cmd_hash,
	&kiln_cmd_profile,
	&kiln_cmd_setup,
	&kiln_cmd_build,
	&kiln_cmd_token,
	&kiln_cmd_run,
	&kiln_cmd_serve,
};

static const struct kiln_command *find_command(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

static void print_overview(FILE *f)
{
	fputs("Usage: kiln COMMAND [OPTIONS] [ARGS]\n"
	      "\n"
	      "kiln builds reproducible Linux images from JSON recipes.\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
	fputs("  help       show help for a command\n"
	      "\n"
	      "Options:\n"
	      "  --version  print the version and exit\n"
	      "  --help     show this help\n"
	      "\n"
	      "Run 'kiln help COMMAND' for a command's options.\n",
	      f);
}

static int cmd_help(int argc, char **argv)
{
	if (argc < 2) {
		print_overview(stdout);
		return KILN_EXIT_OK;
	}
	if (argc > 2) {
		fprintf(stderr, "kiln help: expected at most one COMMAND\n");
		return KILN_EXIT_USAGE;
	}
	if (strcmp(argv[1], "help") == 0) {
		fputs("Usage: kiln help [COMMAND]\n", stdout);
		return KILN_EXIT_OK;
	}
	const struct kiln_command *c = find_command(argv[1]);
	if (!c) {
		fprintf(stderr, "kiln help: unknown command '%s'\n", argv[1]);
		return KILN_EXIT_USAGE;
	}
	cli_print_help(c);
	return KILN_EXIT_OK;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		print_overview(stderr);
		return KILN_EXIT_USAGE;
	}
	const char *name = argv[1];
	if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
		printf("kiln %s\n", KILN_VERSION);
		return KILN_EXIT_OK;
	}
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
		return cmd_help(1, argv);
	if (strcmp(name, "help") == 0)
		return cmd_help(argc - 1, argv + 1);
	const struct kiln_command *c = find_command(name);
	if (!c) {
		fprintf(stderr, "kiln: unknown command '%s'\nTry 'kiln help'.\n", name);
		return KILN_EXIT_USAGE;
	}
	return c->run(argc - 1, argv + 1);
}
