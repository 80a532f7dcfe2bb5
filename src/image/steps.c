/* The image's own configuration: overlay files, the context archive, the
 * recipe's steps (RUN, ENV, USER, WORKDIR, COPY), time zone, locale, and the
 * healthcheck over the finished image.
 *
 * Isolation: everything here that touches the image runs in the sandbox, as
 * the image's root (or the USER a step chose), with no network, over this
 * build's own upper layer; recipe values reach scripts as arguments, never
 * as script text. */
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/archive.h"
#include "image/internal.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/parse.h"
#include "util/walk.h"

/* ---- overlays and steps --------------------------------------------------- */

static void sh_quote(struct kiln_buf *out, const char *s)
{
	kiln_buf_putc(out, '\'');
	for (; *s; s++) {
		if (*s == '\'')
			kiln_buf_puts(out, "'\\''");
		else
			kiln_buf_putc(out, *s);
	}
	kiln_buf_putc(out, '\'');
}

int kiln_image_phase_overlays(struct build *b, struct kiln_error **err)
{
	kiln_image_progress(b, "write %zu overlay file%s", b->r->n_files,
	                    b->r->n_files == 1 ? "" : "s");
	if (b->r->n_files == 0)
		return 0;
	_cleanup_rmtree_ char *dir = xasprintf("%s/overlay-files", b->scratch);
	if (mkdir(dir, 0755) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", dir);
	_cleanup_close_ int dfd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_set_errno(err, errno, "%s", dir);
	_cleanup_buf_ struct kiln_buf script = KILN_BUF_INIT;
	/* Plain sh, cat, mkdir, chown and chmod — there in every base, busybox
	 * too (whose applets have no install(1)). rm first: an existing file
	 * or symlink at the path is replaced, never written through. */
	kiln_buf_puts(&script, "set -eu\n"
	                       "put() { mkdir -p \"$(dirname \"$3\")\"; rm -f \"$3\"; "
	                       "cat \"$2\" > \"$3\"; chown 0:0 \"$3\"; chmod \"$1\" \"$3\"; }\n");
	size_t n = 0;
	int rc = 0;
	/* The files are placed from inside the sandbox so that every path
	 * resolves in the image's own view (bookworm's /bin is a symlink to
	 * usr/bin in a lower layer): a host-side write into the upper layer would
	 * shadow such links, and could be pointed elsewhere by a planted one. */
	for (size_t i = 0; i < b->r->n_overlays && rc == 0; i++)
		for (size_t k = 0; k < b->r->overlays[i].n_files && rc == 0; k++) {
			const struct kiln_file *f = &b->r->overlays[i].files[k];
			char name[32];
			snprintf(name, sizeof(name), "%06zu", n++);
			int w =
			    kiln_write_file_atomic_at(dfd, name, f->content, f->content_len, 0644);
			if (w < 0) {
				rc =
				    kiln_error_set_errno(err, -w, "%s/%s: cannot write", dir, name);
				break;
			}
			kiln_buf_printf(&script, "put %04o /srv/%s ", f->mode, name);
			sh_quote(&script, f->path);
			kiln_buf_putc(&script, '\n');
		}
	if (rc == 0) {
		struct kiln_sandbox_bind binds[] = {{dir, "/srv", true}};
		rc = kiln_image_script(b, "overlay files", script.data, NULL, binds, 1, NULL, 0,
		                       err);
	}
	return rc;
}

static int chown_entry(const struct kiln_walk_entry *e, void *ud)
{
	(void)ud;
	return fchownat(e->dirfd, e->name, KILN_IMAGE_ID_BASE, KILN_IMAGE_ID_BASE,
	                AT_SYMLINK_NOFOLLOW) < 0
	           ? -errno
	           : 0;
}

int kiln_image_phase_context(struct build *b, struct kiln_error **err)
{
	if (!b->o->context_path)
		return 0;
	b->context = xasprintf("%s/context", b->scratch);
	if (mkdir(b->context, 0755) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot create", b->context);
	_cleanup_close_ int fd = open(b->o->context_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot open context archive",
		                            b->o->context_path);
	_cleanup_close_ int dfd = open(b->context, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	if (dfd < 0)
		return kiln_error_set_errno(err, errno, "%s", b->context);
	int rc = kiln_archive_extract_fd(fd, dfd, NULL, NULL, err);
	if (rc < 0) {
		kiln_error_prefix(err, "context archive %s", b->o->context_path);
		return rc;
	}
	/* Owned by the sandbox's root, so COPY inside the sandbox can read
	 * files whatever their mode. */
	rc = kiln_walk(AT_FDCWD, b->context, 0, chown_entry, NULL);
	if (rc < 0)
		return kiln_error_set_errno(err, -rc, "%s: cannot chown", b->context);
	return 0;
}

/* The context's files are the sandbox root's (extract_context), so cp's
 * -a/-p give them owner 0:0 — in plain options busybox's cp has too. */
static const char copy_script[] =
    "set -eu\n"
    "src=\"/srv/$1\"; dst=\"$2\"\n"
    "[ -e \"$src\" ] || [ -L \"$src\" ] || { echo \"COPY: $1: not in the context archive\" "
    ">&2; exit 1; }\n"
    "if [ -d \"$src\" ] && [ ! -L \"$src\" ]; then\n"
    "  mkdir -p \"$dst\"; cp -a \"$src/.\" \"$dst/\"\n"
    "elif [ -d \"$dst\" ] || [ \"${dst%/}\" != \"$dst\" ]; then\n"
    "  mkdir -p \"$dst\"; cp -P -p \"$src\" \"$dst/\"\n"
    "else\n"
    "  mkdir -p \"$(dirname \"$dst\")\"; cp -P -p \"$src\" \"$dst\"\n"
    "fi\n";

void kiln_image_env_set(struct build *b, const char *k, const char *v)
{
	size_t kl = strlen(k);
	char *kv = xasprintf("%s=%s", k, v);
	for (size_t i = 0; i < b->n_env; i++)
		if (strncmp(b->env[i], k, kl) == 0 && b->env[i][kl] == '=') {
			free(b->env[i]);
			b->env[i] = kv;
			return;
		}
	b->env = xreallocarray(b->env, b->n_env + 2, sizeof(char *));
	b->env[b->n_env++] = kv;
	b->env[b->n_env] = NULL;
}

/* `id -u; id -g` output: two decimal lines. -EINVAL when it is not that,
 * -ERANGE for an id outside the sandbox's 65536. */
static int parse_ids(const char *out, uint64_t *ret_uid, uint64_t *ret_gid)
{
	uint64_t v[2];
	const char *p = out;
	for (size_t i = 0; i < 2; i++) {
		const char *nl = strchr(p, '\n');
		if (!nl && i == 0)
			return -EINVAL;
		_cleanup_free_ char *num = xstrndup(p, nl ? (size_t)(nl - p) : strlen(p));
		int r = kiln_parse_u64(num, 10, 0, UINT64_MAX, &v[i]);
		if (r < 0)
			return -EINVAL;
		if (v[i] > 65535)
			return -ERANGE;
		p = nl ? nl + 1 : p + strlen(p);
	}
	*ret_uid = v[0];
	*ret_gid = v[1];
	return 0;
}

/* A failed step's error says why in its first line (the output's last
 * line: "COPY: x: not in the context archive", "id: 'alice': no such
 * user") and ends with the last lines of the output, so that the CLI, the
 * API's error field and the web UI show the reason, not only a status. */
static void explain_failure(struct build *b, struct kiln_error **err)
{
	if (!err || !*err || kiln_error_kind(*err) == KILN_ERR_CANCELLED ||
	    (*err)->code == ECANCELED)
		return;
	const char *last = kiln_tail_last(&b->tail);
	if (!last)
		return;
	size_t n = 0;
	_cleanup_free_ char *lines = kiln_tail_format(&b->tail, &n);
	struct kiln_error *e = *err;
	char *msg;
	if (n > 1)
		msg = xasprintf("%s: %s\nthe last %zu lines of its output:\n%s", e->msg, last, n,
		                lines);
	else
		msg = xasprintf("%s: %s", e->msg, last);
	/* no trailing newline (error.h) */
	size_t ml = strlen(msg);
	while (ml && msg[ml - 1] == '\n')
		msg[--ml] = '\0';
	free(e->msg);
	e->msg = msg;
}

static int run_step(struct build *b, size_t i, struct kiln_error **err)
{
	const struct kiln_step *s = &b->r->steps[i];
	_cleanup_free_ char *what =
	    xasprintf("step %zu (%.60s%s)", i + 1, s->text, strlen(s->text) > 60 ? "..." : "");
	kiln_image_progress(b, "step %zu of %zu: %s", i + 1, b->r->n_steps, s->text);
	kiln_tail_reset(&b->tail);
	unsigned limit =
	    b->o->step_timeout_s ? b->o->step_timeout_s : (unsigned)b->r->resources.step_timeout_s;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = 0;
	switch (s->op) {
	case KILN_STEP_ENV: kiln_image_env_set(b, s->arg, s->arg2); break;
	case KILN_STEP_WORKDIR: {
		const char *args[] = {s->arg, NULL};
		rc = kiln_image_script(b, what, "mkdir -p \"$1\"", args, NULL, 0, NULL, limit, err);
		if (rc == 0) {
			free(b->workdir);
			b->workdir = xstrdup(s->arg);
		}
		break;
	}
	case KILN_STEP_USER: {
		_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT_MAX(KILN_BUF_MAX_CAPTURE);
		const char *args[] = {s->arg, NULL};
		rc = kiln_image_script(b, what, "id -u \"$1\" && id -g \"$1\"", args, NULL, 0, &out,
		                       limit, err);
		uint64_t uid = 0, gid = 0;
		if (rc == 0)
			rc = parse_ids(out.data ? out.data : "", &uid, &gid);
		if (rc == -EINVAL)
			rc = kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
			                         "%s: cannot resolve user", what);
		else if (rc == -ERANGE)
			rc = kiln_error_set_kind(err, KILN_ERR_USER, ERANGE,
			                         "%s: uid/gid outside the sandbox's range", what);
		if (rc == 0) {
			b->uid = (uid_t)uid;
			b->gid = (gid_t)gid;
		}
		break;
	}
	case KILN_STEP_COPY: {
		if (!b->context)
			return kiln_error_set_kind(err, KILN_ERR_USER, EINVAL,
			                           "%s: COPY needs a context archive (--context)",
			                           what);
		struct kiln_sandbox_bind binds[] = {{b->context, "/srv", true}};
		const char *args[] = {s->arg, s->arg2, NULL};
		rc = kiln_image_script(b, what, copy_script, args, binds, 1, NULL, limit, err);
		break;
	}
	case KILN_STEP_RUN: {
		const char *argv[] = {"/bin/sh", "-c", s->arg, NULL};
		const char *layers[] = {b->base_tree};
		struct kiln_image_run r = {
		    .what = what,
		    .layers = layers,
		    .n_layers = 1,
		    .upper = b->upper,
		    .argv = argv,
		    .env = (const char *const *)b->env,
		    .n_env = b->n_env,
		    .uid = b->uid,
		    .gid = b->gid,
		    .workdir = b->workdir,
		};
		rc = kiln_image_run_timed(b, &r, limit, err);
		break;
	}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (rc == 0)
		kiln_image_logf(&b->o->hooks, "    step %zu: ok (%.2f s)\n", i + 1, dt);
	else {
		kiln_image_logf(&b->o->hooks, "    step %zu: failed after %.2f s\n", i + 1, dt);
		explain_failure(b, err);
	}
	return rc;
}

/* ---- time zone and locale -------------------------------------------------- */

/* An overlay file at one of the paths this stage writes is the recipe's
 * explicit choice and wins over the generated one. */
static bool recipe_writes(const struct kiln_recipe *r, const char *path)
{
	for (size_t i = 0; i < r->n_overlays; i++)
		for (size_t k = 0; k < r->overlays[i].n_files; k++)
			if (strcmp(r->overlays[i].files[k].path, path) == 0)
				return true;
	return false;
}

/* An overlay file at path is kept (and the log says so). */
static bool overlay_kept(struct build *b, const char *path)
{
	if (!recipe_writes(b->r, path))
		return false;
	kiln_image_logf(&b->o->hooks, "    %s: the recipe's overlay file kept\n", path);
	return true;
}

/* Runs a configuration script in the image; its outcome is the one word it
 * prints on stdout (its other output goes to stderr, the build log). */
static int config_script(struct build *b, const char *what, const char *script,
                         const char *const *args, char outcome[static 32], struct kiln_error **err)
{
	_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT_MAX(KILN_BUF_MAX_CAPTURE);
	int rc = kiln_image_script(b, what, script, args, NULL, 0, &out, 0, err);
	size_t n = 0;
	for (const char *s = out.data ? out.data : ""; *s && *s != '\n' && n < 31; s++)
		outcome[n++] = *s;
	outcome[n] = '\0';
	return rc;
}

/* $1 the zone, $2 "1" when kiln sets /etc/localtime, $3 "1" when it writes
 * /etc/timezone. UTC needs no zone file: glibc falls back to UTC when
 * /etc/localtime is missing, so an image without tzdata stays correct. */
static const char timezone_script[] =
    "set -eu\n"
    "tz=$1\n"
    "if [ \"$2\" = 1 ]; then\n"
    "  if [ -f \"/usr/share/zoneinfo/$tz\" ]; then\n"
    "    ln -sfn \"/usr/share/zoneinfo/$tz\" /etc/localtime\n"
    "  elif [ \"$tz\" != UTC ] && [ \"$tz\" != Etc/UTC ]; then\n"
    "    if dpkg-query -W -f='${db:Status-Status}' tzdata 2>/dev/null | grep -qx installed; then\n"
    "      echo no-zone\n"
    "    else\n"
    "      echo no-tzdata\n"
    "    fi\n"
    "    exit 0\n"
    "  fi\n"
    "fi\n"
    "if [ \"$3\" = 1 ]; then printf '%s\\n' \"$tz\" > /etc/timezone; fi\n"
    "echo ok\n";

static const struct {
	const char *outcome, *why;
} timezone_failures[] = {
    {"no-tzdata", "add the tzdata package"},
    {"no-zone", "not a zone of the image's tzdata"},
};

/* Runs after the overlays and before the steps, so steps (and the image at
 * run time) see the recipe's zone. In the sandbox, like every command that
 * touches the image: a package or overlay may have replaced ln or
 * dpkg-query, and what they run can reach nothing but this build's upper
 * layer. The zone goes in as $1, never into the script text: the recipe's
 * validation already limits it to [A-Za-z0-9_+-/], but a script built from
 * it would turn any gap in that check into shell injection. */
int kiln_image_phase_timezone(struct build *b, struct kiln_error **err)
{
	const char *tz = b->r->timezone;
	kiln_image_progress(b, "timezone %s", tz);
	bool link = !overlay_kept(b, "/etc/localtime");
	bool name = !overlay_kept(b, "/etc/timezone");
	const char *args[] = {tz, link ? "1" : "0", name ? "1" : "0", NULL};
	char outcome[32];
	int rc = config_script(b, "timezone", timezone_script, args, outcome, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < ELEMENTSOF(timezone_failures); i++)
		if (strcmp(outcome, timezone_failures[i].outcome) == 0)
			return kiln_error_set_kind(
			    err, KILN_ERR_USER, ENOENT,
			    "timezone \"%s\": /usr/share/zoneinfo/%s is not in the "
			    "image (%s)",
			    tz, tz, timezone_failures[i].why);
	if (strcmp(outcome, "ok") != 0)
		return kiln_error_set(err, EBADMSG, "timezone: unexpected answer '%s'", outcome);
	/* The sandbox pins TZ=UTC so that host settings cannot change tool
	 * output; the steps get the image's own zone instead, which is part of
	 * the recipe's identity and so just as reproducible. */
	kiln_image_env_set(b, "TZ", ":/etc/localtime");
	return 0;
}

/* $1 the locale, $2 "1" when kiln writes /etc/default/locale. With the
 * locales package the locale is generated (its SUPPORTED line added to
 * /etc/locale.gen, keeping what is there, then locale-gen); its output goes
 * to stderr, the build log, and stdout carries only the outcome. The line is
 * compared through ENVIRON, not awk -v, which would interpret escapes. */
static const char locale_script[] =
    "set -eu\n"
    "loc=$1\n"
    "if [ \"$2\" = 1 ]; then\n"
    "  mkdir -p /etc/default\n"
    "  printf 'LANG=%s\\n' \"$loc\" > /etc/default/locale\n"
    "fi\n"
    "case $loc in C|C.UTF-8|C.utf8|POSIX) echo ok; exit 0 ;; esac\n"
    "if [ ! -x /usr/sbin/locale-gen ] || [ ! -f /usr/share/i18n/SUPPORTED ]; then\n"
    "  echo not-generated; exit 0\n"
    "fi\n"
    "line=$(L=\"$loc\" awk '$1 == ENVIRON[\"L\"] { print; exit }' /usr/share/i18n/SUPPORTED)\n"
    "if [ -z \"$line\" ]; then echo unknown; exit 0; fi\n"
    "touch /etc/locale.gen\n"
    "if ! grep -qxF \"$line\" /etc/locale.gen; then\n"
    "  if grep -qxF \"# $line\" /etc/locale.gen; then\n"
    "    L=\"$line\" awk '$0 == \"# \" ENVIRON[\"L\"] { print ENVIRON[\"L\"]; next } { print }' "
    "/etc/locale.gen > /tmp/locale.gen\n"
    "    cat /tmp/locale.gen > /etc/locale.gen\n"
    "  else\n"
    "    printf '%s\\n' \"$line\" >> /etc/locale.gen\n"
    "  fi\n"
    "fi\n"
    "locale-gen >&2\n"
    "echo ok\n";

/* In the sandbox for the same reasons as the time zone, the locale passed
 * as $1 for the same reason; locale-gen and localedef are the image's own
 * binaries, run over the image's own data. */
int kiln_image_phase_locale(struct build *b, struct kiln_error **err)
{
	const char *loc = b->r->locale;
	kiln_image_progress(b, "locale %s", loc);
	bool write = !overlay_kept(b, "/etc/default/locale");
	const char *args[] = {loc, write ? "1" : "0", NULL};
	char outcome[32];
	int rc = config_script(b, "locale", locale_script, args, outcome, err);
	if (rc < 0)
		return rc;
	if (strcmp(outcome, "unknown") == 0)
		return kiln_error_set_kind(
		    err, KILN_ERR_USER, ENOENT,
		    "locale \"%s\": not a locale the image can generate (not in "
		    "its /usr/share/i18n/SUPPORTED)",
		    loc);
	if (strcmp(outcome, "not-generated") == 0)
		kiln_image_logf(&b->o->hooks,
		                "    locale %s: set in /etc/default/locale but not generated: the "
		                "locales package is not in the recipe\n",
		                loc);
	else if (strcmp(outcome, "ok") != 0)
		return kiln_error_set(err, EBADMSG, "locale: unexpected answer '%s'", outcome);
	return 0;
}

/* ---- healthcheck ------------------------------------------------------------ */

/* Waits s seconds, or less when the build is cancelled or its time runs
 * out first (run() then reports which). */
static void wait_s(struct build *b, int64_t s)
{
	double left = (double)b->r->resources.timeout_s - kiln_image_elapsed_s(b);
	double t = (double)s < left ? (double)s : left;
	if (t <= 0)
		return;
	struct pollfd p = {b->o->hooks.cancel_fd, POLLIN, 0};
	if (b->o->hooks.cancel_fd >= 0) {
		poll(&p, 1, (int)(t * 1000));
		return;
	}
	struct timespec ts = {(time_t)t, (long)((t - (double)(time_t)t) * 1e9)};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* The healthcheck runs `sh -c CMD` over the finished image with no network,
 * no binds and a fresh upper layer per attempt that is thrown away: the
 * image's upper layer is only a lower layer here, so nothing the check
 * writes (a pid file, a cache, a deliberate change) can reach the image, and
 * the image is the same bytes whether it ran or not. The command is the
 * recipe's, so it is untrusted like any RUN step. */
int kiln_image_phase_healthcheck(struct build *b, struct kiln_error **err)
{
	const struct kiln_healthcheck *hc = b->r->healthcheck;
	kiln_image_progress(b, "healthcheck: %.60s%s", hc->cmd, strlen(hc->cmd) > 60 ? "..." : "");
	if (hc->start_period_s > 0) {
		kiln_image_logf(&b->o->hooks, "    waiting the start period (%" PRId64 " s)\n",
		                hc->start_period_s);
		wait_s(b, hc->start_period_s);
	}
	int64_t attempts = hc->retries + 1;
	_cleanup_free_ char *last = NULL;
	for (int64_t i = 1; i <= attempts; i++) {
		if (i > 1)
			wait_s(b, hc->interval_s);
		_cleanup_rmtree_ char *up = xasprintf("%s/healthcheck-upper", b->scratch);
		int rc = kiln_image_mkdir_sandbox(up, err);
		if (rc < 0)
			return rc;
		const char *argv[] = {"/bin/sh", "-c", hc->cmd, NULL};
		const char *layers[] = {b->upper, b->base_tree};
		/* the steps' environment: the image's zone, ENV steps */
		struct kiln_image_run r = {
		    .what = "healthcheck",
		    .layers = layers,
		    .n_layers = 2,
		    .upper = up,
		    .argv = argv,
		    .env = (const char *const *)b->env,
		    .n_env = b->n_env,
		};
		kiln_image_logf(&b->o->hooks,
		                "    healthcheck attempt %" PRId64 " of %" PRId64 "\n", i,
		                attempts);
		/* Only the check's own failure is a failed attempt: the command
		 * failed (USER) or hit its own limit (LIMIT: its timeout, the
		 * memory limit). The build's timeout (reported by run_timed when
		 * it is the shorter limit), a cancel and kiln's own failure
		 * (SYSTEM: a sandbox that cannot start) end the build. */
		bool build_limit = (double)hc->timeout_s >=
		                   (double)b->r->resources.timeout_s - kiln_image_elapsed_s(b);
		_cleanup_error_ struct kiln_error *e = NULL;
		rc = kiln_image_run_timed(b, &r, (unsigned)hc->timeout_s, &e);
		if (rc == 0) {
			kiln_image_logf(&b->o->hooks,
			                "    healthcheck attempt %" PRId64 ": ok (exit status 0)\n",
			                i);
			b->healthcheck_attempts = (unsigned)i;
			return 0;
		}
		enum kiln_error_kind k = kiln_error_kind(e);
		bool attempt_failed =
		    k == KILN_ERR_USER ||
		    (k == KILN_ERR_LIMIT && !(build_limit && kiln_image_timed_out(e)));
		if (!attempt_failed) {
			if (err && !*err)
				*err = TAKE_PTR(e);
			return rc;
		}
		const char *why = e ? e->msg : "failed";
		if (strncmp(why, "healthcheck: ", 13) == 0)
			why += 13;
		free(last);
		last = xstrdup(why);
		kiln_image_logf(&b->o->hooks, "    healthcheck attempt %" PRId64 ": %s\n", i, why);
	}
	return kiln_error_set_kind(err, KILN_ERR_USER, EIO,
	                           "healthcheck failed after %" PRId64 " attempt%s: %s", attempts,
	                           attempts == 1 ? "" : "s", last ? last : "failed");
}

int kiln_image_phase_steps(struct build *b, struct kiln_error **err)
{
	for (size_t i = 0; i < b->r->n_steps; i++) {
		int rc = run_step(b, i, err);
		if (rc < 0)
			return rc;
	}
	return 0;
}
