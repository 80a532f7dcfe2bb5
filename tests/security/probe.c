/* kiln-probe — run inside the sandbox; attempts what a hostile build step
 * would and reports each outcome. Linked statically so it runs in any root.
 *
 *   kiln-probe all PORT   every check below, one line each:
 *                         "<name> OK <detail>" when denied or contained,
 *                         "<name> FAIL <detail>" when the attempt succeeded.
 *   kiln-probe forkbomb | membomb | fill DIR | daemon SECONDS | sleep SECONDS
 *   kiln-probe kill PID | euid | ids
 *
 * tests/security/test_sandbox_security.py asserts on these lines. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static int failures;

static int num(const char *s)
{
	return (int)strtol(s, NULL, 10);
}

static void report(const char *name, int contained, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(const char *name, int contained, const char *fmt, ...)
{
	char detail[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	printf("%s %s %s\n", name, contained ? "OK" : "FAIL", detail);
	if (!contained)
		failures++;
	fflush(stdout);
}

/* A call that must fail with one of the given errnos ("denied"). */
static void expect_errno(const char *name, long rc, int e, int want1, int want2)
{
	if (rc >= 0)
		report(name, 0, "succeeded (rc=%ld)", rc);
	else
		report(name, e == want1 || e == want2, "errno=%d (%s)", e, strerror(e));
}

static void check_net(int port)
{
	struct {
		const char *name;
		const char *addr;
		int port, type;
	} t[] = {
	    {"net_tcp_internet", "1.1.1.1", 80, SOCK_STREAM},
	    {"net_tcp_host_loopback", "127.0.0.1", port, SOCK_STREAM},
	    {"net_udp_internet", "8.8.8.8", 53, SOCK_DGRAM},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int s = socket(AF_INET, t[i].type, 0);
		struct sockaddr_in sa = {.sin_family = AF_INET,
		                         .sin_port = htons((uint16_t)t[i].port)};
		inet_pton(AF_INET, t[i].addr, &sa.sin_addr);
		long rc;
		if (t[i].type == SOCK_DGRAM)
			rc = sendto(s, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa));
		else
			rc = connect(s, (struct sockaddr *)&sa, sizeof(sa));
		int e = errno;
		/* Refused on the sandbox's own lo (nothing listens there), or no
		 * route at all: either way nothing outside was reached. */
		expect_errno(t[i].name, rc, e, ENETUNREACH, ECONNREFUSED);
		close(s);
	}
	/* Only lo in /proc/net/dev (2 header lines + 1). */
	FILE *f = fopen("/proc/net/dev", "r");
	int lines = 0;
	char buf[512];
	while (f && fgets(buf, sizeof(buf), f))
		lines++;
	if (f)
		fclose(f);
	report("net_only_lo", lines == 3, "interfaces=%d", lines - 2);
}

