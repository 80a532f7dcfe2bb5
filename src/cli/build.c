#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/image.h"
#include "service/service.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/budget.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/parse.h"

static int cancel_pipe[2] = {-1, -1};
/* The signal that cancelled the build: its exit status is 128 + it, as a
 * shell reports a command a signal ended (130 for Ctrl-C). */
static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
	char c = 1;
	ssize_t _unused_ r = write(cancel_pipe[1], &c, 1);
}

struct ui {
	bool quiet;
	bool tty;
	/* Per build, as in the service: stderr is often a file (CI logs), and
	 * a step printing forever would fill its disk. The saved log gets the
	 * same bytes. */
	struct kiln_budget budget;
	bool json;      /* a failure is also a JSON object on stdout */
	FILE *logf;     /* the saved log (NULL when it could not be created) */
	char *log_path; /* its path, named in every failure */
	bool titled;    /* the terminal's title was set */
};

static void log_out(void *ud, const char *data, size_t len)
{
	struct ui *u = ud;
	len = kiln_budget_take(&u->budget, len);
	if (!len)
		return;
	if (!u->quiet)
		fwrite(data, 1, len, stderr);
	if (u->logf)
		fwrite(data, 1, len, u->logf);
}

/* How many saved logs of local builds logs/local/ keeps: the newest (their
 * names begin with the UTC time), so the directory cannot grow forever. */
#define LOCAL_LOGS_KEPT 100

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void prune_logs(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	char **names = NULL;
	size_t n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		size_t l = strlen(e->d_name);
		if (e->d_name[0] == '.' || l < 5 || strcmp(e->d_name + l - 4, ".log") != 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xstrdup(e->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i + LOCAL_LOGS_KEPT < n) {
			_cleanup_free_ char *p = xasprintf("%s/%s", dir, names[i]);
			(void)unlink(p);
		}
		free(names[i]);
	}
	free(names);
}

/* Local builds keep their log as the server does: state/logs/local/
 * <UTC time>-<random>.log (0600, like the state dir's other files). A log
 * that cannot be created is a warning, not a failed build. */
