/* sandbox/sandbox.h — run one untrusted command in an isolated sandbox.
 *
 * Owns: namespaces (user, mount, PID, network, IPC, UTS, cgroup), the root
 * file system (overlayfs or a read-only bind, entered with pivot_root), /proc
 * masking, a minimal /dev, tmpfs mounts, bind mounts, seccomp, capabilities,
 * rlimits, cgroup limits (v1 and v2), the PID-1 reaper inside, timeouts,
 * cancellation, output capture and cleanup. One entry point: a spec in, a
 * result out, stdout/stderr streamed through a callback while it runs.
 *
 * Must not: print (errors go to struct kiln_error), read recipes, touch the
 * network itself, or leave anything behind (mounts, cgroups, processes,
 * scratch directories) after kiln_sandbox_run() returns. The threat model and
 * the reason for every measure are in docs/sandbox.md.
 *
 * kiln_sandbox_run() must be called as root on the host. It is synchronous
 * and may be called from several threads at once (each call owns its own
 * sandbox); the calling thread must stay alive until it returns (the sandbox
 * is killed when the thread that started it exits: PR_SET_PDEATHSIG). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/error.h"

enum kiln_sandbox_stream {
	KILN_SANDBOX_STDOUT = 1,
	KILN_SANDBOX_STDERR = 2,
};

struct kiln_sandbox_bind {
	const char *src; /* host path, absolute */
	const char *dst; /* path inside the sandbox, absolute; created if missing */
	bool read_only;
};

/* Called from the thread running kiln_sandbox_run(). data is not NUL-terminated. */
typedef void (*kiln_sandbox_output_fn)(void *userdata, enum kiln_sandbox_stream stream,
                                       const char *data, size_t len);
/* Called once when the command has run for warning_s seconds. */
typedef void (*kiln_sandbox_warning_fn)(void *userdata, unsigned elapsed_s);

struct kiln_sandbox_spec {
	/* Root file system: lower layers, top first (at least one). With one layer
	 * and no upper_dir the layer is bind-mounted read-only; otherwise overlayfs. */
	const char *const *layers;
	size_t n_layers;
	const char *upper_dir; /* writable upper layer (overlayfs), or NULL */
	const char *work_dir;  /* overlay workdir on upper's file system; NULL: a
	                        * temporary sibling of upper_dir, removed afterwards */
	bool read_only;        /* whole root read-only; writes only to tmpfs mounts */

	const struct kiln_sandbox_bind *binds;
	size_t n_binds;

	const char *const *argv; /* command; argv[0] is searched in PATH when it has no '/' */
	const char *const *env;  /* extra "K=V" entries (override the defaults), or NULL */
	size_t n_env;
	int64_t source_date_epoch; /* exported as SOURCE_DATE_EPOCH when >= 0 */
	uid_t uid;                 /* user inside the sandbox (0 = the sandbox's root) */
	gid_t gid;
	const char *workdir;  /* inside the sandbox; NULL: "/" */
	const char *hostname; /* NULL: "kiln" */

	bool host_network; /* share the host's network namespace (package fetch only) */
	bool no_sys;       /* do not mount /sys at all (default: read-only sysfs) */

	/* User namespace mapping: ids 0..id_count-1 inside -> id_base.. on the host. */
	uint32_t id_base;  /* 0: 100000 */
	uint32_t id_count; /* 0: 65536 */

	/* Limits; 0 selects the default. */
	uint64_t memory_bytes; /* 8 GiB */
	double cpus;           /* 4 */
	uint64_t pids_max;     /* 4096 */
	uint64_t tmpfs_bytes;  /* size of /tmp and /var/tmp each: 1 GiB */
	uint64_t nofile;       /* RLIMIT_NOFILE soft and hard: 4096 */
	unsigned timeout_s;    /* 1200 */
	unsigned warning_s;    /* 900 (not called when >= timeout_s) */
	size_t output_limit;   /* bytes per stream passed to on_output: 64 MiB */

	kiln_sandbox_output_fn on_output; /* NULL: output is discarded */
	kiln_sandbox_warning_fn on_warning;
	void *userdata;

