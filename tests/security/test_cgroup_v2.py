"""kiln's cgroup v2 path, run for real: a Debian kernel booted in QEMU.

The host of this suite uses cgroup v1 (hybrid), so the rest of tests/security
never reaches cgroup.c's v2 branch. This module boots Debian's own kernel
(apt-get download, cached in /var/tmp/kiln-test-kernel) under software
emulation with an initramfs the test writes itself: busybox, the static kiln
and probe, a tiny root tree for the sandbox, and an init script that mounts
cgroup2 on /sys/fs/cgroup (controllers not enabled: kiln must do it), runs
`kiln run` in every case below and prints one "KILN-V2 <check> <key> <value>"
line per fact on the serial console. The VM boots once per module; each test
asserts one check on what it printed.

The root of the sandbox is one layer (a bind mount, no overlayfs, which is a
module in Debian's kernel): nothing in the VM loads a module."""
import gzip
import os
import pathlib
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

from conftest import BUSYBOX, ID_BASE, KILN, probe_path

QEMU = shutil.which("qemu-system-x86_64")
KERNEL_CACHE = pathlib.Path(os.environ.get("KILN_TEST_KERNEL_DIR", "/var/tmp/kiln-test-kernel"))
BOOT_TIMEOUT = 600  # seconds for the whole VM run; ~25 s on an idle 2-core machine

APPLETS = ["sh", "cat", "echo", "ls", "sleep", "true", "dd", "kill", "wc"]

