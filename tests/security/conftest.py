"""Fixtures for the sandbox security suite: a minimal root tree (static probe +
busybox), a host loopback listener, and a check after every test that the
sandbox left nothing behind (cgroups, mounts, processes, scratch dirs)."""
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
KILN = os.environ.get("KILN", str(ROOT / "build" / "src" / "cli" / "kiln"))

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
ID_BASE = 100000
CGROUP_DIRS = ["/sys/fs/cgroup/kiln", "/sys/fs/cgroup/memory/kiln", "/sys/fs/cgroup/cpu/kiln",
               "/sys/fs/cgroup/pids/kiln", "/sys/fs/cgroup/unified/kiln"]
MARKERS = (b"kiln-daemon-marker", b"kiln-main-marker", b"kiln-concurrent-marker",
           b"kiln-orphan-marker")


def probe_path():
    p = os.environ.get("KILN_PROBE")
    if p:
        return pathlib.Path(p)
    return pathlib.Path(KILN).resolve().parents[2] / "tests" / "security" / "kiln-probe"


def make_root(base, owner=ID_BASE):
    """A minimal tree: /probe (static), /bin/busybox and its applets, the
    mount points the sandbox needs. Owned by the sandbox's root (host 100000)."""
    base = pathlib.Path(base)
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "var/tmp", "root", "usr"]:
        (base / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(probe_path(), base / "probe")
    shutil.copy2(BUSYBOX, base / "bin" / "busybox")
    for applet in ["sh", "cat", "echo", "ls", "id", "sleep", "touch", "mkdir", "env", "kill",
                   "true", "false", "hostname", "stat", "wc", "head", "dd", "ps", "grep", "yes"]:
        os.symlink("busybox", base / "bin" / applet)
    (base / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    for root, dirs, files in os.walk(base):
        for n in dirs + files + ["."]:
            os.lchown(os.path.join(root, n), owner, owner)
    return base


@pytest.fixture(scope="session")
def probe_bin():
    p = probe_path()
    if not p.exists():
        pytest.fail(f"security probe not built at {p}; run 'make build'")
    if not os.path.exists(BUSYBOX):
        pytest.fail("busybox-static is missing (scripts/deps.sh installs it)")
    return p


@pytest.fixture(scope="session")
def scratch():
    d = tempfile.mkdtemp(prefix="kiln-sec-")
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)
    assert not os.path.exists(d)


@pytest.fixture(scope="session")
def rootfs(probe_bin, scratch):
    return make_root(scratch / "root")


@pytest.fixture
def fresh_dir(scratch, request):
    d = pathlib.Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=scratch))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host_listener():
    """A TCP service on the host's loopback, which the sandbox must not reach."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def marker_pids():
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if any(m in cmd for m in MARKERS):
            found.append(int(p))
    return found


def _owner(entry):
    try:
        return int(os.path.basename(entry).split("-")[0])
    except ValueError:
        return None


def _ours_or_orphan(entry):
    """Created by a kiln this test session started (a child of pytest), or
    orphaned (its kiln is dead). Other engineers' live kiln runs on the same
    host are not ours to judge."""
    pid = _owner(entry)
    if pid is None:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return True  # owner gone
    return ppid == os.getpid()


def kiln_cgroups(owner=None):
    left = []
    for d in CGROUP_DIRS:
        if os.path.isdir(d):
            left += [os.path.join(d, e) for e in os.listdir(d)
                     if os.path.isdir(os.path.join(d, e))]
    if owner is not None:
        return [e for e in left if _owner(e) == owner]
    return [e for e in left if _ours_or_orphan(e)]


@pytest.fixture(autouse=True)
def nothing_left_behind(scratch):
    yield
    assert kiln_cgroups() == [], "sandbox cgroups left behind"
    assert marker_pids() == [], "sandbox processes left behind"
    with open("/proc/self/mountinfo") as f:
        mounts = [l for l in f if str(scratch) in l]
    assert mounts == [], f"mounts left behind: {mounts}"
    work = [str(p) for p in scratch.rglob("*.kiln-work-*")]
    assert work == [], f"overlay work dirs left behind: {work}"
