#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/parse.h"
#ifdef KILN_FULL
#include "sandbox/sandbox.h"
#include "store/cas.h"
#endif

void cli_errorf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("kiln: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* Every kind exits 1 today (README: 0 success, 1 failure, 2 usage): the
 * codes are documented and scripts test for them. A kind that needs its own
 * code (e.g. "kiln failed, a retry may help" for SYSTEM) is one row here. */
static const int kind_exit[KILN_ERR_KIND_COUNT] = {
    [KILN_ERR_USER] = KILN_EXIT_FAILURE,  /* the recipe or a step failed */
    [KILN_ERR_LIMIT] = KILN_EXIT_FAILURE, /* a timeout or the memory limit */
    /* a cancel; one by a signal kiln's handler caught exits 128 + the
     * signal instead, as a shell reports it (cli/build.c) */
    [KILN_ERR_CANCELLED] = KILN_EXIT_FAILURE,
    [KILN_ERR_SYSTEM] = KILN_EXIT_FAILURE, /* kiln or the host failed */
};

int cli_exit_code(const struct kiln_error *err)
{
	enum kiln_error_kind k = kiln_error_kind(err);
	return (unsigned)k < KILN_ERR_KIND_COUNT ? kind_exit[k] : KILN_EXIT_FAILURE;
}

int cli_fail(const char *what, int rc, const struct kiln_error *err)
{
	cli_errorf("%s: %s", what, err && err->msg ? err->msg : strerror(-rc));
	return cli_exit_code(err);
}

int cli_usage_error(const struct kiln_command *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "kiln %s: ", cmd->name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	fprintf(stderr, "Try 'kiln help %s'.\n", cmd->name);
	return KILN_EXIT_USAGE;
}

int cli_option_error(const struct kiln_command *cmd, const char *optstring, char **argv)
{
	/* getopt's own messages are off (main sets opterr = 0): they named the
	 * command "build:" and came before a second, wrong one. */
	const char *arg = optind > 0 ? argv[optind - 1] : "";
	if (strncmp(arg, "--", 2) == 0) {
		const char *eq = strchr(arg, '=');
		int n = eq ? (int)(eq - arg) : (int)strlen(arg);
		if (!optopt)
			return cli_usage_error(cmd, "unknown option '%.*s'", n, arg);
		if (eq)
			return cli_usage_error(cmd, "option '%.*s' takes no argument", n, arg);
		return cli_usage_error(cmd, "option '%s' requires an argument", arg);
	}
	const char *o = optopt && optopt != ':' ? strchr(optstring, optopt) : NULL;
	if (o && o[1] == ':')
		return cli_usage_error(cmd, "option '-%c' requires an argument", optopt);
	if (optopt && optopt > ' ' && optopt < 0x7f)
		return cli_usage_error(cmd, "unknown option '-%c'", optopt);
	return cli_usage_error(cmd, "unknown option '%s'", arg);
}

void cli_print_help(const struct kiln_command *cmd)
{
	fputs(cmd->usage, stdout);
}

void cli_print_man(const struct kiln_command *cmd)
{
	/* The help text verbatim (.nf): one text for both, so the man page
	 * can never say something `kiln help` does not. Escaped for roff: a
	 * backslash is \e, and a line starting with '.' or '\'' would be a
	 * request, so \& goes before it. */
	printf(".TH KILN-%s 1 \"\" \"kiln %s\" \"kiln manual\"\n.SH NAME\nkiln-%s \\- %s\n"
	       ".SH SYNOPSIS AND OPTIONS\n.nf\n",
	       cmd->name, KILN_VERSION, cmd->name, cmd->summary);
	bool bol = true;
	for (const char *p = cmd->usage; *p; p++) {
		if (bol && (*p == '.' || *p == '\''))
			fputs("\\&", stdout);
		if (*p == '\\')
			fputs("\\e", stdout);
		else
			putchar(*p);
		bol = *p == '\n';
	}
	printf("%s.fi\n.SH SEE ALSO\nkiln help, docs/ in the source tree\n", bol ? "" : "\n");
}

int cli_parse_duration(const char *s, unsigned *ret_s)
{
	static const struct {
		char suffix;
		unsigned mult;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
	size_t n = strlen(s);
	unsigned mult = 1;
	for (size_t i = 0; n > 1 && i < ELEMENTSOF(units); i++)
		if (s[n - 1] == units[i].suffix) {
			mult = units[i].mult;
			n--;
		}
	_cleanup_free_ char *digits = xstrndup(s, n);
	uint64_t v;
	if (kiln_parse_u64(digits, 10, 0, 10ull * 366 * 86400 / mult, &v) < 0)
		return -EINVAL;
	*ret_s = (unsigned)(v * mult);
	return 0;
}

int cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

int cli_read_recipe(const char *path, char **ret_text, size_t *ret_len, struct kiln_recipe **ret)
{
	const char *shown = strcmp(path, "-") == 0 ? "<stdin>" : path;
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	if (kiln_read_file(path, KILN_RECIPE_MAX_BYTES, &buf, &len, &err) < 0) {
		cli_errorf("%s: %s", shown, err->msg);
		return KILN_EXIT_FAILURE;
	}
	if (kiln_recipe_parse(buf, len, ret, &err) < 0) {
		/* One error a line (recipe.h), each named by file, as a compiler's. */
		for (char *line = err->msg, *nl; line; line = nl ? nl + 1 : NULL) {
			nl = strchr(line, '\n');
			cli_errorf("%s: %.*s", shown, nl ? (int)(nl - line) : (int)strlen(line),
			           line);
		}
		return KILN_EXIT_FAILURE;
	}
	if (ret_text) {
		*ret_text = TAKE_PTR(buf);
		*ret_len = len;
	}
	return KILN_EXIT_OK;
}

int cli_load_recipe(const char *path, struct kiln_recipe **ret)
{
	return cli_read_recipe(path, NULL, NULL, ret);
}

#ifdef KILN_FULL
/* The store's notices (a corrupt blob found and set aside) as warnings of
 * the command that found them. */
static void store_notice(void *ud, const char *msg)
{
	fprintf(stderr, "kiln %s: warning: %s\n", (const char *)ud, msg);
}

void cli_warn_subid(const char *cmd)
{
	static const char *const files[] = {"/etc/subuid", "/etc/subgid"};
	for (size_t i = 0; i < ELEMENTSOF(files); i++) {
		_cleanup_free_ char *text = NULL;
		size_t len = 0;
		if (kiln_read_file(files[i], 1 << 20, &text, &len, NULL) < 0)
			continue;
		_cleanup_free_ char *who = kiln_sandbox_subid_overlaps(text, len);
		if (who)
			fprintf(stderr,
			        "kiln %s: warning: %s gives %s ids in kiln's sandbox range "
			        "(100000-165535): they can signal and trace every build "
			        "(docs/sandbox.md, \"Known limits\"); move them to another range\n",
			        cmd, files[i], who);
	}
}

int cli_state_secure(const char *cmd, const char *state)
{
	kiln_cas_set_notify(store_notice, (void *)cmd);
	_cleanup_error_ struct kiln_error *err = NULL;
	_cleanup_free_ char *notice = NULL;
	if (kiln_state_secure(state, &notice, &err) < 0) {
		cli_errorf("%s: %s", cmd, err->msg);
		return KILN_EXIT_FAILURE;
	}
	/* Fixed, not refused: the state directories of earlier kiln versions
	 * were 0711 with a 0644 database, and refusing them would stop every
	 * upgrade; the operator still learns that it was readable. */
	for (char *line = notice, *nl; line && *line; line = nl ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		fprintf(stderr, "kiln %s: warning: %s\n", cmd, line);
	}
	return KILN_EXIT_OK;
}
#endif