static void log_open(struct ui *u, const char *state)
{
	_cleanup_free_ char *logs = xasprintf("%s/logs", state);
	_cleanup_free_ char *dir = xasprintf("%s/local", logs);
	(void)mkdir(logs, 0700);
	(void)mkdir(dir, 0700);
	prune_logs(dir);
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", gmtime_r(&now, &tm));
	uint32_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)getpid();
	_cleanup_free_ char *path = xasprintf("%s/%s-%08x.log", dir, stamp, rnd);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || !(u->logf = fdopen(fd, "w"))) {
		fprintf(stderr, "kiln build: warning: cannot save the build log in %s: %s\n", dir,
		        strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	u->log_path = TAKE_PTR(path);
	if (!u->quiet)
		fprintf(stderr, "==> build log: %s\n", u->log_path);
}

static void log_close(struct ui *u)
{
	/* progress_out set the terminal's title: give it back empty (the
	 * shell's prompt sets its own) rather than leave "kiln [9/9] ...". */
	if (u->tty && !u->quiet && u->titled)
		fputs("\033]0;\007", stderr);
	if (u->logf)
		fclose(u->logf);
	u->logf = NULL;
	free(u->log_path);
	u->log_path = NULL;
}

/* A failed build: the message (cli_fail), where the log is, and with
 * --json the same as an object on stdout (a script reads one stream). */
static int build_fail(struct ui *u, const char *what, int rc, const struct kiln_error *err)
{
	int code = cli_fail(what, rc, err);
	if (got_signal)
		code = 128 + got_signal;
	if (u && u->log_path)
		fprintf(stderr, "kiln: build: the whole log is in %s\n", u->log_path);
	if (u && u->json) {
		_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
		kiln_buf_puts(&b, "{\"error\":");
		kiln_json_put_cstr(&b, err && err->msg ? err->msg : strerror(-rc));
		kiln_buf_printf(
		    &b, ",\"kind\":\"%s\",\"log\":", kiln_error_kind_name(kiln_error_kind(err)));
		if (u->log_path)
			kiln_json_put_cstr(&b, u->log_path);
		else
			kiln_buf_puts(&b, "null");
		kiln_buf_puts(&b, "}\n");
		fwrite(b.data, 1, b.len, stdout);
	}
	return code;
}

/* After a build: says what the log budget dropped, and starts the next
 * build (--verify's second) with a full budget. */
static void log_end(struct ui *u)
{
	_cleanup_free_ char *note = kiln_budget_note(&u->budget);
	if (note && !u->quiet)
		fprintf(stderr, "\n%s", note);
	u->budget = (struct kiln_budget){.max = u->budget.max};
}

static void progress_out(void *ud, unsigned step, unsigned total, const char *what)
{
	struct ui *u = ud;
	/* On a terminal, the window title-like progress line; the log already
	 * carries "==> [i/n]" for pipes and files. */
	if (u->tty && !u->quiet) {
		fprintf(stderr, "\033]0;kiln [%u/%u] %s\007", step, total, what);
		u->titled = true;
	}
}

static int do_build(const struct kiln_image_build_opts *o, struct kiln_image_result **ret)
{
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_image_build(o, ret, &err);
	log_end(o->hooks.userdata);
	return rc < 0 ? build_fail(o->hooks.userdata, "build", rc, err) : KILN_EXIT_OK;
}

/* -o is checked before anything runs: a file there fails at once (not after
 * minutes of building), missing parents are created, and *ret_created is
 * the topmost directory this created (NULL when it existed), for removing
 * what a failed build would leave empty. */
static int prepare_out(const char *out, char **ret_created)
{
	struct stat st;
	if (stat(out, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return KILN_EXIT_OK;
		return cli_usage_error(&kiln_cmd_build, "-o %s: exists and is not a directory",
		                       out);
	}
	if (errno != ENOENT) {
		cli_errorf("build: -o %s: %s", out, strerror(errno));
		return KILN_EXIT_FAILURE;
	}
	_cleanup_free_ char *p = xstrdup(out);
	for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
		p[n - 1] = '\0';
	char *created = NULL;
	for (char *c = p + 1;; c++) {
		bool end = !*c;
		if (!end && *c != '/')
			continue;
		*c = '\0';
		if (mkdir(p, 0755) == 0) {
			if (!created)
				created = xstrdup(p);
		} else if (errno != EEXIST || (stat(p, &st) == 0 && !S_ISDIR(st.st_mode))) {
			int e = errno == EEXIST ? ENOTDIR : errno;
			cli_errorf("build: -o %s: cannot create %s: %s", out, p, strerror(e));
			free(created);
			return KILN_EXIT_FAILURE;
		}
		if (end)
			break;
		*c = '/';
	}
	*ret_created = created;
	return KILN_EXIT_OK;
}

/* After a failed build: the directories prepare_out created, innermost
 * first, where they are still empty (rmdir never removes anything else). */
static void remove_created(const char *out, const char *created)
{
	if (!created)
		return;
	_cleanup_free_ char *p = xstrdup(out);
	for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
		p[n - 1] = '\0';
	while (strlen(p) >= strlen(created)) {
		if (rmdir(p) < 0)
			return;
		char *slash = strrchr(p, '/');
		if (!slash)
			return;
		*slash = '\0';
	}
}

struct build_args {
	const struct kiln_recipe *r;
	const char *out, *context, *state;
	bool verify, json, offline, quiet, no_cache;
	uint64_t max_log;
};
/* Everything after the checks, with the recipe loaded and -o prepared. */
static int build_in(const struct build_args *args);

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"output", required_argument, NULL, 'o'},
	    {"context", required_argument, NULL, 'c'},
	    {"verify", no_argument, NULL, 'V'},
	    {"json", no_argument, NULL, 'j'},
	    {"offline", no_argument, NULL, 'O'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"state-dir", required_argument, NULL, 's'},
	    {"no-cache", no_argument, NULL, 'N'},
	    {"max-log-size", required_argument, NULL, 'L'},
	    {},
	};
	const char *out = "kiln-out", *context = NULL, *state = NULL;
	bool verify = false, json = false, offline = false, quiet = false, no_cache = false;
	uint64_t max_log = KILN_LOG_MAX_DEFAULT;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "ho:c:q", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_build); return KILN_EXIT_OK;
		case 'o': out = optarg; break;
		case 'c': context = optarg; break;
		case 'V': verify = true; break;
		case 'j': json = true; break;
		case 'O': offline = true; break;
		case 'q': quiet = true; break;
		case 's': state = optarg; break;
		case 'N': no_cache = true; break;
		case 'L':
			if (kiln_parse_size(optarg, 4096, KILN_LOG_MAX_LIMIT, &max_log) < 0)
				return cli_usage_error(&kiln_cmd_build,
				                       "--max-log-size: expected bytes (K, M, G "
				                       "suffixes allowed) from 4K to 16G, not '%s'",
				                       optarg);
			break;
		default: return cli_option_error(&kiln_cmd_build, "ho:c:q", argv);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error(&kiln_cmd_build, "expected exactly one RECIPE");
	if (!state)
		state = kiln_state_dir_default();
	_cleanup_recipe_ struct kiln_recipe *r = NULL;
	int rc = cli_load_recipe(argv[optind], &r);
	if (rc)
		return rc;
	if (geteuid() != 0) {
		cli_errorf("build: must run as root (the sandbox needs namespaces and cgroups)");
		return KILN_EXIT_FAILURE;
	}
	if ((rc = cli_state_secure("build", state)) != 0)
		return rc;
	cli_warn_subid("build");
	_cleanup_free_ char *out_created = NULL;
	if ((rc = prepare_out(out, &out_created)) != 0)
		return rc;
	rc = build_in(&(struct build_args){r, out, context, state, verify, json, offline, quiet,
	                                   no_cache, max_log});
	if (rc != KILN_EXIT_OK)
		remove_created(out, out_created);
	return rc;
}

