/* kiln store — verify and collect the content-addressed store, pin builds. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "service/service.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/parse.h"

static void fmt_size(uint64_t n, char *out, size_t len)
{
	static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	size_t u = 0;
	while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%" PRIu64 " bytes", n);
	else
		snprintf(out, len, "%.1f %s", v, units[u]);
}

static void fmt_time(int64_t us, char *out, size_t n)
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

struct progress {
	bool quiet, tty;
	time_t last;
};

/* Long runs say where they are: on a terminal one line rewritten, else a
 * line at most every few seconds. */
static void on_progress(void *ud, size_t done, size_t total, uint64_t bytes_done,
                        uint64_t bytes_total)
{
	struct progress *p = ud;
	time_t now = time(NULL);
	if (p->quiet || (done != total && now - p->last < (p->tty ? 1 : 5)))
		return;
	p->last = now;
	char a[32], b[32];
	fmt_size(bytes_done, a, sizeof(a));
	fmt_size(bytes_total, b, sizeof(b));
	fprintf(stderr, "%skiln store verify: %zu of %zu blobs (%s of %s)%s", p->tty ? "\r" : "",
	        done, total, a, b, p->tty && done != total ? "" : "\n");
}

static int open_service(const char *state, const char *database, const char *store,
                        struct kiln_service **ret)
{
	int rc = cli_state_secure("store", state);
	if (rc)
		return rc;
	/* The database only, no workers and no server lock: this runs next to
	 * a live server (which is also why every change below is one
	 * statement or one rename). */
	struct kiln_service_config cfg = {
	    .state_dir = state, .database = database, .no_workers = true, .store = store};
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_service_open(&cfg, ret, &err) < 0) {
		cli_errorf("store: %s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	return KILN_EXIT_OK;
}

static int do_verify(struct kiln_service *s, bool repair, bool quiet)
{
	struct progress pr = {quiet, isatty(STDERR_FILENO), 0};
	struct kiln_store_verify_report rep = {0};
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_service_store_verify(s, repair, on_progress, &pr, &rep, &err) < 0) {
		cli_errorf("store verify: %s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	size_t corrupt = 0, missing = 0;
	for (size_t i = 0; i < rep.n_problems; i++) {
		const struct kiln_store_problem *p = &rep.problems[i];
		if (!*p->sha256) {
			printf("unreadable  %s\n", p->refs);
			missing++;
			continue;
		}
		if (p->corrupt) {
			corrupt++;
			printf("corrupt  sha256:%s  moved to %s\n", p->sha256, p->quarantined);
		} else {
			missing++;
			printf("missing  sha256:%s\n", p->sha256);
		}
		printf("  referenced by: %s\n", p->refs ? p->refs : "nothing");
	}
	char sz[32];
	fmt_size(rep.bytes, sz, sizeof(sz));
	printf("verify: %zu blobs (%s) rehashed; %zu corrupt, %zu missing or unreadable "
	       "reference%s",
	       rep.blobs, sz, corrupt, missing, missing == 1 ? "" : "s");
	if (rep.builds_marked)
		printf(
		    "; %zu build%s marked: the cache no longer answers with them, a later submit "
		    "rebuilds",
		    rep.builds_marked, rep.builds_marked == 1 ? "" : "s");
	if (rep.stamped || rep.unshared)
		printf("; %zu good blob%s stamped again, %zu unshared from hard links outside the "
		       "store",
		       rep.stamped, rep.stamped == 1 ? "" : "s", rep.unshared);
	if (repair)
		printf("; --repair removed %zu stale entr%s", rep.removed,
		       rep.removed == 1 ? "y" : "ies");
	printf("\n%s\n", !rep.n_problems ? "verify: everything is good"
	                 : repair        ? "verify: problems found"
	                          : "verify: problems found (--repair also removes the local "
	                            "cache entries that name a bad blob)");
	int rc = rep.n_problems ? KILN_EXIT_FAILURE : KILN_EXIT_OK;
	kiln_store_verify_report_clear(&rep);
	return rc;
}

static int do_gc(struct kiln_service *s, const struct kiln_store_gc_policy *pol)
{
	struct kiln_store_gc_report rep = {0};
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_service_store_gc(s, pol, &rep, &err) < 0) {
		cli_errorf("store gc: %s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	for (size_t i = 0; i < rep.n_items; i++) {
		char t[32], sz[32];
		fmt_time(rep.items[i].used_us, t, sizeof(t));
		fmt_size(rep.items[i].size, sz, sizeof(sz));
		printf("%s sha256:%s  %s  last used %s  (%s)\n",
		       pol->dry_run ? "would remove" : "removed", rep.items[i].sha256, sz, t,
		       rep.items[i].why);
	}
	char freed[32], total[32];
	fmt_size(rep.freed, freed, sizeof(freed));
	fmt_size(rep.total, total, sizeof(total));
	printf("gc: %zu item%s, %s %s of %s; %zu of %zu blobs kept as referenced by a pending, "
	       "building or pinned build, a package lock or a base",
	       rep.n_items, rep.n_items == 1 ? "" : "s", freed,
	       pol->dry_run ? "would be freed" : "freed", total, rep.kept_protected, rep.blobs);
	if (rep.builds_marked || rep.entries_removed)
		printf("; %zu build%s and %zu local cache entr%s no longer answer the cache",
		       rep.builds_marked, rep.builds_marked == 1 ? "" : "s", rep.entries_removed,
		       rep.entries_removed == 1 ? "y" : "ies");
	printf("%s\n", pol->dry_run ? " (dry run: nothing was removed)" : "");
	kiln_store_gc_report_clear(&rep);
	return KILN_EXIT_OK;
}

/* ---- kiln serve --gc-every ---------------------------------------------------- */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool stop;
	pthread_t thread;
	bool started;
	struct kiln_service *svc;
	unsigned every_s;
	struct kiln_store_gc_policy pol;
} sched = {.mu = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *gc_loop(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&sched.mu);
	while (!sched.stop) {
		pthread_mutex_unlock(&sched.mu);
		struct kiln_store_gc_report rep = {0};
		_cleanup_error_ struct kiln_error *err = NULL;
		if (kiln_service_store_gc(sched.svc, &sched.pol, &rep, &err) < 0) {
			fprintf(stderr, "kiln: gc: %s\n", err->msg);
		} else {
			char freed[32], total[32];
			fmt_size(rep.freed, freed, sizeof(freed));
			fmt_size(rep.total, total, sizeof(total));
			fprintf(
			    stderr,
			    "kiln: gc: removed %zu item%s, freed %s of %s; %zu build%s no longer "
			    "answer the cache; next in %u s\n",
			    rep.n_items, rep.n_items == 1 ? "" : "s", freed, total,
			    rep.builds_marked, rep.builds_marked == 1 ? "" : "s", sched.every_s);
			for (size_t i = 0; i < rep.n_items; i++)
				fprintf(stderr, "kiln: gc: removed sha256:%s (%s)\n",
				        rep.items[i].sha256, rep.items[i].why);
			kiln_store_gc_report_clear(&rep);
		}
		fflush(stderr);
		/* The schedule is the clock itself; a stop wakes it at once. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += sched.every_s;
		pthread_mutex_lock(&sched.mu);
		while (!sched.stop &&
		       pthread_cond_timedwait(&sched.cond, &sched.mu, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&sched.mu);
	return NULL;
}

int cli_gc_schedule_start(struct kiln_service *svc, unsigned every_s,
                          const struct kiln_store_gc_policy *pol)
{
	sched.svc = svc;
	sched.every_s = every_s;
	sched.pol = *pol;
	sched.stop = false;
	int r = pthread_create(&sched.thread, NULL, gc_loop, NULL);
	if (r != 0) {
		cli_errorf("serve: cannot start the gc schedule: %s", strerror(r));
		return KILN_EXIT_FAILURE;
	}
	sched.started = true;
	return KILN_EXIT_OK;
}

void cli_gc_schedule_stop(void)
{
	if (!sched.started)
		return;
	pthread_mutex_lock(&sched.mu);
	sched.stop = true;
	pthread_cond_broadcast(&sched.cond);
	pthread_mutex_unlock(&sched.mu);
	pthread_join(sched.thread, NULL);
	sched.started = false;
}

static int run(int argc, char **argv)
{
	enum {
		OPT_STATE = 256,
		OPT_DATABASE,
		OPT_REPAIR,
		OPT_KEEP_DAYS,
		OPT_MAX_SIZE,
		OPT_DRY_RUN,
		OPT_GRACE,
		OPT_STORE,
	};
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"database", required_argument, NULL, OPT_DATABASE},
	    {"store", required_argument, NULL, OPT_STORE},
	    {"repair", no_argument, NULL, OPT_REPAIR},
	    {"keep-days", required_argument, NULL, OPT_KEEP_DAYS},
	    {"max-size", required_argument, NULL, OPT_MAX_SIZE},
	    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
	    {"grace", required_argument, NULL, OPT_GRACE},
	    {"quiet", no_argument, NULL, 'q'},
	    {},
	};
	const char *state = NULL, *database = getenv("KILN_DATABASE"), *verb = NULL;
	const char *store = NULL;
	bool repair = false, quiet = false;
	struct kiln_store_gc_policy pol = {.keep_us = -1, .grace_us = KILN_STORE_GC_GRACE_US};
	bool gc_opts = false;
	/* kiln store VERB [OPTIONS] [ARGS]: the verb comes first. */
	if (argc >= 2 && argv[1][0] != '-') {
		verb = argv[1];
		argc--;
		argv++;
	}
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
		int64_t v;
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_store); return KILN_EXIT_OK;
		case 'q': quiet = true; break;
		case OPT_STATE: state = optarg; break;
		case OPT_DATABASE: database = optarg; break;
		case OPT_STORE: store = optarg; break;
		case OPT_REPAIR: repair = true; break;
		case OPT_KEEP_DAYS:
			if (kiln_parse_i64(optarg, 0, 100000, &v) < 0)
				return cli_usage_error(
				    &kiln_cmd_store,
				    "--keep-days: expected a number of days from 0 "
				    "to 100000, got '%s'",
				    optarg);
			pol.keep_us = v * 86400 * 1000000;
			gc_opts = true;
			break;
		case OPT_MAX_SIZE:
			if (kiln_parse_size(optarg, 1, UINT64_MAX, &pol.max_size) < 0)
				return cli_usage_error(
				    &kiln_cmd_store,
				    "--max-size: expected a size such as 500M or 20G, "
				    "got '%s'",
				    optarg);
			gc_opts = true;
			break;
		case OPT_DRY_RUN:
			pol.dry_run = true;
			gc_opts = true;
			break;
		case OPT_GRACE: {
			unsigned secs;
			if (cli_parse_duration(optarg, &secs) < 0)
				return cli_usage_error(
				    &kiln_cmd_store,
				    "--grace: expected a duration such as 30s, 10m, "
				    "1h or 1d, got '%s'",
				    optarg);
			pol.grace_us = (int64_t)secs * 1000000;
			gc_opts = true;
			break;
		}
		default: return cli_option_error(&kiln_cmd_store, "hq", argv);
		}
	}
	if (!verb)
		return cli_usage_error(&kiln_cmd_store, "expected verify, gc, pin or unpin");
	bool is_verify = strcmp(verb, "verify") == 0, is_gc = strcmp(verb, "gc") == 0;
	bool is_pin = strcmp(verb, "pin") == 0 || strcmp(verb, "unpin") == 0;
	if (!is_verify && !is_gc && !is_pin)
		return cli_usage_error(&kiln_cmd_store, "unknown verb '%s'", verb);
	if (repair && !is_verify)
		return cli_usage_error(&kiln_cmd_store, "--repair is an option of verify");
	if (gc_opts && !is_gc)
		return cli_usage_error(&kiln_cmd_store,
		                       "--keep-days, --max-size, --grace and --dry-run are options "
		                       "of gc");
	if (is_pin ? optind >= argc : optind != argc)
		return cli_usage_error(
		    &kiln_cmd_store,
		    is_pin ? "%s: expected one or more BUILD ids" : "%s takes no arguments", verb);
	if (!state)
		state = kiln_state_dir_default();
	if (geteuid() != 0) {
		cli_errorf("store: must run as root (the store is root's)");
		return KILN_EXIT_FAILURE;
	}
	struct kiln_service *s = NULL;
	int rc = open_service(state, database, store, &s);
	if (rc)
		return rc;
	if (is_verify) {
		rc = do_verify(s, repair, quiet);
	} else if (is_gc) {
		rc = do_gc(s, &pol);
	} else {
		for (int i = optind; i < argc; i++) {
			_cleanup_error_ struct kiln_error *err = NULL;
			if (kiln_service_pin(s, argv[i], verb[0] == 'p', &err) < 0) {
				cli_errorf("store %s: %s", verb, err->msg);
				rc = KILN_EXIT_FAILURE;
			}
		}
	}
	kiln_service_free(s);
	return rc;
}