	/* Cancellation: the sandbox is killed as soon as this fd becomes readable
	 * (-1: none, as set by kiln_sandbox_spec_init()). See
	 * kiln_sandbox_canceller_*. */
	int cancel_fd;
};

struct kiln_sandbox_result {
	int exit_code;   /* the command's exit status, or -1 when killed by a signal */
	int term_signal; /* signal that killed the command, or 0 */
	bool oom_killed; /* the memory limit was hit and the kernel killed a process */
	bool timed_out;
	bool cancelled;
	bool stdout_truncated, stderr_truncated;
	uint64_t stdout_bytes, stderr_bytes; /* produced (not only the passed part) */
	uint64_t wall_usec;
	uint64_t cpu_usec;     /* user + system of every process in the sandbox */
	uint64_t peak_memory;  /* bytes, from the cgroup (0 when unknown) */
	uint64_t memory_limit; /* bytes: the memory limit the run had */
	unsigned timeout_s;    /* the effective timeout, for messages */
	/* The outcome, decided here where it is known: failed is false only
	 * for exit status 0; then kind says whose fault it was — USER (the
	 * command exited non-zero or died of a signal), LIMIT (the timeout, or
	 * the memory limit's OOM kill before it failed), CANCELLED. Never SYSTEM: a sandbox kiln
	 * could not set up is kiln_sandbox_run()'s return value. */
	bool failed;
	enum kiln_error_kind kind;
};

/* Fills *spec with the defaults (everything 0/NULL, cancel_fd -1, epoch -1). */
void kiln_sandbox_spec_init(struct kiln_sandbox_spec *spec);

/* Checks a spec without running anything: paths absolute, no ':' or '\\' in
 * layers, binds' dst not "/" or under /proc, /dev, /sys, argv non-empty, ... */
int kiln_sandbox_spec_validate(const struct kiln_sandbox_spec *spec, struct kiln_error **err);

/* Runs spec->argv in a new sandbox and waits for it (and everything it
 * started) to end. Returns 0 when the command ran, whatever its outcome (see
 * *ret); -errno when the sandbox could not be set up (nothing ran, or
 * exec failed — e.g. "ls: No such file or directory"). */
int kiln_sandbox_run(const struct kiln_sandbox_spec *spec, struct kiln_sandbox_result *ret,
                     struct kiln_error **err);

/* "exited with status 2", "killed for exceeding the memory limit of 64 MB
 * (out of memory, signal 9)",
 * "timed out after 20 seconds", "cancelled". Caller frees. */
char *kiln_sandbox_result_describe(const struct kiln_sandbox_result *r);

/* Removes what a kiln killed with SIGKILL left behind: cgroups under kiln/
 * whose owning process is gone, and stale overlay work directories are the
 * caller's (they live beside upper_dir). Called by kiln_sandbox_run() too. */
void kiln_sandbox_cleanup_stale(void);

/* A cancellation handle: kiln_sandbox_cancel() may be called from any thread
 * (or a signal handler) and makes the run using canceller_fd() end within
 * milliseconds with result.cancelled set. */
struct kiln_sandbox_canceller;
int kiln_sandbox_canceller_new(struct kiln_sandbox_canceller **ret, struct kiln_error **err);
int kiln_sandbox_canceller_fd(const struct kiln_sandbox_canceller *c);
void kiln_sandbox_cancel(struct kiln_sandbox_canceller *c);
struct kiln_sandbox_canceller *kiln_sandbox_canceller_free(struct kiln_sandbox_canceller *c);

/* The sandbox's host id range (id_base/id_count's defaults) against an
 * /etc/subuid or /etc/subgid text (name:start:count per line): the users
 * whose subordinate range overlaps it, "alice (100000-165535)" joined by
 * ", ", or NULL when none does. Debian's useradd gives the first regular
 * user exactly 100000:65536, and that user could then signal and ptrace
 * every build's processes (docs/sandbox.md, "Known limits"). Malformed and
 * comment lines are skipped. */
char *kiln_sandbox_subid_overlaps(const char *text, size_t len);