static void check_files(void)
{
	const char *paths[] = {"/etc/shadow", "/proc/1/root/etc/shadow", "/../../../etc/shadow",
	                       "/proc/self/root/../etc/shadow"};
	int leaked = 0;
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		int fd = open(paths[i], O_RDONLY);
		if (fd >= 0) {
			char b[8] = {0};
			if (read(fd, b, 5) == 5 && strncmp(b, "root:", 5) == 0)
				leaked = 1;
			close(fd);
		}
	}
	report("read_host_shadow", !leaked, "%s", leaked ? "host shadow readable" : "not found");
	int fd = open("/probe-write-test", O_WRONLY | O_CREAT, 0644);
	expect_errno("write_root", fd, errno, EROFS, EACCES);
	fd = open("/usr-probe", O_WRONLY | O_CREAT, 0644);
	if (fd >= 0)
		close(fd);
	fd = open("/proc/sysrq-trigger", O_WRONLY);
	expect_errno("write_sysrq_trigger", fd, errno, EACCES, errno == ENOENT ? ENOENT : EROFS);
	fd = open("/proc/sys/kernel/hostname", O_WRONLY);
	expect_errno("write_proc_sys", fd, errno, EROFS, EACCES);
	fd = open("/proc/kcore", O_RDONLY);
	expect_errno("read_kcore", fd, errno, EACCES, ENOENT);
	fd = open("/proc/kallsyms", O_RDONLY);
	expect_errno("read_kallsyms", fd, errno, EACCES, ENOENT);
	/* The host kernel's command line (on a VM: the hypervisor agent's flags). */
	fd = open("/proc/cmdline", O_RDONLY);
	expect_errno("read_proc_cmdline", fd, errno, EACCES, EACCES);
	/* PID 1 holds a copy of kiln; its exe is kiln's binary on the host. */
	fd = open("/proc/1/exe", O_RDONLY);
	expect_errno("open_init_exe", fd, errno, EACCES, EPERM);
	fd = open("/proc/1/mem", O_RDONLY);
	expect_errno("open_init_mem", fd, errno, EACCES, EPERM);
	long rc = mknod("/tmp/blk", S_IFBLK | 0600, makedev(8, 0));
	expect_errno("mknod_block", rc, errno, EPERM, EPERM);
	rc = mknod("/dev/blk", S_IFCHR | 0600, makedev(1, 1));
	expect_errno("mknod_char_dev_mem", rc, errno, EPERM, EACCES);
}

static void check_procs(void)
{
	DIR *d = opendir("/proc");
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] >= '0' && e->d_name[0] <= '9')
			n++;
	if (d)
		closedir(d);
	/* PID 1 (kiln's init) and this probe, plus a shell when started by one. */
	report("host_processes_hidden", n > 0 && n <= 3, "visible=%d", n);
	/* kill(-1) would signal every process we may signal: only our own. */
}

static void check_syscalls(void)
{
	long rc = ptrace(PTRACE_TRACEME, 0, 0, 0);
	expect_errno("ptrace_traceme", rc, errno, EPERM, EPERM);
	rc = ptrace(PTRACE_ATTACH, 1, 0, 0);
	expect_errno("ptrace_attach_init", rc, errno, EPERM, EPERM);
	rc = mount("none", "/tmp", "tmpfs", 0, NULL);
	expect_errno("mount_tmpfs", rc, errno, EPERM, EPERM);
	rc = umount2("/proc/kallsyms", MNT_DETACH);
	expect_errno("umount_mask", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_fsopen, "tmpfs", 0);
	expect_errno("fsopen", rc, errno, EPERM, EPERM);
	rc = unshare(CLONE_NEWUSER);
	expect_errno("unshare_user", rc, errno, EPERM, EPERM);
	rc = unshare(CLONE_NEWNS);
	expect_errno("unshare_mount", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
	if (rc == 0)
		_exit(0);
	expect_errno("clone_newuser", rc, errno, EPERM, EPERM);
	struct clone_args ca = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
	rc = syscall(SYS_clone3, &ca, sizeof(ca));
	if (rc == 0)
		_exit(0);
	expect_errno("clone3", rc, errno, ENOSYS, ENOSYS);
	rc = syscall(SYS_setns, 0, 0);
	expect_errno("setns", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0);
	expect_errno("keyctl", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_add_key, "user", "kiln", "x", 1, -3);
	expect_errno("add_key", rc, errno, EPERM, EPERM);
	union bpf_attr attr = {0};
	rc = syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr));
	expect_errno("bpf", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
	expect_errno("perf_event_open", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_finit_module, 0, "", 0);
	expect_errno("finit_module", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_init_module, NULL, 0, "");
	expect_errno("init_module", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY);
	expect_errno("open_by_handle_at", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_userfaultfd, 0);
	expect_errno("userfaultfd", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_kexec_load, 0, 0, NULL, 0);
	expect_errno("kexec_load", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc, NULL);
	expect_errno("reboot", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_swapon, "/tmp", 0);
	expect_errno("swapon", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_iopl, 3);
	expect_errno("iopl", rc, errno, EPERM, EPERM);
	/* EPERM from the filter; without it the kernel would say ENOTTY on
	 * /dev/null. The second form sets high bits the kernel ignores. */
	char c = 'x';
	rc = ioctl(0, TIOCSTI, &c);
	expect_errno("tiocsti", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_ioctl, 0, (unsigned long)TIOCSTI | (1UL << 32), &c);
	expect_errno("tiocsti_high_bits", rc, errno, EPERM, EPERM);
	rc = syscall(SYS_ioctl, 0, (unsigned long)TIOCLINUX, &c);
	expect_errno("tioclinux", rc, errno, EPERM, EPERM);
	rc = personality(ADDR_NO_RANDOMIZE);
	expect_errno("personality_no_aslr", rc, errno, EPERM, EPERM);
	rc = personality(0xffffffff);
	report("personality_query_allowed", rc >= 0, "rc=%ld", rc);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	struct rlimit more = {rl.rlim_max + 1, rl.rlim_max + 1};
	rc = setrlimit(RLIMIT_NOFILE, &more);
	expect_errno("raise_rlimit_nofile", rc, errno, EPERM, EPERM);
	getrlimit(RLIMIT_CORE, &rl);
	report("rlimit_core_zero", rl.rlim_max == 0, "core hard=%lu", (unsigned long)rl.rlim_max);
}