# Stage 1 runs on the initramfs's rootfs, which pivot_root cannot leave (it
# has no parent mount), so everything moves to a tmpfs first.
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /new
/bin/busybox mount -t tmpfs -o mode=0755 tmpfs /new
/bin/busybox cp -a /bin /kiln /sbroot /stage2 /new/
exec /bin/busybox switch_root /new /stage2
"""

STAGE2 = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
dmesg -n 1
K="/kiln run --root /sbroot"
CG=/sys/fs/cgroup

say() { echo "KILN-V2 $*"; }
# chk NAME CMD...: CMD's stdout, stderr and exit status as KILN-V2 lines.
chk() {
	n=$1
	shift
	"$@" >/run/out 2>/run/err
	rc=$?
	while IFS= read -r l; do say "$n out $l"; done </run/out
	while IFS= read -r l; do say "$n err $l"; done </run/err
	say "$n rc $rc"
}
# The sandbox cgroups under kiln/ (directories only).
kids() {
	for d in $CG/kiln/*; do [ -d "$d" ] && echo -n "${d##*/} "; done
}
markers() {
	n=0
	for p in /proc/[0-9]*; do
		case "$(cat $p/cmdline 2>/dev/null | tr '\0' ' ')" in
		*kiln-*-marker*) n=$((n + 1)) ;;
		esac
	done
	echo $n
}
# waitfor FILE TEXT: up to 60 s until FILE holds TEXT.
waitfor() {
	i=0
	while [ $i -lt 600 ] && ! grep -q "$2" "$1" 2>/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
}
# The only cgroup under kiln/ while one kiln runs.
only() {
	for d in $CG/kiln/*; do [ -d "$d" ] && echo "$d"; done | head -n 1
}

echo KILN-V2-BEGIN
say env kernel "$(uname -r)"
say env fstype "$(stat -f -c %t $CG)"
say env controllers "$(cat $CG/cgroup.controllers)"
say env subtree_before "$(cat $CG/cgroup.subtree_control)"

chk true $K -- /bin/true
say true subtree_after "$(cat $CG/cgroup.subtree_control)"
say true kiln_subtree "$(cat $CG/kiln/cgroup.subtree_control 2>&1)"
say true left "$(kids)"

# Limits, read from the host side while the command sleeps; then kiln is
# cancelled (SIGTERM), which must remove the cgroup.
$K --memory 100 --cpus 1 --pids 50 -- /bin/sh -c 'cat /proc/self/cgroup; echo up; sleep 60' \
	>/run/limits 2>&1 &
kp=$!
waitfor /run/limits up
d=$(only)
say limits dir "${d##*/}"
say limits kiln_pid $kp
for f in memory.max memory.swap.max cpu.max pids.max; do say limits $f "$(cat $d/$f)"; done
say limits procs "$(wc -l <$d/cgroup.procs)"
say limits inner "$(grep '^0::' /run/limits)"
kill -TERM $kp
wait $kp
say limits rc $?
say limits left "$(kids)"

# Peak memory: 48 MiB written to the sandbox's tmpfs is charged to its cgroup.
$K --memory 200 -- /bin/sh -c 'dd if=/dev/zero of=/tmp/f bs=1M count=48 2>/dev/null; echo up; sleep 60' \
	>/run/peak 2>&1 &
kp=$!
waitfor /run/peak up
d=$(only)
say peak memory.peak "$(cat $d/memory.peak 2>&1)"
kill -TERM $kp
wait $kp
say peak left "$(kids)"

# CPU quota: two busy loops under --cpus 1 on two CPUs get throttled.
$K --cpus 1 -- /bin/sh -c 'while :; do :; done & while :; do :; done & echo up; wait' \
	>/run/cpu 2>&1 &
kp=$!
waitfor /run/cpu up
sleep 2
d=$(only)
while IFS= read -r l; do say "cpu stat $l"; done <$d/cpu.stat
kill -TERM $kp
wait $kp
say cpu left "$(kids)"

chk oom $K --memory 64 -- /probe membomb
say oom left "$(kids)"

chk fork $K --pids 32 -- /probe forkbomb
say fork left "$(kids)"

chk timeout $K --timeout 8 -- /bin/sh -c '/probe daemon 1000'
say timeout markers "$(markers)"
say timeout left "$(kids)"

# kiln killed with SIGKILL: PR_SET_PDEATHSIG takes the sandbox down, the
# cgroup stays behind until the next kiln removes it.
$K -- /bin/sh -c 'echo up; exec /probe sleep 60 kiln-concurrent-marker' >/run/kill 2>&1 &
kp=$!
waitfor /run/kill up
say kill kiln_pid $kp
say kill before "$(kids)"
kill -9 $kp
wait $kp
i=0
while [ $i -lt 100 ] && [ "$(markers)" != 0 ]; do sleep 0.1; i=$((i + 1)); done
say kill markers "$(markers)"
say kill orphan "$(kids)"
chk kill_next $K -- /bin/true
say kill after "$(kids)"

chk probe $K -- /probe all 9
say probe left "$(kids)"

# A container's view (docker, podman, a delegated systemd unit): the
# hierarchy kiln sees is a non-root cgroup, ctr, holding processes of its
# own (a shell and a sleeping "service"), bind-mounted over /sys/fs/cgroup.
# v2 forbids enabling controllers for the children of such a cgroup.
mkdir $CG/ctr
sh -c 'echo $$ >/sys/fs/cgroup/ctr/cgroup.procs
exec unshare -m sh -c "mount --bind /sys/fs/cgroup/ctr /sys/fs/cgroup
sleep 1000 &
sp=\$!
/kiln run --root /sbroot --memory 100 -- /bin/sh -c \"echo up; sleep 60\" >/run/ctr 2>&1 &
kp=\$!
i=0
while [ \$i -lt 600 ] && ! grep -q up /run/ctr; do sleep 0.1; i=\$((i + 1)); done
for d in /sys/fs/cgroup/kiln/*; do [ -d \$d ] && echo limit \$(cat \$d/memory.max); done
kill -TERM \$kp
wait \$kp
echo rc \$?
echo root_procs \$(cat /sys/fs/cgroup/cgroup.procs | wc -l)
echo init_procs \$(cat /sys/fs/cgroup/init/cgroup.procs | wc -l)
echo subtree \$(cat /sys/fs/cgroup/cgroup.subtree_control)
kill \$sp"' 2>&1 | while IFS= read -r l; do say "ctr $l"; done
for d in $CG/ctr/kiln/*; do [ -d "$d" ] && say ctr left "${d##*/}"; done
say ctr out "$(cat /run/ctr)"

echo KILN-V2-END
poweroff -f
"""


