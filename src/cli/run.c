/* kiln run — one command in a sandbox, by hand (docs/sandbox.md). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "sandbox/sandbox.h"
#include "util/alloc.h"
#include "util/fs.h"
#include "util/parse.h"
#include "util/passwd.h"

static volatile sig_atomic_t cancel_fd = -1, cancel_sig;

static void on_signal(int sig)
{
	cancel_sig = sig;
	uint64_t one = 1;
	if (cancel_fd >= 0) {
		ssize_t w = write(cancel_fd, &one, sizeof(one));
		(void)w;
	}
}

static void on_output(void *userdata, enum kiln_sandbox_stream stream, const char *data, size_t len)
{
	(void)userdata;
	int fd = stream == KILN_SANDBOX_STDOUT ? STDOUT_FILENO : STDERR_FILENO;
	while (len > 0) {
		ssize_t w = write(fd, data, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* a closed stdout must not stop the run */
		data += w;
		len -= (size_t)w;
	}
}

static void on_warning(void *userdata, unsigned elapsed_s)
{
	(void)userdata;
	cli_errorf("run: still running after %u seconds", elapsed_s);
}

static int parse_mb(const char *s, uint64_t *ret)
{
	uint64_t v;
	if (kiln_parse_u64(s, 10, 1, UINT64_MAX >> 20, &v) < 0)
		return -1;
	*ret = v << 20;
	return 0;
}

/* Reads etc/<name> of the root the sandbox will see: the top-most layer
 * that has it (the writable upper directory first). The layers are
 * untrusted trees and kiln is host root here: the path resolves inside the
 * layer (RESOLVE_IN_ROOT — a planted etc/passwd -> /etc/shadow reads the
 * layer's own file, not the host's), and only a regular file is read
 * (O_NONBLOCK + the type check: a FIFO there would hang kiln forever).
 * NULL when no layer has one. */
