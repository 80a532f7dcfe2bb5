/* cli/backup.c — kiln backup: create, list, prune, restore and verify
 * backups of the database (store/backup.h; docs/operations.md). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "service/service.h"
#include "store/backup.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/json.h"
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

/* ---- the schedule inside kiln serve (--backup-dir) --------------------------------- */

#define RESTORE_MARKER "restore-test.json"
/* Longer than any backup takes: the holder keeps it while it works, and a
 * host that died holding it is replaced after this long. */
#define LEASE_S 3600
/* A host that did not get the lease looks again this often (the holder may
 * have died before its backup). */
#define RECHECK_S 300

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	bool started, stop;
	struct kiln_service *svc;
	struct cli_backup_schedule cfg;
	char *last_error, *test_error;
	int64_t test_us;
	bool test_ok;
	char *test_file;
	const char *lease; /* "held", "other" (another host's turn) or "none" yet */
} bs = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* The health is public: a backup's name, not where the directory is. */
static const char *base_name(const char *path)
{
	const char *slash = path ? strrchr(path, '/') : NULL;
	return slash ? slash + 1 : path;
}

/* The most recent HH:MM (UTC) at or before now. */
static int64_t last_slot(int64_t now, int at_min)
{
	int64_t day = 86400LL * 1000000;
	int64_t slot = now - now % day + (int64_t)at_min * 60 * 1000000;
	return slot <= now ? slot : slot - day;
}

static void put_time(struct kiln_buf *b, const char *key, int64_t us)
{
	char t[32];
	fmt_time(us, t, sizeof(t));
	kiln_buf_printf(b, "\"%s\":\"%s\"", key, t);
}

static void put_str(struct kiln_buf *b, const char *key, const char *v)
{
	kiln_buf_printf(b, "\"%s\":", key);
	if (v)
		kiln_json_put_cstr(b, v);
	else
		kiln_buf_puts(b, "null");
}

/* The health details: the newest backup in the directory (whichever host
 * took it) and this host's last errors and restore test. */
static void report(const struct kiln_backup *newest, int64_t now)
{
	_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_puts(&b, "\"backup\":{");
	if (newest) {
		put_time(&b, "last", newest->created_us);
		kiln_buf_printf(&b, ",\"age_s\":%lld,",
		                (long long)((now - newest->created_us) / 1000000));
		put_str(&b, "file", base_name(newest->manifest_path));
	} else {
		kiln_buf_puts(&b, "\"last\":null");
	}
	kiln_buf_putc(&b, ',');
	put_str(&b, "error", bs.last_error);
	kiln_buf_printf(&b, ",\"lease\":\"%s\"", bs.lease ? bs.lease : "none");
	kiln_buf_puts(&b, "},\"restore_test\":{");
	if (bs.test_us) {
		put_time(&b, "last", bs.test_us);
		kiln_buf_printf(&b, ",\"ok\":%s,", bs.test_ok ? "true" : "false");
		put_str(&b, "file", base_name(bs.test_file));
		kiln_buf_putc(&b, ',');
		put_str(&b, "error", bs.test_error);
	} else {
		kiln_buf_puts(&b, "\"last\":null");
	}
	kiln_buf_putc(&b, '}');
	kiln_service_set_ops_detail(bs.svc, b.data);
	kiln_service_set_backup_times(bs.svc, newest ? newest->created_us : 0, bs.test_us,
	                              bs.test_ok);
}

static void set_str(char **p, const char *v)
{
	free(*p);
	*p = v ? xstrdup(v) : NULL;
}

/* The last restore test, from the marker in the backup directory (shared by
 * the hosts when the directory is). */
static void read_marker(void)
{
	_cleanup_free_ char *path = xasprintf("%s/" RESTORE_MARKER, bs.cfg.dir);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *e = NULL;
	if (kiln_read_file(path, 1 << 16, &text, &len, &e) < 0)
		return;
	json_t *m = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	json_int_t at = 0;
	int ok = 0;
	const char *file = NULL;
	json_t *error = NULL;
	if (m && json_unpack(m, "{s:I, s:b, s:s, s?o}", "at_us", &at, "ok", &ok, "file", &file,
	                     "error", &error) == 0) {
		bs.test_us = at;
		bs.test_ok = ok;
		set_str(&bs.test_file, file);
		set_str(&bs.test_error, json_is_string(error) ? json_string_value(error) : NULL);
	}
	json_decref(m);
}

static void write_marker(void)
{
	json_t *m =
	    json_pack("{s:I, s:b, s:s, s:s?}", "at_us", (json_int_t)bs.test_us, "ok", bs.test_ok,
	              "file", bs.test_file ? bs.test_file : "", "error", bs.test_error);
	_cleanup_free_ char *text = json_dumps(m, JSON_SORT_KEYS);
	json_decref(m);
	_cleanup_close_ int dfd = open(bs.cfg.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0 && text)
		(void)kiln_write_file_atomic_at(dfd, RESTORE_MARKER, text, strlen(text), 0600);
}

/* One pass: backs up when the last slot has no backup yet, prunes, runs
 * the restore test when it is due — each only while holding the lease.
 * Returns when to look again. */