def _is_static(path):
    """No PT_INTERP program header: the binary runs without a dynamic loader
    (the initramfs has none)."""
    with open(path, "rb") as f:
        h = f.read(64)
        if h[:4] != b"\x7fELF" or h[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", h, 32)
        phentsize, phnum = struct.unpack_from("<HH", h, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", ph, i * phentsize)[0] != 3 for i in range(phnum))


def _apt_kernel_package():
    """The linux-image-<abi>-amd64 that linux-image-amd64 depends on."""
    def depends():
        p = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                           text=True)
        m = re.search(r"Depends: (linux-image-\S+-amd64)\b", p.stdout)
        return m.group(1) if m else None

    pkg = depends()
    if pkg is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600)
        pkg = depends()
    return pkg


def debian_kernel():
    """Path of a Debian vmlinuz (downloaded once into KERNEL_CACHE), or None
    with the reason."""
    found = sorted(KERNEL_CACHE.glob("boot/vmlinuz-*"))
    if found:
        return found[-1], None
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return None, "apt-get/dpkg-deb not available"
    pkg = _apt_kernel_package()
    if pkg is None:
        return None, "apt-cache knows no linux-image-amd64 (no Debian apt lists?)"
    KERNEL_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=KERNEL_CACHE) as tmp:
        p = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True,
                           text=True, timeout=600)
        debs = list(pathlib.Path(tmp).glob("*.deb"))
        if p.returncode != 0 or not debs:
            return None, f"apt-get download {pkg} failed: {p.stderr.strip()[-500:]}"
        # Only boot/ (the kernel image and its config); the modules are not needed.
        x = subprocess.run(f"dpkg-deb --fsys-tarfile '{debs[0]}' | tar -x --wildcards "
                           "'./boot/vmlinuz-*' './boot/config-*'", shell=True, cwd=tmp,
                           capture_output=True, text=True)
        if x.returncode != 0:
            return None, f"cannot extract {debs[0].name}: {x.stderr.strip()[-500:]}"
        (KERNEL_CACHE / "boot").mkdir(exist_ok=True)
        for f in pathlib.Path(tmp, "boot").iterdir():
            os.replace(f, KERNEL_CACHE / "boot" / f.name)  # atomic: a parallel run sees all or none
    found = sorted(KERNEL_CACHE.glob("boot/vmlinuz-*"))
    return (found[-1], None) if found else (None, f"{pkg} has no boot/vmlinuz-*")


class Cpio:
    """A newc archive, written in memory: owners and modes are set per entry,
    so the sandbox's tree belongs to host uid 100000 without a chown."""

    def __init__(self):
        self.buf = bytearray()
        self.ino = 1

    def _entry(self, name, mode, data=b"", uid=0):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            self.ino, mode, uid, uid, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        self.buf += hdr.encode() + name_b
        self.buf += b"\0" * (-len(self.buf) % 4)
        self.buf += data
        self.buf += b"\0" * (-len(self.buf) % 4)

    def dir(self, name, uid=0):
        self._entry(name, 0o40755, uid=uid)

    def file(self, name, data, mode=0o755, uid=0):
        self._entry(name, 0o100000 | mode, data, uid)

    def symlink(self, name, target, uid=0):
        self._entry(name, 0o120777, target.encode(), uid)

    def gzip(self):
        self._entry("TRAILER!!!", 0)
        return gzip.compress(bytes(self.buf), compresslevel=1)


