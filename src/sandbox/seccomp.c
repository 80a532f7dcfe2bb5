/* sandbox/seccomp.c — the system call filter every sandboxed process runs under.
 *
 * A deny list (default allow) of the calls a build step never needs and that
 * are the usual doors into the kernel or out of the namespaces. Built once
 * per process with libseccomp and exported as BPF, so the child only has to
 * call seccomp(2) on a ready program (it must not allocate; see internal.h). */
#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <unistd.h>

#include "sandbox/internal.h"
#include "util/alloc.h"

/* Denied with EPERM, each for the attack named beside it. */
static const char *const denied[] = {
	/* Kernel keyrings are not namespaced: keys of the host or of other
	 * builds could be read or planted. */
	"keyctl", "add_key", "request_key",
	/* eBPF and perf: large kernel attack surface, info leaks (KASLR). */
	"bpf", "perf_event_open",
	/* Replacing or extending the running kernel. */
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	/* open_by_handle_at walks from a file handle to any inode on the file
	 * system, ignoring the mount/chroot (the "shocker" container escape). */
	"open_by_handle_at", "name_to_handle_at",
	/* userfaultfd makes kernel races (use-after-free windows) reliable. */
	"userfaultfd",
	/* Reading or writing another process's memory: init holds a copy of
	 * kiln's memory; other sandbox processes are not ours to tamper with. */
	"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
	/* Rearranging mounts after setup: unmounting a mask over /proc/kcore,
	 * remounting a read-only bind read-write, or building a new mount
	 * namespace where masks are absent. */
	"mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
	"fsmount", "fspick", "mount_setattr",
	/* New namespaces reopen everything above (a new user namespace grants
	 * a full capability set over the namespaces it creates). */
	"unshare", "setns",
	/* Host-wide state. */
	"swapon", "swapoff", "reboot", "syslog", "acct", "quotactl", "quotactl_fd", "settimeofday",
	"clock_settime", "clock_adjtime", "iopl", "ioperm", "uselib", "vhangup", "lookup_dcookie",
	/* io_uring bypasses seccomp for the operations it performs and has been
	 * a steady source of kernel privilege escalations. */
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	/* fanotify/nfsservctl: host-level facilities. */
	"fanotify_init", "nfsservctl",
};

/* clone(2) flags that would create namespaces (same reason as unshare). */
static const uint64_t clone_ns_flags[] = {
	CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,    CLONE_NEWNET,
	CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP,
};

static struct sock_fprog main_prog, personality_prog;
static int build_errno;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int export_bpf(scmp_filter_ctx ctx, struct sock_fprog *prog)
{
	_cleanup_close_ int fd = memfd_create("kiln-seccomp", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = seccomp_export_bpf(ctx, fd);
	if (r < 0)
		return r;
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) != 0)
		return -EINVAL;
	struct sock_filter *f = xmalloc((size_t)size);
	if (pread(fd, f, (size_t)size, 0) != size) {
		free(f);
		return -EIO;
	}
	prog->filter = f; /* kept for the life of the process */
	prog->len = (unsigned short)((size_t)size / sizeof(struct sock_filter));
	return 0;
}

static int build_main(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return -ENOMEM;
	/* libseccomp's default bad-arch action kills: a 32-bit int 0x80 or x32
	 * system call would otherwise reach the kernel under numbers this deny
	 * list does not name. */
	int r = 0;
	for (size_t i = 0; i < ELEMENTSOF(denied) && r >= 0; i++) {
		int nr = seccomp_syscall_resolve_name(denied[i]);
		if (nr == __NR_SCMP_ERROR || nr < 0)
			continue; /* not on this architecture */
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
	}
	/* TIOCSTI pushes characters into a terminal's input queue (typing
	 * commands into the shell that started kiln); TIOCLINUX can do the same
	 * on a virtual console. The kernel compares only the low 32 bits of the
	 * request, so the filter must too (CVE-2019-10063: bubblewrap and flatpak
	 * compared 64 bits and were bypassed with the high bits set). */
	static const unsigned long tty_ioctls[] = { TIOCSTI, TIOCLINUX };
	for (size_t i = 0; i < ELEMENTSOF(tty_ioctls) && r >= 0; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
				     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, tty_ioctls[i]));
	for (size_t i = 0; i < ELEMENTSOF(clone_ns_flags) && r >= 0; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
				     SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]));
	/* clone3 passes its flags in memory, where a filter cannot look; ENOSYS
	 * makes libc fall back to clone(2), whose flags the rules above check. */
	if (r >= 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* The filter must not be lifted by a setuid exec either way; kiln sets
	 * no_new_privs itself, so libseccomp need not. */
	if (r >= 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (r >= 0)
		r = export_bpf(ctx, &main_prog);
	seccomp_release(ctx);
	return r;
}

/* personality(2): only the harmless values (PER_LINUX, PER_LINUX32, UNAME26
 * and the 0xffffffff query) pass. ADDR_NO_RANDOMIZE would switch off ASLR for
 * what runs next and READ_IMPLIES_EXEC makes every readable page executable.
 * libseccomp cannot express "arg not in set", so this one is written by hand
 * as a second filter; the kernel applies both. Other architectures (which the
 * main filter kills) are let through here. */
static struct sock_filter personality_insns[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_personality, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	/* The kernel's argument is an unsigned int: the low word (little endian). */
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PER_LINUX, 5, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PER_LINUX32, 4, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, UNAME26, 3, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PER_LINUX32 | UNAME26, 2, 0),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, 1, 0),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static void build_once(void)
{
	personality_prog.filter = personality_insns;
	personality_prog.len = ELEMENTSOF(personality_insns);
	int r = build_main();
	build_errno = r < 0 ? -r : 0;
}

int sb_seccomp_get(const struct sock_fprog **ret_main, const struct sock_fprog **ret_personality,
		   struct kiln_error **err)
{
#if !defined(__x86_64__)
#error "the personality filter is written for x86_64 only"
#endif
	pthread_once(&once, build_once);
	if (build_errno)
		return kiln_error_set_errno(err, build_errno, "cannot build the seccomp filter");
	*ret_main = &main_prog;
	*ret_personality = &personality_prog;
	return 0;
}