/* Socket families a build never needs: denied by the seccomp filter as if
 * the kernel lacked them (EAFNOSUPPORT), netlink protocols other than
 * NETLINK_ROUTE with EPROTONOSUPPORT. The kernel alone answers differently
 * (a vsock socket is created; AF_PACKET says EPERM without CAP_NET_RAW). */
static void check_sockets(void)
{
	static const struct {
		const char *name;
		int family, type, proto;
	} deny[] = {
	    {"socket_vsock", 40 /* AF_VSOCK */, SOCK_STREAM, 0},
	    {"socket_vsock_dgram", 40, SOCK_DGRAM, 0},
	    {"socket_packet", AF_PACKET, SOCK_RAW, 0},
	    {"socket_packet_dgram", AF_PACKET, SOCK_DGRAM, 0},
	    {"socket_bluetooth", 31 /* AF_BLUETOOTH */, SOCK_RAW, 1 /* BTPROTO_HCI */},
	    {"socket_alg", 38 /* AF_ALG */, SOCK_SEQPACKET, 0},
	    {"socket_xdp", 44 /* AF_XDP */, SOCK_RAW, 0},
	    {"socket_key", 15 /* AF_KEY */, SOCK_RAW, 2 /* PF_KEY_V2 */},
	    {"socket_can", 29 /* AF_CAN */, SOCK_RAW, 1 /* CAN_RAW */},
	    {"socket_tipc", 30 /* AF_TIPC */, SOCK_RDM, 0},
	    {"socket_rds", 21 /* AF_RDS */, SOCK_SEQPACKET, 0},
	    {"socket_appletalk", 5 /* AF_APPLETALK */, SOCK_DGRAM, 0},
	    {"socket_ax25", 3 /* AF_AX25 */, SOCK_SEQPACKET, 0},
	    {"socket_x25", 9 /* AF_X25 */, SOCK_SEQPACKET, 0},
	    {"socket_llc", 26 /* AF_LLC */, SOCK_DGRAM, 0},
	    {"socket_mctp", 45 /* AF_MCTP */, SOCK_DGRAM, 0},
	};
	for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++) {
		int s = socket(deny[i].family, deny[i].type | SOCK_CLOEXEC, deny[i].proto);
		expect_errno(deny[i].name, s, errno, EAFNOSUPPORT, EAFNOSUPPORT);
		if (s >= 0)
			close(s);
	}
	/* The kernel reads the family as an int: high bits must not get a
	 * denied family past a filter that compares 64 bits. */
	long s = syscall(SYS_socket, 40UL | (1UL << 32), SOCK_STREAM, 0);
	expect_errno("socket_vsock_high_bits", s, errno, EAFNOSUPPORT, EAFNOSUPPORT);
	if (s >= 0)
		close((int)s);
	int sv[2];
	long rc = socketpair(40, SOCK_STREAM, 0, sv);
	expect_errno("socketpair_vsock", rc, errno, EAFNOSUPPORT, EAFNOSUPPORT);
	static const struct {
		const char *name;
		int proto;
	} nl[] = {
	    {"netlink_audit", 9},      {"netlink_kobject_uevent", 15}, {"netlink_generic", 16},
	    {"netlink_sock_diag", 4},  {"netlink_netfilter", 12},      {"netlink_xfrm", 6},
	    {"netlink_connector", 11}, {"netlink_selinux", 7},
	};
	for (size_t i = 0; i < sizeof(nl) / sizeof(nl[0]); i++) {
		int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, nl[i].proto);
		expect_errno(nl[i].name, fd, errno, EPROTONOSUPPORT, EPROTONOSUPPORT);
		if (fd >= 0)
			close(fd);
	}
	/* What builds do need still works. */
	static const struct {
		const char *name;
		int family, type, proto;
	} allow[] = {
	    {"socket_unix_allowed", AF_UNIX, SOCK_STREAM, 0},
	    {"socket_inet_allowed", AF_INET, SOCK_STREAM, 0},
	    {"socket_inet6_allowed", AF_INET6, SOCK_DGRAM, 0},
	    {"netlink_route_allowed", AF_NETLINK, SOCK_RAW, 0},
	};
	for (size_t i = 0; i < sizeof(allow) / sizeof(allow[0]); i++) {
		int fd = socket(allow[i].family, allow[i].type | SOCK_CLOEXEC, allow[i].proto);
		report(allow[i].name, fd >= 0, "fd=%d errno=%d", fd, fd < 0 ? errno : 0);
		if (fd >= 0)
			close(fd);
	}
	rc = socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
	report("socketpair_unix_allowed", rc == 0, "rc=%ld", rc);
	if (rc == 0) {
		close(sv[0]);
		close(sv[1]);
	}
}

