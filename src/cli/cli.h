/* cli/cli.h — the subcommand table and helpers shared by the cli/ sources.
 *
 * Each subcommand lives in its own file and returns the process exit code:
 * 0 success, 1 failure, 2 usage error. Only cli/ prints. */
#pragma once

#include <stdint.h>

#include "recipe/recipe.h"
#include "util/error.h"

enum {
	KILN_EXIT_OK = 0,
	KILN_EXIT_FAILURE = 1,
	KILN_EXIT_USAGE = 2,
};

struct kiln_command {
	const char *name;
	const char *summary;
	const char *usage; /* full help text: synopsis, options, exit codes */
	int (*run)(int argc, char **argv);
};

/* In both executables (kiln and kiln-full; src/cli/main.c). */
extern const struct kiln_command kiln_cmd_validate;
extern const struct kiln_command kiln_cmd_profile;
extern const struct kiln_command kiln_cmd_run;
/* In kiln-full only. */
extern const struct kiln_command kiln_cmd_hash;
extern const struct kiln_command kiln_cmd_setup;
extern const struct kiln_command kiln_cmd_build;
extern const struct kiln_command kiln_cmd_token;
extern const struct kiln_command kiln_cmd_submit;
extern const struct kiln_command kiln_cmd_status;
extern const struct kiln_command kiln_cmd_list;
extern const struct kiln_command kiln_cmd_logs;
extern const struct kiln_command kiln_cmd_cancel;
extern const struct kiln_command kiln_cmd_tag;
extern const struct kiln_command kiln_cmd_templates;
extern const struct kiln_command kiln_cmd_download;
extern const struct kiln_command kiln_cmd_serve;
extern const struct kiln_command kiln_cmd_store;
extern const struct kiln_command kiln_cmd_backup;

/* Prints "kiln: <fmt>" to stderr. */
void cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The exit code of a failure of the given error's kind (one table, in
 * common.c); NULL counts as SYSTEM. */
int cli_exit_code(const struct kiln_error *err);
/* Prints "kiln: <what>: <message>" (strerror(-rc) without a message) and
 * returns cli_exit_code(err). */
int cli_fail(const char *what, int rc, const struct kiln_error *err);
/* Prints the usage error and a hint; returns KILN_EXIT_USAGE. */
int cli_usage_error(const struct kiln_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The usage error of an option getopt_long refused (it returned '?'):
 * unknown, missing its argument, or given one it does not take, named as
 * the user wrote it. optstring is the one given to getopt_long. Returns
 * KILN_EXIT_USAGE. */
int cli_option_error(const struct kiln_command *cmd, const char *optstring, char **argv);
/* Loads and validates a recipe file ("-" = stdin). On failure prints
 * "kiln: FILE: <error>" and returns KILN_EXIT_FAILURE. */
int cli_load_recipe(const char *path, struct kiln_recipe **ret);
/* The same, handing out the text read too (*ret_text, *ret_len; NULL
 * ret_text: not wanted): for a command that also sends it. */
int cli_read_recipe(const char *path, char **ret_text, size_t *ret_len, struct kiln_recipe **ret);
/* A duration: seconds, or a number with s, m, h or d ("90s", "10m", "6h",
 * "1d"), at most 10 years. -EINVAL otherwise. */
int cli_parse_duration(const char *s, unsigned *ret_s);
/* True when argv holds -h/--help before any "--". */
int cli_wants_help(int argc, char **argv);
void cli_print_help(const struct kiln_command *cmd);
/* The help text as a man page (roff, section 1): kiln-NAME(1). */
void cli_print_man(const struct kiln_command *cmd);
#ifdef KILN_FULL
/* Creates the state directory where missing and narrows a mode that lets
 * other local users read it (kiln_state_secure), saying so on stderr as
 * "kiln CMD: ...". KILN_EXIT_FAILURE (after printing why) when it cannot.
 * The store's notices go to stderr from then on ("kiln CMD: warning: ..."). */
int cli_state_secure(const char *cmd, const char *state);
/* Warns on stderr ("kiln CMD: warning: ...") when /etc/subuid or
 * /etc/subgid gives a user ids in the sandbox's range
 * (kiln_sandbox_subid_overlaps): that user can signal every build. */
void cli_warn_subid(const char *cmd);
/* `kiln serve --gc-every` (cli/store.c): kiln store gc with pol at once and
 * then every every_s seconds, a summary on stderr, until stopped. */
struct kiln_service;
struct kiln_store_gc_policy;
int cli_gc_schedule_start(struct kiln_service *svc, unsigned every_s,
                          const struct kiln_store_gc_policy *pol);
void cli_gc_schedule_stop(void);
/* `kiln serve --backup-dir` (cli/backup.c): a backup every day at at_min
 * minutes after midnight UTC (at once when the last one is missing), prune
 * to keep_days, and the restore test every restore_every_s (0: never); on
 * the one host of a fleet that holds the "backup" lease. The outcome shows
 * in /api/v1/health. */
struct cli_backup_schedule {
	const char *dir;
	int at_min;
	unsigned keep_days;
	unsigned restore_every_s;
};
int cli_backup_schedule_start(struct kiln_service *svc, const struct cli_backup_schedule *cfg);
void cli_backup_schedule_stop(void);
#endif