const struct kiln_command kiln_cmd_store = {
    .name = "store",
    .summary = "verify the content-addressed store, collect unused blobs, pin builds",
    .usage = "Usage: kiln store verify [--repair] [OPTIONS]\n"
             "       kiln store gc [--keep-days N] [--max-size SIZE] [--dry-run] [OPTIONS]\n"
             "       kiln store pin|unpin BUILD...\n"
             "\n"
             "verify rehashes every blob of the store, whatever its metadata says, and\n"
             "checks that every reference resolves to a good blob: the database's (the\n"
             "builds' artifacts, the contexts of builds still to run) and the state\n"
             "directory's (local cache entries, package locks, bases). A corrupt blob\n"
             "is moved to STATE/cas/quarantine/ (never deleted), and every build whose\n"
             "artifacts are corrupt or missing is marked: the cache no longer answers\n"
             "with it, and the next submit or build of its recipe builds again.\n"
             "With --repair it also removes local cache entries that name a bad blob\n"
             "and temporary files left by writers that died over an hour ago.\n"
             "Progress goes to stderr, the findings to stdout.\n"
             "\n"
             "gc removes blobs, least recently used first (a blob is used when it is\n"
             "stored again, answers a local cache hit or is downloaded, and whenever\n"
             "the server's cache answers with its build). Never a blob that a pending,\n"
             "building or pinned build references, nor a package lock's .debs or a\n"
             "base's archive. Blobs that nothing references go in any case; then:\n"
             "  --keep-days N    blobs not used for N days (0: every unprotected blob)\n"
             "  --max-size SIZE  then, oldest use first, until the store holds at most\n"
             "                   SIZE (bytes, or with K, M or G: 20G)\n"
             "  --grace DURATION never what was used or written this recently (default\n"
             "                   1h: a build may have stored a blob and not recorded it)\n"
             "  --dry-run        list what would go and how much it frees; change nothing\n"
             "Builds and local cache entries whose artifacts went stop answering hits.\n"
             "`kiln serve --gc-every DURATION` runs gc on a schedule.\n"
             "\n"
             "pin keeps a build's blobs from gc (its artifacts and context); unpin\n"
             "undoes it.\n"
             "\n"
             "Options:\n"
             "      --state-dir DIR  state directory (default $KILN_STATE_DIR or\n"
             "                       /var/lib/kiln)\n"
             "      --database URL   the server's database (default $KILN_DATABASE, else\n"
             "                       STATE/kiln.db)\n"
             "      --store DIR      the store shared by several hosts, as for kiln serve\n"
             "                       (default STATE/cas)\n"
             "  -q, --quiet          no progress on stderr\n"
             "\n"
             "Runs next to a live server. Needs root.\n"
             "Exit status: 0 success (verify: everything was good), 1 failure (verify:\n"
             "something was found, and stdout says what), 2 usage error.\n",
    .run = run,
};