static char *read_image_file(const struct kiln_sandbox_spec *s, const char *rel)
{
	for (size_t i = 0; i <= s->n_layers; i++) {
		const char *dir = i == 0 ? s->upper_dir : s->layers[i - 1];
		if (!dir)
			continue;
		_cleanup_close_ int d = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (d < 0)
			continue;
		_cleanup_close_ int fd =
		    kiln_open_in_root(d, rel, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
		if (fd == -ENOENT)
			continue;
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
			return NULL; /* also an overlayfs whiteout: deleted above */
		char *data = NULL;
		if (kiln_read_fd(fd, 16u << 20, &data, NULL, NULL) < 0)
			return NULL;
		return data;
	}
	return NULL;
}

/* --user USER[:GROUP], each a number or a name looked up in the image's
 * /etc/passwd and /etc/group (never the host's: the same name can mean
 * another id there). A name also gives the primary group and HOME. */
static int resolve_user(const struct kiln_sandbox_spec *s, const char *arg, uid_t *uid, gid_t *gid,
                        char **home)
{
	_cleanup_free_ char *buf = xstrdup(arg);
	char *group = strchr(buf, ':');
	if (group)
		*group++ = '\0';
	if (!buf[0] || (group && !group[0])) {
		cli_errorf("run: --user: expected USER[:GROUP]");
		return -1;
	}
	int u, g;
	if (kiln_parse_int(buf, 0, 65535, &u) == 0) {
		g = u;
	} else {
		_cleanup_free_ char *passwd = read_image_file(s, "etc/passwd");
		if (!passwd || !kiln_passwd_lookup(passwd, buf, &u, &g, home)) {
			cli_errorf("run: --user: no user '%s' in the image's /etc/passwd", buf);
			return -1;
		}
	}
	if (group && kiln_parse_int(group, 0, 65535, &g) < 0) {
		_cleanup_free_ char *groups = read_image_file(s, "etc/group");
		if (!groups || !kiln_passwd_lookup(groups, group, &g, NULL, NULL)) {
			cli_errorf("run: --user: no group '%s' in the image's /etc/group", group);
			return -1;
		}
	}
	*uid = (uid_t)u, *gid = (gid_t)g;
	return 0;
}

struct arrays {
	const char **layers, **env;
	struct kiln_sandbox_bind *binds;
	char **bind_strs;
	size_t n_layers, n_env, n_binds;
};

static void arrays_free(struct arrays *a)
{
	free(a->layers);
	free(a->env);
	free(a->binds);
	for (size_t i = 0; i < a->n_binds; i++)
		free(a->bind_strs[i]);
	free(a->bind_strs);
}

static int parse_bind(struct arrays *a, const char *arg)
{
	char *s = xstrdup(arg);
	char *dst = strchr(s, ':');
	bool ro = false;
	if (!dst) {
		free(s);
		return -1;
	}
	*dst++ = '\0';
	char *mode = strchr(dst, ':');
	if (mode) {
		*mode++ = '\0';
		if (strcmp(mode, "ro") == 0)
			ro = true;
		else if (strcmp(mode, "rw") != 0) {
			free(s);
			return -1;
		}
	}
	a->binds = xreallocarray(a->binds, a->n_binds + 1, sizeof(*a->binds));
	a->bind_strs = xreallocarray(a->bind_strs, a->n_binds + 1, sizeof(char *));
	a->binds[a->n_binds] = (struct kiln_sandbox_bind){s, dst, ro};
	a->bind_strs[a->n_binds++] = s;
	return 0;
}

static int run(int argc, char **argv)
{
	enum { OPT_PIDS = 256, OPT_TMPFS, OPT_WARNING, OPT_NO_SYS, OPT_EPOCH, OPT_STATS };
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"root", required_argument, NULL, 'r'},
	    {"rw", required_argument, NULL, 'w'},
	    {"read-only", no_argument, NULL, 'R'},
	    {"bind", required_argument, NULL, 'b'},
	    {"network", required_argument, NULL, 'n'},
	    {"memory", required_argument, NULL, 'm'},
	    {"cpus", required_argument, NULL, 'c'},
	    {"timeout", required_argument, NULL, 't'},
	    {"env", required_argument, NULL, 'e'},
	    {"user", required_argument, NULL, 'u'},
	    {"workdir", required_argument, NULL, 'd'},
	    {"pids", required_argument, NULL, OPT_PIDS},
	    {"tmpfs-size", required_argument, NULL, OPT_TMPFS},
	    {"warning", required_argument, NULL, OPT_WARNING},
	    {"no-sys", no_argument, NULL, OPT_NO_SYS},
	    {"source-date-epoch", required_argument, NULL, OPT_EPOCH},
	    {"stats", no_argument, NULL, OPT_STATS},
	    {},
	};
	struct kiln_sandbox_spec spec;
	kiln_sandbox_spec_init(&spec);
	_cleanup_(arrays_free) struct arrays a = {0};
	int c, v;
	uint64_t u;
	const char *user = NULL;
	bool stats = false;
	_cleanup_free_ char *home = NULL, *home_env = NULL;
	int64_t i64;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_run); return KILN_EXIT_OK;
		case 'r':
			a.layers = xreallocarray(a.layers, a.n_layers + 1, sizeof(char *));
			a.layers[a.n_layers++] = optarg;
			break;
		case 'w': spec.upper_dir = optarg; break;
		case 'R': spec.read_only = true; break;
		case 'b':
			if (parse_bind(&a, optarg) < 0)
				return cli_usage_error(&kiln_cmd_run,
				                       "--bind: expected SRC:DST[:ro]");
			break;
		case 'n':
			if (strcmp(optarg, "host") != 0 && strcmp(optarg, "none") != 0)
				return cli_usage_error(&kiln_cmd_run,
				                       "--network: 'host' or 'none'");
			spec.host_network = strcmp(optarg, "host") == 0;
			break;
		case 'm':
			if (parse_mb(optarg, &spec.memory_bytes) < 0)
				return cli_usage_error(&kiln_cmd_run, "--memory: a size in MiB");
			break;
		case 'c':
			if (kiln_parse_int(optarg, 1, 1024, &v) < 0)
				return cli_usage_error(&kiln_cmd_run, "--cpus: 1 to 1024");
			spec.cpus = v;
			break;
		case 't':
			if (kiln_parse_int(optarg, 1, 7 * 86400, &v) < 0)
				return cli_usage_error(&kiln_cmd_run,
				                       "--timeout: seconds, at least 1");
			spec.timeout_s = (unsigned)v;
			break;
		case OPT_WARNING:
			if (kiln_parse_int(optarg, 1, 7 * 86400, &v) < 0)
				return cli_usage_error(&kiln_cmd_run,
				                       "--warning: seconds, at least 1");
			spec.warning_s = (unsigned)v;
			break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				return cli_usage_error(&kiln_cmd_run, "--env: expected KEY=VALUE");
			a.env = xreallocarray(a.env, a.n_env + 1, sizeof(char *));
			a.env[a.n_env++] = optarg;
			break;
		case 'u': user = optarg; break;
		case 'd': spec.workdir = optarg; break;
		case OPT_PIDS:
			if (kiln_parse_u64(optarg, 10, 8, 1 << 22, &u) < 0)
				return cli_usage_error(&kiln_cmd_run, "--pids: 8 or more");
			spec.pids_max = u;
			break;
		case OPT_TMPFS:
			if (parse_mb(optarg, &spec.tmpfs_bytes) < 0)
				return cli_usage_error(&kiln_cmd_run,
				                       "--tmpfs-size: a size in MiB");
			break;
		case OPT_NO_SYS: spec.no_sys = true; break;
		case OPT_STATS: stats = true; break;
		case OPT_EPOCH:
			if (kiln_parse_i64(optarg, 0, INT64_MAX, &i64) < 0)
				return cli_usage_error(&kiln_cmd_run,
				                       "--source-date-epoch: seconds");
			spec.source_date_epoch = i64;
			break;
		default: return cli_option_error(&kiln_cmd_run, "+h", argv);
		}
	}
	if (optind >= argc)
		return cli_usage_error(&kiln_cmd_run, "expected a command after --");
	if (a.n_layers == 0)
		return cli_usage_error(&kiln_cmd_run, "expected at least one --root DIR");
	spec.layers = a.layers;
	spec.n_layers = a.n_layers;
	if (user && resolve_user(&spec, user, &spec.uid, &spec.gid, &home) < 0)
		return KILN_EXIT_USAGE;
	bool have_home = false;
	for (size_t i = 0; i < a.n_env; i++)
		have_home |= strncmp(a.env[i], "HOME=", 5) == 0;
	if (home && !have_home) {
		home_env = xasprintf("HOME=%s", home);
		a.env = xreallocarray(a.env, a.n_env + 1, sizeof(char *));
		a.env[a.n_env++] = home_env;
	}
	spec.binds = a.binds;
	spec.n_binds = a.n_binds;
	spec.env = a.env;
	spec.n_env = a.n_env;
	spec.argv = (const char *const *)(argv + optind);
	spec.on_output = on_output;
	spec.on_warning = on_warning;

	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_sandbox_spec_validate(&spec, &err) < 0)
		return cli_usage_error(&kiln_cmd_run, "%s", err->msg);

	struct kiln_sandbox_canceller *canceller = NULL;
	if (kiln_sandbox_canceller_new(&canceller, &err) < 0) {
		cli_errorf("run: %s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	spec.cancel_fd = kiln_sandbox_canceller_fd(canceller);
	/* Ctrl-C or a kill of kiln run ends the sandbox cleanly (cgroups
	 * removed) instead of leaving it to PR_SET_PDEATHSIG. */
	cancel_fd = spec.cancel_fd;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
	for (size_t i = 0; i < ELEMENTSOF(sigs); i++)
		sigaction(sigs[i], &sa, NULL);

	struct kiln_sandbox_result res;
	int r = kiln_sandbox_run(&spec, &res, &err);
	cancel_fd = -1;
	kiln_sandbox_canceller_free(canceller);
	if (r < 0) {
		cli_errorf("run: %s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	if (res.cancelled)
		return 128 + (cancel_sig ? cancel_sig : SIGTERM);
	if (res.timed_out || res.oom_killed || res.term_signal || stats) {
		_cleanup_free_ char *d = kiln_sandbox_result_describe(&res);
		if (stats)
			cli_errorf(
			    "run: command %s; wall %.3f s, cpu %.3f s, peak memory %.1f MiB%s%s", d,
			    (double)res.wall_usec / 1e6, (double)res.cpu_usec / 1e6,
			    (double)res.peak_memory / (1024.0 * 1024.0),
			    res.stdout_truncated ? ", stdout truncated" : "",
			    res.stderr_truncated ? ", stderr truncated" : "");
		else
			cli_errorf("run: command %s", d);
	}
	if (res.term_signal)
		return 128 + res.term_signal;
	return res.exit_code;
}

const struct kiln_command kiln_cmd_run = {
    .name = "run",
    .summary = "run a command in the build sandbox",
    .usage = "Usage: kiln run [OPTIONS] --root DIR [--root DIR]... -- COMMAND [ARGS]...\n"
             "\n"
             "Runs COMMAND in kiln's build sandbox (docs/sandbox.md): its own user, mount,\n"
             "PID, network, IPC, UTS and cgroup namespaces, overlay root, fresh /proc,\n"
             "minimal /dev, tmpfs /tmp, seccomp, no network. Needs root.\n"
             "\n"
             "Options:\n"
             "  --root DIR           a read-only root layer; repeat for more (top first)\n"
             "  --rw DIR             writable overlay upper layer (changes land in DIR)\n"
             "  --read-only          whole root read-only (writes only to tmpfs)\n"
             "  --bind SRC:DST[:ro]  bind host SRC at DST (nosuid,nodev; read-write\n"
             "                       unless :ro); the sandbox writes as host uid 100000+\n"
             "  --network host       share the host network (default: none, only lo)\n"
             "  --memory MB          memory limit (default 8192)\n"
             "  --cpus N             CPU quota in CPUs (default 4)\n"
             "  --pids N             process limit (default 4096)\n"
             "  --tmpfs-size MB      size of /tmp, /var/tmp, /dev/shm (default 1024)\n"
             "  --timeout S          kill everything after S seconds (default 1200)\n"
             "  --warning S          warn on stderr after S seconds (default 900)\n"
             "  --env K=V            set an environment variable (repeatable)\n"
             "  --source-date-epoch N  export SOURCE_DATE_EPOCH=N\n"
             "  --user USER[:GROUP]  run as this user inside (default root); names are\n"
             "                       looked up in the image's /etc/passwd, /etc/group\n"
             "  --workdir D          working directory inside (default /)\n"
             "  --no-sys             do not mount /sys\n"
             "  --stats              print the outcome, wall and CPU time and peak memory\n"
             "                       on stderr when the command ends\n"
             "\n"
             "Exit status: COMMAND's exit status; 128+N when it was killed by signal N\n"
             "(137 after a timeout or when out of memory, with a message on stderr;\n"
             "128+N when kiln run itself got signal N); 1 when the sandbox could not be\n"
             "set up or COMMAND could not be executed; 2 usage error.\n",
    .run = run,
};