static void check_fds_cwd(void)
{
	DIR *d = opendir("/proc/self/fd");
	int extra = 0, dfd = d ? dirfd(d) : -1;
	char list[256] = "";
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int fd = num(e->d_name);
		if (fd > 2 && fd != dfd) {
			extra++;
			strncat(list, e->d_name, sizeof(list) - strlen(list) - 2);
			strncat(list, " ", sizeof(list) - strlen(list) - 1);
		}
	}
	if (d)
		closedir(d);
	report("leaked_fds", extra == 0, "extra=[%s]", list);
	char cwd[4096];
	int ok = getcwd(cwd, sizeof(cwd)) != NULL && cwd[0] == '/';
	struct stat a, b;
	/* ".." from the root is the root: the cwd cannot walk out. */
	ok = ok && stat("/", &a) == 0 && stat("/../../..", &b) == 0 && a.st_ino == b.st_ino &&
	     a.st_dev == b.st_dev;
	report("cwd_inside_root", ok, "cwd=%s", cwd);
}

static void check_status(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	int nnp = -1, sec = -1;
	unsigned long long capeff = ~0ULL;
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "NoNewPrivs:", 11) == 0)
			nnp = (int)strtol(line + 11, NULL, 10);
		else if (strncmp(line, "Seccomp:", 8) == 0)
			sec = (int)strtol(line + 8, NULL, 10);
		else if (strncmp(line, "CapEff:", 7) == 0)
			capeff = strtoull(line + 7, NULL, 16);
	}
	if (f)
		fclose(f);
	report("no_new_privs", nnp == 1, "NoNewPrivs=%d", nnp);
	report("seccomp_filter", sec == 2, "Seccomp=%d", sec);
	/* CAP_SYS_ADMIN (21), CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19),
	 * CAP_MKNOD (27), CAP_SYS_MODULE (16) must be gone. */
	unsigned long long bad =
	    (1ULL << 21) | (1ULL << 12) | (1ULL << 19) | (1ULL << 27) | (1ULL << 16);
	report("dangerous_caps_dropped", (capeff & bad) == 0, "CapEff=%llx", capeff);
	f = fopen("/proc/self/uid_map", "r");
	unsigned long in = 1, out = 0, count = 0;
	if (f) {
		if (fscanf(f, "%lu %lu %lu", &in, &out, &count) != 3)
			in = 1;
		fclose(f);
	}
	report("uid_mapped_unprivileged", in == 0 && out >= 1000, "map=%lu %lu %lu", in, out,
	       count);
	char host[128] = "";
	gethostname(host, sizeof(host));
	report("hostname", strcmp(host, "kiln") == 0, "hostname=%s", host);
}

