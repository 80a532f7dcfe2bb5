/* kiln — entry point and subcommand dispatch.
 *
 * The executable holds the base layer (util, recipe, sandbox) and the
 * commands that need only it. The commands that need the image, store,
 * service and http layers live in libkiln-full.so, loaded here when one of
 * them runs: libarchive, SQLite and libmicrohttpd pull in libxml2, ICU,
 * libstdc++ and GnuTLS, whose ~7,000 symbol relocations would otherwise be
 * paid by every `kiln run` (docs/benchmarks.md, "Start-up cost"). */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define KILN_FULL_SO "libkiln-full.so"

/* In the order `kiln help` lists them. cmd NULL: defined in libkiln-full.so
 * as kiln_cmd_<name>. */
static const struct {
	const char *name;
	const struct kiln_command *cmd;
} commands[] = {
	{ "validate", &kiln_cmd_validate },
	{ "hash", &kiln_cmd_hash },
	{ "profile", &kiln_cmd_profile },
	{ "setup", NULL },
	{ "build", NULL },
	{ "token", NULL },
	{ "run", &kiln_cmd_run },
	{ "serve", NULL },
	{ "submit", NULL },
	{ "status", NULL },
	{ "list", NULL },
	{ "logs", NULL },
	{ "cancel", NULL },
	{ "download", NULL },
};

/* Opens libkiln-full.so beside the executable (the build tree, or an install
 * that keeps them together), else in KILN_PKGLIBDIR. No environment variable
 * can redirect it: kiln runs as root. Reports a failure once. */
static void *load_full(void)
{
	static void *handle;
	static int failed;
	if (handle || failed)
		return handle;
	char exe[PATH_MAX];
	const char *dirs[2] = { NULL, KILN_PKGLIBDIR };
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
		if (!dirs[i] || snprintf(path, sizeof(path), "%s/" KILN_FULL_SO, dirs[i]) >= (int)sizeof(path) ||
		    access(path, F_OK) < 0)
			continue;
		/* RTLD_NOW: a module that does not match this executable fails
		 * here, not halfway through a command. */
		handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (!handle) {
			cli_errorf("cannot load %s: %s", path, dlerror());
			failed = 1;
		}
		return handle;
	}
	cli_errorf("cannot find " KILN_FULL_SO " beside %s or in " KILN_PKGLIBDIR,
		   dirs[0] ? dirs[0] : "the executable");
	failed = 1;
	return NULL;
}

/* The command of commands[i], loading libkiln-full.so if it lives there.
 * NULL (with a message printed) if it cannot be loaded. */
static const struct kiln_command *command_at(size_t i)
{
	if (commands[i].cmd)
		return commands[i].cmd;
	void *h = load_full();
	if (!h)
		return NULL;
	char sym[64];
	snprintf(sym, sizeof(sym), "kiln_cmd_%s", commands[i].name);
	const struct kiln_command *c = dlsym(h, sym);
	if (!c)
		cli_errorf("%s: %s", KILN_FULL_SO, dlerror());
	return c;
}

/* Index of the command called name, or -1. */
static ssize_t find_command(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (strcmp(commands[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static void print_overview(FILE *f)
{
	fputs("Usage: kiln COMMAND [OPTIONS] [ARGS]\n"
	      "\n"
	      "kiln builds reproducible Linux images from JSON recipes.\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
		const struct kiln_command *c = command_at(i);
		fprintf(f, "  %-10s %s\n", commands[i].name, c ? c->summary : "(unavailable)");
	}
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
	ssize_t i = find_command(argv[1]);
	if (i < 0) {
		fprintf(stderr, "kiln help: unknown command '%s'\n", argv[1]);
		return KILN_EXIT_USAGE;
	}
	const struct kiln_command *c = command_at((size_t)i);
	if (!c)
		return KILN_EXIT_FAILURE;
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
	ssize_t i = find_command(name);
	if (i < 0) {
		fprintf(stderr, "kiln: unknown command '%s'\nTry 'kiln help'.\n", name);
		return KILN_EXIT_USAGE;
	}
	const struct kiln_command *c = command_at((size_t)i);
	if (!c)
		return KILN_EXIT_FAILURE;
	return c->run(argc - 1, argv + 1);
}
