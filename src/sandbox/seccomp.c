/* sandbox/seccomp.c — the system call filters every sandboxed process runs under.
 *
 * The main filter is a deny list (default allow) of the calls a build step
 * never needs and that are the usual doors into the kernel or out of the
 * namespaces; the list and the reason for each entry are in seccomp-gen.c,
 * which compiles it with libseccomp at build time into seccomp-filter.h.
 * The child only calls seccomp(2) on ready programs (it must not allocate;
 * see internal.h). */
#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox/internal.h"

#include "sandbox/seccomp-filter.h"

static struct sock_fprog main_prog = {
    .len = ELEMENTSOF(seccomp_main_insns),
    .filter = (struct sock_filter *)seccomp_main_insns,
};
static struct sock_fprog personality_prog;

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

int sb_seccomp_get(const struct sock_fprog **ret_main, const struct sock_fprog **ret_personality,
                   struct kiln_error **err)
{
#if !defined(__x86_64__)
#error "the personality filter is written for x86_64 only"
#endif
	(void)err;
	personality_prog.filter = personality_insns;
	personality_prog.len = ELEMENTSOF(personality_insns);
	*ret_main = &main_prog;
	*ret_personality = &personality_prog;
	return 0;
}
