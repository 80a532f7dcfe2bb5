"""The sandbox against a hostile layer and a curious build step (issue 11,
items 1, 4, 5 and 6): what kiln binds, which sockets a build may open, what
PID 1 shows and holds, and the signal state the command starts with.

Real `kiln run`, real namespaces; each test asserts an outcome. The root
trees used here live in /var/tmp, not /tmp: kiln attaches the sandbox's root
over /tmp in its own mount namespace, which would hide a host tree there
from the attacks these tests try."""
import fcntl
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid

import pytest

from conftest import make_root  # noqa: E402


def probe_lines(out):
    res = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1] in ("OK", "FAIL"):
            res[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return res


@pytest.fixture
def host_dir():
    """A host directory the sandbox's ids (host 100000..) can traverse."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="kiln-leaks-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(kiln, root, *cmd, opts=(), **kw):
    return kiln("run", "--root", root, *opts, "--", *cmd, **kw)


# ---- item 1: the /proc masks come from kiln, never from the layer ----------

def test_proc_masks_are_not_taken_from_the_layer(kiln, probe_bin, host_dir):
    """A layer whose /dev leads out through /proc/self/cwd: the mask source
    used to be looked up as <root>/dev/null without confinement, so kiln
    bound the host file that kiln's cwd/x/null names over /proc/keys,
    /proc/timer_list, ... for the build to read."""
    secret = host_dir / "secret"
    secret.write_text("HOST-SECRET-" + uuid.uuid4().hex + "\n")
    root = make_root(host_dir / "root")
    shutil.rmtree(root / "dev")
    # dev resolves inside the root (to these plain directories) while kiln
    # mounts /dev, and through the host's /proc once /proc is mounted over them.
    (root / "proc" / "self" / "cwd" / "x").mkdir(parents=True)
    os.symlink("/proc/self/cwd/x", root / "dev")
    # Inside, /dev/null then is /x/null: make it usable so the run gets as
    # far as the command.
    (root / "x").mkdir()
    os.symlink("/proc/self/fd/0", root / "x" / "null")
    cwd = host_dir / "cwd"
    (cwd / "x").mkdir(parents=True)
    os.symlink(secret, cwd / "x" / "null")
    p = run(kiln, root, "/bin/sh", "-c",
            "for f in /proc/keys /proc/timer_list /proc/kallsyms; do cat $f; done; exit 0",
            cwd=cwd, stdin=subprocess.DEVNULL)
    assert "HOST-SECRET" not in p.stdout + p.stderr
    assert p.returncode == 0, p.stderr
    assert "Permission denied" in p.stderr  # still masked, by /dev/null with nodev


# ---- item 4: socket families a build never needs ---------------------------

DENIED_FAMILIES = [
    "socket_vsock", "socket_vsock_dgram", "socket_vsock_high_bits", "socketpair_vsock",
    "socket_packet", "socket_packet_dgram", "socket_bluetooth", "socket_alg", "socket_xdp",
    "socket_key", "socket_can", "socket_tipc", "socket_rds", "socket_appletalk", "socket_ax25",
    "socket_x25", "socket_llc", "socket_mctp",
    "netlink_audit", "netlink_kobject_uevent", "netlink_generic", "netlink_sock_diag",
    "netlink_netfilter", "netlink_xfrm", "netlink_connector", "netlink_selinux",
]
ALLOWED_FAMILIES = ["socket_unix_allowed", "socket_inet_allowed", "socket_inet6_allowed",
                    "netlink_route_allowed", "socketpair_unix_allowed"]


@pytest.fixture(scope="module")
def probe_all(kiln_bin, rootfs):
    p = subprocess.run([kiln_bin, "run", "--root", str(rootfs), "--", "/probe", "all", "9"],
                       capture_output=True, text=True, timeout=120)
    return probe_lines(p.stdout), p.stdout + p.stderr


@pytest.mark.parametrize("check", DENIED_FAMILIES)
def test_socket_family_denied(probe_all, check):
    lines, out = probe_all
    assert check in lines, out
    # EAFNOSUPPORT / EPROTONOSUPPORT from the filter, as if the kernel
    # lacked the family (the kernel alone creates a vsock socket, and says
    # EPERM for AF_PACKET).
    assert lines[check][0] == "OK", (check, lines[check])


@pytest.mark.parametrize("check", ALLOWED_FAMILIES)
def test_socket_family_a_build_needs_allowed(probe_all, check):
    lines, out = probe_all
    assert lines.get(check, ("missing",))[0] == "OK", out


# ---- item 5: what the sandbox shows of the host ----------------------------

def test_host_kernel_command_line_masked(kiln, rootfs):
    with open("/proc/cmdline") as f:
        host = f.read().strip()
    p = run(kiln, rootfs, "/bin/sh", "-c", "cat /proc/cmdline; exit 0")
    assert host not in p.stdout
    assert "Permission denied" in p.stderr


def test_init_cmdline_shows_no_host_argv(kiln, rootfs):
    marker = "kiln-argv-" + uuid.uuid4().hex
    p = run(kiln, rootfs, "/bin/cat", "/proc/1/cmdline", opts=("--env", f"M={marker}"))
    assert p.returncode == 0, p.stderr
    assert marker not in p.stdout and str(rootfs) not in p.stdout
    assert p.stdout.rstrip("\0") == "kiln-init"


def test_mountinfo_names_no_host_path_of_the_layers(kiln, probe_bin, host_dir):
    lower = make_root(host_dir / "lower")
    upper = host_dir / "upper"
    upper.mkdir()
    os.chown(upper, 100000, 100000)
    p = run(kiln, lower, "/bin/cat", "/proc/self/mountinfo", opts=("--rw", upper))
    assert p.returncode == 0, p.stderr
    root_line = next(l for l in p.stdout.splitlines() if l.split()[4] == "/")
    assert " overlay " in root_line
    assert str(host_dir) not in p.stdout, root_line


# ---- also seen: PID 1 holds every fd of the kiln that started it -----------

def sandbox_init_pid(kiln_pid):
    """The sandbox's PID 1, seen from the host: kiln's child whose innermost pid is 1."""
    for tid in os.listdir(f"/proc/{kiln_pid}/task"):
        with open(f"/proc/{kiln_pid}/task/{tid}/children") as f:
            for c in f.read().split():
                with open(f"/proc/{c}/status") as s:
                    ns = next(l for l in s if l.startswith("NSpid:")).split()[1:]
                if ns[-1] == "1" and len(ns) > 1:
                    return int(c)
    return None


def test_init_holds_no_fd_of_kiln(kiln_bin, rootfs, host_dir):
    """A lock file and a listening socket open in kiln (as in kiln serve):
    PID 1 of the sandbox must not keep them for the whole run (other builds'
    flocks stayed held, a restarted server could not bind its port)."""
    lock = open(host_dir / "other-build.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    a = subprocess.Popen([kiln_bin, "run", "--root", str(rootfs), "--", "/bin/sh", "-c",
                          "echo up; exec /probe sleep 60 kiln-concurrent-marker"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         pass_fds=(lock.fileno(), lsock.fileno()))
    try:
        assert a.stdout.readline() == b"up\n", a.stderr.read()
        init = sandbox_init_pid(a.pid)
        assert init, "no sandbox PID 1 found"
        held = {}
        for fd in os.listdir(f"/proc/{init}/fd"):
            try:
                held[int(fd)] = os.readlink(f"/proc/{init}/fd/{fd}")
            except OSError:
                pass
        assert str(host_dir / "other-build.lock") not in held.values(), held
        sock_inode = f"socket:[{os.fstat(lsock.fileno()).st_ino}]"
        assert sock_inode not in held.values(), held
        # stdio is /dev/null; beyond it only the run's own pipes (status,
        # and until PID 1 gets to close them, the command's output and error
        # pipes). No file or directory of the host.
        assert all(held[fd].endswith("/null") for fd in (0, 1, 2)), repr(held)
        assert all(t.startswith("pipe:") for fd, t in held.items() if fd > 2), repr(held)
    finally:
        a.send_signal(signal.SIGTERM)
        a.communicate(timeout=30)
        lock.close()
        lsock.close()


# ---- item 6: the command starts with a clean signal state ------------------

def hostile_signal_state():
    """What kiln serve does to itself: SIGINT/SIGTERM blocked, SIGPIPE ignored."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1})
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def test_command_starts_with_default_signals(kiln_bin, rootfs):
    # --timeout: before the fix `yes | head` spun until it.
    p = subprocess.run([kiln_bin, "run", "--root", str(rootfs), "--timeout", "20", "--",
                        "/bin/sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status; yes | head -n1; "
                        "sleep 100 & kill -TERM $!; wait $!; echo killed=$?"],
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=hostile_signal_state)
    assert p.returncode == 0, p.stderr
    status = dict(l.split(":\t") for l in p.stdout.splitlines() if l.startswith("Sig"))
    assert int(status["SigBlk"], 16) == 0, p.stdout
    assert int(status["SigIgn"], 16) == 0, p.stdout
    assert "y\n" in p.stdout and "killed=143" in p.stdout


def test_terminal_interrupt_cancels_the_run_cleanly(kiln_bin, rootfs):
    """Ctrl-C reaches kiln's whole process group, PID 1 included (the command
    has its own session). PID 1 ignores it, so kiln's cancellation decides:
    exit 130, nothing left behind (conftest checks)."""
    p = subprocess.Popen([kiln_bin, "run", "--root", str(rootfs), "--", "/bin/sh", "-c",
                          "echo up; exec /probe sleep 60 kiln-main-marker"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    assert p.stdout.readline() == "up\n", p.stderr.read()
    os.killpg(p.pid, signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT
