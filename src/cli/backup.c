/* cli/backup.c — kiln backup: create, list, prune, restore and verify
 * backups of the database (store/backup.h; docs/operations.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "service/service.h"
#include "store/backup.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/macros.h"
#include "util/parse.h"

struct opts {
	const char *state, *database, *dir;
	unsigned keep_days;
	bool force;
	char *url;     /* database or STATE/kiln.db (owned) */
	char *backups; /* dir or STATE/backups (owned) */
};

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fmt_time(int64_t us, char *out, size_t n)
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int64_t total_rows(const struct kiln_backup *b)
{
	int64_t n = 0;
	for (size_t i = 0; i < b->n_tables; i++)
		n += b->tables[i].rows;
	return n;
}

static int fail(const char *verb, struct kiln_error *err)
{
	cli_errorf("backup %s: %s", verb, err ? err->msg : "failed");
	return cli_exit_code(err);
}

static int do_create(struct opts *o, int argc, char **argv)
{
	(void)argv;
	if (argc != 0)
		return cli_usage_error(&kiln_cmd_backup, "create takes no arguments");
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_(kiln_backup_freep) struct kiln_backup *b = NULL;
	if (kiln_backup_create(o->url, o->backups, KILN_VERSION, &b, &err) < 0)
		return fail("create", err);
	printf("%s\n", b->manifest_path);
	fprintf(stderr, "backup %s: %s, schema %d, %lld rows in %zu tables, %llu bytes\n",
	        b->dump_path, b->backend, b->schema_version, (long long)total_rows(b), b->n_tables,
	        (unsigned long long)b->size);
	return KILN_EXIT_OK;
}

static int do_list(struct opts *o, int argc, char **argv)
{
	(void)argv;
	if (argc != 0)
		return cli_usage_error(&kiln_cmd_backup, "list takes no arguments");
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_backup **v = NULL;
	size_t n = 0;
	if (kiln_backup_list(o->backups, &v, &n, &err) < 0)
		return fail("list", err);
	printf("%-20s  %-10s  %6s  %10s  %12s  %s\n", "CREATED", "BACKEND", "SCHEMA", "ROWS",
	       "BYTES", "MANIFEST");
	for (size_t i = 0; i < n; i++) {
		char t[32];
		fmt_time(v[i]->created_us, t, sizeof(t));
		printf("%-20s  %-10s  %6d  %10lld  %12llu  %s\n", t, v[i]->backend,
		       v[i]->schema_version, (long long)total_rows(v[i]),
		       (unsigned long long)v[i]->size, v[i]->manifest_path);
	}
	kiln_backup_list_free(v, n);
	return KILN_EXIT_OK;
}

static int do_prune(struct opts *o, int argc, char **argv)
{
	(void)argv;
	if (argc != 0)
		return cli_usage_error(&kiln_cmd_backup, "prune takes no arguments");
	_cleanup_error_ struct kiln_error *err = NULL;
	size_t removed = 0;
	if (kiln_backup_prune(o->backups, o->keep_days, now_us(), &removed, &err) < 0)
		return fail("prune", err);
	fprintf(stderr, "removed %zu backups older than %u days from %s\n", removed, o->keep_days,
	        o->backups);
	return KILN_EXIT_OK;
}

static int do_restore(struct opts *o, int argc, char **argv)
{
	if (argc != 1)
		return cli_usage_error(&kiln_cmd_backup, "restore takes one FILE");
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_(kiln_backup_freep) struct kiln_backup *b = NULL;
	if (kiln_backup_load(argv[0], &b, &err) < 0)
		return fail("restore", err);
	if (!o->database) {
		int rc = cli_state_secure("backup restore", o->state);
		if (rc)
			return rc;
	}
	if (kiln_backup_restore(b, o->url, o->force, &err) < 0)
		return fail("restore", err);
	fprintf(stderr,
	        "restored %s into %s (%lld rows); kiln serve applies newer migrations at "
	        "start\n",
	        b->dump_path, o->database ? o->database : o->url, (long long)total_rows(b));
	return KILN_EXIT_OK;
}

static int do_verify(struct opts *o, int argc, char **argv)
{
	if (argc != 1)
		return cli_usage_error(&kiln_cmd_backup, "verify takes one FILE");
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_(kiln_backup_freep) struct kiln_backup *b = NULL;
	if (kiln_backup_load(argv[0], &b, &err) < 0)
		return fail("verify", err);
	if (kiln_backup_verify(b, o->url, kiln_service_migrate, &err) < 0)
		return fail("verify", err);
	printf("ok %s: sha256 matches, restored into a scratch database, %zu tables with the "
	       "manifest's row counts, migrations apply\n",
	       b->manifest_path, b->n_tables);
	return KILN_EXIT_OK;
}

static const struct {
	const char *verb;
	int (*run)(struct opts *o, int argc, char **argv);
} verbs[] = {
    {"create", do_create},   {"list", do_list},     {"prune", do_prune},
    {"restore", do_restore}, {"verify", do_verify},
};

static int run(int argc, char **argv)
{
	static const struct option lopts[] = {
	    {"help", no_argument, NULL, 'h'},           {"state-dir", required_argument, NULL, 's'},
	    {"database", required_argument, NULL, 'd'}, {"to", required_argument, NULL, 't'},
	    {"dir", required_argument, NULL, 't'},      {"keep-days", required_argument, NULL, 'k'},
	    {"force", no_argument, NULL, 'f'},          {},
	};
	struct opts o = {.database = getenv("KILN_DATABASE"), .keep_days = 30};
	if (o.database && !*o.database)
		o.database = NULL;
	const char *verb = NULL;
	/* kiln backup VERB [OPTIONS] [ARGS]: the verb comes first. */
	if (argc >= 2 && argv[1][0] != '-') {
		verb = argv[1];
		argc--;
		argv++;
	}
	optind = 1;
	int c;
	while ((c = getopt_long(argc, argv, "hf", lopts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_backup); return KILN_EXIT_OK;
		case 's': o.state = optarg; break;
		case 'd': o.database = optarg; break;
		case 't': o.dir = optarg; break;
		case 'f': o.force = true; break;
		case 'k': {
			int v;
			if (kiln_parse_int(optarg, 0, 36500, &v) < 0)
				return cli_usage_error(
				    &kiln_cmd_backup,
				    "--keep-days: expected days, 0 to 36500, not '%s'", optarg);
			o.keep_days = (unsigned)v;
			break;
		}
		default: return cli_option_error(&kiln_cmd_backup, "hf", argv);
		}
	}
	if (!verb)
		return cli_usage_error(&kiln_cmd_backup,
		                       "expected create, list, prune, restore or verify");
	if (!o.state)
		o.state = kiln_state_dir_default();
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
		if (strcmp(verbs[i].verb, verb) != 0)
			continue;
		o.url = o.database ? xstrdup(o.database) : xasprintf("sqlite:%s/kiln.db", o.state);
		o.backups = o.dir ? xstrdup(o.dir) : xasprintf("%s/backups", o.state);
		int rc = verbs[i].run(&o, argc - optind, argv + optind);
		free(o.url);
		free(o.backups);
		return rc;
	}
	return cli_usage_error(&kiln_cmd_backup,
	                       "unknown action '%s' (create, list, prune, restore, verify)", verb);
}

const struct kiln_command kiln_cmd_backup = {
    .name = "backup",
    .summary = "back up, restore and test backups of the database",
    .usage = "Usage: kiln backup create [--to DIR] [--state-dir DIR] [--database URL]\n"
             "       kiln backup list [--dir DIR] [--state-dir DIR]\n"
             "       kiln backup prune [--keep-days N] [--dir DIR] [--state-dir DIR]\n"
             "       kiln backup restore FILE [--force] [--state-dir DIR] [--database URL]\n"
             "       kiln backup verify FILE [--database URL]\n"
             "\n"
             "A backup is the database alone (builds, tokens, sessions, the queue): the\n"
             "store's blobs are content-addressed and checked by `kiln store verify`.\n"
             "`create` takes a consistent copy while the server runs (SQLite: VACUUM INTO;\n"
             "PostgreSQL: pg_dump -Fc) into DIR as kiln-TIME.sqlite or .pgdump with its\n"
             "manifest kiln-TIME.json (kiln version, schema version, rows per table,\n"
             "sha256), and prints the manifest's path. `prune` removes backups older than\n"
             "N days (default 30); the newest is always kept. `restore` checks the\n"
             "manifest and the dump's sha256, then restores into the database; one that\n"
             "has any table, or (PostgreSQL) other sessions connected, is refused without\n"
             "--force. `verify` is the restore test: it restores into a scratch database\n"
             "(a temp SQLite file; a temp PostgreSQL database on the --database server),\n"
             "runs the integrity checks and kiln's migrations, and compares every table's\n"
             "row count with the manifest. FILE is a manifest or a dump.\n"
             "\n"
             "      --to DIR, --dir DIR  the backup directory (default STATE/backups)\n"
             "      --database URL   the database (default $KILN_DATABASE, else\n"
             "                       STATE/kiln.db)\n"
             "      --keep-days N    prune: keep backups this many days (default 30)\n"
             "  -f, --force          restore: replace a database that is not empty\n"
             "\n"
             "Exit status: 0 success, 1 failure, 2 usage error.\n",
    .run = run,
};
