/* sandbox/seccomp-gen.c — build-time generator of the main seccomp filter.
 *
 * Runs during the build (meson custom_target): libseccomp compiles the deny
 * list below into BPF, written out as a C array that seccomp.c includes.
 * Doing it at build time keeps libseccomp's syscall tables and argument
 * handling as the source of truth while costing nothing per sandbox (it was
 * ~0.5 ms per run, a twentieth of the whole start-to-exit time). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* Denied with EPERM, each for the attack named beside it. */
static const char *const denied[] = {
    /* Kernel keyrings are not namespaced: keys of the host or of other
     * builds could be read or planted. */
    "keyctl",
    "add_key",
    "request_key",
    /* eBPF and perf: large kernel attack surface, info leaks (KASLR). */
    "bpf",
    "perf_event_open",
    /* Replacing or extending the running kernel. */
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    /* open_by_handle_at walks from a file handle to any inode on the file
     * system, ignoring the mount/chroot (the "shocker" container escape). */
    "open_by_handle_at",
    "name_to_handle_at",
    /* userfaultfd makes kernel races (use-after-free windows) reliable. */
    "userfaultfd",
    /* Reading or writing another process's memory: init holds a copy of
     * kiln's memory; other sandbox processes are not ours to tamper with. */
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    /* Rearranging mounts after setup: unmounting a mask over /proc/kcore,
     * remounting a read-only bind read-write, or building a new mount
     * namespace where masks are absent. */
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    /* New namespaces reopen everything above (a new user namespace grants
     * a full capability set over the namespaces it creates). */
    "unshare",
    "setns",
    /* Host-wide state. */
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "iopl",
    "ioperm",
    "uselib",
    "vhangup",
    "lookup_dcookie",
    /* io_uring bypasses seccomp for the operations it performs and has been
     * a steady source of kernel privilege escalations. */
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    /* fanotify/nfsservctl: host-level facilities. */
    "fanotify_init",
    "nfsservctl",
};

/* clone(2) flags that would create namespaces (same reason as unshare). */
static const uint64_t clone_ns_flags[] = {
    CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,    CLONE_NEWNET,
    CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP,
};

/* Socket families a build never needs, denied as if the kernel lacked them
 * (EAFNOSUPPORT, which programs already handle: shadow's useradd goes on
 * without audit, for one, where EPERM makes it abort). A build keeps
 * AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK with NETLINK_ROUTE
 * (getifaddrs, ip). Everything else is denied by value: the numbers below
 * AF_NETLINK that are not allowed, and every number above it:
 *  - AF_VSOCK is not isolated by the network namespace: a sandbox shared the
 *    host's vsock port space, which on a VM reaches the hypervisor's agents;
 *  - AF_PACKET, AF_BLUETOOTH, AF_CAN, AF_TIPC, AF_RDS, AF_ALG, AF_XDP, AF_KEY,
 *    AF_X25, AF_AX25, ...: raw links, host radios and protocol modules that a
 *    build has no use for and that are a steady source of kernel holes
 *    (AF_PACKET CVE-2017-7308, CVE-2020-14386; AF_CAN CVE-2021-3609; AF_RDS
 *    CVE-2019-11815; AF_VSOCK CVE-2021-26708); a socket() of one also loads
 *    its module on demand.
 * The comparisons are on the full 64-bit argument, so a value with high bits
 * set (which the kernel truncates to an int) is above AF_NETLINK: denied. */
static const uint64_t denied_families_below_netlink[] = {
    0 /* AF_UNSPEC */, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15 /* AF_KEY */,
};
#define FAMILY_NETLINK 16u
/* Netlink protocols other than NETLINK_ROUTE (0): audit, uevents of the host's
 * devices (NETLINK_KOBJECT_UEVENT), generic netlink families, netfilter,
 * xfrm, sock_diag (which lists sockets), ... Denied with EPROTONOSUPPORT. */

static int export_c(scmp_filter_ctx ctx, const char *out);
static int export_c(scmp_filter_ctx ctx, const char *out)
{
	int fd = memfd_create("kiln-seccomp", 0);
	if (fd < 0)
		return -errno;
	int r = seccomp_export_bpf(ctx, fd);
	if (r < 0)
		return r;
	off_t size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter) != 0)
		return -EINVAL;
	size_t n = (size_t)size / sizeof(struct sock_filter);
	struct sock_filter *f = calloc(n, sizeof(*f));
	if (!f || pread(fd, f, (size_t)size, 0) != size)
		return -EIO;
	close(fd);
	FILE *o = fopen(out, "w");
	if (!o)
		return -errno;
	fprintf(o,
	        "/* Generated by seccomp-gen.c at build time. Do not edit. */\n"
	        "static const struct sock_filter seccomp_main_insns[%zu] = {\n",
	        n);
	for (size_t i = 0; i < n; i++)
		fprintf(o, "\t{ 0x%04x, %u, %u, 0x%08x },\n", f[i].code, f[i].jt, f[i].jf, f[i].k);
	fprintf(o, "};\n");
	free(f);
	return fclose(o) == 0 ? 0 : -EIO;
}

static int build_main(const char *out);
static int build_main(const char *out)
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
	static const unsigned long tty_ioctls[] = {TIOCSTI, TIOCLINUX};
	for (size_t i = 0; i < ELEMENTSOF(tty_ioctls) && r >= 0; i++)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
		                     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, tty_ioctls[i]));
	for (size_t i = 0; i < ELEMENTSOF(clone_ns_flags) && r >= 0; i++)
		r = seccomp_rule_add(
		    ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i], clone_ns_flags[i]));
	static const int socket_calls[] = {SCMP_SYS(socket), SCMP_SYS(socketpair)};
	for (size_t c = 0; c < ELEMENTSOF(socket_calls) && r >= 0; c++) {
		int nr = socket_calls[c];
		for (size_t i = 0; i < ELEMENTSOF(denied_families_below_netlink) && r >= 0; i++)
			r = seccomp_rule_add(
			    ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, 1,
			    SCMP_A0(SCMP_CMP_EQ, denied_families_below_netlink[i], 0));
		if (r >= 0)
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, 1,
			                     SCMP_A0(SCMP_CMP_GT, FAMILY_NETLINK, 0));
		if (r >= 0)
			r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPROTONOSUPPORT), nr, 2,
			                     SCMP_A0(SCMP_CMP_EQ, FAMILY_NETLINK, 0),
			                     SCMP_A2(SCMP_CMP_NE, 0, 0));
	}
	/* clone3 passes its flags in memory, where a filter cannot look; ENOSYS
	 * makes libc fall back to clone(2), whose flags the rules above check. */
	if (r >= 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	/* The filter must not be lifted by a setuid exec either way; kiln sets
	 * no_new_privs itself, so libseccomp need not. */
	if (r >= 0)
		r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (r >= 0)
		r = export_c(ctx, out);
	seccomp_release(ctx);
	return r;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: seccomp-gen OUTPUT.h\n");
		return 2;
	}
	int r = build_main(argv[1]);
	if (r < 0) {
		fprintf(stderr, "seccomp-gen: %s\n", strerror(-r));
		return 1;
	}
	return 0;
}
