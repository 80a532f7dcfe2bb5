"""`meson install` into a DESTDIR puts the binaries, the systemd unit, the
sysusers.d/tmpfiles.d entries and a man page per command in place; the unit
passes `systemd-analyze verify`; kiln serve tells systemd when it is ready
and when it stops (sd_notify), through a real notify socket."""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess

import pytest


def build_dir(kiln_bin):
    return pathlib.Path(kiln_bin).resolve().parents[2]


@pytest.fixture(scope="module")
def destdir(kiln_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("destdir")
    p = subprocess.run(["meson", "install", "-C", str(build_dir(kiln_bin)), "--destdir", str(d),
                        "--no-rebuild", "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    intro = subprocess.run(["meson", "introspect", "--buildoptions", str(build_dir(kiln_bin))],
                           capture_output=True, text=True, check=True).stdout
    opts = {o["name"]: o["value"] for o in json.loads(intro)}
    return d, pathlib.Path(str(d) + opts["prefix"]), opts


def commands(kiln_bin):
    out = subprocess.run([kiln_bin, "help"], capture_output=True, text=True, check=True).stdout
    block = out.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    return [l.split()[0] for l in block.splitlines() if l.split() and l.split()[0] != "help"]


def test_install_puts_everything_in_place(kiln_bin, destdir):
    _, root, opts = destdir
    for rel in [f"{opts['bindir']}/kiln", f"{opts['libexecdir']}/kiln/kiln-full",
                "lib/systemd/system/kiln.service", "lib/sysusers.d/kiln.conf",
                "lib/tmpfiles.d/kiln.conf"]:
        assert (root / rel).is_file(), rel
    unit = (root / "lib/systemd/system/kiln.service").read_text()
    assert f"ExecStart={opts['prefix']}/{opts['bindir']}/kiln serve" in unit
    assert "Type=notify" in unit and "@bindir@" not in unit
    tmpfiles = (root / "lib/tmpfiles.d/kiln.conf").read_text()
    assert re.search(r"^d /var/lib/kiln 0700 root root", tmpfiles, re.M)


def test_a_man_page_per_command_from_the_help_text(kiln_bin, destdir):
    _, root, opts = destdir
    man1 = root / opts["mandir"] / "man1"
    cmds = commands(kiln_bin)
    assert "backup" in cmds and "serve" in cmds
    assert sorted(p.name for p in man1.glob("kiln-*.1")) == sorted(f"kiln-{c}.1" for c in cmds)
    if not shutil.which("man"):
        pytest.skip("man not installed")
    for c in cmds:
        p = subprocess.run(["man", "--warnings", "-l", str(man1 / f"kiln-{c}.1")],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0"))
        assert p.returncode == 0 and not p.stderr.strip(), (c, p.stderr)
        helptext = subprocess.run([kiln_bin, "help", c], capture_output=True, text=True).stdout
        first = helptext.splitlines()[0].split()
        assert " ".join(first) in " ".join(p.stdout.split()), (c, first)


def test_unit_passes_systemd_analyze_verify(destdir, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    _, root, opts = destdir
    # The unit as installed, its ExecStart pointed at the DESTDIR's binary
    # (verify checks that it exists) and man: at the DESTDIR's pages.
    unit = (root / "lib/systemd/system/kiln.service").read_text()
    exe = f"{opts['prefix']}/{opts['bindir']}/kiln"
    (tmp_path / "kiln.service").write_text(unit.replace(exe, str(root / opts["bindir"] / "kiln")))
    p = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "kiln.service")],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, MANPATH=str(root / opts["mandir"])))
    assert p.returncode == 0 and "kiln.service" not in p.stderr, p.stderr


def test_serve_notifies_ready_and_stopping(kiln_bin, tmp_path):
    sock_path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(60)
    proc = subprocess.Popen([kiln_bin, "serve", "--listen", "127.0.0.1:0", "--no-workers",
                             "--no-auth", "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, NOTIFY_SOCKET=sock_path))
    try:
        msg = s.recv(4096).decode()
        assert "READY=1" in msg.split("\n"), msg
        line = proc.stdout.readline()
        assert "serving on" in line  # printed before READY
        proc.send_signal(signal.SIGTERM)
        msg = s.recv(4096).decode()
        assert "STOPPING=1" in msg.split("\n"), msg
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        s.close()
