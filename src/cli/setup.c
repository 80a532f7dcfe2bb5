#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/image.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/tail.h"

/* Warnings the bootstrap tools print on every successful run here and that
 * say nothing about the result (issue 14: a newcomer's first `kiln setup`
 * looked broken): held back, and shown only when the setup fails. */
static const char *const benign[] = {
    "dpkg: warning: failed to open configuration file", /* mmdebstrap's ~/.dpkg.cfg probe */
    "unshare failed",                                   /* mmdebstrap probing unshare mode */
    "W: cannot mount",                                  /* mmdebstrap in root mode, /proc */
    "W: skipping creation of ./dev/", /* busybox's tree has no /dev: the sandbox brings one */
};

struct setup_log {
	struct kiln_buf line; /* the partial line */
	struct kiln_tail held;
};

static void put_line(struct setup_log *l, const char *s, size_t n)
{
	for (size_t i = 0; i < ELEMENTSOF(benign); i++)
		if (memmem(s, n, benign[i], strlen(benign[i]))) {
			kiln_tail_feed(&l->held, s, n);
			kiln_tail_feed(&l->held, "\n", 1);
			return;
		}
	fwrite(s, 1, n, stderr);
	fputc('\n', stderr);
}

static void log_stderr(void *ud, const char *data, size_t len)
{
	struct setup_log *l = ud;
	for (size_t i = 0; i < len; i++) {
		if (data[i] != '\n') {
			kiln_buf_putc(&l->line, data[i]);
			continue;
		}
		put_line(l, l->line.data ? l->line.data : "", l->line.len);
		kiln_buf_reset(&l->line);
	}
}

static void setup_log_clear(struct setup_log *l)
{
	kiln_buf_free(&l->line);
}

static int run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"base", required_argument, NULL, 'b'},
	    {"state-dir", required_argument, NULL, 's'},
	    {"mirror", required_argument, NULL, 'm'},
	    {"keyring", required_argument, NULL, 'k'},
	    {"packages", required_argument, NULL, 'p'},
	    {"allow-unsigned", no_argument, NULL, 'U'},
	    {},
	};
	const char *base = KILN_DEFAULT_BASE, *state = NULL;
	/* archlinux: the mirrors (the allowlist), the keys, more packages */
	_cleanup_strv_free_ char **mirrors = xcalloc(argc + 1, sizeof(char *));
	_cleanup_strv_free_ char **packages = xcalloc(argc * 8 + 1, sizeof(char *));
	struct kiln_image_setup_opts so = {0};
	size_t nm = 0, np = 0;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+hb:", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_setup); return KILN_EXIT_OK;
		case 'b': base = optarg; break;
		case 's': state = optarg; break;
		case 'm': mirrors[nm++] = xstrdup(optarg); break;
		case 'k': so.keyring = optarg; break;
		case 'U': so.allow_unsigned = true; break;
		case 'p':
			/* comma or space separated, and repeatable */
			for (const char *t = optarg; *t;) {
				size_t n = strcspn(t, ", ");
				if (n && np < (size_t)argc * 8)
					packages[np++] = xstrndup(t, n);
				t += n + strspn(t + n, ", ");
			}
			break;
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
	_cleanup_(setup_log_clear) struct setup_log sl = {.line =
	                                                      KILN_BUF_INIT_MAX(KILN_BUF_MAX_LINE)};
	kiln_tail_reset(&sl.held);
	struct kiln_image_hooks hooks = {.log = log_stderr, .userdata = &sl, .cancel_fd = -1};
	bool already = false;
	char digest[KILN_SHA256_HEX_LEN + 1];
	_cleanup_error_ struct kiln_error *err = NULL;
	so.mirrors = (const char *const *)mirrors;
	so.n_mirrors = nm;
	so.packages = (const char *const *)packages;
	so.n_packages = np;
	rc = kiln_image_setup_with(state, base, &so, &hooks, &already, digest, &err);
	if (sl.line.len)
		put_line(&sl, sl.line.data, sl.line.len);
	if (rc < 0) {
		_cleanup_free_ char *held = kiln_tail_format(&sl.held, NULL);
		if (held)
			fprintf(stderr,
			        "warnings the tools printed (hidden when setup succeeds):\n%s",
			        held);
		return cli_fail("setup", rc, err);
	}
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
             "       kiln setup --base archlinux --mirror URL [--mirror URL...]\n"
             "                  [--keyring FILE | --allow-unsigned] [--packages P,...]\n"
             "\n"
             "Bootstraps NAME inside kiln's sandbox and stores it content-addressed in\n"
             "the state directory (default $KILN_STATE_DIR or /var/lib/kiln). Debian\n"
             "bases come from mmdebstrap and the host's configured apt sources only;\n"
             "archlinux from pacman and the --mirror list only (pacman Server templates,\n"
             "e.g. https://mirror.example/$repo/os/$arch; repositories core and extra).\n"
             "Package signatures are required: against the OpenPGP public keys of\n"
             "--keyring FILE, else the mirror's archlinux-keyring package;\n"
             "--allow-unsigned turns the check off. Mirrors, keys and packages are\n"
             "the base's identity: other ones bootstrap it again. Idempotent: a second\n"
             "call says so and does nothing. Needs root.\n"
             "\n"
             "Bases:\n"
             "  debian/bookworm  the default: Debian minbase (apt, dpkg, coreutils)\n"
             "  busybox          Debian's busybox-static alone (no packages, no ISO)\n"
             "  archlinux        pacman's base package and --packages, from --mirror\n"
             "\n"
             "Exit status: 0 success, 1 failure, 2 usage error.\n",
    .run = run,
};