static int build_in(const struct build_args *args)
{
	const struct kiln_recipe *r = args->r;
	const char *out = args->out, *context = args->context, *state = args->state;
	bool verify = args->verify, json = args->json, offline = args->offline, quiet = args->quiet,
	     no_cache = args->no_cache;
	uint64_t max_log = args->max_log;
	int rc;

	if (pipe2(cancel_pipe, O_CLOEXEC) < 0) {
		cli_errorf("build: pipe: %s", strerror(errno));
		return KILN_EXIT_FAILURE;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	_cleanup_(log_close) struct ui u = {
	    .quiet = quiet, .tty = isatty(STDERR_FILENO), .budget = {.max = max_log}, .json = json};
	_cleanup_(kiln_image_result_freep) struct kiln_image_result *res = NULL;
	/* Identical recipe, same tools, warm store: answered from the local
	 * cache without building (--verify always builds, twice). */
	if (!no_cache && !verify) {
		char key[KILN_SHA256_HEX_LEN + 1];
		_cleanup_error_ struct kiln_error *e = NULL;
		int kr = kiln_image_build_key(r, context, key, &e);
		if (kr < 0)
			return build_fail(&u, "build", kr, e);
		int cr = kiln_image_cache_lookup(state, key, out, &res, &e);
		if (cr < 0 && cr != -ENOENT)
			return build_fail(&u, "build", cr, e);
		if (cr == 0 && !quiet)
			fprintf(stderr,
			        "==> build key %.12s is in the build cache: nothing to build "
			        "(--no-cache rebuilds)\n",
			        key);
	}

	if (!res)
		log_open(&u, state);
	struct kiln_image_hooks hooks = {
	    .log = log_out, .progress = progress_out, .userdata = &u, .cancel_fd = cancel_pipe[0]};

	/* A missing base is set up on first use, as `kiln setup` would. */
	if (!res) {
		_cleanup_free_ char *p = NULL;
		_cleanup_error_ struct kiln_error *e = NULL;
		if (kiln_image_base_path(state, r->base, &p, NULL, NULL) < 0) {
			if (!quiet)
				fprintf(stderr,
				        "==> base %s is not set up yet; running kiln setup\n",
				        r->base);
			int sr = kiln_image_setup(state, r->base, &hooks, NULL, NULL, &e);
			if (sr < 0)
				return build_fail(&u, "build: setup", sr, e);
		}
	}

	struct kiln_image_build_opts o = {
	    .state_dir = state,
	    .recipe = r,
	    .context_path = context,
	    .out_dir = out,
	    .offline = offline,
	    .want_tree = verify,
	    .hooks = hooks,
	};
	if (!res) {
		rc = do_build(&o, &res);
		if (rc)
			return rc;
	}

	bool verified = false;
	_cleanup_buf_ struct kiln_buf diff = KILN_BUF_INIT;
	if (verify) {
		/* A second build from scratch in a fresh work tree and output dir;
		 * reproducibility is proven by comparing bytes, not asserted. */
		uint32_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
			rnd = (uint32_t)getpid();
		_cleanup_rmtree_ char *out2 = xasprintf("%s/builds/verify-%08x", state, rnd);
		/* Locked while it lives: another kiln's start-up cleanup removes
		 * unlocked directories in builds/ that look abandoned. */
		_cleanup_close_ int out2_lock = -1;
		if (mkdir(out2, 0755) == 0) {
			_cleanup_free_ char *lk = xasprintf("%s/.lock", out2);
			out2_lock = open(lk, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (out2_lock >= 0)
				(void)flock(out2_lock, LOCK_EX | LOCK_NB);
		}
		if (!quiet)
			fprintf(stderr, "==> --verify: building a second time from scratch\n");
		o.out_dir = out2;
		_cleanup_(kiln_image_result_freep) struct kiln_image_result *res2 = NULL;
		rc = do_build(&o, &res2);
		if (rc == 0) {
			for (size_t i = 0; i < res->n_artifacts; i++) {
				const struct kiln_image_artifact *a = &res->artifacts[i];
				const struct kiln_image_artifact *b2 = NULL;
				for (size_t k = 0; k < res2->n_artifacts; k++)
					if (strcmp(res2->artifacts[k].name, a->name) == 0)
						b2 = &res2->artifacts[k];
				if (!b2 || strcmp(a->sha256, b2->sha256) != 0)
					kiln_buf_printf(&diff, "  %s: %s vs %s\n", a->name,
					                a->sha256, b2 ? b2->sha256 : "(missing)");
			}
			verified = diff.len == 0;
			if (!verified) {
				/* Which files inside the images differ, and how. */
				_cleanup_free_ char *td =
				    kiln_image_tree_diff(res->tree, res2->tree, 40);
				if (td && *td)
					kiln_buf_printf(
					    &diff, "files that differ inside the image:\n%s", td);
				else
					kiln_buf_puts(&diff,
					              "the two image trees are identical: the "
					              "difference is in how the artifacts were "
					              "written\n");
			}
		}
		/* out2 goes with everything in it (_cleanup_rmtree_) */
		if (rc)
			return rc;
	}

	if (json) {
		_cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
		kiln_buf_printf(
		    &b,
		    "{\"build_key\":\"%s\",\"config_hash\":\"%s\",\"source_date_epoch\":%" PRId64
		    ",\"output_dir\":",
		    res->build_key, r->config_hash, r->source_date_epoch);
		kiln_json_put_cstr(&b, out);
		kiln_buf_puts(&b, ",\"artifacts\":[");
		for (size_t i = 0; i < res->n_artifacts; i++) {
			kiln_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
			kiln_json_put_cstr(&b, res->artifacts[i].name);
			kiln_buf_printf(&b, ",\"sha256\":\"%s\",\"size\":%" PRIu64 "}",
			                res->artifacts[i].sha256, res->artifacts[i].size);
		}
		kiln_buf_printf(&b, "],\"cached\":%s", res->cached ? "true" : "false");
		if (verify)
			kiln_buf_printf(&b, ",\"reproducible\":%s", verified ? "true" : "false");
		kiln_buf_puts(&b, "}\n");
		fwrite(b.data, 1, b.len, stdout);
	} else {
		printf("build key %s%s\n", res->build_key,
		       res->cached ? " (from the build cache)" : "");
		for (size_t i = 0; i < res->n_artifacts; i++)
			printf("%s/%s  sha256:%s  %" PRIu64 " bytes\n", out, res->artifacts[i].name,
			       res->artifacts[i].sha256, res->artifacts[i].size);
		if (verify)
			printf("%s\n", verified
			                   ? "verify: reproducible (second build is byte-identical)"
			                   : "verify: NOT reproducible");
	}
	if (verify && !verified) {
		cli_errorf("build: --verify: artifacts differ between two builds:\n%s", diff.data);
		return KILN_EXIT_FAILURE;
	}
	return KILN_EXIT_OK;
}

const struct kiln_command kiln_cmd_build = {
    .name = "build",
    .summary = "build a recipe's images locally (tar, squashfs, iso, ext4, oci)",
    .usage = "Usage: kiln build [OPTIONS] RECIPE\n"
             "\n"
             "Runs the whole pipeline locally: fetch and lock the packages (the only\n"
             "networked phase), install them offline in the sandbox, write overlay\n"
             "files, run the steps, normalize, and write the recipe's outputs with\n"
             "manifest.json and sbom.spdx.json. Sets the base up first when needed.\n"
             "An identical recipe whose artifacts are in the store is answered from\n"
             "the build cache at once (the outputs are copies of the store's blobs,\n"
             "each checked against its digest first: kiln store verify).\n"
             "Needs root.\n"
             "\n"
             "Options:\n"
             "  -o, --output DIR     where artifacts go (default ./kiln-out; missing\n"
             "                       parents are created, and removed again if the\n"
             "                       build fails)\n"
             "  -c, --context FILE   context archive for COPY steps (tar, tar.gz, zip)\n"
             "      --verify         build twice from scratch and compare every byte;\n"
             "                       on a mismatch, list the files that differ\n"
             "      --json           print the result as JSON on stdout\n"
             "      --offline        never use the network (the store must be warm)\n"
             "      --no-cache       build even when the build cache has this build key\n"
             "  -q, --quiet          no build log on stderr\n"
             "      --max-log-size SIZE\n"
             "                       the build log on stderr stops after SIZE bytes, with\n"
             "                       a line saying how much was dropped (default 64M;\n"
             "                       K, M, G suffixes; 4K to 16G)\n"
             "      --state-dir DIR  state directory (default $KILN_STATE_DIR or\n"
             "                       /var/lib/kiln)\n"
             "\n"
             "The build log is saved in STATE/logs/local/ (the newest 100 are kept)\n"
             "and named on stderr. A failure's message ends with the last lines of\n"
             "the failing step's output; with --json it is also an object on stdout:\n"
             "{\"error\": MESSAGE, \"kind\": \"user\"|\"limit\"|\"system\"|\"cancelled\",\n"
             "\"log\": PATH}.\n"
             "\n"
             "Ctrl-C cancels the build and removes its scratch.\n"
             "Exit status: 0 success, 1 failure (or not reproducible with --verify),\n"
             "2 usage error, 130 cancelled by Ctrl-C (143 by SIGTERM).\n",
    .run = run,
};