static int64_t pass(void)
{
	const char *url = kiln_service_db_url(bs.svc);
	int64_t now = now_us();
	struct kiln_backup **v = NULL;
	size_t n = 0;
	_cleanup_error_ struct kiln_error *err = NULL;
	(void)kiln_backup_list(bs.cfg.dir, &v, &n, &err);
	int64_t newest = n ? v[n - 1]->created_us : 0;
	int64_t slot = last_slot(now, bs.cfg.at_min);
	read_marker();
	bool backup_due = newest < slot;
	bool test_due =
	    bs.cfg.restore_every_s && (backup_due || n) &&
	    (!bs.test_us || bs.test_us + (int64_t)bs.cfg.restore_every_s * 1000000 <= now);
	int64_t next = slot + 86400LL * 1000000;
	if (bs.cfg.restore_every_s && bs.test_us) {
		int64_t t = bs.test_us + (int64_t)bs.cfg.restore_every_s * 1000000;
		if (t > now && t < next)
			next = t;
	}
	if (backup_due || test_due) {
		int held = kiln_service_lease(bs.svc, "backup", LEASE_S, &err);
		if (held < 0) {
			set_str(&bs.last_error, err->msg);
			fprintf(stderr, "kiln serve: backup lease: %s\n", err->msg);
			next = now + (int64_t)RECHECK_S * 1000000;
		} else if (!held) {
			bs.lease = "other";
			next = now + (int64_t)RECHECK_S * 1000000; /* another host's turn */
		} else {
			bs.lease = "held";
			if (backup_due) {
				_cleanup_(kiln_backup_freep) struct kiln_backup *b = NULL;
				_cleanup_error_ struct kiln_error *e = NULL;
				if (kiln_backup_create(url, bs.cfg.dir, KILN_VERSION, &b, &e) < 0) {
					set_str(&bs.last_error, e->msg);
					fprintf(stderr, "kiln serve: backup: %s\n", e->msg);
					next = now + (int64_t)RECHECK_S * 1000000;
				} else {
					set_str(&bs.last_error, NULL);
					fprintf(stderr, "kiln serve: backup %s\n",
					        b->manifest_path);
				}
				size_t removed = 0;
				_cleanup_error_ struct kiln_error *pe = NULL;
				if (kiln_backup_prune(bs.cfg.dir, bs.cfg.keep_days, now_us(),
				                      &removed, &pe) < 0)
					fprintf(stderr, "kiln serve: backup prune: %s\n", pe->msg);
			}
			kiln_backup_list_free(v, n);
			v = NULL;
			n = 0;
			_cleanup_error_ struct kiln_error *le = NULL;
			(void)kiln_backup_list(bs.cfg.dir, &v, &n, &le);
			if (test_due && n) {
				_cleanup_(kiln_backup_freep) struct kiln_backup *b = NULL;
				_cleanup_error_ struct kiln_error *e = NULL;
				int r = kiln_backup_load(v[n - 1]->manifest_path, &b, &e);
				if (r == 0)
					r = kiln_backup_verify(b, url, kiln_service_migrate, &e);
				bs.test_us = now_us();
				bs.test_ok = r == 0;
				set_str(&bs.test_file, v[n - 1]->manifest_path);
				set_str(&bs.test_error, r < 0 && e ? e->msg : NULL);
				fprintf(stderr, "kiln serve: restore test of %s: %s\n",
				        v[n - 1]->manifest_path,
				        r == 0 ? "ok"
				        : e    ? e->msg
				               : "failed");
				write_marker();
				int64_t t = bs.test_us + (int64_t)bs.cfg.restore_every_s * 1000000;
				if (t < next)
					next = t;
			}
		}
	}
	report(n ? v[n - 1] : NULL, now_us());
	kiln_backup_list_free(v, n);
	return next;
}

static void *schedule_loop(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&bs.mu);
	while (!bs.stop) {
		pthread_mutex_unlock(&bs.mu);
		int64_t next = pass();
		pthread_mutex_lock(&bs.mu);
		/* At most RECHECK_S between passes: the health's age_s stays
		 * fresh, and a clock step is noticed. */
		int64_t cap = now_us() + (int64_t)RECHECK_S * 1000000;
		if (next > cap)
			next = cap;
		struct timespec ts = {.tv_sec = next / 1000000, .tv_nsec = (next % 1000000) * 1000};
		while (!bs.stop && now_us() < next)
			if (pthread_cond_timedwait(&bs.cond, &bs.mu, &ts) == ETIMEDOUT)
				break;
	}
	pthread_mutex_unlock(&bs.mu);
	return NULL;
}

int cli_backup_schedule_start(struct kiln_service *svc, const struct cli_backup_schedule *cfg)
{
	if (mkdir(cfg->dir, 0700) < 0 && errno != EEXIST) {
		cli_errorf("serve: --backup-dir %s: %s", cfg->dir, strerror(errno));
		return KILN_EXIT_FAILURE;
	}
	bs.svc = svc;
	bs.cfg = *cfg;
	bs.stop = false;
	int r = pthread_create(&bs.thread, NULL, schedule_loop, NULL);
	if (r != 0) {
		cli_errorf("serve: cannot start the backup schedule: %s", strerror(r));
		return KILN_EXIT_FAILURE;
	}
	bs.started = true;
	return KILN_EXIT_OK;
}

void cli_backup_schedule_stop(void)
{
	if (!bs.started)
		return;
	pthread_mutex_lock(&bs.mu);
	bs.stop = true;
	pthread_cond_broadcast(&bs.cond);
	pthread_mutex_unlock(&bs.mu);
	pthread_join(bs.thread, NULL);
	bs.started = false;
	set_str(&bs.last_error, NULL);
	set_str(&bs.test_error, NULL);
	set_str(&bs.test_file, NULL);
}