def make_initramfs(path):
    busybox = pathlib.Path(BUSYBOX).read_bytes()
    probe = probe_path().read_bytes()
    c = Cpio()
    c.dir("bin")
    c.file("bin/busybox", busybox)
    c.file("kiln", pathlib.Path(KILN).read_bytes())
    c.file("init", INIT.encode())
    c.file("stage2", STAGE2.encode())
    # The sandbox's root, owned by the sandbox's root user (host 100000).
    c.dir("sbroot", ID_BASE)
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "var", "var/tmp", "root"]:
        c.dir("sbroot/" + d, ID_BASE)
    c.file("sbroot/probe", probe, uid=ID_BASE)
    c.file("sbroot/bin/busybox", busybox, uid=ID_BASE)
    for a in APPLETS:
        c.symlink("sbroot/bin/" + a, "busybox", ID_BASE)
    c.file("sbroot/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644, ID_BASE)
    path.write_bytes(c.gzip())


def parse(serial):
    """{check: {key: [values]}} from the KILN-V2 lines."""
    res = {}
    for line in serial.splitlines():
        line = line.rstrip("\r")
        if not line.startswith("KILN-V2 "):
            continue
        parts = line.split(" ", 3)
        if len(parts) < 3:
            continue
        res.setdefault(parts[1], {}).setdefault(parts[2], []).append(
            parts[3] if len(parts) > 3 else "")
    return res


@pytest.fixture(scope="module")
def vm():
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 not installed (scripts/deps.sh installs qemu-system-x86)")
    if not os.access(KILN, os.X_OK):
        pytest.fail(f"kiln binary not found at {KILN}; run 'make build' first")
    if not _is_static(KILN):
        # The ASan build is dynamic: the initramfs has no loader or libraries.
        pytest.skip(f"{KILN} is not a static executable (sanitizer build?); "
                    "the cgroup v2 VM test runs with the normal build")
    if not probe_path().exists():
        pytest.fail(f"security probe not built at {probe_path()}; run 'make build'")
    kernel, why = debian_kernel()
    if kernel is None:
        pytest.skip(f"no Debian kernel to boot: {why}")
    with tempfile.TemporaryDirectory(prefix="kiln-v2-") as tmp:
        initrd = pathlib.Path(tmp, "initrd.gz")
        make_initramfs(initrd)
        t0 = time.monotonic()
        q = subprocess.Popen(
            [QEMU, "-m", "1024", "-smp", "2", "-nographic", "-no-reboot",
             "-kernel", str(kernel), "-initrd", str(initrd),
             "-append", "console=ttyS0 rdinit=/init panic=-1 quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            out, _ = q.communicate(timeout=BOOT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(q.pid, signal.SIGKILL)
            out, _ = q.communicate()
        serial = out.decode(errors="replace")
        elapsed = time.monotonic() - t0
    assert "KILN-V2-END" in serial, f"VM did not finish ({elapsed:.0f} s):\n{serial[-6000:]}"
    if os.environ.get("KILN_V2_SERIAL"):
        pathlib.Path(os.environ["KILN_V2_SERIAL"]).write_text(serial)
    return parse(serial), serial


def facts(vm, check):
    res, serial = vm
    assert check in res, f"no result for {check}:\n{serial[-6000:]}"
    return res[check]


def one(f, key):
    return f.get(key, [None])[-1]


def out(f):
    return "\n".join(f.get("out", []))


def err(f):
    return "\n".join(f.get("err", []))


def test_vm_runs_cgroup_v2_and_kiln_enables_controllers(vm):
    env = facts(vm, "env")
    assert one(env, "fstype") == "63677270", env  # CGROUP2_SUPER_MAGIC
    for c in ("memory", "cpu", "pids"):
        assert c in one(env, "controllers").split(), env
    # Nothing enabled them but kiln.
    assert one(env, "subtree_before") == "", env
    t = facts(vm, "true")
    assert {"memory", "cpu", "pids"} <= set(one(t, "subtree_after").split()), t
    assert {"memory", "cpu", "pids"} <= set(one(t, "kiln_subtree").split()), t


def test_true_exits_0_and_leaves_no_cgroup(vm):
    t = facts(vm, "true")
    assert one(t, "rc") == "0", t
    assert one(t, "left") == "", t


def test_limits_written_and_cgroup_namespace_rooted_at_sandbox(vm):
    f = facts(vm, "limits")
    assert re.fullmatch(r"%s-0" % one(f, "kiln_pid"), one(f, "dir")), f
    assert one(f, "memory.max") == str(100 << 20), f
    assert one(f, "memory.swap.max") == "0", f
    assert one(f, "cpu.max") == "100000 100000", f  # 1 of the VM's 2 CPUs
    assert one(f, "pids.max") == "50", f
    assert int(one(f, "procs")) >= 2, f  # PID 1 and the command at least
    assert one(f, "inner") == "0::/", f  # the command sees its cgroup as the root
    # Cancelled with SIGTERM: cgroup.kill, then the cgroup is removed.
    assert one(f, "rc") == str(128 + signal.SIGTERM), f
    assert one(f, "left") == "", f


def test_memory_peak_tracks_usage(vm):
    f = facts(vm, "peak")
    assert int(one(f, "memory.peak")) >= 48 << 20, f
    assert one(f, "left") == "", f


def test_cpu_quota_throttles(vm):
    f = facts(vm, "cpu")
    stat = dict(s.split(" ", 1) for s in f.get("stat", []))
    assert int(stat.get("nr_throttled", 0)) > 0, f
    assert one(f, "left") == "", f


def test_memory_bomb_oom_killed_and_reported(vm):
    f = facts(vm, "oom")
    assert one(f, "rc") == str(128 + signal.SIGKILL), f
    assert "killed for exceeding the memory limit of 64 MB" in err(f), f
    assert one(f, "left") == "", f


def test_fork_bomb_stopped_by_pids_limit(vm):
    f = facts(vm, "fork")
    assert one(f, "rc") == "0", f
    assert "errno=11" in out(f), f  # EAGAIN from the pids controller
    after = int(out(f).split("after=")[1].split()[0])
    assert 0 < after < 32, f
    assert one(f, "left") == "", f


def test_daemon_killed_at_timeout_nothing_left(vm):
    f = facts(vm, "timeout")
    assert one(f, "rc") == str(128 + signal.SIGKILL), f
    assert "timed out after 8 seconds" in err(f), f  # 8: room for a slow emulated start
    assert "daemon started" in out(f), f
    assert one(f, "markers") == "0", f
    assert one(f, "left") == "", f


def test_sigkilled_kiln_cgroup_removed_by_next_run(vm):
    f = facts(vm, "kill")
    own = "%s-0" % one(f, "kiln_pid")
    assert one(f, "before").split() == [own], f
    assert one(f, "markers") == "0", f  # PR_SET_PDEATHSIG took the sandbox down
    assert one(f, "orphan").split() == [own], f  # kiln had no chance to clean up
    assert one(facts(vm, "kill_next"), "rc") == "0", facts(vm, "kill_next")
    assert one(f, "after") == "", f


def test_probe_every_attempt_denied_on_v2_kernel(vm):
    f = facts(vm, "probe")
    lines = f.get("out", [])
    failed = [l for l in lines if " FAIL " in l]
    assert failed == [], f
    assert sum(" OK " in l for l in lines) >= 40, f
    assert one(f, "rc") == "0", f
    assert one(f, "left") == "", f


def test_container_hierarchy_with_processes(vm):
    """/sys/fs/cgroup is a cgroup that holds processes (a container's own):
    kiln moves them to a leaf, "init", and enables its controllers."""
    f = facts(vm, "ctr")
    assert one(f, "rc") == str(128 + signal.SIGTERM), f  # ran until cancelled
    assert one(f, "limit") == str(100 << 20), f
    assert one(f, "root_procs") == "0", f
    assert int(one(f, "init_procs")) >= 2, f  # the shell and the sleep (kiln ended)
    assert {"memory", "cpu", "pids"} <= set(one(f, "subtree").split()), f
    assert "left" not in f, f
