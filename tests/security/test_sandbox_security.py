"""The sandbox against a hostile build step: every attempt denied or contained.

Each test runs the real `kiln run` (real namespaces, seccomp, cgroups) over a
minimal root built by conftest.make_root, mostly driving the static probe
(probe.c). Outcomes are asserted, never durations. conftest's autouse
fixture checks after every test that no cgroup, mount, process or scratch
directory was left behind."""
import os
import pathlib
import shutil
import select
import signal
import subprocess
import time

import pytest

from conftest import CGROUP_DIRS, ID_BASE, kiln_cgroups, make_root, marker_pids  # noqa: E402


def run(kiln, rootfs, *cmd, opts=(), **kw):
    return kiln("run", "--root", rootfs, *opts, "--", *cmd, **kw)


def probe_lines(out):
    res = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1] in ("OK", "FAIL"):
            res[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return res


EXPECTED_CHECKS = {
    "net_tcp_internet", "net_tcp_host_loopback", "net_udp_internet", "net_only_lo",
    "read_host_shadow", "write_root", "write_sysrq_trigger", "write_proc_sys", "read_kcore",
    "read_kallsyms", "read_proc_cmdline", "open_init_exe", "open_init_mem", "mknod_block", "mknod_char_dev_mem",
    "host_processes_hidden", "ptrace_traceme", "ptrace_attach_init", "mount_tmpfs",
    "umount_mask", "fsopen", "unshare_user", "unshare_mount", "clone_newuser", "clone3", "setns",
    "keyctl", "add_key", "bpf", "perf_event_open", "finit_module", "init_module",
    "open_by_handle_at", "userfaultfd", "kexec_load", "reboot", "swapon", "iopl", "tiocsti",
    "tiocsti_high_bits", "tioclinux", "personality_no_aslr", "personality_query_allowed",
    "raise_rlimit_nofile", "rlimit_core_zero", "leaked_fds", "cwd_inside_root", "no_new_privs",
    "seccomp_filter", "dangerous_caps_dropped", "uid_mapped_unprivileged", "hostname",
}


def test_probe_every_attempt_denied(kiln, rootfs, host_listener):
    """All the probe's attacks, with a host directory fd leaked into kiln and
    kiln started from a host working directory (CVE-2024-21626 shapes)."""
    port = host_listener.getsockname()[1]
    leak = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        p = run(kiln, rootfs, "/probe", "all", port, pass_fds=(leak,), cwd="/etc")
    finally:
        os.close(leak)
    checks = probe_lines(p.stdout)
    failed = {k: v for k, v in checks.items() if v[0] != "OK"}
    assert failed == {}, p.stdout + p.stderr
    assert EXPECTED_CHECKS <= set(checks), EXPECTED_CHECKS - set(checks)
    assert p.returncode == 0, p.stderr
    # The host service saw no connection.
    with pytest.raises(BlockingIOError):
        host_listener.accept()


def test_host_shadow_not_readable_even_with_shadow_in_root(kiln, probe_bin, fresh_dir):
    """A root whose /etc/shadow is a symlink to the host's: it resolves inside."""
    root = make_root(fresh_dir / "root")
    os.symlink("/../../../../etc/shadow", root / "etc" / "shadow")
    p = run(kiln, root, "/probe", "all", "9")
    assert probe_lines(p.stdout)["read_host_shadow"][0] == "OK", p.stdout


def test_writes_only_reach_writable_paths(kiln, probe_bin, fresh_dir):
    lower = make_root(fresh_dir / "lower")
    upper = fresh_dir / "upper"
    upper.mkdir()
    os.chown(upper, ID_BASE, ID_BASE)
    ro_src = fresh_dir / "ro-in"
    ro_src.mkdir()
    (ro_src / "f").write_text("host")
    out = fresh_dir / "out"
    out.mkdir()
    os.chown(out, ID_BASE, ID_BASE)
    before = sorted(str(p) for p in lower.rglob("*"))
    script = (
        "echo new > /etc/newfile && echo changed > /etc/passwd && "
        "echo result > /out/r && "
        "(echo x > /in/f) 2>/dev/null && echo RO-BIND-WRITABLE; "
        "(echo x > /proc/sys/kernel/hostname) 2>/dev/null && echo PROC-SYS-WRITABLE; "
        "(echo x > /sys/kernel/profiling) 2>/dev/null && echo SYS-WRITABLE; "
        "cat /in/f"
    )
    p = run(kiln, lower, "/bin/sh", "-c", script,
            opts=("--rw", upper, "--bind", f"{ro_src}:/in:ro", "--bind", f"{out}:/out"))
    assert p.returncode == 0, p.stderr
    assert "WRITABLE" not in p.stdout
    assert p.stdout.strip() == "host"
    # Changes land in the upper layer, owned by the unprivileged host range.
    assert (upper / "etc" / "newfile").read_text() == "new\n"
    assert (upper / "etc" / "newfile").stat().st_uid == ID_BASE
    assert (out / "r").read_text() == "result\n"
    assert (out / "r").stat().st_uid == ID_BASE
    # The lower layer and the read-only bind are untouched.
    assert sorted(str(p) for p in lower.rglob("*")) == before
    assert (lower / "etc" / "passwd").read_text().startswith("root:x:0:0")
    assert (ro_src / "f").read_text() == "host"


def test_read_only_root_and_tmpfs(kiln, rootfs):
    p = run(kiln, rootfs, "/bin/sh", "-c",
            "touch /x 2>/dev/null && echo ROOT-WRITABLE; touch /tmp/x /var/tmp/y /dev/shm/z && "
            "echo tmp-ok")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "tmp-ok"


def test_setuid_binary_gains_nothing(kiln, probe_bin, fresh_dir):
    root = make_root(fresh_dir / "root")
    suid = root / "suid-probe"
    shutil.copy2(probe_bin, suid)
    os.chown(suid, ID_BASE, ID_BASE)  # owned by the sandbox's root
    os.chmod(suid, 0o4755)
    p = run(kiln, root, "/suid-probe", "euid", opts=("--user", "1000"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "euid=1000 uid=1000"


def test_fork_bomb_stopped_by_pids_limit(kiln, rootfs):
    p = run(kiln, rootfs, "/probe", "forkbomb", opts=("--pids", "32"))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "errno=11" in p.stdout  # EAGAIN from the pids controller
    after = int(p.stdout.split("after=")[1].split()[0])
    assert 0 < after < 32


def test_memory_bomb_oom_killed_and_reported(kiln, rootfs):
    p = run(kiln, rootfs, "/probe", "membomb", opts=("--memory", "32"))
    assert p.returncode == 128 + signal.SIGKILL, (p.stdout, p.stderr)
    assert "killed for exceeding the memory limit of 32 MB" in p.stderr


def test_filling_tmpfs_hits_enospc(kiln, rootfs):
    before = set(os.listdir("/tmp"))
    p = run(kiln, rootfs, "/probe", "fill", "/tmp", opts=("--tmpfs-size", "4"))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "errno=28" in p.stdout
    written = int(p.stdout.split("bytes=")[1].split()[0])
    assert written <= 4 << 20
    assert "fill" not in set(os.listdir("/tmp")) - before


def test_daemon_and_stopped_processes_die_at_timeout(kiln, rootfs):
    # The main process sleeps, a double-forked setsid daemon sleeps, and one
    # more process is stopped (SIGSTOP): all of them must be gone at the end.
    p = run(kiln, rootfs, "/bin/sh", "-c",
            "/probe daemon 1000; ", opts=("--timeout", "2"))
    assert p.returncode == 128 + signal.SIGKILL, (p.stdout, p.stderr)
    assert "timed out after 2 seconds" in p.stderr
    assert "daemon started" in p.stdout
    assert marker_pids() == []
    p = run(kiln, rootfs, "/bin/sh", "-c",
            "/probe sleep 1000 kiln-orphan-marker & kill -STOP $!; /probe sleep 1000 kiln-main-marker",
            opts=("--timeout", "1"))
    assert "timed out after 1 seconds" in p.stderr
    assert marker_pids() == []


def test_concurrent_sandboxes_cannot_see_or_signal_each_other(kiln, kiln_bin, rootfs):
    # A says when its sandbox is up (the marker is in kiln run's own
    # arguments too, so seeing it proves nothing); its probe is the
    # process whose pid B then tries to signal.
    a = subprocess.Popen([kiln_bin, "run", "--root", str(rootfs), "--", "/bin/sh", "-c",
                          "echo up; exec /probe sleep 60 kiln-concurrent-marker"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([a.stdout], [], [], 60)
        assert ready and a.stdout.readline() == b"up\n", "sandbox A did not start"
        pids = []
        for _ in range(200):
            pids = [p for p in marker_pids() if p != a.pid]
            if pids:
                break
            time.sleep(0.05)
        assert pids, "sandbox A's probe did not start"
        b = run(kiln, rootfs, "/bin/sh", "-c",
                f"/probe kill {pids[0]}; ls /proc | grep -c '^[0-9]'")
        assert b.returncode == 0, b.stderr
        out = b.stdout.split()
        assert "errno=3" in b.stdout  # ESRCH: A's processes do not exist for B
        assert int(out[-1]) <= 4  # init, sh, ls, grep: nothing of A's
        assert a.poll() is None, "sandbox A was killed from sandbox B"
    finally:
        a.send_signal(signal.SIGTERM)  # kiln run cancels the sandbox cleanly
        a.communicate(timeout=30)
    assert a.returncode == 128 + signal.SIGTERM


def test_kiln_killed_takes_sandbox_down_and_next_run_cleans_up(kiln, kiln_bin, rootfs):
    a = subprocess.Popen([kiln_bin, "run", "--root", str(rootfs), "--", "/bin/sh", "-c",
                          "echo up; exec /probe sleep 60 kiln-concurrent-marker"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert a.stdout.readline() == b"up\n"  # the command runs: the sandbox is complete
    a.kill()  # SIGKILL: no chance to clean up
    a.wait()
    a.stdout.close()
    for _ in range(200):  # PR_SET_PDEATHSIG kills PID 1, and with it the namespace
        if not marker_pids():
            break
        time.sleep(0.05)
    assert marker_pids() == []
    # The orphaned cgroups are still there, unless another kiln on this host
    # already cleaned them; then plant one so the cleanup is still tested.
    if not kiln_cgroups(owner=a.pid):
        base = next(d for d in CGROUP_DIRS if os.path.isdir(d))
        os.makedirs(f"{base}/{a.pid}-0")
    assert kiln_cgroups(owner=a.pid) != []
    p = run(kiln, rootfs, "/bin/true")
    assert p.returncode == 0
    assert kiln_cgroups(owner=a.pid) == []  # ...until the next run removes it


def test_exit_status_signal_and_output_streams(kiln, rootfs):
    p = run(kiln, rootfs, "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert (p.returncode, p.stdout, p.stderr) == (7, "out\n", "err\n")
    p = run(kiln, rootfs, "/bin/sh", "-c", "kill -SEGV $$")
    assert p.returncode == 128 + signal.SIGSEGV
    assert "SIGSEGV" in p.stderr


def test_environment_is_clean(kiln, rootfs):
    p = run(kiln, rootfs, "/bin/env", opts=("--env", "FOO=bar", "--source-date-epoch", "42"),
            env={"KILN_TEST_SECRET": "s3cret"})
    env = dict(l.split("=", 1) for l in p.stdout.splitlines())
    assert "KILN_TEST_SECRET" not in env
    assert env["FOO"] == "bar" and env["SOURCE_DATE_EPOCH"] == "42"
    assert env["LC_ALL"] == "C" and env["TZ"] == "UTC"


def test_user_and_workdir(kiln, rootfs):
    p = run(kiln, rootfs, "/bin/sh", "-c", "id -u; id -g; pwd",
            opts=("--user", "1000:1001", "--workdir", "/tmp"))
    assert p.stdout.split() == ["1000", "1001", "/tmp"], p.stderr


def test_stats_report_outcome_times_and_peak_memory(kiln, rootfs):
    import re
    # 32 MiB written to the sandbox's tmpfs is charged to its memory cgroup.
    p = run(kiln, rootfs, "/bin/sh", "-c",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=32 2>/dev/null; exit 4",
            opts=("--stats",))
    assert p.returncode == 4
    m = re.search(r"run: command exited with status 4; wall ([\d.]+) s, cpu ([\d.]+) s, "
                  r"peak memory ([\d.]+) MiB", p.stderr)
    assert m, p.stderr
    wall, cpu, peak = (float(x) for x in m.groups())
    assert peak >= 32, p.stderr
    assert wall > 0 and cpu > 0
    # Without --stats a normal exit prints nothing.
    p = run(kiln, rootfs, "/bin/true")
    assert p.returncode == 0 and p.stderr == ""


def test_user_names_resolve_in_the_image_not_on_the_host(kiln, probe_bin, fresh_dir):
    root = make_root(fresh_dir / "root")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1500:1600:b:/home/builder:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    p = run(kiln, root, "/bin/sh", "-c", "id -u; id -g; echo $HOME", opts=("--user", "builder"))
    assert p.stdout.split() == ["1500", "1600", "/home/builder"], p.stderr
    p = run(kiln, root, "/bin/sh", "-c", "id -u; id -g", opts=("--user", "builder:staff"))
    assert p.stdout.split() == ["1500", "50"], p.stderr
    p = run(kiln, root, "/bin/sh", "-c", "id -u; id -g", opts=("--user", "7:staff"))
    assert p.stdout.split() == ["7", "50"], p.stderr
    # An explicit HOME wins over the passwd entry's.
    p = run(kiln, root, "/bin/sh", "-c", "echo $HOME",
            opts=("--user", "builder", "--env", "HOME=/x"))
    assert p.stdout.strip() == "/x"
    # "daemon" exists on the host, not in the image: refused, named.
    p = run(kiln, root, "/bin/true", opts=("--user", "daemon"))
    assert p.returncode == 2 and "no user 'daemon' in the image's /etc/passwd" in p.stderr
    p = run(kiln, root, "/bin/true", opts=("--user", "builder:nogroup"))
    assert p.returncode == 2 and "no group 'nogroup'" in p.stderr
    # A planted link to the host's group file resolves inside the image
    # (where there is none), and a FIFO is not read (it would hang kiln).
    (root / "etc" / "group").unlink()
    os.symlink("/etc/group", root / "etc" / "group")
    p = run(kiln, root, "/bin/true", opts=("--user", "builder:root"))
    assert p.returncode == 2 and "no group 'root'" in p.stderr
    (root / "etc" / "group").unlink()
    os.mkfifo(root / "etc" / "group")
    p = run(kiln, root, "/bin/true", opts=("--user", "builder:staff"), timeout=30)
    assert p.returncode == 2 and "no group 'staff'" in p.stderr


def test_missing_command_and_bad_root_fail_cleanly(kiln, rootfs):
    p = run(kiln, rootfs, "/nonexistent")
    assert p.returncode == 1 and "No such file" in p.stderr
    p = kiln("run", "--root", "/nonexistent-root", "--", "/bin/true")
    assert p.returncode == 1
    p = kiln("run", "--root", rootfs, "--bind", "/etc:/proc/x", "--", "/bin/true")
    assert p.returncode == 2


def test_host_network_flag_shares_interfaces(kiln, rootfs):
    with open("/proc/net/dev") as f:
        host = len(f.readlines())
    p = run(kiln, rootfs, "/bin/cat", "/proc/net/dev", opts=("--network", "host"))
    assert len(p.stdout.splitlines()) == host
    p = run(kiln, rootfs, "/bin/cat", "/proc/net/dev")
    assert len(p.stdout.splitlines()) == 3
