/* kiln — entry point and subcommand dispatch.
 *
 * Two executables are built from this file (src/cli/meson.build):
 *
 *   kiln       statically linked (static-pie): the base layer (util, recipe,
 *              sandbox) and the commands that need only it — validate,
 *              profile, run. (hash is kiln-full's: its build_key includes
 *              the image tools' versions, image/'s knowledge.) No dynamic loader, no shared-library
 * mapping or relocation at start: `kiln run` starts like a static binary (docs/benchmarks.md,
 * "Sandbox start-to-exit"). kiln-full  dynamically linked, every command. The image, store, service
 *              and http layers need libarchive, SQLite, libmicrohttpd and
 *              libcurl (→ libxml2, ICU, libstdc++, GnuTLS: ~7,000 symbol
 *              relocations). `kiln` execs it for any other command line
 *              (setup, build, serve, the client commands, the overview help).
 *
 * KILN_FULL is defined when compiling kiln-full. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const struct kiln_command *const commands[] = {
    &kiln_cmd_validate,
#ifdef KILN_FULL
    &kiln_cmd_hash,
#endif
    &kiln_cmd_profile,
#ifdef KILN_FULL
    &kiln_cmd_setup,    &kiln_cmd_build,  &kiln_cmd_token,
#endif
    &kiln_cmd_run,
#ifdef KILN_FULL
    &kiln_cmd_serve,    &kiln_cmd_submit, &kiln_cmd_status,    &kiln_cmd_list,
    &kiln_cmd_logs,     &kiln_cmd_cancel, &kiln_cmd_download,  &kiln_cmd_store,
    &kiln_cmd_backup,   &kiln_cmd_tag,    &kiln_cmd_templates,
#endif
};

#ifndef KILN_FULL
/* Replaces this process with kiln-full, same arguments. It is looked up
 * beside this executable (the build tree, or an install that keeps them
 * together), else in KILN_LIBEXECDIR. No environment variable or PATH
 * lookup can redirect it: kiln runs as root. Returns only on failure. */
static int exec_full(char **argv)
{
	char exe[PATH_MAX];
	const char *dirs[2] = {NULL, KILN_LIBEXECDIR};
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			dirs[0] = exe;
		}
	}
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		char path[PATH_MAX];
		if (!dirs[i] ||
		    snprintf(path, sizeof(path), "%s/kiln-full", dirs[i]) >= (int)sizeof(path))
			continue;
		execv(path, argv);
		if (errno != ENOENT) {
			cli_errorf("cannot execute %s: %s", path, strerror(errno));
			return KILN_EXIT_FAILURE;
		}
	}
	cli_errorf("cannot find kiln-full (the part of kiln with setup, build, serve and the "
	           "client commands) beside %s or in " KILN_LIBEXECDIR,
	           dirs[0] ? dirs[0] : "the executable");
	return KILN_EXIT_FAILURE;
}
#endif

/* The command called name, or NULL. */
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
	      "  -V, --version  print the version and exit\n"
	      "  -h, --help     show this help\n"
	      "  --state-dir DIR, --server URL, --token-file F, --database URL\n"
	      "                 may come before COMMAND too (kiln --state-dir X list)\n"
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
	/* kiln help --man COMMAND: the same text as a man page (meson install
	 * generates kiln-COMMAND.1 with it; src/cli/meson.build). */
	if (argc == 3 && strcmp(argv[1], "--man") == 0) {
		const struct kiln_command *m = find_command(argv[2]);
		if (!m) {
			fprintf(stderr, "kiln help: unknown command '%s'\n", argv[2]);
			return KILN_EXIT_USAGE;
		}
		cli_print_man(m);
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

/* Options every command that has them takes the same way; given before the
 * command (`kiln --state-dir X list`, as git and docker allow) they are
 * moved after it, where the command's own parser reads them. */
static const char *const global_opts[] = {"--state-dir", "--server", "--token-file", "--database"};

static bool is_global_opt(const char *a, bool *ret_has_value)
{
	for (size_t i = 0; i < ELEMENTSOF(global_opts); i++) {
		size_t n = strlen(global_opts[i]);
		if (strncmp(a, global_opts[i], n) == 0 && (a[n] == '\0' || a[n] == '=')) {
			*ret_has_value = a[n] == '=';
			return true;
		}
	}
	return false;
}

static void hoist_command(int argc, char **argv)
{
	int i = 1;
	bool inline_value;
	while (i < argc && is_global_opt(argv[i], &inline_value))
		i += inline_value ? 1 : 2;
	if (i == 1 || i >= argc)
		return;
	/* argv[1..i-1] are the global options, argv[i] the command. */
	char *cmd = argv[i];
	memmove(argv + 2, argv + 1, (size_t)(i - 1) * sizeof(*argv));
	argv[1] = cmd;
}

int main(int argc, char **argv)
{
	hoist_command(argc, argv);
	/* Every command reports a refused option itself, once, as
	 * "kiln CMD: ..." (cli_option_error). */
	opterr = 0;
	const char *name = argc >= 2 ? argv[1] : "";
	if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0 ||
	    strcmp(name, "version") == 0) {
		printf("kiln %s\n", KILN_VERSION);
		return KILN_EXIT_OK;
	}
	const struct kiln_command *c = find_command(name);
#ifndef KILN_FULL
	/* Everything this executable cannot answer completely — other
	 * commands, unknown ones, the overview that lists them all — is
	 * kiln-full's. */
	bool help_here = strcmp(name, "help") == 0 && argc == 3 && find_command(argv[2]);
	if (!c && !help_here)
		return exec_full(argv);
#endif
	if (argc < 2) {
		print_overview(stderr);
		return KILN_EXIT_USAGE;
	}
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
		return cmd_help(1, argv);
	if (strcmp(name, "help") == 0)
		return cmd_help(argc - 1, argv + 1);
	if (!c) {
		fprintf(stderr, "kiln: unknown command '%s'\nTry 'kiln help'.\n", name);
		return KILN_EXIT_USAGE;
	}
	return c->run(argc - 1, argv + 1);
}