static int cmd_forkbomb(void)
{
	int n = 0;
	for (;;) {
		pid_t p = fork();
		if (p < 0) {
			printf("forkbomb stopped after=%d errno=%d\n", n, errno);
			fflush(stdout);
			return errno == EAGAIN ? 0 : 1;
		}
		if (p == 0) {
			pause();
			_exit(0);
		}
		n++;
		if (n > 100000) {
			printf("forkbomb not stopped after=%d\n", n);
			return 1;
		}
	}
}

static int cmd_membomb(void)
{
	size_t total = 0;
	for (;;) {
		char *p = malloc(1 << 20);
		if (!p) {
			printf("membomb malloc failed at %zu MiB\n", total >> 20);
			return 1;
		}
		memset(p, 1, 1 << 20);
		total += 1 << 20;
		if (total > (64ULL << 30))
			return 1;
	}
}

static int cmd_fill(const char *dir)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/fill", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		printf("fill open errno=%d\n", errno);
		return 1;
	}
	static char buf[1 << 16];
	memset(buf, 'x', sizeof(buf));
	unsigned long long total = 0;
	for (;;) {
		ssize_t w = write(fd, buf, sizeof(buf));
		if (w < 0) {
			printf("fill stopped bytes=%llu errno=%d\n", total, errno);
			return errno == ENOSPC ? 0 : 1;
		}
		total += (unsigned long long)w;
	}
}

static int cmd_daemon(const char *secs)
{
	pid_t p = fork();
	if (p == 0) {
		setsid();
		if (fork() == 0) {
			/* Stopped and detached: must still die at the timeout. */
			execl("/probe", "probe", "sleep", secs, "kiln-daemon-marker", (char *)NULL);
			_exit(1);
		}
		_exit(0);
	}
	waitpid(p, NULL, 0);
	printf("daemon started\n");
	fflush(stdout);
	execl("/probe", "probe", "sleep", secs, "kiln-main-marker", (char *)NULL);
	return 1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && strcmp(argv[1], "all") == 0) {
		int port = argc >= 3 ? num(argv[2]) : 9;
		check_net(port);
		check_files();
		check_procs();
		check_syscalls();
		check_sockets();
		check_fds_cwd();
		check_status();
		printf("done failures=%d\n", failures);
		return failures ? 1 : 0;
	}
	if (argc >= 2 && strcmp(argv[1], "forkbomb") == 0)
		return cmd_forkbomb();
	if (argc >= 2 && strcmp(argv[1], "membomb") == 0)
		return cmd_membomb();
	if (argc >= 3 && strcmp(argv[1], "fill") == 0)
		return cmd_fill(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "daemon") == 0)
		return cmd_daemon(argv[2]);
	if (argc >= 3 && strcmp(argv[1], "sleep") == 0) {
		unsigned s = (unsigned)num(argv[2]);
		while (s)
			s = sleep(s);
		return 0;
	}
	if (argc >= 3 && strcmp(argv[1], "kill") == 0) {
		int rc = kill(num(argv[2]), SIGKILL);
		printf("kill rc=%d errno=%d\n", rc, rc < 0 ? errno : 0);
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "euid") == 0) {
		printf("euid=%d uid=%d\n", (int)geteuid(), (int)getuid());
		return 0;
	}
	fprintf(stderr, "usage: kiln-probe all PORT | forkbomb | membomb | fill DIR | daemon S | "
	                "sleep S | kill PID | euid\n");
	return 2;
}
