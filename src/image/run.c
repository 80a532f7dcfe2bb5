/* Running commands for the pipeline: in the sandbox (everything that touches
 * an image tree) or, for kiln-written files only, as host tools. */
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "image/internal.h"
#include "util/alloc.h"

extern char **environ;

void kiln_image_logf(const struct kiln_image_hooks *h, const char *fmt, ...)
{
	if (!h || !h->log)
		return;
	va_list ap;
	va_start(ap, fmt);
	_cleanup_free_ char *m = xvasprintf(fmt, ap);
	va_end(ap);
	h->log(h->userdata, m, strlen(m));
}

struct out_ctx {
	const struct kiln_image_hooks *h;
	const struct kiln_image_run *r;
	struct kiln_buf line; /* partial stderr line, to pick out "E: " errors */
};

static void on_output(void *ud, enum kiln_sandbox_stream stream, const char *data, size_t len)
{
	struct out_ctx *c = ud;
	if (stream == KILN_SANDBOX_STDOUT && c->r->capture) {
		kiln_buf_append(c->r->capture, data, len);
		return;
	}
	if (c->h && c->h->log)
		c->h->log(c->h->userdata, data, len);
	if (stream != KILN_SANDBOX_STDERR || !c->r->errors)
		return;
	for (size_t i = 0; i < len; i++) {
		if (data[i] != '\n') {
			kiln_buf_putc(&c->line, data[i]); /* kept up to its ceiling */
			continue;
		}
		if (c->line.len > 3 && strncmp(c->line.data, "E: ", 3) == 0) {
			if (c->r->errors->len)
				kiln_buf_puts(c->r->errors, "; ");
			kiln_buf_append(c->r->errors, c->line.data + 3, c->line.len - 3);
		}
		kiln_buf_reset(&c->line);
	}
}

static void on_warning(void *ud, unsigned elapsed)
{
	struct out_ctx *c = ud;
	if (c->h && c->h->warning)
		c->h->warning(c->h->userdata, elapsed);
}

int kiln_image_sandbox(const struct kiln_image_hooks *h, const struct kiln_image_run *r,
                       struct kiln_error **err)
{
	static const char *const host_root[] = {"/"};
	struct kiln_sandbox_spec spec;
	kiln_sandbox_spec_init(&spec);
	if (r->layers) {
		spec.layers = r->layers;
		spec.n_layers = r->n_layers;
		spec.upper_dir = r->upper;
	} else {
		/* Host tools over an image tree: the host's root read-only, so the
		 * tool sees the tree's owners through the id mapping (100000 as 0)
		 * and can write nothing but the bound output directory. */
		spec.layers = host_root;
		spec.n_layers = 1;
		spec.read_only = true;
	}
	spec.binds = r->binds;
	spec.n_binds = r->n_binds;
	spec.argv = r->argv;
	spec.env = r->env;
	spec.n_env = r->n_env;
	spec.uid = r->uid;
	spec.gid = r->gid;
	spec.workdir = r->workdir;
	spec.host_network = r->network;
	spec.timeout_s = r->timeout_s;
	spec.memory_bytes = r->memory_bytes;
	spec.cpus = r->cpus;
	spec.warning_s = r->warning_s ? r->warning_s : r->timeout_s + 1;
	spec.source_date_epoch = r->epoch;
	spec.cancel_fd = h ? h->cancel_fd : -1;
	struct out_ctx oc = {h, r, KILN_BUF_INIT_MAX(KILN_BUF_MAX_LINE)};
	spec.on_output = on_output;
	spec.on_warning = on_warning;
	spec.userdata = &oc;

	struct kiln_sandbox_result res;
	int rc = kiln_sandbox_run(&spec, &res, err);
	kiln_buf_free(&oc.line);
	if (rc < 0) {
		kiln_error_prefix(err, "%s", r->what);
		return rc;
	}
	if (!res.failed)
		return 0;
	/* The kind is the sandbox's verdict (the command's fault, a limit, a
	 * cancel); the code only says which, for the message's readers. */
	if (res.cancelled)
		return kiln_error_set_kind(err, res.kind, ECANCELED, "%s: cancelled", r->what);
	if (res.timed_out)
		return kiln_error_set_kind(err, res.kind, ETIME, "%s: timed out after %u seconds",
		                           r->what, res.timeout_s);
	_cleanup_free_ char *d = kiln_sandbox_result_describe(&res);
	if (r->errors && r->errors->len)
		return kiln_error_set_kind(err, res.kind, EIO, "%s: %s (%s)", r->what,
		                           r->errors->data, d);
	return kiln_error_set_kind(err, res.kind, EIO, "%s: %s", r->what, d);
}

bool kiln_image_timed_out(const struct kiln_error *e)
{
	return e && e->kind == KILN_ERR_LIMIT && e->code == ETIME;
}

int kiln_image_host_cmd(const struct kiln_image_hooks *h, const char *const *argv,
                        const char *const *env, struct kiln_buf *capture, struct kiln_error **err)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return kiln_error_set_errno(err, errno, "pipe");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], STDERR_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	/* LC_ALL=C and TZ=UTC for every tool: dates and sort orders must not
	 * depend on the host's locale. */
	const char *base_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "TZ=UTC",
	                          "HOME=/root"};
	size_t ne = 0;
	while (env && env[ne])
		ne++;
	const char **envp = xcalloc(ELEMENTSOF(base_env) + ne + 1, sizeof(char *));
	memcpy(envp, base_env, sizeof(base_env));
	for (size_t i = 0; i < ne; i++)
		envp[ELEMENTSOF(base_env) + i] = env[i];
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, (char *const *)envp);
	posix_spawn_file_actions_destroy(&fa);
	free(envp);
	close(pfd[1]);
	if (rc != 0) {
		close(pfd[0]);
		return kiln_error_set_errno(err, rc, "%s", argv[0]);
	}
	/* kept for the error message (its last line), up to its ceiling */
	_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT_MAX(KILN_BUF_MAX_TOOL_OUTPUT);
	char buf[8192];
	for (;;) {
		ssize_t n = read(pfd[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (capture)
			kiln_buf_append(capture, buf, (size_t)n);
		kiln_buf_append(&out, buf, (size_t)n);
		if (!capture && h && h->log)
			h->log(h->userdata, buf, (size_t)n);
	}
	close(pfd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		/* The tool's last line is usually the useful one. */
		while (out.len && out.data[out.len - 1] == '\n')
			out.data[--out.len] = '\0';
		const char *last = out.data ? strrchr(out.data, '\n') : NULL;
		last = last ? last + 1 : (out.data ? out.data : "");
		rc = kiln_error_set(err, EIO, "%s failed (%s %d)%s%s", argv[0],
		                    WIFEXITED(status) ? "exit status" : "signal",
		                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
		                    *last ? ": " : "", last);
		return rc;
	}
	return 0;
}

int kiln_image_mkdir_sandbox(const char *path, struct kiln_error **err)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: cannot create", path);
	if (chown(path, KILN_IMAGE_ID_BASE, KILN_IMAGE_ID_BASE) < 0)
		return kiln_error_set_errno(err, errno, "%s: cannot chown", path);
	return 0;
}

char *kiln_image_random_id(void)
{
	uint64_t r[2] = {0, 0};
	if (getrandom(r, sizeof(r), 0) != sizeof(r))
		r[0] = (uint64_t)getpid() ^ (uint64_t)time(NULL);
	char hex[33];
	kiln_hex_encode((const uint8_t *)r, sizeof(r), hex);
	return xstrdup(hex);
}
